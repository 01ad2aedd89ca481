//! What can be known about the PKI without a single private key: the CA certificate and the
//! leaf certificates a committed tree carries, each judged as [`super::store::reconcile`]
//! judges a leaf it keeps (signed by this CA, the names the chart version needs, not expired
//! or due for renewal), the key aside. `render --check` uses it in a plain clone of a GitOps
//! repository, where `ca.key` and every secret file are (rightly) absent.

use std::collections::BTreeMap;

use time::Duration;

use super::PkiError;
use super::catalog::{LeafKind, leaves_for};
use super::cert::CertInfo;
use super::store::{Action, PkiEvent, ReconcileOptions, assess_cert, validate_ca_cert};
use crate::spec::{Cluster, MeshSpec};

/// The public side of the PKI, checked.
#[derive(Debug, Clone)]
pub struct PublicPki {
    /// The CA certificate, PEM.
    pub ca_cert_pem: String,
    /// Leaf certificates found in the tree and kept, by cluster and kind (PEM).
    pub leaves: BTreeMap<(String, LeafKind), String>,
    /// One event per leaf the tree should carry: reused, or what a render would do and why.
    pub events: Vec<PkiEvent>,
}

/// Checks the CA certificate and the leaf certificates `committed` in the tree (by cluster
/// and kind) for `spec`. Only leaves for which `in_tree` is true are judged: the others live
/// in secret files a keyless check never sees.
///
/// # Errors
/// [`PkiError`] when the CA certificate is unreadable, not a CA, or not valid now.
pub fn verify_public(
    spec: &MeshSpec,
    ca_cert_pem: &str,
    committed: &BTreeMap<(String, LeafKind), String>,
    in_tree: impl Fn(&Cluster, LeafKind) -> bool,
    opts: &ReconcileOptions,
) -> Result<PublicPki, PkiError> {
    let ca = CertInfo::from_pem(ca_cert_pem).map_err(|e| PkiError::InFile {
        file: super::store::CA_CERT.into(),
        source: Box::new(e),
    })?;
    validate_ca_cert(&ca, opts.now)?;
    let mut leaves = BTreeMap::new();
    let mut events = Vec::new();
    if opts.leaves {
        for cluster in &spec.clusters {
            for (kind, request) in leaves_for(spec, cluster) {
                if !in_tree(cluster, kind) {
                    continue;
                }
                let key = (cluster.name.clone(), kind);
                let judged = committed.get(&key).map(|pem| {
                    CertInfo::from_pem(pem)
                        .map_err(|e| format!("certificate unreadable: {e}"))
                        .and_then(|info| {
                            assess_cert(&info, &request, &ca, spec, opts).map(|()| info)
                        })
                });
                let (action, reason, not_after) = match judged {
                    Some(Ok(info)) => {
                        let days = info.days_left(opts.now);
                        let reason = if ca.not_after - info.not_after < Duration::days(1) {
                            format!("valid for {days} more days, until the CA expires")
                        } else {
                            format!("valid for {days} more days")
                        };
                        leaves.insert(key, committed[&(cluster.name.clone(), kind)].clone());
                        (Action::Reused, reason, info.not_after)
                    }
                    Some(Err(why)) => (Action::Renewed, why, ca.not_after),
                    None => (
                        Action::Issued,
                        "not in the tree yet".to_owned(),
                        ca.not_after,
                    ),
                };
                events.push(PkiEvent {
                    cluster: Some(cluster.name.clone()),
                    kind: Some(kind),
                    action,
                    reason,
                    not_after,
                });
            }
        }
    }
    Ok(PublicPki {
        ca_cert_pem: super::normalize_pem(ca_cert_pem),
        leaves,
        events,
    })
}
