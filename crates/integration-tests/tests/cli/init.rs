//! `cmesh init`.

use integration_tests::cli::{self, git};

use crate::{assert_code, cmesh};

#[test]
fn init_writes_the_lab_and_check_is_clean() {
    let d = cli::scratch();
    let r = cmesh(d.path(), &["init"]);
    assert_code(&r, 0);
    let text = std::fs::read_to_string(d.path().join("mesh.yaml")).unwrap();
    for needle in [
        "name: k8s01",
        "id: 1",
        "podCIDR: 10.244.0.0/16",
        "serviceCIDR: 10.97.0.0/18",
        "address: k8s-lab-02.mylaptop.loc",
        "port: 32380",
        "apiServer: k8s-lab-01.mylaptop.loc:6443",
        "version: \"1.20.0\"",
        "domain: mylaptop.loc",
    ] {
        assert!(text.contains(needle), "missing {needle}");
    }
    let r = cmesh(d.path(), &["check"]);
    assert_code(&r, 0);
    assert_eq!(
        r.stdout,
        "mesh.yaml: ok (2 clusters, Cilium 1.20.0, certificates: cmesh)\n"
    );
    // `-f -` prints the same file.
    let r = cmesh(d.path(), &["init", "-f", "-"]);
    assert_code(&r, 0);
    assert_eq!(r.stdout, text);
}

#[test]
fn init_never_overwrites_without_force() {
    let d = cli::scratch();
    std::fs::write(d.path().join("mesh.yaml"), "mine\n").unwrap();
    let r = cmesh(d.path(), &["init"]);
    assert_code(&r, 4);
    assert!(
        r.stderr.contains("already exists") && r.stderr.contains("--force"),
        "{}",
        r.stderr
    );
    assert_eq!(
        std::fs::read_to_string(d.path().join("mesh.yaml")).unwrap(),
        "mine\n"
    );
    let r = cmesh(d.path(), &["init", "--force"]);
    assert_code(&r, 0);
    assert!(
        std::fs::read_to_string(d.path().join("mesh.yaml"))
            .unwrap()
            .contains("k8s02")
    );
}

#[test]
fn init_n_clusters_is_clean() {
    for (n, v) in [("5", "1.14.2"), ("20", "1.19.6"), ("300", "1.16.0")] {
        let d = cli::scratch();
        let r = cmesh(
            d.path(),
            &[
                "init",
                "--clusters",
                n,
                "--cilium-version",
                v,
                "-f",
                "m.yaml",
            ],
        );
        assert_code(&r, 0);
        let r = cmesh(d.path(), &["check", "-f", "m.yaml"]);
        assert_code(&r, 0);
        assert!(
            r.stdout.contains(&format!("ok ({n} clusters")),
            "{}",
            r.stdout
        );
    }
}

#[test]
fn init_rejects_impossible_options() {
    let d = cli::scratch();
    for (args, needle) in [
        (vec!["init", "--clusters", "1"], "between 2 and 511"),
        (
            vec!["init", "--clusters", "300", "--cilium-version", "1.14.2"],
            "needs Cilium >= 1.15",
        ),
        (
            vec!["init", "--cilium-version", "1.13.0"],
            "outside the supported range",
        ),
        (
            vec!["init", "--cilium-version", "latest"],
            "MAJOR.MINOR.PATCH",
        ),
        (vec!["init", "--name", "My Mesh"], "DNS-1123"),
        (vec!["init", "--example"], "--example"),
    ] {
        let r = cmesh(d.path(), &args);
        assert_code(&r, 2);
        assert!(r.stderr.contains(needle), "{args:?}: {}", r.stderr);
    }
    assert!(!d.path().join("mesh.yaml").exists());
}

/// Issue 20: `init` + `render` + `git add -A` stages no private key (1.14, the article's, keeps some
/// keys in values files too), and render warns when pki.dir would be committed.
#[test]
fn git_add_after_init_and_render_stages_no_private_key() {
    let d = cli::scratch();
    git(d.path(), &["init", "-q"]);
    let r = cmesh(d.path(), &["init", "--cilium-version", "1.14.2"]);
    assert_code(&r, 0);
    assert!(
        r.stdout
            .contains(".gitignore (keys and lab files stay out of git)"),
        "{}",
        r.stdout
    );
    let r = cmesh(d.path(), &["render"]);
    assert_code(&r, 0);
    assert!(!r.stderr.contains("would commit"), "{}", r.stderr);
    git(d.path(), &["add", "-A"]);
    let staged = git(d.path(), &["diff", "--cached", "--name-only"]);
    assert!(staged.lines().any(|l| l == "mesh.yaml"), "{staged}");
    // The CA certificate is public and committed: `render --check` in a clone needs it.
    assert!(staged.lines().any(|l| l == "pki/ca.crt"), "{staged}");
    assert!(
        staged.lines().any(|l| l.ends_with("values.yaml")),
        "{staged}"
    );
    for l in staged.lines() {
        let text = std::fs::read_to_string(d.path().join(l)).unwrap_or_default();
        assert!(
            !l.ends_with(".key")
                && !text.contains("PRIVATE KEY")
                && !text.contains("LS0tLS1CRUdJTiBFQyBQUklWQVRF"),
            "{l} is staged and holds a private key:\n{staged}"
        );
    }
    // Without the .gitignore, render says what `git add -A` would do.
    git(d.path(), &["rm", "-q", "--cached", "-r", "."]);
    std::fs::remove_file(d.path().join(".gitignore")).unwrap();
    let r = cmesh(d.path(), &["render"]);
    assert_code(&r, 0);
    assert!(
        r.stderr
            .contains("pki is in a git work tree and not ignored")
            && r.stderr
                .contains("add `/pki/*` and `!/pki/ca.crt` to .gitignore"),
        "{}",
        r.stderr
    );
}

/// Issue 20: an existing .gitignore keeps its lines and gains only what it lacks, once.
#[test]
fn init_merges_an_existing_gitignore() {
    let d = cli::scratch();
    std::fs::write(d.path().join(".gitignore"), "target/\n/pki/").unwrap();
    let r = cmesh(d.path(), &["init"]);
    assert_code(&r, 0);
    assert!(r.stdout.contains(".gitignore updated"), "{}", r.stdout);
    let text = std::fs::read_to_string(d.path().join(".gitignore")).unwrap();
    assert!(text.starts_with("target/\n/pki/\n"), "{text}");
    assert_eq!(text.lines().filter(|l| *l == "/pki/").count(), 1, "{text}");
    assert!(text.lines().any(|l| l == "/.cmesh-lab/"), "{text}");
    let r = cmesh(d.path(), &["init", "--force"]);
    assert_code(&r, 0);
    assert!(!r.stdout.contains(".gitignore"), "{}", r.stdout);
    assert_eq!(
        std::fs::read_to_string(d.path().join(".gitignore")).unwrap(),
        text
    );
}
