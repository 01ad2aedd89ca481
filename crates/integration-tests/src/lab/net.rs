//! The lab's network: one Linux bridge per lab on `198.18.<slot>.254/24` (a benchmarking range
//! no real network uses), and one network namespace per cluster plugged into it with a veth pair
//! as `eth0` at `198.18.<slot>.<i>`. Each cluster thus has its own loopback, as a node has: the
//! chart's clustermesh-apiserver pod talks to its etcd on `127.0.0.1:2379`, exactly as in the
//! pod, while the clusters reach each other, and the tests reach all of them, over the bridge.
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

fn process_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes whatever a previous owner of `slot` left: processes in its namespaces, the
/// namespaces, the bridge.
fn sweep(slot: u8) {
    let prefix = format!("cm{slot}c");
    if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or_default();
            if name.starts_with(&prefix) && name[prefix.len()..].bytes().all(|b| b.is_ascii_digit())
            {
                kill_all_in(name);
                ip_quiet(&["netns", "del", name]);
            }
        }
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
            if name.starts_with(&host) && name[host.len()..].bytes().all(|b| b.is_ascii_digit()) {
                ip_quiet(&["link", "del", &name]);
            }
        }
    }
    ip_quiet(&["link", "del", &bridge_name(slot)]);
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
        assert!((1..=250).contains(&i), "node index {i}");
        let ns = netns_name(self.slot, i);
        let host = format!("cm{}h{i}", self.slot);
        let peer = format!("cm{}p{i}", self.slot);
        let addr = Ipv4Addr::new(198, 18, self.slot, i);
        ip_quiet(&["link", "del", &host]);
        ip(&["netns", "add", &ns]);
        self.namespaces.push(ns.clone());
        ip(&["link", "add", &host, "type", "veth", "peer", "name", &peer]);
        ip(&["link", "set", &peer, "netns", &ns]);
        ip(&[
            "link",
            "set",
            &host,
            "master",
            &bridge_name(self.slot),
            "up",
        ]);
        let inside = |args: &[&str]| {
            let mut full = vec!["-n", ns.as_str()];
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
        (ns, addr)
    }

    /// Cuts cluster `i` off the bridge (`up == false`) or plugs it back in.
    pub fn set_link(&self, i: u8, up: bool) {
        ip(&[
            "link",
            "set",
            &format!("cm{}h{i}", self.slot),
            if up { "up" } else { "down" },
        ]);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            kill_all_in(ns);
            ip_quiet(&["netns", "del", ns]);
        }
        sweep(self.slot);
        let _ = std::fs::remove_file(&self.lock);
    }
}

/// The path `nsenter --net=` takes for namespace `name`.
pub fn netns_path(name: &str) -> String {
    format!("/run/netns/{name}")
}
