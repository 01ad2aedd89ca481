//! Issue 17: the defects an adversarial run found, each reproduced against the real binary.
//! The CA is never replaced behind the user's back (links, sizes, `--out`), leaves stay
//! stable near the CA's end, concurrent runs leave one consistent PKI, a `kill -9` at every
//! step of a multi-step write leaves a state the next run repairs, signals exit 130/143,
//! hostile API servers, exec plugins and resolvers cannot hang or exhaust cmesh, input bombs
//! fail fast in bounded memory, and what comes from outside never drives the terminal.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine;
use cmesh_core::pki::Ca;
use cmesh_core::spec::KeyAlgorithm;
use integration_tests::cli::{self, Run, snapshot_tree};
use integration_tests::cli::{assert_code, bin, cmesh, cmesh_env};

/// A scratch directory holding the article's mesh.yaml.
fn mesh() -> tempfile::TempDir {
    let d = cli::scratch();
    assert_code(&cmesh(d.path(), &["init"]), 0);
    d
}

/// Names of cmesh's temporaries left anywhere under `dir` (and beside the output tree).
fn leftovers(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    fn walk(dir: &Path, found: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(".cmesh-") {
                found.push(e.path().display().to_string());
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&e.path(), found);
            }
        }
    }
    walk(dir, &mut found);
    found
}

fn b64_file(path: &Path) -> String {
    base64::engine::general_purpose::STANDARD.encode(std::fs::read(path).unwrap())
}

/// Checks that pki.dir and the tree agree: the CA key matches the certificate and every
/// leaf is issued by it (`pki show`), every values file carries this CA, and a re-render
/// would change nothing (`render --check`).
#[track_caller]
fn assert_consistent(p: &Path) {
    let r = cmesh(p, &["pki", "show", "-o", "json"]);
    assert_code(&r, 0);
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(doc["caKey"], "ok", "{}", r.stdout);
    let certs = doc["certificates"].as_array().unwrap();
    assert!(!certs.is_empty());
    for c in certs {
        assert_eq!(c["status"], "ok", "{c}");
    }
    let ca = b64_file(&p.join("pki/ca.crt"));
    // The CA reaches the clusters in the cilium-ca Secret (values carry it only on versions
    // whose chart reads it there).
    for cluster in ["k8s01", "k8s02"] {
        let secrets =
            std::fs::read_to_string(p.join(format!("cmesh-out/{cluster}/secrets.yaml"))).unwrap();
        assert!(
            secrets.contains(&ca),
            "{cluster}'s Secrets carry another CA"
        );
    }
    assert_code(&cmesh(p, &["render", "--check"]), 0);
}

// ---- 1. The CA is never replaced behind the user's back ----------------------------------

#[test]
fn regression_17_a_symlinked_ca_is_read_through_its_links_and_kept() {
    let d = mesh();
    let p = d.path();
    assert_code(&cmesh(p, &["render"]), 0);
    let tree = snapshot_tree(&p.join("cmesh-out"));
    let vol = p.join("volume");
    std::fs::create_dir(&vol).unwrap();
    for f in ["ca.crt", "ca.key"] {
        std::fs::rename(p.join("pki").join(f), vol.join(f)).unwrap();
        std::os::unix::fs::symlink(vol.join(f), p.join("pki").join(f)).unwrap();
    }
    let ca = std::fs::read(vol.join("ca.crt")).unwrap();
    let r = cmesh(p, &["render"]);
    assert_code(&r, 0);
    assert!(!r.stdout.contains("created"), "{}", r.stdout);
    assert!(
        r.stdout.contains("reused 12 certificate(s)"),
        "{}",
        r.stdout
    );
    for f in ["ca.crt", "ca.key"] {
        let meta = std::fs::symlink_metadata(p.join("pki").join(f)).unwrap();
        assert!(meta.file_type().is_symlink(), "{f} is still a link");
    }
    assert_eq!(std::fs::read(vol.join("ca.crt")).unwrap(), ca);
    assert_eq!(snapshot_tree(&p.join("cmesh-out")), tree);
    assert_code(&cmesh(p, &["pki", "show"]), 0);
}

#[test]
fn regression_17_an_unreadable_ca_is_an_error_never_a_new_ca() {
    let d = mesh();
    let p = d.path();
    assert_code(&cmesh(p, &["render"]), 0);
    let ca = std::fs::read(p.join("pki/ca.crt")).unwrap();
    // The volume holding the key is not mounted: a dangling link.
    std::fs::remove_file(p.join("pki/ca.key")).unwrap();
    std::os::unix::fs::symlink(p.join("volume/ca.key"), p.join("pki/ca.key")).unwrap();
    for args in [&["render"][..], &["render", "--check"], &["pki", "init"]] {
        let r = cmesh(p, args);
        assert_code(&r, 5);
        assert!(r.stderr.contains("which does not exist"), "{}", r.stderr);
    }
    assert_eq!(std::fs::read(p.join("pki/ca.crt")).unwrap(), ca);
    assert!(
        std::fs::symlink_metadata(p.join("pki/ca.key"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    // An oversized certificate: refused before it is read, never replaced.
    std::fs::remove_file(p.join("pki/ca.key")).unwrap();
    let mut big = ca.clone();
    big.extend(std::iter::repeat_n(b'#', 2 << 20));
    std::fs::write(p.join("pki/ca.crt"), &big).unwrap();
    let r = cmesh(p, &["render"]);
    assert_code(&r, 5);
    assert!(r.stderr.contains("more than the limit"), "{}", r.stderr);
    assert_eq!(std::fs::read(p.join("pki/ca.crt")).unwrap(), big);
    assert!(!p.join("pki/ca.key").exists());
}

#[test]
fn regression_17_outputs_can_never_replace_pki_dir_or_mesh_yaml() {
    let d = mesh();
    let p = d.path();
    assert_code(&cmesh(p, &["render"]), 0);
    let pki = snapshot_tree(&p.join("pki"));
    for args in [
        &["render", "--out", "pki", "--force"][..],
        &["render", "--secrets-out", "pki", "--force"],
        &["render", "--secrets-out", "pki/secrets", "--force"],
        &["render", "--out", ".", "--force"],
        &[
            "render",
            "--out",
            "cmesh-out",
            "--secrets-out",
            "cmesh-out/s",
            "--force",
        ],
    ] {
        let r = cmesh(p, args);
        assert_code(&r, 2);
        assert!(
            r.stderr.contains("replaces the whole output directory"),
            "{}",
            r.stderr
        );
    }
    assert_eq!(snapshot_tree(&p.join("pki")), pki);
    assert!(p.join("mesh.yaml").is_file());
}

#[test]
fn regression_17_pki_show_fails_on_a_key_of_another_ca() {
    let d = mesh();
    let p = d.path();
    assert_code(&cmesh(p, &["render"]), 0);
    let other = mesh();
    assert_code(&cmesh(other.path(), &["pki", "init"]), 0);
    std::fs::copy(other.path().join("pki/ca.key"), p.join("pki/ca.key")).unwrap();
    let r = cmesh(p, &["pki", "show"]);
    assert_code(&r, 5);
    assert!(r.stdout.contains("DOES NOT MATCH ca.crt"), "{}", r.stdout);
    assert!(r.stderr.contains("does not belong"), "{}", r.stderr);
    let r = cmesh(p, &["pki", "show", "-o", "json"]);
    assert_code(&r, 5);
    assert!(r.stdout.contains("\"caKey\": \"mismatch\""), "{}", r.stdout);
    // And render refuses to sign with it.
    assert_code(&cmesh(p, &["render"]), 5);
}

#[test]
fn regression_17_replacing_the_ca_on_request_retires_the_old_one() {
    let d = mesh();
    let p = d.path();
    assert_code(&cmesh(p, &["pki", "init"]), 0);
    let old = std::fs::read(p.join("pki/ca.key")).unwrap();
    let r = cmesh(p, &["pki", "init", "--force"]);
    assert_code(&r, 0);
    assert!(r.stdout.contains("moved to"), "{}", r.stdout);
    let retired: Vec<PathBuf> = std::fs::read_dir(p.join("pki/retired"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(retired.len(), 1);
    assert_eq!(std::fs::read(retired[0].join("ca.key")).unwrap(), old);
    assert_ne!(std::fs::read(p.join("pki/ca.key")).unwrap(), old);
}

// ---- 2. Leaves near the CA's end -----------------------------------------------------------

#[test]
fn regression_17_a_ca_with_200_days_left_renders_byte_stable() {
    let d = mesh();
    let p = d.path();
    let now = time::OffsetDateTime::now_utc();
    let ca = Ca::generate(
        "imported short-lived CA",
        KeyAlgorithm::EcdsaP256,
        365,
        now - time::Duration::days(165),
    )
    .unwrap();
    std::fs::create_dir(p.join("pki")).unwrap();
    std::fs::write(p.join("pki/ca.crt"), ca.cert_pem()).unwrap();
    std::fs::write(p.join("pki/ca.key"), ca.key().pem()).unwrap();
    assert_code(&cmesh(p, &["render"]), 0);
    let tree = snapshot_tree(&p.join("cmesh-out"));
    let pki = snapshot_tree(&p.join("pki"));
    for _ in 0..2 {
        let r = cmesh(p, &["render"]);
        assert_code(&r, 0);
        assert!(!r.stdout.contains("renewed"), "{}", r.stdout);
        assert_eq!(snapshot_tree(&p.join("cmesh-out")), tree);
        assert_eq!(snapshot_tree(&p.join("pki")), pki);
        assert_code(&cmesh(p, &["render", "--check"]), 0);
    }
}

// ---- 3. Concurrent runs -------------------------------------------------------------------------

fn render_concurrently(p: &Path, n: usize) -> Vec<Run> {
    let children: Vec<_> = (0..n)
        .map(|_| cli::spawn(bin(), p, &["render"], &[]))
        .collect();
    children.into_iter().map(cli::wait).collect()
}

#[test]
fn regression_17_ten_concurrent_renders_leave_one_consistent_pki() {
    let d = mesh();
    let p = d.path();
    let runs = render_concurrently(p, 10);
    for r in &runs {
        assert_code(r, 0);
    }
    let created = runs
        .iter()
        .filter(|r| r.stdout.contains("created the mesh CA"))
        .count();
    assert_eq!(created, 1, "exactly one run creates the CA");
    assert_consistent(p);
    // Again on the existing PKI.
    let ca = std::fs::read(p.join("pki/ca.crt")).unwrap();
    for r in render_concurrently(p, 10) {
        assert_code(&r, 0);
        assert!(!r.stdout.contains("created"), "{}", r.stdout);
    }
    assert_eq!(std::fs::read(p.join("pki/ca.crt")).unwrap(), ca);
    assert_consistent(p);
    assert!(leftovers(p).is_empty(), "{:?}", leftovers(p));
}

/// Starts `cmesh render` paused at fault point `point`; returns once it is there.
fn paused_at(p: &Path, point: &str, env: &[(&str, &str)]) -> std::process::Child {
    let flag = p.join(format!("paused-{point}"));
    let flag_s = flag.display().to_string();
    let mut all = vec![
        ("CMESH_TEST_PAUSE_AT", point),
        ("CMESH_TEST_PAUSE_FILE", flag_s.as_str()),
    ];
    all.extend_from_slice(env);
    let mut child = cli::spawn(bin(), p, &["render"], &all);
    let start = Instant::now();
    while !flag.exists() {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("render exited ({status}) before reaching {point}: {err}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{point} never reached"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::remove_file(&flag).unwrap();
    child
}

#[test]
fn regression_17_a_busy_lock_names_its_holder_and_exits_8() {
    let d = mesh();
    let p = d.path();
    assert_code(&cmesh(p, &["render"]), 0);
    // A change to render: an unchanged tree is left as it is, before the staging point.
    let text = std::fs::read_to_string(p.join("mesh.yaml")).unwrap();
    let edited = text.replacen(
        "  - name: k8s02\n",
        "  - name: k8s02\n    values:\n      podAnnotations:\n        example.com/lock: \"1\"\n",
        1,
    );
    assert_ne!(edited, text);
    std::fs::write(p.join("mesh.yaml"), edited).unwrap();
    let holder = paused_at(p, "tree-staged", &[]);
    let pid = holder.id();
    let r = cmesh(p, &["render", "--lock-timeout", "1s"]);
    assert_code(&r, 8);
    assert!(
        r.stderr.contains(&format!("PID {pid}")) && r.stderr.contains("render"),
        "{}",
        r.stderr
    );
    let r = cmesh(p, &["pki", "show", "--lock-timeout", "0s"]);
    assert_code(&r, 8);
    cli::signal(pid, "KILL");
    let _ = cli::wait(holder);
    // The kernel released the lock with the process.
    assert_code(&cmesh(p, &["render", "--lock-timeout", "0s"]), 0);
    assert!(leftovers(p).is_empty(), "{:?}", leftovers(p));
}

// ---- 4. Crash windows ---------------------------------------------------------------------------

#[test]
fn regression_17_kill_9_at_every_write_step_leaves_a_state_the_next_run_repairs() {
    // (point, whether a tree exists before, extra environment)
    type Env = &'static [(&'static str, &'static str)];
    let cases: &[(&str, bool, Env)] = &[
        ("pki-ca-staged", false, &[]),
        ("pki-ca-key-placed", false, &[]),
        ("pki-leaf-written", false, &[]),
        ("pki-keys-synced", false, &[]),
        ("tree-staged", true, &[]),
        ("tree-swapped", true, &[]),
        (
            "tree-old-moved",
            true,
            &[("CMESH_TEST_DISABLE", "exchange")],
        ),
    ];
    for (point, existing, env) in cases {
        let d = mesh();
        let p = d.path();
        if *existing {
            assert_code(&cmesh(p, &["render"]), 0);
            // Something to change, so the new tree differs from the old.
            let text = std::fs::read_to_string(p.join("mesh.yaml")).unwrap();
            std::fs::write(
                p.join("mesh.yaml"),
                text.replace(
                    "debug:\n      enabled: true",
                    "debug:\n      enabled: false",
                ),
            )
            .unwrap();
        }
        let child = paused_at(p, point, env);
        cli::signal(child.id(), "KILL");
        let _ = cli::wait(child);
        // What the kill left: never half a CA, and (with the swap) always a whole tree.
        // Never half a CA that nothing can complete: either the pair is in place (or
        // neither file is), or the pair was committed to `.cmesh-ca-pending`, whence the
        // next run (any command that opens pki.dir) places it.
        let has = |f: &str| std::fs::symlink_metadata(p.join("pki").join(f)).is_ok();
        if *point == "pki-keys-synced" {
            // Keys are written and synced before any certificate that names them.
            assert!(has("clusters/k8s01/clustermesh-server.key"), "no key yet");
            assert!(
                !has("clusters/k8s01/clustermesh-server.crt")
                    && !has("clusters/k8s02/clustermesh-server.crt"),
                "a certificate before its key was synced"
            );
        }
        let committed = ["ca.crt", "ca.key"]
            .iter()
            .all(|f| p.join("pki/.cmesh-ca-pending").join(f).is_file());
        assert!(
            has("ca.crt") == has("ca.key") || committed,
            "{point}: half a CA"
        );
        if *existing && *point != "tree-old-moved" {
            assert!(
                p.join("cmesh-out/k8s01/values.yaml").is_file(),
                "{point}: no tree"
            );
        }
        let r = cmesh_env(p, &["render"], env);
        assert_code(&r, 0);
        assert!(leftovers(p).is_empty(), "{point}: {:?}", leftovers(p));
        assert_consistent(p);
    }
}

#[test]
fn regression_17_sigterm_and_sigint_exit_143_and_130_leaving_the_old_tree() {
    for (sig, code) in [("TERM", 143), ("INT", 130)] {
        let d = mesh();
        let p = d.path();
        assert_code(&cmesh(p, &["render"]), 0);
        let tree = snapshot_tree(&p.join("cmesh-out"));
        let text = std::fs::read_to_string(p.join("mesh.yaml")).unwrap();
        std::fs::write(
            p.join("mesh.yaml"),
            text.replace("replicas: 1", "replicas: 2"),
        )
        .unwrap();
        let child = paused_at(p, "tree-staged", &[]);
        cli::signal(child.id(), sig);
        let r = cli::wait(child);
        assert_code(&r, code);
        assert!(r.stderr.contains("interrupted"), "{}", r.stderr);
        assert_eq!(snapshot_tree(&p.join("cmesh-out")), tree, "{sig}");
        assert!(leftovers(p).is_empty(), "{sig}: {:?}", leftovers(p));
    }
}

// ---- 5. Hostile API servers and exec plugins -----------------------------------------------------

/// A fake API server on 127.0.0.1: `behaviour` answers each connection's first request.
fn serve(behaviour: fn(std::net::TcpStream, &str)) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let mut buf = [0u8; 8192];
                let n = s.read(&mut buf).unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).into_owned();
                let path = req.split_whitespace().nth(1).unwrap_or("/").to_owned();
                behaviour(s, &path);
            });
        }
    });
    addr
}

/// Headers, then one byte every two seconds, for ever.
fn trickle(mut s: std::net::TcpStream, _path: &str) {
    let _ = s.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n",
    );
    loop {
        if s.write_all(b" ").is_err() {
            return;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// `/version` as a real server answers it; 404 for everything else.
fn healthy(mut s: std::net::TcpStream, path: &str) {
    let (status, body) = if path == "/version" {
        (
            "200 OK",
            r#"{"major":"1","minor":"36","gitVersion":"v1.36.3","platform":"linux/amd64"}"#
                .to_owned(),
        )
    } else {
        (
            "404 Not Found",
            r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}"#
                .to_owned(),
        )
    };
    let _ = write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// A 200 MB `/version`, sent as fast as it is read.
fn huge(mut s: std::net::TcpStream, _path: &str) {
    let _ = s.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 209715200\r\n\r\n{\"gitVersion\":\"",
    );
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..200 {
        if s.write_all(&chunk).is_err() {
            return;
        }
    }
}

fn kubeconfig(server: &str, user: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\nusers:\n- name: u\n  user:\n{user}"
    )
}

const TOKEN: &str = "    token: t\n";
const SLEEPING_PLUGIN: &str = "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: sleep\n      args: [\"3600\"]\n      interactiveMode: Never\n";

#[test]
#[ignore = "needs helm: apply --dry-run reads the release with it (scripts/install-test-deps; scripts/test runs it)"]
fn regression_17_status_and_apply_are_bounded_against_hostile_servers() {
    let helm = integration_tests::tools::helm();
    let helm = helm.to_str().expect("helm's path");
    let d = mesh();
    let p = d.path();
    assert_code(&cmesh(p, &["render"]), 0);
    let good = serve(healthy);
    let cases: &[(&str, String, &str)] = &[
        (
            "trickle",
            kubeconfig(&format!("http://{}", serve(trickle)), TOKEN),
            "complete response within",
        ),
        (
            "sleeping exec plugin",
            kubeconfig(&format!("http://{good}"), SLEEPING_PLUGIN),
            "did not answer within",
        ),
        (
            "200 MB body",
            kubeconfig(&format!("http://{}", serve(huge)), TOKEN),
            "larger than 64 MiB",
        ),
    ];
    std::fs::write(
        p.join("kubeconfig-k8s02"),
        kubeconfig(&format!("http://{good}"), TOKEN),
    )
    .unwrap();
    for (name, hostile, why) in cases {
        std::fs::write(p.join("kubeconfig-k8s01"), hostile).unwrap();
        // With --request-timeout 2s, status bounds each cluster at 4 × 2 s + 3 s per peer.
        for args in [
            &["status", "--request-timeout", "2s", "-o", "json"][..],
            &["apply", "--dry-run", "--request-timeout", "2s"],
        ] {
            let start = Instant::now();
            let (r, rss) = cli::run_measured(bin(), p, args, &[("CMESH_HELM", helm)]);
            let took = start.elapsed();
            assert!(
                took < Duration::from_secs(20),
                "{name} {args:?} took {took:?}"
            );
            assert!(rss < 200 * 1024, "{name} {args:?}: {rss} KiB");
            let all = format!("{}{}", r.stdout, r.stderr);
            assert!(all.contains(why), "{name} {args:?}: {all}");
            // The healthy cluster is reported all the same.
            assert!(all.contains("k8s02"), "{name} {args:?}: {all}");
            if args[0] == "status" {
                let doc: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
                let k8s02 = doc["clusters"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|c| c["cluster"] == "k8s02")
                    .unwrap();
                let api = k8s02["checks"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|c| c["name"] == "api")
                    .unwrap();
                assert_eq!(api["outcome"], "pass", "{api}");
            }
        }
    }
}

/// Issue 20: a context mesh.yaml names that the kubeconfig lacks is named with the contexts
/// that exist.
#[test]
fn issue_20_a_wrong_context_lists_the_contexts_there_are() {
    let d = mesh();
    let p = d.path();
    let good = serve(healthy);
    for c in ["k8s01", "k8s02"] {
        std::fs::write(
            p.join(format!("kubeconfig-{c}")),
            kubeconfig(&format!("http://{good}"), TOKEN),
        )
        .unwrap();
    }
    let text = std::fs::read_to_string(p.join("mesh.yaml")).unwrap();
    let text = text.replacen(
        "    kubeconfig: kubeconfig-k8s01\n",
        "    kubeconfig: kubeconfig-k8s01\n    context: prod-k8s01\n",
        1,
    );
    std::fs::write(p.join("mesh.yaml"), text).unwrap();
    let r = cmesh(p, &["status", "--request-timeout", "3s", "-o", "json"]);
    assert_code(&r, 7);
    assert!(
        r.stdout.contains("context `prod-k8s01` in ")
            && r.stdout
                .contains("kubeconfig-k8s01: no such context; it has: c"),
        "{}",
        r.stdout
    );
}

/// Issue 20: `apply --dry-run -o json` is one JSON document, with the unreachable cluster's
/// plan carrying the error (server, kubeconfig and context) and exit 7.
#[test]
#[ignore = "needs helm: apply --dry-run reads the release with it (scripts/install-test-deps; scripts/test runs it)"]
fn issue_20_apply_dry_run_as_json() {
    let helm = integration_tests::tools::helm();
    let helm = helm.to_str().expect("helm's path");
    let d = mesh();
    let p = d.path();
    assert_code(&cmesh(p, &["render"]), 0);
    let refused = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    for c in ["k8s01", "k8s02"] {
        std::fs::write(
            p.join(format!("kubeconfig-{c}")),
            kubeconfig(&format!("http://{refused}"), TOKEN),
        )
        .unwrap();
    }
    let r = cmesh_env(
        p,
        &[
            "apply",
            "--dry-run",
            "--request-timeout",
            "3s",
            "-o",
            "json",
        ],
        &[("CMESH_HELM", helm)],
    );
    assert_code(&r, 7);
    let v: serde_json::Value =
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout));
    assert_eq!(v["ok"], false);
    let plans = v["clusters"].as_array().unwrap();
    assert_eq!(plans.len(), 2, "two clusters: {v:#}");
    for plan in plans {
        let e = plan["error"].as_str().unwrap_or_default();
        assert!(
            e.contains("API server unreachable") && e.contains(&format!("http://{refused}/")),
            "{plan}"
        );
    }
}

/// Paths asked of [`recording`] servers.
static ASKED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// [`healthy`], remembering each path it was asked.
fn recording(s: std::net::TcpStream, path: &str) {
    ASKED.lock().unwrap().push(path.to_owned());
    healthy(s, path);
}

/// Issue 20: `cmesh test` asks every API server first; with one unreachable it says so, one
/// line per cluster, exits 7 and creates nothing anywhere (the reachable server was asked only
/// its version).
#[test]
fn issue_20_test_creates_nothing_when_a_cluster_is_unreachable() {
    let d = mesh();
    let p = d.path();
    let refused = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let good = serve(recording);
    std::fs::write(
        p.join("kubeconfig-k8s01"),
        kubeconfig(&format!("http://{refused}"), TOKEN),
    )
    .unwrap();
    std::fs::write(
        p.join("kubeconfig-k8s02"),
        kubeconfig(&format!("http://{good}"), TOKEN),
    )
    .unwrap();
    let r = cmesh(p, &["test", "--request-timeout", "3s"]);
    assert_code(&r, 7);
    assert!(
        r.stderr
            .contains("cannot reach 1 cluster(s); nothing was created")
            && r.stderr.contains("\n  k8s01: unreachable"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("k8s02: unreachable"), "{}", r.stderr);
    // As kubectl would, the error names the server, the kubeconfig and the context.
    assert!(
        r.stderr.contains(&format!("http://{refused}/"))
            && r.stderr.contains("kubeconfig-k8s01, context current)"),
        "{}",
        r.stderr
    );
    let asked = ASKED.lock().unwrap().clone();
    assert!(!asked.is_empty(), "k8s02 was never asked");
    assert!(asked.iter().all(|a| a == "/version"), "{asked:?}");
}

// ---- 6. Memory bombs ------------------------------------------------------------------------------

#[test]
fn regression_17_alias_bombs_fail_fast_in_bounded_memory() {
    let d = cli::scratch();
    let p = d.path();
    // One 3 MiB string, aliased 10,000 times: 30 GiB if expanded.
    let mut bomb = String::from("name: bomb\nx: &s \"");
    bomb.push_str(&"a".repeat(3 << 20));
    bomb.push_str("\"\ny: [");
    bomb.push_str(&vec!["*s"; 10_000].join(", "));
    bomb.push_str("]\n");
    std::fs::write(p.join("mesh.yaml"), &bomb).unwrap();
    let (r, rss) = cli::run_measured(bin(), p, &["check"], &[]);
    assert_code(&r, 3);
    assert!(r.stdout.contains("CM009"), "{}", r.stdout);
    assert!(rss < 200 * 1024, "check: {rss} KiB");
    // The same as a manifest for lint, beside files that must not be read whole or at all.
    let m = p.join("manifests");
    std::fs::create_dir(&m).unwrap();
    std::fs::write(
        m.join("bomb.yaml"),
        bomb.replace("name: bomb\n", "apiVersion: v1\nkind: ConfigMap\n"),
    )
    .unwrap();
    std::os::unix::fs::symlink("/dev/zero", m.join("a-zero.yaml")).unwrap();
    let fifo = p.join("fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    std::os::unix::fs::symlink(&fifo, m.join("a-fifo.yaml")).unwrap();
    std::fs::File::create(m.join("a-sparse.yaml"))
        .unwrap()
        .set_len(3 << 30)
        .unwrap();
    let big = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: n\n# {}\n",
        "c".repeat((4 << 20) - 100)
    );
    std::fs::write(p.join("big.yaml"), big).unwrap();
    for i in 0..100 {
        std::fs::hard_link(p.join("big.yaml"), m.join(format!("link{i:03}.yaml"))).unwrap();
    }
    let start = Instant::now();
    let (r, rss) = cli::run_measured(bin(), p, &["lint", "-f", "manifests"], &[]);
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "{:?}",
        start.elapsed()
    );
    assert!(rss < 200 * 1024, "lint: {rss} KiB");
    let err = &format!("{}{}", r.stdout, r.stderr);
    for what in [
        "a-zero.yaml: not a regular file (a device)",
        "a-fifo.yaml: not a regular file (a FIFO)",
        "a-sparse.yaml: 3221225472 bytes",
        "-byte total read; skipped with the",
        "bytes of text (aliases included)",
    ] {
        assert!(err.contains(what), "{what}: {err}");
    }
}

#[test]
fn regression_17_many_diagnostics_are_capped() {
    let d = cli::scratch();
    let p = d.path();
    assert_code(&cmesh(p, &["init"]), 0);
    let mut text = std::fs::read_to_string(p.join("mesh.yaml")).unwrap();
    // 100,000 unknown top-level keys: each one a diagnostic.
    for i in 0..100_000 {
        text.push_str(&format!("key{i}: 1\n"));
    }
    std::fs::write(p.join("mesh.yaml"), text).unwrap();
    let start = Instant::now();
    let r = cmesh(p, &["check"]);
    let took = start.elapsed();
    assert_code(&r, 3);
    // The old renderer ran past a minute on this; a generous bound catches it coming back.
    assert!(took < Duration::from_secs(60), "{took:?}");
    let tail = &r.stdout[r.stdout.len().saturating_sub(2000)..];
    assert!(
        r.stdout
            .contains("not shown; `cmesh check -o json` lists every one"),
        "{tail}"
    );
    assert!(
        r.stdout.matches("× ").count() <= 50,
        "at most 50 shown: {tail}"
    );
    let r = cmesh(p, &["check", "-o", "json"]);
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(doc["diagnostics"].as_array().unwrap().len() >= 100_000);
}

// ---- 7. Probe timing ------------------------------------------------------------------------------

/// Four addresses whose listeners never accept: their queues are full, so SYNs go
/// unanswered and each dial can only time out.
fn unanswering_addresses() -> (Vec<std::net::IpAddr>, u16, Vec<std::net::TcpStream>) {
    // A port in the NodePort range, free on all four addresses.
    let listeners = (32000..32700)
        .find_map(|port| {
            (21..=24)
                .map(|i| tokio_listen(format!("127.0.0.{i}:{port}").parse().unwrap()))
                .collect::<Option<Vec<_>>>()
        })
        .expect("a free port");
    let port = listeners[0].local_addr().unwrap().port();
    let mut fillers = Vec::new();
    let mut ips = Vec::new();
    for l in &listeners {
        let addr = l.local_addr().unwrap();
        ips.push(addr.ip());
        // A backlog of 1 holds two connections; the third SYN is dropped.
        for _ in 0..2 {
            fillers.push(std::net::TcpStream::connect(addr).unwrap());
        }
    }
    std::mem::forget(listeners);
    (ips, port, fillers)
}

fn tokio_listen(addr: SocketAddr) -> Option<std::net::TcpListener> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind(addr).ok()?;
        let l = s.listen(1).ok()?;
        l.into_std().ok()
    })
}

#[test]
fn regression_17_probe_keeps_its_timeout_with_four_unanswering_addresses() {
    let d = mesh();
    let p = d.path();
    let (ips, port, _fillers) = unanswering_addresses();
    let text = std::fs::read_to_string(p.join("mesh.yaml")).unwrap();
    let ip_list = ips
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let text = text.replacen(
        "      address: k8s-lab-02.mylaptop.loc\n      port: 32380",
        &format!("      ips: [{ip_list}]\n      port: {port}"),
        1,
    );
    std::fs::write(p.join("mesh.yaml"), text).unwrap();
    assert_code(&cmesh(p, &["render"]), 0);
    let start = Instant::now();
    let r = cmesh(
        p,
        &[
            "probe",
            "--cluster",
            "k8s02",
            "--timeout",
            "2s",
            "-o",
            "json",
        ],
    );
    let took = start.elapsed();
    assert_code(&r, 1);
    // One stage bound for all four addresses, not one per address (8 s before).
    assert!(took < Duration::from_secs(5), "{took:?}");
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let tcp = doc["probes"][0]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "tcp")
        .unwrap()
        .clone();
    assert_eq!(tcp["outcome"], "fail", "{tcp}");
}

#[test]
#[ignore = "needs root: a private mount namespace for /etc/resolv.conf (scripts/test runs it)"]
fn regression_17_probe_keeps_its_timeout_when_the_resolver_never_answers() {
    let d = mesh();
    let p = d.path();
    // A resolver that reads queries and never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.77:53").unwrap();
    std::fs::write(p.join("resolv.conf"), "nameserver 127.0.0.77\n").unwrap();
    assert_code(&cmesh(p, &["render"]), 0);
    let script = format!(
        "mount --bind {} /etc/resolv.conf && exec \"$0\" \"$@\"",
        p.join("resolv.conf").display()
    );
    let start = Instant::now();
    let r = cli::run(
        Path::new("unshare"),
        p,
        &[
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
            bin().to_str().unwrap(),
            "probe",
            "--cluster",
            "k8s02",
            "--timeout",
            "2s",
            "-o",
            "json",
        ],
        &[],
    );
    let took = start.elapsed();
    drop(silent);
    assert_code(&r, 1);
    // The system resolver retries for about 30 s; the probe stops at its 2 s.
    assert!(took < Duration::from_secs(6), "{took:?}");
    assert!(r.stdout.contains("\"dns\""), "{}", r.stdout);
}

// ---- 8. Terminal injection ---------------------------------------------------------------------------

#[test]
fn regression_17_control_characters_from_manifests_are_shown_not_obeyed() {
    let d = cli::scratch();
    let p = d.path();
    let m = p.join("manifests");
    std::fs::create_dir(&m).unwrap();
    // A double-quoted YAML string may hold escapes: ESC ] 0 ; … BEL retitles a terminal.
    // A bad annotation value (L302) makes lint quote the object's name.
    std::fs::write(
        m.join("service.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: \"x\\e]0;PWNED\\a\\e[2J\"\n  namespace: shared-service\n  annotations:\n    service.cilium.io/global: \"yes\"\nspec:\n  ports:\n  - port: 80\n",
    )
    .unwrap();
    let r = cmesh(p, &["lint", "-f", "manifests"]);
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(all.contains("x\\e]0;PWNED\\a\\e[2J"), "{all}");
    assert!(!all.contains('\u{1b}') && !all.contains('\u{7}'), "{all:?}");
}
