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

/// The Cilium values every lab mesh sets (under `cilium.values`, indented for mesh.yaml). The
/// lab has no kube-proxy, as the reference article's kubeadm clusters: Cilium replaces it
/// (NodePorts and ClusterIPs, including the API server's). What cannot run here is turned off,
/// each listed with why in docs/testing.md: Envoy (its image's proxy is not built here) and so
/// the L7 proxy.
pub const LAB_VALUES: &str = "    operator:
      replicas: 1
    kubeProxyReplacement: true
    envoy:
      enabled: false
    l7Proxy: false
";

/// The NodePort of cluster `i`'s clustermesh-apiserver.
pub fn node_port(i: usize) -> u16 {
    32379 + u16::try_from(i).expect("cluster index")
}

impl Mesh {
    /// Starts the lab and writes mesh.yaml.
    ///
    /// # Panics
    /// When a component is missing or the lab does not come up.
    pub fn start(opts: &MeshOptions) -> Mesh {
        let started = std::time::Instant::now();
        let helm = tools::helm();
        let cilium = components::cilium(&opts.version);
        let lab = Lab::start(&LabOptions {
            clusters: opts.clusters,
            ..LabOptions::default()
        });
        let mut yaml = format!(
            "name: lab\ncilium:\n  version: \"{}\"\n  values:\n{LAB_VALUES}clustermesh:\n  domain: mesh.test\n  authMode: cluster\n{}clusters:\n",
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
                c.node_ip(),
                node_port(i)
            ));
        }
        std::fs::write(lab.dir.path().join("mesh.yaml"), yaml).expect("mesh.yaml");
        let m = Mesh { lab, cilium, helm };
        m.timing("lab start", 0, started.elapsed());
        m
    }

    /// Appends how long something took on this lab to `target/lab/timings.tsv` (clusters,
    /// Cilium version, what, exit code, seconds): where docs/performance.md's lab figures come
    /// from.
    pub fn timing(&self, what: &str, code: i32, took: std::time::Duration) {
        use std::io::Write as _;
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/lab/timings.tsv");
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(
                f,
                "{}\t{}\t{what}\t{code}\t{:.1}",
                self.lab.clusters.len(),
                self.cilium.version,
                took.as_secs_f64()
            );
        }
    }

    /// mesh.yaml's directory.
    pub fn dir(&self) -> &Path {
        self.lab.dir.path()
    }

    /// Runs cmesh in the mesh directory with helm configured.
    pub fn cmesh(&self, bin: &Path, args: &[&str]) -> Run {
        let helm = self.helm.display().to_string();
        let started = std::time::Instant::now();
        let r = cli::run(bin, self.dir(), args, &[("CMESH_HELM", helm.as_str())]);
        if let Some(cmd @ ("apply" | "test" | "status")) = args.first().copied() {
            self.timing(cmd, r.code, started.elapsed());
        }
        r
    }

    /// `apply` with the release's chart from the Go module cache.
    pub fn apply(&self, bin: &Path, extra: &[&str]) -> Run {
        let chart = self.cilium.chart().display().to_string();
        let mut args = vec![
            "apply",
            "--yes",
            "--chart",
            chart.as_str(),
            "--poll",
            "200ms",
            "--timeout",
            "120s",
        ];
        args.extend_from_slice(extra);
        let r = self.cmesh(bin, &args);
        // Every apply checks its own plan: what it did must be what it planned.
        assert!(
            !r.stdout.contains("differs from its plan"),
            "apply did not do what it planned:\n{}\n{}",
            r.stdout,
            r.stderr
        );
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&r.stdout)
            && let Some(d) = v["deviations"].as_array()
        {
            assert!(
                d.is_empty(),
                "apply did not do what it planned: {d:?}\n{}",
                r.stdout
            );
        }
        r
    }

    /// `plan -o json` with the release's chart, parsed.
    pub fn plan_json(&self, bin: &Path, extra: &[&str]) -> (Run, serde_json::Value) {
        let chart = self.cilium.chart().display().to_string();
        let mut args = vec!["plan", "--chart", chart.as_str(), "-o", "json"];
        args.extend_from_slice(extra);
        let r = self.cmesh(bin, &args);
        let v = serde_json::from_str(&r.stdout)
            .unwrap_or_else(|e| panic!("{e}\nstdout: {}\nstderr: {}", r.stdout, r.stderr));
        (r, v)
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

impl Mesh {
    /// `status --wait` until every check passes (or `timeout`), then `-o json`.
    pub fn status_wait(&self, bin: &Path, timeout: &str) -> (Run, serde_json::Value) {
        self.status_json(
            bin,
            &["--wait", "--timeout", timeout, "--interval", "500ms"],
        )
    }

    /// Runs `f` with cluster `i`'s admin client on the lab's runtime.
    pub fn kube<T>(
        &self,
        i: usize,
        f: impl AsyncFnOnce(kube::Client) -> Result<T, kube::Error>,
    ) -> T {
        let client = self.lab.clusters[i].client.clone();
        self.lab
            .rt
            .block_on(f(client))
            .unwrap_or_else(|e| panic!("{}: {e}", name(i)))
    }

    /// Replaces keys of Secret `kube-system/<secret>` in cluster `i` (values as text), as
    /// someone with kubectl would.
    pub fn patch_secret(&self, i: usize, secret: &str, data: &[(&str, &str)]) {
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let map: serde_json::Map<String, serde_json::Value> = data
            .iter()
            .map(|(k, v)| ((*k).to_owned(), serde_json::json!(b64(v))))
            .collect();
        let patch = serde_json::json!({"data": map});
        self.kube(i, async |c| {
            let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
                kube::Api::namespaced(c, "kube-system");
            api.patch(
                secret,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
            .map(|_| ())
        });
    }

    /// The keys of Secret `kube-system/<secret>` in cluster `i`, decoded as text (to put a
    /// Secret back after a fault with [`Mesh::patch_secret`]).
    pub fn secret(&self, i: usize, secret: &str) -> Vec<(String, String)> {
        self.kube(i, async |c| {
            let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
                kube::Api::namespaced(c, "kube-system");
            Ok(api
                .get(secret)
                .await?
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, String::from_utf8(v.0).expect("a text Secret")))
                .collect())
        })
    }

    /// Deletes cluster `i`'s clustermesh-apiserver pod and waits until the lab runs its
    /// replacement (what `kubectl delete pod` and a rollout restart come to).
    pub fn restart_clustermesh_apiserver(&self, i: usize) {
        let before = self.lab.kubelet(i).pod_uid();
        self.kube(i, async |c| {
            let api: kube::Api<k8s_openapi::api::core::v1::Pod> =
                kube::Api::namespaced(c, "kube-system");
            api.delete_collection(
                &kube::api::DeleteParams::default(),
                &kube::api::ListParams::default().labels("k8s-app=clustermesh-apiserver"),
            )
            .await
            .map(|_| ())
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while self.lab.kubelet(i).pod_uid() == before || self.lab.kubelet(i).pod_uid().is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "{}: no new clustermesh-apiserver pod\n{}",
                name(i),
                self.lab.logs(30)
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        self.lab
            .kubelet(i)
            .wait_running(&["etcd", "apiserver"], std::time::Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{e}\n{}", self.lab.logs(30)));
    }

    /// helm against cluster `i`.
    pub fn helm(&self, i: usize, args: &[&str]) -> std::process::Output {
        std::process::Command::new(&self.helm)
            .args(args)
            .arg("--kubeconfig")
            .arg(&self.lab.clusters[i].kubeconfig)
            .output()
            .expect("helm")
    }
}

/// The outcome and reason of check `name` on `cluster` in a status JSON document.
pub fn check<'a>(status: &'a serde_json::Value, cluster: &str, name: &str) -> (&'a str, &'a str) {
    let c = status["clusters"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["cluster"] == cluster)
        .unwrap_or_else(|| panic!("no cluster {cluster} in {status}"));
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

impl Mesh {
    /// Starts `n` clusters and applies Cilium with Cluster Mesh (both phases), waiting until
    /// `status` is green.
    pub fn meshed(bin: &Path, n: usize, version: &str) -> Mesh {
        let m = Mesh::start(&MeshOptions::new(n, version));
        let r = m.apply(bin, &[]);
        assert_eq!(
            r.code,
            0,
            "apply:\n{}\n{}\n{}",
            r.stdout,
            r.stderr,
            m.lab.logs(25)
        );
        let (r, _) = m.status_wait(bin, "120s");
        assert_eq!(
            r.code,
            0,
            "status:\n{}\n{}\n{}",
            r.stdout,
            r.stderr,
            m.lab.logs(25)
        );
        m
    }

    /// `cmesh test` with fast polling and short retries, plus `extra`.
    pub fn test(&self, bin: &Path, extra: &[&str]) -> Run {
        let mut args = vec![
            "test",
            "--poll",
            "200ms",
            "--retry-for",
            "5s",
            "--timeout",
            "60s",
            "--http-timeout",
            "2s",
        ];
        args.extend_from_slice(extra);
        self.cmesh(bin, &args)
    }

    /// Namespaces of cluster `i` whose name starts with `cmesh-test-`.
    pub fn test_namespaces(&self, i: usize) -> Vec<String> {
        self.kube(i, async |c| {
            let api: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(c);
            Ok(api
                .list(&Default::default())
                .await?
                .items
                .into_iter()
                .filter_map(|n| n.metadata.name)
                .filter(|n| n.starts_with("cmesh-test-"))
                .collect())
        })
    }

    /// Server-side applies `objects` (JSON) in cluster `i`, as the test's field manager.
    pub fn apply_objects(&self, i: usize, objects: &[serde_json::Value]) {
        self.kube(i, async |c| {
            for o in objects {
                let api_version = o["apiVersion"].as_str().unwrap_or_default();
                let kind = o["kind"].as_str().unwrap_or_default();
                let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
                let ar = kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
                    group, version, kind,
                ));
                let name = o["metadata"]["name"].as_str().unwrap_or_default();
                let api: kube::Api<kube::api::DynamicObject> =
                    match o["metadata"]["namespace"].as_str() {
                        Some(ns) => kube::Api::namespaced_with(c.clone(), ns, &ar),
                        None => kube::Api::all_with(c.clone(), &ar),
                    };
                api.patch(
                    name,
                    &kube::api::PatchParams::apply("cmesh-lab-test").force(),
                    &kube::api::Patch::Apply(o),
                )
                .await?;
            }
            Ok(())
        });
    }

    /// ingress-nginx in cluster `i` as its upstream manifests label it: the controller's
    /// Deployment (its pod runs the lab's ingress-nginx stand-in, `lab-ingress`), a service
    /// account allowed to read what the controller reads, its Service, and IngressClass
    /// `class`.
    pub fn install_ingress_nginx(&self, i: usize, class: &str) {
        let labels = serde_json::json!({
            "app.kubernetes.io/name": "ingress-nginx",
            "app.kubernetes.io/instance": "ingress-nginx",
            "app.kubernetes.io/component": "controller",
        });
        self.apply_objects(
            i,
            &[
                serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ingress-nginx"}}),
                serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount",
                    "metadata": {"name": "ingress-nginx", "namespace": "ingress-nginx", "labels": labels}}),
                serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                    "metadata": {"name": "ingress-nginx", "labels": labels},
                    "rules": [
                        {"apiGroups": [""], "resources": ["services", "endpoints", "pods", "namespaces"], "verbs": ["get", "list", "watch"]},
                        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]},
                        {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses", "ingressclasses"], "verbs": ["get", "list", "watch"]},
                    ]}),
                serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                    "metadata": {"name": "ingress-nginx", "labels": labels},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "ingress-nginx"},
                    "subjects": [{"kind": "ServiceAccount", "name": "ingress-nginx", "namespace": "ingress-nginx"}]}),
                serde_json::json!({
                    "apiVersion": "apps/v1", "kind": "Deployment",
                    "metadata": {"name": "ingress-nginx-controller", "namespace": "ingress-nginx", "labels": labels},
                    "spec": {"selector": {"matchLabels": labels}, "template": {
                        "metadata": {"labels": labels},
                        "spec": {"serviceAccountName": "ingress-nginx",
                            "containers": [{"name": "controller", "image": "registry.k8s.io/ingress-nginx/controller:v1.8.2",
                            "ports": [{"name": "http", "containerPort": 80}, {"name": "https", "containerPort": 443}],
                            "readinessProbe": {"tcpSocket": {"port": 80}, "periodSeconds": 2}}]},
                    }},
                }),
                serde_json::json!({
                    "apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": "ingress-nginx-controller", "namespace": "ingress-nginx", "labels": labels},
                    "spec": {"type": "LoadBalancer", "selector": labels,
                        "ports": [{"name": "http", "port": 80, "targetPort": "http"}, {"name": "https", "port": 443, "targetPort": "https"}]},
                }),
                serde_json::json!({
                    "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
                    "metadata": {"name": class, "labels": labels},
                    "spec": {"controller": "k8s.io/ingress-nginx"},
                }),
            ],
        );
    }

    /// Removes the taints of [`Mesh::taint_nodes`].
    pub fn untaint_nodes(&self, i: usize) {
        let nodes = self.lab.clusters[i].nodes.clone();
        self.kube(i, async |c| {
            let api: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(c);
            for n in &nodes {
                let patch = serde_json::json!({"spec": {"taints": null}});
                api.patch(
                    n,
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(&patch),
                )
                .await?;
            }
            Ok(())
        });
    }

    /// Taints every node of cluster `i` `NoSchedule` (as `kubectl taint` would): new pods stay
    /// Pending.
    pub fn taint_nodes(&self, i: usize) {
        let nodes = self.lab.clusters[i].nodes.clone();
        self.kube(i, async |c| {
            let api: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(c);
            for n in &nodes {
                let patch = serde_json::json!({"spec": {"taints": [
                    {"key": "cmesh.test/blocked", "value": "true", "effect": "NoSchedule"}
                ]}});
                api.patch(
                    n,
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(&patch),
                )
                .await?;
            }
            Ok(())
        });
    }
}

/// A controller in one cluster that deletes every Service named `name` in namespaces starting
/// with `prefix` as soon as it appears (a GitOps prune of objects it does not know), until
/// dropped.
pub struct Pruner {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Mesh {
    /// Starts a [`Pruner`] in cluster `i`.
    pub fn prune_services(&self, i: usize, prefix: &str, name: &str) -> Pruner {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let client = self.lab.clusters[i].client.clone();
        let handle = self.lab.rt.handle().clone();
        let (prefix, name, s) = (
            prefix.to_owned(),
            name.to_owned(),
            std::sync::Arc::clone(&stop),
        );
        let thread = std::thread::spawn(move || {
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = handle.block_on(async {
                    let api: kube::Api<k8s_openapi::api::core::v1::Service> =
                        kube::Api::all(client.clone());
                    for svc in api.list(&Default::default()).await?.items {
                        let ns = svc.metadata.namespace.clone().unwrap_or_default();
                        if ns.starts_with(&prefix) && svc.metadata.name.as_deref() == Some(&name) {
                            let ns_api: kube::Api<k8s_openapi::api::core::v1::Service> =
                                kube::Api::namespaced(client.clone(), &ns);
                            let _ = ns_api.delete(&name, &Default::default()).await;
                        }
                    }
                    Ok::<_, kube::Error>(())
                });
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        });
        Pruner {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Pruner {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
