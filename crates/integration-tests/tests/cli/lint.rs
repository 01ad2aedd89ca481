//! `cmesh lint -f DIR`: offline linting of manifest directories (testdata/lint), exit codes,
//! JSON, and unreadable input.

use std::path::PathBuf;

use integration_tests::cli;

use super::{assert_code, cmesh};
use integration_tests::cli::cmesh_stdin;

fn testdata(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/lint")
        .join(name)
        .canonicalize()
        .unwrap()
        .display()
        .to_string()
}

/// The codes of a JSON report's findings, in order.
fn finding_codes(v: &serde_json::Value) -> Vec<&str> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap())
        .collect()
}

fn json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[test]
fn the_articles_manifests() {
    let d = cli::scratch();
    let dir = testdata("article");
    let r = cmesh(d.path(), &["lint", "-f", &dir]);
    assert_code(&r, 1);
    assert!(
        r.stdout
            .starts_with("error[L101]: Ingress shared-service/ingress\n"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains(&format!("--> {dir}/shared-ingress/01-ingress.yaml:16:17, {dir}/shared-svc/03-shared-svc.yaml:6:3")),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("1 error(s), 0 warning(s) in 1 Service(s), 1 Ingress(es), 2 namespace(s)"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("not checked: L401"), "{}", r.stdout);
    // With the lab's Cilium version the 1.20 rule runs (and passes) and is not listed as skipped.
    let r = cmesh(
        d.path(),
        &[
            "lint",
            "-f",
            &dir,
            "--cilium-version",
            "1.20.0",
            "-o",
            "json",
        ],
    );
    assert_code(&r, 1);
    let v = json(&r.stdout);
    assert_eq!(v["ok"], false);
    assert_eq!(v["findings"].as_array().unwrap().len(), 1);
    assert_eq!(v["findings"][0]["at"][0]["fieldLine"], 16);
    assert!(!r.stdout.contains("L401"), "{}", r.stdout);
}

#[test]
fn every_problem_and_the_clean_directory() {
    let d = cli::scratch();
    let r = cmesh(
        d.path(),
        &["lint", "-f", &testdata("problems"), "-o", "json"],
    );
    assert_code(&r, 1);
    let v = json(&r.stdout);
    let codes = finding_codes(&v);
    assert_eq!(
        codes,
        [
            "L101", "L201", "L202", "L301", "L302", "L305", "L401", "L401", "L203", "L303", "L304"
        ]
    );
    assert_eq!(
        v["skipped"],
        serde_json::json!([]),
        "mesh.yaml in the directory gives names and version"
    );
    let clean = testdata("clean");
    let mesh = format!("{}/mesh.yaml", testdata("problems"));
    let r = cmesh(d.path(), &["lint", "-f", &clean, "--mesh", &mesh]);
    assert_code(&r, 0);
    assert!(
        r.stdout
            .starts_with("0 error(s), 0 warning(s) in 1 Service(s)"),
        "{}",
        r.stdout
    );
}

#[test]
fn warnings_fail_only_with_strict_and_bad_files_are_reported() {
    let d = cli::scratch();
    let dir = d.path().join("m");
    std::fs::create_dir_all(dir.join(".git")).unwrap();
    std::fs::write(
        dir.join("svc.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n  annotations:\n    io.cilium/global-service: \"true\"\nspec:\n  ports: [{port: 80}]\n",
    )
    .unwrap();
    // Hidden directories are not read.
    std::fs::write(dir.join(".git/bad.yaml"), "a: [").unwrap();
    let dir_s = dir.display().to_string();
    let r = cmesh(d.path(), &["lint", "-f", &dir_s]);
    assert_code(&r, 0);
    assert!(
        r.stdout.contains("warning[L304]: Service default/a"),
        "{}",
        r.stdout
    );
    let r = cmesh(d.path(), &["lint", "-f", &dir_s, "--strict"]);
    assert_code(&r, 1);
    // A file that is not YAML (a Helm template, say) is reported with its position: exit 4.
    std::fs::write(
        dir.join("template.yaml"),
        "kind: Service\nmetadata:\n  name: {{ .Values.name }\n",
    )
    .unwrap();
    let r = cmesh(d.path(), &["lint", "-f", &dir_s]);
    assert_code(&r, 4);
    assert!(
        r.stdout
            .contains(&format!("error: {dir_s}/template.yaml:3:")),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("(not a YAML manifest; skipped)"),
        "{}",
        r.stdout
    );
}

#[test]
fn usage_errors() {
    let d = cli::scratch();
    let r = cmesh(
        d.path(),
        &[
            "lint",
            "-f",
            &testdata("article"),
            "--cilium-version",
            "one",
        ],
    );
    assert_code(&r, 2);
    assert!(r.stderr.contains("--cilium-version one"), "{}", r.stderr);
    // A mesh.yaml with an error stops offline linting with the spec's diagnostics.
    std::fs::write(
        d.path().join("bad.yaml"),
        "name: x\ncilium:\n  version: \"1.16.19\"\nclustrs: []\n",
    )
    .unwrap();
    let r = cmesh(
        d.path(),
        &["lint", "-f", &testdata("article"), "--mesh", "bad.yaml"],
    );
    assert_code(&r, 3);
    // --mesh means offline: it makes no sense with a live mesh.yaml.
    let r = cmesh(d.path(), &["lint", "--example", "--mesh", "bad.yaml"]);
    assert_code(&r, 2);
}

/// Issue 20: manifests as positional paths, or `-` for a multi-document stream on stdin such
/// as `helm template` output; `-f` stays the mesh spec.
#[test]
fn positional_paths_and_a_stream_on_stdin() {
    let d = cli::scratch();
    let dir = testdata("article");
    // A directory as a positional path reads as `-f DIR` did.
    let by_flag = cmesh(d.path(), &["lint", "-f", &dir, "-o", "json"]);
    let by_path = cmesh(d.path(), &["lint", &dir, "-o", "json"]);
    assert_code(&by_path, 1);
    assert_eq!(json(&by_path.stdout), json(&by_flag.stdout));

    // The same objects as one stream, the way `helm template` prints them.
    let mut stream = String::new();
    let mut files: Vec<_> = cli::snapshot_tree(std::path::Path::new(&dir))
        .into_iter()
        .filter(|(p, _)| p.ends_with(".yaml"))
        .collect();
    files.sort();
    for (p, bytes) in files {
        stream.push_str(&format!("---\n# Source: article/{p}\n"));
        stream.push_str(&String::from_utf8(bytes).unwrap());
    }
    let r = cmesh_stdin(d.path(), &["lint", "-", "-o", "json"], stream.as_bytes());
    assert_code(&r, 1);
    let v = json(&r.stdout);
    let codes = finding_codes(&v);
    assert_eq!(codes, ["L101"], "{}", r.stdout);
    assert!(r.stdout.contains("<stdin>"), "{}", r.stdout);
    let r = cmesh_stdin(d.path(), &["lint", "-"], stream.as_bytes());
    assert!(r.stdout.contains("--> <stdin>:"), "{}", r.stdout);

    // -f names the mesh spec (its version scopes the rules: L401 runs on 1.20), and a
    // positional file and stdin combine.
    assert_code(&cmesh(d.path(), &["init", "--cilium-version", "1.20.0"]), 0);
    let ingress = format!("{dir}/shared-ingress/01-ingress.yaml");
    let rest: String = stream
        .split("---\n")
        .filter(|doc| !doc.contains("kind: Ingress"))
        .map(|doc| format!("---\n{doc}"))
        .collect();
    let r = cmesh_stdin(
        d.path(),
        &["lint", "-f", "mesh.yaml", &ingress, "-", "-o", "json"],
        rest.as_bytes(),
    );
    assert_code(&r, 1);
    let v = json(&r.stdout);
    assert_eq!(v["findings"].as_array().unwrap().len(), 1, "{}", r.stdout);
    assert!(!r.stdout.contains("L401"), "1.20 from -f: {}", r.stdout);
    assert!(!r.stdout.contains("CM001"), "{}", r.stdout);

    // stdin is one stream.
    let r = cmesh_stdin(d.path(), &["lint", "-", "-"], b"");
    assert_code(&r, 2);
    assert!(r.stderr.contains("given twice"), "{}", r.stderr);
}
