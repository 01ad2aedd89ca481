//! The command line, as clap derive structs. Parsing only: no I/O happens here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::input::SpecSourceArg;
use crate::ui::ColorChoice;

const EXIT_CODES: &str = "\
Exit codes:
  0    success
  1    what the command checked failed (probe, status, test)
  2    invalid command line
  3    mesh.yaml is invalid
  4    a file could not be read or written
  5    PKI problem (missing, invalid or mismatched CA)
  6    render --check: the tree on disk is out of date
  7    a cluster operation or helm failed
  130  interrupted";

/// Turn one mesh.yaml into a working Cilium Cluster Mesh across N Kubernetes clusters.
#[derive(Debug, Parser)]
#[command(name = "cmesh", version, about, after_help = EXIT_CODES, max_term_width = 100)]
pub struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Options shared by all commands.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// The mesh spec (`-` reads stdin).
    #[arg(
        short = 'f',
        long = "file",
        global = true,
        value_name = "PATH",
        default_value = "mesh.yaml"
    )]
    pub file: PathBuf,
    /// Use the built-in example (the reference article's two-cluster lab) instead of a file.
    #[arg(long, global = true, conflicts_with = "file")]
    pub example: bool,
    /// When to use colours.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
}

impl GlobalArgs {
    /// Where to read the spec from.
    pub fn spec_source(&self) -> SpecSourceArg {
        if self.example {
            SpecSourceArg::Example
        } else {
            SpecSourceArg::File(self.file.clone())
        }
    }
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a commented mesh.yaml (by default the reference article's two-cluster lab).
    Init(InitArgs),
    /// Validate mesh.yaml and the PKI: every problem, with where and how to fix it.
    Check(CheckArgs),
}

/// `cmesh init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Number of clusters to generate (distinct IDs, NodePorts and CIDRs).
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub clusters: usize,
    /// Cilium chart version.
    #[arg(long, default_value = "1.14.2", value_name = "VERSION")]
    pub cilium_version: String,
    /// Mesh name.
    #[arg(long, default_value = "homelab")]
    pub name: String,
    /// Replace an existing file.
    #[arg(long)]
    pub force: bool,
}

/// Output format of reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Output {
    /// Human-readable.
    #[default]
    Table,
    /// One JSON document on stdout.
    Json,
}

/// `cmesh check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    pub output: Output,
}
