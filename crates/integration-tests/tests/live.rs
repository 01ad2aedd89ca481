//! `apply` and `status` end to end on the lab (crates/integration-tests/src/lab): the real cmesh
//! binary and the real helm install the real Cilium chart into real Kubernetes API servers;
//! Cilium's own clustermesh-apiserver and KVStoreMesh then run from what the chart created, so
//! a peer reported ready is Cilium connecting with cmesh's configuration. Faults go through the
//! same path and must fail the right check with the right cause.

use std::path::Path;

use integration_tests::cli::Run;
use integration_tests::lab::name;
use integration_tests::mesh::{Mesh, MeshOptions, check};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_cmesh-under-test"))
}

#[track_caller]
fn code(m: &Mesh, r: &Run, want: i32) {
    assert_eq!(
        r.code,
        want,
        "stdout:\n{}\nstderr:\n{}\n{}",
        r.stdout,
        r.stderr,
        m.lab.logs(25)
    );
}

/// Every check cmesh status makes on a meshed cluster with KVStoreMesh.
const ALL: [&str; 12] = [
    "api",
    "agents",
    "operator",
    "clustermesh-apiserver",
    "service",
    "ca",
    "peers",
    "kvstoremesh-peers",
    "kvstoremesh",
    "agents-clustermesh",
    "agents-nodes",
    "drift",
];

#[track_caller]
fn all_pass(m: &Mesh, v: &serde_json::Value, n: usize) {
    for i in 0..n {
        for k in ALL {
            let (o, why) = check(v, &name(i), k);
            assert_eq!(o, "pass", "{} {k}: {why}\n{}", name(i), m.lab.logs(25));
        }
    }
}

/// The agents' `kubectl.kubernetes.io/restartedAt` on k8s01: when cmesh last restarted them.
fn restarted_at(m: &Mesh) -> Option<String> {
    m.kube(0, async |c| {
        let api: kube::Api<k8s_openapi::api::apps::v1::DaemonSet> =
            kube::Api::namespaced(c, "kube-system");
        let ds = api.get("cilium").await?;
        Ok(ds
            .spec
            .template
            .metadata
            .and_then(|m| m.annotations)
            .and_then(|a| a.get("kubectl.kubernetes.io/restartedAt").cloned()))
    })
}

/// Base, then mesh, then status, on `version`, as the article does it by hand.
fn base_then_mesh(version: &str) {
    let Some(m) = Mesh::start(&MeshOptions::new(2, version)) else {
        return;
    };
    let r = m.apply(bin(), &["--phase", "base"]);
    code(&m, &r, 0);
    assert!(
        r.stdout.contains("k8s01    base   2 applied  installed"),
        "{}",
        r.stdout
    );
    // The base phase creates no clustermesh-apiserver and no peers.
    let (r, v) = m.status_json(bin(), &[]);
    code(&m, &r, 1);
    assert_eq!(
        check(&v, "k8s01", "agents"),
        ("pass", "DaemonSet cilium 2/2 ready")
    );
    assert_eq!(check(&v, "k8s01", "clustermesh-apiserver").0, "fail");
    assert_eq!(check(&v, "k8s01", "peers").0, "fail");

    let r = m.apply(bin(), &["--phase", "mesh"]);
    code(&m, &r, 0);
    // The mesh configuration changed on a running release: the agents were restarted.
    let restarted = restarted_at(&m);
    assert!(restarted.is_some(), "no rollout restart");
    let (r, v) = m.status_wait(bin(), "90s");
    code(&m, &r, 0);
    all_pass(&m, &v, 2);
    let (_, why) = check(&v, "k8s01", "kvstoremesh");
    assert!(
        why.starts_with("1 replica(s) report 1/1 remote clusters ready (k8s02 2 nodes)"),
        "{why}"
    );
    assert!(
        check(&v, "k8s02", "kvstoremesh-peers")
            .1
            .contains(&format!("k8s01 (https://{}:32379)", m.lab.clusters[0].ip)),
        "{v}"
    );
    // A second apply changes nothing and restarts nothing.
    let r = m.apply(bin(), &["--phase", "mesh"]);
    code(&m, &r, 0);
    assert!(r.stdout.contains("skip (no change)"), "{}", r.stdout);
    assert!(
        r.stderr
            .contains(&format!("mesh  helm  skip: no change (cilium-{version})")),
        "{}",
        r.stderr
    );
    assert_eq!(restarted_at(&m), restarted);
    let r = m.cmesh(bin(), &["status"]);
    code(&m, &r, 0);
    assert!(
        r.stdout.contains("k8s01: 12/12 checks pass")
            && r.stdout.contains("k8s02: 12/12 checks pass"),
        "{}",
        r.stdout
    );
}

#[test]
fn two_clusters_1_16_base_then_mesh_then_status() {
    base_then_mesh("1.16.19");
}

#[test]
fn two_clusters_1_20_base_then_mesh_then_status() {
    base_then_mesh("1.20.0");
}

fn five(version: &str) {
    let Some(m) = Mesh::start(&MeshOptions::new(5, version)) else {
        return;
    };
    code(&m, &m.apply(bin(), &[]), 0);
    let (r, v) = m.status_wait(bin(), "120s");
    code(&m, &r, 0);
    all_pass(&m, &v, 5);
    for i in 0..5 {
        assert!(
            check(&v, &name(i), "kvstoremesh")
                .1
                .starts_with("1 replica(s) report 4/4 remote clusters ready"),
            "{v}"
        );
        assert_eq!(
            check(&v, &name(i), "agents-clustermesh").1,
            "2 agent(s) report 4/4 clusters ready"
        );
    }
}

#[test]
fn five_clusters_1_20() {
    five("1.20.0");
}

#[test]
fn five_clusters_1_16() {
    five("1.16.19");
}
