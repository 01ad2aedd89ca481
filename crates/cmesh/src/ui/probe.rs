//! Probe results as a table with diagnoses, or JSON. Pure functions of the reports.

use std::fmt::Write as _;

use cmesh_core::probe::{Outcome, Report};
use comfy_table::{Table, presets};
use serde::Serialize;

use super::term::escape_line;

fn cell(r: &Report, name: &str) -> String {
    let Some(s) = r.stages.iter().find(|s| s.name == name) else {
        return "-".into();
    };
    match (s.outcome, s.millis) {
        (Outcome::Ok, Some(ms)) => format!("ok {ms}ms"),
        (Outcome::Ok, None) => "ok".into(),
        (Outcome::Warn, _) => "warn".into(),
        (Outcome::Fail, _) => "FAIL".into(),
        (Outcome::Skip, _) => "-".into(),
    }
}

/// The table, then one block per failure with its cause and fix.
pub fn table(reports: &[Report], credentials: &str, width: usize) -> String {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING);
    t.set_header(vec![
        "CLUSTER", "FROM", "ENDPOINT", "DNS", "TCP", "TLS", "CERT", "ETCD", "CONFIG", "RESULT",
    ]);
    // kubectl style: no borders, two spaces between columns, nothing before the first.
    for col in t.column_iter_mut() {
        col.set_padding((0, 2));
    }
    for r in reports {
        t.add_row(vec![
            r.target.cluster.clone(),
            r.target.from.clone(),
            r.target.url.clone(),
            cell(r, "dns"),
            cell(r, "tcp"),
            cell(r, "tls"),
            cell(r, "certificate"),
            cell(r, "etcd"),
            cell(r, "cluster-config"),
            if r.ok() { "ok".into() } else { "FAILED".into() },
        ]);
    }
    let mut s = String::new();
    for line in t.to_string().lines() {
        let _ = writeln!(s, "{}", line.trim_end());
    }
    for r in reports {
        if let Some(d) = &r.diagnosis {
            let _ = writeln!(
                s,
                "\n{} as seen from {} ({}): {} failed",
                r.target.cluster, r.target.from, r.target.url, d.stage
            );
            // Causes quote what the endpoint sent (subjects, keys): never raw to the terminal.
            let _ = writeln!(s, "{}", wrap("  cause: ", &escape_line(&d.cause), width));
            let _ = writeln!(s, "{}", wrap("  fix:   ", &escape_line(&d.fix), width));
        }
    }
    let failed = reports.iter().filter(|r| !r.ok()).count();
    let _ = writeln!(
        s,
        "\n{} of {} endpoint probes passed (client certificates: {credentials})",
        reports.len() - failed,
        reports.len()
    );
    s
}

/// `label` then `text` wrapped at `width`, continuation lines aligned under the text.
fn wrap(label: &str, text: &str, width: usize) -> String {
    let width = width.max(40);
    let pad = " ".repeat(label.len());
    let mut out = String::new();
    let mut line = label.to_owned();
    for word in text.split_whitespace() {
        if line.len() + word.len() > width && line.len() > pad.len() {
            out.push_str(line.trim_end());
            out.push('\n');
            line.clone_from(&pad);
        }
        line.push_str(word);
        line.push(' ');
    }
    out.push_str(line.trim_end());
    out
}

/// The JSON document of `probe --output json`.
#[derive(Serialize)]
struct ProbeJson<'a> {
    ok: bool,
    credentials: &'a str,
    probes: &'a [Report],
}

/// JSON: every report with its stages, diagnosis and observations (certificates only, never
/// keys).
pub fn json(reports: &[Report], credentials: &str) -> String {
    let doc = ProbeJson {
        ok: reports.iter().all(Report::ok),
        credentials,
        probes: reports,
    };
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
    s.push('\n');
    s
}
