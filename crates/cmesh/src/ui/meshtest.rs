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

fn xml(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            // XML 1.0 allows only these control characters.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\r' | '\t') => {}
            c => o.push(c),
        }
    }
    o
}

/// The report as JUnit XML: one test suite per part, one test case per cell, plus the
/// run's errors and the cleanup.
pub fn report_junit(r: &Report) -> String {
    let (pass, fail, skip) = r.counts();
    let extra_fail =
        r.errors.len() + r.cleanup.iter().filter(|c| !c.ok()).count() + usize::from(r.interrupted);
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        s,
        "<testsuites name=\"cmesh test {}\" tests=\"{}\" failures=\"{}\" skipped=\"{skip}\" time=\"{:.3}\">",
        xml(&r.run_id),
        pass + fail + skip + r.errors.len() + r.cleanup.len() + usize::from(r.interrupted),
        fail + extra_fail,
        r.seconds
    );
    for kind in &r.kinds {
        let cells: Vec<&Cell> = r.cells.iter().filter(|c| c.kind == *kind).collect();
        let f = cells.iter().filter(|c| c.outcome == Outcome::Fail).count();
        let k = cells.iter().filter(|c| c.outcome == Outcome::Skip).count();
        let _ = writeln!(
            s,
            "  <testsuite name=\"cmesh.{}\" tests=\"{}\" failures=\"{f}\" skipped=\"{k}\">",
            kind.as_str(),
            cells.len()
        );
        for c in cells {
            let name = xml(&format!("{} {}", c.check, c.label()));
            let class = format!("cmesh.{}", kind.as_str());
            match c.outcome {
                Outcome::Pass => {
                    let _ = writeln!(s, "    <testcase classname=\"{class}\" name=\"{name}\">");
                    let _ = writeln!(s, "      <system-out>{}</system-out>", xml(&c.detail));
                    s.push_str("    </testcase>\n");
                }
                Outcome::Skip => {
                    let _ = writeln!(
                        s,
                        "    <testcase classname=\"{class}\" name=\"{name}\"><skipped message=\"{}\"/></testcase>",
                        xml(&c.detail)
                    );
                }
                Outcome::Fail => {
                    let _ = writeln!(s, "    <testcase classname=\"{class}\" name=\"{name}\">");
                    let body = match &c.fix {
                        Some(fix) => format!("{}\nfix: {fix}", c.detail),
                        None => c.detail.clone(),
                    };
                    let _ = writeln!(
                        s,
                        "      <failure message=\"{}\" type=\"{}\">{}</failure>",
                        xml(&c.short),
                        xml(c.check),
                        xml(&body)
                    );
                    s.push_str("    </testcase>\n");
                }
            }
        }
        s.push_str("  </testsuite>\n");
    }
    let run_cases = r.errors.len() + usize::from(r.interrupted);
    let _ = writeln!(
        s,
        "  <testsuite name=\"cmesh.run\" tests=\"{}\" failures=\"{}\" skipped=\"0\">",
        run_cases + r.cleanup.len(),
        extra_fail
    );
    for (i, e) in r.errors.iter().enumerate() {
        let _ = writeln!(
            s,
            "    <testcase classname=\"cmesh.run\" name=\"error {}\"><failure message=\"{}\" type=\"error\"/></testcase>",
            i + 1,
            xml(e)
        );
    }
    if r.interrupted {
        s.push_str("    <testcase classname=\"cmesh.run\" name=\"completed\"><failure message=\"interrupted\" type=\"interrupted\"/></testcase>\n");
    }
    for c in &r.cleanup {
        let name = xml(&format!("cleanup {} {}", c.cluster, c.namespace));
        match &c.outcome {
            CleanupOutcome::Failed { reason } => {
                let _ = writeln!(
                    s,
                    "    <testcase classname=\"cmesh.run\" name=\"{name}\"><failure message=\"{}\" type=\"cleanup\"/></testcase>",
                    xml(reason)
                );
            }
            other => {
                let _ = writeln!(
                    s,
                    "    <testcase classname=\"cmesh.run\" name=\"{name}\"><system-out>{}</system-out></testcase>",
                    xml(&outcome_word(other))
                );
            }
        }
    }
    s.push_str("  </testsuite>\n</testsuites>\n");
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
