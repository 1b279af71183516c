//! Helpers shared by the end-to-end tests: build the binaries once, start a cluster in a
//! folder of its own (distinct free ports, so tests run in parallel), drive real client
//! processes through their stdin and read their `ok:`/`error:` lines.

#![allow(dead_code)]

pub mod lab;
pub mod web;

use client::launch::{sibling_binary, Cluster};
use common::config::ClusterConfig;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The `status --once` table for the cluster of `config` (the binary must succeed).
pub fn status_once(config: &std::path::Path) -> String {
    let out = Command::new(sibling_binary("status").expect("status"))
        .args(["--once", "--config"])
        .arg(config)
        .output()
        .expect("status runs");
    assert!(out.status.success(), "status --once failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `f` every 100 ms until it is true or `timeout` passes; whether it became true.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !f() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    true
}

/// Builds the server, client and bench binaries once per test process, in this profile.
pub fn ensure_built() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let release =
            std::env::current_exe().map(|p| p.components().any(|c| c.as_os_str() == "release")).unwrap_or(false);
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-q", "-p", "server", "-p", "client", "--bins"]);
        if release {
            cmd.arg("--release");
        }
        let st = cmd.status().expect("cargo runs");
        assert!(st.success(), "building the binaries failed");
    });
}

/// A fresh folder for one test.
pub fn test_dir(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("imgcloud-e2e-{name}-{}", std::process::id()))
}

/// A started, ready cluster of `n` servers.
pub fn cluster(name: &str, n: u32) -> Cluster {
    cluster_with(name, n, |_| {}, &[])
}

/// A started, ready cluster of `n` servers with a tweaked config and extra server arguments
/// (covers come from the repository's `images/`).
pub fn cluster_with(name: &str, n: u32, tweak: impl FnOnce(&mut ClusterConfig), server_args: &[&str]) -> Cluster {
    ensure_built();
    let mut c = Cluster::new(&test_dir(name), n, |cfg| {
        cfg.images_dir = std::fs::canonicalize("images").map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
        tweak(cfg);
    })
    .expect("cluster config");
    for id in c.cfg.ids() {
        c.set_args(id, server_args.iter().map(|a| a.to_string()).collect());
    }
    c.start_all().expect("servers start");
    c.wait_ready(Duration::from_secs(20)).expect("cluster ready");
    c
}

/// A client process driven through its stdin.
pub struct ClientProc {
    /// The process.
    pub child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    /// Every line it printed so far.
    pub seen: Vec<String>,
}

impl ClientProc {
    /// Starts `client --name NAME` against the cluster, with its data folder in the test folder.
    pub fn start(cluster: &Cluster, name: &str) -> ClientProc {
        ClientProc::start_with(cluster, name, &[])
    }

    /// Starts `client --name NAME` with `extra` arguments (`--web ADDR`).
    pub fn start_with(cluster: &Cluster, name: &str, extra: &[&str]) -> ClientProc {
        ensure_built();
        let bin = sibling_binary("client").expect("client binary");
        let mut child = Command::new(bin)
            .args(["--name", name, "--config"])
            .arg(&cluster.config_path)
            .arg("--data")
            .arg(cluster.dir.join(format!("client-{name}")))
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("client starts");
        let stdout = child.stdout.take().expect("stdout");
        let stdin = child.stdin.take();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        ClientProc { child, stdin, lines: rx, seen: vec![] }
    }

    /// Sends one or more command lines.
    pub fn send(&mut self, cmds: &str) {
        if let Some(s) = self.stdin.as_mut() {
            s.write_all(cmds.as_bytes()).expect("client stdin");
            if !cmds.ends_with('\n') {
                s.write_all(b"\n").expect("client stdin");
            }
            s.flush().expect("flush");
        }
    }

    /// Waits for the next `ok:` or `error:` line (other lines are kept in `seen`).
    pub fn result(&mut self, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let line = self.lines.recv_timeout(left).ok()?;
            self.seen.push(line.clone());
            if line.starts_with("ok:") || line.starts_with("error:") {
                return Some(line);
            }
        }
    }

    /// Waits for a line containing `what` (seen before or arriving within `timeout`).
    pub fn wait_for(&mut self, what: &str, timeout: Duration) -> Option<String> {
        if let Some(l) = self.seen.iter().find(|l| l.contains(what)) {
            return Some(l.clone());
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let line = self.lines.recv_timeout(left).ok()?;
            self.seen.push(line.clone());
            if line.contains(what) {
                return Some(line);
            }
        }
    }

    /// Sends SIGINT, as Ctrl-C in its terminal would.
    pub fn interrupt(&self) {
        let st = Command::new("kill").arg("-INT").arg(self.child.id().to_string()).status().expect("kill runs");
        assert!(st.success(), "kill -INT failed");
    }

    /// Waits for the process to exit; its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Runs one command and returns its result line.
    pub fn run(&mut self, cmd: &str) -> String {
        self.send(cmd);
        self.result(Duration::from_secs(30)).unwrap_or_else(|| panic!("no answer to {cmd:?}; saw {:?}", self.seen))
    }

    /// Closes stdin, as Ctrl-D at the prompt does (its lines can still be read).
    pub fn end_input(&mut self) {
        self.stdin.take();
    }

    /// Runs one command that must succeed; its `ok:` line.
    pub fn ok(&mut self, cmd: &str) -> String {
        let line = self.run(cmd);
        assert!(line.starts_with("ok:"), "{cmd}: {line}; saw {:?}", self.seen);
        line
    }

    /// Closes stdin (the client signs out and exits) and waits.
    pub fn finish(mut self) {
        self.stdin.take();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
    }

    /// SIGKILLs the client (no sign-out).
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ClientProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Registers `name` through `cloud` and makes the cloud sign with its secret; returns the secret.
#[allow(dead_code)]
pub fn register(cloud: &mut client::cloud::Cloud, name: &str) -> Vec<u8> {
    let r = cloud.call(common::protocol::Op::Register { name: name.into() }, None).expect("register answered");
    let Ok(common::protocol::Answer::Registered { secret, .. }) = r.reply.result else {
        panic!("register {name}: {:?}", r.reply.result)
    };
    let secret = common::auth::secret_bytes(&secret);
    cloud.set_secret(secret.clone());
    secret
}

/// `image` sealed under `owner`'s own-image key, as the client uploads it for `encrypt`.
#[allow(dead_code)]
pub fn seal_own(secret: &[u8], owner: &str, image: &[u8]) -> Vec<u8> {
    let key = common::crypto::derive(secret, common::crypto::Purpose::Own);
    common::crypto::seal(&key, &common::auth::own_image_aad(owner), image)
}

/// An `encrypt` request of `owner` for `len` bytes (signed by the cloud link).
#[allow(dead_code)]
pub fn encrypt_op(owner: &str, len: usize) -> common::protocol::Op {
    common::protocol::Op::Encrypt { owner: owner.into(), auth: Default::default(), len: len as u64 }
}

/// Runs `cmd`, which must end with an `ok:` line; returns it.
pub fn ok(c: &mut ClientProc, cmd: &str) -> String {
    c.ok(cmd)
}

/// Waits (20 s at most) until a `notice:` line containing `what` shows up; `stats`, a harmless
/// command, lets us read whatever the client printed meanwhile.
pub fn notice(c: &mut ClientProc, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if c.seen.iter().any(|l| l.starts_with("notice:") && l.contains(what)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
        c.run("stats");
    }
    let notices: Vec<&String> = c.seen.iter().filter(|l| l.starts_with("notice:")).collect();
    panic!("no notice containing {what:?}; saw {notices:?}");
}

/// Whether tmux is installed (the terminal tests skip without it).
pub fn tmux_available() -> bool {
    Command::new("tmux").arg("-V").output().map(|o| o.status.success()).unwrap_or(false)
}

/// A client in a tmux pane: a real terminal of a given size, typed into with `send-keys` and
/// read with `capture-pane`. Its tmux server (a socket in the cluster's folder, so no other
/// tmux is touched) is killed on drop, and the client with it.
pub struct TmuxClient {
    sock: PathBuf,
    /// The tmux session (named after the user).
    pub target: String,
}

impl TmuxClient {
    /// Starts `client --name NAME` against the cluster in a detached `cols` × `rows` pane.
    pub fn start(cluster: &Cluster, name: &str, cols: u16, rows: u16) -> TmuxClient {
        ensure_built();
        let bin = sibling_binary("client").expect("client binary");
        let t = TmuxClient { sock: cluster.dir.join(format!("tmux-{name}.sock")), target: name.to_string() };
        let data = cluster.dir.join(format!("client-{name}"));
        let out = t.tmux(&[
            "new-session",
            "-d",
            "-s",
            name,
            "-x",
            &cols.to_string(),
            "-y",
            &rows.to_string(),
            "--",
            &bin.to_string_lossy(),
            "--name",
            name,
            "--config",
            &cluster.config_path.to_string_lossy(),
            "--data",
            &data.to_string_lossy(),
        ]);
        assert!(out.status.success(), "tmux new-session: {}", String::from_utf8_lossy(&out.stderr));
        t
    }

    fn tmux(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux").arg("-S").arg(&self.sock).args(args).output().expect("tmux runs")
    }

    /// Types `text` literally (no Enter).
    pub fn type_text(&self, text: &str) {
        self.tmux(&["send-keys", "-t", &self.target, "-l", text]);
    }

    /// Presses a key by its tmux name (`Enter`, `Up`, `C-u`).
    pub fn key(&self, key: &str) {
        self.tmux(&["send-keys", "-t", &self.target, key]);
    }

    /// The pane and its scrollback as text, wrapped lines joined (`-J`); with `colours`, with
    /// the escape sequences of colours (`-e`).
    pub fn screen(&self, colours: bool) -> String {
        let mut args = vec!["capture-pane", "-p", "-J", "-S", "-1000", "-t", &self.target];
        if colours {
            args.push("-e");
        }
        String::from_utf8_lossy(&self.tmux(&args).stdout).into_owned()
    }

    /// Waits (at most `timeout`) until the screen text satisfies `ok`; that screen, or a panic
    /// showing the last one.
    pub fn wait_screen(&self, what: &str, timeout: Duration, ok: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        let seen = wait_until(timeout, || {
            last = self.screen(false);
            ok(&last)
        });
        assert!(seen, "{}: waited for {what}; the pane shows:\n{last}", self.target);
        last
    }

    /// Resizes the pane's window to `cols` × `rows`.
    pub fn resize(&self, cols: u16, rows: u16) {
        let out = self.tmux(&["resize-window", "-t", &self.target, "-x", &cols.to_string(), "-y", &rows.to_string()]);
        assert!(out.status.success(), "tmux resize-window: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Whether the client still runs in its pane.
    pub fn alive(&self) -> bool {
        self.tmux(&["has-session", "-t", &self.target]).status.success()
    }
}

impl Drop for TmuxClient {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
        let _ = std::fs::remove_file(&self.sock);
    }
}

/// The last line of a screen that is not blank (the line being typed, on a prompt), without
/// trailing spaces.
pub fn last_line(screen: &str) -> &str {
    screen.lines().map(str::trim_end).rev().find(|l| !l.is_empty()).unwrap_or("")
}
