//! Rendering a mesh into a GitOps tree: per-cluster Helm values and Secrets, Argo CD, Flux
//! and helm artifacts, README and .gitignore, as an in-memory map of files.
//!
//! The same spec and PKI always give byte-identical files: maps are sorted, nothing depends on
//! the clock, the host or the output location.

pub mod gitops;
pub mod secrets;
pub mod values;

use std::collections::BTreeMap;

use crate::pki::store::LeafMaterial;
use crate::pki::{Ca, LeafKind};
use crate::spec::{CertMethod, MeshSpec};
use crate::value::Value;
use crate::yaml::{EmitError, to_yaml, to_yaml_block_strings};

pub use gitops::ScriptPaths;
pub use values::{Phase, PkiView, cluster_values};

/// Permissions a rendered file needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    /// Readable by all (0644).
    Public,
    /// Holds private keys (0600).
    Sensitive,
    /// A script (0755).
    Executable,
}

/// One rendered file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedFile {
    /// Contents.
    pub bytes: Vec<u8>,
    /// Permissions.
    pub kind: FileKind,
}

/// A rendered tree: paths relative to the output directory, with `/`.
#[derive(Debug, Clone, Default)]
pub struct RenderedTree {
    /// Everything but Secrets.
    pub files: BTreeMap<String, RenderedFile>,
    /// `<cluster>/secrets.yaml` files, written into the tree or to `--secrets-out`.
    pub secret_files: BTreeMap<String, RenderedFile>,
}

/// How to render.
#[derive(Debug, Clone)]
pub struct RenderOptions {
    /// Which phase's values.
    pub phase: Phase,
    /// Relative paths for scripts.
    pub paths: ScriptPaths,
    /// Secrets go to a separate directory (affects the README only).
    pub secrets_elsewhere: bool,
}

/// Why rendering failed.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// A certificate cmesh should have issued is missing.
    #[error("no {kind:?} certificate for cluster `{cluster}` in the PKI")]
    MissingLeaf {
        /// The cluster.
        cluster: String,
        /// The certificate.
        kind: LeafKind,
    },
    /// YAML output failed.
    #[error(transparent)]
    Emit(#[from] EmitError),
}

/// Builds the view rendering needs from a reconciled PKI (`None` for certManager, which uses
/// no shared CA).
pub fn pki_view(
    spec: &MeshSpec,
    ca: Option<&Ca>,
    leaves: &BTreeMap<(String, LeafKind), LeafMaterial>,
) -> PkiView {
    let method = spec.clustermesh.certificates;
    PkiView {
        ca_cert_pem: ca.map(|c| c.cert_pem().to_owned()).unwrap_or_default(),
        ca_key_pem: ca
            .filter(|_| method.needs_ca_key_in_cluster())
            .map(|c| c.key().pem().to_owned()),
        leaves: leaves
            .iter()
            .map(|(k, m)| (k.clone(), (m.cert_pem.clone(), m.key_pem.clone())))
            .collect(),
    }
}

fn yaml_docs(docs: &[Value]) -> Result<String, EmitError> {
    let mut s = String::new();
    for (i, d) in docs.iter().enumerate() {
        if i > 0 {
            s.push_str("---\n");
        }
        s.push_str(&to_yaml(d)?);
    }
    Ok(s)
}

/// True if `cluster`'s values carry private keys: the CA key with `certificates: helm`, or
/// leaf keys this chart version accepts only as values.
pub fn keys_in_values(
    spec: &MeshSpec,
    cluster: &crate::spec::Cluster,
    phase: Phase,
    pki: &PkiView,
) -> bool {
    (spec.clustermesh.certificates == CertMethod::Helm && pki.ca_key_pem.is_some())
        || values::phase_leaves(spec, cluster, phase, pki)
            .iter()
            .any(|(k, _)| values::leaf_in_values(&spec.cilium.version, *k))
}

/// Renders the whole tree.
///
/// # Errors
/// [`RenderError::MissingLeaf`] if `pki` lacks a certificate the method needs.
pub fn render_tree(
    spec: &MeshSpec,
    pki: &PkiView,
    opts: &RenderOptions,
) -> Result<RenderedTree, RenderError> {
    let phase = opts.phase;
    if spec.clustermesh.certificates == CertMethod::Cmesh {
        for c in &spec.clusters {
            for (kind, _) in crate::pki::catalog::leaves_for(spec, c) {
                if !pki.leaves.contains_key(&(c.name.clone(), kind)) {
                    return Err(RenderError::MissingLeaf {
                        cluster: c.name.clone(),
                        kind,
                    });
                }
            }
        }
    }
    let mut tree = RenderedTree::default();
    let mut appset = Vec::new();
    let mut readme = Vec::new();
    let mut any_keys_in_values = false;
    for cluster in &spec.clusters {
        let values = cluster_values(spec, cluster, phase, pki);
        let keys_in_values = keys_in_values(spec, cluster, phase, pki);
        any_keys_in_values |= keys_in_values;
        let sensitive = if keys_in_values {
            FileKind::Sensitive
        } else {
            FileKind::Public
        };
        let body = to_yaml(&values)?;
        let mut text = format!(
            "# Cilium Helm values for cluster {} of mesh {} (phase {}, chart {}).\n# Generated by cmesh from mesh.yaml: edit mesh.yaml and run `cmesh render`, not this file.\n",
            cluster.name,
            spec.name,
            phase.as_str(),
            spec.cilium.version
        );
        if keys_in_values {
            text.push_str("# Holds private keys (this chart version takes them only as values): keep it encrypted.\n");
        }
        text.push_str(&body);
        tree.files.insert(
            format!("{}/values.yaml", cluster.name),
            RenderedFile {
                bytes: text.into_bytes(),
                kind: sensitive,
            },
        );
        appset.push((cluster.name.clone(), body));

        let secrets = secrets::secrets(spec, cluster, phase, pki);
        if !secrets.is_empty() {
            let mut text = format!(
                "# Secrets cluster {} needs before the Cilium chart. Sensitive: seal or encrypt before committing.\n",
                cluster.name
            );
            text.push_str(&yaml_docs(&secrets)?);
            tree.secret_files.insert(
                format!("{}/secrets.yaml", cluster.name),
                RenderedFile {
                    bytes: text.into_bytes(),
                    kind: FileKind::Sensitive,
                },
            );
        }

        let app = gitops::argocd_application(spec, cluster, &values);
        tree.files.insert(
            format!("argocd/{}.yaml", cluster.name),
            RenderedFile {
                bytes: to_yaml(&app)?.into_bytes(),
                kind: sensitive,
            },
        );
        tree.files.insert(
            format!("flux/{}.yaml", cluster.name),
            RenderedFile {
                bytes: yaml_docs(&gitops::flux(spec, cluster, &values))?.into_bytes(),
                kind: sensitive,
            },
        );
        tree.files.insert(
            format!("helm/{}.sh", cluster.name),
            RenderedFile {
                bytes: gitops::helm_script(spec, cluster, phase, !secrets.is_empty(), &opts.paths)
                    .into_bytes(),
                kind: FileKind::Executable,
            },
        );
        readme.push(gitops::ReadmeCluster {
            name: cluster.name.clone(),
            endpoint: cluster.endpoint_url(&spec.clustermesh.domain),
            has_secrets: !secrets.is_empty(),
            keys_in_values,
            secret_leaves: secrets::secret_leaf_kinds(spec, cluster, phase, pki),
        });
    }
    tree.files.insert(
        "argocd/applicationset.yaml".into(),
        RenderedFile {
            bytes: to_yaml_block_strings(&gitops::argocd_application_set(spec, &appset))?
                .into_bytes(),
            kind: if any_keys_in_values {
                FileKind::Sensitive
            } else {
                FileKind::Public
            },
        },
    );
    tree.files.insert(
        "README.md".into(),
        RenderedFile {
            bytes: gitops::readme(spec, phase, &readme, opts.secrets_elsewhere).into_bytes(),
            kind: FileKind::Public,
        },
    );
    tree.files.insert(
        ".gitignore".into(),
        RenderedFile {
            bytes: gitops::gitignore(any_keys_in_values).into_bytes(),
            kind: FileKind::Public,
        },
    );
    Ok(tree)
}
