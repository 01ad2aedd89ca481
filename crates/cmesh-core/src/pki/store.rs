//! The contents of `pki.dir` and how they are brought up to date: the CA is created once (and
//! never again), leaves are reused while they still match what the chart version needs and are
//! not near expiry, and re-issued otherwise, each with a reason.
//!
//! This is pure: the edge reads the directory into [`PkiFiles`], calls [`reconcile`], and
//! writes the returned files (keys with mode 0600).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use time::{Duration, OffsetDateTime};

use super::PkiError;
use super::ca::{Ca, LeafRequest, check_is_ca, check_validity, normalize_pem};
use super::catalog::{LeafKind, leaves_for};
use super::cert::CertInfo;
use super::key::{PrivateKey, embedded_public_key};
use crate::spec::MeshSpec;

/// CA certificate file name in pki.dir.
pub const CA_CERT: &str = "ca.crt";
/// CA key file name in pki.dir.
pub const CA_KEY: &str = "ca.key";

/// Files of pki.dir: relative path (with `/`) → contents.
pub type PkiFiles = BTreeMap<String, Vec<u8>>;

/// The certificate and key paths of a leaf, relative to pki.dir.
pub fn leaf_paths(cluster: &str, kind: LeafKind) -> (String, String) {
    let base = format!("clusters/{cluster}/{}", kind.file_stem());
    (format!("{base}.crt"), format!("{base}.key"))
}

/// What to do when there is no CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaPolicy {
    /// Create one (first render, `pki init`).
    CreateIfMissing,
    /// Fail: the command must not create a CA (checks, `--check`, `pki renew`).
    MustExist,
}

/// Options for [`reconcile`].
#[derive(Debug, Clone)]
pub struct ReconcileOptions {
    /// The current time.
    pub now: OffsetDateTime,
    /// Re-issue leaves expiring within this window.
    pub renew_before: Duration,
    /// Re-issue every selected leaf regardless.
    pub force: bool,
    /// Restrict leaf work to these clusters (`None`: all).
    pub clusters: Option<Vec<String>>,
    /// Whether leaves are wanted at all (only `certificates: cmesh` issues leaves).
    pub leaves: bool,
    /// What to do without a CA.
    pub ca_policy: CaPolicy,
    /// Signatures verified by an earlier run (the edge's cache): a leaf listed under its
    /// issuer's fingerprint is not verified again.
    pub verified: Verified,
}

/// Certificate signatures known to verify: for each CA certificate (by the SHA-256 of its DER),
/// the leaf certificates (likewise) whose signature its key made. Verifying a P-256 signature
/// costs about 90 µs, 2,555 of them at 511 clusters a fifth of a render's CPU; a fingerprint
/// names the exact bytes, so a listed pair needs no second verification. Anything else about
/// the leaf (names, validity, its key) is still judged at every run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verified {
    by_ca: BTreeMap<String, BTreeSet<String>>,
}

/// The first line of [`Verified::to_text`].
const VERIFIED_HEADER: &str =
    "# cmesh: certificate signatures verified, by SHA-256 of the DER (a cache, safe to delete)";

impl Verified {
    /// True when `leaf`'s signature is known to verify with `ca`'s key.
    pub fn contains(&self, ca: &CertInfo, leaf: &CertInfo) -> bool {
        self.by_ca
            .get(&ca.sha256)
            .is_some_and(|l| l.contains(&leaf.sha256))
    }

    /// Records that `leaf`'s signature verifies with `ca`'s key.
    pub fn insert(&mut self, ca: &CertInfo, leaf: &CertInfo) {
        self.by_ca
            .entry(ca.sha256.clone())
            .or_default()
            .insert(leaf.sha256.clone());
    }

    /// Pairs recorded.
    pub fn len(&self) -> usize {
        self.by_ca.values().map(BTreeSet::len).sum()
    }

    /// True when nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.by_ca.is_empty()
    }

    /// Reads what [`Verified::to_text`] wrote. Anything else (another version's format, a
    /// truncated file) yields fewer entries, never an error: a lost entry only costs a
    /// verification.
    pub fn parse(text: &str) -> Verified {
        let mut v = Verified::default();
        let mut lines = text.lines();
        if lines.next() != Some(VERIFIED_HEADER) {
            return v;
        }
        let mut ca: Option<&str> = None;
        for line in lines {
            let fingerprint =
                |s: &str| s.len() == 95 && s.bytes().all(|b| b.is_ascii_hexdigit() || b == b':');
            match line.strip_prefix("ca ") {
                Some(fp) if fingerprint(fp) => ca = Some(fp),
                Some(_) => ca = None,
                None => {
                    if let Some(ca) = ca
                        && fingerprint(line)
                    {
                        v.by_ca
                            .entry(ca.to_owned())
                            .or_default()
                            .insert(line.to_owned());
                    }
                }
            }
        }
        v
    }

    /// The cache file's text: a header, then each CA's line followed by its leaves.
    pub fn to_text(&self) -> String {
        let mut out = String::with_capacity(96 * (self.len() + self.by_ca.len() + 1));
        out.push_str(VERIFIED_HEADER);
        out.push('\n');
        for (ca, leaves) in &self.by_ca {
            out.push_str("ca ");
            out.push_str(ca);
            out.push('\n');
            for l in leaves {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

/// A leaf certificate ready for use.
#[derive(Debug, Clone)]
pub struct LeafMaterial {
    /// PEM certificate.
    pub cert_pem: String,
    /// PEM PKCS#8 key. Never print it.
    pub key_pem: String,
    /// The certificate's details.
    pub info: CertInfo,
}

/// What happened to one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// A new CA was created.
    Created,
    /// A leaf was issued for the first time.
    Issued,
    /// A leaf was re-issued (see the reason).
    Renewed,
    /// The existing file was kept.
    Reused,
}

/// One line of the reconcile report.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PkiEvent {
    /// The cluster, for leaves.
    pub cluster: Option<String>,
    /// The leaf kind, or `None` for the CA.
    pub kind: Option<LeafKind>,
    /// What happened.
    pub action: Action,
    /// Why.
    pub reason: String,
    /// Expiry of the (new or kept) certificate.
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
}

/// A file to write into pki.dir.
#[derive(Debug, Clone)]
pub struct PkiWrite {
    /// Relative path.
    pub path: String,
    /// Contents.
    pub bytes: Vec<u8>,
    /// True for private keys (mode 0600).
    pub private: bool,
}

/// The outcome of [`reconcile`].
#[derive(Debug)]
pub struct Reconciled {
    /// The CA that issues the leaves: the mesh CA, or during a rotation's `reissued` stage
    /// the incoming one.
    pub ca: Ca,
    /// What the clusters trust (both CAs during a rotation).
    pub trust: super::rotation::TrustView,
    /// Leaves per cluster and kind.
    pub leaves: BTreeMap<(String, LeafKind), LeafMaterial>,
    /// Files to write (new CA, new or renewed leaves).
    pub writes: Vec<PkiWrite>,
    /// What happened, in order.
    pub events: Vec<PkiEvent>,
    /// The signatures of every leaf in `leaves` that the issuer made (checked now, found in
    /// [`ReconcileOptions::verified`], or just issued): what the edge keeps for the next run.
    pub verified: Verified,
}

/// A pki.dir file as text (`None` when absent); bytes that are not UTF-8 are an error naming it.
pub(crate) fn text(files: &PkiFiles, path: &str) -> Result<Option<String>, PkiError> {
    files
        .get(path)
        .map(|b| {
            String::from_utf8(b.clone()).map_err(|_| PkiError::InFile {
                file: path.to_owned(),
                source: Box::new(PkiError::InvalidCert {
                    reason: "not PEM text".into(),
                }),
            })
        })
        .transpose()
}

/// Loads the CA from `files`, checking it. Returns `Ok(None)` when neither file exists.
///
/// # Errors
/// [`PkiError`] if only one of the two files exists or the CA is invalid.
pub fn load_ca(files: &PkiFiles, now: OffsetDateTime) -> Result<Option<Ca>, PkiError> {
    let cert = text(files, CA_CERT)?;
    let key = text(files, CA_KEY)?;
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(_), None) => Err(PkiError::IncompleteCa {
            present: CA_CERT,
            missing: CA_KEY,
        }),
        (None, Some(_)) => Err(PkiError::IncompleteCa {
            present: CA_KEY,
            missing: CA_CERT,
        }),
        (Some(c), Some(k)) => Ca::load(&c, &k, now).map(Some),
    }
}

/// Brings pki.dir up to date for `spec`.
///
/// # Errors
/// [`PkiError`] for an invalid or missing (with [`CaPolicy::MustExist`]) CA, or a failure to
/// generate keys.
pub fn reconcile(
    spec: &MeshSpec,
    files: &PkiFiles,
    opts: &ReconcileOptions,
) -> Result<Reconciled, PkiError> {
    let mut writes = Vec::new();
    let mut events = Vec::new();
    let ca = match load_ca(files, opts.now)? {
        Some(ca) => ca,
        None => {
            if opts.ca_policy == CaPolicy::MustExist {
                return Err(PkiError::NoCa);
            }
            let ca = Ca::generate(
                &format!("cmesh {} CA", spec.name),
                spec.pki.key_algorithm,
                spec.pki.ca_validity_days,
                opts.now,
            )?;
            writes.push(PkiWrite {
                path: CA_CERT.into(),
                bytes: ca.cert_pem().as_bytes().to_vec(),
                private: false,
            });
            writes.push(PkiWrite {
                path: CA_KEY.into(),
                bytes: ca.key().pem().as_bytes().to_vec(),
                private: true,
            });
            events.push(PkiEvent {
                cluster: None,
                kind: None,
                action: Action::Created,
                reason: format!(
                    "created the mesh CA `{}` ({})",
                    ca.info().subject,
                    spec.pki.key_algorithm.as_str()
                ),
                not_after: ca.info().not_after,
            });
            ca
        }
    };
    let trust = super::rotation::trust_view(files, ca.cert_pem())?;
    let ca = super::rotation::load_issuer(files, ca, opts.now)?;
    let mut leaves = BTreeMap::new();
    let mut verified = Verified::default();
    if opts.leaves {
        // Clusters are independent: check and issue them on every core, merged in order.
        let per_cluster = crate::par::try_map(&spec.clusters, |c| {
            reconcile_cluster(spec, c, files, &ca, opts)
        })?;
        for c in per_cluster {
            events.extend(c.events);
            writes.extend(c.writes);
            for (_, m) in &c.leaves {
                if c.signed.contains(&m.info.sha256) {
                    verified.insert(ca.info(), &m.info);
                }
            }
            leaves.extend(c.leaves);
        }
    }
    Ok(Reconciled {
        ca,
        trust,
        leaves,
        writes,
        events,
        verified,
    })
}

/// What reconcile did for one cluster.
struct ClusterPki {
    events: Vec<PkiEvent>,
    writes: Vec<PkiWrite>,
    leaves: Vec<((String, LeafKind), LeafMaterial)>,
    /// Fingerprints of the leaves the issuer signed (kept after the check, or issued now);
    /// not those kept outside a `--cluster` selection without a check.
    signed: BTreeSet<String>,
}

fn reconcile_cluster(
    spec: &MeshSpec,
    cluster: &crate::spec::Cluster,
    files: &PkiFiles,
    ca: &Ca,
    opts: &ReconcileOptions,
) -> Result<ClusterPki, PkiError> {
    let mut out = ClusterPki {
        events: Vec::new(),
        writes: Vec::new(),
        leaves: Vec::new(),
        signed: BTreeSet::new(),
    };
    let selected = opts
        .clusters
        .as_ref()
        .is_none_or(|c| c.contains(&cluster.name));
    for (kind, request) in leaves_for(spec, cluster) {
        let (crt_path, key_path) = leaf_paths(&cluster.name, kind);
        let existing = match (text(files, &crt_path)?, text(files, &key_path)?) {
            (Some(c), Some(k)) => Some(assess(&c, &k, &request, ca, spec, opts)),
            (Some(_), None) => Some(Err(format!("{key_path} is missing"))),
            (None, Some(_)) => Some(Err(format!("{crt_path} is missing"))),
            (None, None) => None,
        };
        let (reason, action) = match existing {
            Some(Ok(material)) if !(opts.force && selected) => {
                let days = material.info.days_left(opts.now);
                let reason = if ca.info().not_after - material.info.not_after < Duration::days(1) {
                    format!("valid for {days} more days, until the CA expires")
                } else {
                    format!("valid for {days} more days")
                };
                out.events.push(PkiEvent {
                    cluster: Some(cluster.name.clone()),
                    kind: Some(kind),
                    action: Action::Reused,
                    reason,
                    not_after: material.info.not_after,
                });
                out.signed.insert(material.info.sha256.clone());
                out.leaves.push(((cluster.name.clone(), kind), material));
                continue;
            }
            Some(Ok(_)) => ("re-issue forced".to_owned(), Action::Renewed),
            Some(Err(why)) => (why, Action::Renewed),
            None => ("not issued yet".to_owned(), Action::Issued),
        };
        if !selected {
            // Outside the selection: keep what is there, even if stale, and say so.
            if let (Some(c), Some(k)) = (text(files, &crt_path)?, text(files, &key_path)?)
                && let Ok(info) = CertInfo::from_pem(&c)
            {
                out.events.push(PkiEvent {
                    cluster: Some(cluster.name.clone()),
                    kind: Some(kind),
                    action: Action::Reused,
                    reason: format!("not selected; would re-issue: {reason}"),
                    not_after: info.not_after,
                });
                out.leaves.push((
                    (cluster.name.clone(), kind),
                    LeafMaterial {
                        cert_pem: c,
                        key_pem: k,
                        info,
                    },
                ));
                continue;
            }
        }
        let issued = ca.issue(
            &request,
            spec.pki.key_algorithm,
            spec.pki.cert_validity_days,
            opts.now,
        )?;
        let info = CertInfo::from_pem(&issued.cert_pem)?;
        out.writes.push(PkiWrite {
            path: crt_path,
            bytes: issued.cert_pem.as_bytes().to_vec(),
            private: false,
        });
        out.writes.push(PkiWrite {
            path: key_path,
            bytes: issued.key.pem().as_bytes().to_vec(),
            private: true,
        });
        out.events.push(PkiEvent {
            cluster: Some(cluster.name.clone()),
            kind: Some(kind),
            action,
            reason,
            not_after: info.not_after,
        });
        out.signed.insert(info.sha256.clone());
        out.leaves.push((
            (cluster.name.clone(), kind),
            LeafMaterial {
                cert_pem: issued.cert_pem,
                key_pem: issued.key.pem().to_owned(),
                info,
            },
        ));
    }
    Ok(out)
}

/// Decides whether an existing leaf can be kept; the error is the reason to re-issue.
fn assess(
    cert: &str,
    key: &str,
    request: &LeafRequest,
    ca: &Ca,
    spec: &MeshSpec,
    opts: &ReconcileOptions,
) -> Result<LeafMaterial, String> {
    let info = CertInfo::from_pem(cert).map_err(|e| format!("certificate unreadable: {e}"))?;
    let matches = match embedded_public_key(key) {
        Some(bits) => bits == info.public_key_bits,
        // A key without an embedded public key: load it properly (slow: curve arithmetic).
        None => {
            PrivateKey::from_pem(key)
                .map_err(|e| format!("key unreadable: {e}"))?
                .public_key_spki()
                == info.spki
        }
    };
    if !matches {
        return Err("key does not match certificate".into());
    }
    assess_cert(&info, request, ca.info(), spec, opts)?;
    Ok(LeafMaterial {
        cert_pem: normalize_pem(cert),
        key_pem: normalize_pem(key),
        info,
    })
}

/// Decides whether a leaf certificate (its key aside) can be kept with the CA `ca`; the error
/// is the reason to re-issue. Shared by [`reconcile`] and the keyless check
/// ([`super::public`]), so both judge a certificate alike.
pub(crate) fn assess_cert(
    info: &CertInfo,
    request: &LeafRequest,
    ca: &CertInfo,
    spec: &MeshSpec,
    opts: &ReconcileOptions,
) -> Result<(), String> {
    if !opts.verified.contains(ca, info) && !info.is_signed_by(ca) {
        return Err("signed by a different CA".into());
    }
    if info.key_algorithm != spec.pki.key_algorithm.as_str() {
        return Err(format!(
            "key is {}, pki.keyAlgorithm is {}",
            info.key_algorithm,
            spec.pki.key_algorithm.as_str()
        ));
    }
    if info.common_name != request.common_name {
        return Err(format!(
            "common name is `{}`, needs `{}`",
            info.common_name, request.common_name
        ));
    }
    let mut have_dns = info.dns_names.clone();
    let mut want_dns = request.dns_names.clone();
    have_dns.sort();
    want_dns.sort();
    let mut have_ip = info.ip_addresses.clone();
    let mut want_ip = request.ip_addresses.clone();
    have_ip.sort();
    want_ip.sort();
    if have_dns != want_dns || have_ip != want_ip {
        return Err("subject alternative names changed".into());
    }
    if info.not_after > ca.not_after {
        return Err("outlives the CA".into());
    }
    if opts.now > info.not_after {
        return Err("expired".into());
    }
    // A leaf that already ends with the CA cannot be extended: re-issuing it at every render
    // inside the renewal window would change every Secret each time (Argo CD never settles,
    // every apply restarts agents). The fix for that is a new CA, which `check` and
    // `pki show` point out.
    let ends_with_ca = ca.not_after - info.not_after < Duration::days(1);
    let capped = opts.now + Duration::days(i64::from(spec.pki.cert_validity_days)) >= ca.not_after;
    if info.not_after - opts.now < opts.renew_before && !(capped && ends_with_ca) {
        return Err(format!("expires in {} days", info.days_left(opts.now)));
    }
    Ok(())
}

/// Checks that `info` is a usable CA certificate at `now` (used by `check` on an existing CA).
///
/// # Errors
/// The first problem found.
pub fn validate_ca_cert(info: &CertInfo, now: OffsetDateTime) -> Result<(), PkiError> {
    check_is_ca(info)?;
    check_validity(info, now)
}
