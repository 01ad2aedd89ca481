//! The lab's stand-in for the Cilium agent's CLI (`cilium-dbg`, and `cilium` before 1.15):
//! `status` and `node list`, exec'd by kwok into agent pods. No agent can run here (it needs
//! eBPF and owns the host's network), so this answers for it, from the same inputs the agent
//! uses and through real connections:
//!
//! - the remote clusters are the files of the agent's mounted `cilium-clustermesh` Secret (its
//!   working directory is the pod's directory the lab's kubelet stand-in wrote);
//! - for each, it connects with the agent's own configuration and certificates (`etcdctl` in
//!   the agent container's mount namespace, via the pod's `enter.sh`) to the endpoint that file
//!   names: the local clustermesh-apiserver when KVStoreMesh is on, the peer's otherwise;
//! - a cluster is ready as the agent's `pkg/clustermesh` decides: connected, the remote cluster
//!   configuration retrieved (and not claiming the local cluster ID), and the sync canaries of
//!   nodes, services, identities and endpoints present.
//!
//! The output follows the format of the release the pod runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Peer {
    name: String,
    endpoint: String,
    ca: String,
    cert: String,
    key: String,
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The agent's mounted files: `volumes/<volume>/...` under the working directory.
fn volume_file(name: &str) -> Option<PathBuf> {
    let rd = std::fs::read_dir("volumes").ok()?;
    rd.flatten()
        .map(|e| e.path().join(name))
        .find(|p| p.is_file())
}

fn config_value(key: &str) -> String {
    volume_file(key)
        .map(|p| read(&p).trim().to_owned())
        .unwrap_or_default()
}

fn peers() -> Vec<Peer> {
    let dir = Path::new("volumes/clustermesh-secrets");
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
    let local = config_value("cluster-name");
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

/// `etcdctl ARGS` as the agent's container would run it: its mount namespace, its files.
fn etcdctl(p: &Peer, args: &[&str]) -> Result<String, String> {
    let out = Command::new("unshare")
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

struct Remote {
    name: String,
    endpoint: String,
    connected: bool,
    error: Option<String>,
    config: Option<serde_json::Value>,
    synced: BTreeMap<&'static str, bool>,
    nodes: Vec<serde_json::Value>,
    services: usize,
}

impl Remote {
    fn ready(&self) -> bool {
        self.connected
            && self.config.is_some()
            && self.error.is_none()
            && self.synced.values().all(|v| *v)
    }
}

fn observe(p: &Peer, local_id: &str) -> Remote {
    let mut r = Remote {
        name: p.name.clone(),
        endpoint: p.endpoint.clone(),
        connected: false,
        error: None,
        config: None,
        synced: BTreeMap::new(),
        nodes: Vec::new(),
        services: 0,
    };
    let cfg = match etcdctl(
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
    let base = if cached {
        "cilium/cache"
    } else {
        "cilium/state"
    };
    let canaries = etcdctl(
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

fn release() -> (u32, u32) {
    let v = read(Path::new("release"));
    let mut it = v.trim().split('.').map(|x| x.parse::<u32>().unwrap_or(0));
    (it.next().unwrap_or(1), it.next().unwrap_or(20))
}

fn status(verbose: bool) -> String {
    let (_, minor) = release();
    let local_id = config_value("cluster-id");
    let remotes: Vec<Remote> = peers().iter().map(|p| observe(p, &local_id)).collect();
    let ready = remotes.iter().filter(|r| r.ready()).count();
    let services: usize = remotes.iter().map(|r| r.services).sum();
    let mut s = String::new();
    s.push_str("KVStore:                 Disabled\n");
    s.push_str("Kubernetes:              Ok\n");
    s.push_str("Cilium:                  Ok   (lab stand-in: no datapath)\n");
    s.push_str(&match minor {
        0..=14 => format!("ClusterMesh:             {ready}/{} clusters ready, {services} global-services\n", remotes.len()),
        15..=19 => format!("ClusterMesh:             {ready}/{} remote clusters ready, {services} global-services\n", remotes.len()),
        _ => format!("ClusterMesh:             {ready}/{} remote clusters ready\n", remotes.len()),
    });
    for r in &remotes {
        if r.ready() && !verbose {
            continue;
        }
        s.push_str(&format!(
            "   {}: {}, {} nodes, 0 endpoints, 0 identities, {} services, 0 reconnections (last: never)\n",
            r.name,
            if r.ready() { "ready" } else { "not-ready" },
            r.nodes.len(),
            r.services
        ));
        match &r.error {
            Some(e) if !r.connected => {
                s.push_str(&format!("   └  etcd: 0/1 connected: {}: {e}\n", r.endpoint))
            }
            _ => s.push_str(&format!("   └  etcd: 1/1 connected: {}\n", r.endpoint)),
        }
        match &r.config {
            Some(c) => s.push_str(&format!(
                "   └  remote configuration: expected=true, retrieved=true, cluster-id={}, kvstoremesh={}, sync-canaries=true\n",
                c.get("id").and_then(serde_json::Value::as_u64).unwrap_or(0),
                c.pointer("/capabilities/cached").and_then(serde_json::Value::as_bool).unwrap_or(false)
            )),
            None => s.push_str("   └  remote configuration: expected=true, retrieved=false\n"),
        }
        if let Some(e) = r.error.as_ref().filter(|_| r.connected) {
            s.push_str(&format!("   └  error: {e}\n"));
        }
        let sync: Vec<String> = r.synced.iter().map(|(k, v)| format!("{k}={v}")).collect();
        s.push_str(&format!(
            "   └  synchronization status: {}\n",
            sync.join(", ")
        ));
    }
    s
}

fn node_list() -> String {
    let local = config_value("cluster-name");
    let mut rows = vec![(
        "Name".to_owned(),
        "IPv4 Address".to_owned(),
        "Endpoint CIDR".to_owned(),
        "Source".to_owned(),
    )];
    for line in read(Path::new("nodes")).lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let [name, ip, cidr] = f[..] {
            rows.push((
                format!("{local}/{name}"),
                ip.into(),
                cidr.into(),
                "local".into(),
            ));
        }
    }
    let local_id = config_value("cluster-id");
    for p in peers() {
        let r = observe(&p, &local_id);
        for n in &r.nodes {
            let name = n.get("Name").and_then(|v| v.as_str()).unwrap_or("?");
            let ip = n
                .get("IPAddresses")
                .and_then(|v| v.as_array())
                .and_then(|a| a.first())
                .and_then(|a| a.get("IP"))
                .and_then(|v| v.as_str())
                .unwrap_or("");
            let cidr = n
                .get("IPv4AllocCIDR")
                .and_then(|v| v.as_str())
                .unwrap_or("");
            rows.push((
                format!("{}/{name}", p.name),
                ip.into(),
                cidr.into(),
                "clustermesh".into(),
            ));
        }
    }
    rows.iter()
        .map(|(a, b, c, d)| format!("{a:<30} {b:<16} {c:<18} {d}\n"))
        .collect()
}

fn main() -> std::process::ExitCode {
    let argv0 = std::env::args().next().unwrap_or_default();
    let invoked = Path::new(&argv0)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("cilium-dbg")
        .to_owned();
    let (_, minor) = release();
    // Before 1.15 the agent image has `cilium`, not `cilium-dbg`.
    if invoked == "cilium-dbg" && minor < 15 {
        eprintln!("exec: \"cilium-dbg\": executable file not found in $PATH");
        return std::process::ExitCode::from(127);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let words: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let verbose = args
        .iter()
        .any(|a| a == "--verbose" || a == "--all-clusters");
    let out = match words.as_slice() {
        ["status", ..] => status(verbose),
        ["node", "list", ..] => node_list(),
        _ => {
            eprintln!("{invoked} (lab stand-in): only `status` and `node list` are answered");
            return std::process::ExitCode::from(2);
        }
    };
    print!("{out}");
    std::process::ExitCode::SUCCESS
}
