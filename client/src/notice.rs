//! The lines a client prints by itself rather than as the output of a command: each starts with
//! `notice: ` and goes to standard output, so a person, or a program driving the prompt, tells
//! them from a command's lines (which end with one `ok:` or `error:` line). Every thread that
//! prints on its own — the watch, the peer engine, the partial-transfer mirror — goes through
//! [`notice`]; nothing in the background writes to standard error (the in-place progress line
//! of a transfer the prompt waits for is no line: it is redrawn on a terminal and cleared, see
//! `progress`). While an interactive prompt waits for input, a notice starts on a line of its
//! own and the prompt is shown again after it.

use parking_lot::Mutex;
use std::io::Write;

/// The start of every line the client prints by itself.
pub const PREFIX: &str = "notice: ";

/// The prompt while it waits for input on a terminal (None: not shown).
static PROMPT: Mutex<Option<String>> = parking_lot::const_mutex(None);

/// The lines of a notice: one per line of `text`, each with the [`PREFIX`].
pub fn lines(text: &str) -> String {
    let mut out = String::new();
    for l in text.lines() {
        out.push_str(PREFIX);
        out.push_str(l);
        out.push('\n');
    }
    out
}

/// Prints `text` as a notice (each of its lines prefixed).
pub fn notice(text: &str) {
    let prompt = PROMPT.lock();
    let mut out = std::io::stdout().lock();
    let _ = match prompt.as_deref() {
        Some(p) => write!(out, "\n{}{p}", lines(text)),
        None => write!(out, "{}", lines(text)),
    };
    let _ = out.flush();
}

/// Shows the interactive prompt `p`; notices redraw it until [`prompt_taken`].
pub fn show_prompt(p: &str) {
    let mut prompt = PROMPT.lock();
    let mut out = std::io::stdout().lock();
    let _ = write!(out, "{p}");
    let _ = out.flush();
    *prompt = Some(p.to_string());
}

/// The prompt got its line of input: notices no longer redraw it.
pub fn prompt_taken() {
    *PROMPT.lock() = None;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_of_a_notice_is_prefixed() {
        assert_eq!(lines("lost the cloud"), "notice: lost the cloud\n");
        assert_eq!(lines("one\ntwo"), "notice: one\nnotice: two\n");
    }
}
