//! mesh.yaml: parsing, structural decoding, semantic rules, and the validated model.
//!
//! The pipeline is text → spanned YAML tree ([`crate::yaml`]) → raw spec (types and formats
//! checked, every problem collected) → semantic rules → [`MeshSpec`]. [`check`] runs all of it
//! and returns every diagnostic; [`load`] returns the model only if there is no error.

pub mod codes;
mod decode;
pub mod example;
mod model;
mod rules;
pub mod source;

use std::sync::Arc;

pub use decode::{
    DEFAULT_DOMAIN, check_git_url, is_dns_name, is_dns1123_label, normalize_git_path,
};
/// The keys the `gitops:` and `clustermesh:` blocks may hold (mesh.yaml edits anchor on them).
pub(crate) use decode::{GITOPS as GITOPS_KEYS, MESH as MESH_KEYS};
pub use model::*;
pub use source::SpecSource;

use crate::diag::{Counts, Diagnostic, SourceText};
use crate::yaml::{self, Limits, NodeValue, Resolved, YamlError};

/// The outcome of checking a mesh.yaml.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The validated model, present when there are no errors.
    pub spec: Option<MeshSpec>,
    /// Every diagnostic, errors and warnings, in source order.
    pub diagnostics: Vec<Diagnostic>,
}

impl Checked {
    /// Error and warning counts.
    pub fn counts(&self) -> Counts {
        Counts::of(&self.diagnostics)
    }
}

/// A mesh.yaml that failed validation.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{file}: {} error(s) in mesh spec", counts.errors)]
pub struct SpecError {
    /// The file name.
    pub file: String,
    /// Counts.
    pub counts: Counts,
    /// All diagnostics (errors first in source order, warnings too).
    pub diagnostics: Vec<Diagnostic>,
}

/// Largest mesh.yaml accepted, in bytes. A 511-cluster mesh is about 150 KiB.
pub const MAX_SPEC_BYTES: usize = 4 * 1024 * 1024;

/// What `cmesh check` adds to a valid spec's diagnostics about its future rather than its
/// correctness: a Cilium release upstream no longer maintains (CM406), naming the newest one
/// cmesh supports and the one-minor-at-a-time path there.
pub fn advisories(spec: &MeshSpec) -> Vec<Diagnostic> {
    use crate::version::{MAINTAINED_MINORS, MAX_SUPPORTED, NEWEST_TESTED};
    let v = &spec.cilium.version;
    if v.upstream_maintained() {
        return Vec::new();
    }
    let oldest = MAX_SUPPORTED.1 + 1 - MAINTAINED_MINORS;
    let mut help = format!(
        "plan the upgrade to {NEWEST_TESTED}, the newest cmesh supports, one minor release at a time (Cilium does not support skipping minors)"
    );
    if v.clustermesh_certs_only_as_values() {
        help.push_str(
            "; from 1.16 every private key is delivered in Secrets you can seal, not in Helm values",
        );
    }
    vec![
        Diagnostic::new(
            &codes::VERSION_OUT_OF_SUPPORT,
            format!(
                "Cilium {}.{} no longer gets fixes: Cilium maintains its {MAINTAINED_MINORS} newest minor releases, 1.{oldest} to {}.{} as far as cmesh knows",
                v.major, v.minor, MAX_SUPPORTED.0, MAX_SUPPORTED.1
            ),
        )
        .at("cilium.version", spec.source.nearest_span("cilium.version"))
        .help(&help)
        .with_source(spec.source.text()),
    ]
}

/// Checks `text` (named `name` in messages) and returns every diagnostic, plus the model if
/// there is no error.
pub fn check(name: &str, text: &str) -> Checked {
    let source = SourceText::new(name, text);
    let limits = Limits {
        max_bytes: MAX_SPEC_BYTES,
        ..Limits::default()
    };
    let doc = match yaml::parse(text, limits) {
        Ok(doc) => doc,
        Err(e) => {
            let rule = match e {
                YamlError::TooLarge { .. }
                | YamlError::TooDeep { .. }
                | YamlError::TooManyNodes { .. }
                | YamlError::TooMuchText { .. } => &codes::TOO_LARGE,
                _ => &codes::YAML_SYNTAX,
            };
            let help = match &e {
                YamlError::MultipleDocuments { .. } => {
                    "keep one document: remove the `---` separator and what follows, or merge the two"
                }
                YamlError::TooLarge { .. } => {
                    "mesh.yaml is expected to be well under 4 MiB; is this the right file?"
                }
                YamlError::ComplexKey { .. } => "use plain text keys",
                YamlError::TooDeep { .. } => "flatten the nesting; no mesh.yaml field is that deep",
                YamlError::TooManyNodes { .. } | YamlError::TooMuchText { .. } => {
                    "aliases (`*name`) repeat what they point at: write the values out, or alias less"
                }
                _ => "fix the YAML syntax at the marked position",
            };
            let d = Diagnostic::new(rule, e.to_string())
                .help(help)
                .with_source(&source);
            let d = Diagnostic {
                span: e.span(),
                ..d
            };
            return Checked {
                spec: None,
                diagnostics: vec![d],
            };
        }
    };
    let src = Arc::new(SpecSource::new(Arc::clone(&source), doc.root.as_ref()));
    let mut diagnostics = Vec::new();
    for dup in &doc.duplicate_keys {
        diagnostics.push(
            Diagnostic::new(
                &codes::DUPLICATE_KEY,
                format!("key `{}` appears twice in the same mapping", dup.key),
            )
            .at(dup.key.clone(), Some(dup.again))
            .related(None, Some(dup.first), "first defined here")
            .help("remove one of them; YAML readers disagree on which one wins")
            .with_source(&source),
        );
    }
    let root = match &doc.root {
        Some(r)
            if !(matches!(r.value, NodeValue::Scalar { .. })
                && r.resolve() == Some(Resolved::Null)) =>
        {
            r
        }
        _ => {
            diagnostics.push(
                Diagnostic::new(&codes::EMPTY, format!("{name} is empty"))
                    .help("run `cmesh init` to write a commented example, or see docs/mesh-spec.md")
                    .with_source(&source),
            );
            return Checked {
                spec: None,
                diagnostics,
            };
        }
    };
    let mut decoder = decode::Decoder::new(&src);
    let raw = decoder.spec(root);
    diagnostics.extend(decoder.diags);
    let mut spec = None;
    if let Some(raw) = raw {
        diagnostics.extend(rules::Rules::new(&src, &raw).run());
        if !diagnostics.iter().any(Diagnostic::is_error) {
            spec = finish(raw, &src);
            if let Some(s) = &spec {
                diagnostics.extend(crate::render::values::override_warnings(s));
            }
        }
    }
    sort(&mut diagnostics);
    Checked { spec, diagnostics }
}

/// Checks `text` and returns the model, or every diagnostic if there is any error.
///
/// # Errors
/// [`SpecError`] with all diagnostics when the spec has at least one error.
pub fn load(name: &str, text: &str) -> Result<(MeshSpec, Vec<Diagnostic>), SpecError> {
    let checked = check(name, text);
    let counts = checked.counts();
    match checked.spec {
        Some(spec) if counts.errors == 0 => Ok((spec, checked.diagnostics)),
        _ => Err(SpecError {
            file: name.to_owned(),
            counts,
            diagnostics: checked.diagnostics,
        }),
    }
}

fn sort(diags: &mut [Diagnostic]) {
    diags.sort_by_key(|d| (d.span.map_or(usize::MAX, |s| s.offset), d.code));
}

fn finish(raw: decode::RawSpec, src: &Arc<SpecSource>) -> Option<MeshSpec> {
    let mut clusters = Vec::with_capacity(raw.clusters.len());
    for c in raw.clusters {
        clusters.push(Cluster {
            name: c.name?,
            id: c.id?,
            kubeconfig: c.kubeconfig,
            context: c.context,
            api_server: c.api_server,
            pod_cidrs: c.pod_cidrs.into_iter().map(|x| x.net).collect(),
            pod_cidr_mask_size: c.pod_cidr_mask_size,
            service_cidrs: c.service_cidrs.into_iter().map(|x| x.net).collect(),
            node_cidrs: c.node_cidrs.into_iter().map(|x| x.net).collect(),
            clustermesh: Endpoint {
                address: c.address,
                ips: c.ips,
                port: c.port?,
            },
            values: c.values,
        });
    }
    Some(MeshSpec {
        name: raw.name?,
        cilium: CiliumSettings {
            version: raw.version?,
            repo: raw.repo,
            values: raw.values,
        },
        clustermesh: raw.mesh,
        pki: raw.pki,
        gitops: raw.gitops,
        clusters,
        source: Arc::clone(src),
    })
}
