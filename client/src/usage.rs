//! The prompt's words: its commands as the help text lists them (`  NAME ARGS  what it does`),
//! so a command given the wrong number of arguments answers its own usage line and a mistyped
//! one the command it most likely meant; and counted nouns (`1 view`, `2 views`).

/// Other names of a command (typed name, name in the help text).
const ALIASES: &[(&str, &str)] = &[("exit", "quit")];

/// One command of the help text.
#[derive(Debug, PartialEq)]
pub struct Entry<'a> {
    /// What is typed first (lower case).
    pub name: &'a str,
    /// Its arguments as the help names them (`[VIEWS]`: optional).
    pub args: Vec<&'a str>,
    /// What it does.
    pub about: String,
}

impl Entry<'_> {
    /// `usage: NAME ARGS — what it does`.
    pub fn usage(&self) -> String {
        let mut syntax = vec![self.name];
        syntax.extend(&self.args);
        format!("usage: {} — {}", syntax.join(" "), self.about)
    }
}

/// An argument placeholder of the help text: upper case, maybe in brackets (`PATH`, `[VIEWS]`).
fn is_placeholder(word: &str) -> bool {
    let bare = word.trim_start_matches('[').trim_end_matches(']');
    !bare.is_empty() && bare.chars().all(|c| c.is_ascii_uppercase() || c == '_')
}

/// The commands of `help`: each of its lines indented by two spaces.
pub fn entries(help: &str) -> Vec<Entry<'_>> {
    help.lines()
        .filter(|l| l.starts_with("  ") && !l.trim().is_empty())
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let name = words.next()?;
            let args: Vec<&str> = words.clone().take_while(|w| is_placeholder(w)).collect();
            let about = words.skip(args.len()).collect::<Vec<_>>().join(" ");
            Some(Entry { name, args, about })
        })
        .collect()
}

/// The edit distance of `a` and `b`, a swap of two neighbours counting as one edit (the
/// optimal string alignment distance).
pub fn distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// The name among `names` closest to `typed`, if it is close enough to be a slip (one edit for
/// short names, two for longer ones); the first of equally close ones.
pub fn suggest<'a>(typed: &str, names: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let most = if typed.chars().count() <= 4 { 1 } else { 2 };
    names
        .into_iter()
        .map(|n| (distance(typed, n), n))
        .filter(|(d, _)| *d <= most)
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n)
}

/// Why `words` (a prompt line, its command in lower case) is not a command of `help`: the
/// command's usage when only its arguments are wrong, else which command was likely meant.
pub fn explain(help: &str, words: &[&str]) -> String {
    let typed = words.first().copied().unwrap_or_default();
    let name = ALIASES.iter().find(|(alias, _)| *alias == typed).map(|(_, n)| *n).unwrap_or(typed);
    let all = entries(help);
    if let Some(e) = all.iter().find(|e| e.name == name) {
        return e.usage();
    }
    match suggest(typed, all.iter().map(|e| e.name)) {
        Some(meant) => format!("unknown command {typed:?}: did you mean {meant}?"),
        None => format!("unknown command {typed:?} (try help)"),
    }
}

/// `n` and `noun`, made plural unless `n` is 1: `1 view`, `0 views`, `3 received images`.
pub fn plural(n: impl std::fmt::Display, noun: &str) -> String {
    match n.to_string() {
        one if one == "1" => format!("1 {noun}"),
        n => format!("{n} {noun}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELP: &str = "commands:
  encrypt PATH      hide an image in a cover
  approve N [VIEWS] send the image of request N
  request USER IMAGE VIEWS   ask USER for IMAGE with VIEWS views
  quit              sign out and leave";

    #[test]
    fn the_help_text_is_the_table() {
        let all = entries(HELP);
        let names: Vec<&str> = all.iter().map(|e| e.name).collect();
        assert_eq!(names, ["encrypt", "approve", "request", "quit"]);
        assert_eq!(all[1].args, ["N", "[VIEWS]"]);
        assert_eq!(all[1].about, "send the image of request N");
        assert!(all[3].args.is_empty() && all[3].about == "sign out and leave");
    }

    #[test]
    fn a_missing_argument_answers_the_usage() {
        assert_eq!(explain(HELP, &["encrypt"]), "usage: encrypt PATH — hide an image in a cover");
        let u = explain(HELP, &["request", "alice"]);
        assert_eq!(u, "usage: request USER IMAGE VIEWS — ask USER for IMAGE with VIEWS views");
        assert_eq!(explain(HELP, &["exit", "now"]), "usage: quit — sign out and leave");
    }

    #[test]
    fn near_misses_suggest_the_command() {
        assert_eq!(distance("encrpyt", "encrypt"), 1, "a swap is one edit");
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("approve", "approve"), 0);
        assert_eq!(suggest("encrpyt", ["encrypt", "request"]), Some("encrypt"));
        assert_eq!(suggest("reqest", ["encrypt", "request", "requests"]), Some("request"));
        assert_eq!(suggest("qit", ["quit"]), Some("quit"));
        assert_eq!(suggest("xyz", ["quit", "view"]), None);
        assert_eq!(suggest("apprvoe", ["approve"]), Some("approve"));
        assert_eq!(explain(HELP, &["encrpyt", "x.png"]), "unknown command \"encrpyt\": did you mean encrypt?");
        assert_eq!(explain(HELP, &["frobnicate"]), "unknown command \"frobnicate\" (try help)");
    }

    #[test]
    fn counts_agree_with_their_nouns() {
        assert_eq!(plural(1u32, "view"), "1 view");
        assert_eq!(plural(0u32, "view"), "0 views");
        assert_eq!(plural(2usize, "received image"), "2 received images");
    }
}
