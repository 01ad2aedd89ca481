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
use crate::yaml::{EmitError, to_yaml};

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

/// A placeholder scalar replaced by pre-rendered values text after serialisation.
const SPLICE: &str = "__cmesh_values__";

/// Replaces each line `<indent><key>: <marker>` of `doc` whose marker is in `texts` with
/// `<key>:` followed by that text indented under it (as a literal block scalar with
/// `literal`), in one pass. Values text never contains block scalars (the emitter quotes
/// multi-line strings), so re-indenting whole lines keeps its meaning.
fn splice_all(doc: &str, texts: &std::collections::HashMap<&str, &str>, literal: bool) -> String {
    let extra: usize = texts.values().map(|t| t.len() + t.len() / 4).sum();
    let mut out = String::with_capacity(doc.len() + extra);
    for line in doc.split_inclusive('\n') {
        let body = line.trim_end_matches('\n');
        let hit = body
            .rsplit_once(": ")
            .and_then(|(key, marker)| texts.get(marker).map(|t| (key, *t)));
        let Some((key, text)) = hit else {
            out.push_str(line);
            continue;
        };
        let indent = key.len() - key.trim_start().len();
        out.push_str(key);
        if !literal && text.trim() == "{}" {
            out.push_str(": {}\n");
            continue;
        }
        out.push_str(if literal { ": |\n" } else { ":\n" });
        let pad = " ".repeat(indent + 2);
        for l in text.lines() {
            out.push_str(&pad);
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

/// [`splice_all`] for one marker.
fn splice(doc: &str, marker: &str, text: &str, literal: bool) -> String {
    splice_all(
        doc,
        &std::collections::HashMap::from([(marker, text)]),
        literal,
    )
}

/// What `apply` installs on one cluster in one phase: the final values (and their text, as in
/// `values.yaml`) and the Secrets to create first.
#[derive(Debug, Clone)]
pub struct ClusterArtifacts {
    /// The values.
    pub values: Value,
    /// The values as YAML.
    pub values_text: String,
    /// Secrets to apply before the chart.
    pub secrets: Vec<Value>,
}

/// Renders what `apply` needs for `cluster` in `phase`.
///
/// # Errors
/// [`RenderError`] if the values cannot be written as YAML.
pub fn cluster_artifacts(
    spec: &MeshSpec,
    cluster: &crate::spec::Cluster,
    phase: Phase,
    pki: &PkiView,
) -> Result<ClusterArtifacts, RenderError> {
    let values = cluster_values(spec, cluster, phase, pki);
    let values_text = to_yaml(&values)?;
    Ok(ClusterArtifacts {
        values,
        values_text,
        secrets: secrets::secrets(spec, cluster, phase, pki),
    })
}

/// What one cluster contributes to the tree.
struct ClusterOutput {
    files: Vec<(String, RenderedFile)>,
    secret_files: Vec<(String, RenderedFile)>,
    values_text: String,
    readme: gitops::ReadmeCluster,
}

fn render_cluster(
    spec: &MeshSpec,
    cluster: &crate::spec::Cluster,
    pki: &PkiView,
    opts: &RenderOptions,
) -> Result<ClusterOutput, RenderError> {
    let phase = opts.phase;
    let values = cluster_values(spec, cluster, phase, pki);
    let keys_in_values = keys_in_values(spec, cluster, phase, pki);
    let sensitive = if keys_in_values {
        FileKind::Sensitive
    } else {
        FileKind::Public
    };
    let body = to_yaml(&values)?;
    let mut files = Vec::new();
    let mut secret_files = Vec::new();
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
    files.push((
        format!("{}/values.yaml", cluster.name),
        RenderedFile {
            bytes: text.into_bytes(),
            kind: sensitive,
        },
    ));

    let secrets = secrets::secrets(spec, cluster, phase, pki);
    if !secrets.is_empty() {
        let mut text = format!(
            "# Secrets cluster {} needs before the Cilium chart. Sensitive: seal or encrypt before committing.\n",
            cluster.name
        );
        text.push_str(&yaml_docs(&secrets)?);
        secret_files.push((
            format!("{}/secrets.yaml", cluster.name),
            RenderedFile {
                bytes: text.into_bytes(),
                kind: FileKind::Sensitive,
            },
        ));
    }

    let marker = Value::Str(SPLICE.to_owned());
    let app = splice(
        &to_yaml(&gitops::argocd_application(spec, cluster, &marker))?,
        SPLICE,
        &body,
        false,
    );
    files.push((
        format!("argocd/{}.yaml", cluster.name),
        RenderedFile {
            bytes: app.into_bytes(),
            kind: sensitive,
        },
    ));
    let flux = splice(
        &yaml_docs(&gitops::flux(spec, cluster, &marker))?,
        SPLICE,
        &body,
        false,
    );
    files.push((
        format!("flux/{}.yaml", cluster.name),
        RenderedFile {
            bytes: flux.into_bytes(),
            kind: sensitive,
        },
    ));
    files.push((
        format!("helm/{}.sh", cluster.name),
        RenderedFile {
            bytes: gitops::helm_script(spec, cluster, phase, !secrets.is_empty(), &opts.paths)
                .into_bytes(),
            kind: FileKind::Executable,
        },
    ));
    Ok(ClusterOutput {
        files,
        secret_files,
        values_text: body,
        readme: gitops::ReadmeCluster {
            name: cluster.name.clone(),
            endpoint: cluster.endpoint_url(&spec.clustermesh.domain),
            has_secrets: !secrets.is_empty(),
            keys_in_values,
            secret_leaves: secrets::secret_leaf_kinds(spec, cluster, phase, pki),
        },
    })
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
    // Clusters are independent: render them on every core, assembled in cluster order.
    let outputs = crate::par::try_map(&spec.clusters, |c| render_cluster(spec, c, pki, opts))?;
    let mut tree = RenderedTree::default();
    let mut appset = Vec::new();
    let mut readme = Vec::new();
    let mut any_keys_in_values = false;
    for out in outputs {
        any_keys_in_values |= out.readme.keys_in_values;
        tree.files.extend(out.files);
        tree.secret_files.extend(out.secret_files);
        appset.push(out.values_text);
        readme.push(out.readme);
    }
    // The ApplicationSet embeds each cluster's values text as a literal block.
    let markers: Vec<(String, String)> = spec
        .clusters
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.clone(), format!("{SPLICE}{i}")))
        .collect();
    let texts: std::collections::HashMap<&str, &str> = markers
        .iter()
        .map(|(_, m)| m.as_str())
        .zip(appset.iter().map(String::as_str))
        .collect();
    let appset_text = splice_all(
        &to_yaml(&gitops::argocd_application_set(spec, &markers))?,
        &texts,
        true,
    );
    tree.files.insert(
        "argocd/applicationset.yaml".into(),
        RenderedFile {
            bytes: appset_text.into_bytes(),
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
            bytes: gitops::readme(spec, opts.phase, &readme, opts.secrets_elsewhere).into_bytes(),
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
