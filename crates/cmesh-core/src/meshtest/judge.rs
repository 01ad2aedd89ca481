//! How each result cell of a run is judged from the requests it made, with the cause and the
//! fix of every failure.

use std::collections::BTreeMap;

use serde::Serialize;

use super::curl::{Attempt, median_ms};
use super::{Kind, Lesson};
use crate::lint::annotations as a;

/// A cell's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// As expected.
    Pass,
    /// Not as expected.
    Fail,
    /// Not run (and why is in the detail).
    Skip,
}

/// One result: a check from one cluster (to another, for matrices).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Cell {
    /// Which part of the suite.
    pub kind: Kind,
    /// The check: pod, service, service-errors, affinity-local, affinity-remote, failover,
    /// local-return, ingress-baseline, ingress-without-upstream, ingress-with-upstream.
    pub check: &'static str,
    /// The cluster the requests came from.
    pub from: String,
    /// The cluster they were meant to reach (matrix cells).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Result.
    pub outcome: Outcome,
    /// A few words for the matrix.
    pub short: String,
    /// What happened.
    pub detail: String,
    /// How to fix a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// Requests made.
    pub requests: usize,
    /// Requests the test server answered.
    pub answered: usize,
    /// Answers per cluster.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub answers: BTreeMap<String, usize>,
    /// Median time of the answered requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
}

impl Cell {
    fn new(
        kind: Kind,
        check: &'static str,
        from: &str,
        to: Option<&str>,
        attempts: &[Attempt],
    ) -> Cell {
        let mut answers = BTreeMap::new();
        for c in attempts
            .iter()
            .filter(|a| a.answered())
            .filter_map(|a| a.cluster.clone())
        {
            *answers.entry(c).or_insert(0) += 1;
        }
        Cell {
            kind,
            check,
            from: from.to_owned(),
            to: to.map(str::to_owned),
            outcome: Outcome::Pass,
            short: String::new(),
            detail: String::new(),
            fix: None,
            requests: attempts.len(),
            answered: attempts.iter().filter(|a| a.answered()).count(),
            answers,
            latency_ms: median_ms(attempts),
        }
    }

    // `&mut self` so that the arguments may read the cell (two-phase borrows); cells are small.
    fn pass(&mut self, short: String, detail: String) -> Cell {
        self.outcome = Outcome::Pass;
        self.short = short;
        self.detail = detail;
        self.clone()
    }

    fn fail(&mut self, short: &str, detail: String, fix: String) -> Cell {
        self.outcome = Outcome::Fail;
        self.short = short.to_owned();
        self.detail = detail;
        self.fix = Some(fix);
        self.clone()
    }

    /// `k8s01 → k8s02`, or the cluster alone.
    pub fn label(&self) -> String {
        match &self.to {
            Some(t) => format!("{} → {t}", self.from),
            None => self.from.clone(),
        }
    }
}

/// A cell that did not run: skipped (`fail == false`) or failed because what it needs failed.
pub fn not_run(
    kind: Kind,
    check: &'static str,
    from: &str,
    to: Option<&str>,
    why: &str,
    fail: bool,
) -> Cell {
    let mut c = Cell::new(kind, check, from, to, &[]);
    if fail {
        c.fail(
            "not run",
            why.to_owned(),
            "fix the problem above and run again".into(),
        )
    } else {
        let mut c = c;
        c.outcome = Outcome::Skip;
        c.short = "skip".into();
        c.detail = why.to_owned();
        c
    }
}

fn ms(v: Option<f64>) -> String {
    match v {
        Some(m) if m < 10.0 => format!("{m:.1}ms"),
        Some(m) => format!("{m:.0}ms"),
        None => "-".into(),
    }
}

/// "3 of 16 failed: (28) Connection timed out … (3)".
fn failures(attempts: &[Attempt]) -> String {
    let mut kinds: Vec<(String, usize)> = Vec::new();
    for a in attempts.iter().filter(|a| !a.answered()) {
        let p = a.problem();
        // Timings differ per attempt; group by the message without numbers after "after".
        let key = match p.find(" after ") {
            Some(i) => p[..i].to_owned(),
            None => p,
        };
        match kinds.iter_mut().find(|(k, _)| *k == key) {
            Some(e) => e.1 += 1,
            None => kinds.push((key, 1)),
        }
    }
    let n: usize = kinds.iter().map(|k| k.1).sum();
    let list: Vec<String> = kinds.iter().map(|(k, c)| format!("{k} ({c}×)")).collect();
    format!("{n} of {} failed: {}", attempts.len(), list.join("; "))
}

fn answers_text(answers: &BTreeMap<String, usize>) -> String {
    if answers.is_empty() {
        return "none".into();
    }
    answers
        .iter()
        .map(|(c, n)| format!("{c} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn dominant_exit(attempts: &[Attempt]) -> Option<i32> {
    let mut counts: BTreeMap<i32, usize> = BTreeMap::new();
    for a in attempts.iter().filter(|a| !a.answered()) {
        *counts.entry(a.exit).or_insert(0) += 1;
    }
    counts.into_iter().max_by_key(|(_, n)| *n).map(|(e, _)| e)
}

/// Pod to pod: `from`'s client to `to`'s server pod `pod` at `ip`.
pub fn pod(from: &str, to: &str, pod: &str, ip: &str, attempts: &[Attempt]) -> Cell {
    let mut c = Cell::new(Kind::Pod, "pod", from, Some(to), attempts);
    let wrong: Vec<&String> = c.answers.keys().filter(|k| *k != to).collect();
    if !wrong.is_empty() {
        let w = wrong[0].clone();
        return c.fail(
            "wrong pod",
            format!("{ip} (pod {pod} in {to}) was answered by a server in {w}"),
            format!("the pod CIDRs of {to} and {w} overlap: give every cluster its own podCIDR in mesh.yaml"),
        );
    }
    if !attempts.is_empty() && c.answered == attempts.len() {
        let short = format!("ok {}", ms(c.latency_ms));
        let detail = format!(
            "{}/{} answered by {pod} ({ip}), median {}",
            c.answered,
            attempts.len(),
            ms(c.latency_ms)
        );
        return c.pass(short, detail);
    }
    let (short, cause, fix) = match dominant_exit(attempts) {
        Some(28) => (
            "timeout",
            format!("packets from {from} to {to}'s pod {ip} are dropped"),
            format!(
                "check that {from} sees {to} (`cmesh status`: peers, agents-nodes), that `cmesh probe` passes, and that the nodes of both clusters reach each other on the tunnel port (8472/udp VXLAN, 6081/udp Geneve) or by native routing"
            ),
        ),
        Some(7) => (
            "refused",
            format!(
                "{ip} refused the connection: the route works but nothing listens on port {}",
                super::PORT
            ),
            "the server pod may have restarted: `kubectl get pods` in the test namespace"
                .to_owned(),
        ),
        _ => (
            "FAIL",
            format!("requests from {from} to {to}'s pod {ip} failed"),
            format!("check `cmesh status` for {from} and {to}"),
        ),
    };
    let detail = format!("{cause}: {}", failures(attempts));
    c.fail(short, detail, fix)
}

/// The global Service from `from`: one cell per cluster of `clusters` (did its backends
/// answer?), plus a `service-errors` cell when requests failed although every cluster answered.
pub fn service_row(
    from: &str,
    clusters: &[String],
    service: &str,
    attempts: &[Attempt],
) -> Vec<Cell> {
    let mut out = Vec::new();
    let total = attempts.len();
    let any_answer = attempts.iter().any(Attempt::answered);
    for to in clusters {
        let mut c = Cell::new(Kind::Service, "service", from, Some(to), attempts);
        let n = c.answers.get(to).copied().unwrap_or(0);
        if n > 0 {
            let short = format!("ok {n}/{total}");
            let detail = format!(
                "{n} of {total} requests to {service} answered by {to} (all answers: {})",
                answers_text(&c.answers)
            );
            out.push(c.pass(short, detail));
            continue;
        }
        let cell = if !any_answer && dominant_exit(attempts) == Some(6) {
            c.fail(
                "no DNS",
                format!("{service} does not resolve in {from}: {}", failures(attempts)),
                format!("the Service must exist in {from} too: a global Service is reached through the local Service of the same name and namespace (`cmesh lint` finds global Services missing in a cluster)"),
            )
        } else if !any_answer {
            c.fail(
                "FAIL",
                format!(
                    "no request to {service} from {from} was answered: {}",
                    failures(attempts)
                ),
                format!("check `cmesh status` on {from}, and that the test pods are running"),
            )
        } else if to == from {
            c.fail(
                &format!("0/{total}"),
                format!(
                    "none of {total} requests reached {from}'s own backends (answers: {})",
                    answers_text(&c.answers)
                ),
                format!("check the local endpoints of {service} in {from}: `kubectl get endpointslices` in the test namespace"),
            )
        } else {
            let errs = if c.answered < total {
                format!("; {}", failures(attempts))
            } else {
                String::new()
            };
            c.fail(
                &format!("0/{total}"),
                format!(
                    "none of {total} requests from {from} reached {to}'s backends (answers: {}){errs}",
                    answers_text(&c.answers)
                ),
                format!(
                    "{to} must share the Service: it needs {service} in the same namespace with `{}: \"true\"` (and not `{}: \"false\"`), ready endpoints, and {from} must be connected to {to} (`cmesh status`); timeouts mean traffic from {from} to {to} is dropped",
                    a::GLOBAL,
                    a::SHARED
                ),
            )
        };
        out.push(cell);
    }
    let answered_everywhere = out.iter().all(|c| c.outcome == Outcome::Pass);
    let failed = attempts.iter().filter(|a| !a.answered()).count();
    if answered_everywhere && failed > 0 {
        let mut c = Cell::new(Kind::Service, "service-errors", from, None, attempts);
        out.push(c.fail(
            &format!("{failed} failed"),
            format!("every cluster answered, but {}", failures(attempts)),
            "a backend in some cluster is unreachable or not ready: run the suite again with --keep and inspect the test namespace".into(),
        ));
    }
    out
}

/// True when every cluster of `clusters` answered at least once (retry until then).
pub fn service_complete(clusters: &[String], attempts: &[Attempt]) -> bool {
    clusters.iter().all(|c| {
        attempts
            .iter()
            .any(|a| a.answered() && a.cluster.as_deref() == Some(c))
    })
}

/// `service.cilium.io/affinity` from `from`: `local` must answer from `from` only, `remote`
/// from other clusters only.
pub fn affinity(from: &str, mode: &str, service: &str, attempts: &[Attempt]) -> Cell {
    let check = if mode == "local" {
        "affinity-local"
    } else {
        "affinity-remote"
    };
    let mut c = Cell::new(Kind::Service, check, from, None, attempts);
    let total = attempts.len();
    let expected = |cl: &str| {
        if mode == "local" {
            cl == from
        } else {
            cl != from
        }
    };
    let right: usize = c
        .answers
        .iter()
        .filter(|(k, _)| expected(k))
        .map(|(_, n)| n)
        .sum();
    if total > 0 && right == total {
        let short = format!("ok {right}/{total}");
        let detail = format!(
            "{service} (affinity {mode}) answered by {}",
            answers_text(&c.answers)
        );
        return c.pass(short, detail);
    }
    let errs = if c.answered < total {
        format!("; {}", failures(attempts))
    } else {
        String::new()
    };
    let want = if mode == "local" {
        format!("{from}'s own backends")
    } else {
        "other clusters' backends".to_owned()
    };
    let fix = if c.answered < total {
        format!(
            "requests from {from} fail: the pod-to-pod and service cells of {from} show which cluster it cannot reach"
        )
    } else {
        "service affinity needs Cilium's kube-proxy replacement or socket LB for pod traffic; check `cilium-dbg service list` in an agent of this cluster".to_owned()
    };
    c.fail(
        &format!("{right}/{total}"),
        format!(
            "{service} has `{}: {mode}`, but only {right} of {total} answers came from {want} (answers: {}){errs}",
            a::AFFINITY,
            answers_text(&c.answers)
        ),
        fix,
    )
}

/// Failover: `cluster`'s replicas at 0, every request must still be answered, by others.
pub fn failover(cluster: &str, service: &str, attempts: &[Attempt]) -> Cell {
    let mut c = Cell::new(Kind::Failover, "failover", cluster, None, attempts);
    let total = attempts.len();
    let local = c.answers.get(cluster).copied().unwrap_or(0);
    if total > 0 && c.answered == total && local == 0 {
        let short = format!("ok {}", answers_text(&c.answers));
        let detail = format!(
            "with {cluster}'s replicas at 0, all {total} requests to {service} were answered by {}",
            answers_text(&c.answers)
        );
        return c.pass(short, detail);
    }
    if local > 0 {
        return c.fail(
            "local",
            format!("{local} answers still came from {cluster} although its replicas are at 0"),
            "the scale-down did not take effect: inspect the test namespace with --keep".into(),
        );
    }
    c.fail(
        &format!("{}/{total}", c.answered),
        format!("with {cluster}'s replicas at 0, {}", failures(attempts)),
        format!(
            "the other clusters must share {service} (global, ready endpoints) and {cluster} must be connected to them (`cmesh status`, `cmesh probe`)"
        ),
    )
}

/// After scaling back: the affinity-local Service must answer from `cluster` again.
pub fn local_return(cluster: &str, service: &str, attempts: &[Attempt]) -> Cell {
    let mut c = Cell::new(Kind::Failover, "local-return", cluster, None, attempts);
    let total = attempts.len();
    let local = c.answers.get(cluster).copied().unwrap_or(0);
    if total > 0 && local == total {
        return c.pass(
            format!("ok {local}/{total}"),
            format!("replicas back: {service} (affinity local) is answered by {cluster} again"),
        );
    }
    c.fail(
        &format!("{local}/{total}"),
        format!(
            "replicas back, but {service} (affinity local) was answered by {} ({})",
            answers_text(&c.answers),
            if c.answered < total { failures(attempts) } else { "no errors".into() }
        ),
        format!("{cluster}'s own endpoints did not come back: `kubectl get endpointslices` in the test namespace"),
    )
}

/// Through ingress-nginx with every replica up: must work before the lesson means anything.
pub fn ingress_baseline(cluster: &str, attempts: &[Attempt]) -> Cell {
    let mut c = Cell::new(Kind::Ingress, "ingress-baseline", cluster, None, attempts);
    let total = attempts.len();
    if total > 0 && c.answered == total {
        return c.pass(
            format!("ok {}/{total}", c.answered),
            format!(
                "the Ingress answers (answers: {})",
                answers_text(&c.answers)
            ),
        );
    }
    c.fail(
        &format!("{}/{total}", c.answered),
        format!("the test Ingress does not work even with local replicas: {}", failures(attempts)),
        format!("check the ingress-nginx controller in {cluster} and that it serves the class cmesh used (--ingress-class)"),
    )
}

/// Local replicas at 0, no `service-upstream`: the article saw 503. Both outcomes pass (the
/// 503 is the expected lesson; an answer means EndpointSlice synchronisation covers it).
pub fn ingress_without_upstream(cluster: &str, attempts: &[Attempt]) -> (Cell, Option<Lesson>) {
    let mut c = Cell::new(
        Kind::Ingress,
        "ingress-without-upstream",
        cluster,
        None,
        attempts,
    );
    let total = attempts.len();
    let status_503 = attempts.iter().filter(|a| a.http == Some(503)).count();
    if total > 0 && status_503 == total {
        let lesson = Lesson {
            cluster: cluster.to_owned(),
            observed: format!(
                "with {cluster}'s replicas at 0, ingress-nginx answered 503 for the global Service: without `{}` it sends to the endpoints it sees in its own cluster, and there are none",
                a::SERVICE_UPSTREAM
            ),
            fix: format!(
                "annotate Ingresses to global Services with `{}: \"true\"` (the controller then uses the ClusterIP, which Cilium balances across clusters), or on Cilium >= 1.16 synchronise EndpointSlices (`clustermesh.endpointSliceSync` plus `{}: \"true\"`); `cmesh lint` lists the Ingresses that need it",
                a::SERVICE_UPSTREAM,
                a::SYNC_ENDPOINT_SLICES
            ),
        };
        let cell = c.pass(
            "503 (expected)".into(),
            format!("all {total} requests got 503, as the reference article found"),
        );
        return (cell, Some(lesson));
    }
    if total > 0 && c.answered == total && !c.answers.contains_key(cluster) {
        let short = format!("ok {}", answers_text(&c.answers));
        let detail = format!(
            "answered by {} without service-upstream: the controller sees the other clusters' endpoints (EndpointSlice synchronisation)",
            answers_text(&c.answers)
        );
        return (c.pass(short, detail), None);
    }
    let cell = c.fail(
        &format!("{}/{total}", c.answered),
        format!(
            "expected 503 (or answers from other clusters), got: {}",
            if c.answered < total {
                failures(attempts)
            } else {
                answers_text(&c.answers)
            }
        ),
        "inspect the controller's log for the test Ingress (run with --keep)".into(),
    );
    (cell, None)
}

/// Local replicas at 0, `service-upstream: "true"` set: other clusters must answer.
/// `annotation_present`: whether the annotation was still on the Ingress when read back.
pub fn ingress_with_upstream(
    cluster: &str,
    attempts: &[Attempt],
    annotation_present: bool,
) -> Cell {
    let mut c = Cell::new(
        Kind::Ingress,
        "ingress-with-upstream",
        cluster,
        None,
        attempts,
    );
    let total = attempts.len();
    if total > 0 && c.answered == total {
        let short = format!("ok {}", answers_text(&c.answers));
        let detail = format!(
            "with `{}: \"true\"` and {cluster}'s replicas at 0, answered by {}",
            a::SERVICE_UPSTREAM,
            answers_text(&c.answers)
        );
        return c.pass(short, detail);
    }
    if !annotation_present {
        return c.fail(
            "no annotation",
            format!(
                "the Ingress lost `{}` after cmesh set it (an admission webhook or policy removed it), so ingress-nginx still sends to local endpoints: {}",
                a::SERVICE_UPSTREAM,
                failures(attempts)
            ),
            format!("allow the `{}` annotation on Ingresses in {cluster} (check mutating webhooks and policies such as Kyverno or Gatekeeper)", a::SERVICE_UPSTREAM),
        );
    }
    c.fail(
        &format!("{}/{total}", c.answered),
        format!(
            "with `{}: \"true\"` on the Ingress and {cluster}'s replicas at 0: {}",
            a::SERVICE_UPSTREAM,
            failures(attempts)
        ),
        format!("the controller ignores the annotation: check its --annotations-prefix and that annotations are allowed in {cluster}; and that the global Service answers from {cluster} (the service row above)"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(cluster: &str) -> Attempt {
        Attempt {
            exit: 0,
            http: Some(200),
            seconds: Some(0.002),
            cluster: Some(cluster.into()),
            pod: Some(format!("echo-{cluster}")),
            ..Attempt::default()
        }
    }

    fn timeout() -> Attempt {
        Attempt {
            exit: 28,
            error: Some("(28) Connection timed out after 5001 milliseconds".into()),
            ..Attempt::default()
        }
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn pod_cells() {
        let c = pod(
            "k8s01",
            "k8s02",
            "echo-x",
            "10.2.0.10",
            &[ok("k8s02"), ok("k8s02")],
        );
        assert_eq!(c.outcome, Outcome::Pass);
        assert_eq!(c.short, "ok 2.0ms");
        let c = pod(
            "k8s01",
            "k8s02",
            "echo-x",
            "10.2.0.10",
            &[timeout(), timeout()],
        );
        assert_eq!(c.outcome, Outcome::Fail);
        assert_eq!(c.short, "timeout");
        assert!(
            c.detail
                .contains("2 of 2 failed: (28) Connection timed out (2×)"),
            "{}",
            c.detail
        );
        let c = pod("k8s01", "k8s02", "echo-x", "10.2.0.10", &[ok("k8s03")]);
        assert!(c.fix.unwrap().contains("overlap"));
    }

    #[test]
    fn service_rows_blame_the_cluster_that_never_answers() {
        let clusters = names(&["k8s01", "k8s02", "k8s03"]);
        let attempts = vec![ok("k8s01"), ok("k8s03"), ok("k8s01"), timeout()];
        let row = service_row("k8s01", &clusters, "echo", &attempts);
        let outcomes: Vec<(Option<&str>, Outcome)> =
            row.iter().map(|c| (c.to.as_deref(), c.outcome)).collect();
        assert_eq!(
            outcomes,
            [
                (Some("k8s01"), Outcome::Pass),
                (Some("k8s02"), Outcome::Fail),
                (Some("k8s03"), Outcome::Pass)
            ]
        );
        assert!(
            row[1].detail.contains("answers: k8s01 2, k8s03 1"),
            "{}",
            row[1].detail
        );
        assert!(row[1].detail.contains("1 of 4 failed"), "{}", row[1].detail);
        assert!(!service_complete(&clusters, &attempts));
        // Every cluster answered but one request failed: a separate failing cell.
        let attempts = vec![ok("k8s01"), ok("k8s02"), ok("k8s03"), timeout()];
        let row = service_row("k8s01", &clusters, "echo", &attempts);
        assert_eq!(row.len(), 4);
        assert_eq!(row[3].check, "service-errors");
        assert_eq!(row[3].outcome, Outcome::Fail);
        assert!(service_complete(&clusters, &attempts));
        // Nothing resolves.
        let nx = Attempt {
            exit: 6,
            error: Some("(6) Could not resolve host: echo.ns.svc".into()),
            ..Attempt::default()
        };
        let row = service_row("k8s02", &clusters, "echo", &[nx.clone(), nx]);
        assert!(row.iter().all(|c| c.short == "no DNS"));
    }

    #[test]
    fn failover_affinity_and_ingress() {
        assert_eq!(
            failover("k8s01", "echo", &[ok("k8s02"), ok("k8s02")]).outcome,
            Outcome::Pass
        );
        assert_eq!(
            failover("k8s01", "echo", &[ok("k8s02"), timeout()]).outcome,
            Outcome::Fail
        );
        assert_eq!(failover("k8s01", "echo", &[ok("k8s01")]).short, "local");
        assert_eq!(
            affinity("k8s01", "local", "echo-local", &[ok("k8s01")]).outcome,
            Outcome::Pass
        );
        assert_eq!(
            affinity("k8s01", "local", "echo-local", &[ok("k8s01"), ok("k8s02")]).outcome,
            Outcome::Fail
        );
        assert_eq!(
            affinity(
                "k8s01",
                "remote",
                "echo-remote",
                &[ok("k8s02"), ok("k8s03")]
            )
            .outcome,
            Outcome::Pass
        );
        assert_eq!(
            local_return("k8s01", "echo-local", &[ok("k8s01")]).outcome,
            Outcome::Pass
        );
        let page = Attempt {
            exit: 0,
            http: Some(503),
            title: Some("503 Service Temporarily Unavailable".into()),
            ..Attempt::default()
        };
        let (c, lesson) = ingress_without_upstream("k8s01", &[page.clone(), page.clone()]);
        assert_eq!(
            (c.outcome, c.short.as_str()),
            (Outcome::Pass, "503 (expected)")
        );
        assert!(lesson.unwrap().fix.contains(a::SERVICE_UPSTREAM));
        let c = ingress_with_upstream("k8s01", std::slice::from_ref(&page), false);
        assert_eq!(
            (c.outcome, c.short.as_str()),
            (Outcome::Fail, "no annotation")
        );
        let c = ingress_with_upstream("k8s01", &[page], true);
        assert!(c.fix.unwrap().contains("annotations-prefix"));
        assert_eq!(
            ingress_with_upstream("k8s01", &[ok("k8s02")], true).outcome,
            Outcome::Pass
        );
    }
}
