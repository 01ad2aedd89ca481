//! One pod on a lab node, as kubelet runs it: a network namespace wired by Cilium's own CNI
//! plugin (ADD as kubelet calls it, retried while the agent has not yet seen the pod; DEL when
//! the pod goes), or the node's namespace for hostNetwork pods; its volumes as files; its init
//! containers to completion, then its containers (see [`super::container`]); the pod status
//! kubelet reports (IP from the CNI result, readiness from the readiness probes), so that the
//! real EndpointSlice controller does its job; and a kwok `Exec` object that routes
//! `kubectl exec` into the container's root, namespace and cgroup.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod, Probe, Volume};
use kube::api::{Api, DeleteParams, Patch, PatchParams};

use super::super::Cluster;
use super::super::node::NodeHost;
use super::super::proc::{Proc, ProcSpec, Spawner};
use super::container::{self, PodCtx};
use super::volumes::{Lookups, materialize, write_if_changed};

/// A container being run.
pub(super) struct ContainerRun {
    pub(super) name: String,
    pub(super) image: String,
    pub(super) spec: ProcSpec,
    pub(super) proc: Option<Proc>,
    pub(super) started: Instant,
    pub(super) started_at: String,
    pub(super) restarts: u32,
    pub(super) enabled: bool,
    pub(super) ready: bool,
    pub(super) readiness: Option<Probe>,
    pub(super) ports: Vec<(String, i32)>,
    pub(super) exit: Option<i32>,
}

/// A pod being run.
pub(super) struct PodRun {
    pub(super) uid: String,
    pub(super) namespace: String,
    pub(super) name: String,
    pub(super) labels: BTreeMap<String, String>,
    pub(super) node: usize,
    pub(super) netns: String,
    pub(super) own_netns: bool,
    pub(super) ip: String,
    pub(super) dir: PathBuf,
    pub(super) volumes: Vec<Volume>,
    pub(super) containers: Vec<ContainerRun>,
    pub(super) init_names: Vec<String>,
    pub(super) restart_policy: String,
    pub(super) start_time: String,
    pub(super) last_status: Option<serde_json::Value>,
    pub(super) last_probe: Instant,
    pub(super) last_refresh: Instant,
}

/// Why a pod did not start (yet).
pub(super) enum NotStarted {
    /// Waiting for something (the node's network); try again later, quietly.
    Waiting,
    /// Failed; worth an event, retried after a pause.
    Failed(String),
}

pub(super) fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn short(uid: &str) -> String {
    uid.chars().filter(|c| *c != '-').take(12).collect()
}

/// The node's CNI network configuration, as the agent wrote it (`/etc/cni/net.d`), for the
/// plugin named `cilium-cni`: the plugin's object with the list's `name` and `cniVersion`.
fn cni_config(node: &NodeHost) -> Option<serde_json::Value> {
    let dir = node.host_path("/etc/cni/net.d");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "conflist"))
        .collect();
    files.sort();
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        let Ok(list) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        if let Some(p) = list["plugins"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["type"] == "cilium-cni")
        {
            let mut conf = p.clone();
            conf["name"] = list["name"].clone();
            conf["cniVersion"] = list["cniVersion"].clone();
            return Some(conf);
        }
    }
    None
}

/// Runs the node's CNI plugin (`ADD` or `DEL`) for pod `p` in `netns`, as kubelet does: in
/// the node's network namespace, with the node's `/var/run/cilium` (the agent's socket, the
/// plugin's log) in a private mount namespace so that nothing is written to the machine's.
async fn cni(
    node: &NodeHost,
    command: &str,
    netns: &str,
    p: &Pod,
    conf: &serde_json::Value,
) -> Result<String, String> {
    let uid = p.metadata.uid.clone().unwrap_or_default();
    let id = uid.replace('-', "");
    let args = format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={id};K8S_POD_UID={uid}",
        p.metadata.namespace.clone().unwrap_or_default(),
        p.metadata.name.clone().unwrap_or_default()
    );
    let bin = node.host_path("/opt/cni/bin");
    let run = node.host_path("/var/run/cilium");
    let script = format!(
        "set -e\nmount -t tmpfs tmpfs /mnt\nmkdir /mnt/host\nmount --rbind / /mnt/host\nmount -t tmpfs tmpfs /run\nmkdir -p /run/netns /run/cilium\nmount --rbind /mnt/host/run/netns /run/netns\nmount --bind {} /run/cilium\nexec {}/cilium-cni\n",
        container::sh_quote(&format!("/mnt/host{}", run.display())),
        container::sh_quote(&format!("/mnt/host{}", bin.display()))
    );
    let mut cmd = tokio::process::Command::new("nsenter");
    cmd.arg(format!(
        "--net={}",
        super::super::net::netns_path(&node.netns)
    ))
    .args([
        "--",
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--",
        "/bin/sh",
        "-c",
    ])
    .arg(script)
    .env_clear()
    .env(
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    )
    .env("CNI_COMMAND", command)
    .env("CNI_CONTAINERID", &id)
    .env("CNI_NETNS", super::super::net::netns_path(netns))
    .env("CNI_IFNAME", "eth0")
    .env("CNI_PATH", &bin)
    .env("CNI_ARGS", args)
    .stdin(std::process::Stdio::piped())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| format!("cilium-cni: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        use tokio::io::AsyncWriteExt;
        let _ = stdin.write_all(conf.to_string().as_bytes()).await;
    }
    // kubelet's bound on a runtime request (--runtime-request-timeout, 2m by default). A
    // shorter one hurts: the agent cancels an endpoint whose ADD was abandoned, and on a busy
    // machine (agents compiling their datapath) every retry would be abandoned again.
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .map_err(|_| format!("cilium-cni {command}: no answer within 2m"))?
        .map_err(|e| format!("cilium-cni {command}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "cilium-cni {command}: {} {}",
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// What the pod's containers may run: `(pod IP, netns, whether the namespace is the pod's)`.
async fn network(
    c: &Cluster,
    node: &NodeHost,
    p: &Pod,
    slot: u8,
    seq: u64,
    events: &mut Vec<String>,
) -> Result<(String, String, bool), NotStarted> {
    let host_network = p
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false);
    if host_network {
        return Ok((node.ip.to_string(), node.netns.clone(), false));
    }
    let Some(conf) = cni_config(node) else {
        // The node's network is not ready: no CNI configuration from its agent yet.
        return Err(NotStarted::Waiting);
    };
    let netns = super::super::net::Net::add_pod_ns(slot, c.index, seq);
    // The agent learns the pod from the API server: until then ADD fails ("Unable to fetch
    // kubernetes labels"); kubelet retries too.
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut last;
    loop {
        match cni(node, "ADD", &netns, p, &conf).await {
            Ok(out) => {
                let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
                let ip = v["ips"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|i| i["address"].as_str())
                    .filter_map(|a| a.split('/').next())
                    .find(|a| a.contains('.'))
                    .map(str::to_owned);
                if let Some(ip) = ip {
                    return Ok((ip, netns, true));
                }
                last = format!("CNI ADD gave no IPv4 address: {out}");
            }
            Err(e) => last = e,
        }
        if Instant::now() > deadline {
            super::super::net::Net::remove_pod_ns(&netns);
            events.push(format!("{}: {last}", c.name));
            return Err(NotStarted::Failed(last));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The `resolv.conf` of a pod: cluster DNS unless its DNS policy says otherwise.
fn resolv_conf(c: &Cluster, p: &Pod) -> Option<String> {
    let spec = p.spec.as_ref()?;
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let host_network = spec.host_network.unwrap_or(false);
    let cluster_first =
        policy == "ClusterFirstWithHostNet" || (policy == "ClusterFirst" && !host_network);
    if !cluster_first {
        return None;
    }
    let ns = p.metadata.namespace.clone().unwrap_or_default();
    Some(format!(
        "nameserver {}\nsearch {ns}.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n",
        c.dns_service_ip()
    ))
}

/// The names of an agent pod's init containers whose effect the lab provides for the node
/// instead of running them: they act on the machine through its PID 1's namespaces
/// (`mount-cgroup`, `apply-sysctl-overwrites`), mount what the node already has
/// (`mount-bpf-fs`), clean state a fresh node does not have (`clean-cilium-state`), or copy
/// the CNI plugin from the image (`install-cni-binaries`, done by [`prepare_agent_node`]).
const AGENT_INIT_BY_LAB: &[&str] = &[
    "mount-cgroup",
    "apply-sysctl-overwrites",
    "mount-bpf-fs",
    "clean-cilium-state",
    "install-cni-binaries",
];

/// Kernel modules Cilium 1.16 looks for (ip_tables, its tables, xt_socket): all built into
/// this kernel, which has no module support, so listed as built in.
const MODULES_BUILTIN: &str = "kernel/net/ipv4/netfilter/ip_tables.ko\nkernel/net/ipv4/netfilter/iptable_filter.ko\nkernel/net/ipv4/netfilter/iptable_mangle.ko\nkernel/net/ipv4/netfilter/iptable_nat.ko\nkernel/net/ipv4/netfilter/iptable_raw.ko\nkernel/net/ipv6/netfilter/ip6_tables.ko\nkernel/net/ipv6/netfilter/ip6table_filter.ko\nkernel/net/ipv6/netfilter/ip6table_mangle.ko\nkernel/net/ipv6/netfilter/ip6table_nat.ko\nkernel/net/ipv6/netfilter/ip6table_raw.ko\nkernel/net/netfilter/xt_socket.ko\nkernel/net/netfilter/xt_mark.ko\nkernel/net/netfilter/xt_CT.ko\n";

/// The node-side effects of the agent pod's init containers the lab does not run.
fn prepare_agent_node(node: &NodeHost, image: &str) -> Result<(), String> {
    let release = container::cilium_release(image)
        .and_then(|v| super::super::components::installed_cilium(&v))
        .ok_or_else(|| format!("no Cilium release for image {image}"))?;
    let bin = node.host_path("/opt/cni/bin");
    std::fs::create_dir_all(&bin).map_err(|e| e.to_string())?;
    let src = release.agent().join("usr/bin/cilium-cni");
    let dst = bin.join("cilium-cni");
    let _ = std::fs::remove_file(&dst);
    std::fs::hard_link(&src, &dst)
        .or_else(|_| std::fs::copy(&src, &dst).map(|_| ()))
        .map_err(|e| format!("{}: {e}", dst.display()))?;
    let release_name = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let modules = node.host_path("/lib/modules").join(release_name);
    std::fs::create_dir_all(&modules).map_err(|e| e.to_string())?;
    write_if_changed(
        &modules.join("modules.builtin"),
        MODULES_BUILTIN.as_bytes(),
        0o644,
    )?;
    Ok(())
}

/// Starts pod `p` on node `node_i` of `c`.
#[allow(clippy::too_many_arguments)]
pub(super) async fn start(
    c: &Cluster,
    spawner: &Spawner,
    slot: u8,
    seq: u64,
    node_i: usize,
    p: &Pod,
    lookups: &Lookups,
    disabled: &std::collections::BTreeSet<String>,
    events: &mut Vec<String>,
) -> Result<PodRun, NotStarted> {
    let node = &c.hosts[node_i];
    let uid = p.metadata.uid.clone().unwrap_or_default();
    let namespace = p.metadata.namespace.clone().unwrap_or_default();
    let name = p.metadata.name.clone().unwrap_or_default();
    let spec = p
        .spec
        .as_ref()
        .ok_or_else(|| NotStarted::Failed("pod without spec".into()))?;
    let is_agent = p
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("k8s-app"))
        .is_some_and(|a| a == "cilium")
        && spec.host_network == Some(true);
    let dir = c
        .dir
        .join("pods")
        .join(format!("{namespace}_{name}_{}", short(&uid)));
    let fail = |e: String| NotStarted::Failed(e);
    if is_agent {
        let image = spec
            .containers
            .first()
            .and_then(|k| k.image.clone())
            .unwrap_or_default();
        prepare_agent_node(node, &image).map_err(fail)?;
    }
    let (ip, netns, own_netns) = network(c, node, p, slot, seq, events).await?;
    // A pod that fails to start gives its network back (CNI DEL), or the agent refuses the
    // next ADD for the same pod ("endpoint ... already exists").
    let undo = |netns: String| async move {
        if own_netns {
            if let Some(conf) = cni_config(node) {
                let _ = cni(node, "DEL", &netns, p, &conf).await;
            }
            super::super::net::Net::remove_pod_ns(&netns);
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("volumes")).map_err(|e| fail(e.to_string()))?;
    write_if_changed(
        &dir.join("hosts"),
        format!("127.0.0.1 localhost\n::1 localhost ip6-localhost\n{ip} {name}\n").as_bytes(),
        0o644,
    )
    .map_err(fail)?;
    let resolv = resolv_conf(c, p);
    if let Some(r) = &resolv {
        write_if_changed(&dir.join("resolv.conf"), r.as_bytes(), 0o644).map_err(fail)?;
    }
    // The agent's processes sit in the node's cgroup itself, as on a node they sit under its
    // root: the socket load balancer it attaches there covers every pod of the node.
    let cgroup = if is_agent {
        node.cgroup.clone()
    } else {
        node.pod_cgroup(&short(&uid))
    };
    let volumes = spec.volumes.clone().unwrap_or_default();
    // With the pod's IP in its status, `status.podIP` references resolve as kubelet's would.
    let mut with_ip = p.clone();
    with_ip.status.get_or_insert_default().pod_ip = Some(ip.clone());
    if let Err(e) = materialize(
        c,
        &with_ip,
        &node.ip.to_string(),
        &volumes,
        &dir.join("volumes"),
        lookups,
    )
    .await
    {
        undo(netns.clone()).await;
        return Err(fail(e));
    }
    let resolv_path = dir.join("resolv.conf");
    let ctx = PodCtx {
        cluster: c,
        node,
        pod: &with_ip,
        netns: &netns,
        dir: &dir,
        cgroup: &cgroup,
        volumes: &volumes,
        lookups,
        resolv: resolv.is_some().then_some(resolv_path.as_path()),
    };
    let mut init_names = Vec::new();
    for init in spec.init_containers.iter().flatten() {
        if is_agent && AGENT_INIT_BY_LAB.contains(&init.name.as_str()) {
            continue;
        }
        let proc_spec = match container::spec(&ctx, init) {
            Ok(s) => s,
            Err(e) => {
                undo(netns.clone()).await;
                return Err(fail(format!("init container {}: {e}", init.name)));
            }
        };
        let mut proc = Proc::start(spawner, proc_spec);
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
            Some(st) if st.success() => init_names.push(init.name.clone()),
            other => {
                let why = format!(
                    "pod {namespace}/{name}: init container {} {}: {}",
                    init.name,
                    other.map_or("timed out".into(), |st| st.to_string()),
                    proc.log_tail(15)
                );
                undo(netns.clone()).await;
                return Err(fail(why));
            }
        }
    }
    let mut containers = Vec::new();
    for k in &spec.containers {
        let proc_spec = match container::spec(&ctx, k) {
            Ok(s) => s,
            Err(e) => {
                undo(netns.clone()).await;
                return Err(fail(format!("container {}: {e}", k.name)));
            }
        };
        containers.push(container_run(
            spawner,
            k,
            proc_spec,
            !disabled.contains(&k.name),
        ));
    }
    let run = PodRun {
        uid,
        namespace,
        name,
        labels: p
            .metadata
            .labels
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        node: node_i,
        netns,
        own_netns,
        ip,
        dir,
        volumes,
        containers,
        init_names,
        restart_policy: spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into()),
        start_time: now_rfc3339(),
        last_status: None,
        last_probe: Instant::now() - Duration::from_secs(10),
        last_refresh: Instant::now(),
    };
    exec_object(c, &run).await.map_err(fail)?;
    Ok(run)
}

fn container_run(spawner: &Spawner, k: &Container, spec: ProcSpec, enabled: bool) -> ContainerRun {
    let ports = k
        .ports
        .iter()
        .flatten()
        .filter_map(|p| p.name.clone().map(|n| (n, p.container_port)))
        .collect();
    ContainerRun {
        name: k.name.clone(),
        image: k.image.clone().unwrap_or_default(),
        proc: enabled.then(|| Proc::start(spawner, spec.clone())),
        spec,
        started: Instant::now(),
        started_at: now_rfc3339(),
        restarts: 0,
        enabled,
        ready: false,
        readiness: k.readiness_probe.clone(),
        ports,
        exit: None,
    }
}

/// A kwok `Exec` object routing `kubectl exec` into each container of the pod: the command
/// runs in the pod's directory, where the lab's exec wrapper finds the container's entry
/// script (`lab::kubelet::EXEC_WRAPPER`).
async fn exec_object(c: &Cluster, run: &PodRun) -> Result<(), String> {
    let execs: Vec<serde_json::Value> = run
        .containers
        .iter()
        .map(|k| {
            serde_json::json!({
                "containers": [k.name],
                "local": {
                    "workDir": run.dir,
                    "envs": [
                        {"name": "CMESH_CONTAINER", "value": k.name},
                        {"name": "CMESH_NETNS", "value": run.netns},
                    ],
                },
            })
        })
        .collect();
    let obj = serde_json::json!({
        "apiVersion": "kwok.x-k8s.io/v1alpha1",
        "kind": "Exec",
        "metadata": {"name": run.name, "namespace": run.namespace},
        "spec": {"execs": execs},
    });
    let ar = kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
        "kwok.x-k8s.io",
        "v1alpha1",
        "Exec",
    ));
    let api: Api<kube::api::DynamicObject> =
        Api::namespaced_with(c.system.clone(), &run.namespace, &ar);
    api.patch(
        &run.name,
        &PatchParams::apply("cmesh-lab-kubelet").force(),
        &Patch::Apply(&obj),
    )
    .await
    .map(|_| ())
    .map_err(|e| format!("Exec {}/{}: {e}", run.namespace, run.name))
}

/// Stops a pod: its containers, its network (CNI DEL while the agent can still answer), its
/// cgroup, its Exec object.
pub(super) async fn stop(c: &Cluster, mut run: PodRun) -> Vec<String> {
    let mut events = Vec::new();
    for k in &mut run.containers {
        if let Some(mut p) = k.proc.take() {
            p.kill();
        }
    }
    let node = &c.hosts[run.node];
    if run.own_netns {
        if let Some(conf) = cni_config(node) {
            let pod: Pod = serde_json::from_value(serde_json::json!({
                "metadata": {"name": run.name, "namespace": run.namespace, "uid": run.uid},
            }))
            .unwrap_or_default();
            if let Err(e) = cni(node, "DEL", &run.netns, &pod, &conf).await {
                events.push(format!("{}/{}: {e}", run.namespace, run.name));
            }
        }
        super::super::net::Net::remove_pod_ns(&run.netns);
    }
    node.remove_pod_cgroup(&short(&run.uid));
    let ar = kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
        "kwok.x-k8s.io",
        "v1alpha1",
        "Exec",
    ));
    let api: Api<kube::api::DynamicObject> =
        Api::namespaced_with(c.system.clone(), &run.namespace, &ar);
    let _ = api.delete(&run.name, &DeleteParams::default()).await;
    events
}

/// Deletes a terminating pod's object once it is stopped, as kubelet does (grace 0, on its UID).
pub(super) async fn finalize(c: &Cluster, namespace: &str, name: &str, uid: &str) {
    let api: Api<Pod> = Api::namespaced(c.system.clone(), namespace);
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(kube::api::Preconditions {
            uid: Some(uid.to_owned()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    let _ = api.delete(name, &dp).await;
}

/// Restarts containers that exited (per the pod's restart policy).
pub(super) fn restart_exited(spawner: &Spawner, run: &mut PodRun, events: &mut Vec<String>) {
    for k in &mut run.containers {
        if !k.enabled {
            continue;
        }
        let exited = match &mut k.proc {
            Some(p) => p.exited(),
            None => None,
        };
        if let Some(status) = exited {
            events.push(format!(
                "{}/{} {} exited ({status}): {}",
                run.namespace,
                run.name,
                k.name,
                super::super::proc::log_tail(&k.spec.log, 3)
            ));
            k.proc = None;
            k.ready = false;
            k.exit = Some(status.code().unwrap_or(-1));
        }
        let restart = match run.restart_policy.as_str() {
            "Never" => false,
            "OnFailure" => k.exit.is_some_and(|c| c != 0),
            _ => true,
        };
        if k.proc.is_none() && restart && k.started.elapsed() > Duration::from_secs(1) {
            k.proc = Some(Proc::start(spawner, k.spec.clone()));
            k.started = Instant::now();
            k.started_at = now_rfc3339();
            k.restarts += 1;
            k.exit = None;
        }
    }
}

/// Runs each container's readiness probe (a container without one is ready while running).
pub(super) async fn probe(c: &Cluster, run: &mut PodRun) {
    let node_ns = c.hosts[run.node].netns.clone();
    for k in &mut run.containers {
        if k.proc.is_none() {
            k.ready = false;
            continue;
        }
        k.ready = match &k.readiness {
            None => true,
            Some(p) => {
                probe_once(
                    p, &node_ns, &run.ip, &k.ports, &run.dir, &run.netns, &k.name,
                )
                .await
            }
        };
    }
}

fn port_of(
    v: &k8s_openapi::apimachinery::pkg::util::intstr::IntOrString,
    ports: &[(String, i32)],
) -> Option<i32> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    match v {
        IntOrString::Int(i) => Some(*i),
        IntOrString::String(s) => s
            .parse()
            .ok()
            .or_else(|| ports.iter().find(|(n, _)| n == s).map(|(_, p)| *p)),
    }
}

/// One probe: HTTP and TCP from the node (as kubelet probes, to the pod's address), exec in
/// the container.
async fn probe_once(
    p: &Probe,
    node_ns: &str,
    pod_ip: &str,
    ports: &[(String, i32)],
    dir: &Path,
    netns: &str,
    container: &str,
) -> bool {
    let t = p.timeout_seconds.unwrap_or(1).max(1).to_string();
    let mut cmd = tokio::process::Command::new("ip");
    if let Some(h) = &p.http_get {
        let Some(port) = port_of(&h.port, ports) else {
            return false;
        };
        let host = h.host.clone().unwrap_or_else(|| pod_ip.to_owned());
        let scheme = h
            .scheme
            .clone()
            .unwrap_or_else(|| "HTTP".into())
            .to_lowercase();
        let path = h.path.clone().unwrap_or_else(|| "/".into());
        cmd.args([
            "netns",
            "exec",
            node_ns,
            "curl",
            "-sk",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            &t,
        ]);
        for hd in h.http_headers.iter().flatten() {
            cmd.arg("-H").arg(format!("{}: {}", hd.name, hd.value));
        }
        cmd.arg(format!("{scheme}://{host}:{port}{path}"));
        let Ok(Ok(out)) =
            tokio::time::timeout(Duration::from_secs(5), cmd.kill_on_drop(true).output()).await
        else {
            return false;
        };
        let code: u16 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        return (200..400).contains(&code);
    }
    if let Some(tcp) = &p.tcp_socket {
        let Some(port) = port_of(&tcp.port, ports) else {
            return false;
        };
        let host = tcp.host.clone().unwrap_or_else(|| pod_ip.to_owned());
        cmd.args([
            "netns",
            "exec",
            node_ns,
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "--max-time",
            &t,
        ])
        .arg(format!("telnet://{host}:{port}"))
        .stdin(std::process::Stdio::null());
        let Ok(Ok(out)) =
            tokio::time::timeout(Duration::from_secs(5), cmd.kill_on_drop(true).output()).await
        else {
            return false;
        };
        // curl's telnet ends with "timeout" (28) once connected, "couldn't connect" (7) if not.
        return matches!(out.status.code(), Some(0 | 28));
    }
    if let Some(e) = &p.exec {
        let script = dir.join(format!("enter-{container}.sh"));
        let mut cmd = tokio::process::Command::new("nsenter");
        cmd.arg(format!("--net={}", super::super::net::netns_path(netns)))
            .args([
                "--",
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "--",
                "/bin/sh",
            ])
            .arg(&script)
            .args(e.command.iter().flatten())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        let Ok(Ok(out)) = tokio::time::timeout(Duration::from_secs(10), cmd.status()).await else {
            return false;
        };
        return out.success();
    }
    true
}

/// The pod status kubelet would report now.
pub(super) fn status(c: &Cluster, run: &PodRun) -> serde_json::Value {
    let node_ip = c.hosts[run.node].ip.to_string();
    let ready = run.containers.iter().all(|k| k.ready);
    let all_exited = run.containers.iter().all(|k| k.proc.is_none());
    let phase = if all_exited && run.restart_policy != "Always" {
        if run.containers.iter().all(|k| k.exit == Some(0)) {
            "Succeeded"
        } else {
            "Failed"
        }
    } else {
        "Running"
    };
    let t = &run.start_time;
    let cond = |ty: &str, ok: bool| serde_json::json!({"type": ty, "status": if ok { "True" } else { "False" }, "lastTransitionTime": t});
    let containers: Vec<serde_json::Value> = run
        .containers
        .iter()
        .map(|k| {
            let state = match (&k.proc, k.exit) {
                (Some(_), _) => serde_json::json!({"running": {"startedAt": k.started_at}}),
                (None, Some(code)) => {
                    serde_json::json!({"terminated": {"exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" }}})
                }
                (None, None) => serde_json::json!({"waiting": {"reason": "Stopped"}}),
            };
            serde_json::json!({
                "name": k.name,
                "image": k.image,
                "imageID": "",
                "containerID": format!("lab://{}/{}", run.uid, k.name),
                "ready": k.ready,
                "started": k.proc.is_some(),
                "restartCount": k.restarts,
                "state": state,
            })
        })
        .collect();
    let inits: Vec<serde_json::Value> = run
        .init_names
        .iter()
        .map(|n| {
            serde_json::json!({
                "name": n, "image": n, "imageID": "", "ready": true, "restartCount": 0,
                "containerID": format!("lab://{}/{n}", run.uid),
                "state": {"terminated": {"exitCode": 0, "reason": "Completed"}},
            })
        })
        .collect();
    serde_json::json!({
        "phase": phase,
        "hostIP": node_ip,
        "hostIPs": [{"ip": node_ip}],
        "podIP": run.ip,
        "podIPs": [{"ip": run.ip}],
        "startTime": t,
        "conditions": [
            cond("PodReadyToStartContainers", true),
            cond("Initialized", true),
            cond("Ready", ready && phase == "Running"),
            cond("ContainersReady", ready && phase == "Running"),
            cond("PodScheduled", true),
        ],
        "containerStatuses": containers,
        "initContainerStatuses": inits,
    })
}

/// Writes the pod's status if it changed since the last write.
pub(super) async fn report(c: &Cluster, run: &mut PodRun) -> Result<(), String> {
    let st = status(c, run);
    if run.last_status.as_ref() == Some(&st) {
        return Ok(());
    }
    let api: Api<Pod> = Api::namespaced(c.system.clone(), &run.namespace);
    api.patch_status(
        &run.name,
        &PatchParams::default(),
        &Patch::Merge(&serde_json::json!({"status": st})),
    )
    .await
    .map_err(|e| format!("status of {}/{}: {e}", run.namespace, run.name))?;
    run.last_status = Some(st);
    Ok(())
}

/// Writes updated Secrets and ConfigMaps into the running pod's volumes, as kubelet does.
pub(super) async fn refresh(c: &Cluster, run: &mut PodRun, p: &Pod, lookups: &Lookups) -> bool {
    let mut with_ip = p.clone();
    with_ip.status.get_or_insert_default().pod_ip = Some(run.ip.clone());
    let node_ip = c.hosts[run.node].ip.to_string();
    run.last_refresh = Instant::now();
    materialize(
        c,
        &with_ip,
        &node_ip,
        &run.volumes,
        &run.dir.join("volumes"),
        lookups,
    )
    .await
    .unwrap_or(false)
}
