//! cmesh, the edge: command line, file system, Kubernetes, helm, probes and terminal output.
//!
//! The pure work (validation, PKI, rendering) happens in `cmesh-core`; this crate reads
//! inputs, calls the core, and carries out the plans it returns.

pub mod apply;
pub mod cli;
pub mod cluster;
pub mod commands;
pub mod errors;
pub mod fs;
pub mod helm;
pub mod lab;
pub mod meshtest;
pub(crate) mod pipeline;
pub mod probe;
pub(crate) mod signals;
pub mod status;
pub mod ui;

/// Entry point of the `cmesh` binary.
pub fn main() -> std::process::ExitCode {
    cli::main_impl()
}
