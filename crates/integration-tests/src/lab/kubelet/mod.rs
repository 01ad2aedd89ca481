//! The lab's kubelet stand-in, one per cluster: it runs every pod scheduled to the cluster's
//! nodes (kwok keeps the nodes Ready and serves their kubelet API, but no longer touches
//! pods). What a pod is and how it runs is in [`pod`] and [`container`]; what this module owns
//! is the loop: pods appear (start them: network from Cilium's CNI plugin once the node's agent
//! wrote its CNI configuration, volumes, init containers, containers, status), run (restart
//! what exits, probe readiness, refresh Secret and ConfigMap volumes, report status) and go
//! (stop, CNI DEL, then delete the pod object as kubelet finalises it).
//!
//! `kubectl exec` reaches a container through kwok's `Exec` object for the pod and the
//! [`EXEC_WRAPPER`] on kwok's PATH, which runs the command in the container's root, network
//! namespace and cgroup (curl, `cilium-dbg`, `clustermesh-apiserver kvstoremesh-dbg`, …).

mod container;
mod pod;
mod volumes;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

use self::pod::{NotStarted, PodRun};
use self::volumes::Lookups;
use super::Cluster;
use super::proc::Spawner;

/// The commands `kubectl exec` may run in a lab pod: each is this wrapper under that name, on
/// kwok's PATH (the node's `bin/`).
pub const EXEC_COMMANDS: &[&str] = &[
    "sh",
    "bash",
    "curl",
    "cat",
    "ls",
    "env",
    "ip",
    "cilium",
    "cilium-dbg",
    "clustermesh-apiserver",
    "kvstoremesh",
];

/// The exec wrapper: in a pod's directory (kwok's `Exec` object sets it, with the container and
/// namespace), run the command in the container's root, network namespace and cgroup; anywhere
/// else, the machine's own program.
pub const EXEC_WRAPPER: &str = r#"#!/bin/sh
# kubectl exec into a pod the lab's kubelet stand-in runs (see lab::kubelet).
name=$(basename "$0")
if [ -n "$CMESH_CONTAINER" ] && [ -f "$PWD/enter-$CMESH_CONTAINER.sh" ]; then
  exec nsenter --net="/run/netns/$CMESH_NETNS" -- unshare --mount --propagation private -- /bin/sh "$PWD/enter-$CMESH_CONTAINER.sh" "$name" "$@"
fi
PATH=$(printf '%s' "$PATH" | sed "s#$(dirname "$0"):##")
exec "$name" "$@"
"#;

/// kwok's exec configuration: commands exec'd into pods without an `Exec` object run in the
/// cluster's directory.
pub fn exec_config(cluster_dir: &std::path::Path) -> String {
    format!(
        "apiVersion: kwok.x-k8s.io/v1alpha1\nkind: ClusterExec\nmetadata:\n  name: cmesh-lab\nspec:\n  execs:\n  - local:\n      workDir: {}\n",
        cluster_dir.display()
    )
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

enum Slot {
    /// Being started (by a task).
    Starting,
    /// Running (locked by the loop while it works on the pod, by tests through [`Handle`]).
    Running(Arc<tokio::sync::Mutex<PodRun>>),
    /// Failed to start at this time (retried after a pause).
    Failed(Instant),
}

#[derive(Default)]
struct State {
    pods: BTreeMap<String, Slot>,
    /// Containers (by name) of the clustermesh-apiserver pod that tests keep stopped.
    disabled: BTreeSet<String>,
    events: Vec<String>,
}

struct Shared {
    cluster: Arc<Cluster>,
    spawner: Arc<Spawner>,
    slot: u8,
    seq: AtomicU64,
    stop: AtomicBool,
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn event(&self, e: String) {
        self.lock().events.push(e);
    }
}

/// A running kubelet stand-in.
pub struct Handle {
    shared: Arc<Shared>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// Starts the stand-in of `cluster` (whose nodes are in `slot`) on `rt`.
pub fn start(
    rt: &tokio::runtime::Runtime,
    cluster: Arc<Cluster>,
    spawner: Arc<Spawner>,
    slot: u8,
) -> Handle {
    let wrapper = cluster.dir.join("lab-exec");
    std::fs::write(&wrapper, EXEC_WRAPPER).expect("exec wrapper");
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    for n in &cluster.hosts {
        for c in EXEC_COMMANDS {
            let link = n.dir.join("bin").join(c);
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(&wrapper, &link).expect("exec link");
        }
    }
    let shared = Arc::new(Shared {
        cluster,
        spawner,
        slot,
        seq: AtomicU64::new(1),
        stop: AtomicBool::new(false),
        state: Mutex::new(State::default()),
    });
    let s = Arc::clone(&shared);
    let task = rt.spawn(async move {
        while !s.stop.load(Ordering::Relaxed) {
            if let Err(e) = reconcile(&s).await {
                s.event(format!("reconcile: {e}"));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    Handle {
        shared,
        task: Mutex::new(Some(task)),
    }
}

fn label<'a>(p: &'a Pod, k: &str) -> Option<&'a str> {
    p.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(k))
        .map(String::as_str)
}

async fn reconcile(s: &Arc<Shared>) -> Result<(), String> {
    let c = &s.cluster;
    let api: Api<Pod> = Api::all(c.system.clone());
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("list pods: {e}"))?;
    let ours: BTreeMap<String, Pod> = list
        .items
        .into_iter()
        .filter(|p| {
            let node = p.spec.as_ref().and_then(|s| s.node_name.as_deref());
            c.hosts.iter().any(|h| Some(h.name.as_str()) == node)
        })
        .map(|p| (p.metadata.uid.clone().unwrap_or_default(), p))
        .collect();

    // Pods that went, or are being deleted: stop them, then finalise the deletion.
    let gone: Vec<(String, Option<Arc<tokio::sync::Mutex<PodRun>>>)> = {
        let mut st = s.lock();
        let uids: Vec<String> = st
            .pods
            .keys()
            .filter(|u| {
                ours.get(*u)
                    .is_none_or(|p| p.metadata.deletion_timestamp.is_some())
            })
            .cloned()
            .collect();
        uids.into_iter()
            .filter_map(|u| match st.pods.get(&u) {
                Some(Slot::Starting) => None,
                _ => match st.pods.remove(&u) {
                    Some(Slot::Running(r)) => Some((u, Some(r))),
                    _ => Some((u, None)),
                },
            })
            .collect()
    };
    for (uid, run) in gone {
        if let Some(run) = run {
            let mut guard = run.lock().await;
            let run = std::mem::replace(&mut *guard, placeholder());
            drop(guard);
            let (ns, name) = (run.namespace.clone(), run.name.clone());
            for e in pod::stop(c, run).await {
                s.event(e);
            }
            s.event(format!("pod {ns}/{name}: stopped"));
        }
        if let Some(p) = ours.get(&uid) {
            pod::finalize(
                c,
                p.metadata.namespace.as_deref().unwrap_or_default(),
                p.metadata.name.as_deref().unwrap_or_default(),
                &uid,
            )
            .await;
        }
    }
    // Terminating pods never started here are finalised at once.
    for (uid, p) in &ours {
        if p.metadata.deletion_timestamp.is_some() && !s.lock().pods.contains_key(uid) {
            pod::finalize(
                c,
                p.metadata.namespace.as_deref().unwrap_or_default(),
                p.metadata.name.as_deref().unwrap_or_default(),
                uid,
            )
            .await;
        }
    }

    let mut lookups: BTreeMap<String, Arc<Lookups>> = BTreeMap::new();
    for (uid, p) in &ours {
        if p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let ns = p.metadata.namespace.clone().unwrap_or_default();
        let start_it = match s.lock().pods.get(uid) {
            None => true,
            Some(Slot::Failed(at)) => at.elapsed() > Duration::from_secs(2),
            _ => false,
        };
        if !lookups.contains_key(&ns) {
            lookups.insert(ns.clone(), Arc::new(Lookups::list(&c.system, &ns).await?));
        }
        if start_it {
            s.lock().pods.insert(uid.clone(), Slot::Starting);
            let (s2, p2, l2) = (Arc::clone(s), p.clone(), Arc::clone(&lookups[&ns]));
            let uid2 = uid.clone();
            tokio::spawn(async move {
                let node_i = s2
                    .cluster
                    .hosts
                    .iter()
                    .position(|h| {
                        Some(h.name.as_str())
                            == p2.spec.as_ref().and_then(|x| x.node_name.as_deref())
                    })
                    .unwrap_or(0);
                let disabled = if label(&p2, "k8s-app") == Some("clustermesh-apiserver") {
                    s2.lock().disabled.clone()
                } else {
                    BTreeSet::new()
                };
                let mut events = Vec::new();
                let seq = s2.seq.fetch_add(1, Ordering::Relaxed);
                let r = pod::start(
                    &s2.cluster,
                    &s2.spawner,
                    s2.slot,
                    seq,
                    node_i,
                    &p2,
                    &l2,
                    &disabled,
                    &mut events,
                )
                .await;
                let who = format!(
                    "{}/{}",
                    p2.metadata.namespace.clone().unwrap_or_default(),
                    p2.metadata.name.clone().unwrap_or_default()
                );
                let mut st = s2.lock();
                st.events.extend(events);
                match r {
                    Ok(run) => {
                        st.events.push(format!(
                            "pod {who}: started on {} ({})",
                            s2.cluster.hosts[node_i].name, run.ip
                        ));
                        st.pods
                            .insert(uid2, Slot::Running(Arc::new(tokio::sync::Mutex::new(run))));
                    }
                    Err(NotStarted::Waiting) => {
                        st.pods.remove(&uid2);
                    }
                    Err(NotStarted::Failed(why)) => {
                        st.events.push(format!("pod {who}: {why}"));
                        st.pods.insert(uid2, Slot::Failed(Instant::now()));
                    }
                }
            });
            continue;
        }
        // A running pod: restart, refresh volumes, probe, report.
        let arc = match s.lock().pods.get(uid) {
            Some(Slot::Running(r)) => Some(Arc::clone(r)),
            _ => None,
        };
        let Some(arc) = arc else { continue };
        let mut run = arc.lock().await;
        let mut events = Vec::new();
        pod::restart_exited(&s.spawner, &mut run, &mut events);
        if let Some(l) = lookups.get(&ns)
            && run.last_refresh.elapsed() > Duration::from_secs(1)
            && pod::refresh(c, &mut run, p, l).await
        {
            events.push(format!("pod {ns}/{}: volumes updated", run.name));
        }
        if run.last_probe.elapsed() >= Duration::from_millis(900) {
            pod::probe(c, &mut run).await;
            run.last_probe = Instant::now();
        }
        if let Err(e) = pod::report(c, &mut run).await {
            events.push(e);
        }
        drop(run);
        s.lock().events.extend(events);
    }
    Ok(())
}

/// What is left in a slot whose pod was taken out to be stopped.
fn placeholder() -> PodRun {
    PodRun {
        uid: String::new(),
        namespace: String::new(),
        name: String::new(),
        labels: BTreeMap::new(),
        node: 0,
        netns: String::new(),
        own_netns: false,
        ip: String::new(),
        dir: PathBuf::new(),
        volumes: Vec::new(),
        containers: Vec::new(),
        init_names: Vec::new(),
        restart_policy: String::new(),
        start_time: String::new(),
        last_status: None,
        last_probe: Instant::now(),
        last_refresh: Instant::now(),
    }
}

impl Handle {
    /// Stops the loop and every process it started.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
            t.abort();
        }
        let pods = std::mem::take(&mut self.shared.lock().pods);
        for (_, slot) in pods {
            if let Slot::Running(r) = slot {
                let mut r = lock_blocking(&r);
                for k in &mut r.containers {
                    if let Some(mut p) = k.proc.take() {
                        p.kill();
                    }
                }
            }
        }
    }

    /// What it did, and the tail of each container's log.
    pub fn logs(&self, lines: usize) -> String {
        let (events, runs): (Vec<String>, Vec<Arc<tokio::sync::Mutex<PodRun>>>) = {
            let st = self.shared.lock();
            (
                st.events.iter().rev().take(lines).rev().cloned().collect(),
                st.pods
                    .values()
                    .filter_map(|s| match s {
                        Slot::Running(r) => Some(Arc::clone(r)),
                        _ => None,
                    })
                    .collect(),
            )
        };
        let name = &self.shared.cluster.name;
        let mut out = format!("--- {name} kubelet stand-in\n");
        for e in events {
            out.push_str(&e);
            out.push('\n');
        }
        for r in runs {
            let p = lock_blocking(&r);
            {
                for c in &p.containers {
                    out.push_str(&format!(
                        "--- {name} {}/{} {} (restarts {}, ready {})\n{}\n",
                        p.namespace,
                        p.name,
                        c.name,
                        c.restarts,
                        c.ready,
                        super::proc::log_tail(&c.spec.log, lines)
                    ));
                }
            }
        }
        out
    }

    fn with_apiserver<T>(&self, f: impl FnOnce(&mut PodRun) -> T) -> Option<T> {
        let runs: Vec<Arc<tokio::sync::Mutex<PodRun>>> = self
            .shared
            .lock()
            .pods
            .values()
            .filter_map(|s| match s {
                Slot::Running(r) => Some(Arc::clone(r)),
                _ => None,
            })
            .collect();
        for r in runs {
            let mut run = lock_blocking(&r);
            if run.labels.get("k8s-app").map(String::as_str) == Some("clustermesh-apiserver") {
                return Some(f(&mut run));
            }
        }
        None
    }

    /// Stops container `name` of the clustermesh-apiserver pod and keeps it stopped (a crashed
    /// etcd, say) until [`Handle::start_container`], across pod restarts too.
    pub fn stop_container(&self, name: &str) {
        self.shared.lock().disabled.insert(name.to_owned());
        self.with_apiserver(|p| {
            for c in p.containers.iter_mut().filter(|c| c.name == name) {
                c.enabled = false;
                if let Some(mut proc) = c.proc.take() {
                    proc.kill();
                }
            }
        });
    }

    /// Lets container `name` run again.
    pub fn start_container(&self, name: &str) {
        self.shared.lock().disabled.remove(name);
        self.with_apiserver(|p| {
            for c in p.containers.iter_mut().filter(|c| c.name == name) {
                c.enabled = true;
            }
        });
    }

    /// Waits until the clustermesh-apiserver pod's containers (all of `names`) are running.
    ///
    /// # Errors
    /// What was running at the timeout.
    pub fn wait_running(&self, names: &[&str], timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let running: Vec<String> = self
                .with_apiserver(|p| {
                    p.containers
                        .iter()
                        .filter(|c| c.proc.is_some())
                        .map(|c| c.name.clone())
                        .collect()
                })
                .unwrap_or_default();
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
        self.with_apiserver(|p| p.uid.clone())
    }

    /// The pods running with their own network namespace (namespace/name, IP, namespace
    /// name under /run/netns), for tests that send packets from a pod.
    pub fn pod_netns(&self) -> Vec<(String, String, String)> {
        let runs: Vec<Arc<tokio::sync::Mutex<PodRun>>> = self
            .shared
            .lock()
            .pods
            .values()
            .filter_map(|s| match s {
                Slot::Running(r) => Some(Arc::clone(r)),
                _ => None,
            })
            .collect();
        runs.iter()
            .filter_map(|r| {
                let r = lock_blocking(r);
                r.own_netns.then(|| {
                    (
                        format!("{}/{}", r.namespace, r.name),
                        r.ip.clone(),
                        r.netns.clone(),
                    )
                })
            })
            .collect()
    }

    /// The pods running (namespace/name, IP), for tests.
    pub fn running(&self) -> Vec<(String, String)> {
        let runs: Vec<Arc<tokio::sync::Mutex<PodRun>>> = self
            .shared
            .lock()
            .pods
            .values()
            .filter_map(|s| match s {
                Slot::Running(r) => Some(Arc::clone(r)),
                _ => None,
            })
            .collect();
        runs.iter()
            .map(|r| {
                let r = lock_blocking(r);
                (format!("{}/{}", r.namespace, r.name), r.ip.clone())
            })
            .collect()
    }
}

/// Locks a pod from a test's thread (or from within the runtime, waiting without blocking it).
fn lock_blocking(r: &tokio::sync::Mutex<PodRun>) -> tokio::sync::MutexGuard<'_, PodRun> {
    loop {
        if let Ok(g) = r.try_lock() {
            return g;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.stop();
    }
}
