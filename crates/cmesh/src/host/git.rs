//! Asking git about the user's work tree (never changing it): whether a path that holds private
//! keys would be committed by `git add -A`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Whether `path` lies in a git work tree without being ignored (`git check-ignore`): `Some(true)`
/// when `git add -A` would stage it, `Some(false)` when it is ignored, `None` when there is no
/// work tree or no git (nothing to warn about), or git did not answer within two seconds.
pub(crate) fn would_be_committed(path: &Path) -> Option<bool> {
    let dir = path.parent().filter(|d| d.is_dir())?;
    let name = path.file_name()?;
    let mut child = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["check-ignore", "-q", "--"])
        .arg(name)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match child.try_wait() {
            // 0: ignored; 1: not ignored; 128: not a work tree (or another fatal error).
            Ok(Some(status)) => {
                return match status.code() {
                    Some(0) => Some(false),
                    Some(1) => Some(true),
                    _ => None,
                };
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}
