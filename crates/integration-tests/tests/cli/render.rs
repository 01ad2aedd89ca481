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
        "argocd/applications/k8s01.yaml",
        "argocd/applications/project.yaml",
        "argocd/applications/kustomization.yaml",
        "argocd/applicationset/applicationset.yaml",
        "argocd/applicationset/project.yaml",
        "argocd/applicationset/kustomization.yaml",
        "argocd-config/argocd-cm-patch.yaml",
        "flux/k8s01/sync.yaml",
        "flux/k8s01/kustomization.yaml",
        "flux/k8s01/release/kustomization.yaml",
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
        "argocd/applications/k8s01.yaml",
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
        r.stdout.contains("reused 12 certificate(s)") && !r.stdout.contains("created"),
        "{}",
        r.stdout
    );
    assert_eq!(snapshot_tree(&p.join("cmesh-out")), tree1);
    assert_eq!(snapshot_tree(&p.join("pki")), pki1);
    let r = cmesh(p, &["render", "--check"]);
    assert_code(&r, 0);
    assert_eq!(r.stdout, "cmesh-out: up to date\n");
}

/// Issue 24: a re-render rewrites only what changed. Nothing changed: the tree is left as it
/// is (every file keeps its inode). One cluster's values changed: its files are new, the other
/// cluster's are the same inodes, carried into the new tree as hard links, and the tree is
/// byte for byte what a full render writes.
#[test]
#[cfg(unix)]
fn a_rerender_rewrites_only_what_changed() {
    use std::os::unix::fs::MetadataExt;
    let d = cli::scratch();
    let p = d.path();
    assert_code(&cmesh(p, &["init"]), 0);
    assert_code(&cmesh(p, &["render"]), 0);
    let out = p.join("cmesh-out");
    let inodes = || -> BTreeMap<String, u64> {
        snapshot_tree(&out)
            .into_keys()
            .map(|k| {
                let ino = std::fs::metadata(out.join(&k)).unwrap().ino();
                (k, ino)
            })
            .collect()
    };
    let first = inodes();
    assert_code(&cmesh(p, &["render"]), 0);
    assert_eq!(inodes(), first, "an unchanged render rewrote files");

    let mesh = std::fs::read_to_string(p.join("mesh.yaml")).unwrap();
    let edited = mesh.replacen(
        "  - name: k8s02\n",
        "  - name: k8s02\n    values:\n      podAnnotations:\n        example.com/re-render: \"1\"\n",
        1,
    );
    assert_ne!(edited, mesh);
    std::fs::write(p.join("mesh.yaml"), edited).unwrap();
    assert_code(&cmesh(p, &["render"]), 0);
    let second = inodes();
    let changed: Vec<&String> = second
        .iter()
        .filter(|(k, ino)| first.get(*k) != Some(*ino))
        .map(|(k, _)| k)
        .collect();
    assert!(!changed.is_empty());
    assert!(
        changed.iter().all(|k| k.contains("k8s02")),
        "files of other clusters rewritten: {changed:?}"
    );
    assert!(
        second.contains_key("k8s01/values.yaml")
            && second["k8s01/values.yaml"] == first["k8s01/values.yaml"]
    );
    // The same bytes as a render into an empty directory.
    let full = p.join("full");
    assert_code(&cmesh(p, &["render", "--out", full.to_str().unwrap()]), 0);
    assert_eq!(snapshot_tree(&out), snapshot_tree(&full));
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

/// Issue 20: the user's own files in the tree (a top-level kustomization.yaml overlay, anything
/// under local/, links included) survive every render and are not drift; any other foreign
/// file is still refused without --force.
#[test]
fn render_keeps_the_users_overlay_and_local_files() {
    let d = cli::scratch();
    let p = d.path();
    assert_code(&cmesh(p, &["init"]), 0);
    assert_code(&cmesh(p, &["render"]), 0);
    let out = p.join("cmesh-out");
    let overlay = "resources:\n- argocd/applications\npatches:\n- path: local/sync-options.yaml\n";
    std::fs::write(out.join("kustomization.yaml"), overlay).unwrap();
    std::fs::create_dir_all(out.join("local/deep")).unwrap();
    std::fs::write(out.join("local/sync-options.yaml"), "# mine\n").unwrap();
    std::fs::write(out.join("local/deep/notes.yaml"), "# mine too\n").unwrap();
    std::os::unix::fs::symlink("../README.md", out.join("local/readme-link")).unwrap();
    let r = cmesh(p, &["render", "--check"]);
    assert_code(&r, 0);
    // Render again after a change: the tree is replaced, the user's files carried over.
    let r = cmesh(p, &["render", "--git-revision", "prod"]);
    assert_code(&r, 0);
    assert_eq!(
        std::fs::read_to_string(out.join("kustomization.yaml")).unwrap(),
        overlay
    );
    assert_eq!(
        std::fs::read_to_string(out.join("local/deep/notes.yaml")).unwrap(),
        "# mine too\n"
    );
    assert_eq!(
        std::fs::read_link(out.join("local/readme-link")).unwrap(),
        std::path::PathBuf::from("../README.md")
    );
    assert!(
        std::fs::read_to_string(out.join("argocd/applications/k8s01.yaml"))
            .unwrap()
            .contains("targetRevision: prod"),
        "the render took"
    );
    // Anything else is still not ours to delete.
    std::fs::write(out.join("notes.txt"), "x").unwrap();
    let r = cmesh(p, &["render"]);
    assert_code(&r, 4);
    assert!(r.stderr.contains("notes.txt"), "{}", r.stderr);
}

/// Issue 20: `init` writes the gitops block; `--git-*` flags not in mesh.yaml are pointed out,
/// and `--save` writes them there (comments kept), so a later plain `render --check` is clean.
#[test]
fn git_flags_are_saved_into_mesh_yaml_on_request() {
    let d = cli::scratch();
    let p = d.path();
    assert_code(&cmesh(p, &["init"]), 0);
    let mesh = std::fs::read_to_string(p.join("mesh.yaml")).unwrap();
    assert!(mesh.contains("\ngitops:\n  # repoURL: "), "{mesh}");
    let repo = "https://git.example.com/acme/platform.git";
    let r = cmesh(p, &["render", "--git-repo", repo]);
    assert_code(&r, 0);
    assert!(
        r.stderr.contains("note: gitops.repoURL not in mesh.yaml") && r.stderr.contains("--save"),
        "{}",
        r.stderr
    );
    // Without the flag, the tree no longer matches what mesh.yaml renders.
    assert_code(&cmesh(p, &["render", "--check"]), 6);
    let r = cmesh(
        p,
        &[
            "render",
            "--git-repo",
            repo,
            "--git-revision",
            "main",
            "--save",
        ],
    );
    assert_code(&r, 0);
    assert!(
        r.stdout
            .contains("saved gitops.repoURL, gitops.revision in "),
        "{}",
        r.stdout
    );
    assert!(!r.stderr.contains("not in mesh.yaml"), "{}", r.stderr);
    let saved = std::fs::read_to_string(p.join("mesh.yaml")).unwrap();
    assert!(saved.contains(&format!("  repoURL: {repo}\n")), "{saved}");
    assert!(saved.contains("  revision: main\n"), "{saved}");
    // Everything else is as it was, comments included.
    let comments = |t: &str| {
        t.lines()
            .filter(|l| l.trim_start().starts_with('#'))
            .count()
    };
    assert_eq!(comments(&saved), comments(&mesh));
    assert_eq!(saved.lines().count(), mesh.lines().count() + 1);
    let r = cmesh(p, &["render", "--check"]);
    assert_code(&r, 0);
    // --save needs a flag to save, and is not for --check.
    assert_code(&cmesh(p, &["render", "--save"]), 2);
    assert_code(
        &cmesh(p, &["render", "--check", "--save", "--git-repo", repo]),
        2,
    );
    assert_eq!(std::fs::read_to_string(p.join("mesh.yaml")).unwrap(), saved);
}

/// Issue 20: `-v` traces cmesh's steps on stderr (files, locks, the tree), never a key; without
/// it nothing of the kind is printed.
#[test]
fn verbose_traces_steps_and_never_keys() {
    let d = cli::scratch();
    let p = d.path();
    assert_code(&cmesh(p, &["init"]), 0);
    let quiet = cmesh(p, &["render"]);
    assert_code(&quiet, 0);
    assert!(!quiet.stderr.contains("DEBUG"), "{}", quiet.stderr);
    let r = cmesh(p, &["-v", "render"]);
    assert_code(&r, 0);
    // Nothing changed since the quiet render: the tree is left as it is, and said so.
    for needle in [
        "DEBUG",
        "read pki.dir",
        "ca.key",
        "locked",
        "tree unchanged",
    ] {
        assert!(r.stderr.contains(needle), "{needle}: {}", r.stderr);
    }
    let fresh = cmesh(p, &["-v", "render", "--out", "fresh-out"]);
    assert_code(&fresh, 0);
    assert!(fresh.stderr.contains("writing tree"), "{}", fresh.stderr);
    assert!(
        !r.stderr.contains("PRIVATE KEY") && !r.stderr.contains("LS0t"),
        "{}",
        r.stderr
    );
    // Against a cluster: the server, kubeconfig and context it connects to.
    let kubeconfig = p.join("kubeconfig-k8s01");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:9\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\nusers:\n- name: u\n  user:\n    token: secret-token-not-to-print\n",
    )
    .unwrap();
    let r = cmesh(
        p,
        &[
            "-v",
            "status",
            "--cluster",
            "k8s01",
            "--request-timeout",
            "2s",
        ],
    );
    assert_code(&r, 7);
    assert!(
        r.stderr.contains("connecting") && r.stderr.contains("https://127.0.0.1:9"),
        "{}",
        r.stderr
    );
    let r = cmesh(
        p,
        &[
            "-vv",
            "status",
            "--cluster",
            "k8s01",
            "--request-timeout",
            "2s",
        ],
    );
    assert!(
        !r.stderr.contains("secret-token-not-to-print"),
        "{}",
        r.stderr
    );
}

/// Issue 20: `render -o json` and `render --check -o json`: one document each, camelCase, no
/// key material.
#[test]
fn render_and_check_as_json() {
    let d = cli::scratch();
    let p = d.path();
    assert_code(&cmesh(p, &["init"]), 0);
    let r = cmesh(p, &["render", "-o", "json"]);
    assert_code(&r, 0);
    let v: serde_json::Value =
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout));
    assert!(v["files"].as_u64().unwrap() > 10, "{v}");
    assert!(v["secretFiles"].as_u64().unwrap() > 0, "{v}");
    let pki = v["pki"].as_array().unwrap();
    assert_eq!(pki[0]["action"], "created", "{v}");
    assert!(pki.iter().all(|e| e["notAfter"].is_string()), "{v}");
    assert!(
        !r.stdout.contains("PRIVATE KEY") && !r.stdout.contains("LS0t"),
        "{}",
        r.stdout
    );
    let r = cmesh(p, &["render", "--check", "-o", "json"]);
    assert_code(&r, 0);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        (v["upToDate"].as_bool(), v["keyless"].as_bool()),
        (Some(true), Some(false))
    );
    std::fs::write(p.join("cmesh-out/k8s01/values.yaml"), "edited: true\n").unwrap();
    let r = cmesh(p, &["render", "--check", "-o", "json"]);
    assert_code(&r, 6);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["upToDate"], false);
    let drift = v["drift"].as_array().unwrap();
    assert_eq!(drift.len(), 1, "{v}");
    assert!(
        drift[0]["path"]
            .as_str()
            .unwrap()
            .ends_with("cmesh-out/k8s01/values.yaml")
    );
    assert_eq!(drift[0]["kind"], "changed");
}

/// Issue 24: the signatures a render verified are kept in pki.dir's `.verified-signatures` (each
/// leaf's fingerprint under its CA's), so the next render does not verify them again; a check
/// never writes it, and a cache that is lost or damaged only costs the verifications.
#[test]
fn verified_signatures_are_cached_in_pki_and_rebuilt_when_lost() {
    let d = cli::scratch();
    let p = d.path();
    assert_code(&cmesh(p, &["init"]), 0);
    assert_code(&cmesh(p, &["render"]), 0);
    let cache = p.join("pki/.verified-signatures");
    let text = std::fs::read_to_string(&cache).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("# cmesh:"), "{text}");
    let ca = cli::cmesh(p, &["pki", "show", "-o", "json"]);
    assert_code(&ca, 0);
    let v: serde_json::Value = serde_json::from_str(&ca.stdout).unwrap();
    let ca_fp = v["ca"]["sha256"].as_str().unwrap_or_default().to_owned();
    assert_eq!(lines[1], format!("ca {ca_fp}"), "{}", ca.stdout);
    // One line per certificate the render reused (12 here), nothing secret.
    assert_eq!(lines.len(), 2 + 12, "{text}");
    assert!(!text.contains("PRIVATE"));
    assert_eq!(mode(&cache), 0o644);

    // A check reads it but never writes it.
    std::fs::remove_file(&cache).unwrap();
    assert_code(&cmesh(p, &["render", "--check"]), 0);
    assert!(!cache.exists(), "render --check wrote the cache");

    // Lost or damaged, it is rebuilt by the next render, which keeps every certificate.
    for damage in [
        "",
        "# cmesh: certificate signatures\nca zz\nnot a fingerprint\n",
    ] {
        if !damage.is_empty() {
            std::fs::write(&cache, damage).unwrap();
        }
        let r = cmesh(p, &["render"]);
        assert_code(&r, 0);
        assert!(
            r.stdout.contains("reused 12 certificate(s)"),
            "{}",
            r.stdout
        );
        assert_eq!(std::fs::read_to_string(&cache).unwrap(), text);
    }
}
