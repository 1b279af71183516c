//! One-line logs with a timestamp (chrono) and the speaker's name, on stderr.

/// Writes `[time] [who] message` to stderr.
pub fn log(who: &str, msg: &str) {
    eprintln!("{} [{who}] {msg}", chrono::Local::now().format("%H:%M:%S%.3f"));
}
