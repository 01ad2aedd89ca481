//! `cmesh probe`, the effects: dial each clustermesh endpoint as a peer's agent does (resolve,
//! TCP, TLS with the mesh CA and the peer's remote certificate, etcd Status, read
//! cilium/cluster-config/) and record what happened; `cmesh_core::probe::diagnose` explains it.

pub(crate) mod etcd;
pub(crate) mod tls;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cmesh_core::pki::store::{CA_CERT, CA_KEY, PkiFiles, leaf_paths};
use cmesh_core::pki::{Ca, CertInfo, LeafKind, LeafRequest, pem_to_der};
use cmesh_core::probe::{
    CertProblem, ConfigObs, DnsObs, EtcdObs, Observation, Report, Target, TcpObs, TlsObs,
    TrustedCa, diagnose,
};
use cmesh_core::spec::{CertMethod, KeyAlgorithm, MeshSpec};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// A peer's identity: its client certificate and key, and the CA it trusts (DER).
#[derive(Clone)]
pub(crate) struct Identity {
    /// Certificate, DER.
    pub cert_der: Vec<u8>,
    /// Key, PKCS#8 DER. Never printed.
    pub key_pkcs8: Vec<u8>,
    /// The CA this peer's agents trust, DER.
    pub ca_der: Vec<u8>,
    /// That CA, for messages.
    pub ca: TrustedCa,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Identity { .. }")
    }
}

/// Where the probe gets each peer's trust anchor and client certificate.
#[derive(Debug, Clone)]
pub(crate) struct Credentials {
    /// Identity per peer name.
    pub clients: BTreeMap<String, Identity>,
    /// Where they came from, for the report.
    pub source: String,
}

/// Why credentials could not be assembled.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CredentialError {
    /// No CA in pki.dir.
    #[error("pki.dir holds no mesh CA")]
    NoCa,
    /// A peer's remote certificate is missing.
    #[error("no remote certificate for cluster `{0}` in pki.dir")]
    NoClientCert(String),
    /// certManager: cmesh has no CA.
    #[error("with certificates: certManager the clusters' certificates are not in pki.dir")]
    CertManager,
    /// A file is not usable.
    #[error("{0}")]
    Invalid(String),
}

/// Any PEM private key (PKCS#8, PKCS#1, SEC1) as PKCS#8 DER, the form rustls loads.
fn pem_key_to_pkcs8_der(pem: &str) -> Result<Vec<u8>, CredentialError> {
    use base64::Engine as _;
    let key = cmesh_core::pki::PrivateKey::from_pem(pem)
        .map_err(|e| CredentialError::Invalid(e.to_string()))?;
    let body: String = key
        .pem()
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .map_err(|_| CredentialError::Invalid("unreadable key".into()))
}

/// Credentials from pki.dir: the CA, and for each peer its `clustermesh-remote` certificate
/// (`certificates: cmesh`) or, for methods that sign in the cluster (helm, cronJob), a
/// short-lived certificate with the same CN issued from the mesh CA in memory (never written).
///
/// # Errors
/// [`CredentialError`].
pub(crate) fn from_pki_dir(
    spec: &MeshSpec,
    files: &PkiFiles,
    peers: &[String],
) -> Result<Credentials, CredentialError> {
    if spec.clustermesh.certificates == CertMethod::CertManager {
        return Err(CredentialError::CertManager);
    }
    let ca_pem = files.get(CA_CERT).ok_or(CredentialError::NoCa)?;
    let ca_pem = String::from_utf8_lossy(ca_pem).to_string();
    let info = CertInfo::from_pem(&ca_pem)
        .map_err(|e| CredentialError::Invalid(format!("{CA_CERT}: {e}")))?;
    let ca_der = pem_to_der(&ca_pem).map_err(|e| CredentialError::Invalid(e.to_string()))?;
    let trusted = trusted(&info);
    let mut clients = BTreeMap::new();
    let source;
    if spec.clustermesh.certificates == CertMethod::Cmesh {
        source = "pki.dir (clusters/<peer>/clustermesh-remote)".to_owned();
        for p in peers {
            let (crt, key) = leaf_paths(p, LeafKind::ClustermeshRemote);
            let (Some(c), Some(k)) = (files.get(&crt), files.get(&key)) else {
                return Err(CredentialError::NoClientCert(p.clone()));
            };
            let cert_der = pem_to_der(&String::from_utf8_lossy(c))
                .map_err(|e| CredentialError::Invalid(format!("{crt}: {e}")))?;
            let key_pkcs8 = pem_key_to_pkcs8_der(&String::from_utf8_lossy(k))?;
            clients.insert(
                p.clone(),
                Identity {
                    cert_der,
                    key_pkcs8,
                    ca_der: ca_der.clone(),
                    ca: trusted.clone(),
                },
            );
        }
    } else {
        source = "short-lived certificates issued from the mesh CA for this probe".to_owned();
        let key_pem = files.get(CA_KEY).ok_or(CredentialError::NoCa)?;
        let now = time::OffsetDateTime::now_utc();
        let ca = Ca::load(&ca_pem, &String::from_utf8_lossy(key_pem), now)
            .map_err(|e| CredentialError::Invalid(e.to_string()))?;
        for p in peers {
            let cn = cmesh_core::pki::catalog::remote_common_name(spec.clustermesh.auth_mode, p);
            let issued = ca
                .issue(
                    &LeafRequest {
                        common_name: cn,
                        dns_names: vec![],
                        ip_addresses: vec![],
                    },
                    KeyAlgorithm::EcdsaP256,
                    1,
                    now,
                )
                .map_err(|e| CredentialError::Invalid(e.to_string()))?;
            let cert_der = pem_to_der(&issued.cert_pem)
                .map_err(|e| CredentialError::Invalid(e.to_string()))?;
            let key_pkcs8 = pem_key_to_pkcs8_der(issued.key.pem())?;
            clients.insert(
                p.clone(),
                Identity {
                    cert_der,
                    key_pkcs8,
                    ca_der: ca_der.clone(),
                    ca: trusted.clone(),
                },
            );
        }
    }
    Ok(Credentials { clients, source })
}

fn trusted(info: &CertInfo) -> TrustedCa {
    TrustedCa {
        subject: info.subject.clone(),
        sha256: info.sha256.clone(),
        key_id: info.subject_key_id.clone(),
    }
}

/// A peer's identity from its cluster's `clustermesh-apiserver-remote-cert` Secret (tls.crt,
/// tls.key, ca.crt): exactly what its agents present and trust, whoever issued it.
///
/// # Errors
/// [`CredentialError::Invalid`] when the Secret's contents are unusable.
pub(crate) fn identity_from_secret(
    peer: &str,
    data: &BTreeMap<String, String>,
) -> Result<Identity, CredentialError> {
    let get = |k: &str| {
        data.get(k).ok_or_else(|| {
            CredentialError::Invalid(format!(
                "{peer}: clustermesh-apiserver-remote-cert has no {k}"
            ))
        })
    };
    let cert_der = pem_to_der(get("tls.crt")?)
        .map_err(|e| CredentialError::Invalid(format!("{peer}: tls.crt: {e}")))?;
    let key_pkcs8 = pem_key_to_pkcs8_der(get("tls.key")?)?;
    let ca_pem = get("ca.crt")?;
    let info = CertInfo::from_pem(ca_pem)
        .map_err(|e| CredentialError::Invalid(format!("{peer}: ca.crt: {e}")))?;
    let ca_der = pem_to_der(ca_pem).map_err(|e| CredentialError::Invalid(e.to_string()))?;
    Ok(Identity {
        cert_der,
        key_pkcs8,
        ca_der,
        ca: trusted(&info),
    })
}

/// Probes every target concurrently (at most `parallel` at once), each stage bounded by
/// `timeout`, and returns the reports in target order.
pub(crate) async fn run(
    targets: Vec<Target>,
    creds: Arc<Credentials>,
    timeout: Duration,
    parallel: usize,
) -> Vec<Report> {
    let sem = Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
    let mut set = tokio::task::JoinSet::new();
    for (i, t) in targets.into_iter().enumerate() {
        let creds = Arc::clone(&creds);
        let sem = Arc::clone(&sem);
        set.spawn(async move {
            let _permit = sem.acquire_owned().await;
            let obs = observe(&t, &creds, timeout).await;
            let ca = creds
                .clients
                .get(&t.from)
                .map(|c| c.ca.clone())
                .unwrap_or(TrustedCa {
                    subject: "?".into(),
                    sha256: "?".into(),
                    key_id: String::new(),
                });
            (i, diagnose(&t, obs, &ca))
        });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Ok(pair) = r {
            out.push(pair);
        }
    }
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}

/// Dials `addrs` concurrently until one connects or `timeout` passes. Attempts are listed in
/// address order; addresses still pending when another connected are left out.
async fn dial_all(addrs: &[SocketAddr], timeout: Duration) -> (Vec<TcpObs>, Option<TcpStream>) {
    use futures_util::StreamExt;
    let mut pending: futures_util::stream::FuturesUnordered<_> = addrs
        .iter()
        .enumerate()
        .map(|(i, &addr)| async move {
            (
                i,
                addr,
                tokio::time::timeout(timeout, TcpStream::connect(addr)).await,
            )
        })
        .collect();
    let mut attempts: Vec<(usize, TcpObs)> = Vec::new();
    let mut stream = None;
    while let Some((i, addr, r)) = pending.next().await {
        match r {
            Ok(Ok(s)) => {
                attempts.push((i, TcpObs::Connected { addr }));
                stream = Some(s);
                break;
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                attempts.push((i, TcpObs::Refused { addr }))
            }
            Ok(Err(e)) => attempts.push((
                i,
                TcpObs::Error {
                    addr,
                    error: e.to_string(),
                },
            )),
            Err(_) => attempts.push((i, TcpObs::Timeout { addr })),
        }
    }
    attempts.sort_by_key(|(i, _)| *i);
    (attempts.into_iter().map(|(_, a)| a).collect(), stream)
}

fn ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Dials one target and records each stage.
pub(crate) async fn observe(t: &Target, creds: &Credentials, timeout: Duration) -> Observation {
    let mut obs = Observation::default();

    // Name resolution, as the agent would: host alias for the ips form, else DNS.
    let start = Instant::now();
    let addrs: Vec<SocketAddr> = if !t.static_ips.is_empty() {
        obs.dns = Some((
            DnsObs::Static {
                ips: t.static_ips.clone(),
            },
            0,
        ));
        t.static_ips
            .iter()
            .map(|ip| SocketAddr::new(*ip, t.port))
            .collect()
    } else if let Ok(ip) = t.host.parse::<IpAddr>() {
        obs.dns = Some((DnsObs::Literal, 0));
        vec![SocketAddr::new(ip, t.port)]
    } else {
        match tokio::time::timeout(timeout, tokio::net::lookup_host((t.host.as_str(), t.port)))
            .await
        {
            Ok(Ok(found)) => {
                let mut v: Vec<SocketAddr> = found.collect();
                v.dedup();
                obs.dns = Some((
                    DnsObs::Resolved {
                        addrs: v.iter().map(SocketAddr::ip).collect(),
                    },
                    ms(start),
                ));
                v
            }
            Ok(Err(e)) => {
                obs.dns = Some((
                    DnsObs::Failed {
                        error: e.to_string(),
                    },
                    ms(start),
                ));
                return obs;
            }
            Err(_) => {
                obs.dns = Some((DnsObs::Timeout, ms(start)));
                return obs;
            }
        }
    };

    // TCP: every address at once, the first that accepts wins; the stage as a whole is
    // bounded by `timeout` (one address after another, four unreachable ones took 4 × 5 s).
    let start = Instant::now();
    let (attempts, stream) = dial_all(&addrs, timeout).await;
    obs.tcp = Some((attempts, ms(start)));
    let Some(tcp) = stream else { return obs };

    // TLS as the peer.
    let start = Instant::now();
    let Some(identity) = creds.clients.get(&t.from) else {
        obs.tls = Some((
            TlsObs::Failed {
                error: format!("no client certificate for {}", t.from),
            },
            0,
        ));
        return obs;
    };
    let (config, seen) = match tls::client_config(
        &identity.ca_der,
        identity.cert_der.clone(),
        identity.key_pkcs8.clone(),
    ) {
        Ok(c) => c,
        Err(e) => {
            obs.tls = Some((TlsObs::Failed { error: e }, 0));
            return obs;
        }
    };
    let name = match tls::server_name(&t.host) {
        Ok(n) => n,
        Err(e) => {
            obs.tls = Some((TlsObs::Failed { error: e }, 0));
            return obs;
        }
    };
    let connector = tokio_rustls::TlsConnector::from(config);
    let handshake = tokio::time::timeout(timeout, connector.connect(name, tcp)).await;
    let mut tls_stream = match handshake {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            obs.tls = Some((tls_failure(&e, &seen), ms(start)));
            return obs;
        }
        Err(_) => {
            obs.tls = Some((TlsObs::Timeout, ms(start)));
            return obs;
        }
    };
    // TLS 1.3 reports a rejected client certificate only after the handshake: give the
    // server a moment to send its alert before speaking gRPC.
    let mut early = vec![0u8; 4096];
    let pending = match tokio::time::timeout(
        Duration::from_millis(300).min(timeout),
        tls_stream.read(&mut early),
    )
    .await
    {
        Ok(Ok(n)) => {
            early.truncate(n);
            early
        }
        Ok(Err(e)) => {
            obs.tls = Some((tls_failure(&e, &seen), ms(start)));
            return obs;
        }
        Err(_) => Vec::new(),
    };
    let (_, conn) = tls_stream.get_ref();
    let version = conn
        .protocol_version()
        .map_or("?".into(), |v| format!("{v:?}").replace("TLSv1_", "TLSv1."));
    let cipher = conn
        .negotiated_cipher_suite()
        .map_or("?".into(), |c| format!("{:?}", c.suite()));
    let server = seen
        .lock()
        .ok()
        .and_then(|s| s.server_cert.clone())
        .and_then(|der| CertInfo::from_der(&der).ok());
    let Some(server) = server else {
        obs.tls = Some((
            TlsObs::Failed {
                error: "no server certificate".into(),
            },
            ms(start),
        ));
        return obs;
    };
    obs.tls = Some((
        TlsObs::Ok {
            version,
            cipher,
            server: Box::new(server),
        },
        ms(start),
    ));

    // etcd over the same connection.
    let start = Instant::now();
    let io = Arc::new(std::sync::Mutex::new(Some(hyper_util::rt::TokioIo::new(
        tls::Replay::new(pending, tls_stream),
    ))));
    let connector = tower::service_fn(move |_: http::Uri| {
        let io = io.lock().ok().and_then(|mut g| g.take());
        async move { io.ok_or_else(|| std::io::Error::other("the probe connection was already used")) }
    });
    let channel = match tokio::time::timeout(
        timeout,
        tonic::transport::Endpoint::from_static("http://clustermesh-apiserver.probe")
            .connect_with_connector(connector),
    )
    .await
    {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            obs.etcd = Some((
                etcd_error_or_tls(&mut obs, "Unavailable", &error_chain(&e)),
                ms(start),
            ));
            return obs;
        }
        Err(_) => {
            obs.etcd = Some((EtcdObs::Timeout, ms(start)));
            return obs;
        }
    };
    match tokio::time::timeout(timeout, etcd::status(channel.clone())).await {
        Ok(Ok(s)) => {
            let h = s.header.unwrap_or_default();
            obs.etcd = Some((
                EtcdObs::Ok {
                    version: s.version,
                    cluster_id: format!("{:x}", h.cluster_id),
                    member_id: format!("{:x}", h.member_id),
                    db_size: s.db_size,
                },
                ms(start),
            ));
        }
        Ok(Err(status)) => {
            let code = format!("{:?}", status.code());
            let msg = status_message(&status);
            obs.etcd = Some((etcd_error_or_tls(&mut obs, &code, &msg), ms(start)));
            return obs;
        }
        Err(_) => {
            obs.etcd = Some((EtcdObs::Timeout, ms(start)));
            return obs;
        }
    }

    // What cluster this endpoint says it serves: the expected cluster's key (all Cilium's
    // `remote` role may read), then, when it is not there, the whole prefix to name the cluster
    // it serves instead (readable only without per-cluster users).
    let start = Instant::now();
    let key = format!("cilium/cluster-config/{}", t.cluster);
    let read = async {
        let own = etcd::get(channel.clone(), &key).await?;
        if !own.kvs.is_empty() {
            return Ok(own);
        }
        match etcd::range_prefix(channel, "cilium/cluster-config/", 64).await {
            Err(s) if s.code() == tonic::Code::PermissionDenied => Ok(own),
            other => other,
        }
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(Ok(r)) => {
            let entries = r
                .kvs
                .into_iter()
                .map(|kv| {
                    let key = String::from_utf8_lossy(&kv.key).to_string();
                    let name = key.trim_start_matches("cilium/cluster-config/").to_owned();
                    (name, String::from_utf8_lossy(&kv.value).to_string())
                })
                .collect();
            obs.config = Some((ConfigObs::Read { entries }, ms(start)));
        }
        Ok(Err(status)) => {
            obs.config = Some((
                ConfigObs::Error {
                    code: format!("{:?}", status.code()),
                    message: status_message(&status),
                },
                ms(start),
            ));
        }
        Err(_) => obs.config = Some((ConfigObs::Timeout, ms(start))),
    }
    obs
}

/// A transport error after the handshake that is really a TLS alert (a rejected client
/// certificate under TLS 1.3) is reported as a TLS failure.
fn etcd_error_or_tls(obs: &mut Observation, code: &str, message: &str) -> EtcdObs {
    if let Some(alert) = alert_in(message) {
        obs.tls = Some((
            TlsObs::ClientCertRejected {
                alert,
                acceptable_issuers: Vec::new(),
            },
            obs.tls.as_ref().map_or(0, |t| t.1),
        ));
    }
    EtcdObs::Error {
        code: code.to_owned(),
        message: message.to_owned(),
    }
}

fn alert_in(message: &str) -> Option<String> {
    let m = message.to_ascii_lowercase();
    [
        "bad certificate",
        "badcertificate",
        "unknown ca",
        "unknownca",
        "certificate required",
        "certificaterequired",
        "certificate unknown",
        "certificateunknown",
    ]
    .iter()
    .find(|a| m.contains(*a))
    .map(|_| {
        message
            .split(['(', ')', ':'])
            .find(|p| p.to_ascii_lowercase().contains("alert"))
            .unwrap_or(message)
            .trim()
            .to_owned()
    })
}

fn status_message(s: &tonic::Status) -> String {
    let mut m = s.message().to_owned();
    let mut src = std::error::Error::source(s);
    while let Some(e) = src {
        m.push_str(": ");
        m.push_str(&e.to_string());
        src = e.source();
    }
    m
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut m = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        m.push_str(": ");
        m.push_str(&s.to_string());
        src = s.source();
    }
    m
}

fn tls_failure(e: &std::io::Error, seen: &std::sync::Mutex<tls::Seen>) -> TlsObs {
    let seen = match seen.lock() {
        Ok(s) => s,
        Err(p) => p.into_inner(),
    };
    if let Some(err) = &seen.error {
        let server = seen
            .server_cert
            .as_ref()
            .and_then(|d| CertInfo::from_der(d).ok())
            .map(Box::new);
        use rustls::CertificateError as C;
        let problem = match err {
            rustls::Error::InvalidCertificate(c) => match c {
                C::UnknownIssuer | C::BadSignature => CertProblem::UnknownAuthority,
                C::NotValidForName | C::NotValidForNameContext { .. } => CertProblem::NameMismatch,
                C::Expired | C::ExpiredContext { .. } => CertProblem::Expired,
                C::NotValidYet | C::NotValidYetContext { .. } => CertProblem::NotYetValid,
                other => CertProblem::Other(format!("{other:?}")),
            },
            other => CertProblem::Other(other.to_string()),
        };
        return TlsObs::ServerCertRejected {
            problem,
            server,
            error: err.to_string(),
        };
    }
    let inner = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
    if let Some(rustls::Error::AlertReceived(a)) = inner {
        return TlsObs::ClientCertRejected {
            alert: format!("{a:?}"),
            acceptable_issuers: seen
                .acceptable_issuers
                .iter()
                .map(|d| tls::dn_to_string(d))
                .collect(),
        };
    }
    TlsObs::Failed {
        error: e.to_string(),
    }
}
