//! Writing a rendered tree to disk atomically, and comparing one with what is on disk.
//!
//! A tree is written into a temporary sibling directory and swapped into place in one step,
//! so an error or a kill at any point leaves the previous tree or the new one, never a mix or
//! nothing. A directory holding files cmesh would not have written is not replaced without
//! `--force`, except the user's own files ([`is_user_path`]: a top-level
//! `kustomization.yaml`, `local/`), which are carried into every new tree; an output directory
//! may never be or hold pki.dir or mesh.yaml ([`check_disjoint`]).

use crate::ui::render::{Drift, DriftKind};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cmesh_core::render::{FileKind, RenderedFile};

use super::atomic::{self, Mode};
use super::fault;
use crate::errors::ExpectedError;

/// True for paths cmesh writes into a tree (in this layout or an earlier one, so that an
/// older tree is replaced without `--force`).
fn is_cmesh_path(rel: &str) -> bool {
    let parts: Vec<&str> = rel.split('/').collect();
    match parts.as_slice() {
        ["README.md" | ".gitignore"] => true,
        ["argocd", "applications" | "applicationset", f] => f.ends_with(".yaml"),
        ["argocd-config", "argocd-cm-patch.yaml"] => true,
        // The layout before argocd/ was split into its two alternatives.
        ["argocd", f] => f.ends_with(".yaml"),
        ["flux", _, "sync.yaml" | "kustomization.yaml"]
        | ["flux", _, "release", "release.yaml" | "kustomization.yaml"] => true,
        ["helm", f] => f.ends_with(".sh"),
        [
            _,
            "values.yaml" | "secrets.yaml" | "secret-values.yaml" | "flux-secret-values.yaml",
        ] => true,
        _ => false,
    }
}

/// True for the user's own files, which a render keeps as they are: a `kustomization.yaml`
/// at the top of the tree (an overlay over the generated folders) and anything under
/// `local/`.
pub(crate) fn is_user_path(rel: &str) -> bool {
    matches!(rel, "kustomization.yaml" | "kustomization.yml") || rel.starts_with("local/")
}

/// Copies the user's files of the tree `from` into `to` (links stay links, modes kept).
fn carry_user_files(from: &Path, to: &Path, files: &[String]) -> Result<(), ExpectedError> {
    let werr = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ExpectedError::Write { path, source }
    };
    for rel in files {
        let src = from.join(rel);
        let dst = to.join(rel);
        if let Some(p) = dst.parent() {
            std::fs::create_dir_all(p).map_err(werr(p))?;
        }
        let meta = std::fs::symlink_metadata(&src).map_err(|source| ExpectedError::Read {
            path: src.clone(),
            source,
        })?;
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&src).map_err(|source| ExpectedError::Read {
                path: src.clone(),
                source,
            })?;
            #[cfg(unix)]
            std::os::unix::fs::symlink(&target, &dst).map_err(werr(&dst))?;
        } else {
            std::fs::copy(&src, &dst).map_err(werr(&dst))?;
        }
    }
    Ok(())
}

fn list_files(root: &Path) -> Result<Vec<String>, ExpectedError> {
    let mut out = Vec::new();
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let p = e.path();
            if e.file_type()?.is_dir() {
                walk(root, &p, out)?;
            } else {
                out.push(
                    p.strip_prefix(root)
                        .unwrap_or(&p)
                        .to_string_lossy()
                        .replace('\\', "/"),
                );
            }
        }
        Ok(())
    }
    walk(root, root, &mut out).map_err(|source| ExpectedError::Read {
        path: root.to_path_buf(),
        source,
    })?;
    out.sort();
    Ok(out)
}

/// Whether the file at `path` is already exactly `f`: a regular file (not a link) of the same
/// length, permissions and bytes.
fn same_file(path: &Path, f: &RenderedFile) -> bool {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return false;
    };
    if !meta.is_file() || meta.len() != f.bytes.len() as u64 {
        return false;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o7777 != mode(f.kind).bits() {
            return false;
        }
    }
    std::fs::read(path).is_ok_and(|b| b == f.bytes)
}

fn mode(kind: FileKind) -> Mode {
    match kind {
        FileKind::Public => Mode::Public,
        FileKind::Sensitive => Mode::Private,
        FileKind::Executable => Mode::Executable,
    }
}

/// Replaces `dir` with exactly `files`. The caller holds `dir`'s lock ([`super::lock::beside`]).
///
/// The new tree is written into a temporary sibling, then swapped with the old one in one
/// step (`RENAME_EXCHANGE`), so a reader of `dir` sees the old or the new tree at every
/// instant; where the file system cannot swap, the old tree is moved aside first and the next
/// run puts it back if this one is killed in between. What killed runs left beside `dir` is
/// removed first.
///
/// # Errors
/// [`ExpectedError::Write`], or [`ExpectedError::DirNotOurs`] when `dir` holds foreign files
/// and `force` is false.
pub(crate) fn write_tree(
    dir: &Path,
    files: &BTreeMap<String, RenderedFile>,
    force: bool,
) -> Result<(), ExpectedError> {
    let werr = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ExpectedError::Write { path, source }
    };
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(werr(&parent))?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "cmesh-out".into());
    recover(dir, &parent, &name)?;
    if dir.exists() {
        if !dir.is_dir() {
            return Err(ExpectedError::Usage {
                message: format!("{} exists and is not a directory", dir.display()),
                hint: Some("choose another --out".into()),
            });
        }
        if !force {
            let foreign: Vec<String> = list_files(dir)?
                .into_iter()
                .filter(|p| !is_cmesh_path(p) && !is_user_path(p))
                .collect();
            if !foreign.is_empty() {
                return Err(ExpectedError::DirNotOurs {
                    dir: dir.to_path_buf(),
                    files: foreign.into_iter().take(5).collect(),
                });
            }
        }
    }
    // The files of the current tree whose bytes and mode are what this render writes: carried
    // into the new tree as hard links instead of being written again (a re-render after one
    // cluster's change writes that cluster's files only). When every file is unchanged and
    // nothing is added or removed, the tree is left as it is.
    let current: Vec<String> = if dir.is_dir() {
        list_files(dir)?
    } else {
        Vec::new()
    };
    let unchanged: std::collections::BTreeSet<&str> = files
        .iter()
        .filter(|(rel, f)| same_file(&dir.join(rel), f))
        .map(|(rel, _)| rel.as_str())
        .collect();
    if dir.is_dir()
        && unchanged.len() == files.len()
        && current
            .iter()
            .all(|p| files.contains_key(p) || is_user_path(p))
    {
        tracing::debug!(dir = %dir.display(), files = files.len(), "tree unchanged");
        return Ok(());
    }
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}.tmp-"))
        .tempdir_in(&parent)
        .map_err(werr(&parent))?;
    tracing::debug!(dir = %dir.display(), staging = %tmp.path().display(), files = files.len(), unchanged = unchanged.len(), "writing tree");
    for (rel, f) in files {
        if crate::host::signals::interrupted() {
            return Err(ExpectedError::Interrupted);
        }
        let path = tmp.path().join(rel);
        if let Some(p) = path.parent() {
            std::fs::create_dir_all(p).map_err(werr(p))?;
        }
        // A link that cannot be made (another file system, a limit) is written instead.
        if unchanged.contains(rel.as_str()) && std::fs::hard_link(dir.join(rel), &path).is_ok() {
            continue;
        }
        atomic::write_new(&path, &f.bytes, mode(f.kind))?;
    }
    // The user's own files (an overlay, `local/`) go into the new tree as they are.
    if dir.is_dir() {
        let mine: Vec<String> = list_files(dir)?
            .into_iter()
            .filter(|p| is_user_path(p) && !files.contains_key(p))
            .collect();
        carry_user_files(dir, tmp.path(), &mine)?;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))
            .map_err(werr(tmp.path()))?;
    }
    fault::point("tree-staged");
    // The last safe point: after it the old tree is replaced.
    if crate::host::signals::interrupted() {
        return Err(ExpectedError::Interrupted);
    }
    if !dir.exists() {
        std::fs::rename(tmp.path(), dir).map_err(werr(dir))?;
        let _ = tmp.keep();
        return Ok(());
    }
    if !fault::disabled("exchange") && atomic::exchange(tmp.path(), dir).map_err(werr(dir))? {
        // `tmp` now holds the old tree; its guard removes it.
        fault::point("tree-swapped");
        return drop_old(tmp);
    }
    // Two renames. Killed between them, `dir` is missing and the next run's `recover` moves
    // the old tree back from `.<name>.old-*/tree`.
    let old = tempfile::Builder::new()
        .prefix(&format!(".{name}.old-"))
        .tempdir_in(&parent)
        .map_err(werr(&parent))?;
    let old_path = old.path().join("tree");
    std::fs::rename(dir, &old_path).map_err(werr(dir))?;
    fault::point("tree-old-moved");
    if let Err(e) = std::fs::rename(tmp.path(), dir) {
        // Put the previous tree back; the new one is discarded with `tmp`.
        let _ = std::fs::rename(&old_path, dir);
        return Err(werr(dir)(e));
    }
    let _ = tmp.keep();
    drop_old(old)
}

/// Refuses an output directory that is, holds or sits inside a protected path (pki.dir, the
/// directory of mesh.yaml, another output): replacing it would delete or swallow them, even
/// with `--force`. Paths are compared after resolving links and `..`.
///
/// # Errors
/// [`ExpectedError::Usage`] naming both paths.
pub(crate) fn check_disjoint(
    flag: &str,
    out: &Path,
    protected: &[(&str, &Path)],
) -> Result<(), ExpectedError> {
    let o = resolve(out);
    for (what, p) in protected {
        let r = resolve(p);
        let clash = if o == r {
            Some("is")
        } else if r.starts_with(&o) {
            Some("holds")
        } else if o.starts_with(&r) {
            Some("is inside")
        } else {
            None
        };
        if let Some(how) = clash {
            return Err(ExpectedError::Usage {
                message: format!(
                    "{flag} {} {how} {what} {}: rendering replaces the whole output directory",
                    out.display(),
                    p.display()
                ),
                hint: Some(format!(
                    "choose a directory of its own for {flag}, such as ./cmesh-out"
                )),
            });
        }
    }
    Ok(())
}

/// The absolute path with links resolved as far as the path exists (the rest appended).
fn resolve(p: &Path) -> PathBuf {
    let cwd = std::env::current_dir().unwrap_or_default();
    let abs = normalize(&if p.is_absolute() {
        p.to_path_buf()
    } else {
        cwd.join(p)
    });
    let mut existing = abs.clone();
    let mut rest = Vec::new();
    loop {
        if let Ok(c) = std::fs::canonicalize(&existing) {
            let mut out = c;
            for part in rest.iter().rev() {
                out.push(part);
            }
            return out;
        }
        match (
            existing.file_name().map(|n| n.to_os_string()),
            existing.parent(),
        ) {
            (Some(n), Some(parent)) => {
                rest.push(n);
                existing = parent.to_path_buf();
            }
            _ => return abs,
        }
    }
}

fn drop_old(old: tempfile::TempDir) -> Result<(), ExpectedError> {
    let path = old.path().to_path_buf();
    old.close()
        .map_err(|source| ExpectedError::Write { path, source })
}

/// Undoes what a run killed while writing `dir` left in `parent`: the previous tree moved
/// aside with no new one in place is put back; temporary trees (`.<name>.tmp-*`, which may
/// hold keys) and set-aside old ones are removed.
fn recover(dir: &Path, parent: &Path, name: &str) -> Result<(), ExpectedError> {
    let tmp_prefix = format!(".{name}.tmp-");
    let old_prefix = format!(".{name}.old-");
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Ok(());
    };
    let mut leftovers: Vec<(String, PathBuf)> = entries
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .filter(|(n, _)| n.starts_with(&tmp_prefix) || n.starts_with(&old_prefix))
        .collect();
    leftovers.sort();
    for (n, path) in &leftovers {
        let tree = path.join("tree");
        if n.starts_with(&old_prefix)
            && std::fs::symlink_metadata(dir).is_err()
            && std::fs::symlink_metadata(&tree).is_ok_and(|m| m.is_dir())
        {
            std::fs::rename(&tree, dir).map_err(|source| ExpectedError::Write {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        atomic::remove_leftover(path)?;
    }
    Ok(())
}

/// Compares `files` with `dir` on disk.
///
/// # Errors
/// [`ExpectedError::Read`].
pub(crate) fn compare(
    dir: &Path,
    files: &BTreeMap<String, RenderedFile>,
    max_diff_lines: usize,
) -> Result<Vec<Drift>, ExpectedError> {
    let mut out = Vec::new();
    let shown = |rel: &str| dir.join(rel).display().to_string();
    for (rel, f) in files {
        let path = dir.join(rel);
        match std::fs::read(&path) {
            Ok(bytes) if bytes == f.bytes => {}
            Ok(bytes) => {
                let diff = if f.kind == FileKind::Sensitive {
                    None
                } else {
                    Some(short_diff(
                        &String::from_utf8_lossy(&bytes),
                        &String::from_utf8_lossy(&f.bytes),
                        max_diff_lines,
                    ))
                };
                out.push(Drift {
                    path: shown(rel),
                    kind: DriftKind::Changed,
                    diff,
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => out.push(Drift {
                path: shown(rel),
                kind: DriftKind::Missing,
                diff: None,
            }),
            Err(source) => return Err(ExpectedError::Read { path, source }),
        }
    }
    if dir.is_dir() {
        for rel in list_files(dir)? {
            if is_cmesh_path(&rel) && !is_user_path(&rel) && !files.contains_key(&rel) {
                out.push(Drift {
                    path: shown(&rel),
                    kind: DriftKind::Extra,
                    diff: None,
                });
            }
        }
    }
    Ok(out)
}

fn short_diff(old: &str, new: &str, max: usize) -> String {
    let diff = similar::TextDiff::from_lines(old, new);
    let text = diff
        .unified_diff()
        .context_radius(1)
        .header("on disk", "rendered")
        .to_string();
    let lines: Vec<&str> = text.lines().collect();
    let mut s = lines
        .iter()
        .take(max)
        .copied()
        .collect::<Vec<_>>()
        .join("\n");
    if lines.len() > max {
        s.push_str(&format!("\n… {} more lines", lines.len() - max));
    }
    s
}

/// A path from directory `from` to `to`, both relative to the current directory or absolute,
/// written with `/`. Used in scripts so that trees do not embed absolute paths.
pub(crate) fn relative_path(from: &Path, to: &Path) -> String {
    let cwd = std::env::current_dir().unwrap_or_default();
    let abs = |p: &Path| {
        normalize(&if p.is_absolute() {
            p.to_path_buf()
        } else {
            cwd.join(p)
        })
    };
    let (from, to) = (abs(from), abs(to));
    let f: Vec<_> = from.components().collect();
    let t: Vec<_> = to.components().collect();
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = std::iter::repeat_n("..".to_string(), f.len() - common).collect();
    parts.extend(
        t[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().to_string()),
    );
    if parts.is_empty() {
        ".".into()
    } else {
        parts.join("/")
    }
}

fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        assert_eq!(
            relative_path(Path::new("/a/b/out"), Path::new("/a/b")),
            ".."
        );
        assert_eq!(
            relative_path(Path::new("/a/b/out"), Path::new("/a/b/out")),
            "."
        );
        assert_eq!(
            relative_path(Path::new("/a/out"), Path::new("/a/sec/x")),
            "../sec/x"
        );
        assert_eq!(
            relative_path(Path::new("/a/./out/../o2"), Path::new("/a")),
            ".."
        );
    }

    #[test]
    fn outputs_never_overlap_pki_dir_or_mesh_yaml() {
        let t = tempfile::tempdir().unwrap();
        let pki = t.path().join("pki");
        std::fs::create_dir(&pki).unwrap();
        let spec_dir = t.path().join("repo");
        let spec = spec_dir.join("mesh.yaml");
        let protected = [("pki.dir", pki.as_path()), ("mesh.yaml", spec.as_path())];
        assert!(check_disjoint("--out", &t.path().join("cmesh-out"), &protected).is_ok());
        assert!(check_disjoint("--out", &spec_dir.join("cmesh-out"), &protected).is_ok());
        for bad in [
            pki.clone(),
            pki.join("sub"),
            t.path().to_path_buf(),
            t.path().join("pki/../pki"),
            spec_dir.clone(),
        ] {
            assert!(
                check_disjoint("--out", &bad, &protected).is_err(),
                "{}",
                bad.display()
            );
        }
        #[cfg(unix)]
        {
            let link = t.path().join("link");
            std::os::unix::fs::symlink(&pki, &link).unwrap();
            assert!(check_disjoint("--out", &link, &protected).is_err());
        }
    }

    #[test]
    fn cmesh_paths() {
        assert!(is_cmesh_path("k8s01/values.yaml"));
        assert!(is_cmesh_path("argocd/applicationset.yaml"));
        assert!(is_cmesh_path("argocd/applications/k8s01.yaml"));
        assert!(is_cmesh_path("argocd/applicationset/kustomization.yaml"));
        assert!(is_cmesh_path("argocd-config/argocd-cm-patch.yaml"));
        assert!(is_cmesh_path("flux/k8s01/release/kustomization.yaml"));
        assert!(!is_cmesh_path("kustomization.yaml") && is_user_path("kustomization.yaml"));
        assert!(is_user_path("local/patch.yaml") && !is_user_path("argocd/local/x.yaml"));
        assert!(!is_cmesh_path("k8s01/secrets.sealed.yaml"));
        assert!(!is_cmesh_path("notes.txt"));
    }
}
