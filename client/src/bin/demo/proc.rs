//! Real client processes driven by the demo through their stdin, their output read line by
//! line; the `status --web` dashboard on the demo's cluster; and the list of every child
//! process the demo started, so Ctrl-C can kill them all.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Set by Ctrl-C: every wait of the demo stops and the demo cleans up.
pub static STOP: AtomicBool = AtomicBool::new(false);

/// Process ids of the children running now.
static PIDS: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

/// How long a client command may take before the demo calls it a failure.
pub const COMMAND_WAIT: Duration = Duration::from_secs(30);

/// Records a child process the demo started.
pub fn register(pid: u32) {
    if let Ok(mut p) = PIDS.lock() {
        p.insert(pid);
    }
}

/// Forgets a child process (it was killed and reaped).
pub fn unregister(pid: u32) {
    if let Ok(mut p) = PIDS.lock() {
        p.remove(&pid);
    }
}

/// SIGKILLs every child still registered (the last resort of Ctrl-C).
pub fn kill_registered() {
    let pids: Vec<u32> = PIDS.lock().map(|p| p.iter().copied().collect()).unwrap_or_default();
    for pid in pids {
        let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
    }
}

/// Starts `cmd` (the program `bin`) with its stdout read line by line into the receiver and
/// its stderr discarded, and records it.
fn spawn_reading(cmd: &mut Command, bin: &Path) -> Result<(Child, Receiver<String>), String> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    register(child.id());
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    Ok((child, rx))
}

/// SIGKILLs and reaps a child, and forgets it.
fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
    unregister(child.id());
}

/// An error if Ctrl-C was pressed.
pub fn check_stop() -> Result<(), String> {
    if STOP.load(Ordering::Relaxed) {
        Err("interrupted (Ctrl-C)".into())
    } else {
        Ok(())
    }
}

/// Sleeps `d`, waking early on Ctrl-C.
pub fn pause(d: Duration) -> Result<(), String> {
    let end = Instant::now() + d;
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        check_stop()?;
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
    check_stop()
}

/// A client process.
pub struct Client {
    /// The user name.
    pub name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    /// Every line it printed so far.
    pub seen: Vec<String>,
}

impl Client {
    /// Starts `client --name NAME --config CONFIG --data DATA`.
    pub fn start(bin: &Path, config: &Path, data: &Path, name: &str) -> Result<Client, String> {
        let mut cmd = Command::new(bin);
        cmd.args(["--name", name, "--config"]).arg(config).arg("--data").arg(data).stdin(Stdio::piped());
        let (mut child, rx) = spawn_reading(&mut cmd, bin)?;
        let stdin = child.stdin.take();
        Ok(Client { name: name.into(), child, stdin, lines: rx, seen: vec![] })
    }

    /// Sends one command line.
    pub fn send(&mut self, cmd: &str) -> Result<(), String> {
        let stdin = self.stdin.as_mut().ok_or(format!("{}'s input is closed", self.name))?;
        writeln!(stdin, "{cmd}").and_then(|_| stdin.flush()).map_err(|e| format!("{} stopped: {e}", self.name))
    }

    /// The next line, or None at `deadline` (Ctrl-C is an error; so is the process ending).
    fn next_line(&mut self, deadline: Instant) -> Result<Option<String>, String> {
        loop {
            check_stop()?;
            let Some(left) = deadline.checked_duration_since(Instant::now()) else { return Ok(None) };
            match self.lines.recv_timeout(left.min(Duration::from_millis(100))) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    return Ok(Some(line));
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Err(format!("{}'s output ended", self.name)),
            }
        }
    }

    /// Waits for the next `ok:`/`error:` line; returns it with the other non-notice lines
    /// printed before it (the command's output).
    pub fn result(&mut self, timeout: Duration) -> Result<(String, Vec<String>), String> {
        let deadline = Instant::now() + timeout;
        let mut output = Vec::new();
        while let Some(line) = self.next_line(deadline)? {
            if line.starts_with("ok:") || line.starts_with("error:") {
                return Ok((line, output));
            }
            if !line.starts_with("notice:") {
                output.push(line);
            }
        }
        Err(format!("{} printed no ok:/error: line within {} s", self.name, timeout.as_secs()))
    }

    /// Takes in the lines printed so far without waiting (into `seen`).
    pub fn take_printed(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
    }

    /// Runs one command: its result line and output.
    pub fn run(&mut self, cmd: &str) -> Result<(String, Vec<String>), String> {
        self.send(cmd)?;
        self.result(COMMAND_WAIT)
    }

    /// Waits for a line containing `what`, printed already or within `timeout`.
    pub fn wait_for(&mut self, what: &str, timeout: Duration) -> Result<String, String> {
        if let Some(l) = self.seen.iter().find(|l| l.contains(what)) {
            return Ok(l.clone());
        }
        let deadline = Instant::now() + timeout;
        while let Some(line) = self.next_line(deadline)? {
            if line.contains(what) {
                return Ok(line);
            }
        }
        Err(format!("no line containing {what:?} from {} within {} s", self.name, timeout.as_secs()))
    }

    /// Waits for the process to exit after `quit`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            check_stop()?;
            if let Ok(Some(_)) = self.child.try_wait() {
                unregister(self.child.id());
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!("{} did not exit within {} s", self.name, timeout.as_secs()))
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// The `status --web` dashboard on the demo's cluster, stopped when dropped.
pub struct Dashboard {
    child: Child,
    /// Its URL (with its token), as it printed it.
    pub url: String,
}

impl Dashboard {
    /// Starts `status --config CONFIG --web ADDR` and waits for the URL it prints.
    pub fn start(bin: &Path, config: &Path, addr: &str, timeout: Duration) -> Result<Dashboard, String> {
        let mut cmd = Command::new(bin);
        cmd.arg("--config").arg(config).args(["--web", addr]).stdin(Stdio::null());
        let (child, rx) = spawn_reading(&mut cmd, bin)?;
        let mut dashboard = Dashboard { child, url: String::new() };
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            check_stop()?;
            match rx.recv_timeout(left.min(Duration::from_millis(100))) {
                Ok(line) => {
                    if let Some(url) = line.strip_prefix("dashboard: ") {
                        dashboard.url = url.trim().to_string();
                        return Ok(dashboard);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        Err(format!("the dashboard (status --web {addr}) printed no URL; is the address free?"))
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}
