//! Writing and removing files safely: files are written to a temporary sibling and renamed
//! into place, so a crash or error never leaves a half-written file; private keys get mode
//! 0600 from creation, never after; two directories can swap places in one step; leftovers
//! of a killed run are removed without following links and with their key bytes overwritten.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::errors::ExpectedError;

/// Prefix of the temporary files [`write_atomic`] creates beside their target: a run killed
/// before its rename leaves one behind, which the next run removes ([`remove_leftover`]).
pub(crate) const TMP_PREFIX: &str = ".cmesh-tmp-";

/// File permissions for what cmesh writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// 0644: certificates, values, manifests.
    Public,
    /// 0600: private keys and anything containing them.
    Private,
    /// 0755: scripts.
    Executable,
}

impl Mode {
    /// The Unix permission bits.
    pub(crate) fn bits(self) -> u32 {
        match self {
            Mode::Public => 0o644,
            Mode::Private => 0o600,
            Mode::Executable => 0o755,
        }
    }
}

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Writes `bytes` to `path` atomically with `mode`. With `overwrite` false an existing file is
/// an error ([`ExpectedError::WouldOverwrite`]), checked atomically at rename time.
///
/// # Errors
/// [`ExpectedError::Write`] or [`ExpectedError::WouldOverwrite`].
pub(crate) fn write_atomic(
    path: &Path,
    bytes: &[u8],
    mode: Mode,
    overwrite: bool,
) -> Result<(), ExpectedError> {
    let werr = |source| ExpectedError::Write {
        path: path.to_path_buf(),
        source,
    };
    let tmp = staged(path, bytes, mode, true)?;
    if overwrite {
        tmp.persist(path).map_err(|e| werr(e.error))?;
    } else {
        tmp.persist_noclobber(path).map_err(|e| {
            if e.error.kind() == std::io::ErrorKind::AlreadyExists {
                ExpectedError::WouldOverwrite {
                    path: path.to_path_buf(),
                }
            } else {
                werr(e.error)
            }
        })?;
    }
    Ok(())
}

/// Replaces `path` atomically with `bytes` in `mode`, without syncing: readers see the old or
/// the new file, and the caller makes a batch of such writes durable at once (pki.dir's
/// leaves, synced with one `syncfs`).
///
/// # Errors
/// [`ExpectedError::Write`].
pub(crate) fn write_atomic_unsynced(
    path: &Path,
    bytes: &[u8],
    mode: Mode,
) -> Result<(), ExpectedError> {
    staged(path, bytes, mode, false)?
        .persist(path)
        .map_err(|e| ExpectedError::Write {
            path: path.to_path_buf(),
            source: e.error,
        })?;
    Ok(())
}

/// `bytes` in a temporary file with `mode` beside `path`, synced if `sync`, ready to be
/// renamed into place.
fn staged(
    path: &Path,
    bytes: &[u8],
    mode: Mode,
    sync: bool,
) -> Result<tempfile::NamedTempFile, ExpectedError> {
    let werr = |source| ExpectedError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(TMP_PREFIX)
        .permissions(permissions(mode))
        .tempfile_in(parent_of(path))
        .map_err(werr)?;
    tmp.write_all(bytes).map_err(werr)?;
    if sync {
        tmp.as_file().sync_all().map_err(werr)?;
    }
    Ok(tmp)
}

/// Creates `path` (which must not exist) with `mode` and writes `bytes`, without syncing:
/// for files inside a temporary directory that is renamed into place as a whole. The tree is
/// derived data (mesh.yaml and pki.dir can always render it again), so the atomic rename is
/// what matters, not per-file durability; that keeps a 2,500-file tree fast to write.
///
/// # Errors
/// [`ExpectedError::Write`].
pub(crate) fn write_new(path: &Path, bytes: &[u8], mode: Mode) -> Result<(), ExpectedError> {
    let werr = |source| ExpectedError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(mode.bits());
    }
    let mut f = o.open(path).map_err(werr)?;
    f.write_all(bytes).map_err(werr)?;
    // The umask may have narrowed the mode at creation; set it exactly.
    #[cfg(unix)]
    f.set_permissions(permissions(mode)).map_err(werr)?;
    Ok(())
}

#[cfg(unix)]
fn permissions(mode: Mode) -> std::fs::Permissions {
    use std::os::unix::fs::PermissionsExt;
    std::fs::Permissions::from_mode(mode.bits())
}

#[cfg(not(unix))]
fn permissions(_mode: Mode) -> std::fs::Permissions {
    // Only Unix permissions are meaningful for cmesh's key files; elsewhere use the default.
    std::fs::metadata(".")
        .map(|m| m.permissions())
        .unwrap_or_else(|_| unreachable!())
}

/// Swaps the directory entries `a` and `b` in one step (`renameat2(RENAME_EXCHANGE)`), so a
/// reader of either path sees the old or the new content at every instant. `Ok(false)` when
/// the file system cannot (the caller then falls back to two renames).
///
/// # Errors
/// Any other failure of the swap.
pub(crate) fn exchange(a: &Path, b: &Path) -> std::io::Result<bool> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    use rustix::io::Errno;
    match renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE) {
        Ok(()) => Ok(true),
        Err(e) if e == Errno::INVAL || e == Errno::NOSYS || e == Errno::OPNOTSUPP => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Removes what a killed run left at `path` (a temporary file or directory of cmesh's own),
/// without following symbolic links (a link is removed, never what it points at), after
/// overwriting the bytes of private files (mode 0600: keys, secret values) with zeros.
///
/// # Errors
/// [`ExpectedError::Write`] naming the entry that could not be removed.
pub(crate) fn remove_leftover(path: &Path) -> Result<(), ExpectedError> {
    let werr = |p: &Path| {
        let p = p.to_path_buf();
        move |source| ExpectedError::Write { path: p, source }
    };
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(werr(path)(e)),
    };
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).map_err(werr(path))? {
            let entry = entry.map_err(werr(path))?;
            remove_leftover(&entry.path())?;
        }
        return std::fs::remove_dir(path).map_err(werr(path));
    }
    // A file with other links (a staged CA already linked into place) is someone else's
    // too: only the name is removed.
    if meta.is_file() && is_private(&meta) && links(&meta) == 1 {
        scrub(path, meta.len()).map_err(werr(path))?;
    }
    std::fs::remove_file(path).map_err(werr(path))
}

#[cfg(unix)]
fn links(meta: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    meta.nlink()
}

#[cfg(not(unix))]
fn links(_meta: &std::fs::Metadata) -> u64 {
    1
}

#[cfg(unix)]
fn is_private(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o077 == 0
}

#[cfg(not(unix))]
fn is_private(_meta: &std::fs::Metadata) -> bool {
    true
}

/// Overwrites a regular file's bytes with zeros in place (opened without following a link).
fn scrub(path: &Path, len: u64) -> std::io::Result<()> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32);
    }
    let mut f = o.open(path)?;
    let zeros = [0u8; 8192];
    let mut left = len;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        f.write_all(&zeros[..n])?;
        left -= n as u64;
    }
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exchange_swaps_two_directories() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        std::fs::create_dir(&a).unwrap();
        std::fs::create_dir(&b).unwrap();
        std::fs::write(a.join("x"), "a").unwrap();
        std::fs::write(b.join("x"), "b").unwrap();
        assert!(exchange(&a, &b).unwrap());
        assert_eq!(std::fs::read_to_string(a.join("x")).unwrap(), "b");
        assert_eq!(std::fs::read_to_string(b.join("x")).unwrap(), "a");
    }

    #[test]
    fn leftovers_are_removed_without_following_links() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        std::fs::write(&outside, "keep me").unwrap();
        let left = t.path().join(".cmesh-out.tmp-x");
        std::fs::create_dir_all(left.join("k8s01")).unwrap();
        write_new(
            &left.join("k8s01/secret-values.yaml"),
            b"key",
            Mode::Private,
        )
        .unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(&outside, left.join("link")).unwrap();
        // A private file linked elsewhere keeps its bytes there.
        write_new(&left.join("ca.key"), b"KEY", Mode::Private).unwrap();
        std::fs::hard_link(left.join("ca.key"), t.path().join("ca.key")).unwrap();
        remove_leftover(&left).unwrap();
        assert!(!left.exists());
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "keep me");
        assert_eq!(
            std::fs::read_to_string(t.path().join("ca.key")).unwrap(),
            "KEY"
        );
    }
}
