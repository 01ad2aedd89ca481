//! A live mesh for tests: N fake clusters, a mesh.yaml pointing at their kubeconfigs, and the
//! simulated Cluster Mesh between them, driven through the real cmesh binary and helm.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::cli::{self, Run};
use crate::kube_api::FakeCluster;
use crate::kube_api::mesh::MeshSim;
use crate::tools;

/// N simulated clusters and their mesh.yaml.
pub struct LiveMesh {
    /// The directory of mesh.yaml (and pki/).
    pub dir: tempfile::TempDir,
    /// The clusters, k8s01, k8s02, ...
    pub clusters: Vec<FakeCluster>,
    /// The simulation.
    pub sim: Arc<MeshSim>,
    /// helm, if installed.
    pub helm: Option<PathBuf>,
}

/// Cluster name `k8s01` … for index `i`.
pub fn name(i: usize) -> String {
    format!("k8s{:02}", i + 1)
}

impl LiveMesh {
    /// Starts `n` clusters on Cilium `version`. `None` when helm is missing and not required.
    pub fn start(n: usize, version: &str) -> Option<LiveMesh> {
        let helm = tools::helm()?;
        let dir = cli::scratch();
        let clusters: Vec<FakeCluster> = (0..n)
            .map(|i| FakeCluster::start(&name(i), 2, (i + 1) as u8))
            .collect();
        let mut yaml = format!(
            "name: live\ncilium:\n  version: \"{version}\"\n  values:\n    operator:\n      replicas: 1\nclustermesh:\n  domain: mesh.test\n  authMode: cluster\nclusters:\n"
        );
        let mut endpoints = std::collections::HashMap::new();
        for (i, c) in clusters.iter().enumerate() {
            let n = name(i);
            let port = 32379 + i;
            yaml.push_str(&format!(
                "  - name: {n}\n    id: {}\n    kubeconfig: {}\n    podCIDR: 10.{}.0.0/16\n    serviceCIDR: 10.{}.0.0/16\n    clustermesh:\n      address: {n}.mesh.test\n      port: {port}\n",
                i + 1,
                c.kubeconfig.display(),
                i + 1,
                i + 101
            ));
            endpoints.insert(format!("{n}.mesh.test:{port}"), n);
        }
        std::fs::write(dir.path().join("mesh.yaml"), yaml).expect("mesh.yaml");
        let v: cmesh_core::version::CiliumVersion = version.parse().expect("version");
        let sim = Arc::new(MeshSim {
            clusters: clusters
                .iter()
                .map(|c| (c.state.name.clone(), Arc::clone(&c.state)))
                .collect(),
            endpoints,
            remote_wording: v.at_least(15),
            has_cilium_dbg: v.at_least(15),
            global_namespaces: v.at_least(20),
            scenario: Default::default(),
        });
        sim.install();
        Some(LiveMesh {
            dir,
            clusters,
            sim,
            helm: Some(helm),
        })
    }

    /// Runs cmesh in the mesh directory with helm configured.
    pub fn cmesh(&self, bin: &Path, args: &[&str]) -> Run {
        let helm = self
            .helm
            .as_ref()
            .map(|h| h.display().to_string())
            .unwrap_or_default();
        cli::run(bin, self.dir.path(), args, &[("CMESH_HELM", helm.as_str())])
    }

    /// `apply` with the test chart (and a fast poll).
    pub fn apply(&self, bin: &Path, extra: &[&str]) -> Run {
        let chart = tools::mini_cilium_chart().display().to_string();
        let mut args = vec![
            "apply",
            "--chart",
            chart.as_str(),
            "--poll",
            "100ms",
            "--timeout",
            "60s",
        ];
        args.extend_from_slice(extra);
        self.cmesh(bin, &args)
    }

    /// `status -o json`, parsed.
    pub fn status_json(&self, bin: &Path, extra: &[&str]) -> (Run, serde_json::Value) {
        let mut args = vec!["status", "-o", "json"];
        args.extend_from_slice(extra);
        let r = self.cmesh(bin, &args);
        let v = serde_json::from_str(&r.stdout)
            .unwrap_or_else(|e| panic!("{e}\nstdout: {}\nstderr: {}", r.stdout, r.stderr));
        (r, v)
    }
}

/// The outcome of check `name` on `cluster` in a status JSON document.
pub fn check<'a>(status: &'a serde_json::Value, cluster: &str, name: &str) -> (&'a str, &'a str) {
    let c = status["clusters"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["cluster"] == cluster)
        .unwrap_or_else(|| panic!("no cluster {cluster}"));
    let k = c["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|k| k["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} on {cluster}: {c}"));
    (
        k["outcome"].as_str().unwrap_or(""),
        k["reason"].as_str().unwrap_or(""),
    )
}

impl LiveMesh {
    /// Starts `n` clusters and applies Cilium with Cluster Mesh (both phases).
    pub fn meshed(bin: &Path, n: usize, version: &str) -> Option<LiveMesh> {
        let m = LiveMesh::start(n, version)?;
        let r = m.apply(bin, &[]);
        assert_eq!(r.code, 0, "apply:\n{}\n{}", r.stdout, r.stderr);
        Some(m)
    }

    /// `cmesh test` with fast polling and short retries, plus `extra`.
    pub fn test(&self, bin: &Path, extra: &[&str]) -> Run {
        let mut args = vec![
            "test",
            "--poll",
            "50ms",
            "--retry-for",
            "1s",
            "--timeout",
            "30s",
            "--http-timeout",
            "2s",
        ];
        args.extend_from_slice(extra);
        self.cmesh(bin, &args)
    }

    /// Namespaces of cluster `i` whose name starts with `cmesh-test-`.
    pub fn test_namespaces(&self, i: usize) -> Vec<String> {
        let r = crate::kube_api::store::resource("", "v1", "namespaces").expect("namespaces");
        self.clusters[i]
            .state
            .store
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .list(r, "", &Default::default())
            .iter()
            .filter_map(|n| {
                n.pointer("/metadata/name")
                    .and_then(|v| v.as_str())
                    .map(str::to_owned)
            })
            .filter(|n| n.starts_with("cmesh-test-"))
            .collect()
    }
}
