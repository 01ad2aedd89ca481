//! `cmesh check` on good and bad input of every kind.

use integration_tests::cli;

use crate::{assert_code, cmesh};

const BAD: &str = "name: Homelab
cilium:
  version: 1.14
  values:
    debug:
      enabled: yes
clustermesh:
  serviceType: nodeport
clusters:
  - name: k8s01
    id: 1
    podCidr: 10.244.0.0/16
    serviceCIDR: 10.96.0.0/18
    clustermesh: {address: k8s-lab-01.mylaptop.loc, port: 32379}
  - name: k8s01
    id: 1
    podCIDR: 10.96.0.0/16
    serviceCIDR: 10.97.0.0/18
    clustermesh: {address: k8s-lab-02.mylaptop.loc, port: 32379}
";

#[test]
fn all_problems_in_one_run_with_locations() {
    let d = cli::scratch();
    std::fs::write(d.path().join("mesh.yaml"), BAD).unwrap();
    let r = cmesh(d.path(), &["check"]);
    assert_code(&r, 3);
    insta::assert_snapshot!("check_bad_human", r.snapshot(d.path()));
}

#[test]
fn json_output() {
    let d = cli::scratch();
    std::fs::write(d.path().join("mesh.yaml"), BAD).unwrap();
    let r = cmesh(d.path(), &["check", "--output", "json"]);
    assert_code(&r, 3);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["valid"], false);
    let codes: Vec<&str> = v["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["code"].as_str().unwrap())
        .collect();
    for c in [
        "CM105", "CM005", "CM008", "CM007", "CM006", "CM004", "CM101", "CM110", "CM203",
    ] {
        assert!(codes.contains(&c), "{c} not in {codes:?}");
    }
    let first = &v["diagnostics"][0];
    assert_eq!(first["file"], "mesh.yaml");
    assert_eq!(first["line"], 1);
    assert_eq!(first["column"], 7);
    assert_eq!(first["field"], "name");
    assert!(first["help"].as_str().unwrap().contains("lowercase"));
}

#[test]
fn unusable_files_fail_clearly() {
    let d = cli::scratch();
    let p = d.path();
    // Not found.
    let r = cmesh(p, &["check"]);
    assert_code(&r, 4);
    assert!(
        r.stderr.contains("mesh.yaml does not exist") && r.stderr.contains("cmesh init"),
        "{}",
        r.stderr
    );
    // A directory.
    std::fs::create_dir(p.join("dir.yaml")).unwrap();
    let r = cmesh(p, &["check", "-f", "dir.yaml"]);
    assert_code(&r, 4);
    assert!(r.stderr.contains("is a directory"), "{}", r.stderr);
    // Huge.
    let f = std::fs::File::create(p.join("huge.yaml")).unwrap();
    f.set_len(5 * 1024 * 1024).unwrap();
    let r = cmesh(p, &["check", "-f", "huge.yaml"]);
    assert_code(&r, 3);
    assert!(r.stderr.contains("at most 4194304 bytes"), "{}", r.stderr);
    // Not UTF-8.
    std::fs::write(p.join("bin.yaml"), b"name: \xff\xfe\n").unwrap();
    let r = cmesh(p, &["check", "-f", "bin.yaml"]);
    assert_code(&r, 3);
    assert!(
        r.stderr.contains("not UTF-8") && r.stderr.contains("offset 6"),
        "{}",
        r.stderr
    );
    // Not YAML, empty, duplicate keys, wrong types: reported as diagnostics.
    for (text, code) in [
        ("name: [x\n", "CM001"),
        ("", "CM002"),
        ("name: a\nname: b\n", "CM003"),
        ("name: 5\n", "CM005"),
    ] {
        std::fs::write(p.join("t.yaml"), text).unwrap();
        let r = cmesh(p, &["check", "-f", "t.yaml"]);
        assert_code(&r, 3);
        assert!(r.stdout.contains(code), "{text:?}: {}", r.stdout);
    }
    // Unreadable (when not running as root, which can read anything).
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(p.join("secret.yaml"), "name: x\n").unwrap();
    std::fs::set_permissions(
        p.join("secret.yaml"),
        std::fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    if std::fs::read(p.join("secret.yaml")).is_err() {
        let r = cmesh(p, &["check", "-f", "secret.yaml"]);
        assert_code(&r, 4);
        assert!(r.stderr.contains("failed to read"), "{}", r.stderr);
    }
}

#[test]
fn example_flag_and_conflicts() {
    let d = cli::scratch();
    let r = cmesh(d.path(), &["check", "--example"]);
    assert_code(&r, 0);
    // The article's release is out of support: valid, with that one warning.
    assert!(
        r.stdout.contains("CM406")
            && r.stdout
                .contains("<example>: 1 warning (ok (2 clusters, Cilium 1.14.2"),
        "{}",
        r.stdout
    );
    let r = cmesh(d.path(), &["check", "--example", "-f", "x.yaml"]);
    assert_code(&r, 2);
}

#[test]
fn warnings_do_not_fail() {
    let d = cli::scratch();
    let r = cmesh(d.path(), &["init"]);
    assert_code(&r, 0);
    let text = std::fs::read_to_string(d.path().join("mesh.yaml"))
        .unwrap()
        .replace("    id: 1\n", "    id: 01\n");
    std::fs::write(d.path().join("mesh.yaml"), text).unwrap();
    let r = cmesh(d.path(), &["check"]);
    assert_code(&r, 0);
    assert!(
        r.stdout.contains("CM010") && r.stdout.contains("1 warning"),
        "{}",
        r.stdout
    );
}

#[test]
fn check_inspects_an_existing_ca() {
    use std::os::unix::fs::PermissionsExt;
    let d = cli::scratch();
    let p = d.path();
    assert_code(&cmesh(p, &["init"]), 0);
    assert_code(&cmesh(p, &["render"]), 0);
    assert_code(&cmesh(p, &["check"]), 0);
    std::fs::set_permissions(p.join("pki/ca.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let r = cmesh(p, &["check"]);
    assert_code(&r, 0);
    assert!(
        r.stdout.contains("CM515") && r.stdout.contains("chmod 600"),
        "{}",
        r.stdout
    );
    // The certificate alone is a clone of the GitOps repository: a warning, not an error.
    std::fs::remove_file(p.join("pki/ca.key")).unwrap();
    let r = cmesh(p, &["check"]);
    assert_code(&r, 0);
    assert!(
        r.stdout.contains("CM516") && r.stdout.contains("has ca.crt but not ca.key"),
        "{}",
        r.stdout
    );
    // The key alone is still an error.
    std::fs::rename(p.join("pki/ca.crt"), p.join("pki/ca.key")).unwrap();
    let r = cmesh(p, &["check"]);
    assert_code(&r, 3);
    assert!(
        r.stdout.contains("CM510") && r.stdout.contains("has ca.key but not ca.crt"),
        "{}",
        r.stdout
    );
}

/// Issue 20: `check` says when the Cilium release is out of upstream support and names the
/// newest cmesh supports; maintained releases get no such warning.
#[test]
fn check_warns_about_releases_out_of_support() {
    let d = cli::scratch();
    let p = d.path();
    assert_code(&cmesh(p, &["init", "--cilium-version", "1.14.2"]), 0);
    let r = cmesh(p, &["check"]);
    assert_code(&r, 0);
    assert!(
        r.stdout.contains("CM406")
            && r.stdout.contains("Cilium 1.14 no longer gets fixes")
            && r.stdout.contains("1.20.0")
            && r.stdout
                .contains("from 1.16 every private key is delivered in Secrets"),
        "{}",
        r.stdout
    );
    for (version, warned) in [("1.17.18", true), ("1.18.12", false), ("1.20.0", false)] {
        assert_code(
            &cmesh(p, &["init", "--force", "--cilium-version", version]),
            0,
        );
        let r = cmesh(p, &["check", "-o", "json"]);
        assert_code(&r, 0);
        assert_eq!(
            r.stdout.contains("CM406"),
            warned,
            "{version}: {}",
            r.stdout
        );
    }
}

/// Issue 22: `check` reads pki.dir's membership record: a meshed cluster missing from
/// mesh.yaml, a removed cluster's name or ID used again and a meshed cluster's changed ID
/// are warnings naming the line; an unreadable record is an error naming the file.
#[test]
fn check_warns_from_the_membership_record() {
    let d = cli::scratch();
    let p = d.path();
    assert_code(&cmesh(p, &["init"]), 0);
    std::fs::create_dir_all(p.join("pki")).unwrap();
    std::fs::write(
        p.join("pki/membership.yaml"),
        "clusters:\n  - name: k8s01\n    id: 1\n    state: meshed\n    since: \"2026-12-01T00:00:00Z\"\n  - name: k8s02\n    id: 2\n    state: meshed\n    since: \"2026-12-01T00:00:00Z\"\n  - name: k8s09\n    id: 9\n    state: meshed\n    since: \"2026-12-01T00:00:00Z\"\n",
    )
    .unwrap();
    let r = cmesh(p, &["check", "-o", "json"]);
    assert_code(&r, 0);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let codes: Vec<&str> = v["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["CM522"], "{v:#}");
    // k8s02 becomes a new cluster with the removed k8s09's ID; k8s01's ID changes.
    let text = std::fs::read_to_string(p.join("mesh.yaml"))
        .unwrap()
        .replace("    id: 2\n", "    id: 9\n")
        .replace("    id: 1\n", "    id: 7\n");
    std::fs::write(p.join("mesh.yaml"), text).unwrap();
    std::fs::write(
        p.join("pki/membership.yaml"),
        "clusters:\n  - name: k8s01\n    id: 1\n    state: meshed\n    since: \"2026-12-01T00:00:00Z\"\n  - name: k8s09\n    id: 9\n    state: removed\n    since: \"2026-12-02T00:00:00Z\"\n",
    )
    .unwrap();
    let r = cmesh(p, &["check"]);
    assert_code(&r, 0);
    assert!(
        r.stdout.contains("CM520")
            && r.stdout
                .contains("cluster `k8s01` was meshed with ID 1 and mesh.yaml now gives it ID 7")
            && r.stdout.contains("CM521")
            && r.stdout
                .contains("cluster ID 9 of `k8s02` was `k8s09`'s (removed since 2026-12-02)")
            && r.stdout.contains("2 warnings"),
        "{}",
        r.stdout
    );
    std::fs::write(p.join("pki/membership.yaml"), "clusters:\n  - name: x\n").unwrap();
    let r = cmesh(p, &["check"]);
    assert_code(&r, 5);
    assert!(
        r.stderr.contains("membership.yaml") && r.stderr.contains("clusters[0].id"),
        "{}",
        r.stderr
    );
}
