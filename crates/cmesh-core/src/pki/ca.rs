//! The mesh CA: creating one, adopting an existing one, and issuing leaf certificates from it.
//!
//! Leaves mirror what Sprig's `genSignedCert` gives the Cilium chart (subject CN only, SANs
//! as listed, digital signature and key encipherment, server and client auth), so Cilium
//! treats cmesh's certificates exactly like its own.

use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyUsagePurpose, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use super::PkiError;
use super::cert::CertInfo;
use super::key::PrivateKey;
use crate::spec::KeyAlgorithm;

/// Leaves start this long before issuance so that clocks slightly behind still accept them.
const BACKDATE: Duration = Duration::minutes(5);

/// A CA: its certificate and key.
#[derive(Debug)]
pub struct Ca {
    cert_pem: String,
    key: PrivateKey,
    info: CertInfo,
}

/// A certificate to issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafRequest {
    /// Subject common name.
    pub common_name: String,
    /// DNS SANs, in order.
    pub dns_names: Vec<String>,
    /// IP SANs, in order.
    pub ip_addresses: Vec<IpAddr>,
}

/// An issued certificate and its new key.
#[derive(Debug)]
pub struct IssuedCert {
    /// PEM certificate.
    pub cert_pem: String,
    /// Its private key.
    pub key: PrivateKey,
}

fn serial() -> Result<SerialNumber, PkiError> {
    let mut bytes = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).map_err(|_| {
        PkiError::Generate {
            reason: "system random number generator failed".into(),
        }
    })?;
    // A positive integer: clear the top bit.
    bytes[0] &= 0x7f;
    Ok(SerialNumber::from_slice(&bytes))
}

impl Ca {
    /// Creates a new self-signed CA named `common_name`.
    ///
    /// # Errors
    /// [`PkiError::Generate`] if key generation or signing fails.
    pub fn generate(
        common_name: &str,
        alg: KeyAlgorithm,
        validity_days: u32,
        now: OffsetDateTime,
    ) -> Result<Self, PkiError> {
        let key = PrivateKey::generate(alg)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = now - BACKDATE;
        params.not_after = now + Duration::days(i64::from(validity_days));
        params.serial_number = Some(serial()?);
        let cert = params
            .self_signed(key.pair())
            .map_err(|e| PkiError::Generate {
                reason: e.to_string(),
            })?;
        let cert_pem = cert.pem();
        let info = CertInfo::from_pem(&cert_pem)?;
        Ok(Self {
            cert_pem,
            key,
            info,
        })
    }

    /// Adopts an existing CA, checking that the key matches the certificate, that the
    /// certificate is a CA, and that it is valid at `now`.
    ///
    /// # Errors
    /// [`PkiError`] naming what is wrong.
    pub fn load(cert_pem: &str, key_pem: &str, now: OffsetDateTime) -> Result<Self, PkiError> {
        let info = CertInfo::from_pem(cert_pem)?;
        let key = PrivateKey::from_pem(key_pem)?;
        if key.public_key_spki() != info.spki {
            return Err(PkiError::KeyMismatch {
                subject: info.subject.clone(),
            });
        }
        check_is_ca(&info)?;
        check_validity(&info, now)?;
        Ok(Self {
            cert_pem: normalize_pem(cert_pem),
            key,
            info,
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA key. Never print or log it.
    pub fn key(&self) -> &PrivateKey {
        &self.key
    }

    /// What the certificate says.
    pub fn info(&self) -> &CertInfo {
        &self.info
    }

    /// When a leaf issued at `now` for `validity_days` expires: never after the CA itself, so
    /// that a CA in its last year (or an imported one with little time left) issues leaves
    /// that end with it rather than leaves that outlive it and are re-issued at every render.
    pub fn leaf_not_after(&self, validity_days: u32, now: OffsetDateTime) -> OffsetDateTime {
        (now + Duration::days(i64::from(validity_days))).min(self.info.not_after)
    }

    /// Issues a leaf certificate for `request`, valid `validity_days` from `now`, with a new
    /// key of `alg`.
    ///
    /// # Errors
    /// [`PkiError::Generate`] if key generation or signing fails, or a SAN is invalid.
    pub fn issue(
        &self,
        request: &LeafRequest,
        alg: KeyAlgorithm,
        validity_days: u32,
        now: OffsetDateTime,
    ) -> Result<IssuedCert, PkiError> {
        let key = PrivateKey::generate(alg)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, request.common_name.as_str());
        params.distinguished_name = dn;
        let mut sans = Vec::new();
        for d in &request.dns_names {
            sans.push(SanType::DnsName(d.as_str().try_into().map_err(|_| {
                PkiError::Generate {
                    reason: format!("`{d}` is not a valid DNS name for a certificate"),
                }
            })?));
        }
        sans.extend(
            request
                .ip_addresses
                .iter()
                .map(|ip| SanType::IpAddress(*ip)),
        );
        params.subject_alt_names = sans;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = now - BACKDATE;
        params.not_after = self.leaf_not_after(validity_days, now);
        params.serial_number = Some(serial()?);
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, self.key.pair()).map_err(|e| {
            PkiError::Generate {
                reason: e.to_string(),
            }
        })?;
        let cert = params
            .signed_by(key.pair(), &issuer)
            .map_err(|e| PkiError::Generate {
                reason: e.to_string(),
            })?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key,
        })
    }
}

/// Errors unless `info` is a CA allowed to sign certificates.
///
/// # Errors
/// [`PkiError::NotCa`].
pub fn check_is_ca(info: &CertInfo) -> Result<(), PkiError> {
    if !info.is_ca || info.can_sign_certs == Some(false) {
        return Err(PkiError::NotCa {
            subject: info.subject.clone(),
        });
    }
    Ok(())
}

/// Errors unless `now` is within the certificate's validity.
///
/// # Errors
/// [`PkiError::Expired`] or [`PkiError::NotYetValid`].
pub fn check_validity(info: &CertInfo, now: OffsetDateTime) -> Result<(), PkiError> {
    if now > info.not_after {
        return Err(PkiError::Expired {
            subject: info.subject.clone(),
            not_after: info.not_after,
        });
    }
    if now < info.not_before {
        return Err(PkiError::NotYetValid {
            subject: info.subject.clone(),
            not_before: info.not_before,
        });
    }
    Ok(())
}

/// Trims surrounding whitespace and ends with exactly one newline, so that CA files written
/// by different tools (with or without a trailing newline) compare and encode identically.
pub fn normalize_pem(pem: &str) -> String {
    let mut s = pem.trim().replace("\r\n", "\n");
    s.push('\n');
    s
}
