//! Text for `lint`: findings with where and how to fix, the rules that could not run, and
//! JSON. Pure.

use std::fmt::Write as _;

use cmesh_core::diag::Severity;
use cmesh_core::lint::Report;

use super::{Style, paint};

/// The human report. `problems` are inputs that could not be read (files, clusters).
pub fn table(r: &Report, problems: &[String], style: Style) -> String {
    let mut s = String::new();
    for p in problems {
        let _ = writeln!(s, "{}: {p}", paint(style, "error", "1;31"));
    }
    if !problems.is_empty() {
        s.push('\n');
    }
    for f in &r.findings {
        let (word, code) = match f.severity {
            Severity::Error => ("error", "1;31"),
            Severity::Warning => ("warning", "1;33"),
        };
        let clusters = if f.clusters.is_empty() {
            String::new()
        } else {
            format!(" in {}", f.clusters.join(", "))
        };
        let _ = writeln!(
            s,
            "{}[{}]: {}{clusters}",
            paint(style, word, code),
            f.code,
            f.object
        );
        let at: Vec<String> = f.at.iter().map(ToString::to_string).collect();
        if !at.is_empty() {
            let _ = writeln!(s, "  --> {}", at.join(", "));
        }
        let _ = writeln!(s, "  {}", f.message);
        let _ = writeln!(s, "  fix: {}\n", f.fix);
    }
    let errors = r
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    let warnings = r.findings.len() - errors;
    let e = &r.examined;
    let _ = writeln!(
        s,
        "{errors} error(s), {warnings} warning(s) in {} Service(s), {} Ingress(es), {} namespace(s){}",
        e.services,
        e.ingresses,
        e.namespaces,
        if e.policies > 0 {
            format!(", {} network policy(ies)", e.policies)
        } else {
            String::new()
        }
    );
    for k in &r.skipped {
        let _ = writeln!(s, "not checked: {} ({})", k.codes.join(", "), k.reason);
    }
    s
}

/// The report as one JSON document.
pub fn json(r: &Report, problems: &[String]) -> String {
    let v = serde_json::json!({
        "ok": r.ok() && problems.is_empty(),
        "findings": r.findings,
        "skipped": r.skipped,
        "examined": r.examined,
        "problems": problems,
    });
    let mut s = serde_json::to_string_pretty(&v).unwrap_or_default();
    s.push('\n');
    s
}
