//! `cmesh probe`, the pure half: which endpoints to dial as which peer, and what the observed
//! outcome of each stage (DNS, TCP, TLS, certificate, etcd, cluster-config) means, with the
//! precise cause and the fix.
//!
//! The edge dials and records [`Observation`]s; [`diagnose`] turns them into [`Stage`]s and a
//! [`Diagnosis`]. Keeping this here makes every failure class testable without a network.

use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

use crate::pki::{CertInfo, fmt_date};
use crate::spec::{AuthMode, CertMethod, Dial, Host, MeshSpec};
use crate::version::CiliumVersion;

/// One endpoint to dial, as one peer's agent would.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// The cluster whose clustermesh-apiserver is dialled.
    pub cluster: String,
    /// Its ID in mesh.yaml.
    pub id: u16,
    /// The peer whose identity is used.
    pub from: String,
    /// The name (or IP) dialled: TLS server name and certificate check.
    pub host: String,
    /// Fixed IPs for `host` (the `ips` form's host alias); empty: resolve `host` (or it is an IP).
    pub static_ips: Vec<IpAddr>,
    /// The port.
    pub port: u16,
    /// The URL the chart writes in the peer's configuration.
    pub url: String,
    /// The client certificate's CN (`remote-<from>` or `remote`).
    pub client_cn: String,
    /// The Cilium version (for the values keys named in fixes).
    #[serde(skip)]
    pub version: CiliumVersion,
    /// The auth mode.
    #[serde(skip)]
    pub auth_mode: AuthMode,
    /// The certificate method.
    #[serde(skip)]
    pub method: CertMethod,
    /// How the apiserver is exposed.
    #[serde(skip)]
    pub service_type: crate::spec::ServiceType,
}

/// Why a probe cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A cluster name that is not in the mesh.
    #[error("no cluster `{name}` in the mesh (clusters: {known})")]
    UnknownCluster {
        /// The name given.
        name: String,
        /// The names that exist.
        known: String,
    },
}

/// Plans targets: each of `clusters` (all if empty) dialled as each of `from` (every other
/// cluster if empty).
///
/// # Errors
/// [`PlanError::UnknownCluster`].
pub fn plan(
    spec: &MeshSpec,
    clusters: &[String],
    from: &[String],
) -> Result<Vec<Target>, PlanError> {
    let known = || {
        spec.clusters
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    for n in clusters.iter().chain(from) {
        if spec.cluster(n).is_none() {
            return Err(PlanError::UnknownCluster {
                name: n.clone(),
                known: known(),
            });
        }
    }
    let domain = &spec.clustermesh.domain;
    let mut out = Vec::new();
    for target in spec
        .clusters
        .iter()
        .filter(|c| clusters.is_empty() || clusters.contains(&c.name))
    {
        let (host, static_ips) = match target.dial(domain) {
            Dial::Address(Host::Dns(d)) => (d, Vec::new()),
            Dial::Address(Host::Ip(ip)) => (ip.to_string(), Vec::new()),
            Dial::Alias { hostname, ips } => (hostname, ips),
        };
        for peer in spec
            .clusters
            .iter()
            .filter(|p| p.name != target.name && (from.is_empty() || from.contains(&p.name)))
        {
            out.push(Target {
                cluster: target.name.clone(),
                id: target.id,
                from: peer.name.clone(),
                host: host.clone(),
                static_ips: static_ips.clone(),
                port: target.clustermesh.port,
                url: target.endpoint_url(domain),
                client_cn: crate::pki::catalog::remote_common_name(
                    spec.clustermesh.auth_mode,
                    &peer.name,
                ),
                version: spec.cilium.version.clone(),
                auth_mode: spec.clustermesh.auth_mode,
                method: spec.clustermesh.certificates,
                service_type: spec.clustermesh.service_type,
            });
        }
    }
    Ok(out)
}

/// Name resolution as observed.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum DnsObs {
    /// The host is an IP address: nothing to resolve.
    Literal,
    /// `ips` form: fixed IPs, as Cilium's host alias.
    Static {
        /// The IPs.
        ips: Vec<IpAddr>,
    },
    /// Resolved by the system resolver.
    Resolved {
        /// Addresses found.
        addrs: Vec<IpAddr>,
    },
    /// Resolution failed.
    Failed {
        /// The resolver's message.
        error: String,
    },
    /// Resolution timed out.
    Timeout,
}

/// One TCP attempt.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum TcpObs {
    /// Connected.
    Connected {
        /// To where.
        addr: SocketAddr,
    },
    /// Connection refused (RST): nothing listens.
    Refused {
        /// Where.
        addr: SocketAddr,
    },
    /// No answer in time.
    Timeout {
        /// Where.
        addr: SocketAddr,
    },
    /// Any other error (unreachable network, ...).
    Error {
        /// Where.
        addr: SocketAddr,
        /// The OS message.
        error: String,
    },
}

/// Why the server certificate was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CertProblem {
    /// Not signed by the mesh CA.
    UnknownAuthority,
    /// Does not cover the dialled name or IP.
    NameMismatch,
    /// Expired.
    Expired,
    /// Not valid yet.
    NotYetValid,
    /// Anything else the verifier said.
    Other(String),
}

/// The TLS handshake as observed.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum TlsObs {
    /// Handshake complete, server certificate verified.
    Ok {
        /// `TLSv1.3` etc.
        version: String,
        /// Cipher suite.
        cipher: String,
        /// The server certificate.
        server: Box<CertInfo>,
    },
    /// The server certificate was rejected by cmesh (as the agent would).
    ServerCertRejected {
        /// Why.
        problem: CertProblem,
        /// The server certificate, if it could be parsed.
        server: Option<Box<CertInfo>>,
        /// The verifier's words.
        error: String,
    },
    /// The server rejected cmesh's client certificate.
    ClientCertRejected {
        /// The TLS alert.
        alert: String,
        /// Issuers the server said it accepts (its trusted CAs), if it sent them.
        acceptable_issuers: Vec<String>,
    },
    /// Any other TLS failure (not TLS at all, protocol mismatch, ...).
    Failed {
        /// What happened.
        error: String,
    },
    /// No handshake in time.
    Timeout,
}

/// etcd as observed.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum EtcdObs {
    /// Maintenance.Status answered.
    Ok {
        /// Server version.
        version: String,
        /// Cluster ID (hex).
        cluster_id: String,
        /// Member ID (hex).
        member_id: String,
        /// Database size in bytes.
        db_size: i64,
    },
    /// An error status.
    Error {
        /// gRPC code name.
        code: String,
        /// Message.
        message: String,
    },
    /// No answer in time.
    Timeout,
}

/// The cluster-config read.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ConfigObs {
    /// Keys under `cilium/cluster-config/`, with values.
    Read {
        /// (cluster name, value) pairs found.
        entries: Vec<(String, String)>,
    },
    /// Reading was refused or failed.
    Error {
        /// gRPC code name.
        code: String,
        /// Message.
        message: String,
    },
    /// No answer in time.
    Timeout,
}

/// Everything the edge observed for one target; later stages are `None` when an earlier one
/// failed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Observation {
    /// Name resolution.
    pub dns: Option<(DnsObs, u64)>,
    /// TCP attempts, in order, with the time of the last.
    pub tcp: Option<(Vec<TcpObs>, u64)>,
    /// TLS handshake.
    pub tls: Option<(TlsObs, u64)>,
    /// etcd status.
    pub etcd: Option<(EtcdObs, u64)>,
    /// cluster-config read.
    pub config: Option<(ConfigObs, u64)>,
}

/// A stage's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Passed.
    Ok,
    /// Passed with a remark.
    Warn,
    /// Failed.
    Fail,
    /// Not run (an earlier stage failed) or nothing to check.
    Skip,
}

/// One stage of a probe.
#[derive(Debug, Clone, Serialize)]
pub struct Stage {
    /// `dns`, `tcp`, `tls`, `certificate`, `etcd`, `cluster-config`.
    pub name: &'static str,
    /// Outcome.
    pub outcome: Outcome,
    /// Milliseconds taken, when measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub millis: Option<u64>,
    /// A short account.
    pub detail: String,
}

/// The cause of a failure and the fix.
#[derive(Debug, Clone, Serialize)]
pub struct Diagnosis {
    /// The stage that failed.
    pub stage: &'static str,
    /// What is wrong, precisely.
    pub cause: String,
    /// What to do.
    pub fix: String,
}

/// The result for one target.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// What was dialled.
    pub target: Target,
    /// Every stage.
    pub stages: Vec<Stage>,
    /// The failure, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diagnosis: Option<Diagnosis>,
    /// The observations behind it.
    pub observed: Observation,
}

impl Report {
    /// True if no stage failed.
    pub fn ok(&self) -> bool {
        self.diagnosis.is_none()
    }
}

/// The mesh CA as the probe trusted it, for messages.
#[derive(Debug, Clone)]
pub struct TrustedCa {
    /// Subject.
    pub subject: String,
    /// SHA-256 fingerprint.
    pub sha256: String,
    /// Subject key identifier.
    pub key_id: String,
}

fn stage(
    name: &'static str,
    outcome: Outcome,
    millis: Option<u64>,
    detail: impl Into<String>,
) -> Stage {
    Stage {
        name,
        outcome,
        millis,
        detail: detail.into(),
    }
}

const ORDER: [&str; 6] = ["dns", "tcp", "tls", "certificate", "etcd", "cluster-config"];

fn san_key(v: &CiliumVersion, dns: bool) -> String {
    let base = if v.san_keys_under_auto() {
        "clustermesh.apiserver.tls.auto.server"
    } else {
        "clustermesh.apiserver.tls.server"
    };
    format!(
        "{base}.{}",
        if dns {
            "extraDnsNames"
        } else {
            "extraIpAddresses"
        }
    )
}

/// Turns observations into stages and, for a failure, the cause and fix.
pub fn diagnose(t: &Target, obs: Observation, ca: &TrustedCa) -> Report {
    let mut stages = Vec::new();
    let mut diagnosis: Option<Diagnosis> = None;

    if let Some(dns) = &obs.dns {
        diagnosis = dns_stage(t, dns, &mut stages);
    }
    if diagnosis.is_none()
        && let Some((attempts, ms)) = &obs.tcp
    {
        diagnosis = tcp_stage(t, attempts, *ms, &mut stages);
    }
    if diagnosis.is_none()
        && let Some((tls, ms)) = &obs.tls
    {
        diagnosis = tls_stage(t, tls, *ms, ca, &mut stages);
    }
    if diagnosis.is_none()
        && let Some((etcd, ms)) = &obs.etcd
    {
        diagnosis = etcd_stage(t, etcd, *ms, ca, &mut stages);
    }
    if diagnosis.is_none()
        && let Some((cfg, ms)) = &obs.config
    {
        diagnosis = config_stage(t, cfg, *ms, ca, &mut stages);
    }

    // Stages never reached.
    for name in ORDER {
        if !stages.iter().any(|s| s.name == name) {
            stages.push(stage(name, Outcome::Skip, None, "not reached"));
        }
    }
    stages.sort_by_key(|s| ORDER.iter().position(|n| *n == s.name));
    Report {
        target: t.clone(),
        stages,
        diagnosis,
        observed: obs,
    }
}

/// The failed stage's cause and fix.
fn fail(stage: &'static str, cause: String, fix: String) -> Option<Diagnosis> {
    Some(Diagnosis { stage, cause, fix })
}

/// Name resolution.
fn dns_stage(t: &Target, dns: &(DnsObs, u64), stages: &mut Vec<Stage>) -> Option<Diagnosis> {
    let mut diagnosis = None;
    match dns {
        (DnsObs::Literal, ms) => stages.push(stage(
            "dns",
            Outcome::Skip,
            Some(*ms),
            format!("{} is an IP address", t.host),
        )),
        (DnsObs::Static { ips }, ms) => stages.push(stage(
            "dns",
            Outcome::Ok,
            Some(*ms),
            format!("{} -> {} (host alias of the ips form)", t.host, join(ips)),
        )),
        (DnsObs::Resolved { addrs }, ms) => stages.push(stage(
            "dns",
            Outcome::Ok,
            Some(*ms),
            format!("{} -> {}", t.host, join(addrs)),
        )),
        (DnsObs::Failed { error }, ms) => {
            stages.push(stage("dns", Outcome::Fail, Some(*ms), error.clone()));
            diagnosis = fail(
                "dns",
                format!("`{}` does not resolve from here: {error}", t.host),
                format!(
                    "peers of {} dial this name too: publish it in DNS (or /etc/hosts on this machine and every node), or give cluster {} `clustermesh.ips` in mesh.yaml so that Cilium resolves <name>.<domain> with a host alias",
                    t.cluster, t.cluster
                ),
            );
        }
        (DnsObs::Timeout, ms) => {
            stages.push(stage("dns", Outcome::Fail, Some(*ms), "timed out"));
            diagnosis = fail(
                "dns",
                format!("resolving `{}` timed out", t.host),
                "check the resolver of this machine and the nodes".into(),
            );
        }
    }
    diagnosis
}

/// The TCP connection (every address tried).
fn tcp_stage(
    t: &Target,
    attempts: &[TcpObs],
    ms: u64,
    stages: &mut Vec<Stage>,
) -> Option<Diagnosis> {
    let mut diagnosis = None;
    match attempts.iter().find_map(|a| {
        if let TcpObs::Connected { addr } = a {
            Some(*addr)
        } else {
            None
        }
    }) {
        Some(addr) => stages.push(stage(
            "tcp",
            Outcome::Ok,
            Some(ms),
            format!("connected to {addr}"),
        )),
        None => {
            let detail = attempts
                .iter()
                .map(describe_tcp)
                .collect::<Vec<_>>()
                .join("; ");
            stages.push(stage("tcp", Outcome::Fail, Some(ms), detail.clone()));
            let refused = attempts.iter().any(|a| matches!(a, TcpObs::Refused { .. }));
            let timeout = attempts.iter().any(|a| matches!(a, TcpObs::Timeout { .. }));
            let (cause, fix) = if refused {
                (
                    format!(
                        "connection refused: {detail}. Nothing listens on port {} there",
                        t.port
                    ),
                    format!(
                        "check that {} runs clustermesh-apiserver exposed on {}: `kubectl -n kube-system get svc clustermesh-apiserver` should show {} (apply the mesh phase with `cmesh apply` if it is missing), and that {} is an address of one of its nodes or of its load balancer",
                        t.cluster,
                        t.port,
                        match t.service_type {
                            crate::spec::ServiceType::LoadBalancer => format!(
                                "type LoadBalancer with an external address, port {}",
                                t.port
                            ),
                            crate::spec::ServiceType::NodePort =>
                                format!("type NodePort, ports 2379:{}/TCP", t.port),
                        },
                        t.host
                    ),
                )
            } else if timeout {
                (
                    format!("no answer from {detail}"),
                    format!(
                        "packets to port {} are dropped: open it in the firewalls and security groups between the clusters' nodes (and from this machine), and check that {} is routable",
                        t.port, t.host
                    ),
                )
            } else {
                (
                    format!("cannot connect: {detail}"),
                    format!(
                        "check the route to {} from here and from the other clusters' nodes",
                        t.host
                    ),
                )
            };
            diagnosis = fail("tcp", cause, fix);
        }
    }
    diagnosis
}

/// The TLS handshake, and the certificates either side presented.
fn tls_stage(
    t: &Target,
    tls: &TlsObs,
    ms: u64,
    ca: &TrustedCa,
    stages: &mut Vec<Stage>,
) -> Option<Diagnosis> {
    let mut diagnosis = None;
    let endpoint = format!("{}:{}", t.host, t.port);
    match tls {
        TlsObs::Ok {
            version,
            cipher,
            server,
        } => {
            stages.push(stage(
                "tls",
                Outcome::Ok,
                Some(ms),
                format!("{version} {cipher}, client certificate CN={}", t.client_cn),
            ));
            stages.push(stage(
                "certificate",
                Outcome::Ok,
                None,
                format!(
                    "CN={} covers {}, signed by the mesh CA, valid until {}",
                    server.common_name,
                    t.host,
                    fmt_date(server.not_after)
                ),
            ));
        }
        TlsObs::ServerCertRejected {
            problem,
            server,
            error,
        } => {
            stages.push(stage(
                "tls",
                Outcome::Fail,
                Some(ms),
                "aborted: server certificate rejected",
            ));
            stages.push(stage("certificate", Outcome::Fail, None, error.clone()));
            diagnosis = Some(cert_diagnosis(t, problem, server.as_deref(), error, ca));
        }
        TlsObs::ClientCertRejected {
            alert,
            acceptable_issuers,
        } => {
            stages.push(stage(
                "tls",
                Outcome::Fail,
                Some(ms),
                format!("server rejected the client certificate: {alert}"),
            ));
            let asked = if acceptable_issuers.is_empty() {
                String::new()
            } else {
                format!(
                    " It accepts client certificates from: {}.",
                    acceptable_issuers.join("; ")
                )
            };
            diagnosis = fail(
                "tls",
                format!(
                    "{endpoint} rejected the client certificate `{}` (signed by the mesh CA `{}`, sha256 {}) with TLS alert `{alert}`: {} does not trust the mesh CA, so the clusters do not share one CA (the article's \"authentication handshake failed\").{asked}",
                    t.client_cn, ca.subject, ca.sha256, t.cluster
                ),
                format!(
                    "give {} the mesh CA: render with cmesh and apply ({}'s cilium-ca and certificates must come from pki.dir), or adopt {}'s CA for the whole mesh with `cmesh pki import` and render every cluster again",
                    t.cluster, t.cluster, t.cluster
                ),
            );
        }
        TlsObs::Failed { error } => {
            stages.push(stage("tls", Outcome::Fail, Some(ms), error.clone()));
            diagnosis = fail(
                "tls",
                format!("TLS with {endpoint} failed: {error}"),
                format!(
                    "is {endpoint} really clustermesh-apiserver's etcd port (2379 behind the Service)? Something else answered, or it is not TLS"
                ),
            );
        }
        TlsObs::Timeout => {
            stages.push(stage(
                "tls",
                Outcome::Fail,
                Some(ms),
                "no handshake in time",
            ));
            diagnosis = fail(
                "tls",
                format!(
                    "{endpoint} accepted the connection but did not complete a TLS handshake in time"
                ),
                format!(
                    "something other than clustermesh-apiserver holds {endpoint}, or it is overloaded: check its pods (`kubectl -n kube-system get pods -l app.kubernetes.io/name=clustermesh-apiserver`)"
                ),
            );
        }
    }
    diagnosis
}

/// etcd's Status: the server's own answer.
fn etcd_stage(
    t: &Target,
    etcd: &EtcdObs,
    ms: u64,
    ca: &TrustedCa,
    stages: &mut Vec<Stage>,
) -> Option<Diagnosis> {
    let mut diagnosis = None;
    let endpoint = format!("{}:{}", t.host, t.port);
    match etcd {
        EtcdObs::Ok {
            version,
            cluster_id,
            member_id,
            db_size,
        } => stages.push(stage(
            "etcd",
            Outcome::Ok,
            Some(ms),
            format!(
                "etcd {version}, cluster {cluster_id}, member {member_id}, {} KiB",
                db_size / 1024
            ),
        )),
        EtcdObs::Error { code, message } => {
            stages.push(stage(
                "etcd",
                Outcome::Fail,
                Some(ms),
                format!("{code}: {message}"),
            ));
            diagnosis = Some(etcd_diagnosis(t, code, message, ca, "Maintenance.Status"));
        }
        EtcdObs::Timeout => {
            stages.push(stage("etcd", Outcome::Fail, Some(ms), "no answer in time"));
            diagnosis = fail(
                "etcd",
                format!("etcd on {endpoint} did not answer in time"),
                "check the clustermesh-apiserver pod's etcd container logs".into(),
            );
        }
    }
    diagnosis
}

/// cilium/cluster-config/: the cluster the endpoint serves, and its ID.
fn config_stage(
    t: &Target,
    cfg: &ConfigObs,
    ms: u64,
    ca: &TrustedCa,
    stages: &mut Vec<Stage>,
) -> Option<Diagnosis> {
    let mut diagnosis = None;
    let endpoint = format!("{}:{}", t.host, t.port);
    match cfg {
        ConfigObs::Read { entries } => {
            let own = entries.iter().find(|(n, _)| *n == t.cluster);
            match own {
                Some((_, value)) => match parse_cluster_id(value) {
                    Some(id) if id == t.id => stages.push(stage(
                        "cluster-config",
                        Outcome::Ok,
                        Some(ms),
                        format!("cilium/cluster-config/{}: id {id}", t.cluster),
                    )),
                    Some(id) => {
                        stages.push(stage(
                            "cluster-config",
                            Outcome::Fail,
                            Some(ms),
                            format!("id {id}, mesh.yaml says {}", t.id),
                        ));
                        diagnosis = fail(
                            "cluster-config",
                            format!(
                                "cilium/cluster-config/{} at {endpoint} says cluster ID {id}, but mesh.yaml gives {} ID {}",
                                t.cluster, t.cluster, t.id
                            ),
                            format!(
                                "either {} runs with another cluster.id (render and apply it; a running cluster's ID cannot change without reinstalling Cilium), or two clusters claim one ID: IDs must be unique across the mesh",
                                t.cluster
                            ),
                        );
                    }
                    None => stages.push(stage(
                        "cluster-config",
                        Outcome::Warn,
                        Some(ms),
                        format!(
                            "cilium/cluster-config/{} holds no cluster ID: {}",
                            t.cluster,
                            truncate(value, 80)
                        ),
                    )),
                },
                None if entries.is_empty() => stages.push(stage(
                    "cluster-config",
                    Outcome::Skip,
                    Some(ms),
                    "no cilium/cluster-config/ key yet",
                )),
                None => {
                    let others: Vec<String> = entries
                        .iter()
                        .map(|(n, v)| {
                            format!(
                                "{n} (id {})",
                                parse_cluster_id(v).map_or("?".into(), |i| i.to_string())
                            )
                        })
                        .collect();
                    stages.push(stage(
                        "cluster-config",
                        Outcome::Fail,
                        Some(ms),
                        format!("serves {}", others.join(", ")),
                    ));
                    diagnosis = fail(
                        "cluster-config",
                        format!(
                            "{endpoint} serves cluster {} (cilium/cluster-config/), not {}: the address or port of {} in mesh.yaml reaches another cluster's clustermesh-apiserver",
                            others.join(", "),
                            t.cluster,
                            t.cluster
                        ),
                        format!(
                            "fix {}'s clustermesh address/port in mesh.yaml; if the clusters share a NodePort on Cilium < 1.19, give each its own (cilium#24692)",
                            t.cluster
                        ),
                    );
                }
            }
        }
        ConfigObs::Error { code, message } => {
            stages.push(stage(
                "cluster-config",
                Outcome::Fail,
                Some(ms),
                format!("{code}: {message}"),
            ));
            diagnosis = Some(etcd_diagnosis(
                t,
                code,
                message,
                ca,
                "reading cilium/cluster-config/",
            ));
        }
        ConfigObs::Timeout => {
            stages.push(stage(
                "cluster-config",
                Outcome::Fail,
                Some(ms),
                "no answer in time",
            ));
            diagnosis = fail(
                "cluster-config",
                format!("reading cilium/cluster-config/ from {endpoint} timed out"),
                "check the clustermesh-apiserver pod's etcd container".into(),
            );
        }
    }
    diagnosis
}

fn cert_diagnosis(
    t: &Target,
    problem: &CertProblem,
    server: Option<&CertInfo>,
    error: &str,
    ca: &TrustedCa,
) -> Diagnosis {
    let endpoint = format!("{}:{}", t.host, t.port);
    let who = server.map_or_else(
        || "the server certificate".to_owned(),
        |s| format!("the server certificate `CN={}`", s.common_name),
    );
    let via_cmesh = t.method == CertMethod::Cmesh;
    match problem {
        CertProblem::NameMismatch => {
            let sans = server
                .map(|s| {
                    let mut v: Vec<String> = s.dns_names.clone();
                    v.extend(s.ip_addresses.iter().map(ToString::to_string));
                    v.join(", ")
                })
                .unwrap_or_default();
            let is_ip = t.host.parse::<IpAddr>().is_ok();
            let key = san_key(&t.version, !is_ip);
            Diagnosis {
                stage: "certificate",
                cause: format!(
                    "{who} of {} is valid for [{sans}], not for `{}` which peers dial (x509: certificate is valid for ..., not {}; cilium#22872)",
                    t.cluster, t.host, t.host
                ),
                fix: if via_cmesh {
                    format!(
                        "cmesh adds each cluster's address to its certificate: run `cmesh render` and `cmesh apply` so that {} gets a certificate for `{}`",
                        t.cluster, t.host
                    )
                } else {
                    format!(
                        "add `{}` to `{key}` in {}'s values (Cilium {}), or use the `ips` form, whose <name>.mesh.cilium.io the chart's wildcard covers",
                        t.host, t.cluster, t.version
                    )
                },
            }
        }
        CertProblem::UnknownAuthority => Diagnosis {
            stage: "certificate",
            cause: format!(
                "{who} at {endpoint} is signed by an unknown authority: its issuer is `{}` (key id {}), while the mesh CA is `{}` (sha256 {}, key id {}). {} runs with another CA",
                server.map_or("?", |s| s.issuer.as_str()),
                server
                    .map(|s| s.authority_key_id.as_str())
                    .filter(|k| !k.is_empty())
                    .unwrap_or("?"),
                ca.subject,
                ca.sha256,
                if ca.key_id.is_empty() {
                    "?"
                } else {
                    &ca.key_id
                },
                t.cluster
            ),
            fix: format!(
                "every cluster must use the mesh CA: render and apply {} with cmesh (its cilium-ca Secret and certificates come from pki.dir), or, if its CA should be the mesh's, adopt it with `cmesh pki import` and render every cluster again",
                t.cluster
            ),
        },
        CertProblem::Expired => Diagnosis {
            stage: "certificate",
            cause: format!(
                "{who} at {endpoint} expired: valid {} .. {}",
                server.map_or("?".into(), |s| fmt_date(s.not_before)),
                server.map_or("?".into(), |s| fmt_date(s.not_after))
            ),
            fix: if via_cmesh {
                format!(
                    "renew it: `cmesh pki renew --cluster {}`, then `cmesh render` and `cmesh apply`",
                    t.cluster
                )
            } else {
                format!(
                    "the chart only re-issues certificates on upgrade: `helm upgrade` {} (or switch to `certificates: cmesh`)",
                    t.cluster
                )
            },
        },
        CertProblem::NotYetValid => Diagnosis {
            stage: "certificate",
            cause: format!(
                "{who} at {endpoint} is not valid yet (from {}): the clocks disagree",
                server.map_or("?".into(), |s| fmt_date(s.not_before))
            ),
            fix: "synchronise the clocks (NTP) of this machine and the clusters' nodes".into(),
        },
        CertProblem::Other(_) => Diagnosis {
            stage: "certificate",
            cause: format!("{who} at {endpoint} was rejected: {error}"),
            fix: "inspect it with `openssl s_client -connect` and compare with `cmesh pki show`"
                .into(),
        },
    }
}

fn etcd_diagnosis(t: &Target, code: &str, message: &str, ca: &TrustedCa, what: &str) -> Diagnosis {
    let endpoint = format!("{}:{}", t.host, t.port);
    let stage = if what.starts_with("reading") {
        "cluster-config"
    } else {
        "etcd"
    };
    if code == "PermissionDenied"
        || message.contains("permission denied")
        || message.contains("user name not found")
    {
        let fix = if t.auth_mode == AuthMode::Cluster {
            format!(
                "with authMode cluster, {} creates an etcd user `remote-<peer>` only for the peers in its `clustermesh.config.clusters`: {} is missing there. Render and apply {} (cmesh lists every other cluster), or add {} to its values",
                t.cluster, t.from, t.cluster, t.from
            )
        } else {
            format!(
                "the etcd user `{}` lacks read access to cilium/ on {}: check the clustermesh-apiserver's users ConfigMap and authMode",
                t.client_cn, t.cluster
            )
        };
        return Diagnosis {
            stage,
            cause: format!(
                "etcd at {endpoint} denied {what} to user `{}` (from {}'s certificate): {message}",
                t.client_cn, t.from
            ),
            fix,
        };
    }
    if message.contains("tls") || message.contains("certificate") || message.contains("alert") {
        return Diagnosis {
            stage: "tls",
            cause: format!(
                "{endpoint} dropped the connection after the handshake ({message}): it rejected the client certificate `{}` signed by the mesh CA `{}` (sha256 {})",
                t.client_cn, ca.subject, ca.sha256
            ),
            fix: format!(
                "{} does not trust the mesh CA: render and apply it with cmesh, or adopt its CA with `cmesh pki import`",
                t.cluster
            ),
        };
    }
    Diagnosis {
        stage,
        cause: format!("etcd at {endpoint} answered {what} with {code}: {message}"),
        fix: "check the clustermesh-apiserver pod (`kubectl -n kube-system logs deploy/clustermesh-apiserver -c etcd`)".into(),
    }
}

fn describe_tcp(a: &TcpObs) -> String {
    match a {
        TcpObs::Connected { addr } => format!("{addr} connected"),
        TcpObs::Refused { addr } => format!("{addr} refused"),
        TcpObs::Timeout { addr } => format!("{addr} timed out"),
        TcpObs::Error { addr, error } => format!("{addr}: {error}"),
    }
}

fn join<T: std::fmt::Display>(v: &[T]) -> String {
    v.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

/// The cluster ID in a `cilium/cluster-config/<name>` value (JSON `{"id": N, ...}`).
pub fn parse_cluster_id(value: &str) -> Option<u16> {
    let v: serde_json::Value = serde_json::from_str(value).ok()?;
    v.get("id")?.as_u64().and_then(|i| u16::try_from(i).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{self, example};

    fn lab() -> MeshSpec {
        spec::load("lab", &example::builtin()).unwrap().0
    }

    #[test]
    fn plans_every_pair() {
        let spec = lab();
        let t = plan(&spec, &[], &[]).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(
            (
                t[0].cluster.as_str(),
                t[0].from.as_str(),
                t[0].client_cn.as_str()
            ),
            ("k8s01", "k8s02", "remote-k8s02")
        );
        assert_eq!(t[1].host, "k8s-lab-02.mylaptop.loc");
        assert_eq!(t[1].port, 32380);
        assert!(matches!(
            plan(&spec, &["nope".into()], &[]),
            Err(PlanError::UnknownCluster { .. })
        ));
        let only = plan(&spec, &["k8s02".into()], &[]).unwrap();
        assert_eq!(only.len(), 1);
    }

    #[test]
    fn cluster_ids() {
        assert_eq!(parse_cluster_id(r#"{"id":2,"capabilities":{}}"#), Some(2));
        assert_eq!(parse_cluster_id("garbage"), None);
    }
}
