//! `cmesh upgrade`: the way from the Cilium release a mesh runs to a newer one, one minor
//! release at a time ("the only tested upgrade path is consecutive minor releases", Cilium's
//! upgrade guide), and what each step changes: the values cmesh's version-aware renderer
//! writes for every cluster, which of Cilium's changed defaults and behaviours the new minor
//! brings with what cmesh does about each, and the mesh.yaml settings cmesh pins so that
//! behaviour does not change silently (`policyDefaultLocalCluster` across 1.19).
//!
//! Pure: the edge supplies mesh.yaml, the record and the rendered values, and carries the
//! steps out (mesh.yaml edited, apply one cluster at a time behind status gates).

use serde::Serialize;

use crate::membership::{Record, State};
use crate::plan::{ValueChange, value_changes};
use crate::spec::MeshSpec;
use crate::value::Value;
use crate::version::{CiliumVersion, MAX_SUPPORTED};

/// The patch release of each minor an upgrade passes through when `--via` names none: the
/// newest patch whose chart cmesh's tests render and check (tests/helm.rs), Cilium's advice
/// being to take the latest patch of a minor before the next minor.
pub const WAYPOINTS: [&str; 5] = ["1.15.19", "1.16.19", "1.17.17", "1.18.11", "1.19.7"];

/// Why there is no way from one version to another.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The target is older.
    #[error(
        "{to} is older than {from}: cmesh upgrade only goes forward (to roll back one minor release, set cilium.version and apply)"
    )]
    Backwards {
        /// Where the mesh is.
        from: String,
        /// The target.
        to: String,
    },
    /// The target is outside what cmesh renders.
    #[error("Cilium {to} is newer than cmesh supports (up to {}.{})", MAX_SUPPORTED.0, MAX_SUPPORTED.1)]
    Unsupported {
        /// The target.
        to: String,
    },
    /// A major version change.
    #[error("{from} → {to} changes the major version")]
    Major {
        /// Where the mesh is.
        from: String,
        /// The target.
        to: String,
    },
    /// A minor on the way has no known patch release.
    #[error("no patch release of {minor} is known to cmesh: name one with --via {minor}.N")]
    NoWaypoint {
        /// `1.N`.
        minor: String,
    },
    /// A `--via` version that is not a minor release strictly between the two.
    #[error("--via {via}: not a release of a minor between {from} and {to}")]
    StrayVia {
        /// The `--via` version.
        via: String,
        /// Where the mesh is.
        from: String,
        /// The target.
        to: String,
    },
}

/// The versions an upgrade from `from` to `to` sets, in order, `to` last: one per minor
/// release after `from`'s (`via`'s patch for a minor it names, else [`WAYPOINTS`]'), or just
/// `to` for a patch upgrade. Empty when `to` is `from`.
///
/// # Errors
/// [`PathError`]: backwards, unsupported, a major change, a minor without a known patch, or a
/// `--via` outside the way.
pub fn path(
    from: &CiliumVersion,
    to: &CiliumVersion,
    via: &[CiliumVersion],
) -> Result<Vec<CiliumVersion>, PathError> {
    if from.major != to.major {
        return Err(PathError::Major {
            from: from.to_string(),
            to: to.to_string(),
        });
    }
    if to < from {
        return Err(PathError::Backwards {
            from: from.to_string(),
            to: to.to_string(),
        });
    }
    if to.minor_release() > MAX_SUPPORTED {
        return Err(PathError::Unsupported { to: to.to_string() });
    }
    for v in via {
        if v.major != from.major || v.minor <= from.minor || v.minor >= to.minor {
            return Err(PathError::StrayVia {
                via: v.to_string(),
                from: from.to_string(),
                to: to.to_string(),
            });
        }
    }
    if to == from {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for minor in from.minor + 1..to.minor {
        let named = via.iter().find(|v| v.minor == minor).cloned();
        let known = || {
            WAYPOINTS
                .iter()
                .filter_map(|w| w.parse::<CiliumVersion>().ok())
                .find(|w| w.major == from.major && w.minor == minor)
        };
        match named.or_else(known) {
            Some(v) => out.push(v),
            None => {
                return Err(PathError::NoWaypoint {
                    minor: format!("{}.{minor}", from.major),
                });
            }
        }
    }
    out.push(to.clone());
    Ok(out)
}

/// Where an upgrade starts: the oldest version the record says a meshed cluster of mesh.yaml
/// last had applied, when that is older than mesh.yaml's (an upgrade stopped halfway through a
/// step: mesh.yaml already names the step's version), else mesh.yaml's.
pub fn start(spec: &MeshSpec, record: &Record) -> CiliumVersion {
    let mut start = spec.cilium.version.clone();
    for m in &record.members {
        if m.state != State::Meshed || !spec.clusters.iter().any(|c| c.name == m.name) {
            continue;
        }
        if let Some(v) = m
            .version
            .as_deref()
            .and_then(|v| v.parse::<CiliumVersion>().ok())
            && v < start
        {
            start = v;
        }
    }
    start
}

/// A mesh.yaml setting an upgrade step writes besides `cilium.version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Pin {
    /// The mesh.yaml field.
    pub field: &'static str,
    /// Its value.
    pub value: bool,
    /// Why.
    pub why: String,
}

/// The pins a step from `spec` (mesh.yaml as it stands before the step) to `to` needs: across
/// 1.19, `clustermesh.policyDefaultLocalCluster: false` unless mesh.yaml sets it, so that
/// policies keep selecting every cluster's endpoints (1.19 flips the default to true,
/// cilium/cilium#40609; users call it breaking, kubermatic/kubermatic#15808).
pub fn pins(spec: &MeshSpec, to: &CiliumVersion) -> Vec<Pin> {
    let from = &spec.cilium.version;
    let mut out = Vec::new();
    if !from.policy_default_local_cluster_default()
        && to.policy_default_local_cluster_default()
        && spec.clustermesh.policy_default_local_cluster.is_none()
    {
        out.push(Pin {
            field: "clustermesh.policyDefaultLocalCluster",
            value: false,
            why: format!(
                "{to} makes policy selectors that name no cluster select only the local cluster's endpoints; false keeps what they select on {from} (every cluster's). Set it to true once `cmesh lint` (L501) finds no such selector"
            ),
        });
    }
    out
}

/// What cmesh does about one of Cilium's changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// The renderer writes what the new version needs; nothing for the user to do.
    Handled,
    /// cmesh writes a setting into mesh.yaml to keep the old behaviour.
    Pinned,
    /// The user should look: cmesh cannot decide it for them.
    Review,
    /// For information: a new option, a fix.
    Info,
}

impl Action {
    /// The word shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Handled => "handled",
            Action::Pinned => "pinned",
            Action::Review => "review",
            Action::Info => "info",
        }
    }
}

/// One of Cilium's changes between minors that concerns a mesh, and what cmesh does about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    /// The minor release that brings it (`1.19`).
    pub minor: String,
    /// What changes.
    pub what: String,
    /// What cmesh does, or what to do.
    pub cmesh: String,
    /// The kind of action.
    pub action: Action,
}

fn change(minor: u64, what: &str, cmesh: String, action: Action) -> Change {
    Change {
        minor: format!("1.{minor}"),
        what: what.to_owned(),
        cmesh,
        action,
    }
}

/// Cilium's changes of every minor after `from`'s up to `to`'s, as they concern `spec`
/// (mesh.yaml at the step's version, pins written). From the charts and upgrade notes
/// (../shared/reference/clustermesh-day2-facts.md).
pub fn changes(from: &CiliumVersion, to: &CiliumVersion, spec: &MeshSpec) -> Vec<Change> {
    use crate::spec::CertMethod;
    let mesh = &spec.clustermesh;
    let chart_signs = matches!(mesh.certificates, CertMethod::Helm | CertMethod::CronJob);
    let mut out = Vec::new();
    for minor in from.minor + 1..=to.minor {
        match minor {
            15 => out.push(change(
                15,
                "up to 511 clusters (clustermesh.maxConnectedClusters), on new clusters only",
                "clustermesh.maxConnectedClusters in mesh.yaml; an existing mesh keeps 255 (the cluster IDs' bits change)".into(),
                Action::Info,
            )),
            16 => {
                out.push(change(
                    16,
                    "KVStoreMesh on by default: agents read peers from their own cluster's clustermesh-apiserver cache",
                    match mesh.kvstoremesh {
                        None => "the values turn KVStoreMesh on (mesh.yaml leaves it to the version's default); the clustermesh-apiserver gains the kvstoremesh container".into(),
                        Some(on) => format!("kept {} as mesh.yaml says (clustermesh.kvstoremesh)", if on { "on" } else { "off" }),
                    },
                    if mesh.kvstoremesh.is_none() { Action::Handled } else { Action::Info },
                ));
                out.push(change(
                    16,
                    "the clustermesh certificates can come from Secrets (tls.enableSecrets, existingSecret) instead of values",
                    "private keys move from the values to the Secrets cmesh writes (values keep none)".into(),
                    Action::Handled,
                ));
                out.push(change(
                    16,
                    "Hubble's TLS: hubble.tls.server.existingSecret and hubble.relay.tls.{client,server}.existingSecret appear (1.16.19); the certificates the chart issues for Hubble last 365 days (was 1095)",
                    if chart_signs {
                        "the chart keeps issuing Hubble's certificates, now for 365 days: check alerts on their expiry".into()
                    } else {
                        "from 1.16.19, Hubble's server and relay read the certificates cmesh issues from the Secrets it writes (existingSecret) instead of values".into()
                    },
                    if chart_signs { Action::Review } else { Action::Handled },
                ));
                out.push(change(
                    16,
                    "EndpointSlice synchronisation for global Services",
                    "clustermesh.endpointSliceSync in mesh.yaml; lint L101 offers it for nginx Ingresses".into(),
                    Action::Info,
                ));
            }
            17 => out.push(change(
                17,
                "clustermesh-apiserver Service labels and loadBalancerSourceRanges",
                "set them in cilium.values if needed".into(),
                Action::Info,
            )),
            18 => {
                out.push(change(
                    18,
                    "clustermesh.apiserver.kvstoremesh.enabled deprecated in favour of kvstoreMode (internal/external)",
                    "cmesh still writes kvstoremesh.enabled, which 1.18 to 1.20 read".into(),
                    Action::Info,
                ));
                out.push(change(
                    18,
                    "clustermesh.policyDefaultLocalCluster appears (false: selectors with no cluster select every cluster)",
                    "clustermesh.policyDefaultLocalCluster in mesh.yaml".into(),
                    Action::Info,
                ));
            }
            19 => {
                out.push(change(
                    19,
                    "policy selectors that name no cluster select only the local cluster's endpoints (policyDefaultLocalCluster true by default)",
                    match mesh.policy_default_local_cluster {
                        Some(v) if from.policy_default_local_cluster_default() => format!("mesh.yaml sets it to {v}"),
                        Some(false) => "pinned to false in mesh.yaml: policies keep selecting every cluster; `cmesh lint` (L501) lists the selectors to name their clusters in before setting it to true".into(),
                        Some(true) => "mesh.yaml sets it to true: review `cmesh lint` (L501) findings made before the upgrade".into(),
                        None => "left to the default (true): run `cmesh lint` (L501) first".into(),
                    },
                    match mesh.policy_default_local_cluster {
                        Some(false) => Action::Pinned,
                        Some(true) => Action::Info,
                        None => Action::Review,
                    },
                ));
                out.push(change(
                    19,
                    "clustermesh.apiserver.tls.authMode defaults to migration (was legacy); with useAPIServer and config.enabled false the clustermesh-remote-users ConfigMap goes missing (cilium/cilium#44181)",
                    format!(
                        "cmesh writes authMode `{}` and config.enabled true explicitly: neither changes",
                        mesh.auth_mode.as_str()
                    ),
                    Action::Handled,
                ));
                out.push(change(
                    19,
                    "metrics renamed: *_global_services → *_remote_cluster_services; labels source_cluster and source_node_name dropped; *_remote_cluster_endpoints added",
                    "update dashboards and alerts that name them (cmesh itself reads no metric)".into(),
                    Action::Review,
                ));
                out.push(change(
                    19,
                    "certificates in values deprecated; the certgen Job is no longer a Helm hook",
                    if chart_signs {
                        "certgen runs as an ordinary Job on install and upgrade".into()
                    } else {
                        "cmesh delivers certificates in Secrets".into()
                    },
                    Action::Info,
                ));
                out.push(change(
                    19,
                    "clustermesh.cacheTTL: how long a lost peer's state is kept; config.clusters may be a map",
                    "clustermesh.cacheTTL in mesh.yaml; cmesh keeps writing the list form".into(),
                    Action::Info,
                ));
                out.push(change(
                    19,
                    "the NodePort shared by several clustermesh-apiservers is fixed (cilium/cilium#41337)",
                    "nothing to do".into(),
                    Action::Info,
                ));
            }
            20 => {
                out.push(change(
                    20,
                    "certificates in values are refused; tls.enableSecrets and enableMCSAPISupport are removed; server SANs move under tls.auto.server",
                    "the renderer writes 1.20's keys only, and the server certificate is issued with 1.20's common name and SANs".into(),
                    Action::Handled,
                ));
                out.push(change(
                    20,
                    "certificates the chart issues last 365 days (was 1095), and tls.auto.schedule gets a default",
                    if chart_signs {
                        "the chart's certificates renew on the schedule: check that alerts on their expiry expect 365 days".into()
                    } else {
                        "cmesh issues its own certificates (pki.certValidityDays)".into()
                    },
                    if chart_signs { Action::Review } else { Action::Info },
                ));
                out.push(change(
                    20,
                    "global Services are shared only from global namespaces (clustermesh.defaultGlobalNamespace, default true; Namespace annotation clustermesh.cilium.io/global)",
                    "run `cmesh lint` (L401) for global Services in namespaces that are not global".into(),
                    Action::Review,
                ));
                out.push(change(
                    20,
                    "certificate subject and private key options for the chart's certificates (tls.auto.subject, privateKey; hubble.tls.auto too)",
                    "certManager meshes may set them (clustermesh.certificates); cmesh's own certificates are unaffected".into(),
                    Action::Info,
                ));
                out.push(change(
                    20,
                    "peers given by IP are dialled directly (hostAliases no longer needed)",
                    "nothing to do".into(),
                    Action::Info,
                ));
            }
            _ => {}
        }
    }
    out
}

/// The values one cluster's release changes by in a step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterValues {
    /// The cluster.
    pub cluster: String,
    /// Values keys added, removed or changed (keys redacted, certificates by kind).
    pub values: Vec<ValueChange>,
}

/// What the renderer changes per cluster: `before` and `after` are each cluster's rendered
/// values (mesh phase) at the step's two versions, in mesh.yaml's order.
pub fn values_by_cluster(
    before: &[(String, Value)],
    after: &[(String, Value)],
) -> Vec<ClusterValues> {
    after
        .iter()
        .map(|(name, new)| ClusterValues {
            cluster: name.clone(),
            values: value_changes(before.iter().find(|(n, _)| n == name).map(|(_, v)| v), new),
        })
        .collect()
}

/// A certificate a step issues anew (the version asks for other names or a new leaf).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Certificate {
    /// The cluster.
    pub cluster: String,
    /// The Secret it goes into.
    pub secret: &'static str,
    /// `issued` or `renewed`.
    pub action: crate::pki::store::Action,
    /// Why.
    pub reason: String,
}

/// The certificates a reconcile at the step's version issues or renews, from its events
/// (those it keeps are left out).
pub fn certificates(events: &[crate::pki::store::PkiEvent]) -> Vec<Certificate> {
    use crate::pki::store::Action as A;
    events
        .iter()
        .filter(|e| matches!(e.action, A::Issued | A::Renewed))
        .filter_map(|e| {
            Some(Certificate {
                cluster: e.cluster.clone()?,
                secret: e.kind?.secret_name(),
                action: e.action,
                reason: e.reason.clone(),
            })
        })
        .collect()
}

/// One step of an upgrade.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    /// The version the clusters run before it.
    pub from: CiliumVersion,
    /// The version it sets.
    pub to: CiliumVersion,
    /// True when it finishes a step an earlier run stopped in (mesh.yaml already says `to`).
    pub resume: bool,
    /// mesh.yaml settings it writes besides the version.
    pub pins: Vec<Pin>,
    /// Cilium's changes it brings.
    pub changes: Vec<Change>,
    /// What the renderer changes, per cluster.
    pub clusters: Vec<ClusterValues>,
    /// Certificates cmesh issues anew for the step's version (into the cluster's Secrets).
    pub certificates: Vec<Certificate>,
    /// Why mesh.yaml cannot go to this version as it is (`check`'s errors at `to`): the
    /// upgrade is refused before anything changes.
    pub problems: Vec<String>,
}

/// A whole upgrade.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// Where the mesh is.
    pub from: CiliumVersion,
    /// The target.
    pub to: CiliumVersion,
    /// The steps, in order.
    pub steps: Vec<Step>,
}

impl Plan {
    /// True when no step has a problem.
    pub fn ok(&self) -> bool {
        self.steps.iter().all(|s| s.problems.is_empty())
    }
}

#[cfg(test)]
mod tests;
