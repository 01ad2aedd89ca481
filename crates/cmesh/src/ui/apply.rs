//! Text for `apply` and `disconnect`: one line per finished step (when not drawing progress
//! bars), the summary table and its JSON form (the plan is `ui::plan`'s). Pure functions of
//! their data.

use std::fmt::Write as _;

use comfy_table::{Table, presets};

use cmesh_core::apply::{Step, StepOutcome};

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
        // A leaving cluster: one row for its disconnection.
        let disconnecting: Vec<&Step> = steps
            .iter()
            .filter(|s| &s.cluster == c && s.phase.is_none() && s.step != "connect")
            .collect();
        if disconnecting.iter().any(|s| s.step == "disconnect") {
            let result = match disconnecting
                .iter()
                .find(|s| s.outcome == StepOutcome::Failed)
            {
                Some(f) => format!("FAILED at {}", f.step),
                None => "ok".into(),
            };
            t.add_row(vec![
                c.clone(),
                "disconnect".into(),
                truncate(&cell(&disconnecting, "delete-secrets"), 40),
                cell(&disconnecting, "disconnect"),
                truncate(&cell(&disconnecting, "rollout"), 40),
                truncate(&cell(&disconnecting, "restart"), 40),
                result,
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

/// `apply -o json`: the plan, every step, where they differ, and whether all succeeded.
pub fn summary_json(
    clusters: &[String],
    steps: &[Step],
    plan: serde_json::Value,
    deviations: &[String],
) -> serde_json::Value {
    let ok = !steps.iter().any(|s| s.outcome == StepOutcome::Failed);
    serde_json::json!({
        "ok": ok,
        "clusters": clusters,
        "plan": plan,
        "steps": steps,
        "deviations": deviations,
    })
}
