//! `cmesh apply`, the pure half: the decisions apply makes on one cluster from what the edge
//! observed there (the Secrets and the release already on it, the agents' DaemonSet before and
//! after the chart's upgrade) and the steps it reports (the plan built from the same rules is
//! `crate::plan`). The edge only
//! gathers these observations and carries the decisions out; every rule here has a unit test
//! that needs no cluster.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::render::Phase;
use crate::value::{self, Value};

/// The Helm release name (the article's).
pub const RELEASE: &str = "cilium";

/// A step's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StepOutcome {
    /// Done.
    Ok,
    /// Nothing to do.
    Skipped,
    /// Failed.
    Failed,
}

impl StepOutcome {
    /// `Ok` or `Failed`.
    pub fn of(ok: bool) -> StepOutcome {
        if ok {
            StepOutcome::Ok
        } else {
            StepOutcome::Failed
        }
    }
}

/// One step on one cluster, as reported.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// Cluster.
    pub cluster: String,
    /// Phase, or `None` for connecting.
    pub phase: Option<Phase>,
    /// `connect`, `secrets`, `helm`, `rollout`, `restart`, `deadline`.
    pub step: &'static str,
    /// Outcome.
    pub outcome: StepOutcome,
    /// What happened.
    pub detail: String,
    /// Milliseconds.
    pub millis: u64,
}

/// Values keys whose change requires restarting the agents: they read them only at start.
pub fn restart_relevant(path: &str) -> bool {
    ["clustermesh", "tls", "cluster", "hubble.tls"]
        .iter()
        .any(|p| path == *p || path.strip_prefix(p).is_some_and(|r| r.starts_with('.')))
}

/// A Secret's `metadata.name` (empty when it has none).
pub fn secret_name(secret: &Value) -> &str {
    secret
        .get(&["metadata", "name"])
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// A rendered Secret's `data`, decoded: the form the cluster's copy is read in.
pub fn secret_data(secret: &Value) -> BTreeMap<String, String> {
    use base64::Engine as _;
    secret
        .get(&["data"])
        .and_then(Value::as_map)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| {
                    v.as_str().and_then(|b| {
                        base64::engine::general_purpose::STANDARD
                            .decode(b)
                            .ok()
                            .map(|d| (k.clone(), String::from_utf8_lossy(&d).into_owned()))
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// What applying the Secrets changed in Secrets that existed (a new Secret is read by the
/// pods that start with it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SecretChange {
    /// Some certificate or key differs.
    pub certificates: bool,
    /// Some `ca.crt` differs: what the cluster trusts.
    pub trust: bool,
}

impl SecretChange {
    /// Both changes of `self` and `other`.
    pub fn or(self, other: SecretChange) -> SecretChange {
        SecretChange {
            certificates: self.certificates || other.certificates,
            trust: self.trust || other.trust,
        }
    }
}

/// What applying `secret` changes in the copy the cluster has (`before`).
pub fn secret_change(before: Option<&BTreeMap<String, String>>, secret: &Value) -> SecretChange {
    let Some(b) = before else {
        return SecretChange::default();
    };
    let new = secret_data(secret);
    SecretChange {
        certificates: *b != new,
        trust: b.get("ca.crt") != new.get("ca.crt"),
    }
}

/// Values keys that carry certificates (1.14 and 1.15 take the Cluster Mesh ones as values,
/// Hubble's before 1.16.19) or the trusted CAs (`tls.ca.cert`): the components reload the
/// first and the trust is handled by [`restart_apiserver`], so neither restarts the agents.
pub fn is_certificate_value(path: &str) -> bool {
    path == "tls.ca.cert"
        || ((path.starts_with("clustermesh.apiserver.tls.") || path.starts_with("hubble.tls."))
            && (path.ends_with(".cert") || path.ends_with(".key")))
}

/// The `secrets` step's outcome and text, once every Secret was applied or one failed.
pub fn secrets_step(applied: usize, changed: bool, error: Option<&str>) -> (StepOutcome, String) {
    match error {
        Some(e) => (StepOutcome::Failed, e.to_owned()),
        None if applied == 0 => (StepOutcome::Skipped, "none needed".into()),
        None => (
            StepOutcome::Ok,
            format!(
                "{applied} applied{}",
                if changed { " (changed)" } else { "" }
            ),
        ),
    }
}

/// The release found on a cluster (`helm list`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// `deployed`, `failed`, `pending-upgrade`, ...
    pub status: String,
    /// `cilium-1.16.19`.
    pub chart: String,
}

/// What to do with the chart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HelmAction {
    /// No release yet.
    Install,
    /// A release exists and differs (or cannot be shown to be the same).
    Upgrade,
    /// The release is deployed from this chart with these values.
    Skip {
        /// `cilium-<version>`.
        chart: String,
    },
}

/// Whether the release's values (`helm get values`) are exactly `values`: only then is the
/// release worth looking up to skip the upgrade.
pub fn same_values(previous: Option<&Value>, values: &Value) -> bool {
    previous.is_some_and(|p| value::diff(p, values).is_empty())
}

/// Why the base phase leaves a cluster alone when both phases run: its release is meshed
/// already (`clustermesh.useAPIServer`), and base's values would take the mesh away until the
/// mesh phase puts it back, restarting every agent twice. (`--phase base` alone still applies.)
pub fn skip_base(previous: &Value) -> Option<String> {
    let meshed = previous
        .get(&["clustermesh", "useAPIServer"])
        .and_then(Value::as_bool)
        .unwrap_or(false);
    meshed.then(|| "already meshed: the base phase is for clusters without the mesh".to_owned())
}

/// Install, upgrade or skip. Skipping matters beyond speed: some charts (Cilium 1.16's agent
/// DaemonSet renders `annotations:` empty) make every `helm upgrade` patch the pod template,
/// which rolls every agent for nothing. A release that is not `deployed` (a failed upgrade) is
/// always upgraded over.
pub fn helm_action(
    previous: Option<&Value>,
    release: Option<&Release>,
    chart_version: Option<&str>,
    values: &Value,
) -> HelmAction {
    if previous.is_none() {
        return HelmAction::Install;
    }
    if let (Some(version), Some(r)) = (chart_version, release) {
        let expected = format!("cilium-{version}");
        if same_values(previous, values) && r.status == "deployed" && r.chart == expected {
            return HelmAction::Skip { chart: expected };
        }
    }
    HelmAction::Upgrade
}

/// A workload apply waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workload {
    /// Its name in kube-system.
    pub name: &'static str,
    /// A DaemonSet (else a Deployment).
    pub daemonset: bool,
}

/// What must roll out after the chart in `phase`: the clustermesh-apiserver exists only with
/// the mesh.
pub fn workloads(phase: Phase) -> Vec<Workload> {
    let mut w = vec![
        Workload {
            name: "cilium",
            daemonset: true,
        },
        Workload {
            name: "cilium-operator",
            daemonset: false,
        },
    ];
    if phase == Phase::Mesh {
        w.push(Workload {
            name: "clustermesh-apiserver",
            daemonset: false,
        });
    }
    w
}

/// How many of a DaemonSet's `desired` pods a restart deletes at once: its rolling update's
/// `maxUnavailable` (`"2"` or `"25%"`, rounded down as Kubernetes does), at least one; one when
/// it has none.
///
/// apply restarts the agents by deleting their pods in such batches, not by patching the pod
/// template as `kubectl rollout restart` does: the charts render the template's `annotations:`
/// empty, so Helm's next upgrade removes a `restartedAt` annotation again and rolls every agent
/// a second time, unplanned (seen on the lab with 1.16.19: the upgrade that dropped a peer
/// rolled the agents of the one cluster a restart had annotated before).
pub fn restart_batch(max_unavailable: Option<&str>, desired: i64) -> usize {
    let n = match max_unavailable.map(str::trim) {
        Some(p) if p.ends_with('%') => p
            .trim_end_matches('%')
            .parse::<i64>()
            .map_or(1, |pct| desired.saturating_mul(pct) / 100),
        Some(n) => n.parse::<i64>().unwrap_or(1),
        None => 1,
    };
    usize::try_from(n.max(1)).unwrap_or(1)
}

/// The restart-relevant paths where `values` differ from the release's `previous` values.
pub fn restart_changes(previous: Option<&Value>, values: &Value) -> Vec<String> {
    previous
        .map(|p| {
            value::diff(p, values)
                .into_iter()
                .map(|(p, _)| p)
                .filter(|p| restart_relevant(p))
                .collect()
        })
        .unwrap_or_default()
}

/// The peers in `clustermesh.config.clusters` by name, each with its entry: a list of
/// `{name: …}`, or from 1.19 a map by name (an entry `enabled: false` is no peer).
pub fn peer_entries(values: Option<&Value>) -> BTreeMap<String, &Value> {
    match values.and_then(|v| v.get(&["clustermesh", "config", "clusters"])) {
        Some(Value::Seq(items)) => items
            .iter()
            .filter_map(|i| Some((i.get(&["name"]).and_then(Value::as_str)?.to_owned(), i)))
            .collect(),
        Some(Value::Map(m)) => m
            .iter()
            .filter(|(_, v)| v.get(&["enabled"]).and_then(Value::as_bool) != Some(false))
            .map(|(k, v)| (k.clone(), v))
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// The peers `values` drops when that is all that changes for the agents: the restart-relevant
/// differences from `previous` are all in `clustermesh.config.clusters`, some peers are gone
/// and every peer left is exactly as it was. `None` otherwise.
///
/// Such a change needs no restart, and a restart is what hurts: an agent watches its
/// clustermesh configuration directory and lets a removed peer go by itself once kubelet
/// updates the Secret's volume (Cilium's `pkg/clustermesh/common/config.go`), withdrawing
/// that peer's Service backends before the routes to its pods; an agent restarted instead
/// restores the dropped peer's backends from its maps and keeps sending requests to them, with
/// no route left, until it prunes them (on the lab: up to 3 failed requests in 1,100 while a
/// cluster left, docs/day2.md). Apply then waits until the agents no longer list the peer.
pub fn dropped_peers(previous: Option<&Value>, values: &Value) -> Option<Vec<String>> {
    let previous = previous?;
    let outside = restart_changes(Some(previous), values)
        .into_iter()
        .filter(|p| !is_certificate_value(p))
        .any(|p| {
            p != "clustermesh.config.clusters" && !p.starts_with("clustermesh.config.clusters.")
        });
    if outside {
        return None;
    }
    let (before, after) = (peer_entries(Some(previous)), peer_entries(Some(values)));
    let kept = after.iter().all(|(n, e)| before.get(n) == Some(e));
    let gone: Vec<String> = before
        .keys()
        .filter(|n| !after.contains_key(*n))
        .cloned()
        .collect();
    (kept && !gone.is_empty()).then_some(gone)
}

/// What one agent (`cilium-dbg status`, JSON or text) or KVStoreMesh (`kvstoremesh-dbg
/// status -o json`) pod reported, for [`holding_dropped`].
#[derive(Debug, Clone)]
pub struct PeerReport {
    /// The pod.
    pub pod: String,
    /// A KVStoreMesh report rather than an agent's.
    pub kvstoremesh: bool,
    /// Its output, or why it could not be read.
    pub output: Result<String, String>,
}

/// Who still holds on to a dropped peer: one line per pod whose report names one of
/// `dropped`, lists more than `peers` remote clusters (the text form of Cilium 1.14 names
/// only the clusters that are not ready), or could not be read. Empty once every agent and
/// KVStoreMesh let them go.
pub fn holding_dropped(dropped: &[String], peers: usize, reports: &[PeerReport]) -> Vec<String> {
    let mut out = Vec::new();
    for r in reports {
        let what = if r.kvstoremesh {
            "KVStoreMesh"
        } else {
            "agent"
        };
        let listed: Result<(Vec<String>, usize), String> = match &r.output {
            Err(e) => Err(e.clone()),
            Ok(text) if r.kvstoremesh => crate::status::parse::kvstoremesh_status(text)
                .map(|l| (l.iter().map(|m| m.name.clone()).collect(), l.len())),
            Ok(text) => Ok(crate::status::parse::cilium_status_any(text).map_or(
                (Vec::new(), 0),
                |s| {
                    let n = s.total as usize;
                    (s.clusters.into_iter().map(|c| c.name).collect(), n)
                },
            )),
        };
        match listed {
            Err(e) => out.push(format!("{what} {}: {e}", r.pod)),
            Ok((names, total)) => {
                let held: Vec<&str> = dropped
                    .iter()
                    .filter(|d| names.contains(d))
                    .map(String::as_str)
                    .collect();
                if !held.is_empty() {
                    out.push(format!("{what} {} still lists {}", r.pod, held.join(", ")));
                } else if total > peers {
                    out.push(format!(
                        "{what} {} lists {total} remote clusters, {peers} expected",
                        r.pod
                    ));
                }
            }
        }
    }
    out
}

/// Whether to restart the agents after the rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restart {
    /// No restart, and why.
    Skip(String),
    /// Restart, and why (shown with the result).
    Restart(String),
}

/// Agents read the mesh configuration at start: restart them when an existing release's
/// relevant values changed, unless the chart's upgrade rolled them already (`rolled_by_chart`:
/// the DaemonSet's generation rose), since a second restart would only cut traffic again.
/// Certificates alone never restart them: an agent loads its etcd client certificate at every
/// handshake and its trusted CAs at every connection (Cilium's `pkg/kvstore/etcd.go`), which is
/// what lets a CA rotation go by without one (docs/rotation.md; the lab's rotation session
/// samples every peering while it runs).
pub fn restart(
    previous: Option<&Value>,
    values: &Value,
    secrets: SecretChange,
    rolled_by_chart: bool,
) -> Restart {
    let all = restart_changes(previous, values);
    let (certs, changed): (Vec<String>, Vec<String>) =
        all.into_iter().partition(|p| is_certificate_value(p));
    if changed.is_empty() {
        return Restart::Skip(if previous.is_none() {
            "fresh install".into()
        } else if secrets.certificates || !certs.is_empty() {
            "only certificates changed: agents load them at every connection".into()
        } else {
            "no change".into()
        });
    }
    if rolled_by_chart {
        return Restart::Skip("the chart's upgrade already restarted every agent".into());
    }
    if let Some(gone) = dropped_peers(previous, values) {
        return Restart::Skip(format!(
            "only peers dropped ({}): the agents let them go without a restart",
            gone.join(", ")
        ));
    }
    Restart::Restart(format!("{} changed", first_paths(&changed)))
}

/// Agents after a replacement of the trusted CAs with no CA in common (`pki init --force`): a
/// restart, once clustermesh-apiserver has restarted, when this cluster's trust changed and the
/// chart did not roll the agents already. On the lab (3 x 1.20.0) every peering came back ready
/// after such a replacement, yet global Services created afterwards never reached another
/// cluster until the agents restarted (docs/rotation.md). A rotation's steps keep a CA in
/// common and need none of this.
pub fn restart_after_replacement(
    phase: Phase,
    replaced: bool,
    secrets: SecretChange,
    rolled_by_chart: bool,
) -> Restart {
    if phase != Phase::Mesh || !replaced || !secrets.trust {
        return Restart::Skip("the trusted CAs were not replaced".into());
    }
    if rolled_by_chart {
        return Restart::Skip("the chart's upgrade already restarted every agent".into());
    }
    Restart::Restart(
        "the trusted CAs were replaced with no CA in common: agents stop receiving the peers' new state until they restart"
            .into(),
    )
}

/// clustermesh-apiserver's etcd reads its trusted CAs only at start (etcd-io/etcd#21074; its
/// serving certificate it reads at every handshake): restart it when what the cluster trusts
/// changed (a Secret's `ca.crt`, or `tls.ca.cert` where the chart writes the Secrets), unless
/// the chart's upgrade rolled it already. Only in the mesh phase, where it exists.
pub fn restart_apiserver(
    phase: Phase,
    previous: Option<&Value>,
    values: &Value,
    secrets: SecretChange,
    rolled_by_chart: bool,
) -> Restart {
    let trust_in_values = restart_changes(previous, values)
        .iter()
        .any(|p| p == "tls.ca.cert");
    if phase != Phase::Mesh || previous.is_none() || !(secrets.trust || trust_in_values) {
        return Restart::Skip("the trusted CAs did not change".into());
    }
    if rolled_by_chart {
        return Restart::Skip("the chart's upgrade already restarted it".into());
    }
    Restart::Restart("the trusted CAs changed: its etcd reads them only at start".into())
}

/// At most three paths, then `…`.
fn first_paths(paths: &[String]) -> String {
    let mut s = paths
        .iter()
        .take(3)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if paths.len() > 3 {
        s.push_str(", …");
    }
    s
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A Secret change that reaches what the cluster trusts, and one of certificates only.
    const TRUST: SecretChange = SecretChange {
        certificates: true,
        trust: true,
    };
    const CERTS: SecretChange = SecretChange {
        certificates: true,
        trust: false,
    };

    /// A value from JSON (shared with the plan's tests).
    pub(crate) fn v(json: serde_json::Value) -> Value {
        Value::from_json(&json)
    }

    /// A Secret named `name` with `data` (text, encoded as the cluster stores it).
    pub(crate) fn secret(name: &str, data: &[(&str, &str)]) -> Value {
        use base64::Engine as _;
        let data: serde_json::Map<String, serde_json::Value> = data
            .iter()
            .map(|(k, d)| {
                (
                    (*k).to_owned(),
                    base64::engine::general_purpose::STANDARD.encode(d).into(),
                )
            })
            .collect();
        v(serde_json::json!({"metadata": {"name": name}, "data": data}))
    }

    /// Decoded Secret data from pairs.
    pub(crate) fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn restart_relevant_paths_are_whole_segments() {
        assert!(restart_relevant("clustermesh"));
        assert!(restart_relevant("clustermesh.config.clusters"));
        assert!(restart_relevant("cluster.id"));
        assert!(restart_relevant("hubble.tls.server.cert"));
        assert!(restart_relevant("tls.ca.cert"));
        // A prefix of a segment is not the segment.
        assert!(!restart_relevant("clusterPoolIPv4"));
        assert!(!restart_relevant("tlsX.y"));
        assert!(!restart_relevant("hubble.relay.enabled"));
        assert!(!restart_relevant("debug.enabled"));
    }

    #[test]
    fn a_secret_changes_only_when_it_existed_with_other_data() {
        let s = secret("cilium-clustermesh", &[("k8s02.etcd-client.crt", "A")]);
        assert_eq!(secret_name(&s), "cilium-clustermesh");
        assert_eq!(secret_data(&s), map(&[("k8s02.etcd-client.crt", "A")]));
        let changed =
            |before: Option<&BTreeMap<String, String>>| secret_change(before, &s).certificates;
        assert!(!changed(None), "a new Secret is no change");
        assert!(!changed(Some(&map(&[("k8s02.etcd-client.crt", "A")]))));
        assert!(changed(Some(&map(&[("k8s02.etcd-client.crt", "B")]))));
        assert!(changed(Some(&map(&[]))), "a key added");
        assert!(changed(Some(&map(&[
            ("k8s02.etcd-client.crt", "A"),
            ("old", "x")
        ]))));
        // The trust changes only with ca.crt.
        let tls = secret(
            "clustermesh-apiserver-remote-cert",
            &[("ca.crt", "OLD+NEW"), ("tls.crt", "C")],
        );
        let c = secret_change(Some(&map(&[("ca.crt", "OLD"), ("tls.crt", "C")])), &tls);
        assert_eq!((c.certificates, c.trust), (true, true));
        let c = secret_change(Some(&map(&[("ca.crt", "OLD+NEW"), ("tls.crt", "B")])), &tls);
        assert_eq!((c.certificates, c.trust), (true, false));
    }

    #[test]
    fn the_secrets_step_says_what_happened() {
        assert_eq!(
            secrets_step(0, false, None),
            (StepOutcome::Skipped, "none needed".into())
        );
        assert_eq!(
            secrets_step(2, false, None),
            (StepOutcome::Ok, "2 applied".into())
        );
        assert_eq!(
            secrets_step(2, true, None),
            (StepOutcome::Ok, "2 applied (changed)".into())
        );
        assert_eq!(
            secrets_step(2, true, Some("forbidden")),
            (StepOutcome::Failed, "forbidden".into())
        );
    }

    fn deployed(chart: &str) -> Release {
        Release {
            status: "deployed".into(),
            chart: chart.into(),
        }
    }

    #[test]
    fn helm_installs_upgrades_or_skips() {
        let values = v(serde_json::json!({"cluster": {"name": "k8s01", "id": 1}}));
        let other = v(serde_json::json!({"cluster": {"name": "k8s01", "id": 2}}));
        let r = deployed("cilium-1.16.19");
        assert_eq!(
            helm_action(None, Some(&r), Some("1.16.19"), &values),
            HelmAction::Install
        );
        assert_eq!(
            helm_action(Some(&values), Some(&r), Some("1.16.19"), &values),
            HelmAction::Skip {
                chart: "cilium-1.16.19".into()
            }
        );
        // Other values, another chart version, a failed release, an unknown chart version or a
        // release that could not be listed: upgrade.
        assert_eq!(
            helm_action(Some(&other), Some(&r), Some("1.16.19"), &values),
            HelmAction::Upgrade
        );
        assert_eq!(
            helm_action(Some(&values), Some(&r), Some("1.20.0"), &values),
            HelmAction::Upgrade
        );
        let failed = Release {
            status: "failed".into(),
            chart: "cilium-1.16.19".into(),
        };
        assert_eq!(
            helm_action(Some(&values), Some(&failed), Some("1.16.19"), &values),
            HelmAction::Upgrade
        );
        assert_eq!(
            helm_action(Some(&values), Some(&r), None, &values),
            HelmAction::Upgrade
        );
        assert_eq!(
            helm_action(Some(&values), None, Some("1.16.19"), &values),
            HelmAction::Upgrade
        );
        assert!(same_values(Some(&values), &values));
        assert!(!same_values(Some(&other), &values));
        assert!(!same_values(None, &values));
    }

    #[test]
    fn the_clustermesh_apiserver_rolls_out_only_with_the_mesh() {
        let names = |p| workloads(p).iter().map(|w| w.name).collect::<Vec<_>>();
        assert_eq!(names(Phase::Base), ["cilium", "cilium-operator"]);
        assert_eq!(
            names(Phase::Mesh),
            ["cilium", "cilium-operator", "clustermesh-apiserver"]
        );
        assert!(workloads(Phase::Mesh)[0].daemonset);
        assert!(!workloads(Phase::Mesh)[2].daemonset);
    }

    #[test]
    fn agents_restart_when_what_they_read_at_start_changed() {
        let base = v(
            serde_json::json!({"cluster": {"name": "k8s01", "id": 1}, "debug": {"enabled": false}}),
        );
        let debug = v(
            serde_json::json!({"cluster": {"name": "k8s01", "id": 1}, "debug": {"enabled": true}}),
        );
        let mesh = v(serde_json::json!({
            "cluster": {"name": "k8s01", "id": 1},
            "debug": {"enabled": false},
            "clustermesh": {"useAPIServer": true, "config": {"clusters": [{"name": "k8s02"}]}}
        }));
        let none = SecretChange::default();
        let certs = CERTS;
        assert_eq!(
            restart(None, &mesh, none, false),
            Restart::Skip("fresh install".into())
        );
        assert_eq!(
            restart(Some(&base), &base, none, false),
            Restart::Skip("no change".into())
        );
        // A key the agents re-read needs no restart.
        assert_eq!(
            restart(Some(&base), &debug, none, false),
            Restart::Skip("no change".into())
        );
        assert_eq!(
            restart(Some(&base), &mesh, none, false),
            Restart::Restart(
                "clustermesh.config.clusters, clustermesh.useAPIServer changed".into()
            )
        );
        // Certificates alone: agents load them at every connection.
        assert_eq!(
            restart(Some(&base), &base, certs, false),
            Restart::Skip("only certificates changed: agents load them at every connection".into())
        );
        let mut rotated = mesh.clone();
        rotated.set(&["tls", "ca", "cert"], "Ym90aA==");
        rotated.set(
            &["clustermesh", "apiserver", "tls", "server", "cert"],
            "bmV3",
        );
        assert_eq!(
            restart(Some(&mesh), &rotated, certs, false),
            Restart::Skip("only certificates changed: agents load them at every connection".into())
        );
        // The chart's upgrade rolled the agents after everything was in place.
        assert_eq!(
            restart(Some(&base), &mesh, certs, true),
            Restart::Skip("the chart's upgrade already restarted every agent".into())
        );
        // Nothing relevant changed: "no change" even when the chart rolled them.
        assert_eq!(
            restart(Some(&base), &debug, none, true),
            Restart::Skip("no change".into())
        );
    }

    #[test]
    fn agents_let_dropped_peers_go_without_a_restart() {
        let mesh = |peers: serde_json::Value| {
            v(serde_json::json!({
                "cluster": {"name": "k8s01", "id": 1},
                "clustermesh": {"useAPIServer": true, "config": {"clusters": peers}}
            }))
        };
        let p = |n: &str, ip: &str| serde_json::json!({"name": n, "port": 2379, "ips": [ip]});
        let three = mesh(serde_json::json!([
            p("k8s02", "10.0.0.2"),
            p("k8s03", "10.0.0.3")
        ]));
        let two = mesh(serde_json::json!([p("k8s03", "10.0.0.3")]));
        let none = SecretChange::default();
        assert_eq!(
            dropped_peers(Some(&three), &two),
            Some(vec!["k8s02".into()])
        );
        assert_eq!(
            restart(Some(&three), &two, none, false),
            Restart::Skip(
                "only peers dropped (k8s02): the agents let them go without a restart".into()
            )
        );
        // Certificates changing along with the drop change nothing to that.
        let mut rotated = two.clone();
        rotated.set(&["tls", "ca", "cert"], "Ym90aA==");
        assert_eq!(
            dropped_peers(Some(&three), &rotated),
            Some(vec!["k8s02".into()])
        );
        // A peer gained, a peer that stays but changed, or anything else the agents read at
        // start: a restart, as before.
        let swapped = mesh(serde_json::json!([
            p("k8s03", "10.0.0.3"),
            p("k8s04", "10.0.0.4")
        ]));
        let moved = mesh(serde_json::json!([p("k8s03", "10.0.0.9")]));
        let mut renamed = two.clone();
        renamed.set(&["cluster", "id"], 7u32);
        for (what, after) in [
            ("a peer gained", &swapped),
            ("a peer moved", &moved),
            ("cluster.id", &renamed),
        ] {
            assert_eq!(dropped_peers(Some(&three), after), None, "{what}");
            assert!(
                matches!(
                    restart(Some(&three), after, none, false),
                    Restart::Restart(_)
                ),
                "{what}"
            );
        }
        // Gaining a peer is no drop; no release before is no drop.
        assert_eq!(dropped_peers(Some(&two), &three), None);
        assert_eq!(dropped_peers(None, &two), None);
        // The 1.19+ map form, where a peer may also be disabled.
        let map = |peers: serde_json::Value| {
            v(serde_json::json!({"clustermesh": {"config": {"clusters": peers}}}))
        };
        let e = |ip: &str| serde_json::json!({"port": 2379, "ips": [ip]});
        let before = map(serde_json::json!({"k8s02": e("10.0.0.2"), "k8s03": e("10.0.0.3")}));
        let after = map(serde_json::json!({"k8s03": e("10.0.0.3")}));
        assert_eq!(
            dropped_peers(Some(&before), &after),
            Some(vec!["k8s02".into()])
        );
        let mut disabled = before.clone();
        disabled.set(
            &["clustermesh", "config", "clusters", "k8s02", "enabled"],
            false,
        );
        assert_eq!(peer_entries(Some(&disabled)).len(), 1);
    }

    #[test]
    fn a_dropped_peer_is_let_go_once_no_agent_or_kvstoremesh_lists_it() {
        let dropped = vec!["k8s02".to_owned()];
        let agent = |pod: &str, out: &str| PeerReport {
            pod: pod.into(),
            kvstoremesh: false,
            output: Ok(out.into()),
        };
        let json = |names: &[&str]| {
            let clusters: Vec<_> = names
                .iter()
                .map(|n| serde_json::json!({"name": n, "ready": true, "connected": true}))
                .collect();
            serde_json::json!({"cluster-mesh": {"clusters": clusters}}).to_string()
        };
        let kvs = |pod: &str, names: &[&str]| PeerReport {
            pod: pod.into(),
            kvstoremesh: true,
            output: Ok(serde_json::Value::Array(
                names
                    .iter()
                    .map(|n| serde_json::json!({"name": n, "ready": true}))
                    .collect(),
            )
            .to_string()),
        };
        let done = [
            agent("cilium-a", &json(&["k8s03"])),
            kvs("clustermesh-apiserver-x", &["k8s03"]),
        ];
        assert!(holding_dropped(&dropped, 1, &done).is_empty());
        let held = [
            agent("cilium-a", &json(&["k8s02", "k8s03"])),
            agent(
                "cilium-b",
                "ClusterMesh:   2/2 remote clusters ready, 0 global-services\n",
            ),
            kvs("clustermesh-apiserver-x", &["k8s02", "k8s03"]),
            PeerReport {
                pod: "cilium-c".into(),
                kvstoremesh: false,
                output: Err("exec timed out".into()),
            },
        ];
        assert_eq!(
            holding_dropped(&dropped, 1, &held),
            [
                "agent cilium-a still lists k8s02",
                "agent cilium-b lists 2 remote clusters, 1 expected",
                "KVStoreMesh clustermesh-apiserver-x still lists k8s02",
                "agent cilium-c: exec timed out",
            ]
        );
        // The text form names no ready cluster: its count decides.
        let text = [agent(
            "cilium-b",
            "ClusterMesh:   1/1 remote clusters ready, 0 global-services\n",
        )];
        assert!(holding_dropped(&dropped, 1, &text).is_empty());
    }

    #[test]
    fn a_restart_deletes_as_many_pods_at_once_as_may_be_unavailable() {
        assert_eq!(restart_batch(None, 10), 1);
        assert_eq!(restart_batch(Some("2"), 10), 2);
        assert_eq!(restart_batch(Some("25%"), 10), 2);
        assert_eq!(restart_batch(Some("10%"), 3), 1, "at least one");
        assert_eq!(restart_batch(Some("0"), 3), 1, "at least one");
        assert_eq!(restart_batch(Some("100%"), 4), 4);
        assert_eq!(restart_batch(Some("x"), 4), 1);
    }

    #[test]
    fn clustermesh_apiserver_restarts_when_the_trust_changes() {
        let mesh = v(
            serde_json::json!({"tls": {"ca": {"cert": "b2xk"}}, "clustermesh": {"useAPIServer": true}}),
        );
        let (trust, certs) = (TRUST, CERTS);
        let why = "the trusted CAs changed: its etcd reads them only at start";
        assert_eq!(
            restart_apiserver(Phase::Mesh, Some(&mesh), &mesh, trust, false),
            Restart::Restart(why.into())
        );
        assert!(matches!(
            restart_apiserver(Phase::Mesh, Some(&mesh), &mesh, certs, false),
            Restart::Skip(_)
        ));
        // 1.14/1.15: the trust arrives through tls.ca.cert, from which the chart writes the Secrets.
        let mut both = mesh.clone();
        both.set(&["tls", "ca", "cert"], "Ym90aA==");
        assert_eq!(
            restart_apiserver(
                Phase::Mesh,
                Some(&mesh),
                &both,
                SecretChange::default(),
                false
            ),
            Restart::Restart(why.into())
        );
        assert!(matches!(
            restart_apiserver(Phase::Mesh, Some(&mesh), &both, trust, true),
            Restart::Skip(w) if w.contains("chart")
        ));
        assert!(matches!(
            restart_apiserver(Phase::Base, Some(&mesh), &both, trust, false),
            Restart::Skip(_)
        ));
        assert!(matches!(
            restart_apiserver(Phase::Mesh, None, &both, trust, false),
            Restart::Skip(_)
        ));
        assert_eq!(
            (
                is_certificate_value("tls.ca.cert"),
                is_certificate_value("hubble.tls.server.key"),
                is_certificate_value("clustermesh.apiserver.tls.auto.enabled")
            ),
            (true, true, false)
        );
    }

    #[test]
    fn base_leaves_a_meshed_cluster_alone() {
        let meshed = v(serde_json::json!({"clustermesh": {"useAPIServer": true}}));
        let base = v(serde_json::json!({"cluster": {"name": "k8s01"}}));
        assert!(skip_base(&meshed).unwrap().starts_with("already meshed"));
        assert_eq!(skip_base(&base), None);
    }

    #[test]
    fn at_most_three_paths_are_named() {
        let paths: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        assert_eq!(first_paths(&paths[..3]), "a, b, c");
        assert_eq!(first_paths(&paths), "a, b, c, …");
    }

    #[test]
    fn agents_restart_only_after_a_replacement_that_reached_this_clusters_trust() {
        // (phase, replaced, Secret change, rolled by the chart) → restart?
        let cases = [
            (Phase::Mesh, true, TRUST, false, true),
            // Not a replacement (a rotation's step), not this cluster's trust, the base phase,
            // or the chart rolled them already: no restart.
            (Phase::Mesh, false, TRUST, false, false),
            (Phase::Mesh, true, CERTS, false, false),
            (Phase::Base, true, TRUST, false, false),
            (Phase::Mesh, true, TRUST, true, false),
        ];
        for (phase, replaced, secrets, rolled, want) in cases {
            let got = restart_after_replacement(phase, replaced, secrets, rolled);
            assert_eq!(
                matches!(got, Restart::Restart(_)),
                want,
                "{phase:?} replaced={replaced} {secrets:?} rolled={rolled}: {got:?}"
            );
        }
    }
}
