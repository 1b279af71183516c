//! How the demo speaks: every line it prints goes through here, wrapped to the terminal's width
//! (words never split; a line that fits is printed as it is), and coloured when asked to or
//! when stdout is a terminal (✔ green, ✘ red, each server id in a colour of its own, DOWN red,
//! UP green). Piped output stays plain text. With `--step` it waits for Enter after each
//! step's story, so a teacher can talk before it happens.

use crate::proc::check_stop;
use std::cell::Cell;
use std::io::{BufRead, IsTerminal, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::Duration;

/// The width used when stdout is not a terminal and `COLUMNS` does not say.
const PIPED_WIDTH: usize = 100;
/// Narrower than this, lines are still wrapped as if it were this wide.
const MIN_WIDTH: usize = 30;

/// SGR codes.
const RESET: &str = "\x1b[0m";
const BOLD: &str = "\x1b[1m";
const DIM: &str = "\x1b[2m";
const GREEN: &str = "\x1b[1;32m";
const RED: &str = "\x1b[1;31m";
const TITLE: &str = "\x1b[1;36m";

/// `--color`: when to colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColorMode {
    Always,
    Never,
    Auto,
}

impl ColorMode {
    /// Parses `always`, `never` or `auto`.
    pub fn parse(s: &str) -> Result<ColorMode, String> {
        match s {
            "always" => Ok(ColorMode::Always),
            "never" => Ok(ColorMode::Never),
            "auto" => Ok(ColorMode::Auto),
            _ => Err(format!("--color {s}: always, never or auto")),
        }
    }
}

/// The colour of server `id` (bright blue, magenta, yellow, cyan, then round again).
pub fn server_color(id: u64) -> &'static str {
    const COLORS: [&str; 4] = ["\x1b[1;94m", "\x1b[1;95m", "\x1b[1;93m", "\x1b[1;96m"];
    COLORS[(id.saturating_sub(1) % COLORS.len() as u64) as usize]
}

/// The demo's voice.
pub struct Say {
    /// Colours (and pictures) on.
    pub color: bool,
    tty: bool,
    width: Cell<usize>,
    enter: Option<Receiver<()>>,
    step: bool,
}

impl Say {
    /// `step`: wait for Enter (a line on stdin) after each step's story; `listen`: read stdin
    /// for [`Say::wait_start`] too.
    pub fn new(mode: ColorMode, step: bool, listen: bool) -> Say {
        let tty = std::io::stdout().is_terminal();
        let color = match mode {
            ColorMode::Always => true,
            ColorMode::Never => false,
            ColorMode::Auto => tty && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        };
        let enter = (step || listen).then(|| {
            let (tx, rx) = channel();
            std::thread::spawn(move || {
                for _ in std::io::stdin().lock().lines().map_while(Result::ok) {
                    if tx.send(()).is_err() {
                        return;
                    }
                }
            });
            rx
        });
        let say = Say { color, tty, width: Cell::new(PIPED_WIDTH), enter, step };
        say.measure();
        say
    }

    /// Reads the terminal's width again (a projector window may have been resized).
    pub fn measure(&self) {
        let cols = if self.tty { terminal_columns() } else { None };
        let env = std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok());
        self.width.set(cols.or(env).unwrap_or(PIPED_WIDTH).max(MIN_WIDTH));
    }

    /// The width lines are wrapped to.
    pub fn width(&self) -> usize {
        self.width.get()
    }

    /// A step's title: `[N/M] title`, after a blank line.
    pub fn title(&self, n: usize, of: usize, title: &str) {
        self.measure();
        println!();
        let head = format!("[{n}/{of}] ");
        for (i, l) in wrap(title, self.width().saturating_sub(head.chars().count())).iter().enumerate() {
            if i == 0 {
                self.raw(&format!("{}{head}{}{}", self.c(TITLE), self.c(BOLD), self.paint(l, BOLD, false)));
            } else {
                self.raw(&format!("{}{}{}", " ".repeat(head.len()), self.c(BOLD), self.paint(l, BOLD, false)));
            }
        }
    }

    /// Narration, indented 4.
    pub fn story(&self, text: &str) {
        self.block(4, 4, text, "");
    }

    /// A line of what happens, indented 6 (its wrapped rest indented 8).
    pub fn line(&self, text: &str) {
        self.block(6, 8, text, "");
    }

    /// A line in a quieter colour, indented 6.
    pub fn dim(&self, text: &str) {
        self.block(6, 8, text, DIM);
    }

    /// `✔ what`, green.
    pub fn pass(&self, what: &str) {
        self.block(4, 6, &format!("✔ {what}"), GREEN);
    }

    /// `✘ what`, red (it may span lines: each is wrapped).
    pub fn fail(&self, what: &str) {
        for (i, l) in what.lines().enumerate() {
            let text = if i == 0 { format!("✘ {l}") } else { l.trim_start().to_string() };
            self.block(if i == 0 { 4 } else { 6 }, 8, &text, RED);
        }
    }

    /// The closing verdict (no indent).
    pub fn verdict(&self, ok: bool, text: &str) {
        println!();
        self.block(0, 2, text, if ok { GREEN } else { RED });
    }

    /// A line printed as it is (already coloured, or a picture).
    pub fn raw(&self, text: &str) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{text}{}", self.c(RESET));
        let _ = out.flush();
    }

    /// A picture drawn by `render_ansi`, indented 6 (only when colouring).
    pub fn picture(&self, ansi: &str) {
        if self.color {
            for l in ansi.lines() {
                self.raw(&format!("      {l}"));
            }
        }
    }

    /// With `--step`: says so and waits for Enter.
    pub fn wait_step(&mut self, next: &str) -> Result<(), String> {
        if self.step {
            self.wait_start(next)
        } else {
            Ok(())
        }
    }

    /// Says so and waits for Enter, if stdin is read (Ctrl-C stops; the end of stdin stops
    /// waiting for good).
    pub fn wait_start(&mut self, next: &str) -> Result<(), String> {
        let Some(rx) = &self.enter else { return Ok(()) };
        self.dim(&format!("⏎ Enter: {next}"));
        loop {
            check_stop()?;
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(()) => return Ok(()),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.enter = None;
                    return Ok(());
                }
            }
        }
    }

    fn c(&self, code: &'static str) -> &'static str {
        if self.color {
            code
        } else {
            ""
        }
    }

    /// The status table (from `table::lines`), indented 4, each row's server id coloured.
    pub fn table(&self, lines: &[String]) {
        let rows = lines.len().saturating_sub(1);
        for (i, l) in lines.iter().enumerate() {
            self.block_ids(4, 6, l, "", i > 0 && i < rows);
        }
    }

    fn block(&self, first: usize, rest: usize, text: &str, base: &'static str) {
        self.block_ids(first, rest, text, base, false);
    }

    /// Prints `text` wrapped (`first`/`rest`: indents), `base` its colour; `ids_first`: the
    /// line starts with a server id.
    fn block_ids(&self, first: usize, rest: usize, text: &str, base: &'static str, ids_first: bool) {
        let w = self.width();
        let lines = if first + text.chars().count() <= w {
            vec![text.trim_end().to_string()]
        } else {
            wrap_hanging(text.trim(), w.saturating_sub(first), w.saturating_sub(rest))
        };
        for (i, l) in lines.iter().enumerate() {
            let pad = " ".repeat(if i == 0 { first } else { rest });
            self.raw(&format!("{pad}{}{}", self.c(base), self.paint(l, base, ids_first && i == 0)));
        }
    }

    /// `line` with server ids, DOWN/UP, and a leading `ok:`/`error:` coloured; `base` is the
    /// line's own colour, restored after each coloured word; `ids_first`: the line starts with
    /// a server id (a table row).
    pub fn paint(&self, line: &str, base: &'static str, ids_first: bool) -> String {
        if !self.color {
            return line.to_string();
        }
        let restore = |out: &mut String| {
            out.push_str(RESET);
            out.push_str(base);
        };
        let mut out = String::with_capacity(line.len() * 2);
        let mut after_server = ids_first;
        for (i, tok) in tokens(line).into_iter().enumerate() {
            let word = tok.chars().all(char::is_alphanumeric);
            let colored = if after_server && tok.chars().all(|c| c.is_ascii_digit()) {
                Some(server_color(tok.parse().unwrap_or(0)))
            } else if tok == "DOWN" {
                Some(RED)
            } else if tok == "UP" {
                Some(GREEN)
            } else if i <= 2 && (tok == "ok" || tok == "error") && line.trim_start().starts_with(&format!("{tok}:")) {
                Some(if tok == "ok" { GREEN } else { RED })
            } else {
                None
            };
            match colored {
                Some(c) => {
                    out.push_str(c);
                    out.push_str(tok);
                    restore(&mut out);
                }
                None => out.push_str(tok),
            }
            if tok == "server" || tok == "servers" || tok == "Server" || tok == "Servers" {
                after_server = true;
            } else if (word && !matches!(tok, "then" | "and" | "or") && !tok.chars().all(|c| c.is_ascii_digit()))
                || (!word && !matches!(tok, " " | "," | "[" | "]"))
            {
                after_server = false;
            }
        }
        out
    }
}

/// `line` cut into runs of alphanumerics and single other characters.
fn tokens(line: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in line.char_indices() {
        if c.is_alphanumeric() {
            start.get_or_insert(i);
        } else {
            if let Some(s) = start.take() {
                out.push(&line[s..i]);
            }
            out.push(&line[i..i + c.len_utf8()]);
        }
    }
    if let Some(s) = start {
        out.push(&line[s..]);
    }
    out
}

/// `text` wrapped to `width` columns at spaces; a word longer than the width stays whole on
/// a line of its own.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    wrap_hanging(text, width, width)
}

/// Like [`wrap`], the first line `first` wide, the others `rest`. A unit after a number
/// (`3.6 s`) and a server's id (`server 2`) stay with it; a hash too long for a line is shown as its ends (`e7f370ce…8a3ce`).
pub fn wrap_hanging(text: &str, first: usize, rest: usize) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        let bare = word.trim_end_matches([',', ';', ')', '.', ':', '\'']);
        let unit = matches!(bare, "s" | "ms");
        let id = !bare.is_empty() && bare.chars().all(|c| c.is_ascii_digit());
        match words.last_mut() {
            Some(prev)
                if (unit && prev.ends_with(|c: char| c.is_ascii_digit()))
                    || (id && prev.ends_with("server") && !prev.contains(' ')) =>
            {
                prev.push(' ');
                prev.push_str(word);
            }
            _ if word.len() > rest.max(first) && word.len() >= 32 && word.chars().all(|c| c.is_ascii_hexdigit()) => {
                words.push(format!("{}…{}", &word[..12], &word[word.len() - 12..]));
            }
            _ => words.push(word.to_string()),
        }
    }
    let mut lines: Vec<String> = Vec::new();
    let mut cur = String::new();
    for word in &words {
        let limit = if lines.is_empty() { first } else { rest };
        let len = cur.chars().count();
        if len > 0 && len + 1 + word.chars().count() > limit {
            lines.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(word);
    }
    if !cur.is_empty() || lines.is_empty() {
        lines.push(cur);
    }
    lines
}

/// The terminal's columns, from `stty size` on the controlling terminal.
fn terminal_columns() -> Option<usize> {
    let tty = std::fs::File::open("/dev/tty").ok()?;
    let out = Command::new("stty").arg("size").stdin(tty).stderr(Stdio::null()).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    text.split_whitespace().nth(1)?.parse().ok().filter(|c: &usize| *c > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapping_never_splits_a_word_and_keeps_every_word() {
        let text = "the least-loaded server wins the election, receives the sealed photo";
        for w in [10, 20, 33] {
            let lines = wrap(text, w);
            assert!(lines.iter().all(|l| l.chars().count() <= w || !l.contains(' ')), "{w}: {lines:?}");
            assert_eq!(lines.join(" "), text, "{w}");
        }
        assert_eq!(wrap("a verylongwordindeed b", 5), ["a", "verylongwordindeed", "b"]);
        assert_eq!(wrap_hanging("aa bb cc dd", 5, 2), ["aa bb", "cc", "dd"]);
        assert_eq!(wrap("came after 3.6 s; then", 14), ["came after", "3.6 s; then"]);
        assert_eq!(wrap("on the server 2), then", 12), ["on the", "server 2),", "then"]);
        let hash = "e7f370cec3a8b3943ad529b209796ccd524e9710ddbedf718b01df4172e8a3ce";
        assert_eq!(wrap(&format!("sha256 {hash}"), 40), ["sha256 e7f370cec3a8…df4172e8a3ce"]);
        assert_eq!(wrap(&format!("sha256 {hash}"), 80), [format!("sha256 {hash}")]);
    }

    #[test]
    fn plain_when_colour_is_off_and_server_ids_painted_when_on() {
        let plain = Say { color: false, tty: false, width: Cell::new(80), enter: None, step: false };
        assert_eq!(plain.paint("server 2 is DOWN", "", false), "server 2 is DOWN");
        let color = Say { color: true, tty: false, width: Cell::new(80), enter: None, step: false };
        let painted = color.paint("servers [1, 3] then server 2; 2 servers; ok", "", false);
        assert!(painted.contains(&format!("{}1{RESET}", server_color(1))), "{painted:?}");
        assert!(painted.contains(&format!("{}3{RESET}", server_color(3))), "{painted:?}");
        assert!(painted.contains(&format!("{}2{RESET}", server_color(2))), "{painted:?}");
        assert!(painted.ends_with("; 2 servers; ok"), "a count is not an id: {painted:?}");
        assert!(color.paint("ok: done", "", false).starts_with(GREEN));
        assert!(color.paint("server 1 DOWN", "", false).contains(&format!("{RED}DOWN")));
        assert!(color.paint("3      UP", "", true).starts_with(server_color(3)));
    }
}
