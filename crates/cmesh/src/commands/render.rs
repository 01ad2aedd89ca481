//! `cmesh render`: brings the PKI up to date and writes the GitOps tree, or with `--check`
//! reports how the tree on disk differs from what would be rendered.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use cmesh_core::pki::store::{self, CaPolicy, ReconcileOptions, Reconciled};
use cmesh_core::render::{self, RenderOptions, RenderedTree, ScriptPaths};
use cmesh_core::spec::{CertMethod, MeshSpec};

use super::common::{emit, load_spec, now};
use crate::cli::{GlobalArgs, RenderArgs};
use crate::errors::{ExpectedError, exit};
use crate::input::Loaded;
use crate::{pki_io, tree_io, ui};

/// `--git-repo`, `--git-revision`, `--git-path`: override mesh.yaml's `gitops:` block.
#[derive(Debug, Clone, Default)]
pub struct GitFlags {
    /// Repository URL.
    pub repo: Option<String>,
    /// Revision.
    pub revision: Option<String>,
    /// Path in the repository.
    pub path: Option<String>,
}

impl GitFlags {
    fn apply(&self, g: &mut cmesh_core::spec::GitopsSettings) -> Result<(), ExpectedError> {
        let usage = |flag: &str, why: String, hint: &str| ExpectedError::Usage {
            message: format!("{flag} {why}"),
            hint: Some(hint.into()),
        };
        if let Some(u) = &self.repo {
            cmesh_core::spec::check_git_url(u).map_err(|w| {
                usage(
                    "--git-repo",
                    w,
                    "e.g. --git-repo https://github.com/acme/platform.git",
                )
            })?;
            g.repo_url = Some(u.clone());
        }
        if let Some(r) = &self.revision {
            if r.trim().is_empty() || r.contains(char::is_whitespace) {
                return Err(usage(
                    "--git-revision",
                    format!("`{r}` is not a branch, tag or commit"),
                    "e.g. --git-revision main",
                ));
            }
            g.revision = r.clone();
        }
        if let Some(p) = &self.path {
            g.path = cmesh_core::spec::normalize_git_path(p).map_err(|w| {
                usage("--git-path", w, "the tree's directory relative to the repository root, e.g. --git-path clusters/mesh")
            })?;
        }
        Ok(())
    }
}

/// Everything a render produced, before anything is written.
pub struct Prepared {
    /// The loaded spec.
    pub loaded: Loaded,
    /// pki.dir.
    pub pki_dir: PathBuf,
    /// The reconciled PKI (`None` for certManager).
    pub pki: Option<Reconciled>,
    /// The tree.
    pub tree: RenderedTree,
}

/// Renders in memory. With `check`, the PKI must already exist and is not changed.
///
/// # Errors
/// Spec, PKI and render errors.
pub fn prepare(
    global: &GlobalArgs,
    phase: render::Phase,
    out_dir: &Path,
    secrets_dir: Option<&Path>,
    check: bool,
    git: &GitFlags,
) -> Result<Prepared, ExpectedError> {
    let mut loaded = load_spec(global)?;
    git.apply(&mut loaded.spec.gitops)?;
    let spec = &loaded.spec;
    let pki_dir = pki_io::pki_dir(&loaded.input.base_dir, &spec.pki.dir);
    let pki = reconcile(
        spec,
        &pki_dir,
        if check {
            CaPolicy::MustExist
        } else {
            CaPolicy::CreateIfMissing
        },
        None,
        false,
    )?;
    let view = match &pki {
        Some(r) => render::pki_view(spec, Some(&r.ca), &r.leaves),
        None => render::pki_view(spec, None, &BTreeMap::new()),
    };
    let opts = RenderOptions {
        phase,
        paths: ScriptPaths {
            spec_dir: tree_io::relative_path(out_dir, &loaded.input.base_dir),
            secrets_dir: tree_io::relative_path(out_dir, secrets_dir.unwrap_or(out_dir)),
        },
        secrets_elsewhere: secrets_dir.is_some(),
    };
    let tree = render::render_tree(spec, &view, &opts).map_err(|e| match e {
        render::RenderError::ObjectTooLarge { .. } => ExpectedError::Usage {
            message: e.to_string(),
            hint: Some(
                "split the values that make it large (cilium.values or the cluster's values) or fewer clusters per mesh".into(),
            ),
        },
        e => ExpectedError::Internal(e.to_string()),
    })?;
    Ok(Prepared {
        loaded,
        pki_dir,
        pki,
        tree,
    })
}

/// Reconciles the PKI of `spec` (skipped for certManager, which has no shared CA).
///
/// # Errors
/// [`ExpectedError::Pki`].
pub fn reconcile(
    spec: &MeshSpec,
    pki_dir: &Path,
    policy: CaPolicy,
    renew_before: Option<time::Duration>,
    force: bool,
) -> Result<Option<Reconciled>, ExpectedError> {
    if spec.clustermesh.certificates == CertMethod::CertManager {
        return Ok(None);
    }
    let files = pki_io::read(pki_dir)?;
    let opts = ReconcileOptions {
        now: now(),
        renew_before: renew_before.unwrap_or(time::Duration::days(30)),
        force,
        clusters: None,
        leaves: spec.clustermesh.certificates == CertMethod::Cmesh,
        ca_policy: policy,
    };
    store::reconcile(spec, &files, &opts)
        .map(Some)
        .map_err(|source| ExpectedError::Pki {
            context: format!("PKI in {}", pki_dir.display()),
            source,
        })
}

/// Runs `cmesh render`.
///
/// # Errors
/// Spec, PKI, render and write errors; [`ExpectedError::Drift`] for `--check` differences.
pub fn run(
    global: &GlobalArgs,
    args: &RenderArgs,
    out: &mut dyn Write,
) -> Result<u8, ExpectedError> {
    let out_dir = args.out.clone();
    let secrets_dir = args.secrets_out.clone().filter(|s| s != &out_dir);
    let git = GitFlags {
        repo: args.git_repo.clone(),
        revision: args.git_revision.clone(),
        path: args.git_path.clone(),
    };
    let prepared = prepare(
        global,
        args.phase.into(),
        &out_dir,
        secrets_dir.as_deref(),
        args.check,
        &git,
    )?;
    let mut warnings = String::new();
    if prepared.loaded.spec.gitops.repo_url.is_none() {
        warnings.push_str(&format!(
            "warning: no git repository for Argo CD and Flux (mesh.yaml `gitops.repoURL` or --git-repo): the Applications and Flux sources point at {}\n",
            render::gitops::PLACEHOLDER_REPO
        ));
    }
    for o in &prepared.tree.large_objects {
        warnings.push_str(&format!(
            "warning: {} in {} is {} KiB, over the 256 KiB client-side apply keeps in its annotation: apply it server-side (Argo CD `ServerSideApply=true`, Flux does)\n",
            o.object,
            o.path,
            o.bytes / 1024
        ));
    }
    if !warnings.is_empty() {
        let _ = std::io::stderr().write_all(warnings.as_bytes());
    }
    let Prepared {
        pki_dir,
        pki,
        mut tree,
        ..
    } = prepared;
    let pki_shown = pki_dir.display().to_string();

    if args.check {
        let mut drift = Vec::new();
        if let Some(r) = &pki {
            for e in r
                .events
                .iter()
                .filter(|e| e.action != store::Action::Reused)
            {
                drift.push(tree_io::Drift {
                    path: format!(
                        "{pki_shown} ({}: {})",
                        e.cluster.clone().unwrap_or_else(|| "CA".into()),
                        e.kind.map(|k| k.file_stem()).unwrap_or("ca")
                    ),
                    kind: tree_io::DriftKind::Changed,
                    diff: Some(
                        format!("certificate would be {:?}: {}", e.action, e.reason).to_lowercase(),
                    ),
                });
            }
        }
        match &secrets_dir {
            Some(dir) => {
                drift.extend(tree_io::compare(&out_dir, &tree.files, 20)?);
                drift.extend(tree_io::compare(dir, &tree.secret_files, 20)?);
            }
            None => {
                tree.files.append(&mut tree.secret_files);
                drift.extend(tree_io::compare(&out_dir, &tree.files, 20)?);
            }
        }
        if drift.is_empty() {
            emit(out, &format!("{}: up to date\n", out_dir.display()))?;
            return Ok(exit::OK);
        }
        emit(out, &ui::render::drift(&drift))?;
        return Err(ExpectedError::Drift {
            what: out_dir.display().to_string(),
            count: drift.len(),
        });
    }

    if let Some(r) = &pki {
        pki_io::write(&pki_dir, &r.writes)?;
    }
    let secret_count = tree.secret_files.len();
    let sensitive = tree
        .files
        .values()
        .chain(tree.secret_files.values())
        .filter(|f| f.kind == render::FileKind::Sensitive)
        .count();
    match &secrets_dir {
        Some(dir) => {
            tree_io::write_tree(&out_dir, &tree.files, args.force)?;
            if !tree.secret_files.is_empty() {
                tree_io::write_tree(dir, &tree.secret_files, args.force)?;
            }
        }
        None => {
            let mut all = tree.files.clone();
            all.extend(tree.secret_files.clone());
            tree_io::write_tree(&out_dir, &all, args.force)?;
        }
    }
    let mut s = String::new();
    if let Some(r) = &pki {
        s.push_str(&ui::pki::events_summary(&pki_shown, &r.events));
    }
    s.push_str(&ui::render::written(
        &out_dir.display().to_string(),
        tree.files.len()
            + if secrets_dir.is_none() {
                secret_count
            } else {
                0
            },
        secrets_dir
            .as_ref()
            .map(|d| (d.display().to_string(), secret_count)),
        sensitive,
    ));
    emit(out, &s)?;
    Ok(exit::OK)
}
