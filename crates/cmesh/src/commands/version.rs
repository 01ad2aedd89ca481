//! `cmesh version`: cmesh's version and the Cilium minor releases whose charts it renders for.

use std::io::Write;

use cmesh_core::version::{MAX_SUPPORTED, MIN_SUPPORTED};

use super::common::emit;
use crate::cli::Output;
use crate::errors::{ExpectedError, exit};

/// Writes the version, as text or JSON.
///
/// # Errors
/// [`ExpectedError::Write`] when stdout cannot be written.
pub(crate) fn run(output: Output, out: &mut dyn Write) -> Result<u8, ExpectedError> {
    let version = env!("CARGO_PKG_VERSION");
    let (min, max) = (
        format!("{}.{}", MIN_SUPPORTED.0, MIN_SUPPORTED.1),
        format!("{}.{}", MAX_SUPPORTED.0, MAX_SUPPORTED.1),
    );
    let text = match output {
        Output::Table => format!("cmesh {version}\nCilium {min} to {max}\n"),
        Output::Json => format!(
            "{}\n",
            serde_json::json!({
                "version": version,
                "cilium": {"min": min, "max": max},
            })
        ),
    };
    emit(out, &text)?;
    Ok(exit::OK)
}
