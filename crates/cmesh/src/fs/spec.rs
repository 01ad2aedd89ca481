//! Reading mesh.yaml (or the built-in example, or stdin) with clear errors for every way a
//! file can be unusable, before any parsing: a missing file, a directory, a FIFO or device, a
//! file over the size limit (checked before a byte is read), text that is not UTF-8.

use std::io::Read;
use std::path::{Path, PathBuf};

use cmesh_core::diag::Diagnostic;
use cmesh_core::spec::{self, MAX_SPEC_BYTES, MeshSpec, example};

use crate::errors::ExpectedError;

/// The mesh.yaml text and where it came from.
#[derive(Debug, Clone)]
pub(crate) struct SpecInput {
    /// Name used in messages (the path as given, `<example>` or `<stdin>`).
    pub name: String,
    /// The text.
    pub text: String,
    /// Directory that relative paths in the spec (pki.dir, kubeconfig) are relative to.
    pub base_dir: PathBuf,
}

/// Where to read the spec from, as given on the command line.
#[derive(Debug, Clone)]
pub(crate) enum SpecSourceArg {
    /// A path, or `-` for stdin.
    File(PathBuf),
    /// The built-in example.
    Example,
}

/// Reads the spec text.
///
/// # Errors
/// [`ExpectedError`] for a missing, unreadable, oversized, non-UTF-8 file or a directory.
pub(crate) fn read(arg: &SpecSourceArg) -> Result<SpecInput, ExpectedError> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    match arg {
        SpecSourceArg::Example => Ok(SpecInput {
            name: "<example>".into(),
            text: example::builtin(),
            base_dir: cwd,
        }),
        SpecSourceArg::File(p) if p.as_os_str() == "-" => {
            let mut buf = Vec::new();
            std::io::stdin()
                .take(MAX_SPEC_BYTES as u64 + 1)
                .read_to_end(&mut buf)
                .map_err(|source| ExpectedError::Read {
                    path: p.clone(),
                    source,
                })?;
            let text = decode(buf, Path::new("<stdin>"))?;
            Ok(SpecInput {
                name: "<stdin>".into(),
                text,
                base_dir: cwd,
            })
        }
        SpecSourceArg::File(path) => {
            let buf = match super::bounded::read(path, MAX_SPEC_BYTES as u64) {
                Ok(b) => b,
                Err(e) if e.is_not_found() => {
                    return Err(ExpectedError::SpecNotFound { path: path.clone() });
                }
                Err(super::bounded::BoundedReadError::NotRegular {
                    kind: "a directory",
                }) => {
                    return Err(ExpectedError::SpecIsDirectory { path: path.clone() });
                }
                Err(super::bounded::BoundedReadError::TooLarge { size, .. }) => {
                    return Err(ExpectedError::SpecTooLarge {
                        path: path.clone(),
                        size,
                        limit: MAX_SPEC_BYTES,
                    });
                }
                Err(super::bounded::BoundedReadError::NotRegular { kind }) => {
                    return Err(ExpectedError::Read {
                        path: path.clone(),
                        source: std::io::Error::other(format!(
                            "{kind}, not a mesh.yaml file (pipe it in with -f - instead)"
                        )),
                    });
                }
                Err(super::bounded::BoundedReadError::Io(source)) => {
                    return Err(ExpectedError::Read {
                        path: path.clone(),
                        source,
                    });
                }
            };
            let text = decode(buf, path)?;
            let base_dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => cwd,
            };
            Ok(SpecInput {
                name: path.display().to_string(),
                text,
                base_dir,
            })
        }
    }
}

fn decode(buf: Vec<u8>, path: &Path) -> Result<String, ExpectedError> {
    if buf.len() > MAX_SPEC_BYTES {
        return Err(ExpectedError::SpecTooLarge {
            path: path.to_path_buf(),
            size: buf.len() as u64,
            limit: MAX_SPEC_BYTES,
        });
    }
    let text = String::from_utf8(buf).map_err(|e| ExpectedError::SpecNotUtf8 {
        path: path.to_path_buf(),
        offset: e.utf8_error().valid_up_to(),
    })?;
    // A UTF-8 byte-order mark is legal YAML but would end up in the first key.
    Ok(text
        .strip_prefix('\u{feff}')
        .map(str::to_owned)
        .unwrap_or(text))
}

/// A validated spec with the input it came from and its warnings.
#[derive(Debug, Clone)]
pub(crate) struct Loaded {
    /// The model.
    pub spec: MeshSpec,
    /// Where it came from.
    pub input: SpecInput,
    /// Warnings found while validating.
    pub warnings: Vec<Diagnostic>,
}

/// Reads and validates the spec; prints diagnostics through `report` on failure.
///
/// # Errors
/// [`ExpectedError::SpecInvalid`] after printing the errors, or a read error.
pub(crate) fn load(
    arg: &SpecSourceArg,
    report: &mut dyn FnMut(&[Diagnostic]),
) -> Result<Loaded, ExpectedError> {
    let input = read(arg)?;
    match spec::load(&input.name, &input.text) {
        Ok((spec, warnings)) => Ok(Loaded {
            spec,
            input,
            warnings,
        }),
        Err(e) => {
            report(&e.diagnostics);
            Err(ExpectedError::SpecInvalid {
                file: e.file,
                counts: e.counts,
            })
        }
    }
}
