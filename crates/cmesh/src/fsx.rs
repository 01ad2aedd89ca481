//! File-system effects done safely: files are written to a temporary sibling and renamed into
//! place, so a crash or error never leaves a half-written file; private keys get mode 0600
//! from creation, never after.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::errors::ExpectedError;

/// File permissions for what cmesh writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// 0644: certificates, values, manifests.
    Public,
    /// 0600: private keys and anything containing them.
    Private,
    /// 0755: scripts.
    Executable,
}

impl Mode {
    /// The Unix permission bits.
    pub fn bits(self) -> u32 {
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
pub fn write_atomic(
    path: &Path,
    bytes: &[u8],
    mode: Mode,
    overwrite: bool,
) -> Result<(), ExpectedError> {
    let werr = |source| ExpectedError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = parent_of(path);
    let mut tmp = tempfile::Builder::new()
        .prefix(".cmesh-tmp-")
        .permissions(permissions(mode))
        .tempfile_in(&dir)
        .map_err(werr)?;
    tmp.write_all(bytes).map_err(werr)?;
    tmp.as_file().sync_all().map_err(werr)?;
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

/// Creates `path` (which must not exist) with `mode` and writes `bytes`, without syncing:
/// for files inside a temporary directory that is renamed into place as a whole. The tree is
/// derived data (mesh.yaml and pki.dir can always render it again), so the atomic rename is
/// what matters, not per-file durability; that keeps a 2,500-file tree fast to write.
///
/// # Errors
/// [`ExpectedError::Write`].
pub fn write_new(path: &Path, bytes: &[u8], mode: Mode) -> Result<(), ExpectedError> {
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
