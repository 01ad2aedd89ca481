//! The pipeline every command that renders shares: load mesh.yaml, open pki.dir (taking its
//! lock), reconcile the PKI, and render the tree in memory. Nothing is written here; the
//! commands decide what to write (`render`), apply (`apply`) or compare (`status`).

use std::collections::BTreeMap;
use std::path::Path;

use cmesh_core::pki::public::{PublicPki, verify_public};
use cmesh_core::pki::rotation::{self, TrustView};
use cmesh_core::pki::store::{self, CaPolicy, ReconcileOptions, Reconciled};
use cmesh_core::render::{self, PkiView, RenderOptions, RenderedTree, ScriptPaths, keyless};
use cmesh_core::spec::{CertMethod, MeshSpec};

use crate::cli::GlobalArgs;
use crate::commands::common::{load_spec, now};
use crate::errors::ExpectedError;
use crate::fs::lock::{self, LockWait, Locks};
use crate::fs::pki::{PkiDir, pki_dir};
use crate::fs::spec::Loaded;
use crate::fs::tree;

/// `--git-repo`, `--git-revision`, `--git-path`: override mesh.yaml's `gitops:` block.
#[derive(Debug, Clone, Default)]
pub(crate) struct GitFlags {
    /// Repository URL.
    pub(crate) repo: Option<String>,
    /// Revision.
    pub(crate) revision: Option<String>,
    /// Path in the repository.
    pub(crate) path: Option<String>,
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

/// How a command uses pki.dir.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PkiAccess {
    /// May create the CA and issue or renew certificates.
    Write,
    /// Only reads (`--check`, `--dry-run`, `status`, `probe`, `pki show`).
    Read,
}

/// The wait for a lock that `--lock-timeout` asks for, announcing on stderr.
pub(crate) fn with_lock_wait<T>(global: &GlobalArgs, f: impl FnOnce(&mut LockWait<'_>) -> T) -> T {
    let mut note = |line: &str| crate::ui::term::note(line);
    let mut wait = LockWait {
        timeout: global.lock_timeout.0,
        notify: &mut note,
    };
    f(&mut wait)
}

/// Opens the spec's pki.dir for `access` (locked; see [`PkiDir`]).
///
/// # Errors
/// Lock and file errors.
pub(crate) fn open_pki(
    global: &GlobalArgs,
    loaded: &Loaded,
    access: PkiAccess,
) -> Result<PkiDir, ExpectedError> {
    let dir = pki_dir(&loaded.input.base_dir, &loaded.spec.pki.dir);
    with_lock_wait(global, |wait| match access {
        PkiAccess::Write => PkiDir::open_rw(&dir, wait),
        PkiAccess::Read => PkiDir::open_ro(&dir, wait),
    })
}

/// Takes the locks of output directories (on the directory holding each, since a tree is
/// replaced as a whole), once per directory. For a read (`--check`), a missing parent needs
/// no lock: there is nothing to compare with.
///
/// # Errors
/// [`ExpectedError::Locked`] and file errors.
pub(crate) fn lock_outputs(
    global: &GlobalArgs,
    dirs: &[&Path],
    access: PkiAccess,
) -> Result<Locks, ExpectedError> {
    let mut locks = Locks::default();
    for dir in dirs {
        let parent = lock::output_parent(dir);
        if access == PkiAccess::Write {
            std::fs::create_dir_all(&parent).map_err(|source| ExpectedError::Write {
                path: parent.clone(),
                source,
            })?;
        } else if !parent.is_dir() {
            continue;
        }
        let what = format!("the output directory {}", dir.display());
        with_lock_wait(global, |wait| locks.take(&parent, &what, wait))?;
    }
    Ok(locks)
}

/// Everything a render produced, before anything is written.
pub(crate) struct Prepared {
    /// The loaded spec.
    pub(crate) loaded: Loaded,
    /// pki.dir, open and locked until this is dropped.
    pub(crate) pki_dir: PkiDir,
    /// The reconciled PKI (`None` for certManager, and for a keyless check).
    pub(crate) pki: Option<Reconciled>,
    /// For a `--check` without the CA key (a clone of the GitOps repository): the CA
    /// certificate and the committed leaf certificates, judged. The secret files were
    /// rendered with stand-in keys and must not be compared.
    pub(crate) keyless: Option<PublicPki>,
    /// The tree.
    pub(crate) tree: RenderedTree,
}

/// Loads the spec and renders in memory. With `check`, the PKI must already exist and is not
/// changed; when pki.dir holds the CA certificate but not its key, the check is keyless (see
/// [`Prepared::keyless`]).
///
/// # Errors
/// Spec, PKI and render errors.
pub(crate) fn prepare(
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
    {
        // Replacing an output directory must never touch pki.dir or mesh.yaml (and with
        // --check, comparing one must not wait on our own lock of pki.dir).
        let pki = pki_dir(&loaded.input.base_dir, &spec.pki.dir);
        let spec_file = match &global.spec_source() {
            crate::fs::spec::SpecSourceArg::File(p) if p.as_os_str() != "-" => Some(p.clone()),
            _ => None,
        };
        let mut protected: Vec<(&str, &Path)> = vec![("pki.dir", pki.as_path())];
        if let Some(f) = &spec_file {
            protected.push(("mesh.yaml", f.as_path()));
        }
        tree::check_disjoint("--out", out_dir, &protected)?;
        if let Some(s) = secrets_dir {
            protected.push(("--out", out_dir));
            tree::check_disjoint("--secrets-out", s, &protected)?;
        }
    }
    let access = if check {
        PkiAccess::Read
    } else {
        PkiAccess::Write
    };
    let pki_dir = open_pki(global, &loaded, access)?;
    if check && spec.clustermesh.certificates != CertMethod::CertManager {
        let files = pki_dir.read()?;
        if let (Some(ca_cert), None) = (files.get(store::CA_CERT), files.get(store::CA_KEY)) {
            let (public, trust) =
                verify_committed(&loaded, &pki_dir, &files, ca_cert, phase, out_dir)?;
            let view = keyless::keyless_view(&loaded.spec, &public, &trust);
            let tree = render_view(&loaded, &view, phase, out_dir, secrets_dir)?;
            return Ok(Prepared {
                loaded,
                pki_dir,
                pki: None,
                keyless: Some(public),
                tree,
            });
        }
    }
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
    if crate::host::signals::interrupted() {
        return Err(ExpectedError::Interrupted);
    }
    let tree = render_in_memory(&loaded, pki.as_ref(), phase, out_dir, secrets_dir)?;
    Ok(Prepared {
        loaded,
        pki_dir,
        pki,
        keyless: None,
        tree,
    })
}

/// Largest committed values.yaml a keyless check reads (the chart's own values are a few
/// hundred KiB; a Kubernetes object cannot exceed 1.5 MiB).
const MAX_COMMITTED_VALUES: u64 = 4 * 1024 * 1024;

/// The keyless check's PKI: `ca.crt` as pki.dir holds it (with a rotation's `rotation/ca.crt`
/// and stage), and the leaf certificates that the committed `values.yaml` of each cluster
/// carries, judged against the CA that issues them at this stage.
fn verify_committed(
    loaded: &Loaded,
    pki_dir: &PkiDir,
    files: &store::PkiFiles,
    ca_cert: &[u8],
    phase: render::Phase,
    out_dir: &Path,
) -> Result<(PublicPki, TrustView), ExpectedError> {
    let spec = &loaded.spec;
    let pki_err = |source| ExpectedError::Pki {
        context: format!("PKI in {}", pki_dir.path().display()),
        source,
    };
    let trust = rotation::trust_view(files, &String::from_utf8_lossy(ca_cert)).map_err(pki_err)?;
    let mut values = BTreeMap::new();
    for c in &spec.clusters {
        let path = out_dir.join(&c.name).join("values.yaml");
        match crate::fs::bounded::read(&path, MAX_COMMITTED_VALUES) {
            // Not UTF-8: the comparison reports the file as changed.
            Ok(bytes) => {
                values.insert(c.name.clone(), String::from_utf8_lossy(&bytes).into_owned());
            }
            // Missing: the comparison reports it missing.
            Err(e) if e.is_not_found() => {}
            Err(e) => {
                return Err(ExpectedError::Read {
                    path,
                    source: std::io::Error::other(e.to_string()),
                });
            }
        }
    }
    let committed = keyless::committed_leaf_certs(spec, phase, &values);
    let opts = reconcile_options(spec, CaPolicy::MustExist, None, false);
    let public = verify_public(
        spec,
        &trust.issuer_pem,
        &committed,
        |_, kind| keyless::leaf_in_tree(spec, phase, kind),
        &opts,
    )
    .map_err(pki_err)?;
    Ok((public, trust))
}

/// Renders the tree for `loaded` with the reconciled PKI.
///
/// # Errors
/// [`ExpectedError::Usage`] for an object too large to apply; internal errors.
pub(crate) fn render_in_memory(
    loaded: &Loaded,
    pki: Option<&Reconciled>,
    phase: render::Phase,
    out_dir: &Path,
    secrets_dir: Option<&Path>,
) -> Result<RenderedTree, ExpectedError> {
    let spec = &loaded.spec;
    let view = render::pki_view(spec, pki);
    render_view(loaded, &view, phase, out_dir, secrets_dir)
}

/// Renders the tree for `loaded` with the certificate material `view`.
fn render_view(
    loaded: &Loaded,
    view: &PkiView,
    phase: render::Phase,
    out_dir: &Path,
    secrets_dir: Option<&Path>,
) -> Result<RenderedTree, ExpectedError> {
    let spec = &loaded.spec;
    let opts = RenderOptions {
        phase,
        paths: ScriptPaths {
            spec_dir: tree::relative_path(out_dir, &loaded.input.base_dir),
            secrets_dir: tree::relative_path(out_dir, secrets_dir.unwrap_or(out_dir)),
        },
        secrets_elsewhere: secrets_dir.is_some(),
    };
    render::render_tree(spec, view, &opts).map_err(|e| match e {
        render::RenderError::ObjectTooLarge { .. } => ExpectedError::Usage {
            message: e.to_string(),
            hint: Some(
                "split the values that make it large (cilium.values or the cluster's values) or fewer clusters per mesh".into(),
            ),
        },
        e => ExpectedError::Internal(e.to_string()),
    })
}

/// How the PKI is judged now: leaves only for `certificates: cmesh`, renewed within
/// `renew_before` (30 days by default); the same for a render and a keyless check.
fn reconcile_options(
    spec: &MeshSpec,
    policy: CaPolicy,
    renew_before: Option<time::Duration>,
    force: bool,
) -> ReconcileOptions {
    ReconcileOptions {
        now: now(),
        renew_before: renew_before.unwrap_or(time::Duration::days(30)),
        force,
        clusters: None,
        leaves: spec.clustermesh.certificates == CertMethod::Cmesh,
        ca_policy: policy,
        verified: store::Verified::default(),
    }
}

/// Reconciles the PKI of `spec` (skipped for certManager, which has no shared CA).
///
/// # Errors
/// [`ExpectedError::Pki`] and read errors.
pub(crate) fn reconcile(
    spec: &MeshSpec,
    pki: &PkiDir,
    policy: CaPolicy,
    renew_before: Option<time::Duration>,
    force: bool,
) -> Result<Option<Reconciled>, ExpectedError> {
    if spec.clustermesh.certificates == CertMethod::CertManager {
        return Ok(None);
    }
    let files = pki.read()?;
    let mut opts = reconcile_options(spec, policy, renew_before, force);
    opts.verified = pki.read_verified();
    let r = store::reconcile(spec, &files, &opts).map_err(|source| ExpectedError::Pki {
        context: format!("PKI in {}", pki.path().display()),
        source,
    })?;
    // With files to write, the caller keeps the cache once they are written.
    if r.writes.is_empty() && r.verified != opts.verified {
        pki.save_verified(&r.verified);
    }
    Ok(Some(r))
}
