//! Text for `apply`: one line per finished step (when not drawing progress bars), the summary
//! table, and the `--dry-run` plan. Pure functions of their data.

use std::fmt::Write as _;

use cmesh_core::value::Change;
use comfy_table::{Table, presets};

use cmesh_core::apply::{DryRun, Step, StepOutcome};

/// `k8s01  mesh  helm  upgraded (1.2s)`.
pub fn step_line(s: &Step) -> String {
    let phase = s.phase.map_or("-", |p| p.as_str());
    let mark = match s.outcome {
        StepOutcome::Ok => "ok",
        StepOutcome::Skipped => "skip",
        StepOutcome::Failed => "FAILED",
    };
    format!(
        "{}  {phase}  {}  {mark}: {} ({:.1}s)",
        s.cluster,
        s.step,
        s.detail,
        s.millis as f64 / 1000.0
    )
}

fn cell(steps: &[&Step], step: &str) -> String {
    match steps.iter().find(|s| s.step == step) {
        None => "-".into(),
        Some(s) => match s.outcome {
            StepOutcome::Failed => "FAILED".into(),
            StepOutcome::Skipped => format!("skip ({})", s.detail),
            StepOutcome::Ok => s.detail.clone(),
        },
    }
}

/// The summary: one row per cluster and phase, then the failures in full.
pub fn summary(
    clusters: &[String],
    phases: &[cmesh_core::render::Phase],
    steps: &[Step],
) -> String {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING);
    t.set_header(vec![
        "CLUSTER", "PHASE", "SECRETS", "HELM", "ROLLOUT", "RESTART", "RESULT",
    ]);
    for col in t.column_iter_mut() {
        col.set_padding((0, 2));
    }
    for c in clusters {
        let connect = steps
            .iter()
            .find(|s| &s.cluster == c && s.step == "connect");
        if let Some(s) = connect.filter(|s| s.outcome == StepOutcome::Failed) {
            t.add_row(vec![
                c.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                format!("FAILED at connect: {}", truncate(&s.detail, 60)),
            ]);
            continue;
        }
        for p in phases {
            let mine: Vec<&Step> = steps
                .iter()
                .filter(|s| &s.cluster == c && s.phase == Some(*p))
                .collect();
            if mine.is_empty() {
                t.add_row(vec![
                    c.clone(),
                    p.as_str().into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "not run".into(),
                ]);
                continue;
            }
            let failed = mine.iter().find(|s| s.outcome == StepOutcome::Failed);
            let result = match failed {
                Some(f) => format!("FAILED at {}", f.step),
                None => "ok".into(),
            };
            t.add_row(vec![
                c.clone(),
                p.as_str().into(),
                cell(&mine, "secrets"),
                cell(&mine, "helm"),
                truncate(&cell(&mine, "rollout"), 40),
                truncate(&cell(&mine, "restart"), 40),
                result,
            ]);
        }
    }
    let mut s = String::new();
    for line in t.to_string().lines() {
        let _ = writeln!(s, "{}", line.trim_end());
    }
    for f in steps.iter().filter(|s| s.outcome == StepOutcome::Failed) {
        let _ = writeln!(
            s,
            "\n{} ({}) failed at {}:\n  {}",
            f.cluster,
            f.phase.map_or("connect", |p| p.as_str()),
            f.step,
            f.detail.replace('\n', "\n  ")
        );
    }
    s
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

/// The `--dry-run` plan.
pub fn dry_run(plans: &[DryRun], chart: &str) -> String {
    let mut s = String::new();
    for d in plans {
        let _ = writeln!(s, "{} (phase {}):", d.cluster, d.phase.as_str());
        if let Some(e) = &d.error {
            let _ = writeln!(s, "  cannot plan: {e}\n");
            continue;
        }
        if d.secrets.is_empty() {
            let _ = writeln!(s, "  secrets: none");
        } else {
            let _ = writeln!(s, "  secrets: server-side apply {}", d.secrets.join(", "));
        }
        let _ = writeln!(s, "  helm:    {} ({chart})", d.helm);
        if !d.changes.is_empty() {
            let _ = writeln!(
                s,
                "  values:  {} change(s) against the release:",
                d.changes.len()
            );
            for (path, c) in &d.changes {
                let mark = match c {
                    Change::Added => '+',
                    Change::Removed => '-',
                    Change::Changed => '~',
                };
                let _ = writeln!(s, "    {mark} {path}");
            }
        } else if d.helm.starts_with("upgrade") {
            let _ = writeln!(s, "  values:  unchanged");
        }
        let _ = writeln!(
            s,
            "  restart: {}\n",
            d.restart
                .as_deref()
                .map_or_else(|| "no".to_owned(), |r| format!("yes, {r}"))
        );
    }
    s.push_str("dry run: nothing was changed\n");
    s
}

/// `apply -o json`: every step, and whether all succeeded.
pub fn summary_json(clusters: &[String], steps: &[Step]) -> String {
    let ok = !steps.iter().any(|s| s.outcome == StepOutcome::Failed);
    let mut s = serde_json::to_string_pretty(&serde_json::json!({
        "ok": ok,
        "clusters": clusters,
        "steps": steps,
    }))
    .unwrap_or_default();
    s.push('\n');
    s
}

/// `apply --dry-run -o json`: the plan per cluster and phase, each values change as
/// `{path, change}`.
pub fn dry_run_json(plans: &[DryRun], chart: &str) -> String {
    let plans: Vec<serde_json::Value> = plans
        .iter()
        .map(|p| {
            serde_json::json!({
                "cluster": p.cluster,
                "phase": p.phase,
                "secrets": p.secrets,
                "helm": p.helm,
                "changes": p.changes.iter().map(|(path, change)| serde_json::json!({"path": path, "change": change})).collect::<Vec<_>>(),
                "restart": p.restart,
                "error": p.error,
            })
        })
        .collect();
    let ok = plans.iter().all(|p| p["error"].is_null());
    let mut s = serde_json::to_string_pretty(&serde_json::json!({
        "ok": ok,
        "dryRun": true,
        "chart": chart,
        "plans": plans,
    }))
    .unwrap_or_default();
    s.push('\n');
    s
}
