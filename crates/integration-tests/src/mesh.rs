//! A live mesh on the lab: N real clusters (see [`crate::lab`]), a mesh.yaml that points at
//! their kubeconfigs and node addresses, and helpers that run the real cmesh binary against
//! them with the real helm and the real Cilium chart of the version under test.

use std::path::{Path, PathBuf};

use crate::cli::{self, Run};
use crate::lab::components::{self, Cilium};
use crate::lab::{Lab, LabOptions, name};
use crate::tools;

/// A lab with a mesh.yaml.
pub struct Mesh {
    /// The clusters.
    pub lab: Lab,
    /// The Cilium release under test.
    pub cilium: Cilium,
    /// helm.
    pub helm: PathBuf,
}

/// How to describe the mesh.
#[derive(Debug, Clone)]
pub struct MeshOptions {
    /// Clusters.
    pub clusters: usize,
    /// Cilium version (`1.20.0`).
    pub version: String,
    /// Extra YAML under `clustermesh:` (indented by four spaces in the file).
    pub clustermesh_extra: String,
}

impl MeshOptions {
    /// `n` clusters on Cilium `version`.
    pub fn new(n: usize, version: &str) -> MeshOptions {
        MeshOptions {
            clusters: n,
            version: version.into(),
            clustermesh_extra: String::new(),
        }
    }
}

/// The NodePort of cluster `i`'s clustermesh-apiserver.
pub fn node_port(i: usize) -> u16 {
    32379 + u16::try_from(i).expect("cluster index")
}

impl Mesh {
    /// Starts the lab and writes mesh.yaml; `None` when a component is missing and not
    /// required.
    pub fn start(opts: &MeshOptions) -> Option<Mesh> {
        let helm = tools::helm()?;
        let cilium = components::cilium(&opts.version)?;
        let lab = Lab::start(&LabOptions {
            clusters: opts.clusters,
            ..LabOptions::default()
        })?;
        let mut yaml = format!(
            "name: lab\ncilium:\n  version: \"{}\"\n  values:\n    operator:\n      replicas: 1\nclustermesh:\n  domain: mesh.test\n  authMode: cluster\n{}clusters:\n",
            opts.version, opts.clustermesh_extra
        );
        for (i, c) in lab.clusters.iter().enumerate() {
            yaml.push_str(&format!(
                "  - name: {}\n    id: {}\n    kubeconfig: {}\n    apiServer: {}:6443\n    podCIDR: {}\n    serviceCIDR: {}\n    clustermesh:\n      address: {}\n      port: {}\n",
                name(i),
                c.index,
                c.kubeconfig.display(),
                c.ip,
                c.pod_cidr,
                c.service_cidr,
                c.ip,
                node_port(i)
            ));
        }
        std::fs::write(lab.dir.path().join("mesh.yaml"), yaml).expect("mesh.yaml");
        Some(Mesh { lab, cilium, helm })
    }

    /// mesh.yaml's directory.
    pub fn dir(&self) -> &Path {
        self.lab.dir.path()
    }

    /// Runs cmesh in the mesh directory with helm configured.
    pub fn cmesh(&self, bin: &Path, args: &[&str]) -> Run {
        let helm = self.helm.display().to_string();
        cli::run(bin, self.dir(), args, &[("CMESH_HELM", helm.as_str())])
    }

    /// `apply` with the release's chart from the Go module cache.
    pub fn apply(&self, bin: &Path, extra: &[&str]) -> Run {
        let chart = self.cilium.chart().display().to_string();
        let mut args = vec![
            "apply",
            "--chart",
            chart.as_str(),
            "--poll",
            "200ms",
            "--timeout",
            "120s",
        ];
        args.extend_from_slice(extra);
        self.cmesh(bin, &args)
    }

    /// `status -o json`, parsed.
    pub fn status_json(&self, bin: &Path, extra: &[&str]) -> (Run, serde_json::Value) {
        let mut args = vec!["status", "-o", "json"];
        args.extend_from_slice(extra);
        let r = self.cmesh(bin, &args);
        let v = serde_json::from_str(&r.stdout).unwrap_or_else(|e| {
            panic!(
                "{e}\nstdout: {}\nstderr: {}\n{}",
                r.stdout,
                r.stderr,
                self.lab.logs(20)
            )
        });
        (r, v)
    }
}
