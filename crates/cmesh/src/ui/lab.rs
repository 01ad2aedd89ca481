//! `cmesh lab` output: one progress line per step and cluster (the phase it is in), the table
//! of lab clusters, and the host entries of a libvirt lab. Pure functions of data.

use std::fmt::Write as _;
use std::time::Duration;

/// What happened to one step, for its progress line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepEvent<'a> {
    /// The step starts.
    Started,
    /// It finished.
    Done(Duration),
    /// It failed (the error follows separately).
    Failed(Duration),
    /// It was not needed.
    Skipped(&'a str),
}

/// `k8s01    create cluster … done (41.2 s)`: the cluster (or `mesh` for shared parts), the
/// phase, what happened.
pub fn step_line(cluster: Option<&str>, phase: &str, event: &StepEvent<'_>) -> String {
    let who = cluster.unwrap_or("mesh");
    let what = match event {
        StepEvent::Started => "…".to_owned(),
        StepEvent::Done(d) => format!("done ({})", secs(*d)),
        StepEvent::Failed(d) => format!("FAILED ({})", secs(*d)),
        StepEvent::Skipped(why) => format!("skipped: {why}"),
    };
    format!("{who:<12} {phase:<18} {what}\n")
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// One row of the lab table (and of `lab status -o json`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    /// The cluster.
    pub cluster: String,
    /// `running`, `exists`, `absent`, or the VM's state (`shut off`, …).
    pub state: String,
    /// Whether `lab up` made it (`None` when it does not exist).
    pub made_by_lab_up: Option<bool>,
    /// What the agents use as the API server (`host:port`), if known.
    pub api_server: Option<String>,
    /// The clustermesh endpoint peers dial, if known.
    pub clustermesh: Option<String>,
    /// The kubeconfig, if written.
    pub kubeconfig: Option<String>,
}

/// `lab status -o json`: `{ok, clusters: [{cluster, state, madeByLabUp, apiServer,
/// clustermesh, kubeconfig}]}`; `ok` is false when a cluster is absent.
pub fn json(rows: &[Row]) -> String {
    let doc = serde_json::json!({
        "ok": rows.iter().all(|r| r.state != "absent"),
        "clusters": rows,
    });
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
    s.push('\n');
    s
}

/// The lab's clusters as an aligned table.
pub fn table(rows: &[Row]) -> String {
    let header = [
        "CLUSTER",
        "STATE",
        "API SERVER",
        "CLUSTERMESH",
        "KUBECONFIG",
    ];
    let cells: Vec<[String; 5]> = rows
        .iter()
        .map(|r| {
            let dash = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
            let state = match r.made_by_lab_up {
                Some(true) => format!("{} (made by lab up)", r.state),
                Some(false) => format!("{} (not made by lab up)", r.state),
                None => r.state.clone(),
            };
            [
                r.cluster.clone(),
                state,
                dash(&r.api_server),
                dash(&r.clustermesh),
                dash(&r.kubeconfig),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cols: &[&str]| {
        let mut l = String::new();
        for (i, (c, w)) in cols.iter().zip(widths).enumerate() {
            if i + 1 == cols.len() {
                l.push_str(c);
            } else {
                let _ = write!(l, "{c:<w$}  ");
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&header);
    for row in &cells {
        let cols: Vec<&str> = row.iter().map(String::as_str).collect();
        line(&cols);
    }
    out
}

/// The lines for /etc/hosts, between markers naming the mesh so that `--write-hosts` can
/// replace its own block and nothing else.
pub fn hosts_block(mesh: &str, entries: &[(String, Vec<String>)]) -> String {
    let mut out = format!("# cmesh lab {mesh} begin\n");
    for (ip, names) in entries {
        let _ = writeln!(out, "{ip} {}", names.join(" "));
    }
    let _ = writeln!(out, "# cmesh lab {mesh} end");
    out
}

/// `hosts` with the mesh's block replaced by `block` (or appended).
pub fn replace_hosts_block(hosts: &str, mesh: &str, block: &str) -> String {
    let begin = format!("# cmesh lab {mesh} begin\n");
    let end = format!("# cmesh lab {mesh} end\n");
    if let Some(b) = hosts.find(&begin)
        && let Some(e) = hosts[b..].find(&end)
    {
        let mut out = hosts[..b].to_owned();
        out.push_str(block);
        out.push_str(&hosts[b + e + end.len()..]);
        return out;
    }
    let mut out = hosts.to_owned();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(block);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines() {
        let lines = [
            step_line(None, "create network", &StepEvent::Started),
            step_line(
                None,
                "create network",
                &StepEvent::Done(Duration::from_millis(230)),
            ),
            step_line(
                Some("k8s01"),
                "create cluster",
                &StepEvent::Failed(Duration::from_secs(61)),
            ),
            step_line(
                Some("k8s02"),
                "create cluster",
                &StepEvent::Skipped("exists"),
            ),
        ]
        .concat();
        insta::assert_snapshot!(lines, @r"
        mesh         create network     …
        mesh         create network     done (0.2 s)
        k8s01        create cluster     FAILED (61.0 s)
        k8s02        create cluster     skipped: exists
        ");
    }

    #[test]
    fn lab_table() {
        let rows = vec![
            Row {
                cluster: "k8s01".into(),
                state: "running".into(),
                made_by_lab_up: Some(true),
                api_server: Some("172.18.0.2:6443".into()),
                clustermesh: Some("172.18.0.2:32379".into()),
                kubeconfig: Some("kubeconfig-k8s01".into()),
            },
            Row {
                cluster: "k8s02".into(),
                state: "absent".into(),
                made_by_lab_up: None,
                api_server: None,
                clustermesh: None,
                kubeconfig: None,
            },
        ];
        insta::assert_snapshot!(table(&rows), @r"
        CLUSTER  STATE                     API SERVER       CLUSTERMESH       KUBECONFIG
        k8s01    running (made by lab up)  172.18.0.2:6443  172.18.0.2:32379  kubeconfig-k8s01
        k8s02    absent                    -                -                 -
        ");
    }

    #[test]
    fn hosts_block_is_replaced_not_duplicated() {
        let block = hosts_block(
            "homelab",
            &[(
                "192.168.150.10".into(),
                vec!["k8s-lab-01.mylaptop.loc".into()],
            )],
        );
        let once = replace_hosts_block("127.0.0.1 localhost\n", "homelab", &block);
        let twice = replace_hosts_block(&once, "homelab", &block);
        assert_eq!(once, twice);
        assert_eq!(
            once,
            "127.0.0.1 localhost\n# cmesh lab homelab begin\n192.168.150.10 k8s-lab-01.mylaptop.loc\n# cmesh lab homelab end\n"
        );
        let other = hosts_block("homelab", &[]);
        let replaced = replace_hosts_block(&once, "homelab", &other);
        assert!(!replaced.contains("192.168.150.10"), "{replaced}");
        assert!(replaced.starts_with("127.0.0.1 localhost\n"));
    }
}
