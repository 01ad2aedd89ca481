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
