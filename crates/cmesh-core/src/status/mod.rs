//! `cmesh status`, the pure half: what the edge observed in one cluster, and its evaluation
//! into checks (pass, warn, fail) with a reason for each, against what mesh.yaml implies.

pub mod parse;
mod peering;
pub mod trust;

pub use peering::{PeerState, Peering, peerings};

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::pki::CertInfo;
use crate::spec::{CILIUM_NAMESPACE, CertMethod, Cluster, MeshSpec, ServiceType};
use crate::value::{self, Value};

/// A workload's rollout state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rollout {
    /// Pods wanted.
    pub desired: i64,
    /// Pods ready.
    pub ready: i64,
    /// Pods on the current template.
    pub updated: i64,
    /// metadata.generation.
    pub generation: i64,
    /// status.observedGeneration.
    pub observed_generation: i64,
    /// Pods of every revision (Deployment `status.replicas`, DaemonSet
    /// `currentNumberScheduled`): above `desired` while old pods still run.
    pub total: i64,
}

impl Rollout {
    /// Everything rolled out and ready.
    pub fn complete(&self) -> bool {
        // As `kubectl rollout status`: every pod updated and ready, and no old pod left (a
        // Deployment with maxSurge briefly has the new pod and the old one).
        self.desired > 0
            && self.ready >= self.desired
            && self.updated >= self.desired
            && self.total <= self.desired
            && self.observed_generation >= self.generation
    }

    fn describe(&self) -> String {
        let mut s = format!("{}/{} ready", self.ready, self.desired);
        if self.updated < self.desired {
            s.push_str(&format!(", {}/{} updated", self.updated, self.desired));
        }
        if self.total > self.desired {
            s.push_str(&format!(
                ", {} old pod(s) still running",
                self.total - self.desired
            ));
        }
        if self.observed_generation < self.generation {
            s.push_str(", rollout in progress");
        }
        s
    }
}

/// The clustermesh-apiserver Service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceObs {
    /// spec.type.
    pub service_type: String,
    /// The NodePort of port 2379, if any.
    pub node_port: Option<i64>,
}

/// One agent pod.
#[derive(Debug, Clone, Serialize)]
pub struct AgentObs {
    /// Pod name.
    pub pod: String,
    /// Ready condition.
    pub ready: bool,
    /// `cilium-dbg status` output (or the error).
    pub status: Result<String, String>,
    /// `cilium-dbg node list` output (or the error).
    pub nodes: Result<String, String>,
    /// `cilium-dbg troubleshoot clustermesh`, asked when the agent reports a remote cluster
    /// not ready (Cilium ≥ 1.15): Cilium's own account of why.
    pub troubleshoot: Option<Result<String, String>>,
}

/// One clustermesh-apiserver pod's KVStoreMesh and what it reports.
#[derive(Debug, Clone, Serialize)]
pub struct MeshObs {
    /// Pod name.
    pub pod: String,
    /// `kvstoremesh-dbg status -o json` output (or the error).
    pub status: Result<String, String>,
    /// `kvstoremesh-dbg troubleshoot` output (or the error): a fresh dial of every peer, since
    /// KVStoreMesh keeps calling a peer ready while connections it established live on (its
    /// etcd endpoint status checks are disabled).
    pub troubleshoot: Result<String, String>,
}

/// The first Cilium minor whose KVStoreMesh answers `kvstoremesh-dbg status -o json`.
pub const KVSTOREMESH_DBG_SINCE: u64 = 16;

/// What the edge read from one cluster. `Err` is an error reading; `Ok(None)` a missing object.
#[derive(Debug, Clone, Serialize)]
pub struct Observed {
    /// Server version, or why the API server could not be reached.
    pub api: Result<String, String>,
    /// DaemonSet kube-system/cilium.
    pub agents: Result<Option<Rollout>, String>,
    /// Deployment cilium-operator.
    pub operator: Result<Option<Rollout>, String>,
    /// Deployment clustermesh-apiserver.
    pub apiserver: Result<Option<Rollout>, String>,
    /// Service clustermesh-apiserver.
    pub service: Result<Option<ServiceObs>, String>,
    /// `cilium-ca` Secret's ca.crt (PEM).
    pub ca_crt: Result<Option<String>, String>,
    /// The certificates (never the keys) of the TLS Secrets in [`trust::CERT_SECRETS`] that
    /// exist, by Secret name.
    pub certs: Result<BTreeMap<String, trust::SecretCerts>, String>,
    /// The chart's trust bundle (ConfigMap [`trust::BUNDLE_CONFIGMAP`], key `ca.crt`).
    pub trust_bundle: Result<Option<String>, String>,
    /// `cilium-clustermesh` Secret, decoded.
    pub clustermesh: Result<Option<BTreeMap<String, String>>, String>,
    /// `cilium-kvstoremesh` Secret, decoded.
    pub kvstoremesh: Result<Option<BTreeMap<String, String>>, String>,
    /// Agent pods and what they report.
    pub agent_reports: Vec<AgentObs>,
    /// clustermesh-apiserver pods and what their KVStoreMesh reports (empty when not asked).
    pub kvstoremesh_reports: Vec<MeshObs>,
    /// The release's user-supplied values (`helm get values`), `None` without a release.
    pub release_values: Result<Option<Value>, String>,
    /// The Argo CD Application that tracks the agents' DaemonSet (its
    /// `argocd.argoproj.io/tracking-id` annotation), if any: Argo CD applies the chart's
    /// manifests itself and leaves no Helm release.
    pub argocd_application: Option<String>,
}

impl Observed {
    /// An unreachable cluster.
    pub fn unreachable(why: String) -> Self {
        fn e<T>() -> Result<T, String> {
            Err("API server unreachable".to_owned())
        }
        Self {
            api: Err(why),
            agents: e(),
            operator: e(),
            apiserver: e(),
            service: e(),
            ca_crt: e(),
            certs: e(),
            trust_bundle: e(),
            clustermesh: e(),
            kvstoremesh: e(),
            agent_reports: Vec::new(),
            kvstoremesh_reports: Vec::new(),
            release_values: e(),
            argocd_application: None,
        }
    }
}

/// A check's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Passed.
    Pass,
    /// Worth attention.
    Warn,
    /// Failed.
    Fail,
    /// Not applicable or not reachable.
    Skip,
}

/// One check.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Stable name.
    pub name: &'static str,
    /// Outcome.
    pub outcome: Outcome,
    /// Why.
    pub reason: String,
}

fn check(name: &'static str, outcome: Outcome, reason: impl Into<String>) -> Check {
    Check {
        name,
        outcome,
        reason: reason.into(),
    }
}

/// The names of `cluster`'s peers: every other cluster of the mesh, in mesh.yaml's order.
pub(crate) fn peer_names<'a>(spec: &'a MeshSpec, cluster: &Cluster) -> Vec<&'a str> {
    spec.clusters
        .iter()
        .filter(|p| p.name != cluster.name)
        .map(|p| p.name.as_str())
        .collect()
}

/// The local clustermesh-apiserver URL the chart writes for every peer when KVStoreMesh is on.
pub fn local_apiserver_url() -> String {
    format!("https://clustermesh-apiserver.{CILIUM_NAMESPACE}.svc:2379")
}

/// What `cilium-clustermesh` (the agents' secret) should hold per peer.
pub fn expected_agent_endpoints(spec: &MeshSpec, cluster: &Cluster) -> BTreeMap<String, String> {
    let kv = spec.clustermesh.kvstoremesh_enabled(&spec.cilium.version);
    spec.clusters
        .iter()
        .filter(|p| p.name != cluster.name)
        .map(|p| {
            (
                p.name.clone(),
                if kv {
                    local_apiserver_url()
                } else {
                    p.endpoint_url(&spec.clustermesh.domain)
                },
            )
        })
        .collect()
}

/// What `cilium-kvstoremesh` should hold per peer (the real endpoints).
pub fn expected_real_endpoints(spec: &MeshSpec, cluster: &Cluster) -> BTreeMap<String, String> {
    spec.clusters
        .iter()
        .filter(|p| p.name != cluster.name)
        .map(|p| (p.name.clone(), p.endpoint_url(&spec.clustermesh.domain)))
        .collect()
}

fn rollout_check(name: &'static str, what: &str, obs: &Result<Option<Rollout>, String>) -> Check {
    match obs {
        Err(e) => check(name, Outcome::Skip, e.clone()),
        Ok(None) => check(name, Outcome::Fail, format!("{what} not found")),
        Ok(Some(r)) if r.complete() => {
            check(name, Outcome::Pass, format!("{what} {}", r.describe()))
        }
        Ok(Some(r)) => check(name, Outcome::Fail, format!("{what} {}", r.describe())),
    }
}

fn peers_check(
    name: &'static str,
    secret: &str,
    obs: &Result<Option<BTreeMap<String, String>>, String>,
    expected: &BTreeMap<String, String>,
) -> Check {
    let data = match obs {
        Err(e) => return check(name, Outcome::Skip, e.clone()),
        Ok(None) => {
            return check(
                name,
                Outcome::Fail,
                format!(
                    "Secret {secret} not found: Cluster Mesh is not configured (apply the mesh phase)"
                ),
            );
        }
        Ok(Some(d)) => d,
    };
    let mut problems = Vec::new();
    for (peer, want) in expected {
        match data.get(peer) {
            None => problems.push(format!("{peer} missing")),
            Some(text) => match parse::peer_config(text) {
                Some(cfg) if cfg.endpoints.first() == Some(want) => {}
                Some(cfg) => problems.push(format!(
                    "{peer} at {} instead of {want}",
                    cfg.endpoints.join(", ")
                )),
                None => problems.push(format!("{peer} unreadable")),
            },
        }
    }
    // Keys with a dot are per-peer certificate files, not peers.
    for extra in data
        .keys()
        .filter(|k| !k.contains('.') && !expected.contains_key(*k))
    {
        problems.push(format!("unexpected peer {extra}"));
    }
    if problems.is_empty() {
        let list: Vec<String> = expected.iter().map(|(p, e)| format!("{p} ({e})")).collect();
        check(
            name,
            Outcome::Pass,
            format!(
                "{secret} lists {}",
                if list.is_empty() {
                    "no peers".into()
                } else {
                    list.join(", ")
                }
            ),
        )
    } else {
        check(
            name,
            Outcome::Fail,
            format!("{secret}: {}", problems.join("; ")),
        )
    }
}

/// Evaluates one cluster's observations. `mesh_ca` is the mesh CA (for the `cilium-ca` check);
/// `rendered` the values `render` produces for the cluster (for drift).
pub fn evaluate(
    spec: &MeshSpec,
    cluster: &Cluster,
    obs: &Observed,
    mesh_ca: Option<&CertInfo>,
    rendered: Result<&Value, &str>,
) -> Vec<Check> {
    let mut out = Vec::new();
    match &obs.api {
        Ok(v) => out.push(check(
            "api",
            Outcome::Pass,
            format!("reachable, Kubernetes {v}"),
        )),
        Err(e) => {
            out.push(check("api", Outcome::Fail, format!("unreachable: {e}")));
            return out;
        }
    }
    out.push(rollout_check("agents", "DaemonSet cilium", &obs.agents));
    out.push(rollout_check(
        "operator",
        "Deployment cilium-operator",
        &obs.operator,
    ));
    out.push(rollout_check(
        "clustermesh-apiserver",
        "Deployment clustermesh-apiserver",
        &obs.apiserver,
    ));

    out.push(service_check(spec, cluster, obs));
    out.push(ca_check(spec, obs, mesh_ca));
    out.push(peers_check(
        "peers",
        "cilium-clustermesh",
        &obs.clustermesh,
        &expected_agent_endpoints(spec, cluster),
    ));
    if spec.clustermesh.kvstoremesh_enabled(&spec.cilium.version) {
        out.push(peers_check(
            "kvstoremesh-peers",
            "cilium-kvstoremesh",
            &obs.kvstoremesh,
            &expected_real_endpoints(spec, cluster),
        ));
        out.push(kvstoremesh_check(spec, cluster, &obs.kvstoremesh_reports));
    }

    out.extend(agents_checks(spec, cluster, obs));
    out.push(drift_check(obs, rendered));
    out
}

/// The apiserver Service: the type and port peers dial.
fn service_check(spec: &MeshSpec, cluster: &Cluster, obs: &Observed) -> Check {
    let want_type = spec.clustermesh.service_type.as_str();
    match &obs.service {
        Err(e) => check("service", Outcome::Skip, e.clone()),
        Ok(None) => check(
            "service",
            Outcome::Fail,
            "Service clustermesh-apiserver not found",
        ),
        Ok(Some(s)) if s.service_type != want_type => check(
            "service",
            Outcome::Fail,
            format!(
                "Service clustermesh-apiserver is {}, mesh.yaml says {want_type}",
                s.service_type
            ),
        ),
        Ok(Some(s))
            if spec.clustermesh.service_type == ServiceType::NodePort
                && s.node_port != Some(i64::from(cluster.clustermesh.port)) =>
        {
            check(
                "service",
                Outcome::Fail,
                format!(
                    "NodePort is {}, mesh.yaml says {}: peers dial the wrong port",
                    s.node_port.map_or("none".into(), |p| p.to_string()),
                    cluster.clustermesh.port
                ),
            )
        }
        Ok(Some(s)) => check(
            "service",
            Outcome::Pass,
            match s.node_port {
                Some(p) => format!("{} 2379:{p}", s.service_type),
                None => format!("{} port 2379", s.service_type),
            },
        ),
    }
}

/// The one prerequisite the article calls crucial: the same CA everywhere.
fn ca_check(spec: &MeshSpec, obs: &Observed, mesh_ca: Option<&CertInfo>) -> Check {
    match (&obs.ca_crt, mesh_ca) {
        (_, None) if spec.clustermesh.certificates == CertMethod::CertManager => check(
            "ca",
            Outcome::Skip,
            "certificates: certManager (no shared CA from cmesh)",
        ),
        (Err(e), _) => check("ca", Outcome::Skip, e.clone()),
        (Ok(None), _) => check(
            "ca",
            Outcome::Fail,
            "Secret cilium-ca not found: the cluster does not run with the mesh CA",
        ),
        (Ok(Some(pem)), Some(ca)) => match CertInfo::from_pem(pem) {
            Ok(info) if info.sha256 == ca.sha256 => {
                // During a CA rotation cilium-ca holds both CAs (trust::trust_checks judges
                // what each cluster trusts against its peers' certificates).
                let others = trust::count_certs(pem).saturating_sub(1);
                check(
                    "ca",
                    Outcome::Pass,
                    if others == 0 {
                        format!("cilium-ca is the mesh CA ({})", short(&ca.sha256))
                    } else {
                        format!(
                            "cilium-ca holds the mesh CA ({}) and {others} other CA(s) of a rotation",
                            short(&ca.sha256)
                        )
                    },
                )
            }
            Ok(_) if trust::holds(pem, &ca.sha256) => check(
                "ca",
                Outcome::Pass,
                format!(
                    "cilium-ca holds the mesh CA ({}) after the CA it replaces (a rotation's finish not yet applied)",
                    short(&ca.sha256)
                ),
            ),
            Ok(info) => check(
                "ca",
                Outcome::Fail,
                format!(
                    "cilium-ca is `{}` ({}), not the mesh CA `{}` ({}): peers will fail with \"authentication handshake failed\"",
                    info.subject,
                    short(&info.sha256),
                    ca.subject,
                    short(&ca.sha256)
                ),
            ),
            Err(e) => check(
                "ca",
                Outcome::Fail,
                format!("cilium-ca holds no readable certificate: {e}"),
            ),
        },
        (Ok(Some(_)), None) => check("ca", Outcome::Skip, "no mesh CA in pki.dir to compare with"),
    }
}

/// What the agents themselves report: every peer ready (`agents-clustermesh`, with Cilium's
/// own cause where one is not) and every peer's nodes known (`agents-nodes`).
fn agents_checks(spec: &MeshSpec, cluster: &Cluster, obs: &Observed) -> Vec<Check> {
    let mut out = Vec::new();
    let peers = peer_names(spec, cluster);
    if obs.agent_reports.is_empty() {
        out.push(check(
            "agents-clustermesh",
            Outcome::Fail,
            "no cilium agent pods found",
        ));
    } else {
        let mut bad = Vec::new();
        let mut summary = None;
        for a in &obs.agent_reports {
            match &a.status {
                Err(e) => bad.push(format!("{}: {e}", a.pod)),
                Ok(text) => match parse::cilium_status_any(text) {
                    None => bad.push(format!("{}: no ClusterMesh line in cilium status", a.pod)),
                    Some(s)
                        if s.ready == s.total
                            && s.total as usize == peers.len()
                            && s.clusters.iter().all(|c| peers.contains(&c.name.as_str())) =>
                    {
                        summary = Some(format!("{}/{}", s.ready, s.total))
                    }
                    Some(s) => {
                        let troubleshoot = match &a.troubleshoot {
                            Some(Ok(t)) => parse::kvstoremesh_troubleshoot(t),
                            _ => BTreeMap::new(),
                        };
                        // Peers the agent was never configured with (its cilium-clustermesh
                        // lacks them) and clusters it knows that mesh.yaml does not.
                        let known: BTreeSet<&str> =
                            s.clusters.iter().map(|c| c.name.as_str()).collect();
                        let unconfigured = peers
                            .iter()
                            .filter(|p| !s.clusters.is_empty() && !known.contains(*p))
                            .map(|p| format!("{p} not configured"));
                        let strangers = s
                            .clusters
                            .iter()
                            .filter(|c| !peers.contains(&c.name.as_str()))
                            .map(|c| format!("{} not in mesh.yaml", c.name));
                        let details: Vec<String> = unconfigured
                            .chain(strangers)
                            .chain(
                                s.clusters
                                    .iter()
                                    .filter(|c| !c.ready && peers.contains(&c.name.as_str()))
                                    .map(|c| {
                                        let cause = agent_cause(c);
                                        // Cilium's own diagnosis of a fresh dial, when it has one.
                                        let dial =
                                            troubleshoot.get(&c.name).and_then(|l| l.first());
                                        match (cause, dial) {
                                            (Some(why), Some(d)) => {
                                                format!(
                                                    "{} {} ({why}; troubleshoot: {d})",
                                                    c.name, c.state
                                                )
                                            }
                                            (Some(why), None) => {
                                                format!("{} {} ({why})", c.name, c.state)
                                            }
                                            (None, Some(d)) => {
                                                format!(
                                                    "{} {} (troubleshoot: {d})",
                                                    c.name, c.state
                                                )
                                            }
                                            (None, None) => format!("{} {}", c.name, c.state),
                                        }
                                    }),
                            )
                            .collect();
                        bad.push(format!(
                            "{}: {}/{} {}clusters ready{}{}",
                            a.pod,
                            s.ready,
                            s.total,
                            if s.remote_wording { "remote " } else { "" },
                            if s.total as usize != peers.len() {
                                format!(" (mesh.yaml has {} peers)", peers.len())
                            } else {
                                String::new()
                            },
                            if details.is_empty() {
                                String::new()
                            } else {
                                format!(": {}", details.join(", "))
                            }
                        ));
                    }
                },
            }
        }
        out.push(if bad.is_empty() {
            check(
                "agents-clustermesh",
                Outcome::Pass,
                format!(
                    "{} agent(s) report {} clusters ready",
                    obs.agent_reports.len(),
                    summary.unwrap_or_default()
                ),
            )
        } else {
            check("agents-clustermesh", Outcome::Fail, bad.join("; "))
        });
        let mut missing = Vec::new();
        let mut seen_total = 0;
        for a in &obs.agent_reports {
            match &a.nodes {
                Err(e) => missing.push(format!("{}: {e}", a.pod)),
                Ok(text) => {
                    let nodes = parse::node_list_any(text);
                    seen_total = seen_total.max(nodes.len());
                    let lacking: Vec<&str> = peers
                        .iter()
                        .copied()
                        .filter(|p| !nodes.iter().any(|n| n.cluster.as_deref() == Some(*p)))
                        .collect();
                    if !lacking.is_empty() {
                        missing.push(format!("{} sees no nodes of {}", a.pod, lacking.join(", ")));
                    }
                }
            }
        }
        out.push(if missing.is_empty() {
            check(
                "agents-nodes",
                Outcome::Pass,
                format!("agents see nodes of every peer ({seen_total} nodes)"),
            )
        } else {
            check("agents-nodes", Outcome::Fail, missing.join("; "))
        });
    }

    out
}

/// Drift: what is deployed against what cmesh renders.
fn drift_check(obs: &Observed, rendered: Result<&Value, &str>) -> Check {
    match (&obs.release_values, rendered) {
        (_, Err(why)) => check(
            "drift",
            Outcome::Skip,
            format!("cannot render to compare: {why}"),
        ),
        (Err(e), _) => check("drift", Outcome::Skip, e.clone()),
        // Argo CD renders the chart with `helm template` and applies the manifests: no release
        // to read values from, and Argo CD's own comparison with git is the drift check there.
        (Ok(None), _) if obs.argocd_application.is_some() => check(
            "drift",
            Outcome::Skip,
            format!(
                "no Helm release: installed by Argo CD (Application {}), which compares the cluster with git itself (`argocd app diff {0}`)",
                obs.argocd_application.as_deref().unwrap_or_default()
            ),
        ),
        (Ok(None), _) => check(
            "drift",
            Outcome::Fail,
            "no helm release `cilium` in kube-system",
        ),
        (Ok(Some(deployed)), Ok(rendered)) => {
            let changes = value::diff(deployed, rendered);
            if changes.is_empty() {
                check(
                    "drift",
                    Outcome::Pass,
                    "the release's values are what cmesh renders",
                )
            } else {
                let keys: Vec<String> = changes
                    .iter()
                    .take(8)
                    // Said from the cluster's side: the user changed the cluster, not cmesh.
                    .map(|(k, c)| {
                        let how = match c {
                            value::Change::Removed => "set on the cluster only",
                            value::Change::Added => "missing on the cluster",
                            value::Change::Changed => "changed on the cluster",
                        };
                        format!("{k} ({how})")
                    })
                    .collect();
                let more = if changes.len() > 8 {
                    format!(" and {} more", changes.len() - 8)
                } else {
                    String::new()
                };
                check(
                    "drift",
                    Outcome::Warn,
                    format!(
                        "{} value(s) differ from what cmesh renders: {}{more} (run `cmesh apply`)",
                        changes.len(),
                        keys.join(", ")
                    ),
                )
            }
        }
    }
}

/// The sub-line of an agent's not-ready cluster that says why: a failed etcd connection,
/// a configuration not retrieved, an error, or synchronization still in progress.
fn agent_cause(c: &parse::RemoteCluster) -> Option<String> {
    let find = |pred: &dyn Fn(&str) -> bool| c.sub.iter().find(|l| pred(l)).cloned();
    find(&|l| l.starts_with("error:"))
        .or_else(|| find(&|l| l.starts_with("etcd: 0/")))
        .or_else(|| find(&|l| l.contains("retrieved=false")))
        .or_else(|| find(&|l| l.starts_with("synchronization status:") && l.contains("=false")))
}

/// Why KVStoreMesh does not count `r` as ready, in the terms of its own status.
fn not_ready_cause(r: &parse::MeshRemote, want_id: u16) -> String {
    if !r.connected {
        let status = r.status.trim();
        return format!(
            "{} not connected{}",
            r.name,
            if status.is_empty() {
                String::new()
            } else {
                format!(" ({status})")
            }
        );
    }
    if r.config_retrieved == Some(false) {
        return format!(
            "{}: connected, but its cluster configuration was not found (is its clustermesh-apiserver running, with cluster name {}?)",
            r.name, r.name
        );
    }
    if let Some(id) = r.cluster_id
        && id != u64::from(want_id)
    {
        return format!(
            "{}: its clustermesh-apiserver serves cluster ID {id}, mesh.yaml says {want_id}",
            r.name
        );
    }
    if !r.not_synced.is_empty() {
        return format!(
            "{}: synchronization in progress for {}",
            r.name,
            r.not_synced.join(", ")
        );
    }
    let status = r.status.trim();
    if status.is_empty() {
        format!("{} not ready", r.name)
    } else {
        format!("{} not ready ({status})", r.name)
    }
}

/// What each KVStoreMesh replica reports about every peer mesh.yaml lists: Cilium's own
/// remote-cluster client, connected with the configuration cmesh rendered.
fn kvstoremesh_check(spec: &MeshSpec, cluster: &Cluster, reports: &[MeshObs]) -> Check {
    const NAME: &str = "kvstoremesh";
    if !spec.cilium.version.at_least(KVSTOREMESH_DBG_SINCE) {
        return check(
            NAME,
            Outcome::Skip,
            format!(
                "kvstoremesh-dbg answers from Cilium 1.{KVSTOREMESH_DBG_SINCE}; this mesh runs {}",
                spec.cilium.version
            ),
        );
    }
    if reports.is_empty() {
        return check(NAME, Outcome::Fail, "no clustermesh-apiserver pod to ask");
    }
    let peers: Vec<&Cluster> = spec
        .clusters
        .iter()
        .filter(|p| p.name != cluster.name)
        .collect();
    let mut bad = Vec::new();
    let mut nodes = BTreeMap::new();
    for rep in reports {
        let remotes = match &rep.status {
            Err(e) => {
                bad.push(format!("{}: {e}", rep.pod));
                continue;
            }
            Ok(text) => match parse::kvstoremesh_status(text) {
                Ok(r) => r,
                Err(e) => {
                    bad.push(format!(
                        "{}: unreadable kvstoremesh-dbg status ({e})",
                        rep.pod
                    ));
                    continue;
                }
            },
        };
        let dials = rep
            .troubleshoot
            .as_ref()
            .map(|t| parse::kvstoremesh_troubleshoot(t))
            .unwrap_or_default();
        let mut problems = Vec::new();
        for p in &peers {
            let failed_dial = dials.get(&p.name).and_then(|f| {
                f.iter()
                    .find(|m| !m.starts_with("Cannot verify"))
                    .or(f.first())
            });
            match remotes.iter().find(|r| r.name == p.name) {
                None => problems.push(format!("{} not configured", p.name)),
                Some(r) if r.ready && failed_dial.is_some() => problems.push(format!(
                    "{} fails a fresh dial: {} (kvstoremesh-dbg status still says ready: its connections predate the failure)",
                    p.name,
                    failed_dial.map_or("", String::as_str)
                )),
                Some(r) if r.ready => {
                    nodes.insert(r.name.clone(), r.nodes);
                    // Ready, yet the peer's etcd speaks for another cluster ID.
                    if let Some(id) = r.cluster_id
                        && id != u64::from(p.id)
                    {
                        problems.push(format!(
                            "{}: its clustermesh-apiserver serves cluster ID {id}, mesh.yaml says {}",
                            p.name, p.id
                        ));
                    }
                }
                Some(r) => problems.push(match failed_dial {
                    Some(d) => format!("{} ({d})", not_ready_cause(r, p.id)),
                    None => not_ready_cause(r, p.id),
                }),
            }
        }
        for r in remotes
            .iter()
            .filter(|r| !peers.iter().any(|p| p.name == r.name))
        {
            problems.push(format!("unexpected remote cluster {}", r.name));
        }
        if !problems.is_empty() {
            bad.push(format!("{}: {}", rep.pod, problems.join("; ")));
        }
    }
    if bad.is_empty() {
        let seen: Vec<String> = nodes
            .iter()
            .map(|(n, k)| format!("{n} {k} node{}", if *k == 1 { "" } else { "s" }))
            .collect();
        check(
            NAME,
            Outcome::Pass,
            format!(
                "{} replica(s) report {}/{} remote clusters ready{}",
                reports.len(),
                peers.len(),
                peers.len(),
                if seen.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", seen.join(", "))
                }
            ),
        )
    } else {
        check(NAME, Outcome::Fail, bad.join("; "))
    }
}

fn short(fp: &str) -> String {
    fp.chars().take(23).collect::<String>() + "…"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{self, example};

    fn lab() -> MeshSpec {
        spec::load("lab", &example::builtin()).unwrap().0
    }

    fn healthy(spec: &MeshSpec, c: &Cluster) -> Observed {
        let r = |d| {
            Ok(Some(Rollout {
                desired: d,
                ready: d,
                updated: d,
                generation: 2,
                observed_generation: 2,
                total: d,
            }))
        };
        let cfg = |url: &str| {
            format!(
                "endpoints:\n- {url}\ntrusted-ca-file: /var/lib/cilium/clustermesh/common-etcd-client-ca.crt\n"
            )
        };
        Observed {
            api: Ok("v1.31.0".into()),
            agents: r(1),
            operator: r(1),
            apiserver: r(1),
            service: Ok(Some(ServiceObs {
                service_type: "NodePort".into(),
                node_port: Some(i64::from(c.clustermesh.port)),
            })),
            ca_crt: Ok(None),
            certs: Ok(BTreeMap::new()),
            trust_bundle: Ok(None),
            clustermesh: Ok(Some(
                expected_agent_endpoints(spec, c)
                    .into_iter()
                    .map(|(k, v)| (k, cfg(&v)))
                    .collect(),
            )),
            kvstoremesh: Ok(None),
            agent_reports: vec![AgentObs {
                pod: "cilium-abcde".into(),
                ready: true,
                status: Ok(
                    "ClusterMesh:             1/1 clusters ready, 0 global-services\n".into(),
                ),
                nodes: Ok(
                    "Name  IPv4 Address\nk8s01/n1  192.168.1.10\nk8s02/n1  192.168.2.10\n".into(),
                ),
                troubleshoot: None,
            }],
            kvstoremesh_reports: Vec::new(),
            release_values: Ok(None),
            argocd_application: None,
        }
    }

    fn outcome(checks: &[Check], name: &str) -> (Outcome, String) {
        let c = checks.iter().find(|c| c.name == name).unwrap();
        (c.outcome, c.reason.clone())
    }

    #[test]
    fn peerings_from_what_agents_report() {
        let spec = lab();
        let c = &spec.clusters[0];
        let mut obs = healthy(&spec, c);
        let p = peerings(&spec, c, &obs);
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].from.as_str(), p[0].to.as_str()), ("k8s01", "k8s02"));
        assert_eq!(p[0].state, PeerState::Ready, "{p:?}");
        // One of two agents reports the peer not ready: the peering is not ready, and says
        // which agent and why.
        let mut second = obs.agent_reports[0].clone();
        second.pod = "cilium-fghij".into();
        second.status = Ok("ClusterMesh:   0/1 clusters ready, 0 global-services\n   k8s02: not-ready, 0 nodes, 0 endpoints, 0 identities, 0 services, 0 failures (last: never)\n".into());
        obs.agent_reports.push(second);
        let p = peerings(&spec, c, &obs);
        assert_eq!(p[0].state, PeerState::NotReady, "{p:?}");
        assert!(p[0].reason.starts_with("cilium-fghij: not-ready"), "{p:?}");
        // An agent that cannot be asked makes it unknown, never ready.
        obs.agent_reports.pop();
        obs.agent_reports[0].status = Err("exec refused".into());
        assert_eq!(peerings(&spec, c, &obs)[0].state, PeerState::Unknown);
        // An agent listing other clusters only was never configured with this peer.
        obs.agent_reports[0].status = Ok("ClusterMesh:   1/1 clusters ready, 0 global-services\n   k8s09: ready, 1 nodes, 0 endpoints, 0 identities, 0 services, 0 failures (last: never)\n".into());
        let p = peerings(&spec, c, &obs);
        assert_eq!(
            (p[0].state, p[0].reason.as_str()),
            (PeerState::NotReady, "cilium-abcde: not configured")
        );
        // An unreachable cluster: every peering unknown.
        obs.api = Err("connection refused".into());
        assert_eq!(peerings(&spec, c, &obs)[0].state, PeerState::Unknown);
    }

    #[test]
    fn service_port_and_peer_endpoints() {
        let spec = lab();
        let c = &spec.clusters[0];
        let mut obs = healthy(&spec, c);
        let checks = evaluate(&spec, c, &obs, None, Err("no PKI"));
        assert_eq!(outcome(&checks, "service").0, Outcome::Pass);
        assert_eq!(outcome(&checks, "peers").0, Outcome::Pass);
        assert_eq!(outcome(&checks, "agents-clustermesh").0, Outcome::Pass);
        assert_eq!(outcome(&checks, "drift").0, Outcome::Skip);

        obs.service = Ok(Some(ServiceObs {
            service_type: "NodePort".into(),
            node_port: Some(32399),
        }));
        let mut data = BTreeMap::new();
        data.insert(
            "k8s02".into(),
            "endpoints:\n- https://k8s-lab-02.mylaptop.loc:32379\n".into(),
        );
        data.insert("k8s09".into(), "endpoints:\n- https://x:1\n".into());
        data.insert("k8s02.etcd-client.crt".into(), "PEM".into());
        obs.clustermesh = Ok(Some(data));
        let checks = evaluate(&spec, c, &obs, None, Err("no PKI"));
        assert_eq!(
            outcome(&checks, "service"),
            (
                Outcome::Fail,
                "NodePort is 32399, mesh.yaml says 32379: peers dial the wrong port".into()
            )
        );
        assert_eq!(
            outcome(&checks, "peers"),
            (Outcome::Fail, "cilium-clustermesh: k8s02 at https://k8s-lab-02.mylaptop.loc:32379 instead of https://k8s-lab-02.mylaptop.loc:32380; unexpected peer k8s09".into())
        );
        // The agents saw a different number of peers than mesh.yaml has.
        obs.agent_reports[0].status =
            Ok("ClusterMesh:   2/2 remote clusters ready, 0 global-services\n".into());
        let checks = evaluate(&spec, c, &obs, None, Err("no PKI"));
        assert!(
            outcome(&checks, "agents-clustermesh")
                .1
                .contains("(mesh.yaml has 1 peers)")
        );
        // Unreachable: one failing check, nothing else claimed.
        let checks = evaluate(
            &spec,
            c,
            &Observed::unreachable("connection refused".into()),
            None,
            Err("x"),
        );
        assert_eq!(checks.len(), 1);
        assert_eq!(outcome(&checks, "api").0, Outcome::Fail);
    }

    #[test]
    fn a_chart_applied_by_argo_cd_has_no_release_to_compare() {
        let spec = lab();
        let c = &spec.clusters[0];
        let mut obs = healthy(&spec, c);
        let rendered = Value::map();
        let checks = evaluate(&spec, c, &obs, None, Ok(&rendered));
        assert_eq!(
            outcome(&checks, "drift"),
            (
                Outcome::Fail,
                "no helm release `cilium` in kube-system".into()
            )
        );
        obs.argocd_application = Some("cilium-k8s01".into());
        let (o, why) = outcome(&evaluate(&spec, c, &obs, None, Ok(&rendered)), "drift");
        assert_eq!(o, Outcome::Skip);
        assert!(
            why.contains("installed by Argo CD (Application cilium-k8s01)"),
            "{why}"
        );
        // A release beside Argo CD's tracking (Argo CD adopting a helm install) is compared.
        obs.release_values = Ok(Some(Value::map()));
        let checks = evaluate(&spec, c, &obs, None, Ok(&rendered));
        assert_eq!(outcome(&checks, "drift").0, Outcome::Pass);
    }
}
