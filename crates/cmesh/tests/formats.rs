//! Snapshots of output formats built from fixed data: the pure formatters behind `apply`,
//! `status` and `probe`.

use cmesh::ui;
use cmesh_core::apply::{Release, Step, StepOutcome};
use cmesh_core::membership::{Member, State};
use cmesh_core::plan::{self, ClusterPlan, Observed, PlanOptions};
use cmesh_core::render::{ClusterArtifacts, Phase};
use cmesh_core::status::{Check, Outcome};
use cmesh_core::value::Value;

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
    let v = ui::apply::summary_json(&names, &steps, serde_json::json!({}), &[]);
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
    let v = ui::apply::summary_json(&names, &ok, serde_json::json!({}), &[]);
    assert_eq!(v["ok"], true);
}

fn mesh_values(peers: &[&str]) -> Value {
    let peers: Vec<serde_json::Value> = peers
        .iter()
        .map(|p| serde_json::json!({"name": p, "address": format!("{p}.mesh.test")}))
        .collect();
    Value::from_json(&serde_json::json!({
        "cluster": {"name": "a", "id": 1},
        "debug": {"enabled": false},
        "clustermesh": {"useAPIServer": true, "config": {"enabled": true, "clusters": peers}},
        "hubble": {"tls": {"server": {"key": "PRIVATE"}}},
    }))
}

fn tls_secret(name: &str, ca: &str) -> Value {
    use base64::Engine as _;
    let b = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    Value::from_json(&serde_json::json!({
        "metadata": {"name": name},
        "data": {"ca.crt": b(ca), "tls.crt": b("CERT"), "tls.key": b("KEYDATA")},
    }))
}

/// Every kind of cluster a plan shows: one joining, one meshed whose peers and chart change,
/// one unchanged, one leaving with --prune, one leaving without, one unreachable.
fn plans() -> Vec<ClusterPlan> {
    let opts = PlanOptions {
        chart_version: Some("1.17.17"),
        skip_base_when_meshed: true,
        trust_replaced: false,
    };
    let base = ClusterArtifacts {
        values: Value::from_json(&serde_json::json!({"cluster": {"name": "k8s04", "id": 4}})),
        values_text: String::new(),
        secrets: vec![tls_secret("cilium-ca", "CA")],
    };
    let mesh = ClusterArtifacts {
        values: mesh_values(&["b", "d"]),
        values_text: String::new(),
        secrets: vec![tls_secret("clustermesh-apiserver-remote-cert", "CA+NEW")],
    };
    let mut old = mesh_values(&["b", "c"]);
    old.set(&["debug", "enabled"], true);
    old.set(&["hubble", "tls", "server", "key"], "OLDPRIVATE");
    let release = |v: &str| {
        Some(Release {
            status: "deployed".into(),
            chart: format!("cilium-{v}"),
        })
    };
    let meshed = Observed {
        release: release("1.16.19"),
        values: Some(old),
        secrets: [(
            "clustermesh-apiserver-remote-cert".to_owned(),
            [
                ("ca.crt", "CA"),
                ("tls.crt", "CERT"),
                ("tls.key", "KEYDATA"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        )]
        .into(),
    };
    let same = Observed {
        release: release("1.17.17"),
        values: Some(mesh_values(&["b", "d"])),
        secrets: [(
            "clustermesh-apiserver-remote-cert".to_owned(),
            [
                ("ca.crt", "CA+NEW"),
                ("tls.crt", "CERT"),
                ("tls.key", "KEYDATA"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        )]
        .into(),
    };
    let leaving = |name: &str| Member {
        name: name.into(),
        id: 3,
        kubeconfig: Some("k.yaml".into()),
        context: None,
        version: None,
        state: State::Left,
        since: "2026-12-05T00:00:00Z".into(),
    };
    let left = Observed {
        release: release("1.16.19"),
        values: Some(mesh_values(&["a", "b"])),
        secrets: [("cilium-clustermesh".to_owned(), Default::default())].into(),
    };
    plan::ordered(vec![
        plan::plan_cluster(
            "k8s01",
            &[(Phase::Base, &base), (Phase::Mesh, &mesh)],
            Ok(&meshed),
            &opts,
        ),
        plan::plan_cluster("k8s02", &[(Phase::Mesh, &mesh)], Ok(&same), &opts),
        plan::plan_cluster(
            "k8s04",
            &[(Phase::Base, &base), (Phase::Mesh, &mesh)],
            Ok(&Observed::default()),
            &opts,
        ),
        plan::plan_cluster(
            "k8s05",
            &[(Phase::Mesh, &mesh)],
            Err("API server unreachable: timed out"),
            &opts,
        ),
        plan::plan_leaving(&leaving("k8s03"), Ok(&left), true),
        plan::plan_leaving(&leaving("k8s06"), Ok(&left), false),
    ])
}

#[test]
fn plan_table_and_json() {
    let p = plans();
    let text = ui::plan::table(&p, "cilium 1.17.17 from https://helm.cilium.io");
    insta::assert_snapshot!(text);
    let v = ui::plan::json(&p, "cilium 1.17.17 from https://helm.cilium.io");
    let json = v.to_string();
    assert!(
        !text.contains("PRIVATE") && !json.contains("PRIVATE") && !json.contains("KEYDATA"),
        "{json}"
    );
    assert_eq!(v["changes"], true);
    assert_eq!(v["ok"], false, "k8s05 could not be planned");
    let order: Vec<&str> = v["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["cluster"].as_str().unwrap())
        .collect();
    assert_eq!(
        order,
        ["k8s04", "k8s01", "k8s02", "k8s05", "k8s03", "k8s06"]
    );
    assert_eq!(v["clusters"][1]["role"], "member");
    assert_eq!(v["clusters"][1]["peersAdded"], serde_json::json!(["d"]));
    assert_eq!(v["clusters"][3]["role"], "unknown");
    assert_eq!(v["clusters"][4]["secrets"][0]["action"], "delete");
}

#[test]
fn a_disconnection_has_its_own_summary_row() {
    let steps = vec![
        step(
            "k8s03",
            None,
            "connect",
            StepOutcome::Ok,
            "Kubernetes v1.36.3",
        ),
        step(
            "k8s03",
            None,
            "disconnect",
            StepOutcome::Ok,
            "upgraded without the mesh",
        ),
        step(
            "k8s03",
            None,
            "rollout",
            StepOutcome::Ok,
            "cilium 1/1, cilium-operator 1/1",
        ),
        step(
            "k8s03",
            None,
            "delete-secrets",
            StepOutcome::Ok,
            "deleted cilium-clustermesh",
        ),
        step(
            "k8s03",
            None,
            "restart",
            StepOutcome::Skipped,
            "the chart's upgrade already restarted every agent",
        ),
    ];
    insta::assert_snapshot!(ui::apply::summary(
        &["k8s03".to_owned()],
        &[Phase::Base, Phase::Mesh],
        &steps
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
            policy_default_local_cluster: None,
        };
        let r = lint::lint(&inv, &ctx);
        insta::assert_snapshot!(ui::lint::table(
            &r,
            &["other/broken.yaml:3:1: invalid YAML".into()],
            ui::Style::PLAIN
        ));
    }
}
