//! `apply` and `status` stories: the real cmesh binary and the real helm install the real
//! Cilium chart; Cilium's own agents, operator, clustermesh-apiserver and KVStoreMesh then run
//! from what the chart created, so a peer reported ready is Cilium connecting with cmesh's
//! configuration.

use integration_tests::lab::{ADMIN, name};
use integration_tests::mesh::{Mesh, check};

use super::{ALL, all_pass, bin, code};

/// The UIDs of cluster `i`'s agent pods, sorted: they change when the agents restart, whoever
/// restarts them (the chart's rollout, or cmesh deleting the pods).
pub(crate) fn agent_pod_uids(m: &Mesh, i: usize) -> Vec<String> {
    m.kube(i, async |c| {
        let api: kube::Api<k8s_openapi::api::core::v1::Pod> =
            kube::Api::namespaced(c, "kube-system");
        let mut uids: Vec<String> = api
            .list(&kube::api::ListParams::default().labels("k8s-app=cilium"))
            .await?
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| p.metadata.uid)
            .collect();
        uids.sort();
        Ok(uids)
    })
}

/// The agents' DaemonSet generation on cluster `i`: it moves whenever their pod template
/// changes (a chart upgrade that touches it, or cmesh's restart).
pub(crate) fn agents_generation(m: &Mesh, i: usize) -> i64 {
    m.kube(i, async |c| {
        let api: kube::Api<k8s_openapi::api::apps::v1::DaemonSet> =
            kube::Api::namespaced(c, "kube-system");
        Ok(api.get("cilium").await?.metadata.generation.unwrap_or(0))
    })
}

/// Base, then status (what base cannot have yet), on a fresh lab.
pub(crate) fn base_alone(m: &Mesh) {
    let r = m.apply(bin(), &["--phase", "base"]);
    code(m, &r, 0);
    for c in (0..m.lab.clusters.len()).map(name) {
        let row = r
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("{c}    base ")))
            .unwrap_or_else(|| panic!("no {c} base row: {}", r.stdout));
        assert!(row.ends_with(" ok"), "{row}");
    }
    // The base phase creates no clustermesh-apiserver and no peers.
    let (r, v) = m.status_json(bin(), &[]);
    code(m, &r, 1);
    assert_eq!(
        check(&v, "k8s01", "agents"),
        ("pass", "DaemonSet cilium 1/1 ready")
    );
    assert_eq!(check(&v, "k8s01", "clustermesh-apiserver").0, "fail");
    assert_eq!(check(&v, "k8s01", "peers").0, "fail");
}

/// Mesh on top of base: the agents pick the new configuration up (rolled by the chart's own
/// template change or restarted by cmesh), every check passes, and a second apply changes and
/// restarts nothing.
pub(crate) fn mesh_after_base(m: &Mesh, version: &str) {
    let before = agents_generation(m, 0);
    let pods_before = agent_pod_uids(m, 0);
    let r = m.apply(bin(), &["--phase", "mesh"]);
    code(m, &r, 0);
    let rolled = agents_generation(m, 0);
    let restarted = agent_pod_uids(m, 0);
    // The agents read the mesh configuration only at start, so they must be restarted, and
    // exactly once: by the chart's upgrade when it changes their pod template, otherwise by
    // cmesh deleting their pods, which leaves the template (and so the generation) alone
    // (never both, which would cut traffic twice).
    assert!(
        restarted.iter().all(|u| !pods_before.contains(u)),
        "agents not restarted: {pods_before:?} -> {restarted:?}\n{}",
        r.stderr
    );
    if rolled == before + 1 {
        assert!(
            r.stderr
                .contains("mesh  restart  skip: the chart's upgrade already restarted every agent"),
            "{}",
            r.stderr
        );
    } else {
        assert_eq!(rolled, before, "{}", r.stderr);
        assert!(
            r.stderr.contains("k8s01  mesh  restart  ok:"),
            "{}",
            r.stderr
        );
    }
    let n = m.lab.clusters.len();
    let (r, v) = m.status_wait(bin(), "120s");
    code(m, &r, 0);
    all_pass(m, &v, n);
    let (_, why) = check(&v, "k8s01", "kvstoremesh");
    assert!(
        why.starts_with(&format!(
            "1 replica(s) report {0}/{0} remote clusters ready (k8s02 1 node",
            n - 1
        )),
        "{why}"
    );
    assert_eq!(
        check(&v, "k8s01", "agents-clustermesh").1,
        format!("1 agent(s) report {0}/{0} clusters ready", n - 1)
    );
    assert!(
        check(&v, "k8s02", "kvstoremesh-peers").1.contains(&format!(
            "k8s01 (https://{}:32379)",
            m.lab.clusters[0].node_ip()
        )),
        "{v}"
    );
    // A second apply changes nothing and restarts nothing.
    let r = m.apply(bin(), &["--phase", "mesh"]);
    code(m, &r, 0);
    assert!(r.stdout.contains("skip (no change)"), "{}", r.stdout);
    assert!(
        r.stderr
            .contains(&format!("mesh  helm  skip: no change (cilium-{version})")),
        "{}",
        r.stderr
    );
    assert_eq!(agent_pod_uids(m, 0), restarted);
    assert_eq!(agents_generation(m, 0), rolled);
    let r = m.cmesh(bin(), &["status"]);
    code(m, &r, 0);
    for c in (0..n).map(name) {
        assert!(
            r.stdout.contains(&format!("{c}: 14/14 checks pass")),
            "{}",
            r.stdout
        );
    }
}

/// A ValidatingAdmissionPolicy that denies `expression`'s objects: the API server refuses
/// them as a policy engine would.
pub(crate) fn deny(
    m: &Mesh,
    i: usize,
    name: &str,
    resources: &str,
    operations: &str,
    expression: &str,
    probe: &serde_json::Value,
) {
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
    // Policies take effect once the API server has loaded them: wait until it refuses `probe`.
    until_policy(m, i, name, probe, true);
}

/// Whether policy `name` refuses a server-side dry run creating `probe` in cluster `i`
/// (admission runs on dry runs; nothing is stored).
fn refused_by(m: &Mesh, i: usize, name: &str, probe: &serde_json::Value) -> bool {
    let obj: kube::api::DynamicObject = serde_json::from_value(probe.clone()).expect("probe");
    let gvk = kube::api::GroupVersionKind::try_from(obj.types.as_ref().expect("types"))
        .expect("probe gvk");
    let ns = obj.metadata.namespace.clone().unwrap_or_default();
    let want = format!("denied by policy {name}");
    m.kube(i, async |c| {
        let api: kube::Api<kube::api::DynamicObject> =
            kube::Api::namespaced_with(c, &ns, &kube::api::ApiResource::from_gvk(&gvk));
        let pp = kube::api::PostParams {
            dry_run: true,
            ..Default::default()
        };
        Ok(match api.create(&pp, &obj).await {
            Err(e) => e.to_string().contains(&want),
            Ok(_) => false,
        })
    })
}

/// Polls [`refused_by`] until it says `refused`.
fn until_policy(m: &Mesh, i: usize, name: &str, probe: &serde_json::Value, refused: bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while refused_by(m, i, name, probe) != refused {
        assert!(
            std::time::Instant::now() < deadline,
            "policy {name} in cluster {i}: still {}",
            if refused { "not in force" } else { "in force" }
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// Lifts a [`deny`].
pub(crate) fn allow(m: &Mesh, i: usize, name: &str, probe: &serde_json::Value) {
    m.kube(i, async |c| {
        for kind in [
            "ValidatingAdmissionPolicyBinding",
            "ValidatingAdmissionPolicy",
        ] {
            let ar = kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
                "admissionregistration.k8s.io",
                "v1",
                kind,
            ));
            let api: kube::Api<kube::api::DynamicObject> = kube::Api::all_with(c.clone(), &ar);
            api.delete(name, &Default::default()).await?;
        }
        Ok(())
    });
    until_policy(m, i, name, probe, false);
}

/// Admission denials (a policy engine refusing what cmesh writes) fail the step they hit, in
/// the cluster they hit; once lifted, apply goes through.
pub(crate) fn admission_denials_fail_the_step_they_hit(m: &Mesh) {
    let ca = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "cilium-ca", "namespace": "kube-system"},
    });
    deny(
        m,
        0,
        "no-cilium-ca",
        "secrets",
        "CREATE,UPDATE",
        "object.metadata.name != 'cilium-ca'",
        &ca,
    );
    let r = m.apply(bin(), &["--phase", "base"]);
    code(m, &r, 7);
    assert!(
        r.stdout.contains("k8s01 (base) failed at secrets")
            && r.stdout.contains("denied by policy no-cilium-ca"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("k8s02 (base) failed"), "{}", r.stdout);
    allow(m, 0, "no-cilium-ca", &ca);

    // k8s02 refuses the clustermesh-apiserver Deployment: helm fails mid-way, with its stderr.
    let deployment = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "clustermesh-apiserver", "namespace": "kube-system"},
        "spec": {
            "selector": {"matchLabels": {"probe": "policy"}},
            "template": {
                "metadata": {"labels": {"probe": "policy"}},
                "spec": {"containers": [{"name": "probe", "image": "probe"}]},
            },
        },
    });
    deny(
        m,
        1,
        "no-clustermesh",
        "deployments",
        "CREATE",
        "object.metadata.name != 'clustermesh-apiserver'",
        &deployment,
    );
    let r = m.apply(bin(), &["--cluster", "k8s02"]);
    code(m, &r, 7);
    assert!(
        r.stdout.contains("k8s02 (mesh) failed at helm")
            && r.stdout.contains("denied by policy no-clustermesh")
            && r.stdout.contains("`helm upgrade --install cilium"),
        "{}",
        r.stdout
    );
    let (_, v) = m.status_json(bin(), &["--cluster", "k8s02"]);
    assert_eq!(check(&v, "k8s02", "clustermesh-apiserver").0, "fail");
    allow(m, 1, "no-clustermesh", &deployment);
    // Back to base everywhere: k8s02's release is upgraded over its failed revision.
    let r = m.apply(bin(), &["--phase", "base"]);
    code(m, &r, 0);
}

/// `--dry-run` plans the mesh phase and writes nothing (the API servers' audit logs say so).
pub(crate) fn dry_run_plans_and_changes_nothing(m: &Mesh) {
    let before: Vec<usize> = m
        .lab
        .clusters
        .iter()
        .map(|c| c.writes(ADMIN).len())
        .collect();
    let r = m.apply(bin(), &["--phase", "mesh", "--dry-run"]);
    code(m, &r, 0);
    assert!(
        r.stdout
            .contains("1. k8s01  joins the mesh  cilium 1.16.19\n")
            && r.stdout.contains("   helm      mesh: upgrade\n")
            && r.stdout.contains("+ clustermesh.config.clusters = ")
            && r.stdout.contains("   restart   cilium (mesh): ")
            && r.stdout.contains("   peers     +k8s02\n"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.ends_with("2 of 2 cluster(s) change\n"),
        "{}",
        r.stdout
    );
    assert!(
        !r.stdout.contains("PRIVATE KEY") && !r.stdout.contains("LS0t"),
        "values leaked: {}",
        r.stdout
    );
    // Without --yes and without a terminal to ask on, apply refuses before changing anything.
    let chart = m.cilium.chart().display().to_string();
    let r = m.cmesh(bin(), &["apply", "--phase", "mesh", "--chart", &chart]);
    code(m, &r, 2);
    assert!(
        r.stderr.contains("there is no terminal to ask on") && r.stderr.contains("--yes"),
        "{}",
        r.stderr
    );
    // `cmesh plan` is the same plan, as JSON: every key and Secret, no value of a key.
    let (r, v) = m.plan_json(bin(), &["--phase", "mesh"]);
    code(m, &r, 0);
    assert_eq!(v["changes"], true);
    let k8s01 = &v["clusters"][0];
    assert_eq!(k8s01["cluster"], "k8s01");
    assert_eq!(k8s01["role"], "join");
    assert_eq!(k8s01["peersAdded"], serde_json::json!(["k8s02"]));
    assert!(
        k8s01["secrets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "clustermesh-apiserver-server-cert" && s["action"] == "create"),
        "{k8s01:#}"
    );
    assert!(!r.stdout.contains("PRIVATE KEY") && !r.stdout.contains("LS0t"));
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

/// A hand `helm upgrade` shows as drift naming the key; apply puts it back (an upgrade, not a
/// skip).
pub(crate) fn drift_names_the_keys_that_differ(m: &Mesh) {
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
    let r = m.apply(bin(), &["--cluster", "k8s01"]);
    code(m, &r, 0);
    assert!(
        r.stderr.contains("mesh  helm  ok: upgraded"),
        "{}",
        r.stderr
    );
    let (r, _) = m.status_wait(bin(), "90s");
    code(m, &r, 0);
}

/// A cluster drops off the network (packets vanish, nothing is refused): status gives up on it
/// within its request bound and still reports the other.
pub(crate) fn an_unreachable_cluster_times_out_alone(m: &Mesh) {
    m.lab.set_link(1, false);
    let started = std::time::Instant::now();
    // 8 s, not less: on CI's two cores two labs run side by side, and a healthy API server
    // has been seen to take over 2 s to answer.
    let (r, v) = m.status_json(bin(), &["--request-timeout", "8s"]);
    m.lab.set_link(1, true);
    code(m, &r, 7);
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    assert_eq!(check(&v, "k8s02", "api").0, "fail");
    assert_eq!(check(&v, "k8s01", "api").0, "pass");
    // Nothing is known of the unreachable cluster's peerings, and nothing is made up.
    let k8s02 = v["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["cluster"] == "k8s02")
        .unwrap();
    assert!(
        k8s02["peerings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["state"] == "unknown"),
        "{v}"
    );
}

/// Every cluster's KVStoreMesh and agents report every peer ready, and the agents see every
/// cluster's nodes.
pub(crate) fn every_peer_ready_everywhere(m: &Mesh) {
    let n = m.lab.clusters.len();
    let (r, v) = m.status_wait(bin(), "180s");
    code(m, &r, 0);
    all_pass(m, &v, n);
    for i in 0..n {
        assert!(
            check(&v, &name(i), "kvstoremesh").1.starts_with(&format!(
                "1 replica(s) report {0}/{0} remote clusters ready",
                n - 1
            )),
            "{v}"
        );
        assert_eq!(
            check(&v, &name(i), "agents-clustermesh").1,
            format!("1 agent(s) report {0}/{0} clusters ready", n - 1)
        );
        assert!(
            check(&v, &name(i), "agents-nodes")
                .1
                .contains(&format!("({n} nodes)")),
            "{v}"
        );
        // Each peering, as this cluster's real agents report it.
        let peerings = v["clusters"][i]["peerings"].as_array().unwrap();
        assert_eq!(peerings.len(), n - 1, "{v}");
        assert!(
            peerings
                .iter()
                .all(|p| p["state"] == "ready" && p["from"] == name(i).as_str()),
            "{v}"
        );
    }
    // The same as a picture: every directed peering drawn green.
    let r = m.cmesh(bin(), &["status", "-o", "mermaid"]);
    code(m, &r, 0);
    assert!(r.stdout.starts_with("graph LR\n"), "{}", r.stdout);
    assert_eq!(
        r.stdout.matches("-->|ready|").count(),
        n * (n - 1),
        "{}",
        r.stdout
    );
    assert!(
        !r.stdout.contains("not ready") && !r.stdout.contains("unknown"),
        "{}",
        r.stdout
    );
}

/// One apply with both phases finishes base everywhere before mesh anywhere.
pub(crate) fn base_everywhere_before_mesh_anywhere(m: &Mesh) {
    let r = m.apply(bin(), &[]);
    code(m, &r, 0);
    let lines: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.contains("  helm  "))
        .collect();
    assert_eq!(lines.len(), 2 * m.lab.clusters.len(), "{}", r.stderr);
    let last_base = lines.iter().rposition(|l| l.contains("  base  ")).unwrap();
    let first_mesh = lines.iter().position(|l| l.contains("  mesh  ")).unwrap();
    assert!(last_base < first_mesh, "{}", r.stderr);
}

/// Without KVStoreMesh (1.14's default) the agents dial every peer themselves: no KVStoreMesh
/// checks, every other check passes, each agent reports every peer ready, and
/// cilium-clustermesh holds the peers' real addresses.
pub(crate) fn agents_dial_the_peers_themselves(m: &Mesh) {
    let n = m.lab.clusters.len();
    let (r, v) = m.status_wait(bin(), "120s");
    code(m, &r, 0);
    for i in 0..n {
        let c = name(i);
        let names: Vec<&str> = v["clusters"][i]["checks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["name"].as_str().unwrap())
            .collect();
        let want: Vec<&str> = ALL
            .into_iter()
            .filter(|k| !k.starts_with("kvstoremesh"))
            .collect();
        assert_eq!(names, want, "{c}: no KVStoreMesh, no KVStoreMesh checks");
        for k in want {
            let (o, why) = check(&v, &c, k);
            assert_eq!(o, "pass", "{c} {k}: {why}\n{}", m.lab.logs(25));
        }
        assert_eq!(
            check(&v, &c, "agents-clustermesh").1,
            format!("1 agent(s) report {0}/{0} clusters ready", n - 1)
        );
    }
    assert!(
        check(&v, "k8s01", "peers").1.contains(&format!(
            "k8s02 (https://{}:32380)",
            m.lab.clusters[1].node_ip()
        )),
        "{v}"
    );
}

/// A cluster's API server is gone (connections refused): apply fails it at connect and
/// finishes the others; status reports it and the others.
pub(crate) fn an_api_server_down(m: &Mesh) {
    let last = m.lab.clusters.len() - 1;
    let down = name(last);
    m.lab.clusters[last].stop("kube-apiserver");
    let r = m.apply(bin(), &["--request-timeout", "8s"]);
    code(m, &r, 7);
    assert!(
        r.stdout.contains(&down) && r.stdout.contains("FAILED at connect"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("k8s01    mesh") && !r.stdout.contains("k8s01    mesh   FAILED"),
        "{}",
        r.stdout
    );
    let (r, v) = m.status_json(bin(), &["--request-timeout", "8s"]);
    code(m, &r, 7);
    assert_eq!(check(&v, &down, "api").0, "fail");
    assert_eq!(check(&v, "k8s01", "api").0, "pass");
}
