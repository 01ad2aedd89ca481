//! What Kubernetes' controllers would do, enough for `apply`, `status` and `test` to run as on
//! a real cluster: nodes exist, DaemonSets and Deployments roll out (after a configurable
//! delay) by replacing their pods, pods get scheduled with distinct IPs and report ready or not
//! as the scenario says, and terminating namespaces are emptied and removed.

use std::time::Instant;

use serde_json::{Value, json};

use super::State;
use super::store::resource;

fn short_hash(s: &str) -> String {
    let mut h: u32 = 2166136261;
    for b in s.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(16777619);
    }
    let alphabet = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|i| alphabet[((h >> (i * 5)) % alphabet.len() as u32) as usize] as char)
        .collect()
}

/// An object's namespace and name.
fn ns_name(v: &Value) -> (String, String) {
    let get = |p: &str| {
        v.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    (get("/metadata/namespace"), get("/metadata/name"))
}

/// The containers of a pod (or template) and their statuses, all ready or not.
fn container_statuses(pod: &Value, ready: bool) -> (Vec<Value>, Vec<Value>) {
    let containers: Vec<Value> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let statuses = containers
        .iter()
        .map(|c| json!({"name": c.get("name"), "ready": ready, "restartCount": 0, "image": c.get("image")}))
        .collect();
    (containers, statuses)
}

/// Brings workloads and pods in line with their specs.
pub fn reconcile(state: &State) {
    let sim = state.sim.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut store = state.store.lock().unwrap_or_else(|p| p.into_inner());
    let nodes_r = resource("", "v1", "nodes").expect("nodes");
    let pods_r = resource("", "v1", "pods").expect("pods");
    store.finish_terminating_namespaces();
    if !sim.strip_ingress_annotations.is_empty() {
        strip_annotations(&mut store, &sim);
    }
    if !sim.delete_services.is_empty() {
        let r = resource("", "v1", "services").expect("services");
        for svc in store.list(r, "", &Default::default()) {
            let (ns, name) = ns_name(&svc);
            if ns != "kube-system" && sim.delete_services.contains(&name) {
                let _ = store.delete(r, &ns, &name);
            }
        }
    }
    let mut used_ips: std::collections::BTreeSet<String> = store
        .list(pods_r, "", &Default::default())
        .iter()
        .filter_map(|p| {
            p.pointer("/status/podIP")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .collect();
    let mut next_ip = |subnet: u8| -> String {
        let mut n: u32 = 10;
        loop {
            let ip = format!("10.{subnet}.{}.{}", (n >> 8) & 255, n & 255);
            if used_ips.insert(ip.clone()) {
                return ip;
            }
            n += 1;
        }
    };
    for (i, n) in sim.nodes.iter().enumerate() {
        if store.get(nodes_r, "", n).is_none() {
            let _ = store.create(
                nodes_r,
                "",
                json!({"metadata": {"name": n, "labels": {"kubernetes.io/hostname": n}},
                       "status": {"addresses": [{"type": "InternalIP", "address": format!("192.168.{}.{}", sim.node_subnet, 10 + i)}],
                                  "conditions": [{"type": "Ready", "status": "True"}]}}),
            );
        }
    }
    for (plural, per_node) in [("daemonsets", true), ("deployments", false)] {
        let r = resource("apps", "v1", plural).expect("workloads");
        let all = store.list(r, "", &Default::default());
        for w in all {
            let ns = w
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("default")
                .to_owned();
            let name = w
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let uid = w
                .pointer("/metadata/uid")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let generation = w
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let observed = w
                .pointer("/status/observedGeneration")
                .and_then(Value::as_i64);
            let desired = if per_node {
                sim.nodes.len() as i64
            } else {
                w.pointer("/spec/replicas")
                    .and_then(Value::as_i64)
                    .unwrap_or(1)
            };
            let ready_all = (!per_node || sim.agents_ready) && !sim.not_ready.contains(&name);
            if observed != Some(generation) {
                // A rollout: wait for the delay, then replace the pods.
                let mut pending = state.pending.lock().unwrap_or_else(|p| p.into_inner());
                let since = *pending
                    .entry(format!("{uid}/{generation}"))
                    .or_insert_with(Instant::now);
                if since.elapsed() < sim.rollout_delay {
                    continue;
                }
                drop(pending);
                let owned: Vec<String> = store
                    .list(pods_r, &ns, &Default::default())
                    .into_iter()
                    .filter(|p| {
                        p.pointer("/metadata/ownerReferences/0/uid")
                            .and_then(Value::as_str)
                            == Some(uid.as_str())
                    })
                    .filter_map(|p| {
                        p.pointer("/metadata/name")
                            .and_then(Value::as_str)
                            .map(str::to_owned)
                    })
                    .collect();
                for p in owned {
                    let _ = store.delete(pods_r, &ns, &p);
                }
                let template = w.pointer("/spec/template").cloned().unwrap_or(json!({}));
                for i in 0..desired {
                    let node = if per_node {
                        sim.nodes[i as usize].clone()
                    } else {
                        sim.nodes.first().cloned().unwrap_or_default()
                    };
                    let pod_name =
                        format!("{name}-{}", short_hash(&format!("{uid}/{generation}/{i}")));
                    let (containers, statuses) = container_statuses(&template, ready_all);
                    let _ = store.create(
                        pods_r,
                        &ns,
                        json!({
                            "metadata": {"name": pod_name, "labels": template.pointer("/metadata/labels").cloned().unwrap_or(json!({})),
                                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": if per_node { "DaemonSet" } else { "ReplicaSet" }, "name": name, "uid": uid, "controller": true}]},
                            "spec": {"nodeName": node, "containers": containers},
                            "status": {"phase": "Running", "podIP": next_ip(sim.node_subnet),
                                       "conditions": [{"type": "Ready", "status": if ready_all { "True" } else { "False" }}],
                                       "containerStatuses": statuses}
                        }),
                    );
                }
            }
            let ready = if ready_all { desired } else { 0 };
            let status = if per_node {
                json!({"desiredNumberScheduled": desired, "currentNumberScheduled": desired, "numberReady": ready,
                       "updatedNumberScheduled": desired, "numberAvailable": ready, "numberMisscheduled": 0, "observedGeneration": generation})
            } else {
                json!({"replicas": desired, "updatedReplicas": desired, "readyReplicas": ready, "availableReplicas": ready, "observedGeneration": generation})
            };
            if w.get("status") != Some(&status) {
                store.set_status(r, &ns, &name, status);
            }
        }
    }
    // Bare pods (no controller) are scheduled on the first node.
    for p in store.list(pods_r, "", &Default::default()) {
        if p.pointer("/status/podIP").is_some() {
            continue;
        }
        let (ns, name) = ns_name(&p);
        let ready = !sim.not_ready.contains(&name);
        let (_, statuses) = container_statuses(&p, ready);
        let status = json!({"phase": "Running", "podIP": next_ip(sim.node_subnet),
                            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
                            "containerStatuses": statuses});
        store.set_status(pods_r, &ns, &name, status);
    }
    // Ready flags of existing pods follow the scenario too (agents becoming unready).
    let pods = store.list(pods_r, "", &Default::default());
    for p in pods {
        let owner = p
            .pointer("/metadata/ownerReferences/0/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let is_agent = p
            .pointer("/metadata/ownerReferences/0/kind")
            .and_then(Value::as_str)
            == Some("DaemonSet");
        let own_name = p
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let ready = (!is_agent || sim.agents_ready)
            && !sim.not_ready.contains(&owner)
            && !sim.not_ready.contains(own_name);
        let want = if ready { "True" } else { "False" };
        if p.pointer("/status/conditions/0/status")
            .and_then(Value::as_str)
            != Some(want)
        {
            let (ns, name) = ns_name(&p);
            let mut status = p.get("status").cloned().unwrap_or(json!({}));
            status["conditions"] = json!([{"type": "Ready", "status": want}]);
            if let Some(cs) = status
                .get_mut("containerStatuses")
                .and_then(Value::as_array_mut)
            {
                for c in cs {
                    c["ready"] = json!(ready);
                }
            }
            store.set_status(pods_r, &ns, &name, status);
        }
    }
}

fn strip_annotations(store: &mut super::Store, sim: &super::Sim) {
    let r = resource("networking.k8s.io", "v1", "ingresses").expect("ingresses");
    for i in store.list(r, "", &Default::default()) {
        let Some(ann) = i
            .pointer("/metadata/annotations")
            .and_then(Value::as_object)
        else {
            continue;
        };
        if !ann
            .keys()
            .any(|k| sim.strip_ingress_annotations.contains(k))
        {
            continue;
        }
        let (ns, name) = ns_name(&i);
        let patch: serde_json::Map<String, Value> = sim
            .strip_ingress_annotations
            .iter()
            .map(|k| (k.clone(), Value::Null))
            .collect();
        let _ = store.patch(
            r,
            &ns,
            &name,
            super::store::PatchKind::Merge,
            json!({"metadata": {"annotations": patch}}),
        );
    }
}
