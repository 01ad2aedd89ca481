//! The lab sessions: each test starts one lab of real clusters with real Cilium (agents and
//! their eBPF datapath, operator, clustermesh-apiserver, KVStoreMesh, CoreDNS; docs/testing.md)
//! and goes through several stories in turn (`apply`, `faults`, `suite`), each leaving the mesh
//! as it found it or coming last. A lab costs a minute or two to start and mesh (agents compile
//! their datapath), so stories share them: seven labs cover 1.14.2, 1.16.19 and 1.20.0, two to
//! five clusters, KVStoreMesh on and off. One lab runs at a time (the lab's lock), so cargo's
//! test threads queue.

mod apply;
mod faults;
mod flux;
mod membership;
mod rotation;
mod suite;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use integration_tests::cli::Run;
pub(crate) use integration_tests::cli::bin;
use integration_tests::lab::name;
use integration_tests::mesh::{Mesh, MeshOptions, check};
use serde_json::Value;

#[track_caller]
pub(crate) fn code(m: &Mesh, r: &Run, want: i32) {
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
pub(crate) const ALL: [&str; 14] = [
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
    "trust",
    "certificates",
];

#[track_caller]
pub(crate) fn all_pass(m: &Mesh, v: &serde_json::Value, n: usize) {
    for i in 0..n {
        for k in ALL {
            let (o, why) = check(v, &name(i), k);
            assert_eq!(o, "pass", "{} {k}: {why}\n{}", name(i), m.lab.logs(25));
        }
    }
}

pub(crate) fn json(r: &Run) -> Value {
    serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("{e}\nstdout:\n{}\nstderr:\n{}", r.stdout, r.stderr))
}

/// Runs `cmesh test args -o json`, expecting exit `code`, and returns the report.
#[track_caller]
pub(crate) fn test_json(m: &Mesh, args: &[&str], code: i32) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let r = m.test(bin(), &all);
    assert_eq!(r.code, code, "{}\n{}", r.stdout, r.stderr);
    json(&r)
}

/// `check from[→to]` of every cell with `outcome`.
pub(crate) fn cells(v: &Value, outcome: &str) -> BTreeSet<String> {
    v["cells"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["outcome"] == outcome)
        .map(|c| match c["to"].as_str() {
            Some(to) => format!(
                "{} {}→{to}",
                c["check"].as_str().unwrap(),
                c["from"].as_str().unwrap()
            ),
            None => format!(
                "{} {}",
                c["check"].as_str().unwrap(),
                c["from"].as_str().unwrap()
            ),
        })
        .collect()
}

pub(crate) fn set(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

pub(crate) fn cell<'a>(v: &'a Value, check: &str, from: &str, to: Option<&str>) -> &'a Value {
    v["cells"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == check && c["from"] == from && c["to"].as_str() == to)
        .unwrap_or_else(|| panic!("no cell {check} {from} {to:?}"))
}

/// No test namespace is left in any cluster, once the namespace controller has finished the
/// deletions cmesh asked for (a namespace whose pods kwok is still finalising is
/// `Terminating` for a few seconds).
#[track_caller]
pub(crate) fn nothing_left(m: &Mesh) {
    for i in 0..m.lab.clusters.len() {
        let start = Instant::now();
        let mut left = m.test_namespaces(i);
        while !left.is_empty() && start.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(500));
            left = m.test_namespaces(i);
        }
        assert_eq!(left, Vec::<String>::new(), "leftovers in cluster {i}");
    }
}

/// Waits until `cond` holds (the run under test got that far).
pub(crate) fn until(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until every check passes again (after a fault was undone).
#[track_caller]
pub(crate) fn healthy_again(m: &Mesh) {
    let (r, _) = m.status_wait(bin(), "120s");
    code(m, &r, 0);
}

/// Polls `status -o json` until check `name` on `cluster` fails with a reason containing every
/// one of `words`; returns that status.
#[track_caller]
pub(crate) fn until_fails(m: &Mesh, cluster: &str, name: &str, words: &[&str]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (r, v) = m.status_json(bin(), &[]);
        let (o, why) = check(&v, cluster, name);
        if o == "fail" && words.iter().all(|w| why.contains(w)) {
            assert_eq!(r.code, 1, "{}", r.stdout);
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{cluster} {name} is {o}: {why}\n(wanted a failure naming {words:?})\n{}",
            m.lab.logs(30)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A lab of `n` clusters on `version` with `clustermesh_extra` in mesh.yaml, nothing applied.
fn lab(n: usize, version: &str, clustermesh_extra: &str) -> Mesh {
    let mut opts = MeshOptions::new(n, version);
    opts.clustermesh_extra = clustermesh_extra.into();
    Mesh::start(&opts)
}

/// A healthy, verified mesh: [`lab`], then one apply and status green.
fn healthy(n: usize, version: &str, clustermesh_extra: &str) -> Mesh {
    let m = lab(n, version, clustermesh_extra);
    code(&m, &m.apply(bin(), &[]), 0);
    healthy_again(&m);
    m
}

/// Two clusters on Cilium 1.16.19, as the article builds them by hand: admission denials first,
/// then base, a dry run of the mesh, the mesh, status; then ingress-nginx in both and the whole
/// `cmesh test` suite, an Ingress that loses `service-upstream`, `--keep` and a killed run
/// followed by `--cleanup`, SIGTERM, a setup timeout (tainted nodes), usage errors.
#[test]
#[ignore = "needs the lab: root, network namespaces, the components of scripts/install-test-deps"]
fn two_clusters_on_1_16() {
    let m = lab(2, "1.16.19", "");
    apply::admission_denials_fail_the_step_they_hit(&m);
    apply::base_alone(&m);
    apply::dry_run_plans_and_changes_nothing(&m);
    apply::mesh_after_base(&m, "1.16.19");
    for i in 0..2 {
        m.install_ingress_nginx(i, "nginx");
    }
    suite::the_whole_suite_passes_and_cleans_up(&m);
    suite::an_ingress_that_loses_service_upstream(&m);
    suite::keep_and_a_killed_run_leave_leftovers_that_cleanup_removes(&m);
    suite::sigterm_cleans_up_too(&m);
    suite::a_timeout_in_setup_is_reported_and_cleaned_up(&m);
    suite::usage_errors(&m);
}

/// Three clusters on Cilium 1.20.0: base, mesh, status; drift after a hand upgrade; a cluster
/// off the network; then ingress-nginx in k8s03 only and the suite with global namespaces, live
/// lint, Ctrl-C; a CA rotation under the samplers, an abort after `reissue` (both aborts: back
/// to the current CA's certificates, then the new CA out of the trust), the forced
/// replacement's outage; last, k8s03 lost as a whole: the others' global Services keep
/// answering from the remaining clusters and `test` and `status` name the lost one (which
/// also proves that Services created after the forced replacement reach the other clusters:
/// without the agents' restart that `apply` now makes after it, they did not).
#[test]
#[ignore = "needs the lab: root, network namespaces, the components of scripts/install-test-deps"]
fn three_clusters_on_1_20() {
    let m = lab(3, "1.20.0", "");
    apply::base_alone(&m);
    apply::mesh_after_base(&m, "1.20.0");
    apply::drift_names_the_keys_that_differ(&m);
    apply::an_unreachable_cluster_times_out_alone(&m);
    m.install_ingress_nginx(2, "nginx");
    suite::three_clusters_pass_with_global_namespaces(&m);
    suite::lint_live_flags_a_namespace_that_is_not_global_on_1_20(&m);
    suite::ctrl_c_cleans_up_and_exits_130(&m);
    rotation::a_full_rotation_breaks_nothing(&m);
    rotation::an_abort_after_reissue_returns_to_a_green_mesh(&m);
    rotation::a_forced_replacement_cuts_the_mesh(&m);
    suite::a_lost_cluster(&m);
}

/// Five clusters on Cilium 1.20.0 in one apply: every KVStoreMesh and every agent reports all
/// four peers ready and sees all five nodes. One Cilium version only: five agents compiling
/// their datapath at once on two cores is the lab's heaviest start (docs/performance.md).
#[test]
#[ignore = "needs the lab: root, network namespaces, the components of scripts/install-test-deps"]
fn five_clusters_on_1_20() {
    let m = lab(5, "1.20.0", "");
    code(&m, &m.apply(bin(), &["--timeout", "300s"]), 0);
    apply::every_peer_ready_everywhere(&m);
}

/// Three clusters on Cilium 1.14.2, the reference article's release, which has no KVStoreMesh
/// by default: one apply finishes base everywhere before mesh anywhere; the agents dial every
/// peer themselves with cmesh's certificates; the suite's traffic passes; then a cluster's API
/// server goes away and the others proceed.
#[test]
#[ignore = "needs the lab: root, network namespaces, the components of scripts/install-test-deps"]
fn three_clusters_on_1_14_without_kvstoremesh() {
    let m = lab(3, "1.14.2", "");
    apply::base_everywhere_before_mesh_anywhere(&m);
    apply::agents_dial_the_peers_themselves(&m);
    code(&m, &m.test(bin(), &["--only", "pod,service,failover"]), 0);
    apply::an_api_server_down(&m);
}

/// Cilium 1.20.0 with KVStoreMesh (the default), installed by Flux from a git commit of the
/// rendered tree (issue 23; Flux is stopped afterwards); then the faults: a replaced server
/// certificate, a peer on another CA, a cluster ID changed by hand, a cluster's etcd down.
#[test]
#[ignore = "needs the lab: root, network namespaces, the components of scripts/install-test-deps"]
fn faults_on_1_20_with_kvstoremesh() {
    let m = lab(2, "1.20.0", "");
    flux::flux_syncs_the_committed_tree(&m);
    faults::a_server_certificate_without_the_dialled_address(&m);
    faults::a_peer_from_another_ca(&m);
    faults::a_cluster_id_changed_by_hand(&m);
    faults::a_clusters_etcd_down_then_back(&m);
}

/// Four lab clusters on Cilium 1.16.19 with KVStoreMesh (issue 22): three meshed, then the
/// fourth joins (planned first, applied before its peers change), then k8s02 leaves mesh.yaml
/// and `apply --prune` disconnects it once its peers dropped it; then `cmesh upgrade` moves
/// the three left to 1.17.17, one cluster at a time behind status gates; global Services
/// sampled throughout.
#[test]
#[ignore = "needs the lab: root, network namespaces, the components of scripts/install-test-deps"]
fn membership_on_1_16() {
    let m = lab(4, "1.16.19", "");
    membership::a_fourth_cluster_joins(&m);
    membership::a_cluster_leaves_with_prune(&m);
    membership::an_upgrade_step_behind_status_gates(&m);
}

/// Three clusters on Cilium 1.16.19 with KVStoreMesh turned off (the agents dial the peers
/// themselves with cmesh's certificates, so faults show in their own reports): a firewall
/// between two clusters failing exactly their cells, a Service pruned in one cluster, a peer
/// missing from one cluster's list, probe with the certificates the cluster holds; a CA
/// rotation under the samplers (the agents dial the peers' clustermesh-apiservers themselves).
#[test]
#[ignore = "needs the lab: root, network namespaces, the components of scripts/install-test-deps"]
fn three_clusters_on_1_16_without_kvstoremesh() {
    let m = healthy(3, "1.16.19", "  kvstoremesh: false\n");
    suite::a_firewall_between_two_clusters_fails_exactly_their_cells(&m);
    suite::a_global_service_missing_in_one_cluster(&m);
    faults::a_peer_missing_from_one_clusters_list(&m);
    faults::probe_with_the_certificates_from_the_cluster(&m);
    rotation::a_full_rotation_breaks_nothing(&m);
}
