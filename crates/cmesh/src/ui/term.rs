//! Text that reaches the terminal. Much of what cmesh prints comes from outside: certificate
//! subjects and etcd keys from endpoints, agents' output, objects' names and annotations,
//! error messages of servers. A control character in any of them (`ESC ]0;…BEL` retitles
//! the terminal, `ESC [2J` clears it, `CR` overwrites a line) must show as text, not act.
//! [`escape`] does that for one string; [`Sanitizer`] does it for everything written through
//! it, keeping only cmesh's own colours (SGR sequences) when colours are on.

use std::borrow::Cow;
use std::io::{self, Write};

/// `s` with every control character (C0 but newline and tab, DEL, C1) written as a visible
/// escape: `\e`, `\a`, `\r`, `\x07`, `\u{9b}`.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        push_escaped(&mut out, c);
    }
    Cow::Owned(out)
}

/// [`escape`] that also escapes newlines and tabs: for values printed inside one line.
pub fn escape_line(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| is_unsafe(c) || c == '\n' || c == '\t') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => push_escaped(&mut out, c),
        }
    }
    Cow::Owned(out)
}

fn is_unsafe(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        // Bidirectional overrides reorder what follows them on screen.
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\x1b' => out.push_str("\\e"),
        '\x07' => out.push_str("\\a"),
        '\r' => out.push_str("\\r"),
        '\x08' => out.push_str("\\b"),
        c if is_unsafe(c) && (c as u32) < 0x80 => {
            out.push_str(&format!("\\x{:02x}", c as u32));
        }
        c if is_unsafe(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
        c => out.push(c),
    }
}

/// A writer that escapes control characters in everything written through it. With
/// `colors`, complete SGR sequences (`ESC [ digits ; … m`, what [`super::paint`] writes) pass
/// unchanged; every other escape sequence is shown as text.
pub struct Sanitizer<W: Write> {
    inner: W,
    colors: bool,
    /// Bytes of an incomplete UTF-8 character or SGR sequence carried to the next write.
    pending: Vec<u8>,
}

impl<W: Write> Sanitizer<W> {
    /// Wraps `inner`.
    pub fn new(inner: W, colors: bool) -> Self {
        Self {
            inner,
            colors,
            pending: Vec::new(),
        }
    }

    fn emit(&mut self, final_chunk: bool) -> io::Result<()> {
        let bytes = std::mem::take(&mut self.pending);
        let mut out = String::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == 0x1b && self.colors {
                if let Some(n) = sgr_len(&bytes[i..]) {
                    out.push_str(std::str::from_utf8(&bytes[i..i + n]).unwrap_or_default());
                    i += n;
                    continue;
                }
                if !final_chunk && could_become_sgr(&bytes[i..]) {
                    self.pending = bytes[i..].to_vec();
                    break;
                }
            }
            let width = utf8_width(bytes[i]);
            if width == 0 {
                out.push('\u{fffd}');
                i += 1;
                continue;
            }
            if i + width > bytes.len() {
                if !final_chunk {
                    // Half a character: the rest comes with the next write.
                    self.pending = bytes[i..].to_vec();
                    break;
                }
                out.push('\u{fffd}');
                i += 1;
                continue;
            }
            match std::str::from_utf8(&bytes[i..i + width]) {
                Ok(ch) => {
                    out.push_str(&escape(ch));
                    i += width;
                }
                Err(_) => {
                    out.push('\u{fffd}');
                    i += 1;
                }
            }
        }
        self.inner.write_all(out.as_bytes())
    }
}

fn utf8_width(lead: u8) -> usize {
    match lead {
        0x00..=0x7f => 1,
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => 0,
    }
}

/// Length of the SGR sequence at the start of `b`, if complete.
fn sgr_len(b: &[u8]) -> Option<usize> {
    if b.len() < 3 || b[0] != 0x1b || b[1] != b'[' {
        return None;
    }
    for (n, &c) in b.iter().enumerate().skip(2) {
        match c {
            b'0'..=b'9' | b';' => {}
            b'm' => return Some(n + 1),
            _ => return None,
        }
    }
    None
}

fn could_become_sgr(b: &[u8]) -> bool {
    b.len() < 32
        && (b == [0x1b]
            || (b[1] == b'[' && b[2..].iter().all(|c| c.is_ascii_digit() || *c == b';')))
}

impl<W: Write> Write for Sanitizer<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(buf);
        self.emit(false)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.pending.is_empty() {
            self.emit(true)?;
        }
        self.inner.flush()
    }
}

impl<W: Write> Drop for Sanitizer<W> {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// Writes `text` to stderr through a [`Sanitizer`] (colours kept only on a terminal).
pub fn eprint(text: &str) {
    use std::io::IsTerminal;
    let stderr = io::stderr();
    let colors = stderr.is_terminal();
    let mut w = Sanitizer::new(stderr.lock(), colors);
    let _ = w.write_all(text.as_bytes());
    let _ = w.flush();
}

/// Replaces the line the cursor is on (a terminal's stderr): back to its start, clear it (the
/// only escape cmesh writes itself), then `line` through the sanitiser.
pub fn replace_line(line: &str) {
    let _ = write!(io::stderr(), "\r\x1b[2K");
    eprint(line);
}

/// Sends tracing to stderr for `-v` (cmesh's own events at debug) and `-vv` (trace, and the
/// Kubernetes client's events), each line through the [`Sanitizer`]: events quote servers.
/// Without `-v` no subscriber is installed and events cost nothing.
pub fn init_tracing(verbose: u8) {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    if verbose == 0 {
        return;
    }
    let targets = match verbose {
        1 => Targets::new().with_target("cmesh", LevelFilter::DEBUG),
        _ => Targets::new()
            .with_target("cmesh", LevelFilter::TRACE)
            .with_target("kube", LevelFilter::DEBUG)
            .with_target("kube_client", LevelFilter::DEBUG),
    };
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_target(true)
        .with_writer(|| Sanitizer::new(io::stderr(), false));
    let _ = tracing_subscriber::registry()
        .with(layer)
        .with(targets)
        .try_init();
}

/// A one-line notice on stderr (`cmesh: …`).
pub fn note(line: &str) {
    eprint(&format!("cmesh: {}\n", escape_line(line)));
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &str = "CN=srv\x1b]0;PWNED\x07\x1b[2J\r\u{9b}31m\u{202e}gnp.exe";

    #[test]
    fn hostile_text_is_shown_not_obeyed() {
        let e = escape(HOSTILE);
        assert_eq!(e, "CN=srv\\e]0;PWNED\\a\\e[2J\\r\\u{9b}31m\\u{202e}gnp.exe");
        assert!(!e.chars().any(|c| c.is_control()));
        assert_eq!(escape("plain\ttext\n"), "plain\ttext\n");
        assert_eq!(escape_line("a\nb"), "a\\nb");
    }

    #[test]
    fn the_sanitizer_keeps_only_complete_colours() {
        for colors in [false, true] {
            let mut w = Sanitizer::new(Vec::new(), colors);
            // Written in pieces that split an SGR sequence and a UTF-8 character.
            let text = format!("\x1b[1;31mred\x1b[0m {HOSTILE} é\n");
            for chunk in text.as_bytes().chunks(3) {
                w.write_all(chunk).unwrap();
            }
            w.flush().unwrap();
            let out = String::from_utf8(std::mem::take(&mut w.inner)).unwrap();
            let hostile = "CN=srv\\e]0;PWNED\\a\\e[2J\\r\\u{9b}31m\\u{202e}gnp.exe";
            if colors {
                assert_eq!(out, format!("\x1b[1;31mred\x1b[0m {hostile} é\n"));
            } else {
                assert_eq!(out, format!("\\e[1;31mred\\e[0m {hostile} é\n"));
            }
        }
    }
}
