//! The live status table of a running cluster: every second, sends the `status` request to
//! every server of the config and prints each server's state, load, whether it wins the next
//! request, how many requests it won recently, and the online users. A server that does not
//! answer shows as DOWN. `--once` prints one table and exits.

use client::cloud::Cloud;
use client::status::{render, rows};
use common::args::{usage, Args, Opt};
use common::config::{ClusterConfig, EXIT_USAGE};
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

const OPTS: &[Opt] = &[
    Opt { name: "config", value: Some("FILE"), default: "cluster.json", help: "cluster configuration" },
    Opt { name: "once", value: None, default: "", help: "print one table and exit" },
    Opt { name: "every-ms", value: Some("MS"), default: "1000", help: "refresh interval" },
    Opt { name: "wait-ms", value: Some("MS"), default: "500", help: "how long to wait for the servers' answers" },
];

const ABOUT: &str = "Live status of the image cloud, read from the servers themselves (Ctrl-C to quit).";

fn fail(msg: &str) -> ! {
    eprintln!("status: {msg}");
    std::process::exit(EXIT_USAGE)
}

fn main() {
    let args = match Args::parse(std::env::args().skip(1), OPTS) {
        Ok(a) => a,
        Err(None) => {
            print!("{}", usage("status", ABOUT, OPTS));
            return;
        }
        Err(Some(e)) => fail(&e),
    };
    let cfg_path = args.get("config").unwrap_or("cluster.json");
    let cfg = ClusterConfig::load(Path::new(cfg_path)).unwrap_or_else(|e| fail(&e));
    let every = args.num::<u64>("every-ms").unwrap_or_else(|e| fail(&e)).unwrap_or(1000).max(100);
    let wait = args.num::<u64>("wait-ms").unwrap_or_else(|e| fail(&e)).unwrap_or(500).clamp(10, 10_000);
    let mut cloud = Cloud::connect(&cfg, None).unwrap_or_else(|e| {
        eprintln!("status: {e}");
        std::process::exit(1)
    });
    let live = !args.flag("once");
    let clear = live && std::io::stdout().is_terminal();
    loop {
        let answers = cloud.statuses(Duration::from_millis(wait));
        let table = render(&rows(&cfg, &answers));
        let mut out = std::io::stdout().lock();
        if clear {
            let _ = write!(out, "\x1b[2J\x1b[H");
        }
        let time = chrono::Local::now().format("%H:%M:%S");
        let _ = writeln!(out, "imgcloud status at {time} ({cfg_path})\n{table}");
        let _ = out.flush();
        drop(out);
        if !live {
            return;
        }
        std::thread::sleep(Duration::from_millis(every.saturating_sub(wait)));
    }
}
