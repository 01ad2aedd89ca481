//! `cmesh test` stories on the lab's real datapath: Cilium's agents (eBPF, VXLAN between
//! clusters, kube-proxy replacement), CoreDNS, pods wired by Cilium's CNI plugin, and the
//! machine's real curl in the client pods (only the nginx and ingress-nginx images stand in;
//! docs/testing.md). Every part of the suite passing, each failure as the right failing cell (a
//! firewall between two clusters, a Service pruned in one cluster, an admission policy
//! stripping the Ingress annotation, nodes nobody can schedule on, a whole cluster lost), and
//! cleanup on every exit path (success, failure, timeout, Ctrl-C, SIGTERM, SIGKILL followed by
//! `--cleanup`, and `--keep`).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use integration_tests::cli;
use integration_tests::lab::ADMIN;
use integration_tests::mesh::{Mesh, check};
use serde_json::Value;

use super::{bin, cell, cells, json, nothing_left, set, test_json, until};

pub(crate) fn the_whole_suite_passes_and_cleans_up(m: &Mesh) {
    let v = test_json(m, &[], 0);
    assert_eq!(v["ok"], true);
    assert_eq!(cells(&v, "fail"), BTreeSet::new());
    assert_eq!(cells(&v, "skip"), BTreeSet::new());
    // 2 pod + 4 service + 4 affinity + 4 failover + 6 ingress.
    assert_eq!(v["cells"].as_array().unwrap().len(), 20);
    assert_eq!(cell(&v, "pod", "k8s01", Some("k8s02"))["answered"], 3);
    // The global Service answered from both clusters, from both clusters: real packets through
    // Cilium's load balancer and the VXLAN tunnel.
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
    // The article's lesson, seen in both clusters: without service-upstream the controller
    // has no local endpoint and answers 503; with it, Cilium sends to the other cluster.
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
    nothing_left(m);
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

pub(crate) fn an_ingress_that_loses_service_upstream(m: &Mesh) {
    // A policy engine in k8s02 strips the annotation from every Ingress.
    strip_service_upstream(m, 1);
    let v = test_json(m, &["--only", "ingress"], 1);
    assert_eq!(cells(&v, "fail"), set(&["ingress-with-upstream k8s02"]));
    let c = cell(&v, "ingress-with-upstream", "k8s02", None);
    assert_eq!(c["short"], "no annotation");
    assert!(c["detail"].as_str().unwrap().contains("503"), "{c}");
    assert!(c["fix"].as_str().unwrap().contains("webhooks"), "{c}");
    // Both clusters showed the article's 503 first.
    assert_eq!(v["lessons"].as_array().unwrap().len(), 2);
    nothing_left(m);
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
    nothing_left(m);
}

pub(crate) fn keep_and_a_killed_run_leave_leftovers_that_cleanup_removes(m: &Mesh) {
    let v = test_json(m, &["--only", "pod", "--keep"], 0);
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
    m.kube(0, async |c| {
        let api: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(c);
        api.delete("cmesh-test-mine", &Default::default())
            .await
            .map(|_| ())
    });
    m.untaint_nodes(0);
}

pub(crate) fn sigterm_cleans_up_too(m: &Mesh) {
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
    nothing_left(m);
    m.untaint_nodes(0);
}

pub(crate) fn a_timeout_in_setup_is_reported_and_cleaned_up(m: &Mesh) {
    // Nothing can be scheduled in k8s02: its pods stay Pending, while k8s01's start (their
    // network from the CNI plugin, readiness probes) well within the budget.
    m.taint_nodes(1);
    let v = test_json(m, &["--only", "pod", "--timeout", "40s"], 1);
    let errors = v["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{v:#}");
    assert!(
        errors[0]
            .as_str()
            .unwrap()
            .contains("k8s02: setup: timed out after 40s waiting for k8s02:"),
        "{errors:?}"
    );
    assert_eq!(
        cells(&v, "fail"),
        set(&["pod k8s01→k8s02", "pod k8s02→k8s01"])
    );
    assert_eq!(cell(&v, "pod", "k8s01", Some("k8s02"))["short"], "not run");
    for c in v["cleanup"].as_array().unwrap() {
        let o = c["outcome"].as_str().unwrap();
        assert!(o == "deleted" || o == "terminating", "{c}");
    }
    nothing_left(m);
    m.untaint_nodes(1);
}

pub(crate) fn usage_errors(m: &Mesh) {
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

pub(crate) fn three_clusters_pass_with_global_namespaces(m: &Mesh) {
    // The same run also writes its HTML report, which a real browser then reads back.
    let html = m.dir().join("report.html");
    let v = test_json(m, &["--report", html.to_str().unwrap()], 0);
    assert_eq!(cells(&v, "fail"), BTreeSet::new());
    let page = integration_tests::browser::read_back(&html);
    integration_tests::browser::assert_shows_test_report(&page, &v);
    // docs/img/test-report.png is this page: `CMESH_REPORT_SCREENSHOT=$PWD/docs/img/test-report.png`.
    if let Some(png) = std::env::var_os("CMESH_REPORT_SCREENSHOT") {
        integration_tests::browser::screenshot(&html, std::path::Path::new(&png), 1280, 1100);
    }
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
    nothing_left(m);
}

pub(crate) fn lint_live_flags_a_namespace_that_is_not_global_on_1_20(m: &Mesh) {
    // Leave a run's objects in place: three global Services per cluster in a namespace the
    // suite annotates as global.
    let r = m.test(bin(), &["--only", "service", "--keep", "-o", "json"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let ns = json(&r)["namespace"].as_str().unwrap().to_owned();
    let r = m.cmesh(bin(), &["lint", "-o", "json"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(json(&r)["examined"]["services"].as_u64().unwrap() >= 9);
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
    nothing_left(m);
}

pub(crate) fn ctrl_c_cleans_up_and_exits_130(m: &Mesh) {
    // The servers never become ready: the run waits in setup until interrupted.
    for i in 0..3 {
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
    until("namespaces in every cluster", || {
        (0..3).all(|i| !m.test_namespaces(i).is_empty())
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
    assert_eq!(cleanup, ["deleted", "deleted", "deleted"]);
    nothing_left(m);
    for i in 0..3 {
        m.untaint_nodes(i);
    }
}

/// Not in the reference article: k8s03 is lost as a whole (its nodes go: agents,
/// clustermesh-apiserver, every pod; its control plane still answers).
pub(crate) fn a_lost_cluster(m: &Mesh) {
    m.lab.lose_nodes(2);
    // status names the lost cluster from the others' side, through Cilium's own reports.
    let (r, v) = m.status_wait(bin(), "60s");
    assert_eq!(r.code, 1, "{}", r.stderr);
    for c in ["k8s01", "k8s02"] {
        let (o, why) = check(&v, c, "kvstoremesh");
        assert_eq!(o, "fail", "{c}: {why}");
        assert!(why.contains("k8s03"), "{c}: {why}");
        // With KVStoreMesh (1.16+), agents read remote state from their local KVStoreMesh,
        // which keeps serving its cached copy through a peer's outage by Cilium's design:
        // their own view stays ready, and status says so rather than inventing a failure.
        let (o, why) = check(&v, c, "agents-clustermesh");
        assert_eq!(o, "pass", "{c}: {why}");
    }
    // test: k8s03 cannot run anything; k8s01 and k8s02 reach each other, and their global
    // Services (and failover) answer from the remaining clusters, every request answered.
    let v = test_json(
        m,
        &["--only", "pod,service,failover", "--timeout", "40s"],
        1,
    );
    let errors = v["errors"].as_array().unwrap();
    assert!(
        errors
            .iter()
            .any(|e| e.as_str().unwrap().starts_with("k8s03: setup")),
        "{errors:?}"
    );
    let failing = cells(&v, "fail");
    // The cells that should not have failed, in full (what was asked, what answered, why).
    let unexpected: Vec<&Value> = v["cells"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["outcome"] == "fail" && c["from"] != "k8s03" && c["to"] != "k8s03")
        .collect();
    assert!(
        failing.iter().all(|c| c.contains("k8s03")),
        "only k8s03's cells fail: {failing:?}\n{unexpected:#?}\n{}",
        m.lab.logs(30)
    );
    for (from, to) in [("k8s01", "k8s02"), ("k8s02", "k8s01")] {
        assert_eq!(cell(&v, "pod", from, Some(to))["outcome"], "pass");
    }
    for from in ["k8s01", "k8s02"] {
        let c = cell(&v, "service", from, Some("k8s01"));
        assert_eq!(c["outcome"], "pass", "{c}");
        assert!(
            c["answers"]
                .as_object()
                .unwrap()
                .keys()
                .all(|k| k != "k8s03"),
            "{c}"
        );
        let f = cell(&v, "failover", from, None);
        assert_eq!(f["outcome"], "pass", "{f}");
        assert_eq!(f["answered"], f["requests"], "{f}");
    }
}

pub(crate) fn a_firewall_between_two_clusters_fails_exactly_their_cells(m: &Mesh) {
    // k8s01's nodes drop the VXLAN packets they send to k8s02's nodes. Replies travel the same
    // tunnel, so pod traffic between the two fails both ways; the clustermesh control plane
    // (etcd over TCP) is untouched, so each still sees the other's Services and nodes.
    m.lab.block(0, 1);
    let v = test_json(m, &["--only", "pod,service,failover"], 1);
    assert_eq!(
        cells(&v, "fail"),
        set(&[
            "pod k8s01→k8s02",
            "pod k8s02→k8s01",
            "service k8s01→k8s02",
            "service k8s02→k8s01",
            // echo-remote from k8s01 balances over k8s02 (dropped) and k8s03, and from k8s02
            // over k8s01 (dropped) and k8s03.
            "affinity-remote k8s01",
            "affinity-remote k8s02",
            // With one's replicas at 0, the requests that go to the other time out.
            "failover k8s01",
            "failover k8s02",
        ])
    );
    let p = cell(&v, "pod", "k8s01", Some("k8s02"));
    assert_eq!(p["short"], "timeout");
    assert!(p["detail"].as_str().unwrap().contains("are dropped"), "{p}");
    assert!(p["fix"].as_str().unwrap().contains("8472/udp"), "{p}");
    assert_eq!(cell(&v, "pod", "k8s01", Some("k8s03"))["outcome"], "pass");
    let s = cell(&v, "service", "k8s01", Some("k8s02"));
    assert!(
        s["detail"]
            .as_str()
            .unwrap()
            .contains("Connection timed out"),
        "{s}"
    );
    nothing_left(m);
    // The human table names the failing cells and their fixes.
    let r = m.test(bin(), &["--only", "pod"]);
    assert_eq!(r.code, 1);
    let row: Vec<&str> = r
        .stdout
        .lines()
        .find(|l| l.starts_with("k8s01  "))
        .unwrap_or_else(|| panic!("no k8s01 row:\n{}", r.stdout))
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(row[..3], ["k8s01", "·", "FAIL timeout"], "{}", r.stdout);
    assert!(row[3].starts_with("ok "), "{}", r.stdout);
    assert!(
        r.stdout
            .contains("  pod k8s01 → k8s02: packets from k8s01 to k8s02's pod"),
        "{}",
        r.stdout
    );
    // And JUnit: one failure per failing cell.
    let r = m.test(bin(), &["--only", "pod", "-o", "junit"]);
    assert_eq!(r.code, 1);
    assert_eq!(r.stdout.matches("<failure ").count(), 2, "{}", r.stdout);
    assert!(
        r.stdout.contains("name=\"pod k8s01 → k8s02\""),
        "{}",
        r.stdout
    );
    nothing_left(m);
    m.lab.unblock(0, 1);
}

pub(crate) fn a_global_service_missing_in_one_cluster(m: &Mesh) {
    // Something (a GitOps prune) deletes the Service `echo` in k8s02.
    let _pruner = m.prune_services(1, "cmesh-test-", "echo");
    let v = test_json(m, &["--only", "service,failover"], 1);
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
    nothing_left(m);
}

/// A MutatingAdmissionPolicy in cluster `i` that removes `service-upstream` from Ingresses.
pub(crate) fn strip_service_upstream(m: &Mesh, i: usize) {
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
    // Policies take effect once the API server has loaded them: wait until a dry-run Ingress
    // comes back without the annotation.
    let probe = serde_json::json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {
            "name": "policy-probe", "namespace": "default",
            "annotations": {"nginx.ingress.kubernetes.io/service-upstream": "true"},
        },
        "spec": {"defaultBackend": {"service": {"name": "probe", "port": {"number": 80}}}},
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stripped = m.kube(i, async |c| {
            let api: kube::Api<k8s_openapi::api::networking::v1::Ingress> =
                kube::Api::namespaced(c, "default");
            let ing: k8s_openapi::api::networking::v1::Ingress =
                serde_json::from_value(probe.clone()).expect("probe");
            let pp = kube::api::PostParams {
                dry_run: true,
                ..Default::default()
            };
            let got = api.create(&pp, &ing).await?;
            Ok(!got
                .metadata
                .annotations
                .unwrap_or_default()
                .contains_key("nginx.ingress.kubernetes.io/service-upstream"))
        });
        if stripped {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the mutating policy is not in force"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
