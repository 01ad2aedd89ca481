//! What a Cilium agent would know of its remote clusters, read the way it reads it: the remote
//! clusters are the files of its mounted `cilium-clustermesh` Secret (written by the lab's
//! kubelet stand-in under `pods/agent/`), and for each it connects with that file's endpoint
//! and certificates (`etcdctl` in the agent container's mount namespace, via the pod's
//! `enter.sh`) and reads the remote cluster configuration, the sync canaries, nodes and
//! services. Used by the lab's `cilium-dbg` and `curl` stand-ins.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One remote cluster in the agent's mounted `cilium-clustermesh` Secret.
pub struct Peer {
    /// Cluster name (the file name).
    pub name: String,
    /// The first endpoint.
    pub endpoint: String,
    /// CA file, as the agent sees it.
    pub ca: String,
    /// Client certificate file.
    pub cert: String,
    /// Client key file.
    pub key: String,
}

/// A file's text, or nothing.
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The agent's mounted files: `volumes/<volume>/...` under `dir`.
fn volume_file(dir: &Path, name: &str) -> Option<PathBuf> {
    let rd = std::fs::read_dir(dir.join("volumes")).ok()?;
    rd.flatten()
        .map(|e| e.path().join(name))
        .find(|p| p.is_file())
}

/// A key of the agent's mounted `cilium-config` (`cluster-name`, `cluster-id`, ...).
pub fn config_value(dir: &Path, key: &str) -> String {
    Some(dir.join("config-map").join(key))
        .filter(|p| p.is_file())
        .or_else(|| volume_file(dir, key))
        .map(|p| read(&p).trim().to_owned())
        .unwrap_or_default()
}

/// The remote clusters the agent is configured for (its own cluster left out, as it does).
pub fn peers(agent: &Path) -> Vec<Peer> {
    let dir = agent.join("volumes/clustermesh-secrets");
    let dir = dir.as_path();
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    let mut names: Vec<String> = rd
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.contains('.'))
        .collect();
    names.sort();
    let local = config_value(agent, "cluster-name");
    for n in names {
        if n == local {
            continue;
        }
        let text = read(&dir.join(&n));
        let mut p = Peer {
            name: n,
            endpoint: String::new(),
            ca: String::new(),
            cert: String::new(),
            key: String::new(),
        };
        let mut in_endpoints = false;
        for line in text.lines() {
            let l = line.trim_end();
            if let Some(v) = l.strip_prefix("trusted-ca-file:") {
                p.ca = v.trim().to_owned();
            } else if let Some(v) = l.strip_prefix("cert-file:") {
                p.cert = v.trim().to_owned();
            } else if let Some(v) = l.strip_prefix("key-file:") {
                p.key = v.trim().to_owned();
            }
            if l.starts_with("endpoints:") {
                in_endpoints = true;
                continue;
            }
            if in_endpoints {
                match l.trim_start().strip_prefix("- ") {
                    Some(e) if p.endpoint.is_empty() => p.endpoint = e.trim().to_owned(),
                    Some(_) => {}
                    None => in_endpoints = false,
                }
            }
        }
        out.push(p);
    }
    out
}

/// `etcdctl ARGS` as the agent's container in `agent` would run it: its mount namespace, its
/// files.
///
/// # Errors
/// etcdctl's last error line.
pub fn etcdctl(agent: &Path, p: &Peer, args: &[&str]) -> Result<String, String> {
    let out = Command::new("unshare")
        .current_dir(agent)
        .args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "/bin/sh",
            "enter.sh",
        ])
        .args(["etcdctl", "--endpoints", &p.endpoint])
        .args(["--cacert", &p.ca, "--cert", &p.cert, "--key", &p.key])
        .args(["--dial-timeout=2s", "--command-timeout=3s"])
        .args(args)
        .env("ETCDCTL_API", "3")
        .output()
        .map_err(|e| format!("etcdctl: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        let line = err
            .lines()
            .rev()
            .find(|l| l.starts_with("Error:"))
            .or_else(|| err.lines().last())
            .unwrap_or("etcdctl failed")
            .trim_start_matches("Error: ")
            .to_owned();
        Err(line)
    }
}

/// What the agent would know of one remote cluster.
pub struct Remote {
    /// Cluster name.
    pub name: String,
    /// The endpoint dialled.
    pub endpoint: String,
    /// The etcd answered.
    pub connected: bool,
    /// Why not ready, if a reason is known.
    pub error: Option<String>,
    /// The remote cluster configuration, if read.
    pub config: Option<serde_json::Value>,
    /// Sync canaries by kind.
    pub synced: BTreeMap<&'static str, bool>,
    /// Its nodes (Cilium's node JSON).
    pub nodes: Vec<serde_json::Value>,
    /// Its global services (count).
    pub services: usize,
    /// Where its data lives (`cilium/cache` behind KVStoreMesh, `cilium/state` otherwise).
    pub base: &'static str,
}

impl Remote {
    /// Ready as the agent's `pkg/clustermesh` decides.
    pub fn ready(&self) -> bool {
        self.connected
            && self.config.is_some()
            && self.error.is_none()
            && self.synced.values().all(|v| *v)
    }
}

/// Connects as the agent in `agent` would to peer `p` and reads what decides its readiness.
pub fn observe(agent: &Path, p: &Peer, local_id: &str) -> Remote {
    let mut r = Remote {
        name: p.name.clone(),
        endpoint: p.endpoint.clone(),
        connected: false,
        error: None,
        config: None,
        synced: BTreeMap::new(),
        nodes: Vec::new(),
        services: 0,
        base: "cilium/state",
    };
    let cfg = match etcdctl(
        agent,
        p,
        &[
            "get",
            "--print-value-only",
            &format!("cilium/cluster-config/{}", p.name),
        ],
    ) {
        Ok(v) => v,
        Err(e) => {
            r.error = Some(e);
            return r;
        }
    };
    r.connected = true;
    r.config = serde_json::from_str::<serde_json::Value>(cfg.trim()).ok();
    let cached = r
        .config
        .as_ref()
        .and_then(|c| c.pointer("/capabilities/cached"))
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    if let Some(id) = r
        .config
        .as_ref()
        .and_then(|c| c.get("id"))
        .and_then(serde_json::Value::as_u64)
        && id.to_string() == local_id
    {
        r.error = Some(format!("clusterID {id} is assigned to the local cluster"));
    }
    r.base = if cached {
        "cilium/cache"
    } else {
        "cilium/state"
    };
    let base = r.base;
    let canaries = etcdctl(
        agent,
        p,
        &[
            "get",
            "--prefix",
            "--keys-only",
            &format!("cilium/synced/{}/", p.name),
        ],
    )
    .unwrap_or_default();
    for (what, prefix) in [
        ("nodes", "nodes/v1"),
        ("endpoints", "ip/v1"),
        ("identities", "identities/v1"),
        ("services", "services/v1"),
    ] {
        let key = format!("cilium/synced/{}/{base}/{prefix}", p.name);
        r.synced
            .insert(what, canaries.lines().any(|l| l.trim() == key));
    }
    if let Ok(text) = etcdctl(
        agent,
        p,
        &[
            "get",
            "--prefix",
            "--print-value-only",
            &format!("{base}/nodes/v1/{}/", p.name),
        ],
    ) {
        r.nodes = text
            .lines()
            .filter_map(|l| serde_json::from_str(l.trim()).ok())
            .collect();
    }
    if let Ok(text) = etcdctl(
        agent,
        p,
        &[
            "get",
            "--prefix",
            "--keys-only",
            &format!("{base}/services/v1/{}/", p.name),
        ],
    ) {
        r.services = text.lines().filter(|l| !l.trim().is_empty()).count();
    }
    r
}

/// [`observe`] for every peer at once, in their order. A real agent answers `cilium-dbg status`
/// from memory; asking the peers one after another (four etcdctl runs each) took longer than
/// cmesh's exec timeout on a loaded 2-core machine with five clusters.
pub fn observe_all(agent: &Path, peers: &[Peer], local_id: &str) -> Vec<Remote> {
    std::thread::scope(|s| {
        let handles: Vec<_> = peers
            .iter()
            .map(|p| s.spawn(move || observe(agent, p, local_id)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("observe"))
            .collect()
    })
}

/// The Cilium release of the agent pod in `agent` (major, minor).
pub fn release(agent: &Path) -> (u32, u32) {
    let v = read(&agent.join("release"));
    let mut it = v.trim().split('.').map(|x| x.parse::<u32>().unwrap_or(0));
    (it.next().unwrap_or(1), it.next().unwrap_or(20))
}

/// A node's `IPv4AllocCIDR` as Cilium writes it (`cidr.CIDR` is a `net.IPNet`, so
/// `{"IP": "10.2.0.0", "Mask": "<base64>"}`), or a plain `a.b.c.d/n` string, as
/// `(network, prefix length)`.
pub fn alloc_cidr(node: &serde_json::Value) -> Option<(std::net::Ipv4Addr, u32)> {
    let v = node.get("IPv4AllocCIDR")?;
    if let Some(s) = v.as_str() {
        let (ip, len) = s.split_once('/')?;
        return Some((ip.parse().ok()?, len.parse().ok()?));
    }
    let ip: std::net::Ipv4Addr = v.get("IP")?.as_str()?.parse().ok()?;
    let mask = base64_decode(v.get("Mask")?.as_str()?)?;
    let len = mask.iter().map(|b| b.count_ones()).sum();
    Some((ip, len))
}

/// Standard base64 (Go's `encoding/json` for `[]byte`), enough for a netmask.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = ALPHABET.iter().position(|a| *a == c)? as u32;
        bits = (bits << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn alloc_cidr_reads_both_forms() {
        let go = serde_json::json!({"IPv4AllocCIDR": {"IP": "10.2.1.0", "Mask": "////AA=="}});
        assert_eq!(
            super::alloc_cidr(&go),
            Some(("10.2.1.0".parse().unwrap(), 24))
        );
        let go = serde_json::json!({"IPv4AllocCIDR": {"IP": "10.2.0.0", "Mask": "//8AAA=="}});
        assert_eq!(
            super::alloc_cidr(&go),
            Some(("10.2.0.0".parse().unwrap(), 16))
        );
        let s = serde_json::json!({"IPv4AllocCIDR": "10.3.0.0/20"});
        assert_eq!(
            super::alloc_cidr(&s),
            Some(("10.3.0.0".parse().unwrap(), 20))
        );
        assert_eq!(super::alloc_cidr(&serde_json::json!({})), None);
    }
}
