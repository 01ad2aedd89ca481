//! What a lab node has of a machine: a network namespace on the lab's bridge (see [`super::net`])
//! and, for its Cilium agent, a BPF file system and a cgroup of its own. The agent mounts
//! neither itself here: the kubelet stand-in binds the node's bpffs at `/sys/fs/bpf` and its
//! cgroup at `/run/cilium/cgroupv2` in the agent's mount namespace (what the chart's
//! `mount-bpf-fs` and `mount-cgroup` init containers do on a real node), so the agent's socket
//! load balancer attaches to the node's cgroup, never to the machine's root, and its pinned
//! maps outlive an agent restart as on a node. A node's directory (`root/`) stands for its
//! disk: the chart's hostPath volumes (`/var/run/cilium`, `/etc/cni/net.d`, `/opt/cni/bin`, …)
//! live there.
//!
//! Everything is removed on drop: processes in the cgroup are killed, the cgroup removed, the
//! bpffs unmounted (its pins go with it). [`sweep`] does the same for what a killed test left.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One node of a lab cluster.
#[derive(Debug)]
pub struct NodeHost {
    /// Node name (`k8s01-node-1`).
    pub name: String,
    /// Its network namespace.
    pub netns: String,
    /// Its address (the Node's InternalIP).
    pub ip: Ipv4Addr,
    /// Its directory: `root/` (hostPath volumes), `bpffs/`, `bin/` (what `kubectl exec` finds).
    pub dir: PathBuf,
    /// Its cgroup (cgroup v2).
    pub cgroup: PathBuf,
}

impl NodeHost {
    /// Prepares node `name` in `dir` for slot `slot`: directories, the BPF file system, the
    /// cgroup.
    ///
    /// # Panics
    /// When the bpffs cannot be mounted or the cgroup created.
    pub fn create(slot: u8, name: &str, netns: String, ip: Ipv4Addr, dir: PathBuf) -> NodeHost {
        for d in ["root", "bpffs", "bin"] {
            std::fs::create_dir_all(dir.join(d)).expect("node dirs");
        }
        run_cmd(
            "mount",
            &["-t", "bpf", "bpf", &dir.join("bpffs").display().to_string()],
        );
        let cgroup = cgroup_base(slot).join(name);
        std::fs::create_dir_all(&cgroup)
            .unwrap_or_else(|e| panic!("cgroup {}: {e}", cgroup.display()));
        // On a node, the chart's mount-cgroup init container mounts the cgroup2 hierarchy at
        // /run/cilium/cgroupv2, inside the agent's /var/run/cilium volume. Here the node's own
        // cgroup is mounted there: the agent finds a cgroup2 mount and never mounts (and
        // attaches its socket load balancer to) the machine's root.
        let run = dir.join("root/var/run/cilium/cgroupv2");
        std::fs::create_dir_all(&run).expect("node run dir");
        run_cmd(
            "mount",
            &[
                "--bind",
                &cgroup.display().to_string(),
                &run.display().to_string(),
            ],
        );
        NodeHost {
            name: name.into(),
            netns,
            ip,
            dir,
            cgroup,
        }
    }

    /// The node's BPF file system.
    pub fn bpffs(&self) -> PathBuf {
        self.dir.join("bpffs")
    }

    /// Where host path `p` of this node is: its own bpffs and cgroup for the agent's, the
    /// machine's `/proc/sys/{net,kernel}` (per network namespace, read through the node's),
    /// and `root/<p>` for the rest.
    pub fn host_path(&self, p: &str) -> PathBuf {
        match p.trim_end_matches('/') {
            "/sys/fs/bpf" => self.bpffs(),
            "/run/cilium/cgroupv2" => self.cgroup.clone(),
            "/proc/sys/net" | "/proc/sys/kernel" => PathBuf::from(p),
            "/lib/modules" => self.dir.join("root/lib/modules"),
            other => self.dir.join("root").join(other.trim_start_matches('/')),
        }
    }

    /// The cgroup of a pod on this node (created).
    pub fn pod_cgroup(&self, uid: &str) -> PathBuf {
        let p = self.cgroup.join(format!("pod-{uid}"));
        let _ = std::fs::create_dir_all(&p);
        p
    }

    /// Removes a pod's cgroup (killing what is left in it).
    pub fn remove_pod_cgroup(&self, uid: &str) {
        remove_cgroup(&self.cgroup.join(format!("pod-{uid}")));
    }
}

impl NodeHost {
    /// Kills what is left in the node's cgroup, removes it and unmounts the node's bpffs.
    /// Idempotent.
    pub fn teardown(&self) {
        unmount_below(&self.dir.join("root"));
        remove_cgroup(&self.cgroup);
        let b = self.bpffs();
        let mounted = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .any(|l| l.split_whitespace().nth(4) == Some(&b.display().to_string()));
        if mounted {
            let _ = Command::new("umount")
                .args(["-l", &b.display().to_string()])
                .output();
        }
    }
}

impl Drop for NodeHost {
    fn drop(&mut self) {
        self.teardown();
    }
}

fn run_cmd(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// The machine's cgroup v2 mount point (from /proc/self/mountinfo).
///
/// # Panics
/// When no cgroup v2 hierarchy is mounted.
pub fn cgroup2_root() -> PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            (post.split_whitespace().next() == Some("cgroup2"))
                .then(|| pre.split_whitespace().nth(4).map(PathBuf::from))
                .flatten()
        })
        .expect("a cgroup v2 hierarchy (the agents' socket load balancer attaches to one)")
}

/// The cgroup holding slot `slot`'s nodes.
fn cgroup_base(slot: u8) -> PathBuf {
    cgroup2_root().join(format!("cmesh-lab-{slot}"))
}

/// Kills every process in cgroup `p` and below, then removes them, deepest first.
fn remove_cgroup(p: &Path) {
    if !p.is_dir() {
        return;
    }
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup(&e.path());
            }
        }
    }
    for _ in 0..50 {
        let procs = std::fs::read_to_string(p.join("cgroup.procs")).unwrap_or_default();
        if procs.trim().is_empty() {
            break;
        }
        for pid in procs.split_whitespace() {
            let _ = Command::new("kill").args(["-9", pid]).output();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = std::fs::remove_dir(p);
}

/// Removes what a killed lab of slot `slot` left: its cgroups.
pub fn sweep(slot: u8) {
    remove_cgroup(&cgroup_base(slot));
}

/// Unmounts every mount below `base` (bpffs of nodes of labs that were killed).
pub fn unmount_below(base: &Path) {
    let Ok(base) = std::fs::canonicalize(base) else {
        return;
    };
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<String> = info
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(str::to_owned))
        .filter(|m| Path::new(m).starts_with(&base))
        .collect();
    // Deepest first.
    points.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in points {
        let _ = Command::new("umount").args(["-l", &m]).output();
    }
}
