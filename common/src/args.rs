//! A small command-line parser shared by the binaries: `--name value` and `--flag`, a help
//! text generated from the option table, unknown options rejected (exit code 2).

use std::collections::BTreeMap;

/// One option a binary accepts.
#[derive(Debug, Clone, Copy)]
pub struct Opt {
    /// Name without dashes.
    pub name: &'static str,
    /// Placeholder of its value, or None for a flag.
    pub value: Option<&'static str>,
    /// Default shown in help ("" for none).
    pub default: &'static str,
    /// What it does.
    pub help: &'static str,
}

/// Parsed arguments.
#[derive(Debug, Clone, Default)]
pub struct Args {
    values: BTreeMap<String, String>,
    flags: Vec<String>,
}

/// The help text of a binary.
pub fn usage(bin: &str, about: &str, opts: &[Opt]) -> String {
    let mut s = format!("{about}\n\nUsage: {bin} [OPTIONS]\n\nOptions:\n");
    for o in opts {
        let left = match o.value {
            Some(v) => format!("--{} {v}", o.name),
            None => format!("--{}", o.name),
        };
        let default = if o.default.is_empty() { String::new() } else { format!(" [default: {}]", o.default) };
        s.push_str(&format!("  {left:<28} {}{default}\n", o.help));
    }
    s.push_str(&format!("  {:<28} print this help\n", "--help"));
    s
}

impl Args {
    /// Parses `args` (without the program name). `Err(None)` means `--help` was asked for.
    pub fn parse(args: impl IntoIterator<Item = String>, opts: &[Opt]) -> Result<Args, Option<String>> {
        let mut out = Args::default();
        let mut it = args.into_iter();
        while let Some(a) = it.next() {
            if a == "--help" || a == "-h" {
                return Err(None);
            }
            let Some(name) = a.strip_prefix("--") else {
                return Err(Some(format!("unexpected argument {a:?}")));
            };
            let (name, inline) = match name.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (name, None),
            };
            let Some(opt) = opts.iter().find(|o| o.name == name) else {
                return Err(Some(format!("unknown option --{name} (see --help)")));
            };
            match opt.value {
                None => out.flags.push(name.to_string()),
                Some(v) => {
                    let value = match inline.or_else(|| it.next()) {
                        Some(x) => x,
                        None => return Err(Some(format!("--{name} needs a value ({v})"))),
                    };
                    out.values.insert(name.to_string(), value);
                }
            }
        }
        Ok(out)
    }

    /// The value of `--name`, if given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(|s| s.as_str())
    }

    /// The value of `--name` parsed as a number, if given.
    pub fn num<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| format!("--{name}: {v:?} is not a valid number")),
        }
    }

    /// True if `--name` was given.
    pub fn flag(&self, name: &str) -> bool {
        self.flags.iter().any(|f| f == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTS: &[Opt] = &[
        Opt { name: "id", value: Some("N"), default: "", help: "server id" },
        Opt { name: "fast", value: None, default: "", help: "go fast" },
    ];

    fn parse(v: &[&str]) -> Result<Args, Option<String>> {
        Args::parse(v.iter().map(|s| s.to_string()), OPTS)
    }

    #[test]
    fn parses_values_flags_and_rejects_unknown() {
        let a = parse(&["--id", "3", "--fast"]).unwrap();
        assert_eq!(a.num::<u32>("id").unwrap(), Some(3));
        assert!(a.flag("fast"));
        assert_eq!(parse(&["--id=4"]).unwrap().get("id"), Some("4"));
        assert!(parse(&["--nope"]).unwrap_err().unwrap().contains("--nope"));
        assert!(parse(&["--id"]).unwrap_err().is_some());
        assert!(parse(&["--help"]).unwrap_err().is_none());
        assert!(usage("server", "x", OPTS).contains("--id N"));
    }
}
