//! The one user-facing error type, its exit codes and how it is shown.
//!
//! Every failure a user can cause or meet ends up as an [`ExpectedError`]; each variant maps
//! to a documented exit code (see [`exit`]) and prints `error: …` plus `(hint: …)` lines.

use std::io::{self, Write};
use std::path::PathBuf;

use cmesh_core::diag::Counts;
use cmesh_core::pki::PkiError;

/// Process exit codes. Documented in docs/ARCHITECTURE.md and `cmesh --help`.
pub(crate) mod exit {
    /// Success.
    pub(crate) const OK: u8 = 0;
    /// The command ran and what it checked failed (a probe, a status check, a test).
    pub(crate) const CHECKS_FAILED: u8 = 1;
    /// Invalid command line.
    pub(crate) const USAGE: u8 = 2;
    /// mesh.yaml is invalid (errors were printed).
    pub(crate) const SPEC: u8 = 3;
    /// A file could not be read or written.
    pub(crate) const IO: u8 = 4;
    /// The PKI is missing, invalid, or would have to be regenerated.
    pub(crate) const PKI: u8 = 5;
    /// `render --check`: the tree on disk differs from what would be rendered.
    pub(crate) const DRIFT: u8 = 6;
    /// An operation on a cluster, or an external tool (helm), failed.
    pub(crate) const CLUSTER: u8 = 7;
    /// Another cmesh run holds the lock on pki.dir or the output directory (after the wait).
    pub(crate) const BUSY: u8 = 8;
    /// Interrupted (Ctrl-C).
    pub(crate) const INTERRUPTED: u8 = 130;
    /// Terminated (SIGTERM).
    pub(crate) const TERMINATED: u8 = 143;
}

/// Everything that can go wrong, as the user sees it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ExpectedError {
    /// mesh.yaml has errors; they were already printed.
    #[error("{file} has {} error(s)", counts.errors)]
    SpecInvalid {
        /// The file.
        file: String,
        /// Counts.
        counts: Counts,
    },
    /// mesh.yaml does not exist.
    #[error("{} does not exist", path.display())]
    SpecNotFound {
        /// The path.
        path: PathBuf,
    },
    /// mesh.yaml is a directory.
    #[error("{} is a directory, not a mesh.yaml file", path.display())]
    SpecIsDirectory {
        /// The path.
        path: PathBuf,
    },
    /// mesh.yaml is too large to be one.
    #[error("{} is {size} bytes; a mesh.yaml is at most {limit} bytes", path.display())]
    SpecTooLarge {
        /// The path.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The limit.
        limit: usize,
    },
    /// mesh.yaml is not UTF-8.
    #[error("{} is not UTF-8 text (invalid byte at offset {offset})", path.display())]
    SpecNotUtf8 {
        /// The path.
        path: PathBuf,
        /// First invalid byte.
        offset: usize,
    },
    /// A file could not be read.
    #[error("failed to read {}", path.display())]
    Read {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A file could not be written.
    #[error("failed to write {}", path.display())]
    Write {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Refusing to overwrite an existing file.
    #[error("{} already exists", path.display())]
    WouldOverwrite {
        /// The path.
        path: PathBuf,
    },
    /// The PKI is missing, invalid, or would have to be regenerated.
    #[error("{context}")]
    Pki {
        /// What cmesh was doing (includes the directory).
        context: String,
        /// The problem.
        #[source]
        source: PkiError,
    },
    /// A file in pki.dir that cannot be read (never taken for a missing one).
    #[error("{} {problem}", path.display())]
    PkiFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// Another run holds a lock and did not release it in time.
    #[error("{what} is in use{}: gave up after {}s", holder.as_ref().map(|h| format!(" by {h}")).unwrap_or_default(), waited.as_secs())]
    Locked {
        /// What the lock protects.
        what: String,
        /// The lock file.
        path: PathBuf,
        /// The holder, as its record says (`PID 123 (`cmesh render`)`).
        holder: Option<String>,
        /// How long this run waited.
        waited: std::time::Duration,
    },
    /// Ctrl-C or SIGTERM; what was being written was cleaned up.
    #[error("interrupted; nothing was left half-written")]
    Interrupted,
    /// A PKI operation refused to act (an existing CA, a mismatch).
    #[error("{message}")]
    PkiRefused {
        /// What was refused.
        message: String,
        /// How to proceed.
        hint: String,
    },
    /// `render --check` found differences (already printed).
    #[error("{what} is out of date: {count} difference(s)")]
    Drift {
        /// The tree.
        what: String,
        /// Number of differences.
        count: usize,
    },
    /// A bug: something cmesh guarantees did not hold.
    #[error("internal error: {0}")]
    Internal(String),
    /// An output directory holds files cmesh did not write.
    #[error("{} holds files cmesh did not write ({}); rendering replaces the whole directory", dir.display(), files.join(", "))]
    DirNotOurs {
        /// The directory.
        dir: PathBuf,
        /// Up to five of the foreign files.
        files: Vec<String>,
    },
    /// A cluster could not be reached or did not hold what the command needs.
    #[error("{message}")]
    Cluster {
        /// What failed, per cluster.
        message: String,
        /// How to proceed.
        hint: String,
    },
    /// A program the command drives is not installed.
    #[error("{tool} is not installed (or not on PATH): {why}")]
    ToolMissing {
        /// The program.
        tool: String,
        /// Why it is needed.
        why: String,
        /// How to install it.
        install: String,
    },
    /// An option combination or argument that cannot work.
    #[error("{message}")]
    Usage {
        /// What is wrong.
        message: String,
        /// How to fix it.
        hint: Option<String>,
    },
}

impl ExpectedError {
    /// The process exit code for this error.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            ExpectedError::SpecInvalid { .. }
            | ExpectedError::SpecTooLarge { .. }
            | ExpectedError::SpecNotUtf8 { .. } => exit::SPEC,
            ExpectedError::SpecNotFound { .. }
            | ExpectedError::SpecIsDirectory { .. }
            | ExpectedError::Read { .. }
            | ExpectedError::Write { .. }
            | ExpectedError::WouldOverwrite { .. }
            | ExpectedError::DirNotOurs { .. } => exit::IO,
            ExpectedError::Usage { .. } => exit::USAGE,
            ExpectedError::Cluster { .. } | ExpectedError::ToolMissing { .. } => exit::CLUSTER,
            ExpectedError::Pki { .. }
            | ExpectedError::PkiRefused { .. }
            | ExpectedError::PkiFile { .. } => exit::PKI,
            ExpectedError::Locked { .. } => exit::BUSY,
            ExpectedError::Interrupted => crate::host::signals::exit_code(),
            ExpectedError::Drift { .. } => exit::DRIFT,
            ExpectedError::Internal(_) => exit::CHECKS_FAILED,
        }
    }

    /// Hints shown under the error.
    pub(crate) fn hints(&self) -> Vec<String> {
        match self {
            ExpectedError::SpecInvalid { .. } => {
                vec!["fix the errors above; `cmesh check` lists them all".into()]
            }
            ExpectedError::SpecNotFound { .. } => vec![
                "run `cmesh init` to write one, pass another file with -f, or use --example".into(),
            ],
            ExpectedError::SpecIsDirectory { path } => {
                vec![format!(
                    "pass the file inside it: -f {}",
                    path.join("mesh.yaml").display()
                )]
            }
            ExpectedError::SpecTooLarge { .. } => vec!["is this the right file?".into()],
            ExpectedError::SpecNotUtf8 { .. } => {
                vec!["save the file as UTF-8 (is it encrypted or binary?)".into()]
            }
            ExpectedError::WouldOverwrite { .. } => {
                vec!["pass --force to replace it, or -f to write elsewhere".into()]
            }
            ExpectedError::Usage { hint, .. } => hint.iter().cloned().collect(),
            ExpectedError::DirNotOurs { .. } => vec![
                "move them elsewhere, choose another --out, or pass --force to replace the directory anyway".into(),
            ],
            ExpectedError::Pki { source, .. } => pki_hints(source),
            ExpectedError::PkiFile { .. } => vec![
                "cmesh reads pki.dir's certificates and keys through links, as regular files of at most 1 MiB, and never replaces a CA it could not read: make the file readable (mount the volume a link points to) or move it away".into(),
            ],
            ExpectedError::Locked { path, .. } => vec![
                "wait for the other run to finish, or pass --lock-timeout to wait longer".into(),
                format!("if no cmesh is running, the lock is already free (the OS releases it when its holder exits): {} can stay", path.display()),
            ],
            ExpectedError::Interrupted => Vec::new(),
            ExpectedError::ToolMissing { install, .. } => vec![install.clone()],
            ExpectedError::PkiRefused { hint, .. } | ExpectedError::Cluster { hint, .. } => {
                vec![hint.clone()]
            }
            ExpectedError::Drift { .. } => vec!["run `cmesh render` and commit the result".into()],
            ExpectedError::Internal(_) => vec!["please report this bug with the command you ran".into()],
            ExpectedError::Read { .. } | ExpectedError::Write { .. } => Vec::new(),
        }
    }

    /// Writes the error, its causes and hints to `w` (stderr in the binary).
    pub(crate) fn display_to(&self, w: &mut dyn Write) -> io::Result<()> {
        write!(w, "error: {self}")?;
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            write!(w, ": {s}")?;
            source = s.source();
        }
        writeln!(w)?;
        for h in self.hints() {
            writeln!(w, "  (hint: {h})")?;
        }
        Ok(())
    }
}

fn pki_hints(e: &PkiError) -> Vec<String> {
    match e {
        PkiError::NoCa => vec![
            "`cmesh render` creates a CA on first use; `cmesh pki init` creates one explicitly; `cmesh pki import` adopts an existing one".into(),
            "`render --check` in a clone of the GitOps repository needs only the CA certificate: commit pki.dir's ca.crt (never its key; `cmesh init`'s .gitignore keeps the key out and the certificate in)".into(),
        ],
        PkiError::IncompleteCa { missing, .. } => vec![
            format!("cmesh writes the CA's two files as a pair and never leaves one alone, so {missing} was moved or removed outside cmesh: put it back (from where you keep the CA, or `retired/` if an earlier replacement moved it); cmesh never regenerates a CA, because every cluster trusts the current one"),
            "to start over on purpose: `cmesh pki init --force` (the remaining file is kept in retired/); every cluster must then be re-rendered and re-applied".into(),
        ],
        PkiError::Expired { .. } | PkiError::NotYetValid { .. } => vec![
            "the mesh CA must be replaced: `cmesh pki import --force` (or `cmesh pki init --force`), then render and apply every cluster".into(),
        ],
        PkiError::KeyMismatch { .. } => vec!["pass the key that belongs to this certificate".into()],
        PkiError::NotCa { .. } => vec!["pass the CA certificate, not a leaf certificate".into()],
        PkiError::InFile { source, .. } => pki_hints(source),
        PkiError::InvalidState { .. } => vec![
            "rotation/ in pki.dir is written by `cmesh pki rotate` only; restore it from git (state.yaml and ca.crt are committed), or retire the rotation by moving rotation/ into retired/ if it never reached `reissue`".into(),
        ],
        PkiError::InvalidKey { .. } | PkiError::InvalidCert { .. } | PkiError::Generate { .. } => Vec::new(),
    }
}
