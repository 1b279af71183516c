//! The operator's link to one server, for `ctl` and the dashboard: an operator command goes
//! as `Msg::Operator` in a frame tagged under the cluster key to the server's `peer_addr`
//! (resent until answered, the same nonce each time, so the server does it once), and the
//! server's `Msg::OperatorReply`, tagged under the same key, is the answer. Only a machine
//! that holds the cluster key can do this; the key is read, never created, here. [`Action`]
//! adds what a cluster started by `./run.sh` also allows: kill and restart.

use crate::rundir::RunDir;
use common::auth::{decode_at_server, encode_server, wall_ms};
use common::config::{ClusterConfig, ServerId, MAX_DATAGRAM};
use common::crypto::{self, Key};
use common::operator::{OperatorCmd, USAGE};
use common::protocol::{Frame, Msg};
use common::rng::Rng;
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// How often an unanswered command is sent again.
pub const RESEND: Duration = Duration::from_millis(250);

/// The cluster key of `cfg`: its `cluster_key`, else its key file (which must exist: only a
/// server creates it).
pub fn cluster_key(cfg: &ClusterConfig) -> Result<Key, String> {
    if let Some(hex) = &cfg.cluster_key {
        return crypto::key_from_hex(hex.0.trim()).ok_or_else(|| "field `cluster_key`: must be 64 hex digits".into());
    }
    let path = cfg.cluster_key_path();
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "cannot read the cluster key {} ({e}): operator commands need the cluster key \
             (run this where the servers run, or copy the key: ./run.sh key)",
            path.display()
        )
    })?;
    crypto::key_from_hex(text.trim()).ok_or_else(|| format!("{} must hold 64 hex digits", path.display()))
}

/// Sends operator commands to the servers of one cluster.
pub struct Operator {
    cfg: ClusterConfig,
    key: Key,
}

impl Operator {
    /// The operator of `cfg`'s cluster (fails without the cluster key).
    pub fn new(cfg: &ClusterConfig) -> Result<Operator, String> {
        Ok(Operator { cfg: cfg.clone(), key: cluster_key(cfg)? })
    }

    /// Sends `cmd` to server `id` and waits up to `wait` for its answer: the server's text, or
    /// its error, or why there was no answer.
    pub fn send(&self, id: ServerId, cmd: OperatorCmd, wait: Duration) -> Result<String, String> {
        let entry =
            self.cfg.server(id).ok_or_else(|| format!("no server {id} in the config (ids: {:?})", self.cfg.ids()))?;
        let to = entry.peer_addr;
        let any: SocketAddr = if to.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
        let sock = UdpSocket::bind(any).map_err(|e| format!("cannot open a UDP socket: {e}"))?;
        let nonce = Rng::from_entropy().next_u64();
        let msg = Msg::Operator { nonce, cmd };
        let deadline = Instant::now() + wait;
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(format!(
                    "no answer from server {id} at {to} within {:.1} s: is it running, and does it have the \
                     same cluster key as this machine?",
                    wait.as_secs_f64()
                ));
            }
            sock.send_to(&encode_server(&self.key, wall_ms(), &msg), to)
                .map_err(|e| format!("cannot send to server {id} at {to}: {e}"))?;
            let resend_at = (now + RESEND).min(deadline);
            while let Some(left) = resend_at.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
                let _ = sock.set_read_timeout(Some(left));
                let n = match sock.recv_from(&mut buf) {
                    Ok((n, _)) => n,
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
                    // An ICMP error from an earlier send (nobody listening yet): wait a little.
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                };
                let frame = decode_at_server(&buf[..n], &self.key, wall_ms(), self.cfg.auth_window_ms);
                if let Ok((Frame::Ctl(Msg::OperatorReply { nonce: got, result, .. }), true)) = frame {
                    if got == nonce {
                        return result;
                    }
                }
            }
        }
    }
}

/// Every command `ctl` and the dashboard accept, as the usage line shows them.
pub fn commands() -> String {
    format!("{USAGE} | kill | restart")
}

/// What the operator can do to one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// A command the server does (under the cluster key).
    Server(OperatorCmd),
    /// SIGKILL it (a cluster started by `./run.sh`).
    Kill,
    /// Start it again (a cluster started by `./run.sh`).
    Restart,
}

impl Action {
    /// Parses the words of a command; the error names the valid commands.
    pub fn parse(words: &[&str]) -> Result<Action, String> {
        match words {
            ["kill"] => Ok(Action::Kill),
            ["restart"] => Ok(Action::Restart),
            _ => OperatorCmd::parse(words).map(Action::Server).map_err(|e| format!("{e}; commands: {}", commands())),
        }
    }

    /// Does it to server `id`: the answer, or the error (a server's command waits up to `wait`
    /// for the answer; a restart at least 10 s for the new process).
    pub fn run(
        &self,
        id: ServerId,
        operator: &Result<Operator, String>,
        run: Option<&RunDir>,
        wait: Duration,
    ) -> Result<String, String> {
        let run = || run.ok_or("kill and restart work on a cluster started by ./run.sh (its run folder is unknown)");
        match self {
            Action::Server(cmd) => operator.as_ref().map_err(Clone::clone)?.send(id, *cmd, wait),
            Action::Kill => run()?.kill(id),
            Action::Restart => run()?.restart(id, Duration::from_secs(10).max(wait)),
        }
    }
}
