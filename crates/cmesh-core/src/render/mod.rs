//! Rendering a mesh into a GitOps tree: per-cluster Helm values and Secrets, Argo CD, Flux
//! and helm artifacts, README and .gitignore, as an in-memory map of files.
//!
//! The same spec and PKI always give byte-identical files: maps are sorted, nothing depends on
//! the clock, the host or the output location.

pub mod gitops;
pub mod keyless;
pub mod secrets;
pub mod values;

use std::collections::BTreeMap;

use crate::pki::LeafKind;
use crate::pki::store::Reconciled;
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
    /// Sensitive files (`<cluster>/secrets.yaml`, `secret-values.yaml`,
    /// `flux-secret-values.yaml`), written into the tree or to `--secrets-out`.
    pub secret_files: BTreeMap<String, RenderedFile>,
    /// Objects larger than Kubernetes' client-side-apply annotation limit (256 KiB): path,
    /// object and size. `render` warns about them.
    pub large_objects: Vec<LargeObject>,
}

/// An object of the tree larger than [`WARN_OBJECT_BYTES`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LargeObject {
    /// The file.
    pub path: String,
    /// `Kind/name`.
    pub object: String,
    /// Its size as YAML, in bytes.
    pub bytes: usize,
}

/// Above this an object no longer fits `kubectl.kubernetes.io/last-applied-configuration`
/// (client-side apply, Argo CD without ServerSideApply): 256 KiB.
pub const WARN_OBJECT_BYTES: usize = 256 * 1024;
/// Above this the API server refuses the request (etcd's default request limit): 1.5 MiB.
pub const MAX_OBJECT_BYTES: usize = 1536 * 1024;

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
    /// An object is too large for any Kubernetes API server to store.
    #[error(
        "{object} in {path} is {bytes} bytes, more than the 1.5 MiB a Kubernetes API server accepts in one request"
    )]
    ObjectTooLarge {
        /// The file.
        path: String,
        /// `Kind/name`.
        object: String,
        /// Its size.
        bytes: usize,
    },
}

/// True if `s` is, or base64-encodes, PEM private key material.
fn holds_private_key(s: &str) -> bool {
    use base64::Engine as _;
    if s.contains("PRIVATE KEY") {
        return true;
    }
    let compact: String = s.split_whitespace().collect();
    compact.len() > 40
        && base64::engine::general_purpose::STANDARD
            .decode(compact.as_bytes())
            .ok()
            .is_some_and(|b| String::from_utf8_lossy(&b).contains("PRIVATE KEY"))
}

/// Splits Helm values into what may be committed and what holds private keys (same paths).
/// Helm deep-merges `-f public -f sensitive` back into the original.
pub fn split_secret_values(v: &Value) -> (Value, Value) {
    match v {
        Value::Map(m) => {
            let mut public = crate::value::Map::new();
            let mut secret = crate::value::Map::new();
            for (k, x) in m {
                match x {
                    Value::Map(_) => {
                        let (p, s) = split_secret_values(x);
                        let p_empty = p.as_map().is_some_and(|m| m.is_empty());
                        let s_empty = s.as_map().is_some_and(|m| m.is_empty());
                        // Keep empty maps the user wrote; drop those the split emptied.
                        if !p_empty || s_empty {
                            public.insert(k.clone(), p);
                        }
                        if !s_empty {
                            secret.insert(k.clone(), s);
                        }
                    }
                    Value::Str(t) if holds_private_key(t) => {
                        secret.insert(k.clone(), x.clone());
                    }
                    _ => {
                        public.insert(k.clone(), x.clone());
                    }
                }
            }
            (Value::Map(public), Value::Map(secret))
        }
        other => (other.clone(), Value::map()),
    }
}

/// Each top-level document of `text` (separated by `---` lines) that is not blank, as the
/// slice of `text` it spans (its size is the slice's length). Slices, not copies: this runs
/// over every manifest of every render (a 511-cluster tree is 67–105 MiB).
fn documents(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut at = 0;
    let mut push = |from: usize, to: usize| {
        let doc = &text[from..to];
        if !doc.trim().is_empty() {
            out.push(doc);
        }
    };
    for line in text.split_inclusive('\n') {
        if line.trim_end() == "---" {
            push(start, at);
            start = at + line.len();
        }
        at += line.len();
    }
    push(start, text.len());
    out
}

/// A document's `Kind/name`: its top-level `kind:` and its first `  name:` (the metadata's).
/// Only asked of the rare objects large enough to report.
fn document_name(doc: &str) -> String {
    let find = |key: &str, indent: &str| {
        doc.lines()
            .find_map(|l| l.strip_prefix(indent)?.strip_prefix(key))
            .map(|v| v.trim().trim_matches('"').to_owned())
            .unwrap_or_default()
    };
    format!("{}/{}", find("kind:", ""), find("name:", "  "))
}

/// Checks every object of the tree's manifests against the API server's limits.
fn check_sizes(tree: &mut RenderedTree) -> Result<(), RenderError> {
    for (path, f) in tree.files.iter().chain(tree.secret_files.iter()) {
        if path.ends_with("kustomization.yaml") {
            continue;
        }
        if !(path.ends_with(".yaml")
            && (path.starts_with("argocd")
                || path.starts_with("flux/")
                || path.ends_with("secrets.yaml")))
        {
            continue;
        }
        // The whole file within the warning size holds no object above it.
        if f.bytes.len() <= WARN_OBJECT_BYTES {
            continue;
        }
        let text = String::from_utf8_lossy(&f.bytes);
        for doc in documents(&text) {
            let bytes = doc.len();
            if bytes > MAX_OBJECT_BYTES {
                return Err(RenderError::ObjectTooLarge {
                    path: path.clone(),
                    object: document_name(doc),
                    bytes,
                });
            }
            if bytes > WARN_OBJECT_BYTES {
                tree.large_objects.push(LargeObject {
                    path: path.clone(),
                    object: document_name(doc),
                    bytes,
                });
            }
        }
    }
    Ok(())
}

/// Builds the view rendering needs from a reconciled PKI (`None` for certManager, which uses
/// no shared CA).
pub fn pki_view(spec: &MeshSpec, pki: Option<&Reconciled>) -> PkiView {
    let method = spec.clustermesh.certificates;
    let Some(r) = pki else {
        return PkiView {
            ca_cert_pem: String::new(),
            trust_pem: String::new(),
            ca_key_pem: None,
            leaves: BTreeMap::new(),
        };
    };
    PkiView {
        ca_cert_pem: r.ca.cert_pem().to_owned(),
        trust_pem: r.trust.bundle(),
        ca_key_pem: method
            .needs_ca_key_in_cluster()
            .then(|| r.ca.key().pem().to_owned()),
        leaves: r
            .leaves
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
    secret_values: bool,
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
    // Private keys never go into a file meant for git: they move to secret-values.yaml.
    let (public, secret) = split_secret_values(&values);
    let has_secret_values = secret.as_map().is_some_and(|m| !m.is_empty());
    let body = to_yaml(&public)?;
    let mut files = Vec::new();
    let mut secret_files = Vec::new();
    let mut text = format!(
        "# Cilium Helm values for cluster {} of mesh {} (phase {}, chart {}).\n# Generated by cmesh from mesh.yaml: edit mesh.yaml and run `cmesh render`, not this file.\n",
        cluster.name,
        spec.name,
        phase.as_str(),
        spec.cilium.version
    );
    if has_secret_values {
        text.push_str("# The private keys this chart version takes only as values are in secret-values.yaml\n# (with the Secrets: never commit it unencrypted); pass both files to helm.\n");
    }
    text.push_str(&body);
    files.push((
        format!("{}/values.yaml", cluster.name),
        RenderedFile {
            bytes: text.into_bytes(),
            kind: FileKind::Public,
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
    if has_secret_values {
        let secret_text = to_yaml(&secret)?;
        secret_files.push((
            format!("{}/secret-values.yaml", cluster.name),
            RenderedFile {
                bytes: format!(
                    "# Private keys Cilium {} takes only as Helm values, for cluster {}: the second values file\n# after values.yaml. Sensitive: encrypt it (sops, helm-secrets) before it goes near git.\n{secret_text}",
                    spec.cilium.version, cluster.name
                )
                .into_bytes(),
                kind: FileKind::Sensitive,
            },
        ));
        let (_, secret_name) = gitops::flux_values_names(cluster);
        let mut sec = Value::map();
        sec.set(&["apiVersion"], "v1");
        sec.set(&["kind"], "Secret");
        sec.set(&["metadata", "name"], secret_name);
        sec.set(&["metadata", "namespace"], gitops::FLUX_NAMESPACE);
        sec.set(&["type"], "Opaque");
        sec.set(&["stringData", "values.yaml"], SPLICE);
        let doc = splice(&to_yaml(&sec)?, SPLICE, &secret_text, true);
        secret_files.push((
            format!("{}/flux-secret-values.yaml", cluster.name),
            RenderedFile {
                bytes: format!("# The HelmRelease's sensitive values (Flux `valuesFrom`), for cluster {}. Seal or encrypt it.\n{doc}", cluster.name).into_bytes(),
                kind: FileKind::Sensitive,
            },
        ));
    }

    let git = gitops::GitSource::of(spec);
    files.push((
        format!("{}/{}.yaml", gitops::ARGOCD_APPLICATIONS, cluster.name),
        RenderedFile {
            bytes: to_yaml(&gitops::argocd_application(
                spec,
                cluster,
                &git,
                has_secret_values,
            ))?
            .into_bytes(),
            kind: FileKind::Public,
        },
    ));
    let release = splice(
        &yaml_docs(&gitops::flux(spec, cluster, SPLICE, has_secret_values))?,
        SPLICE,
        &body,
        true,
    );
    files.push((
        format!("flux/{}/release/release.yaml", cluster.name),
        RenderedFile {
            bytes: release.into_bytes(),
            kind: FileKind::Public,
        },
    ));
    files.push((
        format!("flux/{}/sync.yaml", cluster.name),
        RenderedFile {
            bytes: yaml_docs(&gitops::flux_sync(spec, cluster, &git))?.into_bytes(),
            kind: FileKind::Public,
        },
    ));
    files.push((
        format!("helm/{}.sh", cluster.name),
        RenderedFile {
            bytes: gitops::helm_script(
                spec,
                cluster,
                phase,
                !secrets.is_empty(),
                has_secret_values,
                &opts.paths,
            )
            .into_bytes(),
            kind: FileKind::Executable,
        },
    ));
    Ok(ClusterOutput {
        files,
        secret_files,
        secret_values: has_secret_values,
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
    let mut readme = Vec::new();
    let mut any_keys_in_values = false;
    let mut any_secret_values = false;
    for out in outputs {
        any_keys_in_values |= out.readme.keys_in_values;
        any_secret_values |= out.secret_values;
        tree.files.extend(out.files);
        tree.secret_files.extend(out.secret_files);
        readme.push(out.readme);
    }
    let git = gitops::GitSource::of(spec);
    let public = |v: &Value| -> Result<RenderedFile, RenderError> {
        Ok(RenderedFile {
            bytes: to_yaml(v)?.into_bytes(),
            kind: FileKind::Public,
        })
    };
    // Two alternatives, each a folder an app-of-apps (or `kubectl apply -k`) can point at on
    // its own: the Applications one by one, or the ApplicationSet that generates the same.
    // Each carries the AppProject its Applications belong to; the argocd-cm patch is Argo CD's
    // own configuration and lives outside both.
    let project = public(&gitops::argocd_project(spec, &git))?;
    let mut apps = vec!["project.yaml".to_owned()];
    apps.extend(spec.clusters.iter().map(|c| format!("{}.yaml", c.name)));
    for (dir, resources) in [
        (gitops::ARGOCD_APPLICATIONS, apps),
        (
            gitops::ARGOCD_APPLICATIONSET,
            vec!["project.yaml".to_owned(), "applicationset.yaml".to_owned()],
        ),
    ] {
        tree.files
            .insert(format!("{dir}/project.yaml"), project.clone());
        tree.files.insert(
            format!("{dir}/kustomization.yaml"),
            public(&gitops::kustomization(&resources))?,
        );
    }
    tree.files.insert(
        format!("{}/applicationset.yaml", gitops::ARGOCD_APPLICATIONSET),
        public(&gitops::argocd_application_set(
            spec,
            &git,
            any_secret_values,
        ))?,
    );
    tree.files.insert(
        gitops::ARGOCD_CM_PATCH.into(),
        public(&gitops::argocd_cm_patch())?,
    );
    for c in &spec.clusters {
        // A folder a Flux Kustomization or `kubectl apply -k` may point at holds exactly its
        // own objects (without one, Flux would take release/ along with sync.yaml).
        tree.files.insert(
            format!("flux/{}/kustomization.yaml", c.name),
            public(&gitops::kustomization(&["sync.yaml".to_owned()]))?,
        );
        tree.files.insert(
            format!("flux/{}/release/kustomization.yaml", c.name),
            public(&gitops::kustomization(&["release.yaml".to_owned()]))?,
        );
    }
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
    check_sizes(&mut tree)?;
    Ok(tree)
}

#[cfg(test)]
mod tests {
    use super::{document_name, documents};

    #[test]
    fn documents_are_the_slices_between_separator_lines() {
        let text = "---\nkind: Secret\nmetadata:\n  name: a\n---\n\n---\nkind: ConfigMap\nmetadata:\n  name: \"b\"\ndata: {}\n";
        let docs = documents(text);
        assert_eq!(
            docs,
            [
                "kind: Secret\nmetadata:\n  name: a\n",
                "kind: ConfigMap\nmetadata:\n  name: \"b\"\ndata: {}\n"
            ]
        );
        assert_eq!(document_name(docs[0]), "Secret/a");
        assert_eq!(document_name(docs[1]), "ConfigMap/b");
        // No separator at all: one document; nothing but blanks: none.
        assert_eq!(documents("kind: X\n"), ["kind: X\n"]);
        assert!(documents("\n \n---\n").is_empty());
    }
}
