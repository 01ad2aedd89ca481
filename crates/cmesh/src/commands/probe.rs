//! `cmesh probe`: dials every clustermesh endpoint as a peer's agent would and explains
//! every failure.

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::Arc;

use cmesh_core::probe;

use super::common::{emit, load_spec};
use crate::cli::{GlobalArgs, Output, ProbeArgs};
use crate::errors::{ExpectedError, exit};
use crate::ui::Style;
use crate::{pki_io, ui};

/// Runs `cmesh probe`. Exit 0 when every probe passes, 1 otherwise.
///
/// # Errors
/// Spec errors, unknown clusters, missing credentials.
pub fn run(
    global: &GlobalArgs,
    args: &ProbeArgs,
    style: Style,
    out: &mut dyn Write,
) -> Result<u8, ExpectedError> {
    let loaded = load_spec(global)?;
    let spec = &loaded.spec;
    let targets =
        probe::plan(spec, &args.cluster, &args.from).map_err(|e| ExpectedError::Usage {
            message: e.to_string(),
            hint: None,
        })?;
    if targets.is_empty() {
        return Err(ExpectedError::Usage {
            message: "nothing to probe: a probe dials a cluster as one of its peers, and the selection leaves none".into(),
            hint: Some("drop --from, or pick a cluster other than the --cluster ones".into()),
        });
    }
    let dir = pki_io::pki_dir(&loaded.input.base_dir, &spec.pki.dir);
    let files = pki_io::read(&dir)?;
    let peers: Vec<String> = targets
        .iter()
        .map(|t| t.from.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let creds = crate::probe::from_pki_dir(spec, &files, &peers).map_err(|e| {
        let hint = match e {
            crate::probe::CredentialError::NoCa | crate::probe::CredentialError::NoClientCert(_) => {
                "run `cmesh render` first: the probe uses the mesh CA and the remote certificates in pki.dir"
            }
            crate::probe::CredentialError::CertManager => "probing a certManager mesh needs the certificates stored in the clusters",
            crate::probe::CredentialError::Invalid(_) => "check pki.dir with `cmesh check` and `cmesh pki show`",
        };
        ExpectedError::PkiRefused {
            message: format!("cannot probe with {}: {e}", dir.display()),
            hint: hint.into(),
        }
    })?;
    let source = creds.source.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| ExpectedError::Internal(format!("tokio runtime: {e}")))?;
    let reports = runtime.block_on(crate::probe::run(
        targets,
        Arc::new(creds),
        args.timeout.0,
        args.parallel,
    ));
    let text = match args.output {
        Output::Json => ui::probe::json(&reports, &source),
        Output::Table => ui::probe::table(&reports, &source, style.width),
    };
    emit(out, &text)?;
    Ok(if reports.iter().all(probe::Report::ok) {
        exit::OK
    } else {
        exit::CHECKS_FAILED
    })
}
