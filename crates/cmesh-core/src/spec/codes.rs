//! Every rule cmesh checks, with its stable code, default severity and title.
//!
//! Codes are part of the interface (users filter on them, docs link to them): never renumber
//! a rule, only add new ones. docs/mesh-spec.md lists them; a test keeps the two in step.

use crate::diag::{Rule, Severity};

const fn error(code: &'static str, title: &'static str) -> Rule {
    Rule {
        code,
        severity: Severity::Error,
        title,
    }
}

const fn warning(code: &'static str, title: &'static str) -> Rule {
    Rule {
        code,
        severity: Severity::Warning,
        title,
    }
}

/// The text is not valid YAML, or holds more than one document.
pub const YAML_SYNTAX: Rule = error("CM001", "not valid YAML, or more than one document");
/// The file is empty.
pub const EMPTY: Rule = error("CM002", "the file is empty");
/// A mapping key appears twice.
pub const DUPLICATE_KEY: Rule = error("CM003", "a key appears twice in one mapping");
/// A key cmesh does not know.
pub const UNKNOWN_KEY: Rule = error("CM004", "unknown key");
/// A value of the wrong type.
pub const WRONG_TYPE: Rule = error("CM005", "value has the wrong type");
/// A required field is missing.
pub const MISSING_FIELD: Rule = error("CM006", "required field is missing");
/// A value outside the allowed set or format.
pub const INVALID_VALUE: Rule = error("CM007", "value is not one of the allowed values or formats");
/// A plain scalar in Helm values that YAML 1.1 (Helm) reads differently from YAML 1.2.
pub const YAML11_AMBIGUOUS: Rule = error(
    "CM008",
    "plain scalar in Helm values that Helm's YAML 1.1 reads differently",
);
/// Input over the size, depth or alias-expansion limits.
pub const TOO_LARGE: Rule = error("CM009", "input exceeds size, nesting or alias limits");
/// An integer written with a leading zero.
pub const LEADING_ZERO: Rule = warning("CM010", "integer written with a leading zero");

/// Two clusters with one name.
pub const DUPLICATE_NAME: Rule = error("CM101", "cluster names must be unique");
/// A cluster name that is not a DNS-1123 label.
pub const NAME_FORMAT: Rule = error("CM102", "cluster name is not a DNS-1123 label");
/// A cluster name longer than 32 characters.
pub const NAME_LENGTH: Rule = error("CM103", "cluster name is longer than 32 characters");
/// The cluster name `default` (only allowed with ID 0, i.e. without a mesh).
pub const NAME_DEFAULT: Rule = error("CM104", "cluster name `default` with a non-zero ID");
/// A mesh name that is not a DNS label.
pub const MESH_NAME: Rule = error("CM105", "mesh name is not a DNS-1123 label");
/// Two clusters with one ID.
pub const DUPLICATE_ID: Rule = error("CM110", "cluster IDs must be unique");
/// A cluster ID outside 1..255 (1..511).
pub const ID_RANGE: Rule = error("CM111", "cluster ID out of range for maxConnectedClusters");
/// maxConnectedClusters other than 255 or 511.
pub const MAX_CLUSTERS: Rule = error("CM112", "maxConnectedClusters must be 255 or 511");
/// Fewer than two clusters.
pub const SINGLE_CLUSTER: Rule = warning("CM113", "a mesh needs at least two clusters");
/// More clusters than maxConnectedClusters allows.
pub const TOO_MANY_CLUSTERS: Rule =
    error("CM114", "more clusters than maxConnectedClusters allows");
/// ENI / AWS VPC CNI clusters with IDs the chart rejects (cilium#21330).
pub const ENI_ID: Rule = error(
    "CM115",
    "cluster ID 128-255 or 384-511 in ENI or aws-cni mode",
);

/// A CIDR that does not parse.
pub const CIDR_SYNTAX: Rule = error("CM201", "not a CIDR");
/// A CIDR with host bits set.
pub const CIDR_HOST_BITS: Rule = error("CM202", "CIDR has host bits set");
/// Two CIDRs overlap.
pub const CIDR_OVERLAP: Rule = error("CM203", "pod, service and node CIDRs must not overlap");
/// podCIDRMaskSize not longer than a pool's prefix, or too long.
pub const MASK_SIZE: Rule = error(
    "CM204",
    "podCIDRMaskSize must be longer than every pool prefix",
);
/// podCIDRMaskSize leaves room for too few nodes.
pub const MASK_ROOM: Rule = error(
    "CM205",
    "podCIDRMaskSize leaves room for fewer than 4 nodes",
);
/// Clusters with no IP family in common.
pub const IP_FAMILY: Rule = warning(
    "CM206",
    "clusters with no common IP family cannot reach each other",
);

/// No address and no ips.
pub const NO_ENDPOINT: Rule = error("CM301", "cluster has no clustermesh address or ips");
/// No port.
pub const NO_PORT: Rule = error("CM302", "cluster has no clustermesh port");
/// NodePort outside 30000-32767.
pub const NODEPORT_RANGE: Rule = error("CM303", "NodePort outside 30000-32767");
/// Shared NodePort on Cilium < 1.19 (cilium#24692).
pub const SHARED_NODEPORT: Rule = error("CM304", "two clusters share a NodePort on Cilium < 1.19");
/// Both address and ips set.
pub const ADDRESS_AND_IPS: Rule = warning("CM305", "both address and ips are set; ips wins");
/// An address that is neither a DNS name nor an IP.
pub const ADDRESS_FORMAT: Rule = error("CM306", "address is neither a DNS name nor an IP address");
/// An `ips` entry that is not an IP address.
pub const IPS_FORMAT: Rule = error("CM307", "ips entry is not an IP address");
/// LoadBalancer with a port other than 2379.
pub const LB_PORT: Rule = warning("CM308", "LoadBalancer endpoints listen on 2379");
/// Two clusters with the same endpoint.
pub const DUPLICATE_ENDPOINT: Rule =
    error("CM309", "two clusters have the same clustermesh endpoint");
/// An apiServer that is not host[:port].
pub const API_SERVER_FORMAT: Rule = error("CM310", "apiServer is not HOST[:PORT]");
/// The mesh domain is not a DNS name.
pub const DOMAIN_FORMAT: Rule = error("CM311", "clustermesh.domain is not a DNS name");

/// A version string that does not parse.
pub const VERSION_SYNTAX: Rule = error("CM401", "Cilium version is not MAJOR.MINOR.PATCH");
/// A version outside 1.14.0 .. 1.20.x.
pub const VERSION_RANGE: Rule = error("CM402", "Cilium version outside the supported range");
/// An option that needs a newer Cilium.
pub const NEEDS_VERSION: Rule = error("CM403", "option needs a newer Cilium version");
/// A Cilium minor release upstream no longer maintains.
pub const VERSION_OUT_OF_SUPPORT: Rule =
    warning("CM406", "Cilium version is out of upstream support");
/// kubeProxyReplacement spelled in a way the chart rejects (or deprecates).
pub const KPR_VALUE: Rule = error("CM404", "kubeProxyReplacement value the chart rejects");
/// certManager without an issuer reference.
pub const CERT_MANAGER_ISSUER: Rule = error(
    "CM405",
    "certManager needs clustermesh.apiserver.tls.auto.certManagerIssuerRef",
);

/// authMode cluster without one shared CA.
pub const AUTH_SHARED_CA: Rule = error(
    "CM501",
    "authMode cluster requires one CA shared by all clusters",
);
/// The helm method regenerates certificates on every render.
pub const HELM_METHOD: Rule = warning(
    "CM502",
    "certificates: helm regenerates certificates on every render",
);
/// The existing CA cannot be read.
pub const CA_UNREADABLE: Rule = error("CM510", "existing CA certificate or key cannot be read");
/// The existing CA certificate is not a CA.
pub const CA_NOT_CA: Rule = error("CM511", "existing CA certificate is not a CA");
/// The existing CA has expired or is not yet valid.
pub const CA_EXPIRED: Rule = error("CM512", "existing CA has expired or is not yet valid");
/// The existing CA expires within 30 days.
pub const CA_EXPIRING: Rule = warning("CM513", "existing CA expires within 90 days");
/// CA key and certificate do not match.
pub const CA_KEY_MISMATCH: Rule =
    error("CM514", "CA private key does not match the CA certificate");
/// A private key readable by others.
pub const KEY_PERMISSIONS: Rule =
    warning("CM515", "private key file is readable by group or others");

/// The CA certificate without its key: a clone of the GitOps repository.
pub const CA_KEY_ABSENT: Rule = warning("CM516", "the CA certificate is here but not its key");

/// A meshed cluster's ID differs from the one it was meshed with (`membership.yaml`).
pub const MEMBER_ID_CHANGED: Rule =
    warning("CM520", "a meshed cluster's ID changed since it was meshed");
/// A name or ID of a cluster that left or was removed is used again.
pub const MEMBER_REUSED: Rule = warning(
    "CM521",
    "a name or ID of a cluster removed from the mesh is used again",
);
/// A meshed cluster is no longer in mesh.yaml.
pub const MEMBER_LEAVING: Rule = warning("CM522", "a meshed cluster is no longer in mesh.yaml");
/// `cilium.version` is more than one minor release from what a meshed cluster runs.
pub const VERSION_STEP: Rule = error(
    "CM523",
    "cilium.version skips a minor release from what a meshed cluster runs",
);

/// A user value overrides a key cmesh sets.
pub const VALUE_OVERRIDE: Rule = warning("CM601", "user value overrides a key cmesh sets");

/// All rules, in code order.
pub const ALL: &[Rule] = &[
    YAML_SYNTAX,
    EMPTY,
    DUPLICATE_KEY,
    UNKNOWN_KEY,
    WRONG_TYPE,
    MISSING_FIELD,
    INVALID_VALUE,
    YAML11_AMBIGUOUS,
    TOO_LARGE,
    LEADING_ZERO,
    DUPLICATE_NAME,
    NAME_FORMAT,
    NAME_LENGTH,
    NAME_DEFAULT,
    MESH_NAME,
    DUPLICATE_ID,
    ID_RANGE,
    MAX_CLUSTERS,
    SINGLE_CLUSTER,
    TOO_MANY_CLUSTERS,
    ENI_ID,
    CIDR_SYNTAX,
    CIDR_HOST_BITS,
    CIDR_OVERLAP,
    MASK_SIZE,
    MASK_ROOM,
    IP_FAMILY,
    NO_ENDPOINT,
    NO_PORT,
    NODEPORT_RANGE,
    SHARED_NODEPORT,
    ADDRESS_AND_IPS,
    ADDRESS_FORMAT,
    IPS_FORMAT,
    LB_PORT,
    DUPLICATE_ENDPOINT,
    API_SERVER_FORMAT,
    DOMAIN_FORMAT,
    VERSION_SYNTAX,
    VERSION_RANGE,
    NEEDS_VERSION,
    KPR_VALUE,
    CERT_MANAGER_ISSUER,
    VERSION_OUT_OF_SUPPORT,
    AUTH_SHARED_CA,
    HELM_METHOD,
    CA_UNREADABLE,
    CA_NOT_CA,
    CA_EXPIRED,
    CA_EXPIRING,
    CA_KEY_MISMATCH,
    KEY_PERMISSIONS,
    CA_KEY_ABSENT,
    MEMBER_ID_CHANGED,
    MEMBER_REUSED,
    MEMBER_LEAVING,
    VERSION_STEP,
    VALUE_OVERRIDE,
];

/// Looks a rule up by code.
pub fn by_code(code: &str) -> Option<&'static Rule> {
    ALL.iter().find(|r| r.code == code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_sorted_and_well_formed() {
        let codes: Vec<&str> = ALL.iter().map(|r| r.code).collect();
        let mut sorted = codes.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(codes, sorted);
        for c in codes {
            assert!(
                c.len() == 5 && c.starts_with("CM") && c[2..].bytes().all(|b| b.is_ascii_digit()),
                "{c}"
            );
        }
    }
}
