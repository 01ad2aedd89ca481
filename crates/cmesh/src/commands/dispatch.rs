//! Parses the command line, runs the command and turns its outcome into an exit code.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::commands;
use crate::errors::{ExpectedError, exit};
use crate::ui::term::Sanitizer;
use crate::ui::{ColorChoice, Style};

/// Runs cmesh with the process's arguments and returns its exit code.
pub(crate) fn main_impl() -> ExitCode {
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
    crate::ui::term::init_tracing(cli.global.verbose);
    let style = Style::detect(cli.global.color);
    // Everything printed passes through a sanitizer: much of it comes from outside (servers,
    // certificates, manifests) and must not drive the terminal (ui::term).
    let mut stdout = Sanitizer::new(std::io::stdout().lock(), style.color);
    let result = run(cli, style, &mut stdout);
    let _ = stdout.flush();
    drop(stdout);
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let err_style = Style::detect_stderr(ColorChoice::Auto);
            let mut stderr = Sanitizer::new(std::io::stderr().lock(), err_style.color);
            let _ = e.display_to(&mut stderr);
            let _ = stderr.flush();
            ExitCode::from(e.exit_code())
        }
    }
}

/// Runs a parsed command, writing its report to `out`.
///
/// # Errors
/// The command's [`ExpectedError`].
pub(super) fn run(cli: Cli, style: Style, out: &mut dyn Write) -> Result<u8, ExpectedError> {
    if matches!(
        cli.command,
        Command::Init(_) | Command::Render(_) | Command::Pki(_)
    ) {
        crate::host::signals::install();
    }
    match cli.command {
        Command::Init(args) => commands::init::run(&cli.global, &args, out),
        Command::Check(args) => commands::check::run(&cli.global, &args, style, out),
        Command::Render(args) => commands::render::run(&cli.global, &args, out),
        Command::Pki(args) => commands::pki::run(&cli.global, &args, out),
        Command::Probe(args) => commands::probe::run(&cli.global, &args, style, out),
        Command::Plan(args) => commands::apply::plan(&cli.global, &args, style, out),
        Command::Apply(args) => commands::apply::run(&cli.global, &args, style, out),
        Command::Disconnect(args) => commands::apply::disconnect(&cli.global, &args, out),
        Command::Upgrade(args) => commands::apply::upgrade(&cli.global, &args, style, out),
        Command::Status(args) => commands::status::run(&cli.global, &args, style, out),
        Command::Test(args) => commands::test::run(&cli.global, &args, style, out),
        Command::Lint(args) => commands::lint::run(&cli.global, &args, style, out),
        Command::Lab(args) => commands::lab::run(&cli.global, &args, out),
        Command::Completions(args) => commands::completions::run(args.shell, out),
        Command::Man => commands::man::run(out),
        Command::Version(args) => commands::version::run(args.output, out),
    }
}
