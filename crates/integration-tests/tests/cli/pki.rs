//! `cmesh pki`.

use integration_tests::cli;

use crate::{assert_code, cmesh, mode};

#[test]
fn init_show_and_never_replace() {
    let d = cli::scratch();
    let p = d.path();
    assert_code(&cmesh(p, &["init"]), 0);
    let r = cmesh(p, &["pki", "init"]);
    assert_code(&r, 0);
    assert!(
        r.stdout.contains("created CA `CN=cmesh homelab CA`"),
        "{}",
        r.stdout
    );
    let r = cmesh(p, &["pki", "init"]);
    assert_code(&r, 5);
    assert!(
        r.stderr.contains("already holds the mesh CA") && r.stderr.contains("--force"),
        "{}",
        r.stderr
    );
    assert_code(&cmesh(p, &["render"]), 0);
    let r = cmesh(p, &["pki", "show"]);
    assert_code(&r, 0);
    insta::assert_snapshot!("pki_show", r.snapshot(p));
    assert!(!r.stdout.contains("PRIVATE"));
    let r = cmesh(p, &["pki", "show", "-o", "json"]);
    assert_code(&r, 0);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["ca"]["commonName"], "cmesh homelab CA");
    assert_eq!(v["certificates"].as_array().unwrap().len(), 12);
    assert!(
        v["renderedFiles"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f.as_str().unwrap().ends_with("k8s01/secrets.yaml"))
    );
    assert!(!r.stdout.contains("PRIVATE KEY"));
}

#[test]
fn import_the_articles_kind_of_ca() {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::pkcs8::DecodePrivateKey;
    let d = cli::scratch();
    let p = d.path();
    assert_code(&cmesh(p, &["init"]), 0);
    // An RSA CA with a PKCS#1 key, as the article's playbook (and Helm's genCA) write it.
    let now = time::OffsetDateTime::now_utc();
    let ca = cmesh_core::pki::Ca::generate(
        "Cilium LAB CA",
        cmesh_core::spec::KeyAlgorithm::Rsa2048,
        3650,
        now,
    )
    .unwrap();
    let pkcs1 = rsa::PrivateKey::from_pkcs8_pem(ca.key().pem())
        .unwrap()
        .to_pkcs1_pem(rsa::pkcs8::LineEnding::LF)
        .unwrap();
    std::fs::write(p.join("cilium-ca-certificate.pem"), ca.cert_pem()).unwrap();
    std::fs::write(p.join("cilium-ca-certificate.key"), pkcs1.as_bytes()).unwrap();
    let other =
        cmesh_core::pki::Ca::generate("other", cmesh_core::spec::KeyAlgorithm::EcdsaP256, 10, now)
            .unwrap();
    std::fs::write(p.join("other.key"), other.key().pem()).unwrap();

    // A key that does not match is refused and nothing is written.
    let r = cmesh(
        p,
        &[
            "pki",
            "import",
            "--cert",
            "cilium-ca-certificate.pem",
            "--key",
            "other.key",
        ],
    );
    assert_code(&r, 5);
    assert!(
        r.stderr.contains("does not belong to certificate"),
        "{}",
        r.stderr
    );
    assert!(!p.join("pki/ca.crt").exists());

    let r = cmesh(
        p,
        &[
            "pki",
            "import",
            "--cert",
            "cilium-ca-certificate.pem",
            "--key",
            "cilium-ca-certificate.key",
        ],
    );
    assert_code(&r, 0);
    assert!(
        r.stdout
            .contains("imported CA `CN=Cilium LAB CA` (rsa-2048, key converted to PKCS#8)"),
        "{}",
        r.stdout
    );
    assert_eq!(mode(&p.join("pki/ca.key")), 0o600);
    // Rendering uses it; the leaves are signed by it.
    assert_code(&cmesh(p, &["render"]), 0);
    let show = cmesh(p, &["pki", "show"]);
    assert!(
        show.stdout.contains("subject     CN=Cilium LAB CA"),
        "{}",
        show.stdout
    );
    assert!(!show.stdout.contains("other-ca"));
    // Importing another CA needs --force, and then every leaf is re-issued.
    std::fs::write(p.join("other.crt"), other.cert_pem()).unwrap();
    let r = cmesh(
        p,
        &["pki", "import", "--cert", "other.crt", "--key", "other.key"],
    );
    assert_code(&r, 5);
    assert!(
        r.stderr.contains("already holds a different CA"),
        "{}",
        r.stderr
    );
    assert_code(
        &cmesh(
            p,
            &[
                "pki",
                "import",
                "--cert",
                "other.crt",
                "--key",
                "other.key",
                "--force",
            ],
        ),
        0,
    );
    let r = cmesh(p, &["render"]);
    assert_code(&r, 0);
    assert!(
        r.stdout.contains("renewed for k8s01") && r.stdout.contains("signed by a different CA"),
        "{}",
        r.stdout
    );
}

#[test]
fn renew() {
    let d = cli::scratch();
    let p = d.path();
    assert_code(&cmesh(p, &["init"]), 0);
    let r = cmesh(p, &["pki", "renew"]);
    assert_code(&r, 5);
    assert!(r.stderr.contains("holds no CA"), "{}", r.stderr);
    assert_code(&cmesh(p, &["render"]), 0);
    let r = cmesh(p, &["pki", "renew"]);
    assert_code(&r, 0);
    assert!(
        r.stdout
            .contains("nothing to renew: no certificate expires within 30d"),
        "{}",
        r.stdout
    );
    // Leaves are valid for 365 days: a 400-day window renews them all.
    let r = cmesh(
        p,
        &[
            "pki",
            "renew",
            "--renew-before",
            "400d",
            "--cluster",
            "k8s02",
        ],
    );
    assert_code(&r, 0);
    assert!(
        r.stdout.contains("renewed for k8s02") && !r.stdout.contains("renewed for k8s01"),
        "{}",
        r.stdout
    );
    let r = cmesh(p, &["pki", "renew", "--cluster", "nope"]);
    assert_code(&r, 2);
    let r = cmesh(p, &["pki", "renew", "--renew-before", "soon"]);
    assert_code(&r, 2);
    let r = cmesh(p, &["render", "--check"]);
    assert_code(&r, 6);
}
