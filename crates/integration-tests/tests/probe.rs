//! `cmesh probe` against real etcd servers with mutual TLS, one per failure class. Each mesh
//! is rendered by cmesh (so the CA and certificates are cmesh's own), then an etcd is started
//! with the certificate the scenario needs, and the probe's diagnosis is checked.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use cmesh_core::pki::Ca;
use cmesh_core::spec::KeyAlgorithm;
use integration_tests::cli::cmesh;
use integration_tests::cli::{self, Run};
use integration_tests::etcd::{Endpoint, Etcd, ServerTls, issue};
use serde_json::Value;
use time::{Duration, OffsetDateTime};

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
#[ignore = "needs etcd (scripts/install-test-deps; scripts/test runs it)"]
fn healthy_endpoint_with_cluster_config() {
    let lab = Lab::new("1.16.19", None);
    let etcd = Etcd::start_at(lab.eps[1], lab.k8s02_tls());
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

/// One failure class: what k8s02's endpoint is, and what the probe must say of it.
struct Failure {
    /// The scenario's name (and its file in docs/probe.md's examples).
    name: &'static str,
    /// The Cilium version mesh.yaml names.
    version: &'static str,
    /// k8s02's address in mesh.yaml, when not its reserved loopback address.
    address: Option<&'static str>,
    /// Starts k8s02's etcd as the scenario needs (`None`: nothing listens).
    server: fn(&Lab) -> Option<Etcd>,
    /// The stage the diagnosis names.
    stage: &'static str,
    /// What its cause and fix must say; `{ip}`, `{endpoint}`, `{ca}` (the mesh CA's sha256) and
    /// `{expiry}` are filled in.
    cause: &'static [&'static str],
    fix: &'static [&'static str],
    /// Stages whose outcome is known too.
    stages: &'static [(&'static str, &'static str)],
}

fn cmesh_server(lab: &Lab, put: &[(&str, &str)]) -> Option<Etcd> {
    let etcd = Etcd::start_at(lab.eps[1], lab.k8s02_tls());
    for (k, v) in put {
        etcd.put(k, v);
    }
    Some(etcd)
}

fn foreign_ca() -> Ca {
    Ca::generate(
        "Cilium CA",
        KeyAlgorithm::EcdsaP256,
        100,
        OffsetDateTime::now_utc(),
    )
    .unwrap()
}

/// An expired server certificate: issued 40 days ago for 10 days.
fn expiry_of_the_expired() -> OffsetDateTime {
    OffsetDateTime::now_utc() - Duration::days(30)
}

const FAILURES: &[Failure] = &[
    Failure {
        name: "name-mismatch",
        version: "1.19.6",
        address: None,
        // What the chart issues without extraIpAddresses: its defaults only (cilium#22872).
        server: |lab| {
            let cert = issue(
                &lab.ca,
                "clustermesh-apiserver.cilium.io",
                &[
                    "clustermesh-apiserver.cilium.io",
                    "*.mesh.cilium.io",
                    "clustermesh-apiserver.kube-system.svc",
                ],
                &["127.0.0.1".parse().unwrap()],
                OffsetDateTime::now_utc(),
                30,
            );
            Some(Etcd::start_at(
                lab.eps[1],
                ServerTls::issued(&cert, &lab.ca),
            ))
        },
        stage: "certificate",
        cause: &[
            "valid for [clustermesh-apiserver.cilium.io, *.mesh.cilium.io, clustermesh-apiserver.kube-system.svc, 127.0.0.1]",
            "not for `{ip}`",
        ],
        fix: &["cmesh render", "cmesh apply"],
        stages: &[("tcp", "ok"), ("etcd", "skip")],
    },
    Failure {
        name: "unknown-authority",
        version: "1.20.0",
        address: None,
        // The server still trusts the mesh CA for clients: only its own certificate is foreign.
        server: |lab| {
            let ip: IpAddr = lab.eps[1].ip.into();
            let cert = issue(
                &foreign_ca(),
                "clustermesh-apiserver.kube-system.svc",
                &["*.mesh.cilium.io"],
                &[ip],
                OffsetDateTime::now_utc(),
                30,
            );
            Some(Etcd::start_at(
                lab.eps[1],
                ServerTls::issued(&cert, &lab.ca),
            ))
        },
        stage: "certificate",
        cause: &[
            "signed by an unknown authority",
            "its issuer is `CN=Cilium CA`",
            "{ca}",
            "CN=cmesh probe CA",
        ],
        fix: &["cmesh pki import"],
        // The handshake is aborted on the certificate.
        stages: &[("tcp", "ok"), ("tls", "fail")],
    },
    Failure {
        name: "client-rejected",
        version: "1.16.19",
        address: None,
        // k8s02 trusts only its own CA for clients: the clusters do not share one CA.
        server: |lab| {
            let other = foreign_ca();
            let mut tls = lab.k8s02_tls();
            tls.client_ca = &other;
            Some(Etcd::start_at(lab.eps[1], tls))
        },
        stage: "tls",
        cause: &[
            "rejected the client certificate `remote-k8s01`",
            "authentication handshake failed",
            "{ca}",
        ],
        fix: &["mesh CA"],
        // The server certificate is not to blame: the stage is not reached.
        stages: &[("tcp", "ok"), ("certificate", "skip")],
    },
    Failure {
        name: "expired",
        version: "1.16.19",
        address: None,
        server: |lab| {
            let ip: IpAddr = lab.eps[1].ip.into();
            let cert = issue(
                &lab.ca,
                "clustermesh-apiserver.cilium.io",
                &["*.mesh.cilium.io"],
                &[ip],
                expiry_of_the_expired() - Duration::days(10),
                10,
            );
            Some(Etcd::start_at(
                lab.eps[1],
                ServerTls::issued(&cert, &lab.ca),
            ))
        },
        stage: "certificate",
        cause: &["expired: valid", "{expiry}"],
        fix: &["cmesh pki renew --cluster k8s02"],
        stages: &[("tcp", "ok")],
    },
    Failure {
        name: "refused",
        version: "1.16.19",
        address: None,
        server: |_| None,
        stage: "tcp",
        cause: &["connection refused", "{endpoint}"],
        fix: &["kubectl -n kube-system get svc clustermesh-apiserver"],
        stages: &[("tls", "skip"), ("etcd", "skip")],
    },
    Failure {
        name: "wrong-id",
        version: "1.16.19",
        address: None,
        server: |lab| cmesh_server(lab, &[("cilium/cluster-config/k8s02", r#"{"id":7}"#)]),
        stage: "cluster-config",
        cause: &["says cluster ID 7, but mesh.yaml gives k8s02 ID 2"],
        fix: &["IDs must be unique"],
        stages: &[("etcd", "ok")],
    },
    Failure {
        name: "other-cluster",
        version: "1.16.19",
        address: None,
        server: |lab| cmesh_server(lab, &[("cilium/cluster-config/k8s01", r#"{"id":1}"#)]),
        stage: "cluster-config",
        cause: &["serves cluster k8s01 (id 1)"],
        fix: &["k8s02's clustermesh address/port in mesh.yaml"],
        stages: &[("etcd", "ok")],
    },
    Failure {
        name: "dns",
        version: "1.16.19",
        address: Some("k8s02.cmesh-test.invalid"),
        server: |_| None,
        stage: "dns",
        cause: &["k8s02.cmesh-test.invalid"],
        fix: &["clustermesh.ips"],
        stages: &[("tcp", "skip")],
    },
];

/// Every failure class against a real etcd with mutual TLS: the probe exits 1 and names the
/// stage, the cause and the fix. Every row is run; the failures of all are reported together.
#[test]
#[ignore = "needs etcd (scripts/install-test-deps; scripts/test runs it)"]
fn every_failure_class_is_diagnosed() {
    let mut wrong = Vec::new();
    for f in FAILURES {
        let lab = Lab::new(f.version, f.address);
        let _etcd = (f.server)(&lab);
        let (r, v) = lab.probe_k8s02("5s");
        lab.record(f.name);
        let fill = |t: &str| {
            t.replace("{ip}", &lab.eps[1].ip.to_string())
                .replace(
                    "{endpoint}",
                    &format!("{}:{}", lab.eps[1].ip, lab.eps[1].port),
                )
                .replace("{ca}", &lab.ca.info().sha256)
                .replace(
                    "{expiry}",
                    &cmesh_core::pki::fmt_date(expiry_of_the_expired())[..10],
                )
        };
        let (stage_named, cause, fix) = diagnosis(&v);
        let mut problems = Vec::new();
        if r.code != 1 {
            problems.push(format!("exit {} (want 1)", r.code));
        }
        if stage_named != f.stage {
            problems.push(format!("stage {stage_named} (want {})", f.stage));
        }
        for want in f.cause.iter().map(|t| fill(t)) {
            if !cause.contains(&want) {
                problems.push(format!("cause lacks `{want}`: {cause}"));
            }
        }
        for want in f.fix.iter().map(|t| fill(t)) {
            if !fix.contains(&want) {
                problems.push(format!("fix lacks `{want}`: {fix}"));
            }
        }
        for (name, outcome) in f.stages {
            if stage(&v, name)["outcome"] != *outcome {
                problems.push(format!(
                    "stage {name}: {} (want {outcome})",
                    stage(&v, name)
                ));
            }
        }
        if !problems.is_empty() {
            wrong.push(format!("{}:\n  {}", f.name, problems.join("\n  ")));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Issue 17: what a hostile endpoint puts in its certificate (here ESC ] 0 ; … BEL, which
/// retitles a terminal, and ESC [ 2 J, which clears it) is shown as text, never sent raw.
#[test]
#[ignore = "needs etcd (scripts/install-test-deps; scripts/test runs it)"]
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
    let _etcd = Etcd::start_at(lab.eps[1], ServerTls::issued(&cert, &lab.ca));
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
#[ignore = "needs etcd (scripts/install-test-deps; scripts/test runs it)"]
fn remote_user_without_permission() {
    let lab = Lab::new("1.16.19", None);
    let etcd = Etcd::start_at(lab.eps[1], lab.k8s02_tls());
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
#[ignore = "needs etcd (scripts/install-test-deps; scripts/test runs it)"]
fn every_pair_concurrently_and_table_output() {
    let lab = Lab::new("1.16.19", None);
    let e1 = Etcd::start_at(lab.eps[0], {
        let p = lab.dir.path().join("pki/clusters/k8s01");
        ServerTls {
            cert_pem: read(p.join("clustermesh-server.crt")),
            key_pem: read(p.join("clustermesh-server.key")),
            client_ca: &lab.ca,
        }
    });
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
#[ignore = "needs etcd (scripts/install-test-deps; scripts/test runs it)"]
fn etcd_is_cleaned_up_after_a_panic() {
    let lab = Lab::new("1.16.19", None);
    let mut seen: Option<(u32, std::path::PathBuf)> = None;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let etcd = Etcd::start_at(lab.eps[1], lab.k8s02_tls());
        seen = Some((etcd.pid(), etcd.data_dir()));
        panic!("a failing test");
    }));
    let (pid, data) = seen.expect("etcd started before the panic");
    assert!(result.is_err());
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "etcd {pid} still runs"
    );
    assert!(!data.exists(), "{} still exists", data.display());
}
