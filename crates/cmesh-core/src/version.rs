//! Cilium chart versions and what each supported version does differently.
//!
//! Every version-dependent decision in cmesh goes through a method here, named after the
//! behaviour, so that "which versions do X" has one answer. Facts come from reading the
//! packaged charts 1.14.0 … 1.20.0 (see docs/ARCHITECTURE.md, "Sources").

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// A Cilium chart version, `MAJOR.MINOR.PATCH` with an optional `-pre` suffix.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CiliumVersion {
    /// Major version (1).
    pub major: u64,
    /// Minor version (14 … 20).
    pub minor: u64,
    /// Patch version.
    pub patch: u64,
    /// Pre-release suffix without the dash, such as `rc.1`.
    pub pre: Option<String>,
}

/// Oldest supported minor release (1.14: the first with Helm-only Cluster Mesh setup).
pub const MIN_SUPPORTED: (u64, u64) = (1, 14);
/// Newest supported minor release.
pub const MAX_SUPPORTED: (u64, u64) = (1, 20);

/// The newest release cmesh has rendered for and tested (the one to name when advising an
/// upgrade).
pub const NEWEST_TESTED: &str = "1.20.0";
/// How many of the newest minor releases Cilium maintains (security and bug fixes).
pub const MAINTAINED_MINORS: u64 = 3;

/// Why a version string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a version of the form MAJOR.MINOR.PATCH (for example 1.14.2)")]
pub struct VersionParseError {
    /// The rejected text.
    pub text: String,
}

impl FromStr for CiliumVersion {
    type Err = VersionParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || VersionParseError { text: s.to_owned() };
        let t = s.strip_prefix('v').unwrap_or(s);
        let (core, pre) = match t.split_once('-') {
            Some((c, p)) if !p.is_empty() => (c, Some(p.to_owned())),
            Some(_) => return Err(err()),
            None => (t, None),
        };
        let parts: Vec<&str> = core.split('.').collect();
        if parts.len() != 3 {
            return Err(err());
        }
        let num = |p: &str| -> Result<u64, VersionParseError> {
            if p.is_empty()
                || !p.bytes().all(|b| b.is_ascii_digit())
                || (p.len() > 1 && p.starts_with('0'))
            {
                return Err(err());
            }
            p.parse().map_err(|_| err())
        };
        Ok(Self {
            major: num(parts[0])?,
            minor: num(parts[1])?,
            patch: num(parts[2])?,
            pre,
        })
    }
}

impl fmt::Display for CiliumVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)?;
        if let Some(p) = &self.pre {
            write!(f, "-{p}")?;
        }
        Ok(())
    }
}

/// Semantic order: major, minor, patch, then a pre-release before its release (pre-release
/// words compared as text, enough for Cilium's `pre.N`, `rc.N`).
impl Ord for CiliumVersion {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.major, self.minor, self.patch)
            .cmp(&(other.major, other.minor, other.patch))
            .then_with(|| match (&self.pre, &other.pre) {
                (None, None) => std::cmp::Ordering::Equal,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some(_), None) => std::cmp::Ordering::Less,
                (Some(a), Some(b)) => a.cmp(b),
            })
    }
}

impl PartialOrd for CiliumVersion {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Serialize for CiliumVersion {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl CiliumVersion {
    /// Builds a release version.
    pub const fn new(major: u64, minor: u64, patch: u64) -> Self {
        Self {
            major,
            minor,
            patch,
            pre: None,
        }
    }

    /// `(major, minor)`.
    pub fn minor_release(&self) -> (u64, u64) {
        (self.major, self.minor)
    }

    /// True if this is at least `1.minor`.
    pub fn at_least(&self, minor: u64) -> bool {
        self.minor_release() >= (1, minor)
    }

    /// Why going from `self` (what a cluster runs) to `to` is not one step Cilium supports:
    /// "the only tested upgrade path is consecutive minor releases" (Cilium's upgrade guide),
    /// so a jump over a minor is refused; patches, the same minor and the next are fine, and so
    /// is a downgrade by one minor (the rollback path the guide documents). `None`: fine.
    pub fn step_problem(&self, to: &CiliumVersion) -> Option<String> {
        let (from, next) = (self.minor_release(), to.minor_release());
        if from.0 != next.0 {
            return Some(format!("{self} → {to} changes the major version"));
        }
        if next.1 > from.1 + 1 {
            let skipped: Vec<String> = (from.1 + 1..next.1)
                .map(|m| format!("{}.{m}", from.0))
                .collect();
            return Some(format!(
                "{self} → {to} skips {}: Cilium supports upgrades one minor release at a time",
                skipped.join(", ")
            ));
        }
        if from.1 > next.1 + 1 {
            return Some(format!(
                "{self} → {to} goes back more than one minor release: Cilium documents rollbacks to the previous minor only"
            ));
        }
        None
    }

    /// True if Cilium still maintains this minor release, as far as cmesh knows: one of the
    /// [`MAINTAINED_MINORS`] newest up to [`MAX_SUPPORTED`].
    pub fn upstream_maintained(&self) -> bool {
        let oldest = (MAX_SUPPORTED.0, MAX_SUPPORTED.1 + 1 - MAINTAINED_MINORS);
        self.minor_release() >= oldest
    }

    /// True if within the supported range 1.14.0 … 1.20.x.
    pub fn is_supported(&self) -> bool {
        (MIN_SUPPORTED..=MAX_SUPPORTED).contains(&self.minor_release())
    }

    /// `clustermesh.maxConnectedClusters` exists (and 511 is allowed): 1.15+.
    pub fn has_max_connected_clusters(&self) -> bool {
        self.at_least(15)
    }

    /// The chart ships `values.schema.json`: 1.16+.
    pub fn has_values_schema(&self) -> bool {
        self.at_least(16)
    }

    /// KVStoreMesh is on unless disabled: 1.16+.
    pub fn kvstoremesh_default(&self) -> bool {
        self.at_least(16)
    }

    /// `clustermesh.cacheTTL`: how long a lost peer's state is kept (1.19).
    pub fn has_cache_ttl(&self) -> bool {
        self.at_least(19)
    }

    /// `clustermesh.policyDefaultLocalCluster` exists: 1.18+.
    pub fn has_policy_default_local_cluster(&self) -> bool {
        self.at_least(18)
    }

    /// The chart's default of `clustermesh.policyDefaultLocalCluster`, or what the agent does
    /// without the key: true from 1.19 (cilium/cilium#40609), false before.
    pub fn policy_default_local_cluster_default(&self) -> bool {
        self.at_least(19)
    }

    /// `clustermesh.enableEndpointSliceSynchronization` exists: 1.16+.
    pub fn has_endpoint_slice_sync(&self) -> bool {
        self.at_least(16)
    }

    /// Affected by cilium#24692 (agents reach their own apiserver when clusters share a
    /// NodePort): fixed in 1.19.
    pub fn has_shared_nodeport_bug(&self) -> bool {
        !self.at_least(19)
    }

    /// Extra server SANs live under `clustermesh.apiserver.tls.auto.server.*` (1.20+) rather
    /// than `clustermesh.apiserver.tls.server.*`.
    pub fn san_keys_under_auto(&self) -> bool {
        self.at_least(20)
    }

    /// Provided clustermesh certificates can only be given as values (`tls.server.cert` …):
    /// 1.14 and 1.15, whose `tls-provided` templates `required` them. 1.16 … 1.19 also accept
    /// pre-created Secrets (`tls.enableSecrets: false`), and 1.20 accepts nothing else.
    pub fn clustermesh_certs_only_as_values(&self) -> bool {
        !self.at_least(16)
    }

    /// `clustermesh.apiserver.tls.enableSecrets` exists (1.16 … 1.19).
    pub fn has_tls_enable_secrets(&self) -> bool {
        self.at_least(16) && !self.at_least(20)
    }

    /// The chart writes a `clustermesh-apiserver-local-cert` for agents talking to the local
    /// KVStoreMesh etcd: 1.16+ (when KVStoreMesh is on).
    pub fn has_local_cert(&self) -> bool {
        self.at_least(16)
    }

    /// The clustermesh-apiserver server certificate's common name for this version.
    pub fn server_common_name(&self, namespace: &str) -> String {
        if self.at_least(20) {
            format!("clustermesh-apiserver.{namespace}.svc")
        } else {
            "clustermesh-apiserver.cilium.io".to_owned()
        }
    }

    /// The DNS SANs the chart puts on the server certificate before any extras, in order.
    pub fn server_default_dns_names(&self, namespace: &str) -> Vec<String> {
        let svc = format!("clustermesh-apiserver.{namespace}.svc");
        if self.at_least(20) {
            vec![svc, "*.mesh.cilium.io".to_owned()]
        } else {
            vec![
                "clustermesh-apiserver.cilium.io".to_owned(),
                "*.mesh.cilium.io".to_owned(),
                svc,
            ]
        }
    }

    /// The admin certificate carries DNS SAN `localhost` up to 1.19; none from 1.20.
    pub fn admin_has_localhost_san(&self) -> bool {
        !self.at_least(20)
    }

    /// Default `clustermesh.apiserver.tls.authMode` of the chart.
    pub fn default_auth_mode(&self) -> &'static str {
        if self.at_least(19) {
            "migration"
        } else {
            "legacy"
        }
    }

    /// The chart's `clustermesh.apiserver.tls.auto.schedule` has a default (1.20+). Before,
    /// `certificates: cronJob` gets the one-off Job only, and nothing renews the leaves unless
    /// the schedule is set.
    pub fn has_clustermesh_cronjob_schedule_default(&self) -> bool {
        self.at_least(20)
    }

    /// Hubble's `existingSecret` keys exist (1.16.19+; not in 1.16.0).
    pub fn has_hubble_existing_secret(&self) -> bool {
        self.at_least(17) || (self.minor_release() == (1, 16) && self.patch >= 19)
    }

    /// `kubeProxyReplacement` accepts only true/false (1.16+); older versions also take the
    /// deprecated `strict`, `partial` and `disabled`.
    pub fn kube_proxy_replacement_legacy_words(&self) -> bool {
        !self.at_least(16)
    }

    /// `config.clusters` may be a map keyed by name: 1.19+.
    pub fn clusters_may_be_map(&self) -> bool {
        self.at_least(19)
    }

    /// cert-manager `subject`/`privateKey` settings exist: 1.20+.
    pub fn has_cert_manager_subject(&self) -> bool {
        self.at_least(20)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrades_go_one_minor_release_at_a_time() {
        let v = |s: &str| s.parse::<CiliumVersion>().unwrap();
        for (from, to) in [
            ("1.16.19", "1.16.19"),
            ("1.16.18", "1.16.19"),
            ("1.16.19", "1.17.17"),
            ("1.19.7", "1.20.0"),
            ("1.17.17", "1.16.19"),
        ] {
            assert_eq!(v(from).step_problem(&v(to)), None, "{from} → {to}");
        }
        assert_eq!(
            v("1.16.19").step_problem(&v("1.18.11")).as_deref(),
            Some(
                "1.16.19 → 1.18.11 skips 1.17: Cilium supports upgrades one minor release at a time"
            )
        );
        assert!(
            v("1.14.2")
                .step_problem(&v("1.20.0"))
                .unwrap()
                .contains("skips 1.15, 1.16, 1.17, 1.18, 1.19")
        );
        assert!(
            v("1.20.0")
                .step_problem(&v("1.18.11"))
                .unwrap()
                .contains("goes back more than one minor release")
        );
    }

    #[test]
    fn parses_and_orders() {
        let v: CiliumVersion = "1.14.2".parse().unwrap();
        assert_eq!(v, CiliumVersion::new(1, 14, 2));
        assert_eq!(
            "v1.20.0".parse::<CiliumVersion>().unwrap().to_string(),
            "1.20.0"
        );
        assert_eq!(
            "1.21.0-pre.0"
                .parse::<CiliumVersion>()
                .unwrap()
                .pre
                .as_deref(),
            Some("pre.0")
        );
        for bad in ["1.14", "1.14.x", "", "1..2", "1.014.2", "1.14.2-", "latest"] {
            assert!(bad.parse::<CiliumVersion>().is_err(), "{bad}");
        }
        let order: Vec<CiliumVersion> = ["1.14.2", "1.16.19", "1.20.0-pre.1", "1.20.0", "1.20.1"]
            .iter()
            .map(|t| t.parse().unwrap())
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
        assert!(v.is_supported());
        assert!(!"1.13.9".parse::<CiliumVersion>().unwrap().is_supported());
        assert!(!"1.21.0".parse::<CiliumVersion>().unwrap().is_supported());
        assert!("1.20.7".parse::<CiliumVersion>().unwrap().is_supported());
    }

    #[test]
    fn gates() {
        let v = |s: &str| s.parse::<CiliumVersion>().unwrap();
        assert!(!v("1.14.2").has_max_connected_clusters());
        assert!(v("1.15.0").has_max_connected_clusters());
        assert!(v("1.18.12").has_shared_nodeport_bug());
        assert!(!v("1.19.0").has_shared_nodeport_bug());
        assert!(!v("1.16.0").has_hubble_existing_secret());
        assert!(v("1.16.19").has_hubble_existing_secret());
        assert_eq!(
            v("1.20.0").server_common_name("kube-system"),
            "clustermesh-apiserver.kube-system.svc"
        );
        assert_eq!(
            v("1.19.6").server_common_name("kube-system"),
            "clustermesh-apiserver.cilium.io"
        );
    }
}
