//! The client binary: sign in, then read commands from stdin, one per line: on a terminal through
//! a line editor (arrows, history, notices above the line being typed), else plain lines.

use client::cloud::Cloud;
use client::commands::Session;
use common::args::{usage, Args, Opt};
use common::config::{ClusterConfig, EXIT_USAGE};
use common::protocol::Op;
use rustyline::ExternalPrinter as _;
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
    println!("{}", session.greeting());
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
    // Line editing only when a person types at a terminal and sees it: output to a pipe or a
    // file gets no prompt and no escape codes.
    if std::io::stdin().is_terminal() && std::io::stdout().is_terminal() {
        prompt_loop(&session, &name);
    } else {
        piped_loop(&session);
    }
}

/// Runs one line and prints its output; true when the prompt should end.
fn run_line(session: &parking_lot::Mutex<Session>, line: &str) -> bool {
    let out = session.lock().run(line);
    let mut stdout = std::io::stdout().lock();
    for l in out.lines {
        let _ = writeln!(stdout, "{l}");
    }
    let _ = stdout.flush();
    out.quit
}

/// Commands from a pipe or file: no prompt, no editing, no history, only the commands' lines.
fn piped_loop(session: &parking_lot::Mutex<Session>) {
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if run_line(session, &line) {
            return;
        }
    }
    // End of input signs out as `quit` does.
    session.lock().sign_out();
    println!("ok: signed out, bye");
}

/// Commands typed on a terminal: the line editor (arrows, history kept in the data folder's
/// `history.txt`, owner-only), notices printed above the line being typed.
fn prompt_loop(session: &parking_lot::Mutex<Session>, name: &str) {
    let config = rustyline::Config::builder().auto_add_history(false).max_history_size(HISTORY_LINES);
    let config = config.and_then(|c| c.history_ignore_dups(true)).map(|c| c.build());
    let mut editor = match config.and_then(rustyline::DefaultEditor::with_config) {
        Ok(e) => e,
        Err(e) => {
            println!("error: no line editing on this terminal ({e}); reading plain lines");
            return piped_loop(session);
        }
    };
    let history = session.lock().store.root().join("history.txt");
    let _ = editor.load_history(&history);
    if let Ok(mut printer) = editor.create_external_printer() {
        client::notice::use_printer(Box::new(move |text| printer.print(text).map_err(|e| e.to_string())));
    }
    let prompt = format!("{name}> ");
    loop {
        let line = match editor.readline(&prompt) {
            Ok(line) => line,
            Err(rustyline::error::ReadlineError::Interrupted) => {
                // Ctrl-C at the prompt: signed out as the Ctrl-C handler does while a command runs.
                session.lock().sign_out();
                println!("ok: signed out, bye");
                return;
            }
            Err(_) => break,
        };
        if !line.trim().is_empty() && editor.add_history_entry(line.as_str()).unwrap_or(false) {
            save_history(&mut editor, &history);
        }
        client::notice::set_size(editor.dimensions());
        if run_line(session, &line) {
            return;
        }
    }
    // End of input (Ctrl-D) signs out as `quit` does, on a line of its own.
    session.lock().sign_out();
    println!("\nok: signed out, bye");
}

/// Lines of history kept.
const HISTORY_LINES: usize = 1000;

/// Appends the new history line to `path`, readable by the owner only.
fn save_history(editor: &mut rustyline::DefaultEditor, path: &Path) {
    if let Err(e) = editor.append_history(path) {
        client::notice::notice(&format!("history not saved: {e}"));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    }
}
