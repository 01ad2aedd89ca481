//! Advisory locks that keep two cmesh runs from changing pki.dir or an output tree at the
//! same time: ten renders started together on a fresh directory would otherwise each create
//! a CA. A lock is an OS file lock (`flock`) on the directory itself (pki.dir, or the
//! directory that holds an output tree, since the tree is replaced as a whole), so no lock
//! file is left in the user's repository, and the kernel releases it when its holder exits,
//! even by `kill -9`. A waiting run names the holder from the kernel's own table of locks
//! (`/proc/locks`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::errors::ExpectedError;

/// How long to wait for a lock, and where to say that we wait.
pub(crate) struct LockWait<'a> {
    /// Give up after this long (zero: fail at once).
    pub(crate) timeout: Duration,
    /// Told once, with a line to show, when the lock is busy.
    pub(crate) notify: &'a mut dyn FnMut(&str),
}

/// A held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub(crate) struct Lock {
    _dir: std::fs::File,
}

/// The locks one run holds, at most one per directory (two outputs in one directory share
/// its lock; taking it twice would wait for ourselves).
#[derive(Debug, Default)]
pub(crate) struct Locks {
    held: BTreeMap<PathBuf, Lock>,
}

impl Locks {
    /// Takes the lock of `dir` unless this run holds it already.
    ///
    /// # Errors
    /// As [`acquire`].
    pub(crate) fn take(
        &mut self,
        dir: &Path,
        what: &str,
        wait: &mut LockWait<'_>,
    ) -> Result<(), ExpectedError> {
        let key = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        if let std::collections::btree_map::Entry::Vacant(e) = self.held.entry(key) {
            e.insert(acquire(dir, what, wait)?);
        }
        Ok(())
    }
}

/// Takes the exclusive lock on directory `dir` (which must exist), waiting as `wait` says.
/// `what` names what is protected, for messages (`pki.dir pki`).
///
/// # Errors
/// [`ExpectedError::Locked`] after the wait; [`ExpectedError::Read`] if `dir` cannot be
/// opened.
pub(crate) fn acquire(
    dir: &Path,
    what: &str,
    wait: &mut LockWait<'_>,
) -> Result<Lock, ExpectedError> {
    let rerr = |source| ExpectedError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(dir).map_err(rerr)?;
    let start = Instant::now();
    let mut told = false;
    loop {
        match file.try_lock() {
            Ok(()) => {
                tracing::debug!(lock = %what, dir = %dir.display(), waited = ?start.elapsed(), "locked");
                return Ok(Lock { _dir: file });
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                if start.elapsed() >= wait.timeout {
                    return Err(ExpectedError::Locked {
                        what: what.to_owned(),
                        path: dir.to_path_buf(),
                        holder: holder(&file),
                        waited: start.elapsed(),
                    });
                }
                if !told {
                    (wait.notify)(&format!(
                        "waiting for {what}: {} is using it (up to {}s; --lock-timeout)",
                        holder(&file).as_deref().unwrap_or("another cmesh run"),
                        wait.timeout.as_secs()
                    ));
                    told = true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(rerr(e)),
        }
    }
}

/// `PID 123 (cmesh render)`: who holds an flock on the file `f` refers to, from
/// `/proc/locks` (`1: FLOCK  ADVISORY  WRITE 123 fd:01:456 0 EOF`) and `/proc/PID/cmdline`.
fn holder(f: &std::fs::File) -> Option<String> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::MetadataExt;
        let meta = f.metadata().ok()?;
        let dev = meta.dev();
        let (major, minor) = (
            ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff),
            (dev & 0xff) | ((dev >> 12) & !0xff),
        );
        let want = format!("{major:02x}:{minor:02x}:{}", meta.ino());
        let locks = std::fs::read_to_string("/proc/locks").ok()?;
        let pid = locks.lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // `id: FLOCK ADVISORY WRITE pid dev:inode ...`; blocked waiters start with `->`.
            (f.len() >= 6 && f[1] == "FLOCK" && f[5] == want).then(|| f[4].to_owned())
        })?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let words: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|w| !w.is_empty())
            .take(3)
            .map(|w| String::from_utf8_lossy(w).into_owned())
            .collect();
        Some(match words.split_first() {
            Some((prog, rest)) => {
                let prog = prog.rsplit('/').next().unwrap_or(prog);
                let cmd = std::iter::once(prog.to_owned())
                    .chain(rest.iter().cloned())
                    .collect::<Vec<_>>()
                    .join(" ");
                format!(
                    "PID {pid} (`{}`)",
                    super::super::ui::term::escape_line(&cmd)
                )
            }
            None => format!("PID {pid}"),
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = f;
        None
    }
}

/// The directory whose lock protects output tree `dir`: the one holding it, since the tree
/// itself is replaced by a swap.
pub(crate) fn output_parent(dir: &Path) -> PathBuf {
    match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_waits_then_fails_naming_the_first() {
        let t = tempfile::tempdir().unwrap();
        let mut quiet = |_: &str| {};
        let first = acquire(
            t.path(),
            "pki.dir",
            &mut LockWait {
                timeout: Duration::ZERO,
                notify: &mut quiet,
            },
        )
        .unwrap();
        let mut told = Vec::new();
        let mut note = |s: &str| told.push(s.to_owned());
        let err = acquire(
            t.path(),
            "pki.dir",
            &mut LockWait {
                timeout: Duration::from_millis(200),
                notify: &mut note,
            },
        )
        .unwrap_err();
        let pid = format!("PID {}", std::process::id());
        match &err {
            ExpectedError::Locked { holder, .. } => {
                assert!(holder.as_deref().unwrap().starts_with(&pid), "{holder:?}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(told.len(), 1, "{told:?}");
        assert!(told[0].contains(&pid), "{told:?}");
        drop(first);
        let mut quiet = |_: &str| {};
        acquire(
            t.path(),
            "pki.dir",
            &mut LockWait {
                timeout: Duration::ZERO,
                notify: &mut quiet,
            },
        )
        .unwrap();
    }

    #[test]
    fn one_run_takes_a_shared_directory_once() {
        let t = tempfile::tempdir().unwrap();
        let mut quiet = |_: &str| {};
        let mut wait = LockWait {
            timeout: Duration::ZERO,
            notify: &mut quiet,
        };
        let mut locks = Locks::default();
        locks.take(t.path(), "out", &mut wait).unwrap();
        locks
            .take(&t.path().join("."), "secrets", &mut wait)
            .unwrap();
        assert_eq!(locks.held.len(), 1);
    }
}
