//! `cmesh init`: writes the commented example mesh.yaml (the article's lab, or N clusters).

use std::io::Write;
use std::path::Path;

use cmesh_core::spec::example::{self, ExampleOptions};
use cmesh_core::version::CiliumVersion;

use crate::cli::{GlobalArgs, InitArgs};
use crate::errors::{ExpectedError, exit};
use crate::fs::atomic::{self as fsx, Mode};

/// Runs `cmesh init`.
///
/// # Errors
/// Usage errors for impossible options, [`ExpectedError::WouldOverwrite`] without `--force`.
pub(crate) fn run(
    global: &GlobalArgs,
    args: &InitArgs,
    out: &mut dyn Write,
) -> Result<u8, ExpectedError> {
    if global.example {
        return Err(ExpectedError::Usage {
            message: "`init` writes the built-in example; --example has no meaning here".into(),
            hint: Some("use `cmesh init -f -` to print it".into()),
        });
    }
    let version: CiliumVersion = args
        .cilium_version
        .parse()
        .map_err(|e| ExpectedError::Usage {
            message: format!("--cilium-version: {e}"),
            hint: None,
        })?;
    let opts = ExampleOptions {
        name: args.name.clone(),
        clusters: args.clusters,
        version,
    };
    let text = example::generate(&opts).map_err(|e| ExpectedError::Usage {
        message: e.to_string(),
        hint: None,
    })?;
    if global.file.as_os_str() == "-" {
        out.write_all(text.as_bytes())
            .map_err(|source| ExpectedError::Write {
                path: "<stdout>".into(),
                source,
            })?;
        return Ok(exit::OK);
    }
    fsx::write_atomic(&global.file, text.as_bytes(), Mode::Public, args.force)?;
    let ignored = write_gitignore(&global.file)?;
    let _ = writeln!(
        out,
        "wrote {} ({} clusters, Cilium {}){ignored}; next: cmesh check -f {}",
        global.file.display(),
        opts.clusters,
        opts.version,
        global.file.display()
    );
    Ok(exit::OK)
}

/// The `.gitignore` beside mesh.yaml, so that `git add -A` never stages a private key: written
/// when there is none, else given the entries it lacks (the user's lines stay). Says what it did.
fn write_gitignore(mesh: &Path) -> Result<String, ExpectedError> {
    let dir = mesh
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let path = dir.join(".gitignore");
    let wanted = example::project_gitignore("pki");
    let existing = match crate::fs::bounded::read(&path, 1024 * 1024) {
        Ok(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
        Err(e) if e.is_not_found() => None,
        Err(e) => {
            return Err(ExpectedError::Read {
                path,
                source: std::io::Error::other(e.to_string()),
            });
        }
    };
    let (text, said) = match existing {
        None => (wanted, ", .gitignore (keys and lab files stay out of git)"),
        Some(old) => match example::merge_gitignore(&old, &wanted) {
            None => return Ok(String::new()),
            Some(new) => (
                new,
                ", .gitignore updated (keys and lab files stay out of git)",
            ),
        },
    };
    fsx::write_atomic(&path, text.as_bytes(), Mode::Public, true)?;
    Ok(said.to_owned())
}
