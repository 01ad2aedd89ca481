//! Reading certificates: subject, validity, SANs, fingerprint, CA flag, and whether one
//! certificate was signed by another's key.

use std::net::IpAddr;

use serde::Serialize;
use time::OffsetDateTime;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::PkiError;

/// What cmesh needs to know about a certificate. Contains no private material.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertInfo {
    /// Subject common name.
    pub common_name: String,
    /// Full subject, RFC 4514 style.
    pub subject: String,
    /// Full issuer.
    pub issuer: String,
    /// Serial number, hex.
    pub serial: String,
    /// Start of validity.
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    /// End of validity.
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// SHA-256 of the DER, uppercase hex with colons (as openssl prints it).
    pub sha256: String,
    /// DNS SANs.
    pub dns_names: Vec<String>,
    /// IP SANs.
    pub ip_addresses: Vec<IpAddr>,
    /// basicConstraints CA:TRUE.
    pub is_ca: bool,
    /// keyUsage allows certificate signing (`None` if the extension is absent).
    pub can_sign_certs: Option<bool>,
    /// The DER SubjectPublicKeyInfo.
    #[serde(skip)]
    pub spki: Vec<u8>,
    /// The subjectPublicKey bits alone (EC point, or DER RSAPublicKey).
    #[serde(skip)]
    pub public_key_bits: Vec<u8>,
    /// `ecdsa-p256`, `rsa-2048`, `rsa-4096`, … from the public key.
    pub key_algorithm: String,
    /// Subject key identifier, hex with colons (empty if absent).
    pub subject_key_id: String,
    /// Authority key identifier: the issuing CA's key identifier, hex with colons.
    pub authority_key_id: String,
    /// The whole certificate, DER.
    #[serde(skip)]
    pub der: Vec<u8>,
}

/// The SHA-256 fingerprint of `der` in `AB:CD:…` form.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Decodes the first certificate in a PEM text.
///
/// # Errors
/// [`PkiError::InvalidCert`] if there is no parseable certificate.
pub fn pem_to_der(pem: &str) -> Result<Vec<u8>, PkiError> {
    let invalid = |reason: String| PkiError::InvalidCert { reason };
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| invalid(format!("no PEM certificate: {e}")))?;
    if p.label != "CERTIFICATE" {
        return Err(invalid(format!(
            "expected a CERTIFICATE, found {}",
            p.label
        )));
    }
    Ok(p.contents)
}

fn key_id(cert: &X509Certificate<'_>, subject: bool) -> String {
    use x509_parser::extensions::ParsedExtension;
    let hex = |b: &[u8]| {
        b.iter()
            .map(|x| format!("{x:02X}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) if subject => return hex(k.0),
            ParsedExtension::AuthorityKeyIdentifier(a) if !subject => {
                return a
                    .key_identifier
                    .as_ref()
                    .map(|k| hex(k.0))
                    .unwrap_or_default();
            }
            _ => {}
        }
    }
    String::new()
}

fn key_algorithm(cert: &X509Certificate<'_>) -> String {
    use x509_parser::public_key::PublicKey;
    match cert.public_key().parsed() {
        Ok(PublicKey::EC(p)) if p.key_size() == 256 => "ecdsa-p256".into(),
        Ok(PublicKey::EC(p)) => format!("ecdsa-{}", p.key_size()),
        Ok(PublicKey::RSA(r)) => format!("rsa-{}", r.key_size()),
        _ => "unknown".into(),
    }
}

impl CertInfo {
    /// Parses a PEM certificate.
    ///
    /// # Errors
    /// [`PkiError::InvalidCert`] if it is not a valid X.509 certificate.
    pub fn from_pem(pem: &str) -> Result<Self, PkiError> {
        Self::from_der(&pem_to_der(pem)?)
    }

    /// Parses a DER certificate.
    ///
    /// # Errors
    /// [`PkiError::InvalidCert`] if it is not a valid X.509 certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, PkiError> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| PkiError::InvalidCert {
            reason: format!("not an X.509 certificate: {e}"),
        })?;
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .unwrap_or_default()
            .to_owned();
        let mut dns_names = Vec::new();
        let mut ip_addresses = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(d) => dns_names.push((*d).to_owned()),
                    GeneralName::IPAddress(bytes) => {
                        if let Ok(a) = <[u8; 4]>::try_from(*bytes) {
                            ip_addresses.push(IpAddr::from(a));
                        } else if let Ok(a) = <[u8; 16]>::try_from(*bytes) {
                            ip_addresses.push(IpAddr::from(a));
                        }
                    }
                    _ => {}
                }
            }
        }
        let is_ca = cert
            .basic_constraints()
            .ok()
            .flatten()
            .is_some_and(|bc| bc.value.ca);
        let can_sign_certs = cert
            .key_usage()
            .ok()
            .flatten()
            .map(|ku| ku.value.key_cert_sign());
        Ok(Self {
            common_name,
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            serial: cert.raw_serial_as_string().replace(':', ""),
            not_before: cert.validity().not_before.to_datetime(),
            not_after: cert.validity().not_after.to_datetime(),
            sha256: fingerprint(der),
            dns_names,
            ip_addresses,
            is_ca,
            can_sign_certs,
            spki: cert.public_key().raw.to_vec(),
            public_key_bits: cert.public_key().subject_public_key.data.to_vec(),
            key_algorithm: key_algorithm(&cert),
            subject_key_id: key_id(&cert, true),
            authority_key_id: key_id(&cert, false),
            der: der.to_vec(),
        })
    }

    /// True if this certificate's signature verifies with `issuer`'s public key.
    pub fn is_signed_by(&self, issuer: &CertInfo) -> bool {
        let (Ok((_, me)), Ok((_, ca))) = (
            X509Certificate::from_der(&self.der),
            X509Certificate::from_der(&issuer.der),
        ) else {
            return false;
        };
        me.verify_signature(Some(ca.public_key())).is_ok()
    }

    /// Days from `now` to expiry (negative once expired).
    pub fn days_left(&self, now: OffsetDateTime) -> i64 {
        (self.not_after - now).whole_days()
    }
}
