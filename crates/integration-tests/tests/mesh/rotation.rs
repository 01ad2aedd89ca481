//! CA rotation on the lab's real agents (issue 21): the staged rotation (`pki rotate begin`,
//! `reissue`, `finish`, each followed by `apply`, which goes one cluster at a time behind a
//! status gate) while two samplers watch the mesh — real packets between pods of every pair
//! of clusters every second, and `cmesh status` back to back (what every cluster's agents and
//! KVStoreMesh report about every peer) — then aborts after `begin` and after `reissue`, and
//! last the forced replacement (`pki init --force` + `apply`) under the same samplers, so the
//! outage it causes is measured beside the rotation's.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use cmesh_core::meshtest::{self, Settings};
use integration_tests::cli;
use integration_tests::lab::name;
use integration_tests::mesh::{Mesh, check};
use serde_json::Value;

use super::{bin, code, healthy_again};

/// A server pod of each cluster: where requests go, and the network namespace they leave from.
#[derive(Clone)]
struct Probe {
    cluster: String,
    ip: String,
    netns: String,
}

/// What the samplers saw.
#[derive(Debug, Default)]
pub(crate) struct Samples {
    /// Datapath samples (one per second, every ordered pair each).
    pub packets: usize,
    /// `status` samples.
    pub statuses: usize,
    /// Failed requests: seconds into the sampling, from → to, why.
    pub packet_failures: Vec<(f64, String)>,
    /// Peerings an agent or KVStoreMesh reported not ready: seconds, what.
    pub not_ready: Vec<(f64, String)>,
    /// The same, by status sample: which peerings (`from → to`, or a cluster's KVStoreMesh)
    /// each sample found not ready.
    pub not_ready_by_sample: Vec<Vec<String>>,
    /// Peerings nobody could be asked about (an agent restarting): seconds, what.
    pub unknown: Vec<(f64, String)>,
    /// What the body did when: seconds, what.
    pub marks: Vec<(f64, String)>,
}

impl Samples {
    /// Peerings found not ready by two status samples in a row: a cut that lasted, not the
    /// seconds a connection takes to come back when a peer's clustermesh-apiserver restarts.
    fn lasting(&self) -> Vec<String> {
        let mut out = Vec::new();
        for pair in self.not_ready_by_sample.windows(2) {
            for p in &pair[1] {
                if pair[0].contains(p) && !out.contains(p) {
                    out.push(p.clone());
                }
            }
        }
        out
    }

    /// First and last failure of any kind, in seconds.
    fn window(&self) -> Option<(f64, f64)> {
        let all: Vec<f64> = self
            .packet_failures
            .iter()
            .chain(&self.not_ready)
            .map(|(t, _)| *t)
            .collect();
        let first = all.iter().copied().reduce(f64::min)?;
        let last = all.iter().copied().reduce(f64::max)?;
        Some((first, last))
    }

    fn summary(&self) -> String {
        format!(
            "{} packet samples ({} failed), {} status samples ({} peerings not ready, {} of them in two samples in a row, {} unknown){}",
            self.packets,
            self.packet_failures.len(),
            self.statuses,
            self.not_ready.len(),
            self.lasting().len(),
            self.unknown.len(),
            self.window()
                .map(|(a, b)| format!(", failures from {a:.0}s to {b:.0}s"))
                .unwrap_or_default()
        )
    }
}

/// Creates the echo server (and client) of `cmesh test` in every cluster, in namespace
/// `cmesh-rotation`, and returns each cluster's server pod.
fn probes(m: &Mesh, namespace: &str) -> Vec<Probe> {
    let mut s = Settings::new("rotation", m.cilium.version.parse().unwrap());
    s.namespace = namespace.into();
    let n = m.lab.clusters.len();
    for i in 0..n {
        m.apply_objects(i, &meshtest::manifests::setup(&s, &name(i)));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let found: Vec<Option<Probe>> = (0..n)
            .map(|i| {
                m.lab
                    .kubelet(i)
                    .pod_netns()
                    .into_iter()
                    .find_map(|(pod, ip, netns)| {
                        pod.starts_with(&format!("{namespace}/{}-", meshtest::SERVER))
                            .then(|| Probe {
                                cluster: name(i),
                                ip,
                                netns,
                            })
                    })
            })
            .collect();
        if found.iter().all(Option::is_some) {
            let probes: Vec<Probe> = found.into_iter().flatten().collect();
            // Every pair answers before sampling starts.
            for a in &probes {
                for b in &probes {
                    if a.cluster != b.cluster {
                        let deadline = Instant::now() + Duration::from_secs(60);
                        while let Err(e) = request(a, b) {
                            assert!(
                                Instant::now() < deadline,
                                "{} → {}: {e}",
                                a.cluster,
                                b.cluster
                            );
                            std::thread::sleep(Duration::from_millis(500));
                        }
                    }
                }
            }
            return probes;
        }
        assert!(Instant::now() < deadline, "server pods not running");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Deletes what [`probes`] created (the namespace, and with it the pods).
fn remove_probes(m: &Mesh, namespace: &str) {
    for i in 0..m.lab.clusters.len() {
        m.kube(i, async |c| {
            let api: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(c);
            match api.delete(namespace, &Default::default()).await {
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                r => r.map(|_| ()),
            }
        });
    }
}

/// One request from `from`'s server pod to `to`'s, over the datapath.
fn request(from: &Probe, to: &Probe) -> Result<(), String> {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &from.netns, "curl", "-sS", "-m", "2"])
        .arg(format!("http://{}:{}/", to.ip, meshtest::PORT))
        .output()
        .map_err(|e| e.to_string())?;
    let body = String::from_utf8_lossy(&out.stdout);
    if out.status.success() && body.contains(&format!("cluster={}", to.cluster)) {
        Ok(())
    } else {
        Err(format!(
            "{} {}",
            body.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The samples, even after a sampler panicked (its panic is the test's failure).
fn lock(m: &Mutex<Samples>) -> std::sync::MutexGuard<'_, Samples> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `body` while the samplers run, and returns what both saw. `body` gets a function to
/// mark the timeline with what it does.
fn sampled<T>(m: &Mesh, probes: &[Probe], body: impl FnOnce(&dyn Fn(&str)) -> T) -> (T, Samples) {
    let stop = AtomicBool::new(false);
    let samples = Mutex::new(Samples::default());
    let start = Instant::now();
    let mark = |what: &str| {
        lock(&samples)
            .marks
            .push((start.elapsed().as_secs_f64(), what.to_owned()));
    };
    let helm = m.helm.display().to_string();
    // A panicking body still stops the samplers, or the scope would wait for them forever.
    struct StopOnDrop<'a>(&'a AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let out = std::thread::scope(|scope| {
        scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let tick = Instant::now();
                for a in probes {
                    for b in probes.iter().filter(|b| b.cluster != a.cluster) {
                        let r = request(a, b);
                        let mut s = lock(&samples);
                        s.packets += 1;
                        if let Err(e) = r {
                            s.packet_failures.push((
                                start.elapsed().as_secs_f64(),
                                format!("{} → {}: {e}", a.cluster, b.cluster),
                            ));
                        }
                    }
                }
                std::thread::sleep(Duration::from_secs(1).saturating_sub(tick.elapsed()));
            }
        });
        scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let r = cli::run(
                    bin(),
                    m.dir(),
                    &[
                        "status",
                        "-o",
                        "json",
                        "--request-timeout",
                        "5s",
                        "--helm",
                        "/nonexistent/helm",
                    ],
                    &[("CMESH_HELM", helm.as_str())],
                );
                let at = start.elapsed().as_secs_f64();
                let Ok(v) = serde_json::from_str::<Value>(&r.stdout) else {
                    continue;
                };
                let mut s = lock(&samples);
                s.statuses += 1;
                let mut this: Vec<String> = Vec::new();
                for c in v["clusters"].as_array().into_iter().flatten() {
                    for p in c["peerings"].as_array().into_iter().flatten() {
                        let what = format!(
                            "{} → {}: {}",
                            p["from"].as_str().unwrap_or_default(),
                            p["to"].as_str().unwrap_or_default(),
                            p["reason"].as_str().unwrap_or_default()
                        );
                        match p["state"].as_str() {
                            Some("notReady") => {
                                this.push(format!(
                                    "{} → {}",
                                    p["from"].as_str().unwrap_or_default(),
                                    p["to"].as_str().unwrap_or_default()
                                ));
                                s.not_ready.push((at, what));
                            }
                            Some("unknown") => s.unknown.push((at, what)),
                            _ => {}
                        }
                    }
                    // KVStoreMesh's own view of each peer, where it runs.
                    let cluster = c["cluster"].as_str().unwrap_or_default();
                    let kvstoremesh = c["checks"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|k| k["name"] == "kvstoremesh");
                    if let Some(k) = kvstoremesh
                        && k["outcome"] == "fail"
                    {
                        let why = k["reason"].as_str().unwrap_or_default();
                        // An exec into a clustermesh-apiserver pod that is being replaced
                        // asked nobody: not asked, like an agent that did not answer.
                        if why.contains("` failed:") {
                            s.unknown
                                .push((at, format!("{cluster} KVStoreMesh: {why}")));
                            continue;
                        }
                        this.push(format!("{cluster} KVStoreMesh"));
                        s.not_ready
                            .push((at, format!("{cluster} KVStoreMesh: {why}")));
                    }
                }
                s.not_ready_by_sample.push(this);
                drop(s);
                // Room for the rollout itself: status execs into every agent.
                std::thread::sleep(Duration::from_secs(2));
            }
        });
        let _stop = StopOnDrop(&stop);
        body(&mark)
    });
    (
        out,
        samples.into_inner().unwrap_or_else(PoisonError::into_inner),
    )
}

fn record(m: &Mesh, what: &str, took: Duration, s: &Samples) {
    m.timing(
        &format!("{what}: {}", s.summary()),
        i32::from(!s.packet_failures.is_empty() || !s.lasting().is_empty()),
        took,
    );
    eprintln!("{what} in {:.0}s: {}", took.as_secs_f64(), s.summary());
    let mut timeline: Vec<(f64, String)> = s
        .marks
        .iter()
        .map(|(t, w)| (*t, format!("-- {w}")))
        .chain(
            s.packet_failures
                .iter()
                .map(|(t, w)| (*t, format!("packet: {w}"))),
        )
        .chain(
            s.not_ready
                .iter()
                .map(|(t, w)| (*t, format!("not ready: {w}"))),
        )
        .chain(
            s.unknown
                .iter()
                .take(10)
                .map(|(t, w)| (*t, format!("unknown: {w}"))),
        )
        .collect();
    timeline.sort_by(|a, b| a.0.total_cmp(&b.0));
    for (t, w) in timeline.iter().take(60) {
        eprintln!("  {t:6.1}s {w}");
    }
}

/// `pki rotate <step>`, then `apply` (one cluster at a time, gated), both exit 0; each
/// cluster's steps marked on the samplers' timeline.
fn stage(m: &Mesh, step: &str, mark: &dyn Fn(&str)) {
    let r = m.cmesh(bin(), &["pki", "rotate", step]);
    code(m, &r, 0);
    mark(&format!("{step}: apply starts"));
    let r = m.apply(bin(), &["--timeout", "240s"]);
    code(m, &r, 0);
    mark(&format!("{step}: apply done"));
    eprintln!("pki rotate {step}, then apply:\n{}", r.stderr);
    // Clusters went one at a time, each behind a gate that passed.
    let gates = r
        .stderr
        .matches("  gate  ok: status passed on every cluster")
        .count();
    assert_eq!(gates, m.lab.clusters.len(), "{}\n{}", r.stdout, r.stderr);
}

/// The fingerprints of the CAs `status` reports each cluster trusting.
fn trust_reasons(m: &Mesh) -> Vec<String> {
    let (r, v) = m.status_json(bin(), &[]);
    code(m, &r, 0);
    (0..m.lab.clusters.len())
        .map(|i| {
            let (o, why) = check(&v, &name(i), "trust");
            assert_eq!(o, "pass", "{why}");
            why.to_owned()
        })
        .collect()
}

/// The full rotation under the samplers: not one failed request and not one peering reported
/// not ready; every cluster ends up trusting the new CA alone.
pub(crate) fn a_full_rotation_breaks_nothing(m: &Mesh) {
    let probes = probes(m, "cmesh-rotation");
    let before = trust_reasons(m);
    let t = Instant::now();
    let ((), s) = sampled(m, &probes, |mark| {
        for step in ["begin", "reissue", "finish"] {
            let t = Instant::now();
            stage(m, step, mark);
            eprintln!(
                "rotation: {step} + apply in {:.0}s",
                t.elapsed().as_secs_f64()
            );
        }
    });
    record(m, "rotation", t.elapsed(), &s);
    remove_probes(m, "cmesh-rotation");
    assert!(s.packets > 0 && s.statuses > 0, "{s:?}");
    assert!(
        s.packet_failures.is_empty(),
        "{}: {:#?}",
        s.summary(),
        s.packet_failures
    );
    assert!(
        s.lasting().is_empty(),
        "a peering not ready in two samples in a row; {}: {:#?}",
        s.summary(),
        s.not_ready
    );
    let after = trust_reasons(m);
    assert_ne!(before, after);
    assert!(
        after
            .iter()
            .all(|r| r.matches("` (").count() >= 1 && !r.contains(" and ")),
        "{after:?}"
    );
    let r = m.cmesh(bin(), &["pki", "rotate", "status", "-o", "json"]);
    code(m, &r, 0);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(v["rotation"].is_null(), "{v}");
}

/// An abort after `reissue` (two steps: certificates back to the current CA, then the new CA
/// out of the trust) returns to a green mesh on the current CA, under the samplers.
pub(crate) fn an_abort_after_reissue_returns_to_a_green_mesh(m: &Mesh) {
    aborted(
        m,
        "abort after reissue",
        &["begin", "reissue", "abort", "abort"],
    );
}

fn aborted(m: &Mesh, what: &str, steps: &[&str]) {
    let probes = probes(m, "cmesh-rotation-abort");
    let before = trust_reasons(m);
    let t = Instant::now();
    let ((), s) = sampled(m, &probes, |mark| {
        for step in steps {
            stage(m, step, mark);
        }
    });
    record(m, what, t.elapsed(), &s);
    remove_probes(m, "cmesh-rotation-abort");
    assert!(
        s.packet_failures.is_empty(),
        "{}: {:#?}",
        s.summary(),
        s.packet_failures
    );
    assert!(
        s.lasting().is_empty(),
        "a peering not ready in two samples in a row; {}: {:#?}",
        s.summary(),
        s.not_ready
    );
    healthy_again(m);
    assert_eq!(trust_reasons(m), before);
    let r = m.cmesh(bin(), &["pki", "rotate", "status", "-o", "json"]);
    code(m, &r, 0);
    assert!(serde_json::from_str::<Value>(&r.stdout).unwrap()["rotation"].is_null());
}

/// The forced replacement the rotation exists to avoid: `pki init --force` and one `apply`
/// (all clusters at once). The samplers see the mesh cut until every cluster has the new CA.
pub(crate) fn a_forced_replacement_cuts_the_mesh(m: &Mesh) {
    let probes = probes(m, "cmesh-rotation-forced");
    let t = Instant::now();
    let ((), s) = sampled(m, &probes, |mark| {
        let r = m.cmesh(bin(), &["pki", "init", "--force"]);
        mark("pki init --force: apply starts");
        code(m, &r, 0);
        let _ = m.apply(bin(), &["--timeout", "240s"]);
        healthy_again(m);
    });
    record(m, "forced CA replacement", t.elapsed(), &s);
    remove_probes(m, "cmesh-rotation-forced");
    assert!(
        !s.lasting().is_empty() || !s.packet_failures.is_empty(),
        "the forced replacement cut nothing for longer than a sample: {}",
        s.summary()
    );
}
