//! A cluster started by `./run.sh`, seen through its run folder (`RUN_DIR`, default
//! `data/run`): per server, `server-N.pid` holds the running server's process id (written by
//! run.sh as it starts the server, removed when it exits) and `server-N.supervisor` the id of
//! the run.sh loop that starts it. Killing a server is a SIGKILL to its process; restarting it
//! is asking that loop (the file `server-N.restart`) and waiting for a new process. A process
//! id is trusted only if `/proc` shows a live `server --id N` under it (never a reused id).

use common::config::ServerId;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// How long a server has to stop after SIGINT before a restart SIGKILLs it.
pub const STOP_WAIT: Duration = Duration::from_secs(5);

/// The run folder of a cluster started by `./run.sh`.
#[derive(Debug, Clone)]
pub struct RunDir {
    dir: PathBuf,
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The command line of live (not zombie) process `pid`.
fn live_cmdline(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The state follows the command name in parentheses (which may hold spaces).
    let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start().chars().next())?;
    if matches!(state, Some('Z' | 'X') | None) {
        return None;
    }
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(raw.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect())
}

/// True if `args` is the command line of `server --id id`.
fn is_server(args: &[String], id: ServerId) -> bool {
    let bin = args.first().map(|a| Path::new(a).file_name().is_some_and(|n| n == "server")).unwrap_or(false);
    bin && args.windows(2).any(|w| w[0] == "--id" && w[1] == id.to_string())
}

fn signal(pid: u32, sig: &str) -> Result<(), String> {
    let st = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status();
    match st {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("kill -{sig} {pid} failed ({s})")),
        Err(e) => Err(format!("cannot run kill: {e}")),
    }
}

/// Waits up to `wait` for `done`, checking every 50 ms.
fn wait_until(wait: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl RunDir {
    /// The run folder `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> RunDir {
        RunDir { dir: dir.into() }
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn file(&self, id: ServerId, what: &str) -> PathBuf {
        self.dir.join(format!("server-{id}.{what}"))
    }

    /// The process id of server `id`, if it runs (started by run.sh).
    pub fn pid(&self, id: ServerId) -> Option<u32> {
        read_pid(&self.file(id, "pid")).filter(|pid| live_cmdline(*pid).is_some_and(|a| is_server(&a, id)))
    }

    /// True if a run.sh loop that can restart server `id` is running.
    pub fn supervised(&self, id: ServerId) -> bool {
        read_pid(&self.file(id, "supervisor")).is_some_and(|pid| live_cmdline(pid).is_some())
    }

    fn not_started(&self, id: ServerId) -> String {
        format!("server {id} was not started by ./run.sh with this run folder ({})", self.dir.display())
    }

    /// SIGKILLs server `id` (it vanishes without a word, as in a crash).
    pub fn kill(&self, id: ServerId) -> Result<String, String> {
        let Some(pid) = self.pid(id) else {
            return Err(if self.supervised(id) {
                format!("server {id} is not running (restart starts it)")
            } else {
                self.not_started(id)
            });
        };
        signal(pid, "KILL")?;
        wait_until(STOP_WAIT, || live_cmdline(pid).is_none());
        Ok(format!("server {id} (pid {pid}) killed with SIGKILL"))
    }

    /// Starts server `id` again through its run.sh loop (a running one is first stopped with
    /// SIGINT, as Ctrl-C would, and SIGKILLed if it is still there after [`STOP_WAIT`]); waits
    /// up to `wait` for the new process.
    pub fn restart(&self, id: ServerId, wait: Duration) -> Result<String, String> {
        if !self.supervised(id) {
            return Err(self.not_started(id));
        }
        let old = self.pid(id);
        let ask = self.file(id, "restart");
        std::fs::write(&ask, b"restart\n").map_err(|e| format!("cannot write {}: {e}", ask.display()))?;
        if let Some(pid) = old {
            signal(pid, "INT")?;
            if !wait_until(STOP_WAIT, || live_cmdline(pid).is_none()) {
                signal(pid, "KILL")?;
            }
        }
        let mut new = None;
        if wait_until(wait, || {
            new = self.pid(id).filter(|p| Some(*p) != old);
            new.is_some()
        }) {
            let pid = new.unwrap_or_default();
            return Ok(format!("server {id} restarted (pid {pid}); it rejoins once it has heard the others"));
        }
        let _ = std::fs::remove_file(&ask);
        Err(format!("server {id} did not start again within {:.0} s (see run.sh's terminal)", wait.as_secs_f64()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_live_server_with_that_id_counts() {
        let args = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        assert!(is_server(&args("target/release/server --id 2 --config c.json"), 2));
        assert!(!is_server(&args("target/release/server --id 2"), 3));
        assert!(!is_server(&args("/bin/sleep --id 2"), 2));
        let me = live_cmdline(std::process::id()).expect("this process is alive");
        assert!(!me.is_empty() && !is_server(&me, 1));
        let dir = std::env::temp_dir().join(format!("imgcloud-rundir-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("server-1.pid"), std::process::id().to_string()).unwrap();
        let run = RunDir::new(&dir);
        assert_eq!(run.pid(1), None, "a pid that is not a server's");
        assert!(run.kill(1).unwrap_err().contains("not started by ./run.sh"));
        assert!(run.restart(1, Duration::from_millis(10)).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
