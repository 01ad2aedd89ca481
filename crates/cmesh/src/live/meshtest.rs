//! Running `cmesh test` on live clusters: creating each cluster's test objects, waiting for
//! them, running the curl batches of every cell, scaling for failover and ingress, and
//! cleaning up. The cells, requests and judgements come from `cmesh_core::meshtest`; this
//! module only carries them out and keeps what it created so that cleanup can always run, even
//! after the run itself was cancelled (Ctrl-C) or failed.

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cmesh_core::lint::annotations as ann;
use cmesh_core::meshtest::curl::{self, Attempt};
use cmesh_core::meshtest::judge::{self, Cell, Outcome};
use cmesh_core::meshtest::{
    CLIENT, CLIENT_APP, Cleanup, CleanupOutcome, Kind, Lesson, SERVER, SERVER_APP, SERVER_LOCAL,
    SERVER_REMOTE, Settings, manifests,
};
use futures_util::StreamExt;
use futures_util::future::join_all;

use crate::live::kube::{Conn, KubeError};

/// How a run behaves.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// The parts to run.
    pub kinds: Vec<Kind>,
    /// Leave the namespaces in place.
    pub keep: bool,
    /// Bound on each wait: pods ready, scaled down, namespace gone.
    pub wait: Duration,
    /// How long a check that has not passed yet is retried (Cilium needs a moment to learn
    /// new endpoints).
    pub retry_for: Duration,
    /// Bound on each Kubernetes API request.
    pub request_timeout: Duration,
    /// Pause between polls and retries.
    pub poll: Duration,
    /// The ingress class for the ingress part (default: the class of ingress-nginx).
    pub ingress_class: Option<String>,
    /// Requests per pod-to-pod cell.
    pub pod_requests: u32,
}

/// A cluster's server pod, once ready.
#[derive(Debug, Clone)]
struct Server {
    pod: String,
    ip: String,
}

#[derive(Default)]
struct Progress {
    cells: Vec<Cell>,
    lessons: Vec<Lesson>,
    errors: Vec<String>,
    /// Clusters where the namespace was (or may have been) created.
    created: Vec<String>,
}

/// One run of the suite.
pub(crate) struct Suite {
    conns: Vec<Conn>,
    settings: Settings,
    opts: Options,
    progress: Mutex<Progress>,
    log: Box<dyn Fn(&str) + Send + Sync>,
}

/// Why a step of the suite could not be done (the cells it needed are then "not run" with
/// this as the reason).
#[derive(Debug, thiserror::Error)]
pub(crate) enum StepError {
    /// The API server refused or failed a request.
    #[error(transparent)]
    Kube(#[from] KubeError),
    /// A request got no answer within the request timeout.
    #[error("no answer within {}s", .0.as_secs())]
    NoAnswer(Duration),
    /// A wait ran out.
    #[error("timed out after {}s waiting for {what}{}", .after.as_secs(), last_error(.last))]
    Timeout {
        /// What was awaited.
        what: String,
        /// The bound.
        after: Duration,
        /// The last error seen while polling.
        last: Option<Box<StepError>>,
    },
    /// The server pod was ready, then gone before it could be read.
    #[error("server pod vanished")]
    ServerVanished,
    /// No ingress-nginx controller or class to test with.
    #[error("{0}")]
    NoIngress(String),
}

fn last_error(last: &Option<Box<StepError>>) -> String {
    last.as_ref()
        .map(|e| format!(" (last error: {e})"))
        .unwrap_or_default()
}

impl Suite {
    /// A run over `conns` (mesh order). `log` receives progress lines.
    pub(crate) fn new(
        conns: Vec<Conn>,
        settings: Settings,
        opts: Options,
        log: Box<dyn Fn(&str) + Send + Sync>,
    ) -> Suite {
        Suite {
            conns,
            settings,
            opts,
            progress: Mutex::new(Progress::default()),
            log,
        }
    }

    fn names(&self) -> Vec<String> {
        self.conns.iter().map(|c| c.name.clone()).collect()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Progress) -> T) -> T {
        f(&mut self.progress.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn record(&self, cell: Cell) {
        self.with(|p| p.cells.push(cell));
    }

    fn error(&self, e: String) {
        (self.log)(&format!("error: {e}"));
        self.with(|p| p.errors.push(e));
    }

    /// Bounds one API call by the request timeout.
    async fn api<T>(&self, f: impl Future<Output = Result<T, KubeError>>) -> Result<T, StepError> {
        bounded(self.opts.request_timeout, f).await
    }

    /// Runs every selected part. Results accumulate inside the suite, so that a cancelled run
    /// still reports what it did; call [`Suite::cleanup`] and [`Suite::finish`] after.
    pub(crate) async fn run(&self) {
        (self.log)(&format!(
            "namespace {} in {}",
            self.settings.namespace,
            self.names().join(", ")
        ));
        let servers: Vec<Result<Server, StepError>> =
            join_all(self.conns.iter().map(|c| self.setup(c))).await;
        for (c, s) in self.conns.iter().zip(&servers) {
            if let Err(e) = s {
                self.error(format!("{}: setup: {e}", c.name));
            }
        }
        let kinds = self.opts.kinds.clone();
        if kinds.contains(&Kind::Pod) {
            self.pods(&servers).await;
        }
        if kinds.contains(&Kind::Service) {
            self.services(&servers).await;
        }
        if kinds.contains(&Kind::Failover) {
            for (i, c) in self.conns.iter().enumerate() {
                self.failover(c, servers[i].is_ok(), &servers).await;
            }
        }
        if kinds.contains(&Kind::Ingress) {
            for (i, c) in self.conns.iter().enumerate() {
                self.ingress(c, servers[i].is_ok()).await;
            }
        }
    }

    async fn setup(&self, c: &Conn) -> Result<Server, StepError> {
        self.with(|p| p.created.push(c.name.clone()));
        for obj in manifests::setup(&self.settings, &c.name) {
            self.api(c.create(&obj)).await?;
        }
        (self.log)(&format!(
            "{}: test objects created, waiting for pods",
            c.name
        ));
        let server = self.wait_server(c).await?;
        let ns = &self.settings.namespace;
        let client = format!("app.kubernetes.io/name={CLIENT_APP}");
        self.wait_until(&format!("{}: client pod ready", c.name), || async {
            let pods = self.api(c.pods(ns, &client)).await?;
            Ok(pods.iter().any(|p| p.name == CLIENT && p.ready))
        })
        .await?;
        (self.log)(&format!(
            "{}: ready (server {} at {})",
            c.name, server.pod, server.ip
        ));
        Ok(server)
    }

    /// Polls `check` until it returns true or `opts.wait` expires.
    async fn wait_until<F, Fut>(&self, what: &str, check: F) -> Result<(), StepError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<bool, StepError>>,
    {
        let deadline = Instant::now() + self.opts.wait;
        let mut last = None;
        loop {
            match check().await {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => last = Some(Box::new(e)),
            }
            if Instant::now() >= deadline {
                return Err(StepError::Timeout {
                    what: what.to_owned(),
                    after: self.opts.wait,
                    last,
                });
            }
            tokio::time::sleep(self.opts.poll).await;
        }
    }

    async fn wait_server(&self, c: &Conn) -> Result<Server, StepError> {
        let ns = &self.settings.namespace;
        let sel = format!("app.kubernetes.io/name={SERVER_APP}");
        let found: Mutex<Option<Server>> = Mutex::new(None);
        self.wait_until(&format!("{}: server pod ready", c.name), || async {
            let pods = self.api(c.pods(ns, &sel)).await?;
            let ready = pods
                .into_iter()
                .find_map(|p| match (p.ready && !p.terminating, p.ip) {
                    (true, Some(ip)) => Some(Server { pod: p.name, ip }),
                    _ => None,
                });
            let ok = ready.is_some();
            *found.lock().unwrap_or_else(|p| p.into_inner()) = ready;
            Ok(ok)
        })
        .await?;
        found
            .into_inner()
            .unwrap_or_else(|p| p.into_inner())
            .ok_or(StepError::ServerVanished)
    }

    async fn wait_no_server(&self, c: &Conn) -> Result<(), StepError> {
        let ns = &self.settings.namespace;
        let sel = format!("app.kubernetes.io/name={SERVER_APP}");
        self.wait_until(&format!("{}: server pods gone", c.name), || async {
            Ok(self.api(c.pods(ns, &sel)).await?.is_empty())
        })
        .await
    }

    /// One batch of requests from `c`'s client pod.
    async fn batch(&self, c: &Conn, url: &str, host: Option<&str>, count: u32) -> Vec<Attempt> {
        let req = curl::Request {
            url: url.to_owned(),
            host: host.map(str::to_owned),
            count,
            timeout_secs: self.settings.http_timeout_secs,
        };
        let cmd = req.command();
        let refs: Vec<&str> = cmd.iter().map(String::as_str).collect();
        // The whole batch may take count × the HTTP timeout; bound it by that, not by the
        // API request timeout.
        let bound = Duration::from_secs(u64::from(count) * u64::from(req.timeout_secs.max(1) + 1))
            + self.opts.request_timeout;
        let failed = |e: String| -> Vec<Attempt> {
            (0..count)
                .map(|_| Attempt {
                    exit: -1,
                    error: Some(format!("exec in {}/{CLIENT} failed: {e}", c.name)),
                    ..Attempt::default()
                })
                .collect()
        };
        match tokio::time::timeout(
            bound,
            c.exec_in(&self.settings.namespace, CLIENT, "curl", &refs),
        )
        .await
        {
            Ok(Ok(out)) => {
                let mut a = curl::parse(&out);
                if a.len() < count as usize {
                    let missing = failed(format!(
                        "{} of {count} results missing in the output",
                        count as usize - a.len()
                    ));
                    a.extend(missing.into_iter().take(count as usize - a.len()));
                }
                a
            }
            Ok(Err(e)) => failed(e.to_string()),
            Err(_) => failed(format!("no result within {}s", bound.as_secs())),
        }
    }

    /// Batches until `done` holds for the last batch or `opts.retry_for` expires; returns the
    /// last batch.
    async fn settle(
        &self,
        c: &Conn,
        url: &str,
        host: Option<&str>,
        count: u32,
        done: impl Fn(&[Attempt]) -> bool,
    ) -> Vec<Attempt> {
        let deadline = Instant::now() + self.opts.retry_for;
        loop {
            let a = self.batch(c, url, host, count).await;
            if done(&a) || Instant::now() >= deadline {
                return a;
            }
            tokio::time::sleep(self.opts.poll).await;
        }
    }

    async fn pods(&self, servers: &[Result<Server, StepError>]) {
        (self.log)("pod to pod");
        let names = self.names();
        let mut jobs = Vec::new();
        for (i, from) in self.conns.iter().enumerate() {
            for (j, to) in names.iter().enumerate() {
                if i == j {
                    continue;
                }
                match (&servers[i], &servers[j]) {
                    (Ok(_), Ok(target)) => jobs.push((from, to.clone(), target.clone())),
                    (Err(_), _) | (_, Err(_)) => {
                        let bad = if servers[i].is_err() { &from.name } else { to };
                        self.record(judge::not_run(
                            Kind::Pod,
                            "pod",
                            &from.name,
                            Some(to),
                            &format!("setup failed in {bad}"),
                            true,
                        ));
                    }
                }
            }
        }
        let cells: Vec<Cell> = futures_util::stream::iter(jobs)
            .map(|(from, to, target)| async move {
                let url = format!("http://{}:{}/", target.ip, cmesh_core::meshtest::PORT);
                let a = self
                    .settle(from, &url, None, self.opts.pod_requests, |a| {
                        judge::pod(&from.name, &to, &target.pod, &target.ip, a).outcome
                            == Outcome::Pass
                    })
                    .await;
                judge::pod(&from.name, &to, &target.pod, &target.ip, &a)
            })
            .buffer_unordered(8)
            .collect()
            .await;
        for c in cells {
            self.record(c);
        }
    }

    async fn services(&self, servers: &[Result<Server, StepError>]) {
        (self.log)("global service");
        let names = self.names();
        let ready: Vec<String> = names
            .iter()
            .zip(servers)
            .filter(|(_, s)| s.is_ok())
            .map(|(n, _)| n.clone())
            .collect();
        let rows = self.conns.iter().zip(servers).map(|(from, server)| {
            let names = names.clone();
            let ready = ready.clone();
            async move {
                let mut out = Vec::new();
                if server.is_err() {
                    for to in &names {
                        out.push(judge::not_run(
                            Kind::Service,
                            "service",
                            &from.name,
                            Some(to),
                            &format!("setup failed in {}", from.name),
                            true,
                        ));
                    }
                    return out;
                }
                let url = self.settings.service_url(SERVER);
                // Load balancing is random: keep sampling until every cluster answered or
                // time is up, and judge all samples together.
                let deadline = Instant::now() + self.opts.retry_for;
                let mut all: Vec<Attempt> = Vec::new();
                loop {
                    all.extend(self.batch(from, &url, None, self.settings.requests).await);
                    if judge::service_complete(&ready, &all) || Instant::now() >= deadline {
                        break;
                    }
                    tokio::time::sleep(self.opts.poll).await;
                }
                for cell in judge::service_row(&from.name, &ready, SERVER, &all) {
                    out.push(cell);
                }
                for to in names.iter().filter(|n| !ready.contains(n)) {
                    out.push(judge::not_run(
                        Kind::Service,
                        "service",
                        &from.name,
                        Some(to),
                        &format!("setup failed in {to}"),
                        true,
                    ));
                }
                for (mode, svc) in [("local", SERVER_LOCAL), ("remote", SERVER_REMOTE)] {
                    let url = self.settings.service_url(svc);
                    let a = self
                        .settle(from, &url, None, self.settings.requests, |a| {
                            judge::affinity(&from.name, mode, svc, a).outcome == Outcome::Pass
                        })
                        .await;
                    out.push(judge::affinity(&from.name, mode, svc, &a));
                }
                out
            }
        });
        for row in join_all(rows).await {
            for c in row {
                self.record(c);
            }
        }
    }

    async fn scale(&self, c: &Conn, replicas: i32) -> Result<(), StepError> {
        self.api(c.scale(&self.settings.namespace, SERVER, replicas))
            .await?;
        if replicas == 0 {
            self.wait_no_server(c).await
        } else {
            self.wait_server(c).await.map(|_| ())
        }
    }

    /// Scales `c`'s server to 0 and waits for its pods to go. On failure, records `checks` as
    /// not run, restores a replica, and returns false.
    async fn scale_down(&self, c: &Conn, kind: Kind, checks: &[&'static str]) -> bool {
        let Err(e) = self.scale(c, 0).await else {
            return true;
        };
        self.error(format!("{}: scale down: {e}", c.name));
        for check in checks {
            self.record(judge::not_run(
                kind,
                check,
                &c.name,
                None,
                &format!("scaling down failed: {e}"),
                true,
            ));
        }
        let _ = self.scale(c, 1).await;
        false
    }

    async fn failover(&self, c: &Conn, ready: bool, servers: &[Result<Server, StepError>]) {
        let others = servers
            .iter()
            .filter(|s| s.is_ok())
            .count()
            .saturating_sub(usize::from(ready));
        if !ready || others == 0 {
            let why = if ready {
                "no other cluster has a ready server"
            } else {
                "setup failed"
            };
            for check in ["failover", "local-return"] {
                self.record(judge::not_run(
                    Kind::Failover,
                    check,
                    &c.name,
                    None,
                    why,
                    true,
                ));
            }
            return;
        }
        (self.log)(&format!("failover: {} replicas to 0", c.name));
        if !self
            .scale_down(c, Kind::Failover, &["failover", "local-return"])
            .await
        {
            return;
        }
        let url = self.settings.service_url(SERVER);
        let a = self
            .settle(c, &url, None, self.settings.requests, |a| {
                judge::failover(&c.name, SERVER, a).outcome == Outcome::Pass
            })
            .await;
        self.record(judge::failover(&c.name, SERVER, &a));
        (self.log)(&format!("failover: {} replicas back to 1", c.name));
        if let Err(e) = self.scale(c, 1).await {
            self.error(format!("{}: scale up: {e}", c.name));
            self.record(judge::not_run(
                Kind::Failover,
                "local-return",
                &c.name,
                None,
                &format!("scaling back failed: {e}"),
                true,
            ));
            return;
        }
        let url = self.settings.service_url(SERVER_LOCAL);
        let a = self
            .settle(c, &url, None, self.settings.requests, |a| {
                judge::local_return(&c.name, SERVER_LOCAL, a).outcome == Outcome::Pass
            })
            .await;
        self.record(judge::local_return(&c.name, SERVER_LOCAL, &a));
    }

    /// The ingress-nginx controller Service (`http://name.ns.svc:port/`) and the class to use.
    async fn find_ingress(&self, c: &Conn) -> Result<(String, String), StepError> {
        let sel = "app.kubernetes.io/name=ingress-nginx,app.kubernetes.io/component=controller";
        let services = self
            .api(c.list_json("v1", "Service", None, Some(sel)))
            .await?;
        let Some(svc) = services.first() else {
            return Err(StepError::NoIngress(format!(
                "no ingress-nginx controller in {} (no Service labelled {sel})",
                c.name
            )));
        };
        let ports = svc
            .pointer("/spec/ports")
            .and_then(|p| p.as_array())
            .cloned()
            .unwrap_or_default();
        let port = ports
            .iter()
            .find(|p| p["name"] == "http")
            .or_else(|| ports.iter().find(|p| p["port"] == 80))
            .and_then(|p| p["port"].as_i64())
            .unwrap_or(80);
        let url = format!(
            "http://{}.{}.svc:{port}/",
            svc.pointer("/metadata/name")
                .and_then(|v| v.as_str())
                .unwrap_or_default(),
            svc.pointer("/metadata/namespace")
                .and_then(|v| v.as_str())
                .unwrap_or_default()
        );
        if let Some(class) = &self.opts.ingress_class {
            return Ok((url, class.clone()));
        }
        let classes = self
            .api(c.list_json("networking.k8s.io/v1", "IngressClass", None, None))
            .await?;
        let nginx: Vec<&serde_json::Value> = classes
            .iter()
            .filter(|k| {
                k.pointer("/spec/controller").and_then(|v| v.as_str())
                    == Some(ann::NGINX_CONTROLLER)
            })
            .collect();
        let default = nginx.iter().find(|k| {
            k.pointer(&format!(
                "/metadata/annotations/{}",
                ann::DEFAULT_CLASS.replace('/', "~1")
            ))
            .and_then(|v| v.as_str())
                == Some("true")
        });
        let class = default
            .or(nginx.first())
            .and_then(|k| k.pointer("/metadata/name").and_then(|v| v.as_str()))
            .ok_or_else(|| {
                StepError::NoIngress(format!(
                    "no IngressClass with controller {} in {}; pass --ingress-class",
                    ann::NGINX_CONTROLLER,
                    c.name
                ))
            })?;
        Ok((url, class.to_owned()))
    }

    async fn ingress(&self, c: &Conn, ready: bool) {
        const CHECKS: [&str; 3] = [
            "ingress-baseline",
            "ingress-without-upstream",
            "ingress-with-upstream",
        ];
        let skip_all = |why: &str, fail: bool| {
            for check in CHECKS {
                self.record(judge::not_run(
                    Kind::Ingress,
                    check,
                    &c.name,
                    None,
                    why,
                    fail,
                ));
            }
        };
        if !ready {
            skip_all("setup failed", true);
            return;
        }
        let (url, class) = match self.find_ingress(c).await {
            Ok(x) => x,
            Err(e) => {
                (self.log)(&format!("ingress: {}: skipped: {e}", c.name));
                skip_all(&e.to_string(), false);
                return;
            }
        };
        (self.log)(&format!(
            "ingress: {} through {url} (class {class})",
            c.name
        ));
        let ns = self.settings.namespace.clone();
        if let Err(e) = self
            .api(c.create(&manifests::ingress(&self.settings, &class, false)))
            .await
        {
            self.error(format!("{}: {e}", c.name));
            skip_all(&e.to_string(), true);
            return;
        }
        let host = self.settings.ingress_host();
        let n = self.settings.requests;
        let a = self
            .settle(c, &url, Some(&host), n, |a| {
                judge::ingress_baseline(&c.name, a).outcome == Outcome::Pass
            })
            .await;
        let baseline = judge::ingress_baseline(&c.name, &a);
        let baseline_ok = baseline.outcome == Outcome::Pass;
        self.record(baseline);
        if !baseline_ok {
            for check in &CHECKS[1..] {
                self.record(judge::not_run(
                    Kind::Ingress,
                    check,
                    &c.name,
                    None,
                    "the Ingress does not work with local replicas (ingress-baseline)",
                    true,
                ));
            }
            return;
        }
        if !self.scale_down(c, Kind::Ingress, &CHECKS[1..]).await {
            return;
        }
        let a = self
            .settle(c, &url, Some(&host), n, |a| {
                judge::ingress_without_upstream(&c.name, a).0.outcome == Outcome::Pass
            })
            .await;
        let (cell, lesson) = judge::ingress_without_upstream(&c.name, &a);
        self.record(cell);
        if let Some(l) = lesson {
            self.with(|p| p.lessons.push(l));
        }
        let patched = self
            .api(c.merge_patch(
                "networking.k8s.io/v1",
                "Ingress",
                Some(&ns),
                SERVER,
                &manifests::service_upstream_patch(true),
            ))
            .await;
        if let Err(e) = patched {
            self.error(format!("{}: {e}", c.name));
            self.record(judge::not_run(
                Kind::Ingress,
                "ingress-with-upstream",
                &c.name,
                None,
                &e.to_string(),
                true,
            ));
        } else {
            let a = self
                .settle(c, &url, Some(&host), n, |a| {
                    judge::ingress_with_upstream(&c.name, a, true).outcome == Outcome::Pass
                })
                .await;
            let present = match self
                .api(c.get_json("networking.k8s.io/v1", "Ingress", Some(&ns), SERVER))
                .await
            {
                Ok(Some(i)) => i
                    .pointer(&format!(
                        "/metadata/annotations/{}",
                        ann::SERVICE_UPSTREAM.replace('/', "~1")
                    ))
                    .is_some(),
                _ => true,
            };
            self.record(judge::ingress_with_upstream(&c.name, &a, present));
        }
        if let Err(e) = self.scale(c, 1).await {
            self.error(format!("{}: scale up: {e}", c.name));
        }
    }

    /// Deletes the run's namespace wherever it may have been created (unless `--keep`), and
    /// waits for it to go.
    pub(crate) async fn cleanup(&self) -> Vec<Cleanup> {
        let created = self.with(|p| p.created.clone());
        let ns = self.settings.namespace.clone();
        if self.opts.keep {
            return created
                .into_iter()
                .map(|cluster| Cleanup {
                    cluster,
                    namespace: ns.clone(),
                    outcome: CleanupOutcome::Kept,
                })
                .collect();
        }
        let targets: Vec<(&Conn, String)> = self
            .conns
            .iter()
            .filter(|c| created.contains(&c.name))
            .map(|c| (c, ns.clone()))
            .collect();
        (self.log)(&format!("cleanup: deleting namespace {ns}"));
        delete_namespaces(
            &targets,
            self.opts.request_timeout,
            self.opts.wait,
            self.opts.poll,
        )
        .await
    }

    /// The report of the run.
    pub(crate) fn finish(
        &self,
        cleanup: Vec<Cleanup>,
        interrupted: bool,
        started: Instant,
    ) -> cmesh_core::meshtest::Report {
        let names = self.names();
        let (mut cells, lessons, errors) =
            self.with(|p| (p.cells.clone(), p.lessons.clone(), p.errors.clone()));
        let order = |c: &Cell| {
            let idx = |n: &str| names.iter().position(|x| x == n).unwrap_or(usize::MAX);
            (
                c.kind,
                CHECK_ORDER
                    .iter()
                    .position(|x| *x == c.check)
                    .unwrap_or(usize::MAX),
                idx(&c.from),
                c.to.as_deref().map_or(0, idx),
            )
        };
        cells.sort_by_key(order);
        cmesh_core::meshtest::Report {
            run_id: self.settings.run_id.clone(),
            namespace: self.settings.namespace.clone(),
            clusters: names,
            kinds: self.opts.kinds.clone(),
            cells,
            lessons,
            errors,
            cleanup,
            interrupted,
            seconds: started.elapsed().as_secs_f64(),
        }
    }
}

const CHECK_ORDER: [&str; 10] = [
    "pod",
    "service",
    "service-errors",
    "affinity-local",
    "affinity-remote",
    "failover",
    "local-return",
    "ingress-baseline",
    "ingress-without-upstream",
    "ingress-with-upstream",
];

async fn bounded<T>(
    limit: Duration,
    f: impl Future<Output = Result<T, KubeError>>,
) -> Result<T, StepError> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(StepError::NoAnswer(limit)),
    }
}

/// Deletes each (cluster, namespace) and waits up to `wait` for it to disappear.
pub(crate) async fn delete_namespaces(
    targets: &[(&Conn, String)],
    request_timeout: Duration,
    wait: Duration,
    poll: Duration,
) -> Vec<Cleanup> {
    let jobs = targets.iter().map(|(c, ns)| async move {
        let outcome = match bounded(request_timeout, c.delete_namespace(ns)).await {
            Err(e) => CleanupOutcome::Failed {
                reason: e.to_string(),
            },
            Ok(_) => {
                let deadline = Instant::now() + wait;
                loop {
                    match bounded(request_timeout, c.namespace_exists(ns)).await {
                        Ok(false) => break CleanupOutcome::Deleted,
                        Ok(true) if Instant::now() >= deadline => {
                            break CleanupOutcome::Terminating;
                        }
                        Err(e) if Instant::now() >= deadline => {
                            break CleanupOutcome::Failed {
                                reason: e.to_string(),
                            };
                        }
                        _ => tokio::time::sleep(poll).await,
                    }
                }
            }
        };
        Cleanup {
            cluster: c.name.clone(),
            namespace: ns.clone(),
            outcome,
        }
    });
    join_all(jobs).await
}

/// Finds the namespaces of any run (by label) in every cluster and deletes them.
pub(crate) async fn remove_leftovers(
    conns: &[Conn],
    request_timeout: Duration,
    wait: Duration,
    poll: Duration,
) -> Vec<Cleanup> {
    let selector = cmesh_core::meshtest::leftovers_selector();
    let mut targets = Vec::new();
    let mut failed = Vec::new();
    for c in conns {
        match bounded(request_timeout, c.namespaces(&selector)).await {
            Ok(list) => targets.extend(list.into_iter().map(|ns| (c, ns))),
            Err(e) => failed.push(Cleanup {
                cluster: c.name.clone(),
                namespace: "*".into(),
                outcome: CleanupOutcome::Failed {
                    reason: e.to_string(),
                },
            }),
        }
    }
    let mut out = delete_namespaces(&targets, request_timeout, wait, poll).await;
    out.extend(failed);
    out
}
