//! Rendering mesh.yaml diagnostics: human (miette snippets) and JSON. Pure functions of
//! their inputs, so they are snapshot-tested.

use std::fmt::Write as _;

use cmesh_core::diag::{Counts, Diagnostic};
use miette::{GraphicalReportHandler, GraphicalTheme};
use serde::Serialize;

use super::Style;

/// Renders diagnostics with source snippets, one after another, followed by a summary line.
pub fn render_human(file: &str, diags: &[Diagnostic], style: Style, summary_ok: &str) -> String {
    let mut out = render_list(diags, style);
    out.push_str(&summary(file, Counts::of(diags), summary_ok));
    out.push('\n');
    out
}

/// Most diagnostics shown with snippets; the rest are counted. A file with 100,000 unknown
/// keys would otherwise print for minutes (each snippet locates its line in the whole file).
pub const MAX_SHOWN: usize = 50;

/// Renders diagnostics with source snippets, each followed by a blank line: errors first, at
/// most [`MAX_SHOWN`], then a count of the rest.
pub fn render_list(diags: &[Diagnostic], style: Style) -> String {
    let theme = if style.color {
        GraphicalTheme::unicode()
    } else if style.unicode {
        GraphicalTheme::unicode_nocolor()
    } else {
        GraphicalTheme::ascii()
    };
    let handler = GraphicalReportHandler::new_themed(theme)
        .with_width(style.width)
        .with_links(false)
        .with_context_lines(1);
    let mut out = String::new();
    let errors = diags.iter().filter(|d| d.is_error());
    let warnings = diags.iter().filter(|d| !d.is_error());
    let shown: Vec<&Diagnostic> = errors.chain(warnings).take(MAX_SHOWN).collect();
    for d in &shown {
        let mut one = String::new();
        if handler.render_report(&mut one, *d).is_err() {
            // Rendering into a String only fails on a formatter bug; fall back to plain text.
            one = format!("{} [{}] {}\n", d.severity, d.code, d.message);
        }
        out.push_str(one.trim_end());
        out.push_str("\n\n");
    }
    if diags.len() > shown.len() {
        let rest = Counts::of(diags);
        let shown_errors = shown.iter().filter(|d| d.is_error()).count();
        let _ = writeln!(
            out,
            "… and {} more ({} error(s), {} warning(s)) not shown; `cmesh check -o json` lists every one\n",
            diags.len() - shown.len(),
            rest.errors - shown_errors,
            rest.warnings - (shown.len() - shown_errors)
        );
    }
    out
}

/// `mesh.yaml: 2 errors, 1 warning` or the ok text.
pub fn summary(file: &str, c: Counts, ok: &str) -> String {
    let mut s = String::new();
    if c.errors == 0 && c.warnings == 0 {
        let _ = write!(s, "{file}: {ok}");
        return s;
    }
    let _ = write!(s, "{file}: ");
    let mut parts = Vec::new();
    if c.errors > 0 {
        parts.push(format!("{} error{}", c.errors, plural(c.errors)));
    }
    if c.warnings > 0 {
        parts.push(format!("{} warning{}", c.warnings, plural(c.warnings)));
    }
    s.push_str(&parts.join(", "));
    if c.errors == 0 {
        let _ = write!(s, " ({ok})");
    }
    s
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// The JSON document of `check --output json`.
#[derive(Debug, Serialize)]
pub struct CheckJson<'a> {
    /// The file checked.
    pub file: &'a str,
    /// True if there is no error.
    pub valid: bool,
    /// Number of errors.
    pub errors: usize,
    /// Number of warnings.
    pub warnings: usize,
    /// Every diagnostic, with file in each for tools that flatten.
    pub diagnostics: Vec<DiagJson<'a>>,
}

/// One diagnostic in JSON, with the file name added.
#[derive(Debug, Serialize)]
pub struct DiagJson<'a> {
    /// File.
    pub file: &'a str,
    /// The diagnostic.
    #[serde(flatten)]
    pub diag: &'a Diagnostic,
}

/// Renders the JSON report (pretty, trailing newline).
pub fn render_json(file: &str, diags: &[Diagnostic]) -> String {
    let c = Counts::of(diags);
    let doc = CheckJson {
        file,
        valid: c.errors == 0,
        errors: c.errors,
        warnings: c.warnings,
        diagnostics: diags.iter().map(|d| DiagJson { file, diag: d }).collect(),
    };
    let mut s =
        serde_json::to_string_pretty(&doc).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    s.push('\n');
    s
}
