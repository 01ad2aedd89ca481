//! Helm values per cluster and phase: what cmesh sets (identity, IPAM, API server, shared CA,
//! certificates, the Cluster Mesh block), with the user's values merged over it.
//!
//! The keys cmesh sets are exactly the leaves of [`cmesh_values`]; [`override_warnings`]
//! compares the user's values with them, so the two can never disagree.

use std::collections::BTreeMap;

use base64::Engine as _;
use ipnet::IpNet;

use crate::diag::Diagnostic;
use crate::pki::LeafKind;
use crate::pki::catalog::{HubbleFeatures, LeafKind as K, server_extra_sans, user_values};
use crate::spec::codes;
use crate::spec::source::{child, item};
use crate::spec::{CertMethod, Cluster, Dial, Host, MeshSpec, ServiceType};
use crate::value::{Map, Value};
use crate::version::CiliumVersion;

/// Which values to render: before or after enabling Cluster Mesh (the article's steps 03 and
/// 05).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Cilium with the shared CA but without Cluster Mesh.
    Base,
    /// Everything, Cluster Mesh included.
    #[default]
    Mesh,
}

impl Phase {
    /// `base` or `mesh`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Base => "base",
            Phase::Mesh => "mesh",
        }
    }
}

/// The certificate material rendering needs. Private keys stay in memory only for as long as
/// rendering takes.
#[derive(Clone)]
pub struct PkiView {
    /// The CA certificate that issues the leaves, PEM (normalised: one trailing newline).
    pub ca_cert_pem: String,
    /// What the clusters trust: the CA certificate, or during a rotation both CAs' PEMs
    /// concatenated (the trust bundle), which goes into every `ca.crt`.
    pub trust_pem: String,
    /// The CA key, only for methods that sign inside the cluster (helm, cronJob).
    pub ca_key_pem: Option<String>,
    /// Leaf certificate and key per (cluster, kind).
    pub leaves: BTreeMap<(String, LeafKind), (String, String)>,
}

impl std::fmt::Debug for PkiView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PkiView")
            .field("leaves", &self.leaves.len())
            .finish_non_exhaustive()
    }
}

impl PkiView {
    /// Stand-in material for working out which keys cmesh owns without any PKI.
    pub fn placeholder(spec: &MeshSpec) -> Self {
        let mut leaves = BTreeMap::new();
        for c in &spec.clusters {
            for kind in LeafKind::ALL {
                leaves.insert(
                    (c.name.clone(), kind),
                    ("CERT".to_owned(), "KEY".to_owned()),
                );
            }
        }
        Self {
            ca_cert_pem: "CA".to_owned(),
            trust_pem: "CA".to_owned(),
            ca_key_pem: Some("CAKEY".to_owned()),
            leaves,
        }
    }
}

/// When certgen renews the Cluster Mesh certificates with `certificates: cronJob` (the chart's
/// default from 1.20 and Hubble's in every version: 00:00 on the first day of every fourth
/// month).
pub const CRONJOB_SCHEDULE: &str = "0 0 1 */4 *";

/// Base64 of a PEM text, as the chart expects for certificate values.
pub fn b64(pem: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(pem.as_bytes())
}

/// True if the certificate `kind` goes into values on `version` (the chart accepts nothing
/// else); otherwise it is a pre-created Secret.
pub fn leaf_in_values(version: &CiliumVersion, kind: LeafKind) -> bool {
    match kind {
        K::ClustermeshLocal => false,
        K::ClustermeshServer | K::ClustermeshAdmin | K::ClustermeshRemote => {
            version.clustermesh_certs_only_as_values()
        }
        K::HubbleServer | K::HubbleRelayClient | K::HubbleRelayServer | K::HubbleUiClient => {
            !version.has_hubble_existing_secret()
        }
    }
}

/// The leaves a cluster uses in `phase` (Cluster Mesh certificates only in the mesh phase).
pub fn phase_leaves<'a>(
    spec: &MeshSpec,
    cluster: &Cluster,
    phase: Phase,
    pki: &'a PkiView,
) -> Vec<(LeafKind, &'a (String, String))> {
    if spec.clustermesh.certificates != CertMethod::Cmesh {
        return Vec::new();
    }
    LeafKind::ALL
        .iter()
        .filter(|k| phase == Phase::Mesh || !k.is_clustermesh())
        .filter_map(|k| pki.leaves.get(&(cluster.name.clone(), *k)).map(|m| (*k, m)))
        .collect()
}

fn method_word(m: CertMethod) -> &'static str {
    match m {
        CertMethod::Cmesh | CertMethod::Helm => "helm",
        CertMethod::CronJob => "cronJob",
        CertMethod::CertManager => "certmanager",
    }
}

/// The values cmesh sets for `cluster` in `phase`, before user values.
pub fn cmesh_values(spec: &MeshSpec, cluster: &Cluster, phase: Phase, pki: &PkiView) -> Value {
    build(spec, cluster, phase, pki, true)
}

/// `with_peers: false` leaves `clustermesh.config.clusters` empty (it is still a key cmesh
/// owns): enough to know which keys cmesh sets, without the N² peer lists.
fn build(
    spec: &MeshSpec,
    cluster: &Cluster,
    phase: Phase,
    pki: &PkiView,
    with_peers: bool,
) -> Value {
    let v = &spec.cilium.version;
    let mesh = &spec.clustermesh;
    let method = mesh.certificates;
    let user = user_values(spec, cluster);
    let mut out = Value::map();

    out.set(&["cluster", "name"], cluster.name.as_str());
    out.set(&["cluster", "id"], cluster.id);

    // Cluster-pool IPAM with this cluster's pools.
    out.set(&["ipam", "mode"], "cluster-pool");
    let v4: Vec<String> = cluster.pod_cidrs_v4().map(IpNet::to_string).collect();
    let v6: Vec<String> = cluster.pod_cidrs_v6().map(IpNet::to_string).collect();
    if !v4.is_empty() {
        out.set(
            &["ipam", "operator", "clusterPoolIPv4PodCIDRList"],
            v4.clone(),
        );
        if let Some(m) = cluster.pod_cidr_mask_size {
            out.set(&["ipam", "operator", "clusterPoolIPv4MaskSize"], m);
        }
    } else {
        out.set(&["ipv4", "enabled"], false);
    }
    if !v6.is_empty() {
        out.set(&["ipv6", "enabled"], true);
        out.set(&["ipam", "operator", "clusterPoolIPv6PodCIDRList"], v6);
        if let (Some(m), true) = (cluster.pod_cidr_mask_size, v4.is_empty()) {
            out.set(&["ipam", "operator", "clusterPoolIPv6MaskSize"], m);
        }
    }

    if let Some(api) = &cluster.api_server {
        out.set(&["k8sServiceHost"], api.host.to_string());
        out.set(&["k8sServicePort"], api.port);
    }

    // The shared CA. Its key goes into the cluster only where the chart signs there (helm);
    // cronJob gets it through the pre-created cilium-ca Secret, cmesh never ships it.
    // During a rotation every CA the clusters trust: on 1.14 and 1.15 the chart copies it into
    // each Secret's ca.crt, which some components read instead of the bundle (docs/rotation.md).
    // With cmesh's certificates the chart reads it only beside a certificate given as values;
    // elsewhere (1.16.19 on) it would be a value no template reads, whose change at `begin` and
    // `finish` still makes a helm upgrade, and the 1.16 chart rolls every agent at each one.
    let chart_reads_ca = match method {
        CertMethod::CertManager => false,
        CertMethod::Cmesh => phase_leaves(spec, cluster, phase, pki)
            .iter()
            .any(|(kind, _)| leaf_in_values(v, *kind)),
        CertMethod::Helm | CertMethod::CronJob => true,
    };
    if chart_reads_ca {
        out.set(&["tls", "ca", "cert"], b64(&pki.trust_pem));
        if method == CertMethod::Helm
            && let Some(key) = &pki.ca_key_pem
        {
            out.set(&["tls", "ca", "key"], b64(key));
        }
    }
    // Not the chart's `tls.caBundle`: with it off, every component reads its CAs from a
    // Secret's ca.crt, which holds the trust; turning it on and off would change the pod
    // templates and restart every agent twice per rotation (docs/rotation.md).

    // Hubble certificates.
    let hubble = HubbleFeatures::from_values(&user);
    if hubble.tls {
        match method {
            CertMethod::Cmesh => out.set(&["hubble", "tls", "auto", "enabled"], false),
            other => {
                out.set(&["hubble", "tls", "auto", "enabled"], true);
                out.set(&["hubble", "tls", "auto", "method"], method_word(other));
                if other == CertMethod::CertManager
                    && user
                        .get(&["hubble", "tls", "auto", "certManagerIssuerRef"])
                        .is_none()
                    && let Some(issuer) = user.get(&[
                        "clustermesh",
                        "apiserver",
                        "tls",
                        "auto",
                        "certManagerIssuerRef",
                    ])
                {
                    out.set(
                        &["hubble", "tls", "auto", "certManagerIssuerRef"],
                        issuer.clone(),
                    );
                }
            }
        }
    }

    if phase == Phase::Mesh {
        mesh_block(spec, cluster, &mut out, with_peers);
        let auto = ["clustermesh", "apiserver", "tls", "auto"];
        match method {
            CertMethod::Cmesh => {
                out.set(&[&auto[..], &["enabled"]].concat(), false);
                if v.has_tls_enable_secrets() {
                    // Certificates come from the pre-created Secrets, not from values.
                    out.set(&["clustermesh", "apiserver", "tls", "enableSecrets"], false);
                }
            }
            other => {
                out.set(&[&auto[..], &["enabled"]].concat(), true);
                out.set(&[&auto[..], &["method"]].concat(), method_word(other));
                // Before 1.20 the chart has no default schedule: certgen would run once and
                // never renew. The same schedule as Hubble's and 1.20's default.
                if other == CertMethod::CronJob && !v.has_clustermesh_cronjob_schedule_default() {
                    out.set(&[&auto[..], &["schedule"]].concat(), CRONJOB_SCHEDULE);
                }
            }
        }
    }

    // Certificates issued by cmesh that this version only accepts as values.
    for (kind, (cert, key)) in phase_leaves(spec, cluster, phase, pki) {
        if leaf_in_values(v, kind) {
            if let Some(path) = kind.values_path() {
                out.set(&[path, &["cert"]].concat(), b64(cert));
                out.set(&[path, &["key"]].concat(), b64(key));
            }
        } else if let Some(path) = kind.existing_secret_path() {
            out.set(path, kind.secret_name());
        }
    }
    out
}

fn mesh_block(spec: &MeshSpec, cluster: &Cluster, out: &mut Value, with_peers: bool) {
    let v = &spec.cilium.version;
    let mesh = &spec.clustermesh;
    out.set(&["clustermesh", "useAPIServer"], true);
    out.set(
        &["clustermesh", "apiserver", "service", "type"],
        mesh.service_type.as_str(),
    );
    if mesh.service_type == ServiceType::NodePort {
        out.set(
            &["clustermesh", "apiserver", "service", "nodePort"],
            cluster.clustermesh.port,
        );
    }
    out.set(
        &["clustermesh", "apiserver", "tls", "authMode"],
        mesh.auth_mode.as_str(),
    );
    let (dns, ips) = server_extra_sans(spec, cluster);
    let san_base: &[&str] = if v.san_keys_under_auto() {
        &["clustermesh", "apiserver", "tls", "auto", "server"]
    } else {
        &["clustermesh", "apiserver", "tls", "server"]
    };
    if !dns.is_empty() {
        out.set(&[san_base, &["extraDnsNames"]].concat(), dns);
    }
    if !ips.is_empty() {
        out.set(
            &[san_base, &["extraIpAddresses"]].concat(),
            ips.iter().map(ToString::to_string).collect::<Vec<_>>(),
        );
    }
    out.set(&["clustermesh", "config", "enabled"], true);
    out.set(&["clustermesh", "config", "domain"], mesh.domain.as_str());
    // authMode cluster authenticates a peer only if it is listed, so every cluster lists all
    // the others (itself left out: the agent would ignore it anyway).
    let peers: Vec<Value> = spec
        .clusters
        .iter()
        .filter(|p| with_peers && p.name != cluster.name)
        .map(|p| {
            let mut m = Map::new();
            m.insert("name".into(), Value::from(p.name.as_str()));
            match p.dial(&mesh.domain) {
                Dial::Address(host) => {
                    m.insert("address".into(), Value::from(host_for_values(&host)));
                }
                Dial::Alias { ips, .. } => {
                    m.insert(
                        "ips".into(),
                        Value::from(ips.iter().map(ToString::to_string).collect::<Vec<_>>()),
                    );
                }
            }
            m.insert("port".into(), Value::from(p.clustermesh.port));
            Value::Map(m)
        })
        .collect();
    out.set(&["clustermesh", "config", "clusters"], Value::Seq(peers));
    if v.has_max_connected_clusters() {
        out.set(
            &["clustermesh", "maxConnectedClusters"],
            mesh.max_connected_clusters,
        );
    }
    out.set(
        &["clustermesh", "apiserver", "kvstoremesh", "enabled"],
        mesh.kvstoremesh_enabled(v),
    );
    if v.has_endpoint_slice_sync() {
        out.set(
            &["clustermesh", "enableEndpointSliceSynchronization"],
            mesh.endpoint_slice_sync,
        );
    }
    // Only when asked: the chart's default (0s, never revoked) stays the chart's.
    if let (Some(ttl), true) = (&mesh.cache_ttl, v.has_cache_ttl()) {
        out.set(&["clustermesh", "cacheTTL"], ttl.as_str());
    }
    if let (Some(local), true) = (
        mesh.policy_default_local_cluster,
        v.has_policy_default_local_cluster(),
    ) {
        out.set(&["clustermesh", "policyDefaultLocalCluster"], local);
    }
}

/// How an address goes into `config.clusters[].address`: the chart writes it into
/// `https://<address>:<port>`, so IPv6 needs brackets.
fn host_for_values(h: &Host) -> String {
    h.url_host()
}

/// The final values for `cluster` in `phase`: cmesh's, then common values, then the cluster's.
pub fn cluster_values(spec: &MeshSpec, cluster: &Cluster, phase: Phase, pki: &PkiView) -> Value {
    let mut v = cmesh_values(spec, cluster, phase, pki);
    v.merge(&spec.cilium.values);
    v.merge(&cluster.values);
    v
}

/// The mesh.yaml field a cmesh-set values key comes from, for messages.
fn owner_field(key: &[String], i: usize) -> String {
    let c = item("clusters", i);
    let k: Vec<&str> = key.iter().map(String::as_str).collect();
    match k.as_slice() {
        ["cluster", "name", ..] => child(&c, "name"),
        ["cluster", "id", ..] => child(&c, "id"),
        ["ipam", "operator", m, ..] if m.ends_with("MaskSize") => child(&c, "podCIDRMaskSize"),
        ["ipam", ..] | ["ipv4", ..] | ["ipv6", ..] => child(&c, "podCIDR"),
        ["k8sServiceHost" | "k8sServicePort", ..] => child(&c, "apiServer"),
        ["tls", "ca", ..] => "pki.dir".into(),
        ["clustermesh", "apiserver", "service", "nodePort", ..] => {
            child(&child(&c, "clustermesh"), "port")
        }
        ["clustermesh", "apiserver", "service", ..] => "clustermesh.serviceType".into(),
        ["clustermesh", "apiserver", "tls", "authMode", ..] => "clustermesh.authMode".into(),
        [
            "clustermesh",
            "apiserver",
            "tls",
            _,
            "extraDnsNames" | "extraIpAddresses",
            ..,
        ]
        | ["clustermesh", "apiserver", "tls", "auto", "server", ..] => {
            child(&child(&c, "clustermesh"), "address")
        }
        ["clustermesh", "apiserver", "kvstoremesh", ..] => "clustermesh.kvstoremesh".into(),
        ["clustermesh", "maxConnectedClusters", ..] => "clustermesh.maxConnectedClusters".into(),
        ["clustermesh", "enableEndpointSliceSynchronization", ..] => {
            "clustermesh.endpointSliceSync".into()
        }
        ["clustermesh", "config", "domain", ..] => "clustermesh.domain".into(),
        ["clustermesh", "config", ..] | ["clustermesh", "useAPIServer", ..] => "clusters".into(),
        _ => "clustermesh.certificates".into(),
    }
}

fn overlaps(a: &[String], b: &[String]) -> bool {
    let n = a.len().min(b.len());
    a[..n] == b[..n]
}

/// Warnings for user values that override keys cmesh sets, naming both the user's key and the
/// mesh.yaml field cmesh derives it from.
pub fn override_warnings(spec: &MeshSpec) -> Vec<Diagnostic> {
    let pki = PkiView::placeholder(spec);
    let src = &spec.source;
    let mut out = Vec::new();
    let mut reported_common = Vec::new();
    for (i, cluster) in spec.clusters.iter().enumerate() {
        let owned = build(spec, cluster, Phase::Mesh, &pki, false).leaf_paths();
        let sites = [
            ("cilium.values".to_owned(), &spec.cilium.values, true),
            (
                child(&item("clusters", i), "values"),
                &cluster.values,
                false,
            ),
        ];
        for (base, values, common) in sites {
            for user_key in values.leaf_paths() {
                if user_key.is_empty() {
                    continue;
                }
                let Some(hit) = owned.iter().find(|o| overlaps(o, &user_key)) else {
                    continue;
                };
                let path = user_key.iter().fold(base.clone(), |p, k| child(&p, k));
                if common {
                    if reported_common.contains(&path) {
                        continue;
                    }
                    reported_common.push(path.clone());
                }
                let owner = owner_field(hit, i);
                let dotted = hit.join(".");
                let msg = format!("`{path}` overrides `{dotted}`, which cmesh sets from `{owner}`");
                let d = Diagnostic::new(&codes::VALUE_OVERRIDE, msg)
                    .at(path.clone(), src.nearest_span(&path))
                    .related(Some(owner.clone()), src.nearest_span(&owner), format!("cmesh sets `{dotted}` from here"))
                    .help(format!("remove `{path}` and change `{owner}` instead; user values win, so this value replaces what cmesh computes"))
                    .with_source(src.text());
                out.push(d);
            }
        }
    }
    out
}
