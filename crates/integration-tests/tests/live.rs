//! `apply` and `status` end to end: the real cmesh binary and the real helm against fake
//! Kubernetes API servers (crates/integration-tests/src/kube_api), with a simulated Cluster
//! Mesh between them, and every fault the issue lists.

use std::path::Path;

use integration_tests::live::{LiveMesh, check, name};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_cmesh-under-test"))
}

#[track_caller]
fn code(r: &integration_tests::cli::Run, want: i32) {
    assert_eq!(r.code, want, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
}

#[test]
fn two_clusters_base_then_mesh_then_status() {
    let Some(m) = LiveMesh::start(2, "1.16.19") else {
        return;
    };
    let r = m.apply(bin(), &["--phase", "base"]);
    code(&r, 0);
    // cilium-ca and Hubble's server certificate (1.16.19 takes it as a pre-created Secret).
    assert!(
        r.stdout.contains("k8s01    base   2 applied  installed"),
        "{}",
        r.stdout
    );
    // Base phase: no Cluster Mesh yet.
    assert!(
        m.clusters[0]
            .state
            .get(
                "apps",
                "v1",
                "deployments",
                "kube-system",
                "clustermesh-apiserver"
            )
            .is_none()
    );
    let (r, v) = m.status_json(bin(), &[]);
    code(&r, 1);
    assert_eq!(
        check(&v, "k8s01", "agents"),
        ("pass", "DaemonSet cilium 2/2 ready")
    );
    assert_eq!(check(&v, "k8s01", "peers").0, "fail");

    let r = m.apply(bin(), &["--phase", "mesh"]);
    code(&r, 0);
    // The mesh configuration changed on a running release: agents restarted.
    assert!(r.stdout.contains("clustermesh.apiserver"), "{}", r.stdout);
    let restarted = m.clusters[0]
        .requests()
        .iter()
        .any(|q| q.starts_with("PATCH /apis/apps/v1/namespaces/kube-system/daemonsets/cilium"));
    assert!(restarted, "no rollout restart");
    let (r, v) = m.status_json(bin(), &[]);
    code(&r, 0);
    for c in ["k8s01", "k8s02"] {
        for k in [
            "api",
            "agents",
            "operator",
            "clustermesh-apiserver",
            "service",
            "ca",
            "peers",
            "kvstoremesh-peers",
            "agents-clustermesh",
            "agents-nodes",
            "drift",
        ] {
            assert_eq!(check(&v, c, k).0, "pass", "{c} {k}: {}", check(&v, c, k).1);
        }
    }
    assert_eq!(
        check(&v, "k8s01", "agents-clustermesh").1,
        "2 agent(s) report 1/1 clusters ready"
    );
    assert!(
        check(&v, "k8s02", "peers")
            .1
            .contains("k8s01 (https://clustermesh-apiserver.kube-system.svc:2379)")
    );
    assert!(
        check(&v, "k8s02", "kvstoremesh-peers")
            .1
            .contains("k8s01 (https://k8s01.mesh.test:32379)")
    );
    // A second apply changes nothing and restarts nothing.
    let before = m.clusters[0].requests().len();
    let r = m.apply(bin(), &["--phase", "mesh"]);
    code(&r, 0);
    assert!(r.stdout.contains("skip (no change)"), "{}", r.stdout);
    let restarts = m.clusters[0].requests()[before..]
        .iter()
        .filter(|q| q.starts_with("PATCH /apis/apps/v1/namespaces/kube-system/daemonsets/cilium?"))
        .count();
    assert_eq!(restarts, 0);
    // The human table too.
    let r = m.cmesh(bin(), &["status"]);
    code(&r, 0);
    assert!(
        r.stdout.contains("k8s01: 11/11 checks pass")
            && r.stdout.contains("k8s02: 11/11 checks pass"),
        "{}",
        r.stdout
    );
}

#[test]
fn five_clusters_base_then_mesh_then_status() {
    let Some(m) = LiveMesh::start(5, "1.20.0") else {
        return;
    };
    code(&m.apply(bin(), &["--phase", "base"]), 0);
    code(&m.apply(bin(), &["--phase", "mesh"]), 0);
    let (r, v) = m.status_json(bin(), &[]);
    code(&r, 0);
    for i in 0..5 {
        assert_eq!(
            check(&v, &name(i), "agents-clustermesh").1,
            "2 agent(s) report 4/4 clusters ready"
        );
        assert_eq!(check(&v, &name(i), "agents-nodes").0, "pass");
    }
}

#[test]
fn one_apply_finishes_base_everywhere_before_mesh_anywhere() {
    let Some(m) = LiveMesh::start(3, "1.19.6") else {
        return;
    };
    let r = m.apply(bin(), &[]);
    code(&r, 0);
    let lines: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.contains("  helm  "))
        .collect();
    assert_eq!(lines.len(), 6, "{}", r.stderr);
    let last_base = lines
        .iter()
        .rposition(|l| l.contains("  base  "))
        .expect("base helm steps");
    let first_mesh = lines
        .iter()
        .position(|l| l.contains("  mesh  "))
        .expect("mesh helm steps");
    assert!(last_base < first_mesh, "{}", r.stderr);
    let (r, _) = m.status_json(bin(), &[]);
    code(&r, 0);
}

#[test]
fn a_cluster_down_is_reported_and_the_others_proceed() {
    let Some(mut m) = LiveMesh::start(3, "1.16.19") else {
        return;
    };
    m.clusters[2].down();
    let r = m.apply(bin(), &["--request-timeout", "2s"]);
    code(&r, 7);
    assert!(
        r.stdout.contains("k8s03") && r.stdout.contains("FAILED at connect"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("k8s01    mesh") && !r.stdout.contains("k8s01    mesh   FAILED"),
        "{}",
        r.stdout
    );
    let (r, v) = m.status_json(bin(), &["--request-timeout", "2s"]);
    code(&r, 1);
    assert_eq!(check(&v, "k8s03", "api").0, "fail");
    assert_eq!(check(&v, "k8s01", "api").0, "pass");
    // Its peers see it as not ready, through the simulated agents.
    let (o, why) = check(&v, "k8s01", "agents-clustermesh");
    assert_eq!(o, "fail");
    assert!(
        why.contains("1/2 remote clusters ready") && why.contains("k8s03 not-ready"),
        "{why}"
    );
}

#[test]
fn a_slow_cluster_is_waited_for_within_the_timeout() {
    let Some(m) = LiveMesh::start(2, "1.16.19") else {
        return;
    };
    m.clusters[1].faults(|f| f.delay = std::time::Duration::from_millis(150));
    let r = m.apply(bin(), &["--phase", "base"]);
    code(&r, 0);
    // With a request timeout below its latency, only that cluster fails.
    let r = m.apply(bin(), &["--phase", "base", "--request-timeout", "50ms"]);
    code(&r, 7);
    assert!(
        r.stdout.contains("k8s02") && r.stdout.contains("FAILED"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("k8s01    base") && !r.stdout.contains("k8s01    base   FAILED"),
        "{}",
        r.stdout
    );
}

#[test]
fn server_errors_fail_the_step_and_name_it() {
    let Some(m) = LiveMesh::start(2, "1.20.0") else {
        return;
    };
    m.clusters[0].faults(|f| {
        f.fail.push(integration_tests::kube_api::FailRule {
            method: Some(http::Method::PATCH),
            path_contains: "/secrets/cilium-ca".into(),
            status: 500,
            remaining: None,
        })
    });
    let r = m.apply(bin(), &["--phase", "base"]);
    code(&r, 7);
    assert!(
        r.stdout.contains("k8s01 (base) failed at secrets")
            && r.stdout.contains("injected failure"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("k8s02 (base) failed"), "{}", r.stdout);
}

#[test]
fn helm_failing_mid_way_shows_its_stderr() {
    let Some(m) = LiveMesh::start(2, "1.16.19") else {
        return;
    };
    code(&m.apply(bin(), &["--phase", "base"]), 0);
    // The mesh phase creates clustermesh-apiserver; k8s02's API server refuses it.
    m.clusters[1].faults(|f| {
        f.fail.push(integration_tests::kube_api::FailRule {
            method: Some(http::Method::POST),
            path_contains: "/deployments".into(),
            status: 500,
            remaining: None,
        })
    });
    let r = m.apply(bin(), &["--phase", "mesh"]);
    code(&r, 7);
    assert!(
        r.stdout.contains("k8s02 (mesh) failed at helm") && r.stdout.contains("injected failure"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("`helm upgrade --install cilium"),
        "{}",
        r.stdout
    );
    let (_, v) = m.status_json(bin(), &[]);
    assert_eq!(check(&v, "k8s01", "clustermesh-apiserver").0, "pass");
    assert_eq!(check(&v, "k8s02", "clustermesh-apiserver").0, "fail");
}

#[test]
fn mismatched_ca_missing_peer_and_unready_agents_fail_the_right_checks() {
    let Some(m) = LiveMesh::start(2, "1.19.6") else {
        return;
    };
    code(&m.apply(bin(), &[]), 0);
    let (r, _) = m.status_json(bin(), &[]);
    code(&r, 0);

    // Agents that report 0/1.
    m.clusters[0].sim(|s| s.report_not_ready = true);
    let (r, v) = m.status_json(bin(), &[]);
    code(&r, 1);
    let (o, why) = check(&v, "k8s01", "agents-clustermesh");
    assert_eq!(o, "fail");
    assert!(
        why.contains("0/1 remote clusters ready") && why.contains("k8s02 waiting for initial sync"),
        "{why}"
    );
    assert_eq!(check(&v, "k8s02", "agents-clustermesh").0, "pass");
    m.clusters[0].sim(|s| s.report_not_ready = false);

    // A peer missing from a cluster's secret.
    m.clusters[0].state.merge_patch(
        "",
        "secrets",
        "kube-system",
        "cilium-clustermesh",
        serde_json::json!({"data": {"k8s02": null}}),
    );
    let (r, v) = m.status_json(bin(), &[]);
    code(&r, 1);
    assert_eq!(
        check(&v, "k8s01", "peers"),
        ("fail", "cilium-clustermesh: k8s02 missing")
    );

    // Re-applying repairs it (helm restores the chart's secret).
    code(&m.apply(bin(), &["--phase", "mesh"]), 0);
    let (r, _) = m.status_json(bin(), &[]);
    code(&r, 0);

    // A cluster with another CA.
    let other = cmesh_core::pki::Ca::generate(
        "Cilium CA",
        cmesh_core::spec::KeyAlgorithm::EcdsaP256,
        10,
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    let b = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(other.cert_pem())
    };
    m.clusters[1].state.merge_patch(
        "",
        "secrets",
        "kube-system",
        "cilium-ca",
        serde_json::json!({"data": {"ca.crt": b}}),
    );
    let (r, v) = m.status_json(bin(), &[]);
    code(&r, 1);
    let (o, why) = check(&v, "k8s02", "ca");
    assert_eq!(o, "fail");
    assert!(
        why.contains("cilium-ca is `CN=Cilium CA`")
            && why.contains("not the mesh CA `CN=cmesh live CA`"),
        "{why}"
    );
    assert_eq!(check(&v, "k8s01", "ca").0, "pass");
    let (_, why) = check(&v, "k8s01", "agents-clustermesh");
    assert!(why.contains("0/1"), "{why}");
}

#[test]
fn dry_run_plans_and_changes_nothing() {
    let Some(m) = LiveMesh::start(2, "1.16.19") else {
        return;
    };
    code(&m.apply(bin(), &["--phase", "base"]), 0);
    let before: Vec<usize> = m
        .clusters
        .iter()
        .map(|c| {
            c.requests()
                .iter()
                .filter(|q| !q.starts_with("GET"))
                .count()
        })
        .collect();
    let r = m.apply(bin(), &["--phase", "mesh", "--dry-run"]);
    code(&r, 0);
    assert!(
        r.stdout.contains("k8s01 (phase mesh):")
            && r.stdout.contains("helm:    upgrade the current release"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("+ clustermesh.config.clusters") && r.stdout.contains("restart: yes"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.ends_with("dry run: nothing was changed\n"));
    assert!(
        !r.stdout.contains("PRIVATE KEY") && !r.stdout.contains("LS0t"),
        "values leaked: {}",
        r.stdout
    );
    let after: Vec<usize> = m
        .clusters
        .iter()
        .map(|c| {
            c.requests()
                .iter()
                .filter(|q| !q.starts_with("GET"))
                .count()
        })
        .collect();
    assert_eq!(before, after, "a dry run wrote to a cluster");
}

#[test]
fn status_wait_polls_until_ready() {
    let Some(m) = LiveMesh::start(2, "1.16.19") else {
        return;
    };
    code(&m.apply(bin(), &[]), 0);
    m.clusters[1].sim(|s| s.report_not_ready = true);
    let state = std::sync::Arc::clone(&m.clusters[1].state);
    let fixer = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(1500));
        state.sim.lock().unwrap().report_not_ready = false;
    });
    let r = m.cmesh(
        bin(),
        &[
            "status",
            "--wait",
            "--timeout",
            "20s",
            "--interval",
            "300ms",
        ],
    );
    fixer.join().unwrap();
    code(&r, 0);
    assert!(
        r.stderr.contains("waiting") && r.stderr.contains("k8s02/agents-clustermesh"),
        "{}",
        r.stderr
    );
    // And it gives up at the timeout.
    m.clusters[1].sim(|s| s.report_not_ready = true);
    let r = m.cmesh(
        bin(),
        &["status", "--wait", "--timeout", "1s", "--interval", "300ms"],
    );
    code(&r, 1);
    assert!(
        r.stderr.contains("not every check passed within 1s"),
        "{}",
        r.stderr
    );
}

#[test]
fn cilium_1_14_agents_answer_through_cilium_status() {
    let Some(m) = LiveMesh::start(2, "1.14.2") else {
        return;
    };
    code(&m.apply(bin(), &[]), 0);
    let (r, v) = m.status_json(bin(), &[]);
    code(&r, 0);
    assert_eq!(
        check(&v, "k8s01", "agents-clustermesh").1,
        "2 agent(s) report 1/1 clusters ready"
    );
    // No KVStoreMesh by default on 1.14: agents get the real endpoints.
    assert!(
        check(&v, "k8s01", "peers")
            .1
            .contains("k8s02 (https://k8s02.mesh.test:32380)")
    );
}

#[test]
fn drift_names_the_keys_that_differ() {
    let Some(m) = LiveMesh::start(2, "1.16.19") else {
        return;
    };
    code(&m.apply(bin(), &[]), 0);
    // Someone upgrades k8s01 by hand with other values.
    let values = m.dir.path().join("other.yaml");
    std::fs::write(
        &values,
        "cluster:\n  name: k8s01\n  id: 1\ndebug:\n  enabled: true\n",
    )
    .unwrap();
    let helm = m.helm.clone().unwrap();
    let out = std::process::Command::new(helm)
        .args(["upgrade", "cilium"])
        .arg(integration_tests::tools::mini_cilium_chart())
        .args(["--namespace", "kube-system", "--reuse-values", "-f"])
        .arg(&values)
        .arg("--kubeconfig")
        .arg(&m.clusters[0].kubeconfig)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, v) = m.status_json(bin(), &[]);
    let (o, why) = check(&v, "k8s01", "drift");
    assert_eq!(o, "warn");
    assert!(why.contains("debug.enabled (removed)"), "{why}");
    assert_eq!(check(&v, "k8s02", "drift").0, "pass");
}
