//! What several commands share: loading the spec with its diagnostics shown on stderr, and
//! the current time.

use std::io::Write;

use time::OffsetDateTime;

use crate::cli::GlobalArgs;
use crate::errors::ExpectedError;
use crate::fs::spec::{self as input, Loaded};
use crate::ui::{Style, diagnostics, term};

/// Loads and validates the spec. Errors are printed to stderr before returning; warnings are
/// printed too, and the spec is returned.
///
/// # Errors
/// [`ExpectedError::SpecInvalid`] and read errors.
pub(crate) fn load_spec(global: &GlobalArgs) -> Result<Loaded, ExpectedError> {
    let style = Style::detect_stderr(global.color);
    let loaded = input::load(&global.spec_source(), &mut |diags| {
        term::eprint(&diagnostics::render_list(diags, style));
    })?;
    if !loaded.warnings.is_empty() {
        term::eprint(&diagnostics::render_list(&loaded.warnings, style));
    }
    Ok(loaded)
}

/// The wall clock, the only source of time for the core.
pub(crate) fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// Writes `s` to `out`.
///
/// # Errors
/// [`ExpectedError::Write`] if stdout is closed.
pub(crate) fn emit(out: &mut dyn Write, s: &str) -> Result<(), ExpectedError> {
    out.write_all(s.as_bytes())
        .map_err(|source| ExpectedError::Write {
            path: "<stdout>".into(),
            source,
        })
}

/// The async runtime of commands that talk to clusters: two workers, as the work is I/O.
///
/// # Errors
/// [`ExpectedError::Internal`] if the runtime cannot start.
pub(crate) fn runtime() -> Result<Runtime, ExpectedError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map(|rt| Runtime(Some(rt)))
        .map_err(|e| ExpectedError::Internal(format!("tokio runtime: {e}")))
}

/// A tokio runtime that, when the command is done, does not wait for blocking work still
/// running: a DNS lookup against a resolver that never answers (the system resolver retries
/// for 30 s) was already given up by its timeout, and must not hold the exit.
pub(crate) struct Runtime(Option<tokio::runtime::Runtime>);

impl std::ops::Deref for Runtime {
    type Target = tokio::runtime::Runtime;
    fn deref(&self) -> &Self::Target {
        self.0
            .as_ref()
            .unwrap_or_else(|| unreachable!("taken only on drop"))
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Checks that every `--cluster` name is in the mesh.
///
/// # Errors
/// [`ExpectedError::Usage`] naming the unknown cluster and listing the mesh's.
pub(crate) fn known_clusters(
    spec: &cmesh_core::spec::MeshSpec,
    names: &[String],
) -> Result<(), ExpectedError> {
    match names.iter().find(|n| spec.cluster(n).is_none()) {
        None => Ok(()),
        Some(c) => Err(ExpectedError::Usage {
            message: format!("unknown cluster `{c}`"),
            hint: Some(cluster_list(spec)),
        }),
    }
}

/// `clusters in this mesh: a, b`, for hints.
pub(crate) fn cluster_list(spec: &cmesh_core::spec::MeshSpec) -> String {
    let names: Vec<&str> = spec.clusters.iter().map(|c| c.name.as_str()).collect();
    format!("clusters in this mesh: {}", names.join(", "))
}
