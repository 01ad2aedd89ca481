//! Membership on the lab's real agents (issue 22): three clusters meshed, a fourth joins, then
//! one leaves with `apply --prune`, while a sampler sends a request every 200 ms from a pod of
//! each cluster that stays to its cluster's global Service (backends in every cluster) and
//! records who answered. Each apply is planned first (`cmesh plan`, compared with the plan
//! apply shows and with what it did) and followed by `status` green on every cluster left.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use cmesh_core::meshtest::{self, Settings};
use integration_tests::lab::name;
use integration_tests::mesh::{Mesh, check};
use serde_json::Value;

use super::{bin, code, json};

const NS: &str = "membership";

/// Where requests leave from: the client pod of a cluster (entered by `kubectl exec`, as
/// `cmesh test` does, so that Cilium's socket load-balancing applies), and its cluster's
/// global Service.
struct Source {
    cluster: String,
    kubeconfig: std::path::PathBuf,
    service: String,
}

/// A client of one cluster on a runtime of its own (one per sampler thread).
struct Asker {
    rt: tokio::runtime::Runtime,
    client: kube::Client,
}

impl Asker {
    fn new(kubeconfig: &std::path::Path) -> Asker {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = rt
            .block_on(async {
                let kc =
                    kube::config::Kubeconfig::read_from(kubeconfig).map_err(|e| e.to_string())?;
                let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
                    .await
                    .map_err(|e| e.to_string())?;
                kube::Client::try_from(cfg).map_err(|e| e.to_string())
            })
            .unwrap_or_else(|e| panic!("{}: {e}", kubeconfig.display()));
        Asker { rt, client }
    }

    /// One request to the global Service from the client pod; the cluster that answered.
    fn ask(&self, from: &Source) -> Result<String, String> {
        use k8s_openapi::api::core::v1::Pod;
        use kube::api::AttachParams;
        use tokio::io::AsyncReadExt as _;
        let url = format!("http://{}:{}/", from.service, meshtest::PORT);
        let (out, err, status) = self.rt.block_on(async {
            let api: kube::Api<Pod> = kube::Api::namespaced(self.client.clone(), NS);
            let ap = AttachParams::default()
                .stdin(false)
                .stdout(true)
                .stderr(true);
            let mut p = api
                .exec(
                    meshtest::CLIENT,
                    vec!["curl", "-sS", "-m", "2", url.as_str()],
                    &ap,
                )
                .await
                .map_err(|e| e.to_string())?;
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let (o, e) = (p.stdout(), p.stderr());
            tokio::join!(
                async {
                    if let Some(mut o) = o {
                        let _ = o.read_to_end(&mut out).await;
                    }
                },
                async {
                    if let Some(mut e) = e {
                        let _ = e.read_to_end(&mut err).await;
                    }
                }
            );
            let status = match p.take_status() {
                Some(f) => f.await,
                None => None,
            };
            let _ = p.join().await;
            Ok::<_, String>((out, err, status))
        })?;
        let body = String::from_utf8_lossy(&out);
        let failed = status.is_some_and(|s| s.status.as_deref() == Some("Failure"));
        match body.split("cluster=").nth(1) {
            Some(rest) if !failed => Ok(rest
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .next()
                .unwrap_or_default()
                .to_owned()),
            _ => Err(format!(
                "{} {}",
                body.trim(),
                String::from_utf8_lossy(&err).trim()
            )),
        }
    }
}

/// What the sampler saw.
#[derive(Debug, Default)]
struct Seen {
    requests: usize,
    /// Seconds into the sampling, from, why.
    failures: Vec<(f64, String)>,
    /// Seconds, which cluster answered.
    answers: Vec<(f64, String)>,
    /// Seconds, what the body did.
    marks: Vec<(f64, String)>,
}

impl Seen {
    fn answered_by(&self, after: f64) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for (t, c) in &self.answers {
            if *t >= after {
                *out.entry(c.clone()).or_insert(0) += 1;
            }
        }
        out
    }

    fn mark(&self, what: &str) -> f64 {
        self.marks
            .iter()
            .find(|(_, w)| w == what)
            .map_or_else(|| panic!("no mark {what}"), |(t, _)| *t)
    }
}

fn lock(m: &Mutex<Seen>) -> std::sync::MutexGuard<'_, Seen> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The test's Deployment, global Services and client in clusters `which`.
fn setup(m: &Mesh, which: &[usize]) {
    let mut s = Settings::new("membership", m.cilium.version.parse().unwrap());
    s.namespace = NS.into();
    for &i in which {
        m.apply_objects(i, &meshtest::manifests::setup(&s, &name(i)));
    }
}

/// Waits until cluster `i`'s server pod runs.
fn server_running(m: &Mesh, i: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !m
        .lab
        .kubelet(i)
        .running()
        .iter()
        .any(|(pod, _)| pod.starts_with(&format!("{NS}/{}-", meshtest::SERVER)))
    {
        assert!(
            Instant::now() < deadline,
            "{}: server pod not running\n{}",
            name(i),
            m.lab.logs(20)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn source(m: &Mesh, i: usize) -> Source {
    server_running(m, i);
    let ip = m.kube(i, async |c| {
        let api: kube::Api<k8s_openapi::api::core::v1::Service> = kube::Api::namespaced(c, NS);
        Ok(api
            .get(meshtest::SERVER)
            .await?
            .spec
            .and_then(|s| s.cluster_ip)
            .unwrap_or_default())
    });
    let s = Source {
        cluster: name(i),
        kubeconfig: m.lab.clusters[i].kubeconfig.clone(),
        service: ip,
    };
    // Answering before sampling starts (the client running, the Service programmed).
    let asker = Asker::new(&s.kubeconfig);
    let deadline = Instant::now() + Duration::from_secs(90);
    while let Err(e) = asker.ask(&s) {
        assert!(Instant::now() < deadline, "{}: {e}", s.cluster);
        std::thread::sleep(Duration::from_millis(500));
    }
    s
}

/// Runs `body` while every source asks its global Service every 200 ms.
fn sampled<T>(sources: &[Source], body: impl FnOnce(&dyn Fn(&str)) -> T) -> (T, Seen) {
    let stop = AtomicBool::new(false);
    let seen = Mutex::new(Seen::default());
    let start = Instant::now();
    let mark = |what: &str| {
        lock(&seen)
            .marks
            .push((start.elapsed().as_secs_f64(), what.to_owned()));
    };
    struct StopOnDrop<'a>(&'a AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let out = std::thread::scope(|scope| {
        for s in sources {
            let (stop, seen) = (&stop, &seen);
            scope.spawn(move || {
                let asker = Asker::new(&s.kubeconfig);
                while !stop.load(Ordering::Relaxed) {
                    let tick = Instant::now();
                    let r = asker.ask(s);
                    let at = start.elapsed().as_secs_f64();
                    let mut g = lock(seen);
                    g.requests += 1;
                    match r {
                        Ok(c) => g.answers.push((at, c)),
                        Err(e) => g.failures.push((at, format!("{}: {e}", s.cluster))),
                    }
                    drop(g);
                    std::thread::sleep(Duration::from_millis(200).saturating_sub(tick.elapsed()));
                }
            });
        }
        let _stop = StopOnDrop(&stop);
        body(&mark)
    });
    (
        out,
        seen.into_inner().unwrap_or_else(PoisonError::into_inner),
    )
}

fn report(m: &Mesh, what: &str, took: Duration, s: &Seen) {
    let summary = format!(
        "{} requests, {} failed, answered by {:?}",
        s.requests,
        s.failures.len(),
        s.answered_by(0.0)
    );
    m.timing(
        &format!("{what}: {summary}"),
        i32::from(!s.failures.is_empty()),
        took,
    );
    eprintln!("{what} in {:.0}s: {summary}", took.as_secs_f64());
    for (t, w) in &s.marks {
        eprintln!("  {t:6.1}s -- {w}");
    }
    for (t, w) in s.failures.iter().take(20) {
        eprintln!("  {t:6.1}s failed: {w}");
    }
}

/// mesh.yaml without the clusters named.
fn without(text: &str, names: &[&str]) -> String {
    let mut out = String::new();
    let mut skip = false;
    for line in text.split_inclusive('\n') {
        if let Some(n) = line.strip_prefix("  - name: ") {
            skip = names.contains(&n.trim());
        }
        if !skip {
            out.push_str(line);
        }
    }
    out
}

fn record(m: &Mesh) -> String {
    std::fs::read_to_string(m.dir().join("pki/membership.yaml")).unwrap_or_default()
}

/// Each cluster of the record with its field `field` (`state`, `version`).
fn record_field(m: &Mesh, field: &str) -> Vec<(String, String)> {
    let text = record(m);
    let prefix = format!("    {field}: ");
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        if let Some(n) = line.strip_prefix("  - name: ") {
            current = n.trim_matches('"').to_owned();
        }
        if let Some(v) = line.strip_prefix(&prefix) {
            out.push((current.clone(), v.trim_matches('"').to_owned()));
        }
    }
    out
}

fn states(m: &Mesh) -> Vec<(String, String)> {
    record_field(m, "state")
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

/// Index of the first step of `cluster` matching `step` (and phase, when given).
fn step_index(apply: &Value, cluster: &str, step: &str) -> usize {
    apply["steps"]
        .as_array()
        .unwrap()
        .iter()
        .position(|s| s["cluster"] == cluster && s["step"] == step)
        .unwrap_or_else(|| panic!("no step {step} of {cluster}: {apply:#}"))
}

fn last_index(apply: &Value, cluster: &str) -> usize {
    apply["steps"]
        .as_array()
        .unwrap()
        .iter()
        .rposition(|s| s["cluster"] == cluster)
        .unwrap()
}

/// Three clusters meshed, then the fourth joins: planned first (it joins, the others gain
/// it), applied in that order, every cluster green after, its backends answering the others'
/// global Services, and no request failing meanwhile.
pub(crate) fn a_fourth_cluster_joins(m: &Mesh) {
    let path = m.dir().join("mesh.yaml");
    let full = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, without(&full, &["k8s04"])).unwrap();
    code(m, &m.apply(bin(), &[]), 0);
    let (r, v) = m.status_wait(bin(), "180s");
    code(m, &r, 0);
    super::all_pass(m, &v, 3);
    assert_eq!(
        states(m),
        pairs(&[
            ("k8s01", "meshed"),
            ("k8s02", "meshed"),
            ("k8s03", "meshed")
        ]),
        "{}",
        record(m)
    );
    setup(m, &[0, 1, 2]);
    let sources = [source(m, 0), source(m, 2)];

    std::fs::write(&path, &full).unwrap();
    let (r, plan) = m.plan_json(bin(), &[]);
    code(m, &r, 0);
    let clusters = plan["clusters"].as_array().unwrap();
    let order: Vec<(&str, &str)> = clusters
        .iter()
        .map(|c| (c["cluster"].as_str().unwrap(), c["role"].as_str().unwrap()))
        .collect();
    assert_eq!(
        order,
        [
            ("k8s04", "join"),
            ("k8s01", "member"),
            ("k8s02", "member"),
            ("k8s03", "member")
        ],
        "{plan:#}"
    );
    assert_eq!(clusters[0]["helm"][0]["action"], "install", "{plan:#}");
    for c in &clusters[1..] {
        assert_eq!(c["peersAdded"], serde_json::json!(["k8s04"]), "{c:#}");
        assert!(c["peersRemoved"].as_array().unwrap().is_empty(), "{c:#}");
        assert_eq!(c["helm"][1]["action"], "upgrade", "{c:#}");
    }

    let t = Instant::now();
    let (r, seen) = sampled(&sources, |mark| {
        mark("apply");
        let r = m.apply(bin(), &["-o", "json", "--timeout", "300s"]);
        mark("applied");
        let (s, v) = m.status_wait(bin(), "180s");
        mark("green");
        (r, s, v)
    });
    let (r, s, v) = r;
    report(m, "k8s04 joins", t.elapsed(), &seen);
    code(m, &r, 0);
    code(m, &s, 0);
    super::all_pass(m, &v, 4);
    let applied = json(&r);
    // What apply planned is what `cmesh plan` showed, and it did what it planned.
    assert_eq!(applied["plan"]["clusters"], plan["clusters"]);
    assert_eq!(applied["deviations"], serde_json::json!([]));
    // The new cluster was done before any peer changed.
    let joined = last_index(&applied, "k8s04");
    for c in ["k8s01", "k8s02", "k8s03"] {
        assert!(
            step_index(&applied, c, "helm") > joined,
            "{c} changed before k8s04 was done: {applied:#}"
        );
    }
    for c in ["k8s01", "k8s02", "k8s03", "k8s04"] {
        let (_, why) = check(&v, c, "kvstoremesh");
        assert!(why.contains("3/3 remote clusters ready"), "{c}: {why}");
    }
    assert!(
        seen.failures.is_empty(),
        "global Services failed while k8s04 joined: {:?}",
        seen.failures
    );
    assert_eq!(
        states(m),
        pairs(&[
            ("k8s01", "meshed"),
            ("k8s02", "meshed"),
            ("k8s03", "meshed"),
            ("k8s04", "meshed")
        ])
    );
    // k8s04's backends now answer the others' global Services.
    setup(m, &[3]);
    server_running(m, 3);
    let askers: Vec<Asker> = sources.iter().map(|s| Asker::new(&s.kubeconfig)).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut answered = BTreeMap::new();
    while !answered.contains_key("k8s04") {
        assert!(
            Instant::now() < deadline,
            "k8s04 never answered: {answered:?}"
        );
        for (s, a) in sources.iter().zip(&askers) {
            if let Ok(c) = a.ask(s) {
                *answered.entry(c).or_insert(0) += 1;
            }
        }
    }
}

/// k8s02 leaves mesh.yaml: `check` notices, the plan leaves it alone without `--prune` and
/// disconnects it with; `apply --prune` drops it from its peers first, then removes its mesh
/// configuration: Cilium still runs there, no mesh Secret, no clustermesh-apiserver, no peer;
/// every other cluster green and listing only the others; no global Service request failing,
/// and none answered by k8s02 once its peers dropped it. Its name coming back is a warning.
pub(crate) fn a_cluster_leaves_with_prune(m: &Mesh) {
    let path = m.dir().join("mesh.yaml");
    let full = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, without(&full, &["k8s02"])).unwrap();
    let r = m.cmesh(bin(), &["check", "-o", "json"]);
    code(m, &r, 0);
    let v = json(&r);
    let d = v["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["code"] == "CM522")
        .unwrap_or_else(|| panic!("{v:#}"));
    assert!(d["message"].as_str().unwrap().contains("`k8s02`"), "{d}");
    let (r, plan) = m.plan_json(bin(), &[]);
    code(m, &r, 0);
    let k8s02 = plan["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["cluster"] == "k8s02")
        .unwrap();
    assert_eq!(k8s02["role"], "leave");
    assert!(k8s02["untouched"].is_string(), "{k8s02:#}");
    let (r, plan) = m.plan_json(bin(), &["--prune"]);
    code(m, &r, 0);
    let clusters = plan["clusters"].as_array().unwrap();
    let last = clusters.last().unwrap();
    assert_eq!(
        last["cluster"], "k8s02",
        "leaving clusters go last: {plan:#}"
    );
    assert_eq!(last["helm"][0]["action"], "upgrade", "{last:#}");
    assert!(
        last["secrets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "clustermesh-apiserver-server-cert" && s["action"] == "delete"),
        "{last:#}"
    );
    for c in &clusters[..clusters.len() - 1] {
        assert_eq!(c["peersRemoved"], serde_json::json!(["k8s02"]), "{c:#}");
    }

    let sources = [source(m, 0), source(m, 2)];
    let t = Instant::now();
    let (r, seen) = sampled(&sources, |mark| {
        mark("apply");
        let r = m.apply(bin(), &["--prune", "-o", "json", "--timeout", "300s"]);
        mark("applied");
        let (s, v) = m.status_wait(bin(), "180s");
        mark("green");
        (r, s, v)
    });
    let (r, s, v) = r;
    report(m, "k8s02 leaves with --prune", t.elapsed(), &seen);
    code(m, &r, 0);
    code(m, &s, 0);
    let applied = json(&r);
    assert_eq!(applied["plan"]["clusters"], plan["clusters"]);
    // Its peers dropped it before it was disconnected.
    let disconnected = step_index(&applied, "k8s02", "disconnect");
    for c in ["k8s01", "k8s03", "k8s04"] {
        assert!(
            last_index(&applied, c) < disconnected,
            "{c} after k8s02's disconnection: {applied:#}"
        );
    }
    for c in ["k8s01", "k8s03", "k8s04"] {
        for k in super::ALL {
            let (o, why) = check(&v, c, k);
            assert_eq!(o, "pass", "{c} {k}: {why}");
        }
        let (_, why) = check(&v, c, "kvstoremesh");
        assert!(
            why.contains("2/2 remote clusters ready") && !why.contains("k8s02"),
            "{c}: {why}"
        );
        assert_eq!(
            check(&v, c, "agents-clustermesh").1,
            "1 agent(s) report 2/2 clusters ready"
        );
    }
    // Once its peers had dropped it, k8s02 answered nobody's global Service.
    let after = seen.mark("applied");
    let by = seen.answered_by(after);
    assert!(!by.contains_key("k8s02"), "{by:?}");
    assert!(by.contains_key("k8s04"), "{by:?}");
    // Its peers let it go without restarting their agents (an agent restarted with the new
    // list kept sending requests to k8s02's backends it had restored, with no route left: up to
    // 3 failed requests in 1,100 before; docs/day2.md): each waited until its agents and
    // KVStoreMesh no longer listed k8s02, before k8s02 was disconnected.
    for c in ["k8s01", "k8s03", "k8s04"] {
        let steps: Vec<&Value> = applied["steps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["cluster"] == c)
            .collect();
        let restart = steps.iter().find(|s| s["step"] == "restart").unwrap();
        assert_eq!(restart["outcome"], "skipped", "{c}: {restart}");
        // Not rolled by the chart's upgrade either (that would say so here).
        assert_eq!(
            restart["detail"],
            "only peers dropped (k8s02): the agents let them go without a restart",
            "{c}: {restart}"
        );
        let drop = steps
            .iter()
            .find(|s| s["step"] == "drop-peers")
            .unwrap_or_else(|| panic!("{c}: no drop-peers step: {steps:#?}"));
        assert_eq!(drop["outcome"], "ok", "{c}: {drop}");
        assert!(
            drop["detail"]
                .as_str()
                .unwrap()
                .starts_with("k8s02 let go by every agent and KVStoreMesh"),
            "{c}: {drop}"
        );
        assert!(
            step_index(&applied, c, "drop-peers") < disconnected,
            "{c}: {applied:#}"
        );
    }
    // No global Service failed while k8s02 left.
    assert!(
        seen.failures.is_empty(),
        "global Services failed while k8s02 left: {:?}",
        seen.failures
    );

    // k8s02 keeps Cilium and nothing of the mesh.
    let out = m.helm(
        1,
        &["get", "values", "cilium", "-n", "kube-system", "-o", "json"],
    );
    let values: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(values.get("clustermesh").is_none(), "{values:#}");
    assert_eq!(values["cluster"]["name"], "k8s02");
    let (agents, apiserver, left) = m.kube(1, async |c| {
        use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
        use k8s_openapi::api::core::v1::Secret;
        let ds: kube::Api<DaemonSet> = kube::Api::namespaced(c.clone(), "kube-system");
        let dep: kube::Api<Deployment> = kube::Api::namespaced(c.clone(), "kube-system");
        let sec: kube::Api<Secret> = kube::Api::namespaced(c, "kube-system");
        let agents = ds.get("cilium").await?.status.map_or(0, |s| s.number_ready);
        let apiserver = dep.get_opt("clustermesh-apiserver").await?.is_some();
        let mut left = Vec::new();
        for n in cmesh_core::plan::mesh_secret_names() {
            if sec.get_opt(n).await?.is_some() {
                left.push(n);
            }
        }
        Ok((agents, apiserver, left))
    });
    assert!(agents >= 1, "k8s02's agents stopped");
    assert!(!apiserver, "k8s02 still runs clustermesh-apiserver");
    assert!(left.is_empty(), "mesh Secrets left on k8s02: {left:?}");
    assert_eq!(
        states(m),
        pairs(&[
            ("k8s01", "meshed"),
            ("k8s02", "removed"),
            ("k8s03", "meshed"),
            ("k8s04", "meshed")
        ]),
        "{}",
        record(m)
    );
    // A second apply --prune has nothing left to do.
    let (r, again) = m.plan_json(bin(), &["--prune"]);
    code(m, &r, 0);
    assert_eq!(again["changes"], false, "{again:#}");

    // Its name back in mesh.yaml: check warns.
    std::fs::write(&path, &full).unwrap();
    let r = m.cmesh(bin(), &["check"]);
    code(m, &r, 0);
    assert!(
        r.stdout.contains("CM521")
            && r.stdout.contains(
                "cluster name `k8s02` belonged to a cluster that was removed from the mesh"
            ),
        "{}",
        r.stdout
    );
    std::fs::write(&path, without(&full, &["k8s02"])).unwrap();
}

/// The record's Cilium version per cluster.
fn versions(m: &Mesh) -> Vec<(String, String)> {
    record_field(m, "version")
}

/// The chart version of cluster `i`'s release (`cilium-1.17.17`).
fn release_chart(m: &Mesh, i: usize) -> String {
    let out = m.helm(i, &["list", "-n", "kube-system", "-o", "json"]);
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "cilium")
        .and_then(|r| r["chart"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// The images the pods of the agents and of clustermesh-apiserver run in cluster `i`, and how
/// many of them are ready.
fn running_images(m: &Mesh, i: usize) -> (Vec<String>, usize, usize) {
    m.kube(i, async |c| {
        use k8s_openapi::api::core::v1::Pod;
        let pods: kube::Api<Pod> = kube::Api::namespaced(c, "kube-system");
        let mut images = Vec::new();
        let (mut ready, mut total) = (0, 0);
        for sel in [
            "k8s-app=cilium",
            "app.kubernetes.io/name=clustermesh-apiserver",
        ] {
            for p in pods
                .list(&kube::api::ListParams::default().labels(sel))
                .await?
            {
                total += 1;
                let statuses = p
                    .status
                    .and_then(|s| s.container_statuses)
                    .unwrap_or_default();
                if !statuses.is_empty() && statuses.iter().all(|s| s.ready) {
                    ready += 1;
                }
                images.extend(statuses.into_iter().map(|s| s.image));
            }
        }
        images.sort();
        images.dedup();
        Ok((images, ready, total))
    })
}

/// The three clusters left (k8s01, k8s03, k8s04) move from 1.16.19 to 1.17.17 with `cmesh
/// upgrade` (issue 22): planned offline (one step, Cilium 1.17's changes), then mesh.yaml
/// written and the clusters applied one at a time, each followed by a status gate on every
/// cluster, while global Services are sampled. After it every release runs the 1.17.17 chart,
/// every agent and clustermesh-apiserver the 1.17.17 binaries (the lab's kubelet runs the
/// binaries of the image's release), status is green with KVStoreMesh 2/2 everywhere, and
/// mesh.yaml and the record say 1.17.17; k8s02, no longer meshed, keeps 1.16.19.
pub(crate) fn an_upgrade_step_behind_status_gates(m: &Mesh) {
    use integration_tests::lab::components;
    let chart = format!(
        "1.17.17={}",
        components::cilium("1.17.17").chart().display()
    );
    let r = m.cmesh(
        bin(),
        &["upgrade", "--to", "1.17.17", "--plan", "-o", "json"],
    );
    code(m, &r, 0);
    let plan = json(&r);
    assert_eq!(plan["from"], "1.16.19", "{plan:#}");
    let steps = plan["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 1, "{plan:#}");
    assert_eq!(steps[0]["to"], "1.17.17");
    assert!(steps[0]["pins"].as_array().unwrap().is_empty());
    assert!(
        steps[0]["changes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["minor"] == "1.17"),
        "{plan:#}"
    );
    let planned: Vec<&str> = steps[0]["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["cluster"].as_str().unwrap())
        .collect();
    assert_eq!(planned, ["k8s01", "k8s03", "k8s04"]);

    let sources = [source(m, 0), source(m, 2)];
    let t = Instant::now();
    let (r, seen) = sampled(&sources, |mark| {
        mark("upgrade");
        let r = m.cmesh(
            bin(),
            &[
                "upgrade",
                "--to",
                "1.17.17",
                "--chart",
                &chart,
                "--yes",
                "--poll",
                "200ms",
                "--timeout",
                "300s",
                "-o",
                "json",
            ],
        );
        mark("upgraded");
        let (s, v) = m.status_wait(bin(), "180s");
        mark("green");
        (r, s, v)
    });
    let (r, s, v) = r;
    report(m, "upgrade 1.16.19 → 1.17.17", t.elapsed(), &seen);
    code(m, &r, 0);
    code(m, &s, 0);
    let out = json(&r);
    assert_eq!(out["ok"], true, "{out:#}");
    let applied = &out["steps"][0]["apply"];
    assert_eq!(out["steps"][0]["exitCode"], 0);
    assert_eq!(applied["deviations"], serde_json::json!([]), "{applied:#}");
    // One cluster at a time: each cluster's gate passed before the next cluster changed.
    let order = ["k8s01", "k8s03", "k8s04"];
    for (i, c) in order.iter().enumerate() {
        let gate = step_index(applied, c, "gate");
        let g = &applied["steps"][gate];
        assert_eq!(g["outcome"], "ok", "{g:#}");
        assert!(
            g["detail"]
                .as_str()
                .unwrap()
                .contains("upgrade step 1.16.19 → 1.17.17"),
            "{g:#}"
        );
        assert!(step_index(applied, c, "helm") < gate, "{applied:#}");
        if let Some(next) = order.get(i + 1) {
            assert!(
                gate < step_index(applied, next, "helm"),
                "{next} changed before {c}'s gate passed: {applied:#}"
            );
        }
    }
    for c in order {
        for k in super::ALL {
            let (o, why) = check(&v, c, k);
            assert_eq!(o, "pass", "{c} {k}: {why}");
        }
        let (_, why) = check(&v, c, "kvstoremesh");
        assert!(why.contains("2/2 remote clusters ready"), "{c}: {why}");
    }
    for (i, c) in [(0, "k8s01"), (2, "k8s03"), (3, "k8s04")] {
        assert_eq!(release_chart(m, i), "cilium-1.17.17", "{c}");
        let (images, ready, total) = running_images(m, i);
        assert!(
            !images.is_empty() && images.iter().all(|im| im.contains(":v1.17.17")),
            "{c}: {images:?}"
        );
        assert_eq!(ready, total, "{c}: {ready}/{total} pods ready");
    }
    assert_eq!(
        release_chart(m, 1),
        "cilium-1.16.19",
        "k8s02 was left alone"
    );
    let text = std::fs::read_to_string(m.dir().join("mesh.yaml")).unwrap();
    assert!(text.contains("version: \"1.17.17\""), "{text}");
    assert_eq!(
        versions(m),
        pairs(&[
            ("k8s01", "1.17.17"),
            ("k8s02", "1.16.19"),
            ("k8s03", "1.17.17"),
            ("k8s04", "1.17.17")
        ]),
        "{}",
        record(m)
    );
    assert!(
        seen.failures.is_empty(),
        "global Services failed during the upgrade: {:?}",
        seen.failures
    );
    // Done: nothing left to upgrade.
    let r = m.cmesh(bin(), &["upgrade", "--to", "1.17.17", "--plan"]);
    code(m, &r, 0);
    assert!(r.stdout.contains("nothing to upgrade"), "{}", r.stdout);
}
