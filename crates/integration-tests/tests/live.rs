//! `apply` and `status` end to end on the lab (crates/integration-tests/src/lab): the real cmesh
//! binary and the real helm install the real Cilium chart into real Kubernetes API servers;
//! Cilium's own clustermesh-apiserver and KVStoreMesh then run from what the chart created, so
//! a peer reported ready is Cilium connecting with cmesh's configuration. Faults go through the
//! same path and must fail the right check with the right cause.

use std::path::Path;

use integration_tests::cli::Run;
use integration_tests::lab::{ADMIN, name};
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

#[test]
fn one_apply_finishes_base_everywhere_before_mesh_anywhere() {
    let Some(m) = Mesh::start(&MeshOptions::new(3, "1.16.19")) else {
        return;
    };
    let r = m.apply(bin(), &[]);
    code(&m, &r, 0);
    let lines: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.contains("  helm  "))
        .collect();
    assert_eq!(lines.len(), 6, "{}", r.stderr);
    let last_base = lines.iter().rposition(|l| l.contains("  base  ")).unwrap();
    let first_mesh = lines.iter().position(|l| l.contains("  mesh  ")).unwrap();
    assert!(last_base < first_mesh, "{}", r.stderr);
    let (r, _) = m.status_wait(bin(), "90s");
    code(&m, &r, 0);
}

#[test]
fn a_cluster_down_is_reported_and_the_others_proceed() {
    let Some(m) = Mesh::start(&MeshOptions::new(3, "1.20.0")) else {
        return;
    };
    // k8s03's API server is gone: connections are refused.
    m.lab.clusters[2].stop("kube-apiserver");
    let r = m.apply(bin(), &["--request-timeout", "3s"]);
    code(&m, &r, 7);
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
    let (r, v) = m.status_json(bin(), &["--request-timeout", "3s"]);
    code(&m, &r, 1);
    assert_eq!(check(&v, "k8s03", "api").0, "fail");
    assert_eq!(check(&v, "k8s01", "api").0, "pass");
}

#[test]
fn an_unreachable_cluster_times_out_alone() {
    let Some(m) = Mesh::start(&MeshOptions::new(2, "1.20.0")) else {
        return;
    };
    code(&m, &m.apply(bin(), &["--phase", "base"]), 0);
    // k8s02 drops off the network: packets vanish, nothing is refused.
    m.lab.set_link(1, false);
    let started = std::time::Instant::now();
    let (r, v) = m.status_json(bin(), &["--request-timeout", "2s"]);
    code(&m, &r, 1);
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    assert_eq!(check(&v, "k8s02", "api").0, "fail");
    assert_eq!(check(&v, "k8s01", "api").0, "pass");
    m.lab.set_link(1, true);
}

/// A ValidatingAdmissionPolicy that denies `expression`'s objects: the API server refuses
/// them as a policy engine would.
fn deny(m: &Mesh, i: usize, name: &str, resources: &str, operations: &str, expression: &str) {
    let policy = serde_json::json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": ["*"], "apiVersions": ["*"],
                "operations": operations.split(',').collect::<Vec<_>>(),
                "resources": [resources],
            }]},
            "validations": [{"expression": expression, "message": format!("denied by policy {name}")}],
        },
    });
    let binding = serde_json::json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"]},
    });
    m.kube(i, async |c| {
        for (kind, obj) in [
            ("ValidatingAdmissionPolicy", policy),
            ("ValidatingAdmissionPolicyBinding", binding),
        ] {
            let ar = kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
                "admissionregistration.k8s.io",
                "v1",
                kind,
            ));
            let api: kube::Api<kube::api::DynamicObject> = kube::Api::all_with(c.clone(), &ar);
            api.patch(
                name,
                &kube::api::PatchParams::apply("cmesh-test").force(),
                &kube::api::Patch::Apply(&obj),
            )
            .await?;
        }
        Ok(())
    });
    // Policies take effect once the API server has loaded them.
    std::thread::sleep(std::time::Duration::from_secs(2));
}

#[test]
fn admission_denials_fail_the_step_they_hit() {
    let Some(m) = Mesh::start(&MeshOptions::new(2, "1.16.19")) else {
        return;
    };
    deny(
        &m,
        0,
        "no-cilium-ca",
        "secrets",
        "CREATE,UPDATE",
        "object.metadata.name != 'cilium-ca'",
    );
    let r = m.apply(bin(), &["--phase", "base"]);
    code(&m, &r, 7);
    assert!(
        r.stdout.contains("k8s01 (base) failed at secrets")
            && r.stdout.contains("denied by policy no-cilium-ca"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("k8s02 (base) failed"), "{}", r.stdout);

    // k8s02 refuses the clustermesh-apiserver Deployment: helm fails mid-way, with its stderr.
    deny(
        &m,
        1,
        "no-clustermesh",
        "deployments",
        "CREATE",
        "object.metadata.name != 'clustermesh-apiserver'",
    );
    let r = m.apply(bin(), &["--cluster", "k8s02"]);
    code(&m, &r, 7);
    assert!(
        r.stdout.contains("k8s02 (mesh) failed at helm")
            && r.stdout.contains("denied by policy no-clustermesh")
            && r.stdout.contains("`helm upgrade --install cilium"),
        "{}",
        r.stdout
    );
    let (_, v) = m.status_json(bin(), &["--cluster", "k8s02"]);
    assert_eq!(check(&v, "k8s02", "clustermesh-apiserver").0, "fail");
}

#[test]
fn dry_run_plans_and_changes_nothing() {
    let Some(m) = Mesh::start(&MeshOptions::new(2, "1.16.19")) else {
        return;
    };
    code(&m, &m.apply(bin(), &["--phase", "base"]), 0);
    let before: Vec<usize> = m
        .lab
        .clusters
        .iter()
        .map(|c| c.writes(ADMIN).len())
        .collect();
    let r = m.apply(bin(), &["--phase", "mesh", "--dry-run"]);
    code(&m, &r, 0);
    assert!(
        r.stdout.contains("k8s01 (phase mesh):")
            && r.stdout.contains("helm:    upgrade the current release")
            && r.stdout.contains("+ clustermesh.config.clusters")
            && r.stdout.contains("restart: yes"),
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
        .lab
        .clusters
        .iter()
        .map(|c| c.writes(ADMIN).len())
        .collect();
    assert_eq!(
        before,
        after,
        "a dry run wrote: {:?}",
        m.lab.clusters[0].writes(ADMIN)
    );
}

#[test]
fn drift_names_the_keys_that_differ() {
    let Some(m) = Mesh::start(&MeshOptions::new(2, "1.20.0")) else {
        return;
    };
    code(&m, &m.apply(bin(), &[]), 0);
    let chart = m.cilium.chart().display().to_string();
    let out = m.helm(
        0,
        &[
            "upgrade",
            "cilium",
            &chart,
            "--namespace",
            "kube-system",
            "--reuse-values",
            "--set",
            "debug.enabled=true",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, v) = m.status_json(bin(), &[]);
    let (o, why) = check(&v, "k8s01", "drift");
    assert_eq!(o, "warn");
    assert!(
        why.contains("debug.enabled (set on the cluster only)"),
        "{why}"
    );
    assert_eq!(check(&v, "k8s02", "drift").0, "pass");
    // And `apply` puts it back, which is an upgrade again (not a skip).
    let r = m.apply(bin(), &["--cluster", "k8s01"]);
    code(&m, &r, 0);
    assert!(
        r.stderr.contains("mesh  helm  ok: upgraded"),
        "{}",
        r.stderr
    );
}

#[test]
fn cilium_1_14_agents_answer_through_cilium_status() {
    let Some(m) = Mesh::start(&MeshOptions::new(2, "1.14.2")) else {
        return;
    };
    code(&m, &m.apply(bin(), &[]), 0);
    let (r, v) = m.status_wait(bin(), "90s");
    code(&m, &r, 0);
    assert_eq!(
        check(&v, "k8s01", "agents-clustermesh").1,
        "2 agent(s) report 1/1 clusters ready"
    );
    // No KVStoreMesh by default on 1.14: the agents dial the peers themselves.
    assert!(
        check(&v, "k8s01", "peers")
            .1
            .contains(&format!("k8s02 (https://{}:32380)", m.lab.clusters[1].ip)),
        "{v}"
    );
}
