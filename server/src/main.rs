//! The server binary: parse options, load the config, run the server until Ctrl-C — or, with
//! `--print-key`, print the config's cluster key (creating the key file if missing) and exit.

use common::args::{usage, Args, Opt};
use common::config::{ClusterConfig, EXIT_USAGE};
use server::election::Policy;
use server::runtime::{run, Options};
use std::path::{Path, PathBuf};

const OPTS: &[Opt] = &[
    Opt { name: "id", value: Some("N"), default: "", help: "this server's id in the config (required)" },
    Opt { name: "config", value: Some("FILE"), default: "cluster.json", help: "cluster configuration" },
    Opt { name: "data", value: Some("DIR"), default: "config's data_dir", help: "data folder" },
    Opt {
        name: "policy",
        value: Some("P"),
        default: "least-load",
        help: "least-load | round-robin | single (the last two for benchmarks)",
    },
    Opt { name: "simulate-failures", value: None, default: "", help: "take turns going down (classroom demo)" },
    Opt { name: "slow-ms", value: Some("MS"), default: "0", help: "extra artificial work per image (benchmark)" },
    Opt {
        name: "print-key",
        value: None,
        default: "",
        help: "print the config's cluster key (64 hex digits; the key file is created if missing) and exit",
    },
];

const ABOUT: &str =
    "A server of the image cloud. Operator commands on stdin: down [SECONDS] | up | simulate on|off | status.";

fn fail(msg: &str) -> ! {
    eprintln!("server: {msg}");
    std::process::exit(EXIT_USAGE)
}

fn main() {
    let args = match Args::parse(std::env::args().skip(1), OPTS) {
        Ok(a) => a,
        Err(None) => {
            print!("{}", usage("server", ABOUT, OPTS));
            return;
        }
        Err(Some(e)) => fail(&e),
    };
    let cfg_path = args.get("config").unwrap_or("cluster.json");
    let cfg = ClusterConfig::load(Path::new(cfg_path)).unwrap_or_else(|e| fail(&e));
    if args.flag("print-key") {
        print_key(&cfg, cfg_path);
        return;
    }
    let id = match args.num::<u32>("id") {
        Ok(Some(id)) => id,
        Ok(None) => fail("--id is required (see --help)"),
        Err(e) => fail(&e),
    };
    if cfg.server(id).is_none() {
        fail(&format!("--id {id}: no such server in {cfg_path} (ids: {:?})", cfg.ids()));
    }
    let policy = Policy::parse(args.get("policy").unwrap_or("least-load")).unwrap_or_else(|e| fail(&e));
    let slow_ms = args.num::<u64>("slow-ms").unwrap_or_else(|e| fail(&e)).unwrap_or(0);
    let data_dir = PathBuf::from(args.get("data").unwrap_or(&cfg.data_dir));
    let opts =
        Options { id, cfg, data_dir, policy, simulate_failures: args.flag("simulate-failures"), slow_ms, stdin: true };
    if let Err(e) = run(opts) {
        eprintln!("server {id}: {e}");
        std::process::exit(1);
    }
}

/// `--print-key`: the key alone on stdout (for `scp`-free copying into `cluster_key`), where it
/// comes from on stderr.
fn print_key(cfg: &ClusterConfig, cfg_path: &str) {
    let source = match &cfg.cluster_key {
        Some(_) => format!("field `cluster_key` of {cfg_path}"),
        None => {
            let path = cfg.cluster_key_path();
            let existed = path.exists();
            format!("{} ({})", path.display(), if existed { "existing file" } else { "created now" })
        }
    };
    match server::keys::cluster_key(cfg) {
        Ok(key) => {
            eprintln!("server: the cluster key of {cfg_path}, from {source}:");
            println!("{}", common::crypto::to_hex(&key));
        }
        Err(e) => {
            eprintln!("server: {e}");
            std::process::exit(1);
        }
    }
}
