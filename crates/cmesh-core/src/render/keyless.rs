//! Rendering without private keys, for `render --check` in a plain clone of the GitOps
//! repository: the committed files (values, Argo CD, Flux, helm scripts, README) depend on
//! the PKI only through certificates, which are public. The CA certificate comes from
//! pki.dir's `ca.crt`; leaf certificates that this chart version takes as values are read back
//! from the committed `values.yaml` and judged by [`crate::pki::public::verify_public`]. Keys
//! are stand-ins that only ever reach the secret files, which a keyless check neither renders
//! for comparison nor expects on disk.

use std::collections::BTreeMap;

use base64::Engine as _;

use super::Phase;
use super::values::{PkiView, leaf_in_values};
use crate::pki::LeafKind;
use crate::pki::catalog::leaves_for;
use crate::pki::public::PublicPki;
use crate::pki::rotation::TrustView;
use crate::spec::{CertMethod, MeshSpec};
use crate::yaml::{Limits, parse, to_json};

/// A stand-in private key: recognised as key material (so values split exactly as with the
/// real key), never a key.
const NO_KEY: &str =
    "-----BEGIN PRIVATE KEY-----\nnot in this checkout\n-----END PRIVATE KEY-----\n";
/// A stand-in certificate for leaves that live only in secret files.
const NO_CERT: &str =
    "-----BEGIN CERTIFICATE-----\nnot in this checkout\n-----END CERTIFICATE-----\n";

/// True when the certificate `kind` of `cluster` is part of its committed `values.yaml` in
/// `phase` (the chart takes it only as values); the others are in `secrets.yaml`.
pub fn leaf_in_tree(spec: &MeshSpec, phase: Phase, kind: LeafKind) -> bool {
    spec.clustermesh.certificates == CertMethod::Cmesh
        && (phase == Phase::Mesh || !kind.is_clustermesh())
        && leaf_in_values(&spec.cilium.version, kind)
        && kind.values_path().is_some()
}

/// The leaf certificates (PEM) that the committed `values.yaml` texts carry, by cluster and
/// kind. `values` maps a cluster's name to its committed file (absent: not committed). What
/// cannot be read is left out: the check then reports the leaf as one a render would issue.
pub fn committed_leaf_certs(
    spec: &MeshSpec,
    phase: Phase,
    values: &BTreeMap<String, String>,
) -> BTreeMap<(String, LeafKind), String> {
    let mut out = BTreeMap::new();
    for cluster in &spec.clusters {
        let Some(text) = values.get(&cluster.name) else {
            continue;
        };
        let Ok(doc) = parse(text, Limits::default()) else {
            continue;
        };
        let Some(root) = doc.root else { continue };
        let json = to_json(&root, &mut BTreeMap::new());
        for (kind, _) in leaves_for(spec, cluster) {
            if !leaf_in_tree(spec, phase, kind) {
                continue;
            }
            let Some(path) = kind.values_path() else {
                continue;
            };
            let mut node = &json;
            for seg in path.iter().chain(&["cert"]) {
                match node.get(seg) {
                    Some(n) => node = n,
                    None => break,
                }
            }
            let pem = node.as_str().and_then(|b| {
                base64::engine::general_purpose::STANDARD
                    .decode(b.split_whitespace().collect::<String>())
                    .ok()
                    .and_then(|d| String::from_utf8(d).ok())
            });
            if let Some(pem) = pem.filter(|p| p.contains("BEGIN CERTIFICATE")) {
                out.insert((cluster.name.clone(), kind), pem);
            }
        }
    }
    out
}

/// The material rendering needs, from the public side alone: the real certificates where the
/// tree shows them, stand-ins for every key and for certificates only secret files hold.
pub fn keyless_view(spec: &MeshSpec, public: &PublicPki, trust: &TrustView) -> PkiView {
    let mut leaves = BTreeMap::new();
    if spec.clustermesh.certificates == CertMethod::Cmesh {
        for cluster in &spec.clusters {
            for (kind, _) in leaves_for(spec, cluster) {
                let key = (cluster.name.clone(), kind);
                let cert = public
                    .leaves
                    .get(&key)
                    .cloned()
                    .unwrap_or_else(|| NO_CERT.to_owned());
                leaves.insert(key, (cert, NO_KEY.to_owned()));
            }
        }
    }
    PkiView {
        ca_cert_pem: public.ca_cert_pem.clone(),
        trust_pem: trust.bundle(),
        ca_key_pem: spec
            .clustermesh
            .certificates
            .needs_ca_key_in_cluster()
            .then(|| NO_KEY.to_owned()),
        leaves,
    }
}
