//! `cmesh render`: brings the PKI up to date and writes the GitOps tree, or with `--check`
//! reports how the tree on disk differs from what would be rendered.

use std::collections::BTreeMap;
use std::io::Write;

use cmesh_core::pki::store;
use cmesh_core::render;

use super::common::emit;
use crate::cli::{GlobalArgs, Output, RenderArgs};
use crate::errors::{ExpectedError, exit};
use crate::fs::tree as tree_io;
use crate::pipeline::{GitFlags, PkiAccess, Prepared, lock_outputs, prepare};
use crate::ui;

/// Runs `cmesh render`.
///
/// # Errors
/// Spec, PKI, render and write errors; [`ExpectedError::Drift`] for `--check` differences.
pub(crate) fn run(
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
    let saved = git_fields(args);
    if args.save {
        if saved.is_empty() {
            return Err(ExpectedError::Usage {
                message: "--save writes the --git-repo, --git-revision and --git-path given, and none was".into(),
                hint: Some("e.g. cmesh render --git-repo https://github.com/acme/platform.git --save".into()),
            });
        }
        if global.example || global.file.as_os_str() == "-" {
            return Err(ExpectedError::Usage {
                message: "--save edits mesh.yaml, and this mesh.yaml is not a file".into(),
                hint: Some("pass the file with -f".into()),
            });
        }
    }
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
    // `git add -A` would commit the CA key: say so before writing any key.
    let ca_key = prepared.pki_dir.path().join(cmesh_core::pki::store::CA_KEY);
    let pki = prepared
        .loaded
        .spec
        .pki
        .dir
        .trim_start_matches("./")
        .trim_end_matches('/')
        .to_owned();
    if crate::host::git::would_be_committed(&ca_key) == Some(true) {
        warnings.push_str(&format!(
            "warning: {} is in a git work tree and not ignored: `git add -A` would commit the mesh CA's private key (add `/{pki}/*` and `!/{pki}/ca.crt` to .gitignore: the keys stay out, the public CA certificate goes in; `cmesh init` writes one)\n",
            prepared.pki_dir.path().display(),
        ));
    } else if !args.check {
        // The certificate is public, and a check in a clone needs it.
        let ca_cert = prepared
            .pki_dir
            .path()
            .join(cmesh_core::pki::store::CA_CERT);
        if crate::host::git::would_be_committed(&ca_cert) == Some(false) {
            warnings.push_str(&format!(
                "note: {} is git-ignored, so `cmesh render --check` cannot run in a clone of this repository (it needs the CA certificate, which is public): in .gitignore write `/{pki}/*` and `!/{pki}/ca.crt` instead of `/{pki}/`\n",
                ca_cert.display(),
            ));
        }
    }
    if !args.save && !args.check {
        // mesh.yaml as written: the loaded spec already carries the flags.
        let written = cmesh_core::spec::load("mesh.yaml", &prepared.loaded.input.text)
            .ok()
            .map(|(spec, _)| spec.gitops);
        let unsaved: Vec<String> = saved
            .iter()
            .filter(|(key, value)| {
                written.as_ref().and_then(|g| g.field(key)) != Some(value.as_str())
            })
            .map(|(key, _)| format!("gitops.{key}"))
            .collect();
        if !unsaved.is_empty() {
            warnings.push_str(&format!(
                "note: {} not in mesh.yaml: a later `cmesh render --check` without the same flags reports differences (add --save to write them into mesh.yaml)\n",
                unsaved.join(", ")
            ));
        }
    }
    if !warnings.is_empty() {
        ui::term::eprint(&warnings);
    }
    let Prepared {
        loaded,
        pki_dir,
        pki,
        keyless,
        mut tree,
    } = prepared;
    let pki_shown = pki_dir.path().display().to_string();
    // pki.dir is locked (inside `pki_dir`); the outputs are locked after it, in this order in
    // every run, so two runs never wait for each other crosswise.
    let access = if args.check {
        PkiAccess::Read
    } else {
        PkiAccess::Write
    };
    let mut outputs = vec![out_dir.as_path()];
    outputs.extend(secrets_dir.as_deref());
    let _locks = lock_outputs(global, &outputs, access)?;

    if args.check {
        let events = match (&pki, &keyless) {
            (Some(r), _) => r.events.as_slice(),
            (None, Some(p)) => p.events.as_slice(),
            (None, None) => &[],
        };
        let mut drift: Vec<_> = events
            .iter()
            .filter(|e| e.action != store::Action::Reused)
            .map(|e| crate::ui::render::Drift {
                path: format!(
                    "{pki_shown} ({}: {})",
                    e.cluster.clone().unwrap_or_else(|| "CA".into()),
                    e.kind.map(|k| k.file_stem()).unwrap_or("ca")
                ),
                kind: crate::ui::render::DriftKind::Changed,
                diff: Some(
                    format!("certificate would be {:?}: {}", e.action, e.reason).to_lowercase(),
                ),
            })
            .collect();
        if let Some(public) = &keyless {
            // A clone of the GitOps repository: keys and secret files are (rightly) not
            // there, so only what is committed is compared, and secret files that happen to
            // be on disk are neither compared nor reported as extra.
            ui::term::note(&ui::render::keyless_note(
                &pki_shown,
                public.events.len(),
                tree.secret_files.len(),
            ));
            let secret_paths: std::collections::BTreeSet<String> = tree
                .secret_files
                .keys()
                .flat_map(|rel| {
                    [out_dir.as_path()]
                        .into_iter()
                        .chain(secrets_dir.as_deref())
                        .map(move |d| d.join(rel).display().to_string())
                })
                .collect();
            let not_secret = |d: &crate::ui::render::Drift| {
                !(d.kind == crate::ui::render::DriftKind::Extra && secret_paths.contains(&d.path))
            };
            drift.extend(
                tree_io::compare(&out_dir, &tree.files, 20)?
                    .into_iter()
                    .filter(not_secret),
            );
            if let Some(dir) = &secrets_dir {
                drift.extend(
                    tree_io::compare(dir, &BTreeMap::new(), 20)?
                        .into_iter()
                        .filter(not_secret),
                );
            }
        } else {
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
        }
        if args.output == Output::Json {
            emit(
                out,
                &ui::render::check_json(&out_dir.display().to_string(), &drift, keyless.is_some()),
            )?;
        } else if drift.is_empty() {
            emit(out, &format!("{}: up to date\n", out_dir.display()))?;
        } else {
            emit(out, &ui::render::drift(&drift))?;
        }
        if drift.is_empty() {
            return Ok(exit::OK);
        }
        return Err(ExpectedError::Drift {
            what: out_dir.display().to_string(),
            count: drift.len(),
        });
    }

    if let Some(r) = &pki {
        pki_dir.write(r)?;
    }
    if crate::host::signals::interrupted() {
        return Err(ExpectedError::Interrupted);
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
    let mut saved_keys = Vec::new();
    if args.save {
        let edited = cmesh_core::lab::edit::set_gitops(&loaded.spec, &loaded.input.name, &saved)
            .map_err(|e| ExpectedError::Usage {
                message: e.to_string(),
                hint: Some(
                    "write the gitops: block as one key per line, or edit it by hand".into(),
                ),
            })?;
        if edited != loaded.input.text {
            crate::fs::atomic::write_atomic(
                &global.file,
                edited.as_bytes(),
                crate::fs::atomic::Mode::Public,
                true,
            )?;
        }
        saved_keys = saved.iter().map(|(k, _)| format!("gitops.{k}")).collect();
        s.push_str(&format!(
            "saved {} in {}\n",
            saved_keys.join(", "),
            global.file.display()
        ));
    }
    if args.output == Output::Json {
        let written = ui::render::Written {
            out: out_dir.display().to_string(),
            files: tree.files.len()
                + if secrets_dir.is_none() {
                    secret_count
                } else {
                    0
                },
            secrets_out: secrets_dir.as_ref().map(|d| d.display().to_string()),
            secret_files: secret_count,
            sensitive,
            pki: pki.as_ref().map(|r| r.events.clone()).unwrap_or_default(),
            saved: saved_keys,
        };
        emit(out, &ui::render::written_json(&written))?;
        return Ok(exit::OK);
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

/// The `--git-*` flags given, as `gitops:` keys and values.
fn git_fields(args: &RenderArgs) -> Vec<(&'static str, String)> {
    [
        ("repoURL", &args.git_repo),
        ("revision", &args.git_revision),
        ("path", &args.git_path),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
    .collect()
}
