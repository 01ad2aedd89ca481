//! Text for `test`: the result matrices per part, the failures with their fixes, the article's
//! lesson and the cleanup, as a table; the same report as JSON and as JUnit XML; and the
//! table of `test --cleanup`. Pure.

use std::fmt::Write as _;

use cmesh_core::meshtest::judge::{Cell, Outcome};
use cmesh_core::meshtest::{Cleanup, CleanupOutcome, Kind, Report};
use comfy_table::{ContentArrangement, Table, presets};

fn table(header: Vec<String>, rows: Vec<Vec<String>>, width: usize) -> String {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING);
    t.set_content_arrangement(ContentArrangement::Dynamic);
    t.set_width(u16::try_from(width.max(60)).unwrap_or(100));
    t.set_header(header);
    for col in t.column_iter_mut() {
        col.set_padding((0, 2));
    }
    for r in rows {
        t.add_row(r);
    }
    let mut s = String::new();
    for line in t.to_string().lines() {
        let _ = writeln!(s, "{}", line.trim_end());
    }
    s
}

fn text(c: Option<&Cell>) -> String {
    match c {
        None => "-".into(),
        Some(c) => match c.outcome {
            Outcome::Pass => c.short.clone(),
            Outcome::Skip => "skip".into(),
            Outcome::Fail if c.short.starts_with("FAIL") => c.short.clone(),
            Outcome::Fail => format!("FAIL {}", c.short),
        },
    }
}

fn find<'a>(r: &'a Report, check: &str, from: &str, to: Option<&str>) -> Option<&'a Cell> {
    r.cells
        .iter()
        .find(|c| c.check == check && c.from == from && c.to.as_deref() == to)
}

fn outcome_word(o: &CleanupOutcome) -> String {
    match o {
        CleanupOutcome::Deleted => "deleted".into(),
        CleanupOutcome::Terminating => "deletion requested (still terminating)".into(),
        CleanupOutcome::Kept => "kept (--keep)".into(),
        CleanupOutcome::Failed { reason } => format!("FAILED: {reason}"),
    }
}

/// The human report.
pub fn report_table(r: &Report, width: usize) -> String {
    let mut s = format!(
        "cmesh test: run {}, namespace {}, clusters {}\n",
        r.run_id,
        r.namespace,
        r.clusters.join(", ")
    );
    let names = &r.clusters;
    if r.kinds.contains(&Kind::Pod) {
        let _ = write!(s, "\npod to pod (rows: from, columns: to)\n");
        let mut header = vec!["FROM".to_owned()];
        header.extend(names.iter().cloned());
        let rows = names
            .iter()
            .map(|from| {
                let mut row = vec![from.clone()];
                for to in names {
                    row.push(if from == to {
                        "·".into()
                    } else {
                        text(find(r, "pod", from, Some(to)))
                    });
                }
                row
            })
            .collect();
        s.push_str(&table(header, rows, width));
    }
    if r.kinds.contains(&Kind::Service) {
        let _ = write!(
            s,
            "\nglobal service (rows: from; columns: answers from each cluster, then affinity)\n"
        );
        let mut header = vec!["FROM".to_owned()];
        header.extend(names.iter().cloned());
        header.push("AFFINITY LOCAL".into());
        header.push("AFFINITY REMOTE".into());
        let rows = names
            .iter()
            .map(|from| {
                let mut row = vec![from.clone()];
                for to in names {
                    row.push(text(find(r, "service", from, Some(to))));
                }
                row.push(text(find(r, "affinity-local", from, None)));
                row.push(text(find(r, "affinity-remote", from, None)));
                row
            })
            .collect();
        s.push_str(&table(header, rows, width));
    }
    if r.kinds.contains(&Kind::Failover) {
        let _ = write!(s, "\nfailover (each cluster's replicas at 0, then back)\n");
        let rows = names
            .iter()
            .map(|c| {
                vec![
                    c.clone(),
                    text(find(r, "failover", c, None)),
                    text(find(r, "local-return", c, None)),
                ]
            })
            .collect();
        s.push_str(&table(
            vec![
                "CLUSTER".into(),
                "ANSWERED BY OTHERS".into(),
                "LOCAL AGAIN".into(),
            ],
            rows,
            width,
        ));
    }
    if r.kinds.contains(&Kind::Ingress) {
        let _ = write!(
            s,
            "\ningress-nginx (local replicas at 0 for the last two)\n"
        );
        let rows = names
            .iter()
            .map(|c| {
                vec![
                    c.clone(),
                    text(find(r, "ingress-baseline", c, None)),
                    text(find(r, "ingress-without-upstream", c, None)),
                    text(find(r, "ingress-with-upstream", c, None)),
                ]
            })
            .collect();
        s.push_str(&table(
            vec![
                "CLUSTER".into(),
                "BASELINE".into(),
                "WITHOUT SERVICE-UPSTREAM".into(),
                "WITH SERVICE-UPSTREAM".into(),
            ],
            rows,
            width,
        ));
    }
    let failed: Vec<&Cell> = r
        .cells
        .iter()
        .filter(|c| c.outcome == Outcome::Fail)
        .collect();
    if !failed.is_empty() {
        s.push_str("\nfailed\n");
        for c in failed {
            let _ = writeln!(s, "  {} {}: {}", c.check, c.label(), c.detail);
            if let Some(f) = &c.fix {
                let _ = writeln!(s, "    fix: {f}");
            }
        }
    }
    let skipped: Vec<&Cell> = r
        .cells
        .iter()
        .filter(|c| c.outcome == Outcome::Skip)
        .collect();
    if !skipped.is_empty() {
        s.push_str("\nskipped\n");
        let mut seen: Vec<(String, String)> = Vec::new();
        for c in skipped {
            let key = (c.label(), c.detail.clone());
            if !seen.contains(&key) {
                let _ = writeln!(s, "  {} {}: {}", c.kind.as_str(), key.0, key.1);
                seen.push(key);
            }
        }
    }
    if !r.lessons.is_empty() {
        s.push_str("\nthe reference article's lesson\n");
        for l in &r.lessons {
            let _ = writeln!(s, "  {}: {}", l.cluster, l.observed);
        }
        let _ = writeln!(s, "  fix: {}", r.lessons[0].fix);
    }
    if !r.errors.is_empty() {
        s.push_str("\nerrors\n");
        for e in &r.errors {
            let _ = writeln!(s, "  {e}");
        }
    }
    if !r.cleanup.is_empty() {
        s.push_str("\ncleanup\n");
        for c in &r.cleanup {
            let _ = writeln!(
                s,
                "  {}: namespace {} {}",
                c.cluster,
                c.namespace,
                outcome_word(&c.outcome)
            );
        }
        if r.cleanup
            .iter()
            .any(|c| !c.ok() || c.outcome == CleanupOutcome::Kept)
        {
            s.push_str("  remove leftovers of any run with `cmesh test --cleanup`\n");
        }
    }
    let (pass, fail, skip) = r.counts();
    let _ = writeln!(
        s,
        "\n{pass} of {} checks passed, {fail} failed, {skip} skipped{} ({:.1}s)",
        pass + fail + skip,
        if r.interrupted { "; INTERRUPTED" } else { "" },
        r.seconds
    );
    s
}

/// The report as one JSON document.
pub fn report_json(r: &Report) -> String {
    let mut v = serde_json::to_value(r).unwrap_or_default();
    v["ok"] = serde_json::json!(r.ok());
    let mut s = serde_json::to_string_pretty(&v).unwrap_or_default();
    s.push('\n');
    s
}

/// The report as JUnit XML (quick-junit): one test suite per part, one test case per cell
/// (a skipped cell as `<skipped>`, a failed one as `<failure>` with its fix), and a `cmesh.run`
/// suite for the run itself: each setup or run error as `<error>`, an interruption, and each
/// namespace cleaned up.
pub fn report_junit(r: &Report) -> String {
    use quick_junit::{NonSuccessKind, Report as Junit, TestCase, TestCaseStatus, TestSuite};

    let mut report = Junit::new(format!("cmesh test {}", r.run_id));
    report.set_time(std::time::Duration::from_secs_f64(r.seconds.max(0.0)));
    for kind in &r.kinds {
        let class = format!("cmesh.{}", kind.as_str());
        let mut suite = TestSuite::new(class.clone());
        for c in r.cells.iter().filter(|c| c.kind == *kind) {
            let status = match c.outcome {
                Outcome::Pass => TestCaseStatus::success(),
                Outcome::Skip => {
                    let mut s = TestCaseStatus::skipped();
                    s.set_message(c.detail.as_str());
                    s
                }
                Outcome::Fail => {
                    let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                    s.set_message(c.short.as_str()).set_type(c.check);
                    s.set_description(match &c.fix {
                        Some(fix) => format!("{}\nfix: {fix}", c.detail),
                        None => c.detail.clone(),
                    });
                    s
                }
            };
            let mut case = TestCase::new(format!("{} {}", c.check, c.label()), status);
            case.set_classname(class.as_str());
            if c.outcome == Outcome::Pass {
                case.set_system_out(c.detail.as_str());
            }
            suite.add_test_case(case);
        }
        report.add_test_suite(suite);
    }
    let mut run = TestSuite::new("cmesh.run");
    let case = |name: String, status: TestCaseStatus| {
        let mut c = TestCase::new(name, status);
        c.set_classname("cmesh.run");
        c
    };
    let non_success = |kind, message: &str, ty: &str| {
        let mut s = TestCaseStatus::non_success(kind);
        s.set_message(message).set_type(ty);
        s
    };
    for (i, e) in r.errors.iter().enumerate() {
        run.add_test_case(case(
            format!("error {}", i + 1),
            non_success(NonSuccessKind::Error, e, "error"),
        ));
    }
    if r.interrupted {
        run.add_test_case(case(
            "completed".into(),
            non_success(NonSuccessKind::Failure, "interrupted", "interrupted"),
        ));
    }
    for c in &r.cleanup {
        let name = format!("cleanup {} {}", c.cluster, c.namespace);
        match &c.outcome {
            CleanupOutcome::Failed { reason } => run.add_test_case(case(
                name,
                non_success(NonSuccessKind::Failure, reason, "cleanup"),
            )),
            other => {
                let mut ok = case(name, TestCaseStatus::success());
                ok.set_system_out(outcome_word(other));
                run.add_test_case(ok)
            }
        };
    }
    report.add_test_suite(run);
    let mut s = report.to_string().unwrap_or_default();
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

/// `test --cleanup`: what was found and removed.
pub fn cleanup_table(all: &[Cleanup], clusters: &[String], width: usize) -> String {
    if all.is_empty() {
        return format!("no leftovers of cmesh test in {}\n", clusters.join(", "));
    }
    let rows = all
        .iter()
        .map(|c| {
            vec![
                c.cluster.clone(),
                c.namespace.clone(),
                outcome_word(&c.outcome),
            ]
        })
        .collect();
    table(
        vec!["CLUSTER".into(), "NAMESPACE".into(), "RESULT".into()],
        rows,
        width,
    )
}

/// `test --cleanup -o json`.
pub fn cleanup_json(all: &[Cleanup]) -> String {
    let ok = all.iter().all(Cleanup::ok);
    let mut s = serde_json::to_string_pretty(&serde_json::json!({"ok": ok, "cleanup": all}))
        .unwrap_or_default();
    s.push('\n');
    s
}
