//! `cmesh apply`, the pure half: the decisions apply makes on one cluster from what the edge
//! observed there (the Secrets and the release already on it, the agents' DaemonSet before and
//! after the chart's upgrade), the steps it reports, and the `--dry-run` plan. The edge only
//! gathers these observations and carries the decisions out; every rule here has a unit test
//! that needs no cluster.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::render::{ClusterArtifacts, Phase};
use crate::value::{self, Change, Value};

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

/// Whether applying `secret` changes what the agents already read: only a Secret that exists
/// with other data counts (a new Secret is read by agents that start with it).
pub fn secret_changed(before: Option<&BTreeMap<String, String>>, secret: &Value) -> bool {
    before.is_some_and(|b| *b != secret_data(secret))
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

/// Whether to restart the agents after the rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restart {
    /// No restart, and why.
    Skip(String),
    /// Restart, and why (shown with the result).
    Restart(String),
}

/// Agents read the mesh configuration and certificates only at start: restart them when an
/// existing release's relevant values or Secrets changed, unless the chart's upgrade rolled
/// them already (`rolled_by_chart`: the DaemonSet's generation rose), since a second restart
/// would only cut traffic again.
pub fn restart(
    previous: Option<&Value>,
    values: &Value,
    secrets_changed: bool,
    rolled_by_chart: bool,
) -> Restart {
    let changed = restart_changes(previous, values);
    if changed.is_empty() && !secrets_changed {
        return Restart::Skip(if previous.is_some() {
            "no change".into()
        } else {
            "fresh install".into()
        });
    }
    if rolled_by_chart {
        return Restart::Skip("the chart's upgrade already restarted every agent".into());
    }
    Restart::Restart(if changed.is_empty() {
        "certificates changed".to_owned()
    } else {
        format!("{} changed", first_paths(&changed))
    })
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

/// What `--dry-run` would do on one cluster in one phase.
#[derive(Debug, Clone, Serialize)]
pub struct DryRun {
    /// Cluster.
    pub cluster: String,
    /// Phase.
    pub phase: Phase,
    /// Secrets that would be applied.
    pub secrets: Vec<String>,
    /// `install (no release yet)` or `upgrade the current release`.
    pub helm: String,
    /// Values changes against the release (paths only).
    pub changes: Vec<(String, Change)>,
    /// Whether agents would be restarted, and why.
    pub restart: Option<String>,
    /// Why it could not be planned (unreachable, ...).
    pub error: Option<String>,
}

/// What the edge found on a cluster for a dry run: the release's values (`None`: no release),
/// or why the cluster could not be asked.
pub type DryRunObservation<'a> = Result<Option<&'a Value>, &'a str>;

/// The `--dry-run` plan for `cluster` in `phase` from what was observed there. It does not read
/// Secrets, so a restart is predicted from values only.
pub fn dry_run(
    cluster: &str,
    phase: Phase,
    artifacts: &ClusterArtifacts,
    observed: DryRunObservation<'_>,
) -> DryRun {
    let mut d = DryRun {
        cluster: cluster.to_owned(),
        phase,
        secrets: artifacts
            .secrets
            .iter()
            .map(secret_name)
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .collect(),
        helm: String::new(),
        changes: Vec::new(),
        restart: None,
        error: None,
    };
    match observed {
        Err(e) => d.error = Some(e.to_owned()),
        Ok(None) => d.helm = "install (no release yet)".into(),
        Ok(Some(prev)) => {
            d.helm = "upgrade the current release".into();
            d.changes = value::diff(prev, &artifacts.values);
            let relevant = restart_changes(Some(prev), &artifacts.values);
            if !relevant.is_empty() {
                d.restart = Some(format!("{} changed", first_paths(&relevant)));
            }
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(json: serde_json::Value) -> Value {
        Value::from_json(&json)
    }

    fn secret(name: &str, data: &[(&str, &str)]) -> Value {
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

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
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
        assert!(!secret_changed(None, &s), "a new Secret is no change");
        assert!(!secret_changed(
            Some(&map(&[("k8s02.etcd-client.crt", "A")])),
            &s
        ));
        assert!(secret_changed(
            Some(&map(&[("k8s02.etcd-client.crt", "B")])),
            &s
        ));
        assert!(secret_changed(Some(&map(&[])), &s), "a key added");
        assert!(secret_changed(
            Some(&map(&[("k8s02.etcd-client.crt", "A"), ("old", "x")])),
            &s
        ));
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
        assert_eq!(
            restart(None, &mesh, false, false),
            Restart::Skip("fresh install".into())
        );
        assert_eq!(
            restart(Some(&base), &base, false, false),
            Restart::Skip("no change".into())
        );
        // A key the agents re-read needs no restart.
        assert_eq!(
            restart(Some(&base), &debug, false, false),
            Restart::Skip("no change".into())
        );
        assert_eq!(
            restart(Some(&base), &mesh, false, false),
            Restart::Restart(
                "clustermesh.config.clusters, clustermesh.useAPIServer changed".into()
            )
        );
        assert_eq!(
            restart(Some(&base), &base, true, false),
            Restart::Restart("certificates changed".into())
        );
        // The chart's upgrade rolled the agents after everything was in place.
        assert_eq!(
            restart(Some(&base), &mesh, true, true),
            Restart::Skip("the chart's upgrade already restarted every agent".into())
        );
        // Nothing relevant changed: "no change" even when the chart rolled them.
        assert_eq!(
            restart(Some(&base), &debug, false, true),
            Restart::Skip("no change".into())
        );
    }

    #[test]
    fn at_most_three_paths_are_named() {
        let paths: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        assert_eq!(first_paths(&paths[..3]), "a, b, c");
        assert_eq!(first_paths(&paths), "a, b, c, …");
    }

    #[test]
    fn the_dry_run_plan_follows_the_observation() {
        let values = v(
            serde_json::json!({"clustermesh": {"useAPIServer": true}, "debug": {"enabled": true}}),
        );
        let artifacts = ClusterArtifacts {
            values: values.clone(),
            values_text: String::new(),
            secrets: vec![
                secret("cilium-ca", &[("ca.crt", "x")]),
                v(serde_json::json!({})),
            ],
        };
        let d = dry_run("k8s01", Phase::Mesh, &artifacts, Ok(None));
        assert_eq!(d.secrets, ["cilium-ca"]);
        assert_eq!(d.helm, "install (no release yet)");
        assert!(d.changes.is_empty() && d.restart.is_none() && d.error.is_none());

        let prev = v(serde_json::json!({"debug": {"enabled": false}}));
        let d = dry_run("k8s01", Phase::Mesh, &artifacts, Ok(Some(&prev)));
        assert_eq!(d.helm, "upgrade the current release");
        assert_eq!(
            d.changes,
            [
                ("clustermesh.useAPIServer".to_owned(), Change::Added),
                ("debug.enabled".to_owned(), Change::Changed)
            ]
        );
        assert_eq!(
            d.restart.as_deref(),
            Some("clustermesh.useAPIServer changed")
        );

        let d = dry_run(
            "k8s01",
            Phase::Mesh,
            &artifacts,
            Err("API server unreachable"),
        );
        assert_eq!(d.error.as_deref(), Some("API server unreachable"));
        assert!(d.helm.is_empty());
    }
}
