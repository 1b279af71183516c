//! Progress of a transfer over 1 MB on the prompt's terminal: bytes, per cent and rate, redrawn
//! in place on standard error (carriage return, no newline) and cleared when the transfer ends,
//! so the prompt line is never garbled. Piped output (tests, the demo) sees nothing of it.

use std::io::{IsTerminal, Write};
use std::time::Instant;

/// Transfers at least this large show progress.
pub const MIN_BYTES: u64 = 1 << 20;

/// One line of progress for one transfer at a time.
pub struct Meter {
    tty: bool,
    started: Option<(String, Instant)>,
    shown: bool,
}

impl Default for Meter {
    fn default() -> Self {
        Meter { tty: std::io::stderr().is_terminal(), started: None, shown: false }
    }
}

/// `bytes` as megabytes with one decimal ("8.5 MB").
pub fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// The line for `done` of `total` bytes after `secs` seconds.
pub fn line(what: &str, done: u64, total: u64, secs: f64) -> String {
    line_since(what, done, total, 0, secs)
}

/// The line for `done` of `total` bytes, `base` of which were there `secs` seconds ago (the
/// rate counts only what moved since).
pub fn line_since(what: &str, done: u64, total: u64, base: u64, secs: f64) -> String {
    let mb = |b: u64| b as f64 / 1e6;
    let pct = done.saturating_mul(100).checked_div(total).unwrap_or(100);
    let rate = if secs > 0.0 { mb(done.saturating_sub(base)) / secs } else { 0.0 };
    format!("{what}: {:.1} of {:.1} MB, {pct} %, {rate:.1} MB/s", mb(done), mb(total))
}

impl Meter {
    /// `done` of `total` bytes of `what` ("upload", "download") have moved; `done >= total`
    /// ends the line.
    pub fn update(&mut self, what: &str, done: u64, total: u64) {
        if done >= total {
            return self.clear();
        }
        if !self.tty || total < MIN_BYTES {
            return;
        }
        let start = match &self.started {
            Some((w, t)) if w == what => *t,
            _ => {
                let t = Instant::now();
                self.started = Some((what.to_string(), t));
                t
            }
        };
        let text = line(what, done, total, start.elapsed().as_secs_f64());
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{text}");
        let _ = err.flush();
        self.shown = true;
    }

    /// The transfer ended: the line is cleared.
    pub fn clear(&mut self) {
        if self.shown {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
        }
        self.shown = false;
        self.started = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_says_bytes_per_cent_and_rate() {
        assert_eq!(line("upload", 4_250_000, 8_500_000, 2.0), "upload: 4.2 of 8.5 MB, 50 %, 2.1 MB/s");
        assert_eq!(line("download", 0, 0, 0.0), "download: 0.0 of 0.0 MB, 100 %, 0.0 MB/s");
        assert_eq!(
            line_since("receiving", 6_000_000, 8_000_000, 4_000_000, 2.0),
            "receiving: 6.0 of 8.0 MB, 75 %, 1.0 MB/s"
        );
    }
}
