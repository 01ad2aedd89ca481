//! Terminal output: pure formatters (diagnostics, tables, progress text) and the small
//! amount of glue that decides colours and widths from the environment.

pub mod apply;
pub mod diagnostics;
pub mod lab;
pub mod lint;
pub mod meshtest;
pub mod pki;
pub mod plan;
pub mod probe;
pub mod progress;
pub mod render;
pub mod status;
pub mod term;
pub mod upgrade;

use std::io::IsTerminal;

/// How to draw output: colours, unicode and the width to wrap at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    /// ANSI colours.
    pub color: bool,
    /// Unicode box drawing and symbols.
    pub unicode: bool,
    /// Wrap width.
    pub width: usize,
}

impl Style {
    /// Plain output for files, pipes and tests.
    pub const PLAIN: Style = Style {
        color: false,
        unicode: true,
        width: 100,
    };

    /// Decides from `--color`, `NO_COLOR` and whether stdout is a terminal.
    pub fn detect(choice: ColorChoice) -> Style {
        Self::detect_with(choice, std::io::stdout().is_terminal())
    }

    /// The same for stderr.
    pub fn detect_stderr(choice: ColorChoice) -> Style {
        Self::detect_with(choice, std::io::stderr().is_terminal())
    }

    fn detect_with(choice: ColorChoice, tty: bool) -> Style {
        let color = match choice {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => tty && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        };
        let width = std::env::var("COLUMNS")
            .ok()
            .and_then(|c| c.parse().ok())
            .filter(|w: &usize| *w >= 40)
            .unwrap_or(100);
        Style {
            color,
            unicode: true,
            width,
        }
    }
}

/// `--color`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ColorChoice {
    /// Colour when writing to a terminal and NO_COLOR is unset.
    #[default]
    Auto,
    /// Always colour.
    Always,
    /// Never colour.
    Never,
}

/// `text` in the ANSI SGR `code` when `style` has colours.
pub fn paint(style: Style, text: &str, code: &str) -> String {
    if style.color {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_owned()
    }
}
