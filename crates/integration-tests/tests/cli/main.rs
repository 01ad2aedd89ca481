//! End-to-end tests of the cmesh binary: each runs the real executable in a scratch
//! directory and checks exit codes, output and the files it writes.

mod check;
mod gitops_repo;
mod init;
mod lint;
mod pki;
mod render;
mod upgrade;

use integration_tests::cli;
pub use integration_tests::cli::{assert_code, cmesh, cmesh_env, mode};

#[test]
fn help_documents_commands_and_exit_codes() {
    let d = cli::scratch();
    let r = cmesh(d.path(), &["--help"]);
    assert_code(&r, 0);
    insta::assert_snapshot!("help", r.stdout);
    let r = cmesh(d.path(), &["frobnicate"]);
    assert_code(&r, 2);
}

/// `completions`: a script per shell, generated from the grammar the binary parses; bash's is
/// valid bash that completes every command.
#[test]
fn completions_for_every_shell() {
    let d = cli::scratch();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let r = cmesh(d.path(), &["completions", shell]);
        assert_code(&r, 0);
        assert!(
            r.stdout.contains("cmesh") && r.stdout.contains("completions"),
            "{shell}: {}",
            r.stdout
        );
    }
    let r = cmesh(d.path(), &["completions", "bash"]);
    let script = d.path().join("cmesh.bash");
    std::fs::write(&script, &r.stdout).unwrap();
    let check = std::process::Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .expect("bash");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    // Completing `cmesh l` offers lab and lint, as the shell would ask.
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {}; COMP_WORDS=(cmesh l); COMP_CWORD=1; _cmesh cmesh l cmesh; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display()
        ))
        .output()
        .expect("bash");
    let offered = String::from_utf8_lossy(&out.stdout);
    assert!(
        offered.lines().any(|l| l == "lab") && offered.lines().any(|l| l == "lint"),
        "{offered}"
    );
    assert_code(&cmesh(d.path(), &["completions", "tcsh"]), 2);
}

/// `man`: a roff page naming every command.
#[test]
fn man_page_names_every_command() {
    let d = cli::scratch();
    let r = cmesh(d.path(), &["man"]);
    assert_code(&r, 0);
    assert!(r.stdout.contains(".TH cmesh 1"), "{}", r.stdout);
    for c in [
        "init",
        "check",
        "render",
        "pki",
        "probe",
        "plan",
        "apply",
        "disconnect",
        "status",
        "test",
        "lint",
        "lab",
    ] {
        assert!(
            r.stdout.contains(&format!("cmesh\\-{c}(1)")),
            "{c}: {}",
            r.stdout
        );
    }
}

/// `version`: cmesh's version and the supported Cilium range, as text and JSON.
#[test]
fn version_names_the_supported_cilium_range() {
    let d = cli::scratch();
    let r = cmesh(d.path(), &["version"]);
    assert_code(&r, 0);
    assert_eq!(
        r.stdout,
        format!("cmesh {}\nCilium 1.14 to 1.20\n", env!("CARGO_PKG_VERSION"))
    );
    let r = cmesh(d.path(), &["version", "-o", "json"]);
    assert_code(&r, 0);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["cilium"]["min"], "1.14");
    assert_eq!(v["cilium"]["max"], "1.20");
}

/// Installed as `kubectl-cmesh`, the binary is a kubectl plugin: kubectl runs it with the
/// arguments after `cmesh`, and it answers as cmesh.
#[test]
fn works_as_a_kubectl_plugin() {
    let d = cli::scratch();
    let plugin = d.path().join("kubectl-cmesh");
    std::os::unix::fs::symlink(cli::bin(), &plugin).unwrap();
    let r = cli::run(&plugin, d.path(), &["version"], &[]);
    assert_code(&r, 0);
    assert!(r.stdout.starts_with("cmesh "), "{}", r.stdout);
    let r = cli::run(&plugin, d.path(), &["--help"], &[]);
    assert_code(&r, 0);
    assert!(r.stdout.contains("Usage: cmesh"), "{}", r.stdout);
}

/// `test --report PATH` takes its format from the extension, refused before anything runs when
/// it names none cmesh writes.
#[test]
fn test_report_files_are_named_by_their_format() {
    let d = cli::scratch();
    let r = cmesh(d.path(), &["test", "--report", "results.txt"]);
    assert_code(&r, 2);
    assert!(
        r.stderr.contains(
            "`results.txt`: the format is taken from the extension: .json, .xml (JUnit) or .html"
        ),
        "{}",
        r.stderr
    );
    let r = cmesh(d.path(), &["test", "--cleanup", "--report", "r.html"]);
    assert_code(&r, 2);
    assert!(r.stderr.contains("cannot be used with"), "{}", r.stderr);
}

/// Issue 22: `disconnect` refuses what it must not do before touching anything: a cluster
/// still in mesh.yaml, one it cannot know how to reach, one the record still shows as meshed
/// (unless --force). (`apply` without --yes and without a terminal is refused in the lab's
/// 2 x 1.16.19 session, which has clusters to plan.)
#[test]
fn disconnect_refuses_before_touching_anything() {
    let d = cli::scratch();
    let p = d.path();
    assert_code(&cmesh(p, &["init"]), 0);
    assert_code(&cmesh(p, &["render"]), 0);
    let r = cmesh(p, &["disconnect", "k8s01"]);
    assert_code(&r, 2);
    assert!(
        r.stderr.contains("`k8s01` is still in mesh.yaml"),
        "{}",
        r.stderr
    );
    let r = cmesh(p, &["disconnect", "k8s09"]);
    assert_code(&r, 2);
    assert!(
        r.stderr
            .contains("`k8s09` is not in pki.dir's membership record")
            && r.stderr.contains("--kubeconfig"),
        "{}",
        r.stderr
    );
    std::fs::write(
        p.join("pki/membership.yaml"),
        "clusters:\n  - name: k8s09\n    id: 9\n    kubeconfig: k9.yaml\n    state: meshed\n    since: \"2026-12-01T00:00:00Z\"\n",
    )
    .unwrap();
    let r = cmesh(p, &["disconnect", "k8s09"]);
    assert_code(&r, 2);
    assert!(
        r.stderr.contains("`k8s09` is recorded as meshed") && r.stderr.contains("--force"),
        "{}",
        r.stderr
    );
    // Nothing was written: the record is as it was.
    assert!(
        std::fs::read_to_string(p.join("pki/membership.yaml"))
            .unwrap()
            .contains("state: meshed")
    );
}
