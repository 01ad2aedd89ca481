//! The rules. Each adds findings; codes are stable and listed in docs/lint.md.

use std::collections::BTreeMap;

use serde_json::Value;

use super::annotations as a;
use super::inventory::{Ingress, Inventory, Meta, Service};
use super::{Context, Finding, Location, Scope};
use crate::diag::Severity;

fn object(kind: &str, m: &Meta) -> String {
    if m.namespace.is_empty() {
        format!("{kind} {}", m.name)
    } else {
        format!("{kind} {}/{}", m.namespace, m.name)
    }
}

fn clusters_of(m: &Meta) -> Vec<String> {
    m.cluster().map(|c| vec![c.to_owned()]).unwrap_or_default()
}

fn in_cluster(m: &Meta, cluster: Option<&str>) -> bool {
    match (&m.scope, cluster) {
        (Scope::All, _) | (_, None) => true,
        (Scope::Cluster(c), Some(x)) => c == x,
    }
}

/// The clusters to evaluate an object in: its own, or every known one (`None`: unknown).
fn eval_clusters(m: &Meta, ctx: &Context) -> Vec<Option<String>> {
    match &m.scope {
        Scope::Cluster(c) => vec![Some(c.clone())],
        Scope::All if ctx.clusters.is_empty() => vec![None],
        Scope::All => ctx.clusters.iter().map(|c| Some(c.name.clone())).collect(),
    }
}

/// L301–L305: annotation values and names.
pub(super) fn annotations(inv: &Inventory, out: &mut Vec<Finding>) {
    let metas = inv
        .services
        .iter()
        .map(|s| ("Service", &s.meta))
        .chain(inv.ingresses.iter().map(|i| ("Ingress", &i.meta)))
        .chain(inv.namespaces.iter().map(|n| ("Namespace", &n.meta)));
    for (kind, m) in metas {
        for (k, v) in &m.annotations {
            if !v.is_string() {
                let shown = match v {
                    Value::Null => "null".to_owned(),
                    other => other.to_string(),
                };
                out.push(Finding {
                    code: "L305",
                    severity: Severity::Error,
                    object: object(kind, m),
                    clusters: clusters_of(m),
                    at: vec![m.annotation_at(k)],
                    message: format!(
                        "annotation `{k}` is {shown}, not a string: kubectl and the API server reject the object (annotation values must be strings; YAML reads unquoted true, yes or 1 as other types)"
                    ),
                    fix: format!("quote the value: `{k}: \"{}\"`", match v { Value::Bool(true) => "true".to_owned(), Value::Bool(false) => "false".to_owned(), Value::Null => String::new(), o => o.to_string() }),
                });
            }
        }
        let bool_keys: &[&str] = match kind {
            "Service" => &[
                a::GLOBAL,
                a::GLOBAL_OLD,
                a::SHARED,
                a::SHARED_OLD,
                a::SYNC_ENDPOINT_SLICES,
            ],
            "Namespace" => &[a::GLOBAL_NAMESPACE],
            _ => &[],
        };
        for k in bool_keys {
            if let Some(v) = m.annotation(k)
                && a::cilium_bool(v).is_none()
            {
                out.push(Finding {
                        code: "L302",
                        severity: Severity::Error,
                        object: object(kind, m),
                        clusters: clusters_of(m),
                        at: vec![m.annotation_at(k)],
                        message: format!(
                            "`{k}: \"{v}\"`: Cilium reads only \"true\" or \"false\" here, so this value means the default ({})",
                            if *k == a::SHARED || *k == a::SHARED_OLD { "shared" } else { "off" }
                        ),
                        fix: format!("set `{k}: \"true\"` or `\"false\"`"),
                    });
            }
        }
        if kind == "Ingress"
            && let Some(v) = m.annotation(a::SERVICE_UPSTREAM)
            && a::go_bool(v).is_none()
        {
            out.push(Finding {
                        code: "L302",
                        severity: Severity::Error,
                        object: object(kind, m),
                        clusters: clusters_of(m),
                        at: vec![m.annotation_at(a::SERVICE_UPSTREAM)],
                        message: format!(
                            "`{}: \"{v}\"` is not a boolean ingress-nginx reads, so it keeps sending to endpoints",
                            a::SERVICE_UPSTREAM
                        ),
                        fix: format!("set `{}: \"true\"`", a::SERVICE_UPSTREAM),
                    });
        }
    }
    for s in &inv.services {
        let m = &s.meta;
        if let Some(v) = m.annotation(a::AFFINITY)
            && !["local", "remote", "none"]
                .iter()
                .any(|x| v.eq_ignore_ascii_case(x))
        {
            out.push(Finding {
                    code: "L301",
                    severity: Severity::Error,
                    object: object("Service", m),
                    clusters: clusters_of(m),
                    at: vec![m.annotation_at(a::AFFINITY)],
                    message: format!(
                        "`{}: \"{v}\"` is not an affinity Cilium knows, so the Service balances over all clusters' backends",
                        a::AFFINITY
                    ),
                    fix: format!(
                        "use `local` (prefer this cluster's backends), `remote` (prefer other clusters') or `none`: `{}: \"local\"`",
                        a::AFFINITY
                    ),
                });
        }
        if !s.is_global() {
            for k in [
                a::SHARED,
                a::SHARED_OLD,
                a::AFFINITY,
                a::SYNC_ENDPOINT_SLICES,
            ] {
                if m.annotations.contains_key(k) {
                    out.push(Finding {
                        code: "L303",
                        severity: Severity::Warning,
                        object: object("Service", m),
                        clusters: clusters_of(m),
                        at: vec![m.annotation_at(k)],
                        message: format!(
                            "`{k}` has no effect: the Service is not global (Cilium reads it only with `{}: \"true\"`)",
                            a::GLOBAL
                        ),
                        fix: format!(
                            "add `{}: \"true\"` if the Service should span clusters, or remove `{k}`",
                            a::GLOBAL
                        ),
                    });
                }
            }
        }
        for (old, new) in [(a::GLOBAL_OLD, a::GLOBAL), (a::SHARED_OLD, a::SHARED)] {
            if let Some(v) = m.annotation(old) {
                let conflict = m
                    .annotation(new)
                    .filter(|n| a::cilium_bool(n) != a::cilium_bool(v))
                    .map(|n| format!("; it also has `{new}: \"{n}\"`, which disagrees"))
                    .unwrap_or_default();
                out.push(Finding {
                    code: "L304",
                    severity: Severity::Warning,
                    object: object("Service", m),
                    clusters: clusters_of(m),
                    at: vec![m.annotation_at(old)],
                    message: format!("`{old}` is the old name of `{new}`{conflict}"),
                    fix: format!("rename it to `{new}: \"{v}\"`"),
                });
            }
        }
    }
}

/// Whether `ing` is served by ingress-nginx in `cluster`.
fn is_nginx(inv: &Inventory, ing: &Ingress, cluster: Option<&str>) -> bool {
    let classes: Vec<_> = inv
        .classes
        .iter()
        .filter(|c| in_cluster(&c.meta, cluster))
        .collect();
    match &ing.class {
        Some(name) => match classes.iter().find(|c| &c.meta.name == name) {
            Some(c) => c.controller == a::NGINX_CONTROLLER,
            // No IngressClass object to go by (a manifest directory): judge by the name.
            None => name.contains("nginx"),
        },
        None => classes
            .iter()
            .any(|c| c.default && c.controller == a::NGINX_CONTROLLER),
    }
}

fn service_in<'a>(
    inv: &'a Inventory,
    ns: &str,
    name: &str,
    cluster: Option<&str>,
) -> Option<&'a Service> {
    let mut found = inv
        .services
        .iter()
        .filter(|s| s.meta.namespace == ns && s.meta.name == name && in_cluster(&s.meta, cluster));
    let first = found.next()?;
    // A cluster's own object wins over one applied everywhere.
    Some(
        std::iter::once(first)
            .chain(found)
            .find(|s| s.meta.cluster().is_some())
            .unwrap_or(first),
    )
}

/// One backend Service of an Ingress with the L101 problem: the clusters where it has it, the
/// backend's index, the Service's location, and a note.
type Hit = (Vec<String>, usize, Vec<Location>, Option<String>);

/// L101: nginx Ingresses to global Services without `service-upstream`.
pub(super) fn ingress_upstream(inv: &Inventory, ctx: &Context, out: &mut Vec<Finding>) {
    let slices_possible = ctx
        .version
        .as_ref()
        .is_none_or(crate::version::CiliumVersion::has_endpoint_slice_sync);
    for ing in &inv.ingresses {
        let upstream = ing
            .meta
            .annotation(a::SERVICE_UPSTREAM)
            .and_then(a::go_bool)
            == Some(true);
        if upstream {
            continue;
        }
        let mut hits: BTreeMap<String, Hit> = BTreeMap::new();
        for cluster in eval_clusters(&ing.meta, ctx) {
            if !is_nginx(inv, ing, cluster.as_deref()) {
                continue;
            }
            for (bi, b) in ing.backends.iter().enumerate() {
                let Some(svc) =
                    service_in(inv, &ing.meta.namespace, &b.service, cluster.as_deref())
                else {
                    continue;
                };
                if !svc.is_global() {
                    continue;
                }
                let sync_annotation = svc
                    .meta
                    .annotation(a::SYNC_ENDPOINT_SLICES)
                    .and_then(a::cilium_bool);
                let synced = ctx.endpoint_slice_sync
                    && slices_possible
                    && ctx.version.is_some()
                    && (sync_annotation == Some(true)
                        || (svc.headless && sync_annotation != Some(false)));
                if synced {
                    continue;
                }
                let note = (sync_annotation == Some(true) && !ctx.endpoint_slice_sync).then(|| {
                    format!(
                        "; the Service asks for EndpointSlice synchronisation (`{}`), but `clustermesh.endpointSliceSync` is off in mesh.yaml",
                        a::SYNC_ENDPOINT_SLICES
                    )
                });
                let e = hits.entry(b.service.clone()).or_insert_with(|| {
                    (
                        Vec::new(),
                        bi,
                        vec![svc.meta.at("/metadata/annotations")],
                        note,
                    )
                });
                if let Some(c) = &cluster
                    && !e.0.contains(c)
                {
                    e.0.push(c.clone());
                }
            }
        }
        for (svc, (clusters, bi, svc_at, note)) in hits {
            let alternative = if !slices_possible {
                String::new()
            } else if ctx.endpoint_slice_sync {
                format!(
                    "; or annotate Service {ns}/{svc} with `{}: \"true\"` (EndpointSlice synchronisation is on in mesh.yaml)",
                    a::SYNC_ENDPOINT_SLICES,
                    ns = ing.meta.namespace
                )
            } else {
                format!(
                    "; or, on Cilium >= 1.16, synchronise EndpointSlices: set `clustermesh.endpointSliceSync: true` in mesh.yaml and annotate Service {ns}/{svc} with `{}: \"true\"`",
                    a::SYNC_ENDPOINT_SLICES,
                    ns = ing.meta.namespace
                )
            };
            let mut at = vec![ing.meta.at(&ing.backends[bi].pointer)];
            at.extend(svc_at);
            out.push(Finding {
                code: "L101",
                severity: Severity::Error,
                object: object("Ingress", &ing.meta),
                clusters,
                at,
                message: format!(
                    "ingress-nginx sends this Ingress's traffic to the endpoints of Service {ns}/{svc} in its own cluster, not to the Service: {svc} is global, but when its local replicas are gone the controller has no endpoints and answers 503 instead of using the other clusters (the reference article's finding; cilium#25818){}",
                    note.unwrap_or_default(),
                    ns = ing.meta.namespace
                ),
                fix: format!(
                    "annotate the Ingress with `{}: \"true\"`, so that the controller sends to the ClusterIP, which Cilium balances across clusters{alternative}",
                    a::SERVICE_UPSTREAM
                ),
            });
        }
    }
}

/// L201–L204: a global Service compared across clusters.
pub(super) fn cross_cluster(inv: &Inventory, ctx: &Context, out: &mut Vec<Finding>) {
    let mut keys: Vec<(&str, &str)> = inv
        .services
        .iter()
        .filter(|s| s.is_global())
        .map(|s| (s.meta.namespace.as_str(), s.meta.name.as_str()))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    for (ns, name) in keys {
        let per: Vec<(&str, Option<&Service>)> = ctx
            .clusters
            .iter()
            .map(|c| (c.name.as_str(), service_in(inv, ns, name, Some(&c.name))))
            .collect();
        let global: Vec<(&str, &Service)> = per
            .iter()
            .filter_map(|(c, s)| s.filter(|s| s.is_global()).map(|s| (*c, s)))
            .collect();
        let local_only: Vec<(&str, &Service)> = per
            .iter()
            .filter_map(|(c, s)| s.filter(|s| !s.is_global()).map(|s| (*c, s)))
            .collect();
        let missing: Vec<&str> = per
            .iter()
            .filter(|(_, s)| s.is_none())
            .map(|(c, _)| *c)
            .collect();
        let obj = format!("Service {ns}/{name}");
        let at = |list: &[(&str, &Service)], rel: &str| -> Vec<Location> {
            let mut v: Vec<Location> = list.iter().map(|(_, s)| s.meta.at(rel)).collect();
            v.dedup();
            v
        };
        if global.len() == 1 {
            let (only, svc) = global[0];
            let mut why = Vec::new();
            if !missing.is_empty() {
                why.push(format!(
                    "{} {} no Service {ns}/{name}",
                    missing.join(", "),
                    if missing.len() == 1 { "has" } else { "have" }
                ));
            }
            if !local_only.is_empty() {
                let names: Vec<&str> = local_only.iter().map(|(c, _)| *c).collect();
                why.push(format!(
                    "{} {} it without `{}: \"true\"`",
                    names.join(", "),
                    if names.len() == 1 { "has" } else { "have" },
                    a::GLOBAL
                ));
            }
            let others: Vec<&str> = per.iter().map(|(c, _)| *c).filter(|c| *c != only).collect();
            out.push(Finding {
                code: "L201",
                severity: Severity::Error,
                object: obj.clone(),
                clusters: vec![only.to_owned()],
                at: vec![svc.meta.annotation_at(a::GLOBAL)],
                message: format!(
                    "global in {only} only: {}. A global Service spans only the clusters that have it, global, under the same name and namespace, so nothing is shared",
                    why.join("; ")
                ),
                fix: format!(
                    "create Service {ns}/{name} with `{}: \"true\"` and the same ports in {} (clients there resolve the name only if it exists locally), or drop the annotation if it is meant to stay local",
                    a::GLOBAL,
                    others.join(", ")
                ),
            });
        } else if global.len() >= 2 && !local_only.is_empty() {
            let g: Vec<&str> = global.iter().map(|(c, _)| *c).collect();
            let l: Vec<&str> = local_only.iter().map(|(c, _)| *c).collect();
            out.push(Finding {
                code: "L204",
                severity: Severity::Warning,
                object: obj.clone(),
                clusters: l.iter().map(|c| (*c).to_owned()).collect(),
                at: at(&local_only, "/metadata"),
                message: format!(
                    "global in {} but not in {}: clients in {} reach only their own backends, and those backends are not offered to the other clusters",
                    g.join(", "),
                    l.join(", "),
                    l.join(", ")
                ),
                fix: format!("add `{}: \"true\"` to Service {ns}/{name} in {}", a::GLOBAL, l.join(", ")),
            });
        }
        if global.len() >= 2 {
            let first_ports = &global[0].1.ports;
            if global.iter().any(|(_, s)| &s.ports != first_ports) {
                let shown: Vec<String> = global
                    .iter()
                    .map(|(c, s)| {
                        let p: Vec<String> = s.ports.iter().map(ToString::to_string).collect();
                        format!(
                            "{c}: {}",
                            if p.is_empty() {
                                "none".into()
                            } else {
                                p.join(", ")
                            }
                        )
                    })
                    .collect();
                out.push(Finding {
                    code: "L202",
                    severity: Severity::Error,
                    object: obj.clone(),
                    clusters: global.iter().map(|(c, _)| (*c).to_owned()).collect(),
                    at: at(&global, "/spec/ports"),
                    message: format!(
                        "the ports differ between clusters ({}): Cilium merges backends per port, so requests to a port some clusters lack reach only the others, and a name or protocol mismatch splits them",
                        shown.join("; ")
                    ),
                    fix: "give the Service the same ports (name, number, protocol) in every cluster".into(),
                });
            }
            let first_shape = global[0].1.shape();
            if global.iter().any(|(_, s)| s.shape() != first_shape) {
                let shown: Vec<String> = global
                    .iter()
                    .map(|(c, s)| format!("{c}: {}", s.shape()))
                    .collect();
                out.push(Finding {
                    code: "L203",
                    severity: Severity::Warning,
                    object: obj,
                    clusters: global.iter().map(|(c, _)| (*c).to_owned()).collect(),
                    at: at(&global, "/spec"),
                    message: format!(
                        "the type differs between clusters ({}): clients see a different Service depending on the cluster they run in",
                        shown.join("; ")
                    ),
                    fix: "use the same spec.type (and clusterIP: None or not) in every cluster".into(),
                });
            }
        }
    }
}

/// L401 (Cilium 1.20+): global Services in namespaces that are not global.
pub(super) fn global_namespaces(inv: &Inventory, ctx: &Context, out: &mut Vec<Finding>) {
    for s in inv.services.iter().filter(|s| s.is_global()) {
        let mut bad = Vec::new();
        let mut at = vec![s.meta.annotation_at(a::GLOBAL)];
        let mut reasons = Vec::new();
        for cluster in eval_clusters(&s.meta, ctx) {
            let ns_obj = inv
                .namespaces
                .iter()
                .filter(|n| {
                    n.meta.name == s.meta.namespace && in_cluster(&n.meta, cluster.as_deref())
                })
                .max_by_key(|n| n.meta.cluster().is_some());
            let explicit = ns_obj.and_then(|n| {
                n.meta
                    .annotation(a::GLOBAL_NAMESPACE)
                    .and_then(a::cilium_bool)
            });
            let default = cluster
                .as_deref()
                .and_then(|c| ctx.clusters.iter().find(|x| x.name == c))
                .is_none_or(|c| c.default_global_namespace);
            let global = explicit.unwrap_or(default);
            if !global {
                let reason = match explicit {
                    Some(false) => format!("namespace {} is annotated `{}: \"false\"`", s.meta.namespace, a::GLOBAL_NAMESPACE),
                    _ => "clustermesh.defaultGlobalNamespace is false and the namespace is not annotated".to_owned(),
                };
                if let Some(n) = ns_obj {
                    let l = n.meta.annotation_at(a::GLOBAL_NAMESPACE);
                    if !at.contains(&l) {
                        at.push(l);
                    }
                }
                if !reasons.contains(&reason) {
                    reasons.push(reason);
                }
                if let Some(c) = cluster {
                    bad.push(c);
                } else {
                    bad.push(String::new());
                }
            }
        }
        if bad.is_empty() {
            continue;
        }
        bad.retain(|c| !c.is_empty());
        let whereas = if bad.is_empty() {
            String::new()
        } else {
            format!(" in {}", bad.join(", "))
        };
        out.push(Finding {
            code: "L401",
            severity: Severity::Error,
            object: object("Service", &s.meta),
            clusters: bad,
            at,
            message: format!(
                "the Service is global, but its namespace {} is not global{whereas} ({}): from Cilium 1.20 only Services in global namespaces are shared",
                s.meta.namespace,
                reasons.join("; ")
            ),
            fix: format!(
                "annotate namespace {} with `{}: \"true\"` (or set clustermesh.defaultGlobalNamespace: true in the clusters' values)",
                s.meta.namespace,
                a::GLOBAL_NAMESPACE
            ),
        });
    }
}

/// L501: a network policy whose peer selectors name no cluster, while those select every
/// cluster's endpoints (Cilium before 1.19, or `policyDefaultLocalCluster: false`): once the
/// setting is true (1.19's default, cilium/cilium#40609) they select only the local cluster's,
/// and what the policy allows or denies across clusters changes without a line of it changing.
pub(super) fn policy_default_local_cluster(inv: &Inventory, ctx: &Context, out: &mut Vec<Finding>) {
    let now = match (&ctx.policy_default_local_cluster, &ctx.version) {
        (Some(_), _) => "clustermesh.policyDefaultLocalCluster is false".to_owned(),
        (None, Some(v)) => format!("Cilium {v} selects every cluster by default"),
        (None, None) => "policies select every cluster by default".to_owned(),
    };
    for p in inv.policies.iter().filter(|p| !p.unscoped.is_empty()) {
        let mut fields: Vec<&str> = p.unscoped.iter().map(|s| s.field).collect();
        fields.sort_unstable();
        fields.dedup();
        let n = p.unscoped.len();
        out.push(Finding {
            code: "L501",
            severity: Severity::Warning,
            object: object(&p.kind, &p.meta),
            clusters: clusters_of(&p.meta),
            at: p.unscoped.iter().map(|s| p.meta.at(&s.pointer)).collect(),
            message: format!(
                "{n} peer selector{} ({}) name{} no cluster: they select endpoints in every cluster of the mesh now ({now}); once clustermesh.policyDefaultLocalCluster is true (the default from Cilium 1.19) they select only the local cluster's, and what this policy allows or denies across clusters changes",
                if n == 1 { "" } else { "s" },
                fields.join(", "),
                if n == 1 { "s" } else { "" },
            ),
            fix: format!(
                "say which clusters each selector means, so that it means the same either way: `{l}: <cluster>` in matchLabels (one cluster), or matchExpressions `{{key: {l}, operator: Exists}}` (every cluster); until then keep `clustermesh.policyDefaultLocalCluster: false` in mesh.yaml (`cmesh upgrade` writes it when it crosses into 1.19)",
                l = super::CLUSTER_LABEL
            ),
        });
    }
}
