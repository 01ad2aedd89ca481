//! `cmesh status`: every check on every cluster, once or until all pass (`--wait`).

use std::io::{IsTerminal, Write};
use std::time::Instant;

use cmesh_core::pki::CertInfo;
use cmesh_core::pki::store::{CA_CERT, CaPolicy};
use cmesh_core::render::{self, Phase};
use cmesh_core::status;

use super::common::{emit, load_spec, now};
use crate::cli::{GlobalArgs, StatusArgs, StatusOutput};
use crate::errors::{ExpectedError, exit};
use crate::live::{helm, kube};
use crate::pipeline::{PkiAccess, open_pki, reconcile};
use crate::ui::status::ClusterChecks;
use crate::ui::{self, Style};

/// Runs `cmesh status`. Exit 0 when no check fails, 7 when a cluster's API server cannot be
/// reached, 1 otherwise (a cluster that answered too slowly for its deadline included).
///
/// # Errors
/// Spec and usage errors.
pub(crate) fn run(
    global: &GlobalArgs,
    args: &StatusArgs,
    style: Style,
    out: &mut dyn Write,
) -> Result<u8, ExpectedError> {
    let loaded = load_spec(global)?;
    let spec = &loaded.spec;
    super::common::known_clusters(spec, &args.cluster)?;
    // pki.dir is read under its lock, which is released before any cluster is contacted.
    let (mesh_ca, rendered) = {
        let pki_dir = open_pki(global, &loaded, PkiAccess::Read)?;
        let files = pki_dir.read()?;
        let mesh_ca = files
            .get(CA_CERT)
            .and_then(|b| CertInfo::from_pem(&String::from_utf8_lossy(b)).ok());
        // What render would produce now, for the drift check (never writes the PKI).
        let rendered: Result<_, String> =
            reconcile(spec, &pki_dir, CaPolicy::MustExist, None, false)
                .map(|pki| render::pki_view(spec, pki.as_ref()))
                .map_err(|e| e.to_string());
        (mesh_ca, rendered)
    };
    let helm = helm::locate(args.helm.as_deref());
    let runtime = super::common::runtime()?;
    let start = Instant::now();
    let terminal = std::io::stderr().is_terminal();
    loop {
        let (checks, unreachable) = runtime.block_on(survey(
            spec,
            &loaded.input.base_dir,
            &args.cluster,
            &helm,
            args.request_timeout.0,
            mesh_ca.as_ref(),
            Some(&rendered),
        ));
        let ok = ui::status::ok(&checks);
        if ok || !args.wait || start.elapsed() >= args.timeout.0 {
            let text = match args.output {
                StatusOutput::Json => ui::status::json(&checks),
                StatusOutput::Table => ui::status::table(&checks, style.width),
                StatusOutput::Mermaid => ui::status::mermaid(&checks),
                StatusOutput::Dot => ui::status::dot(&checks),
            };
            emit(out, &text)?;
            if args.wait && !ok {
                let _ = writeln!(
                    std::io::stderr(),
                    "status: not every check passed within {}s",
                    args.timeout.0.as_secs()
                );
            }
            return Ok(if unreachable {
                exit::CLUSTER
            } else if ok {
                exit::OK
            } else {
                exit::CHECKS_FAILED
            });
        }
        let line = ui::status::waiting_line(&checks, start.elapsed().as_secs());
        if terminal {
            ui::term::replace_line(&line);
        } else {
            let _ = writeln!(std::io::stderr(), "{line}");
        }
        std::thread::sleep(args.interval.0);
    }
}

/// One pass of `status` over `selected` clusters (all when empty): every cluster observed at
/// once, each bounded by its own deadline, then judged, trust across clusters included. With
/// `rendered` absent the drift check is skipped (`apply`'s gate between clusters, where the
/// clusters not yet applied differ from the render by design). Returns the checks and whether
/// an API server could not be reached.
pub(crate) async fn survey(
    spec: &cmesh_core::spec::MeshSpec,
    base_dir: &std::path::Path,
    selected: &[String],
    helm: &Result<crate::live::helm::Helm, String>,
    request_timeout: std::time::Duration,
    mesh_ca: Option<&CertInfo>,
    rendered: Option<&Result<render::PkiView, String>>,
) -> (Vec<ClusterChecks>, bool) {
    let ask_kvstoremesh = crate::live::status::asks_kvstoremesh(spec);
    let conns = kube::connect_all(spec, base_dir, selected, request_timeout).await;
    let mut set = tokio::task::JoinSet::new();
    for (i, (name, conn)) in conns.into_iter().enumerate() {
        let helm = helm.clone();
        let peers = spec.clusters.len().saturating_sub(1);
        let deadline = crate::live::status::cluster_deadline(request_timeout, peers);
        set.spawn(async move {
            // Whatever one cluster's server does, it cannot hold up the others' report.
            let obs = tokio::time::timeout(
                deadline,
                crate::live::status::observe(
                    peers,
                    ask_kvstoremesh,
                    conn,
                    helm.as_ref().map_err(String::as_str),
                    request_timeout,
                ),
            )
            .await;
            // Past the deadline the cluster was slow, not unreachable: its own requests are
            // bounded well inside it, so it had answered some.
            let timed_out = obs.is_err();
            let obs = obs.unwrap_or_else(|_| {
                status::Observed::unreachable(format!(
                    "no complete answer within {}s (four --request-timeout plus 3s per peer)",
                    deadline.as_secs()
                ))
            });
            (i, name, obs, timed_out)
        });
    }
    let mut all = Vec::new();
    while let Some(Ok(r)) = set.join_next().await {
        all.push(r);
    }
    all.sort_by_key(|(i, _, _, _)| *i);
    // As every command: a cluster whose API server could not be reached is exit 7.
    let unreachable = all
        .iter()
        .any(|(_, _, obs, timed_out)| obs.api.is_err() && !timed_out);
    // Trust is judged across clusters: each one's certificates against its peers' CAs.
    let observed: Vec<(&cmesh_core::spec::Cluster, &status::Observed)> = all
        .iter()
        .filter_map(|(_, name, obs, _)| spec.cluster(name).map(|c| (c, obs)))
        .collect();
    let mut trust = status::trust::trust_checks(spec, &observed);
    let checks = all
        .into_iter()
        .filter_map(|(_, name, obs, _)| {
            let cluster = spec.cluster(&name)?;
            let mut checks = match rendered {
                Some(rendered) => {
                    let values = rendered
                        .as_ref()
                        .map(|v| render::cluster_values(spec, cluster, Phase::Mesh, v));
                    let r = values.as_ref().map_err(|e| e.as_str());
                    status::evaluate(spec, cluster, &obs, mesh_ca, r)
                }
                None => {
                    let mut c = status::evaluate(spec, cluster, &obs, mesh_ca, Err("not compared"));
                    c.retain(|c| c.name != "drift");
                    c
                }
            };
            if obs.api.is_ok() {
                checks.extend(trust.remove(&name));
                checks.push(status::trust::expiry_check(&obs, now()));
            }
            Some(ClusterChecks {
                cluster: name,
                checks,
                peerings: status::peerings(spec, cluster, &obs),
            })
        })
        .collect();
    (checks, unreachable)
}
