//! The lab's network: one Linux bridge per lab on `198.18.<slot>.254/24` (a benchmarking range
//! no real network uses) and, plugged into it with a veth pair as `eth0`, one network
//! namespace per cluster's control plane at `198.18.<slot>.<i>` and one per node at
//! `198.18.<slot>.<128 + i + 32·(k−1)>`: a node is where its Cilium agent owns the datapath
//! (its devices, BPF programs and routes), where hostNetwork pods run and where each pod's own
//! namespace is wired by Cilium's CNI plugin (`cm<slot>q<n>`). The clusters reach each other,
//! and the tests reach all of them, over the bridge.
//!
//! Slots are claimed with a lock file holding the owner's PID, so concurrent test processes
//! never share one and a slot left by a killed process is reclaimed (and its leftovers removed)
//! by the next one that needs it.

use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;

fn lock_dir() -> PathBuf {
    std::env::temp_dir().join("cmesh-lab-slots")
}

/// Runs `ip ARGS`, panicking with its stderr on failure.
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("ip {}: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// `ip ARGS`, ignoring failure (teardown of what may not exist).
fn ip_quiet(args: &[&str]) {
    let _ = Command::new("ip").args(args).output();
}

/// Whether this machine lets us create network namespaces (root with CAP_NET_ADMIN and
/// iproute2), checked once by creating and deleting one.
pub fn available() -> Result<(), String> {
    static CHECK: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    CHECK
        .get_or_init(|| {
            let name = format!("cmesh-probe-{}", std::process::id());
            let out = Command::new("ip")
                .args(["netns", "add", &name])
                .output()
                .map_err(|e| format!("iproute2 (`ip`) not usable: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "cannot create network namespaces (needs root and CAP_NET_ADMIN): {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            ip_quiet(&["netns", "del", &name]);
            Ok(())
        })
        .clone()
}

/// One lab's bridge and its slot.
#[derive(Debug)]
pub struct Net {
    /// The slot: the third octet of every address of this lab.
    pub slot: u8,
    lock: PathBuf,
    namespaces: Vec<String>,
}

fn bridge_name(slot: u8) -> String {
    format!("cmb{slot}")
}

fn netns_name(slot: u8, i: u8) -> String {
    format!("cm{slot}c{i}")
}

/// Whether `name` is one of this slot's namespaces: `cm<slot>c<i>`, `cm<slot>c<i>n<k>` (nodes)
/// or `cm<slot>q<i>n<n>` (pods).
fn ours(slot: u8, name: &str) -> bool {
    let prefix = format!("cm{slot}");
    let Some(rest) = name.strip_prefix(&prefix) else {
        return false;
    };
    let mut chars = rest.chars();
    matches!(chars.next(), Some('c' | 'q'))
        && chars
            .as_str()
            .chars()
            .all(|c| c.is_ascii_digit() || c == 'n')
        && !chars.as_str().is_empty()
}

fn process_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes whatever a previous owner of `slot` left: processes in its namespaces, the
/// namespaces, the bridge.
fn sweep(slot: u8) {
    for name in namespaces_of(slot) {
        kill_all_in(&name);
        ip_quiet(&["netns", "del", &name]);
    }
    // Host ends of veth pairs outlive their namespace while a killed process still holds it.
    if let Ok(out) = Command::new("ip").args(["-o", "link", "show"]).output() {
        let host = format!("cm{slot}h");
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line
                .split(':')
                .nth(1)
                .map(|n| n.trim().split('@').next().unwrap_or_default().to_owned())
                .unwrap_or_default();
            if name.starts_with(&host)
                && name[host.len()..]
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b == b'n')
            {
                ip_quiet(&["link", "del", &name]);
            }
        }
    }
    ip_quiet(&["link", "del", &bridge_name(slot)]);
    super::node::sweep(slot);
}

/// The network namespaces of `slot` that exist now.
pub fn namespaces_of(slot: u8) -> Vec<String> {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| ours(slot, n))
        .map(str::to_owned)
        .collect()
}

/// SIGKILLs every process in namespace `name`.
fn kill_all_in(name: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-9", pid]).output();
        }
    }
}

impl Net {
    /// Claims a free slot and creates its bridge.
    ///
    /// # Panics
    /// When no slot is free or the bridge cannot be created.
    pub fn create() -> Net {
        let dir = lock_dir();
        std::fs::create_dir_all(&dir).expect("lock dir");
        let me = std::process::id();
        // Slots whose owner died without cleaning up (SIGKILL, a crash): remove what they left.
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                let path = e.path();
                let slot = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .and_then(|s| s.parse::<u8>().ok());
                let owner = std::fs::read_to_string(&path)
                    .ok()
                    .and_then(|s| s.trim().parse::<u32>().ok());
                if let (Some(slot), Some(pid)) = (slot, owner)
                    && !process_alive(pid)
                    && std::fs::remove_file(&path).is_ok()
                {
                    sweep(slot);
                }
            }
        }
        // Start at a PID-dependent slot so that concurrent processes rarely contend.
        let start = (me % 200) as u16;
        for k in 0..=255u16 {
            let slot = ((start + k) % 256) as u8;
            let lock = dir.join(format!("{slot}.lock"));
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&lock)
            {
                Ok(mut f) => {
                    let _ = writeln!(f, "{me}");
                    sweep(slot);
                    let br = bridge_name(slot);
                    ip(&["link", "add", &br, "type", "bridge"]);
                    ip(&["addr", "add", &format!("198.18.{slot}.254/24"), "dev", &br]);
                    ip(&["link", "set", &br, "up"]);
                    return Net {
                        slot,
                        lock,
                        namespaces: Vec::new(),
                    };
                }
                Err(_) => {
                    let owner = std::fs::read_to_string(&lock)
                        .ok()
                        .and_then(|s| s.trim().parse::<u32>().ok());
                    // A lock being written has no PID yet: leave it to its writer.
                    if let Some(pid) = owner
                        && !process_alive(pid)
                    {
                        let _ = std::fs::remove_file(&lock);
                    }
                }
            }
        }
        panic!("no free lab slot in {}", dir.display());
    }

    /// The host's address on the bridge.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, self.slot, 254)
    }

    /// Creates the namespace of cluster `i` (1-based) with `eth0` at `198.18.<slot>.<i>` and
    /// returns its name and address.
    ///
    /// # Panics
    /// When `ip` fails.
    pub fn add_node(&mut self, i: u8) -> (String, Ipv4Addr) {
        assert!((1..=31).contains(&i), "cluster index {i}");
        let ns = netns_name(self.slot, i);
        let host = format!("cm{}h{i}", self.slot);
        let addr = Ipv4Addr::new(198, 18, self.slot, i);
        self.plug(&ns, &host, addr);
        (ns, addr)
    }

    /// Creates the namespace of node `k` (1-based) of cluster `i` (1-based), plugged into the
    /// bridge like a cluster's, and returns its name and address.
    ///
    /// # Panics
    /// When `ip` fails or the indexes are out of the address plan.
    pub fn add_cluster_node(&mut self, i: u8, k: u8) -> (String, Ipv4Addr) {
        assert!(
            (1..=31).contains(&i) && (1..=3).contains(&k),
            "node {k} of cluster {i}"
        );
        let ns = format!("cm{}c{i}n{k}", self.slot);
        let host = format!("cm{}h{i}n{k}", self.slot);
        let addr = Ipv4Addr::new(198, 18, self.slot, 128 + i + 32 * (k - 1));
        self.plug(&ns, &host, addr);
        (ns, addr)
    }

    /// A new namespace for pod `n` of cluster `i` (`cm<slot>q<i>n<n>`), with only its
    /// loopback: Cilium's CNI plugin adds `eth0`. Removed by [`Net::remove_pod_ns`] or with the
    /// lab.
    pub fn add_pod_ns(slot: u8, i: u8, n: u64) -> String {
        let ns = format!("cm{slot}q{i}n{n}");
        ip_quiet(&["netns", "del", &ns]);
        ip(&["netns", "add", &ns]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ns
    }

    /// Removes a pod's namespace (killing what still runs in it).
    pub fn remove_pod_ns(ns: &str) {
        kill_all_in(ns);
        ip_quiet(&["netns", "del", ns]);
    }

    fn plug(&mut self, ns: &str, host: &str, addr: Ipv4Addr) {
        let peer = format!("{host}x");
        ip_quiet(&["link", "del", host]);
        ip(&["netns", "add", ns]);
        self.namespaces.push(ns.to_owned());
        ip(&["link", "add", host, "type", "veth", "peer", "name", &peer]);
        ip(&["link", "set", &peer, "netns", ns]);
        ip(&["link", "set", host, "master", &bridge_name(self.slot), "up"]);
        let inside = |args: &[&str]| {
            let mut full = vec!["-n", ns];
            full.extend_from_slice(args);
            ip(&full);
        };
        inside(&["link", "set", "lo", "up"]);
        inside(&["link", "set", &peer, "name", "eth0"]);
        inside(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
        inside(&["link", "set", "eth0", "up"]);
        inside(&[
            "route",
            "add",
            "default",
            "via",
            &self.gateway().to_string(),
        ]);
    }

    /// Cuts node `k` of cluster `i` off the bridge (`up == false`) or plugs it back in.
    pub fn set_node_link(&self, i: u8, k: u8, up: bool) {
        let state = if up { "up" } else { "down" };
        ip(&["link", "set", &format!("cm{}h{i}n{k}", self.slot), state]);
    }

    /// Cuts cluster `i` off the bridge (`up == false`) or plugs it back in: its control plane
    /// and every node.
    pub fn set_link(&self, i: u8, up: bool) {
        let state = if up { "up" } else { "down" };
        ip(&["link", "set", &format!("cm{}h{i}", self.slot), state]);
        for k in 1..=3u8 {
            ip_quiet(&["link", "set", &format!("cm{}h{i}n{k}", self.slot), state]);
        }
    }
}

/// A firewall rule in node namespace `ns` dropping the VXLAN tunnel traffic (UDP 8472, what
/// carries pod traffic between nodes) it sends to `to`; `on == false` removes it.
///
/// # Panics
/// When iptables fails.
pub fn drop_tunnel(ns: &str, to: Ipv4Addr, on: bool) {
    let to = to.to_string();
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "iptables", "-w"])
        .arg(if on { "-I" } else { "-D" })
        .args([
            "OUTPUT", "-p", "udp", "--dport", "8472", "-d", &to, "-j", "DROP",
        ])
        .output()
        .expect("iptables");
    assert!(
        out.status.success(),
        "iptables in {ns}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            kill_all_in(ns);
            ip_quiet(&["netns", "del", ns]);
        }
        for ns in namespaces_of(self.slot) {
            kill_all_in(&ns);
            ip_quiet(&["netns", "del", &ns]);
        }
        sweep(self.slot);
        let _ = std::fs::remove_file(&self.lock);
    }
}

/// The path `nsenter --net=` takes for namespace `name`.
pub fn netns_path(name: &str) -> String {
    format!("/run/netns/{name}")
}

#[cfg(test)]
mod tests {
    use super::ours;

    #[test]
    fn a_slot_owns_its_namespaces_only() {
        for n in ["cm1c2", "cm1c2n1", "cm1q2n17"] {
            assert!(ours(1, n), "{n}");
        }
        for n in ["cm12c2", "cm1x2", "cm1c", "cm1q", "other", "cm1c2n1z"] {
            assert!(!ours(1, n), "{n}");
        }
    }
}
