//! `cmesh pki init|import|show|renew|rotate`: the mesh CA, the certificates issued from it, and
//! the staged rotation to a new CA.

use std::io::Write;
use std::path::Path;

use cmesh_core::pki::rotation::{self, RotationRefused};
use cmesh_core::pki::store::{self, CA_CERT, CA_KEY, CaPolicy};
use cmesh_core::pki::{Ca, CertInfo, PkiError, PrivateKey, normalize_pem};
use cmesh_core::render::values::b64;

use super::common::{emit, load_spec, now};
use crate::cli::{DurationArg, GlobalArgs, Output, PkiArgs, PkiCommand, RotateCommand};
use crate::errors::{ExpectedError, exit};
use crate::fs::bounded;
use crate::pipeline::{PkiAccess, open_pki, reconcile};
use crate::ui;

/// What every `pki` subcommand works on.
struct Ctx<'a> {
    spec: &'a cmesh_core::spec::MeshSpec,
    dir: &'a crate::fs::pki::PkiDir,
    /// pki.dir as shown to the user.
    shown: String,
}

impl Ctx<'_> {
    fn err(&self, source: PkiError) -> ExpectedError {
        ExpectedError::Pki {
            context: format!("PKI in {}", self.shown),
            source,
        }
    }
}

/// Runs `cmesh pki …`: opens pki.dir (locked for writing but by `show`) and runs the
/// subcommand.
///
/// # Errors
/// Spec, PKI and file errors.
pub(crate) fn run(
    global: &GlobalArgs,
    args: &PkiArgs,
    out: &mut dyn Write,
) -> Result<u8, ExpectedError> {
    let loaded = load_spec(global)?;
    let access = match &args.command {
        PkiCommand::Show { .. } => PkiAccess::Read,
        _ => PkiAccess::Write,
    };
    let dir = open_pki(global, &loaded, access)?;
    let cx = Ctx {
        spec: &loaded.spec,
        dir: &dir,
        shown: dir.path().display().to_string(),
    };
    match &args.command {
        PkiCommand::Init { force } => init(&cx, *force, out),
        PkiCommand::Import { cert, key, force } => import(&cx, cert, key, *force, out),
        PkiCommand::Show { output, out_dir } => show(&cx, *output, out_dir, out),
        PkiCommand::Renew {
            renew_before,
            cluster,
            force,
        } => renew(&cx, renew_before, cluster, *force, out),
        PkiCommand::Rotate(cmd) => rotate(&cx, cmd, out),
    }
}

/// `pki rotate …`: one step of the staged rotation, then where it stands.
fn rotate(cx: &Ctx<'_>, cmd: &RotateCommand, out: &mut dyn Write) -> Result<u8, ExpectedError> {
    let (spec, dir, shown) = (cx.spec, cx.dir, cx.shown.as_str());
    let files = dir.read()?;
    let t = now();
    let current = store::load_ca(&files, t)
        .map_err(|e| cx.err(e))?
        .ok_or_else(|| cx.err(PkiError::NoCa))?;
    let state = rotation::read_state(&files).map_err(|e| cx.err(e))?;
    // A finish killed after placing the new CA: complete it before anything else.
    if state
        .as_ref()
        .is_some_and(|s| s.to == current.info().sha256)
    {
        dir.drop_rotation()?;
        if matches!(cmd, RotateCommand::Finish) {
            emit(
                out,
                "finished the CA rotation an earlier run was interrupted in: the new CA is the mesh CA\nthen: `cmesh render` and `cmesh apply`, so every cluster trusts the mesh CA alone\n",
            )?;
            return Ok(exit::OK);
        }
        return rotate(cx, cmd, out);
    }
    let refused = |e: RotationRefused| match e {
        RotationRefused::Method { reason } => ExpectedError::PkiRefused {
            message: "cmesh cannot rotate this mesh's CA".into(),
            hint: reason,
        },
        RotationRefused::Stage { message, hint } => ExpectedError::PkiRefused { message, hint },
    };
    let mut said = String::new();
    match cmd {
        RotateCommand::Status { output } => {
            let report = rotation::report(&files).map_err(|e| cx.err(e))?;
            let text = match output {
                Output::Table => ui::pki::rotation(&report, t),
                Output::Json => format!(
                    "{}\n",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                ),
            };
            emit(out, &text)?;
            return Ok(exit::OK);
        }
        RotateCommand::Begin { cert, key } => {
            let incoming = match (cert, key) {
                (Some(c), Some(k)) => {
                    let (cert_pem, key_pem) = (read_pem(c)?, read_pem(k)?);
                    Ca::load(&cert_pem, &key_pem, t).map_err(|source| ExpectedError::Pki {
                        context: format!(
                            "cannot use {} with {} as the new CA",
                            c.display(),
                            k.display()
                        ),
                        source,
                    })?
                }
                _ => Ca::generate(
                    &rotation::incoming_ca_name(spec, t),
                    spec.pki.key_algorithm,
                    spec.pki.ca_validity_days,
                    t,
                )
                .map_err(|e| cx.err(e))?,
            };
            let rotation::Transition::Begin { incoming, state } =
                rotation::begin(spec, current.info(), state.as_ref(), incoming, t)
                    .map_err(refused)?
            else {
                return Err(ExpectedError::Internal(
                    "begin returned another step".into(),
                ));
            };
            dir.begin_rotation(
                normalize_pem(incoming.cert_pem()).as_bytes(),
                incoming.key().pem().as_bytes(),
                state.to_text().as_bytes(),
            )?;
            said.push_str(&format!(
                "began a CA rotation in {shown}: the new CA `{}` joins the trust\n",
                incoming.info().subject
            ));
            said.push_str(&commit_note(dir));
        }
        RotateCommand::Reissue => {
            let rotation::Transition::Record(next) =
                rotation::reissue(state.as_ref(), t).map_err(refused)?
            else {
                return Err(ExpectedError::Internal(
                    "reissue returned another step".into(),
                ));
            };
            dir.record_rotation(next.to_text().as_bytes())?;
            said.push_str("the new CA issues every certificate from the next render on\n");
        }
        RotateCommand::Finish => {
            let leaves = leaf_certs(&files);
            let rotation::Transition::Promote {
                cert_pem,
                key_pem,
                retiring,
            } = rotation::finish(&files, state.as_ref(), &leaves).map_err(refused)?
            else {
                return Err(ExpectedError::Internal(
                    "finish returned another step".into(),
                ));
            };
            let retired = dir.promote_rotation(
                cert_pem.as_bytes(),
                key_pem.as_bytes(),
                &rotation::retired_name(t, &retiring, "rotated"),
            )?;
            said.push_str(&format!(
                "finished the CA rotation: the new CA is the mesh CA; the old CA leaves the trust at the next render\nthe old CA was moved to {} (never deleted)\n",
                retired.display()
            ));
        }
        RotateCommand::Abort => match rotation::abort(state.as_ref(), t).map_err(refused)? {
            rotation::Transition::Record(next) => {
                dir.record_rotation(next.to_text().as_bytes())?;
                said.push_str("aborting: the mesh CA issues every certificate again from the next render; both CAs stay trusted until every cluster has them\n");
            }
            rotation::Transition::Discard { incoming } => {
                let retired =
                    dir.discard_rotation(&rotation::retired_name(t, &incoming, "aborted"))?;
                said.push_str(&format!(
                    "aborted the CA rotation: the new CA leaves the trust at the next render\nit was moved to {} (never deleted)\n",
                    retired.display()
                ));
            }
            _ => {
                return Err(ExpectedError::Internal(
                    "abort returned another step".into(),
                ));
            }
        },
    }
    let files = dir.read()?;
    let report = rotation::report(&files).map_err(|e| cx.err(e))?;
    said.push_str(&ui::pki::rotation(&report, t));
    if report.rotation.is_none() {
        said.push_str(
            "then: `cmesh render` and `cmesh apply`, so every cluster trusts the mesh CA alone\n",
        );
    }
    emit(out, &said)?;
    Ok(exit::OK)
}

/// The leaf certificates of pki.dir, by path.
fn leaf_certs(files: &store::PkiFiles) -> Vec<(String, CertInfo)> {
    files
        .iter()
        .filter(|(p, _)| p.starts_with("clusters/") && p.ends_with(".crt"))
        .filter_map(|(p, b)| {
            CertInfo::from_pem(&String::from_utf8_lossy(b))
                .ok()
                .map(|i| (p.clone(), i))
        })
        .collect()
}

/// What of a rotation belongs in git, and a warning when git would take its key.
fn commit_note(dir: &crate::fs::pki::PkiDir) -> String {
    let mut s = String::from(
        "commit rotation/ca.crt and rotation/state.yaml with ca.crt (a keyless `render --check` needs them); never rotation/ca.key\n",
    );
    let key = dir.path().join(rotation::ROTATION_CA_KEY);
    if crate::host::git::would_be_committed(&key) == Some(true) {
        s.push_str(&format!(
            "warning: git does not ignore {}; add it to .gitignore before committing\n",
            key.display()
        ));
    }
    s
}

/// `pki init`: a new CA, refusing to replace one unless forced (the old one is retired).
fn init(cx: &Ctx<'_>, force: bool, out: &mut dyn Write) -> Result<u8, ExpectedError> {
    let (spec, dir, shown) = (cx.spec, cx.dir, cx.shown.as_str());
    let files = dir.read()?;
    let current = current_fingerprint(&files);
    if let Some(existing) = store::load_ca(&files, now()).ok().flatten() {
        if !force {
            return Err(ExpectedError::PkiRefused {
                message: format!("{shown} already holds the mesh CA `{}` ({})", existing.info().subject, existing.info().sha256),
                hint: "cmesh never replaces a CA implicitly; pass --force to create a new one (every cluster must then be re-rendered and re-applied)".into(),
            });
        }
    } else if !force && (files.contains_key(CA_CERT) || files.contains_key(CA_KEY)) {
        return Err(cx.err(
            store::load_ca(&files, now())
                .err()
                .unwrap_or(cmesh_core::pki::PkiError::NoCa),
        ));
    }
    let ca = Ca::generate(
        &format!("cmesh {} CA", spec.name),
        spec.pki.key_algorithm,
        spec.pki.ca_validity_days,
        now(),
    )
    .map_err(|e| cx.err(e))?;
    let retired = dir.replace_ca(
        ca.cert_pem().as_bytes(),
        ca.key().pem().as_bytes(),
        current.as_deref(),
        now(),
    )?;
    emit(
        out,
        &format!(
            "created CA `{}` in {shown}\nsha256 {}\n{}",
            ca.info().subject,
            ca.info().sha256,
            retired_line(retired.as_deref())
        ),
    )?;
    Ok(exit::OK)
}

/// `pki import`: the user's CA, refusing to replace another unless forced.
fn import(
    cx: &Ctx<'_>,
    cert: &Path,
    key: &Path,
    force: bool,
    out: &mut dyn Write,
) -> Result<u8, ExpectedError> {
    let (dir, shown) = (cx.dir, cx.shown.as_str());
    let (cert_pem, key_pem) = (read_pem(cert)?, read_pem(key)?);
    let ca = Ca::load(&cert_pem, &key_pem, now()).map_err(|source| ExpectedError::Pki {
        context: format!("cannot import {} with {}", cert.display(), key.display()),
        source,
    })?;
    let files = dir.read()?;
    let current = current_fingerprint(&files);
    if let Ok(Some(existing)) = store::load_ca(&files, now()) {
        if existing.info().sha256 == ca.info().sha256 {
            emit(
                out,
                &format!("{shown} already uses this CA ({})\n", ca.info().sha256),
            )?;
            return Ok(exit::OK);
        }
        if !force {
            return Err(ExpectedError::PkiRefused {
                message: format!(
                    "{shown} already holds a different CA `{}` ({})",
                    existing.info().subject,
                    existing.info().sha256
                ),
                hint: "pass --force to replace it: every certificate is then re-issued and every cluster must be re-rendered and re-applied".into(),
            });
        }
    }
    if current.is_some() && !force {
        // A CA that cannot be loaded (half a pair, a mismatched key): say why.
        return Err(cx.err(
            store::load_ca(&files, now())
                .err()
                .unwrap_or(PkiError::NoCa),
        ));
    }
    let retired = dir.replace_ca(
        normalize_pem(&cert_pem).as_bytes(),
        ca.key().pem().as_bytes(),
        current.as_deref(),
        now(),
    )?;
    emit(
        out,
        &format!(
            "imported CA `{}` ({}, {}) into {shown}\nsha256 {}\nvalid until {}\n{}",
            ca.info().subject,
            ca.key().algorithm_name(),
            if key_pem.contains("BEGIN RSA PRIVATE KEY") || key_pem.contains("BEGIN EC PRIVATE KEY")
            {
                "key converted to PKCS#8"
            } else {
                "PKCS#8 key"
            },
            ca.info().sha256,
            cmesh_core::pki::fmt_date(ca.info().not_after),
            retired_line(retired.as_deref())
        ),
    )?;
    Ok(exit::OK)
}

/// A PEM file the user names (bounded: certificates and keys are a few KiB).
fn read_pem(p: &Path) -> Result<String, ExpectedError> {
    let bytes = bounded::read(p, 1024 * 1024).map_err(|e| ExpectedError::Read {
        path: p.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })?;
    String::from_utf8(bytes).map_err(|_| ExpectedError::Read {
        path: p.to_path_buf(),
        source: std::io::Error::other("not PEM text"),
    })
}

/// `pki show`: the CA, whether its key matches, every leaf's state and the rendered files that
/// carry the CA; exits non-zero when the key is missing, unreadable or another CA's.
fn show(
    cx: &Ctx<'_>,
    output: Output,
    out_dir: &Path,
    out: &mut dyn Write,
) -> Result<u8, ExpectedError> {
    let (dir, shown) = (cx.dir, cx.shown.as_str());
    let files = dir.read()?;
    let ca = match store::load_ca(&files, now()) {
        Ok(Some(ca)) => ca.info().clone(),
        Ok(None) => return Err(cx.err(cmesh_core::pki::PkiError::NoCa)),
        // An expired CA can still be shown.
        Err(_) => match files
            .get(CA_CERT)
            .map(|b| CertInfo::from_pem(&String::from_utf8_lossy(b)))
        {
            Some(Ok(info)) => info,
            Some(Err(e)) => return Err(cx.err(e)),
            None => return Err(cx.err(cmesh_core::pki::PkiError::NoCa)),
        },
    };
    // The key must be checked, not just parsed: a key of another CA would sign leaves
    // no peer trusts.
    let key = match files.get(CA_KEY) {
        None => ui::pki::CaKey::Missing,
        Some(k) => match PrivateKey::from_pem(&String::from_utf8_lossy(k)) {
            Err(e) => ui::pki::CaKey::Unreadable(e.to_string()),
            Ok(k) if k.public_key_spki() != ca.spki => ui::pki::CaKey::Mismatch(k.algorithm_name()),
            Ok(k) => ui::pki::CaKey::Matches(k.algorithm_name()),
        },
    };
    let t = now();
    // During a rotation the leaves come from the incoming CA from `reissue` on.
    let incoming = rotation::read_state(&files)
        .ok()
        .flatten()
        .and_then(|_| files.get(rotation::ROTATION_CA_CERT))
        .and_then(|b| CertInfo::from_pem(&String::from_utf8_lossy(b)).ok());
    let mut leaves = Vec::new();
    for (path, bytes) in files
        .iter()
        .filter(|(p, _)| p.starts_with("clusters/") && p.ends_with(".crt"))
    {
        if let Ok(info) = CertInfo::from_pem(&String::from_utf8_lossy(bytes)) {
            let from_incoming = incoming.as_ref().is_some_and(|i| info.is_signed_by(i));
            let status = if from_incoming && info.days_left(t) >= 30 {
                "ok-new-ca"
            } else if !info.is_signed_by(&ca) && !from_incoming {
                "other-ca"
            } else if info.days_left(t) < 0 {
                "expired"
            } else if info.days_left(t) < 30 {
                "expiring"
            } else {
                "ok"
            };
            leaves.push(ui::pki::LeafRow {
                file: path.clone(),
                cert: info,
                status: status.into(),
            });
        }
    }
    let users = files_carrying(out_dir, &files);
    match output {
        Output::Json => {
            let doc = serde_json::json!({
                "dir": shown,
                "ca": ca,
                "caKey": key.state(),
                "keyAlgorithm": key.algorithm(),
                "certificates": leaves,
                "renderedFiles": users,
            });
            emit(
                out,
                &format!(
                    "{}\n",
                    serde_json::to_string_pretty(&doc).unwrap_or_default()
                ),
            )?;
        }
        Output::Table => emit(out, &ui::pki::show(shown, &ca, &key, &leaves, &users, t))?,
    }
    match key {
        ui::pki::CaKey::Matches(_) => Ok(exit::OK),
        ui::pki::CaKey::Mismatch(_) => Err(cx.err(PkiError::InFile {
            file: CA_KEY.into(),
            source: Box::new(PkiError::KeyMismatch {
                subject: ca.subject.clone(),
            }),
        })),
        ui::pki::CaKey::Missing => Err(cx.err(PkiError::IncompleteCa {
            present: CA_CERT,
            missing: CA_KEY,
        })),
        ui::pki::CaKey::Unreadable(reason) => Err(cx.err(PkiError::InFile {
            file: CA_KEY.into(),
            source: Box::new(PkiError::InvalidKey { reason }),
        })),
    }
}

/// `pki renew`: re-issues what expires within the window, for the selected clusters only.
fn renew(
    cx: &Ctx<'_>,
    renew_before: &DurationArg,
    cluster: &[String],
    force: bool,
    out: &mut dyn Write,
) -> Result<u8, ExpectedError> {
    let (spec, dir, shown) = (cx.spec, cx.dir, cx.shown.as_str());
    let mut r = reconcile(spec, dir, CaPolicy::MustExist, Some(renew_before.0), force)?
        .ok_or_else(|| ExpectedError::PkiRefused {
            message: "certificates: certManager issues certificates in the clusters; there is nothing for cmesh to renew".into(),
            hint: "cert-manager renews them itself".into(),
        })?;
    if !cluster.is_empty() {
        let unknown: Vec<&String> = cluster
            .iter()
            .filter(|c| spec.cluster(c).is_none())
            .collect();
        if !unknown.is_empty() {
            return Err(ExpectedError::Usage {
                message: format!(
                    "unknown cluster(s): {}",
                    unknown
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                hint: Some(super::common::cluster_list(spec)),
            });
        }
        // Redo with the selection so that other clusters keep their files.
        let files = dir.read()?;
        let opts = store::ReconcileOptions {
            now: now(),
            renew_before: renew_before.0,
            force,
            clusters: Some(cluster.to_vec()),
            leaves: true,
            ca_policy: CaPolicy::MustExist,
            verified: Default::default(),
        };
        r = store::reconcile(spec, &files, &opts).map_err(|e| cx.err(e))?;
    }
    dir.write(&r)?;
    let mut s = ui::pki::events_summary(shown, &r.events);
    if r.writes.is_empty() {
        s.push_str(&format!(
            "nothing to renew: no certificate expires within {}\n",
            renew_before.1
        ));
    } else {
        s.push_str("next: `cmesh render` (and apply) so the clusters get the new certificates\n");
    }
    emit(out, &s)?;
    Ok(exit::OK)
}

/// The fingerprint of the CA in `files` (`unreadable` for one that cannot be parsed), or
/// `None` when pki.dir has neither CA file: names the directory a replaced CA retires to.
fn current_fingerprint(files: &store::PkiFiles) -> Option<String> {
    if !files.contains_key(CA_CERT) && !files.contains_key(CA_KEY) {
        return None;
    }
    Some(
        files
            .get(CA_CERT)
            .and_then(|b| CertInfo::from_pem(&String::from_utf8_lossy(b)).ok())
            .map(|i| i.sha256)
            .unwrap_or_else(|| "unreadable".into()),
    )
}

fn retired_line(retired: Option<&Path>) -> String {
    retired
        .map(|r| {
            format!(
                "the previous CA was moved to {} (never deleted)\n",
                r.display()
            )
        })
        .unwrap_or_default()
}

/// Rendered files under `out_dir` that embed the CA certificate (base64, as in values and
/// Secrets).
fn files_carrying(out_dir: &Path, files: &store::PkiFiles) -> Vec<String> {
    let Some(ca) = files.get(CA_CERT) else {
        return Vec::new();
    };
    let needle = b64(&normalize_pem(&String::from_utf8_lossy(ca)));
    let mut found = Vec::new();
    fn walk(dir: &Path, needle: &str, found: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, needle, found);
            } else if let Ok(text) = std::fs::read_to_string(&p)
                && text.contains(needle)
            {
                found.push(p.display().to_string());
            }
        }
    }
    walk(out_dir, &needle, &mut found);
    found.sort();
    found
}
