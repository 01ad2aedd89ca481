//! `cmesh status`, the effects: read everything the checks need from one cluster (workloads,
//! the apiserver Service, the CA and clustermesh Secrets, what each agent reports through exec,
//! the release's values). `cmesh_core::status::evaluate` judges it.

use std::collections::BTreeMap;
use std::time::Duration;

use cmesh_core::spec::CILIUM_NAMESPACE;
use cmesh_core::spec::MeshSpec;
use cmesh_core::status::{self, AgentObs, KVSTOREMESH_DBG_SINCE, MeshObs, Observed};

/// How many peers `status` asks KVStoreMesh about: `None` unless it runs and its release
/// answers `kvstoremesh-dbg`.
pub(crate) fn asks_kvstoremesh(spec: &MeshSpec) -> Option<usize> {
    (spec.clustermesh.kvstoremesh_enabled(&spec.cilium.version)
        && spec.cilium.version.at_least(KVSTOREMESH_DBG_SINCE))
    .then(|| spec.clusters.len().saturating_sub(1))
}
use cmesh_core::value::Value;

use crate::live::helm::{Helm, Target};
use crate::live::kube::{Conn, KubeError};

/// What KVStoreMesh is asked, as cilium-cli asks it.
const KVSTOREMESH_STATUS: [&str; 5] = [
    "clustermesh-apiserver",
    "kvstoremesh-dbg",
    "status",
    "-o",
    "json",
];

/// How many agents are asked at the same time, per cluster.
pub(crate) const AGENTS_AT_ONCE: usize = 8;

/// The bound on reading one cluster: a few request timeouts, plus the time KVStoreMesh's
/// troubleshoot may take to dial every peer. docs/status.md states it.
pub(crate) fn cluster_deadline(request_timeout: Duration, peers: usize) -> Duration {
    request_timeout * 4 + Duration::from_secs(3 * peers as u64)
}

/// Runs a cilium CLI command in an agent, `cilium-dbg` first and `cilium` when the image has
/// no `cilium-dbg` (Cilium 1.14).
async fn cilium(conn: &Conn, pod: &str, args: &[&str]) -> Result<String, KubeError> {
    let mut cmd = vec!["cilium-dbg"];
    cmd.extend_from_slice(args);
    match conn.exec(pod, "cilium-agent", &cmd).await {
        Err(e) if e.command_not_found() => {
            let mut old = vec!["cilium"];
            old.extend_from_slice(args);
            conn.exec(pod, "cilium-agent", &old).await
        }
        other => other,
    }
}

/// A cilium CLI command in Cilium's machine-readable form (`-o json`), its text form when the
/// agent cannot give JSON.
pub(crate) async fn cilium_json(
    conn: &Conn,
    pod: &str,
    args: &[&str],
) -> Result<String, KubeError> {
    let mut json = args.to_vec();
    json.extend_from_slice(&["-o", "json"]);
    match cilium(conn, pod, &json).await {
        Ok(out) if out.trim_start().starts_with(['{', '[']) => Ok(out),
        _ => cilium(conn, pod, args).await,
    }
}

/// What the agent says of a remote cluster it reports not ready: `cilium-dbg troubleshoot
/// clustermesh`, which dials each remote afresh with the agent's configuration (DNS, TCP,
/// TLS, etcd). `None` when every remote is ready.
async fn troubleshoot(
    conn: &Conn,
    pod: &str,
    status: &Result<String, KubeError>,
    peers: usize,
) -> Option<Result<String, String>> {
    let s = status.as_ref().ok()?;
    let parsed = cmesh_core::status::parse::cilium_status_any(s)?;
    if parsed.ready == parsed.total && parsed.total as usize == peers {
        return None;
    }
    let bound = conn.timeout + Duration::from_secs(3 * peers as u64 + 2);
    Some(
        conn.exec_within(
            pod,
            "cilium-agent",
            &[
                "cilium-dbg",
                "troubleshoot",
                "clustermesh",
                "--timeout",
                "3s",
            ],
            bound,
        )
        .await
        .map_err(|e| e.to_string()),
    )
}

/// The clustermesh-apiserver pods that are not terminating, by name; `Err` with why they could
/// not be listed.
async fn apiserver_pods(conn: &Conn) -> Result<Vec<String>, String> {
    conn.pods(CILIUM_NAMESPACE, "k8s-app=clustermesh-apiserver")
        .await
        .map(|pods| {
            pods.into_iter()
                .filter(|p| !p.terminating)
                .map(|p| p.name)
                .collect()
        })
        .map_err(|e| e.to_string())
}

/// What each clustermesh-apiserver pod's KVStoreMesh reports, as cilium-cli asks it
/// (`clustermesh-apiserver kvstoremesh-dbg status -o json` in the `kvstoremesh` container).
async fn kvstoremesh(conn: &Conn, peers: usize) -> Vec<MeshObs> {
    match apiserver_pods(conn).await {
        Ok(pods) => {
            let mut out = Vec::new();
            for pod in pods {
                // Each unreachable peer costs its own dial timeout.
                let bound = conn.timeout + Duration::from_secs(3 * peers as u64 + 2);
                let status = conn.exec(&pod, "kvstoremesh", &KVSTOREMESH_STATUS).await;
                let troubleshoot = conn
                    .exec_within(
                        &pod,
                        "kvstoremesh",
                        &[
                            "clustermesh-apiserver",
                            "kvstoremesh-dbg",
                            "troubleshoot",
                            "--timeout",
                            "3s",
                        ],
                        bound,
                    )
                    .await;
                out.push(MeshObs {
                    pod,
                    status: status.map_err(|e| e.to_string()),
                    troubleshoot: troubleshoot.map_err(|e| e.to_string()),
                });
            }
            out
        }
        Err(e) => vec![MeshObs {
            pod: "(listing pods)".into(),
            status: Err(e.clone()),
            troubleshoot: Err(e),
        }],
    }
}

/// Each clustermesh-apiserver pod's `kvstoremesh-dbg status -o json`, as one report each.
pub(crate) async fn kvstoremesh_status(conn: &Conn) -> Vec<cmesh_core::apply::PeerReport> {
    let report = |pod: String, output| cmesh_core::apply::PeerReport {
        pod,
        kvstoremesh: true,
        output,
    };
    match apiserver_pods(conn).await {
        Ok(pods) => {
            let mut out = Vec::new();
            for pod in pods {
                let status = conn
                    .exec(&pod, "kvstoremesh", &KVSTOREMESH_STATUS)
                    .await
                    .map_err(|e| e.to_string());
                out.push(report(pod, status));
            }
            out
        }
        Err(e) => vec![report("(listing pods)".into(), Err(e))],
    }
}

/// Reads one cluster (one of `peers + 1`); with `ask_kvstoremesh`, also what its KVStoreMesh
/// reports.
pub(crate) async fn observe(
    peers: usize,
    ask_kvstoremesh: Option<usize>,
    conn: Result<Conn, KubeError>,
    helm: Result<&Helm, &str>,
    timeout: Duration,
) -> Observed {
    let conn = match conn {
        Ok(c) => c,
        Err(e) => return Observed::unreachable(e.to_string()),
    };
    let api = conn.version().await.map_err(|e| e.to_string());
    if let Err(e) = api {
        return Observed::unreachable(e);
    }
    // The execs run one group after another, as the agents' and KVStoreMesh's own CPU allows
    // (on the lab's two cores, asking them all at once made a third of the rotation
    // samplers' execs miss their 5 s: docs/performance.md); the objects, each a plain GET,
    // are read at once while helm reads the release.
    let agent_reports = agents(&conn, peers).await;
    let kvstoremesh_reports = match ask_kvstoremesh {
        Some(peers) => kvstoremesh(&conn, peers).await,
        None => Vec::new(),
    };
    // The core judges observations as text: each error becomes its message here.
    let text = |e: KubeError| e.to_string();
    let bundle = |d: Option<BTreeMap<String, String>>| d.and_then(|m| m.get("ca.crt").cloned());
    let (
        release_values,
        agents,
        operator,
        apiserver,
        service,
        ca_crt,
        certs,
        trust_bundle,
        clustermesh,
        kvstoremesh,
    ) = tokio::join!(
        async {
            match helm {
                Ok(h) => {
                    let target = Target::of(&conn);
                    h.get_values("cilium", CILIUM_NAMESPACE, &target, timeout)
                        .await
                        .map(|v| v.map(|j| Value::from_json(&j)))
                        .map_err(|e| e.to_string())
                }
                Err(why) => Err(format!(
                    "helm unavailable ({why}): cannot compare the release's values"
                )),
            }
        },
        conn.daemonset("cilium"),
        conn.deployment("cilium-operator"),
        conn.deployment("clustermesh-apiserver"),
        conn.apiserver_service(),
        conn.secret_data("cilium-ca"),
        cert_secrets(&conn),
        conn.configmap_data(status::trust::BUNDLE_CONFIGMAP),
        conn.secret_data("cilium-clustermesh"),
        conn.secret_data("cilium-kvstoremesh"),
    );
    let release_values_none = matches!(release_values, Ok(None));
    Observed {
        api,
        agents: agents.map_err(text),
        operator: operator.map_err(text),
        apiserver: apiserver.map_err(text),
        service: service.map_err(text),
        ca_crt: ca_crt.map(bundle).map_err(text),
        certs: certs.map_err(text),
        trust_bundle: trust_bundle.map(bundle).map_err(text),
        clustermesh: clustermesh.map_err(text),
        kvstoremesh: kvstoremesh.map_err(text),
        agent_reports,
        kvstoremesh_reports,
        release_values,
        // Only asked when there is no release: it explains the missing release.
        argocd_application: if release_values_none {
            conn.argocd_application("cilium").await.ok().flatten()
        } else {
            None
        },
    }
}

/// What every agent reports (status, node list, and a troubleshoot when a peer is not ready),
/// a few agents at a time: one by one, 20 agents whose execs hang would cost 20 timeouts.
async fn agents(conn: &Conn, peers: usize) -> Vec<AgentObs> {
    use futures_util::StreamExt;
    match conn.agent_pods().await {
        Ok(pods) => {
            futures_util::stream::iter(pods)
                .map(|(pod, ready)| async move {
                    let (status, nodes) = tokio::join!(
                        cilium_json(conn, &pod, &["status"]),
                        cilium_json(conn, &pod, &["node", "list"])
                    );
                    let troubleshoot = troubleshoot(conn, &pod, &status, peers).await;
                    AgentObs {
                        pod,
                        ready,
                        status: status.map_err(|e| e.to_string()),
                        nodes: nodes.map_err(|e| e.to_string()),
                        troubleshoot,
                    }
                })
                .buffered(AGENTS_AT_ONCE)
                .collect()
                .await
        }
        Err(e) => vec![AgentObs {
            pod: "(listing pods)".into(),
            ready: false,
            status: Err(e.to_string()),
            nodes: Err(e.to_string()),
            troubleshoot: None,
        }],
    }
}

/// The certificates of the TLS Secrets that exist, keys dropped as soon as read.
async fn cert_secrets(
    conn: &Conn,
) -> Result<BTreeMap<String, status::trust::SecretCerts>, KubeError> {
    let mut out = BTreeMap::new();
    for name in status::trust::CERT_SECRETS {
        if let Some(mut d) = conn.secret_data(name).await? {
            out.insert(
                name.to_owned(),
                status::trust::SecretCerts {
                    ca_crt: d.remove("ca.crt"),
                    tls_crt: d.remove("tls.crt"),
                },
            );
        }
    }
    Ok(out)
}
