//! Flux reconciling cmesh's committed tree (issue 23): the lab's git host serves a repository
//! holding what `cmesh render` wrote (and, in the sealed path, the cluster Secrets a user would
//! seal: here committed as they are, since no sealing controller runs in the lab), and the
//! Cilium chart taken from the Go module cache as a Helm repository. The real Flux
//! controllers of each cluster get exactly what the tree's README says to apply
//! (`flux/<cluster>/sync.yaml`) and nothing else; they must install the mesh, and a second
//! render + commit with nothing changed must leave every object as it was.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use integration_tests::flux::{self, Flux, condition, documents, git};
use integration_tests::gitserver::GitServer;
use integration_tests::lab::name;
use integration_tests::mesh::Mesh;
use integration_tests::platform::{Platform, publish_chart};
use serde_json::Value;

use super::{bin, code, healthy_again};

const HR: &str = "helm.toolkit.fluxcd.io/v2";
const KS: &str = "kustomize.toolkit.fluxcd.io/v1";
const SRC: &str = "source.toolkit.fluxcd.io/v1";

/// The Flux objects of cluster `c`'s sync.yaml and release.yaml: (apiVersion, kind, name).
fn flux_objects(c: &str) -> [(&'static str, &'static str, String); 5] {
    [
        (SRC, "GitRepository", "cilium-lab".to_string()),
        (SRC, "HelmRepository", "cilium".to_string()),
        (KS, "Kustomization", format!("cilium-{c}-secrets")),
        (KS, "Kustomization", format!("cilium-{c}")),
        (HR, "HelmRelease", format!("cilium-{c}")),
    ]
}

/// Everything that a reconciliation changing nothing must leave as it is, per cluster: the Flux
/// objects' generations, the values ConfigMap, the Helm release Secret, the cluster Secrets
/// from the sealed path, and the chart's main objects.
fn snapshot(m: &Mesh, i: usize, secrets: &[String]) -> BTreeMap<String, String> {
    let c = name(i);
    let mut out = BTreeMap::new();
    for (api, kind, n) in flux_objects(&c) {
        let o = flux::get(m, i, api, kind, "flux-system", &n)
            .unwrap_or_else(|| panic!("{c}: no {kind} {n}"));
        out.insert(
            format!("{kind}/{n} generation"),
            o["metadata"]["generation"].to_string(),
        );
    }
    let objects: Vec<(&str, &str, &str, String)> = [
        (
            "v1",
            "ConfigMap",
            "flux-system",
            format!("cilium-values-{c}"),
        ),
        (
            "v1",
            "Secret",
            "kube-system",
            "sh.helm.release.v1.cilium.v1".into(),
        ),
        ("v1", "ConfigMap", "kube-system", "cilium-config".into()),
        ("apps/v1", "DaemonSet", "kube-system", "cilium".into()),
        (
            "apps/v1",
            "Deployment",
            "kube-system",
            "clustermesh-apiserver".into(),
        ),
    ]
    .into_iter()
    .chain(
        secrets
            .iter()
            .map(|s| ("v1", "Secret", "kube-system", s.clone())),
    )
    .collect();
    for (api, kind, ns, n) in objects {
        let o = flux::get(m, i, api, kind, ns, &n).unwrap_or_else(|| panic!("{c}: no {kind} {n}"));
        out.insert(
            format!("{kind}/{ns}/{n} resourceVersion"),
            o["metadata"]["resourceVersion"].to_string(),
        );
    }
    let releases = helm_history(m, i);
    out.insert("helm history".into(), releases.to_string());
    out
}

fn helm_history(m: &Mesh, i: usize) -> Value {
    let out = m.helm(i, &["history", "cilium", "-n", "kube-system", "-o", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("helm history JSON")
}

/// Waits until `done` says so for every cluster, asserting the controllers still run; on
/// timeout, panics with Flux's objects and logs.
fn until(m: &Mesh, fluxes: &mut [Flux], what: &str, secs: u64, done: impl Fn(usize) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        for f in fluxes.iter_mut() {
            f.assert_running();
        }
        if (0..fluxes.len()).all(&done) {
            return;
        }
        if Instant::now() > deadline {
            let mut why = String::new();
            for (i, f) in fluxes.iter().enumerate() {
                let c = name(i);
                for (api, kind, n) in flux_objects(&c) {
                    let o = flux::get(m, i, api, kind, "flux-system", &n);
                    why.push_str(&format!(
                        "{c} {kind}/{n}: {}\n",
                        o.map_or("absent".into(), |o| o["status"].to_string())
                    ));
                }
                why.push_str(&f.logs(30));
            }
            panic!("{what}: not within {secs} s\n{why}\n{}", m.lab.logs(20));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn ready(o: Option<Value>) -> bool {
    o.and_then(|o| condition(&o, "Ready"))
        .is_some_and(|(s, ..)| s == "True")
}

/// Flux, given the tree's `flux/<cluster>/sync.yaml` and a git repository holding the
/// rendered tree, installs the mesh: the Kustomizations become Ready in `dependsOn` order
/// (Secrets first), the HelmRelease installs the chart from the lab's Helm repository with
/// exactly the values cmesh rendered, `cmesh status` is green; a second render + commit with
/// nothing changed is fetched and applied and rewrites nothing (no generation, no Secret, no
/// Helm revision changes) and helm-controller reports no drift. Flux is stopped afterwards, so
/// that later stories' `apply` meets no controller reverting it.
pub(crate) fn flux_syncs_the_committed_tree(m: &Mesh) {
    let n = m.lab.clusters.len();
    let host = GitServer::start(&m.dir().join("git-host"));
    // The chart from the Go module cache as a Helm repository, as helm.cilium.io serves it.
    publish_chart(m, &host.root.join("charts"), &host.url);
    let repo = Platform::init(m, &host.repo_dir("platform"));
    let work = repo.work.clone();
    let url = host.repo_url("platform");
    let rendered = repo.render(
        m,
        bin(),
        &[
            "--git-repo",
            &url,
            "--git-revision",
            "main",
            "--git-path",
            "clusters/mesh",
            "--save",
        ],
    );
    code(m, &rendered, 0);
    let head = repo.commit("cmesh render");

    let mut fluxes: Vec<Flux> = (0..n).map(|i| Flux::start(m, i)).collect();
    let started = Instant::now();
    for i in 0..n {
        let sync = work.join(format!("clusters/mesh/flux/{}/sync.yaml", name(i)));
        let objects = documents(&std::fs::read_to_string(sync).expect("sync.yaml"));
        m.apply_objects(i, &objects);
    }
    // The release's Kustomization `wait`s: it is Ready once the HelmRelease it applied is.
    until(
        m,
        &mut fluxes,
        "every HelmRelease and Kustomization Ready",
        600,
        |i| {
            let c = name(i);
            ready(flux::get(
                m,
                i,
                HR,
                "HelmRelease",
                "flux-system",
                &format!("cilium-{c}"),
            )) && [format!("cilium-{c}-secrets"), format!("cilium-{c}")]
                .iter()
                .all(|k| ready(flux::get(m, i, KS, "Kustomization", "flux-system", k)))
        },
    );
    m.timing("flux install", 0, started.elapsed());
    assert!(host.requests() > 0, "Flux never asked the git host");

    let mut secrets_by_cluster = Vec::new();
    for i in 0..n {
        let c = name(i);
        let repo =
            flux::get(m, i, SRC, "GitRepository", "flux-system", "cilium-lab").expect("repo");
        assert_eq!(
            repo["status"]["artifact"]["revision"].as_str(),
            Some(format!("main@sha1:{head}").as_str()),
            "{c}: {}",
            repo["status"]
        );
        // dependsOn: the Secrets' Kustomization was Ready before the release's, and every Secret
        // existed before the chart's first object.
        let ks = |n: String| flux::get(m, i, KS, "Kustomization", "flux-system", &n).expect("ks");
        let (secrets_ks, release_ks) =
            (ks(format!("cilium-{c}-secrets")), ks(format!("cilium-{c}")));
        for k in [&secrets_ks, &release_ks] {
            assert_eq!(
                k["status"]["lastAppliedRevision"].as_str(),
                Some(format!("main@sha1:{head}").as_str()),
                "{c}: {}",
                k["status"]
            );
        }
        let (_, _, _, secrets_at) = condition(&secrets_ks, "Ready").expect("Ready");
        let (_, _, _, release_at) = condition(&release_ks, "Ready").expect("Ready");
        assert!(
            secrets_at <= release_at,
            "{c}: Secrets Ready {secrets_at}, release {release_at}"
        );
        let daemonset = flux::get(m, i, "apps/v1", "DaemonSet", "kube-system", "cilium")
            .expect("the chart's DaemonSet");
        let chart_at = daemonset["metadata"]["creationTimestamp"]
            .as_str()
            .unwrap_or_default();
        let secrets_yaml =
            std::fs::read_to_string(work.join(format!("clusters/mesh/{c}/secrets.yaml")))
                .expect("secrets.yaml");
        let mut names = Vec::new();
        for s in documents(&secrets_yaml) {
            let sn = s["metadata"]["name"].as_str().expect("name").to_string();
            let live = flux::get(m, i, "v1", "Secret", "kube-system", &sn)
                .unwrap_or_else(|| panic!("{c}: Secret {sn} not created by Flux"));
            let at = live["metadata"]["creationTimestamp"]
                .as_str()
                .unwrap_or_default();
            assert!(
                at <= chart_at,
                "{c}: Secret {sn} created {at}, the chart's DaemonSet {chart_at}"
            );
            assert_eq!(
                live["data"], s["data"],
                "{c}: Secret {sn} is not the committed one"
            );
            names.push(sn);
        }
        assert!(!names.is_empty(), "{c}: secrets.yaml holds no Secret");
        secrets_by_cluster.push(names);
        // The release: the real chart at the pinned version, with exactly the rendered values.
        let history = helm_history(m, i);
        assert_eq!(history.as_array().map(Vec::len), Some(1), "{c}: {history}");
        assert_eq!(
            history[0]["chart"].as_str(),
            Some(format!("cilium-{}", m.cilium.version).as_str()),
            "{c}: {history}"
        );
        let out = m.helm(
            i,
            &["get", "values", "cilium", "-n", "kube-system", "-o", "json"],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let live: Value = serde_json::from_slice(&out.stdout).expect("values JSON");
        let rendered = documents(
            &std::fs::read_to_string(work.join(format!("clusters/mesh/{c}/values.yaml")))
                .expect("values.yaml"),
        );
        assert_eq!(
            live, rendered[0],
            "{c}: the release's values are not the rendered values"
        );
    }
    healthy_again(m);

    // Nothing changed: render again, commit, let Flux fetch and apply that commit.
    let before: Vec<_> = (0..n)
        .map(|i| snapshot(m, i, &secrets_by_cluster[i]))
        .collect();
    code(m, &repo.render(m, bin(), &[]), 0);
    assert_eq!(
        git(&work, &["status", "--porcelain"]),
        "",
        "a second render changed the committed tree"
    );
    let again = Instant::now();
    let head2 = repo.commit("cmesh render (nothing changed)");
    assert_ne!(head, head2);
    let token = format!("cmesh-lab-{}", head2);
    for i in 0..n {
        flux::request_reconcile(m, i, SRC, "GitRepository", "cilium-lab", &token);
    }
    let want = format!("main@sha1:{head2}");
    until(m, &mut fluxes, "the new commit applied", 180, |i| {
        let c = name(i);
        [format!("cilium-{c}-secrets"), format!("cilium-{c}")]
            .iter()
            .all(|k| {
                flux::get(m, i, KS, "Kustomization", "flux-system", k).is_some_and(|o| {
                    o["status"]["lastAppliedRevision"].as_str() == Some(want.as_str())
                        && ready(Some(o))
                })
            })
    });
    for i in 0..n {
        flux::request_reconcile(
            m,
            i,
            HR,
            "HelmRelease",
            &format!("cilium-{}", name(i)),
            &token,
        );
    }
    until(
        m,
        &mut fluxes,
        "the HelmReleases reconciled again",
        180,
        |i| {
            flux::get(
                m,
                i,
                HR,
                "HelmRelease",
                "flux-system",
                &format!("cilium-{}", name(i)),
            )
            .is_some_and(|o| {
                o["status"]["lastHandledReconcileAt"].as_str() == Some(token.as_str())
                    && ready(Some(o))
            })
        },
    );
    for i in 0..n {
        let c = name(i);
        let hr = flux::get(
            m,
            i,
            HR,
            "HelmRelease",
            "flux-system",
            &format!("cilium-{c}"),
        )
        .expect("HelmRelease");
        let drifted = condition(&hr, "Drifted");
        assert!(
            matches!(&drifted, Some((s, r, ..)) if s == "False" && r == "NoDriftDetected"),
            "{c}: helm-controller's drift detection: {drifted:?}\n{}",
            hr["status"]
        );
        let after = snapshot(m, i, &secrets_by_cluster[i]);
        assert_eq!(
            before[i], after,
            "{c}: a reconciliation with nothing changed rewrote objects"
        );
    }
    m.timing("flux no-change commit reconciled", 0, again.elapsed());
    healthy_again(m);
    for f in &mut fluxes {
        f.stop();
    }
}
