//! The client binary: sign in, then read commands from stdin, one per line.

use client::cloud::Cloud;
use client::commands::Session;
use common::args::{usage, Args, Opt};
use common::config::{ClusterConfig, EXIT_USAGE};
use common::protocol::Op;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Longest Ctrl-C waits for the cloud to record the sign-out.
const SIGN_OUT_WAIT: Duration = Duration::from_secs(3);

const OPTS: &[Opt] = &[
    Opt { name: "name", value: Some("NAME"), default: "", help: "your user name (required; registered on first run)" },
    Opt { name: "config", value: Some("FILE"), default: "cluster.json", help: "cluster configuration" },
    Opt { name: "data", value: Some("DIR"), default: "<data_dir>/client-NAME", help: "this client's data folder" },
    Opt {
        name: "web",
        value: Some("ADDR"),
        default: "",
        help: "also serve your page on ADDR (e.g. 127.0.0.1:0, or a port)",
    },
];

const ABOUT: &str = "A client of the image cloud. Type `help` at the prompt for its commands.";

fn fail(msg: &str) -> ! {
    eprintln!("client: {msg}");
    std::process::exit(EXIT_USAGE)
}

// Long on purpose: the start-up sequence (arguments, config, sign-in, the prompt loop) in order.
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
    // Held until the process ends: a second client of this folder is refused.
    let _folder = client::store::lock_folder(&data).unwrap_or_else(|e| {
        println!("error: cannot sign in: {e}");
        std::process::exit(1)
    });
    let session = match Session::start(&cfg, &name, data) {
        Ok(s) => s,
        Err(e) => {
            println!("error: cannot sign in: {e}");
            std::process::exit(1);
        }
    };
    println!("ok: signed in as {} (user {})", session.me.name, session.me.user_id);
    let me = session.me.clone();
    let session = Arc::new(parking_lot::Mutex::new(session));
    if let Some(addr) = args.get("web") {
        // The user's page, on the same session as the prompt (see client::web::user).
        match client::web::user::start(session.clone(), addr) {
            Ok(url) => println!("web: {url}"),
            Err(e) => {
                session.lock().sign_out();
                fail(&e)
            }
        }
    }
    let _ = ctrlc::set_handler(move || {
        // The prompt may be waiting on the cloud: sign out from a socket of our own.
        let op = Op::SignOut { name: me.name.clone(), auth: Default::default() };
        let signed_out = Cloud::connect(&cfg, None).and_then(|mut c| {
            c.set_secret(me.secret_bytes());
            c.call_within(op, None, Some(SIGN_OUT_WAIT))
        });
        match signed_out {
            Ok(r) if r.reply.result.is_ok() => println!("\nok: signed out, bye"),
            Ok(r) => println!("\nerror: sign-out refused: {}", r.reply.result.err().unwrap_or_default()),
            Err(e) => println!("\nerror: could not sign out: {e}"),
        }
        let _ = std::io::stdout().flush();
        std::process::exit(0);
    });
    let interactive = std::io::stdin().is_terminal();
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        if interactive {
            client::notice::show_prompt(&format!("{name}> "));
        }
        let next = lines.next();
        client::notice::prompt_taken();
        let Some(Ok(line)) = next else {
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
