use super::*;
use crate::membership::Member;

fn v(s: &str) -> CiliumVersion {
    s.parse().unwrap()
}

fn spec_at(version: &str) -> MeshSpec {
    let text = crate::spec::example::builtin()
        .replace("version: \"1.14.2\"", &format!("version: \"{version}\""));
    let spec = crate::spec::load("mesh.yaml", &text).unwrap().0;
    assert_eq!(spec.cilium.version, v(version));
    spec
}

#[test]
fn the_way_goes_one_minor_at_a_time_through_the_waypoints_or_via() {
    let shown = |p: Vec<CiliumVersion>| p.iter().map(ToString::to_string).collect::<Vec<_>>();
    assert_eq!(
        shown(path(&v("1.16.19"), &v("1.20.0"), &[]).unwrap()),
        ["1.17.17", "1.18.11", "1.19.7", "1.20.0"]
    );
    assert_eq!(
        shown(path(&v("1.16.19"), &v("1.19.6"), &[v("1.17.18")]).unwrap()),
        ["1.17.18", "1.18.11", "1.19.6"]
    );
    assert_eq!(
        shown(path(&v("1.16.3"), &v("1.16.19"), &[]).unwrap()),
        ["1.16.19"]
    );
    assert_eq!(
        shown(path(&v("1.19.7"), &v("1.20.0"), &[]).unwrap()),
        ["1.20.0"]
    );
    assert!(path(&v("1.20.0"), &v("1.20.0"), &[]).unwrap().is_empty());
    // Every waypoint is one minor, each the next.
    let all: Vec<CiliumVersion> = WAYPOINTS.iter().map(|w| v(w)).collect();
    assert!(all.windows(2).all(|w| w[1].minor == w[0].minor + 1));
    assert!(
        all.iter()
            .all(|w| w.step_problem(&v("1.20.0")).is_none() || w.minor < 19)
    );

    assert!(matches!(
        path(&v("1.18.11"), &v("1.16.19"), &[]),
        Err(PathError::Backwards { .. })
    ));
    assert!(matches!(
        path(&v("1.18.11"), &v("1.21.0"), &[]),
        Err(PathError::Unsupported { .. })
    ));
    assert!(matches!(
        path(&v("1.16.19"), &v("1.18.11"), &[v("1.18.0")]),
        Err(PathError::StrayVia { .. })
    ));
    assert!(matches!(
        path(&v("1.16.19"), &v("1.18.11"), &[v("1.16.20")]),
        Err(PathError::StrayVia { .. })
    ));
    // No step of the way skips a minor.
    let p = path(&v("1.14.2"), &v("1.20.0"), &[]).unwrap();
    let mut at = v("1.14.2");
    for s in &p {
        assert_eq!(at.step_problem(s), None, "{at} → {s}");
        assert_eq!(s.minor, at.minor + 1);
        at = s.clone();
    }
}

#[test]
fn an_upgrade_stopped_halfway_starts_from_the_oldest_meshed_cluster() {
    let spec = spec_at("1.17.17");
    let member = |name: &str, version: &str, state: State| Member {
        name: name.into(),
        id: 1,
        kubeconfig: None,
        context: None,
        version: Some(version.into()),
        state,
        since: "2026-12-06T00:00:00Z".into(),
    };
    let names: Vec<String> = spec.clusters.iter().map(|c| c.name.clone()).collect();
    let mut record = Record {
        members: vec![
            member(&names[0], "1.17.17", State::Meshed),
            member(&names[1], "1.17.17", State::Meshed),
        ],
    };
    assert_eq!(start(&spec, &record), v("1.17.17"));
    record.members[1].version = Some("1.16.19".into());
    assert_eq!(start(&spec, &record), v("1.16.19"));
    // A removed cluster, or one no longer in mesh.yaml, does not hold the mesh back.
    record.members[1].state = State::Removed;
    assert_eq!(start(&spec, &record), v("1.17.17"));
    record.members[1] = member("gone", "1.14.2", State::Meshed);
    assert_eq!(start(&spec, &record), v("1.17.17"));
}

#[test]
fn policy_default_local_cluster_is_pinned_when_a_step_crosses_into_1_19() {
    let spec = spec_at("1.18.11");
    let p = pins(&spec, &v("1.19.7"));
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].field, "clustermesh.policyDefaultLocalCluster");
    assert!(!p[0].value);
    assert!(p[0].why.contains("L501"), "{}", p[0].why);
    // Not when mesh.yaml already says, nor on steps that do not cross 1.19.
    let mut set = spec.clone();
    set.clustermesh.policy_default_local_cluster = Some(true);
    assert!(pins(&set, &v("1.19.7")).is_empty());
    assert!(pins(&spec_at("1.17.17"), &v("1.18.11")).is_empty());
    assert!(pins(&spec_at("1.19.7"), &v("1.20.0")).is_empty());
}

#[test]
fn each_minor_brings_its_changes_with_what_cmesh_does() {
    let minors = |from: &str, to: &str, spec: &MeshSpec| {
        let mut m: Vec<String> = changes(&v(from), &v(to), spec)
            .into_iter()
            .map(|c| c.minor)
            .collect();
        m.dedup();
        m
    };
    let spec = spec_at("1.19.7");
    assert_eq!(minors("1.16.19", "1.17.17", &spec), ["1.17"]);
    assert_eq!(
        minors("1.14.2", "1.20.0", &spec),
        ["1.15", "1.16", "1.17", "1.18", "1.19", "1.20"]
    );
    assert!(minors("1.16.3", "1.16.19", &spec).is_empty());
    // 1.19's policy change: pinned, review, or as mesh.yaml says.
    let policy = |s: &MeshSpec| {
        changes(&v("1.18.11"), &v("1.19.7"), s)
            .into_iter()
            .find(|c| c.what.contains("policy selectors"))
            .unwrap()
    };
    let mut pinned = spec.clone();
    pinned.clustermesh.policy_default_local_cluster = Some(false);
    assert_eq!(policy(&pinned).action, Action::Pinned);
    assert_eq!(policy(&spec).action, Action::Review);
    let metrics = changes(&v("1.18.11"), &v("1.19.7"), &spec);
    assert!(
        metrics
            .iter()
            .any(|c| c.what.contains("_remote_cluster_services") && c.action == Action::Review)
    );
    // KVStoreMesh on 1.16: handled when left to the version, info when mesh.yaml decides.
    let kvs = |s: &MeshSpec| {
        changes(&v("1.15.19"), &v("1.16.19"), s)
            .into_iter()
            .find(|c| c.what.starts_with("KVStoreMesh"))
            .unwrap()
    };
    let mut off = spec.clone();
    off.clustermesh.kvstoremesh = Some(false);
    assert_eq!(kvs(&spec).action, Action::Handled);
    assert_eq!(kvs(&off).action, Action::Info);
    assert!(kvs(&off).cmesh.contains("off"));
}

#[test]
fn values_by_cluster_diffs_each_cluster_against_its_own() {
    let mut a = Value::map();
    a.set(&["cluster", "name"], "k8s01");
    a.set(&["clustermesh", "apiserver", "tls", "enableSecrets"], true);
    let mut b = Value::map();
    b.set(&["cluster", "name"], "k8s01");
    b.set(&["clustermesh", "cacheTTL"], "10m");
    let out = values_by_cluster(&[("k8s01".into(), a)], &[("k8s01".into(), b)]);
    assert_eq!(out.len(), 1);
    let paths: Vec<(&str, crate::value::Change)> = out[0]
        .values
        .iter()
        .map(|c| (c.path.as_str(), c.change))
        .collect();
    assert_eq!(
        paths,
        [
            (
                "clustermesh.apiserver.tls.enableSecrets",
                crate::value::Change::Removed
            ),
            ("clustermesh.cacheTTL", crate::value::Change::Added),
        ]
    );
}
