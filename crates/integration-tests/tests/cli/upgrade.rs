//! `cmesh upgrade --plan` offline (a rendered mesh, no cluster), and what upgrade refuses
//! before it changes anything.

use integration_tests::cli;

use crate::{assert_code, cmesh};

/// A three-cluster mesh on 1.16.19, rendered (pki.dir holds its CA and certificates).
fn mesh_on_1_16() -> tempfile::TempDir {
    let d = cli::scratch();
    let r = cmesh(
        d.path(),
        &["init", "--clusters", "3", "--cilium-version", "1.16.19"],
    );
    assert_code(&r, 0);
    assert_code(&cmesh(d.path(), &["render"]), 0);
    d
}

#[test]
fn the_plan_goes_one_minor_at_a_time_and_changes_nothing() {
    let d = mesh_on_1_16();
    let before = cli::snapshot_tree(d.path());
    let r = cmesh(d.path(), &["upgrade", "--to", "1.20.0", "--plan"]);
    assert_code(&r, 0);
    insta::assert_snapshot!("upgrade_plan_1_16_to_1_20", r.snapshot(d.path()));
    assert_eq!(
        cli::snapshot_tree(d.path()),
        before,
        "--plan writes nothing"
    );

    let r = cmesh(
        d.path(),
        &["upgrade", "--to", "1.20.0", "--plan", "-o", "json"],
    );
    assert_code(&r, 0);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["from"], "1.16.19");
    let steps = v["steps"].as_array().unwrap();
    let tos: Vec<&str> = steps.iter().map(|s| s["to"].as_str().unwrap()).collect();
    assert_eq!(tos, ["1.17.17", "1.18.11", "1.19.7", "1.20.0"]);
    // The pin, only where the step crosses into 1.19.
    let pins: Vec<usize> = steps
        .iter()
        .map(|s| s["pins"].as_array().unwrap().len())
        .collect();
    assert_eq!(pins, [0, 0, 1, 0]);
    assert_eq!(
        steps[2]["pins"][0]["field"],
        "clustermesh.policyDefaultLocalCluster"
    );
    assert_eq!(steps[2]["pins"][0]["value"], false);
    // 1.20's server certificate common name: every cluster's server certificate anew, once.
    let certs = |i: usize| -> Vec<String> {
        steps[i]["certificates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                format!(
                    "{} {}",
                    c["cluster"].as_str().unwrap(),
                    c["secret"].as_str().unwrap()
                )
            })
            .collect()
    };
    assert!(certs(0).is_empty() && certs(1).is_empty() && certs(2).is_empty());
    for c in ["k8s01", "k8s02", "k8s03"] {
        assert!(
            certs(3).contains(&format!("{c} clustermesh-apiserver-server-cert")),
            "{:?}",
            certs(3)
        );
    }
    // Values: 1.20 moves the server SANs; no key holds a certificate or key in clear.
    let paths: Vec<&str> = steps[3]["clusters"][0]["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    assert!(
        paths.contains(&"clustermesh.apiserver.tls.auto.server.extraDnsNames"),
        "{paths:?}"
    );
    assert!(!r.stdout.contains("BEGIN"), "no PEM in the plan");

    // Already there: nothing to do.
    let r = cmesh(d.path(), &["upgrade", "--to", "1.16.19", "--plan"]);
    assert_code(&r, 0);
    assert!(r.stdout.contains("nothing to upgrade"), "{}", r.stdout);
}

#[test]
fn refusals_change_nothing() {
    let d = mesh_on_1_16();
    let before = cli::snapshot_tree(d.path());
    for (args, want) in [
        (&["upgrade", "--to", "1.15.19"][..], "only goes forward"),
        (
            &["upgrade", "--to", "1.21.0"][..],
            "newer than cmesh supports",
        ),
        (
            &["upgrade", "--to", "2.0.0"][..],
            "changes the major version",
        ),
        (&["upgrade", "--to", "1.20"][..], "--to 1.20"),
        (
            &["upgrade", "--to", "1.19.7", "--via", "1.19.1"][..],
            "--via 1.19.1",
        ),
        (
            &["upgrade", "--to", "1.18.11", "--chart", "./chart.tgz"][..],
            "VERSION=PATH",
        ),
    ] {
        let r = cmesh(d.path(), args);
        assert_code(&r, 2);
        assert!(r.stderr.contains(want), "{args:?}: {}", r.stderr);
    }
    // Without --yes and no terminal to ask on: the plan is printed, nothing changes.
    let r = cmesh(d.path(), &["upgrade", "--to", "1.17.17"]);
    assert_code(&r, 2);
    assert!(
        r.stdout.contains("Step 1: 1.16.19 → 1.17.17"),
        "{}",
        r.stdout
    );
    assert!(r.stderr.contains("--yes"), "{}", r.stderr);
    // With --yes, clusters that cannot be reached fail the check before the first step.
    let r = cmesh(d.path(), &["upgrade", "--to", "1.17.17", "--yes"]);
    assert_code(&r, 7);
    assert!(
        r.stderr
            .contains("status does not pass on every cluster, so nothing was changed"),
        "{}",
        r.stderr
    );
    assert_eq!(cli::snapshot_tree(d.path()), before);
}
