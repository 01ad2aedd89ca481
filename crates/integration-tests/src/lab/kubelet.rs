//! The lab's kubelet stand-in, one per cluster. kwok makes pods Running and Ready without
//! running anything; this runs what the tests need to be real:
//!
//! - **The clustermesh-apiserver pod.** For the newest Running pod labelled
//!   `k8s-app=clustermesh-apiserver` it materialises the pod's volumes (Secrets, ConfigMaps,
//!   projected sources including a real service-account token from the TokenRequest API,
//!   emptyDirs) as files, resolves each container's environment (values, ConfigMap and Secret
//!   keys, field references, `$(VAR)` expansion) and runs the init containers to completion, then
//!   the containers, as processes with the chart's own command and arguments. Each container
//!   gets a private mount namespace in which its volumes sit at their `mountPath`s and the
//!   release's image files (Cilium's `clustermesh-apiserver`, etcd, `etcd-config.yaml`) at
//!   theirs, so Cilium reads exactly the paths the chart wrote. Containers that exit are
//!   restarted; updated Secrets are written into the running pod's volumes, as kubelet does.
//! - **NodePorts.** Each NodePort of the `clustermesh-apiserver` Service is forwarded from the
//!   node address to the pod's port (`lab-forward`, standing in for kube-proxy).
//! - **Agent pods** (`k8s-app=cilium`) get their Secret and ConfigMap volumes written to
//!   `pods/agent/`, and a mount-namespace entry script, for the `cilium-dbg` stand-in.
//! - **What the operator and agents would register**: once the operator pod runs, the Cilium
//!   CRDs of its release (the operator registers them at start); once an agent runs on a node,
//!   that node's CiliumNode with its address and a pod range of the cluster's pool.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Pod, Secret, Service, ServiceAccount, Volume,
};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};

use super::Cluster;
use super::components;
use super::proc::{Proc, ProcSpec, Spawner};

/// kwok's exec configuration for a cluster: commands exec'd into agent containers run in
/// `pods/agent`, those into clustermesh-apiserver containers in `pods/clustermesh-apiserver`,
/// everything else in the cluster's directory. What they find on PATH is kwok's PATH.
///
/// Commands exec'd into a clustermesh-apiserver container learn which one from
/// `CMESH_CONTAINER`: the `clustermesh-apiserver` on PATH then enters that container's mount
/// namespace, so `kvstoremesh-dbg troubleshoot` reads the files the container has.
pub fn exec_config(cluster_dir: &Path) -> String {
    let d = cluster_dir.display();
    let mut s = format!(
        "apiVersion: kwok.x-k8s.io/v1alpha1\nkind: ClusterExec\nmetadata:\n  name: cmesh-lab\nspec:\n  execs:\n  - containers: [cilium-agent]\n    local:\n      workDir: {d}/pods/agent\n"
    );
    for c in ["etcd", "apiserver", "kvstoremesh"] {
        s.push_str(&format!(
            "  - containers: [{c}]\n    local:\n      workDir: {d}/pods/clustermesh-apiserver\n      envs:\n      - name: CMESH_CONTAINER\n        value: {c}\n"
        ));
    }
    s.push_str(&format!("  - local:\n      workDir: {d}\n"));
    s
}

/// The lab binary `name` (built next to the test executables).
pub fn lab_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let p = dir.join(name);
    assert!(
        p.is_file(),
        "{} not built (cargo builds it with the integration tests)",
        p.display()
    );
    p
}

/// A running container.
struct ContainerRun {
    name: String,
    spec: ProcSpec,
    proc: Option<Proc>,
    started: Instant,
    restarts: u32,
    /// False while a test keeps it stopped.
    enabled: bool,
}

/// The clustermesh-apiserver pod being run.
struct PodRun {
    uid: String,
    name: String,
    containers: Vec<ContainerRun>,
    volumes: Vec<Volume>,
}

#[derive(Default)]
struct State {
    pod: Option<PodRun>,
    agent_uid: Option<String>,
    forwarders: BTreeMap<String, Proc>,
    crds: Option<String>,
    cilium_nodes: BTreeSet<String>,
    /// Containers tests keep stopped across pod restarts.
    disabled: BTreeSet<String>,
    events: Vec<String>,
}

struct Shared {
    cluster: Arc<Cluster>,
    spawner: Arc<Spawner>,
    stop: AtomicBool,
    state: Mutex<State>,
}

impl Shared {
    fn event(&self, e: String) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.events.push(e);
    }
}

/// A running kubelet stand-in.
pub struct Handle {
    shared: Arc<Shared>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// Starts the stand-in of `cluster` on `rt`.
pub fn start(rt: &tokio::runtime::Runtime, cluster: Arc<Cluster>, spawner: Arc<Spawner>) -> Handle {
    for d in ["pods/agent", "pods/clustermesh-apiserver", "bin"] {
        std::fs::create_dir_all(cluster.dir.join(d)).expect("kubelet dirs");
    }
    // What `kubectl exec` into an agent finds: the agent CLI stand-in under both its names.
    let standin = lab_bin("cilium-dbg-standin");
    let curl = lab_bin("lab-curl");
    for (n, target) in [
        ("cilium-dbg", &standin),
        ("cilium", &standin),
        ("curl", &curl),
    ] {
        let link = cluster.dir.join("bin").join(n);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(target, &link).expect("stand-in link");
    }
    // Services whose only backend is a pod the lab runs on this node resolve to the node's
    // loopback, as the agent's service-aware dialer and its load balancer would get there.
    std::fs::write(
        cluster.dir.join("hosts"),
        "127.0.0.1 localhost\n::1 localhost ip6-localhost\n127.0.0.1 clustermesh-apiserver.kube-system.svc clustermesh-apiserver.kube-system.svc.cluster.local\n",
    )
    .expect("hosts");
    let shared = Arc::new(Shared {
        cluster,
        spawner,
        stop: AtomicBool::new(false),
        state: Mutex::new(State::default()),
    });
    let s = Arc::clone(&shared);
    let task = rt.spawn(async move {
        while !s.stop.load(Ordering::Relaxed) {
            if let Err(e) = reconcile(&s).await {
                s.event(format!("reconcile: {e}"));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    Handle {
        shared,
        task: Mutex::new(Some(task)),
    }
}

impl Handle {
    /// Stops the loop and every process it started.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
            t.abort();
        }
        let mut s = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        s.pod = None;
        s.forwarders.clear();
    }

    /// What it did, and the tail of each container's log.
    pub fn logs(&self, lines: usize) -> String {
        let s = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        let name = &self.shared.cluster.name;
        let mut out = format!("--- {name} kubelet stand-in\n");
        for e in s.events.iter().rev().take(lines).rev() {
            out.push_str(e);
            out.push('\n');
        }
        if let Some(p) = &s.pod {
            for c in &p.containers {
                out.push_str(&format!(
                    "--- {name} {}/{} (restarts {})\n{}\n",
                    p.name,
                    c.name,
                    c.restarts,
                    super::proc::log_tail(&c.spec.log, lines)
                ));
            }
        }
        out
    }

    /// Stops container `name` of the clustermesh-apiserver pod and keeps it stopped (a crashed
    /// etcd, say) until [`Handle::start_container`].
    pub fn stop_container(&self, name: &str) {
        let mut s = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        s.disabled.insert(name.to_owned());
        if let Some(p) = &mut s.pod {
            for c in p.containers.iter_mut().filter(|c| c.name == name) {
                c.enabled = false;
                if let Some(mut proc) = c.proc.take() {
                    proc.kill();
                }
            }
        }
    }

    /// Lets container `name` run again.
    pub fn start_container(&self, name: &str) {
        let mut s = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        s.disabled.remove(name);
        if let Some(p) = &mut s.pod {
            for c in p.containers.iter_mut().filter(|c| c.name == name) {
                c.enabled = true;
            }
        }
    }

    /// Waits until the clustermesh-apiserver pod's containers (all of `names`) are running.
    ///
    /// # Errors
    /// What was running at the timeout.
    pub fn wait_running(&self, names: &[&str], timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let running: Vec<String> = {
                let s = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
                s.pod
                    .as_ref()
                    .map(|p| {
                        p.containers
                            .iter()
                            .filter(|c| c.proc.is_some())
                            .map(|c| c.name.clone())
                            .collect()
                    })
                    .unwrap_or_default()
            };
            if names.iter().all(|n| running.iter().any(|r| r == n)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{}: clustermesh-apiserver containers running: [{}], want [{}]",
                    self.shared.cluster.name,
                    running.join(", "),
                    names.join(", ")
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The UID of the clustermesh-apiserver pod being run.
    pub fn pod_uid(&self) -> Option<String> {
        let s = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        s.pod.as_ref().map(|p| p.uid.clone())
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.stop();
    }
}

fn running(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

fn label<'a>(p: &'a Pod, k: &str) -> Option<&'a str> {
    p.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(k))
        .map(String::as_str)
}

/// The newest running pod with `k8s-app=<app>` (the one a rollout converges on).
fn newest<'a>(pods: &'a [Pod], key: &str, app: &str) -> Option<&'a Pod> {
    pods.iter()
        .filter(|p| label(p, key) == Some(app) && running(p))
        .max_by(|a, b| {
            a.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0)
                .cmp(&b.metadata.creation_timestamp.as_ref().map(|t| t.0))
                .then_with(|| a.metadata.name.cmp(&b.metadata.name))
        })
}

/// The Cilium release of a pod, from its first container's image tag
/// (`quay.io/cilium/clustermesh-apiserver:v1.20.0@sha256:…` → `1.20.0`).
fn release_of(p: &Pod) -> Option<String> {
    // The Cilium image of the pod (1.14's clustermesh-apiserver pod also runs etcd's own).
    let spec = p.spec.as_ref()?;
    let images: Vec<&str> = spec
        .containers
        .iter()
        .filter_map(|c| c.image.as_deref())
        .collect();
    let image = images
        .iter()
        .find(|i| i.contains("/cilium/"))
        .or(images.first())?;
    let (_, tag) = repo_tag(image)?;
    Some(tag.trim_start_matches('v').to_owned())
}

/// `quay.io/cilium/clustermesh-apiserver:v1.20.0@sha256:…` → (`quay.io/cilium/clustermesh-apiserver`, `v1.20.0`).
fn repo_tag(image: &str) -> Option<(&str, &str)> {
    image.split('@').next()?.rsplit_once(':')
}

/// The files of container image `image` the lab has: a Cilium release's clustermesh-apiserver
/// (or kvstoremesh) image, or the etcd image Cilium 1.14 runs next to it (Debian's etcd and
/// etcdctl under usr/local/bin, as in quay.io/coreos/etcd).
fn image_root(image: &str) -> Option<PathBuf> {
    let (repo, tag) = repo_tag(image)?;
    if repo.ends_with("/etcd") {
        let d = components::tools_dir().join("images/etcd");
        return d.is_dir().then_some(d);
    }
    components::cilium(tag.trim_start_matches('v')).map(|r| r.image())
}

async fn reconcile(s: &Shared) -> Result<(), String> {
    let c = &s.cluster;
    let pods: Api<Pod> = Api::namespaced(c.system.clone(), "kube-system");
    let list = pods
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("list pods: {e}"))?;
    let items = list.items;
    let lookups = Lookups::list(&c.system, "kube-system").await?;

    if let Some(op) = newest(&items, "io.cilium/app", "operator") {
        operator(s, op).await?;
    }
    let agents: Vec<&Pod> = items
        .iter()
        .filter(|p| label(p, "k8s-app") == Some("cilium") && running(p))
        .collect();
    agent_nodes(s, &agents).await?;
    if let Some(a) = newest(&items, "k8s-app", "cilium") {
        agent_files(s, a, &lookups).await?;
    }
    match newest(&items, "k8s-app", "clustermesh-apiserver") {
        Some(p) => clustermesh_pod(s, p, &lookups).await?,
        None => {
            let had = s.state.lock().unwrap_or_else(|p| p.into_inner()).pod.take();
            if let Some(old) = had {
                s.event(format!("pod {} gone: containers stopped", old.name));
            }
        }
    }
    node_ports(s).await
}

/// The operator registers its release's CRDs when it starts; the lab registers the ones the
/// clustermesh-apiserver and the tests use.
async fn operator(s: &Shared, op: &Pod) -> Result<(), String> {
    let Some(version) = release_of(op) else {
        return Ok(());
    };
    if s.state
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .crds
        .as_deref()
        == Some(&version)
    {
        return Ok(());
    }
    let Some(release) = components::cilium(&version) else {
        return Err(format!("no Cilium {version} in .tools"));
    };
    let api: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(s.cluster.system.clone());
    let mut applied = Vec::new();
    for (dir, names) in [
        (
            "v2",
            &[
                "ciliumnodes",
                "ciliumidentities",
                "ciliumendpoints",
                "ciliumexternalworkloads",
                "ciliumclusterwidenetworkpolicies",
                "ciliumnetworkpolicies",
            ][..],
        ),
        ("v2alpha1", &["ciliumendpointslices"][..]),
    ] {
        for n in names {
            let path = release.crds().join(dir).join(format!("{n}.yaml"));
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let crd = yaml_to_json(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            let name = crd
                .pointer("/metadata/name")
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned();
            api.patch(
                &name,
                &PatchParams::apply("cilium-operator").force(),
                &Patch::Apply(&crd),
            )
            .await
            .map_err(|e| format!("CRD {name}: {e}"))?;
            applied.push(name);
        }
    }
    s.event(format!(
        "operator {version}: registered CRDs {}",
        applied.join(", ")
    ));
    s.state.lock().unwrap_or_else(|p| p.into_inner()).crds = Some(version);
    Ok(())
}

fn yaml_to_json(text: &str) -> Result<serde_json::Value, String> {
    let limits = cmesh_core::yaml::Limits {
        max_bytes: 16 << 20,
        max_depth: 256,
        max_nodes: 10_000_000,
        max_expanded_bytes: 256 << 20,
    };
    let doc = cmesh_core::yaml::parse(text, limits).map_err(|e| e.to_string())?;
    let mut spans = Default::default();
    let root = doc.root.ok_or("empty YAML document")?;
    Ok(cmesh_core::yaml::to_json(&root, &mut spans))
}

/// Each agent registers its node as a CiliumNode (address, pod range from the cluster pool,
/// labels); the lab does it for every node an agent runs on.
async fn agent_nodes(s: &Shared, agents: &[&Pod]) -> Result<(), String> {
    if s.state
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .crds
        .is_none()
    {
        return Ok(());
    }
    let c = &s.cluster;
    let ar = kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
        "cilium.io",
        "v2",
        "CiliumNode",
    ));
    let api: Api<kube::api::DynamicObject> = Api::all_with(c.system.clone(), &ar);
    for a in agents {
        let Some(node) = a.spec.as_ref().and_then(|s| s.node_name.clone()) else {
            continue;
        };
        if s.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .cilium_nodes
            .contains(&node)
        {
            continue;
        }
        let n = c.nodes.iter().position(|x| *x == node).unwrap_or(0);
        let obj = serde_json::json!({
            "apiVersion": "cilium.io/v2",
            "kind": "CiliumNode",
            "metadata": {"name": node, "labels": {"kubernetes.io/hostname": node}},
            "spec": {
                "addresses": [{"type": "InternalIP", "ip": c.ip.to_string()}],
                "ipam": {"podCIDRs": [node_pod_cidr(c, n)]},
            },
        });
        api.patch(
            &node,
            &PatchParams::apply("cilium-agent").force(),
            &Patch::Apply(&obj),
        )
        .await
        .map_err(|e| format!("CiliumNode {node}: {e}"))?;
        s.event(format!("agent on {node}: CiliumNode registered"));
        s.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .cilium_nodes
            .insert(node);
    }
    Ok(())
}

/// The /24 of the cluster pool the operator gives node `n` (cluster-pool IPAM).
fn node_pod_cidr(c: &Cluster, n: usize) -> String {
    let pool = c.pod_cidr.split('.').take(2).collect::<Vec<_>>().join(".");
    format!("{pool}.{n}.0/24")
}

/// The agent's Secret and ConfigMap volumes in `pods/agent`, and its entry script.
async fn agent_files(s: &Shared, a: &Pod, l: &Lookups) -> Result<(), String> {
    let c = &s.cluster;
    let dir = c.dir.join("pods/agent");
    let uid = a.metadata.uid.clone().unwrap_or_default();
    let spec = a.spec.as_ref().ok_or("agent pod without spec")?;
    let volumes: Vec<Volume> = spec
        .volumes
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|v| v.secret.is_some() || v.config_map.is_some() || v.projected.is_some())
        .collect();
    let new_pod = s
        .state
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .agent_uid
        .as_deref()
        != Some(uid.as_str());
    if new_pod {
        let _ = std::fs::remove_dir_all(dir.join("volumes"));
    }
    let changed = materialize(c, a, &volumes, &dir.join("volumes"), l).await?;
    // The agent's configuration as its `config` init container (`cilium-dbg build-config`,
    // 1.15 on) builds it from the `cilium-config` ConfigMap; 1.14 mounts the ConfigMap instead.
    for (k, v) in l.config_maps.get("cilium-config").into_iter().flatten() {
        if !k.contains('/') {
            write_if_changed(&dir.join("config-map").join(k), v.as_bytes(), 0o644)?;
        }
    }
    let nodes: String = c
        .nodes
        .iter()
        .enumerate()
        .map(|(n, name)| format!("{name} {} {}\n", c.ip, node_pod_cidr(c, n)))
        .collect();
    write_if_changed(&dir.join("nodes"), nodes.as_bytes(), 0o644)?;
    if let Some(v) = release_of(a) {
        write_if_changed(&dir.join("release"), v.as_bytes(), 0o644)?;
    }
    if new_pod {
        let Some(agent) = spec.containers.iter().find(|k| k.name == "cilium-agent") else {
            return Ok(());
        };
        let image = release_of(a)
            .and_then(|v| components::cilium(&v))
            .map(|r| r.image());
        let script = entry_script(agent, &volumes, &dir, image.as_deref());
        write_if_changed(&dir.join("enter.sh"), script.as_bytes(), 0o755)?;
        s.event(format!(
            "agent pod {}: files in {}",
            a.metadata.name.clone().unwrap_or_default(),
            dir.display()
        ));
        s.state.lock().unwrap_or_else(|p| p.into_inner()).agent_uid = Some(uid);
    } else if changed {
        s.event("agent volumes updated".into());
    }
    Ok(())
}

async fn clustermesh_pod(s: &Shared, p: &Pod, lookups: &Lookups) -> Result<(), String> {
    let c = &s.cluster;
    let uid = p.metadata.uid.clone().unwrap_or_default();
    let name = p.metadata.name.clone().unwrap_or_default();
    let dir = c.dir.join("pods/clustermesh-apiserver");
    let current = s
        .state
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .pod
        .as_ref()
        .map(|r| r.uid.clone());
    if current.as_deref() == Some(uid.as_str()) {
        // The same pod: refresh its volumes (kubelet propagates Secret updates) and restart
        // what exited.
        let volumes = s
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pod
            .as_ref()
            .map(|r| r.volumes.clone())
            .unwrap_or_default();
        if materialize(c, p, &volumes, &dir.join("volumes"), lookups).await? {
            s.event(format!("pod {name}: volumes updated"));
        }
        restart_exited(s);
        return Ok(());
    }
    // A new pod: stop the old one's containers first (one pod per node owns its ports).
    let old = s.state.lock().unwrap_or_else(|p| p.into_inner()).pod.take();
    if let Some(old) = old {
        s.event(format!("pod {}: replaced by {name}", old.name));
    }
    let Some(version) = release_of(p) else {
        return Err(format!("pod {name}: no image tag"));
    };
    let release = components::cilium(&version).ok_or(format!("no Cilium {version} in .tools"))?;
    let spec = p.spec.as_ref().ok_or("pod without spec")?;
    let volumes = spec.volumes.clone().unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("volumes")).map_err(|e| e.to_string())?;
    materialize(c, p, &volumes, &dir.join("volumes"), lookups).await?;
    let image = release.image();
    // The pod shares the node's network namespace here; giving it its pod IP (on lo) lets the
    // containers bind what the chart tells them to (1.14 and 1.16 listen on the pod IP).
    if let Some(ip) = p.status.as_ref().and_then(|s| s.pod_ip.clone()) {
        let _ = tokio::process::Command::new("ip")
            .args([
                "-n",
                &c.netns,
                "addr",
                "replace",
                &format!("{ip}/32"),
                "dev",
                "lo",
            ])
            .output()
            .await;
    }
    // `kubectl exec` into the pod's containers finds the image's binaries (kwok looks commands
    // up on its own PATH, which starts with the cluster's bin/).
    for b in ["clustermesh-apiserver", "kvstoremesh"] {
        let link = c.dir.join("bin").join(b);
        let _ = std::fs::remove_file(&link);
        let target = image.join("usr/bin").join(b);
        if target.is_file() {
            let wrapper = format!(
                "#!/bin/sh\n# kubectl exec into a clustermesh-apiserver container: run in its mount namespace.\nif [ -n \"$CMESH_CONTAINER\" ] && [ -f \"$PWD/enter-$CMESH_CONTAINER.sh\" ]; then\n  exec unshare --mount --propagation private -- /bin/sh \"$PWD/enter-$CMESH_CONTAINER.sh\" /usr/bin/{b} \"$@\"\nfi\nexec {} \"$@\"\n",
                sh_quote(&target.display().to_string())
            );
            write_if_changed(&link, wrapper.as_bytes(), 0o755)?;
        }
    }

    for init in spec.init_containers.clone().unwrap_or_default() {
        let proc_spec = container_spec(s, p, &init, &volumes, &dir, lookups)?;
        let mut proc = Proc::start(&s.spawner, proc_spec);
        let deadline = Instant::now() + Duration::from_secs(120);
        let status = loop {
            if let Some(st) = proc.exited() {
                break Some(st);
            }
            if Instant::now() > deadline {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        match status {
            Some(st) if st.success() => s.event(format!("pod {name}: init {} done", init.name)),
            other => {
                let why = format!(
                    "pod {name}: init container {} {}: {}",
                    init.name,
                    other.map_or("timed out".into(), |st| st.to_string()),
                    proc.log_tail(15)
                );
                s.event(why.clone());
                return Err(why);
            }
        }
    }
    let disabled = s
        .state
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .disabled
        .clone();
    let mut containers = Vec::new();
    for k in &spec.containers {
        let proc_spec = container_spec(s, p, k, &volumes, &dir, lookups)?;
        let enabled = !disabled.contains(&k.name);
        let proc = enabled.then(|| Proc::start(&s.spawner, proc_spec.clone()));
        containers.push(ContainerRun {
            name: k.name.clone(),
            spec: proc_spec,
            proc,
            started: Instant::now(),
            restarts: 0,
            enabled,
        });
    }
    s.event(format!(
        "pod {name} (Cilium {version}): started {}",
        containers
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    s.state.lock().unwrap_or_else(|p| p.into_inner()).pod = Some(PodRun {
        uid,
        name,
        containers,
        volumes,
    });
    Ok(())
}

fn restart_exited(s: &Shared) {
    let mut events = Vec::new();
    {
        let mut st = s.state.lock().unwrap_or_else(|p| p.into_inner());
        let Some(pod) = st.pod.as_mut() else {
            return;
        };
        for c in &mut pod.containers {
            if !c.enabled {
                continue;
            }
            let exited = match &mut c.proc {
                Some(p) => p.exited(),
                None => None,
            };
            if let Some(status) = exited {
                events.push(format!(
                    "{}/{} exited ({status}): {}",
                    pod.name,
                    c.name,
                    super::proc::log_tail(&c.spec.log, 3)
                ));
                c.proc = None;
            }
            if c.proc.is_none() && c.started.elapsed() > Duration::from_secs(1) {
                c.proc = Some(Proc::start(&s.spawner, c.spec.clone()));
                c.started = Instant::now();
                c.restarts += 1;
            }
        }
    }
    for e in events {
        s.event(e);
    }
}

/// The namespace's Secrets and ConfigMaps, listed once per pass: what env and volume
/// references resolve against.
struct Lookups {
    config_maps: BTreeMap<String, BTreeMap<String, String>>,
    secrets: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    config_map_bytes: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
}

impl Lookups {
    async fn list(client: &kube::Client, ns: &str) -> Result<Lookups, String> {
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
        let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
        let mut out = Lookups {
            config_maps: BTreeMap::new(),
            secrets: BTreeMap::new(),
            config_map_bytes: BTreeMap::new(),
        };
        for cm in cms
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?
        {
            let name = cm.metadata.name.clone().unwrap_or_default();
            out.config_maps.insert(
                name.clone(),
                cm.data.clone().unwrap_or_default().into_iter().collect(),
            );
            out.config_map_bytes.insert(name, cm_bytes(cm));
        }
        for sec in secrets
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?
        {
            out.secrets.insert(
                sec.metadata.name.clone().unwrap_or_default(),
                sec.data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect(),
            );
        }
        Ok(out)
    }
}

/// The downward API fields the charts use.
fn field(p: &Pod, c: &Cluster, path: &str) -> String {
    let m = &p.metadata;
    match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "spec.nodeName" => p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default(),
        "spec.serviceAccountName" => p
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" => p
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .unwrap_or_default(),
        "status.hostIP" => c.ip.to_string(),
        other => {
            if let Some(k) = other
                .strip_prefix("metadata.labels['")
                .and_then(|r| r.strip_suffix("']"))
            {
                return m
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(k).cloned())
                    .unwrap_or_default();
            }
            if let Some(k) = other
                .strip_prefix("metadata.annotations['")
                .and_then(|r| r.strip_suffix("']"))
            {
                return m
                    .annotations
                    .as_ref()
                    .and_then(|l| l.get(k).cloned())
                    .unwrap_or_default();
            }
            String::new()
        }
    }
}

/// Kubernetes' `$(VAR)` expansion: a defined variable is replaced, `$$` is a literal `$`, and
/// anything else is left as written.
pub fn expand(s: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = after.strip_prefix('(')
            && let Some(end) = r.find(')')
            && let Some((_, v)) = env.iter().rev().find(|(k, _)| *k == r[..end])
        {
            out.push_str(v);
            rest = &r[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The environment kubelet gives a container: the image's PATH, HOSTNAME, the `kubernetes`
/// Service's variables (pointing at the API server's node address: there is no kube-proxy to
/// route its ClusterIP), then the container's own `envFrom` and `env`.
fn container_env(p: &Pod, c: &Cluster, k: &Container, l: &Lookups) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        (
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        ),
        (
            "HOSTNAME".into(),
            p.metadata.name.clone().unwrap_or_default(),
        ),
        ("HOME".into(), "/root".into()),
        ("KUBERNETES_SERVICE_HOST".into(), c.ip.to_string()),
        ("KUBERNETES_SERVICE_PORT".into(), "6443".into()),
        ("KUBERNETES_SERVICE_PORT_HTTPS".into(), "6443".into()),
        ("KUBERNETES_PORT".into(), format!("tcp://{}:6443", c.ip)),
    ];
    for e in k.env_from.iter().flatten() {
        let prefix = e.prefix.clone().unwrap_or_default();
        if let Some(r) = &e.config_map_ref
            && let Some(m) = l.config_maps.get(&r.name)
        {
            env.extend(m.iter().map(|(k, v)| (format!("{prefix}{k}"), v.clone())));
        }
        if let Some(r) = &e.secret_ref
            && let Some(m) = l.secrets.get(&r.name)
        {
            env.extend(m.iter().map(|(k, v)| {
                (
                    format!("{prefix}{k}"),
                    String::from_utf8_lossy(v).into_owned(),
                )
            }));
        }
    }
    for e in k.env.iter().flatten() {
        let value = if let Some(v) = &e.value {
            Some(expand(v, &env))
        } else if let Some(vf) = &e.value_from {
            if let Some(r) = &vf.config_map_key_ref {
                l.config_maps
                    .get(&r.name)
                    .and_then(|m| m.get(&r.key))
                    .cloned()
            } else if let Some(r) = &vf.secret_key_ref {
                l.secrets
                    .get(&r.name)
                    .and_then(|m| m.get(&r.key))
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            } else if let Some(r) = &vf.field_ref {
                Some(field(p, c, &r.field_path))
            } else {
                // resourceFieldRef: the limits kwok does not enforce.
                Some("0".into())
            }
        } else {
            Some(String::new())
        };
        // An optional reference that does not resolve leaves the variable unset.
        if let Some(v) = value {
            env.retain(|(k, _)| *k != e.name);
            env.push((e.name.clone(), v));
        }
    }
    env
}

/// The process of container `k`: its command and arguments (expanded), inside a mount
/// namespace prepared by its entry script, in the cluster's network namespace.
fn container_spec(
    s: &Shared,
    p: &Pod,
    k: &Container,
    volumes: &[Volume],
    dir: &Path,
    l: &Lookups,
) -> Result<ProcSpec, String> {
    let c = &s.cluster;
    let image = k.image.as_deref().and_then(image_root);
    let env = container_env(p, c, k, l);
    let mut argv: Vec<String> = k
        .command
        .clone()
        .unwrap_or_default()
        .iter()
        .chain(k.args.iter().flatten())
        .map(|a| expand(a, &env))
        .collect();
    if argv.is_empty() {
        return Err(format!(
            "container {}: no command (image entrypoints are not known)",
            k.name
        ));
    }
    let script = dir.join(format!("enter-{}.sh", k.name));
    write_if_changed(
        &script,
        entry_script(k, volumes, dir, image.as_deref()).as_bytes(),
        0o755,
    )?;
    // A PID namespace too, as a container has: when its main process exits, whatever it left
    // running in the background goes with it (Cilium 1.14's etcd-init starts an etcd with `&`).
    let mut full = vec![
        "unshare".into(),
        "--mount".into(),
        "--propagation".into(),
        "private".into(),
        "--pid".into(),
        "--fork".into(),
        "--kill-child".into(),
        "--mount-proc".into(),
        "--".into(),
        "/bin/sh".into(),
        script.display().to_string(),
    ];
    full.append(&mut argv);
    let mut spec = ProcSpec::new(&k.name, &c.netns, dir, full);
    spec.name = k.name.clone();
    spec.env = env;
    spec.log = dir.join(format!("{}.log", k.name));
    Ok(spec)
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The script that turns a fresh mount namespace into the container's view: private `/var/lib`,
/// `/run` and `/tmp`, the image's binaries over `/usr/bin` and its files under `/var/lib`, then
/// each volume at its mountPath, and finally `exec "$@"`.
fn entry_script(k: &Container, volumes: &[Volume], pod_dir: &Path, image: Option<&Path>) -> String {
    let mut s = String::from("#!/bin/sh\n# Written by the lab's kubelet stand-in.\nset -e\n");
    // The container gets fresh /tmp, /run and /var/lib, which would hide the lab's own files
    // when the workspace lives under one of them (a clone in /tmp): every host path is read
    // through a view of the host's tree taken before those mounts.
    s.push_str(
        "mount -t tmpfs -o mode=755 tmpfs /mnt\nmkdir /mnt/host\nmount --rbind / /mnt/host\n",
    );
    let host = |p: &Path| format!("/mnt/host{}", p.display());
    // pods/<role>/ is two levels below the cluster's directory, which holds `hosts`.
    if let Some(cluster_dir) = pod_dir.parent().and_then(Path::parent) {
        s.push_str(&format!(
            "mount --bind {} /etc/hosts\n",
            sh_quote(&host(&cluster_dir.join("hosts")))
        ));
    }
    s.push_str("mount -t tmpfs -o mode=755 tmpfs /var/lib\nmount -t tmpfs -o mode=755 tmpfs /run\nmount -t tmpfs -o mode=1777 tmpfs /tmp\n");
    if let Some(img) = image {
        for d in ["usr/bin", "usr/local/bin"] {
            if img.join(d).is_dir() {
                s.push_str(&format!(
                    "mkdir -p /{d}\nmount -t overlay overlay -o lowerdir={}:/{d} /{d}\n",
                    host(&img.join(d))
                ));
            }
        }
        let lib = img.join("var/lib");
        if lib.is_dir() {
            s.push_str(&format!("cp -a {}/. /var/lib/\n", sh_quote(&host(&lib))));
        }
    }
    let known: BTreeSet<&str> = volumes.iter().map(|v| v.name.as_str()).collect();
    let mut mounts: Vec<_> = k
        .volume_mounts
        .iter()
        .flatten()
        .filter(|m| known.contains(m.name.as_str()))
        .collect();
    mounts.sort_by_key(|m| m.mount_path.len());
    for m in mounts {
        let target = &m.mount_path;
        let supported = ["/var/lib/", "/var/run/", "/run/", "/tmp"]
            .iter()
            .any(|r| target.starts_with(r));
        if !supported {
            s.push_str(&format!(
                "echo 'kubelet stand-in: mountPath {target} not supported' >&2\n"
            ));
            continue;
        }
        let mut src = pod_dir.join("volumes").join(&m.name);
        let sub = m.sub_path.clone().unwrap_or_default();
        if !sub.is_empty() {
            src = src.join(&sub);
        }
        let (src, target) = (sh_quote(&host(&src)), sh_quote(target));
        if sub.is_empty() {
            s.push_str(&format!("mkdir -p {target}\nmount --bind {src} {target}\n"));
        } else {
            s.push_str(&format!(
                "if [ -d {src} ]; then mkdir -p {target}; else mkdir -p \"$(dirname {target})\"; touch {target}; fi\nmount --bind {src} {target}\n"
            ));
        }
        if m.read_only == Some(true) {
            s.push_str(&format!("mount -o remount,bind,ro {target}\n"));
        }
    }
    if let Some(w) = &k.working_dir {
        s.push_str(&format!("cd {}\n", sh_quote(w)));
    } else {
        s.push_str("cd /\n");
    }
    s.push_str("exec \"$@\"\n");
    s
}

fn write_if_changed(path: &Path, data: &[u8], mode: u32) -> Result<bool, String> {
    use std::os::unix::fs::PermissionsExt as _;
    if std::fs::read(path).ok().as_deref() == Some(data) {
        return Ok(false);
    }
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let tmp = path.with_extension("lab-tmp");
    std::fs::write(&tmp, data).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(true)
}

type Files = BTreeMap<PathBuf, (Vec<u8>, u32)>;

/// Writes the pod's volumes under `root/<volume>/`: Secrets, ConfigMaps, projected sources,
/// emptyDirs (created once), a real service-account token. Files that are no longer part of
/// a volume are removed. Returns whether anything changed.
async fn materialize(
    c: &Cluster,
    p: &Pod,
    volumes: &[Volume],
    root: &Path,
    l: &Lookups,
) -> Result<bool, String> {
    let mut changed = false;
    for v in volumes {
        let dir = root.join(&v.name);
        if v.empty_dir.is_some() || v.host_path.is_some() {
            if !dir.exists() {
                std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
                changed = true;
            }
            continue;
        }
        let mut files: Files = BTreeMap::new();
        if let Some(sv) = &v.secret {
            let name = sv.secret_name.clone().unwrap_or_default();
            let mode = sv.default_mode.unwrap_or(0o644) as u32;
            add_keys(&mut files, l.secrets.get(&name), sv.items.as_deref(), mode);
        } else if let Some(cv) = &v.config_map {
            let mode = cv.default_mode.unwrap_or(0o644) as u32;
            add_keys(
                &mut files,
                l.config_map_bytes.get(&cv.name),
                cv.items.as_deref(),
                mode,
            );
        } else if let Some(pv) = &v.projected {
            let mode = pv.default_mode.unwrap_or(0o644) as u32;
            for src in pv.sources.iter().flatten() {
                if let Some(ss) = &src.secret {
                    add_keys(
                        &mut files,
                        l.secrets.get(&ss.name),
                        ss.items.as_deref(),
                        mode,
                    );
                }
                if let Some(cs) = &src.config_map {
                    add_keys(
                        &mut files,
                        l.config_map_bytes.get(&cs.name),
                        cs.items.as_deref(),
                        mode,
                    );
                }
                if let Some(t) = &src.service_account_token {
                    let target = root.join(&v.name).join(&t.path);
                    // One token per pod, as kubelet requests it (refreshing is not needed for
                    // the lifetime of a test).
                    let token = match std::fs::read(&target) {
                        Ok(b) if !b.is_empty() => b,
                        _ => request_token(c, p, t.audience.clone(), t.expiration_seconds)
                            .await?
                            .into_bytes(),
                    };
                    files.insert(PathBuf::from(&t.path), (token, mode));
                }
                if let Some(d) = &src.downward_api {
                    for item in d.items.iter().flatten() {
                        if let Some(f) = &item.field_ref {
                            files.insert(
                                PathBuf::from(&item.path),
                                (field(p, c, &f.field_path).into_bytes(), mode),
                            );
                        }
                    }
                }
            }
        } else {
            continue;
        }
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        for (rel, (data, mode)) in &files {
            changed |= write_if_changed(&dir.join(rel), data, *mode)?;
        }
        // Keys removed from a Secret disappear from the volume.
        for entry in walk(&dir) {
            let rel = entry.strip_prefix(&dir).unwrap_or(&entry).to_path_buf();
            if !files.contains_key(&rel) {
                let _ = std::fs::remove_file(&entry);
                changed = true;
            }
        }
    }
    Ok(changed)
}

fn cm_bytes(cm: ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut m: BTreeMap<String, Vec<u8>> = cm
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.into_bytes()))
        .collect();
    m.extend(
        cm.binary_data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0)),
    );
    m
}

fn add_keys(
    files: &mut Files,
    data: Option<&BTreeMap<String, Vec<u8>>>,
    items: Option<&[k8s_openapi::api::core::v1::KeyToPath]>,
    mode: u32,
) {
    let Some(data) = data else {
        return;
    };
    match items {
        Some(items) => {
            for it in items {
                if let Some(v) = data.get(&it.key) {
                    let m = it.mode.map_or(mode, |m| m as u32);
                    files.insert(PathBuf::from(&it.path), (v.clone(), m));
                }
            }
        }
        None => {
            for (k, v) in data {
                files.insert(PathBuf::from(k), (v.clone(), mode));
            }
        }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

async fn request_token(
    c: &Cluster,
    p: &Pod,
    audience: Option<String>,
    expiration: Option<i64>,
) -> Result<String, String> {
    let ns = p.metadata.namespace.clone().unwrap_or_default();
    let sa = p
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let api: Api<ServiceAccount> = Api::namespaced(c.system.clone(), &ns);
    let req: TokenRequest = serde_json::from_value(serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {
            "audiences": audience.map(|a| vec![a]).unwrap_or_default(),
            "expirationSeconds": expiration.unwrap_or(3607),
            "boundObjectRef": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": p.metadata.name,
                "uid": p.metadata.uid,
            },
        },
    }))
    .map_err(|e| e.to_string())?;
    let r = api
        .create_token_request(&sa, &PostParams::default(), &req)
        .await
        .map_err(|e| format!("token for {ns}/{sa}: {e}"))?;
    r.status
        .and_then(|s| s.token)
        .ok_or_else(|| format!("token for {ns}/{sa}: empty status"))
}

/// One forwarder per NodePort of the `clustermesh-apiserver` Service: node address:nodePort to
/// the pod's target port on the namespace's loopback.
async fn node_ports(s: &Shared) -> Result<(), String> {
    let c = &s.cluster;
    let api: Api<Service> = Api::namespaced(c.system.clone(), "kube-system");
    let svc = api
        .get_opt("clustermesh-apiserver")
        .await
        .map_err(|e| e.to_string())?;
    let mut want: BTreeMap<String, (String, String)> = BTreeMap::new();
    if let Some(spec) = svc.and_then(|s| s.spec)
        && spec.type_.as_deref() == Some("NodePort")
    {
        for port in spec.ports.iter().flatten() {
            let Some(np) = port.node_port else { continue };
            let target = match &port.target_port {
                Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(t)) => *t,
                // Named ports: the charts name 2379 `etcd`.
                _ => port.port,
            };
            let listen = format!("{}:{np}", c.ip);
            want.insert(listen.clone(), (listen, format!("127.0.0.1:{target}")));
        }
    }
    let mut st = s.state.lock().unwrap_or_else(|p| p.into_inner());
    let stale: Vec<String> = st
        .forwarders
        .keys()
        .filter(|k| !want.contains_key(*k))
        .cloned()
        .collect();
    for k in stale {
        st.forwarders.remove(&k);
        st.events.push(format!("NodePort {k}: stopped"));
    }
    for (key, (listen, target)) in want {
        let dead = st
            .forwarders
            .get_mut(&key)
            .is_none_or(|p| p.exited().is_some());
        if dead {
            let spec = ProcSpec::new(
                &format!("nodeport-{}", key.replace([':', '.'], "-")),
                &c.netns,
                &c.dir,
                vec![
                    lab_bin("lab-forward").display().to_string(),
                    listen.clone(),
                    target.clone(),
                ],
            );
            st.forwarders.insert(key, Proc::start(&s.spawner, spec));
            st.events.push(format!("NodePort {listen} -> {target}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::expand;

    #[test]
    fn expansion_follows_kubernetes() {
        let env = vec![
            ("A".to_owned(), "1".to_owned()),
            ("B".to_owned(), "x".to_owned()),
        ];
        assert_eq!(expand("--id=$(A)-$(B)", &env), "--id=1-x");
        assert_eq!(expand("$$(A) $(C) $", &env), "$(A) $(C) $");
    }
}
