//! `cmesh probe`: dials every clustermesh endpoint as a peer's agent would and explains
//! every failure.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cmesh_core::probe;
use cmesh_core::spec::MeshSpec;

use super::common::{emit, load_spec};
use crate::cli::{GlobalArgs, Output, ProbeArgs};
use crate::errors::{ExpectedError, exit};
use crate::fs::pki::{PkiDir, pki_dir};
use crate::live::probe::{CredentialError, Credentials};
use crate::ui;
use crate::ui::Style;

/// Runs `cmesh probe`. Exit 0 when every probe passes, 1 otherwise.
///
/// # Errors
/// Spec errors, unknown clusters, missing credentials.
pub(crate) fn run(
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
    let peers: Vec<String> = targets
        .iter()
        .map(|t| t.from.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let runtime = super::common::runtime()?;
    let creds = if args.certs_from_cluster {
        runtime.block_on(from_clusters(
            spec,
            &loaded.input.base_dir,
            &peers,
            args.request_timeout.0,
        ))?
    } else {
        from_pki(
            global,
            spec,
            &pki_dir(&loaded.input.base_dir, &spec.pki.dir),
            &peers,
        )?
    };
    let source = creds.source.clone();
    let reports = runtime.block_on(crate::live::probe::run(
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

/// Credentials from pki.dir.
fn from_pki(
    global: &GlobalArgs,
    spec: &MeshSpec,
    dir: &Path,
    peers: &[String],
) -> Result<Credentials, ExpectedError> {
    let files =
        crate::pipeline::with_lock_wait(global, |wait| PkiDir::open_ro(dir, wait))?.read()?;
    crate::live::probe::from_pki_dir(spec, &files, peers).map_err(|e| {
        let hint = match e {
            CredentialError::NoCa | CredentialError::NoClientCert(_) => {
                "run `cmesh render` first (the probe uses the mesh CA and the remote certificates in pki.dir), or use --certs-from-cluster"
            }
            CredentialError::CertManager => "use --certs-from-cluster: with certManager the certificates live in the clusters",
            CredentialError::Invalid(_) => "check pki.dir with `cmesh check` and `cmesh pki show`",
        };
        ExpectedError::PkiRefused {
            message: format!("cannot probe with {}: {e}", dir.display()),
            hint: hint.into(),
        }
    })
}

/// Credentials from the peers' clusters: their `clustermesh-apiserver-remote-cert` Secrets.
async fn from_clusters(
    spec: &MeshSpec,
    base: &Path,
    peers: &[String],
    timeout: Duration,
) -> Result<Credentials, ExpectedError> {
    let mut clients = BTreeMap::new();
    let mut problems = Vec::new();
    for (name, conn) in crate::live::kube::connect_all(spec, base, peers, timeout).await {
        let data = match conn {
            Ok(c) => c.secret_data("clustermesh-apiserver-remote-cert").await,
            Err(e) => Err(e),
        };
        match data {
            Ok(Some(d)) => match crate::live::probe::identity_from_secret(&name, &d) {
                Ok(id) => {
                    clients.insert(name, id);
                }
                Err(e) => problems.push(e.to_string()),
            },
            Ok(None) => problems.push(format!("{name}: Secret kube-system/clustermesh-apiserver-remote-cert not found (is the mesh phase applied?)")),
            Err(e) => problems.push(format!("{name}: {e}")),
        }
    }
    if !problems.is_empty() {
        return Err(ExpectedError::Cluster {
            message: format!("cannot read the peers' client certificates: {}", problems.join("; ")),
            hint: "check the clusters' kubeconfigs, or probe with pki.dir (without --certs-from-cluster)".into(),
        });
    }
    Ok(Credentials {
        clients,
        source: "clustermesh-apiserver-remote-cert Secrets in the peers' clusters".into(),
    })
}
