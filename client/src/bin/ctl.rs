//! `ctl ID COMMAND`: the operator's commands to a running server, from any machine that holds
//! the cluster key. `down [SECONDS]`, `up`, `simulate on|off` and `status` go to the server in
//! a frame under the cluster key, and its answer is printed here; `kill` and `restart` act on
//! a cluster started by `./run.sh` through its run folder. Exit 0 with the answer, 1 on an
//! error or no answer (after `--wait-ms`), 2 on a mistake in the command line.

use client::operator::{commands, Action, Operator};
use client::rundir::RunDir;
use common::args::{usage, Args, Opt};
use common::config::{ClusterConfig, ServerId, EXIT_USAGE};
use std::path::Path;
use std::time::Duration;

const OPTS: &[Opt] = &[
    Opt { name: "config", value: Some("FILE"), default: "cluster.json", help: "cluster configuration" },
    Opt { name: "run-dir", value: Some("DIR"), default: "data/run", help: "run.sh's run folder (kill, restart)" },
    Opt { name: "wait-ms", value: Some("MS"), default: "3000", help: "how long to wait for the server's answer" },
];

const ABOUT: &str = "Sends an operator command to a running server and prints its answer.\n\n\
Usage: ctl [OPTIONS] ID|all COMMAND\n\
Commands: down [SECONDS] | up | simulate on|off | status (need the cluster key);\n          \
kill | restart (a cluster started by ./run.sh: SIGKILL, start again)";

fn fail(msg: &str) -> ! {
    eprintln!("ctl: {msg}");
    std::process::exit(EXIT_USAGE)
}

fn main() {
    let all: Vec<String> = std::env::args().skip(1).collect();
    // Options come first; the first word that is not one starts the ID and the command.
    let mut split = 0;
    while split < all.len() && all[split].starts_with("--") {
        let takes_value = OPTS.iter().any(|o| o.value.is_some() && all[split] == format!("--{}", o.name));
        split += if takes_value { 2 } else { 1 };
    }
    let split = split.min(all.len());
    let args = match Args::parse(all[..split].iter().cloned(), OPTS) {
        Ok(a) => a,
        Err(None) => {
            print!("{}", usage("ctl", ABOUT, OPTS));
            return;
        }
        Err(Some(e)) => fail(&e),
    };
    let words: Vec<&str> = all[split..].iter().map(|s| s.as_str()).collect();
    let Some((id, words)) = words.split_first() else {
        fail(&format!("usage: ctl [OPTIONS] ID|all COMMAND; commands: {}", commands()))
    };
    let action = Action::parse(words).unwrap_or_else(|e| fail(&e));
    let cfg_path = args.get("config").unwrap_or("cluster.json");
    let cfg = ClusterConfig::load(Path::new(cfg_path)).unwrap_or_else(|e| fail(&e));
    let ids: Vec<ServerId> = match *id {
        "all" => cfg.ids(),
        one => match one.parse::<ServerId>() {
            Ok(n) if cfg.server(n).is_some() => vec![n],
            _ => fail(&format!("{one:?} is not a server of {cfg_path} (ids: {:?}, or all)", cfg.ids())),
        },
    };
    let wait = Duration::from_millis(args.num::<u64>("wait-ms").unwrap_or_else(|e| fail(&e)).unwrap_or(3000));
    let run = RunDir::new(args.get("run-dir").unwrap_or("data/run"));
    let operator = Operator::new(&cfg);
    let mut failed = false;
    for id in &ids {
        match action.run(*id, &operator, Some(&run), wait) {
            Ok(text) => println!("{}", text.trim_end()),
            Err(e) => {
                let prefix = if ids.len() > 1 { format!("server {id}: ") } else { String::new() };
                eprintln!("ctl: {prefix}{e}");
                failed = true;
            }
        }
    }
    if failed {
        std::process::exit(1);
    }
}
