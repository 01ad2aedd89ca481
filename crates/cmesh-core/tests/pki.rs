//! PKI tests: every certificate cmesh issues is verified by a real X.509 verifier
//! (rustls-webpki) against the mesh CA, including SAN matching of what peers dial.

use std::time::Duration as StdDuration;

use cmesh_core::pki::catalog::{LeafKind, leaves_for};
use cmesh_core::pki::store::{self, CaPolicy, PkiFiles, ReconcileOptions, leaf_paths};
use cmesh_core::pki::{Ca, CertInfo, LeafRequest, PkiError, PrivateKey};
use cmesh_core::spec::{self, KeyAlgorithm, example};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

const NOW: OffsetDateTime = datetime!(2026-11-24 12:00 UTC);

fn unix(t: OffsetDateTime) -> UnixTime {
    UnixTime::since_unix_epoch(StdDuration::from_secs(t.unix_timestamp() as u64))
}

/// Verifies `leaf` chains to `ca` for `usage` at `at`, and (if given) covers `name`.
fn verify(
    ca: &CertInfo,
    leaf: &CertInfo,
    usage: webpki::KeyUsage,
    at: OffsetDateTime,
    name: Option<&str>,
) -> Result<(), String> {
    let ca_der = CertificateDer::from(ca.der.clone());
    let anchor = webpki::anchor_from_trusted_cert(&ca_der).map_err(|e| format!("anchor: {e}"))?;
    let leaf_der = CertificateDer::from(leaf.der.clone());
    let ee = webpki::EndEntityCert::try_from(&leaf_der).map_err(|e| format!("leaf: {e}"))?;
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &[anchor],
        &[],
        unix(at),
        usage,
        None,
        None,
    )
    .map_err(|e| format!("chain: {e}"))?;
    if let Some(name) = name {
        let sn = ServerName::try_from(name)
            .map_err(|e| format!("name: {e}"))?
            .to_owned();
        ee.verify_is_valid_for_subject_name(&sn)
            .map_err(|e| format!("name {name}: {e}"))?;
    }
    Ok(())
}

fn lab() -> spec::MeshSpec {
    spec::load("lab", &example::builtin()).unwrap().0
}

fn opts() -> ReconcileOptions {
    ReconcileOptions {
        now: NOW,
        renew_before: Duration::days(30),
        force: false,
        clusters: None,
        leaves: true,
        ca_policy: CaPolicy::CreateIfMissing,
        verified: Default::default(),
    }
}

fn apply(files: &mut PkiFiles, r: &store::Reconciled) {
    for w in &r.writes {
        files.insert(w.path.clone(), w.bytes.clone());
    }
}

#[test]
fn every_leaf_of_the_lab_verifies_against_the_ca() {
    let spec = lab();
    let files = PkiFiles::new();
    let r = store::reconcile(&spec, &files, &opts()).unwrap();
    let ca = r.ca.info();
    assert!(ca.is_ca);
    // k8s01 on 1.14: server, admin, remote, hubble server, relay client (relay is on in the lab).
    let kinds: Vec<LeafKind> = r
        .leaves
        .keys()
        .filter(|(c, _)| c == "k8s01")
        .map(|(_, k)| *k)
        .collect();
    assert_eq!(
        kinds,
        vec![
            LeafKind::ClustermeshServer,
            LeafKind::ClustermeshAdmin,
            LeafKind::ClustermeshRemote,
            LeafKind::HubbleServer,
            LeafKind::HubbleRelayClient
        ]
    );
    for ((cluster, kind), leaf) in &r.leaves {
        verify(ca, &leaf.info, webpki::KeyUsage::client_auth(), NOW, None)
            .unwrap_or_else(|e| panic!("{cluster}/{kind:?}: {e}"));
    }
    let server = &r.leaves[&("k8s02".to_string(), LeafKind::ClustermeshServer)].info;
    assert_eq!(server.common_name, "clustermesh-apiserver.cilium.io");
    // What k8s01's agents dial for k8s02, and the chart's own names, all verify.
    for name in [
        "k8s-lab-02.mylaptop.loc",
        "clustermesh-apiserver.kube-system.svc",
        "k8s02.mesh.cilium.io",
        "127.0.0.1",
    ] {
        verify(ca, server, webpki::KeyUsage::server_auth(), NOW, Some(name))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    // The other cluster's address must not verify: that is exactly the x509 error of cilium#22872.
    let err = verify(
        ca,
        server,
        webpki::KeyUsage::server_auth(),
        NOW,
        Some("k8s-lab-01.mylaptop.loc"),
    )
    .unwrap_err();
    assert!(err.contains("name"), "{err}");
    let remote = &r.leaves[&("k8s01".to_string(), LeafKind::ClustermeshRemote)].info;
    assert_eq!(remote.common_name, "remote-k8s01");
    let admin = &r.leaves[&("k8s01".to_string(), LeafKind::ClustermeshAdmin)].info;
    assert_eq!(admin.common_name, "admin-k8s01");
    assert_eq!(admin.dns_names, vec!["localhost".to_string()]);
    let hubble = &r.leaves[&("k8s02".to_string(), LeafKind::HubbleServer)].info;
    assert_eq!(hubble.common_name, "*.k8s02.hubble-grpc.cilium.io");
    // Leaves are not valid after the configured validity, nor before issuance.
    assert!(
        verify(
            ca,
            server,
            webpki::KeyUsage::server_auth(),
            NOW + Duration::days(366),
            None
        )
        .is_err()
    );
    assert!(
        verify(
            ca,
            server,
            webpki::KeyUsage::server_auth(),
            NOW - Duration::hours(1),
            None
        )
        .is_err()
    );
}

#[test]
fn version_1_20_names_and_ips_form() {
    let text = example::builtin()
        .replace("version: \"1.14.2\"", "version: \"1.20.0\"")
        .replace("    bgp:\n      enabled: false\n", "")
        .replace(
            "      address: k8s-lab-02.mylaptop.loc\n",
            "      ips: [192.168.124.20]\n",
        );
    let spec = spec::load("t", &text).unwrap().0;
    let r = store::reconcile(&spec, &PkiFiles::new(), &opts()).unwrap();
    let ca = r.ca.info();
    let server = &r.leaves[&("k8s02".to_string(), LeafKind::ClustermeshServer)].info;
    assert_eq!(server.common_name, "clustermesh-apiserver.kube-system.svc");
    assert!(
        !server
            .dns_names
            .contains(&"clustermesh-apiserver.cilium.io".to_string())
    );
    // ips form with domain mylaptop.loc: peers dial k8s02.mylaptop.loc, and the IP is a SAN.
    verify(
        ca,
        server,
        webpki::KeyUsage::server_auth(),
        NOW,
        Some("k8s02.mylaptop.loc"),
    )
    .unwrap();
    verify(
        ca,
        server,
        webpki::KeyUsage::server_auth(),
        NOW,
        Some("192.168.124.20"),
    )
    .unwrap();
    // 1.20 has KVStoreMesh on by default, so the local certificate exists; admin has no SANs.
    assert!(
        r.leaves
            .contains_key(&("k8s02".to_string(), LeafKind::ClustermeshLocal))
    );
    let admin = &r.leaves[&("k8s02".to_string(), LeafKind::ClustermeshAdmin)].info;
    assert!(admin.dns_names.is_empty());
}

#[test]
fn second_reconcile_reuses_everything_and_never_recreates_the_ca() {
    let spec = lab();
    let mut files = PkiFiles::new();
    let first = store::reconcile(&spec, &files, &opts()).unwrap();
    apply(&mut files, &first);
    assert_eq!(
        first
            .events
            .iter()
            .filter(|e| e.action == store::Action::Created)
            .count(),
        1
    );
    let second = store::reconcile(&spec, &files, &opts()).unwrap();
    assert!(second.writes.is_empty(), "{:?}", second.events);
    assert!(
        second
            .events
            .iter()
            .all(|e| e.action == store::Action::Reused)
    );
    assert_eq!(second.ca.info().sha256, first.ca.info().sha256);
    for (k, leaf) in &second.leaves {
        assert_eq!(leaf.cert_pem, first.leaves[k].cert_pem);
    }
    // Without the CA key, nothing is regenerated: it is an error.
    files.remove(store::CA_KEY);
    let err = store::reconcile(&spec, &files, &opts()).unwrap_err();
    assert!(
        matches!(
            err,
            PkiError::IncompleteCa {
                missing: "ca.key",
                ..
            }
        ),
        "{err}"
    );
    // And with no CA at all under MustExist, too.
    let empty = PkiFiles::new();
    let err = store::reconcile(
        &spec,
        &empty,
        &ReconcileOptions {
            ca_policy: CaPolicy::MustExist,
            ..opts()
        },
    )
    .unwrap_err();
    assert!(matches!(err, PkiError::NoCa));
}

#[test]
fn verified_signatures_are_reported_kept_and_only_apply_to_their_ca() {
    let spec = lab();
    let mut files = PkiFiles::new();
    let first = store::reconcile(&spec, &files, &opts()).unwrap();
    apply(&mut files, &first);
    // Every leaf issued is recorded under the CA that signed it.
    assert_eq!(first.verified.len(), first.leaves.len());
    for leaf in first.leaves.values() {
        assert!(first.verified.contains(first.ca.info(), &leaf.info));
    }
    // The cache file's text reads back whole; anything else reads as nothing.
    let text = first.verified.to_text();
    assert_eq!(store::Verified::parse(&text), first.verified);
    assert!(store::Verified::parse("garbage\nca 00\n").is_empty());
    let cut = &text[..text.len() - 40];
    assert_eq!(store::Verified::parse(cut).len(), first.verified.len() - 1);

    // A run with the cache reports the same set (so the edge does not rewrite it).
    let second = store::reconcile(
        &spec,
        &files,
        &ReconcileOptions {
            verified: first.verified.clone(),
            ..opts()
        },
    )
    .unwrap();
    assert!(second.writes.is_empty());
    assert_eq!(second.verified, first.verified);

    // A listed pair is trusted without verifying (what saves the time): a leaf whose
    // signature is broken stays only while the cache names it.
    let (k, leaf) = first.leaves.iter().next().unwrap();
    let (crt, _) = store::leaf_paths(&k.0, k.1);
    let der = {
        let mut d = leaf.info.der.clone();
        let last = d.len() - 1;
        d[last] ^= 1;
        d
    };
    let broken = pem_cert(&der);
    files.insert(crt.clone(), broken.into_bytes());
    let info =
        cmesh_core::pki::CertInfo::from_pem(std::str::from_utf8(&files[&crt]).unwrap()).unwrap();
    let mut cache = first.verified.clone();
    cache.insert(first.ca.info(), &info);
    let trusted = store::reconcile(
        &spec,
        &files,
        &ReconcileOptions {
            verified: cache.clone(),
            ..opts()
        },
    )
    .unwrap();
    assert!(trusted.writes.is_empty(), "{:?}", trusted.events);
    let checked = store::reconcile(&spec, &files, &opts()).unwrap();
    assert_eq!(checked.writes.len(), 2, "{:?}", checked.events);
    assert!(
        checked
            .events
            .iter()
            .any(|e| e.reason == "signed by a different CA")
    );

    // Entries under another CA do not count: a new CA re-issues every leaf.
    let mut other = PkiFiles::new();
    let fresh = store::reconcile(&spec, &other, &opts()).unwrap();
    apply(&mut other, &fresh);
    for (path, bytes) in &files {
        if path.starts_with("clusters/") {
            other.insert(path.clone(), bytes.clone());
        }
    }
    let moved = store::reconcile(
        &spec,
        &other,
        &ReconcileOptions {
            verified: cache,
            ..opts()
        },
    )
    .unwrap();
    assert_eq!(moved.writes.len(), 2 * first.leaves.len());
    assert_eq!(moved.verified.len(), first.leaves.len());
    assert!(
        moved
            .leaves
            .values()
            .all(|l| moved.verified.contains(moved.ca.info(), &l.info))
    );
}

fn pem_cert(der: &[u8]) -> String {
    use base64::Engine as _;
    let b = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

#[test]
fn leaves_are_renewed_near_expiry_or_when_sans_change() {
    let spec = lab();
    let mut files = PkiFiles::new();
    let first = store::reconcile(&spec, &files, &opts()).unwrap();
    apply(&mut files, &first);
    // 340 days later the 365-day leaves are within the 30-day window.
    let later = ReconcileOptions {
        now: NOW + Duration::days(340),
        ..opts()
    };
    let r = store::reconcile(&spec, &files, &later).unwrap();
    let renewed: Vec<_> = r
        .events
        .iter()
        .filter(|e| e.action == store::Action::Renewed)
        .collect();
    assert_eq!(renewed.len(), first.leaves.len());
    assert!(
        renewed[0].reason.starts_with("expires in 25 days"),
        "{}",
        renewed[0].reason
    );
    // A changed address re-issues only that cluster's server certificate.
    let moved = example::builtin().replace(
        "address: k8s-lab-02.mylaptop.loc",
        "address: 192.168.124.20",
    );
    let spec2 = spec::load("t", &moved).unwrap().0;
    let r = store::reconcile(&spec2, &files, &opts()).unwrap();
    let changed: Vec<_> = r
        .events
        .iter()
        .filter(|e| e.action != store::Action::Reused)
        .map(|e| {
            (
                e.cluster.clone().unwrap(),
                e.kind.unwrap(),
                e.reason.clone(),
            )
        })
        .collect();
    assert_eq!(
        changed,
        vec![(
            "k8s02".into(),
            LeafKind::ClustermeshServer,
            "subject alternative names changed".into()
        )]
    );
    // A leaf signed by another CA is replaced.
    let other = Ca::generate("other", KeyAlgorithm::EcdsaP256, 10, NOW).unwrap();
    let foreign = other
        .issue(
            &LeafRequest {
                common_name: "admin-k8s01".into(),
                dns_names: vec!["localhost".into()],
                ip_addresses: vec![],
            },
            KeyAlgorithm::EcdsaP256,
            365,
            NOW,
        )
        .unwrap();
    let (c, k) = leaf_paths("k8s01", LeafKind::ClustermeshAdmin);
    files.insert(c, foreign.cert_pem.into_bytes());
    files.insert(k, foreign.key.pem().as_bytes().to_vec());
    let r = store::reconcile(&spec, &files, &opts()).unwrap();
    let e = r
        .events
        .iter()
        .find(|e| {
            e.kind == Some(LeafKind::ClustermeshAdmin) && e.cluster.as_deref() == Some("k8s01")
        })
        .unwrap();
    assert_eq!(
        (e.action, e.reason.as_str()),
        (store::Action::Renewed, "signed by a different CA")
    );
}

#[test]
fn import_accepts_pkcs1_rsa_and_sec1_ec_and_rejects_mismatches() {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::pkcs8::DecodePrivateKey;
    // An RSA CA whose key is stored PKCS#1, like the article's and Helm's genCA.
    let ca = Ca::generate("Cilium LAB CA", KeyAlgorithm::Rsa2048, 3650, NOW).unwrap();
    let rsa_key = rsa::PrivateKey::from_pkcs8_pem(ca.key().pem()).unwrap();
    let pkcs1 = rsa_key
        .to_pkcs1_pem(rsa::pkcs8::LineEnding::LF)
        .unwrap()
        .to_string();
    assert!(pkcs1.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    let loaded = Ca::load(ca.cert_pem(), &pkcs1, NOW).unwrap();
    assert_eq!(loaded.info().sha256, ca.info().sha256);
    assert_eq!(loaded.key().algorithm_name(), "rsa-2048");
    // The imported CA issues leaves that verify.
    let leaf = loaded
        .issue(
            &LeafRequest {
                common_name: "x".into(),
                dns_names: vec!["x.example".into()],
                ip_addresses: vec![],
            },
            KeyAlgorithm::EcdsaP256,
            30,
            NOW,
        )
        .unwrap();
    verify(
        loaded.info(),
        &CertInfo::from_pem(&leaf.cert_pem).unwrap(),
        webpki::KeyUsage::server_auth(),
        NOW,
        Some("x.example"),
    )
    .unwrap();

    // SEC1 EC key.
    let ec = Ca::generate("ec", KeyAlgorithm::EcdsaP256, 10, NOW).unwrap();
    let sk = p256::SecretKey::from_pkcs8_pem(ec.key().pem()).unwrap();
    let sec1 = sk
        .to_sec1_pem(p256::pkcs8::LineEnding::LF)
        .unwrap()
        .to_string();
    assert!(Ca::load(ec.cert_pem(), &sec1, NOW).is_ok());

    // Key of another CA.
    assert!(matches!(
        Ca::load(ca.cert_pem(), ec.key().pem(), NOW),
        Err(PkiError::KeyMismatch { .. })
    ));
    // A leaf is not a CA.
    assert!(matches!(
        Ca::load(&leaf.cert_pem, leaf.key.pem(), NOW),
        Err(PkiError::NotCa { .. })
    ));
    // Expired and not yet valid.
    assert!(matches!(
        Ca::load(ec.cert_pem(), ec.key().pem(), NOW + Duration::days(11)),
        Err(PkiError::Expired { .. })
    ));
    assert!(matches!(
        Ca::load(ec.cert_pem(), ec.key().pem(), NOW - Duration::days(1)),
        Err(PkiError::NotYetValid { .. })
    ));
    // Garbage.
    assert!(matches!(
        PrivateKey::from_pem("hello"),
        Err(PkiError::InvalidKey { .. })
    ));
    assert!(matches!(
        CertInfo::from_pem("hello"),
        Err(PkiError::InvalidCert { .. })
    ));
}

#[test]
fn private_keys_never_show_in_debug_output() {
    let ca = Ca::generate("x", KeyAlgorithm::EcdsaP256, 10, NOW).unwrap();
    let dbg = format!("{ca:?}");
    assert!(!dbg.contains("PRIVATE KEY"), "{dbg}");
    let body = ca.key().pem().lines().nth(1).unwrap();
    assert!(!dbg.contains(body));
}

#[test]
fn rsa_4096_setting_is_honoured() {
    let text = example::builtin().replace("keyAlgorithm: ecdsa-p256", "keyAlgorithm: rsa-2048");
    let spec = spec::load("t", &text).unwrap().0;
    let leaves = leaves_for(&spec, &spec.clusters[0]);
    assert!(!leaves.is_empty());
    let r = store::reconcile(
        &spec,
        &PkiFiles::new(),
        &ReconcileOptions {
            clusters: Some(vec!["k8s01".into()]),
            ..opts()
        },
    )
    .unwrap();
    assert_eq!(r.ca.key().algorithm_name(), "rsa-2048");
    for w in r.writes.iter().filter(|w| w.private) {
        let k = PrivateKey::from_pem(std::str::from_utf8(&w.bytes).unwrap()).unwrap();
        assert_eq!(k.algorithm_name(), "rsa-2048", "{}", w.path);
    }
}

#[test]
fn check_rules_on_an_existing_ca() {
    use cmesh_core::pki::inspect::ca_diagnostics;
    use cmesh_core::pki::store::{CA_CERT, CA_KEY};
    let spec = lab();
    let codes = |files: &PkiFiles, mode: Option<u32>, now: OffsetDateTime| -> Vec<&'static str> {
        ca_diagnostics(files, mode, "pki", now, &spec.source)
            .iter()
            .map(|d| d.code)
            .collect()
    };
    let ca = Ca::generate("x", KeyAlgorithm::EcdsaP256, 100, NOW).unwrap();
    let mut files = PkiFiles::new();
    assert!(codes(&files, None, NOW).is_empty(), "no CA: nothing to say");
    files.insert(CA_CERT.into(), ca.cert_pem().as_bytes().to_vec());
    // The certificate alone (a clone of the GitOps repository) is a warning, and the
    // certificate is still judged.
    assert_eq!(codes(&files, None, NOW), vec!["CM516"]);
    assert_eq!(
        codes(&files, None, NOW + Duration::days(101)),
        vec!["CM516", "CM512"]
    );
    let mut key_only = PkiFiles::new();
    key_only.insert(CA_KEY.into(), ca.key().pem().as_bytes().to_vec());
    assert_eq!(codes(&key_only, None, NOW), vec!["CM510"]);
    files.insert(CA_KEY.into(), ca.key().pem().as_bytes().to_vec());
    assert!(codes(&files, Some(0o600), NOW).is_empty());
    assert_eq!(codes(&files, Some(0o644), NOW), vec!["CM515"]);
    assert_eq!(codes(&files, None, NOW + Duration::days(80)), vec!["CM513"]);
    // 90 days ahead: 95 days left is quiet, 85 days left warns.
    assert!(codes(&files, Some(0o600), NOW + Duration::days(5)).is_empty());
    assert_eq!(codes(&files, None, NOW + Duration::days(15)), vec!["CM513"]);
    assert_eq!(
        codes(&files, None, NOW + Duration::days(101)),
        vec!["CM512"]
    );
    let other = Ca::generate("y", KeyAlgorithm::EcdsaP256, 100, NOW).unwrap();
    files.insert(CA_KEY.into(), other.key().pem().as_bytes().to_vec());
    assert_eq!(codes(&files, None, NOW), vec!["CM514"]);
    let leaf = ca
        .issue(
            &LeafRequest {
                common_name: "l".into(),
                dns_names: vec![],
                ip_addresses: vec![],
            },
            KeyAlgorithm::EcdsaP256,
            365,
            NOW,
        )
        .unwrap();
    files.insert(CA_CERT.into(), leaf.cert_pem.as_bytes().to_vec());
    files.insert(CA_KEY.into(), leaf.key.pem().as_bytes().to_vec());
    assert_eq!(codes(&files, None, NOW), vec!["CM511"]);
    files.insert(CA_CERT.into(), b"garbage".to_vec());
    assert_eq!(codes(&files, None, NOW), vec!["CM510"]);
    // Every diagnostic points at pki.dir in mesh.yaml and says how to fix it.
    for d in ca_diagnostics(&files, Some(0o644), "pki", NOW, &spec.source) {
        assert!(d.span.is_some() && d.help.is_some());
    }
}

/// Issue 17: a CA with less time left than `certValidityDays` issues leaves that end with it,
/// and later renders keep them (no endless "outlives the CA" re-issue), even inside the
/// renewal window, where a new leaf could not last longer anyway.
#[test]
fn regression_17_leaves_end_with_a_short_lived_ca_and_stay_stable() {
    let spec = lab();
    // A CA made 165 days before NOW with a 365-day life: 200 days left, less than the
    // leaves' 365.
    let ca = Ca::generate(
        "short CA",
        KeyAlgorithm::EcdsaP256,
        365,
        NOW - Duration::days(165),
    )
    .unwrap();
    let ca_end = ca.info().not_after;
    let mut files = PkiFiles::new();
    files.insert("ca.crt".into(), ca.cert_pem().as_bytes().to_vec());
    files.insert("ca.key".into(), ca.key().pem().as_bytes().to_vec());
    let first = store::reconcile(&spec, &files, &opts()).unwrap();
    assert!(!first.leaves.is_empty());
    for m in first.leaves.values() {
        assert_eq!(m.info.not_after, ca_end, "leaf capped at the CA's expiry");
        verify(
            first.ca.info(),
            &m.info,
            webpki::KeyUsage::server_auth(),
            NOW,
            None,
        )
        .unwrap();
    }
    apply(&mut files, &first);
    // The next day, and again 190 days on (10 days left, inside the 30-day window): nothing
    // is re-issued, so the rendered tree stays byte-identical.
    for later in [Duration::days(1), Duration::days(190)] {
        let r = store::reconcile(
            &spec,
            &files,
            &ReconcileOptions {
                now: NOW + later,
                ..opts()
            },
        )
        .unwrap();
        assert!(
            r.writes.is_empty(),
            "re-issued after {later}: {:?}",
            r.events
        );
        assert!(
            r.events
                .iter()
                .filter(|e| e.kind.is_some())
                .all(|e| e.reason.ends_with("until the CA expires")),
            "{:?}",
            r.events
        );
        for (k, m) in &r.leaves {
            assert_eq!(m.cert_pem, first.leaves[k].cert_pem);
        }
    }
}
