//! The prompt's messages say what happened, with the real binaries: the first run says it
//! registered the name; a missing argument answers the command's usage and a near-miss the
//! command meant; commands are case-insensitive (their arguments are not); zero views are
//! refused for `request` and `more`; a request for more views reads as such and its approval
//! says how many views the viewer has now; counts agree with their nouns; approving to an
//! offline viewer says why not and keeps the request; Ctrl-D signs out as `quit` does. And
//! `./run.sh` names each server once on each of its log lines.

mod support;

use client::launch::Cluster;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::{cluster, ensure_built, test_dir, wait_until, ClientProc};

const WAIT: Duration = Duration::from_secs(30);

/// The first line of a client: signed in.
fn greeting(c: &mut ClientProc) -> String {
    c.result(WAIT).unwrap_or_else(|| panic!("no sign-in line; saw {:?}", c.seen))
}

fn ok(c: &mut ClientProc, cmd: &str) -> String {
    let line = c.run(cmd);
    assert!(line.starts_with("ok:"), "{cmd:?} -> {line}; saw {:?}", c.seen);
    line
}

fn err(c: &mut ClientProc, cmd: &str) -> String {
    let line = c.run(cmd);
    assert!(line.starts_with("error:"), "{cmd:?} -> {line}; saw {:?}", c.seen);
    line
}

/// The lines `cmd` printed before its `ok:` line.
fn listed(c: &mut ClientProc, cmd: &str) -> (String, Vec<String>) {
    let from = c.seen.len();
    let line = ok(c, cmd);
    let out = c.seen[from..].iter().filter(|l| l.starts_with("  ")).cloned().collect();
    (line, out)
}

fn notice(c: &mut ClientProc, what: &str) -> String {
    c.wait_for(what, WAIT).unwrap_or_else(|| panic!("no line containing {what:?}; saw {:?}", c.seen))
}

/// Closes the client's input (Ctrl-D): its last line says it signed out; it exits.
fn ctrl_d(mut c: ClientProc) {
    c.end_input();
    let line = c.result(WAIT).unwrap_or_default();
    assert_eq!(line, "ok: signed out, bye", "saw {:?}", c.seen);
    assert_eq!(c.wait_exit(WAIT), Some(0), "the client exits after end of input");
}

#[test]
fn the_prompt_says_what_happened() {
    let c = cluster("prompt-msgs", 3);
    let mut alice = ClientProc::start(&c, "alice");
    let first = greeting(&mut alice);
    assert!(first.starts_with("ok: signed in as alice (user ") && first.contains("registered just now"), "{first}");
    let mut bob = ClientProc::start(&c, "bob");
    let first = greeting(&mut bob);
    assert!(first.starts_with("ok: signed in as bob") && first.contains("registered"), "{first}");

    // A missing argument answers the command's usage; a near-miss names the command meant.
    assert!(err(&mut alice, "encrypt").starts_with("error: usage: encrypt PATH — hide an image"));
    assert!(err(&mut alice, "view").starts_with("error: usage: view IMAGE — "));
    assert!(err(&mut alice, "approve").starts_with("error: usage: approve N [VIEWS] — "));
    assert!(err(&mut bob, "request alice").starts_with("error: usage: request USER IMAGE VIEWS — "));
    assert!(err(&mut alice, "whoami now").starts_with("error: usage: whoami — "));
    let typo = err(&mut alice, "encrpyt images/sample-10k.jpg");
    assert_eq!(typo, "error: unknown command \"encrpyt\": did you mean encrypt?");
    assert_eq!(err(&mut alice, "frobnicate"), "error: unknown command \"frobnicate\" (try help)");
    // Case-insensitive commands; the path keeps its case (a changed one would not be found).
    assert!(ok(&mut alice, "ENCRYPT images/sample-10k.jpg").starts_with("ok: encrypted as sample-10k"));
    assert_eq!(ok(&mut alice, "Images"), "ok: 1 image");
    assert_eq!(ok(&mut alice, "requests"), "ok: 0 requests");

    // Zero views are refused for `request` and `more`, as a negative number is.
    let zero = err(&mut bob, "request alice sample-10k 0");
    let negative = err(&mut bob, "request alice sample-10k -1");
    assert!(
        zero.contains("not a number of views") && negative.contains("not a number of views"),
        "{zero} / {negative}"
    );
    assert!(err(&mut bob, "more alice sample-10k 0").contains("not a number of views"));
    ok(&mut bob, "request alice sample-10k 1");
    notice(&mut alice, "notice: bob asks for sample-10k with 1 view: `approve 1` or `reject 1`");
    let (line, out) = listed(&mut alice, "requests");
    assert_eq!((line.as_str(), out), ("ok: 1 request", vec!["  #1 bob asks for sample-10k with 1 view".to_string()]));
    assert!(!alice.seen.iter().any(|l| l.contains("0 views")), "no request of 0 views arrived: {:?}", alice.seen);

    // bob leaves with Ctrl-D; approving to him while he is offline says why not and keeps #1.
    ctrl_d(bob);
    let off = err(&mut alice, "approve 1");
    assert_eq!(
        off,
        "error: bob is offline: the photo goes peer to peer, so approve again when bob is online \
         (the request stays as #1)"
    );
    assert_eq!(ok(&mut alice, "requests"), "ok: 1 request");

    // A later run only signs in.
    let mut bob = ClientProc::start(&c, "bob");
    let again = greeting(&mut bob);
    assert!(again.starts_with("ok: signed in as bob (user ") && !again.contains("registered"), "{again}");
    let sent = ok(&mut alice, "approve 1");
    assert!(sent.starts_with("ok: sample-10k sent to bob with 1 view: delivered"), "{sent}");
    notice(&mut bob, "notice: received sample-10k from alice with 1 view");
    let (line, out) = listed(&mut bob, "received");
    assert_eq!((line.as_str(), out), ("ok: 1 received image", vec!["  alice/sample-10k  1 view left".to_string()]));

    // More views: the owner reads how many more; approving says how many bob has now.
    ok(&mut bob, "more alice sample-10k 2");
    notice(&mut alice, "notice: bob asks for 2 more views of sample-10k: `approve 2` or `reject 2`");
    let (_, out) = listed(&mut alice, "requests");
    assert_eq!(out, ["  #2 bob asks for 2 more views of sample-10k"]);
    let more = ok(&mut alice, "approve 2");
    assert!(more.starts_with("ok: 2 more views of sample-10k for bob: bob has 3 views left"), "{more}");
    let line = ok(&mut bob, "VIEW sample-10k");
    assert!(line.contains("(2 views left)"), "{line}");
    let line = ok(&mut bob, "view sample-10k");
    assert!(line.contains("(1 view left)"), "{line}");
    let (line, out) = listed(&mut alice, "shared");
    assert!(line == "ok: 1 share" && out.len() == 1 && out[0].contains("sample-10k → bob: 3 views"), "{line} {out:?}");
    let one = ok(&mut alice, "grant bob sample-10k 1");
    assert!(one.contains("the cloud counts 1 view of sample-10k left for bob"), "{one}");
    notice(&mut bob, "notice: alice set sample-10k to 1 view");

    // A revoke says so, and that bob's copy goes when his client hears of it.
    let revoked = ok(&mut alice, "grant bob sample-10k 0");
    assert!(revoked.starts_with("ok: revoked: the cloud refuses bob any view of sample-10k"), "{revoked}");
    assert!(revoked.contains("bob's copy is deleted when bob's client hears of it"), "{revoked}");
    notice(&mut bob, "notice: alice revoked sample-10k: the copy is deleted");
    assert_eq!(ok(&mut bob, "received"), "ok: 0 received images");

    assert_eq!(ok(&mut alice, "Quit"), "ok: signed out, bye");
    assert_eq!(alice.wait_exit(WAIT), Some(0));
    ctrl_d(bob);
}

#[test]
fn run_sh_names_each_server_once_per_line() {
    ensure_built();
    let dir = test_dir("runsh-prefix");
    let c = Cluster::new(&dir, 1, |_| {}).expect("config");
    let mut cmd = Command::new("bash");
    cmd.arg("run.sh")
        .env("CONFIG", &c.config_path)
        .env("RUN_DIR", dir.join("run"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0);
    let mut child = cmd.spawn().expect("run.sh starts");
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut seen: Vec<String> = Vec::new();
    let started = wait_until(Duration::from_secs(120), || {
        seen.extend(rx.try_iter());
        seen.iter().any(|l| l.starts_with("started servers 1"))
            && seen.iter().any(|l| l.contains("listening for clients"))
    });
    // Stopped as Ctrl-C in its terminal would, before any assertion can fail.
    let _ = Command::new("kill").args(["-INT", "--", &format!("-{}", child.id())]).status();
    if !wait_until(Duration::from_secs(20), || matches!(child.try_wait(), Ok(Some(_)))) {
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", child.id())]).status();
    }
    let _ = child.wait();
    seen.extend(rx.try_iter());
    assert!(started, "the server started and logged: {seen:?}");
    let listening = seen.iter().find(|l| l.contains("listening for clients")).expect("a log line");
    assert_eq!(listening.matches("[server 1]").count(), 1, "{listening}");
    for l in seen.iter().filter(|l| l.contains("[server 1]")) {
        assert_eq!(l.matches("[server 1]").count(), 1, "each line names its server once: {l}");
    }
    let _ = std::fs::remove_dir_all(dir);
}
