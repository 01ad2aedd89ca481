//! Faults through the real path: each breaks a healthy mesh the way it breaks in the field (a
//! certificate replaced, a peer on another CA, a cluster ID changed by hand, a peer left out of
//! one cluster's configuration, a cluster's etcd down). Cilium itself must then report the peer
//! not ready (KVStoreMesh where it runs, and the real agents behind it, or the agents alone
//! where it does not), and `cmesh status` and `cmesh probe` must name the cause. Each fault is
//! undone afterwards and the mesh proven healthy again before the next.

use std::net::IpAddr;
use std::time::Duration;

use cmesh_core::pki::Ca;
use cmesh_core::spec::KeyAlgorithm;
use integration_tests::cli::Run;
use integration_tests::etcd::issue;
use integration_tests::mesh::{Mesh, check};
use serde_json::Value;
use time::OffsetDateTime;

use super::{bin, code, healthy_again, until_fails};

/// A Secret as it was: cluster index, name, keys.
pub(crate) type Saved = (usize, String, Vec<(String, String)>);

/// Secret `name` of cluster `i` as it is now, to put back with [`restore`].
pub(crate) fn save(m: &Mesh, i: usize, name: &str) -> Saved {
    (i, name.to_owned(), m.secret(i, name))
}

pub(crate) fn restore(m: &Mesh, saved: &[Saved]) {
    for (i, name, data) in saved {
        let data: Vec<(&str, &str)> = data.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        m.patch_secret(*i, name, &data);
    }
}

/// Restarts `cluster`'s clustermesh-apiserver (as a rollout or a rescheduled pod would) and
/// waits until its KVStoreMesh itself reports `peer` not ready, naming `words`: a fresh
/// KVStoreMesh has no connection from before the fault to lean on.
#[track_caller]
pub(crate) fn kvstoremesh_itself_fails(m: &Mesh, i: usize, peer: &str, words: &[&str]) -> Value {
    m.restart_clustermesh_apiserver(i);
    let cluster = integration_tests::lab::name(i);
    let mut all = vec![peer];
    all.extend_from_slice(words);
    let v = until_fails(m, &cluster, "kvstoremesh", &all);
    let (_, why) = check(&v, &cluster, "kvstoremesh");
    assert!(!why.contains("still says ready"), "{why}");
    // The real agents behind it (which read remote state from their local KVStoreMesh) now
    // lack the peer too: a fresh KVStoreMesh never synced it.
    let v = until_fails(
        m,
        &cluster,
        "agents-clustermesh",
        &[peer.split(' ').next().unwrap()],
    );
    let (_, why) = check(&v, &cluster, "agents-clustermesh");
    eprintln!("{cluster} agents-clustermesh: {why}");
    v
}

/// `probe --cluster TO --from FROM -o json` (optionally with more flags).
pub(crate) fn probe(m: &Mesh, to: &str, from: &str, extra: &[&str]) -> (Run, Value) {
    let mut args = vec![
        "probe",
        "--cluster",
        to,
        "--from",
        from,
        "--timeout",
        "5s",
        "-o",
        "json",
    ];
    args.extend_from_slice(extra);
    let r = m.cmesh(bin(), &args);
    let v: Value = serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", r.stdout, r.stderr));
    assert!(!r.stdout.contains("PRIVATE KEY"), "a key in the output");
    (r, v)
}

pub(crate) fn diagnosis(v: &Value) -> (String, String) {
    let d = &v["probes"][0]["diagnosis"];
    (
        d["stage"].as_str().unwrap_or("none").to_owned(),
        d["cause"].as_str().unwrap_or("").to_owned(),
    )
}

pub(crate) fn mesh_ca(m: &Mesh) -> Ca {
    let p = m.dir().join("pki");
    Ca::load(
        &std::fs::read_to_string(p.join("ca.crt")).unwrap(),
        &std::fs::read_to_string(p.join("ca.key")).unwrap(),
        OffsetDateTime::now_utc(),
    )
    .unwrap()
}

pub(crate) fn a_server_certificate_without_the_dialled_address(m: &Mesh) {
    let saved = [save(m, 1, "clustermesh-apiserver-server-cert")];
    // k8s02's clustermesh-apiserver gets a certificate from the mesh CA that lacks its node
    // address (as after a hand-made certificate, or a render before the address changed).
    let ca = mesh_ca(m);
    let cert = issue(
        &ca,
        "clustermesh-apiserver.kube-system.svc",
        &["clustermesh-apiserver.kube-system.svc", "*.mesh.cilium.io"],
        &["127.0.0.1".parse::<IpAddr>().unwrap()],
        OffsetDateTime::now_utc(),
        30,
    );
    m.patch_secret(
        1,
        "clustermesh-apiserver-server-cert",
        &[("tls.crt", &cert.cert_pem), ("tls.key", cert.key.pem())],
    );
    m.restart_clustermesh_apiserver(1);
    let ip = m.lab.clusters[1].node_ip().to_string();
    // KVStoreMesh keeps its established connection and still says ready; a fresh dial does not.
    let v = until_fails(
        m,
        "k8s01",
        "kvstoremesh",
        &["k8s02 fails a fresh dial", "x509", &ip],
    );
    assert_eq!(check(&v, "k8s02", "kvstoremesh").0, "pass", "{v}");
    kvstoremesh_itself_fails(m, 0, "k8s02 not connected", &["x509"]);
    let (r, v) = probe(m, "k8s02", "k8s01", &[]);
    assert_eq!(r.code, 1, "{v:#}");
    let (stage, cause) = diagnosis(&v);
    assert_eq!(stage, "certificate", "{v:#}");
    assert!(cause.contains(&ip), "{cause}");
    restore(m, &saved);
    m.restart_clustermesh_apiserver(1);
    m.restart_clustermesh_apiserver(0);
    healthy_again(m);
}

pub(crate) fn a_peer_from_another_ca(m: &Mesh) {
    let saved = [
        save(m, 1, "cilium-ca"),
        save(m, 1, "clustermesh-apiserver-server-cert"),
        save(m, 1, "clustermesh-apiserver-remote-cert"),
        save(m, 1, "clustermesh-apiserver-admin-cert"),
    ];
    // k8s02 runs on a CA of its own: its cilium-ca and every clustermesh certificate.
    let now = OffsetDateTime::now_utc();
    let other = Ca::generate("Cilium CA", KeyAlgorithm::EcdsaP256, 10, now).unwrap();
    let ip: IpAddr = m.lab.clusters[1].node_ip().into();
    let server = issue(
        &other,
        "clustermesh-apiserver.kube-system.svc",
        &["clustermesh-apiserver.kube-system.svc", "*.mesh.cilium.io"],
        &["127.0.0.1".parse().unwrap(), ip],
        now,
        30,
    );
    let remote = issue(&other, "remote-k8s02", &[], &[], now, 30);
    let admin = issue(&other, "admin-k8s02", &[], &[], now, 30);
    let ca_pem = other.cert_pem().to_owned();
    m.patch_secret(1, "cilium-ca", &[("ca.crt", &ca_pem)]);
    for (secret, c) in [
        ("clustermesh-apiserver-server-cert", &server),
        ("clustermesh-apiserver-remote-cert", &remote),
        ("clustermesh-apiserver-admin-cert", &admin),
    ] {
        m.patch_secret(
            1,
            secret,
            &[
                ("tls.crt", &c.cert_pem),
                ("tls.key", c.key.pem()),
                ("ca.crt", &ca_pem),
            ],
        );
    }
    m.restart_clustermesh_apiserver(1);
    let v = until_fails(m, "k8s01", "kvstoremesh", &["k8s02", "unknown authority"]);
    let (o, why) = check(&v, "k8s02", "ca");
    assert_eq!(o, "fail");
    assert!(why.contains("not the mesh CA"), "{why}");
    // `trust` names both directions of the mismatch: who does not trust which certificate,
    // its issuer, and what the refusing cluster trusts.
    let (o, why) = check(&v, "k8s01", "trust");
    assert_eq!(o, "fail", "{why}");
    for words in [
        "k8s01 does not trust k8s02's clustermesh-apiserver certificate, issued by `CN=Cilium CA`",
        "k8s02 does not trust the client certificate k8s01 presents (clustermesh-apiserver-remote-cert)",
        "k8s02 trusts `CN=Cilium CA`",
    ] {
        assert!(why.contains(words), "{words:?} not in {why}");
    }
    // k8s02's new KVStoreMesh trusts neither k8s01's server nor is trusted by it.
    until_fails(m, "k8s02", "kvstoremesh", &["k8s01 not connected"]);
    kvstoremesh_itself_fails(m, 0, "k8s02 not connected", &["unknown authority"]);
    let (r, v) = probe(m, "k8s02", "k8s01", &[]);
    assert_eq!(r.code, 1, "{v:#}");
    let (stage, cause) = diagnosis(&v);
    assert_eq!(stage, "certificate", "{v:#}");
    assert!(cause.contains("unknown authority"), "{cause}");
    restore(m, &saved);
    m.restart_clustermesh_apiserver(1);
    m.restart_clustermesh_apiserver(0);
    healthy_again(m);
}

pub(crate) fn a_cluster_id_changed_by_hand(m: &Mesh) {
    // Someone upgrades k8s02 with cluster.id 7; its clustermesh-apiserver now publishes 7.
    let chart = m.cilium.chart();
    let out = m.helm(
        1,
        &[
            "upgrade",
            "cilium",
            &chart.display().to_string(),
            "--namespace",
            "kube-system",
            "--reuse-values",
            "--set",
            "cluster.id=7",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    m.restart_clustermesh_apiserver(1);
    let v = until_fails(
        m,
        "k8s01",
        "kvstoremesh",
        &["k8s02", "cluster ID 7, mesh.yaml says 2"],
    );
    let (_, why) = check(&v, "k8s01", "kvstoremesh");
    eprintln!("cluster ID fault, k8s01 kvstoremesh: {why}");
    let (o, why) = check(&v, "k8s02", "drift");
    assert_eq!(o, "warn");
    assert!(why.contains("cluster.id"), "{why}");
    let (r, v) = probe(m, "k8s02", "k8s01", &[]);
    assert_eq!(r.code, 1, "{v:#}");
    let (stage, cause) = diagnosis(&v);
    assert_eq!(stage, "cluster-config", "{v:#}");
    assert!(cause.contains('7'), "{cause}");
    // apply sees the drift and upgrades k8s02 back to mesh.yaml's ID.
    code(m, &m.apply(bin(), &["--cluster", "k8s02"]), 0);
    m.restart_clustermesh_apiserver(1);
    healthy_again(m);
}

pub(crate) fn a_peer_missing_from_one_clusters_list(m: &Mesh) {
    // k8s03 is applied from an older mesh.yaml that does not know k8s01: its chart renders
    // neither the peer nor k8s01's etcd user.
    let text = std::fs::read_to_string(m.dir().join("mesh.yaml")).unwrap();
    let start = text.find("  - name: k8s01\n").unwrap();
    let end = text.find("  - name: k8s02\n").unwrap();
    let old = format!("{}{}", &text[..start], &text[end..]);
    std::fs::write(m.dir().join("old-mesh.yaml"), old).unwrap();
    let chart = m.cilium.chart().display().to_string();
    let r = m.cmesh(
        bin(),
        &[
            "apply",
            "--yes",
            "-f",
            "old-mesh.yaml",
            "--cluster",
            "k8s03",
            "--chart",
            &chart,
            "--phase",
            "mesh",
            "--timeout",
            "120s",
            "--poll",
            "200ms",
        ],
    );
    code(m, &r, 0);
    // Without KVStoreMesh each agent dials the peers its cilium-clustermesh Secret lists:
    // k8s03's agents no longer know k8s01, ...
    let v = until_fails(m, "k8s03", "agents-clustermesh", &["k8s01 not configured"]);
    let (o, why) = check(&v, "k8s03", "peers");
    assert_eq!(o, "fail");
    assert!(why.contains("k8s01 missing"), "{why}");
    // ... and once k8s03's clustermesh-apiserver restarts (a rollout, a rescheduled pod: its
    // etcdinit creates the users of the peers it is configured with), k8s01's agents can no
    // longer read k8s03's etcd (no remote-k8s01 user there), which they say themselves.
    m.restart_clustermesh_apiserver(2);
    let v = until_fails(m, "k8s01", "agents-clustermesh", &["k8s03 not-ready"]);
    let (_, why) = check(&v, "k8s01", "agents-clustermesh");
    eprintln!("missing peer fault, k8s01 agents-clustermesh: {why}");
    assert!(!why.contains("k8s02"), "{why}");
    assert_eq!(check(&v, "k8s02", "agents-clustermesh").0, "pass", "{v}");
    let (r, v) = probe(m, "k8s03", "k8s01", &[]);
    assert_eq!(r.code, 1, "{v:#}");
    let (stage, cause) = diagnosis(&v);
    assert!(
        stage == "cluster-config" || stage == "etcd",
        "{stage}: {cause}\n{v:#}"
    );
    assert!(
        cause.contains("remote-k8s01") || cause.contains("k8s01"),
        "{cause}"
    );
    // Applying the current mesh.yaml repairs it.
    code(m, &m.apply(bin(), &["--cluster", "k8s03"]), 0);
    let (r, _) = m.status_wait(bin(), "90s");
    code(m, &r, 0);
}

pub(crate) fn a_clusters_etcd_down_then_back(m: &Mesh) {
    m.lab.kubelet(1).stop_container("etcd");
    let port = integration_tests::mesh::node_port(1).to_string();
    let v = until_fails(m, "k8s01", "kvstoremesh", &["k8s02", "refused", &port]);
    let (_, why) = check(&v, "k8s01", "kvstoremesh");
    eprintln!("etcd down, k8s01 kvstoremesh: {why}");
    let (r, v) = probe(m, "k8s02", "k8s01", &[]);
    assert_eq!(r.code, 1, "{v:#}");
    let (stage, cause) = diagnosis(&v);
    assert_eq!(stage, "tcp", "{v:#}");
    assert!(cause.contains("refused"), "{cause}");
    // `status --wait` waits for it to come back.
    let kubelet = m.lab.kubelet(1);
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_secs(3));
            kubelet.start_container("etcd");
        });
        let (r, _) = m.status_wait(bin(), "90s");
        code(m, &r, 0);
        assert!(r.stderr.contains("waiting"), "{}", r.stderr);
    });
}

/// `probe --certs-from-cluster`: the identity and trusted CA come from the dialling cluster's
/// `clustermesh-apiserver-remote-cert` Secret (what its KVStoreMesh uses), read from the real
/// API server, not from pki.dir.
pub(crate) fn probe_with_the_certificates_from_the_cluster(m: &Mesh) {
    let (r, v) = probe(m, "k8s02", "k8s01", &["--certs-from-cluster"]);
    code(m, &r, 0);
    assert!(
        v.to_string().contains("clustermesh-apiserver-remote-cert"),
        "{v:#}"
    );
    // k8s01's Secret replaced by an identity from another CA: with it the probe is refused,
    // while pki.dir's identity still gets in (so the flag really read the Secret).
    let now = OffsetDateTime::now_utc();
    let other = Ca::generate("Cilium CA", KeyAlgorithm::EcdsaP256, 100, now).unwrap();
    let client = issue(&other, "remote-k8s01", &[], &[], now, 30);
    m.patch_secret(
        0,
        "clustermesh-apiserver-remote-cert",
        &[
            ("tls.crt", &client.cert_pem),
            ("tls.key", client.key.pem()),
            ("ca.crt", other.cert_pem()),
        ],
    );
    let (r, v) = probe(m, "k8s02", "k8s01", &["--certs-from-cluster"]);
    code(m, &r, 1);
    assert_eq!(diagnosis(&v).0, "certificate", "{v:#}");
    let (r, _) = probe(m, "k8s02", "k8s01", &[]);
    code(m, &r, 0);
    // Without the Secret the flag says so, naming the cluster.
    m.kube(0, async |c| {
        let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
            kube::Api::namespaced(c, "kube-system");
        api.delete("clustermesh-apiserver-remote-cert", &Default::default())
            .await
            .map(|_| ())
    });
    let r = m.cmesh(
        bin(),
        &[
            "probe",
            "--cluster",
            "k8s02",
            "--from",
            "k8s01",
            "--certs-from-cluster",
        ],
    );
    code(m, &r, 7);
    assert!(
        r.stderr
            .contains("k8s01: Secret kube-system/clustermesh-apiserver-remote-cert not found"),
        "{}",
        r.stderr
    );
}
