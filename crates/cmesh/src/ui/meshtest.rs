//! Text for `test`: the result matrices per part, the failures with their fixes, the article's
//! lesson and the cleanup, as a table; the same report as JSON, as JUnit XML and as one
//! self-contained HTML page; and the table of `test --cleanup`. Pure.

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

/// Text for HTML: `&`, `<`, `>`, `"` and `'` escaped, control characters (terminal escapes
/// from the clusters) dropped.
fn html_escape(t: &str) -> String {
    let mut out = String::with_capacity(t.len());
    for c in t.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' => {}
            c => out.push(c),
        }
    }
    out
}

fn outcome_class(c: Option<&Cell>) -> &'static str {
    match c.map(|c| c.outcome) {
        None => "none",
        Some(Outcome::Pass) => "pass",
        Some(Outcome::Fail) => "fail",
        Some(Outcome::Skip) => "skip",
    }
}

/// The anchor of a cell's detail.
fn cell_id(i: usize) -> String {
    format!("cell-{i}")
}

/// `test -o html`: one self-contained page (inline style, no script, nothing fetched): the
/// N×(N−1) pod-to-pod matrix as a heat map (green pass, red fail, grey skipped or not run),
/// a table per other check (rows: the cluster the requests came from), the lessons, errors and
/// cleanup, and every cell's detail, each matrix cell linking to its own.
pub fn report_html(r: &Report) -> String {
    let index = |c: &Cell| r.cells.iter().position(|x| std::ptr::eq(x, c)).unwrap_or(0);
    let verdict = if r.ok() { "passed" } else { "FAILED" };
    let mut s =
        String::from("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    let _ = writeln!(
        s,
        "<title>cmesh test {} {verdict}</title>",
        html_escape(&r.run_id)
    );
    s.push_str(
        "<style>\n\
         body{font-family:system-ui,sans-serif;margin:2em;color:#1f2328}\n\
         table{border-collapse:collapse;margin:1em 0}\n\
         th,td{border:1px solid #d0d7de;padding:.4em .7em;text-align:left;vertical-align:top}\n\
         td.pass{background:#dafbe1}td.fail{background:#ffebe9;font-weight:bold}\n\
         td.skip,td.none{background:#f6f8fa;color:#656d76}td.self{background:#eaeef2}\n\
         td a{color:inherit;text-decoration:none}\n\
         .verdict-passed{color:#1a7f37}.verdict-FAILED{color:#cf222e}\n\
         pre{white-space:pre-wrap;margin:0}\n\
         </style>\n</head>\n<body>\n",
    );
    let _ = writeln!(
        s,
        "<h1>cmesh test <span class=\"verdict-{verdict}\">{verdict}</span></h1>\n<p>run {}, namespace {}, clusters {}, {:.1} s</p>",
        html_escape(&r.run_id),
        html_escape(&r.namespace),
        html_escape(&r.clusters.join(", ")),
        r.seconds
    );
    let names = &r.clusters;
    if r.kinds.contains(&Kind::Pod) {
        s.push_str("<h2>Pod to pod</h2>\n<table id=\"pod-matrix\">\n<tr><th>from \\ to</th>");
        for to in names {
            let _ = write!(s, "<th>{}</th>", html_escape(to));
        }
        s.push_str("</tr>\n");
        for from in names {
            let _ = write!(s, "<tr><th>{}</th>", html_escape(from));
            for to in names {
                if from == to {
                    s.push_str("<td class=\"self\">·</td>");
                    continue;
                }
                let c = find(r, "pod", from, Some(to));
                let body = html_escape(&text(c));
                match c {
                    Some(cell) => {
                        let _ = write!(
                            s,
                            "<td class=\"{}\" title=\"{}\"><a href=\"#{}\">{body}</a></td>",
                            outcome_class(c),
                            html_escape(&cell.detail),
                            cell_id(index(cell))
                        );
                    }
                    None => {
                        let _ = write!(s, "<td class=\"none\">{body}</td>");
                    }
                }
            }
            s.push_str("</tr>\n");
        }
        s.push_str("</table>\n");
    }
    // The other checks, one row per cluster the requests came from.
    let mut checks: Vec<&'static str> = Vec::new();
    for c in &r.cells {
        if c.check != "pod" && !checks.contains(&c.check) {
            checks.push(c.check);
        }
    }
    if !checks.is_empty() {
        s.push_str(
            "<h2>Services, failover, ingress</h2>\n<table id=\"checks\">\n<tr><th>check</th>",
        );
        for from in names {
            let _ = write!(s, "<th>from {}</th>", html_escape(from));
        }
        s.push_str("</tr>\n");
        for check in &checks {
            let _ = write!(s, "<tr><th>{}</th>", html_escape(check));
            for from in names {
                let here: Vec<&Cell> = r
                    .cells
                    .iter()
                    .filter(|c| c.check == *check && &c.from == from)
                    .collect();
                // A row of a matrix-like check (service to each cluster) is judged by its worst.
                let worst = here
                    .iter()
                    .copied()
                    .find(|c| c.outcome == Outcome::Fail)
                    .or_else(|| here.first().copied());
                match worst {
                    Some(cell) => {
                        let _ = write!(
                            s,
                            "<td class=\"{}\" title=\"{}\"><a href=\"#{}\">{}</a></td>",
                            outcome_class(Some(cell)),
                            html_escape(&cell.detail),
                            cell_id(index(cell)),
                            html_escape(&text(Some(cell)))
                        );
                    }
                    None => s.push_str("<td class=\"none\">-</td>"),
                }
            }
            s.push_str("</tr>\n");
        }
        s.push_str("</table>\n");
    }
    if !r.lessons.is_empty() {
        s.push_str("<h2>The article's lesson</h2>\n<ul>\n");
        for l in &r.lessons {
            let _ = writeln!(
                s,
                "<li><b>{}</b>: {} <i>Fix:</i> {}</li>",
                html_escape(&l.cluster),
                html_escape(&l.observed),
                html_escape(&l.fix)
            );
        }
        s.push_str("</ul>\n");
    }
    if !r.errors.is_empty() || r.interrupted {
        s.push_str("<h2>What stopped the run</h2>\n<ul id=\"errors\">\n");
        for e in &r.errors {
            let _ = writeln!(s, "<li>{}</li>", html_escape(e));
        }
        if r.interrupted {
            s.push_str("<li>interrupted</li>\n");
        }
        s.push_str("</ul>\n");
    }
    s.push_str("<h2>Cleanup</h2>\n<table id=\"cleanup\">\n<tr><th>cluster</th><th>namespace</th><th>outcome</th></tr>\n");
    for c in &r.cleanup {
        let _ = writeln!(
            s,
            "<tr><td>{}</td><td>{}</td><td class=\"{}\">{}</td></tr>",
            html_escape(&c.cluster),
            html_escape(&c.namespace),
            if c.ok() { "pass" } else { "fail" },
            html_escape(&outcome_word(&c.outcome))
        );
    }
    s.push_str("</table>\n<h2>Every cell</h2>\n<table id=\"cells\">\n<tr><th>check</th><th>from</th><th>to</th><th>result</th><th>requests</th><th>detail</th><th>fix</th></tr>\n");
    for (i, c) in r.cells.iter().enumerate() {
        let _ = writeln!(
            s,
            "<tr id=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}/{}</td><td><pre>{}</pre></td><td>{}</td></tr>",
            cell_id(i),
            html_escape(c.check),
            html_escape(&c.from),
            html_escape(c.to.as_deref().unwrap_or("")),
            outcome_class(Some(c)),
            html_escape(&text(Some(c))),
            c.answered,
            c.requests,
            html_escape(&c.detail),
            html_escape(c.fix.as_deref().unwrap_or(""))
        );
    }
    s.push_str("</table>\n</body>\n</html>\n");
    s
}
