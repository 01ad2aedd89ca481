//! The commented mesh.yaml written by `cmesh init` and used by `--example`.
//!
//! With the defaults it reproduces the reference article's lab exactly (two kubeadm clusters
//! k8s01/k8s02 on Cilium 1.14.2, domain mylaptop.loc). For N clusters it generates distinct
//! IDs, NodePorts and non-overlapping pod and service ranges.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use crate::version::CiliumVersion;

/// What to generate.
#[derive(Debug, Clone)]
pub struct ExampleOptions {
    /// Mesh name.
    pub name: String,
    /// Number of clusters (2..=511).
    pub clusters: usize,
    /// Cilium chart version.
    pub version: CiliumVersion,
}

impl Default for ExampleOptions {
    fn default() -> Self {
        Self {
            name: "homelab".to_owned(),
            clusters: 2,
            version: CiliumVersion::new(1, 14, 2),
        }
    }
}

/// Why an example cannot be generated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExampleError {
    /// Cluster count outside 2..=511.
    #[error("--clusters must be between 2 and 511, not {0}")]
    ClusterCount(usize),
    /// More than 255 clusters on a version without maxConnectedClusters.
    #[error(
        "{count} clusters need maxConnectedClusters 511, which needs Cilium >= 1.15 (not {version})"
    )]
    NeedsNewerVersion {
        /// Requested clusters.
        count: usize,
        /// Requested version.
        version: CiliumVersion,
    },
    /// An unsupported version.
    #[error("Cilium {0} is outside the supported range 1.14.0 .. 1.20.x")]
    Unsupported(CiliumVersion),
    /// A mesh name that is not a DNS label.
    #[error("mesh name `{0}` is not a DNS-1123 label")]
    Name(String),
}

/// The built-in example: the article's lab.
pub fn builtin() -> String {
    // The default options are always valid.
    generate(&ExampleOptions::default()).unwrap_or_default()
}

/// Pod CIDR, service CIDR of cluster `i` (0-based) in a mesh of `n`.
pub fn cidrs(i: usize, n: usize) -> (String, String) {
    if n <= 12 {
        // The lab's pattern: 10.244.0.0/16, 10.245.0.0/16, ... and 10.96.0.0/18, 10.97.0.0/18, ...
        (
            format!("10.{}.0.0/16", 244 + i),
            format!("10.{}.0.0/18", 96 + i),
        )
    } else {
        // 512 pod blocks of /18 in 10.0.0.0/9 and 512 service blocks of /20 in 10.128.0.0/9.
        let pod = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 0)) + ((i as u32) << 14));
        let svc = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 128, 0, 0)) + ((i as u32) << 12));
        (format!("{pod}/18"), format!("{svc}/20"))
    }
}

/// NodePort of cluster `i`: 32379, 32380, ... and below 32379 once 32767 is reached.
pub fn node_port(i: usize) -> u16 {
    let up = 32379 + i;
    if up <= 32767 {
        up as u16
    } else {
        (32379 - (up - 32767)) as u16
    }
}

/// Generates a commented mesh.yaml.
///
/// # Errors
/// [`ExampleError`] for a cluster count, version or name that cannot make a valid mesh.
pub fn generate(o: &ExampleOptions) -> Result<String, ExampleError> {
    if !(2..=511).contains(&o.clusters) {
        return Err(ExampleError::ClusterCount(o.clusters));
    }
    if !o.version.is_supported() {
        return Err(ExampleError::Unsupported(o.version.clone()));
    }
    if o.clusters > 255 && !o.version.has_max_connected_clusters() {
        return Err(ExampleError::NeedsNewerVersion {
            count: o.clusters,
            version: o.version.clone(),
        });
    }
    if !super::is_dns1123_label(&o.name) {
        return Err(ExampleError::Name(o.name.clone()));
    }
    let v = &o.version;
    let mut s = String::new();
    let lab = o.clusters == 2 && *v == CiliumVersion::new(1, 14, 2);
    s.push_str("# mesh.yaml: one Cilium Cluster Mesh, described once for all of its clusters.\n");
    s.push_str("# Written by `cmesh init`. Every field is explained in docs/mesh-spec.md.\n");
    if lab {
        s.push_str("#\n# This is the lab of the article \"Testing Cilium Cluster Mesh installation/configuration\n");
        s.push_str("# using Helm Charts (GitOps approach)\": two kubeadm clusters without kube-proxy, one shared\n");
        s.push_str("# CA, the clustermesh-apiserver exposed as a NodePort on each node.\n");
    }
    s.push_str("#\n# Next: `cmesh check` validates this file, `cmesh render` writes Helm values, the shared\n");
    s.push_str("# CA and certificates, and Argo CD / Flux / helm files into ./cmesh-out.\n\n");

    s.push_str("# Mesh name (a DNS label).\n");
    let _ = writeln!(s, "name: {}\n", o.name);

    s.push_str("cilium:\n");
    s.push_str("  # Chart version, quoted (unquoted 1.20 would be read as the number 1.2).\n");
    s.push_str("  # Supported: 1.14.0 .. 1.20.x.\n");
    let _ = writeln!(s, "  version: \"{v}\"");
    s.push_str("  repo: https://helm.cilium.io\n");
    s.push_str("  # Helm values for every cluster (a cluster's own `values` win over these).\n");
    s.push_str(
        "  # cmesh itself sets cluster.name/id, the IPAM pools, k8sServiceHost/Port, the shared\n",
    );
    s.push_str("  # CA, certificates and the whole clustermesh block: `cmesh check` warns if you override them.\n");
    s.push_str("  values:\n");
    s.push_str("    debug:\n      enabled: true\n");
    if !v.at_least(19) {
        // The MetalLB-based `bgp` block was removed from the chart in 1.19.
        s.push_str("    bgp:\n      enabled: false\n");
    }
    s.push_str("    operator:\n      replicas: 1\n");
    s.push_str("    bpf:\n      masquerade: true\n");
    s.push_str("    ipv4:\n      enabled: true\n");
    s.push_str("    nodePort:\n      enabled: true\n");
    s.push_str("    egressGateway:\n      enabled: false\n");
    s.push_str("    l7Proxy: false\n");
    s.push_str("    # The article used `strict`: deprecated in 1.14 and rejected by the chart from 1.16.\n");
    s.push_str("    kubeProxyReplacement: true\n");
    s.push_str(
        "    hubble:\n      relay:\n        enabled: true\n      ui:\n        enabled: true\n\n",
    );

    s.push_str("clustermesh:\n");
    s.push_str(
        "  # clustermesh.config.domain: peers given as `ips` are dialled as <name>.<domain>.\n",
    );
    let domain = "mylaptop.loc";
    let _ = writeln!(s, "  domain: {domain}");
    s.push_str("  # How each clustermesh-apiserver is exposed: NodePort | LoadBalancer.\n");
    s.push_str("  serviceType: NodePort\n");
    s.push_str(
        "  # cluster: every cluster authenticates as remote-<name>; needs the shared CA below.\n",
    );
    s.push_str("  authMode: cluster\n");
    if o.clusters > 255 {
        s.push_str("  # 511 allows cluster IDs up to 511 (fewer identities per cluster); new clusters only.\n");
        s.push_str("  maxConnectedClusters: 511\n");
    }
    s.push_str(
        "  # cmesh: certificates issued once by cmesh from the shared CA, stable across renders.\n",
    );
    s.push_str("  certificates: cmesh\n\n");

    s.push_str("pki:\n");
    s.push_str(
        "  # The shared CA and issued certificates, relative to this file. Only ca.crt belongs in\n  # git (the .gitignore `cmesh init` writes keeps every key out).\n",
    );
    s.push_str("  dir: pki\n");
    s.push_str("  keyAlgorithm: ecdsa-p256\n\n");

    s.push_str("clusters:\n");
    for i in 0..o.clusters {
        let n = i + 1;
        let (pod, svc) = cidrs(i, o.clusters);
        let host = format!("k8s-lab-{n:02}.{domain}");
        let name = format!("k8s{n:02}");
        if i == 0 {
            s.push_str("  # name: DNS label of at most 32 characters; id: unique, 1..255.\n");
        }
        let _ = writeln!(s, "  - name: {name}\n    id: {n}");
        if i == 0 {
            s.push_str("    # kubeconfig relative to this file (default: $KUBECONFIG, then ~/.kube/config).\n");
        }
        let _ = writeln!(s, "    kubeconfig: kubeconfig-{name}");
        if i == 0 {
            s.push_str("    # The API server the agents talk to (there is no kube-proxy): k8sServiceHost/Port.\n");
        }
        let _ = writeln!(s, "    apiServer: {host}:6443");
        if i == 0 {
            s.push_str("    # Pod and service ranges must be unique across the mesh. nodeCIDR is optional.\n");
        }
        let _ = writeln!(
            s,
            "    podCIDR: {pod}\n    podCIDRMaskSize: 24\n    serviceCIDR: {svc}"
        );
        if i == 0 {
            s.push_str(
                "    # Where the other clusters reach this cluster's clustermesh-apiserver.\n",
            );
            s.push_str("    # Distinct NodePorts per cluster: Cilium < 1.19 misroutes a shared one (cilium#24692).\n");
        }
        let _ = writeln!(
            s,
            "    clustermesh:\n      address: {host}\n      port: {}",
            node_port(i)
        );
    }
    s.push_str("\n# The git repository the rendered tree is committed to: Argo CD and Flux read the values\n");
    s.push_str("# from it. Set repoURL here, or once with `cmesh render --git-repo URL --save`.\n");
    s.push_str("gitops:\n");
    s.push_str("  # repoURL: https://github.com/acme/platform.git\n");
    s.push_str("  revision: HEAD\n");
    s.push_str("  # The tree's directory in that repository.\n");
    s.push_str("  path: cmesh-out\n");
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec;

    #[test]
    fn builtin_is_the_lab_and_clean() {
        let text = builtin();
        let (spec, warnings) = spec::load("example", &text).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(spec.clusters.len(), 2);
        let (a, b) = (&spec.clusters[0], &spec.clusters[1]);
        assert_eq!(
            (a.name.as_str(), a.id, a.clustermesh.port),
            ("k8s01", 1, 32379)
        );
        assert_eq!(
            (b.name.as_str(), b.id, b.clustermesh.port),
            ("k8s02", 2, 32380)
        );
        assert_eq!(a.pod_cidrs[0].to_string(), "10.244.0.0/16");
        assert_eq!(b.service_cidrs[0].to_string(), "10.97.0.0/18");
        assert_eq!(spec.clustermesh.domain, "mylaptop.loc");
        assert_eq!(spec.cilium.version.to_string(), "1.14.2");
        assert_eq!(
            b.endpoint_url("mylaptop.loc"),
            "https://k8s-lab-02.mylaptop.loc:32380"
        );
    }

    #[test]
    fn n_clusters_are_clean() {
        for (n, v) in [
            (3, "1.14.2"),
            (12, "1.16.0"),
            (13, "1.19.6"),
            (255, "1.14.2"),
            (256, "1.15.19"),
            (511, "1.20.0"),
        ] {
            let o = ExampleOptions {
                clusters: n,
                version: v.parse().unwrap(),
                ..ExampleOptions::default()
            };
            let text = generate(&o).unwrap();
            let checked = spec::check("gen", &text);
            assert!(
                checked.diagnostics.is_empty(),
                "n={n}: {:?}",
                checked.diagnostics.first()
            );
            assert_eq!(checked.spec.unwrap().clusters.len(), n);
        }
    }

    #[test]
    fn refuses_impossible_meshes() {
        let o = |n: usize, v: &str| ExampleOptions {
            clusters: n,
            version: v.parse().unwrap(),
            ..ExampleOptions::default()
        };
        assert_eq!(
            generate(&o(1, "1.14.2")),
            Err(ExampleError::ClusterCount(1))
        );
        assert!(matches!(
            generate(&o(300, "1.14.2")),
            Err(ExampleError::NeedsNewerVersion { .. })
        ));
        assert!(matches!(
            generate(&o(2, "1.21.0")),
            Err(ExampleError::Unsupported(_))
        ));
    }
}

/// What `cmesh init` puts in the `.gitignore` beside mesh.yaml: private keys and lab files never
/// belong in git. `pki_dir` is mesh.yaml's `pki.dir` (relative to mesh.yaml).
pub fn project_gitignore(pki_dir: &str) -> String {
    let pki = pki_dir.trim_start_matches("./").trim_end_matches('/');
    format!(
        "# Written by `cmesh init`: private keys and lab files never belong in git.\n\
         # The mesh CA's key and every key cmesh issued (mesh.yaml pki.dir). The CA certificate\n\
         # alone is public and committed: `render --check` verifies the tree against it.\n\
         /{pki}/*\n\
         !/{pki}/ca.crt\n\
         # cmesh lab: its state and the kubeconfigs it writes.\n\
         /.cmesh-lab/\n\
         /kubeconfig-*\n\
         # Private keys rendered anywhere (render --secrets-out): seal or encrypt them instead.\n\
         secrets.yaml\n\
         secret-values.yaml\n\
         flux-secret-values.yaml\n"
    )
}

/// `existing` (a `.gitignore`'s text) with every entry of `wanted` it lacks appended, or `None`
/// when it has them all. Comments of `wanted` come along only when an entry does.
pub fn merge_gitignore(existing: &str, wanted: &str) -> Option<String> {
    let have: std::collections::BTreeSet<&str> = existing.lines().map(str::trim).collect();
    let missing: Vec<&str> = wanted
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty() && !have.contains(l.trim()))
        .collect();
    if missing.is_empty() {
        return None;
    }
    let mut s = existing.to_owned();
    if !s.is_empty() && !s.ends_with('\n') {
        s.push('\n');
    }
    s.push_str("# Added by `cmesh init`: private keys and lab files never belong in git.\n");
    for l in missing {
        s.push_str(l);
        s.push('\n');
    }
    Some(s)
}

#[cfg(test)]
mod gitignore_tests {
    use super::*;

    #[test]
    fn the_project_gitignore_covers_keys_and_the_lab() {
        let g = project_gitignore("./keys/");
        for entry in [
            "/keys/*",
            "!/keys/ca.crt",
            "/.cmesh-lab/",
            "/kubeconfig-*",
            "secrets.yaml",
            "secret-values.yaml",
        ] {
            assert!(g.lines().any(|l| l == entry), "{entry} in\n{g}");
        }
    }

    #[test]
    fn merging_keeps_the_users_lines_and_adds_only_what_is_missing() {
        let wanted = project_gitignore("pki");
        assert_eq!(merge_gitignore(&wanted, &wanted), None);
        let merged = merge_gitignore("target/\n/pki/", &wanted).unwrap();
        assert!(merged.starts_with("target/\n/pki/\n# Added by `cmesh init`"));
        assert_eq!(merged.lines().filter(|l| *l == "/pki/").count(), 1);
        assert!(merged.lines().any(|l| l == "/pki/*"));
        assert!(merged.lines().any(|l| l == "/.cmesh-lab/"));
        assert_eq!(merge_gitignore(&merged, &wanted), None);
    }
}
