//! Starting a local cluster of real server processes on free loopback ports, for the
//! benchmark, the demo and the end-to-end tests: write a config, start, SIGKILL, restart,
//! send operator commands to a server's stdin, wait until every running server sees the
//! others live.

use crate::cloud::Cloud;
use common::config::{ClusterConfig, ServerEntry, ServerId};
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// `n` distinct free UDP ports on 127.0.0.1 (free when asked; the OS may reuse them later).
pub fn free_ports(n: usize) -> Result<Vec<u16>, String> {
    let socks: Vec<UdpSocket> = (0..n)
        .map(|_| UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("cannot find a free port: {e}")))
        .collect::<Result<_, _>>()?;
    socks.iter().map(|s| s.local_addr().map(|a| a.port()).map_err(|e| e.to_string())).collect()
}

/// The path of a sibling binary of the running executable (`server`, `client`), looking past
/// the `deps/` folder that test executables live in.
pub fn sibling_binary(name: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut dir = exe.parent().map(Path::to_path_buf).ok_or("no executable folder")?;
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if path.exists() {
        Ok(path)
    } else {
        Err(format!("{} not found: build the workspace first (cargo build --release)", path.display()))
    }
}

/// A cluster of server processes under one folder.
pub struct Cluster {
    /// The cluster's config (also written to `config_path`).
    pub cfg: ClusterConfig,
    /// Where the config file is.
    pub config_path: PathBuf,
    /// The folder holding the config, data and logs.
    pub dir: PathBuf,
    server_bin: PathBuf,
    procs: BTreeMap<ServerId, Child>,
    operator: BTreeMap<ServerId, ChildStdin>,
    args: BTreeMap<ServerId, Vec<String>>,
}

impl Cluster {
    /// Prepares `n` servers on free ports under `dir` (emptied first); `tweak` may change
    /// the config before it is written.
    pub fn new(dir: &Path, n: u32, tweak: impl FnOnce(&mut ClusterConfig)) -> Result<Cluster, String> {
        let _ = fs::remove_dir_all(dir);
        fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let ports = free_ports(2 * n as usize)?;
        let servers = (0..n as usize)
            .map(|i| {
                ServerEntry::new(
                    i as u32 + 1,
                    SocketAddr::from(([127, 0, 0, 1], ports[2 * i])),
                    SocketAddr::from(([127, 0, 0, 1], ports[2 * i + 1])),
                )
            })
            .collect();
        let mut cfg = ClusterConfig::with_servers(servers);
        cfg.data_dir = dir.join("data").to_string_lossy().into_owned();
        tweak(&mut cfg);
        cfg.validate()?;
        let config_path = dir.join("cluster.json");
        let text = serde_json::to_string_pretty(&cfg).map_err(|e| e.to_string())?;
        fs::write(&config_path, text).map_err(|e| e.to_string())?;
        Ok(Cluster {
            cfg,
            config_path,
            dir: dir.to_path_buf(),
            server_bin: sibling_binary("server")?,
            procs: BTreeMap::new(),
            operator: BTreeMap::new(),
            args: BTreeMap::new(),
        })
    }

    /// Extra command-line arguments for server `id` (kept across restarts).
    pub fn set_args(&mut self, id: ServerId, args: Vec<String>) {
        self.args.insert(id, args);
    }

    /// The log file of server `id`.
    pub fn log_path(&self, id: ServerId) -> PathBuf {
        self.dir.join(format!("server-{id}.log"))
    }

    /// The log of server `id` so far.
    pub fn log(&self, id: ServerId) -> String {
        fs::read_to_string(self.log_path(id)).unwrap_or_default()
    }

    /// Starts server `id` (its output appended to its log file).
    pub fn start(&mut self, id: ServerId) -> Result<(), String> {
        let log =
            fs::OpenOptions::new().create(true).append(true).open(self.log_path(id)).map_err(|e| e.to_string())?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let mut child = Command::new(&self.server_bin)
            .arg("--id")
            .arg(id.to_string())
            .arg("--config")
            .arg(&self.config_path)
            .args(self.args.get(&id).cloned().unwrap_or_default())
            .stdin(Stdio::piped())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.server_bin.display()))?;
        if let Some(stdin) = child.stdin.take() {
            self.operator.insert(id, stdin);
        }
        self.procs.insert(id, child);
        Ok(())
    }

    /// Starts every server.
    pub fn start_all(&mut self) -> Result<(), String> {
        for id in self.cfg.ids() {
            self.start(id)?;
        }
        Ok(())
    }

    /// Ids of the servers this cluster started and did not kill.
    pub fn running(&self) -> Vec<ServerId> {
        self.procs.keys().copied().collect()
    }

    /// The process id of server `id`.
    pub fn pid(&self, id: ServerId) -> Option<u32> {
        self.procs.get(&id).map(|c| c.id())
    }

    /// True if server `id` is still running (it did not exit on its own).
    pub fn is_alive(&mut self, id: ServerId) -> bool {
        match self.procs.get_mut(&id) {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Sends an operator command (`down SECONDS`, `up`, `status`) to server `id`'s stdin.
    pub fn operator(&mut self, id: ServerId, command: &str) -> Result<(), String> {
        let stdin = self.operator.get_mut(&id).ok_or(format!("server {id} is not running"))?;
        writeln!(stdin, "{command}").and_then(|_| stdin.flush()).map_err(|e| format!("server {id}'s stdin: {e}"))
    }

    /// SIGKILLs server `id` (no goodbye: it just vanishes).
    pub fn kill(&mut self, id: ServerId) {
        self.operator.remove(&id);
        if let Some(mut c) = self.procs.remove(&id) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGKILLs every server.
    pub fn kill_all(&mut self) {
        for id in self.running() {
            self.kill(id);
        }
    }

    /// Waits until every running server answers a status request and sees every other
    /// running server live.
    pub fn wait_ready(&self, timeout: Duration) -> Result<(), String> {
        let mut cloud = Cloud::connect(&self.cfg, None)?;
        let deadline = Instant::now() + timeout;
        let running = self.running();
        loop {
            let st = cloud.statuses(Duration::from_millis(300));
            let ok = running.iter().all(|id| {
                st.get(id).is_some_and(|s| running.iter().all(|other| s.peers.iter().any(|p| p.id == *other && p.live)))
            });
            if ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("cluster not ready after {timeout:?}; statuses: {st:?}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}
