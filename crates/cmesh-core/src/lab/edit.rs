//! In-place edits of mesh.yaml that keep everything else byte for byte: comments, order,
//! quoting and blank lines. `lab up` uses them to point each cluster at what it created
//! (`kubeconfig`, `context`, `apiServer`, `clustermesh.address`); `render --save` to keep the
//! `--git-*` flags in the `gitops:` block ([`set_gitops`]); `upgrade` to set each step's
//! `cilium.version` and the settings it pins ([`set_version`]).
//!
//! A value that is written is replaced where it stands (its span); a key that is missing is
//! inserted as a new line under its mapping, at the indentation of a sibling. The result is
//! read back and must hold the new values, or nothing is returned.

use crate::spec::{self, MeshSpec, source};
use crate::yaml::to_yaml;

/// One field of one cluster to set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    /// Index into `clusters`.
    pub cluster: usize,
    /// The key under the cluster: `["kubeconfig"]`, `["clustermesh", "address"]`.
    pub key: Vec<&'static str>,
    /// The new value (written as a YAML string, quoted where YAML would read it otherwise).
    pub value: String,
}

/// Why mesh.yaml could not be edited.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EditError {
    /// No line to anchor an inserted key to.
    #[error("{file}: cannot add `{path}`: write `{parent}` as a block mapping (one key per line)")]
    NoAnchor {
        /// mesh.yaml's name.
        file: String,
        /// The field.
        path: String,
        /// The mapping it belongs in.
        parent: String,
    },
    /// The edited text does not read back with the new values (a bug, reported rather than
    /// written).
    #[error("{file}: the edited file does not read back as written ({why}); it was left unchanged")]
    ReadBack {
        /// mesh.yaml's name.
        file: String,
        /// What differed.
        why: String,
    },
}

fn scalar(v: &str) -> String {
    to_yaml(&v)
        .map(|s| s.trim_end().to_owned())
        .unwrap_or_else(|_| format!("{v:?}"))
}

fn path_of(cluster: usize, key: &[&str]) -> String {
    key.iter().fold(source::item("clusters", cluster), |p, k| {
        source::child(&p, k)
    })
}

/// The change that adds `key: value` on a new line after the line of the sibling key at
/// `anchor`, at that key's indentation: `(offset, 0, text)`. `None` when the sibling does not
/// start its line (flow style), except after `- ` when `list_item` allows it.
fn insert_after(
    text: &str,
    anchor: crate::yaml::Span,
    key: &str,
    value: &str,
    list_item: bool,
) -> Option<(usize, usize, String)> {
    let line_start = text[..anchor.offset].rfind('\n').map_or(0, |i| i + 1);
    let prefix = &text[line_start..anchor.offset];
    if !prefix.chars().all(|c| c == ' ' || (list_item && c == '-')) {
        return None;
    }
    let indent = " ".repeat(prefix.chars().count());
    let line_end = text[anchor.offset..]
        .find('\n')
        .map_or(text.len(), |i| anchor.offset + i + 1);
    let newline = if line_end == text.len() && !text.ends_with('\n') {
        "\n"
    } else {
        ""
    };
    Some((line_end, 0, format!("{newline}{indent}{key}: {value}\n")))
}

/// Applies `edits` to the text `spec` was read from; returns the new text.
///
/// # Errors
/// [`EditError`] when a key cannot be placed or the result does not read back.
pub fn apply(spec: &MeshSpec, file: &str, edits: &[Edit]) -> Result<String, EditError> {
    let src = &spec.source;
    let text = src.text().text();
    // (offset, bytes to replace, new text), applied from the end.
    let mut changes: Vec<Change> = Vec::new();
    for e in edits {
        let path = path_of(e.cluster, &e.key);
        let value = scalar(&e.value);
        if let Some(span) = src.span(&path) {
            changes.push((span.offset, span.len, value));
            continue;
        }
        let parent_key = &e.key[..e.key.len() - 1];
        let parent = path_of(e.cluster, parent_key);
        // A sibling key on its own line: `name` for a cluster, any written key otherwise.
        let sibling = ["name", "port", "address", "ips", "id"]
            .iter()
            .map(|k| source::child(&parent, k))
            .find_map(|p| src.key_span(&p).filter(|_| src.span(&p).is_some()));
        let no_anchor = || EditError::NoAnchor {
            file: file.to_owned(),
            path: path.clone(),
            parent: parent.clone(),
        };
        let Some(anchor) = sibling else {
            return Err(no_anchor());
        };
        let key = e.key[e.key.len() - 1];
        // `- name:` opens a list item: the keys under it are indented to `name`.
        changes.push(insert_after(text, anchor, key, &value, true).ok_or_else(no_anchor)?);
    }
    let out = spliced(text, changes, "", "");
    // Read back: every edited field holds its new value.
    let (edited, _) = spec::load(file, &out).map_err(|e| EditError::ReadBack {
        file: file.to_owned(),
        why: e.to_string(),
    })?;
    for e in edits {
        let c = &edited.clusters[e.cluster];
        let got = match e.key.as_slice() {
            ["kubeconfig"] => c.kubeconfig.clone(),
            ["context"] => c.context.clone(),
            ["apiServer"] => c
                .api_server
                .as_ref()
                .map(|a| format!("{}:{}", a.host, a.port)),
            ["clustermesh", "address"] => c.clustermesh.address.as_ref().map(ToString::to_string),
            _ => Some(e.value.clone()),
        };
        if got.as_deref() != Some(e.value.as_str()) {
            return Err(EditError::ReadBack {
                file: file.to_owned(),
                why: format!("{} is {got:?}", path_of(e.cluster, &e.key)),
            });
        }
    }
    Ok(out)
}

/// One text change: (offset, bytes replaced, new text).
type Change = (usize, usize, String);

/// The changes that set `fields` (key, YAML value text) of the top-level mapping `block`: a
/// written value is replaced where it stands, a missing key is added under a written sibling
/// (any of `keys`), and when the block is missing the `key: value` lines to append under a new
/// block are returned beside.
fn block_edits(
    src: &source::SpecSource,
    text: &str,
    file: &str,
    block: &str,
    keys: &[&str],
    fields: &[(&str, String)],
) -> Result<(Vec<Change>, String), EditError> {
    let mut changes = Vec::new();
    let mut appended = String::new();
    let anchor = keys.iter().find_map(|k| {
        let p = source::child(block, k);
        src.key_span(&p).filter(|_| src.span(&p).is_some())
    });
    for (key, value) in fields {
        let path = source::child(block, key);
        if let Some(span) = src.span(&path) {
            changes.push((span.offset, span.len, value.clone()));
            continue;
        }
        let no_anchor = || EditError::NoAnchor {
            file: file.to_owned(),
            path: path.clone(),
            parent: block.into(),
        };
        match anchor {
            Some(a) => {
                changes.push(insert_after(text, a, key, value, false).ok_or_else(no_anchor)?);
            }
            None if src.span(block).is_none() => {
                appended.push_str(&format!("  {key}: {value}\n"));
            }
            None => return Err(no_anchor()),
        }
    }
    Ok((changes, appended))
}

/// `text` with `changes` (offset, bytes replaced, new text) applied, and `appended` lines
/// under a new block opened by `header` at the end when there are any.
fn spliced(text: &str, mut changes: Vec<Change>, appended: &str, header: &str) -> String {
    changes.sort_by_key(|(o, _, _)| *o);
    let mut out = text.to_owned();
    for (offset, len, new) in changes.iter().rev() {
        out.replace_range(*offset..*offset + *len, new);
    }
    if !appended.is_empty() {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push('\n');
        out.push_str(header);
        out.push('\n');
        out.push_str(appended);
    }
    out
}

/// Sets fields of the `gitops:` block (`("repoURL", url)`, `("revision", …)`, `("path", …)`):
/// a written value is replaced where it stands, a missing key is added under a sibling, and a
/// missing block is appended at the end of the file. Returns the new text.
///
/// # Errors
/// [`EditError`] when `gitops:` is written in a form a key cannot be added to (flow style, or
/// with no key), or the result does not read back.
pub fn set_gitops(
    spec: &MeshSpec,
    file: &str,
    fields: &[(&'static str, String)],
) -> Result<String, EditError> {
    let src = &spec.source;
    let text = src.text().text();
    let fields: Vec<(&str, String)> = fields.iter().map(|(k, v)| (*k, scalar(v))).collect();
    let (changes, appended) = block_edits(src, text, file, "gitops", spec::GITOPS_KEYS, &fields)?;
    let out = spliced(
        text,
        changes,
        &appended,
        "# The repository the rendered tree is committed to (`cmesh render --save`).\ngitops:",
    );
    let (edited, _) = spec::load(file, &out).map_err(|e| EditError::ReadBack {
        file: file.to_owned(),
        why: e.to_string(),
    })?;
    for (key, value) in fields {
        let got = edited.gitops.field(key);
        if got != Some(value.as_str()) {
            return Err(EditError::ReadBack {
                file: file.to_owned(),
                why: format!("gitops.{key} is {got:?}"),
            });
        }
    }
    Ok(out)
}

/// The plain text of the scalar at `path` in `text` (quotes removed), read afresh: what a
/// reader of the edited file sees, whether or not the file is valid at its new version.
fn scalar_in(file: &str, text: &str, path: &str) -> Option<String> {
    let doc = crate::yaml::parse(text, crate::yaml::Limits::default()).ok()?;
    let src = source::SpecSource::new(crate::diag::SourceText::new(file, text), doc.root.as_ref());
    let span = src.span(path)?;
    let raw = text.get(span.offset..span.offset + span.len)?;
    Some(raw.trim_matches(|c| c == '"' || c == '\'').to_owned())
}

/// Sets `cilium.version` to `version` (keeping its quoting) and each `clustermesh.<key>` of
/// `mesh` to its boolean (replaced where written, else added under a sibling key, else in a new
/// `clustermesh:` block at the end). Returns the new text; whether mesh.yaml is valid at the new
/// version is for `check` to say.
///
/// # Errors
/// [`EditError`] when `cilium.version` is not written, a key cannot be placed, or the result
/// does not read back.
pub fn set_version(
    spec: &MeshSpec,
    file: &str,
    version: &crate::version::CiliumVersion,
    mesh: &[(&'static str, bool)],
) -> Result<String, EditError> {
    let src = &spec.source;
    let text = src.text().text();
    let mut changes: Vec<Change> = Vec::new();
    let Some(span) = src.span("cilium.version") else {
        return Err(EditError::NoAnchor {
            file: file.to_owned(),
            path: "cilium.version".into(),
            parent: "cilium".into(),
        });
    };
    let old = &text[span.offset..span.offset + span.len];
    let new = if old.starts_with('"') {
        format!("\"{version}\"")
    } else if old.starts_with('\'') {
        format!("'{version}'")
    } else {
        // Plain, as it was: a version has two dots, which YAML never reads as a number.
        version.to_string()
    };
    changes.push((span.offset, span.len, new));
    let fields: Vec<(&str, String)> = mesh.iter().map(|(k, v)| (*k, v.to_string())).collect();
    let (more, appended) = block_edits(src, text, file, "clustermesh", spec::MESH_KEYS, &fields)?;
    changes.extend(more);
    let out = spliced(text, changes, &appended, "clustermesh:");
    let read_back = |path: &str, want: &str| -> Result<(), EditError> {
        let got = scalar_in(file, &out, path);
        if got.as_deref() == Some(want) {
            Ok(())
        } else {
            Err(EditError::ReadBack {
                file: file.to_owned(),
                why: format!("{path} is {got:?}"),
            })
        }
    };
    read_back("cilium.version", &version.to_string())?;
    for (key, value) in mesh {
        read_back(&source::child("clustermesh", key), &value.to_string())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_is_set_in_place_keeping_quotes_and_a_pin_is_added_under_clustermesh() {
        let text = spec::example::builtin();
        let spec = load(&text);
        let to: crate::version::CiliumVersion = "1.19.7".parse().unwrap();
        let out = set_version(
            &spec,
            "mesh.yaml",
            &to,
            &[("policyDefaultLocalCluster", false)],
        )
        .unwrap();
        let old = spec.cilium.version.to_string();
        assert!(
            text.contains(&format!("version: \"{old}\"")),
            "the example quotes it"
        );
        assert!(out.contains("version: \"1.19.7\""), "{out}");
        assert!(
            out.contains("  policyDefaultLocalCluster: false\n"),
            "{out}"
        );
        // Everything else byte for byte: the two edits are the only differences.
        let mut back = out.replace("version: \"1.19.7\"", &format!("version: \"{old}\""));
        back = back.replace("  policyDefaultLocalCluster: false\n", "");
        assert_eq!(back, text);
        // A written pin is replaced, not repeated.
        let again = set_version(
            &load(&out),
            "mesh.yaml",
            &"1.20.0".parse().unwrap(),
            &[("policyDefaultLocalCluster", true)],
        )
        .unwrap();
        assert_eq!(again.matches("policyDefaultLocalCluster").count(), 1);
        assert!(again.contains("policyDefaultLocalCluster: true"), "{again}");
        // No clustermesh block: one is appended.
        let bare = "name: m\ncilium:\n  version: 1.18.11\nclusters:\n  - name: a\n    id: 1\n    podCIDR: 10.1.0.0/16\n    serviceCIDR: 10.96.0.0/18\n    clustermesh:\n      address: a.example\n      port: 32379\n  - name: b\n    id: 2\n    podCIDR: 10.2.0.0/16\n    serviceCIDR: 10.97.0.0/18\n    clustermesh:\n      address: b.example\n      port: 32380\n";
        let out = set_version(
            &load(bare),
            "mesh.yaml",
            &to,
            &[("policyDefaultLocalCluster", false)],
        )
        .unwrap();
        assert!(out.contains("  version: 1.19.7\n"), "{out}");
        assert!(
            out.ends_with("\nclustermesh:\n  policyDefaultLocalCluster: false\n"),
            "{out}"
        );
        assert_eq!(
            crate::spec::load("mesh.yaml", &out)
                .unwrap()
                .0
                .clustermesh
                .policy_default_local_cluster,
            Some(false)
        );
    }

    #[test]
    fn gitops_fields_are_set_in_place_added_or_appended_as_a_block() {
        let fields = |repo: &str| {
            vec![
                ("repoURL", repo.to_owned()),
                ("revision", "main".to_owned()),
                ("path", "clusters/mesh".to_owned()),
            ]
        };
        // No gitops block: one is appended, the rest is byte for byte what it was.
        let example = spec::example::builtin();
        let text = example[..example.find("\n# The git repository").unwrap() + 1].to_owned();
        assert!(!text.contains("gitops:"));
        let out = set_gitops(
            &load(&text),
            "mesh.yaml",
            &fields("https://git.example/a.git"),
        )
        .unwrap();
        assert!(out.starts_with(&text), "appended only");
        assert!(
            out.ends_with("gitops:\n  repoURL: https://git.example/a.git\n  revision: main\n  path: clusters/mesh\n"),
            "{out}"
        );
        // Written values are replaced where they stand, comments kept; twice is once.
        let commented = out.replace(
            "  revision: main\n",
            "  # the branch Argo CD follows\n  revision: main\n",
        );
        let again = set_gitops(
            &load(&commented),
            "mesh.yaml",
            &fields("https://git.example/b.git"),
        )
        .unwrap();
        assert!(
            again.contains("  # the branch Argo CD follows\n  revision: main\n"),
            "{again}"
        );
        assert!(
            again.contains("repoURL: https://git.example/b.git\n"),
            "{again}"
        );
        assert!(!again.contains("a.git"), "{again}");
        assert_eq!(
            set_gitops(
                &load(&again),
                "mesh.yaml",
                &fields("https://git.example/b.git")
            )
            .unwrap(),
            again
        );
        // A block without repoURL gets it under a sibling, at the sibling's indentation.
        let partial = format!("{text}\ngitops:\n    revision: prod\n");
        let out = set_gitops(
            &load(&partial),
            "mesh.yaml",
            &[("repoURL", "https://git.example/c.git".into())],
        )
        .unwrap();
        assert!(
            out.ends_with("gitops:\n    revision: prod\n    repoURL: https://git.example/c.git\n"),
            "{out}"
        );
        // init's block: repoURL added under the commented example, comments kept.
        let out = set_gitops(
            &load(&example),
            "mesh.yaml",
            &fields("https://git.example/d.git"),
        )
        .unwrap();
        assert!(
            out.contains("  # repoURL: https://github.com/acme/platform.git\n  revision: main\n  repoURL: https://git.example/d.git\n"),
            "{out}"
        );
        assert!(out.contains("  path: clusters/mesh\n"), "{out}");
        // Flow style cannot take a key: an error, nothing returned.
        let flow = format!("{text}\ngitops: {{revision: prod}}\n");
        assert!(matches!(
            set_gitops(
                &load(&flow),
                "mesh.yaml",
                &[("repoURL", "https://git.example/c.git".into())]
            ),
            Err(EditError::NoAnchor { .. })
        ));
    }

    fn load(text: &str) -> MeshSpec {
        spec::load("mesh.yaml", text).unwrap().0
    }

    #[test]
    fn replaces_in_place_and_inserts_missing_keys_keeping_comments() {
        let text = spec::example::builtin();
        let spec = load(&text);
        let edits = vec![
            Edit {
                cluster: 0,
                key: vec!["kubeconfig"],
                value: "lab/k8s01.kubeconfig".into(),
            },
            Edit {
                cluster: 0,
                key: vec!["context"],
                value: "kind-k8s01".into(),
            },
            Edit {
                cluster: 1,
                key: vec!["apiServer"],
                value: "172.18.0.3:6443".into(),
            },
            Edit {
                cluster: 1,
                key: vec!["clustermesh", "address"],
                value: "172.18.0.3".into(),
            },
        ];
        let out = apply(&spec, "mesh.yaml", &edits).unwrap();
        // Every comment line survives, in order.
        let comments = |t: &str| {
            t.lines()
                .filter(|l| l.trim_start().starts_with('#'))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        assert_eq!(comments(&text), comments(&out));
        assert!(
            out.contains("    kubeconfig: lab/k8s01.kubeconfig\n"),
            "{out}"
        );
        assert!(
            out.contains("  - name: k8s01\n    context: kind-k8s01\n"),
            "{out}"
        );
        assert!(out.contains("    apiServer: 172.18.0.3:6443\n"), "{out}");
        // The emitter quotes what a YAML 1.1 reader might take for a number.
        assert!(out.contains("      address: \"172.18.0.3\"\n"), "{out}");
        // Nothing else changed: the diff is exactly the four lines.
        let before: Vec<&str> = text.lines().collect();
        let after: Vec<&str> = out.lines().collect();
        assert_eq!(after.len(), before.len() + 1);
        // Twice is the same as once.
        let again = apply(&load(&out), "mesh.yaml", &edits).unwrap();
        assert_eq!(again, out);
    }

    #[test]
    fn values_yaml_would_misread_are_quoted() {
        let text = spec::example::builtin();
        let spec = load(&text);
        let out = apply(
            &spec,
            "mesh.yaml",
            &[Edit {
                cluster: 0,
                key: vec!["context"],
                value: "yes".into(),
            }],
        )
        .unwrap();
        assert!(
            out.contains("context: \"yes\"") || out.contains("context: 'yes'"),
            "{out}"
        );
    }
}
