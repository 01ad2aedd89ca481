//! `cmesh plan`, and the plan `apply` shows before it changes anything: per cluster, in the
//! order `apply` takes them, what changes (release version, values keys with secrets
//! redacted, Secrets, which workloads restart, which peers are gained or lost), decided by
//! the same rules `apply` then follows ([`crate::apply`]) from what the edge observed on each
//! cluster. [`deviations`] compares a plan with the steps `apply` reported, so every apply
//! checks its own plan.
//!
//! The order: clusters joining the mesh first (base then mesh on each, so that they serve
//! their peers before the peers list them), then the clusters already meshed (their peer lists
//! change), then the clusters leaving (only with `--prune`: their peers have dropped them by
//! then, so nothing dials a cluster whose mesh configuration is going away).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::apply::{self as decide, HelmAction, Release, Restart, SecretChange, Step, StepOutcome};
use crate::membership::Member;
use crate::pki::LeafKind;
use crate::render::{ClusterArtifacts, Phase};
use crate::value::{self, Change, Value};

/// What the edge found on one cluster.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The release (`helm list`), when there is one and it could be listed.
    pub release: Option<Release>,
    /// The release's values (`helm get values`); `None`: no release.
    pub values: Option<Value>,
    /// The Secrets that exist among those asked for, decoded (read to compare, never shown).
    pub secrets: BTreeMap<String, BTreeMap<String, String>>,
}

/// Where a cluster stands in this change of the mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// In mesh.yaml, not meshed yet (no release, or a release without the mesh).
    Join,
    /// In mesh.yaml and meshed.
    Member,
    /// Meshed, and no longer in mesh.yaml.
    Leave,
    /// Could not be observed (its plan's `error` says why).
    Unknown,
}

impl Role {
    /// The order `apply` takes clusters in: joining, meshed, leaving.
    pub fn stage(self) -> u8 {
        match self {
            Role::Join => 1,
            // A cluster that could not be observed goes with the meshed ones: it fails at its
            // own connection there, without holding back the peers of clusters that joined.
            Role::Member | Role::Unknown => 2,
            Role::Leave => 3,
        }
    }
}

/// What happens to the release in one phase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HelmPlan {
    /// Phase (`None`: disconnecting a leaving cluster).
    pub phase: Option<Phase>,
    /// `install`, `upgrade` or `skip`.
    pub action: &'static str,
    /// Why, for a skip.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub why: String,
}

/// A values key that changes, its values redacted where they hold certificates or keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ValueChange {
    /// Dotted path.
    pub path: String,
    /// Added, removed, changed.
    pub change: Change,
    /// Before (shortened; `(redacted)` for a key, `(certificate)` for a certificate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
    /// After, likewise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

/// What happens to a Secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SecretAction {
    /// It does not exist yet.
    Create,
    /// It exists with other data.
    Update,
    /// It exists with this data.
    Unchanged,
    /// It goes (a leaving cluster's mesh Secrets).
    Delete,
}

/// One Secret's fate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretPlan {
    /// Name in kube-system.
    pub name: String,
    /// What happens.
    pub action: SecretAction,
    /// The data keys that differ (names only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
    /// The phase that applies it (`None`: disconnecting).
    pub phase: Option<Phase>,
}

/// A workload `apply` restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestartPlan {
    /// Phase (`None`: disconnecting).
    pub phase: Option<Phase>,
    /// `cilium` (the agents) or `clustermesh-apiserver`.
    pub workload: &'static str,
    /// Why (the chart's own rollout may do it first, and then `apply` does not repeat it).
    pub why: String,
}

/// One cluster's plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterPlan {
    /// Cluster.
    pub cluster: String,
    /// Joining, meshed or leaving.
    pub role: Role,
    /// The order `apply` takes it in (1 joining, 2 meshed, 3 leaving).
    pub stage: u8,
    /// The chart version now (`None`: no release).
    pub chart_from: Option<String>,
    /// The chart version after (`None`: a local chart or a leaving cluster kept as is).
    pub chart_to: Option<String>,
    /// The release, phase by phase.
    pub helm: Vec<HelmPlan>,
    /// Values keys that change (from the release's values to the last phase's).
    pub values: Vec<ValueChange>,
    /// Secrets.
    pub secrets: Vec<SecretPlan>,
    /// Restarts `apply` makes.
    pub restarts: Vec<RestartPlan>,
    /// Peers this cluster's list gains.
    pub peers_added: Vec<String>,
    /// Peers this cluster's list loses.
    pub peers_removed: Vec<String>,
    /// Left alone, and why (a leaving cluster without `--prune`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub untouched: Option<String>,
    /// Why apply refuses to change it (a version step Cilium does not support).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// Why it could not be planned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ClusterPlan {
    fn new(cluster: &str, role: Role) -> ClusterPlan {
        ClusterPlan {
            cluster: cluster.to_owned(),
            role,
            stage: role.stage(),
            chart_from: None,
            chart_to: None,
            helm: Vec::new(),
            values: Vec::new(),
            secrets: Vec::new(),
            restarts: Vec::new(),
            peers_added: Vec::new(),
            peers_removed: Vec::new(),
            untouched: None,
            refused: None,
            error: None,
        }
    }

    /// Whether applying changes anything on this cluster.
    pub fn changes(&self) -> bool {
        self.error.is_none()
            && self.refused.is_none()
            && (self.helm.iter().any(|h| h.action != "skip")
                || self
                    .secrets
                    .iter()
                    .any(|s| s.action != SecretAction::Unchanged)
                || !self.restarts.is_empty())
    }
}

/// How `apply` will run, as far as the plan depends on it.
#[derive(Debug, Clone)]
pub struct PlanOptions<'a> {
    /// The chart version (`None`: a local chart whose version is not known).
    pub chart_version: Option<&'a str>,
    /// Both phases run: a meshed cluster skips base.
    pub skip_base_when_meshed: bool,
    /// The trusted CAs are replaced with no CA in common.
    pub trust_replaced: bool,
}

/// Whether a release's values have the mesh.
pub fn meshed(values: &Value) -> bool {
    decide::skip_base(values).is_some()
}

/// The plan for a cluster of mesh.yaml: `phases` are its artifacts in the order `apply` runs
/// them; `observed` what was found on it, or why it could not be asked.
pub fn plan_cluster(
    cluster: &str,
    phases: &[(Phase, &ClusterArtifacts)],
    observed: Result<&Observed, &str>,
    opts: &PlanOptions<'_>,
) -> ClusterPlan {
    let o = match observed {
        Ok(o) => o,
        Err(e) => {
            let mut p = ClusterPlan::new(cluster, Role::Unknown);
            p.error = Some(e.to_owned());
            return p;
        }
    };
    let role = if o.values.as_ref().is_some_and(meshed) {
        Role::Member
    } else {
        Role::Join
    };
    let mut p = ClusterPlan::new(cluster, role);
    p.chart_from = o.release.as_ref().map(|r| chart_version(&r.chart));
    p.chart_to = opts.chart_version.map(str::to_owned);
    // One minor release at a time, as Cilium supports: apply leaves this cluster alone.
    let parse = |v: &Option<String>| {
        v.as_deref()
            .and_then(|t| t.parse::<crate::version::CiliumVersion>().ok())
    };
    if let (Some(from), Some(to)) = (parse(&p.chart_from), parse(&p.chart_to))
        && let Some(problem) = from.step_problem(&to)
    {
        p.refused = Some(format!(
            "{problem}; set cilium.version to the next minor release first"
        ));
        return p;
    }
    // Apply's own walk through the phases: each sees what the previous one left.
    let mut prev = o.values.clone();
    let mut release = o.release.clone();
    let mut live = o.secrets.clone();
    let mut last: Option<&Value> = None;
    for &(phase, a) in phases {
        if phase == Phase::Base
            && opts.skip_base_when_meshed
            && let Some(why) = prev.as_ref().and_then(decide::skip_base)
        {
            p.helm.push(HelmPlan {
                phase: Some(phase),
                action: "skip",
                why,
            });
            continue;
        }
        let mut change = SecretChange::default();
        for s in &a.secrets {
            let name = decide::secret_name(s).to_owned();
            let data = decide::secret_data(s);
            let before = live.get(&name);
            change = change.or(decide::secret_change(before, s));
            let (action, keys) = match before {
                None => (SecretAction::Create, Vec::new()),
                Some(b) if *b == data => (SecretAction::Unchanged, Vec::new()),
                Some(b) => (SecretAction::Update, differing_keys(b, &data)),
            };
            // A Secret both phases apply is reported once, with the change that matters.
            match p.secrets.iter_mut().find(|x| x.name == name) {
                Some(x) if x.action == SecretAction::Unchanged => {
                    *x = SecretPlan {
                        name: name.clone(),
                        action,
                        keys,
                        phase: Some(phase),
                    };
                }
                Some(_) => {}
                None => p.secrets.push(SecretPlan {
                    name: name.clone(),
                    action,
                    keys,
                    phase: Some(phase),
                }),
            }
            live.insert(name, data);
        }
        let action = decide::helm_action(
            prev.as_ref(),
            release.as_ref(),
            opts.chart_version,
            &a.values,
        );
        p.helm.push(match action {
            HelmAction::Install => HelmPlan {
                phase: Some(phase),
                action: "install",
                why: String::new(),
            },
            HelmAction::Upgrade => HelmPlan {
                phase: Some(phase),
                action: "upgrade",
                why: String::new(),
            },
            HelmAction::Skip { chart } => HelmPlan {
                phase: Some(phase),
                action: "skip",
                why: format!("no change ({chart})"),
            },
        });
        let agents = decide::restart(prev.as_ref(), &a.values, change, false);
        let replaced = decide::restart_after_replacement(phase, opts.trust_replaced, change, false);
        // As apply: the agents restart for their configuration, else after a replacement.
        if let (Restart::Restart(why), _) | (Restart::Skip(_), Restart::Restart(why)) =
            (agents, replaced)
        {
            p.restarts.push(RestartPlan {
                phase: Some(phase),
                workload: "cilium",
                why,
            });
        }
        if let Restart::Restart(why) =
            decide::restart_apiserver(phase, prev.as_ref(), &a.values, change, false)
        {
            p.restarts.push(RestartPlan {
                phase: Some(phase),
                workload: "clustermesh-apiserver",
                why,
            });
        }
        prev = Some(a.values.clone());
        if let Some(v) = opts.chart_version {
            release = Some(Release {
                status: "deployed".into(),
                chart: format!("cilium-{v}"),
            });
        }
        last = Some(&a.values);
    }
    if let Some(new) = last {
        p.values = value_changes(o.values.as_ref(), new);
        let (added, removed) = peer_changes(o.values.as_ref(), new);
        p.peers_added = added;
        p.peers_removed = removed;
    }
    p
}

/// The Secrets that hold a cluster's mesh state (cmesh's, certgen's or the chart's):
/// what disconnecting removes. `cilium-ca` stays: Hubble's certificates chain to it.
pub fn mesh_secret_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = LeafKind::ALL
        .iter()
        .filter(|k| k.is_clustermesh())
        .map(|k| k.secret_name())
        .collect();
    names.extend(["cilium-clustermesh", "cilium-kvstoremesh"]);
    names
}

/// A leaving cluster's values after disconnecting: its release's values without the mesh
/// (`clustermesh.*`, which also holds 1.14/1.15's certificates given as values). Cilium stays
/// installed with its name and ID.
pub fn disconnect_values(previous: &Value) -> Value {
    let mut v = previous.clone();
    if let Value::Map(m) = &mut v {
        m.remove("clustermesh");
    }
    v
}

/// The plan for a cluster that left mesh.yaml: with `prune`, the release upgraded without
/// the mesh, the mesh Secrets deleted, the agents restarted; without, nothing.
pub fn plan_leaving(
    member: &Member,
    observed: Result<&Observed, &str>,
    prune: bool,
) -> ClusterPlan {
    let mut p = ClusterPlan::new(&member.name, Role::Leave);
    if !prune {
        p.untouched = Some(
            "no longer in mesh.yaml: its peers drop it; `apply --prune` removes its own mesh configuration".into(),
        );
        return p;
    }
    let o = match observed {
        Ok(o) => o,
        Err(e) => {
            p.error = Some(e.to_owned());
            return p;
        }
    };
    p.chart_from = o.release.as_ref().map(|r| chart_version(&r.chart));
    p.chart_to.clone_from(&p.chart_from);
    let Some(prev) = &o.values else {
        p.untouched = Some("no Cilium release: nothing to disconnect".into());
        p.secrets = leftover_secrets(o);
        return p;
    };
    let new = disconnect_values(prev);
    let same = value::diff(prev, &new).is_empty();
    p.helm.push(HelmPlan {
        phase: None,
        action: if same { "skip" } else { "upgrade" },
        why: if same {
            "no mesh configuration in the release".into()
        } else {
            String::new()
        },
    });
    p.values = value_changes(Some(prev), &new);
    p.secrets = leftover_secrets(o);
    if let Restart::Restart(why) = decide::restart(Some(prev), &new, SecretChange::default(), false)
    {
        p.restarts.push(RestartPlan {
            phase: None,
            workload: "cilium",
            why,
        });
    }
    let (_, removed) = peer_changes(Some(prev), &new);
    p.peers_removed = removed;
    p
}

fn leftover_secrets(o: &Observed) -> Vec<SecretPlan> {
    mesh_secret_names()
        .into_iter()
        .filter(|n| o.secrets.contains_key(*n))
        .map(|n| SecretPlan {
            name: n.to_owned(),
            action: SecretAction::Delete,
            keys: Vec::new(),
            phase: None,
        })
        .collect()
}

/// `cilium-1.16.19` → `1.16.19`.
fn chart_version(chart: &str) -> String {
    chart.strip_prefix("cilium-").unwrap_or(chart).to_owned()
}

fn differing_keys(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Vec<String> {
    a.keys()
        .chain(b.keys())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect()
}

/// Whether a value at `path` is shown: keys never, certificates by kind only.
fn shown(path: &str, v: &Value) -> String {
    let last = path.rsplit('.').next().unwrap_or(path).to_ascii_lowercase();
    if last.ends_with("key") || last.contains("password") || last.contains("token") {
        return "(redacted)".into();
    }
    if last == "cert" || last == "crt" || last.ends_with("cert") {
        return "(certificate)".into();
    }
    let text = match v {
        Value::Str(s) => s.clone(),
        other => other.to_json().to_string(),
    };
    if text.chars().count() > 60 {
        format!("{}…", text.chars().take(59).collect::<String>())
    } else {
        text
    }
}

/// The values keys that change from `old` (the release's, `None`: none) to `new`.
pub fn value_changes(old: Option<&Value>, new: &Value) -> Vec<ValueChange> {
    let empty = Value::map();
    let old = old.unwrap_or(&empty);
    value::diff(old, new)
        .into_iter()
        .map(|(path, change)| {
            let segs: Vec<&str> = path.split('.').collect();
            let before = old.get(&segs).map(|v| shown(&path, v));
            let after = new.get(&segs).map(|v| shown(&path, v));
            ValueChange {
                path,
                change,
                before,
                after,
            }
        })
        .collect()
}

/// The peers named in `clustermesh.config.clusters` (a list of `{name: …}`, or from 1.19 a
/// map by name).
pub fn peer_names(values: Option<&Value>) -> BTreeSet<String> {
    decide::peer_entries(values).into_keys().collect()
}

fn peer_changes(old: Option<&Value>, new: &Value) -> (Vec<String>, Vec<String>) {
    let (a, b) = (peer_names(old), peer_names(Some(new)));
    (
        b.difference(&a).cloned().collect(),
        a.difference(&b).cloned().collect(),
    )
}

/// The plans in the order `apply` takes them (stage, then mesh.yaml's order, which `plans`
/// is in).
pub fn ordered(mut plans: Vec<ClusterPlan>) -> Vec<ClusterPlan> {
    plans.sort_by_key(|p| p.stage);
    plans
}

/// Where what `apply` did (`steps`, every cluster's) differs from `plan`: an empty list when
/// the plan was right. Steps that failed are not compared (the failure is reported as such).
pub fn deviations(plans: &[ClusterPlan], steps: &[Step]) -> Vec<String> {
    let mut out = Vec::new();
    for p in plans
        .iter()
        .filter(|p| p.error.is_none() && p.refused.is_none())
    {
        let mine: Vec<&Step> = steps.iter().filter(|s| s.cluster == p.cluster).collect();
        if mine.iter().any(|s| s.outcome == StepOutcome::Failed) {
            continue;
        }
        if p.untouched.is_some() {
            if let Some(s) = mine.iter().find(|s| s.step != "connect") {
                out.push(format!(
                    "{}: planned to be left alone, but apply ran `{}`",
                    p.cluster, s.step
                ));
            }
            continue;
        }
        // Not run (a stage before it failed): reported as such, nothing to compare.
        if mine.iter().all(|s| s.step == "connect") {
            continue;
        }
        for h in &p.helm {
            let step = mine
                .iter()
                .find(|s| s.phase == h.phase && (s.step == "helm" || s.step == "disconnect"));
            let did = match step {
                None => "nothing",
                Some(s) if s.outcome == StepOutcome::Skipped => "skip",
                Some(s) if s.detail.starts_with("installed") => "install",
                Some(_) => "upgrade",
            };
            if did != h.action {
                out.push(format!(
                    "{}: {} planned `{}` of the release, apply did `{did}`",
                    p.cluster,
                    phase_word(h.phase),
                    h.action
                ));
            }
        }
        for phase in p.helm.iter().map(|h| h.phase) {
            let updated = p
                .secrets
                .iter()
                .any(|s| s.phase == phase && s.action == SecretAction::Update);
            if let Some(s) = mine
                .iter()
                .find(|s| s.phase == phase && s.step == "secrets")
            {
                let said = s.detail.contains("(changed)");
                if said != updated {
                    out.push(format!(
                        "{}: {} planned {} Secret, apply found {}",
                        p.cluster,
                        phase_word(phase),
                        if updated { "a changed" } else { "no changed" },
                        if said { "one changed" } else { "none changed" },
                    ));
                }
            }
            for (workload, step) in [
                ("cilium", "restart"),
                ("clustermesh-apiserver", "restart-apiserver"),
            ] {
                let planned = p
                    .restarts
                    .iter()
                    .any(|r| r.phase == phase && r.workload == workload);
                let Some(s) = mine.iter().find(|s| s.phase == phase && s.step == step) else {
                    if planned {
                        out.push(format!(
                            "{}: {} planned a restart of {workload}, apply reported none",
                            p.cluster,
                            phase_word(phase)
                        ));
                    }
                    continue;
                };
                let restarted =
                    s.outcome == StepOutcome::Ok || s.detail.contains("upgrade already restarted");
                if restarted != planned {
                    out.push(format!(
                        "{}: {} planned {} of {workload}, apply: {}",
                        p.cluster,
                        phase_word(phase),
                        if planned { "a restart" } else { "no restart" },
                        s.detail
                    ));
                }
            }
        }
    }
    out
}

fn phase_word(p: Option<Phase>) -> &'static str {
    p.map_or("disconnect", Phase::as_str)
}

#[cfg(test)]
mod tests;
