//! Kubernetes Secrets that must exist before the chart: the shared CA where the method needs
//! it in the cluster, and cmesh-issued certificates the version takes as Secrets.

use crate::pki::LeafKind;
use crate::spec::{CILIUM_NAMESPACE, CertMethod, Cluster, MeshSpec};
use crate::value::{Map, Value};

use super::values::{Phase, PkiView, b64, leaf_in_values, phase_leaves};

/// Name of the shared CA Secret the chart and certgen use.
pub const CA_SECRET: &str = "cilium-ca";

/// Label set on everything cmesh renders.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "cmesh");
/// Label naming the mesh.
pub const MESH_LABEL: &str = "cmesh.dev/mesh";
/// Label naming the cluster.
pub const CLUSTER_LABEL: &str = "cmesh.dev/cluster";

/// A Secret manifest.
fn secret(
    spec: &MeshSpec,
    cluster: &Cluster,
    name: &str,
    kind: Option<&str>,
    data: Vec<(&str, String)>,
) -> Value {
    let mut labels = Map::new();
    labels.insert(MANAGED_BY.0.into(), MANAGED_BY.1.into());
    labels.insert(MESH_LABEL.into(), spec.name.as_str().into());
    labels.insert(CLUSTER_LABEL.into(), cluster.name.as_str().into());
    let mut annotations = Map::new();
    // Argo CD applies these before the chart when they share an Application.
    annotations.insert("argocd.argoproj.io/sync-wave".into(), "-1".into());
    let mut m = Value::map();
    m.set(&["apiVersion"], "v1");
    m.set(&["kind"], "Secret");
    m.set(&["metadata", "name"], name);
    m.set(&["metadata", "namespace"], CILIUM_NAMESPACE);
    m.set(&["metadata", "labels"], Value::Map(labels));
    m.set(&["metadata", "annotations"], Value::Map(annotations));
    if let Some(k) = kind {
        m.set(&["type"], k);
    }
    let mut d = Map::new();
    for (k, v) in data {
        d.insert(k.to_owned(), Value::Str(v));
    }
    m.set(&["data"], Value::Map(d));
    m
}

/// The Secrets `cluster` needs before the chart in `phase`, in a stable order.
pub fn secrets(spec: &MeshSpec, cluster: &Cluster, phase: Phase, pki: &PkiView) -> Vec<Value> {
    let v = &spec.cilium.version;
    // What a cluster trusts, in every Secret's ca.crt (components that do not read the chart's
    // bundle read this); cronJob's cilium-ca keeps the issuing CA alone, to match its key.
    let ca_crt = b64(&pki.trust_pem);
    let mut out = Vec::new();
    match spec.clustermesh.certificates {
        CertMethod::Cmesh => {
            // The chart renders cilium-ca only with the CA key; cmesh provides the certificate
            // alone so that tools comparing CAs across clusters (cilium-cli, cmesh status) find it.
            out.push(secret(
                spec,
                cluster,
                CA_SECRET,
                None,
                vec![("ca.crt", ca_crt.clone())],
            ));
            for (kind, (cert, key)) in phase_leaves(spec, cluster, phase, pki) {
                if !leaf_in_values(v, kind) {
                    out.push(secret(
                        spec,
                        cluster,
                        kind.secret_name(),
                        Some("kubernetes.io/tls"),
                        vec![
                            ("ca.crt", ca_crt.clone()),
                            ("tls.crt", b64(cert)),
                            ("tls.key", b64(key)),
                        ],
                    ));
                }
            }
        }
        CertMethod::CronJob => {
            // certgen signs in the cluster with --ca-reuse-secret: it needs the CA key there,
            // and a pre-created Secret keeps that key out of the values.
            if let Some(key) = &pki.ca_key_pem {
                out.push(secret(
                    spec,
                    cluster,
                    CA_SECRET,
                    None,
                    vec![("ca.crt", b64(&pki.ca_cert_pem)), ("ca.key", b64(key))],
                ));
            }
        }
        CertMethod::Helm | CertMethod::CertManager => {}
    }
    out
}

/// True if any Secret of `cluster` carries a private key.
pub fn secrets_hold_keys(secrets: &[Value]) -> bool {
    secrets.iter().any(|s| {
        s.get(&["data"])
            .and_then(Value::as_map)
            .is_some_and(|d| d.contains_key("tls.key") || d.contains_key("ca.key"))
    })
}

/// The leaf kinds that end up in Secrets for `cluster` in `phase`.
pub fn secret_leaf_kinds(
    spec: &MeshSpec,
    cluster: &Cluster,
    phase: Phase,
    pki: &PkiView,
) -> Vec<LeafKind> {
    phase_leaves(spec, cluster, phase, pki)
        .into_iter()
        .filter(|(k, _)| !leaf_in_values(&spec.cilium.version, *k))
        .map(|(k, _)| k)
        .collect()
}
