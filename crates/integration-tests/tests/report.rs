//! `cmesh test`'s HTML report opened in a real browser (headless chromium): the page shows
//! the same results as the JSON of the same report, in the right places and colours, links to
//! each cell's detail, and neither runs nor fetches anything. The lab's mesh sessions do the
//! same with a real run's report (`--report`).

use cmesh::ui;
use cmesh_core::meshtest::curl::Attempt;
use cmesh_core::meshtest::judge;
use cmesh_core::meshtest::{Cleanup, CleanupOutcome, Kind, Report};
use integration_tests::browser;

fn ok(c: &str) -> Attempt {
    Attempt {
        exit: 0,
        http: Some(200),
        seconds: Some(0.0012),
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

/// Three clusters; k8s01 cannot reach k8s03, k8s03's pods to k8s02 were not run, and one
/// cluster's answer carries markup.
fn report() -> Report {
    let names: Vec<String> = ["k8s01", "k8s02", "k8s03"].map(String::from).to_vec();
    let mut cells = Vec::new();
    for from in &names {
        for to in &names {
            if from == to {
                continue;
            }
            let cell = match (from.as_str(), to.as_str()) {
                ("k8s01", "k8s03") => judge::pod(from, to, "echo-c", "10.3.0.11", &[timeout()]),
                ("k8s03", "k8s02") => judge::not_run(
                    Kind::Pod,
                    "pod",
                    from,
                    Some(to),
                    "k8s03: setup: timed out",
                    false,
                ),
                _ => judge::pod(from, to, "echo", "10.0.0.11", &[ok(to), ok(to), ok(to)]),
            };
            cells.push(cell);
        }
    }
    cells.extend(judge::service_row(
        "k8s01",
        &names,
        "echo",
        &[ok("k8s01"), ok("k8s02"), ok("k8s03")],
    ));
    cells[0].detail = "<script>alert(1)</script> & 'quoted' <b>not bold</b>".into();
    Report {
        run_id: "ab12cd".into(),
        namespace: "cmesh-test-ab12cd".into(),
        clusters: names.clone(),
        kinds: vec![Kind::Pod, Kind::Service],
        cells,
        lessons: vec![],
        errors: vec!["k8s03: setup: timed out".into()],
        cleanup: names
            .iter()
            .map(|c| Cleanup {
                cluster: c.clone(),
                namespace: "cmesh-test-ab12cd".into(),
                outcome: CleanupOutcome::Deleted,
            })
            .collect(),
        interrupted: false,
        seconds: 12.0,
    }
}

#[test]
#[ignore = "needs chromium (scripts/install-test-deps)"]
fn the_html_report_shows_what_the_json_says() {
    let dir = tempfile::tempdir().unwrap();
    let r = report();
    let html = dir.path().join("report.html");
    std::fs::write(&html, ui::meshtest::report_html(&r)).unwrap();
    let json: serde_json::Value = serde_json::from_str(&ui::meshtest::report_json(&r)).unwrap();
    let page = browser::read_back(&html);
    browser::assert_shows_test_report(&page, &json);
    // The three outcomes are all there, and what a cluster said is shown as text, not markup.
    let classes: Vec<&str> = page["tables"]["pod-matrix"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap())
        .filter_map(|c| c["class"].as_str())
        .collect();
    for class in ["pass", "fail", "skip"] {
        assert!(classes.contains(&class), "{class} in {classes:?}");
    }
    let text = page["text"].as_str().unwrap();
    assert!(
        text.contains("<script>alert(1)</script> & 'quoted' <b>not bold</b>"),
        "{text}"
    );
    assert!(text.contains("k8s03: setup: timed out"), "{text}");

    // The check can fail: a report whose matrix lost its colours is caught.
    let plain = ui::meshtest::report_html(&r).replace("td.pass{background:#dafbe1}", "");
    std::fs::write(&html, plain).unwrap();
    let page = browser::read_back(&html);
    let caught = std::panic::catch_unwind(|| browser::assert_shows_test_report(&page, &json));
    assert!(caught.is_err(), "a colourless matrix passed");
}
