//! `cmesh test` end to end: the real cmesh binary against fake clusters whose data path is
//! simulated (crates/integration-tests/src/kube_api/scenario.rs), after a real `cmesh apply`
//! with helm. Every part of the suite on two and three clusters, each injected failure as the
//! right failing cell, and cleanup on every exit path (success, failure, timeout, Ctrl-C,
//! SIGKILL followed by `--cleanup`, and `--keep`).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use integration_tests::cli::{self, Run};
use integration_tests::kube_api::scenario::install_ingress_nginx;
use integration_tests::live::LiveMesh;
use serde_json::Value;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_cmesh-under-test"))
}

fn json(r: &Run) -> Value {
    serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("{e}\nstdout:\n{}\nstderr:\n{}", r.stdout, r.stderr))
}

/// Runs `cmesh test args -o json`, expecting exit `code`, and returns the report.
#[track_caller]
fn test_json(m: &LiveMesh, args: &[&str], code: i32) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let r = m.test(bin(), &all);
    assert_eq!(r.code, code, "{}\n{}", r.stdout, r.stderr);
    json(&r)
}

/// `check from[→to]` of every cell with `outcome`.
fn cells(v: &Value, outcome: &str) -> BTreeSet<String> {
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

fn set(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

fn cell<'a>(v: &'a Value, check: &str, from: &str, to: Option<&str>) -> &'a Value {
    v["cells"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == check && c["from"] == from && c["to"].as_str() == to)
        .unwrap_or_else(|| panic!("no cell {check} {from} {to:?}"))
}

/// No test namespace is left in any cluster.
#[track_caller]
fn nothing_left(m: &LiveMesh) {
    for i in 0..m.clusters.len() {
        assert_eq!(
            m.test_namespaces(i),
            Vec::<String>::new(),
            "leftovers in cluster {i}"
        );
    }
}

#[test]
fn two_clusters_the_whole_suite_passes_and_cleans_up() {
    let Some(m) = LiveMesh::meshed(bin(), 2, "1.16.19") else {
        return;
    };
    for c in &m.clusters {
        install_ingress_nginx(&c.state, "nginx");
    }
    let v = test_json(&m, &[], 0);
    assert_eq!(v["ok"], true);
    assert_eq!(cells(&v, "fail"), BTreeSet::new());
    assert_eq!(cells(&v, "skip"), BTreeSet::new());
    // 2 pod + 4 service + 4 affinity + 4 failover + 6 ingress.
    assert_eq!(v["cells"].as_array().unwrap().len(), 20);
    assert_eq!(cell(&v, "pod", "k8s01", Some("k8s02"))["answered"], 3);
    // The global Service answered from both clusters, from both clusters.
    for (from, to) in [
        ("k8s01", "k8s01"),
        ("k8s01", "k8s02"),
        ("k8s02", "k8s01"),
        ("k8s02", "k8s02"),
    ] {
        let c = cell(&v, "service", from, Some(to));
        assert!(c["answers"][to].as_u64().unwrap() > 0, "{c}");
    }
    // Failover: with k8s01 at 0, only k8s02 answers, and every request is answered.
    let f = cell(&v, "failover", "k8s01", None);
    assert_eq!(f["answers"], serde_json::json!({"k8s02": 16}));
    // The article's lesson, seen in both clusters.
    assert_eq!(
        cell(&v, "ingress-without-upstream", "k8s02", None)["short"],
        "503 (expected)"
    );
    assert_eq!(v["lessons"].as_array().unwrap().len(), 2);
    assert_eq!(
        cell(&v, "ingress-with-upstream", "k8s02", None)["answers"],
        serde_json::json!({"k8s01": 16})
    );
    let cleanup: Vec<&str> = v["cleanup"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(cleanup, ["deleted", "deleted"]);
    nothing_left(&m);
    // What it created carried the run's labels: the namespace create request was made.
    let ns = v["namespace"].as_str().unwrap();
    assert!(
        m.clusters[0]
            .requests()
            .iter()
            .any(|q| q.starts_with("POST /api/v1/namespaces")),
        "{ns}"
    );
}

#[test]
fn three_clusters_on_1_20_pass_with_global_namespaces() {
    let Some(m) = LiveMesh::meshed(bin(), 3, "1.20.0") else {
        return;
    };
    install_ingress_nginx(&m.clusters[2].state, "nginx");
    let v = test_json(&m, &[], 0);
    assert_eq!(cells(&v, "fail"), BTreeSet::new());
    let pods: Vec<&Value> = v["cells"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["check"] == "pod")
        .collect();
    assert_eq!(pods.len(), 6, "the full N×(N−1) matrix");
    // Ingress exists only in k8s03: the other two are skipped, with the reason.
    assert_eq!(
        cells(&v, "skip"),
        set(&[
            "ingress-baseline k8s01",
            "ingress-baseline k8s02",
            "ingress-with-upstream k8s01",
            "ingress-with-upstream k8s02",
            "ingress-without-upstream k8s01",
            "ingress-without-upstream k8s02",
        ])
    );
    let f = cell(&v, "failover", "k8s02", None);
    let answers = f["answers"].as_object().unwrap();
    assert!(
        answers.contains_key("k8s01") && answers.contains_key("k8s03"),
        "{f}"
    );
    nothing_left(&m);
}

#[test]
fn lint_live_flags_a_namespace_that_is_not_global_on_1_20() {
    let Some(m) = LiveMesh::meshed(bin(), 2, "1.20.0") else {
        return;
    };
    // Leave a run's objects in place: three global Services per cluster in a namespace the
    // suite annotates as global.
    let r = m.test(bin(), &["--only", "service", "--keep", "-o", "json"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let ns = json(&r)["namespace"].as_str().unwrap().to_owned();
    let r = m.cmesh(bin(), &["lint", "-o", "json"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(json(&r)["examined"]["services"].as_u64().unwrap() >= 6);
    // Turn k8s02's copy of the namespace non-global: lint flags the three Services there.
    m.clusters[1].state.merge_patch(
        "",
        "namespaces",
        "",
        &ns,
        serde_json::json!({"metadata": {"annotations": {"clustermesh.cilium.io/global": "false"}}}),
    );
    let r = m.cmesh(bin(), &["lint", "-o", "json"]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let v = json(&r);
    let l401: Vec<&Value> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["code"] == "L401")
        .collect();
    assert_eq!(l401.len(), 3, "{v:#}");
    assert!(
        l401.iter()
            .all(|f| f["clusters"] == serde_json::json!(["k8s02"]))
    );
    assert!(
        l401.iter().all(|f| f["at"][0]["cluster"] == "k8s02"),
        "{v:#}"
    );
    let r = m.test(bin(), &["--cleanup"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    nothing_left(&m);
}

#[test]
fn a_blocked_pair_fails_exactly_its_cells() {
    let Some(m) = LiveMesh::meshed(bin(), 3, "1.19.6") else {
        return;
    };
    // A firewall drops pod traffic from k8s01 to k8s02 (one direction).
    m.sim.block("k8s01", "k8s02");
    let v = test_json(&m, &["--only", "pod,service,failover"], 1);
    assert_eq!(
        cells(&v, "fail"),
        set(&[
            "pod k8s01→k8s02",
            "service k8s01→k8s02",
            // echo-remote from k8s01 balances over k8s02 (dropped) and k8s03.
            "affinity-remote k8s01",
            // With k8s01's replicas at 0, the requests that go to k8s02 time out.
            "failover k8s01",
        ])
    );
    let p = cell(&v, "pod", "k8s01", Some("k8s02"));
    assert_eq!(p["short"], "timeout");
    assert!(p["detail"].as_str().unwrap().contains("are dropped"), "{p}");
    assert!(p["fix"].as_str().unwrap().contains("8472/udp"), "{p}");
    assert_eq!(cell(&v, "pod", "k8s02", Some("k8s01"))["outcome"], "pass");
    let s = cell(&v, "service", "k8s01", Some("k8s02"));
    assert!(
        s["detail"]
            .as_str()
            .unwrap()
            .contains("Connection timed out"),
        "{s}"
    );
    nothing_left(&m);
    // The human table names the failing cells and their fixes.
    let r = m.test(bin(), &["--only", "pod"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stdout.contains("k8s01  ·         FAIL timeout"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("  pod k8s01 → k8s02: packets from k8s01 to k8s02's pod"),
        "{}",
        r.stdout
    );
    // And JUnit: one failure per failing cell.
    let r = m.test(bin(), &["--only", "pod", "-o", "junit"]);
    assert_eq!(r.code, 1);
    assert_eq!(r.stdout.matches("<failure ").count(), 1, "{}", r.stdout);
    assert!(
        r.stdout.contains("name=\"pod k8s01 → k8s02\""),
        "{}",
        r.stdout
    );
    nothing_left(&m);
}

#[test]
fn a_global_service_missing_in_one_cluster() {
    let Some(m) = LiveMesh::meshed(bin(), 3, "1.16.19") else {
        return;
    };
    // Something (a GitOps prune) deletes the Service `echo` in k8s02.
    m.clusters[1].sim(|s| {
        s.delete_services.insert("echo".into());
    });
    let v = test_json(&m, &["--only", "service,failover"], 1);
    assert_eq!(
        cells(&v, "fail"),
        set(&[
            "service k8s01→k8s02",
            "service k8s03→k8s02",
            "service k8s02→k8s01",
            "service k8s02→k8s02",
            "service k8s02→k8s03",
            "failover k8s02",
        ])
    );
    let c = cell(&v, "service", "k8s02", Some("k8s01"));
    assert_eq!(c["short"], "no DNS");
    assert!(
        c["fix"].as_str().unwrap().contains("must exist in k8s02"),
        "{c}"
    );
    let c = cell(&v, "service", "k8s01", Some("k8s02"));
    assert!(
        c["detail"]
            .as_str()
            .unwrap()
            .contains("reached k8s02's backends"),
        "{c}"
    );
    assert!(
        c["fix"]
            .as_str()
            .unwrap()
            .contains("k8s02 must share the Service"),
        "{c}"
    );
    nothing_left(&m);
}

#[test]
fn an_ingress_that_loses_service_upstream() {
    let Some(m) = LiveMesh::meshed(bin(), 2, "1.16.19") else {
        return;
    };
    for c in &m.clusters {
        install_ingress_nginx(&c.state, "nginx");
    }
    // A policy engine in k8s02 strips the annotation from every Ingress.
    m.clusters[1].sim(|s| {
        s.strip_ingress_annotations
            .insert("nginx.ingress.kubernetes.io/service-upstream".into());
    });
    let v = test_json(&m, &["--only", "ingress"], 1);
    assert_eq!(cells(&v, "fail"), set(&["ingress-with-upstream k8s02"]));
    let c = cell(&v, "ingress-with-upstream", "k8s02", None);
    assert_eq!(c["short"], "no annotation");
    assert!(c["detail"].as_str().unwrap().contains("503"), "{c}");
    assert!(c["fix"].as_str().unwrap().contains("webhooks"), "{c}");
    // Both clusters showed the article's 503 first.
    assert_eq!(v["lessons"].as_array().unwrap().len(), 2);
    nothing_left(&m);
    let r = m.test(bin(), &["--only", "ingress"]);
    assert!(
        r.stdout.contains("the reference article's lesson"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("k8s02    ok 16/16  503 (expected)            FAIL no annotation"),
        "{}",
        r.stdout
    );
}

#[test]
fn a_timeout_in_setup_is_reported_and_cleaned_up() {
    let Some(m) = LiveMesh::meshed(bin(), 2, "1.16.19") else {
        return;
    };
    // k8s02's client pod never becomes ready.
    m.clusters[1].sim(|s| {
        s.not_ready.insert("client".into());
    });
    let v = test_json(&m, &["--only", "pod", "--timeout", "1s"], 1);
    let errors = v["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{v:#}");
    assert!(
        errors[0]
            .as_str()
            .unwrap()
            .contains("k8s02: setup: timed out after 1s waiting for k8s02: client pod ready"),
        "{errors:?}"
    );
    assert_eq!(
        cells(&v, "fail"),
        set(&["pod k8s01→k8s02", "pod k8s02→k8s01"])
    );
    assert_eq!(cell(&v, "pod", "k8s01", Some("k8s02"))["short"], "not run");
    nothing_left(&m);
}

/// Waits until `cond` holds (the run under test got that far).
fn until(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ctrl_c_cleans_up_and_exits_130() {
    let Some(m) = LiveMesh::meshed(bin(), 2, "1.20.0") else {
        return;
    };
    // The servers never become ready: the run waits in setup until interrupted.
    for c in &m.clusters {
        c.sim(|s| {
            s.not_ready.insert("echo".into());
        });
    }
    let helm = m.helm.as_ref().unwrap().display().to_string();
    let child = cli::spawn(
        bin(),
        m.dir.path(),
        &["test", "--timeout", "60s", "--poll", "50ms", "-o", "json"],
        &[("CMESH_HELM", helm.as_str())],
    );
    let pid = child.id();
    until("namespaces in both clusters", || {
        (0..2).all(|i| !m.test_namespaces(i).is_empty())
    });
    // What a run creates is labelled with its ID, and on 1.20 its namespace is global.
    let ns = m.test_namespaces(0).remove(0);
    let obj = m.clusters[0]
        .state
        .get("", "v1", "namespaces", "", &ns)
        .unwrap();
    assert_eq!(
        obj["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "cmesh"
    );
    assert_eq!(
        obj["metadata"]["labels"]["cmesh.io/test-run"],
        ns.trim_start_matches("cmesh-test-")
    );
    assert_eq!(
        obj["metadata"]["annotations"]["clustermesh.cilium.io/global"],
        "true"
    );
    cli::signal(pid, "INT");
    let r = cli::wait(child);
    assert_eq!(r.code, 130, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("interrupted: cleaning up"),
        "{}",
        r.stderr
    );
    let v = json(&r);
    assert_eq!(v["interrupted"], true);
    assert_eq!(v["ok"], false);
    let cleanup: Vec<&str> = v["cleanup"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(cleanup, ["deleted", "deleted"]);
    nothing_left(&m);
}

#[test]
fn sigterm_cleans_up_too() {
    let Some(m) = LiveMesh::meshed(bin(), 2, "1.16.19") else {
        return;
    };
    m.clusters[0].sim(|s| {
        s.not_ready.insert("echo".into());
    });
    let helm = m.helm.as_ref().unwrap().display().to_string();
    let child = cli::spawn(
        bin(),
        m.dir.path(),
        &["test", "--timeout", "60s", "--poll", "50ms"],
        &[("CMESH_HELM", helm.as_str())],
    );
    let pid = child.id();
    until("namespaces", || {
        (0..2).all(|i| !m.test_namespaces(i).is_empty())
    });
    cli::signal(pid, "TERM");
    let r = cli::wait(child);
    assert_eq!(r.code, 130, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("INTERRUPTED"), "{}", r.stdout);
    nothing_left(&m);
}

#[test]
fn keep_and_a_killed_run_leave_leftovers_that_cleanup_removes() {
    let Some(m) = LiveMesh::meshed(bin(), 2, "1.16.19") else {
        return;
    };
    let v = test_json(&m, &["--only", "pod", "--keep"], 0);
    let kept = v["namespace"].as_str().unwrap().to_owned();
    assert_eq!(v["cleanup"][0]["outcome"], "kept");
    assert_eq!(m.test_namespaces(0), std::slice::from_ref(&kept));
    // A run killed outright (no chance to clean up).
    m.clusters[0].sim(|s| {
        s.not_ready.insert("echo".into());
    });
    let helm = m.helm.as_ref().unwrap().display().to_string();
    let child = cli::spawn(
        bin(),
        m.dir.path(),
        &["test", "--timeout", "60s", "--poll", "50ms"],
        &[("CMESH_HELM", helm.as_str())],
    );
    let pid = child.id();
    until("a second namespace", || {
        m.test_namespaces(0).len() == 2 && m.test_namespaces(1).len() == 2
    });
    cli::signal(pid, "KILL");
    let _ = cli::wait(child);
    assert_eq!(m.test_namespaces(0).len(), 2);
    // Something else in a test-like namespace without cmesh's labels is not touched.
    {
        let res = integration_tests::kube_api::store::resource("", "v1", "namespaces").unwrap();
        m.clusters[0]
            .state
            .store
            .lock()
            .unwrap()
            .create(
                res,
                "",
                serde_json::json!({"metadata": {"name": "cmesh-test-mine"}}),
            )
            .unwrap();
    }
    let r = m.test(bin(), &["--cleanup"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.stdout.matches(" deleted").count(), 4, "{}", r.stdout);
    assert!(
        r.stdout.contains(&format!("k8s01    {kept}  deleted")),
        "{}",
        r.stdout
    );
    assert_eq!(m.test_namespaces(0), ["cmesh-test-mine"]);
    assert!(m.test_namespaces(1).is_empty());
    let r = m.test(bin(), &["--cleanup"]);
    assert_eq!(r.code, 0);
    assert_eq!(r.stdout, "no leftovers of cmesh test in k8s01, k8s02\n");
}

#[test]
fn usage_errors() {
    let Some(m) = LiveMesh::start(2, "1.16.19") else {
        return;
    };
    let r = m.test(bin(), &["--cluster", "k8s01"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("needs two clusters or more"),
        "{}",
        r.stderr
    );
    let r = m.test(bin(), &["--cluster", "nope", "--cluster", "k8s01"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("unknown cluster `nope`"), "{}", r.stderr);
    let r = m.test(bin(), &["--keep", "--cleanup"]);
    assert_eq!(r.code, 2);
}
