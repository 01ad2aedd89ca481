//! Text for `status`: the checks as a table, a one-line summary per cluster, and JSON. Pure.

use std::fmt::Write as _;

use cmesh_core::status::{Check, Outcome};
use comfy_table::{ContentArrangement, Table, presets};
use serde::Serialize;

/// One cluster's checks.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterChecks {
    /// Cluster.
    pub cluster: String,
    /// Its checks.
    pub checks: Vec<Check>,
}

fn word(o: Outcome) -> &'static str {
    match o {
        Outcome::Pass => "pass",
        Outcome::Warn => "warn",
        Outcome::Fail => "FAIL",
        Outcome::Skip => "skip",
    }
}

/// True if no check failed.
pub fn ok(all: &[ClusterChecks]) -> bool {
    all.iter()
        .all(|c| c.checks.iter().all(|k| k.outcome != Outcome::Fail))
}

/// The table, then per-cluster summaries.
pub fn table(all: &[ClusterChecks], width: usize) -> String {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING);
    t.set_content_arrangement(ContentArrangement::Dynamic);
    t.set_width(u16::try_from(width.max(60)).unwrap_or(100));
    t.set_header(vec!["CLUSTER", "CHECK", "RESULT", "REASON"]);
    for col in t.column_iter_mut() {
        col.set_padding((0, 2));
    }
    for c in all {
        for k in &c.checks {
            t.add_row(vec![
                c.cluster.clone(),
                k.name.to_owned(),
                word(k.outcome).to_owned(),
                // Reasons quote what servers and agents said.
                super::term::escape_line(&k.reason).into_owned(),
            ]);
        }
    }
    let mut s = String::new();
    for line in t.to_string().lines() {
        let _ = writeln!(s, "{}", line.trim_end());
    }
    s.push('\n');
    s.push_str(&summary(all));
    s
}

/// `k8s01: 12/12 checks pass`, one line per cluster.
pub fn summary(all: &[ClusterChecks]) -> String {
    let mut s = String::new();
    for c in all {
        let pass = c
            .checks
            .iter()
            .filter(|k| k.outcome == Outcome::Pass)
            .count();
        let failing: Vec<&str> = c
            .checks
            .iter()
            .filter(|k| k.outcome == Outcome::Fail)
            .map(|k| k.name)
            .collect();
        let warn = c
            .checks
            .iter()
            .filter(|k| k.outcome == Outcome::Warn)
            .count();
        let _ = write!(s, "{}: {pass}/{} checks pass", c.cluster, c.checks.len());
        if !failing.is_empty() {
            let _ = write!(s, ", failing: {}", failing.join(", "));
        }
        if warn > 0 {
            let _ = write!(s, ", {warn} warning(s)");
        }
        s.push('\n');
    }
    s
}

/// The JSON document.
pub fn json(all: &[ClusterChecks]) -> String {
    let doc = serde_json::json!({"ok": ok(all), "clusters": all});
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
    s.push('\n');
    s
}

/// One line while waiting: what still fails.
pub fn waiting_line(all: &[ClusterChecks], elapsed_secs: u64) -> String {
    let failing: Vec<String> = all
        .iter()
        .flat_map(|c| {
            c.checks
                .iter()
                .filter(|k| k.outcome == Outcome::Fail)
                .map(move |k| format!("{}/{}", c.cluster, k.name))
        })
        .collect();
    format!(
        "waiting ({elapsed_secs}s): {} failing: {}",
        failing.len(),
        failing.join(", ")
    )
}
