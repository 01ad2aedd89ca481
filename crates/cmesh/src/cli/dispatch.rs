//! Parses the command line, runs the command and turns its outcome into an exit code.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use super::args::{Cli, Command};
use crate::commands;
use crate::errors::{ExpectedError, exit};
use crate::ui::Style;

/// Runs cmesh with the process's arguments and returns its exit code.
pub fn main_impl() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are "errors" to clap but succeed.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    let style = Style::detect(cli.global.color);
    let mut stdout = std::io::stdout().lock();
    let result = run(cli, style, &mut stdout);
    let _ = stdout.flush();
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let mut stderr = std::io::stderr().lock();
            let _ = e.display_to(&mut stderr);
            ExitCode::from(e.exit_code())
        }
    }
}

/// Runs a parsed command, writing its report to `out`.
///
/// # Errors
/// The command's [`ExpectedError`].
pub fn run(cli: Cli, style: Style, out: &mut dyn Write) -> Result<u8, ExpectedError> {
    match cli.command {
        Command::Init(args) => commands::init::run(&cli.global, &args, out),
        Command::Check(args) => commands::check::run(&cli.global, &args, style, out),
        Command::Render(args) => commands::render::run(&cli.global, &args, out),
        Command::Pki(args) => commands::pki::run(&cli.global, &args, out),
        Command::Probe(args) => commands::probe::run(&cli.global, &args, style, out),
        Command::Apply(args) => commands::apply::run(&cli.global, &args, style, out),
        Command::Status(args) => commands::status::run(&cli.global, &args, style, out),
        Command::Test(args) => commands::test::run(&cli.global, &args, style, out),
        Command::Lint(args) => commands::lint::run(&cli.global, &args, style, out),
        Command::Lab(args) => commands::lab::run(&cli.global, &args, out),
    }
}
