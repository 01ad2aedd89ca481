//! `cmesh lint`: finds the Kubernetes objects that break, or silently do not do, what Cluster
//! Mesh users expect: nginx Ingresses that 503 on failover, global Services that exist in one
//! cluster only or differ between clusters, annotation values Cilium does not read, old
//! annotation names, and (Cilium 1.20) global Services in namespaces that are not global.
//!
//! The input is an [`Inventory`] built from objects, live (read from the clusters by the edge)
//! or offline (documents of manifest files, with their source spans); the output is a list of
//! [`Finding`]s, each with the fix. Pure: no I/O.

pub mod annotations;
mod inventory;
mod rules;

use serde::Serialize;

pub use inventory::{
    Backend, CLUSTER_LABEL, Ingress, IngressClass, Inventory, ManifestError, Meta, Namespace,
    Policy, Port, Service, UnscopedSelector, scope_for_path,
};

use crate::diag::Severity;
use crate::spec::MeshSpec;
use crate::version::CiliumVersion;

/// Where an object came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Origin {
    /// A live object, read from a cluster.
    Cluster {
        /// The cluster.
        cluster: String,
    },
    /// A document of a manifest file.
    File {
        /// The file, as given (relative to the linted directory).
        path: String,
        /// 1-based line of the document's start.
        line: usize,
    },
}

/// Which clusters an object is in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Every cluster (a manifest outside any cluster's directory, applied everywhere as the
    /// reference article does).
    All,
    /// One cluster.
    Cluster(String),
}

/// A place a finding points at: a file position, or an object in a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Location {
    /// The object's origin.
    #[serde(flatten)]
    pub origin: Origin,
    /// 1-based line of the field (files only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field_line: Option<usize>,
    /// 1-based column of the field (files only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field_column: Option<usize>,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.origin, self.field_line, self.field_column) {
            (Origin::File { path, .. }, Some(l), Some(c)) => write!(f, "{path}:{l}:{c}"),
            (Origin::File { path, line }, _, _) => write!(f, "{path}:{line}"),
            (Origin::Cluster { cluster }, _, _) => write!(f, "cluster {cluster}"),
        }
    }
}

/// One problem, with the fix.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// Stable rule code (docs/lint.md).
    pub code: &'static str,
    /// Error (breaks traffic, or Cilium ignores it) or warning.
    pub severity: Severity,
    /// `Kind namespace/name`.
    pub object: String,
    /// The clusters concerned (empty: every cluster, or clusters are unknown).
    pub clusters: Vec<String>,
    /// Where to look.
    pub at: Vec<Location>,
    /// What is wrong and what it does.
    pub message: String,
    /// How to fix it.
    pub fix: String,
}

/// Rules that could not run, and why (reported, so that a clean result is not overstated).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// Rule codes.
    pub codes: Vec<&'static str>,
    /// Why.
    pub reason: String,
}

/// What the rules need to know about the mesh.
#[derive(Debug, Clone)]
pub struct Context {
    /// Clusters by name, in mesh order (empty when unknown, offline without mesh.yaml).
    pub clusters: Vec<ClusterContext>,
    /// The Cilium version, when known.
    pub version: Option<CiliumVersion>,
    /// `clustermesh.endpointSliceSync` of mesh.yaml.
    pub endpoint_slice_sync: bool,
    /// `clustermesh.policyDefaultLocalCluster` of mesh.yaml (`None`: the chart's default).
    pub policy_default_local_cluster: Option<bool>,
}

impl Context {
    /// Whether policy selectors that name no cluster select the local cluster only, as the
    /// clusters run now (`None`: the version is unknown and mesh.yaml does not say).
    pub fn policies_default_to_local_cluster(&self) -> Option<bool> {
        self.policy_default_local_cluster.or_else(|| {
            self.version
                .as_ref()
                .map(CiliumVersion::policy_default_local_cluster_default)
        })
    }
}

/// One cluster's settings that rules depend on.
#[derive(Debug, Clone)]
pub struct ClusterContext {
    /// Name.
    pub name: String,
    /// `clustermesh.defaultGlobalNamespace` in effect (1.20+; the chart's default is true).
    pub default_global_namespace: bool,
}

impl Context {
    /// The context of `spec`: its clusters, version and settings.
    pub fn from_spec(spec: &MeshSpec) -> Context {
        let clusters = spec
            .clusters
            .iter()
            .map(|c| {
                let mut values = spec.cilium.values.clone();
                values.merge(&c.values);
                ClusterContext {
                    name: c.name.clone(),
                    default_global_namespace: values
                        .get(&["clustermesh", "defaultGlobalNamespace"])
                        .and_then(crate::value::Value::as_bool)
                        .unwrap_or(true),
                }
            })
            .collect();
        Context {
            clusters,
            version: Some(spec.cilium.version.clone()),
            endpoint_slice_sync: spec.clustermesh.endpoint_slice_sync,
            policy_default_local_cluster: spec.clustermesh.policy_default_local_cluster,
        }
    }
}

/// The result of a lint run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Findings, errors first, then by code and object.
    pub findings: Vec<Finding>,
    /// Rules that could not run.
    pub skipped: Vec<Skipped>,
    /// Objects examined, by kind.
    pub examined: Examined,
}

/// Counts of examined objects.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Examined {
    /// Services.
    pub services: usize,
    /// Ingresses.
    pub ingresses: usize,
    /// Namespaces.
    pub namespaces: usize,
    /// Network policies (CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy, NetworkPolicy).
    pub policies: usize,
}

impl Report {
    /// True when no finding is an error.
    pub fn ok(&self) -> bool {
        self.findings.iter().all(|f| f.severity != Severity::Error)
    }
}

/// Runs every rule over `inventory`.
pub fn lint(inventory: &Inventory, ctx: &Context) -> Report {
    let mut findings = Vec::new();
    let mut skipped = Vec::new();
    rules::annotations(inventory, &mut findings);
    rules::ingress_upstream(inventory, ctx, &mut findings);
    if ctx.clusters.len() >= 2 {
        rules::cross_cluster(inventory, ctx, &mut findings);
    } else {
        skipped.push(Skipped {
            codes: vec!["L201", "L202", "L203", "L204"],
            reason: if ctx.clusters.is_empty() {
                "the cross-cluster rules need the clusters' names: lint a directory holding mesh.yaml, or pass --mesh".into()
            } else {
                "the cross-cluster rules need two clusters or more".into()
            },
        });
    }
    match &ctx.version {
        Some(v) if v.at_least(20) => rules::global_namespaces(inventory, ctx, &mut findings),
        Some(_) => {}
        None => skipped.push(Skipped {
            codes: vec!["L401"],
            reason: "the Cilium 1.20 namespace rule needs the Cilium version: pass --cilium-version or lint with a mesh.yaml".into(),
        }),
    }
    match ctx.policies_default_to_local_cluster() {
        Some(false) => rules::policy_default_local_cluster(inventory, ctx, &mut findings),
        Some(true) => {}
        None if inventory.policies.is_empty() => {}
        None => skipped.push(Skipped {
            codes: vec!["L501"],
            reason: "the policy rule needs the Cilium version (or clustermesh.policyDefaultLocalCluster): pass --cilium-version or lint with a mesh.yaml".into(),
        }),
    }
    findings.sort_by(|a, b| {
        (a.severity, a.code, &a.object, &a.clusters).cmp(&(
            b.severity,
            b.code,
            &b.object,
            &b.clusters,
        ))
    });
    findings.dedup();
    Report {
        findings,
        skipped,
        examined: Examined {
            services: inventory.services.len(),
            ingresses: inventory.ingresses.len(),
            namespaces: inventory.namespaces.len(),
            policies: inventory.policies.len(),
        },
    }
}
