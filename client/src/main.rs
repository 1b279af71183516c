//! The client binary: sign in, then read commands from stdin, one per line.

use client::commands::Session;
use common::args::{usage, Args, Opt};
use common::config::{ClusterConfig, EXIT_USAGE};
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const OPTS: &[Opt] = &[
    Opt { name: "name", value: Some("NAME"), default: "", help: "your user name (required; registered on first run)" },
    Opt { name: "config", value: Some("FILE"), default: "cluster.json", help: "cluster configuration" },
    Opt { name: "data", value: Some("DIR"), default: "<data_dir>/client-NAME", help: "this client's data folder" },
];

const ABOUT: &str = "A client of the image cloud. Type `help` at the prompt for its commands.";

fn fail(msg: &str) -> ! {
    eprintln!("client: {msg}");
    std::process::exit(EXIT_USAGE)
}

fn main() {
    let args = match Args::parse(std::env::args().skip(1), OPTS) {
        Ok(a) => a,
        Err(None) => {
            print!("{}", usage("client", ABOUT, OPTS));
            return;
        }
        Err(Some(e)) => fail(&e),
    };
    let Some(name) = args.get("name").map(String::from) else { fail("--name is required (see --help)") };
    if let Err(e) = common::names::check_user(&name) {
        fail(&format!("--name: {e}"));
    }
    let cfg_path = args.get("config").unwrap_or("cluster.json");
    let cfg = ClusterConfig::load(Path::new(cfg_path)).unwrap_or_else(|e| fail(&e));
    let data =
        args.get("data").map(PathBuf::from).unwrap_or_else(|| Path::new(&cfg.data_dir).join(format!("client-{name}")));
    let session = match Session::start(&cfg, &name, data) {
        Ok(s) => s,
        Err(e) => {
            println!("error: cannot sign in: {e}");
            std::process::exit(1);
        }
    };
    println!("ok: signed in as {} (user {})", session.me.name, session.me.user_id);
    let session = Arc::new(parking_lot::Mutex::new(session));
    let on_ctrlc = session.clone();
    let _ = ctrlc::set_handler(move || {
        if let Some(mut s) = on_ctrlc.try_lock_for(std::time::Duration::from_secs(2)) {
            s.sign_out();
        }
        println!("\nok: signed out, bye");
        std::process::exit(0);
    });
    let interactive = std::io::stdin().is_terminal();
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        if interactive {
            print!("{name}> ");
            let _ = std::io::stdout().flush();
        }
        let Some(Ok(line)) = lines.next() else {
            session.lock().sign_out();
            return;
        };
        let out = session.lock().run(&line);
        for l in out.lines {
            println!("{l}");
        }
        let _ = std::io::stdout().flush();
        if out.quit {
            return;
        }
    }
}
