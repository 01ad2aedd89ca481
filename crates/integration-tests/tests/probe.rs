//! `cmesh probe` against real etcd servers with mutual TLS, one per failure class. Each mesh
//! is rendered by cmesh (so the CA and certificates are cmesh's own), then an etcd is started
//! with the certificate the scenario needs, and the probe's diagnosis is checked.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use cmesh_core::pki::Ca;
use cmesh_core::spec::KeyAlgorithm;
use integration_tests::cli::{self, Run};
use integration_tests::etcd::{Endpoint, Etcd, ServerTls, issue};
use serde_json::Value;
use time::{Duration, OffsetDateTime};

fn cmesh(dir: &Path, args: &[&str]) -> Run {
    cli::run(
        Path::new(env!("CARGO_BIN_EXE_cmesh-under-test")),
        dir,
        args,
        &[],
    )
}

struct Lab {
    dir: tempfile::TempDir,
    eps: [Endpoint; 2],
    ca: Ca,
}

fn read(p: PathBuf) -> String {
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

impl Lab {
    /// Two clusters whose endpoints are reserved loopback addresses, rendered by cmesh.
    fn new(version: &str, k8s02_address: Option<&str>) -> Lab {
        let dir = cli::scratch();
        let eps = [Endpoint::reserve(), Endpoint::reserve()];
        let addr2 = k8s02_address.map_or_else(|| eps[1].ip.to_string(), str::to_owned);
        let mesh = format!(
            "name: probe
cilium:
  version: \"{version}\"
clustermesh:
  serviceType: LoadBalancer
  authMode: cluster
clusters:
  - name: k8s01
    id: 1
    podCIDR: 10.1.0.0/16
    serviceCIDR: 10.101.0.0/16
    clustermesh: {{address: {}, port: {}}}
  - name: k8s02
    id: 2
    podCIDR: 10.2.0.0/16
    serviceCIDR: 10.102.0.0/16
    clustermesh: {{address: {addr2}, port: {}}}
",
            eps[0].ip, eps[0].port, eps[1].port
        );
        std::fs::write(dir.path().join("mesh.yaml"), mesh).unwrap();
        let r = cmesh(dir.path(), &["render"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        let p = dir.path().join("pki");
        let ca = Ca::load(
            &read(p.join("ca.crt")),
            &read(p.join("ca.key")),
            OffsetDateTime::now_utc(),
        )
        .unwrap();
        Lab { dir, eps, ca }
    }

    /// k8s02's server as cmesh issued it, trusting the mesh CA for clients.
    fn k8s02_tls(&self) -> ServerTls<'_> {
        let p = self.dir.path().join("pki/clusters/k8s02");
        ServerTls {
            cert_pem: read(p.join("clustermesh-server.crt")),
            key_pem: read(p.join("clustermesh-server.key")),
            client_ca: &self.ca,
        }
    }

    /// Probes k8s02 as k8s01, returning the run and the JSON report.
    fn probe_k8s02(&self, timeout: &str) -> (Run, Value) {
        let r = cmesh(
            self.dir.path(),
            &[
                "probe",
                "--cluster",
                "k8s02",
                "--from",
                "k8s01",
                "--timeout",
                timeout,
                "-o",
                "json",
            ],
        );
        let v: Value = serde_json::from_str(&r.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}\n{}", r.stdout, r.stderr));
        assert!(!r.stdout.contains("PRIVATE KEY"), "a key in the output");
        (r, v)
    }

    fn table_k8s02(&self) -> Run {
        cmesh(
            self.dir.path(),
            &[
                "probe",
                "--cluster",
                "k8s02",
                "--from",
                "k8s01",
                "--timeout",
                "3s",
            ],
        )
    }

    /// With CMESH_PROBE_DOCS=DIR, saves the human output of this scenario for docs/probe.md.
    fn record(&self, name: &str) {
        if let Some(dir) = std::env::var_os("CMESH_PROBE_DOCS") {
            let r = self.table_k8s02();
            std::fs::write(
                Path::new(&dir).join(format!("{name}.txt")),
                format!(
                    "$ cmesh probe --cluster k8s02 --from k8s01\n{}(exit {})\n",
                    r.stdout, r.code
                ),
            )
            .unwrap();
        }
    }
}

fn stage<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["probes"][0]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap()
}

fn diagnosis(v: &Value) -> (&str, &str, &str) {
    let d = &v["probes"][0]["diagnosis"];
    (
        d["stage"].as_str().unwrap_or("none"),
        d["cause"].as_str().unwrap_or(""),
        d["fix"].as_str().unwrap_or(""),
    )
}

#[test]
fn healthy_endpoint_with_cluster_config() {
    let lab = Lab::new("1.16.19", None);
    let Some(etcd) = Etcd::start_at(lab.eps[1], lab.k8s02_tls()) else {
        return;
    };
    etcd.put(
        "cilium/cluster-config/k8s02",
        r#"{"id":2,"capabilities":{"maxConnectedClusters":255}}"#,
    );
    let (r, v) = lab.probe_k8s02("5s");
    lab.record("healthy");
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert_eq!(v["ok"], true);
    for s in ["tcp", "tls", "certificate", "etcd", "cluster-config"] {
        assert_eq!(stage(&v, s)["outcome"], "ok", "{s}: {}", stage(&v, s));
    }
    assert!(
        stage(&v, "etcd")["detail"]
            .as_str()
            .unwrap()
            .starts_with("etcd 3."),
        "{}",
        stage(&v, "etcd")
    );
    assert_eq!(
        stage(&v, "cluster-config")["detail"],
        "cilium/cluster-config/k8s02: id 2"
    );
    assert!(
        stage(&v, "tls")["detail"]
            .as_str()
            .unwrap()
            .contains("CN=remote-k8s01")
    );
    let t = lab.table_k8s02();
    assert_eq!(t.code, 0);
    assert!(
        t.stdout.contains("1 of 1 endpoint probes passed"),
        "{}",
        t.stdout
    );
}

#[test]
fn server_certificate_without_the_dialled_name() {
    let lab = Lab::new("1.19.6", None);
    // What the chart issues without extraIpAddresses: its defaults only (cilium#22872).
    let now = OffsetDateTime::now_utc();
    let cert = issue(
        &lab.ca,
        "clustermesh-apiserver.cilium.io",
        &[
            "clustermesh-apiserver.cilium.io",
            "*.mesh.cilium.io",
            "clustermesh-apiserver.kube-system.svc",
        ],
        &["127.0.0.1".parse().unwrap()],
        now,
        30,
    );
    let tls = ServerTls::issued(&cert, &lab.ca);
    let Some(_etcd) = Etcd::start_at(lab.eps[1], tls) else {
        return;
    };
    let (r, v) = lab.probe_k8s02("5s");
    lab.record("name-mismatch");
    assert_eq!(r.code, 1);
    let (st, cause, fix) = diagnosis(&v);
    assert_eq!(st, "certificate");
    assert!(cause.contains("valid for [clustermesh-apiserver.cilium.io, *.mesh.cilium.io, clustermesh-apiserver.kube-system.svc, 127.0.0.1]"), "{cause}");
    assert!(
        cause.contains(&format!("not for `{}`", lab.eps[1].ip)),
        "{cause}"
    );
    assert!(
        fix.contains("cmesh render") && fix.contains("cmesh apply"),
        "{fix}"
    );
    assert_eq!(stage(&v, "tcp")["outcome"], "ok");
    assert_eq!(stage(&v, "etcd")["outcome"], "skip");
}

#[test]
fn server_from_another_ca() {
    let lab = Lab::new("1.20.0", None);
    let other = Ca::generate(
        "Cilium CA",
        KeyAlgorithm::EcdsaP256,
        100,
        OffsetDateTime::now_utc(),
    )
    .unwrap();
    let ip: IpAddr = lab.eps[1].ip.into();
    let cert = issue(
        &other,
        "clustermesh-apiserver.kube-system.svc",
        &["*.mesh.cilium.io"],
        &[ip],
        OffsetDateTime::now_utc(),
        30,
    );
    // The server still trusts the mesh CA for clients: only its own certificate is foreign.
    let tls = ServerTls::issued(&cert, &lab.ca);
    let Some(_etcd) = Etcd::start_at(lab.eps[1], tls) else {
        return;
    };
    let (r, v) = lab.probe_k8s02("5s");
    lab.record("unknown-authority");
    assert_eq!(r.code, 1);
    let (st, cause, fix) = diagnosis(&v);
    assert_eq!(st, "certificate");
    assert!(cause.contains("signed by an unknown authority"), "{cause}");
    assert!(
        cause.contains("its issuer is `CN=Cilium CA`")
            && cause.contains(&other.info().subject_key_id),
        "{cause}"
    );
    assert!(
        cause.contains(&lab.ca.info().sha256) && cause.contains("CN=cmesh probe CA"),
        "{cause}"
    );
    assert!(fix.contains("cmesh pki import"), "{fix}");
}

/// Issue 17: what a hostile endpoint puts in its certificate (here ESC ] 0 ; … BEL, which
/// retitles a terminal, and ESC [ 2 J, which clears it) is shown as text, never sent raw.
#[test]
fn regression_17_hostile_certificate_subjects_are_escaped() {
    let lab = Lab::new("1.20.0", None);
    let other = Ca::generate(
        "Evil\u{1b}]0;PWNED\u{7} CA",
        KeyAlgorithm::EcdsaP256,
        100,
        OffsetDateTime::now_utc(),
    )
    .unwrap();
    let ip: IpAddr = lab.eps[1].ip.into();
    let cert = issue(
        &other,
        "srv\u{1b}[2J",
        &["*.mesh.cilium.io"],
        &[ip],
        OffsetDateTime::now_utc(),
        30,
    );
    let Some(_etcd) = Etcd::start_at(lab.eps[1], ServerTls::issued(&cert, &lab.ca)) else {
        return;
    };
    let r = cmesh(
        lab.dir.path(),
        &[
            "probe",
            "--cluster",
            "k8s02",
            "--from",
            "k8s01",
            "--timeout",
            "5s",
        ],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(all.contains("Evil\\e]0;PWNED\\a CA"), "{all}");
    assert!(
        !all.contains('\u{1b}') && !all.contains('\u{7}'),
        "raw control characters: {all:?}"
    );
}

#[test]
fn client_certificate_from_another_ca() {
    let lab = Lab::new("1.16.19", None);
    let other = Ca::generate(
        "Cilium CA",
        KeyAlgorithm::EcdsaP256,
        100,
        OffsetDateTime::now_utc(),
    )
    .unwrap();
    let mut tls = lab.k8s02_tls();
    // k8s02 trusts only its own CA for clients: the clusters do not share one CA.
    tls.client_ca = &other;
    let Some(_etcd) = Etcd::start_at(lab.eps[1], tls) else {
        return;
    };
    let (r, v) = lab.probe_k8s02("5s");
    lab.record("client-rejected");
    assert_eq!(r.code, 1);
    let (st, cause, fix) = diagnosis(&v);
    assert_eq!(st, "tls", "{v:#}");
    assert!(
        cause.contains("rejected the client certificate `remote-k8s01`"),
        "{cause}"
    );
    assert!(cause.contains("authentication handshake failed"), "{cause}");
    assert!(cause.contains(&lab.ca.info().sha256), "{cause}");
    assert!(fix.contains("mesh CA"), "{fix}");
    // The server certificate itself was fine.
    assert_ne!(stage(&v, "certificate")["outcome"], "fail");
}

#[test]
fn expired_server_certificate() {
    let lab = Lab::new("1.16.19", None);
    let ip: IpAddr = lab.eps[1].ip.into();
    let issued_at = OffsetDateTime::now_utc() - Duration::days(40);
    let cert = issue(
        &lab.ca,
        "clustermesh-apiserver.cilium.io",
        &["*.mesh.cilium.io"],
        &[ip],
        issued_at,
        10,
    );
    let tls = ServerTls::issued(&cert, &lab.ca);
    let Some(_etcd) = Etcd::start_at(lab.eps[1], tls) else {
        return;
    };
    let (r, v) = lab.probe_k8s02("5s");
    lab.record("expired");
    assert_eq!(r.code, 1);
    let (st, cause, fix) = diagnosis(&v);
    assert_eq!(st, "certificate");
    assert!(cause.contains("expired: valid"), "{cause}");
    let expiry = cmesh_core::pki::fmt_date(issued_at + Duration::days(10));
    assert!(cause.contains(&expiry[..10]), "{cause} (expected {expiry})");
    assert!(fix.contains("cmesh pki renew --cluster k8s02"), "{fix}");
}

#[test]
fn nothing_listening() {
    let lab = Lab::new("1.16.19", None);
    let (r, v) = lab.probe_k8s02("3s");
    lab.record("refused");
    assert_eq!(r.code, 1);
    let (st, cause, fix) = diagnosis(&v);
    assert_eq!(st, "tcp");
    assert!(
        cause.contains("connection refused")
            && cause.contains(&format!("{}:{}", lab.eps[1].ip, lab.eps[1].port)),
        "{cause}"
    );
    assert!(
        fix.contains("kubectl -n kube-system get svc clustermesh-apiserver"),
        "{fix}"
    );
    assert_eq!(stage(&v, "tls")["outcome"], "skip");
}

#[test]
fn remote_user_without_permission() {
    let lab = Lab::new("1.16.19", None);
    let Some(etcd) = Etcd::start_at(lab.eps[1], lab.k8s02_tls()) else {
        return;
    };
    etcd.put("cilium/cluster-config/k8s02", r#"{"id":2}"#);
    // k8s02's apiserver knows no user for k8s01: k8s01 is missing from its config.
    etcd.enable_auth(&[]);
    let (r, v) = lab.probe_k8s02("5s");
    lab.record("permission-denied");
    assert_eq!(r.code, 1, "{v:#}");
    let (st, cause, fix) = diagnosis(&v);
    assert_eq!(st, "cluster-config");
    assert!(
        cause.contains("denied reading cilium/cluster-config/ to user `remote-k8s01`")
            && cause.contains("permission denied"),
        "{cause}"
    );
    assert!(fix.contains("k8s01 is missing there"), "{fix}");
    // Status needs no permission: etcd itself answered.
    assert_eq!(stage(&v, "etcd")["outcome"], "ok");
    // With the user in place, the same probe passes.
    etcd.etcdctl(&["user", "add", "remote-k8s01", "--no-password"]);
    etcd.etcdctl(&["user", "grant-role", "remote-k8s01", "remote"]);
    let (r, _) = lab.probe_k8s02("5s");
    assert_eq!(r.code, 0, "{}", r.stdout);
}

#[test]
fn wrong_cluster_id_in_cluster_config() {
    let lab = Lab::new("1.16.19", None);
    let Some(etcd) = Etcd::start_at(lab.eps[1], lab.k8s02_tls()) else {
        return;
    };
    etcd.put("cilium/cluster-config/k8s02", r#"{"id":7}"#);
    let (r, v) = lab.probe_k8s02("5s");
    lab.record("wrong-id");
    assert_eq!(r.code, 1);
    let (st, cause, fix) = diagnosis(&v);
    assert_eq!(st, "cluster-config");
    assert!(
        cause.contains("says cluster ID 7, but mesh.yaml gives k8s02 ID 2"),
        "{cause}"
    );
    assert!(fix.contains("IDs must be unique"), "{fix}");
}

#[test]
fn endpoint_serving_another_cluster() {
    let lab = Lab::new("1.16.19", None);
    let Some(etcd) = Etcd::start_at(lab.eps[1], lab.k8s02_tls()) else {
        return;
    };
    etcd.put("cilium/cluster-config/k8s01", r#"{"id":1}"#);
    let (r, v) = lab.probe_k8s02("5s");
    lab.record("other-cluster");
    assert_eq!(r.code, 1);
    let (st, cause, _) = diagnosis(&v);
    assert_eq!(st, "cluster-config");
    assert!(cause.contains("serves cluster k8s01 (id 1)"), "{cause}");
}

#[test]
fn unresolvable_name() {
    let lab = Lab::new("1.16.19", Some("k8s02.cmesh-test.invalid"));
    let (r, v) = lab.probe_k8s02("3s");
    lab.record("dns");
    assert_eq!(r.code, 1);
    let (st, cause, fix) = diagnosis(&v);
    assert_eq!(st, "dns", "{v:#}");
    assert!(cause.contains("k8s02.cmesh-test.invalid"), "{cause}");
    assert!(fix.contains("clustermesh.ips"), "{fix}");
}

#[test]
fn every_pair_concurrently_and_table_output() {
    let lab = Lab::new("1.16.19", None);
    let Some(e1) = Etcd::start_at(lab.eps[0], {
        let p = lab.dir.path().join("pki/clusters/k8s01");
        ServerTls {
            cert_pem: read(p.join("clustermesh-server.crt")),
            key_pem: read(p.join("clustermesh-server.key")),
            client_ca: &lab.ca,
        }
    }) else {
        return;
    };
    e1.put("cilium/cluster-config/k8s01", r#"{"id":1}"#);
    // k8s02 is down: one pair passes, the other fails, and the exit code says so.
    let r = cmesh(lab.dir.path(), &["probe", "--timeout", "3s"]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(
        lines[0].starts_with("CLUSTER") && lines[0].contains("RESULT"),
        "{}",
        r.stdout
    );
    assert!(
        lines[1].starts_with("k8s01") && lines[1].trim_end().ends_with("ok"),
        "{}",
        r.stdout
    );
    assert!(
        lines[2].starts_with("k8s02") && lines[2].trim_end().ends_with("FAILED"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("k8s02 as seen from k8s01")
            && r.stdout.contains("1 of 2 endpoint probes passed"),
        "{}",
        r.stdout
    );
}

#[test]
fn etcd_is_cleaned_up_after_a_panic() {
    let lab = Lab::new("1.16.19", None);
    let mut seen: Option<(u32, std::path::PathBuf)> = None;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let Some(etcd) = Etcd::start_at(lab.eps[1], lab.k8s02_tls()) else {
            return;
        };
        seen = Some((etcd.pid(), etcd.data_dir()));
        panic!("a failing test");
    }));
    let Some((pid, data)) = seen else { return };
    assert!(result.is_err());
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "etcd {pid} still runs"
    );
    assert!(!data.exists(), "{} still exists", data.display());
}
