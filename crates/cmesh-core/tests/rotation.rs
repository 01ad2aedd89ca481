//! The staged CA rotation in memory: each stage's issuer and trust, what reconcile does to
//! the leaves at each stage, what rendering puts in values and Secrets, that clusters one
//! stage apart always trust each other's certificates, and every refused step.

use std::collections::BTreeMap;

use base64::Engine as _;
use cmesh_core::pki::rotation::{self, RotationRefused, Stage, Transition};
use cmesh_core::pki::store::{self, Action, CaPolicy, PkiFiles, ReconcileOptions};
use cmesh_core::pki::{Ca, CertInfo};
use cmesh_core::render::{self, Phase};
use cmesh_core::spec::{self, KeyAlgorithm, MeshSpec, example};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

const T0: OffsetDateTime = datetime!(2026-12-01 12:00 UTC);

/// The built-in example (Cilium 1.14.2) with `method`.
fn spec_with(method: &str) -> MeshSpec {
    on("1.14.2", method)
}

/// The example at Cilium `version` with `method`.
fn on(version: &str, method: &str) -> MeshSpec {
    let o = example::ExampleOptions {
        version: version.parse().unwrap(),
        ..Default::default()
    };
    let text = example::generate(&o)
        .unwrap()
        .replace("certificates: cmesh", &format!("certificates: {method}"));
    spec::load("mesh.yaml", &text).unwrap().0
}

fn opts(spec: &MeshSpec, now: OffsetDateTime) -> ReconcileOptions {
    ReconcileOptions {
        now,
        renew_before: Duration::days(30),
        force: false,
        clusters: None,
        leaves: spec.clustermesh.certificates == spec::CertMethod::Cmesh,
        ca_policy: CaPolicy::CreateIfMissing,
        verified: Default::default(),
    }
}

/// Reconciles and writes the result into `files`, as `render` does.
fn render_pki(spec: &MeshSpec, files: &mut PkiFiles, now: OffsetDateTime) -> store::Reconciled {
    let r = store::reconcile(spec, files, &opts(spec, now)).unwrap();
    for w in &r.writes {
        files.insert(w.path.clone(), w.bytes.clone());
    }
    r
}

/// What the edge does with a transition, in memory.
fn carry_out(t: Transition, files: &mut PkiFiles) {
    t.apply_in_memory(files);
}

fn current(files: &PkiFiles) -> CertInfo {
    CertInfo::from_pem(&String::from_utf8_lossy(&files[store::CA_CERT])).unwrap()
}

fn state(files: &PkiFiles) -> Option<rotation::RotationState> {
    rotation::read_state(files).unwrap()
}

fn leaves(files: &PkiFiles) -> Vec<(String, CertInfo)> {
    files
        .iter()
        .filter(|(p, _)| p.starts_with("clusters/") && p.ends_with(".crt"))
        .map(|(p, b)| {
            (
                p.clone(),
                CertInfo::from_pem(&String::from_utf8_lossy(b)).unwrap(),
            )
        })
        .collect()
}

fn incoming(spec: &MeshSpec, now: OffsetDateTime) -> Ca {
    Ca::generate(
        &rotation::incoming_ca_name(spec, now),
        KeyAlgorithm::EcdsaP256,
        3650,
        now,
    )
    .unwrap()
}

/// The CA certificates a PEM bundle holds, by fingerprint.
fn fingerprints(bundle: &str) -> Vec<String> {
    bundle
        .split_inclusive("-----END CERTIFICATE-----\n")
        .filter(|p| p.contains("BEGIN CERTIFICATE"))
        .map(|p| CertInfo::from_pem(p).unwrap().sha256)
        .collect()
}

fn b64d(s: &str) -> String {
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(s).unwrap()).unwrap()
}

/// The rendered trust of the first cluster: `tls.ca.cert` and every
/// Secret's `ca.crt`, each as the fingerprints it holds.
fn rendered_trust(spec: &MeshSpec, r: &store::Reconciled) -> BTreeMap<String, Vec<String>> {
    let view = render::pki_view(spec, Some(r));
    let c = &spec.clusters[0];
    let values = render::cluster_values(spec, c, Phase::Mesh, &view).to_json();
    let mut out = BTreeMap::new();
    if let Some(ca) = values["tls"]["ca"]["cert"].as_str() {
        out.insert("tls.ca.cert".into(), fingerprints(&b64d(ca)));
    }
    assert!(
        values["tls"]["caBundle"].is_null(),
        "the chart's bundle stays off"
    );
    for s in render::secrets::secrets(spec, c, Phase::Mesh, &view) {
        let s = s.to_json();
        if let Some(ca) = s["data"]["ca.crt"].as_str() {
            out.insert(
                format!("Secret {}", s["metadata"]["name"].as_str().unwrap()),
                fingerprints(&b64d(ca)),
            );
        }
    }
    out
}

/// Every rendered trust of the first cluster holds exactly `want`.
fn assert_trust(spec: &MeshSpec, r: &store::Reconciled, want: &[&str]) {
    let t = rendered_trust(spec, r);
    // 1.14 and 1.15 take the Cluster Mesh certificates as values (the chart copies
    // tls.ca.cert into their Secrets' ca.crt); later versions as cmesh's Secrets. Hubble's
    // take them as values before 1.16.19. Where no certificate is a value, the chart reads
    // no tls.ca.cert, and cmesh leaves it out: a change there would only make a helm upgrade.
    let v = &spec.cilium.version;
    let mut sites = vec!["Secret cilium-ca"];
    let in_values = v.clustermesh_certs_only_as_values() || !v.has_hubble_existing_secret();
    if in_values {
        sites.push("tls.ca.cert");
    } else {
        assert!(
            !t.contains_key("tls.ca.cert"),
            "no tls.ca.cert on {v}: {t:#?}"
        );
    }
    if !v.clustermesh_certs_only_as_values() {
        sites.extend([
            "Secret clustermesh-apiserver-server-cert",
            "Secret clustermesh-apiserver-remote-cert",
        ]);
    }
    for site in sites {
        assert!(t.contains_key(site), "{site} in {t:#?}");
    }
    for (site, fps) in &t {
        assert_eq!(fps, want, "{site}");
    }
}

#[test]
fn a_full_rotation_changes_the_trust_and_the_issuer_one_at_a_time() {
    // Every minor cmesh supports: the chart reads the certificates from values (1.14, 1.15),
    // from cmesh's Secrets with `enableSecrets` (1.16–1.19) or without (1.20).
    for version in [
        "1.14.2", "1.15.19", "1.16.0", "1.16.19", "1.17.17", "1.18.11", "1.19.7", "1.20.0",
    ] {
        full_rotation(&on(version, "cmesh"));
    }
}

fn full_rotation(spec: &MeshSpec) {
    let spec = spec.clone();
    let mut files = PkiFiles::new();
    let r0 = render_pki(&spec, &mut files, T0);
    let old = current(&files).sha256;
    assert!(r0.trust.rotation.is_none());
    assert_trust(&spec, &r0, &[old.as_str()]);

    // begin: both trusted, leaves untouched.
    let t1 = T0 + Duration::hours(1);
    let new = incoming(&spec, t1);
    let new_fp = new.info().sha256.clone();
    carry_out(
        rotation::begin(&spec, &current(&files), None, new, t1).unwrap(),
        &mut files,
    );
    assert_eq!(state(&files).unwrap().stage, Stage::Begun);
    let r1 = render_pki(&spec, &mut files, t1);
    assert!(r1.writes.is_empty(), "begin re-issues nothing");
    assert!(r1.events.iter().all(|e| e.action == Action::Reused));
    assert_eq!(r1.ca.info().sha256, old, "the old CA still issues");
    assert_trust(&spec, &r1, &[old.as_str(), new_fp.as_str()]);

    // reissue: every leaf from the new CA, both still trusted.
    let t2 = t1 + Duration::hours(1);
    carry_out(
        rotation::reissue(state(&files).as_ref(), t2).unwrap(),
        &mut files,
    );
    // finish before a render re-issued the leaves would strand them: refused.
    let early = rotation::finish(&files, state(&files).as_ref(), &leaves(&files));
    assert!(
        matches!(&early, Err(RotationRefused::Stage { message, .. }) if message.contains("still come from the old CA")),
        "{early:?}"
    );
    let r2 = render_pki(&spec, &mut files, t2);
    assert_eq!(r2.ca.info().sha256, new_fp);
    let renewed: Vec<_> = r2
        .events
        .iter()
        .filter(|e| e.action == Action::Renewed)
        .collect();
    assert_eq!(renewed.len(), leaves(&files).len());
    assert!(
        renewed
            .iter()
            .all(|e| e.reason == "signed by a different CA")
    );
    assert_trust(&spec, &r2, &[old.as_str(), new_fp.as_str()]);
    let r2b = render_pki(&spec, &mut files, t2 + Duration::minutes(5));
    assert!(
        r2b.writes.is_empty(),
        "a second render in the stage is stable"
    );

    // finish: the new CA alone; leaves kept; no bundle.
    let t3 = t2 + Duration::hours(1);
    let fin = rotation::finish(&files, state(&files).as_ref(), &leaves(&files)).unwrap();
    let Transition::Promote { retiring, .. } = &fin else {
        panic!("{fin:?}")
    };
    assert_eq!(retiring, &old);
    carry_out(fin, &mut files);
    assert_eq!(current(&files).sha256, new_fp);
    assert!(state(&files).is_none());
    let r3 = render_pki(&spec, &mut files, t3);
    assert!(r3.writes.is_empty(), "finish re-issues nothing");
    assert_trust(&spec, &r3, &[new_fp.as_str()]);
}

/// A cluster that applied stage n+1 and one still on stage n trust each other's
/// certificates, at every step of a rotation and of an abort after `reissue`: the point of
/// changing trust and issuer in separate stages.
#[test]
fn clusters_one_stage_apart_trust_each_other() {
    let spec = spec_with("cmesh");
    let mut files = PkiFiles::new();
    let mut snapshots = vec![("none", render_pki(&spec, &mut files, T0))];
    let new = incoming(&spec, T0);
    carry_out(
        rotation::begin(&spec, &current(&files), None, new, T0).unwrap(),
        &mut files,
    );
    snapshots.push(("begun", render_pki(&spec, &mut files, T0)));
    carry_out(
        rotation::reissue(state(&files).as_ref(), T0).unwrap(),
        &mut files,
    );
    snapshots.push(("reissued", render_pki(&spec, &mut files, T0)));
    let mut aborting = files.clone();
    carry_out(
        rotation::finish(&files, state(&files).as_ref(), &leaves(&files)).unwrap(),
        &mut files,
    );
    snapshots.push(("finished", render_pki(&spec, &mut files, T0)));
    // The abort path from `reissued`: reverting, then discarded.
    let mut abort_snaps = vec![("reissued", render_pki(&spec, &mut aborting, T0))];
    carry_out(
        rotation::abort(state(&aborting).as_ref(), T0).unwrap(),
        &mut aborting,
    );
    assert_eq!(state(&aborting).unwrap().stage, Stage::Reverting);
    abort_snaps.push(("reverting", render_pki(&spec, &mut aborting, T0)));
    carry_out(
        rotation::abort(state(&aborting).as_ref(), T0).unwrap(),
        &mut aborting,
    );
    assert!(state(&aborting).is_none());
    abort_snaps.push(("aborted", render_pki(&spec, &mut aborting, T0)));

    for path in [snapshots, abort_snaps] {
        for pair in path.windows(2) {
            let [(a_name, a), (b_name, b)] = pair else {
                unreachable!()
            };
            for (holder, leaves_of, truster, trust_of) in
                [(a_name, a, b_name, b), (b_name, b, a_name, a)]
            {
                let trusted: Vec<CertInfo> = trust_of
                    .trust
                    .trusted_pem
                    .iter()
                    .map(|p| CertInfo::from_pem(p).unwrap())
                    .collect();
                for ((cluster, kind), leaf) in &leaves_of.leaves {
                    assert!(
                        trusted.iter().any(|ca| leaf.info.is_signed_by(ca)),
                        "{cluster} {kind:?} at stage {holder} is not trusted by a cluster at stage {truster}"
                    );
                }
            }
        }
    }
}

#[test]
fn abort_after_begin_returns_at_once_and_after_reissue_in_two_steps() {
    let spec = spec_with("cmesh");
    let mut files = PkiFiles::new();
    render_pki(&spec, &mut files, T0);
    let old = current(&files).sha256;
    let before: Vec<_> = leaves(&files).into_iter().map(|(_, c)| c.sha256).collect();
    let new = incoming(&spec, T0);
    let new_fp = new.info().sha256.clone();
    carry_out(
        rotation::begin(&spec, &current(&files), None, new, T0).unwrap(),
        &mut files,
    );
    render_pki(&spec, &mut files, T0);
    let t = rotation::abort(state(&files).as_ref(), T0).unwrap();
    assert!(matches!(&t, Transition::Discard { incoming } if *incoming == new_fp));
    carry_out(t, &mut files);
    let r = render_pki(&spec, &mut files, T0);
    assert!(r.writes.is_empty());
    assert_trust(&spec, &r, &[old.as_str()]);
    let after: Vec<_> = leaves(&files).into_iter().map(|(_, c)| c.sha256).collect();
    assert_eq!(before, after, "an abort after begin touches no certificate");

    // After reissue: back to the old CA's leaves with both trusted, then the new CA goes.
    let new = incoming(&spec, T0);
    let new_fp = new.info().sha256.clone();
    carry_out(
        rotation::begin(&spec, &current(&files), None, new, T0).unwrap(),
        &mut files,
    );
    carry_out(
        rotation::reissue(state(&files).as_ref(), T0).unwrap(),
        &mut files,
    );
    render_pki(&spec, &mut files, T0);
    carry_out(
        rotation::abort(state(&files).as_ref(), T0).unwrap(),
        &mut files,
    );
    let r = render_pki(&spec, &mut files, T0);
    assert_eq!(r.ca.info().sha256, old);
    assert!(r.events.iter().all(|e| e.action == Action::Renewed));
    assert_trust(&spec, &r, &[old.as_str(), new_fp.as_str()]);
    // finish is no way out of an abort; reissue would resume the rotation.
    assert!(matches!(
        rotation::finish(&files, state(&files).as_ref(), &leaves(&files)),
        Err(RotationRefused::Stage { .. })
    ));
    carry_out(
        rotation::abort(state(&files).as_ref(), T0).unwrap(),
        &mut files,
    );
    let r = render_pki(&spec, &mut files, T0);
    assert!(r.writes.is_empty());
    assert_trust(&spec, &r, &[old.as_str()]);
}

#[test]
fn steps_out_of_order_and_methods_that_cannot_rotate_are_refused_with_the_way_forward() {
    let spec = spec_with("cmesh");
    let mut files = PkiFiles::new();
    render_pki(&spec, &mut files, T0);
    let stage_hint = |r: Result<Transition, RotationRefused>| match r {
        Err(RotationRefused::Stage { message, hint }) => format!("{message} / {hint}"),
        other => panic!("{other:?}"),
    };
    let none = stage_hint(rotation::reissue(None, T0));
    assert!(
        none.contains("no CA rotation is in progress") && none.contains("rotate begin"),
        "{none}"
    );
    assert!(stage_hint(rotation::abort(None, T0)).contains("no CA rotation"));
    // The same CA again.
    let same = Ca::load(
        &String::from_utf8_lossy(&files[store::CA_CERT]),
        &String::from_utf8_lossy(&files[store::CA_KEY]),
        T0,
    )
    .unwrap();
    assert!(
        stage_hint(rotation::begin(&spec, &current(&files), None, same, T0))
            .contains("mesh CA already")
    );
    carry_out(
        rotation::begin(&spec, &current(&files), None, incoming(&spec, T0), T0).unwrap(),
        &mut files,
    );
    let twice = stage_hint(rotation::begin(
        &spec,
        &current(&files),
        state(&files).as_ref(),
        incoming(&spec, T0),
        T0,
    ));
    assert!(
        twice.contains("already in progress (stage `begun`"),
        "{twice}"
    );
    let early = stage_hint(rotation::finish(
        &files,
        state(&files).as_ref(),
        &leaves(&files),
    ));
    assert!(
        early.contains("stage `begun`") && early.contains("rotate reissue"),
        "{early}"
    );

    for method in ["helm", "cronJob"] {
        let spec = spec_with(method);
        let mut files = PkiFiles::new();
        render_pki(&spec, &mut files, T0);
        let ca = current(&files);
        match rotation::begin(&spec, &ca, None, incoming(&spec, T0), T0) {
            Err(RotationRefused::Method { reason }) => {
                assert!(
                    reason.contains(&format!("certificates: {method}")),
                    "{reason}"
                );
            }
            other => panic!("{method}: {other:?}"),
        }
    }
}

#[test]
fn the_state_file_round_trips_and_tampering_is_caught() {
    let spec = spec_with("cmesh");
    let mut files = PkiFiles::new();
    render_pki(&spec, &mut files, T0);
    carry_out(
        rotation::begin(&spec, &current(&files), None, incoming(&spec, T0), T0).unwrap(),
        &mut files,
    );
    carry_out(
        rotation::reissue(state(&files).as_ref(), T0 + Duration::hours(2)).unwrap(),
        &mut files,
    );
    let s = state(&files).unwrap();
    assert_eq!(rotation::RotationState::parse(&s.to_text()).unwrap(), s);
    assert_eq!(
        s.history.iter().map(|(st, _)| *st).collect::<Vec<_>>(),
        [Stage::Begun, Stage::Reissued]
    );
    assert_eq!(s.began(), Some(T0));
    let text = String::from_utf8(files[rotation::ROTATION_STATE].clone()).unwrap();
    assert!(text.starts_with("# A CA rotation in progress"), "{text}");

    // The incoming certificate replaced behind the state's back.
    let mut swapped = files.clone();
    swapped.insert(
        rotation::ROTATION_CA_CERT.into(),
        incoming(&spec, T0).cert_pem().as_bytes().to_vec(),
    );
    let e = rotation::read_state(&swapped).unwrap_err().to_string();
    assert!(e.contains("`to` is"), "{e}");
    // The mesh CA replaced during the rotation.
    let mut replaced = files.clone();
    let other = incoming(&spec, T0);
    replaced.insert(store::CA_CERT.into(), other.cert_pem().as_bytes().to_vec());
    replaced.insert(store::CA_KEY.into(), other.key().pem().as_bytes().to_vec());
    let e = store::reconcile(&spec, &replaced, &opts(&spec, T0))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`from` is") && e.contains("replaced during the rotation"),
        "{e}"
    );
    // A stage cmesh never writes; half a rotation.
    let mut bad = files.clone();
    bad.insert(
        rotation::ROTATION_STATE.into(),
        text.replace("stage: reissued", "stage: done").into_bytes(),
    );
    let e = rotation::read_state(&bad).unwrap_err().to_string();
    assert!(
        e.contains("`stage: done` is not one of begun, reissued, reverting"),
        "{e}"
    );
    let mut half = files.clone();
    half.remove(rotation::ROTATION_CA_CERT);
    let e = rotation::read_state(&half).unwrap_err().to_string();
    assert!(
        e.contains("rotation/state.yaml but not rotation/ca.crt"),
        "{e}"
    );
    // In `reissued` the new CA's key is needed to issue.
    let mut keyless = files.clone();
    keyless.remove(rotation::ROTATION_CA_KEY);
    let e = store::reconcile(&spec, &keyless, &opts(&spec, T0))
        .unwrap_err()
        .to_string();
    assert!(e.contains("rotation/ca.key"), "{e}");
}

/// `status`: the stage, both CAs, which issues, the leaves by issuer and the next step.
#[test]
fn the_report_says_where_the_rotation_stands() {
    let spec = spec_with("cmesh");
    let mut files = PkiFiles::new();
    render_pki(&spec, &mut files, T0);
    let r = rotation::report(&files).unwrap();
    assert!(r.rotation.is_none() && r.incoming.is_none());
    assert_eq!(r.issuer, "current");
    assert!(r.next.contains("rotate begin"));
    let n = leaves(&files).len();
    assert_eq!(r.leaves["current"], n);
    carry_out(
        rotation::begin(&spec, &current(&files), None, incoming(&spec, T0), T0).unwrap(),
        &mut files,
    );
    carry_out(
        rotation::reissue(state(&files).as_ref(), T0).unwrap(),
        &mut files,
    );
    let r = rotation::report(&files).unwrap();
    assert_eq!(r.issuer, "incoming");
    assert_eq!(r.leaves["current"], n, "not rendered yet");
    assert!(r.next.contains("rotate finish"), "{}", r.next);
    render_pki(&spec, &mut files, T0);
    let r = rotation::report(&files).unwrap();
    assert_eq!(r.leaves.get("current"), None);
    assert_eq!(r.leaves["incoming"], n);
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["rotation"]["stage"], "reissued");
    assert_eq!(json["history"][1]["stage"], "reissued");
    assert!(json["incoming"]["sha256"].is_string());
    assert!(
        !json.to_string().contains("PRIVATE"),
        "no key in the report"
    );
}
