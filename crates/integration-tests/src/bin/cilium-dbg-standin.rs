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

use std::path::Path;

use integration_tests::lab::agentview::{Remote, config_value, observe_all, peers, read, release};

fn status(verbose: bool) -> String {
    let (_, minor) = release(Path::new("."));
    let local_id = config_value(Path::new("."), "cluster-id");
    let remotes: Vec<Remote> = observe_all(Path::new("."), &peers(Path::new(".")), &local_id);
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
    let local = config_value(Path::new("."), "cluster-name");
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
    let local_id = config_value(Path::new("."), "cluster-id");
    for r in observe_all(Path::new("."), &peers(Path::new(".")), &local_id) {
        for n in &r.nodes {
            let name = n.get("Name").and_then(|v| v.as_str()).unwrap_or("?");
            let ip = n
                .get("IPAddresses")
                .and_then(|v| v.as_array())
                .and_then(|a| a.first())
                .and_then(|a| a.get("IP"))
                .and_then(|v| v.as_str())
                .unwrap_or("");
            let cidr = integration_tests::lab::agentview::alloc_cidr(n)
                .map(|(net, len)| format!("{net}/{len}"))
                .unwrap_or_default();
            rows.push((
                format!("{}/{name}", r.name),
                ip.into(),
                cidr,
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
    let (_, minor) = release(Path::new("."));
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
