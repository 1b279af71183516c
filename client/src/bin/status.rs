//! The live status table of a running cluster: every second, sends the `status` request to
//! every server of the config and prints each server's state, load, whether it wins the next
//! request, how many requests it won recently, and the online users. A server that does not
//! answer shows as DOWN. `--once` prints one table and exits. `--web ADDR` serves the same as a
//! live page instead, with buttons for the operator's commands (see `client::web::dashboard`).

use client::cloud::Cloud;
use client::rundir::RunDir;
use client::status::{render, rows};
use client::web::dashboard::Dashboard;
use client::web::http::Limits;
use client::web::server::WebServer;
use common::args::{usage, Args, Opt};
use common::config::{ClusterConfig, EXIT_USAGE};
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const OPTS: &[Opt] = &[
    Opt { name: "config", value: Some("FILE"), default: "cluster.json", help: "cluster configuration" },
    Opt { name: "once", value: None, default: "", help: "print one table and exit" },
    Opt { name: "every-ms", value: Some("MS"), default: "1000", help: "refresh interval" },
    Opt { name: "wait-ms", value: Some("MS"), default: "500", help: "how long to wait for the servers' answers" },
    Opt {
        name: "web",
        value: Some("ADDR"),
        default: "",
        help: "serve the dashboard page on ADDR (e.g. 127.0.0.1:7300, or a port) instead of printing",
    },
    Opt {
        name: "run-dir",
        value: Some("DIR"),
        default: "",
        help: "run.sh's run folder: the page can kill and restart",
    },
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
    if let Some(addr) = args.get("web") {
        let run = args.get("run-dir").map(RunDir::new);
        web(&cfg, cfg_path, addr, run, Duration::from_millis(every), Duration::from_millis(wait));
    }
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

/// `--web ADDR`: the dashboard on ADDR (a bare port is on 127.0.0.1), until killed.
fn web(cfg: &ClusterConfig, cfg_path: &str, addr: &str, run: Option<RunDir>, every: Duration, wait: Duration) -> ! {
    let addr: SocketAddr = client::web::server::parse_addr(addr).unwrap_or_else(|e| fail(&e));
    let server = WebServer::bind(addr, Limits::default()).unwrap_or_else(|e| {
        eprintln!("status: {e}");
        std::process::exit(1)
    });
    let dashboard = Arc::new(Dashboard::new(cfg, cfg_path, run));
    if !addr.ip().is_loopback() {
        eprintln!(
            "status: the dashboard listens on {addr}, beyond this machine: whoever has its URL (with the token) can \
             take servers down"
        );
    }
    if let Some(why) = dashboard.no_operator() {
        eprintln!("status: the page shows the cluster but its buttons will not work: {why}");
    }
    println!("dashboard: {}", server.url("/"));
    let _ = std::io::stdout().flush();
    let poller = dashboard.clone();
    std::thread::spawn(move || {
        if let Err(e) = poller.poll(every, wait) {
            eprintln!("status: {e}");
            std::process::exit(1);
        }
    });
    server.serve(Arc::new(move |req| dashboard.handle(req)));
    std::process::exit(1)
}
