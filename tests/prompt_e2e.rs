//! The prompt and the demo as people use them, with the real binaries: a second `./run.sh`
//! while a cluster runs is refused and leaves that cluster (and its control files) alone; a
//! second client of one data folder is refused, naming the running one, and a client killed by
//! SIGKILL leaves no lock behind; a client whose servers all die prints nothing on its own but
//! `notice:` lines; and the servers count the clients' background requests apart from the
//! users' ones.

mod support;

use client::cloud::Cloud;
use client::launch::{sibling_binary, Cluster};
use common::config::ClusterConfig;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};
use support::{cluster, ensure_built, test_dir, ClientProc};

/// How many servers of `cfg` answer a status probe.
fn answering(cfg: &ClusterConfig) -> usize {
    Cloud::connect(cfg, None).map(|mut c| c.statuses(Duration::from_millis(500)).len()).unwrap_or(0)
}

/// Waits (at most `timeout`) until `ok` holds.
fn wait_until(timeout: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    ok()
}

/// `./run.sh ARGS` with the config and control folder of a test, in a process group of its own.
fn run_sh(config: &Path, run_dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg("run.sh").args(args).env("CONFIG", config).env("RUN_DIR", run_dir).stdin(Stdio::null());
    cmd
}

/// A `./run.sh` cluster, stopped as Ctrl-C in its terminal would (SIGINT to its process group).
struct RunSh(Child);

impl Drop for RunSh {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill").args(["-INT", "--", &group]).status();
        let stopped = wait_until(Duration::from_secs(20), || matches!(self.0.try_wait(), Ok(Some(_))));
        if !stopped {
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        }
        let _ = self.0.wait();
    }
}

#[test]
fn a_second_run_sh_is_refused_and_leaves_the_running_cluster_alone() {
    ensure_built();
    let dir = test_dir("runsh-twice");
    let c = Cluster::new(&dir, 3, |_| {}).expect("config");
    let run_dir = dir.join("run");
    let log = std::fs::File::create(dir.join("run.out")).expect("log");
    let mut first = run_sh(&c.config_path, &run_dir, &["--slow-ms", "1"]);
    first.stdout(log.try_clone().expect("log")).stderr(log).process_group(0);
    let first = RunSh(first.spawn().expect("run.sh starts"));
    let out = || std::fs::read_to_string(dir.join("run.out")).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(120), || out().contains("started servers 1 2 3")),
        "the server options are passed on and the cluster starts: {}",
        out()
    );
    assert_eq!(answering(&c.cfg), 3);
    let fifo = run_dir.join("server-2.ctl");
    let before = std::fs::metadata(&fifo).ok().map(|m| m.ino());

    let second = run_sh(&c.config_path, &run_dir, &[]).output().expect("run.sh runs");
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "refused: {said}");
    assert!(said.contains("a cluster is already running") && said.contains("left alone"), "{said}");
    assert!(!String::from_utf8_lossy(&second.stdout).contains("started"), "nothing started");
    // Another control folder, the same addresses: the servers answering give it away.
    let third = run_sh(&c.config_path, &dir.join("run-other"), &[]).output().expect("run.sh runs");
    let said = String::from_utf8_lossy(&third.stderr);
    assert!(!third.status.success() && said.contains("servers 1 2 3 of"), "{said}");

    // The first cluster is intact: every server answers, its control files were not replaced.
    assert_eq!(answering(&c.cfg), 3, "the first cluster still answers");
    if let Some(inode) = before {
        let now = std::fs::metadata(&fifo).expect("the control file is still there");
        assert!(now.file_type().is_fifo() && now.ino() == inode, "the control file was not replaced");
        std::fs::write(&fifo, "status\n").expect("the control file takes a command");
        assert!(
            wait_until(Duration::from_secs(20), || out().contains("[server 2] server 2 — up")),
            "server 2 answered its control file: {}",
            out()
        );
    }
    assert!(!out().contains("Address already in use"), "{}", out());
    drop(first);
    let _ = std::fs::remove_dir_all(dir);
}

/// A client process with both output streams read, line by line, in order of arrival.
struct Watched {
    child: Child,
    lines: Receiver<(&'static str, String)>,
    seen: Vec<(&'static str, String)>,
}

impl Watched {
    fn start(c: &Cluster, name: &str) -> Watched {
        let mut child = Command::new(sibling_binary("client").expect("client binary"))
            .args(["--name", name, "--config"])
            .arg(&c.config_path)
            .arg("--data")
            .arg(c.dir.join(format!("client-{name}")))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("client starts");
        let (tx, rx) = channel();
        let out: Box<dyn Read + Send> = Box::new(child.stdout.take().expect("stdout"));
        let err: Box<dyn Read + Send> = Box::new(child.stderr.take().expect("stderr"));
        for (stream, r) in [("stdout", out), ("stderr", err)] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(r).lines().map_while(Result::ok) {
                    if tx.send((stream, line)).is_err() {
                        return;
                    }
                }
            });
        }
        Watched { child, lines: rx, seen: vec![] }
    }

    /// Reads lines for `wait`, or until one contains `what`; true if one did.
    fn read_until(&mut self, what: &str, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let found = l.1.contains(what);
                    self.seen.push(l);
                    if found {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
        false
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_client_that_loses_its_servers_prints_only_notices_by_itself() {
    let mut c = cluster("prompt-notices", 3);
    let mut alice = Watched::start(&c, "alice");
    assert!(alice.read_until("ok: signed in", Duration::from_secs(20)), "{:?}", alice.seen);
    // The engine pulls the inbox 5 s after it starts: kill the servers 3 s in, so that pull
    // starts while the servers are gone and fails after the watch has declared the cloud lost.
    std::thread::sleep(Duration::from_secs(3));
    c.kill_all();
    assert!(alice.read_until("notice: lost the cloud", Duration::from_secs(30)), "{:?}", alice.seen);
    alice.read_until("no line expected", Duration::from_secs(8));
    c.start_all().expect("restart");
    c.wait_ready(Duration::from_secs(20)).expect("ready");
    assert!(alice.read_until("notice: the cloud is back", Duration::from_secs(30)), "{:?}", alice.seen);
    alice.read_until("no line expected", Duration::from_secs(4));
    // No command was typed: every line after the sign-in, on either stream, is a notice.
    let by_itself: Vec<&(&str, String)> =
        alice.seen.iter().skip_while(|(_, l)| !l.starts_with("ok: signed in")).skip(1).collect();
    let strays: Vec<_> = by_itself.iter().filter(|(_, l)| !l.starts_with("notice: ")).collect();
    assert!(strays.is_empty(), "lines printed without `notice:`: {strays:?} (all: {:?})", alice.seen);
}

/// The requests won by all the servers: (users' requests, background requests).
fn counters(cfg: &ClusterConfig) -> (u64, u64) {
    let mut cloud = Cloud::connect(cfg, None).expect("connect");
    loop {
        let st = cloud.statuses(Duration::from_millis(500));
        if st.len() == cfg.servers.len() {
            return st
                .values()
                .fold((0, 0), |(u, b), s| (u + s.handled.saturating_sub(s.background), b + s.background));
        }
    }
}

#[test]
fn one_data_folder_serves_one_client_and_background_requests_are_counted_apart() {
    let c = cluster("prompt-folder", 3);
    let mut alice = ClientProc::start(&c, "alice");
    assert!(alice.result(Duration::from_secs(20)).unwrap_or_default().starts_with("ok: signed in"));

    // Idle after registering: the sign-in and the inbox pulls are background, the register is
    // the only request of a user.
    assert!(
        wait_until(Duration::from_secs(30), || counters(&c.cfg).1 >= 2),
        "a sign-in and an inbox pull: {:?}",
        counters(&c.cfg)
    );
    assert_eq!(counters(&c.cfg).0, 1, "only the registration counts as a user's");
    let line = alice.run("peers");
    assert!(line.starts_with("ok:"), "{line}");
    assert!(counters(&c.cfg).0 >= 2, "a command counts as a user's: {:?}", counters(&c.cfg));
    let table = support::status_once(&c.config_path);
    assert!(table.contains("background") && table.contains("won total"), "{table}");

    // The same name again, from the same folder: refused, naming the running client.
    let mut twin = ClientProc::start(&c, "alice");
    let line = twin.result(Duration::from_secs(20)).unwrap_or_default();
    assert!(line.starts_with("error: cannot sign in: the data folder"), "{line}");
    assert!(line.contains(&format!("in use by another client (pid {})", alice.child.id())), "{line}");
    assert_eq!(twin.wait_exit(Duration::from_secs(20)), Some(1), "the second client exits non-zero");
    let line = alice.run("whoami");
    assert!(line.starts_with("ok:"), "the first one is still signed in: {line}");

    // A client killed by SIGKILL leaves no lock behind.
    alice.kill();
    let mut again = ClientProc::start(&c, "alice");
    let line = again.result(Duration::from_secs(20)).unwrap_or_default();
    assert!(line.starts_with("ok: signed in as alice"), "{line}");
    again.finish();
}
