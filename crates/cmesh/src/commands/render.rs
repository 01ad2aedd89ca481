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
) -> Result<Prepared, ExpectedError> {
    let loaded = load_spec(global)?;
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
    let tree = render::render_tree(spec, &view, &opts)
        .map_err(|e| ExpectedError::Internal(e.to_string()))?;
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
    let prepared = prepare(
        global,
        args.phase.into(),
        &out_dir,
        secrets_dir.as_deref(),
        args.check,
    )?;
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
