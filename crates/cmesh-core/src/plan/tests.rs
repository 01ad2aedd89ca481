//! The plan's rules, each from observations made up here: no cluster needed.

use super::*;
use crate::membership::State;

use crate::apply::tests::{map as data, secret, v};

fn base_values() -> Value {
    v(serde_json::json!({"cluster": {"name": "a", "id": 1}, "ipam": {"mode": "cluster-pool"}}))
}

fn mesh_values(peers: &[&str]) -> Value {
    let peers: Vec<serde_json::Value> = peers
        .iter()
        .map(|p| serde_json::json!({"name": p, "address": format!("{p}.mesh.test"), "port": 32379}))
        .collect();
    v(serde_json::json!({
        "cluster": {"name": "a", "id": 1},
        "ipam": {"mode": "cluster-pool"},
        "clustermesh": {"useAPIServer": true, "config": {"enabled": true, "clusters": peers}},
    }))
}

fn artifacts(values: Value, secrets: Vec<Value>) -> ClusterArtifacts {
    ClusterArtifacts {
        values_text: String::new(),
        values,
        secrets,
    }
}

const OPTS: PlanOptions<'static> = PlanOptions {
    chart_version: Some("1.16.19"),
    skip_base_when_meshed: true,
    trust_replaced: false,
};

fn deployed() -> Option<Release> {
    Some(Release {
        status: "deployed".into(),
        chart: "cilium-1.16.19".into(),
    })
}

fn ca(pem: &str) -> Value {
    secret("cilium-ca", &[("ca.crt", pem)])
}

fn remote(pem: &str, cert: &str) -> Value {
    secret(
        "clustermesh-apiserver-remote-cert",
        &[("ca.crt", pem), ("tls.crt", cert), ("tls.key", "K")],
    )
}

fn actions(p: &ClusterPlan) -> Vec<(Option<Phase>, &'static str)> {
    p.helm.iter().map(|h| (h.phase, h.action)).collect()
}

fn restarts(p: &ClusterPlan) -> Vec<(Option<Phase>, &'static str)> {
    p.restarts.iter().map(|r| (r.phase, r.workload)).collect()
}

#[test]
fn a_new_cluster_joins_base_then_mesh_and_gains_every_peer() {
    let base = artifacts(base_values(), vec![ca("CA")]);
    let mesh = artifacts(mesh_values(&["b", "c"]), vec![ca("CA"), remote("CA", "R")]);
    let p = plan_cluster(
        "a",
        &[(Phase::Base, &base), (Phase::Mesh, &mesh)],
        Ok(&Observed::default()),
        &OPTS,
    );
    assert_eq!(p.role, Role::Join);
    assert_eq!(p.stage, 1);
    assert_eq!(
        actions(&p),
        [
            (Some(Phase::Base), "install"),
            (Some(Phase::Mesh), "upgrade")
        ]
    );
    // cilium-ca once, created by base; the remote certificate created by mesh.
    let s: Vec<(&str, SecretAction, Option<Phase>)> = p
        .secrets
        .iter()
        .map(|s| (s.name.as_str(), s.action, s.phase))
        .collect();
    assert_eq!(
        s,
        [
            ("cilium-ca", SecretAction::Create, Some(Phase::Base)),
            (
                "clustermesh-apiserver-remote-cert",
                SecretAction::Create,
                Some(Phase::Mesh)
            )
        ]
    );
    // The mesh phase changes the mesh configuration of the release base installed.
    assert_eq!(restarts(&p), [(Some(Phase::Mesh), "cilium")]);
    assert_eq!(p.peers_added, ["b", "c"]);
    assert!(p.peers_removed.is_empty());
    assert_eq!(
        (p.chart_from.as_deref(), p.chart_to.as_deref()),
        (None, Some("1.16.19"))
    );
    assert!(p.changes());
}

#[test]
fn a_meshed_cluster_with_nothing_to_change_plans_nothing() {
    let base = artifacts(base_values(), vec![ca("CA")]);
    let mesh = artifacts(mesh_values(&["b"]), vec![ca("CA"), remote("CA", "R")]);
    let observed = Observed {
        release: deployed(),
        values: Some(mesh_values(&["b"])),
        secrets: [
            ("cilium-ca".to_owned(), data(&[("ca.crt", "CA")])),
            (
                "clustermesh-apiserver-remote-cert".to_owned(),
                data(&[("ca.crt", "CA"), ("tls.crt", "R"), ("tls.key", "K")]),
            ),
        ]
        .into(),
    };
    let p = plan_cluster(
        "a",
        &[(Phase::Base, &base), (Phase::Mesh, &mesh)],
        Ok(&observed),
        &OPTS,
    );
    assert_eq!(p.role, Role::Member);
    assert_eq!(
        actions(&p),
        [(Some(Phase::Base), "skip"), (Some(Phase::Mesh), "skip")]
    );
    assert!(p.values.is_empty() && p.restarts.is_empty(), "{p:?}");
    assert!(
        p.secrets
            .iter()
            .all(|s| s.action == SecretAction::Unchanged)
    );
    assert!(!p.changes());
    // Another chart version is an upgrade with the same values: nothing restarts for it.
    let newer = PlanOptions {
        chart_version: Some("1.17.17"),
        ..OPTS
    };
    let p = plan_cluster("a", &[(Phase::Mesh, &mesh)], Ok(&observed), &newer);
    assert_eq!(actions(&p), [(Some(Phase::Mesh), "upgrade")]);
    assert_eq!(p.chart_to.as_deref(), Some("1.17.17"));
    assert!(p.restarts.is_empty());
}

#[test]
fn a_peer_joining_changes_the_list_and_restarts_the_agents_one_leaving_does_not() {
    let mesh = artifacts(mesh_values(&["b", "d"]), vec![]);
    let observed = Observed {
        release: deployed(),
        values: Some(mesh_values(&["b", "c"])),
        secrets: BTreeMap::new(),
    };
    let p = plan_cluster("a", &[(Phase::Mesh, &mesh)], Ok(&observed), &OPTS);
    assert_eq!(actions(&p), [(Some(Phase::Mesh), "upgrade")]);
    assert_eq!(
        (p.peers_added.clone(), p.peers_removed.clone()),
        (vec!["d".to_owned()], vec!["c".to_owned()])
    );
    assert_eq!(
        p.values.iter().map(|c| c.path.as_str()).collect::<Vec<_>>(),
        ["clustermesh.config.clusters"]
    );
    assert_eq!(restarts(&p), [(Some(Phase::Mesh), "cilium")]);
    // A peer only dropped: the agents let it go without a restart.
    let fewer = artifacts(mesh_values(&["b"]), vec![]);
    let p = plan_cluster("a", &[(Phase::Mesh, &fewer)], Ok(&observed), &OPTS);
    assert_eq!(actions(&p), [(Some(Phase::Mesh), "upgrade")]);
    assert_eq!(p.peers_removed, ["c"]);
    assert!(restarts(&p).is_empty(), "{:?}", p.restarts);
}

#[test]
fn a_trust_change_restarts_clustermesh_apiserver_and_not_the_agents() {
    let mesh = artifacts(mesh_values(&["b"]), vec![remote("OLD+NEW", "R")]);
    let observed = Observed {
        release: deployed(),
        values: Some(mesh_values(&["b"])),
        secrets: [(
            "clustermesh-apiserver-remote-cert".to_owned(),
            data(&[("ca.crt", "OLD"), ("tls.crt", "R"), ("tls.key", "K")]),
        )]
        .into(),
    };
    let p = plan_cluster("a", &[(Phase::Mesh, &mesh)], Ok(&observed), &OPTS);
    assert_eq!(p.secrets[0].action, SecretAction::Update);
    assert_eq!(p.secrets[0].keys, ["ca.crt"]);
    assert_eq!(restarts(&p), [(Some(Phase::Mesh), "clustermesh-apiserver")]);
    // A replacement with no CA in common restarts the agents as well.
    let replaced = PlanOptions {
        trust_replaced: true,
        ..OPTS
    };
    let p = plan_cluster("a", &[(Phase::Mesh, &mesh)], Ok(&observed), &replaced);
    assert_eq!(
        restarts(&p),
        [
            (Some(Phase::Mesh), "cilium"),
            (Some(Phase::Mesh), "clustermesh-apiserver")
        ]
    );
}

#[test]
fn values_are_shown_with_keys_and_certificates_redacted() {
    let old = v(
        serde_json::json!({"debug": {"enabled": false}, "hubble": {"tls": {"server": {"cert": "AAA", "key": "SECRET"}}}}),
    );
    let new = v(serde_json::json!({
        "debug": {"enabled": true},
        "hubble": {"tls": {"server": {"cert": "BBB", "key": "OTHER"}}},
        "long": "x".repeat(100),
    }));
    let c = value_changes(Some(&old), &new);
    let show: Vec<(&str, Change, Option<&str>, Option<&str>)> = c
        .iter()
        .map(|c| {
            (
                c.path.as_str(),
                c.change,
                c.before.as_deref(),
                c.after.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        show[0],
        (
            "debug.enabled",
            Change::Changed,
            Some("false"),
            Some("true")
        )
    );
    assert_eq!(
        show[1],
        (
            "hubble.tls.server.cert",
            Change::Changed,
            Some("(certificate)"),
            Some("(certificate)")
        )
    );
    assert_eq!(
        show[2],
        (
            "hubble.tls.server.key",
            Change::Changed,
            Some("(redacted)"),
            Some("(redacted)")
        )
    );
    assert_eq!(show[3].0, "long");
    assert_eq!(show[3].3.unwrap().chars().count(), 60);
    let json = serde_json::to_string(&c).unwrap();
    assert!(
        !json.contains("SECRET") && !json.contains("OTHER") && !json.contains("BBB"),
        "{json}"
    );
}

fn member(name: &str) -> Member {
    Member {
        name: name.into(),
        id: 3,
        kubeconfig: Some("c.yaml".into()),
        context: None,
        version: None,
        state: State::Left,
        since: "2026-12-05T00:00:00Z".into(),
    }
}

#[test]
fn a_leaving_cluster_loses_its_mesh_only_with_prune() {
    let observed = Observed {
        release: deployed(),
        values: Some(mesh_values(&["a", "b"])),
        secrets: [
            ("cilium-ca".to_owned(), data(&[("ca.crt", "CA")])),
            (
                "clustermesh-apiserver-remote-cert".to_owned(),
                data(&[("tls.crt", "R")]),
            ),
            ("cilium-clustermesh".to_owned(), data(&[("a", "cfg")])),
        ]
        .into(),
    };
    let kept = plan_leaving(&member("c"), Ok(&observed), false);
    assert!(kept.untouched.is_some() && !kept.changes());
    assert_eq!(kept.stage, 3);
    let p = plan_leaving(&member("c"), Ok(&observed), true);
    assert_eq!(actions(&p), [(None, "upgrade")]);
    assert!(
        p.values
            .iter()
            .all(|c| c.path.starts_with("clustermesh.") && c.change == Change::Removed)
    );
    // cilium-ca stays (Hubble chains to it); the mesh's Secrets go.
    let gone: Vec<(&str, SecretAction)> = p
        .secrets
        .iter()
        .map(|s| (s.name.as_str(), s.action))
        .collect();
    assert_eq!(
        gone,
        [
            ("clustermesh-apiserver-remote-cert", SecretAction::Delete),
            ("cilium-clustermesh", SecretAction::Delete)
        ]
    );
    assert_eq!(restarts(&p), [(None, "cilium")]);
    assert_eq!(p.peers_removed, ["a", "b"]);
    // Cilium stays with its name and ID.
    assert_eq!(disconnect_values(&mesh_values(&["a"])), base_values());
    // Unreachable: an error, no guess.
    let e = plan_leaving(&member("c"), Err("connection refused"), true);
    assert_eq!(e.error.as_deref(), Some("connection refused"));
    assert!(!e.changes());
}

#[test]
fn peers_are_read_from_the_list_and_the_map_form() {
    let list = mesh_values(&["b", "c"]);
    assert_eq!(
        peer_names(Some(&list)).into_iter().collect::<Vec<_>>(),
        ["b", "c"]
    );
    let map = v(
        serde_json::json!({"clustermesh": {"config": {"clusters": {"b": {"enabled": true}, "c": {"enabled": false}, "d": {}}}}}),
    );
    assert_eq!(
        peer_names(Some(&map)).into_iter().collect::<Vec<_>>(),
        ["b", "d"]
    );
    assert!(peer_names(None).is_empty());
}

#[test]
fn plans_come_in_apply_order() {
    let mk = |n: &str, r: Role| ClusterPlan::new(n, r);
    let got: Vec<String> = ordered(vec![
        mk("a", Role::Member),
        mk("x", Role::Leave),
        mk("d", Role::Join),
        mk("b", Role::Member),
    ])
    .into_iter()
    .map(|p| p.cluster)
    .collect();
    assert_eq!(got, ["d", "a", "b", "x"]);
    // A cluster that could not be observed goes with the meshed ones, not before them.
    let unknown = plan_cluster("u", &[], Err("connection refused"), &OPTS);
    assert_eq!((unknown.role, unknown.stage), (Role::Unknown, 2));
}

fn step(phase: Option<Phase>, step: &'static str, outcome: StepOutcome, detail: &str) -> Step {
    Step {
        cluster: "a".into(),
        phase,
        step,
        outcome,
        detail: detail.into(),
        millis: 0,
    }
}

#[test]
fn deviations_compare_the_plan_with_what_apply_did() {
    let base = artifacts(base_values(), vec![ca("CA")]);
    let mesh = artifacts(mesh_values(&["b"]), vec![ca("CA")]);
    let p = plan_cluster(
        "a",
        &[(Phase::Base, &base), (Phase::Mesh, &mesh)],
        Ok(&Observed::default()),
        &OPTS,
    );
    let (b, m) = (Some(Phase::Base), Some(Phase::Mesh));
    let ok = vec![
        step(None, "connect", StepOutcome::Ok, "Kubernetes v1.36.3"),
        step(b, "secrets", StepOutcome::Ok, "1 applied"),
        step(b, "helm", StepOutcome::Ok, "installed"),
        step(b, "restart", StepOutcome::Skipped, "fresh install"),
        step(m, "secrets", StepOutcome::Ok, "1 applied"),
        step(m, "helm", StepOutcome::Ok, "upgraded"),
        // The chart's rollout restarted the agents: the planned restart happened.
        step(
            m,
            "restart",
            StepOutcome::Skipped,
            "the chart's upgrade already restarted every agent",
        ),
        step(
            m,
            "restart-apiserver",
            StepOutcome::Skipped,
            "the trusted CAs did not change",
        ),
    ];
    assert_eq!(
        deviations(std::slice::from_ref(&p), &ok),
        Vec::<String>::new()
    );
    let mut wrong = ok.clone();
    wrong[2] = step(
        b,
        "helm",
        StepOutcome::Skipped,
        "no change (cilium-1.16.19)",
    );
    wrong[6] = step(m, "restart", StepOutcome::Skipped, "no change");
    wrong[7] = step(m, "restart-apiserver", StepOutcome::Ok, "restarted");
    let d = deviations(std::slice::from_ref(&p), &wrong);
    assert_eq!(d.len(), 3, "{d:#?}");
    assert!(
        d[0].contains("base planned `install` of the release, apply did `skip`"),
        "{}",
        d[0]
    );
    assert!(d[1].contains("planned a restart of cilium"), "{}", d[1]);
    assert!(
        d[2].contains("planned no restart of clustermesh-apiserver"),
        "{}",
        d[2]
    );
    // A cluster apply did not run (a stage before it failed) is not a deviation either.
    assert!(deviations(std::slice::from_ref(&p), &ok[..1]).is_empty());
    // A failed step is reported as a failure, not a deviation.
    let mut failed = wrong.clone();
    failed[5] = step(m, "helm", StepOutcome::Failed, "timed out");
    assert!(deviations(std::slice::from_ref(&p), &failed).is_empty());
}

#[test]
fn a_cluster_that_would_skip_a_minor_release_is_refused() {
    let mesh = artifacts(mesh_values(&["b"]), vec![]);
    let observed = Observed {
        release: deployed(),
        values: Some(mesh_values(&["b"])),
        secrets: BTreeMap::new(),
    };
    let jump = PlanOptions {
        chart_version: Some("1.18.11"),
        ..OPTS
    };
    let p = plan_cluster("a", &[(Phase::Mesh, &mesh)], Ok(&observed), &jump);
    assert!(
        p.refused
            .as_deref()
            .unwrap()
            .contains("1.16.19 → 1.18.11 skips 1.17"),
        "{p:?}"
    );
    assert!(p.helm.is_empty() && !p.changes());
    // A refused cluster is not compared with steps apply did not take.
    assert!(deviations(std::slice::from_ref(&p), &[]).is_empty());
    // The next minor is fine.
    let next = PlanOptions {
        chart_version: Some("1.17.17"),
        ..OPTS
    };
    let p = plan_cluster("a", &[(Phase::Mesh, &mesh)], Ok(&observed), &next);
    assert!(p.refused.is_none() && p.changes());
}
