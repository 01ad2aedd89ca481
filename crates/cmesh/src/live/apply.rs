//! `cmesh apply`, the effects: for each phase in order (base completes on every cluster before
//! mesh starts on any), for every cluster concurrently: pre-create Secrets by server-side
//! apply, `helm upgrade --install`, wait for the rollouts, and restart the agents when an
//! existing release's mesh configuration changed, by deleting their pods as the article does
//! (not through the pod template, which Helm's next upgrade would reset, rolling them again).
//! A cluster that fails is reported; the others carry on.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cmesh_core::apply::{
    self as decide, HelmAction, RELEASE, Restart, Step, StepOutcome, Workload,
};
use cmesh_core::render::{ClusterArtifacts, Phase};
use cmesh_core::spec::CILIUM_NAMESPACE;
use cmesh_core::value::Value;

use crate::live::helm::{Chart, Helm, Target};
use crate::live::kube::{Conn, KubeError};
use crate::ui::progress::Progress;

/// How to apply.
pub(crate) struct Options {
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
    /// Both phases run: the base phase leaves meshed clusters alone.
    pub skip_base_when_meshed: bool,
    /// The trusted CAs are being replaced with no CA in common: agents restart after
    /// clustermesh-apiserver ([`decide::restart_after_replacement`]).
    pub trust_replaced: bool,
    /// KVStoreMesh runs and answers `kvstoremesh-dbg`: a dropped peer is waited for there too.
    pub ask_kvstoremesh: bool,
}

/// What to install per cluster and phase.
pub(crate) type Artifacts = BTreeMap<(String, Phase), ClusterArtifacts>;

fn phase_word(p: Option<Phase>) -> &'static str {
    p.map_or("disconnect", Phase::as_str)
}

fn ms(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Applies `phases` to the connected clusters. `conns` holds, per cluster, the connection or
/// why it failed. Returns every step, in order of completion per cluster.
/// `seeds`: release values the plan read just before, per cluster (nothing changed them
/// since), so that no phase reads them again.
pub(crate) async fn run(
    conns: Vec<(String, Result<Conn, KubeError>)>,
    artifacts: Arc<Artifacts>,
    opts: Arc<Options>,
    progress: Arc<dyn Progress>,
    seeds: std::collections::HashMap<String, serde_json::Value>,
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
            Err(e) => (StepOutcome::Failed, e.to_string(), 0),
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
    // Release values a phase read and left unchanged, for the next phase: one `helm get
    // values` (a process reading the whole release) per cluster instead of two.
    let mut known = seeds;
    for &phase in &opts.phases {
        let mut set = tokio::task::JoinSet::new();
        for conn in alive.clone() {
            let artifacts = Arc::clone(&artifacts);
            let opts = Arc::clone(&opts);
            let progress = Arc::clone(&progress);
            let values = known.remove(&conn.name);
            set.spawn(async move {
                let Some(a) = artifacts.get(&(conn.name.clone(), phase)) else {
                    return (conn.name.clone(), Vec::new(), values);
                };
                // helm and the rollout waits have their own --timeout; this bounds the rest
                // (many requests, each within --request-timeout) in the worst case.
                let bound = opts.timeout * 2 + Duration::from_secs(60);
                let (steps, values) = tokio::time::timeout(
                    bound,
                    apply_phase(&conn, phase, a, &opts, progress.as_ref(), values),
                )
                .await
                .unwrap_or_else(|_| {
                    let step = vec![Step {
                        cluster: conn.name.clone(),
                        phase: Some(phase),
                        step: "deadline",
                        outcome: StepOutcome::Failed,
                        detail: format!(
                            "the {phase:?} phase did not finish within {}s",
                            bound.as_secs()
                        ),
                        millis: u64::try_from(bound.as_millis()).unwrap_or(u64::MAX),
                    }];
                    (step, None)
                });
                (conn.name.clone(), steps, values)
            });
        }
        let mut failed = Vec::new();
        while let Some(r) = set.join_next().await {
            if let Ok((name, s, values)) = r {
                if s.iter().any(|x| x.outcome == StepOutcome::Failed) {
                    failed.push(name.clone());
                }
                if let Some(v) = values {
                    known.insert(name, v);
                }
                steps.extend(s);
            }
        }
        // A cluster that failed a phase does not go on to the next one.
        alive.retain(|c| !failed.contains(&c.name));
    }
    steps
}

/// One cluster's phase: Secrets, chart, rollouts, restart; stops at the first failed step.
/// `known` is the release's values if the previous phase read them and changed nothing; they
/// come back only from a base phase skipped on a meshed cluster (nothing changed there).
async fn apply_phase(
    conn: &Conn,
    phase: Phase,
    a: &ClusterArtifacts,
    opts: &Options,
    progress: &dyn Progress,
    known: Option<serde_json::Value>,
) -> (Vec<Step>, Option<serde_json::Value>) {
    let mut steps = Vec::new();
    let at = At {
        conn,
        phase: Some(phase),
        progress,
    };
    let push = |s: Step, steps: &mut Vec<Step>| {
        progress.finished(&s);
        let failed = s.outcome == StepOutcome::Failed;
        steps.push(s);
        failed
    };

    let mut known = known;
    // 0. A meshed cluster needs no base phase on the way to the mesh.
    if phase == Phase::Base && opts.skip_base_when_meshed {
        let t = Instant::now();
        let target = Target::of(conn);
        let read = release_values(opts, &target, known.take()).await;
        if let Ok(Some(p)) = read {
            if let Some(why) = decide::skip_base(&Value::from_json(&p)) {
                push(at.step("helm", StepOutcome::Skipped, why, t), &mut steps);
                return (steps, Some(p));
            }
            // Still the release's values: nothing has changed it yet.
            known = Some(p);
        }
    }
    // 1. Secrets first: the chart mounts them by name.
    let (secrets, secrets_changed) = apply_secrets(&at, a).await;
    if push(secrets, &mut steps) {
        return (steps, None);
    }
    // 2. The chart, from the values read in step 0 or by the phase before (only a skipped
    // base phase sends them on: nothing changed the release since).
    let chart = match apply_chart(&at, a, opts, known).await {
        Ok(c) => c,
        Err(s) => {
            push(s, &mut steps);
            return (steps, None);
        }
    };
    if push(chart.step, &mut steps) {
        return (steps, None);
    }
    // 3. Rollouts.
    let t = Instant::now();
    let waited = wait_rollouts(conn, &decide::workloads(phase), opts, progress, Some(phase)).await;
    if push(at.result("rollout", waited, t), &mut steps) {
        return (steps, None);
    }
    // 4. Agents read the mesh configuration only at start.
    let rolled_by_chart = match (chart.agents_generation, conn.daemonset("cilium").await) {
        (Some(before), Ok(Some(now))) => now.generation > before,
        _ => false,
    };
    let decision = decide::restart(
        chart.previous.as_ref(),
        &a.values,
        secrets_changed,
        rolled_by_chart,
    );
    let agents = Workload {
        name: "cilium",
        daemonset: true,
    };
    // After a CA replacement the agents restart last, once clustermesh-apiserver has.
    let after_replacement = decide::restart_after_replacement(
        phase,
        opts.trust_replaced,
        secrets_changed,
        rolled_by_chart,
    );
    // A replacement's restart that the chart's rollout made already is reported as such (the
    // plan, which cannot know about the rollout, counts it as a restart).
    let decision = match (&decision, &after_replacement) {
        (Restart::Skip(_), Restart::Skip(why))
            if rolled_by_chart
                && matches!(
                    decide::restart_after_replacement(
                        phase,
                        opts.trust_replaced,
                        secrets_changed,
                        false
                    ),
                    Restart::Restart(_)
                ) =>
        {
            Restart::Skip(why.clone())
        }
        _ => decision,
    };
    let agents_last = match (&decision, after_replacement) {
        (Restart::Skip(_), r @ Restart::Restart(_)) => Some(r),
        _ => None,
    };
    if agents_last.is_none()
        && push(
            restart_workload(&at, "restart", agents, decision, opts).await,
            &mut steps,
        )
    {
        return (steps, None);
    }
    // 4b. Peers dropped without a restart: the agents let them go once kubelet updates their
    // clustermesh Secret's volume; the peers' disconnection waits for that.
    if let Some(dropped) = decide::dropped_peers(chart.previous.as_ref(), &a.values) {
        let peers = decide::peer_entries(Some(&a.values)).len();
        let t = Instant::now();
        let waited = wait_dropped(conn, &dropped, peers, opts, progress, Some(phase)).await;
        if push(at.result("drop-peers", waited, t), &mut steps) {
            return (steps, None);
        }
    }
    // 5. clustermesh-apiserver's etcd reads the trusted CAs only at start.
    if phase == Phase::Mesh {
        let rolled = match (
            chart.apiserver_generation,
            conn.deployment("clustermesh-apiserver").await,
        ) {
            (Some(before), Ok(Some(now))) => now.generation > before,
            _ => false,
        };
        let decision = decide::restart_apiserver(
            phase,
            chart.previous.as_ref(),
            &a.values,
            secrets_changed,
            rolled,
        );
        // Reported skipped too: the plan's prediction is checked against it.
        let apiserver = Workload {
            name: "clustermesh-apiserver",
            daemonset: false,
        };
        if push(
            restart_workload(&at, "restart-apiserver", apiserver, decision, opts).await,
            &mut steps,
        ) {
            return (steps, None);
        }
    }
    // 6. The agents, last after a CA replacement.
    if let Some(decision) = agents_last {
        push(
            restart_workload(&at, "restart", agents, decision, opts).await,
            &mut steps,
        );
    }
    (steps, None)
}

/// The release's values: `known` when this apply read them already and nothing changed the
/// release since, else `helm get values`.
async fn release_values(
    opts: &Options,
    target: &Target,
    known: Option<serde_json::Value>,
) -> Result<Option<serde_json::Value>, crate::live::helm::HelmError> {
    match known {
        Some(v) => Ok(Some(v)),
        None => {
            opts.helm
                .get_values(RELEASE, CILIUM_NAMESPACE, target, opts.request_timeout * 2)
                .await
        }
    }
}

/// Where a step runs, for its report.
struct At<'a> {
    conn: &'a Conn,
    /// `None`: disconnecting a leaving cluster.
    phase: Option<Phase>,
    progress: &'a dyn Progress,
}

impl At<'_> {
    fn step(&self, step: &'static str, outcome: StepOutcome, detail: String, t: Instant) -> Step {
        Step {
            cluster: self.conn.name.clone(),
            phase: self.phase,
            step,
            outcome,
            detail,
            millis: ms(t),
        }
    }

    /// A step that succeeded with `Ok`'s text or failed with `Err`'s.
    fn result(&self, step: &'static str, r: Result<String, String>, t: Instant) -> Step {
        let outcome = StepOutcome::of(r.is_ok());
        self.step(step, outcome, r.unwrap_or_else(|e| e), t)
    }

    fn working(&self, what: &str) {
        self.progress.working(
            &self.conn.name,
            &format!("{}: {what}", phase_word(self.phase)),
        );
    }
}

/// Applies the phase's Secrets (server-side apply); the step and what changed in those that
/// existed (certificates; the trust, which clustermesh-apiserver reads only at start).
async fn apply_secrets(at: &At<'_>, a: &ClusterArtifacts) -> (Step, decide::SecretChange) {
    at.working(&format!("applying {} Secret(s)", a.secrets.len()));
    let t = Instant::now();
    let mut changed = decide::SecretChange::default();
    let mut error = None;
    for s in &a.secrets {
        let before = at
            .conn
            .secret_data(decide::secret_name(s))
            .await
            .ok()
            .flatten();
        changed = changed.or(decide::secret_change(before.as_ref(), s));
        if let Err(e) = at.conn.apply_secret(&s.to_json()).await {
            error = Some(e.to_string());
            break;
        }
    }
    let (outcome, detail) =
        decide::secrets_step(a.secrets.len(), changed.certificates, error.as_deref());
    (at.step("secrets", outcome, detail, t), changed)
}

/// What the chart step saw and did.
struct ChartStep {
    step: Step,
    /// The release's values before (`None`: no release, or they could not be read).
    previous: Option<Value>,
    /// The agents' DaemonSet generation before the upgrade: if the chart changes the pod
    /// template, the rollout itself restarts every agent with the new configuration.
    agents_generation: Option<i64>,
    /// clustermesh-apiserver's Deployment generation before the upgrade, likewise.
    apiserver_generation: Option<i64>,
}

/// `helm upgrade --install`, or nothing when the release already has this chart and values.
/// `Err` is a failed step before helm could run.
/// `known`: the release's values as read earlier in this apply, with nothing changed since.
async fn apply_chart(
    at: &At<'_>,
    a: &ClusterArtifacts,
    opts: &Options,
    known: Option<serde_json::Value>,
) -> Result<ChartStep, Step> {
    at.working("helm upgrade --install");
    let t = Instant::now();
    let target = Target::of(at.conn);
    let previous = release_values(opts, &target, known).await;
    let agents_generation = at
        .conn
        .daemonset("cilium")
        .await
        .ok()
        .flatten()
        .map(|r| r.generation);
    let apiserver_generation = at
        .conn
        .deployment("clustermesh-apiserver")
        .await
        .ok()
        .flatten()
        .map(|r| r.generation);
    let prev = match &previous {
        Ok(Some(p)) => Some(Value::from_json(p)),
        _ => None,
    };
    // `helm list` only when the values already match: otherwise it is an upgrade anyway.
    let release = if decide::same_values(prev.as_ref(), &a.values) {
        opts.helm
            .release(RELEASE, CILIUM_NAMESPACE, &target, opts.timeout)
            .await
            .ok()
            .flatten()
    } else {
        None
    };
    let version = opts.chart.version();
    let action = match (
        &previous,
        decide::helm_action(
            prev.as_ref(),
            release.as_ref(),
            version.as_deref(),
            &a.values,
        ),
    ) {
        // Values that could not be read are not "no release": upgrade over whatever is there.
        (Err(_), HelmAction::Install) => HelmAction::Upgrade,
        (_, action) => action,
    };
    let step = match action {
        HelmAction::Skip { chart } => at.step(
            "helm",
            StepOutcome::Skipped,
            format!("no change ({chart})"),
            t,
        ),
        HelmAction::Install | HelmAction::Upgrade => {
            let done = if matches!(previous, Ok(Some(_))) {
                "upgraded"
            } else {
                "installed"
            };
            match upgrade_install(a, opts, &opts.chart, &target).await {
                Ok(()) => at.step("helm", StepOutcome::Ok, done.into(), t),
                Err(e) => at.step("helm", StepOutcome::Failed, e, t),
            }
        }
    };
    Ok(ChartStep {
        step,
        previous: prev,
        agents_generation,
        apiserver_generation,
    })
}

/// Writes the values to a private temporary file (they can hold private keys: versions that
/// take certificates only as values) and runs helm with it.
async fn upgrade_install(
    a: &ClusterArtifacts,
    opts: &Options,
    chart: &Chart,
    target: &Target,
) -> Result<(), String> {
    let dir = tempfile::Builder::new()
        .prefix("cmesh-values-")
        .tempdir()
        .map_err(|e| format!("temporary directory: {e}"))?;
    let values_path: PathBuf = dir.path().join("values.yaml");
    crate::fs::atomic::write_new(
        &values_path,
        a.values_text.as_bytes(),
        crate::fs::atomic::Mode::Private,
    )
    .map_err(|e| e.to_string())?;
    opts.helm
        .upgrade_install(
            RELEASE,
            chart,
            CILIUM_NAMESPACE,
            &values_path,
            target,
            opts.timeout,
        )
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Carries out a restart decision for `workload`: the agents' pods deleted batch by batch
/// ([`restart_pods`]), a Deployment restarted as `kubectl rollout restart` does; then waits
/// for the rollout.
async fn restart_workload(
    at: &At<'_>,
    step: &'static str,
    workload: Workload,
    decision: Restart,
    opts: &Options,
) -> Step {
    let why = match decision {
        Restart::Skip(why) => {
            return Step {
                millis: 0,
                ..at.step(step, StepOutcome::Skipped, why, Instant::now())
            };
        }
        Restart::Restart(why) => why,
    };
    at.working(&format!("restarting {}", workload.name));
    let t = Instant::now();
    let restarted = if workload.daemonset {
        restart_pods(at, workload, opts)
            .await
            .map(|n| format!("restarted ({n} pods)"))
    } else {
        let stamp = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        at.conn
            .rollout_restart_deployment(workload.name, &stamp)
            .await
            .map(|()| "restarted".to_owned())
            .map_err(|e| format!("rollout restart: {e}"))
    };
    let result = match restarted {
        Ok(done) => wait_rollouts(at.conn, &[workload], opts, at.progress, at.phase)
            .await
            .map(|d| format!("{why}: {done}, {d}")),
        Err(e) => Err(e),
    };
    at.result(step, result, t)
}

/// Restarts DaemonSet `workload` by deleting its pods, as many at a time as may be unavailable
/// ([`decide::restart_batch`]), each batch replaced and the DaemonSet ready again before the
/// next; the pod template is left as the chart made it. Returns how many pods were deleted.
async fn restart_pods(at: &At<'_>, workload: Workload, opts: &Options) -> Result<usize, String> {
    let deadline = Instant::now() + opts.timeout;
    let (pods, batch) = at
        .conn
        .daemonset_pods(workload.name)
        .await
        .map_err(|e| e.to_string())?;
    for (i, chunk) in pods.chunks(batch).enumerate() {
        for (name, uid) in chunk {
            at.conn
                .delete_pod(name, uid)
                .await
                .map_err(|e| e.to_string())?;
        }
        loop {
            let (now, _) = at
                .conn
                .daemonset_pods(workload.name)
                .await
                .map_err(|e| e.to_string())?;
            let old_left = now.iter().any(|(_, u)| chunk.iter().any(|(_, c)| c == u));
            let ready = matches!(
                at.conn.daemonset(workload.name).await,
                Ok(Some(r)) if r.complete()
            );
            if !old_left && ready {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{}: pods of batch {} not replaced and ready after {}s",
                    workload.name,
                    i + 1,
                    opts.timeout.as_secs()
                ));
            }
            at.working(&format!(
                "restarting {}: {} of {} pods",
                workload.name,
                (i * batch + chunk.len()).min(pods.len()),
                pods.len()
            ));
            tokio::time::sleep(opts.poll).await;
        }
    }
    Ok(pods.len())
}

/// Waits until every workload has rolled out and is ready; `Err` names what is not.
async fn wait_rollouts(
    conn: &Conn,
    workloads: &[Workload],
    opts: &Options,
    progress: &dyn Progress,
    phase: Option<Phase>,
) -> Result<String, String> {
    let deadline = Instant::now() + opts.timeout;
    // Give controllers a moment to see a new spec before judging it complete.
    tokio::time::sleep(opts.poll.min(Duration::from_millis(200))).await;
    loop {
        let mut states = Vec::new();
        let mut done = true;
        for &Workload { name: w, daemonset } in workloads {
            let r = if daemonset {
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
            &format!("{}: waiting for {text}", phase_word(phase)),
        );
        tokio::time::sleep(opts.poll).await;
    }
}

/// Waits until no agent (and no KVStoreMesh, when asked) of `conn`'s cluster lists a peer of
/// `dropped` and none lists more than `peers`; `Err` names who still does after `--timeout`.
async fn wait_dropped(
    conn: &Conn,
    dropped: &[String],
    peers: usize,
    opts: &Options,
    progress: &dyn Progress,
    phase: Option<Phase>,
) -> Result<String, String> {
    let t = Instant::now();
    let deadline = t + opts.timeout;
    loop {
        let mut reports = Vec::new();
        match conn.agent_pods().await {
            Ok(pods) => {
                use futures_util::StreamExt;
                let asked: Vec<decide::PeerReport> = futures_util::stream::iter(pods)
                    .map(|(pod, _)| async move {
                        let output = crate::live::status::cilium_json(conn, &pod, &["status"])
                            .await
                            .map_err(|e| e.to_string());
                        decide::PeerReport {
                            pod,
                            kvstoremesh: false,
                            output,
                        }
                    })
                    .buffered(crate::live::status::AGENTS_AT_ONCE)
                    .collect()
                    .await;
                reports.extend(asked);
            }
            Err(e) => reports.push(decide::PeerReport {
                pod: "(listing agents)".into(),
                kvstoremesh: false,
                output: Err(e.to_string()),
            }),
        }
        if opts.ask_kvstoremesh {
            reports.extend(crate::live::status::kvstoremesh_status(conn).await);
        }
        let held = decide::holding_dropped(dropped, peers, &reports);
        if held.is_empty() {
            return Ok(format!(
                "{} let go by every agent{} after {:.1}s, without a restart",
                dropped.join(", "),
                if opts.ask_kvstoremesh {
                    " and KVStoreMesh"
                } else {
                    ""
                },
                t.elapsed().as_secs_f64()
            ));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{} still held after {}s: {}; kubelet has not updated the clustermesh Secret's volume: restart the agents (`kubectl -n kube-system rollout restart ds/cilium`) and re-run",
                dropped.join(", "),
                opts.timeout.as_secs(),
                held.join("; ")
            ));
        }
        progress.working(
            &conn.name,
            &format!(
                "{}: waiting for the agents to let {} go ({})",
                phase_word(phase),
                dropped.join(", "),
                held.join("; ")
            ),
        );
        tokio::time::sleep(opts.poll).await;
    }
}

/// Disconnects a cluster that left the mesh (`apply --prune`, `cmesh disconnect`): its
/// release upgraded without the mesh with `chart` (the chart version it runs), its rollouts
/// waited for, the mesh's Secrets that remain deleted, the agents restarted unless the chart
/// rolled them. Cilium stays installed. `known`: its release values as the plan read them.
pub(crate) async fn disconnect(
    conn: &Conn,
    chart: &Chart,
    opts: &Options,
    progress: &dyn Progress,
    known: Option<serde_json::Value>,
) -> Vec<Step> {
    let at = At {
        conn,
        phase: None,
        progress,
    };
    let mut steps = Vec::new();
    let push = |s: Step, steps: &mut Vec<Step>| {
        progress.finished(&s);
        let failed = s.outcome == StepOutcome::Failed;
        steps.push(s);
        failed
    };
    at.working("reading the release");
    let t = Instant::now();
    let target = Target::of(conn);
    let previous = match release_values(opts, &target, known).await {
        Ok(Some(p)) => Value::from_json(&p),
        Ok(None) => {
            push(
                at.step(
                    "disconnect",
                    StepOutcome::Skipped,
                    "no Cilium release".into(),
                    t,
                ),
                &mut steps,
            );
            push(delete_mesh_secrets(&at).await, &mut steps);
            return steps;
        }
        Err(e) => {
            push(
                at.step("disconnect", StepOutcome::Failed, e.to_string(), t),
                &mut steps,
            );
            return steps;
        }
    };
    let values = cmesh_core::plan::disconnect_values(&previous);
    let agents_generation = conn
        .daemonset("cilium")
        .await
        .ok()
        .flatten()
        .map(|r| r.generation);
    let step = if cmesh_core::value::diff(&previous, &values).is_empty() {
        at.step(
            "disconnect",
            StepOutcome::Skipped,
            "no mesh configuration in the release".into(),
            t,
        )
    } else {
        at.working("helm upgrade without the mesh");
        let text = match cmesh_core::yaml::to_yaml(&values) {
            Ok(t) => t,
            Err(e) => {
                push(
                    at.step("disconnect", StepOutcome::Failed, e.to_string(), t),
                    &mut steps,
                );
                return steps;
            }
        };
        let a = ClusterArtifacts {
            values: values.clone(),
            values_text: text,
            secrets: Vec::new(),
        };
        match upgrade_install(&a, opts, chart, &target).await {
            Ok(()) => at.step(
                "disconnect",
                StepOutcome::Ok,
                "upgraded without the mesh".into(),
                t,
            ),
            Err(e) => at.step("disconnect", StepOutcome::Failed, e, t),
        }
    };
    if push(step, &mut steps) {
        return steps;
    }
    let t = Instant::now();
    let waited = wait_rollouts(conn, &decide::workloads(Phase::Base), opts, progress, None).await;
    if push(at.result("rollout", waited, t), &mut steps) {
        return steps;
    }
    if push(delete_mesh_secrets(&at).await, &mut steps) {
        return steps;
    }
    let rolled_by_chart = match (agents_generation, conn.daemonset("cilium").await) {
        (Some(before), Ok(Some(now))) => now.generation > before,
        _ => false,
    };
    let decision = decide::restart(
        Some(&previous),
        &values,
        decide::SecretChange::default(),
        rolled_by_chart,
    );
    let agents = Workload {
        name: "cilium",
        daemonset: true,
    };
    push(
        restart_workload(&at, "restart", agents, decision, opts).await,
        &mut steps,
    );
    steps
}

/// Deletes the mesh's Secrets that remain (cmesh's and certgen's; the chart's went with the
/// upgrade).
async fn delete_mesh_secrets(at: &At<'_>) -> Step {
    at.working("deleting the mesh's Secrets");
    let t = Instant::now();
    let mut deleted = Vec::new();
    for name in cmesh_core::plan::mesh_secret_names() {
        match at.conn.delete_secret(name).await {
            Ok(true) => deleted.push(name),
            Ok(false) => {}
            Err(e) => {
                return at.step("delete-secrets", StepOutcome::Failed, e.to_string(), t);
            }
        }
    }
    if deleted.is_empty() {
        at.step(
            "delete-secrets",
            StepOutcome::Skipped,
            "none left".into(),
            t,
        )
    } else {
        at.step(
            "delete-secrets",
            StepOutcome::Ok,
            format!("deleted {}", deleted.join(", ")),
            t,
        )
    }
}
