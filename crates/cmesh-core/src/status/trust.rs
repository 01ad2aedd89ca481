//! Trust between clusters, judged from their own Secrets: which CAs each cluster trusts, which
//! CA issued each certificate it serves and presents, whether every peer trusts those, and how
//! long each certificate has left. A rotation applied to some clusters and not others shows
//! up here by name (which cluster, which certificate, which CA), before a handshake fails.

use std::collections::BTreeMap;

use serde::Serialize;
use time::OffsetDateTime;

use super::{Check, Observed, Outcome, check, short};
use crate::pki::CertInfo;
use crate::spec::{Cluster, MeshSpec};

/// Secrets whose certificates the clustermesh components use: the server peers dial, the
/// client certificate this cluster presents to peers, the admin and local clients, and Hubble.
pub const CERT_SECRETS: [&str; 6] = [
    "clustermesh-apiserver-server-cert",
    "clustermesh-apiserver-remote-cert",
    "clustermesh-apiserver-admin-cert",
    "clustermesh-apiserver-local-cert",
    "hubble-server-certs",
    "hubble-relay-client-certs",
];

/// The ConfigMap of the chart's trust bundle (`tls.caBundle.name`'s default).
pub const BUNDLE_CONFIGMAP: &str = "cilium-root-ca.crt";

/// The public half of a TLS Secret: never its key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretCerts {
    /// `ca.crt` (PEM, possibly several CAs).
    pub ca_crt: Option<String>,
    /// `tls.crt` (PEM).
    pub tls_crt: Option<String>,
}

/// Warn this many days before a certificate in a cluster expires.
pub const LEAF_EXPIRY_WARNING_DAYS: i64 = 30;

/// Every certificate a PEM text holds (unreadable blocks left out).
fn certs(pem: &str) -> Vec<CertInfo> {
    pem.split_inclusive("-----END CERTIFICATE-----")
        .filter(|p| p.contains("-----BEGIN CERTIFICATE-----"))
        .filter_map(|p| CertInfo::from_pem(p.trim_start()).ok())
        .collect()
}

/// How many certificates a PEM text holds.
pub fn count_certs(pem: &str) -> usize {
    certs(pem).len()
}

/// Whether a PEM text holds the certificate with fingerprint `sha256`.
pub fn holds(pem: &str, sha256: &str) -> bool {
    certs(pem).iter().any(|c| c.sha256 == sha256)
}

/// Whether the release enables the chart's trust bundle (`tls.caBundle.enabled`).
fn bundle_enabled(obs: &Observed) -> bool {
    obs.release_values
        .as_ref()
        .ok()
        .and_then(Option::as_ref)
        .and_then(|v| v.get(&["tls", "caBundle", "enabled"]))
        .and_then(crate::value::Value::as_bool)
        .unwrap_or(false)
}

/// The CAs a cluster's clustermesh components trust: a CA counts only if every CA file they
/// read holds it (the chart's bundle when enabled, and each Secret's `ca.crt`, which some
/// components read instead: 1.16's KVStoreMesh, 1.14's and 1.15's everything). `None` when
/// nothing could be read.
pub fn trusted(obs: &Observed) -> Option<Vec<CertInfo>> {
    let secrets = obs.certs.as_ref().ok()?;
    let mut sources: Vec<Vec<CertInfo>> = Vec::new();
    if bundle_enabled(obs)
        && let Ok(Some(b)) = &obs.trust_bundle
    {
        sources.push(certs(b));
    }
    for name in [
        "clustermesh-apiserver-server-cert",
        "clustermesh-apiserver-remote-cert",
    ] {
        if let Some(ca) = secrets.get(name).and_then(|s| s.ca_crt.as_deref()) {
            sources.push(certs(ca));
        }
    }
    let mut it = sources.into_iter();
    let mut common = it.next()?;
    for s in it {
        common.retain(|c| s.iter().any(|x| x.sha256 == c.sha256));
    }
    Some(common)
}

fn leaf(obs: &Observed, secret: &str) -> Option<CertInfo> {
    let pem = obs
        .certs
        .as_ref()
        .ok()?
        .get(secret)?
        .tls_crt
        .as_deref()?
        .to_owned();
    certs(&pem).into_iter().next()
}

fn name_ca(ca: &CertInfo) -> String {
    format!("`{}` ({})", ca.subject, short(&ca.sha256))
}

fn names(cas: &[CertInfo]) -> String {
    if cas.is_empty() {
        return "no CA".into();
    }
    cas.iter().map(name_ca).collect::<Vec<_>>().join(" and ")
}

/// Which of `known` signed `cert`, or its issuer's name when none did.
fn issuer_of(cert: &CertInfo, known: &[CertInfo]) -> String {
    known
        .iter()
        .find(|ca| cert.is_signed_by(ca))
        .map(name_ca)
        .unwrap_or_else(|| format!("`{}` (a CA no cluster trusts)", cert.issuer))
}

/// The `trust` check of each cluster (by name), from every cluster's observations: this
/// cluster's agents and KVStoreMesh must trust each peer's server certificate, and each peer
/// must trust the client certificate this cluster presents.
pub fn trust_checks(spec: &MeshSpec, all: &[(&Cluster, &Observed)]) -> BTreeMap<String, Check> {
    let trust: BTreeMap<&str, Option<Vec<CertInfo>>> = all
        .iter()
        .map(|(c, o)| (c.name.as_str(), trusted(o)))
        .collect();
    let mut known: Vec<CertInfo> = Vec::new();
    for cas in trust.values().flatten() {
        for ca in cas {
            if !known.iter().any(|k| k.sha256 == ca.sha256) {
                known.push(ca.clone());
            }
        }
    }
    let mut out = BTreeMap::new();
    for (cluster, obs) in all {
        let name = cluster.name.as_str();
        if obs.api.is_err() {
            continue;
        }
        let Some(Some(mine)) = trust.get(name) else {
            out.insert(
                name.to_owned(),
                check(
                    "trust",
                    Outcome::Skip,
                    match &obs.certs {
                        Err(e) => e.clone(),
                        Ok(_) => "no CA certificate in the cluster's Secrets to judge".into(),
                    },
                ),
            );
            continue;
        };
        let server = leaf(obs, "clustermesh-apiserver-server-cert");
        let client = leaf(obs, "clustermesh-apiserver-remote-cert");
        let trusts = |cas: &[CertInfo], cert: &CertInfo| cas.iter().any(|ca| cert.is_signed_by(ca));
        let mut problems = Vec::new();
        for (peer, peer_obs) in all.iter().filter(|(p, _)| p.name != cluster.name) {
            if !spec.clusters.iter().any(|c| c.name == peer.name) {
                continue;
            }
            if let Some(peer_server) = leaf(peer_obs, "clustermesh-apiserver-server-cert")
                && !trusts(mine, &peer_server)
            {
                problems.push(format!(
                    "{name} does not trust {}'s clustermesh-apiserver certificate, issued by {}; {name} trusts {}",
                    peer.name,
                    issuer_of(&peer_server, &known),
                    names(mine)
                ));
            }
            if let (Some(c), Some(Some(theirs))) = (&client, trust.get(peer.name.as_str()))
                && !trusts(theirs, c)
            {
                problems.push(format!(
                    "{} does not trust the client certificate {name} presents (clustermesh-apiserver-remote-cert), issued by {}; {} trusts {}",
                    peer.name,
                    issuer_of(c, &known),
                    peer.name,
                    names(theirs)
                ));
            }
        }
        let c = if problems.is_empty() {
            let issued: Vec<String> = [("serving", &server), ("client", &client)]
                .iter()
                .filter_map(|(what, c)| {
                    c.as_ref()
                        .map(|c| format!("{what} certificate from {}", issuer_of(c, &known)))
                })
                .collect();
            check(
                "trust",
                Outcome::Pass,
                format!(
                    "trusts {}{}{}",
                    names(mine),
                    if issued.is_empty() { "" } else { "; " },
                    issued.join(", ")
                ),
            )
        } else {
            check(
                "trust",
                Outcome::Fail,
                format!(
                    "{}: apply the CA rotation's current stage to every cluster (`cmesh pki rotate status` says which; `cmesh apply`)",
                    problems.join("; ")
                ),
            )
        };
        out.insert(name.to_owned(), c);
    }
    out
}

/// The `certificates` check: every certificate in the cluster's Secrets, failing when one has
/// expired and warning within [`LEAF_EXPIRY_WARNING_DAYS`] of expiry.
pub fn expiry_check(obs: &Observed, now: OffsetDateTime) -> Check {
    let secrets = match &obs.certs {
        Err(e) => return check("certificates", Outcome::Skip, e.clone()),
        Ok(s) => s,
    };
    let mut expired = Vec::new();
    let mut soon = Vec::new();
    let mut first: Option<(String, CertInfo)> = None;
    for (name, s) in secrets {
        let Some(cert) = s
            .tls_crt
            .as_deref()
            .and_then(|p| certs(p).into_iter().next())
        else {
            continue;
        };
        let days = cert.days_left(now);
        if now > cert.not_after {
            expired.push(format!(
                "{name} expired on {}",
                crate::pki::fmt_date(cert.not_after)
            ));
        } else if days < LEAF_EXPIRY_WARNING_DAYS {
            soon.push(format!("{name} in {days} days"));
        }
        if first
            .as_ref()
            .is_none_or(|(_, f)| cert.not_after < f.not_after)
        {
            first = Some((name.clone(), cert));
        }
    }
    let fix = "renew: `cmesh pki renew`, then `cmesh render` and `cmesh apply` (cert-manager and cronJob renew by themselves when their schedule runs)";
    if !expired.is_empty() {
        return check(
            "certificates",
            Outcome::Fail,
            format!("{}; peers refuse it: {fix}", expired.join(", ")),
        );
    }
    if !soon.is_empty() {
        return check(
            "certificates",
            Outcome::Warn,
            format!("expiring: {}; {fix}", soon.join(", ")),
        );
    }
    match first {
        None => check(
            "certificates",
            Outcome::Skip,
            "no certificate Secrets to read",
        ),
        Some((name, cert)) => check(
            "certificates",
            Outcome::Pass,
            format!(
                "{} certificate(s); the first to expire is {name}, on {} ({} days)",
                secrets.values().filter(|s| s.tls_crt.is_some()).count(),
                crate::pki::fmt_date(cert.not_after),
                cert.days_left(now)
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{Ca, LeafRequest};
    use crate::spec::{self, KeyAlgorithm, example};
    use time::Duration;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-12-01 12:00 UTC);

    fn ca(name: &str) -> Ca {
        Ca::generate(name, KeyAlgorithm::EcdsaP256, 3650, NOW).unwrap()
    }

    fn leaf(ca: &Ca, days: u32, at: OffsetDateTime) -> String {
        ca.issue(
            &LeafRequest {
                common_name: "x".into(),
                dns_names: vec!["x".into()],
                ip_addresses: vec![],
            },
            KeyAlgorithm::EcdsaP256,
            days,
            at,
        )
        .unwrap()
        .cert_pem
    }

    /// A cluster whose Secrets hold `trust` as ca.crt and leaves from `issuer`.
    fn obs(trust: &[&Ca], issuer: &Ca, bundle: bool) -> Observed {
        let mut o = Observed::unreachable(String::new());
        o.api = Ok("v1.36.3".into());
        let ca_crt: String = trust.iter().map(|c| c.cert_pem()).collect();
        let mut certs = BTreeMap::new();
        for name in [
            "clustermesh-apiserver-server-cert",
            "clustermesh-apiserver-remote-cert",
        ] {
            certs.insert(
                name.to_owned(),
                SecretCerts {
                    ca_crt: Some(ca_crt.clone()),
                    tls_crt: Some(leaf(issuer, 365, NOW)),
                },
            );
        }
        o.certs = Ok(certs);
        o.trust_bundle = Ok(bundle.then(|| ca_crt.clone()));
        o.release_values = Ok(Some(crate::value::Value::from_json(
            &serde_json::json!({"tls": {"caBundle": {"enabled": bundle}}}),
        )));
        o
    }

    fn judge(a: &Observed, b: &Observed) -> BTreeMap<String, Check> {
        let spec = spec::load("lab", &example::builtin()).unwrap().0;
        let all = [(&spec.clusters[0], a), (&spec.clusters[1], b)];
        trust_checks(&spec, &all)
    }

    #[test]
    fn one_ca_everywhere_passes_and_names_the_issuer() {
        let old = ca("old");
        let t = judge(&obs(&[&old], &old, false), &obs(&[&old], &old, false));
        for c in t.values() {
            assert_eq!(c.outcome, Outcome::Pass, "{}", c.reason);
            assert!(
                c.reason.starts_with("trusts `CN=old`")
                    && c.reason.contains("serving certificate from `CN=old`"),
                "{}",
                c.reason
            );
        }
    }

    /// `reissue` applied to k8s01 while k8s02 never got `begin`'s trust: both sides named.
    #[test]
    fn a_stage_skipped_on_one_cluster_is_named_precisely() {
        let (old, new) = (ca("old"), ca("new"));
        let t = judge(&obs(&[&old, &new], &new, true), &obs(&[&old], &old, false));
        let a = &t["k8s01"];
        assert_eq!(a.outcome, Outcome::Fail);
        assert!(
            a.reason.contains("k8s02 does not trust the client certificate k8s01 presents (clustermesh-apiserver-remote-cert), issued by `CN=new`"),
            "{}",
            a.reason
        );
        let b = &t["k8s02"];
        assert_eq!(b.outcome, Outcome::Fail);
        assert!(
            b.reason.contains(
                "k8s02 does not trust k8s01's clustermesh-apiserver certificate, issued by `CN=new`"
            ) && b.reason.contains("k8s02 trusts `CN=old`")
                && b.reason.contains("cmesh pki rotate status"),
            "{}",
            b.reason
        );
        // One stage apart is fine: k8s02 on `begun` trusts both.
        let t = judge(
            &obs(&[&old, &new], &new, true),
            &obs(&[&old, &new], &old, true),
        );
        assert!(t.values().all(|c| c.outcome == Outcome::Pass), "{t:#?}");
    }

    /// A CA counts only if every CA file holds it: a bundle with both but a Secret's ca.crt
    /// with the old CA alone (1.16's KVStoreMesh reads the latter) does not trust the new CA.
    #[test]
    fn a_ca_missing_from_one_ca_file_is_not_trusted() {
        let (old, new) = (ca("old"), ca("new"));
        let mut b = obs(&[&old], &old, true);
        b.trust_bundle = Ok(Some(format!("{}{}", old.cert_pem(), new.cert_pem())));
        let t = judge(&obs(&[&old, &new], &new, true), &b);
        assert_eq!(t["k8s02"].outcome, Outcome::Fail, "{}", t["k8s02"].reason);
        assert_eq!(trusted(&b).unwrap().len(), 1);
    }

    #[test]
    fn expiring_and_expired_certificates() {
        let old = ca("old");
        let mut o = obs(&[&old], &old, false);
        assert_eq!(expiry_check(&o, NOW).outcome, Outcome::Pass);
        if let Ok(certs) = &mut o.certs {
            certs
                .get_mut("clustermesh-apiserver-remote-cert")
                .unwrap()
                .tls_crt = Some(leaf(&old, 20, NOW));
        }
        let c = expiry_check(&o, NOW);
        assert_eq!(c.outcome, Outcome::Warn);
        assert!(
            c.reason
                .contains("clustermesh-apiserver-remote-cert in 19 days")
                || c.reason
                    .contains("clustermesh-apiserver-remote-cert in 20 days"),
            "{}",
            c.reason
        );
        let c = expiry_check(&o, NOW + Duration::days(21));
        assert_eq!(c.outcome, Outcome::Fail);
        assert!(
            c.reason
                .contains("clustermesh-apiserver-remote-cert expired on"),
            "{}",
            c.reason
        );
        assert!(c.reason.contains("cmesh pki renew"), "{}", c.reason);
    }
}
