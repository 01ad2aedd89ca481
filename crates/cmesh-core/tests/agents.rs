//! What real Cilium agents print, read by the status parsers: every file in
//! `tests/fixtures/agents` was captured from a real agent in the lab
//! (`<version>-<command>-<state>.<json|txt>`, README.md there says how). The JSON and the text
//! form of one moment must give the same verdict, and each names what the agent saw.

use std::path::PathBuf;

use cmesh_core::status::parse::{self, ClusterMeshStatus};

fn fixture(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/agents")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Parses a status capture in both forms where both exist and checks they agree on what
/// matters (counts, names, readiness).
fn status(version: &str, state: &str) -> ClusterMeshStatus {
    let json = fixture(&format!("{version}-status-{state}.json"));
    let from_json = parse::cilium_status_any(&json).expect("a ClusterMesh section in the JSON");
    assert_eq!(
        parse::cilium_status_json(&json).as_ref(),
        Some(&from_json),
        "cilium_status_any picks the JSON parser"
    );
    let text_path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/agents")
        .join(format!("{version}-status-{state}.txt"));
    if text_path.exists() {
        let text = fixture(&format!("{version}-status-{state}.txt"));
        let from_text = parse::cilium_status_any(&text).expect("a ClusterMesh line in the text");
        assert_eq!(
            (from_text.ready, from_text.total),
            (from_json.ready, from_json.total),
            "{version} {state}: text and JSON disagree"
        );
        let names = |s: &ClusterMeshStatus| -> Vec<(String, bool)> {
            s.clusters
                .iter()
                .map(|c| (c.name.clone(), c.ready))
                .collect()
        };
        // The text lists per-cluster lines only for clusters that are not ready (unless
        // --verbose): compare those.
        let not_ready = |v: Vec<(String, bool)>| -> Vec<(String, bool)> {
            v.into_iter().filter(|(_, r)| !r).collect()
        };
        assert_eq!(
            not_ready(names(&from_text)),
            not_ready(names(&from_json)),
            "{version} {state}"
        );
    }
    from_json
}

#[test]
fn cilium_1_14_ready() {
    let s = status("1.14.2", "ready");
    assert_eq!((s.ready, s.total), (1, 1));
    assert_eq!(s.clusters[0].name, "k8s02");
    assert!(s.clusters[0].ready);
    assert_eq!(s.clusters[0].nodes, Some(1));
}

/// The peer's NodePort refused (tcp-reset): 1.14's JSON then has no `ready` key at all (Go's
/// omitempty), which must read as not ready, with the agent's own status line as the cause.
#[test]
fn cilium_1_14_peer_refused() {
    let s = status("1.14.2", "peer-refused");
    assert_eq!((s.ready, s.total), (0, 1));
    let c = &s.clusters[0];
    assert_eq!((c.name.as_str(), c.ready), ("k8s02", false));
    assert_eq!(c.state, "not-ready");
    assert!(
        c.sub
            .iter()
            .any(|l| l.contains("Waiting for initial connection to be established")),
        "{c:?}"
    );
}

#[test]
fn cilium_1_14_node_list_names_the_remote_nodes_cluster() {
    let json = fixture("1.14.2-node-list.json");
    let nodes = parse::node_list_any(&json);
    let mut seen: Vec<(Option<&str>, &str)> = nodes
        .iter()
        .map(|n| (n.cluster.as_deref(), n.name.as_str()))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            (Some("k8s01"), "k8s01-node-1"),
            (Some("k8s02"), "k8s02-node-1")
        ]
    );
    assert!(nodes.iter().all(|n| n.ipv4.is_some()), "{nodes:?}");
}
