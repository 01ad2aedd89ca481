//! Snapshots of output formats built from fixed data: the pure formatters behind `apply`,
//! `status` and `probe`.

use cmesh::ui;
use cmesh_core::apply::{DryRun, Step, StepOutcome};
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
    // -o json: every step, not ok when one failed.
    let v: serde_json::Value =
        serde_json::from_str(&ui::apply::summary_json(&names, &steps)).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(
        v["clusters"],
        serde_json::json!(["k8s01", "k8s02", "k8s03"])
    );
    assert_eq!(v["steps"].as_array().unwrap().len(), steps.len());
    let last = &v["steps"][steps.len() - 1];
    assert_eq!(last["cluster"], "k8s03");
    assert_eq!(last["outcome"], "failed");
    assert_eq!(last["phase"], serde_json::Value::Null);
    let ok: Vec<_> = steps
        .iter()
        .filter(|s| s.outcome != StepOutcome::Failed)
        .cloned()
        .collect();
    let v: serde_json::Value = serde_json::from_str(&ui::apply::summary_json(&names, &ok)).unwrap();
    assert_eq!(v["ok"], true);
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
    let v: serde_json::Value = serde_json::from_str(&ui::apply::dry_run_json(
        &plans,
        "cilium 1.16.19 from https://helm.cilium.io",
    ))
    .unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["dryRun"], true);
    let p = &v["plans"][0];
    assert_eq!(p["cluster"], "k8s01");
    assert_eq!(p["phase"], "mesh");
    assert_eq!(
        p["changes"][0],
        serde_json::json!({"path": "clustermesh.config.clusters", "change": "added"})
    );
    assert_eq!(p["restart"], "clustermesh.config.clusters changed");
    let mut failed = plans.clone();
    failed[0].error = Some("API server unreachable".into());
    let v: serde_json::Value =
        serde_json::from_str(&ui::apply::dry_run_json(&failed, "cilium")).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["plans"][0]["error"], "API server unreachable");
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
                "1 value(s) differ from what cmesh renders: debug.enabled (set on the cluster only) (run `cmesh apply`)",
            ),
        ],
        peerings: Vec::new(),
    }];
    insta::assert_snapshot!(ui::status::table(&all, 100));
    assert!(!ui::status::ok(&all));
    insta::assert_snapshot!("status_waiting", ui::status::waiting_line(&all, 12));
}

mod meshtest_and_lint {
    use cmesh::ui;
    use cmesh_core::lint::{self, Context, Inventory};
    use cmesh_core::meshtest::curl::Attempt;
    use cmesh_core::meshtest::judge;
    use cmesh_core::meshtest::{Cleanup, CleanupOutcome, Kind, Report};

    fn ok(c: &str, ms: f64) -> Attempt {
        Attempt {
            exit: 0,
            http: Some(200),
            seconds: Some(ms / 1000.0),
            cluster: Some(c.into()),
            pod: Some(format!("echo-{c}")),
            ..Attempt::default()
        }
    }

    fn timeout() -> Attempt {
        Attempt {
            exit: 28,
            error: Some("(28) Connection timed out after 5001 milliseconds".into()),
            ..Attempt::default()
        }
    }

    fn page() -> Attempt {
        Attempt {
            exit: 0,
            http: Some(503),
            title: Some("503 Service Temporarily Unavailable".into()),
            ..Attempt::default()
        }
    }

    /// Two clusters; traffic from k8s01 to k8s02 is dropped; ingress only in k8s01.
    fn report() -> Report {
        let names = vec!["k8s01".to_owned(), "k8s02".to_owned()];
        let mut cells = vec![
            judge::pod(
                "k8s01",
                "k8s02",
                "echo-b",
                "10.2.0.11",
                &[timeout(), timeout(), timeout()],
            ),
            judge::pod(
                "k8s02",
                "k8s01",
                "echo-a",
                "10.1.0.11",
                &[ok("k8s01", 1.2), ok("k8s01", 1.4), ok("k8s01", 1.3)],
            ),
        ];
        cells.extend(judge::service_row(
            "k8s01",
            &names,
            "echo",
            &[ok("k8s01", 1.0), timeout(), ok("k8s01", 1.0), timeout()],
        ));
        cells.extend(judge::service_row(
            "k8s02",
            &names,
            "echo",
            &[
                ok("k8s01", 2.0),
                ok("k8s02", 1.0),
                ok("k8s01", 2.0),
                ok("k8s02", 1.0),
            ],
        ));
        for c in ["k8s01", "k8s02"] {
            cells.push(judge::affinity(
                c,
                "local",
                "echo-local",
                &[ok(c, 1.0), ok(c, 1.0)],
            ));
        }
        cells.push(judge::affinity(
            "k8s01",
            "remote",
            "echo-remote",
            &[timeout(), timeout()],
        ));
        cells.push(judge::affinity(
            "k8s02",
            "remote",
            "echo-remote",
            &[ok("k8s01", 1.0), ok("k8s01", 1.0)],
        ));
        cells.push(judge::failover("k8s01", "echo", &[timeout(), timeout()]));
        cells.push(judge::local_return(
            "k8s01",
            "echo-local",
            &[ok("k8s01", 1.0), ok("k8s01", 1.0)],
        ));
        cells.push(judge::failover(
            "k8s02",
            "echo",
            &[ok("k8s01", 1.0), ok("k8s01", 1.0)],
        ));
        cells.push(judge::local_return(
            "k8s02",
            "echo-local",
            &[ok("k8s02", 1.0), ok("k8s02", 1.0)],
        ));
        cells.push(judge::ingress_baseline(
            "k8s01",
            &[ok("k8s01", 1.0), ok("k8s01", 1.0)],
        ));
        let (c, lesson) = judge::ingress_without_upstream("k8s01", &[page(), page()]);
        cells.push(c);
        cells.push(judge::ingress_with_upstream(
            "k8s01",
            &[page(), page()],
            false,
        ));
        for check in [
            "ingress-baseline",
            "ingress-without-upstream",
            "ingress-with-upstream",
        ] {
            cells.push(judge::not_run(
                Kind::Ingress,
                check,
                "k8s02",
                None,
                "no ingress-nginx controller in k8s02",
                false,
            ));
        }
        Report {
            run_id: "ab12cd".into(),
            namespace: "cmesh-test-ab12cd".into(),
            clusters: names,
            kinds: Kind::ALL.to_vec(),
            cells,
            lessons: lesson.into_iter().collect(),
            errors: vec![],
            cleanup: vec![
                Cleanup {
                    cluster: "k8s01".into(),
                    namespace: "cmesh-test-ab12cd".into(),
                    outcome: CleanupOutcome::Deleted,
                },
                Cleanup {
                    cluster: "k8s02".into(),
                    namespace: "cmesh-test-ab12cd".into(),
                    outcome: CleanupOutcome::Failed {
                        reason: "no answer within 15s".into(),
                    },
                },
            ],
            interrupted: false,
            seconds: 42.5,
        }
    }

    #[test]
    fn test_table() {
        insta::assert_snapshot!(ui::meshtest::report_table(&report(), 100));
    }

    #[test]
    fn test_junit() {
        let x = ui::meshtest::report_junit(&report());
        // Well-formed enough for CI parsers: balanced suites and cases, escaped text.
        assert_eq!(
            x.matches("<testsuite ").count(),
            x.matches("</testsuite>").count()
        );
        assert!(!x.contains("\"true\"\""), "unescaped quotes");
        insta::assert_snapshot!(x);
        // A setup error is an <error> (not a test's failure), an interruption a failure, and
        // terminal escapes from the clusters never reach the XML.
        let mut r = report();
        r.errors
            .push("k8s01: setup: timed out \u{1b}[31mwaiting\u{1b}[0m".into());
        r.interrupted = true;
        let x = ui::meshtest::report_junit(&r);
        assert!(
            x.contains("<error message=\"k8s01: setup: timed out waiting\" type=\"error\"/>"),
            "{x}"
        );
        assert!(
            x.contains("<failure message=\"interrupted\" type=\"interrupted\"/>"),
            "{x}"
        );
        assert!(x.contains("errors=\"1\""), "{x}");
        assert!(!x.contains('\u{1b}'), "{x}");
    }

    /// `test -o html`: one self-contained page whose matrix is the pod-to-pod heat map, each
    /// cell linked to its detail; what clusters said is escaped, never markup.
    #[test]
    fn test_html() {
        let mut r = report();
        r.cells[1].detail = "<script>alert(1)</script>\u{1b}[31m & 'quoted'".into();
        let h = ui::meshtest::report_html(&r);
        insta::assert_snapshot!(h);
        // Nothing fetched or run: no script, no external reference.
        assert!(
            !h.contains("<script") && !h.contains("src=") && !h.contains("http"),
            "{h}"
        );
        assert!(h.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{h}");
        assert!(!h.contains('\u{1b}'));
        // Balanced rows and cells; one detail row per cell, each matrix cell linked to its own.
        for tag in ["tr", "td", "th", "table"] {
            assert_eq!(
                h.matches(&format!("<{tag}")).count(),
                h.matches(&format!("</{tag}>")).count(),
                "<{tag}>"
            );
        }
        assert_eq!(h.matches("<tr id=\"cell-").count(), r.cells.len());
        let matrix = &h[h.find("<table id=\"pod-matrix\">").unwrap()..];
        let matrix = &matrix[..matrix.find("</table>").unwrap()];
        assert_eq!(
            matrix.matches("<tr>").count(),
            3,
            "a header and a row per cluster"
        );
        assert_eq!(matrix.matches("class=\"self\"").count(), 2);
        assert_eq!(matrix.matches("class=\"fail\"").count(), 1, "{matrix}");
        assert_eq!(matrix.matches("class=\"pass\"").count(), 1, "{matrix}");
        for link in matrix.split("href=\"#").skip(1) {
            let id = &link[..link.find('"').unwrap()];
            assert!(
                h.contains(&format!("<tr id=\"{id}\">")),
                "{id} has no detail"
            );
        }
        assert!(h.contains("<title>cmesh test ab12cd FAILED</title>"));
    }

    #[test]
    fn test_json_has_the_verdict() {
        let v: serde_json::Value =
            serde_json::from_str(&ui::meshtest::report_json(&report())).unwrap();
        assert_eq!(v["ok"], false);
        assert_eq!(v["cells"].as_array().unwrap().len(), 20);
    }

    #[test]
    fn lint_table() {
        let text = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: shop\n  annotations:\n    service.cilium.io/global: \"true\"\n    service.cilium.io/affinity: nearest\n    io.cilium/shared-service: \"false\"\nspec:\n  ports: [{port: 80}]\n";
        let mut inv = Inventory::default();
        inv.add_manifest("apps/web.yaml", text, &lint::Scope::All)
            .unwrap();
        let ctx = Context {
            clusters: vec![],
            version: Some("1.16.19".parse().unwrap()),
            endpoint_slice_sync: false,
        };
        let r = lint::lint(&inv, &ctx);
        insta::assert_snapshot!(ui::lint::table(
            &r,
            &["other/broken.yaml:3:1: invalid YAML".into()],
            ui::Style::PLAIN
        ));
    }
}
