//! cmesh, the edge: command line, file system, Kubernetes, helm, probes and terminal output.
//!
//! The pure work (validation, PKI, rendering) happens in `cmesh-core`; this crate reads
//! inputs, calls the core, and carries out the plans it returns.
//!
//! Everything is `pub(crate)` (the `unreachable_pub` lint keeps it so) but the entry point and
//! `ui`, whose pure formatters the snapshot tests call.

#![warn(unreachable_pub)]

pub(crate) mod cli;
pub(crate) mod commands;
pub(crate) mod errors;
pub(crate) mod fs;
pub(crate) mod host;
pub(crate) mod live;
pub(crate) mod pipeline;
pub mod ui;

/// Entry point of the `cmesh` binary.
pub fn main() -> std::process::ExitCode {
    commands::main_impl()
}
