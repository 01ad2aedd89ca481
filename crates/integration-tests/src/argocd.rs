//! Argo CD in the lab: the real application controller, repo server and ApplicationSet
//! controller of Argo CD v3.6.2 (one binary built by scripts/install-test-deps, its role set by
//! `ARGOCD_BINARY_NAME`), with Debian's redis-server as their cache, installed "in" the first
//! lab cluster: its CRDs, the `argocd` namespace, the argocd-cm of its own install manifests,
//! and one cluster Secret per lab cluster (what `argocd cluster add` writes), the processes
//! running in that cluster's network namespace so that everything they listen on stays inside
//! it. The lab's git host runs there too (`lab-git`, [`crate::gitserver`]): Argo CD's repo
//! server fetches the tree with the real `git` and the chart with the real `helm`. Everything
//! is killed when the [`ArgoCd`] is dropped.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use crate::flux::documents;
use crate::lab::components;
use crate::lab::kubelet::lab_bin;
use crate::lab::name;
use crate::lab::proc::{Group, Proc, ProcSpec};
use crate::mesh::Mesh;

/// Where the git host listens inside the first cluster's network namespace.
pub const GIT_ADDR: &str = "127.0.0.1:8090";
const REDIS: &str = "127.0.0.1:6379";
const REPO_SERVER: &str = "127.0.0.1:8081";

/// Argo CD running in the lab (see the module docs).
pub struct ArgoCd {
    /// Logs and scratch.
    pub dir: PathBuf,
    /// `http://127.0.0.1:8090`, as seen inside the first cluster's namespace.
    pub url: String,
    procs: Group,
}

/// A kubeconfig's file reference `key` (`certificate-authority`, `client-certificate`,
/// `client-key`) read as PEM.
fn kubeconfig_file(kubeconfig: &Path, key: &str) -> String {
    let text = std::fs::read_to_string(kubeconfig).expect("kubeconfig");
    let path = text
        .lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("{}: no {key}", kubeconfig.display()));
    std::fs::read_to_string(path.trim()).expect("kubeconfig file")
}

impl ArgoCd {
    /// Installs Argo CD into the first cluster, registers every lab cluster under its name,
    /// patches argocd-cm with `cm_patch` (the tree's argocd-cm-patch.yaml, applied as `kubectl
    /// patch` does: a merge patch), and starts the git host on `git_root` and Argo CD.
    ///
    /// # Panics
    /// When a component is missing or the install fails.
    pub fn start(m: &Mesh, git_root: &Path, cm_patch: &Value) -> ArgoCd {
        use base64::Engine as _;
        let a = components::argocd();
        let crds: Vec<Value> = a
            .crd_files()
            .iter()
            .flat_map(|p| documents(&std::fs::read_to_string(p).expect("CRD")))
            .collect();
        let mut cm =
            documents(&std::fs::read_to_string(a.argocd_cm()).expect("argocd-cm")).remove(0);
        cm["metadata"]["namespace"] = json!("argocd");
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let clusters: Vec<Value> = m
            .lab
            .clusters
            .iter()
            .map(|c| {
                let config = json!({"tlsClientConfig": {
                    "caData": b64(&kubeconfig_file(&c.kubeconfig, "certificate-authority")),
                    "certData": b64(&kubeconfig_file(&c.kubeconfig, "client-certificate")),
                    "keyData": b64(&kubeconfig_file(&c.kubeconfig, "client-key")),
                }});
                json!({"apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": format!("cluster-{}", c.name), "namespace": "argocd",
                        "labels": {"argocd.argoproj.io/secret-type": "cluster"}},
                    "stringData": {"name": c.name, "server": format!("https://{}:6443", c.ip),
                        "config": config.to_string()}})
            })
            .collect();
        m.kube(0, async |c| {
            let pp = PatchParams::apply("cmesh-lab-argocd").force();
            crate::lab::install_crds(c.clone(), &crds, "cmesh-lab-argocd").await?;
            let ns: Api<Namespace> = Api::all(c.clone());
            ns.patch(
                "argocd",
                &pp,
                &Patch::Apply(json!({"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": "argocd"}})),
            )
            .await?;
            let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "argocd");
            cms.patch("argocd-cm", &pp, &Patch::Apply(&cm)).await?;
            cms.patch(
                "argocd-cm",
                &PatchParams::default(),
                &Patch::Merge(cm_patch),
            )
            .await?;
            let secrets: Api<Secret> = Api::namespaced(c, "argocd");
            secrets
                .patch(
                    "argocd-secret",
                    &pp,
                    &Patch::Apply(json!({"apiVersion": "v1", "kind": "Secret",
                        "metadata": {"name": "argocd-secret", "namespace": "argocd"},
                        "stringData": {"server.secretkey": "cmesh-lab-not-a-secret"}})),
                )
                .await?;
            for s in &clusters {
                let n = s["metadata"]["name"].as_str().unwrap_or_default();
                secrets.patch(n, &pp, &Patch::Apply(s)).await?;
            }
            Ok(())
        });

        let c0 = &m.lab.clusters[0];
        let dir = m.dir().join("argocd");
        std::fs::create_dir_all(dir.join("tmp")).expect("argocd dir");
        let dir = dir.canonicalize().expect("argocd dir");
        let kubeconfig = c0.kubeconfig.display().to_string();
        let tools = components::tools_dir()
            .join("bin")
            .canonicalize()
            .expect(".tools/bin");
        let bin = a.bin().display().to_string();
        let role = |role: &str, args: &[&str]| {
            let mut argv = vec![bin.clone()];
            argv.extend(args.iter().map(|s| (*s).to_string()));
            ProcSpec::new(&format!("argocd-{role}"), &c0.netns, &dir, argv)
                .env("ARGOCD_BINARY_NAME", &format!("argocd-{role}"))
                .env(
                    "PATH",
                    &format!(
                        "{}:{}:/usr/local/bin:/usr/bin:/bin",
                        a.scripts().display(),
                        tools.display()
                    ),
                )
                .env("HOME", &dir.display().to_string())
                .env("TMPDIR", &dir.join("tmp").display().to_string())
                .env("ARGOCD_GPG_ENABLED", "false")
                // The ApplicationSet controller reads its kubeconfig as controller-runtime does.
                .env("KUBECONFIG", &kubeconfig)
        };
        let specs = vec![
            ProcSpec::new(
                "lab-git",
                &c0.netns,
                &dir,
                vec![
                    lab_bin("lab-git").display().to_string(),
                    git_root.display().to_string(),
                    GIT_ADDR.into(),
                ],
            ),
            ProcSpec::new(
                "redis",
                &c0.netns,
                &dir,
                vec![
                    "/usr/bin/redis-server".into(),
                    "--bind".into(),
                    "127.0.0.1".into(),
                    "--port".into(),
                    "6379".into(),
                    "--save".into(),
                    String::new(),
                    "--appendonly".into(),
                    "no".into(),
                    "--dir".into(),
                    dir.display().to_string(),
                ],
            ),
            role(
                "repo-server",
                &[
                    "--address=127.0.0.1",
                    "--port=8081",
                    "--metrics-address=127.0.0.1",
                    "--metrics-port=8084",
                    &format!("--redis={REDIS}"),
                    "--disable-tls",
                    // Its default client CA path is refused together with --disable-tls.
                    "--client-ca-path=",
                    "--logformat=text",
                ],
            ),
            role(
                "application-controller",
                &[
                    &format!("--kubeconfig={kubeconfig}"),
                    "--namespace=argocd",
                    &format!("--repo-server={REPO_SERVER}"),
                    "--repo-server-plaintext",
                    &format!("--redis={REDIS}"),
                    "--metrics-port=8082",
                    "--logformat=text",
                ],
            ),
            role(
                "applicationset-controller",
                &[
                    &format!("--kubeconfig={kubeconfig}"),
                    "--namespace=argocd",
                    &format!("--argocd-repo-server={REPO_SERVER}"),
                    "--repo-server-plaintext",
                    "--metrics-addr=127.0.0.1:8085",
                    "--probe-addr=127.0.0.1:8086",
                    "--webhook-addr=127.0.0.1:7000",
                    "--logformat=text",
                ],
            ),
        ];
        let procs = Group(
            specs
                .into_iter()
                .map(|s| Proc::start(m.lab.spawner(), s))
                .collect(),
        );
        ArgoCd {
            dir,
            url: format!("http://{GIT_ADDR}"),
            procs,
        }
    }

    /// The last `lines` lines of each process's log.
    pub fn logs(&self, lines: usize) -> String {
        self.procs.logs(lines)
    }

    /// Panics with the logs when a process has exited.
    pub fn assert_running(&mut self) {
        self.procs.assert_running();
    }
}

/// The Application `name` in the first cluster's `argocd` namespace, or `None`.
pub fn application(m: &Mesh, name_: &str) -> Option<Value> {
    crate::flux::get(m, 0, "argoproj.io/v1alpha1", "Application", "argocd", name_)
}

/// `(sync status, health status, synced revisions)` of an Application.
pub fn state(app: &Value) -> (String, String, Vec<String>) {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let revisions = app["status"]["sync"]["revisions"]
        .as_array()
        .map(|a| a.iter().map(s).collect())
        .unwrap_or_default();
    (
        s(&app["status"]["sync"]["status"]),
        s(&app["status"]["health"]["status"]),
        revisions,
    )
}

/// Asks Argo CD to refresh an Application now (what `argocd app get --refresh` does).
pub fn refresh(m: &Mesh, name_: &str) {
    let ar = kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
        "argoproj.io",
        "v1alpha1",
        "Application",
    ));
    let patch = json!({"metadata": {"annotations": {"argocd.argoproj.io/refresh": "normal"}}});
    m.kube(0, async |c| {
        let api: Api<kube::api::DynamicObject> = Api::namespaced_with(c, "argocd", &ar);
        api.patch(name_, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
    });
}

/// Every cluster's Application name (`cilium-<cluster>`).
pub fn app_names(m: &Mesh) -> Vec<String> {
    (0..m.lab.clusters.len())
        .map(|i| format!("cilium-{}", name(i)))
        .collect()
}
