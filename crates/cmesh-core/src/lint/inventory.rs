//! The objects lint looks at, reduced to the fields the rules read, each with where it came
//! from. Other kinds are ignored; `List` objects are unpacked.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use super::{Location, Origin, Scope};
use crate::yaml::{Spans, pointer_segment};

/// What every object carries.
#[derive(Debug, Clone)]
pub struct Meta {
    /// Namespace ("" for cluster-wide kinds; "default" when a manifest leaves it out).
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Annotations, raw (a manifest may hold non-string values, which kubectl rejects).
    pub annotations: BTreeMap<String, Value>,
    /// Which clusters it is in.
    pub scope: Scope,
    /// Where it came from.
    pub origin: Origin,
    /// Source spans of a manifest document (offline only).
    pub spans: Option<Arc<Spans>>,
    /// The JSON pointer of this object inside its document (`/items/3` for Lists).
    pub pointer: String,
}

impl Meta {
    /// An annotation's value when it is a string.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.get(key).and_then(Value::as_str)
    }

    /// The location of the field at `rel` (a JSON pointer relative to the object), falling
    /// back to the nearest enclosing field that has a span.
    pub fn at(&self, rel: &str) -> Location {
        let mut field = None;
        if let Some(spans) = &self.spans {
            let mut p = format!("{}{rel}", self.pointer);
            loop {
                if let Some(s) = spans.get(&p) {
                    field = Some((s.line, s.column));
                    break;
                }
                match p.rfind('/') {
                    Some(i) => p.truncate(i),
                    None => break,
                }
            }
        }
        Location {
            origin: self.origin.clone(),
            field_line: field.map(|f| f.0),
            field_column: field.map(|f| f.1),
        }
    }

    /// The location of annotation `key`.
    pub fn annotation_at(&self, key: &str) -> Location {
        self.at(&format!("/metadata/annotations/{}", pointer_segment(key)))
    }

    /// The cluster this object is in, if it is in one only.
    pub fn cluster(&self) -> Option<&str> {
        match &self.scope {
            Scope::Cluster(c) => Some(c),
            Scope::All => None,
        }
    }
}

/// A Service port, as clusters must agree on it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Port {
    /// Port name ("" when unnamed).
    pub name: String,
    /// Port number.
    pub port: i64,
    /// Protocol (TCP when left out).
    pub protocol: String,
}

impl std::fmt::Display for Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.name.is_empty() {
            write!(f, "{}/{}", self.port, self.protocol)
        } else {
            write!(f, "{}:{}/{}", self.name, self.port, self.protocol)
        }
    }
}

/// A Service.
#[derive(Debug, Clone)]
pub struct Service {
    /// Metadata.
    pub meta: Meta,
    /// `spec.type` (ClusterIP when left out).
    pub service_type: String,
    /// `spec.clusterIP: None`.
    pub headless: bool,
    /// Ports, sorted.
    pub ports: Vec<Port>,
}

impl Service {
    /// Global by the current or the old annotation (case-insensitive `true`, as Cilium reads it).
    pub fn is_global(&self) -> bool {
        [super::annotations::GLOBAL, super::annotations::GLOBAL_OLD]
            .iter()
            .any(|k| {
                self.meta
                    .annotation(k)
                    .and_then(super::annotations::cilium_bool)
                    == Some(true)
            })
    }

    /// `Service name` as shown in findings, with headless-ness.
    pub fn shape(&self) -> String {
        if self.headless {
            format!("{} (headless)", self.service_type)
        } else {
            self.service_type.clone()
        }
    }
}

/// An Ingress backend.
#[derive(Debug, Clone)]
pub struct Backend {
    /// Service name (same namespace as the Ingress).
    pub service: String,
    /// Where it is written, relative to the object.
    pub pointer: String,
}

/// An Ingress.
#[derive(Debug, Clone)]
pub struct Ingress {
    /// Metadata.
    pub meta: Meta,
    /// `spec.ingressClassName`, else the `kubernetes.io/ingress.class` annotation.
    pub class: Option<String>,
    /// Backends (rules and the default backend).
    pub backends: Vec<Backend>,
}

/// A Namespace.
#[derive(Debug, Clone)]
pub struct Namespace {
    /// Metadata (namespace "").
    pub meta: Meta,
}

/// An IngressClass.
#[derive(Debug, Clone)]
pub struct IngressClass {
    /// Metadata.
    pub meta: Meta,
    /// `spec.controller`.
    pub controller: String,
    /// Marked as the default class.
    pub default: bool,
}

/// A peer selector of a network policy that names no cluster (no `io.cilium.k8s.policy.cluster`
/// key): what it selects depends on `clustermesh.policyDefaultLocalCluster`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnscopedSelector {
    /// Where it is written, relative to the object (`/spec/ingress/0/fromEndpoints/1`).
    pub pointer: String,
    /// The field (`fromEndpoints`, `toNodes`, `from`, `to`).
    pub field: &'static str,
}

/// A CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy or Kubernetes NetworkPolicy, reduced to
/// its peer selectors that name no cluster.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Metadata (namespace "" for CiliumClusterwideNetworkPolicy).
    pub meta: Meta,
    /// The kind.
    pub kind: String,
    /// Its peer selectors that name no cluster, in document order.
    pub unscoped: Vec<UnscopedSelector>,
}

/// The label Cilium gives every endpoint with its cluster's name.
pub const CLUSTER_LABEL: &str = "io.cilium.k8s.policy.cluster";

/// The keys of a label selector (`matchLabels` keys and `matchExpressions` keys).
fn selector_keys(sel: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = sel
        .get("matchLabels")
        .and_then(Value::as_object)
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default();
    keys.extend(
        sel.get("matchExpressions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|e| e.get("key").and_then(Value::as_str)),
    );
    keys
}

/// The peer selectors of a Cilium policy rule (`spec` or an item of `specs`) that name no
/// cluster. As Cilium's own translation (pkg/k8s/apis/cilium.io/utils): a selector on reserved
/// labels is left alone; a cluster key with the `k8s:` or `any:` source, or none, counts.
fn cilium_unscoped(rule: &Value, at: &str, out: &mut Vec<UnscopedSelector>) {
    const PEERS: [(&str, &str); 8] = [
        ("ingress", "fromEndpoints"),
        ("ingress", "fromNodes"),
        ("ingressDeny", "fromEndpoints"),
        ("ingressDeny", "fromNodes"),
        ("egress", "toEndpoints"),
        ("egress", "toNodes"),
        ("egressDeny", "toEndpoints"),
        ("egressDeny", "toNodes"),
    ];
    for (section, field) in PEERS {
        let rules = rule.get(section).and_then(Value::as_array);
        for (i, r) in rules.into_iter().flatten().enumerate() {
            let sels = r.get(field).and_then(Value::as_array);
            for (j, sel) in sels.into_iter().flatten().enumerate() {
                let keys = selector_keys(sel);
                let reserved =
                    field.ends_with("Endpoints") && keys.iter().any(|k| k.starts_with("reserved:"));
                let names_cluster = keys.iter().any(|k| {
                    let bare = k
                        .strip_prefix("k8s:")
                        .or_else(|| k.strip_prefix("any:"))
                        .unwrap_or(k);
                    bare == CLUSTER_LABEL
                });
                if !reserved && !names_cluster {
                    out.push(UnscopedSelector {
                        pointer: format!("{at}/{section}/{i}/{field}/{j}"),
                        field,
                    });
                }
            }
        }
    }
}

/// The peers of a Kubernetes NetworkPolicy that name no cluster: every peer but `ipBlock`
/// whose `podSelector` has no `io.cilium.k8s.policy.cluster` key (Cilium's
/// pkg/k8s/network_policy.go adds the local cluster to those).
fn network_policy_unscoped(spec: &Value, out: &mut Vec<UnscopedSelector>) {
    for (section, field) in [("ingress", "from"), ("egress", "to")] {
        let rules = spec.get(section).and_then(Value::as_array);
        for (i, r) in rules.into_iter().flatten().enumerate() {
            let peers = r.get(field).and_then(Value::as_array);
            for (j, peer) in peers.into_iter().flatten().enumerate() {
                if peer.get("ipBlock").is_some() {
                    continue;
                }
                let names_cluster = peer
                    .get("podSelector")
                    .is_some_and(|s| selector_keys(s).contains(&CLUSTER_LABEL));
                if !names_cluster {
                    out.push(UnscopedSelector {
                        pointer: format!("/spec/{section}/{i}/{field}/{j}"),
                        field,
                    });
                }
            }
        }
    }
}

/// Everything lint examines.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    /// Services.
    pub services: Vec<Service>,
    /// Ingresses.
    pub ingresses: Vec<Ingress>,
    /// Namespaces.
    pub namespaces: Vec<Namespace>,
    /// IngressClasses.
    pub classes: Vec<IngressClass>,
    /// Network policies (Cilium's and Kubernetes').
    pub policies: Vec<Policy>,
}

fn str_at<'a>(v: &'a Value, p: &str) -> Option<&'a str> {
    v.pointer(p).and_then(Value::as_str)
}

impl Inventory {
    /// Adds `obj` (and the items of a `List`). `spans`, for manifest documents, maps JSON
    /// pointers of the whole document to source spans.
    pub fn add(&mut self, obj: &Value, scope: &Scope, origin: &Origin, spans: Option<Arc<Spans>>) {
        self.add_at(obj, scope, origin, &spans, String::new());
    }

    fn add_at(
        &mut self,
        obj: &Value,
        scope: &Scope,
        origin: &Origin,
        spans: &Option<Arc<Spans>>,
        pointer: String,
    ) {
        let kind = str_at(obj, "/kind").unwrap_or_default();
        if kind.ends_with("List") {
            if let Some(items) = obj.get("items").and_then(Value::as_array) {
                for (i, item) in items.iter().enumerate() {
                    self.add_at(item, scope, origin, spans, format!("{pointer}/items/{i}"));
                }
            }
            return;
        }
        let namespaced = matches!(
            kind,
            "Service" | "Ingress" | "CiliumNetworkPolicy" | "NetworkPolicy"
        );
        let meta = Meta {
            namespace: if namespaced {
                str_at(obj, "/metadata/namespace")
                    .unwrap_or("default")
                    .to_owned()
            } else {
                String::new()
            },
            name: str_at(obj, "/metadata/name").unwrap_or_default().to_owned(),
            annotations: obj
                .pointer("/metadata/annotations")
                .and_then(Value::as_object)
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
            scope: scope.clone(),
            origin: origin.clone(),
            spans: spans.clone(),
            pointer,
        };
        let api = str_at(obj, "/apiVersion").unwrap_or_default();
        match (api, kind) {
            ("v1", "Service") => {
                let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
                let mut ports: Vec<Port> = spec
                    .get("ports")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(|p| Port {
                        name: str_at(p, "/name").unwrap_or_default().to_owned(),
                        port: p.get("port").and_then(Value::as_i64).unwrap_or(0),
                        protocol: str_at(p, "/protocol").unwrap_or("TCP").to_owned(),
                    })
                    .collect();
                ports.sort();
                self.services.push(Service {
                    meta,
                    service_type: str_at(&spec, "/type").unwrap_or("ClusterIP").to_owned(),
                    headless: str_at(&spec, "/clusterIP") == Some("None"),
                    ports,
                });
            }
            ("networking.k8s.io/v1", "Ingress") => {
                let class = str_at(obj, "/spec/ingressClassName")
                    .map(str::to_owned)
                    .or_else(|| {
                        meta.annotation(super::annotations::INGRESS_CLASS)
                            .map(str::to_owned)
                    });
                let mut backends = Vec::new();
                if let Some(s) = str_at(obj, "/spec/defaultBackend/service/name") {
                    backends.push(Backend {
                        service: s.to_owned(),
                        pointer: "/spec/defaultBackend/service/name".into(),
                    });
                }
                let rules = obj.pointer("/spec/rules").and_then(Value::as_array);
                for (r, rule) in rules.into_iter().flatten().enumerate() {
                    let paths = rule.pointer("/http/paths").and_then(Value::as_array);
                    for (p, path) in paths.into_iter().flatten().enumerate() {
                        if let Some(s) = str_at(path, "/backend/service/name") {
                            backends.push(Backend {
                                service: s.to_owned(),
                                pointer: format!(
                                    "/spec/rules/{r}/http/paths/{p}/backend/service/name"
                                ),
                            });
                        }
                    }
                }
                self.ingresses.push(Ingress {
                    meta,
                    class,
                    backends,
                });
            }
            ("v1", "Namespace") => self.namespaces.push(Namespace { meta }),
            ("cilium.io/v2", "CiliumNetworkPolicy" | "CiliumClusterwideNetworkPolicy") => {
                let mut unscoped = Vec::new();
                if let Some(rule) = obj.get("spec").filter(|v| v.is_object()) {
                    cilium_unscoped(rule, "/spec", &mut unscoped);
                }
                let specs = obj.get("specs").and_then(Value::as_array);
                for (i, rule) in specs.into_iter().flatten().enumerate() {
                    cilium_unscoped(rule, &format!("/specs/{i}"), &mut unscoped);
                }
                self.policies.push(Policy {
                    meta,
                    kind: kind.to_owned(),
                    unscoped,
                });
            }
            ("networking.k8s.io/v1", "NetworkPolicy") => {
                let mut unscoped = Vec::new();
                if let Some(spec) = obj.get("spec") {
                    network_policy_unscoped(spec, &mut unscoped);
                }
                self.policies.push(Policy {
                    meta,
                    kind: kind.to_owned(),
                    unscoped,
                });
            }
            ("networking.k8s.io/v1", "IngressClass") => {
                let default = meta
                    .annotation(super::annotations::DEFAULT_CLASS)
                    .is_some_and(|v| v == "true");
                self.classes.push(IngressClass {
                    controller: str_at(obj, "/spec/controller")
                        .unwrap_or_default()
                        .to_owned(),
                    default,
                    meta,
                });
            }
            _ => {}
        }
    }
}

/// Why a manifest file could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}:{line}:{column}: {message}")]
pub struct ManifestError {
    /// The file.
    pub path: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl Inventory {
    /// Adds every object of a manifest file (a YAML stream or a JSON document) and returns
    /// how many documents it held.
    ///
    /// # Errors
    /// [`ManifestError`] when the text is not YAML; nothing is added then.
    pub fn add_manifest(
        &mut self,
        path: &str,
        text: &str,
        scope: &Scope,
    ) -> Result<usize, ManifestError> {
        let docs =
            crate::yaml::parse_stream(text, crate::yaml::Limits::default()).map_err(|e| {
                let span = e.span().unwrap_or_default();
                ManifestError {
                    path: path.to_owned(),
                    line: span.line.max(1),
                    column: span.column.max(1),
                    message: e.to_string(),
                }
            })?;
        let mut n = 0;
        for d in &docs {
            let Some(root) = &d.root else { continue };
            let mut spans = Spans::new();
            let v = crate::yaml::to_json(root, &mut spans);
            if !v.is_object() {
                continue;
            }
            n += 1;
            let origin = Origin::File {
                path: path.to_owned(),
                line: root.span.line,
            };
            self.add(&v, scope, &origin, Some(Arc::new(spans)));
        }
        Ok(n)
    }
}

/// The scope of a manifest at `rel_path` (relative to the linted directory): the cluster whose
/// name is one of its directories, else every cluster.
pub fn scope_for_path(rel_path: &str, clusters: &[String]) -> Scope {
    let mut parts: Vec<&str> = rel_path.split(['/', '\\']).collect();
    parts.pop();
    parts
        .iter()
        .find(|p| clusters.iter().any(|c| c == *p))
        .map_or(Scope::All, |c| Scope::Cluster((*c).to_owned()))
}

impl Inventory {
    /// The inventory of manifest files given as (path relative to the linted directory, text),
    /// each scoped by [`scope_for_path`]; files that are not YAML are returned as errors.
    pub fn from_files(
        files: &[(String, String)],
        clusters: &[String],
    ) -> (Inventory, Vec<ManifestError>) {
        let mut inv = Inventory::default();
        let mut errors = Vec::new();
        for (path, text) in files {
            if let Err(e) = inv.add_manifest(path, text, &scope_for_path(path, clusters)) {
                errors.push(e);
            }
        }
        (inv, errors)
    }
}
