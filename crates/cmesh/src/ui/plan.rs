//! Text for `cmesh plan` (and the plan `apply` shows first): per cluster in apply's order,
//! what changes, with values redacted by the core. Pure functions of the plans.

use std::fmt::Write as _;

use cmesh_core::plan::{ClusterPlan, Role, SecretAction, ValueChange};
use cmesh_core::value::Change;

/// Values lines shown per cluster; `-o json` lists them all.
pub(crate) const VALUE_LINES: usize = 12;

fn role(r: Role) -> &'static str {
    match r {
        Role::Join => "joins the mesh",
        Role::Member => "meshed",
        Role::Leave => "leaves the mesh",
        Role::Unknown => "not observed",
    }
}

/// One values change: `+ key = after`, `- key`, `~ key: before → after`.
pub fn value_line(c: &ValueChange) -> String {
    match c.change {
        Change::Added => format!("+ {} = {}", c.path, c.after.as_deref().unwrap_or("")),
        Change::Removed => format!("- {}", c.path),
        Change::Changed => format!(
            "~ {}: {} → {}",
            c.path,
            c.before.as_deref().unwrap_or(""),
            c.after.as_deref().unwrap_or("")
        ),
    }
}

/// The plan as text.
pub fn table(plans: &[ClusterPlan], chart: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "Plan ({chart}), in the order apply takes the clusters:");
    for p in plans {
        if let Some(e) = &p.error {
            let _ = writeln!(s, "\n{}. {}\n   cannot plan: {e}", p.stage, p.cluster);
            continue;
        }
        let version = match (&p.chart_from, &p.chart_to) {
            (None, Some(to)) => format!("  cilium {to} (new)"),
            (Some(from), Some(to)) if from != to => format!("  cilium {from} → {to}"),
            (Some(v), _) => format!("  cilium {v}"),
            (None, None) if p.untouched.is_some() => String::new(),
            (None, None) => "  no release".into(),
        };
        let _ = writeln!(s, "\n{}. {}  {}{version}", p.stage, p.cluster, role(p.role));
        if let Some(r) = &p.refused {
            let _ = writeln!(s, "   refused: {r}");
            continue;
        }
        if let Some(u) = &p.untouched {
            let _ = writeln!(s, "   left alone: {u}");
        }
        if !p.changes() && p.untouched.is_none() {
            let _ = writeln!(s, "   no change");
            continue;
        }
        if !p.helm.is_empty() {
            let helm: Vec<String> = p
                .helm
                .iter()
                .map(|h| {
                    let phase = h.phase.map_or("disconnect", |x| x.as_str());
                    if h.why.is_empty() {
                        format!("{phase}: {}", h.action)
                    } else {
                        format!("{phase}: {} ({})", h.action, h.why)
                    }
                })
                .collect();
            let _ = writeln!(s, "   helm      {}", helm.join(" · "));
        }
        if !p.values.is_empty() {
            let _ = writeln!(s, "   values    {} key(s):", p.values.len());
            for c in p.values.iter().take(VALUE_LINES) {
                let _ = writeln!(s, "               {}", value_line(c));
            }
            if p.values.len() > VALUE_LINES {
                let _ = writeln!(
                    s,
                    "               … and {} more (-o json lists every key)",
                    p.values.len() - VALUE_LINES
                );
            }
        }
        let secrets: Vec<String> = p
            .secrets
            .iter()
            .filter(|x| x.action != SecretAction::Unchanged)
            .map(|x| {
                let what = match x.action {
                    SecretAction::Create => "create",
                    SecretAction::Update => "update",
                    SecretAction::Delete => "delete",
                    SecretAction::Unchanged => "keep",
                };
                if x.keys.is_empty() {
                    format!("{what} {}", x.name)
                } else {
                    format!("{what} {} ({})", x.name, x.keys.join(", "))
                }
            })
            .collect();
        if !secrets.is_empty() {
            let _ = writeln!(s, "   secrets   {}", secrets.join("; "));
        }
        for r in &p.restarts {
            let _ = writeln!(
                s,
                "   restart   {} ({}): {}",
                r.workload,
                r.phase.map_or("disconnect", |x| x.as_str()),
                r.why
            );
        }
        let mut peers: Vec<String> = p.peers_added.iter().map(|x| format!("+{x}")).collect();
        peers.extend(p.peers_removed.iter().map(|x| format!("-{x}")));
        if !peers.is_empty() {
            let _ = writeln!(s, "   peers     {}", peers.join(" "));
        }
    }
    let changing = plans.iter().filter(|p| p.changes()).count();
    let errors = plans.iter().filter(|p| p.error.is_some()).count();
    let refused = plans.iter().filter(|p| p.refused.is_some()).count();
    let _ = write!(s, "\n{changing} of {} cluster(s) change", plans.len());
    if errors > 0 {
        let _ = write!(s, ", {errors} could not be planned");
    }
    if refused > 0 {
        let _ = write!(s, ", {refused} refused");
    }
    s.push('\n');
    s
}

/// The plan as one JSON value (`plan -o json`, and `apply -o json`'s `plan`).
pub fn json(plans: &[ClusterPlan], chart: &str) -> serde_json::Value {
    serde_json::json!({
        "chart": chart,
        "changes": plans.iter().any(ClusterPlan::changes),
        "ok": plans.iter().all(|p| p.error.is_none() && p.refused.is_none()),
        "clusters": plans,
    })
}
