//! Text for `cmesh upgrade --plan` (and the plan `upgrade` shows first): each step with the
//! mesh.yaml settings it writes, Cilium's changes with what cmesh does, the values the renderer
//! changes (clusters whose changes are alike shown once) and any problem. Pure functions of the
//! core's [`Plan`].

use std::fmt::Write as _;

use cmesh_core::upgrade::Plan;

use super::plan::{VALUE_LINES, value_line};

/// The plan as text.
pub fn table(plan: &Plan) -> String {
    let mut s = String::new();
    if plan.steps.is_empty() {
        let _ = writeln!(s, "The mesh is at Cilium {}: nothing to upgrade.", plan.to);
        return s;
    }
    let _ = writeln!(
        s,
        "Upgrade {} → {}: {} step(s), one minor release at a time. Each step sets cilium.version in mesh.yaml, then applies the clusters one at a time, each followed by a status gate on every cluster.",
        plan.from,
        plan.to,
        plan.steps.len()
    );
    for (i, step) in plan.steps.iter().enumerate() {
        let resume = if step.resume {
            " (finishing the step a previous run stopped in)"
        } else {
            ""
        };
        let _ = writeln!(s, "\nStep {}: {} → {}{resume}", i + 1, step.from, step.to);
        let mut sets = vec![format!("cilium.version {}", step.to)];
        sets.extend(step.pins.iter().map(|p| format!("{} {}", p.field, p.value)));
        if !step.resume {
            let _ = writeln!(s, "  mesh.yaml  {}", sets.join(", "));
        }
        for p in &step.pins {
            let _ = writeln!(s, "    pinned: {}", p.why);
        }
        if !step.changes.is_empty() {
            let _ = writeln!(s, "  Cilium's changes:");
            for c in &step.changes {
                let _ = writeln!(
                    s,
                    "    {} [{}] {}: {}",
                    c.minor,
                    c.action.as_str(),
                    c.what,
                    c.cmesh
                );
            }
        }
        // Clusters whose changes are the same (apart from nothing) are shown once.
        let mut groups: Vec<(Vec<&str>, &Vec<cmesh_core::plan::ValueChange>)> = Vec::new();
        for c in &step.clusters {
            match groups.iter_mut().find(|(_, v)| **v == c.values) {
                Some((names, _)) => names.push(&c.cluster),
                None => groups.push((vec![&c.cluster], &c.values)),
            }
        }
        for (names, values) in groups {
            let who = if names.len() == step.clusters.len() && names.len() > 1 {
                "every cluster".to_owned()
            } else {
                names.join(", ")
            };
            if values.is_empty() {
                let _ = writeln!(s, "  values     {who}: no change");
                continue;
            }
            let _ = writeln!(s, "  values     {who}: {} key(s)", values.len());
            for c in values.iter().take(VALUE_LINES) {
                let _ = writeln!(s, "               {}", value_line(c));
            }
            if values.len() > VALUE_LINES {
                let _ = writeln!(
                    s,
                    "               … and {} more (-o json lists every key)",
                    values.len() - VALUE_LINES
                );
            }
        }
        for c in &step.certificates {
            let action = match c.action {
                cmesh_core::pki::store::Action::Issued => "issued",
                _ => "re-issued",
            };
            let _ = writeln!(
                s,
                "  secret     {} {}: certificate {action} ({})",
                c.cluster, c.secret, c.reason
            );
        }
        for p in &step.problems {
            let _ = writeln!(s, "  problem    {p}");
        }
    }
    if !plan.ok() {
        let _ = writeln!(
            s,
            "\nThe upgrade cannot go ahead: fix mesh.yaml for the step with a problem (check at that version says the same), then plan again."
        );
    }
    s
}

/// The plan as one JSON value.
pub fn json(plan: &Plan) -> serde_json::Value {
    let mut v = serde_json::to_value(plan).unwrap_or(serde_json::Value::Null);
    v["ok"] = serde_json::json!(plan.ok());
    v
}
