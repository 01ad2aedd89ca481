//! Which certificates a cluster needs, and how the chart version would name them.
//!
//! CNs and SANs follow the chart's own `genSignedCert` calls for each version (see
//! docs/ARCHITECTURE.md, "Sources"), plus the cluster's own clustermesh address so that peers
//! dialling it verify.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;

use super::ca::LeafRequest;
use crate::spec::{AuthMode, CILIUM_NAMESPACE, Cluster, Dial, Host, MeshSpec};
use crate::value::Value;

/// A kind of leaf certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LeafKind {
    /// clustermesh-apiserver's etcd server certificate.
    ClustermeshServer,
    /// clustermesh-apiserver admin client (`admin-<name>`).
    ClustermeshAdmin,
    /// Client certificate agents and KVStoreMesh use towards peers (`remote[-<name>]`).
    ClustermeshRemote,
    /// Client certificate agents use towards the local KVStoreMesh (`local-<name>`).
    ClustermeshLocal,
    /// Hubble server in each agent.
    HubbleServer,
    /// Hubble Relay's client towards agents.
    HubbleRelayClient,
    /// Hubble Relay's server (when its TLS server is on).
    HubbleRelayServer,
    /// Hubble UI's client towards Relay (when Relay's TLS server is on).
    HubbleUiClient,
}

impl LeafKind {
    /// All kinds, in a stable order.
    pub const ALL: [LeafKind; 8] = [
        LeafKind::ClustermeshServer,
        LeafKind::ClustermeshAdmin,
        LeafKind::ClustermeshRemote,
        LeafKind::ClustermeshLocal,
        LeafKind::HubbleServer,
        LeafKind::HubbleRelayClient,
        LeafKind::HubbleRelayServer,
        LeafKind::HubbleUiClient,
    ];

    /// File stem in `pki.dir/clusters/<cluster>/`.
    pub fn file_stem(self) -> &'static str {
        match self {
            LeafKind::ClustermeshServer => "clustermesh-server",
            LeafKind::ClustermeshAdmin => "clustermesh-admin",
            LeafKind::ClustermeshRemote => "clustermesh-remote",
            LeafKind::ClustermeshLocal => "clustermesh-local",
            LeafKind::HubbleServer => "hubble-server",
            LeafKind::HubbleRelayClient => "hubble-relay-client",
            LeafKind::HubbleRelayServer => "hubble-relay-server",
            LeafKind::HubbleUiClient => "hubble-ui-client",
        }
    }

    /// The Secret the chart mounts it from.
    pub fn secret_name(self) -> &'static str {
        match self {
            LeafKind::ClustermeshServer => "clustermesh-apiserver-server-cert",
            LeafKind::ClustermeshAdmin => "clustermesh-apiserver-admin-cert",
            LeafKind::ClustermeshRemote => "clustermesh-apiserver-remote-cert",
            LeafKind::ClustermeshLocal => "clustermesh-apiserver-local-cert",
            LeafKind::HubbleServer => "hubble-server-certs",
            LeafKind::HubbleRelayClient => "hubble-relay-client-certs",
            LeafKind::HubbleRelayServer => "hubble-relay-server-certs",
            LeafKind::HubbleUiClient => "hubble-ui-client-certs",
        }
    }

    /// The values key holding `cert`/`key` where the chart accepts the certificate as values;
    /// `None` for the local certificate, which no version accepts as values.
    pub fn values_path(self) -> Option<&'static [&'static str]> {
        Some(match self {
            LeafKind::ClustermeshServer => &["clustermesh", "apiserver", "tls", "server"],
            LeafKind::ClustermeshAdmin => &["clustermesh", "apiserver", "tls", "admin"],
            LeafKind::ClustermeshRemote => &["clustermesh", "apiserver", "tls", "remote"],
            LeafKind::ClustermeshLocal => return None,
            LeafKind::HubbleServer => &["hubble", "tls", "server"],
            LeafKind::HubbleRelayClient => &["hubble", "relay", "tls", "client"],
            LeafKind::HubbleRelayServer => &["hubble", "relay", "tls", "server"],
            LeafKind::HubbleUiClient => &["hubble", "ui", "tls", "client"],
        })
    }

    /// True for the Cluster Mesh certificates (only needed in the mesh phase).
    pub fn is_clustermesh(self) -> bool {
        matches!(
            self,
            LeafKind::ClustermeshServer
                | LeafKind::ClustermeshAdmin
                | LeafKind::ClustermeshRemote
                | LeafKind::ClustermeshLocal
        )
    }

    /// The `existingSecret` values key, for Hubble certificates on versions that have it.
    pub fn existing_secret_path(self) -> Option<&'static [&'static str]> {
        match self {
            LeafKind::HubbleServer => Some(&["hubble", "tls", "server", "existingSecret"]),
            LeafKind::HubbleRelayClient => {
                Some(&["hubble", "relay", "tls", "client", "existingSecret"])
            }
            LeafKind::HubbleRelayServer => {
                Some(&["hubble", "relay", "tls", "server", "existingSecret"])
            }
            LeafKind::HubbleUiClient => Some(&["hubble", "ui", "tls", "client", "existingSecret"]),
            _ => None,
        }
    }
}

/// Hubble features of a cluster that decide which Hubble certificates exist, read from the
/// user's merged values with the chart's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubbleFeatures {
    /// hubble.enabled && hubble.tls.enabled.
    pub tls: bool,
    /// hubble.relay.enabled.
    pub relay: bool,
    /// hubble.relay.tls.server.enabled.
    pub relay_tls_server: bool,
    /// hubble.ui.enabled.
    pub ui: bool,
}

impl HubbleFeatures {
    /// Reads the features from user values (chart defaults: hubble and its TLS on, relay,
    /// relay TLS server and UI off).
    pub fn from_values(values: &Value) -> Self {
        let flag = |path: &[&str], default: bool| {
            values.get(path).and_then(Value::as_bool).unwrap_or(default)
        };
        Self {
            tls: flag(&["hubble", "enabled"], true) && flag(&["hubble", "tls", "enabled"], true),
            relay: flag(&["hubble", "relay", "enabled"], false),
            relay_tls_server: flag(&["hubble", "relay", "tls", "server", "enabled"], false),
            ui: flag(&["hubble", "ui", "enabled"], false),
        }
    }
}

/// The user's values for one cluster: common values with the cluster's merged over them.
pub fn user_values(spec: &MeshSpec, cluster: &Cluster) -> Value {
    let mut v = spec.cilium.values.clone();
    v.merge(&cluster.values);
    v
}

/// Extra SANs a cluster's server certificate needs beyond the chart's defaults: what peers
/// dial (its address, or `<name>.<domain>` and the IPs of the `ips` form).
pub fn server_extra_sans(spec: &MeshSpec, cluster: &Cluster) -> (Vec<String>, Vec<IpAddr>) {
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    match cluster.dial(&spec.clustermesh.domain) {
        Dial::Address(Host::Dns(d)) => dns.push(d),
        Dial::Address(Host::Ip(ip)) => ips.push(ip),
        Dial::Alias {
            hostname,
            ips: alias_ips,
        } => {
            // `*.mesh.cilium.io` already covers the default domain.
            if spec.clustermesh.domain != crate::spec::DEFAULT_DOMAIN {
                dns.push(hostname);
            }
            ips.extend(alias_ips);
        }
    }
    (dns, ips)
}

/// Every leaf a cluster needs under `certificates: cmesh`, with its request.
pub fn leaves_for(spec: &MeshSpec, cluster: &Cluster) -> Vec<(LeafKind, LeafRequest)> {
    let v = &spec.cilium.version;
    let name = &cluster.name;
    let mut out = Vec::new();
    let (extra_dns, extra_ips) = server_extra_sans(spec, cluster);
    let user = user_values(spec, cluster);
    let list = |path: &[&str]| -> Vec<String> {
        match user.get(path) {
            Some(Value::Seq(items)) => items
                .iter()
                .filter_map(|i| i.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        }
    };
    let ip_list = |path: &[&str]| -> Vec<IpAddr> {
        list(path).iter().filter_map(|s| s.parse().ok()).collect()
    };

    let mut server_dns = v.server_default_dns_names(CILIUM_NAMESPACE);
    server_dns.extend(extra_dns);
    let mut server_ips = vec![
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ];
    server_ips.extend(extra_ips);
    dedup(&mut server_dns);
    dedup(&mut server_ips);
    out.push((
        LeafKind::ClustermeshServer,
        LeafRequest {
            common_name: v.server_common_name(CILIUM_NAMESPACE),
            dns_names: server_dns,
            ip_addresses: server_ips,
        },
    ));
    out.push((
        LeafKind::ClustermeshAdmin,
        LeafRequest {
            common_name: format!("admin-{name}"),
            dns_names: if v.admin_has_localhost_san() {
                vec!["localhost".into()]
            } else {
                Vec::new()
            },
            ip_addresses: Vec::new(),
        },
    ));
    out.push((
        LeafKind::ClustermeshRemote,
        LeafRequest {
            common_name: remote_common_name(spec.clustermesh.auth_mode, name),
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
        },
    ));
    if v.has_local_cert() && spec.clustermesh.kvstoremesh_enabled(v) {
        out.push((
            LeafKind::ClustermeshLocal,
            LeafRequest {
                common_name: format!("local-{name}"),
                dns_names: Vec::new(),
                ip_addresses: Vec::new(),
            },
        ));
    }
    let hubble = HubbleFeatures::from_values(&user);
    if hubble.tls {
        let cn = format!("*.{}.hubble-grpc.cilium.io", name.replace('.', "-"));
        let mut dns = vec![cn.clone()];
        dns.extend(list(&["hubble", "tls", "server", "extraDnsNames"]));
        out.push((
            LeafKind::HubbleServer,
            LeafRequest {
                common_name: cn,
                dns_names: dns,
                ip_addresses: ip_list(&["hubble", "tls", "server", "extraIpAddresses"]),
            },
        ));
        if hubble.relay {
            let cn = "*.hubble-relay.cilium.io".to_owned();
            out.push((
                LeafKind::HubbleRelayClient,
                LeafRequest {
                    common_name: cn.clone(),
                    dns_names: vec![cn.clone()],
                    ip_addresses: Vec::new(),
                },
            ));
            if hubble.relay_tls_server {
                let mut dns = vec![cn.clone()];
                dns.extend(list(&["hubble", "relay", "tls", "server", "extraDnsNames"]));
                out.push((
                    LeafKind::HubbleRelayServer,
                    LeafRequest {
                        common_name: cn,
                        dns_names: dns,
                        ip_addresses: ip_list(&[
                            "hubble",
                            "relay",
                            "tls",
                            "server",
                            "extraIpAddresses",
                        ]),
                    },
                ));
                if hubble.ui {
                    let cn = "*.hubble-ui.cilium.io".to_owned();
                    out.push((
                        LeafKind::HubbleUiClient,
                        LeafRequest {
                            common_name: cn.clone(),
                            dns_names: vec![cn],
                            ip_addresses: Vec::new(),
                        },
                    ));
                }
            }
        }
    }
    out
}

/// The remote client certificate's CN for an auth mode.
pub fn remote_common_name(auth: AuthMode, cluster: &str) -> String {
    match auth {
        AuthMode::Cluster => format!("remote-{cluster}"),
        AuthMode::Migration | AuthMode::Legacy => "remote".to_owned(),
    }
}

fn dedup<T: PartialEq + Clone>(v: &mut Vec<T>) {
    let mut seen: Vec<T> = Vec::with_capacity(v.len());
    v.retain(|x| {
        if seen.contains(x) {
            false
        } else {
            seen.push(x.clone());
            true
        }
    });
}
