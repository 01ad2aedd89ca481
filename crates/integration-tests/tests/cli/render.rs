//! `cmesh render`: the tree, its modes, byte-stability, --check, --secrets-out, atomicity.

use std::collections::BTreeMap;
use std::path::Path;

use integration_tests::cli;

use crate::{assert_code, cmesh, mode};

fn snapshot_tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.insert(
                    p.strip_prefix(root).unwrap().display().to_string(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    if dir.exists() {
        walk(dir, dir, &mut out);
    }
    out
}

#[test]
fn render_example_writes_the_tree_with_safe_modes() {
    let d = cli::scratch();
    let p = d.path();
    let r = cmesh(p, &["render", "--example"]);
    assert_code(&r, 0);
    insta::assert_snapshot!("render_example_first", r.snapshot(p));
    let out = p.join("cmesh-out");
    for f in [
        "k8s01/values.yaml",
        "k8s02/values.yaml",
        "k8s01/secrets.yaml",
        "argocd/k8s01.yaml",
        "argocd/applicationset.yaml",
        "argocd/project.yaml",
        "argocd/argocd-cm-patch.yaml",
        "flux/k8s01/sync.yaml",
        "flux/k8s01/release/release.yaml",
        "k8s01/secret-values.yaml",
        "k8s01/flux-secret-values.yaml",
        "helm/k8s01.sh",
        "README.md",
        ".gitignore",
    ] {
        assert!(out.join(f).is_file(), "{f}");
    }
    // Private keys are 0600 wherever they are, certificates and the CA certificate 0644.
    assert_eq!(mode(&p.join("pki")), 0o700);
    assert_eq!(mode(&p.join("pki/ca.key")), 0o600);
    assert_eq!(mode(&p.join("pki/ca.crt")), 0o644);
    assert_eq!(
        mode(&p.join("pki/clusters/k8s01/clustermesh-server.key")),
        0o600
    );
    assert_eq!(mode(&out.join("k8s01/secrets.yaml")), 0o600);
    // 1.14 takes Cluster Mesh certificates only as values: their keys are in secret-values.yaml
    // (0600, git-ignored), and values.yaml and every GitOps object carry none.
    assert_eq!(mode(&out.join("k8s01/secret-values.yaml")), 0o600);
    assert_eq!(mode(&out.join("k8s01/flux-secret-values.yaml")), 0o600);
    assert_eq!(mode(&out.join("k8s01/values.yaml")), 0o644);
    for f in [
        "k8s01/values.yaml",
        "argocd/k8s01.yaml",
        "flux/k8s01/release/release.yaml",
    ] {
        let text = std::fs::read_to_string(out.join(f)).unwrap();
        assert!(!text.contains("key: "), "{f}: {text}");
    }
    // The helm script passes both values files.
    let sh = std::fs::read_to_string(out.join("helm/k8s01.sh")).unwrap();
    assert!(sh.contains("k8s01/secret-values.yaml"), "{sh}");
    assert_eq!(mode(&out.join("helm/k8s01.sh")), 0o755);
    assert_eq!(mode(&out.join("README.md")), 0o644);
    // Nothing printed is a key.
    assert!(!r.stdout.contains("PRIVATE KEY") && !r.stderr.contains("PRIVATE KEY"));
}

#[test]
fn second_render_is_byte_identical_and_reuses_the_ca() {
    let d = cli::scratch();
    let p = d.path();
    assert_code(&cmesh(p, &["init"]), 0);
    assert_code(&cmesh(p, &["render"]), 0);
    let tree1 = snapshot_tree(&p.join("cmesh-out"));
    let pki1 = snapshot_tree(&p.join("pki"));
    let r = cmesh(p, &["render"]);
    assert_code(&r, 0);
    assert!(
        r.stdout.contains("reused 10 certificate(s)") && !r.stdout.contains("created"),
        "{}",
        r.stdout
    );
    assert_eq!(snapshot_tree(&p.join("cmesh-out")), tree1);
    assert_eq!(snapshot_tree(&p.join("pki")), pki1);
    let r = cmesh(p, &["render", "--check"]);
    assert_code(&r, 0);
    assert_eq!(r.stdout, "cmesh-out: up to date\n");
}

#[test]
fn check_reports_drift_without_leaking_secrets() {
    let d = cli::scratch();
    let p = d.path();
    assert_code(&cmesh(p, &["init", "--cilium-version", "1.20.0"]), 0);
    assert_code(&cmesh(p, &["render"]), 0);
    let before = snapshot_tree(&p.join("cmesh-out"));
    // Edit mesh.yaml: k8s02 moves to another port.
    let text = std::fs::read_to_string(p.join("mesh.yaml"))
        .unwrap()
        .replace("port: 32380", "port: 32390");
    std::fs::write(p.join("mesh.yaml"), text).unwrap();
    std::fs::write(p.join("cmesh-out/k8s02/secrets.yaml"), "tampered\n").unwrap();
    let r = cmesh(p, &["render", "--check"]);
    assert_code(&r, 6);
    assert!(
        r.stdout.contains("changed cmesh-out/k8s01/values.yaml"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("-      port: 32380") && r.stdout.contains("+      port: 32390"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("changed cmesh-out/k8s02/secrets.yaml"));
    assert!(
        !r.stdout.contains("tampered") && !r.stdout.contains("tls.key"),
        "{}",
        r.stdout
    );
    assert!(r.stderr.contains("out of date"), "{}", r.stderr);
    // --check wrote nothing.
    let mut after = snapshot_tree(&p.join("cmesh-out"));
    after.insert(
        "k8s02/secrets.yaml".into(),
        before["k8s02/secrets.yaml"].clone(),
    );
    assert_eq!(after, before);
}

#[test]
fn secrets_out_keeps_secrets_apart() {
    let d = cli::scratch();
    let p = d.path();
    assert_code(&cmesh(p, &["init", "--cilium-version", "1.20.0"]), 0);
    let r = cmesh(
        p,
        &[
            "render",
            "--out",
            "gitops/mesh",
            "--secrets-out",
            "private/secrets",
        ],
    );
    assert_code(&r, 0);
    assert!(!p.join("gitops/mesh/k8s01/secrets.yaml").exists());
    assert!(p.join("private/secrets/k8s01/secrets.yaml").is_file());
    // 1.20 values carry no key: safe for git.
    assert_eq!(mode(&p.join("gitops/mesh/k8s01/values.yaml")), 0o644);
    let v = std::fs::read_to_string(p.join("gitops/mesh/k8s01/values.yaml")).unwrap();
    assert!(!v.contains("key:"), "{v}");
    // The helm script finds both, relative to itself.
    let sh = std::fs::read_to_string(p.join("gitops/mesh/helm/k8s01.sh")).unwrap();
    assert!(sh.contains("spec_dir=\"$tree/../..\""), "{sh}");
    assert!(
        sh.contains("\"$tree/../../private/secrets/k8s01/secrets.yaml\""),
        "{sh}"
    );
    assert!(
        sh.contains("--kubeconfig \"$spec_dir\"/kubeconfig-k8s01"),
        "{sh}"
    );
    let r = cmesh(
        p,
        &[
            "render",
            "--out",
            "gitops/mesh",
            "--secrets-out",
            "private/secrets",
            "--check",
        ],
    );
    assert_code(&r, 0);
}

#[test]
fn errors_leave_nothing_behind() {
    let d = cli::scratch();
    let p = d.path();
    // An invalid spec writes no PKI and no tree.
    std::fs::write(p.join("mesh.yaml"), "name: x\n").unwrap();
    let r = cmesh(p, &["render"]);
    assert_code(&r, 3);
    assert!(!p.join("pki").exists() && !p.join("cmesh-out").exists());
    // Half a CA: refuse to regenerate it, write nothing.
    assert_code(&cmesh(p, &["init", "--force"]), 0);
    assert_code(&cmesh(p, &["render"]), 0);
    let tree = snapshot_tree(&p.join("cmesh-out"));
    std::fs::remove_file(p.join("pki/ca.key")).unwrap();
    let r = cmesh(p, &["render"]);
    assert_code(&r, 5);
    assert!(
        r.stderr.contains("has ca.crt but not ca.key") && r.stderr.contains("never regenerates"),
        "{}",
        r.stderr
    );
    assert!(!p.join("pki/ca.key").exists());
    assert_eq!(snapshot_tree(&p.join("cmesh-out")), tree);
    // No temporary directories left next to the tree (`init`'s .gitignore is the user's).
    let leftovers: Vec<_> = std::fs::read_dir(p)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with('.') && n != ".gitignore")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn foreign_files_are_not_clobbered() {
    let d = cli::scratch();
    let p = d.path();
    assert_code(&cmesh(p, &["render", "--example"]), 0);
    std::fs::write(p.join("cmesh-out/k8s01/secrets.sealed.yaml"), "sealed\n").unwrap();
    let r = cmesh(p, &["render", "--example"]);
    assert_code(&r, 4);
    assert!(
        r.stderr.contains("k8s01/secrets.sealed.yaml") && r.stderr.contains("--force"),
        "{}",
        r.stderr
    );
    assert!(p.join("cmesh-out/k8s01/secrets.sealed.yaml").exists());
    assert_code(&cmesh(p, &["render", "--example", "--force"]), 0);
    assert!(!p.join("cmesh-out/k8s01/secrets.sealed.yaml").exists());
}

#[test]
fn base_phase() {
    let d = cli::scratch();
    let p = d.path();
    assert_code(&cmesh(p, &["render", "--example", "--phase", "base"]), 0);
    let v = std::fs::read_to_string(p.join("cmesh-out/k8s01/values.yaml")).unwrap();
    assert!(!v.contains("clustermesh:"), "{v}");
    let readme = std::fs::read_to_string(p.join("cmesh-out/README.md")).unwrap();
    assert!(readme.contains("--phase mesh"), "{readme}");
}
