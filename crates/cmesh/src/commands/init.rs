//! `cmesh init`: writes the commented example mesh.yaml (the article's lab, or N clusters).

use std::io::Write;

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
    let _ = writeln!(
        out,
        "wrote {} ({} clusters, Cilium {}); next: cmesh check -f {}",
        global.file.display(),
        opts.clusters,
        opts.version,
        global.file.display()
    );
    Ok(exit::OK)
}
