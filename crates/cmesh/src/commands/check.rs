//! `cmesh check`: validates mesh.yaml and reports every problem at once.

use std::io::Write;

use cmesh_core::spec;

use crate::cli::{CheckArgs, GlobalArgs, Output};
use crate::errors::{ExpectedError, exit};
use crate::fs::spec as input;
use crate::ui::{Style, diagnostics};

/// Runs `cmesh check`. Exit 0 when there is no error (warnings allowed), 3 otherwise.
///
/// # Errors
/// Only for an unreadable input; spec problems are reported, not returned.
pub(crate) fn run(
    global: &GlobalArgs,
    args: &CheckArgs,
    style: Style,
    out: &mut dyn Write,
) -> Result<u8, ExpectedError> {
    let input = input::read(&global.spec_source())?;
    let checked = spec::check(&input.name, &input.text);
    let mut diags = checked.diagnostics;
    if let Some(spec) = &checked.spec {
        diags.extend(spec::advisories(spec));
        // An existing CA is checked too; check never creates one.
        let dir = crate::fs::pki::pki_dir(&input.base_dir, &spec.pki.dir);
        let files = crate::pipeline::with_lock_wait(global, |wait| {
            crate::fs::pki::PkiDir::open_ro(&dir, wait)
        })?
        .read()?;
        let key_mode = crate::fs::pki::mode_of(&dir.join(cmesh_core::pki::store::CA_KEY));
        diags.extend(cmesh_core::pki::inspect::ca_diagnostics(
            &files,
            key_mode,
            &dir.display().to_string(),
            crate::commands::common::now(),
            &spec.source,
        ));
        // Names and IDs of clusters that left the mesh, and meshed clusters gone from mesh.yaml.
        let record = crate::fs::pki::membership(&dir)?;
        diags.extend(cmesh_core::membership::diagnostics(&record, spec));
    }
    let ok_text = match &checked.spec {
        Some(s) => format!(
            "ok ({} clusters, Cilium {}, certificates: {})",
            s.clusters.len(),
            s.cilium.version,
            s.clustermesh.certificates.as_str()
        ),
        None => "ok".to_owned(),
    };
    let rendered = match args.output {
        Output::Json => diagnostics::render_json(&input.name, &diags),
        Output::Table => diagnostics::render_human(&input.name, &diags, style, &ok_text),
    };
    out.write_all(rendered.as_bytes())
        .map_err(|source| ExpectedError::Write {
            path: "<stdout>".into(),
            source,
        })?;
    Ok(if diags.iter().any(|d| d.is_error()) {
        exit::SPEC
    } else {
        exit::OK
    })
}
