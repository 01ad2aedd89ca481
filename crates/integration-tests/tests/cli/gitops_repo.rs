//! Issue 20: the GitOps repository's CI. A mesh rendered and committed with the `.gitignore`
//! files cmesh writes, then cloned with real git, passes `render --check` in the clone,
//! which holds no private key at all; a hand edit, a certificate from another CA and a
//! missing CA certificate each fail it with the documented exit code.

use std::path::Path;

use integration_tests::cli::{self, git};

use super::{assert_code, cmesh};

/// Renders a mesh of `version` in a new repository, commits what `git add -A` takes, and
/// returns the repository and a clone of it.
fn committed_and_cloned(version: &str) -> (tempfile::TempDir, tempfile::TempDir) {
    let repo = cli::scratch();
    git(repo.path(), &["init", "-q", "-b", "main"]);
    assert_code(
        &cmesh(repo.path(), &["init", "--cilium-version", version]),
        0,
    );
    assert_code(&cmesh(repo.path(), &["render"]), 0);
    git(repo.path(), &["add", "-A"]);
    git(repo.path(), &["commit", "-q", "-m", "mesh"]);
    let clone = cli::scratch();
    let source = repo.path().display().to_string();
    git(clone.path(), &["clone", "-q", &source, "repo"]);
    (repo, clone)
}

/// Every file of the clone (outside .git), with no private key in any.
fn assert_keyless(clone: &Path) -> Vec<String> {
    let files: Vec<String> = cli::snapshot_tree(clone)
        .into_iter()
        .filter(|(p, _)| !p.starts_with(".git/"))
        .map(|(p, bytes)| {
            let text = String::from_utf8_lossy(&bytes);
            assert!(
                !p.ends_with(".key")
                    && !text.contains("PRIVATE KEY")
                    && !text.contains("LS0tLS1CRUdJTiBFQyBQUklWQVRF")
                    && !text.contains("LS0tLS1CRUdJTiBQUklWQVRF"),
                "{p} in the clone holds a private key"
            );
            p
        })
        .collect();
    assert!(files.iter().any(|p| p == "pki/ca.crt"), "{files:?}");
    files
}

#[test]
fn render_check_passes_in_a_keyless_clone_on_1_14() {
    // 1.14 takes Cluster Mesh leaves only as values: their certificates are committed (the
    // keys in the git-ignored secret-values.yaml), and the check verifies them against ca.crt.
    let (_repo, clone) = committed_and_cloned("1.14.2");
    let dir = clone.path().join("repo");
    let files = assert_keyless(&dir);
    assert!(
        files.iter().any(|p| p == "cmesh-out/k8s01/values.yaml"),
        "{files:?}"
    );
    assert!(
        !files.iter().any(|p| p.ends_with("secret-values.yaml")),
        "{files:?}"
    );
    let r = cmesh(&dir, &["render", "--check"]);
    assert_code(&r, 0);
    assert!(r.stdout.contains("cmesh-out: up to date"), "{}", r.stdout);
    assert!(
        r.stderr.contains("holds the CA certificate but no key")
            && r.stderr.contains("10 committed certificate(s) against ")
            && r.stderr.contains("/pki/ca.crt")
            && r.stderr.contains("secret file(s) are not compared"),
        "{}",
        r.stderr
    );

    // A hand edit of a committed file fails the check (exit 6) with its diff.
    let values = dir.join("cmesh-out/k8s02/values.yaml");
    let text = std::fs::read_to_string(&values).unwrap();
    std::fs::write(
        &values,
        text.replacen("cluster:\n", "cluster:\n  # edited\n", 1),
    )
    .unwrap();
    assert_ne!(
        std::fs::read_to_string(&values).unwrap(),
        text,
        "the edit took"
    );
    let r = cmesh(&dir, &["render", "--check"]);
    assert_code(&r, 6);
    assert!(
        r.stdout.contains("changed cmesh-out/k8s02/values.yaml"),
        "{}",
        r.stdout
    );
    std::fs::write(&values, &text).unwrap();
    assert_code(&cmesh(&dir, &["render", "--check"]), 0);

    // A leaf certificate from another CA (another mesh's values pasted in) is named as such.
    let other = cli::scratch();
    assert_code(
        &cmesh(other.path(), &["init", "--cilium-version", "1.14.2"]),
        0,
    );
    assert_code(&cmesh(other.path(), &["render"]), 0);
    std::fs::copy(
        other.path().join("cmesh-out/k8s01/values.yaml"),
        dir.join("cmesh-out/k8s01/values.yaml"),
    )
    .unwrap();
    let r = cmesh(&dir, &["render", "--check"]);
    assert_code(&r, 6);
    assert!(
        r.stdout.contains("(k8s01: clustermesh-server)")
            && r.stdout.contains("signed by a different ca"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("PRIVATE KEY"), "{}", r.stdout);
}

#[test]
fn render_check_passes_in_a_keyless_clone_on_1_20() {
    // 1.20 takes every leaf from pre-created Secrets: the committed tree holds only the CA
    // certificate.
    let (_repo, clone) = committed_and_cloned("1.20.0");
    let dir = clone.path().join("repo");
    let files = assert_keyless(&dir);
    assert!(
        !files.iter().any(|p| p.ends_with("secrets.yaml")),
        "{files:?}"
    );
    let r = cmesh(&dir, &["render", "--check"]);
    assert_code(&r, 0);
    assert!(r.stdout.contains("cmesh-out: up to date"), "{}", r.stdout);

    // On 1.20 the CA reaches the clusters only through secrets.yaml (the chart reads no
    // `tls.ca.cert` beside pre-created Secrets): another CA certificate in pki.dir changes no
    // committed file, and the check says the secret files were not compared rather than
    // claiming more.
    let other = cli::scratch();
    assert_code(&cmesh(other.path(), &["init"]), 0);
    assert_code(&cmesh(other.path(), &["pki", "init"]), 0);
    std::fs::copy(other.path().join("pki/ca.crt"), dir.join("pki/ca.crt")).unwrap();
    let r = cmesh(&dir, &["render", "--check"]);
    assert_code(&r, 0);
    assert!(
        r.stderr.contains("secret file(s) are not compared"),
        "{}",
        r.stderr
    );
    // The values' top-level keys (YAML's unindented lines): no `tls`.
    let values = std::fs::read_to_string(dir.join("cmesh-out/k8s01/values.yaml")).unwrap();
    assert!(values.lines().any(|l| l == "clustermesh:"), "{values}");
    assert!(!values.lines().any(|l| l.starts_with("tls:")), "{values}");

    // Without the CA certificate there is nothing to check against: exit 5, and the hint says
    // what to commit.
    std::fs::remove_dir_all(dir.join("pki")).unwrap();
    let r = cmesh(&dir, &["render", "--check"]);
    assert_code(&r, 5);
    assert!(r.stderr.contains("commit pki.dir's ca.crt"), "{}", r.stderr);
    assert!(!dir.join("pki").exists(), "a check created pki.dir");
}
