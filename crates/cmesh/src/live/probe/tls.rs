//! TLS for the probe: rustls (ring) configured as a Cilium agent's etcd client (trust the mesh
//! CA, present the remote client certificate, verify the dialled name), with two recorders.
//!
//! The server-certificate verifier wraps webpki's and returns exactly its verdict: nothing the
//! standard verifier rejects is ever accepted. It only keeps the presented certificate and the
//! error, so that a failure can be explained (the SANs it does cover, its issuer, its dates).
//! The client-certificate resolver keeps the CA names the server says it accepts.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use rustls::client::ResolvesClientCert;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What the verifier saw.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    /// The server's end-entity certificate.
    pub server_cert: Option<Vec<u8>>,
    /// The verifier's error, if it rejected the certificate.
    pub error: Option<rustls::Error>,
    /// CA subjects (DER) the server accepts client certificates from.
    pub acceptable_issuers: Vec<Vec<u8>>,
}

#[derive(Debug)]
struct RecordingVerifier {
    inner: Arc<WebPkiServerVerifier>,
    seen: Arc<Mutex<Seen>>,
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verdict = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        if let Ok(mut seen) = self.seen.lock() {
            seen.server_cert = Some(end_entity.to_vec());
            seen.error = verdict.as_ref().err().cloned();
        }
        verdict
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[derive(Debug)]
struct RecordingResolver {
    key: Arc<CertifiedKey>,
    seen: Arc<Mutex<Seen>>,
}

impl ResolvesClientCert for RecordingResolver {
    fn resolve(
        &self,
        root_hint_subjects: &[&[u8]],
        _schemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        if let Ok(mut seen) = self.seen.lock() {
            seen.acceptable_issuers = root_hint_subjects.iter().map(|s| s.to_vec()).collect();
        }
        Some(Arc::clone(&self.key))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A client configuration for one probe, with the recorder it fills.
///
/// # Errors
/// When the CA or the client key cannot be loaded.
pub(crate) fn client_config(
    ca_der: &[u8],
    client_cert_der: Vec<u8>,
    client_key_pkcs8: Vec<u8>,
) -> Result<(Arc<ClientConfig>, Arc<Mutex<Seen>>), String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca_der.to_vec()))
        .map_err(|e| format!("mesh CA: {e}"))?;
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
        .build()
        .map_err(|e| format!("verifier: {e}"))?;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let key = load_key(&provider, client_key_pkcs8)?;
    let certified = Arc::new(CertifiedKey::new(
        vec![CertificateDer::from(client_cert_der)],
        key,
    ));
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS versions: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(RecordingVerifier {
            inner,
            seen: Arc::clone(&seen),
        }))
        .with_client_cert_resolver(Arc::new(RecordingResolver {
            key: certified,
            seen: Arc::clone(&seen),
        }));
    // etcd serves gRPC over HTTP/2.
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok((Arc::new(config), seen))
}

fn load_key(
    provider: &CryptoProvider,
    pkcs8: Vec<u8>,
) -> Result<Arc<dyn rustls::sign::SigningKey>, String> {
    provider
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8)))
        .map_err(|e| format!("client key: {e}"))
}

/// The server name to verify: an IP address or a DNS name.
///
/// # Errors
/// When `host` is neither.
pub(crate) fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_owned())
        .map_err(|e| format!("`{host}` is not a valid server name: {e}"))
}

/// A stream that first replays bytes read ahead of time, then reads from `inner`: the probe
/// reads once after the handshake to catch a rejected client certificate (TLS 1.3 reports it
/// only then), and gRPC must still see whatever arrived.
pub(crate) struct Replay<S> {
    pending: Vec<u8>,
    inner: S,
}

impl<S> Replay<S> {
    /// Wraps `inner`, replaying `pending` first.
    pub(crate) fn new(pending: Vec<u8>, inner: S) -> Self {
        Self { pending, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Replay<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.pending.is_empty() {
            let n = self.pending.len().min(buf.remaining());
            buf.put_slice(&self.pending[..n]);
            self.pending.drain(..n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replay<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Renders a DER distinguished name (as sent in a CertificateRequest) as text.
pub(crate) fn dn_to_string(der: &[u8]) -> String {
    use x509_parser::prelude::FromDer;
    use x509_parser::x509::X509Name;
    // The hint is the Name's contents; some stacks send it with the outer SEQUENCE.
    let wrapped;
    let bytes = if der.first() == Some(&0x30) {
        der
    } else {
        let mut v = vec![0x30];
        push_len(&mut v, der.len());
        v.extend_from_slice(der);
        wrapped = v;
        &wrapped
    };
    X509Name::from_der(bytes)
        .map(|(_, n)| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

fn push_len(v: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        v.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .iter()
            .copied()
            .skip_while(|b| *b == 0)
            .collect();
        v.push(0x80 | bytes.len() as u8);
        v.extend(bytes);
    }
}
