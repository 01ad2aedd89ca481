//! pki.dir on disk: reading it into memory, writing what the core's reconcile returns, and
//! the guarantees around the CA, which every cluster trusts and which cmesh therefore never
//! creates over, replaces or deletes without being asked:
//!
//! - every `*.crt` and `*.key` is read through links (keeping the CA on another volume is
//!   common); one that cannot be read (a dangling link, a FIFO, over 1 MiB) is an error, never
//!   "no CA here", so a CA that cannot be read is never replaced by a new one;
//! - a new CA is written as a pair: both files are staged in a temporary directory, which one
//!   rename commits as `.cmesh-ca-pending`; then each file is hard-linked into place (which
//!   never overwrites) and the staging directory removed. A run killed anywhere leaves either
//!   no CA or a committed one that the next run finishes placing;
//! - an explicit replacement (`pki init --force`, `pki import --force`) moves the current pair
//!   to `retired/<time>-<fingerprint>/` (recorded in the staging directory, so a killed
//!   replacement is finished too);
//! - a lock on the directory (see [`super::lock`]) serialises the runs that use it, and the
//!   run holding it removes what killed runs left (temporary files, which may hold keys, are
//!   overwritten before they are removed).

use std::path::{Path, PathBuf};

use cmesh_core::membership::{MEMBERSHIP, Record};
use cmesh_core::pki::rotation;
use cmesh_core::pki::store::{CA_CERT, CA_KEY, PkiFiles, PkiWrite, Reconciled, Verified};

use super::atomic::{self, Mode, TMP_PREFIX};
use super::bounded::{self, BoundedReadError};
use super::fault;
use super::lock::{self, Lock, LockWait};
use crate::errors::ExpectedError;

/// Largest file read from pki.dir (certificates and keys are a few KiB).
const MAX_PKI_FILE: u64 = 1024 * 1024;
/// Most bytes read from pki.dir in all (a 511-cluster mesh holds about 10 MiB).
const MAX_PKI_TOTAL: u64 = 256 * 1024 * 1024;
/// A CA pair committed but not yet in place.
const CA_PENDING: &str = ".cmesh-ca-pending";
/// In [`CA_PENDING`]: where the pair it replaces goes (`retired/...`), for a replacement.
const REPLACES: &str = "replaces";
/// Where replaced CAs are kept.
pub(crate) const RETIRED: &str = "retired";
/// The cache of verified certificate signatures ([`Verified`]).
const VERIFIED: &str = ".verified-signatures";
/// Largest cache read (511 clusters' leaves take about 500 KiB).
const MAX_VERIFIED: u64 = 16 * 1024 * 1024;
/// Deepest directory nesting followed (links to directories included).
const MAX_DEPTH: usize = 8;

/// The absolute-or-relative pki.dir for a spec whose relative paths start at `base_dir`.
pub(crate) fn pki_dir(base_dir: &Path, dir: &str) -> PathBuf {
    let p = Path::new(dir);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base_dir.join(p)
    }
}

/// pki.dir, opened by one run: holds its lock (when the directory can be written) until
/// dropped.
#[derive(Debug)]
pub(crate) struct PkiDir {
    dir: PathBuf,
    _lock: Option<Lock>,
    /// Opened by a command that may write it ([`PkiDir::open_rw`]).
    writable: bool,
}

impl PkiDir {
    /// Opens pki.dir for a command that may write it: creates it (mode 0700) if missing, takes
    /// its lock, and finishes or removes whatever a killed run left.
    ///
    /// # Errors
    /// [`ExpectedError::Locked`], write errors, and a pending CA that conflicts with the files
    /// in place.
    pub(crate) fn open_rw(dir: &Path, wait: &mut LockWait<'_>) -> Result<Self, ExpectedError> {
        ensure_private_dir(dir)?;
        let lock = lock::acquire(dir, &format!("pki.dir {}", dir.display()), wait)?;
        recover(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            _lock: Some(lock),
            writable: true,
        })
    }

    /// Opens pki.dir for a command that only reads it: takes the lock and repairs as
    /// [`PkiDir::open_rw`] does, but does not create a missing directory.
    ///
    /// # Errors
    /// As [`PkiDir::open_rw`].
    pub(crate) fn open_ro(dir: &Path, wait: &mut LockWait<'_>) -> Result<Self, ExpectedError> {
        if !dir.is_dir() {
            return Ok(Self {
                dir: dir.to_path_buf(),
                _lock: None,
                writable: false,
            });
        }
        let lock = lock::acquire(dir, &format!("pki.dir {}", dir.display()), wait)?;
        if needs_recovery(dir) {
            recover(dir)?;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            _lock: Some(lock),
            writable: false,
        })
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.dir
    }

    /// Reads every `*.crt` and `*.key` and a rotation's `state.yaml` (through links;
    /// `retired/` and cmesh's own hidden files left out).
    ///
    /// # Errors
    /// [`ExpectedError::PkiFile`] for a file that cannot be read (which is never taken for a
    /// missing one), [`ExpectedError::Read`] for an unreadable directory.
    pub(crate) fn read(&self) -> Result<PkiFiles, ExpectedError> {
        let files = read(&self.dir)?;
        tracing::debug!(dir = %self.dir.display(), files = ?files.keys().collect::<Vec<_>>(), "read pki.dir");
        Ok(files)
    }

    /// The signatures an earlier run verified (`.verified-signatures`); empty when the cache is
    /// missing or unreadable, which only costs the verifications.
    pub(crate) fn read_verified(&self) -> Verified {
        bounded::read(&self.dir.join(VERIFIED), MAX_VERIFIED)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .map(|t| Verified::parse(&t))
            .unwrap_or_default()
    }

    /// Keeps `verified` for the next run: written atomically, not synced (a cache lost in a
    /// crash costs verifications, nothing else), only by a command that may write pki.dir.
    /// A failure is logged, never an error.
    pub(crate) fn save_verified(&self, verified: &Verified) {
        if !self.writable || !self.dir.is_dir() {
            return;
        }
        let path = self.dir.join(VERIFIED);
        if let Err(e) =
            atomic::write_atomic_unsynced(&path, verified.to_text().as_bytes(), Mode::Public)
        {
            tracing::debug!(error = %e, "could not keep the verified signatures");
        }
    }

    /// Writes what reconcile returned: a new CA as a pair that never overwrites, leaves
    /// atomically (through a link to where the link points), keys 0600; then, when it wrote
    /// anything, the verified signatures for the next run.
    ///
    /// # Errors
    /// Write errors; [`ExpectedError::PkiRefused`] if a CA appeared in the meantime.
    pub(crate) fn write(&self, r: &Reconciled) -> Result<(), ExpectedError> {
        self.write_files(&r.writes)?;
        if !r.writes.is_empty() {
            self.save_verified(&r.verified);
        }
        Ok(())
    }

    fn write_files(&self, writes: &[PkiWrite]) -> Result<(), ExpectedError> {
        // Paths only: never what a file holds.
        tracing::debug!(dir = %self.dir.display(), files = ?writes.iter().map(|w| w.path.as_str()).collect::<Vec<_>>(), "write pki.dir");
        let cert = writes.iter().find(|w| w.path == CA_CERT);
        let key = writes.iter().find(|w| w.path == CA_KEY);
        match (cert, key) {
            (Some(c), Some(k)) => self.create_ca(&c.bytes, &k.bytes, None)?,
            (None, None) => {}
            _ => {
                return Err(ExpectedError::Internal(
                    "reconcile returned half a CA to write".into(),
                ));
            }
        }
        // Keys first, one sync of the file system, then the certificates and one more sync: a
        // certificate is never on disk before the key it names is durable (a crash in between
        // leaves keys without certificates, which the next render re-issues), and a first
        // render pays two syncs instead of one per file (5,110 at 511 clusters).
        let leaves = || {
            writes
                .iter()
                .filter(|w| w.path != CA_CERT && w.path != CA_KEY)
        };
        let mut first_leaf = true;
        for private in [true, false] {
            let mut any = false;
            for w in leaves().filter(|w| w.private == private) {
                self.write_leaf_file(w)?;
                any = true;
                if first_leaf {
                    fault::point("pki-leaf-written");
                    first_leaf = false;
                }
            }
            if any {
                sync_all_files(&self.dir).map_err(|source| ExpectedError::Write {
                    path: self.dir.clone(),
                    source,
                })?;
                if private {
                    fault::point("pki-keys-synced");
                }
            }
        }
        Ok(())
    }

    /// Writes one leaf file atomically, unsynced ([`Self::write`] syncs them as a batch).
    fn write_leaf_file(&self, w: &PkiWrite) -> Result<(), ExpectedError> {
        let path = self.dir.join(&w.path);
        if let Some(parent) = path.parent() {
            ensure_private_dir(parent)?;
        }
        // A leaf kept elsewhere through a link stays there: write where the link points.
        let target = match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => std::fs::canonicalize(&path)
                .map_err(|e| pki_file(&path, &BoundedReadError::Io(e)))?,
            _ => path,
        };
        let mode = if w.private {
            Mode::Private
        } else {
            Mode::Public
        };
        atomic::write_atomic_unsynced(&target, &w.bytes, mode)
    }

    /// Replaces the CA on the user's explicit request: the current pair (if any) moves to
    /// `retired/<time>-<fingerprint>/`; returns that directory.
    ///
    /// # Errors
    /// Write errors.
    pub(crate) fn replace_ca(
        &self,
        cert_pem: &[u8],
        key_pem: &[u8],
        current_sha256: Option<&str>,
        now: time::OffsetDateTime,
    ) -> Result<Option<PathBuf>, ExpectedError> {
        let exists = |f: &str| std::fs::symlink_metadata(self.dir.join(f)).is_ok();
        let retired = if exists(CA_CERT) || exists(CA_KEY) {
            let stamp = format!(
                "{:04}{:02}{:02}T{:02}{:02}{:02}Z-{}",
                now.year(),
                u8::from(now.month()),
                now.day(),
                now.hour(),
                now.minute(),
                now.second(),
                current_sha256
                    .map(|s| s
                        .replace(':', "")
                        .to_lowercase()
                        .chars()
                        .take(12)
                        .collect::<String>())
                    .unwrap_or_else(|| "unreadable".into())
            );
            Some(format!("{RETIRED}/{stamp}"))
        } else {
            None
        };
        self.create_ca(cert_pem, key_pem, retired.as_deref())?;
        Ok(retired.map(|r| self.dir.join(r)))
    }

    /// Starts a CA rotation: `rotation/` with the incoming CA (key 0600) and the state,
    /// staged in a temporary directory that one rename puts in place, so a killed run leaves
    /// either no rotation or a whole one.
    ///
    /// # Errors
    /// Write errors; [`ExpectedError::PkiRefused`] if `rotation/` exists.
    pub(crate) fn begin_rotation(
        &self,
        cert: &[u8],
        key: &[u8],
        state: &[u8],
    ) -> Result<(), ExpectedError> {
        let target = self.dir.join(rotation::ROTATION_DIR);
        if std::fs::symlink_metadata(&target).is_ok() {
            return Err(ExpectedError::PkiRefused {
                message: format!("{} exists", target.display()),
                hint: "a rotation is in progress or was left half-removed: `cmesh pki rotate status` says which".into(),
            });
        }
        let werr = |p: &Path| {
            let p = p.to_path_buf();
            move |source| ExpectedError::Write { path: p, source }
        };
        let staging = tempfile::Builder::new()
            .prefix(&format!("{TMP_PREFIX}rotation-"))
            .tempdir_in(&self.dir)
            .map_err(werr(&self.dir))?;
        for (name, bytes, mode) in [
            (CA_KEY, key, Mode::Private),
            (CA_CERT, cert, Mode::Public),
            ("state.yaml", state, Mode::Public),
        ] {
            let p = staging.path().join(name);
            atomic::write_new(&p, bytes, mode)?;
            sync_file(&p).map_err(werr(&p))?;
        }
        sync_dir(staging.path()).map_err(werr(staging.path()))?;
        std::fs::rename(staging.path(), &target).map_err(werr(&target))?;
        let _ = staging.keep();
        sync_dir(&self.dir).map_err(werr(&self.dir))
    }

    /// The membership record (see [`membership`]).
    ///
    /// # Errors
    /// As [`membership`].
    pub(crate) fn read_membership(&self) -> Result<Record, ExpectedError> {
        membership(&self.dir)
    }

    /// Rewrites the membership record (atomically, readable: it holds no secret).
    ///
    /// # Errors
    /// Write errors.
    pub(crate) fn write_membership(&self, record: &Record) -> Result<(), ExpectedError> {
        atomic::write_atomic(
            &self.dir.join(MEMBERSHIP),
            record.to_text().as_bytes(),
            Mode::Public,
            true,
        )
    }

    /// Rewrites the rotation's state file.
    ///
    /// # Errors
    /// Write errors.
    pub(crate) fn record_rotation(&self, state: &[u8]) -> Result<(), ExpectedError> {
        atomic::write_atomic(
            &self.dir.join(rotation::ROTATION_STATE),
            state,
            Mode::Public,
            true,
        )
    }

    /// Finishes a rotation: the incoming pair becomes `ca.crt`/`ca.key` (placed as any new
    /// CA is, the current pair moved to `retired/<retire_as>/`), then `rotation/` goes (its
    /// key is now `ca.key`; the copy is overwritten before removal). A run killed between the
    /// two leaves a rotation whose incoming CA is the mesh CA, which [`Self::drop_rotation`]
    /// clears.
    ///
    /// # Errors
    /// Write errors.
    pub(crate) fn promote_rotation(
        &self,
        cert: &[u8],
        key: &[u8],
        retire_as: &str,
    ) -> Result<PathBuf, ExpectedError> {
        let retired = format!("{RETIRED}/{retire_as}");
        self.create_ca(cert, key, Some(&retired))?;
        fault::point("pki-rotation-promoted");
        self.drop_rotation()?;
        Ok(self.dir.join(retired))
    }

    /// Removes `rotation/` (after [`Self::promote_rotation`] placed its CA).
    ///
    /// # Errors
    /// Write errors.
    pub(crate) fn drop_rotation(&self) -> Result<(), ExpectedError> {
        let dir = self.dir.join(rotation::ROTATION_DIR);
        if std::fs::symlink_metadata(&dir).is_err() {
            return Ok(());
        }
        let doomed = self.dir.join(format!("{TMP_PREFIX}rotation-done"));
        std::fs::rename(&dir, &doomed).map_err(|source| ExpectedError::Write {
            path: dir.clone(),
            source,
        })?;
        atomic::remove_leftover(&doomed)?;
        sync_dir(&self.dir).map_err(|source| ExpectedError::Write {
            path: self.dir.clone(),
            source,
        })
    }

    /// Aborts a rotation: `rotation/` as a whole (the incoming CA and its key) moves to
    /// `retired/<retire_as>/` in one rename.
    ///
    /// # Errors
    /// Write errors.
    pub(crate) fn discard_rotation(&self, retire_as: &str) -> Result<PathBuf, ExpectedError> {
        let from = self.dir.join(rotation::ROTATION_DIR);
        let retired = self.dir.join(RETIRED);
        ensure_private_dir(&retired)?;
        let to = retired.join(retire_as);
        std::fs::rename(&from, &to).map_err(|source| ExpectedError::Write {
            path: to.clone(),
            source,
        })?;
        sync_dir(&self.dir).map_err(|source| ExpectedError::Write {
            path: self.dir.clone(),
            source,
        })?;
        Ok(to)
    }

    fn create_ca(
        &self,
        cert: &[u8],
        key: &[u8],
        replaces: Option<&str>,
    ) -> Result<(), ExpectedError> {
        let werr = |p: &Path| {
            let p = p.to_path_buf();
            move |source| ExpectedError::Write { path: p, source }
        };
        let staging = tempfile::Builder::new()
            .prefix(&format!("{TMP_PREFIX}ca-"))
            .tempdir_in(&self.dir)
            .map_err(werr(&self.dir))?;
        atomic::write_new(&staging.path().join(CA_KEY), key, Mode::Private)?;
        atomic::write_new(&staging.path().join(CA_CERT), cert, Mode::Public)?;
        if let Some(r) = replaces {
            atomic::write_new(&staging.path().join(REPLACES), r.as_bytes(), Mode::Private)?;
        }
        for f in [CA_KEY, CA_CERT] {
            sync_file(&staging.path().join(f)).map_err(werr(&staging.path().join(f)))?;
        }
        sync_dir(staging.path()).map_err(werr(staging.path()))?;
        let pending = self.dir.join(CA_PENDING);
        // The commit point: from here on the next run finishes what this one started.
        std::fs::rename(staging.path(), &pending).map_err(werr(&pending))?;
        let _ = staging.keep();
        sync_dir(&self.dir).map_err(werr(&self.dir))?;
        fault::point("pki-ca-staged");
        place_pending(&self.dir)
    }
}

/// True when a killed run left something in pki.dir (checked without writing, so a
/// read-only checkout with nothing to repair is read as it is).
fn needs_recovery(dir: &Path) -> bool {
    fn any_tmp(dir: &Path, depth: usize) -> bool {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return false;
        };
        entries.flatten().any(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with(TMP_PREFIX)
                || name == CA_PENDING
                || (depth < MAX_DEPTH
                    && !name.starts_with('.')
                    && e.file_type().is_ok_and(|t| t.is_dir())
                    && any_tmp(&e.path(), depth + 1))
        })
    }
    any_tmp(dir, 0)
}

/// Finishes a committed CA (placing both files, retiring what it replaces) and removes the
/// temporaries of killed runs.
fn recover(dir: &Path) -> Result<(), ExpectedError> {
    if std::fs::symlink_metadata(dir.join(CA_PENDING)).is_ok() {
        place_pending(dir)?;
    }
    remove_temporaries(dir, 0)
}

/// Places `.cmesh-ca-pending`'s pair: each file hard-linked into place (never over another
/// file), unless the same bytes are there already; what it replaces moved to `retired/`.
fn place_pending(dir: &Path) -> Result<(), ExpectedError> {
    let werr = |p: &Path| {
        let p = p.to_path_buf();
        move |source| ExpectedError::Write { path: p, source }
    };
    let pending = dir.join(CA_PENDING);
    let replaces = std::fs::read_to_string(pending.join(REPLACES)).ok();
    for (i, f) in [CA_KEY, CA_CERT].into_iter().enumerate() {
        let src = pending.join(f);
        let dst = dir.join(f);
        let staged = std::fs::read(&src).map_err(|e| ExpectedError::Read {
            path: src.clone(),
            source: e,
        })?;
        if std::fs::symlink_metadata(&dst).is_ok() {
            let same = bounded::read(&dst, MAX_PKI_FILE).is_ok_and(|b| b == staged);
            if same {
                continue;
            }
            match &replaces {
                Some(r) => {
                    let to = dir.join(r.trim());
                    ensure_private_dir(&to)?;
                    std::fs::rename(&dst, to.join(f)).map_err(werr(&dst))?;
                }
                None => {
                    return Err(ExpectedError::PkiRefused {
                        message: format!(
                            "{} exists and differs from the CA being created in {}",
                            dst.display(),
                            pending.display()
                        ),
                        hint: format!(
                            "another program wrote {f} while cmesh created a CA; keep the pair you want as ca.crt and ca.key and remove {}",
                            pending.display()
                        ),
                    });
                }
            }
        }
        std::fs::hard_link(&src, &dst).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                ExpectedError::PkiRefused {
                    message: format!("{} appeared while cmesh was creating the CA", dst.display()),
                    hint: "another program writes pki.dir; run cmesh again once it is done".into(),
                }
            } else {
                werr(&dst)(e)
            }
        })?;
        if i == 0 {
            fault::point("pki-ca-key-placed");
        }
    }
    sync_dir(dir).map_err(werr(dir))?;
    atomic::remove_leftover(&pending)?;
    sync_dir(dir).map_err(werr(dir))
}

/// Removes `.cmesh-tmp-*` entries (files of an interrupted atomic write, staged CAs never
/// committed) anywhere under `dir`.
fn remove_temporaries(dir: &Path, depth: usize) -> Result<(), ExpectedError> {
    if depth > MAX_DEPTH {
        return Ok(());
    }
    let entries = std::fs::read_dir(dir).map_err(|source| ExpectedError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name.starts_with(TMP_PREFIX) {
            atomic::remove_leftover(&path)?;
        } else if entry.file_type().is_ok_and(|t| t.is_dir()) && !name.starts_with('.') {
            remove_temporaries(&path, depth + 1)?;
        }
    }
    Ok(())
}

/// Reads pki.dir (see [`PkiDir::read`]); a missing directory is empty.
fn read(dir: &Path) -> Result<PkiFiles, ExpectedError> {
    let mut files = PkiFiles::new();
    if !dir.exists() {
        return Ok(files);
    }
    let mut total = 0;
    walk(dir, dir, 0, &mut total, &mut files)?;
    Ok(files)
}

fn walk(
    root: &Path,
    dir: &Path,
    depth: usize,
    total: &mut u64,
    files: &mut PkiFiles,
) -> Result<(), ExpectedError> {
    let rerr = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ExpectedError::Read { path, source }
    };
    let entries = std::fs::read_dir(dir).map_err(rerr(dir))?;
    for entry in entries {
        let entry = entry.map_err(rerr(dir))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || (depth == 0 && name == RETIRED) {
            continue;
        }
        // Certificates, keys, and a rotation's state.
        let is_pki_file = name.ends_with(".crt")
            || name.ends_with(".key")
            || (depth == 1
                && name == "state.yaml"
                && dir.file_name() == Some(std::ffi::OsStr::new(rotation::ROTATION_DIR)));
        // Follow links: a CA kept on another volume is still the CA.
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if is_pki_file => return Err(pki_file(&path, &BoundedReadError::Io(e))),
            Err(_) => continue,
        };
        if meta.is_dir() {
            if depth < MAX_DEPTH {
                walk(root, &path, depth + 1, total, files)?;
            }
            continue;
        }
        if !is_pki_file {
            continue;
        }
        let bytes = bounded::read(&path, MAX_PKI_FILE).map_err(|e| pki_file(&path, &e))?;
        *total += bytes.len() as u64;
        if *total > MAX_PKI_TOTAL {
            return Err(pki_file(
                &path,
                &BoundedReadError::TooLarge {
                    size: *total,
                    limit: MAX_PKI_TOTAL,
                },
            ));
        }
        let rel = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .to_string_lossy()
            .replace('\\', "/");
        files.insert(rel, bytes);
    }
    Ok(())
}

fn pki_file(path: &Path, e: &BoundedReadError) -> ExpectedError {
    let link = std::fs::read_link(path)
        .ok()
        .map(|t| format!(" (a link to {})", t.display()))
        .unwrap_or_default();
    let problem = match e {
        BoundedReadError::Io(io) if io.kind() == std::io::ErrorKind::NotFound => {
            format!(
                "is a link to {}, which does not exist",
                std::fs::read_link(path)
                    .map(|t| t.display().to_string())
                    .unwrap_or_default()
            )
        }
        BoundedReadError::Io(io) => format!("cannot be read{link}: {io}"),
        other => format!("cannot be read{link}: {other}"),
    };
    ExpectedError::PkiFile {
        path: path.to_path_buf(),
        problem,
    }
}

/// Creates `dir` (and parents) with mode 0700 if it does not exist.
///
/// # Errors
/// [`ExpectedError::Write`].
pub(crate) fn ensure_private_dir(dir: &Path) -> Result<(), ExpectedError> {
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

fn sync_file(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(path)?.sync_all()
}

/// Makes every file written so far under `dir` durable, with their directory entries: one
/// `syncfs` of the file system that holds `dir` (Linux). Elsewhere, a full `sync`, which
/// POSIX allows to return before the data is written; those systems keep the per-file
/// guarantee only as far as their `sync` gives it.
fn sync_all_files(dir: &Path) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let d = std::fs::File::open(dir)?;
        rustix::fs::syncfs(&d).map_err(std::io::Error::from)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = dir;
        rustix::fs::sync();
        Ok(())
    }
}

/// Makes a directory's entries (renames, links) durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Mode bits of a file, if it exists (Unix only).
pub(crate) fn mode_of(path: &Path) -> Option<u32> {
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

/// The membership record in pki.dir `dir` (`membership.yaml`); empty when there is none yet.
/// Read without the lock by `check`: the file is only ever replaced whole.
///
/// # Errors
/// [`ExpectedError::PkiFile`] for a record that cannot be read or parsed (never taken for an
/// empty one: that would forget the clusters it names).
pub(crate) fn membership(dir: &Path) -> Result<Record, ExpectedError> {
    let path = dir.join(MEMBERSHIP);
    let bad = |problem: String| ExpectedError::PkiFile {
        path: path.clone(),
        problem,
    };
    match bounded::read(&path, 16 * 1024 * 1024) {
        Ok(bytes) => Record::parse(&String::from_utf8_lossy(&bytes)).map_err(|e| {
            bad(format!(
                "{}: fix it by hand or restore it from where you keep pki.dir",
                e.reason
            ))
        }),
        Err(e) if e.is_not_found() => Ok(Record::default()),
        Err(e) => Err(bad(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn open(dir: &Path) -> PkiDir {
        let mut quiet = |_: &str| {};
        PkiDir::open_rw(
            dir,
            &mut LockWait {
                timeout: Duration::ZERO,
                notify: &mut quiet,
            },
        )
        .unwrap()
    }

    #[test]
    fn a_committed_ca_is_placed_by_the_next_run() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("pki");
        ensure_private_dir(&dir.join(CA_PENDING)).unwrap();
        std::fs::write(dir.join(CA_PENDING).join(CA_KEY), "KEY").unwrap();
        std::fs::write(dir.join(CA_PENDING).join(CA_CERT), "CERT").unwrap();
        // Killed after placing the key.
        std::fs::hard_link(dir.join(CA_PENDING).join(CA_KEY), dir.join(CA_KEY)).unwrap();
        std::fs::write(dir.join(".cmesh-tmp-abc"), "half a key").unwrap();
        let p = open(&dir);
        let files = p.read().unwrap();
        assert_eq!(files[CA_CERT], b"CERT");
        assert_eq!(files[CA_KEY], b"KEY");
        assert!(!dir.join(CA_PENDING).exists());
        assert!(!dir.join(".cmesh-tmp-abc").exists());
    }

    #[test]
    fn a_pending_ca_never_overwrites_another() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("pki");
        ensure_private_dir(&dir.join(CA_PENDING)).unwrap();
        std::fs::write(dir.join(CA_PENDING).join(CA_KEY), "KEY").unwrap();
        std::fs::write(dir.join(CA_PENDING).join(CA_CERT), "CERT").unwrap();
        std::fs::write(dir.join(CA_CERT), "SOMEONE ELSE'S").unwrap();
        let mut quiet = |_: &str| {};
        let err = PkiDir::open_rw(
            &dir,
            &mut LockWait {
                timeout: Duration::ZERO,
                notify: &mut quiet,
            },
        )
        .unwrap_err();
        assert!(matches!(err, ExpectedError::PkiRefused { .. }), "{err:?}");
        assert_eq!(std::fs::read(dir.join(CA_CERT)).unwrap(), b"SOMEONE ELSE'S");
    }

    #[test]
    fn links_are_followed_and_unreadable_files_are_errors() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("pki");
        let vol = t.path().join("volume");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&vol).unwrap();
        std::fs::write(vol.join("ca.crt"), "CERT").unwrap();
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(vol.join("ca.crt"), dir.join(CA_CERT)).unwrap();
            std::os::unix::fs::symlink(vol.join("missing.key"), dir.join(CA_KEY)).unwrap();
            let err = read(&dir).unwrap_err();
            assert!(
                matches!(&err, ExpectedError::PkiFile { problem, .. } if problem.contains("does not exist")),
                "{err:?}"
            );
            std::fs::write(vol.join("missing.key"), "KEY").unwrap();
            let files = read(&dir).unwrap();
            assert_eq!(files[CA_CERT], b"CERT");
            assert_eq!(files[CA_KEY], b"KEY");
        }
        let big = dir.join("clusters/a/server.crt");
        std::fs::create_dir_all(big.parent().unwrap()).unwrap();
        std::fs::File::create(&big)
            .unwrap()
            .set_len(MAX_PKI_FILE + 1)
            .unwrap();
        assert!(matches!(read(&dir), Err(ExpectedError::PkiFile { .. })));
    }
}
