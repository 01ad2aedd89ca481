//! The double's object store: resources it knows (for discovery and URLs), objects as JSON,
//! label selectors, and the patch types kubectl, helm and kube-rs send.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

/// A resource the API server serves.
#[derive(Debug, Clone)]
pub struct Resource {
    /// API group ("" for core).
    pub group: &'static str,
    /// Version.
    pub version: &'static str,
    /// Plural name in URLs.
    pub plural: &'static str,
    /// Kind.
    pub kind: &'static str,
    /// Namespaced or cluster-wide.
    pub namespaced: bool,
}

impl Resource {
    /// `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

macro_rules! res {
    ($g:expr, $v:expr, $p:expr, $k:expr, $ns:expr) => {
        Resource {
            group: $g,
            version: $v,
            plural: $p,
            kind: $k,
            namespaced: $ns,
        }
    };
}

/// Every resource the double knows.
pub const RESOURCES: &[Resource] = &[
    res!("", "v1", "namespaces", "Namespace", false),
    res!("", "v1", "nodes", "Node", false),
    res!("", "v1", "pods", "Pod", true),
    res!("", "v1", "services", "Service", true),
    res!("", "v1", "endpoints", "Endpoints", true),
    res!("", "v1", "secrets", "Secret", true),
    res!("", "v1", "configmaps", "ConfigMap", true),
    res!("", "v1", "serviceaccounts", "ServiceAccount", true),
    res!("", "v1", "events", "Event", true),
    res!("apps", "v1", "daemonsets", "DaemonSet", true),
    res!("apps", "v1", "deployments", "Deployment", true),
    res!("apps", "v1", "replicasets", "ReplicaSet", true),
    res!("apps", "v1", "statefulsets", "StatefulSet", true),
    res!(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterroles",
        "ClusterRole",
        false
    ),
    res!(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "ClusterRoleBinding",
        false
    ),
    res!("rbac.authorization.k8s.io", "v1", "roles", "Role", true),
    res!(
        "rbac.authorization.k8s.io",
        "v1",
        "rolebindings",
        "RoleBinding",
        true
    ),
    res!(
        "policy",
        "v1",
        "poddisruptionbudgets",
        "PodDisruptionBudget",
        true
    ),
    res!("networking.k8s.io", "v1", "ingresses", "Ingress", true),
    res!(
        "networking.k8s.io",
        "v1",
        "ingressclasses",
        "IngressClass",
        false
    ),
    res!(
        "networking.k8s.io",
        "v1",
        "networkpolicies",
        "NetworkPolicy",
        true
    ),
    res!(
        "discovery.k8s.io",
        "v1",
        "endpointslices",
        "EndpointSlice",
        true
    ),
    res!("coordination.k8s.io", "v1", "leases", "Lease", true),
    res!("batch", "v1", "jobs", "Job", true),
    res!("batch", "v1", "cronjobs", "CronJob", true),
];

/// Looks up a resource by group, version and plural.
pub fn resource(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Looks up a resource by apiVersion and kind.
pub fn resource_for_kind(api_version: &str, kind: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.api_version() == api_version && r.kind == kind)
}

/// Key of a stored object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    /// `group/version/plural`.
    pub resource: String,
    /// Namespace ("" for cluster-wide).
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl Key {
    /// The key of `name` in `ns` of `r`.
    pub fn new(r: &Resource, ns: &str, name: &str) -> Self {
        Self {
            resource: format!("{}/{}/{}", r.group, r.version, r.plural),
            namespace: if r.namespaced {
                ns.to_owned()
            } else {
                String::new()
            },
            name: name.to_owned(),
        }
    }
}

/// All objects of one fake cluster.
#[derive(Debug, Default)]
pub struct Store {
    /// Objects by key.
    pub objects: BTreeMap<Key, Value>,
    revision: u64,
    uids: u64,
}

/// Why a store operation failed (maps to an HTTP status).
#[derive(Debug, Clone)]
pub enum StoreError {
    /// 404.
    NotFound(String),
    /// 409.
    Conflict(String),
    /// 409 AlreadyExists.
    AlreadyExists(String),
    /// 400 / 422.
    Invalid(String),
    /// 403 (creating in a terminating namespace).
    Forbidden(String),
}

impl Store {
    /// A store with the namespaces every cluster has.
    pub fn new() -> Self {
        let mut s = Store::default();
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let r = resource("", "v1", "namespaces").expect("namespaces");
            let _ = s.create(
                r,
                "",
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            );
        }
        s
    }

    /// The next resourceVersion.
    pub fn bump(&mut self) -> String {
        self.revision += 1;
        self.revision.to_string()
    }

    /// Current revision.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    fn stamp_new(&mut self, r: &Resource, ns: &str, obj: &mut Value) {
        self.uids += 1;
        let rv = self.bump();
        let uid = format!("00000000-0000-4000-8000-{:012x}", self.uids);
        let m = obj.as_object_mut().expect("object");
        m.insert("apiVersion".into(), Value::String(r.api_version()));
        m.insert("kind".into(), Value::String(r.kind.to_owned()));
        let meta = m.entry("metadata").or_insert_with(|| json!({}));
        let meta = meta.as_object_mut().expect("metadata");
        meta.insert("uid".into(), Value::String(uid));
        meta.insert("resourceVersion".into(), Value::String(rv));
        let now = time::OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .unwrap_or_else(|_| time::OffsetDateTime::now_utc());
        let stamp = now
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        meta.insert("creationTimestamp".into(), Value::String(stamp));
        meta.insert("generation".into(), json!(1));
        if r.namespaced {
            meta.insert("namespace".into(), Value::String(ns.to_owned()));
        } else {
            meta.remove("namespace");
        }
    }

    /// Creates an object.
    ///
    /// # Errors
    /// AlreadyExists, Invalid.
    pub fn create(&mut self, r: &Resource, ns: &str, mut obj: Value) -> Result<Value, StoreError> {
        let name = name_of(&obj)
            .or_else(|| generate_name(&obj).map(|p| format!("{p}{:05x}", self.uids + 1)))
            .ok_or_else(|| StoreError::Invalid("metadata.name is required".into()))?;
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("name".into(), Value::String(name.clone()));
        }
        if r.namespaced {
            let ns_obj = self.objects.get(&Key::new(
                resource("", "v1", "namespaces").expect("ns"),
                "",
                ns,
            ));
            match ns_obj {
                None => {
                    return Err(StoreError::NotFound(format!(
                        "namespaces \"{ns}\" not found"
                    )));
                }
                Some(n) if n.pointer("/metadata/deletionTimestamp").is_some() => {
                    return Err(StoreError::Forbidden(format!(
                        "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                        r.plural
                    )));
                }
                Some(_) => {}
            }
        }
        let key = Key::new(r, ns, &name);
        if self.objects.contains_key(&key) {
            return Err(StoreError::AlreadyExists(format!(
                "{} \"{name}\" already exists",
                r.plural
            )));
        }
        self.stamp_new(r, ns, &mut obj);
        if r.plural == "services" && obj.pointer("/spec/clusterIP").is_none() {
            // The API server allocates ClusterIPs; any distinct address will do here.
            let n = self.uids;
            if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
                spec.insert(
                    "clusterIP".into(),
                    Value::String(format!("10.96.{}.{}", (n >> 8) & 255, n & 255)),
                );
            }
        }
        self.objects.insert(key, obj.clone());
        Ok(obj)
    }

    /// Gets an object.
    pub fn get(&self, r: &Resource, ns: &str, name: &str) -> Option<&Value> {
        self.objects.get(&Key::new(r, ns, name))
    }

    /// Lists objects of `r` in `ns` (all namespaces if empty) matching `selector`.
    pub fn list(&self, r: &Resource, ns: &str, selector: &Selector) -> Vec<Value> {
        let prefix = format!("{}/{}/{}", r.group, r.version, r.plural);
        self.objects
            .iter()
            .filter(|(k, _)| {
                k.resource == prefix && (ns.is_empty() || !r.namespaced || k.namespace == ns)
            })
            .filter(|(_, v)| selector.matches(v))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Replaces an object (PUT). A stale resourceVersion is a conflict.
    ///
    /// # Errors
    /// NotFound, Conflict.
    pub fn update(
        &mut self,
        r: &Resource,
        ns: &str,
        name: &str,
        mut obj: Value,
    ) -> Result<Value, StoreError> {
        let key = Key::new(r, ns, name);
        let Some(old) = self.objects.get(&key) else {
            return Err(StoreError::NotFound(format!(
                "{} \"{name}\" not found",
                r.plural
            )));
        };
        if let Some(rv) = obj
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
        {
            if Some(rv)
                != old
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
            {
                return Err(StoreError::Conflict(format!(
                    "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                    r.plural
                )));
            }
        }
        let old = old.clone();
        carry_meta(&old, &mut obj, r);
        self.finish_write(key, &old, obj)
    }

    fn finish_write(&mut self, key: Key, old: &Value, mut obj: Value) -> Result<Value, StoreError> {
        let rv = self.bump();
        let spec_changed = old.get("spec") != obj.get("spec");
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), Value::String(rv));
            let g = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            meta.insert(
                "generation".into(),
                json!(if spec_changed { g + 1 } else { g }),
            );
        }
        self.objects.insert(key, obj.clone());
        Ok(obj)
    }

    /// Patches an object. `kind` is the Content-Type's patch kind.
    ///
    /// # Errors
    /// NotFound, Invalid.
    pub fn patch(
        &mut self,
        r: &Resource,
        ns: &str,
        name: &str,
        kind: PatchKind,
        patch: Value,
    ) -> Result<Value, StoreError> {
        let key = Key::new(r, ns, name);
        let Some(old) = self.objects.get(&key).cloned() else {
            if kind == PatchKind::Apply {
                // Server-side apply creates what does not exist.
                let mut obj = patch;
                if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                    meta.insert("name".into(), Value::String(name.to_owned()));
                }
                return self.create(r, ns, obj);
            }
            return Err(StoreError::NotFound(format!(
                "{} \"{name}\" not found",
                r.plural
            )));
        };
        let mut obj = old.clone();
        match kind {
            PatchKind::Merge | PatchKind::Apply => merge_patch(&mut obj, &patch),
            PatchKind::Strategic => strategic_patch(&mut obj, &patch, ""),
            PatchKind::Json => json_patch(&mut obj, &patch)?,
        }
        carry_meta(&old, &mut obj, r);
        self.finish_write(key, &old, obj)
    }

    /// Deletes an object.
    ///
    /// # Errors
    /// NotFound.
    pub fn delete(&mut self, r: &Resource, ns: &str, name: &str) -> Result<Value, StoreError> {
        if r.plural == "namespaces" {
            // As Kubernetes: the namespace turns Terminating; the namespace controller
            // (controllers::reconcile) removes its content, then the namespace.
            let rv = self.bump();
            let key = Key::new(r, ns, name);
            let Some(obj) = self.objects.get_mut(&key) else {
                return Err(StoreError::NotFound(format!(
                    "namespaces \"{name}\" not found"
                )));
            };
            if obj.pointer("/metadata/deletionTimestamp").is_none() {
                let stamp = time::OffsetDateTime::now_utc()
                    .replace_nanosecond(0)
                    .unwrap_or_else(|_| time::OffsetDateTime::now_utc())
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default();
                obj["metadata"]["deletionTimestamp"] = Value::String(stamp);
                obj["metadata"]["resourceVersion"] = Value::String(rv);
                obj["status"] = json!({"phase": "Terminating"});
            }
            return Ok(obj.clone());
        }
        self.bump();
        self.objects
            .remove(&Key::new(r, ns, name))
            .ok_or_else(|| StoreError::NotFound(format!("{} \"{name}\" not found", r.plural)))
    }

    /// Removes what a namespace controller would: the content of terminating namespaces,
    /// then the namespaces themselves.
    pub fn finish_terminating_namespaces(&mut self) {
        let terminating: Vec<String> = self
            .objects
            .iter()
            .filter(|(k, v)| {
                k.resource == "/v1/namespaces" && v.pointer("/metadata/deletionTimestamp").is_some()
            })
            .map(|(k, _)| k.name.clone())
            .collect();
        if terminating.is_empty() {
            return;
        }
        self.objects.retain(|k, _| {
            !(terminating.contains(&k.namespace)
                || (k.resource == "/v1/namespaces" && terminating.contains(&k.name)))
        });
        self.bump();
    }

    /// Writes `status` of an object directly (what controllers do).
    pub fn set_status(&mut self, r: &Resource, ns: &str, name: &str, status: Value) {
        let key = Key::new(r, ns, name);
        let rv = self.bump();
        if let Some(obj) = self.objects.get_mut(&key) {
            if let Some(m) = obj.as_object_mut() {
                m.insert("status".into(), status);
            }
            if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.insert("resourceVersion".into(), Value::String(rv));
            }
        }
    }
}

/// Keeps identity fields the client may not change.
fn carry_meta(old: &Value, obj: &mut Value, r: &Resource) {
    let Some(m) = obj.as_object_mut() else { return };
    m.insert("apiVersion".into(), Value::String(r.api_version()));
    m.insert("kind".into(), Value::String(r.kind.to_owned()));
    let meta = m.entry("metadata").or_insert_with(|| json!({}));
    if let Some(meta) = meta.as_object_mut() {
        for k in ["uid", "creationTimestamp", "name", "namespace"] {
            if let Some(v) = old.pointer(&format!("/metadata/{k}")) {
                meta.insert(k.into(), v.clone());
            }
        }
    }
    if let (Some(status), None) = (old.get("status"), m.get("status")) {
        m.insert("status".into(), status.clone());
    }
}

fn name_of(v: &Value) -> Option<String> {
    v.pointer("/metadata/name")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn generate_name(v: &Value) -> Option<String> {
    v.pointer("/metadata/generateName")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// The kinds of PATCH bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/json-patch+json` (RFC 6902).
    Json,
    /// `application/apply-patch+yaml` (server-side apply; merged, field ownership not tracked).
    Apply,
}

/// RFC 7386 merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let t = target.as_object_mut().expect("object");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// The merge key of well-known lists (`patchMergeKey` in the Kubernetes types).
fn merge_key(field: &str) -> Option<&'static str> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "hostAliases" => {
            if field == "hostAliases" {
                Some("ip")
            } else {
                Some("name")
            }
        }
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        "ports" => Some("__port"),
        "conditions" => Some("type"),
        "tolerations" | "finalizers" => None,
        _ => None,
    }
}

/// Strategic merge patch, for the shapes helm and kubectl send: maps merge, `null` deletes,
/// lists with a merge key merge by it, other lists replace; `$patch`, `$setElementOrder`,
/// `$retainKeys` and `$deleteFromPrimitiveList` directives are honoured or ignored as
/// harmless.
pub fn strategic_patch(target: &mut Value, patch: &Value, field: &str) {
    match patch {
        Value::Object(p) => {
            if p.get("$patch").and_then(Value::as_str) == Some("replace") {
                let mut v = patch.clone();
                if let Some(m) = v.as_object_mut() {
                    m.remove("$patch");
                }
                *target = v;
                return;
            }
            if p.get("$patch").and_then(Value::as_str) == Some("delete") {
                *target = Value::Null;
                return;
            }
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let t = target.as_object_mut().expect("object");
            for (k, v) in p {
                if k.starts_with("$setElementOrder/") || k == "$retainKeys" || k == "$patch" {
                    continue;
                }
                if let Some(list) = k.strip_prefix("$deleteFromPrimitiveList/") {
                    if let (Some(Value::Array(items)), Some(del)) = (t.get_mut(list), v.as_array())
                    {
                        items.retain(|i| !del.contains(i));
                    }
                    continue;
                }
                if v.is_null() {
                    t.remove(k);
                    continue;
                }
                let slot = t.entry(k.clone()).or_insert(Value::Null);
                strategic_patch(slot, v, k);
                if slot.is_null() {
                    t.remove(k);
                }
            }
        }
        Value::Array(items) => match (merge_key(field), target.as_array_mut()) {
            (Some(key), Some(existing)) if items.iter().all(Value::is_object) => {
                let id = |v: &Value| -> Value {
                    if key == "__port" {
                        json!([
                            v.get("port").or_else(|| v.get("containerPort")).cloned(),
                            v.get("protocol").cloned()
                        ])
                    } else {
                        v.get(key).cloned().unwrap_or(Value::Null)
                    }
                };
                for item in items {
                    let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
                    let k = id(item);
                    match existing.iter().position(|e| id(e) == k) {
                        Some(pos) if delete => {
                            existing.remove(pos);
                        }
                        Some(pos) => strategic_patch(&mut existing[pos], item, ""),
                        None if !delete => existing.push(item.clone()),
                        None => {}
                    }
                }
            }
            _ => *target = patch.clone(),
        },
        other => *target = other.clone(),
    }
}

/// RFC 6902 JSON patch (add, replace, remove, test).
///
/// # Errors
/// Invalid operations.
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), StoreError> {
    let ops = patch
        .as_array()
        .ok_or_else(|| StoreError::Invalid("a JSON patch is a list".into()))?;
    for op in ops {
        let path = op.get("path").and_then(Value::as_str).unwrap_or("");
        let (parent, last) = path
            .rsplit_once('/')
            .ok_or_else(|| StoreError::Invalid(format!("bad path {path}")))?;
        let last = last.replace("~1", "/").replace("~0", "~");
        match op.get("op").and_then(Value::as_str) {
            Some("add" | "replace") => {
                let value = op.get("value").cloned().unwrap_or(Value::Null);
                let p = target
                    .pointer_mut(parent)
                    .ok_or_else(|| StoreError::Invalid(format!("no {parent}")))?;
                match p {
                    Value::Object(m) => {
                        m.insert(last, value);
                    }
                    Value::Array(a) if last == "-" => a.push(value),
                    Value::Array(a) => {
                        let i: usize = last
                            .parse()
                            .map_err(|_| StoreError::Invalid(format!("bad index {last}")))?;
                        if i <= a.len() {
                            a.insert(i, value);
                        }
                    }
                    _ => return Err(StoreError::Invalid(format!("{parent} is not a container"))),
                }
            }
            Some("remove") => {
                if let Some(Value::Object(m)) = target.pointer_mut(parent) {
                    m.remove(&last);
                }
            }
            Some("test") => {}
            other => return Err(StoreError::Invalid(format!("unsupported op {other:?}"))),
        }
    }
    Ok(())
}

/// A label selector (`a=b,c!=d,e in (x,y),f notin (z),g,!h`).
#[derive(Debug, Clone, Default)]
pub struct Selector {
    terms: Vec<Term>,
    fields: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
enum Term {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

impl Selector {
    /// Parses `labelSelector` and `fieldSelector` (only `metadata.name=` and
    /// `metadata.namespace=` are understood).
    pub fn parse(labels: Option<&str>, fields: Option<&str>) -> Selector {
        let mut terms = Vec::new();
        if let Some(l) = labels {
            let mut depth = 0;
            let mut cur = String::new();
            let mut parts = Vec::new();
            for c in l.chars() {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    ',' if depth == 0 => {
                        parts.push(std::mem::take(&mut cur));
                        continue;
                    }
                    _ => {}
                }
                cur.push(c);
            }
            parts.push(cur);
            for p in parts.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
                let set = |s: &str| {
                    s.trim()
                        .trim_start_matches('(')
                        .trim_end_matches(')')
                        .split(',')
                        .map(|x| x.trim().to_owned())
                        .collect()
                };
                if let Some((k, v)) = p.split_once(" notin ") {
                    terms.push(Term::NotIn(k.trim().into(), set(v)));
                } else if let Some((k, v)) = p.split_once(" in ") {
                    terms.push(Term::In(k.trim().into(), set(v)));
                } else if let Some((k, v)) = p.split_once("!=") {
                    terms.push(Term::Ne(k.trim().into(), v.trim().into()));
                } else if let Some((k, v)) = p.split_once("==").or_else(|| p.split_once('=')) {
                    terms.push(Term::Eq(k.trim().into(), v.trim().into()));
                } else if let Some(k) = p.strip_prefix('!') {
                    terms.push(Term::NotExists(k.trim().into()));
                } else {
                    terms.push(Term::Exists(p.into()));
                }
            }
        }
        let fields = fields
            .map(|f| {
                f.split(',')
                    .filter_map(|p| {
                        p.split_once('=').map(|(k, v)| {
                            (
                                k.trim().trim_end_matches('=').to_owned(),
                                v.trim().to_owned(),
                            )
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        Selector { terms, fields }
    }

    /// True if `obj` matches.
    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        let labels_ok = self.terms.iter().all(|t| match t {
            Term::Eq(k, v) => get(k) == Some(v.as_str()),
            Term::Ne(k, v) => get(k) != Some(v.as_str()),
            Term::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Term::NotIn(k, vs) => get(k).is_none_or(|x| !vs.iter().any(|v| v == x)),
            Term::Exists(k) => get(k).is_some(),
            Term::NotExists(k) => get(k).is_none(),
        });
        labels_ok
            && self.fields.iter().all(|(k, v)| match k.as_str() {
                "metadata.name" => {
                    obj.pointer("/metadata/name").and_then(Value::as_str) == Some(v.as_str())
                }
                "metadata.namespace" => {
                    obj.pointer("/metadata/namespace").and_then(Value::as_str) == Some(v.as_str())
                }
                _ => true,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors() {
        let o = json!({"metadata": {"name": "a", "labels": {"owner": "helm", "name": "cilium", "status": "deployed"}}});
        assert!(Selector::parse(Some("owner=helm,name=cilium"), None).matches(&o));
        assert!(!Selector::parse(Some("owner=helm,name=other"), None).matches(&o));
        assert!(Selector::parse(Some("status in (deployed,failed),!missing"), None).matches(&o));
        assert!(!Selector::parse(Some("status notin (deployed)"), None).matches(&o));
        assert!(Selector::parse(None, Some("metadata.name=a")).matches(&o));
    }

    #[test]
    fn strategic_merge_by_name() {
        let mut t = json!({"spec": {"containers": [{"name": "a", "image": "x:1"}, {"name": "b", "image": "y"}], "volumes": [{"name": "v"}]}});
        let p = json!({"spec": {"$setElementOrder/containers": [{"name": "a"}, {"name": "b"}], "containers": [{"name": "a", "image": "x:2"}]}});
        strategic_patch(&mut t, &p, "");
        assert_eq!(t["spec"]["containers"][0]["image"], "x:2");
        assert_eq!(t["spec"]["containers"][1]["image"], "y");
        let p =
            json!({"spec": {"containers": [{"name": "b", "$patch": "delete"}], "volumes": null}});
        strategic_patch(&mut t, &p, "");
        assert_eq!(t["spec"]["containers"].as_array().unwrap().len(), 1);
        assert!(t["spec"].get("volumes").is_none());
    }
}
