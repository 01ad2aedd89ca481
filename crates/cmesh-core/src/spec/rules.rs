//! Semantic rules over a decoded spec: uniqueness, ranges, CIDR overlaps, endpoints,
//! version gates and certificate method constraints.
//!
//! Each rule reports every violation it finds, pointing at the field (and, for pairs, at the
//! other field) through the source index.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;

use super::codes;
use super::decode::{Cidr, RawCluster, RawSpec, is_dns1123_label};
use super::model::{AuthMode, CertMethod, Host, ServiceType};
use super::source::{SpecSource, child, item};
use crate::diag::{Diagnostic, Severity};
use crate::value::Value;
use crate::version::CiliumVersion;

/// Smallest number of per-node pod CIDRs a pool must hold.
const MIN_NODES: u32 = 4;

pub(crate) struct Rules<'a> {
    pub src: &'a SpecSource,
    pub spec: &'a RawSpec,
    pub diags: Vec<Diagnostic>,
}

impl<'a> Rules<'a> {
    pub fn new(src: &'a SpecSource, spec: &'a RawSpec) -> Self {
        Self {
            src,
            spec,
            diags: Vec::new(),
        }
    }

    fn push(&mut self, d: Diagnostic) {
        self.diags.push(d.with_source(self.src.text()));
    }

    fn at(&self, rule: &crate::diag::Rule, path: &str, message: String) -> Diagnostic {
        Diagnostic::new(rule, message).at(path.to_owned(), self.src.nearest_span(path))
    }

    fn related(&self, d: Diagnostic, path: &str, message: impl Into<String>) -> Diagnostic {
        d.related(Some(path.to_owned()), self.src.nearest_span(path), message)
    }

    pub fn run(mut self) -> Vec<Diagnostic> {
        self.mesh_name();
        self.cluster_count();
        self.names();
        self.ids();
        self.cidrs();
        self.mask_sizes();
        self.families();
        self.endpoints();
        self.version_gates();
        self.values_rules();
        self.certificates();
        self.diags
    }

    fn mesh_name(&mut self) {
        if let Some(name) = &self.spec.name
            && !is_dns1123_label(name)
        {
            let d = self
                    .at(&codes::MESH_NAME, "name", format!("mesh name `{name}` is not a DNS-1123 label"))
                    .help("use lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63 characters");
            self.push(d);
        }
    }

    fn cluster_count(&mut self) {
        let n = self.spec.clusters.len();
        let max = usize::from(self.spec.mesh.max_connected_clusters);
        if n < 2 && self.src.span("clusters").is_some() {
            let d = self
                .at(
                    &codes::SINGLE_CLUSTER,
                    "clusters",
                    format!("the mesh has {n} cluster(s); a mesh connects at least two"),
                )
                .help("add the other clusters to `clusters`");
            self.push(d);
        }
        if (max == 255 || max == 511) && n > max {
            let d = self
                .at(&codes::TOO_MANY_CLUSTERS, "clusters", format!("the mesh has {n} clusters, more than maxConnectedClusters {max} allows"))
                .help(if max == 255 { "set `clustermesh.maxConnectedClusters: 511` (Cilium >= 1.15, new clusters only)" } else { "a mesh holds at most 511 clusters" });
            self.push(d);
        }
    }

    fn names(&mut self) {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, c) in self.spec.clusters.iter().enumerate() {
            let Some(name) = c.name.as_deref() else {
                continue;
            };
            let path = child(&item("clusters", i), "name");
            if name == "default" {
                let d = self
                    .at(&codes::NAME_DEFAULT, &path, "cluster name `default` is reserved for clusters outside a mesh (ID 0)".into())
                    .help("give the cluster a real name; Cilium rejects `default` with a non-zero cluster ID");
                self.push(d);
            } else if name.len() > 32 {
                let d = self
                    .at(
                        &codes::NAME_LENGTH,
                        &path,
                        format!(
                            "cluster name `{name}` has {} characters; Cilium allows at most 32",
                            name.len()
                        ),
                    )
                    .help("shorten the name");
                self.push(d);
            } else if !is_dns1123_label(name) {
                let d = self
                    .at(&codes::NAME_FORMAT, &path, format!("cluster name `{name}` is not a DNS-1123 label"))
                    .help(format!("use lowercase letters, digits and '-', starting and ending with a letter or digit (for example `{}`)", sanitize(name)));
                self.push(d);
            }
            if let Some(&first) = seen.get(name) {
                let d = self.at(
                    &codes::DUPLICATE_NAME,
                    &path,
                    format!("cluster name `{name}` is used twice"),
                );
                let d = self.related(
                    d,
                    &child(&item("clusters", first), "name"),
                    "first used here",
                );
                self.push(d.help("every cluster in a mesh needs its own name"));
            } else {
                seen.insert(name, i);
            }
        }
    }

    fn ids(&mut self) {
        let max = self.spec.mesh.max_connected_clusters;
        if max != 255 && max != 511 {
            let d = self
                .at(
                    &codes::MAX_CLUSTERS,
                    "clustermesh.maxConnectedClusters",
                    format!("maxConnectedClusters is {max}; Cilium allows only 255 or 511"),
                )
                .help("use 255 (the default) or 511");
            self.push(d);
        }
        let limit = if max == 511 { 511 } else { 255 };
        let mut seen: HashMap<u16, usize> = HashMap::new();
        for (i, c) in self.spec.clusters.iter().enumerate() {
            let Some(id) = c.id else { continue };
            let path = child(&item("clusters", i), "id");
            if id == 0 || id > limit {
                let (msg, help) = if id == 0 {
                    (
                        "cluster ID 0 is reserved for clusters outside a mesh".to_owned(),
                        format!("pick an unused ID in 1..{limit}"),
                    )
                } else if id <= 511 {
                    (
                        format!("cluster ID {id} is outside 1..{limit}"),
                        "use an ID in 1..255, or set `clustermesh.maxConnectedClusters: 511` (Cilium >= 1.15) for IDs up to 511".to_owned(),
                    )
                } else {
                    (
                        format!("cluster ID {id} is outside 1..{limit}"),
                        format!("use an ID in 1..{limit}"),
                    )
                };
                let msg = if id == u16::MAX {
                    "cluster ID is out of range".to_owned()
                } else {
                    msg
                };
                let d = self.at(&codes::ID_RANGE, &path, msg).help(help);
                self.push(d);
                continue;
            }
            if let Some(&first) = seen.get(&id) {
                let other = self.spec.clusters[first].name.clone().unwrap_or_default();
                let d = self.at(
                    &codes::DUPLICATE_ID,
                    &path,
                    format!("cluster ID {id} is already used by `{other}`"),
                );
                let d = self.related(d, &child(&item("clusters", first), "id"), "first used here");
                self.push(d.help("cluster IDs must be unique across the mesh; Cilium refuses to connect two clusters with one ID"));
            } else {
                seen.insert(id, i);
            }
        }
    }

    fn all_cidrs(&self) -> Vec<(&'a Cidr, &'static str, usize)> {
        let mut out = Vec::new();
        for (i, c) in self.spec.clusters.iter().enumerate() {
            out.extend(c.pod_cidrs.iter().map(|x| (x, "pod CIDR", i)));
            out.extend(c.service_cidrs.iter().map(|x| (x, "service CIDR", i)));
            out.extend(c.node_cidrs.iter().map(|x| (x, "node CIDR", i)));
        }
        out
    }

    fn cidrs(&mut self) {
        let all = self.all_cidrs();
        for (cidr, _, _) in &all {
            if cidr.net.trunc() != cidr.net {
                let d = self
                    .at(
                        &codes::CIDR_HOST_BITS,
                        &cidr.path,
                        format!("`{}` has host bits set", cidr.net),
                    )
                    .help(format!("write the network address: {}", cidr.net.trunc()));
                self.push(d);
            }
        }
        // Sort by start address so each CIDR is compared only with those that can overlap it.
        let mut sorted: Vec<usize> = (0..all.len()).collect();
        sorted.sort_by_key(|&k| (family(&all[k].0.net), all[k].0.net.trunc().network(), k));
        for (pos, &a) in sorted.iter().enumerate() {
            let na = all[a].0.net.trunc();
            for &b in &sorted[pos + 1..] {
                let nb = all[b].0.net.trunc();
                if family(&na) != family(&nb) || nb.network() > na.broadcast() {
                    break;
                }
                let (first, second) = if a < b { (a, b) } else { (b, a) };
                let (c1, kind1, i1) = all[first];
                let (c2, kind2, i2) = all[second];
                let who = |i: usize| {
                    self.spec.clusters[i]
                        .name
                        .clone()
                        .unwrap_or_else(|| format!("clusters[{i}]"))
                };
                let msg = if i1 == i2 {
                    format!(
                        "{kind2} {} of `{}` overlaps its {kind1} {}",
                        c2.net,
                        who(i2),
                        c1.net
                    )
                } else {
                    format!(
                        "{kind2} {} of `{}` overlaps {kind1} {} of `{}`",
                        c2.net,
                        who(i2),
                        c1.net,
                        who(i1)
                    )
                };
                let d = self.at(&codes::CIDR_OVERLAP, &c2.path, msg);
                let d = self.related(d, &c1.path, format!("{kind1} of `{}`", who(i1)));
                let d = d.help("pod, service and node ranges must be unique across every cluster of a mesh, because pods reach each other by IP; pick a range no other cluster uses");
                self.push(d);
            }
        }
    }

    fn mask_sizes(&mut self) {
        for (i, c) in self.spec.clusters.iter().enumerate() {
            let has_v4 = c.pod_cidrs.iter().any(|x| matches!(x.net, IpNet::V4(_)));
            let mask_path = child(&item("clusters", i), "podCIDRMaskSize");
            for cidr in &c.pod_cidrs {
                let (mask, from_spec) = match (cidr.net, c.pod_cidr_mask_size) {
                    (IpNet::V4(_), Some(m)) => (m, true),
                    (IpNet::V4(_), None) => (24, false),
                    (IpNet::V6(_), Some(m)) if !has_v4 => (m, true),
                    (IpNet::V6(_), _) => (120, false),
                };
                let max_bits = if matches!(cidr.net, IpNet::V4(_)) {
                    32
                } else {
                    128
                };
                let prefix = cidr.net.prefix_len();
                let (path, origin) = if from_spec {
                    (mask_path.clone(), format!("podCIDRMaskSize {mask}"))
                } else {
                    (
                        cidr.path.clone(),
                        format!("the chart's default per-node mask /{mask}"),
                    )
                };
                if mask <= prefix || mask > max_bits {
                    let d = self
                        .at(&codes::MASK_SIZE, &path, format!("{origin} must be longer than the /{prefix} prefix of pool {} and at most {max_bits}", cidr.net))
                        .help(format!("each node gets a /{mask} out of the pool; choose a mask between {} and {max_bits}, or a larger pool", prefix + 1));
                    let d = if from_spec {
                        self.related(d, &cidr.path, "pool")
                    } else {
                        d
                    };
                    self.push(d);
                } else if u32::from(mask - prefix) < MIN_NODES.ilog2() {
                    let nodes = 1u32 << (mask - prefix);
                    let d = self
                        .at(&codes::MASK_ROOM, &path, format!("{origin} splits the pool {} into {nodes} node range(s), fewer than {MIN_NODES}", cidr.net))
                        .help(format!("use a mask of at least {} or a larger pool, so the pool holds at least {MIN_NODES} nodes", prefix + 2));
                    let d = if from_spec {
                        self.related(d, &cidr.path, "pool")
                    } else {
                        d
                    };
                    self.push(d);
                }
            }
        }
    }

    fn families(&mut self) {
        let fam = |c: &RawCluster| {
            let v4 = c.pod_cidrs.iter().any(|x| matches!(x.net, IpNet::V4(_)));
            let v6 = c.pod_cidrs.iter().any(|x| matches!(x.net, IpNet::V6(_)));
            (v4, v6)
        };
        let clusters = &self.spec.clusters;
        for (i, a) in clusters.iter().enumerate() {
            if a.pod_cidrs.is_empty() {
                continue;
            }
            for (j, b) in clusters.iter().enumerate().skip(i + 1) {
                if b.pod_cidrs.is_empty() {
                    continue;
                }
                let (a4, a6) = fam(a);
                let (b4, b6) = fam(b);
                if !((a4 && b4) || (a6 && b6)) {
                    let path = child(&item("clusters", j), "podCIDR");
                    let d = self.at(
                        &codes::IP_FAMILY,
                        &path,
                        format!(
                            "`{}` and `{}` have no IP family in common; their pods cannot reach each other",
                            a.name.as_deref().unwrap_or("?"),
                            b.name.as_deref().unwrap_or("?")
                        ),
                    );
                    let d = self.related(
                        d,
                        &child(&item("clusters", i), "podCIDR"),
                        "the other cluster's pods",
                    );
                    self.push(d.help(
                        "give both clusters a pool of the same family (dual stack works with both)",
                    ));
                }
            }
        }
    }

    fn endpoints(&mut self) {
        let nodeport = self.spec.mesh.service_type == ServiceType::NodePort;
        let bug = self
            .spec
            .version
            .as_ref()
            .is_some_and(CiliumVersion::has_shared_nodeport_bug);
        let mut ports: HashMap<u16, usize> = HashMap::new();
        let mut endpoints: HashMap<(String, u16), usize> = HashMap::new();
        for (i, c) in self.spec.clusters.iter().enumerate() {
            let base = child(&item("clusters", i), "clustermesh");
            if !c.endpoint_given {
                continue;
            }
            if c.address.is_none()
                && c.ips.is_empty()
                && self.src.span(&child(&base, "address")).is_none()
                && self.src.span(&child(&base, "ips")).is_none()
            {
                let d = self
                    .at(&codes::NO_ENDPOINT, &base, format!("cluster `{}` has no clustermesh address or ips", c.name.as_deref().unwrap_or("?")))
                    .help("add `address:` (the DNS name or IP the other clusters dial) or `ips:` (reached as <name>.<domain>)");
                self.push(d);
            }
            if c.address.is_some() && !c.ips.is_empty() {
                let d = self
                    .at(&codes::ADDRESS_AND_IPS, &child(&base, "address"), "both `address` and `ips` are set; the chart uses `ips` and ignores `address`".into())
                    .help("remove one of them");
                let d = self.related(d, &child(&base, "ips"), "this wins");
                self.push(d);
            }
            let Some(port) = c.port else {
                let d = self
                    .at(
                        &codes::NO_PORT,
                        &base,
                        format!(
                            "cluster `{}` has no clustermesh port",
                            c.name.as_deref().unwrap_or("?")
                        ),
                    )
                    .help(if nodeport {
                        "add `port:` with the apiserver's NodePort, such as 32379"
                    } else {
                        "add `port: 2379` (the LoadBalancer port)"
                    });
                self.push(d);
                continue;
            };
            if port == 0 {
                continue; // already reported as out of range
            }
            let port_path = child(&base, "port");
            if nodeport && !(30000..=32767).contains(&port) {
                let d = self
                    .at(&codes::NODEPORT_RANGE, &port_path, format!("NodePort {port} is outside Kubernetes' default NodePort range 30000-32767"))
                    .help("pick a port in 30000-32767, or set `clustermesh.serviceType: LoadBalancer`");
                self.push(d);
            }
            if !nodeport && port != 2379 {
                let d = self
                    .at(&codes::LB_PORT, &port_path, format!("port is {port}, but the clustermesh-apiserver LoadBalancer Service listens on 2379"))
                    .help("use port 2379 unless something in front of the load balancer maps the port");
                self.push(d);
            }
            // Identical endpoints: two clusters claim one apiserver.
            let mut dup = None;
            let keys: Vec<(String, u16)> = if c.ips.is_empty() {
                c.address.iter().map(|h| (host_key(h), port)).collect()
            } else {
                c.ips.iter().map(|ip| (ip.to_string(), port)).collect()
            };
            for k in keys {
                match endpoints.get(&k) {
                    Some(&first) if first != i => dup = Some((first, k.0.clone())),
                    _ => {
                        endpoints.insert(k, i);
                    }
                }
            }
            if let Some((first, host)) = dup {
                let other = self.spec.clusters[first].name.clone().unwrap_or_default();
                let d = self.at(
                    &codes::DUPLICATE_ENDPOINT,
                    &base,
                    format!("endpoint {host}:{port} is also the endpoint of `{other}`"),
                );
                let d = self.related(
                    d,
                    &child(&item("clusters", first), "clustermesh"),
                    "same endpoint",
                );
                self.push(d.help("each cluster's clustermesh-apiserver needs its own address or port; peers would connect to the wrong cluster"));
                continue;
            }
            if nodeport && bug {
                if let Some(&first) = ports.get(&port) {
                    let other = self.spec.clusters[first].name.clone().unwrap_or_default();
                    let version = self
                        .spec
                        .version
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default();
                    let d = self.at(
                        &codes::SHARED_NODEPORT,
                        &port_path,
                        format!("NodePort {port} is also used by `{other}`; on Cilium {version} agents then silently connect to their own clustermesh-apiserver (cilium/cilium#24692, fixed in 1.19)"),
                    );
                    let d = self.related(
                        d,
                        &child(&child(&item("clusters", first), "clustermesh"), "port"),
                        "same NodePort",
                    );
                    self.push(d.help("give every cluster its own NodePort (for example 32379, 32380, ...), use LoadBalancer, or upgrade to Cilium >= 1.19"));
                } else {
                    ports.insert(port, i);
                }
            }
        }
    }

    fn version_gates(&mut self) {
        let Some(v) = self.spec.version.clone() else {
            return;
        };
        if !v.is_supported() {
            let d = self
                .at(&codes::VERSION_RANGE, "cilium.version", format!("Cilium {v} is outside the supported range 1.14.0 .. 1.20.x"))
                .help("use a chart version from 1.14.0 (the first with Helm-only Cluster Mesh) to 1.20.x");
            self.push(d);
            return;
        }
        if self.spec.mesh.endpoint_slice_sync && !v.has_endpoint_slice_sync() {
            let d = self
                .at(
                    &codes::NEEDS_VERSION,
                    "clustermesh.endpointSliceSync",
                    format!("endpointSliceSync needs Cilium >= 1.16; this mesh uses {v}"),
                )
                .help("upgrade `cilium.version` to 1.16 or later, or remove endpointSliceSync");
            self.push(d);
        }
        if self.spec.mesh.cache_ttl.is_some() && !v.has_cache_ttl() {
            let d = self
                .at(
                    &codes::NEEDS_VERSION,
                    "clustermesh.cacheTTL",
                    format!("cacheTTL needs Cilium >= 1.19; this mesh uses {v}"),
                )
                .help("upgrade `cilium.version` to 1.19 or later, or remove cacheTTL (before 1.19 a lost peer's state is kept until it comes back)");
            self.push(d);
        }
        if self.spec.mesh.policy_default_local_cluster.is_some()
            && !v.has_policy_default_local_cluster()
        {
            let d = self
                .at(
                    &codes::NEEDS_VERSION,
                    "clustermesh.policyDefaultLocalCluster",
                    format!("policyDefaultLocalCluster needs Cilium >= 1.18; this mesh uses {v}"),
                )
                .help("remove it (before 1.18 policies select endpoints in every cluster, as policyDefaultLocalCluster: false does)");
            self.push(d);
        }
        if self.spec.mesh.max_connected_clusters == 511 && !v.has_max_connected_clusters() {
            let d = self
                .at(
                    &codes::NEEDS_VERSION,
                    "clustermesh.maxConnectedClusters",
                    format!("maxConnectedClusters 511 needs Cilium >= 1.15; this mesh uses {v}"),
                )
                .help("upgrade `cilium.version` to 1.15 or later, or use 255");
            self.push(d);
        }
        if self.spec.mesh.certificates == CertMethod::CertManager && !v.has_cert_manager_subject() {
            for key in ["subject", "privateKey"] {
                let path = ["clustermesh", "apiserver", "tls", "auto", key];
                for site in self.value_sites(&path) {
                    let d = self
                        .at(&codes::NEEDS_VERSION, &site, format!("cert-manager `{key}` settings need Cilium >= 1.20; this mesh uses {v}"))
                        .help("remove the setting or upgrade `cilium.version` to 1.20");
                    self.push(d);
                }
            }
        }
    }

    /// Every path in mesh.yaml where a values key is set (common values and each cluster's).
    fn value_sites(&self, keys: &[&str]) -> Vec<String> {
        let mut sites = Vec::new();
        if self.spec.values.get(keys).is_some() {
            sites.push(values_path("cilium.values", keys));
        }
        for (i, c) in self.spec.clusters.iter().enumerate() {
            if c.values.get(keys).is_some() {
                sites.push(values_path(&child(&item("clusters", i), "values"), keys));
            }
        }
        sites
    }

    /// The path where a cluster's effective value for `keys` comes from.
    fn effective_site(&self, i: usize, keys: &[&str]) -> Option<(String, &'a Value)> {
        let c = &self.spec.clusters[i];
        if let Some(v) = c.values.get(keys) {
            return Some((values_path(&child(&item("clusters", i), "values"), keys), v));
        }
        self.spec
            .values
            .get(keys)
            .map(|v| (values_path("cilium.values", keys), v))
    }

    fn values_rules(&mut self) {
        let Some(v) = self.spec.version.clone() else {
            return;
        };
        let mut reported = Vec::new();
        for i in 0..self.spec.clusters.len() {
            // kubeProxyReplacement: the chart takes true/false; 1.14/1.15 also the deprecated words.
            if let Some((path, value)) = self.effective_site(i, &["kubeProxyReplacement"])
                && !reported.contains(&path)
            {
                reported.push(path.clone());
                let word = match value {
                    Value::Bool(_) => None,
                    Value::Str(s) if s == "true" || s == "false" => None,
                    Value::Str(s) => Some(s.clone()),
                    other => Some(format!("{other:?}")),
                };
                if let Some(word) = word {
                    let legacy = ["strict", "partial", "disabled"].contains(&word.as_str());
                    let fix = match word.as_str() {
                        "strict" => "true",
                        _ => "false",
                    };
                    let mut d = self
                            .at(&codes::KPR_VALUE, &path, if legacy && v.kube_proxy_replacement_legacy_words() {
                                format!("kubeProxyReplacement `{word}` is deprecated in Cilium {v} and rejected from 1.16")
                            } else {
                                format!("kubeProxyReplacement `{word}` is rejected by the Cilium {v} chart, which accepts only true or false")
                            })
                            .help(format!("write `kubeProxyReplacement: {fix}`"));
                    if legacy && v.kube_proxy_replacement_legacy_words() {
                        d.severity = Severity::Warning;
                    }
                    self.push(d);
                }
            }
            // ENI and AWS VPC CNI chaining cannot use IDs 128-255 / 384-511 (cilium#21330).
            let Some(id) = self.spec.clusters[i].id else {
                continue;
            };
            let eni = self
                .effective_site(i, &["eni", "enabled"])
                .filter(|(_, v)| v.as_bool() == Some(true));
            let awscni = self
                .effective_site(i, &["cni", "chainingMode"])
                .filter(|(_, v)| v.as_str() == Some("aws-cni"));
            if let Some((site, _)) = eni.or(awscni)
                && ((128..=255).contains(&id) || (384..=511).contains(&id))
            {
                let d = self.at(
                        &codes::ENI_ID,
                        &child(&item("clusters", i), "id"),
                        format!("cluster ID {id} cannot be used in ENI or AWS VPC CNI chaining mode: network policies would drop traffic (cilium/cilium#21330)"),
                    );
                let d = self.related(d, &site, "ENI / aws-cni enabled here");
                self.push(
                    d.help("use an ID in 1..127 (or 256..383 with maxConnectedClusters 511)"),
                );
            }
        }
    }

    fn certificates(&mut self) {
        let method = self.spec.mesh.certificates;
        if method == CertMethod::Helm {
            let d = self
                .at(&codes::HELM_METHOD, "clustermesh.certificates", "with `certificates: helm` the chart issues new certificates on every render: Argo CD and Flux will always see a change".into())
                .help("use `certificates: cmesh` (pre-issued, stable) or `cronJob` for GitOps");
            self.push(d);
        }
        if method == CertMethod::CertManager {
            let path = [
                "clustermesh",
                "apiserver",
                "tls",
                "auto",
                "certManagerIssuerRef",
            ];
            let missing: Vec<usize> = (0..self.spec.clusters.len())
                .filter(|&i| {
                    !matches!(self.effective_site(i, &path), Some((_, Value::Map(m))) if !m.is_empty())
                })
                .collect();
            if !missing.is_empty() {
                let names: Vec<String> = missing
                    .iter()
                    .map(|&i| {
                        self.spec.clusters[i]
                            .name
                            .clone()
                            .unwrap_or_else(|| format!("clusters[{i}]"))
                    })
                    .collect();
                let d = self
                    .at(&codes::CERT_MANAGER_ISSUER, "clustermesh.certificates", format!("certificates: certManager needs an issuer, and none is set for {}", names.join(", ")))
                    .help("set `clustermesh.apiserver.tls.auto.certManagerIssuerRef: {group: cert-manager.io, kind: ClusterIssuer, name: <issuer>}` in `cilium.values`");
                self.push(d);
            }
            if self.spec.mesh.auth_mode == AuthMode::Cluster {
                let d = self
                    .at(&codes::AUTH_SHARED_CA, "clustermesh.authMode", "authMode cluster needs every cluster's certificates signed by one shared CA; with certificates: certManager each cluster's issuer decides its CA and cmesh cannot guarantee they are the same".into())
                    .help("use `certificates: cmesh` (or helm/cronJob, which sign with the shared CA in pki.dir), or set `authMode: migration`");
                let d = self.related(d, "clustermesh.certificates", "certManager chosen here");
                self.push(d);
            }
        }
        if self.spec.mesh.auth_mode == AuthMode::Cluster {
            // A per-cluster CA in values breaks the shared-CA requirement.
            for i in 0..self.spec.clusters.len() {
                let p = child(&item("clusters", i), "values");
                let ca = self.spec.clusters[i].values.get(&["tls", "ca"]);
                if ca.is_some_and(|v| {
                    v.as_map()
                        .is_some_and(|m| m.contains_key("cert") || m.contains_key("key"))
                }) {
                    let path = values_path(&p, &["tls", "ca"]);
                    let d = self
                        .at(&codes::AUTH_SHARED_CA, &path, format!("cluster `{}` sets its own CA in `tls.ca`; authMode cluster needs one CA shared by all clusters", self.spec.clusters[i].name.as_deref().unwrap_or("?")))
                        .help("remove `tls.ca` from the cluster's values: cmesh provides the shared CA from pki.dir (`cmesh pki import` adopts an existing one)");
                    self.push(d);
                }
            }
        }
    }
}

/// Builds the source path of a values key under `base`.
pub(crate) fn values_path(base: &str, keys: &[&str]) -> String {
    keys.iter().fold(base.to_owned(), |p, k| child(&p, k))
}

fn family(n: &IpNet) -> u8 {
    match n {
        IpNet::V4(_) => 4,
        IpNet::V6(_) => 6,
    }
}

fn host_key(h: &Host) -> String {
    match h {
        Host::Dns(d) => d.to_ascii_lowercase(),
        Host::Ip(IpAddr::V4(v4)) => v4.to_string(),
        Host::Ip(IpAddr::V6(v6)) => v6.to_string(),
    }
}

fn sanitize(name: &str) -> String {
    let mut s: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    s = s.trim_matches('-').to_owned();
    s.truncate(32);
    if s.is_empty() { "k8s01".into() } else { s }
}
