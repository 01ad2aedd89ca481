//! The validated mesh model: what a mesh.yaml means once every rule has passed.
//!
//! Types here hold only valid states (a cluster ID is in range, CIDRs are disjoint, an
//! endpoint has a host and a port). Producing one is the job of [`super::load`].

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use serde::Serialize;

use super::source::SpecSource;
use crate::value::Value;
use crate::version::CiliumVersion;

/// The namespace Cilium is installed into. The chart's templates and cmesh's certificates
/// assume it; it is not configurable in mesh.yaml.
pub const CILIUM_NAMESPACE: &str = "kube-system";

/// A whole mesh.
#[derive(Debug, Clone, Serialize)]
pub struct MeshSpec {
    /// Mesh name (a DNS label).
    pub name: String,
    /// Cilium chart settings.
    pub cilium: CiliumSettings,
    /// Cluster Mesh settings shared by all clusters.
    pub clustermesh: MeshSettings,
    /// Where and how the shared CA and certificates are kept.
    pub pki: PkiSettings,
    /// Where the rendered tree lives in git, for the Argo CD and Flux objects.
    pub gitops: GitopsSettings,
    /// The clusters, in file order.
    pub clusters: Vec<Cluster>,
    /// The text this was read from, for pointing at fields in later diagnostics.
    #[serde(skip)]
    pub source: Arc<SpecSource>,
}

/// Chart version, repository and common values.
#[derive(Debug, Clone, Serialize)]
pub struct CiliumSettings {
    /// Chart version.
    pub version: CiliumVersion,
    /// Chart repository URL.
    pub repo: String,
    /// Values merged into every cluster.
    pub values: Value,
}

/// The default chart repository.
pub const DEFAULT_REPO: &str = "https://helm.cilium.io";

/// How the clustermesh-apiserver is exposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ServiceType {
    /// A NodePort on every node.
    NodePort,
    /// A cloud or MetalLB load balancer.
    LoadBalancer,
}

impl ServiceType {
    /// The spelling in mesh.yaml and in Helm values.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
        }
    }
}

/// `clustermesh.apiserver.tls.authMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Per-peer etcd users `remote-<name>`; needs a shared CA.
    Cluster,
    /// Accepts both the legacy `remote` user and per-cluster users.
    Migration,
    /// One `remote` user for everyone.
    Legacy,
}

impl AuthMode {
    /// The spelling in mesh.yaml and in Helm values.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::Cluster => "cluster",
            AuthMode::Migration => "migration",
            AuthMode::Legacy => "legacy",
        }
    }
}

/// Who issues the clustermesh (and Hubble) certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum CertMethod {
    /// cmesh issues them from the shared CA ahead of time: stable across renders.
    #[serde(rename = "cmesh")]
    Cmesh,
    /// The chart's `genSignedCert` on every render (not GitOps-stable).
    #[serde(rename = "helm")]
    Helm,
    /// A CronJob running certgen in the cluster, reusing the shared `cilium-ca`.
    #[serde(rename = "cronJob")]
    CronJob,
    /// cert-manager with an issuer the user provides.
    #[serde(rename = "certManager")]
    CertManager,
}

impl CertMethod {
    /// The spelling in mesh.yaml.
    pub fn as_str(self) -> &'static str {
        match self {
            CertMethod::Cmesh => "cmesh",
            CertMethod::Helm => "helm",
            CertMethod::CronJob => "cronJob",
            CertMethod::CertManager => "certManager",
        }
    }

    /// True if the CA private key must be present in the cluster (the chart or certgen signs
    /// there).
    pub fn needs_ca_key_in_cluster(self) -> bool {
        matches!(self, CertMethod::Helm | CertMethod::CronJob)
    }
}

/// Cluster Mesh settings.
#[derive(Debug, Clone, Serialize)]
pub struct MeshSettings {
    /// `clustermesh.config.domain`.
    pub domain: String,
    /// apiserver Service type.
    #[serde(rename = "serviceType")]
    pub service_type: ServiceType,
    /// TLS auth mode.
    #[serde(rename = "authMode")]
    pub auth_mode: AuthMode,
    /// KVStoreMesh; `None` keeps the chart's default for the version.
    pub kvstoremesh: Option<bool>,
    /// 255 or 511.
    #[serde(rename = "maxConnectedClusters")]
    pub max_connected_clusters: u16,
    /// EndpointSlice synchronisation (1.16+).
    #[serde(rename = "endpointSliceSync")]
    pub endpoint_slice_sync: bool,
    /// How long agents and KVStoreMesh keep a lost peer's state (1.19+, a Go duration);
    /// `None` keeps the chart's default (never revoked).
    #[serde(rename = "cacheTTL", skip_serializing_if = "Option::is_none")]
    pub cache_ttl: Option<String>,
    /// Whether policy selectors without a cluster select only the local cluster's endpoints
    /// (1.18+, `clustermesh.policyDefaultLocalCluster`); `None` keeps the chart's default
    /// (false on 1.18, true from 1.19). `cmesh upgrade` pins it to false across 1.19.
    #[serde(
        rename = "policyDefaultLocalCluster",
        skip_serializing_if = "Option::is_none"
    )]
    pub policy_default_local_cluster: Option<bool>,
    /// Certificate method.
    pub certificates: CertMethod,
}

impl MeshSettings {
    /// Whether KVStoreMesh ends up enabled on `version`.
    pub fn kvstoremesh_enabled(&self, version: &CiliumVersion) -> bool {
        self.kvstoremesh
            .unwrap_or_else(|| version.kvstoremesh_default())
    }
}

/// Private-key algorithm for the CA and leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum KeyAlgorithm {
    /// ECDSA on P-256 with SHA-256.
    #[serde(rename = "ecdsa-p256")]
    EcdsaP256,
    /// RSA 2048.
    #[serde(rename = "rsa-2048")]
    Rsa2048,
    /// RSA 4096.
    #[serde(rename = "rsa-4096")]
    Rsa4096,
}

impl KeyAlgorithm {
    /// The spelling in mesh.yaml.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlgorithm::EcdsaP256 => "ecdsa-p256",
            KeyAlgorithm::Rsa2048 => "rsa-2048",
            KeyAlgorithm::Rsa4096 => "rsa-4096",
        }
    }
}

/// PKI settings.
#[derive(Debug, Clone, Serialize)]
pub struct PkiSettings {
    /// Directory, relative to mesh.yaml unless absolute.
    pub dir: String,
    /// Key algorithm for new keys.
    #[serde(rename = "keyAlgorithm")]
    pub key_algorithm: KeyAlgorithm,
    /// CA validity in days.
    #[serde(rename = "caValidityDays")]
    pub ca_validity_days: u32,
    /// Leaf validity in days.
    #[serde(rename = "certValidityDays")]
    pub cert_validity_days: u32,
}

/// The git repository the rendered tree is committed to, which the Argo CD and Flux objects
/// read values and manifests from. `render --git-repo/--git-revision/--git-path` override it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GitopsSettings {
    /// Repository URL (`https://…` or `ssh://…`/`git@…`); `None` renders a placeholder and warns.
    #[serde(rename = "repoURL")]
    pub repo_url: Option<String>,
    /// Branch, tag or commit to follow.
    pub revision: String,
    /// The rendered tree's directory inside the repository (no leading or trailing `/`).
    pub path: String,
    /// The directory (repository-relative) holding `<cluster>/` with the sealed or encrypted
    /// Secrets, outside the rendered tree (which `render` replaces as a whole); `None` for
    /// `<path>-sealed`.
    #[serde(rename = "sealedPath")]
    pub sealed_path: Option<String>,
    /// Flux runs in a management cluster: each HelmRelease and Kustomization reaches its cluster
    /// through `spec.kubeConfig.secretRef` (Secret `<cluster>-kubeconfig`, key `value`).
    #[serde(rename = "fluxKubeConfig")]
    pub flux_kubeconfig: bool,
}

impl GitopsSettings {
    /// The value of a string field by its mesh.yaml key (`repoURL`, `revision`, `path`,
    /// `sealedPath`); `None` when unset or not such a field.
    pub fn field(&self, key: &str) -> Option<&str> {
        match key {
            "repoURL" => self.repo_url.as_deref(),
            "revision" => Some(&self.revision),
            "path" => Some(&self.path),
            "sealedPath" => self.sealed_path.as_deref(),
            _ => None,
        }
    }
}

impl Default for GitopsSettings {
    fn default() -> Self {
        GitopsSettings {
            repo_url: None,
            revision: "HEAD".to_owned(),
            path: "cmesh-out".to_owned(),
            sealed_path: None,
            flux_kubeconfig: false,
        }
    }
}

/// A host: DNS name or IP address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Host {
    /// A DNS name.
    Dns(String),
    /// An IP address.
    Ip(IpAddr),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Dns(d) => f.write_str(d),
            Host::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

impl Serialize for Host {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Host {
    /// How the host appears in a URL authority (`[::1]` for IPv6).
    pub fn url_host(&self) -> String {
        match self {
            Host::Ip(IpAddr::V6(v6)) => format!("[{v6}]"),
            other => other.to_string(),
        }
    }
}

/// A host and port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostPort {
    /// Host.
    pub host: Host,
    /// Port.
    pub port: u16,
}

/// Where peers reach a cluster's clustermesh-apiserver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    /// DNS name or IP dialled directly (the `address` form).
    pub address: Option<Host>,
    /// IPs reached as `<name>.<domain>` (the `ips` form; wins over `address`).
    pub ips: Vec<IpAddr>,
    /// NodePort, or 2379 behind a LoadBalancer.
    pub port: u16,
}

/// What a peer dials to reach a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dial {
    /// A DNS name or IP from `address`.
    Address(Host),
    /// `<name>.<domain>`, resolved to fixed IPs by a host alias.
    Alias {
        /// The name dialled.
        hostname: String,
        /// The IPs it resolves to.
        ips: Vec<IpAddr>,
    },
}

/// One cluster.
#[derive(Debug, Clone, Serialize)]
pub struct Cluster {
    /// `cluster.name`.
    pub name: String,
    /// `cluster.id`.
    pub id: u16,
    /// kubeconfig path (relative to mesh.yaml), or `None` for `$KUBECONFIG`/`~/.kube/config`.
    pub kubeconfig: Option<String>,
    /// kubeconfig context, or `None` for the current one.
    pub context: Option<String>,
    /// The Kubernetes API server the agents use (`k8sServiceHost`/`k8sServicePort`).
    #[serde(rename = "apiServer")]
    pub api_server: Option<HostPort>,
    /// Pod CIDR pools (IPv4 and/or IPv6).
    #[serde(rename = "podCIDRs", serialize_with = "ser_nets")]
    pub pod_cidrs: Vec<IpNet>,
    /// Per-node mask size for the pools.
    #[serde(rename = "podCIDRMaskSize")]
    pub pod_cidr_mask_size: Option<u8>,
    /// Service CIDRs.
    #[serde(rename = "serviceCIDRs", serialize_with = "ser_nets")]
    pub service_cidrs: Vec<IpNet>,
    /// Node CIDRs.
    #[serde(rename = "nodeCIDRs", serialize_with = "ser_nets")]
    pub node_cidrs: Vec<IpNet>,
    /// clustermesh endpoint.
    pub clustermesh: Endpoint,
    /// Per-cluster values.
    pub values: Value,
}

fn ser_nets<S: serde::Serializer>(nets: &[IpNet], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(nets.iter().map(ToString::to_string))
}

impl Cluster {
    /// What peers dial to reach this cluster, under `domain`.
    pub fn dial(&self, domain: &str) -> Dial {
        if !self.clustermesh.ips.is_empty() {
            Dial::Alias {
                hostname: format!("{}.{}", self.name, domain),
                ips: self.clustermesh.ips.clone(),
            }
        } else {
            // Validation guarantees one of the two forms.
            Dial::Address(
                self.clustermesh
                    .address
                    .clone()
                    .unwrap_or_else(|| Host::Dns(format!("{}.{}", self.name, domain))),
            )
        }
    }

    /// The endpoint URL the chart writes for this cluster in its peers' configuration.
    pub fn endpoint_url(&self, domain: &str) -> String {
        let host = match self.dial(domain) {
            Dial::Address(h) => h.url_host(),
            Dial::Alias { hostname, .. } => hostname,
        };
        format!("https://{host}:{}", self.clustermesh.port)
    }

    /// IPv4 pod pools.
    pub fn pod_cidrs_v4(&self) -> impl Iterator<Item = &IpNet> {
        self.pod_cidrs.iter().filter(|n| matches!(n, IpNet::V4(_)))
    }

    /// IPv6 pod pools.
    pub fn pod_cidrs_v6(&self) -> impl Iterator<Item = &IpNet> {
        self.pod_cidrs.iter().filter(|n| matches!(n, IpNet::V6(_)))
    }
}

impl MeshSpec {
    /// Finds a cluster by name.
    pub fn cluster(&self, name: &str) -> Option<&Cluster> {
        self.clusters.iter().find(|c| c.name == name)
    }

    /// Index of a cluster in file order (its position in mesh.yaml's `clusters` list).
    pub fn cluster_index(&self, name: &str) -> Option<usize> {
        self.clusters.iter().position(|c| c.name == name)
    }
}
