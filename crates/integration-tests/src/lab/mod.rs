//! The lab: N real Kubernetes clusters for cmesh's live tests, each a real etcd, kube-apiserver,
//! kube-controller-manager and kube-scheduler (built from `k8s.io/kubernetes`) plus kwok for
//! nodes and the pod lifecycle, in a network namespace of its own on a shared bridge (see
//! [`net`]). cmesh, helm and the tests reach each API server at its node address through a
//! generated kubeconfig with a client certificate, as they would a kubeadm cluster.
//!
//! Each cluster's nodes are network namespaces of their own on the same bridge ([`node`]):
//! kwok keeps each node Ready and serves its kubelet API, and a kubelet stand-in
//! ([`kubelet`]) runs every pod scheduled to it: Cilium's real agents with their eBPF datapath
//! (from the chart's DaemonSet), the operator, the clustermesh-apiserver and KVStoreMesh,
//! CoreDNS, and the tests' workloads, each pod wired by Cilium's own CNI plugin. Only what
//! cannot run here stands in (container images of servers that are not ours to build; see
//! docs/testing.md). The clusters start in parallel and everything is torn down on drop,
//! panics included.

pub mod components;
pub mod kubelet;
pub mod net;
pub mod node;
pub mod pki;
pub mod proc;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, PostParams};

use self::components::Kube;
use self::pki::{LabCa, Pair};
use self::proc::{Proc, ProcSpec, Spawner};

/// The identity in the admin kubeconfig the tests give cmesh and helm.
pub const ADMIN: &str = "cmesh-test-admin";

/// What the API servers' audit log records: every write, with its user.
const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  verbs: [create, update, patch, delete, deletecollection]
- level: None
";

/// Cluster name `k8s01` … for index `i` (0-based).
pub fn name(i: usize) -> String {
    format!("k8s{:02}", i + 1)
}

/// How to build a lab.
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// Clusters.
    pub clusters: usize,
    /// Nodes per cluster.
    pub nodes: usize,
}

impl Default for LabOptions {
    fn default() -> Self {
        Self {
            clusters: 2,
            nodes: 1,
        }
    }
}

/// One cluster of the lab.
pub struct Cluster {
    /// `k8s01`, ...
    pub name: String,
    /// 1-based index: its cluster ID and the last octet of its node address.
    pub index: u8,
    /// The node address (API server on :6443).
    pub ip: Ipv4Addr,
    /// The network namespace.
    pub netns: String,
    /// Its directory (certificates, logs, data, pods).
    pub dir: PathBuf,
    /// The admin kubeconfig (what mesh.yaml points at).
    pub kubeconfig: PathBuf,
    /// Pod range (kwok's pod IPs come from it).
    pub pod_cidr: String,
    /// Service range (the API server's ClusterIPs).
    pub service_cidr: String,
    /// Node names.
    pub nodes: Vec<String>,
    /// The nodes: namespace, address, directory, cgroup, BPF file system.
    pub hosts: Vec<node::NodeHost>,
    /// The control-plane processes, by name.
    procs: Mutex<Vec<Proc>>,
    /// An API client as the admin (what the tests use to change things behind cmesh's back).
    pub client: kube::Client,
    /// An API client as the lab itself (the kubelet stand-in's writes).
    pub system: kube::Client,
    /// The lab CA, for pods' service-account `ca.crt`.
    pub ca_pem: String,
}

impl Cluster {
    /// The `kubernetes` Service's ClusterIP (the first address of the service range).
    pub fn kubernetes_service_ip(&self) -> String {
        first_ip(&self.service_cidr)
    }

    /// The `kube-dns` Service's ClusterIP (the tenth, as kubeadm gives it).
    pub fn dns_service_ip(&self) -> String {
        nth_ip(&self.service_cidr, 10)
    }

    /// The first node's address: where its NodePorts answer.
    pub fn node_ip(&self) -> Ipv4Addr {
        self.hosts[0].ip
    }

    /// The last lines of each component's log, for failure messages.
    pub fn logs(&self, lines: usize) -> String {
        let procs = self.procs.lock().unwrap_or_else(|p| p.into_inner());
        let mut s = String::new();
        for p in procs.iter() {
            s.push_str(&format!(
                "--- {} {}\n{}\n",
                self.name,
                p.spec.name,
                p.log_tail(lines)
            ));
        }
        s
    }

    /// The writes `user` made so far, from the API server's audit log: `VERB resource
    /// namespace/name` (`patch daemonsets kube-system/cilium`), in order.
    pub fn writes(&self, user: &str) -> Vec<String> {
        let text = std::fs::read_to_string(self.dir.join("audit.log")).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["stage"] == "ResponseComplete" && e["user"]["username"] == user)
            .map(|e| {
                let r = &e["objectRef"];
                let mut res = r["resource"].as_str().unwrap_or("").to_owned();
                if let Some(sub) = r["subresource"].as_str() {
                    res = format!("{res}/{sub}");
                }
                format!(
                    "{} {res} {}/{}",
                    e["verb"].as_str().unwrap_or(""),
                    r["namespace"].as_str().unwrap_or(""),
                    r["name"].as_str().unwrap_or("")
                )
            })
            .collect()
    }

    /// Stops component `name` (e.g. `kube-apiserver`), as a crash would.
    pub fn stop(&self, component: &str) {
        let mut procs = self.procs.lock().unwrap_or_else(|p| p.into_inner());
        for p in procs.iter_mut().filter(|p| p.spec.name == component) {
            p.kill();
        }
    }
}

/// A running lab.
pub struct Lab {
    /// The clusters, k8s01 …
    pub clusters: Vec<Arc<Cluster>>,
    /// Scratch directory: mesh.yaml, pki/ and every cluster's files.
    pub dir: tempfile::TempDir,
    /// The async runtime the lab's watchers run on.
    pub rt: tokio::runtime::Runtime,
    /// kubelet stand-ins, one per cluster.
    kubelets: Vec<kubelet::Handle>,
    spawner: Arc<Spawner>,
    net: Net,
    /// The components.
    pub kube: Kube,
    /// This machine's lab lock, held while the lab lives (see [`Lab::start`]).
    _exclusive: std::fs::File,
}

use self::net::Net;

fn write(path: &Path, text: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn kubeconfig(server: &str, ca: &Path, cert: &Path, key: &Path, name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {name}\n  cluster:\n    server: {server}\n    certificate-authority: {}\nusers:\n- name: {name}-admin\n  user:\n    client-certificate: {}\n    client-key: {}\ncontexts:\n- name: {name}\n  context:\n    cluster: {name}\n    user: {name}-admin\ncurrent-context: {name}\n",
        ca.display(),
        cert.display(),
        key.display()
    )
}

/// Writes a pair as `<stem>.crt`/`<stem>.key` in `dir`.
fn write_pair(dir: &Path, stem: &str, p: &Pair) -> (PathBuf, PathBuf) {
    let c = dir.join(format!("{stem}.crt"));
    let k = dir.join(format!("{stem}.key"));
    write(&c, &p.cert, 0o644);
    write(&k, &p.key, 0o600);
    (c, k)
}

/// The first address of a range (the `kubernetes` Service's ClusterIP).
fn first_ip(cidr: &str) -> String {
    nth_ip(cidr, 1)
}

/// The `n`th address of a range.
fn nth_ip(cidr: &str, n: u32) -> String {
    let base: Ipv4Addr = cidr
        .split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .expect("IPv4 CIDR");
    Ipv4Addr::from(u32::from(base) + n).to_string()
}

/// Everything prepared for one cluster before its processes start.
struct Prepared {
    name: String,
    index: u8,
    ip: Ipv4Addr,
    netns: String,
    dir: PathBuf,
    kubeconfig: PathBuf,
    internal_kubeconfig: PathBuf,
    pod_cidr: String,
    service_cidr: String,
    ca: PathBuf,
    hosts: Vec<node::NodeHost>,
}

impl Lab {
    /// Starts a lab.
    ///
    /// # Panics
    /// When a component is missing, or a cluster does not come up (with its components' logs).
    pub fn start(opts: &LabOptions) -> Lab {
        let kube = components::kube();
        // Not under /tmp: containers get a private /tmp, and their volumes live in here.
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/lab");
        std::fs::create_dir_all(&base).expect("target/lab");
        // One lab at a time on this machine: real agents compile their datapath and start
        // their controllers on two cores; two labs at once starve each other into timeouts.
        // Tests of one binary run in parallel threads and wait here for their turn.
        let exclusive = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(base.join(".one-lab-at-a-time"))
            .expect("lab lock");
        exclusive.lock().expect("lab lock");
        sweep_dirs(&base);
        let dir = tempfile::Builder::new()
            .prefix(&format!("lab-{}-", std::process::id()))
            .tempdir_in(&base)
            .expect("lab dir");
        let mut net = Net::create();
        let ca = LabCa::new("cmesh lab");
        let ca_path = dir.path().join("lab-ca.crt");
        write(&ca_path, &ca.pair.cert, 0o644);
        let (sa_private, sa_public) = pki::service_account_keys();
        let spawner = Arc::new(Spawner::new());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");

        let mut prepared = Vec::new();
        for i in 0..opts.clusters {
            let index = u8::try_from(i + 1).expect("at most 250 clusters");
            let name = name(i);
            let (netns, ip) = net.add_node(index);
            let cdir = dir.path().join(&name);
            std::fs::create_dir_all(cdir.join("etcd")).expect("cluster dir");
            let hosts: Vec<node::NodeHost> = (1..=opts.nodes)
                .map(|k| {
                    let k = u8::try_from(k).expect("nodes per cluster");
                    let node_name = format!("{name}-node-{k}");
                    let (ns, nip) = net.add_cluster_node(index, k);
                    node::NodeHost::create(
                        net.slot,
                        &node_name,
                        ns,
                        nip,
                        cdir.join("nodes").join(&node_name),
                    )
                })
                .collect();
            let service_cidr = format!("10.{}.0.0/16", 100 + index);
            let pod_cidr = format!("10.{index}.0.0/16");
            let sans = vec![
                ip.to_string(),
                "127.0.0.1".into(),
                first_ip(&service_cidr),
                "localhost".into(),
                "kubernetes".into(),
                "kubernetes.default".into(),
                "kubernetes.default.svc".into(),
                "kubernetes.default.svc.cluster.local".into(),
            ];
            write_pair(
                &cdir,
                "apiserver",
                &ca.issue("kube-apiserver", &[], &sans, true),
            );
            let mut kubelet_sans: Vec<String> = hosts.iter().map(|h| h.ip.to_string()).collect();
            kubelet_sans.push("127.0.0.1".into());
            write_pair(
                &cdir,
                "kubelet",
                &ca.issue("kwok", &[], &kubelet_sans, true),
            );
            // The admin (cmesh, helm and the tests) and the lab's own components have identities
            // of their own, so that the audit log tells what cmesh did.
            let (ac, ak) = write_pair(
                &cdir,
                "admin",
                &ca.issue(ADMIN, &["system:masters"], &[], false),
            );
            let (sc, sk) = write_pair(
                &cdir,
                "lab-system",
                &ca.issue("cmesh-lab-system", &["system:masters"], &[], false),
            );
            write(&cdir.join("audit-policy.yaml"), AUDIT_POLICY, 0o644);
            write(&cdir.join("sa.key"), &sa_private, 0o600);
            write(&cdir.join("sa.pub"), &sa_public, 0o644);
            let kubeconfig_path = cdir.join("kubeconfig");
            write(
                &kubeconfig_path,
                &kubeconfig(&format!("https://{ip}:6443"), &ca_path, &ac, &ak, &name),
                0o600,
            );
            let internal = cdir.join("kubeconfig-internal");
            write(
                &internal,
                &kubeconfig("https://127.0.0.1:6443", &ca_path, &sc, &sk, &name),
                0o600,
            );
            let system = cdir.join("kubeconfig-system");
            write(
                &system,
                &kubeconfig(&format!("https://{ip}:6443"), &ca_path, &sc, &sk, &name),
                0o600,
            );
            prepared.push(Prepared {
                name,
                index,
                ip,
                netns,
                dir: cdir,
                kubeconfig: kubeconfig_path,
                internal_kubeconfig: internal,
                pod_cidr,
                service_cidr,
                ca: ca_path.clone(),
                hosts,
            });
        }

        // Every cluster's etcd and API server start at once; the API server waits for its etcd.
        let mut procs: Vec<Vec<Proc>> = prepared
            .iter()
            .map(|p| {
                vec![
                    Proc::start(&spawner, etcd_spec(&kube, p)),
                    Proc::start(&spawner, apiserver_spec(&kube, p)),
                ]
            })
            .collect();
        let clients: Vec<(kube::Client, kube::Client)> = prepared
            .iter()
            .zip(procs.iter_mut())
            .map(|(p, ps)| {
                rt.block_on(async {
                    let admin = wait_ready(&p.kubeconfig, Duration::from_secs(90)).await?;
                    let system =
                        wait_ready(&p.dir.join("kubeconfig-system"), Duration::from_secs(10))
                            .await?;
                    Ok::<_, String>((admin, system))
                })
                .unwrap_or_else(|e| {
                    let logs: String = ps
                        .iter()
                        .map(|q| format!("--- {}\n{}\n", q.spec.name, q.log_tail(30)))
                        .collect();
                    panic!("{}: API server not ready: {e}\n{logs}", p.name)
                })
            })
            .collect();
        for (p, (_, system)) in prepared.iter().zip(&clients) {
            rt.block_on(kubeadm_addons(p, system, &kube))
                .unwrap_or_else(|e| panic!("{}: {e}", p.name));
        }
        for (p, ps) in prepared.iter().zip(procs.iter_mut()) {
            ps.push(Proc::start(&spawner, controller_manager_spec(&kube, p)));
            ps.push(Proc::start(&spawner, scheduler_spec(&kube, p)));
            let exec_config = p.dir.join("kwok-exec.yaml");
            write(&exec_config, &kubelet::exec_config(&p.dir), 0o644);
            for h in &p.hosts {
                ps.push(Proc::start(&spawner, kwok_spec(&kube, p, h, &exec_config)));
            }
        }
        let mut clusters = Vec::new();
        for ((p, ps), (client, system)) in prepared.into_iter().zip(procs).zip(clients) {
            let nodes: Vec<String> = p.hosts.iter().map(|h| h.name.clone()).collect();
            clusters.push(Arc::new(Cluster {
                name: p.name,
                index: p.index,
                ip: p.ip,
                netns: p.netns,
                dir: p.dir,
                kubeconfig: p.kubeconfig,
                pod_cidr: p.pod_cidr,
                service_cidr: p.service_cidr,
                nodes,
                hosts: p.hosts,
                procs: Mutex::new(ps),
                client,
                system,
                ca_pem: ca.pair.cert.clone(),
            }));
        }
        for c in &clusters {
            rt.block_on(register_nodes(c))
                .unwrap_or_else(|e| panic!("{}: nodes: {e}\n{}", c.name, c.logs(30)));
        }
        for c in &clusters {
            rt.block_on(wait_nodes_ready(c, Duration::from_secs(60)))
                .unwrap_or_else(|e| panic!("{}: {e}\n{}", c.name, c.logs(30)));
        }
        let kubelets = clusters
            .iter()
            .map(|c| kubelet::start(&rt, Arc::clone(c), Arc::clone(&spawner), net.slot))
            .collect();
        Lab {
            clusters,
            dir,
            rt,
            kubelets,
            spawner,
            net,
            kube,
            _exclusive: exclusive,
        }
    }

    /// A firewall on cluster `from`'s nodes (0-based) dropping the VXLAN tunnel packets they
    /// send to cluster `to`'s nodes: pod traffic between the two is cut (replies included, as
    /// they travel the same tunnel), the clustermesh control plane (etcd over TCP) is not.
    pub fn block(&self, from: usize, to: usize) {
        for a in &self.clusters[from].hosts {
            for b in &self.clusters[to].hosts {
                net::drop_tunnel(&a.netns, b.ip, true);
            }
        }
    }

    /// Lifts a [`Lab::block`].
    pub fn unblock(&self, from: usize, to: usize) {
        for a in &self.clusters[from].hosts {
            for b in &self.clusters[to].hosts {
                net::drop_tunnel(&a.netns, b.ip, false);
            }
        }
    }

    /// Cuts cluster `i` (0-based) off the network, or plugs it back in.
    pub fn set_link(&self, i: usize, up: bool) {
        self.net.set_link(self.clusters[i].index, up);
    }

    /// The lab's network slot (the third octet of its addresses, part of its names).
    pub fn slot(&self) -> u8 {
        self.net.slot
    }

    /// Loses cluster `i`'s nodes (0-based) as a whole: every pod on them stops (its agents,
    /// its clustermesh-apiserver, its workloads) and they are cut off the network; its control
    /// plane stays reachable, as a managed one would.
    pub fn lose_nodes(&self, i: usize) {
        self.kubelets[i].stop();
        let c = &self.clusters[i];
        for k in 1..=c.hosts.len() {
            self.net
                .set_node_link(c.index, u8::try_from(k).expect("node"), false);
        }
    }

    /// The kubelet stand-in of cluster `i`.
    pub fn kubelet(&self, i: usize) -> &kubelet::Handle {
        &self.kubelets[i]
    }

    /// The spawner every lab process starts from.
    pub fn spawner(&self) -> &Arc<Spawner> {
        &self.spawner
    }

    /// Every cluster's component logs (for a failing assertion).
    pub fn logs(&self, lines: usize) -> String {
        let mut s = String::new();
        for (i, c) in self.clusters.iter().enumerate() {
            s.push_str(&c.logs(lines));
            s.push_str(&self.kubelets[i].logs(lines));
        }
        s
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for k in &self.kubelets {
            k.stop();
        }
        for c in &self.clusters {
            let mut procs = c.procs.lock().unwrap_or_else(|p| p.into_inner());
            for p in procs.iter_mut() {
                p.kill();
            }
        }
        // Before the directory goes: every process left in the nodes' cgroups, the cgroups,
        // and the nodes' BPF file systems (with what the agents pinned there).
        for c in &self.clusters {
            for h in &c.hosts {
                h.teardown();
            }
        }
        node::unmount_below(self.dir.path());
        // `net` then removes the namespaces (killing any stray process left in them) and the
        // bridge; `dir` removes the files.
    }
}

/// Removes lab directories of processes that are gone (killed before they could clean up).
fn sweep_dirs(base: &Path) {
    let Ok(rd) = std::fs::read_dir(base) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let pid = name
            .strip_prefix("lab-")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            node::unmount_below(&e.path());
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn etcd_spec(k: &Kube, p: &Prepared) -> ProcSpec {
    ProcSpec::new(
        "etcd",
        &p.netns,
        &p.dir,
        vec![
            k.bin("etcd"),
            format!("--data-dir={}", p.dir.join("etcd").display()),
            "--name=default".into(),
            // The clustermesh-apiserver pod's etcd takes 2379/2380 in this namespace.
            "--listen-client-urls=http://127.0.0.1:12379".into(),
            "--advertise-client-urls=http://127.0.0.1:12379".into(),
            "--listen-peer-urls=http://127.0.0.1:12380".into(),
            "--initial-advertise-peer-urls=http://127.0.0.1:12380".into(),
            "--initial-cluster=default=http://127.0.0.1:12380".into(),
            "--listen-metrics-urls=http://127.0.0.1:12381".into(),
            // Test data: durability is not worth the fsyncs on a shared CI disk.
            "--unsafe-no-fsync".into(),
            "--log-level=warn".into(),
        ],
    )
}

fn apiserver_spec(k: &Kube, p: &Prepared) -> ProcSpec {
    let d = |f: &str| p.dir.join(f).display().to_string();
    ProcSpec::new(
        "kube-apiserver",
        &p.netns,
        &p.dir,
        vec![
            k.bin("kube-apiserver"),
            "--etcd-servers=http://127.0.0.1:12379".into(),
            "--bind-address=0.0.0.0".into(),
            "--secure-port=6443".into(),
            format!("--advertise-address={}", p.ip),
            format!("--tls-cert-file={}", d("apiserver.crt")),
            format!("--tls-private-key-file={}", d("apiserver.key")),
            format!("--client-ca-file={}", p.ca.display()),
            "--service-account-issuer=https://kubernetes.default.svc".into(),
            format!("--service-account-key-file={}", d("sa.pub")),
            format!("--service-account-signing-key-file={}", d("sa.key")),
            format!("--service-cluster-ip-range={}", p.service_cidr),
            "--service-node-port-range=30000-32767".into(),
            "--authorization-mode=Node,RBAC".into(),
            // Cilium's agents are privileged, as on kubeadm clusters.
            "--allow-privileged=true".into(),
            "--kubelet-preferred-address-types=InternalIP".into(),
            "--enable-priority-and-fairness=false".into(),
            "--profiling=false".into(),
            format!("--audit-policy-file={}", d("audit-policy.yaml")),
            format!("--audit-log-path={}", d("audit.log")),
            "--v=0".into(),
        ],
    )
}

fn controller_manager_spec(k: &Kube, p: &Prepared) -> ProcSpec {
    let d = |f: &str| p.dir.join(f).display().to_string();
    ProcSpec::new(
        "kube-controller-manager",
        &p.netns,
        &p.dir,
        vec![
            k.bin("kube-controller-manager"),
            format!("--kubeconfig={}", p.internal_kubeconfig.display()),
            "--leader-elect=false".into(),
            "--secure-port=0".into(),
            "--use-service-account-credentials=false".into(),
            format!("--service-account-private-key-file={}", d("sa.key")),
            format!("--root-ca-file={}", p.ca.display()),
            // Without cloud, volumes or IPAM: kwok owns pod IPs; no kube-proxy, so no
            // service LoadBalancer controller either.
            "--controllers=*,-nodeipam,-persistentvolume-binder,-attachdetach,-persistentvolume-expander,-cloud-node-lifecycle,-ttl,-bootstrapsigner,-tokencleaner,-route,-service".into(),
            "--v=1".into(),
        ],
    )
}

fn scheduler_spec(k: &Kube, p: &Prepared) -> ProcSpec {
    ProcSpec::new(
        "kube-scheduler",
        &p.netns,
        &p.dir,
        vec![
            k.bin("kube-scheduler"),
            format!("--kubeconfig={}", p.internal_kubeconfig.display()),
            "--leader-elect=false".into(),
            "--secure-port=0".into(),
            "--v=1".into(),
        ],
    )
}

/// kwok for one node, in the node's namespace (the API server reaches its kubelet API at the
/// node's address, as it would a kubelet's): the node Ready and its lease renewed, `kubectl
/// exec` served through the kubelet stand-in's `Exec` objects. It leaves pods alone.
fn kwok_spec(k: &Kube, p: &Prepared, h: &node::NodeHost, exec_config: &Path) -> ProcSpec {
    let d = |f: &str| p.dir.join(f).display().to_string();
    let mut argv = vec![
        k.bin("kwok"),
        format!("--kubeconfig={}", p.dir.join("kubeconfig-system").display()),
        format!("--manage-single-node={}", h.name),
        format!("--node-ip={}", h.ip),
        "--node-port=10250".into(),
        // Leases keep the nodes Ready: without them the node lifecycle controller marks them
        // NotReady after 40 s and every pod with them.
        "--node-lease-duration-seconds=40".into(),
        format!("--server-address={}:10250", h.ip),
        format!("--tls-cert-file={}", d("kubelet.crt")),
        format!("--tls-private-key-file={}", d("kubelet.key")),
        "--enable-crds=Exec".into(),
        "-c".into(),
        exec_config.display().to_string(),
    ];
    for s in k.stages() {
        argv.push("-c".into());
        argv.push(s.display().to_string());
    }
    // Commands exec'd into pods run as kwok's children: they find the exec wrapper first.
    let path = format!(
        "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        h.dir.join("bin").display()
    );
    let mut spec = ProcSpec::new(&format!("kwok-{}", h.name), &h.netns, &h.dir, argv);
    spec.env = vec![("PATH".into(), path), ("HOME".into(), d("."))];
    spec
}

/// What kubeadm installs besides the control plane, and the lab's own CRD: kwok's `Exec`
/// (before kwok starts), and CoreDNS as kubeadm sets it up (ConfigMap with its Corefile,
/// ServiceAccount and RBAC, the `coredns` Deployment, the `kube-dns` Service at the tenth
/// address of the service range). Its pods start once Cilium gives the node a network.
async fn kubeadm_addons(p: &Prepared, client: &kube::Client, k: &Kube) -> Result<(), String> {
    let crd_text = std::fs::read_to_string(k.exec_crd())
        .map_err(|e| format!("{}: {e}", k.exec_crd().display()))?;
    let mut objects = vec![yaml_json(&crd_text)?];
    let dns_ip = nth_ip(&p.service_cidr, 10);
    objects.extend(coredns_objects(&dns_ip));
    for o in &objects {
        let api_version = o["apiVersion"].as_str().unwrap_or_default();
        let kind = o["kind"].as_str().unwrap_or_default();
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let ar = kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
            group, version, kind,
        ));
        let name = o["metadata"]["name"].as_str().unwrap_or_default();
        let api: Api<kube::api::DynamicObject> = match o["metadata"]["namespace"].as_str() {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
            None => Api::all_with(client.clone(), &ar),
        };
        api.patch(
            name,
            &kube::api::PatchParams::apply("cmesh-lab").force(),
            &kube::api::Patch::Apply(o),
        )
        .await
        .map_err(|e| format!("{kind} {name}: {e}"))?;
    }
    // The Exec CRD must be served before kwok watches it.
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let established = crds
            .get_opt("execs.kwok.x-k8s.io")
            .await
            .ok()
            .flatten()
            .and_then(|c| c.status)
            .and_then(|s| s.conditions)
            .is_some_and(|c| {
                c.iter()
                    .any(|x| x.type_ == "Established" && x.status == "True")
            });
        if established {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err("kwok's Exec CRD not established".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn yaml_json(text: &str) -> Result<serde_json::Value, String> {
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

/// The Corefile kubeadm writes.
pub const COREFILE: &str = ".:53 {
    errors
    health {
       lameduck 5s
    }
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }
    prometheus :9153
    forward . /etc/resolv.conf {
       max_concurrent 1000
    }
    cache 30 {
       disable success cluster.local
       disable denial cluster.local
    }
    loop
    reload
    loadbalance
}
";

/// CoreDNS's objects as kubeadm creates them (one replica: one node).
fn coredns_objects(dns_ip: &str) -> Vec<serde_json::Value> {
    let labels = serde_json::json!({"k8s-app": "kube-dns"});
    vec![
        serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "coredns", "namespace": "kube-system"}}),
        serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "system:coredns"},
        "rules": [
            {"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"], "verbs": ["list", "watch"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
        ]}),
        serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "system:coredns"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:coredns"},
            "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": "kube-system"}]}),
        serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "coredns", "namespace": "kube-system"},
            "data": {"Corefile": COREFILE}}),
        serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "coredns", "namespace": "kube-system", "labels": labels},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": "coredns",
                    "dnsPolicy": "Default",
                    "priorityClassName": "system-cluster-critical",
                    "containers": [{
                        "name": "coredns",
                        "image": "registry.k8s.io/coredns/coredns:v1.12.1",
                        "args": ["-conf", "/etc/coredns/Corefile"],
                        "ports": [
                            {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                            {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                            {"name": "metrics", "containerPort": 9153, "protocol": "TCP"},
                        ],
                        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181, "scheme": "HTTP"}},
                        "volumeMounts": [{"name": "config-volume", "mountPath": "/etc/coredns", "readOnly": true}],
                    }],
                    "volumes": [{"name": "config-volume", "configMap": {"name": "coredns",
                        "items": [{"key": "Corefile", "path": "Corefile"}]}}],
                },
            }},
        }),
        serde_json::json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": labels},
        "spec": {"selector": labels, "clusterIP": dns_ip, "ports": [
            {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
            {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153},
        ]}}),
    ]
}

/// Connects as the admin and waits for `/readyz`.
async fn wait_ready(kubeconfig: &Path, timeout: Duration) -> Result<kube::Client, String> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).map_err(|e| e.to_string())?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| e.to_string())?;
    let client = kube::Client::try_from(config).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        let req = http::Request::get("/readyz")
            .body(Vec::new())
            .expect("request");
        match client.request_text(req).await {
            Ok(t) if t.trim() == "ok" => return Ok(client),
            Ok(t) => last = t,
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    Err(format!("not ready within {timeout:?}: {last}"))
}

async fn register_nodes(c: &Cluster) -> Result<(), String> {
    let api: Api<Node> = Api::all(c.system.clone());
    for n in &c.nodes {
        let node: Node = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": n,
                "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {
                    "kubernetes.io/hostname": n,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "type": "kwok",
                },
            },
            "spec": {"podCIDR": c.pod_cidr, "podCIDRs": [c.pod_cidr]},
        }))
        .map_err(|e| e.to_string())?;
        api.create(&PostParams::default(), &node)
            .await
            .map_err(|e| format!("create node {n}: {e}"))?;
    }
    Ok(())
}

async fn wait_nodes_ready(c: &Cluster, timeout: Duration) -> Result<(), String> {
    let api: Api<Node> = Api::all(c.client.clone());
    let deadline = Instant::now() + timeout;
    loop {
        let nodes = api
            .list(&Default::default())
            .await
            .map_err(|e| e.to_string())?;
        let ready = nodes
            .items
            .iter()
            .filter(|n| {
                let conds = n.status.as_ref().and_then(|s| s.conditions.as_ref());
                let ready = conds
                    .into_iter()
                    .flatten()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                let tainted = n
                    .spec
                    .as_ref()
                    .and_then(|s| s.taints.as_ref())
                    .is_some_and(|t| !t.is_empty());
                ready && !tainted
            })
            .count();
        if ready == c.nodes.len() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{ready}/{} nodes ready and untainted",
                c.nodes.len()
            ));
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// Server-side applies `crds` (as `manager`) and waits up to a minute until each is
/// Established: what an installer does before its controllers start.
///
/// # Errors
/// API errors.
///
/// # Panics
/// When a CRD is not established within a minute.
pub async fn install_crds(
    client: kube::Client,
    crds: &[serde_json::Value],
    manager: &str,
) -> Result<(), kube::Error> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let api: Api<CustomResourceDefinition> = Api::all(client);
    let pp = kube::api::PatchParams::apply(manager).force();
    for crd in crds {
        let n = crd["metadata"]["name"].as_str().unwrap_or_default();
        api.patch(n, &pp, &kube::api::Patch::Apply(crd)).await?;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for crd in crds {
        let n = crd["metadata"]["name"].as_str().unwrap_or_default();
        while !api
            .get(n)
            .await?
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
        {
            assert!(Instant::now() < deadline, "CRD {n} not established");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}
