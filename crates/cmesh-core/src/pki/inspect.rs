//! `check` on an existing CA in pki.dir: readable, a CA, valid now, not about to expire, key
//! matching and private. Never creates anything.

use time::{Duration, OffsetDateTime};

use super::PrivateKey;
use super::ca::{check_is_ca, check_validity};
use super::cert::CertInfo;
use super::store::{CA_CERT, CA_KEY, PkiFiles};
use crate::diag::{Diagnostic, Rule};
use crate::spec::SpecSource;
use crate::spec::codes;

/// Warn when the CA expires within this window.
pub const CA_EXPIRY_WARNING: Duration = Duration::days(90);

/// Diagnostics about the CA in `files` (pki.dir shown as `dir`); `key_mode` is the key file's
/// Unix mode, when known.
pub fn ca_diagnostics(
    files: &PkiFiles,
    key_mode: Option<u32>,
    dir: &str,
    now: OffsetDateTime,
    src: &SpecSource,
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let mut push = |rule: &Rule, msg: String, help: &str| {
        out.push(
            Diagnostic::new(rule, msg)
                .at("pki.dir", src.nearest_span("pki.dir"))
                .help(help)
                .with_source(src.text()),
        );
    };
    let (cert, key) = (files.get(CA_CERT), files.get(CA_KEY));
    let (cert, key) = match (cert, key) {
        (None, None) => return out,
        (None, Some(_)) => {
            push(
                &codes::CA_UNREADABLE,
                format!("{dir} has {CA_KEY} but not {CA_CERT}"),
                "restore the missing file from a backup; cmesh never regenerates a CA because every cluster trusts it",
            );
            return out;
        }
        // The certificate alone is what a clone of the GitOps repository holds: the
        // certificate is still checked below.
        (Some(c), None) => {
            push(
                &codes::CA_KEY_ABSENT,
                format!("{dir} has {CA_CERT} but not {CA_KEY}"),
                "fine in a clone of the GitOps repository (`cmesh render --check` needs only the certificate); where you render and apply, restore the key from where you keep it: cmesh never regenerates a CA because every cluster trusts it",
            );
            (c, None)
        }
        (Some(c), Some(k)) => (c, Some(k)),
    };
    let info = match CertInfo::from_pem(&String::from_utf8_lossy(cert)) {
        Ok(i) => i,
        Err(e) => {
            push(
                &codes::CA_UNREADABLE,
                format!("{dir}/{CA_CERT}: {e}"),
                "restore the CA certificate or import one with `cmesh pki import`",
            );
            return out;
        }
    };
    let key = match key.map(|k| PrivateKey::from_pem(&String::from_utf8_lossy(k))) {
        None => None,
        Some(Ok(k)) => Some(k),
        Some(Err(e)) => {
            push(
                &codes::CA_UNREADABLE,
                format!("{dir}/{CA_KEY}: {e}"),
                "restore the CA key or import a CA with `cmesh pki import`",
            );
            None
        }
    };
    if check_is_ca(&info).is_err() {
        push(
            &codes::CA_NOT_CA,
            format!(
                "{dir}/{CA_CERT} (`{}`) is not a CA certificate",
                info.subject
            ),
            "import the CA certificate itself (basicConstraints CA:TRUE, keyCertSign) with `cmesh pki import`",
        );
    }
    if let Err(e) = check_validity(&info, now) {
        push(
            &codes::CA_EXPIRED,
            format!("{dir}/{CA_CERT}: {e}"),
            "replace the CA (`cmesh pki import --force`), then render and apply every cluster",
        );
    } else if info.not_after - now < CA_EXPIRY_WARNING {
        push(
            &codes::CA_EXPIRING,
            format!(
                "the mesh CA `{}` expires in {} days ({})",
                info.subject,
                info.days_left(now),
                super::fmt_date(info.not_after)
            ),
            "start a CA rotation now: `cmesh pki rotate begin` (docs/rotation.md); every cluster must trust the new CA before this one expires",
        );
    }
    if let Some(k) = &key
        && k.public_key_spki() != info.spki
    {
        push(
            &codes::CA_KEY_MISMATCH,
            format!(
                "{dir}/{CA_KEY} does not belong to {dir}/{CA_CERT} (`{}`)",
                info.subject
            ),
            "restore the matching key, or import the CA pair with `cmesh pki import`",
        );
    }
    if let Some(m) = key_mode
        && m & 0o077 != 0
    {
        push(
            &codes::KEY_PERMISSIONS,
            format!("{dir}/{CA_KEY} has mode {m:04o}; the CA key is readable by others"),
            &format!("chmod 600 {dir}/{CA_KEY}"),
        );
    }
    out
}
