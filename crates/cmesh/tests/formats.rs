//! Snapshots of output formats built from fixed data: the pure formatters behind `apply`,
//! `status` and `probe`.

use cmesh::apply::{DryRun, Step, StepOutcome};
use cmesh::ui;
use cmesh_core::render::Phase;
use cmesh_core::status::{Check, Outcome};
use cmesh_core::value::Change;

fn step(
    cluster: &str,
    phase: Option<Phase>,
    step: &'static str,
    outcome: StepOutcome,
    detail: &str,
) -> Step {
    Step {
        cluster: cluster.into(),
        phase,
        step,
        outcome,
        detail: detail.into(),
        millis: 1234,
    }
}

#[test]
fn apply_summary() {
    let steps = vec![
        step(
            "k8s01",
            None,
            "connect",
            StepOutcome::Ok,
            "Kubernetes v1.31.0",
        ),
        step(
            "k8s01",
            Some(Phase::Mesh),
            "secrets",
            StepOutcome::Ok,
            "6 applied",
        ),
        step(
            "k8s01",
            Some(Phase::Mesh),
            "helm",
            StepOutcome::Ok,
            "upgraded",
        ),
        step(
            "k8s01",
            Some(Phase::Mesh),
            "rollout",
            StepOutcome::Ok,
            "cilium 2/2",
        ),
        step(
            "k8s01",
            Some(Phase::Mesh),
            "restart",
            StepOutcome::Ok,
            "clustermesh.config changed: restarted",
        ),
        step(
            "k8s02",
            None,
            "connect",
            StepOutcome::Ok,
            "Kubernetes v1.31.0",
        ),
        step(
            "k8s02",
            Some(Phase::Mesh),
            "secrets",
            StepOutcome::Ok,
            "6 applied",
        ),
        step(
            "k8s02",
            Some(Phase::Mesh),
            "helm",
            StepOutcome::Failed,
            "`helm upgrade --install cilium cilium` failed (exit 1): Error: UPGRADE FAILED: injected",
        ),
        step(
            "k8s03",
            None,
            "connect",
            StepOutcome::Failed,
            "API server unreachable: connection refused",
        ),
    ];
    let names = vec!["k8s01".to_string(), "k8s02".into(), "k8s03".into()];
    insta::assert_snapshot!(ui::apply::summary(&names, &[Phase::Mesh], &steps));
    insta::assert_snapshot!("apply_step_line", ui::apply::step_line(&steps[2]));
}

#[test]
fn apply_dry_run() {
    let plans = vec![DryRun {
        cluster: "k8s01".into(),
        phase: Phase::Mesh,
        secrets: vec![
            "cilium-ca".into(),
            "clustermesh-apiserver-server-cert".into(),
        ],
        helm: "upgrade the current release".into(),
        changes: vec![
            ("clustermesh.config.clusters".into(), Change::Added),
            ("debug.enabled".into(), Change::Removed),
            ("cluster.id".into(), Change::Changed),
        ],
        restart: Some("clustermesh.config.clusters changed".into()),
        error: None,
    }];
    insta::assert_snapshot!(ui::apply::dry_run(
        &plans,
        "cilium 1.16.19 from https://helm.cilium.io"
    ));
}

#[test]
fn status_table() {
    let c = |name: &'static str, outcome, reason: &str| Check {
        name,
        outcome,
        reason: reason.into(),
    };
    let all = vec![ui::status::ClusterChecks {
        cluster: "k8s01".into(),
        checks: vec![
            c("api", Outcome::Pass, "reachable, Kubernetes v1.31.0"),
            c(
                "ca",
                Outcome::Fail,
                "cilium-ca is `CN=Cilium CA` (AB:CD…), not the mesh CA `CN=cmesh homelab CA` (12:34…): peers will fail with \"authentication handshake failed\"",
            ),
            c(
                "drift",
                Outcome::Warn,
                "1 value(s) differ from what cmesh renders: debug.enabled (removed) (run `cmesh apply`)",
            ),
        ],
    }];
    insta::assert_snapshot!(ui::status::table(&all, 100));
    assert!(!ui::status::ok(&all));
    insta::assert_snapshot!("status_waiting", ui::status::waiting_line(&all, 12));
}
