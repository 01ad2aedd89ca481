//! The mesh's shared PKI: one CA for every cluster, and the leaf certificates that
//! `certificates: cmesh` issues ahead of time so that rendering is stable.
//!
//! Pure: keys and certificates are generated in memory from an injected clock; reading and
//! writing pki.dir is the edge's job.

mod ca;
pub mod catalog;
mod cert;
pub mod inspect;
mod key;
pub mod public;
pub mod rotation;
pub mod store;

pub use ca::{Ca, IssuedCert, LeafRequest, normalize_pem};
pub use catalog::LeafKind;
pub use cert::{CertInfo, fingerprint, pem_to_der};
pub use key::{PrivateKey, embedded_public_key};

use time::OffsetDateTime;

/// What can go wrong with certificates and keys.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Not a certificate.
    #[error("invalid certificate: {reason}")]
    InvalidCert {
        /// Why.
        reason: String,
    },
    /// Not a usable private key.
    #[error("invalid private key: {reason}")]
    InvalidKey {
        /// Why.
        reason: String,
    },
    /// The key belongs to another certificate.
    #[error("the private key does not belong to certificate `{subject}`")]
    KeyMismatch {
        /// The certificate's subject.
        subject: String,
    },
    /// A certificate that is not a CA.
    #[error(
        "`{subject}` is not a CA certificate (basicConstraints CA:TRUE and keyCertSign are required)"
    )]
    NotCa {
        /// The subject.
        subject: String,
    },
    /// Expired.
    #[error("`{subject}` expired on {}", fmt_date(*not_after))]
    Expired {
        /// The subject.
        subject: String,
        /// Expiry.
        not_after: OffsetDateTime,
    },
    /// Not valid yet.
    #[error("`{subject}` is not valid before {}", fmt_date(*not_before))]
    NotYetValid {
        /// The subject.
        subject: String,
        /// Start of validity.
        not_before: OffsetDateTime,
    },
    /// Key generation or signing failed.
    #[error("failed to generate: {reason}")]
    Generate {
        /// Why.
        reason: String,
    },
    /// A recorded rotation state that cannot be used.
    #[error("invalid rotation state: {reason}")]
    InvalidState {
        /// Why.
        reason: String,
    },
    /// No CA where one must exist.
    #[error("pki.dir holds no CA")]
    NoCa,
    /// Half a CA.
    #[error("pki.dir has {present} but not {missing}")]
    IncompleteCa {
        /// The file present.
        present: &'static str,
        /// The file missing.
        missing: &'static str,
    },
    /// A problem in a specific file.
    #[error("{file}: {source}")]
    InFile {
        /// The file, relative to pki.dir.
        file: String,
        /// The problem.
        #[source]
        source: Box<PkiError>,
    },
}

/// `2026-11-24 19:27 UTC`.
pub fn fmt_date(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute()
    )
}
