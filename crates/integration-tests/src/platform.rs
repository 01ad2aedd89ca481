//! The GitOps stories' platform repository (`tests/mesh/flux.rs`, `tests/argocd.rs`): a work
//! tree where `cmesh render` writes the tree under `clusters/mesh` and each cluster's Secrets
//! are put into the sealed path (`clusters/mesh-sealed/<cluster>`, unsealed: no sealing
//! controller runs in the lab), committed and pushed to the bare repository the lab's git host
//! serves; and the Cilium chart of the module cache published as that host's Helm repository,
//! named by mesh.yaml's `cilium.repo`.

use std::path::{Path, PathBuf};

use crate::cli::Run;
use crate::flux::git;
use crate::lab::name;
use crate::mesh::Mesh;

/// A work tree and the bare repository it pushes to.
pub struct Platform {
    /// The work tree.
    pub work: PathBuf,
    /// The bare repository the git host serves.
    pub bare: PathBuf,
}

impl Platform {
    /// A new repository (work tree in the mesh's directory, bare one at `bare`).
    ///
    /// # Panics
    /// When git fails.
    pub fn init(m: &Mesh, bare: &Path) -> Platform {
        let work = m.dir().join("platform");
        std::fs::create_dir_all(&work).expect("work tree");
        git(&work, &["init", "-q"]);
        git(
            m.dir(),
            &["init", "-q", "--bare", &bare.display().to_string()],
        );
        Platform {
            work,
            bare: bare.to_path_buf(),
        }
    }

    /// Where `render` writes: `clusters/mesh`.
    pub fn tree(&self) -> PathBuf {
        self.work.join("clusters/mesh")
    }

    /// `cmesh render --out clusters/mesh` with `extra`, then each cluster's `secrets.yaml` into
    /// the sealed path (as a user does before sealing them). The render's outcome.
    ///
    /// # Panics
    /// When a rendered cluster has no secrets.yaml.
    pub fn render(&self, m: &Mesh, bin: &Path, extra: &[&str]) -> Run {
        let out = self.tree();
        let out_s = out.display().to_string();
        let mut args = vec!["render", "--out", out_s.as_str()];
        args.extend(extra);
        let r = m.cmesh(bin, &args);
        if r.code == 0 {
            for i in 0..m.lab.clusters.len() {
                let c = name(i);
                let sealed = self.work.join("clusters/mesh-sealed").join(&c);
                std::fs::create_dir_all(&sealed).expect("sealed dir");
                std::fs::copy(
                    out.join(&c).join("secrets.yaml"),
                    sealed.join("secrets.yaml"),
                )
                .expect("secrets.yaml");
            }
        }
        r
    }

    /// Commits everything (`--allow-empty`: a commit that changes nothing is what a CI job
    /// re-rendering on every merge produces) and pushes it; the new commit.
    pub fn commit(&self, message: &str) -> String {
        git(&self.work, &["add", "-A"]);
        git(
            &self.work,
            &["commit", "-q", "--allow-empty", "-m", message],
        );
        git(
            &self.work,
            &["push", "-q", &self.bare.display().to_string(), "main"],
        );
        git(&self.work, &["rev-parse", "HEAD"])
    }
}

/// Packages the release's chart into `charts` with the real helm (`helm package`, `helm repo
/// index --url <url>/charts`) and points mesh.yaml's `cilium.repo` at it.
///
/// # Panics
/// When helm fails.
pub fn publish_chart(m: &Mesh, charts: &Path, url: &str) {
    let chart = m.cilium.chart().display().to_string();
    let charts_s = charts.display().to_string();
    let index_url = format!("{url}/charts");
    for args in [
        vec!["package", chart.as_str(), "-d", charts_s.as_str()],
        vec![
            "repo",
            "index",
            charts_s.as_str(),
            "--url",
            index_url.as_str(),
        ],
    ] {
        let out = std::process::Command::new(&m.helm)
            .args(&args)
            .output()
            .expect("helm");
        assert!(
            out.status.success(),
            "helm {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let spec = m.dir().join("mesh.yaml");
    let text = std::fs::read_to_string(&spec).expect("mesh.yaml");
    std::fs::write(
        &spec,
        text.replacen("cilium:\n", &format!("cilium:\n  repo: {index_url}\n"), 1),
    )
    .expect("mesh.yaml");
}
