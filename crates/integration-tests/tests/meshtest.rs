//! `cmesh test` end to end on the lab: real API servers, kwok pods, the real Cilium chart and
//! Cilium's clustermesh-apiserver and KVStoreMesh carrying Services and nodes between the
//! clusters; only the packets are the lab's (its curl, src/bin/lab-curl.rs). Every part of the
//! suite on two and three clusters, each failure as the right failing cell (a firewall between
//! two clusters, a Service pruned in one cluster, an admission policy stripping the Ingress
//! annotation, nodes nobody can schedule on), and cleanup on every exit path (success,
//! failure, timeout, Ctrl-C, SIGTERM, SIGKILL followed by `--cleanup`, and `--keep`).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use integration_tests::cli::{self, Run};
use integration_tests::lab::ADMIN;
use integration_tests::mesh::Mesh;
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
fn test_json(m: &Mesh, args: &[&str], code: i32) -> Value {
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

/// No test namespace is left in any cluster, once the namespace controller has finished the
/// deletions cmesh asked for (a namespace whose pods kwok is still finalising is
/// `Terminating` for a few seconds).
#[track_caller]
fn nothing_left(m: &Mesh) {
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

#[test]
fn two_clusters_the_whole_suite_passes_and_cleans_up() {
    let Some(m) = Mesh::meshed(bin(), 2, "1.16.19") else {
        return;
    };
    for i in 0..2 {
        m.install_ingress_nginx(i, "nginx");
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
    // The API server's audit log has cmesh creating the run's namespace, and deleting it.
    let ns = v["namespace"].as_str().unwrap();
    let writes = m.lab.clusters[0].writes(ADMIN);
    // (The audit log names a namespace's own delete with it as its namespace too.)
    for w in [
        format!("create namespaces /{ns}"),
        format!("delete namespaces {ns}/{ns}"),
    ] {
        assert!(writes.contains(&w), "{w} not in {writes:?}");
    }
}

#[test]
fn three_clusters_on_1_20_pass_with_global_namespaces() {
    let Some(m) = Mesh::meshed(bin(), 3, "1.20.0") else {
        return;
    };
    m.install_ingress_nginx(2, "nginx");
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
    let Some(m) = Mesh::meshed(bin(), 2, "1.20.0") else {
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
    m.kube(1, async |c| {
        let api: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(c);
        let patch = serde_json::json!({"metadata": {"annotations": {"clustermesh.cilium.io/global": "false"}}});
        api.patch(&ns, &Default::default(), &kube::api::Patch::Merge(&patch))
            .await
            .map(|_| ())
    });
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
    let Some(m) = Mesh::meshed(bin(), 3, "1.16.19") else {
        return;
    };
    // A firewall drops pod traffic from k8s01 to k8s02 (one direction).
    m.lab.block(0, 1);
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
    let Some(m) = Mesh::meshed(bin(), 3, "1.16.19") else {
        return;
    };
    // Something (a GitOps prune) deletes the Service `echo` in k8s02.
    let _pruner = m.prune_services(1, "cmesh-test-", "echo");
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
    let Some(m) = Mesh::meshed(bin(), 2, "1.16.19") else {
        return;
    };
    for i in 0..2 {
        m.install_ingress_nginx(i, "nginx");
    }
    // A policy engine in k8s02 strips the annotation from every Ingress.
    strip_service_upstream(&m, 1);
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
    let Some(m) = Mesh::meshed(bin(), 2, "1.16.19") else {
        return;
    };
    // Nothing can be scheduled in k8s02: its pods stay Pending.
    m.taint_nodes(1);
    let v = test_json(&m, &["--only", "pod", "--timeout", "3s"], 1);
    let errors = v["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{v:#}");
    assert!(
        errors[0]
            .as_str()
            .unwrap()
            .contains("k8s02: setup: timed out after 3s waiting for k8s02:"),
        "{errors:?}"
    );
    assert_eq!(
        cells(&v, "fail"),
        set(&["pod k8s01→k8s02", "pod k8s02→k8s01"])
    );
    assert_eq!(cell(&v, "pod", "k8s01", Some("k8s02"))["short"], "not run");
    // With a 3s budget the namespaces may still be terminating when cmesh exits; it says so.
    for c in v["cleanup"].as_array().unwrap() {
        let o = c["outcome"].as_str().unwrap();
        assert!(o == "deleted" || o == "terminating", "{c}");
    }
    nothing_left(&m);
}

/// A MutatingAdmissionPolicy in cluster `i` that removes `service-upstream` from Ingresses.
fn strip_service_upstream(m: &Mesh, i: usize) {
    m.apply_objects(
        i,
        &[
            serde_json::json!({
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "MutatingAdmissionPolicy",
                "metadata": {"name": "strip-service-upstream"},
                "spec": {
                    "failurePolicy": "Fail",
                    "reinvocationPolicy": "Never",
                    "matchConstraints": {"resourceRules": [{
                        "apiGroups": ["networking.k8s.io"], "apiVersions": ["v1"],
                        "operations": ["CREATE", "UPDATE"], "resources": ["ingresses"],
                    }]},
                    "matchConditions": [{
                        "name": "annotated",
                        "expression": "has(object.metadata.annotations) && 'nginx.ingress.kubernetes.io/service-upstream' in object.metadata.annotations",
                    }],
                    "mutations": [{
                        "patchType": "JSONPatch",
                        "jsonPatch": {"expression": "[JSONPatch{op: \"remove\", path: \"/metadata/annotations/nginx.ingress.kubernetes.io~1service-upstream\"}]"},
                    }],
                },
            }),
            serde_json::json!({
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "MutatingAdmissionPolicyBinding",
                "metadata": {"name": "strip-service-upstream"},
                "spec": {"policyName": "strip-service-upstream"},
            }),
        ],
    );
    // Policies take effect once the API server has loaded them.
    std::thread::sleep(Duration::from_secs(2));
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
    let Some(m) = Mesh::meshed(bin(), 2, "1.20.0") else {
        return;
    };
    // The servers never become ready: the run waits in setup until interrupted.
    for i in 0..2 {
        m.taint_nodes(i);
    }
    let helm = m.helm.display().to_string();
    let child = cli::spawn(
        bin(),
        m.dir(),
        &["test", "--timeout", "60s", "--poll", "50ms", "-o", "json"],
        &[("CMESH_HELM", helm.as_str())],
    );
    let pid = child.id();
    until("namespaces in both clusters", || {
        (0..2).all(|i| !m.test_namespaces(i).is_empty())
    });
    // What a run creates is labelled with its ID, and on 1.20 its namespace is global.
    let ns = m.test_namespaces(0).remove(0);
    let obj = m.kube(0, async |c| {
        let api: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(c);
        let n = api.get(&ns).await?;
        Ok(serde_json::to_value(n).unwrap())
    });
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
    let Some(m) = Mesh::meshed(bin(), 2, "1.16.19") else {
        return;
    };
    m.taint_nodes(0);
    let helm = m.helm.display().to_string();
    let child = cli::spawn(
        bin(),
        m.dir(),
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
    let Some(m) = Mesh::meshed(bin(), 2, "1.16.19") else {
        return;
    };
    let v = test_json(&m, &["--only", "pod", "--keep"], 0);
    let kept = v["namespace"].as_str().unwrap().to_owned();
    assert_eq!(v["cleanup"][0]["outcome"], "kept");
    assert_eq!(m.test_namespaces(0), std::slice::from_ref(&kept));
    // A run killed outright (no chance to clean up).
    m.taint_nodes(0);
    let helm = m.helm.display().to_string();
    let child = cli::spawn(
        bin(),
        m.dir(),
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
    m.apply_objects(
        0,
        &[serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "cmesh-test-mine"}})],
    );
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
    let Some(m) = Mesh::start(&integration_tests::mesh::MeshOptions::new(2, "1.16.19")) else {
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
