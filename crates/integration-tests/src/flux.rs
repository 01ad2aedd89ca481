//! Flux in the lab: the real source-controller, kustomize-controller and helm-controller
//! (built by scripts/install-test-deps from their Go modules) reconciling one lab cluster, as
//! processes on the host with the cluster's admin kubeconfig, the way Flux's own controllers run
//! outside a cluster during development (controller-runtime reads `KUBECONFIG`). Their CRDs
//! come from the same modules. Everything they fetch comes from the lab's git host
//! ([`crate::gitserver`]); source-controller's artifact server listens on 127.0.0.1. The
//! controllers are killed when the [`Flux`] is dropped (and die with the lab's spawner
//! thread, see [`crate::lab::proc`]).

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use crate::lab::components::{self, FLUX_CONTROLLERS};
use crate::lab::name;
use crate::lab::proc::{Group, Proc, ProcSpec};
use crate::mesh::Mesh;

/// YAML documents of `text` as JSON (empty documents left out).
///
/// # Panics
/// When `text` is not YAML.
pub fn documents(text: &str) -> Vec<Value> {
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! { max_nodes: 10_000_000, max_total_scalar_bytes: 64 << 20 },
    };
    serde_saphyr::from_multiple_with_options::<Value>(text, options)
        .expect("YAML")
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

/// A port on 127.0.0.1 free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Flux's controllers running against one lab cluster.
pub struct Flux {
    /// The cluster's index.
    pub cluster: usize,
    /// Logs and source-controller's storage.
    pub dir: PathBuf,
    procs: Group,
}

impl Flux {
    /// Installs Flux's CRDs and the `flux-system` namespace into cluster `i` (what `flux
    /// install` does before its controllers start) and starts the three controllers.
    ///
    /// # Panics
    /// When a component is missing or a CRD is not established within a minute.
    pub fn start(m: &Mesh, i: usize) -> Flux {
        let f = components::flux();
        let crds: Vec<Value> = f
            .crd_files()
            .iter()
            .flat_map(|p| documents(&std::fs::read_to_string(p).expect("CRD file")))
            .collect();
        m.kube(i, async |c| {
            crate::lab::install_crds(c.clone(), &crds, "cmesh-lab-flux").await?;
            let pp = PatchParams::apply("cmesh-lab-flux").force();
            let ns: Api<Namespace> = Api::all(c);
            ns.patch(
                "flux-system",
                &pp,
                &Patch::Apply(json!({"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": "flux-system"}})),
            )
            .await
            .map(|_| ())
        });
        let dir = m.dir().join(format!("flux-{}", name(i)));
        std::fs::create_dir_all(dir.join("storage")).expect("flux dir");
        // source-controller's storage refuses a path that is not clean (`..` inside): it then
        // cannot move an artifact into place.
        let dir = dir.canonicalize().expect("flux dir");
        let storage = format!("127.0.0.1:{}", free_port());
        let kubeconfig = m.lab.clusters[i].kubeconfig.display().to_string();
        let mut procs = Vec::new();
        for c in FLUX_CONTROLLERS {
            let mut argv = vec![
                f.bin(c).display().to_string(),
                "--enable-leader-election=false".into(),
                // "0" turns controller-runtime's metrics and health servers off: nothing here
                // scrapes them, and their defaults would bind every interface.
                "--metrics-addr=0".into(),
                "--health-addr=0".into(),
                "--log-encoding=console".into(),
                "--requeue-dependency=2s".into(),
            ];
            if c == "source-controller" {
                argv.extend([
                    format!("--storage-path={}", dir.join("storage").display()),
                    format!("--storage-addr={storage}"),
                    format!("--storage-adv-addr={storage}"),
                ]);
                argv.retain(|a| a != "--requeue-dependency=2s");
            }
            let spec = ProcSpec {
                name: format!("{}-{c}", name(i)),
                netns: None,
                argv,
                env: vec![
                    ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
                    ("KUBECONFIG".into(), kubeconfig.clone()),
                    ("RUNTIME_NAMESPACE".into(), "flux-system".into()),
                    ("HOME".into(), dir.display().to_string()),
                    ("TMPDIR".into(), dir.display().to_string()),
                ],
                cwd: dir.clone(),
                log: dir.join(format!("{c}.log")),
            };
            procs.push(Proc::start(m.lab.spawner(), spec));
        }
        Flux {
            cluster: i,
            dir,
            procs: Group(procs),
        }
    }

    /// The last `lines` lines of each controller's log.
    pub fn logs(&self, lines: usize) -> String {
        self.procs.logs(lines)
    }

    /// Panics with the logs when a controller has exited.
    pub fn assert_running(&mut self) {
        self.procs.assert_running();
    }

    /// Stops the controllers (what is reconciled stays as it is).
    pub fn stop(&mut self) {
        self.procs.stop();
    }

    /// A controller's whole log.
    pub fn log(&self, controller: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{controller}.log"))).unwrap_or_default()
    }
}

/// A Flux object of cluster `i` (`kind` as `source.toolkit.fluxcd.io/v1/GitRepository`), or
/// `None` when it does not exist.
pub fn get(m: &Mesh, i: usize, api_version: &str, kind: &str, ns: &str, n: &str) -> Option<Value> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let ar =
        kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(group, version, kind));
    m.kube(i, async |c| {
        let api: Api<kube::api::DynamicObject> = Api::namespaced_with(c, ns, &ar);
        Ok(api
            .get_opt(n)
            .await?
            .map(|o| serde_json::to_value(o).expect("JSON")))
    })
}

/// `metadata.annotations["reconcile.fluxcd.io/requestedAt"] = token` on an object: what
/// `flux reconcile` does to ask for a reconciliation now.
pub fn request_reconcile(m: &Mesh, i: usize, api_version: &str, kind: &str, n: &str, token: &str) {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let ar =
        kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(group, version, kind));
    let patch = json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": token}}});
    m.kube(i, async |c| {
        let api: Api<kube::api::DynamicObject> = Api::namespaced_with(c, "flux-system", &ar);
        api.patch(n, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
    });
}

/// The status of condition `type_` of an object: `(status, reason, message, lastTransitionTime)`.
pub fn condition(o: &Value, type_: &str) -> Option<(String, String, String, String)> {
    o["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
            (
                s("status"),
                s("reason"),
                s("message"),
                s("lastTransitionTime"),
            )
        })
}

/// Runs git in `dir` as the lab's committer.
///
/// # Panics
/// When git fails.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args([
            "-c",
            "user.name=cmesh lab",
            "-c",
            "user.email=lab@cmesh.test",
        ])
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
