//! Text for `render`: what was written, and `--check` differences (the [`Drift`] type is
//! defined here: the file layer fills it in, this module shows it).

use std::fmt::Write as _;

/// How a file on disk differs from the rendering.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DriftKind {
    /// Content differs.
    Changed,
    /// Would be created.
    Missing,
    /// Would be removed.
    Extra,
}

/// One difference.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Drift {
    /// Path as shown to the user.
    pub path: String,
    /// What differs.
    pub kind: DriftKind,
    /// A short unified diff (never for sensitive files).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
}

/// What a render wrote, for `-o json`.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Written {
    /// The tree's directory.
    pub out: String,
    /// Files written there.
    pub files: usize,
    /// `--secrets-out`, if given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secrets_out: Option<String>,
    /// Files holding private keys or Secrets (in the tree or `--secrets-out`).
    pub secret_files: usize,
    /// Of all files, those written at mode 0600.
    pub sensitive: usize,
    /// What happened to the CA and each certificate (no key material).
    pub pki: Vec<cmesh_core::pki::store::PkiEvent>,
    /// The `gitops:` keys `--save` wrote into mesh.yaml.
    pub saved: Vec<String>,
}

/// `render -o json`: one document.
pub fn written_json(w: &Written) -> String {
    let mut s = serde_json::to_string_pretty(w).unwrap_or_default();
    s.push('\n');
    s
}

/// `render --check -o json`: `{upToDate, keyless, drift: [{path, kind, diff}]}`.
pub fn check_json(out: &str, drift: &[Drift], keyless: bool) -> String {
    let doc = serde_json::json!({
        "out": out,
        "upToDate": drift.is_empty(),
        "keyless": keyless,
        "drift": drift,
    });
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
    s.push('\n');
    s
}

/// The closing lines of a successful render.
pub fn written(
    out: &str,
    files: usize,
    secrets: Option<(String, usize)>,
    sensitive: usize,
) -> String {
    let mut s = format!("wrote {out}/ ({files} files");
    if sensitive > 0 {
        let _ = write!(s, ", {sensitive} with private keys at mode 0600");
    }
    s.push_str(")\n");
    if let Some((dir, n)) = secrets {
        let _ = writeln!(s, "wrote {dir}/ ({n} secrets.yaml files, mode 0600)");
    }
    let _ = writeln!(
        s,
        "next: cat {out}/README.md  (what to apply, in which order; or run `cmesh apply`)"
    );
    s
}

/// The note a keyless `--check` starts with: what it compares and what it cannot.
pub fn keyless_note(pki: &str, certificates: usize, secret_files: usize) -> String {
    let mut s = format!(
        "{pki} holds the CA certificate but no key: checking what a GitOps repository commits (values, Argo CD, Flux, helm scripts, README)"
    );
    if certificates > 0 {
        let _ = write!(
            s,
            " and the {certificates} committed certificate(s) against {pki}/ca.crt"
        );
    }
    if secret_files > 0 {
        let _ = write!(s, "; the {secret_files} secret file(s) are not compared");
    }
    s
}

/// `--check` output: one line per difference, with a short diff for non-secret files.
pub fn drift(drift: &[Drift]) -> String {
    let mut s = String::new();
    for d in drift {
        let word = match d.kind {
            DriftKind::Changed => "changed",
            DriftKind::Missing => "missing",
            DriftKind::Extra => "extra  ",
        };
        let _ = writeln!(s, "{word} {}", d.path);
        if let Some(diff) = &d.diff {
            for line in diff.lines() {
                let _ = writeln!(s, "    {line}");
            }
        }
    }
    s
}
