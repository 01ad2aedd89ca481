//! Text for `status`: the checks as a table, a one-line summary per cluster, JSON, and the
//! mesh's state as a Mermaid or Graphviz picture (each peering coloured by its state). Pure.

use std::fmt::Write as _;

use cmesh_core::status::{Check, Outcome, PeerState, Peering};
use comfy_table::{ContentArrangement, Table, presets};
use serde::Serialize;

/// One cluster's checks.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterChecks {
    /// Cluster.
    pub cluster: String,
    /// Its checks.
    pub checks: Vec<Check>,
    /// Its agents' view of each peer.
    pub peerings: Vec<Peering>,
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

/// How many of a cluster's checks pass, and the names of those that fail.
fn tally(c: &ClusterChecks) -> (usize, Vec<&'static str>) {
    let pass = c
        .checks
        .iter()
        .filter(|k| k.outcome == Outcome::Pass)
        .count();
    let failing = c
        .checks
        .iter()
        .filter(|k| k.outcome == Outcome::Fail)
        .map(|k| k.name)
        .collect();
    (pass, failing)
}

/// `k8s01: 12/12 checks pass`, one line per cluster.
pub fn summary(all: &[ClusterChecks]) -> String {
    let mut s = String::new();
    for c in all {
        let (pass, failing) = tally(c);
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

/// Most clusters whose peerings are all drawn; above, only those not ready (a full mesh of
/// N clusters has N×(N−1) directed peerings, a picture of nothing but lines).
pub const PICTURE_EDGES_UP_TO: usize = 16;

const GREEN: &str = "#2da44e";
const RED: &str = "#cf222e";
const GREY: &str = "#8c959f";

fn state_word(s: PeerState) -> &'static str {
    match s {
        PeerState::Ready => "ready",
        PeerState::NotReady => "not ready",
        PeerState::Unknown => "unknown",
    }
}

fn state_colour(s: PeerState) -> &'static str {
    match s {
        PeerState::Ready => GREEN,
        PeerState::NotReady => RED,
        PeerState::Unknown => GREY,
    }
}

/// The clusters to draw (those checked, then peers only named by a peering), each with its
/// one-line verdict (`None` for a peer that was not checked), and the peerings to draw with
/// how many were left out.
struct Picture<'a> {
    nodes: Vec<(&'a str, Option<String>, bool)>,
    edges: Vec<&'a Peering>,
    left_out: usize,
}

fn picture(all: &[ClusterChecks]) -> Picture<'_> {
    let mut nodes: Vec<(&str, Option<String>, bool)> = Vec::new();
    for c in all {
        let (pass, failing) = tally(c);
        let verdict = if failing.is_empty() {
            format!("{pass}/{} checks pass", c.checks.len())
        } else {
            format!("failing: {}", failing.join(", "))
        };
        nodes.push((&c.cluster, Some(verdict), failing.is_empty()));
    }
    for p in all.iter().flat_map(|c| &c.peerings) {
        if !nodes.iter().any(|(n, _, _)| *n == p.to) {
            nodes.push((&p.to, None, true));
        }
    }
    let every: Vec<&Peering> = all.iter().flat_map(|c| &c.peerings).collect();
    let draw_all = nodes.len() <= PICTURE_EDGES_UP_TO;
    let edges: Vec<&Peering> = every
        .iter()
        .copied()
        .filter(|p| draw_all || p.state != PeerState::Ready)
        .collect();
    Picture {
        left_out: every.len() - edges.len(),
        nodes,
        edges,
    }
}

/// The mesh's state as a Mermaid flowchart: each cluster with its verdict (red when a check
/// fails), an arrow per peering from the cluster whose agents report to the peer, green when
/// ready, red when not, grey when unknown. Names are DNS labels; reasons (servers' words) are
/// left out of the picture.
pub fn mermaid(all: &[ClusterChecks]) -> String {
    let pic = picture(all);
    let id = |name: &str| {
        pic.nodes
            .iter()
            .position(|(n, _, _)| *n == name)
            .unwrap_or(0)
    };
    let mut s = String::from("graph LR\n");
    for (i, (name, verdict, ok)) in pic.nodes.iter().enumerate() {
        match verdict {
            Some(v) => {
                let _ = writeln!(s, "  c{i}[\"<b>{name}</b><br/>{}\"]", mermaid_text(v));
            }
            None => {
                let _ = writeln!(s, "  c{i}[\"{name}<br/>(not checked)\"]");
            }
        }
        let _ = writeln!(
            s,
            "  style c{i} stroke:{},stroke-width:2px",
            if *ok { GREEN } else { RED }
        );
    }
    for p in &pic.edges {
        let _ = writeln!(
            s,
            "  c{} -->|{}| c{}",
            id(&p.from),
            state_word(p.state),
            id(&p.to)
        );
    }
    for (n, p) in pic.edges.iter().enumerate() {
        let _ = writeln!(
            s,
            "  linkStyle {n} stroke:{},stroke-width:2px",
            state_colour(p.state)
        );
    }
    if pic.left_out > 0 {
        let _ = writeln!(
            s,
            "  %% {} ready peerings not drawn (more than {PICTURE_EDGES_UP_TO} clusters)",
            pic.left_out
        );
    }
    s
}

/// Mermaid text inside a quoted label: no quotes, brackets or markup from the data.
fn mermaid_text(t: &str) -> String {
    t.chars()
        .map(|c| match c {
            '"' | '<' | '>' | '[' | ']' | '{' | '}' | '|' | '#' | ';' => ' ',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect()
}

/// The mesh's state as a Graphviz digraph (`cmesh status -o dot | dot -Tsvg`), coloured as
/// [`mermaid`]; each arrow's tooltip carries the agents' reason.
pub fn dot(all: &[ClusterChecks]) -> String {
    let pic = picture(all);
    let mut s = String::from(
        "digraph mesh {\n  rankdir=LR;\n  node [shape=box, style=rounded, penwidth=2];\n  edge [penwidth=2];\n",
    );
    for (name, verdict, ok) in &pic.nodes {
        let label = match verdict {
            Some(v) => format!("{name}\\n{v}"),
            None => format!("{name}\\n(not checked)"),
        };
        let _ = writeln!(
            s,
            "  \"{}\" [label=\"{}\", color=\"{}\"];",
            dot_text(name),
            dot_text(&label).replace("\\\\n", "\\n"),
            if *ok { GREEN } else { RED }
        );
    }
    for p in &pic.edges {
        let _ = writeln!(
            s,
            "  \"{}\" -> \"{}\" [label=\"{}\", color=\"{}\", tooltip=\"{}\"];",
            dot_text(&p.from),
            dot_text(&p.to),
            state_word(p.state),
            state_colour(p.state),
            dot_text(&p.reason)
        );
    }
    if pic.left_out > 0 {
        let _ = writeln!(
            s,
            "  // {} ready peerings not drawn (more than {PICTURE_EDGES_UP_TO} clusters)",
            pic.left_out
        );
    }
    s.push_str("}\n");
    s
}

/// Text inside a DOT double-quoted string: backslashes and quotes escaped, control
/// characters (escape sequences from a hostile server) dropped.
fn dot_text(t: &str) -> String {
    let mut out = String::with_capacity(t.len());
    for c in t.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod picture_tests {
    use super::*;

    fn checks(name: &str, fail: bool, peers: &[(&str, PeerState)]) -> ClusterChecks {
        ClusterChecks {
            cluster: name.into(),
            checks: vec![
                Check {
                    name: "api",
                    outcome: Outcome::Pass,
                    reason: "reachable".into(),
                },
                Check {
                    name: "agents-clustermesh",
                    outcome: if fail { Outcome::Fail } else { Outcome::Pass },
                    reason: "x".into(),
                },
            ],
            peerings: peers
                .iter()
                .map(|(to, state)| Peering {
                    from: name.into(),
                    to: (*to).into(),
                    state: *state,
                    reason: "cilium-x: \"quoted\" \\ \u{1b}[2J".into(),
                })
                .collect(),
        }
    }

    fn three() -> Vec<ClusterChecks> {
        vec![
            checks(
                "k8s01",
                false,
                &[("k8s02", PeerState::Ready), ("k8s03", PeerState::Ready)],
            ),
            checks(
                "k8s02",
                true,
                &[("k8s01", PeerState::Ready), ("k8s03", PeerState::NotReady)],
            ),
            checks(
                "k8s03",
                false,
                &[("k8s01", PeerState::Unknown), ("k8s02", PeerState::Ready)],
            ),
        ]
    }

    #[test]
    fn mermaid_colours_each_peering_by_its_state() {
        insta::assert_snapshot!("status_mermaid", mermaid(&three()));
    }

    #[test]
    fn dot_colours_each_peering_and_escapes_reasons() {
        let d = dot(&three());
        insta::assert_snapshot!("status_dot", d);
        assert!(!d.contains('\u{1b}'));
        assert!(
            d.contains(r#"tooltip="cilium-x: \"quoted\" \\  [2J""#),
            "{d}"
        );
    }

    #[test]
    fn beyond_sixteen_clusters_only_what_is_not_ready_is_drawn() {
        let names: Vec<String> = (1..=17).map(|i| format!("c{i:02}")).collect();
        let all: Vec<ClusterChecks> = names
            .iter()
            .map(|n| {
                let peers: Vec<(&str, PeerState)> = names
                    .iter()
                    .filter(|p| *p != n)
                    .map(|p| {
                        let bad = n == "c01" && p == "c02";
                        (
                            p.as_str(),
                            if bad {
                                PeerState::NotReady
                            } else {
                                PeerState::Ready
                            },
                        )
                    })
                    .collect();
                checks(n, false, &peers)
            })
            .collect();
        let m = mermaid(&all);
        assert_eq!(m.matches(" -->|").count(), 1, "{m}");
        assert!(m.contains("c0 -->|not ready| c1"), "{m}");
        assert!(m.contains("%% 271 ready peerings not drawn"), "{m}");
        let d = dot(&all);
        assert_eq!(d.matches(" -> ").count(), 1, "{d}");
    }
}
