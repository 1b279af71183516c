//! The lines a client prints by itself rather than as the output of a command: each starts with
//! `notice: ` and goes to standard output, so a person, or a program driving the prompt, tells
//! them from a command's lines (which end with one `ok:` or `error:` line). Every thread that
//! prints on its own — the watch, the peer engine, the partial-transfer mirror — goes through
//! [`notice`]; nothing in the background writes to standard error (the in-place progress line
//! of a transfer the prompt waits for is no line: it is redrawn on a terminal and cleared, see
//! `progress`). While an interactive prompt waits for input, a notice starts on a line of its
//! own and the prompt is shown again after it. The last [`KEPT`] notices are also kept in
//! memory, numbered, for the user's page ([`recent`]).

use parking_lot::Mutex;
use std::collections::VecDeque;
use std::io::Write;

/// The start of every line the client prints by itself.
pub const PREFIX: &str = "notice: ";

/// Notices kept in memory for the user's page.
pub const KEPT: usize = 64;

/// The last [`KEPT`] notices with their numbers (from 1), oldest first.
static RECENT: Mutex<(u64, VecDeque<(u64, String)>)> = parking_lot::const_mutex((0, VecDeque::new()));

/// The kept notices numbered after `after`, oldest first.
pub fn recent(after: u64) -> Vec<(u64, String)> {
    RECENT.lock().1.iter().filter(|(n, _)| *n > after).cloned().collect()
}

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
    {
        let mut recent = RECENT.lock();
        recent.0 += 1;
        let n = recent.0;
        recent.1.push_back((n, text.to_string()));
        while recent.1.len() > KEPT {
            recent.1.pop_front();
        }
    }
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

    #[test]
    fn the_last_notices_are_kept_numbered() {
        let before = recent(0).last().map(|(n, _)| *n).unwrap_or(0);
        for i in 0..KEPT + 5 {
            notice(&format!("kept {i}"));
        }
        let all = recent(0);
        assert_eq!(all.len(), KEPT);
        assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
        let last = all.last().cloned().unwrap();
        assert!(last.0 > before && last.1 == format!("kept {}", KEPT + 4));
        assert!(recent(last.0).is_empty());
    }
}
