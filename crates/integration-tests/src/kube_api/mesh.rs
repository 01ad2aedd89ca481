//! A simulated Cluster Mesh across fake clusters: what `cilium-dbg status` and `cilium-dbg
//! node list` print in each agent, decided the way Cilium decides a remote cluster is ready,
//! from the objects the chart and cmesh put in the clusters:
//!
//! - the peer's entry in `cilium-clustermesh` (or, through the local KVStoreMesh, in
//!   `cilium-kvstoremesh`) points at an endpoint that belongs to a cluster that is up;
//! - that cluster runs a ready clustermesh-apiserver behind a Service on that port;
//! - both clusters' `cilium-ca` are the same CA (else: authentication handshake failed);
//! - the peer lists this cluster (authMode cluster creates users only for listed peers).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use base64::Engine as _;
use serde_json::Value;

use super::{ExecRequest, ExecResult, State};

/// The simulated mesh.
pub struct MeshSim {
    /// Clusters by name, in mesh order.
    pub clusters: Vec<(String, Arc<State>)>,
    /// `host:port` each cluster's apiserver is reached at.
    pub endpoints: HashMap<String, String>,
    /// Cilium ≥ 1.15 wording (`remote clusters ready`).
    pub remote_wording: bool,
    /// The agent image has `cilium-dbg` (Cilium ≥ 1.15); 1.14 has only `cilium`.
    pub has_cilium_dbg: bool,
    /// Cilium ≥ 1.20: only Services of global namespaces are shared.
    pub global_namespaces: bool,
    /// Data-path faults and load-balancing randomness.
    pub scenario: super::scenario::Shared,
}

fn secret(state: &State, name: &str) -> Option<HashMap<String, String>> {
    let s = state.get("", "v1", "secrets", "kube-system", name)?;
    let data = s.get("data")?.as_object()?;
    Some(
        data.iter()
            .filter_map(|(k, v)| {
                let b = base64::engine::general_purpose::STANDARD
                    .decode(v.as_str()?)
                    .ok()?;
                Some((k.clone(), String::from_utf8_lossy(&b).into_owned()))
            })
            .collect(),
    )
}

fn first_endpoint(cfg: &str) -> Option<String> {
    cfg.lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("- https://"))
        .map(str::to_owned)
}

impl MeshSim {
    pub(super) fn cluster_state(&self, name: &str) -> Option<&Arc<State>> {
        self.state(name)
    }

    /// Whether `me`'s agents see `peer` ready (so its nodes and services are known).
    pub(super) fn sees(&self, me: &str, peer: &str) -> bool {
        self.peers(me).iter().any(|(p, r)| p == peer && r.is_ok())
    }

    fn state(&self, name: &str) -> Option<&Arc<State>> {
        self.clusters
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s)
    }

    /// Whether `me` sees `peer` ready, or why not.
    fn peer_ready(&self, me: &str, peer: &str, cfg: &str) -> Result<String, String> {
        let my = self.state(me).ok_or("unknown cluster")?;
        let mut endpoint = first_endpoint(cfg).ok_or("no endpoint in the configuration")?;
        if endpoint.starts_with("clustermesh-apiserver.") {
            // Through the local KVStoreMesh: its own configuration has the real address.
            let kv = secret(my, "cilium-kvstoremesh").ok_or("KVStoreMesh has no configuration")?;
            endpoint = kv
                .get(peer)
                .and_then(|c| first_endpoint(c))
                .ok_or("remote configuration required but not found")?;
        }
        let target = self
            .endpoints
            .get(&endpoint)
            .ok_or_else(|| format!("{endpoint}: no route to host"))?;
        let t = self.state(target).ok_or("no such cluster")?;
        if !t.up.load(Ordering::SeqCst) {
            return Err(format!("{endpoint}: connection refused"));
        }
        let ready = t
            .get(
                "apps",
                "v1",
                "deployments",
                "kube-system",
                "clustermesh-apiserver",
            )
            .and_then(|d| d.pointer("/status/readyReplicas").and_then(Value::as_i64))
            .unwrap_or(0);
        if ready < 1 {
            return Err(format!(
                "{endpoint}: connection refused (no clustermesh-apiserver)"
            ));
        }
        let port: i64 = endpoint
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let svc = t.get("", "v1", "services", "kube-system", "clustermesh-apiserver");
        let node_port = svc
            .as_ref()
            .and_then(|s| s.pointer("/spec/ports/0/nodePort").and_then(Value::as_i64));
        if node_port != Some(port) {
            return Err(format!(
                "{endpoint}: connection refused (the Service exposes {node_port:?})"
            ));
        }
        let ca = |s: &State| secret(s, "cilium-ca").and_then(|m| m.get("ca.crt").cloned());
        if ca(my).is_none() || ca(my) != ca(t) {
            return Err(
                "authentication handshake failed: x509: certificate signed by unknown authority"
                    .into(),
            );
        }
        if target != peer {
            return Err(format!(
                "remote cluster configuration: cluster name {target}, expected {peer}"
            ));
        }
        let users = t
            .get(
                "",
                "v1",
                "configmaps",
                "kube-system",
                "clustermesh-remote-users",
            )
            .and_then(|c| {
                c.pointer("/data/users.yaml")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            });
        if let Some(u) = users {
            if !u.contains(&format!("remote-{me}\n")) && !u.ends_with(&format!("remote-{me}")) {
                return Err("etcdserver: permission denied".into());
            }
        }
        Ok(target.clone())
    }

    fn peers(&self, me: &str) -> Vec<(String, Result<String, String>)> {
        let Some(my) = self.state(me) else {
            return Vec::new();
        };
        let Some(cfg) = secret(my, "cilium-clustermesh") else {
            return Vec::new();
        };
        let mut names: Vec<&String> = cfg.keys().filter(|k| !k.contains('.')).collect();
        names.sort();
        names
            .into_iter()
            .map(|p| (p.clone(), self.peer_ready(me, p, &cfg[p])))
            .collect()
    }

    /// `cilium-dbg status` of an agent in `me`.
    pub fn status(&self, me: &str) -> String {
        let report_not_ready = self.state(me).is_some_and(|s| {
            s.sim
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .report_not_ready
        });
        let peers = self.peers(me);
        let ready = if report_not_ready {
            0
        } else {
            peers.iter().filter(|(_, r)| r.is_ok()).count()
        };
        let mut s = String::from(
            "KVStore:                 Ok   Disabled\nKubernetes:              Ok   1.31 (v1.31.0) [linux/amd64]\n",
        );
        if self.remote_wording {
            s.push_str(&format!(
                "ClusterMesh:             {ready}/{} remote clusters ready, 0 global-services\n",
                peers.len()
            ));
            for (p, r) in &peers {
                match r {
                    Ok(_) if !report_not_ready => {}
                    Ok(_) => s.push_str(&format!("   {p}: waiting for initial sync, 0 nodes, 0 endpoints, 0 identities, 0 services, 0 reconnections (last: never)\n")),
                    Err(e) => s.push_str(&format!("   {p}: not-ready, 0 nodes, 0 endpoints, 0 identities, 0 services, 3 reconnections (last: 5s ago)\n   └  etcd: 0/1 connected: {e}\n")),
                }
            }
        } else {
            s.push_str(&format!(
                "ClusterMesh:             {ready}/{} clusters ready, 0 global-services\n",
                peers.len()
            ));
        }
        s.push_str("Hubble:                  Ok\n");
        s
    }

    /// `cilium-dbg node list` of an agent in `me`.
    pub fn node_list(&self, me: &str) -> String {
        let mut s = String::from(
            "Name                            IPv4 Address      Endpoint CIDR   IPv6 Address   Endpoint CIDR\n",
        );
        let nodes = |state: &State| -> Vec<(String, String)> {
            let store = state.store.lock().unwrap_or_else(|p| p.into_inner());
            let r = super::store::resource("", "v1", "nodes").expect("nodes");
            store
                .list(r, "", &Default::default())
                .iter()
                .map(|n| {
                    (
                        n.pointer("/metadata/name")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                        n.pointer("/status/addresses/0/address")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                    )
                })
                .collect()
        };
        let mut rows: Vec<(String, String)> = Vec::new();
        if let Some(my) = self.state(me) {
            rows.extend(
                nodes(my)
                    .into_iter()
                    .map(|(n, ip)| (format!("{me}/{n}"), ip)),
            );
        }
        let report_not_ready = self.state(me).is_some_and(|s| {
            s.sim
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .report_not_ready
        });
        if !report_not_ready {
            for (p, r) in self.peers(me) {
                if let (Ok(_), Some(st)) = (r, self.state(&p)) {
                    rows.extend(
                        nodes(st)
                            .into_iter()
                            .map(|(n, ip)| (format!("{p}/{n}"), ip)),
                    );
                }
            }
        }
        for (n, ip) in rows {
            s.push_str(&format!("{n:<32}{ip:<18}\n"));
        }
        s
    }

    /// Installs the exec handler in every cluster.
    pub fn install(self: &Arc<Self>) {
        for (name, state) in &self.clusters {
            let sim = Arc::clone(self);
            let me = name.clone();
            state.set_exec(Arc::new(move |req: &ExecRequest| sim.exec(&me, req)));
        }
    }

    fn exec(&self, me: &str, req: &ExecRequest) -> ExecResult {
        if req.namespace != "kube-system" {
            return self.exec_workload(me, req);
        }
        let cmd: Vec<&str> = req.command.iter().map(String::as_str).collect();
        let not_found = |bin: &str| ExecResult {
            stderr: format!("exec: \"{bin}\": executable file not found in $PATH"),
            code: 127,
            ..ExecResult::default()
        };
        let args = match cmd.as_slice() {
            ["cilium-dbg", rest @ ..] if self.has_cilium_dbg => rest,
            ["cilium-dbg", ..] => return not_found("cilium-dbg"),
            ["cilium", rest @ ..] => rest,
            [other, ..] => return not_found(other),
            [] => return not_found(""),
        };
        match args {
            ["status", ..] => ExecResult {
                stdout: self.status(me),
                ..ExecResult::default()
            },
            ["node", "list", ..] => ExecResult {
                stdout: self.node_list(me),
                ..ExecResult::default()
            },
            _ => ExecResult {
                stderr: format!("unknown command {args:?}"),
                code: 1,
                ..ExecResult::default()
            },
        }
    }
}
