//! The lines a client prints by itself rather than as the output of a command: each starts with
//! `notice: ` and goes to standard output, so a person, or a program driving the prompt, tells
//! them from a command's lines (which end with one `ok:` or `error:` line). Every thread that
//! prints on its own — the watch, the peer engine, the partial-transfer mirror — goes through
//! [`notice`]; nothing in the background writes to standard error (the in-place progress line
//! of a transfer the prompt waits for is no line: it is redrawn on a terminal and cleared, see
//! `progress`). On a terminal the prompt's line editor hands over a printer ([`use_printer`]):
//! a notice then appears above the line being typed, which is drawn again below it. Also kept
//! here: the terminal's size, as the prompt last measured it, for drawing pictures, and the
//! last [`KEPT`] notices, numbered, for the user's page ([`recent`]).

use parking_lot::Mutex;
use std::collections::VecDeque;
use std::io::Write;

/// The start of every line the client prints by itself.
pub const PREFIX: &str = "notice: ";

/// Prints a whole block of text above the line being typed (the line editor's printer).
pub type Printer = Box<dyn FnMut(String) -> Result<(), String> + Send>;

/// The line editor's printer while the prompt runs on a terminal (None: plain stdout).
static PRINTER: Mutex<Option<Printer>> = parking_lot::const_mutex(None);

/// The terminal's columns and rows as last measured by the prompt (None: not a terminal).
static SIZE: Mutex<Option<(u16, u16)>> = parking_lot::const_mutex(None);

/// Notices kept in memory for the user's page.
pub const KEPT: usize = 64;

/// The last [`KEPT`] notices with their numbers (from 1), oldest first.
static RECENT: Mutex<(u64, VecDeque<(u64, String)>)> = parking_lot::const_mutex((0, VecDeque::new()));

/// The kept notices numbered after `after`, oldest first.
pub fn recent(after: u64) -> Vec<(u64, String)> {
    RECENT.lock().1.iter().filter(|(n, _)| *n > after).cloned().collect()
}

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
    let block = lines(text);
    let mut printer = PRINTER.lock();
    if let Some(print) = printer.as_mut() {
        if print(block.clone()).is_ok() {
            return;
        }
    }
    let mut out = std::io::stdout().lock();
    let _ = write!(out, "{block}");
    let _ = out.flush();
}

/// From now on notices go through `printer` (the interactive prompt's line editor).
pub fn use_printer(printer: Printer) {
    *PRINTER.lock() = Some(printer);
}

/// Records the terminal's size (columns, rows), measured by the prompt before each command.
pub fn set_size(size: Option<(u16, u16)>) {
    *SIZE.lock() = size.filter(|&(c, r)| c > 0 && r > 0);
}

/// The terminal's size (columns, rows) for pictures: as measured by the prompt, else `$COLUMNS`
/// and `$LINES` as a shell exports them, else 80 × 24.
pub fn size() -> (u16, u16) {
    if let Some(s) = *SIZE.lock() {
        return s;
    }
    let env = |name: &str, default: u16| {
        std::env::var(name).ok().and_then(|v| v.trim().parse::<u16>().ok()).filter(|&n| n > 0).unwrap_or(default)
    };
    (env("COLUMNS", 80), env("LINES", 24))
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
    fn a_measured_size_wins_and_nonsense_is_ignored() {
        set_size(Some((40, 30)));
        assert_eq!(size(), (40, 30));
        set_size(Some((0, 30)));
        assert_ne!(size(), (0, 30));
        set_size(None);
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
