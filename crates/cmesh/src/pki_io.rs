//! Reading pki.dir into memory and writing the files the core's reconcile returns, with
//! private keys created 0600 inside a 0700 directory.

use std::path::{Path, PathBuf};

use cmesh_core::pki::store::{PkiFiles, PkiWrite};

use crate::errors::ExpectedError;
use crate::fsx::{self, Mode};

/// Largest file read from pki.dir (certificates and keys are a few KiB).
const MAX_PKI_FILE: u64 = 1024 * 1024;

/// The absolute-or-relative pki.dir for a spec whose relative paths start at `base_dir`.
pub fn pki_dir(base_dir: &Path, dir: &str) -> PathBuf {
    let p = Path::new(dir);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base_dir.join(p)
    }
}

/// Reads every `*.crt` and `*.key` under `dir` (missing directory: empty).
///
/// # Errors
/// [`ExpectedError::Read`] for unreadable files.
pub fn read(dir: &Path) -> Result<PkiFiles, ExpectedError> {
    let mut files = PkiFiles::new();
    if !dir.exists() {
        return Ok(files);
    }
    walk(dir, dir, &mut files)?;
    Ok(files)
}

fn walk(root: &Path, dir: &Path, files: &mut PkiFiles) -> Result<(), ExpectedError> {
    let rerr = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ExpectedError::Read { path, source }
    };
    let entries = std::fs::read_dir(dir).map_err(rerr(dir))?;
    for entry in entries {
        let entry = entry.map_err(rerr(dir))?;
        let path = entry.path();
        let ft = entry.file_type().map_err(rerr(&path))?;
        if ft.is_dir() {
            walk(root, &path, files)?;
        } else if ft.is_file() && path.extension().is_some_and(|e| e == "crt" || e == "key") {
            let meta = entry.metadata().map_err(rerr(&path))?;
            if meta.len() > MAX_PKI_FILE {
                continue;
            }
            let bytes = std::fs::read(&path).map_err(rerr(&path))?;
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .replace('\\', "/");
            files.insert(rel, bytes);
        }
    }
    Ok(())
}

/// Creates `dir` (and parents) with mode 0700 if it does not exist.
///
/// # Errors
/// [`ExpectedError::Write`].
pub fn ensure_private_dir(dir: &Path) -> Result<(), ExpectedError> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir).map_err(|source| ExpectedError::Write {
        path: dir.to_path_buf(),
        source,
    })
}

/// Writes `writes` under `dir`: keys 0600, certificates 0644, each file atomically.
///
/// # Errors
/// [`ExpectedError::Write`].
pub fn write(dir: &Path, writes: &[PkiWrite]) -> Result<(), ExpectedError> {
    if writes.is_empty() {
        return Ok(());
    }
    ensure_private_dir(dir)?;
    for w in writes {
        let path = dir.join(&w.path);
        if let Some(parent) = path.parent() {
            ensure_private_dir(parent)?;
        }
        let mode = if w.private {
            Mode::Private
        } else {
            Mode::Public
        };
        fsx::write_atomic(&path, &w.bytes, mode, true)?;
    }
    Ok(())
}

/// Mode bits of a file, if it exists (Unix only).
pub fn mode_of(path: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path)
            .ok()
            .map(|m| m.permissions().mode() & 0o777)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}
