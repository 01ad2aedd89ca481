//! `cmesh apply`, the effects: for each phase in order (base completes on every cluster before
//! mesh starts on any), for every cluster concurrently: pre-create Secrets by server-side
//! apply, `helm upgrade --install`, wait for the rollouts, and restart the agents when an
//! existing release's mesh configuration or certificates changed (the article deletes the
//! pods by hand). A cluster that fails is reported; the others carry on.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cmesh_core::render::{ClusterArtifacts, Phase};
use cmesh_core::spec::CILIUM_NAMESPACE;
use cmesh_core::value::{self, Value};
use serde::Serialize;

use crate::cluster::Conn;
use crate::helm::{Chart, Helm, Target};

/// The release name (the article's).
pub const RELEASE: &str = "cilium";

/// A step's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StepOutcome {
    /// Done.
    Ok,
    /// Nothing to do.
    Skipped,
    /// Failed.
    Failed,
}

/// One step on one cluster.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// Cluster.
    pub cluster: String,
    /// Phase, or `None` for connecting.
    pub phase: Option<Phase>,
    /// `connect`, `secrets`, `helm`, `rollout`, `restart`.
    pub step: &'static str,
    /// Outcome.
    pub outcome: StepOutcome,
    /// What happened.
    pub detail: String,
    /// Milliseconds.
    pub millis: u64,
}

impl StepOutcome {
    /// `Ok` or `Failed`.
    fn of(ok: bool) -> StepOutcome {
        if ok {
            StepOutcome::Ok
        } else {
            StepOutcome::Failed
        }
    }
}

/// Progress reports from the workers, drawn by the caller.
pub trait Progress: Send + Sync {
    /// `cluster` is now doing `what`.
    fn working(&self, cluster: &str, what: &str);
    /// A step finished.
    fn finished(&self, step: &Step);
}

/// How to apply.
pub struct Options {
    /// Phases, in order.
    pub phases: Vec<Phase>,
    /// The chart.
    pub chart: Chart,
    /// helm.
    pub helm: Helm,
    /// Bound on helm and on each rollout wait.
    pub timeout: Duration,
    /// Poll interval while waiting for rollouts.
    pub poll: Duration,
    /// Bound on one request (and on a `helm get values`, which reads one Secret).
    pub request_timeout: Duration,
}

/// What to install per cluster and phase.
pub type Artifacts = BTreeMap<(String, Phase), ClusterArtifacts>;

fn ms(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Keys whose change requires restarting the agents (they read them only at start).
fn restart_relevant(path: &str) -> bool {
    ["clustermesh", "tls", "cluster", "hubble.tls"]
        .iter()
        .any(|p| path == *p || path.starts_with(&format!("{p}.")))
}

/// Applies `phases` to the connected clusters. `conns` holds, per cluster, the connection or
/// why it failed. Returns every step, in order of completion per cluster.
pub async fn run(
    conns: Vec<(String, Result<Conn, String>)>,
    artifacts: Arc<Artifacts>,
    opts: Arc<Options>,
    progress: Arc<dyn Progress>,
) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut alive: Vec<Conn> = Vec::new();
    // Every cluster's API server at once: a slow one costs its own timeout, not everyone's.
    let versions = futures_util::future::join_all(conns.iter().map(|(_, c)| async move {
        let t = Instant::now();
        match c {
            Ok(conn) => match conn.version().await {
                Ok(v) => (StepOutcome::Ok, format!("Kubernetes {v}"), ms(t)),
                Err(e) => (
                    StepOutcome::Failed,
                    format!("API server unreachable: {e}"),
                    ms(t),
                ),
            },
            Err(e) => (StepOutcome::Failed, e.clone(), 0),
        }
    }))
    .await;
    for ((name, c), (outcome, detail, millis)) in conns.into_iter().zip(versions) {
        let s = Step {
            cluster: name,
            phase: None,
            step: "connect",
            outcome,
            detail,
            millis,
        };
        progress.finished(&s);
        let ok = s.outcome == StepOutcome::Ok;
        steps.push(s);
        if let (true, Ok(conn)) = (ok, c) {
            alive.push(conn);
        }
    }
    for &phase in &opts.phases {
        let mut set = tokio::task::JoinSet::new();
        for conn in alive.clone() {
            let artifacts = Arc::clone(&artifacts);
            let opts = Arc::clone(&opts);
            let progress = Arc::clone(&progress);
            set.spawn(async move {
                let Some(a) = artifacts.get(&(conn.name.clone(), phase)) else {
                    return (conn.name.clone(), Vec::new());
                };
                // helm and the rollout waits have their own --timeout; this bounds the rest
                // (many requests, each within --request-timeout) in the worst case.
                let bound = opts.timeout * 2 + Duration::from_secs(60);
                let steps = tokio::time::timeout(
                    bound,
                    apply_phase(&conn, phase, a, &opts, progress.as_ref()),
                )
                .await
                .unwrap_or_else(|_| {
                    vec![Step {
                        cluster: conn.name.clone(),
                        phase: Some(phase),
                        step: "deadline",
                        outcome: StepOutcome::Failed,
                        detail: format!(
                            "the {phase:?} phase did not finish within {}s",
                            bound.as_secs()
                        ),
                        millis: u64::try_from(bound.as_millis()).unwrap_or(u64::MAX),
                    }]
                });
                (conn.name.clone(), steps)
            });
        }
        let mut failed = Vec::new();
        while let Some(r) = set.join_next().await {
            if let Ok((name, s)) = r {
                if s.iter().any(|x| x.outcome == StepOutcome::Failed) {
                    failed.push(name);
                }
                steps.extend(s);
            }
        }
        // A cluster that failed a phase does not go on to the next one.
        alive.retain(|c| !failed.contains(&c.name));
    }
    steps
}

async fn apply_phase(
    conn: &Conn,
    phase: Phase,
    a: &ClusterArtifacts,
    opts: &Options,
    progress: &dyn Progress,
) -> Vec<Step> {
    let mut steps = Vec::new();
    let name = conn.name.clone();
    let step = |step: &'static str, outcome: StepOutcome, detail: String, millis: u64| Step {
        cluster: name.clone(),
        phase: Some(phase),
        step,
        outcome,
        detail,
        millis,
    };
    let push = |s: Step, steps: &mut Vec<Step>| {
        progress.finished(&s);
        let failed = s.outcome == StepOutcome::Failed;
        steps.push(s);
        failed
    };
    let target = Target {
        kubeconfig: conn.kubeconfig.clone(),
        context: conn.context.clone(),
    };

    // 1. Secrets first: the chart mounts them by name.
    progress.working(
        &name,
        &format!("{}: applying {} Secret(s)", phase.as_str(), a.secrets.len()),
    );
    let t = Instant::now();
    let mut secrets_changed = false;
    let mut secret_error = None;
    for s in &a.secrets {
        let sname = s
            .get(&["metadata", "name"])
            .and_then(Value::as_str)
            .unwrap_or_default();
        let before = conn.secret_data(sname).await.ok().flatten();
        let want: BTreeMap<String, String> = s
            .get(&["data"])
            .and_then(Value::as_map)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| {
                        v.as_str().and_then(|b| {
                            use base64::Engine as _;
                            base64::engine::general_purpose::STANDARD
                                .decode(b)
                                .ok()
                                .map(|d| (k.clone(), String::from_utf8_lossy(&d).into_owned()))
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        if before.as_ref() != Some(&want) {
            secrets_changed |= before.is_some();
        }
        if let Err(e) = conn.apply_secret(&s.to_json()).await {
            secret_error = Some(e);
            break;
        }
    }
    let detail = match &secret_error {
        Some(e) => e.clone(),
        None if a.secrets.is_empty() => "none needed".into(),
        None => format!(
            "{} applied{}",
            a.secrets.len(),
            if secrets_changed { " (changed)" } else { "" }
        ),
    };
    let outcome = if secret_error.is_some() {
        StepOutcome::Failed
    } else if a.secrets.is_empty() {
        StepOutcome::Skipped
    } else {
        StepOutcome::Ok
    };
    if push(step("secrets", outcome, detail, ms(t)), &mut steps) {
        return steps;
    }

    // 2. The chart.
    progress.working(
        &name,
        &format!("{}: helm upgrade --install", phase.as_str()),
    );
    let t = Instant::now();
    let previous = opts
        .helm
        .get_values(RELEASE, CILIUM_NAMESPACE, &target, opts.request_timeout * 2)
        .await;
    // The agents' DaemonSet generation before the upgrade: if the chart changes the pod
    // template, the rollout itself restarts every agent with the new configuration.
    let agents_generation = conn
        .daemonset("cilium")
        .await
        .ok()
        .flatten()
        .map(|r| r.generation);
    let dir = match tempfile::Builder::new().prefix("cmesh-values-").tempdir() {
        Ok(d) => d,
        Err(e) => {
            push(
                step(
                    "helm",
                    StepOutcome::Failed,
                    format!("temporary directory: {e}"),
                    0,
                ),
                &mut steps,
            );
            return steps;
        }
    };
    // Nothing to upgrade when the release is deployed from the same chart with the same values.
    // Skipping matters beyond speed: some charts (Cilium 1.16's agent DaemonSet renders
    // `annotations:` empty) make every `helm upgrade` patch the pod template, which rolls every
    // agent for nothing.
    let mut unchanged = None;
    if let (Ok(Some(prev)), Some(version)) = (&previous, opts.chart.version()) {
        let same_values = value::diff(&Value::from_json(prev), &a.values).is_empty();
        let expected = format!("cilium-{version}");
        if same_values
            && matches!(
                opts.helm.release(RELEASE, CILIUM_NAMESPACE, &target, opts.timeout).await,
                Ok(Some(r)) if r.status == "deployed" && r.chart == expected
            )
        {
            unchanged = Some(expected);
        }
    }
    if let Some(chart) = unchanged {
        drop(dir);
        push(
            step(
                "helm",
                StepOutcome::Skipped,
                format!("no change ({chart})"),
                ms(t),
            ),
            &mut steps,
        );
    } else {
        let values_path: PathBuf = dir.path().join("values.yaml");
        // Values can hold private keys (versions that take certificates only as values).
        if let Err(e) = crate::fs::atomic::write_new(
            &values_path,
            a.values_text.as_bytes(),
            crate::fs::atomic::Mode::Private,
        ) {
            push(
                step("helm", StepOutcome::Failed, e.to_string(), 0),
                &mut steps,
            );
            return steps;
        }
        let result = opts
            .helm
            .upgrade_install(
                RELEASE,
                &opts.chart,
                CILIUM_NAMESPACE,
                &values_path,
                &target,
                opts.timeout,
            )
            .await;
        drop(dir);
        let (outcome, detail) = match &result {
            Ok(_) => (
                StepOutcome::Ok,
                if matches!(previous, Ok(Some(_))) {
                    "upgraded".to_owned()
                } else {
                    "installed".to_owned()
                },
            ),
            Err(e) => (StepOutcome::Failed, e.to_string()),
        };
        if push(step("helm", outcome, detail, ms(t)), &mut steps) {
            return steps;
        }
    }

    // 3. Rollouts.
    let workloads: Vec<(&str, bool)> = {
        let mut w = vec![("cilium", true), ("cilium-operator", false)];
        if phase == Phase::Mesh {
            w.push(("clustermesh-apiserver", false));
        }
        w
    };
    let t = Instant::now();
    let waited = wait_rollouts(conn, &workloads, opts, progress, phase).await;
    let failed = waited.is_err();
    if push(
        step(
            "rollout",
            StepOutcome::of(!failed),
            waited.unwrap_or_else(|e| e),
            ms(t),
        ),
        &mut steps,
    ) {
        return steps;
    }

    // 4. Agents read the mesh configuration and certificates only at start.
    let changed: Vec<String> = match &previous {
        Ok(Some(prev)) => {
            let old = Value::from_json(prev);
            value::diff(&old, &a.values)
                .into_iter()
                .map(|(p, _)| p)
                .filter(|p| restart_relevant(p))
                .collect()
        }
        _ => Vec::new(),
    };
    let rolled_by_chart = match (agents_generation, conn.daemonset("cilium").await) {
        (Some(before), Ok(Some(now))) => now.generation > before,
        _ => false,
    };
    if rolled_by_chart && (!changed.is_empty() || secrets_changed) {
        // The rollout above replaced every agent after the Secrets and values were in place:
        // a second restart would only cut traffic again.
        push(
            step(
                "restart",
                StepOutcome::Skipped,
                "the chart's upgrade already restarted every agent".into(),
                0,
            ),
            &mut steps,
        );
        return steps;
    }
    if changed.is_empty() && !secrets_changed {
        push(
            step(
                "restart",
                StepOutcome::Skipped,
                if matches!(previous, Ok(Some(_))) {
                    "no change".into()
                } else {
                    "fresh install".into()
                },
                0,
            ),
            &mut steps,
        );
        return steps;
    }
    progress.working(&name, &format!("{}: restarting agents", phase.as_str()));
    let t = Instant::now();
    let stamp = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let why = if changed.is_empty() {
        "certificates changed".to_owned()
    } else {
        format!(
            "{} changed",
            changed
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
                + if changed.len() > 3 { ", …" } else { "" }
        )
    };
    let result = match conn.rollout_restart("cilium", &stamp).await {
        Ok(()) => wait_rollouts(conn, &[("cilium", true)], opts, progress, phase)
            .await
            .map(|d| format!("{why}: restarted, {d}")),
        Err(e) => Err(format!("rollout restart: {e}")),
    };
    let failed = result.is_err();
    push(
        step(
            "restart",
            StepOutcome::of(!failed),
            result.unwrap_or_else(|e| e),
            ms(t),
        ),
        &mut steps,
    );
    steps
}

/// Waits until every workload has rolled out and is ready; `Err` names what is not.
async fn wait_rollouts(
    conn: &Conn,
    workloads: &[(&str, bool)],
    opts: &Options,
    progress: &dyn Progress,
    phase: Phase,
) -> Result<String, String> {
    let deadline = Instant::now() + opts.timeout;
    // Give controllers a moment to see a new spec before judging it complete.
    tokio::time::sleep(opts.poll.min(Duration::from_millis(200))).await;
    loop {
        let mut states = Vec::new();
        let mut done = true;
        for (w, ds) in workloads {
            let r = if *ds {
                conn.daemonset(w).await
            } else {
                conn.deployment(w).await
            };
            match r {
                Ok(Some(r)) => {
                    done &= r.complete();
                    states.push(format!("{w} {}/{}", r.ready, r.desired));
                }
                Ok(None) => {
                    done = false;
                    states.push(format!("{w} missing"));
                }
                Err(e) => {
                    done = false;
                    states.push(format!("{w}: {e}"));
                }
            }
        }
        let text = states.join(", ");
        if done {
            return Ok(text);
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "not ready after {}s: {text}",
                opts.timeout.as_secs()
            ));
        }
        progress.working(
            &conn.name,
            &format!("{}: waiting for {text}", phase.as_str()),
        );
        tokio::time::sleep(opts.poll).await;
    }
}

/// What `--dry-run` would do on one cluster.
#[derive(Debug, Clone, Serialize)]
pub struct DryRun {
    /// Cluster.
    pub cluster: String,
    /// Phase.
    pub phase: Phase,
    /// Secrets that would be applied.
    pub secrets: Vec<String>,
    /// `installed` or `upgraded from the current release`.
    pub helm: String,
    /// Values changes against the release (paths only).
    pub changes: Vec<(String, value::Change)>,
    /// Whether agents would be restarted, and why.
    pub restart: Option<String>,
    /// Why it could not be planned (unreachable, ...).
    pub error: Option<String>,
}

/// Plans without changing anything: reads the current release's values to diff against.
pub async fn dry_run(
    conns: Vec<(String, Result<Conn, String>)>,
    artifacts: &Artifacts,
    opts: &Options,
) -> Vec<DryRun> {
    // Clusters at once, each cluster's phases in order; results in mesh.yaml's order.
    futures_util::future::join_all(
        conns
            .into_iter()
            .map(|(name, c)| dry_run_cluster(name, c, artifacts, opts)),
    )
    .await
    .into_iter()
    .flatten()
    .collect()
}

async fn dry_run_cluster(
    name: String,
    c: Result<Conn, String>,
    artifacts: &Artifacts,
    opts: &Options,
) -> Vec<DryRun> {
    let mut out = Vec::new();
    {
        for &phase in &opts.phases {
            let Some(a) = artifacts.get(&(name.clone(), phase)) else {
                continue;
            };
            let secrets: Vec<String> = a
                .secrets
                .iter()
                .filter_map(|s| {
                    s.get(&["metadata", "name"])
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                })
                .collect();
            let mut d = DryRun {
                cluster: name.clone(),
                phase,
                secrets,
                helm: String::new(),
                changes: Vec::new(),
                restart: None,
                error: None,
            };
            match &c {
                Err(e) => d.error = Some(e.clone()),
                Ok(conn) => {
                    let target = Target {
                        kubeconfig: conn.kubeconfig.clone(),
                        context: conn.context.clone(),
                    };
                    match conn.version().await {
                        Err(e) => d.error = Some(format!("API server unreachable: {e}")),
                        Ok(_) => match opts
                            .helm
                            .get_values(
                                RELEASE,
                                CILIUM_NAMESPACE,
                                &target,
                                opts.request_timeout * 2,
                            )
                            .await
                        {
                            Ok(Some(prev)) => {
                                d.helm = "upgrade the current release".into();
                                d.changes = value::diff(&Value::from_json(&prev), &a.values);
                                let relevant: Vec<&String> = d
                                    .changes
                                    .iter()
                                    .map(|(p, _)| p)
                                    .filter(|p| restart_relevant(p))
                                    .collect();
                                if !relevant.is_empty() {
                                    d.restart = Some(format!(
                                        "{} changed",
                                        relevant
                                            .iter()
                                            .take(3)
                                            .map(|s| s.as_str())
                                            .collect::<Vec<_>>()
                                            .join(", ")
                                    ));
                                }
                            }
                            Ok(None) => d.helm = "install (no release yet)".into(),
                            Err(e) => d.error = Some(e.to_string()),
                        },
                    }
                }
            }
            out.push(d);
        }
    }
    out
}
