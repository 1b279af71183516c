//! `cluster.json`: the servers of the cloud and every tunable, with defaults and clear errors.
//!
//! Only `servers` is required; every other field is optional. Unknown fields are rejected so a
//! typo does not silently fall back to a default.

use crate::transfer::TransferConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;

/// A server's number in the cluster (1, 2, 3 …).
pub type ServerId = u32;

/// Exit code for a bad command line or config.
pub const EXIT_USAGE: i32 = 2;

/// One server of the cluster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerEntry {
    /// The server's id; ties in the election go to the lowest.
    pub id: ServerId,
    /// Where clients send requests.
    pub client_addr: SocketAddr,
    /// Where the other servers send loads, claims and directory updates.
    pub peer_addr: SocketAddr,
}

/// The whole cluster configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The servers of the cloud.
    pub servers: Vec<ServerEntry>,
    /// How often each server multicasts its load, in ms.
    #[serde(default = "d_load_interval")]
    pub load_interval_ms: u64,
    /// Silence after which a server counts as failed (load 999), in ms.
    #[serde(default = "d_failure_timeout")]
    pub failure_timeout_ms: u64,
    /// How long servers wait for the winner's claim (or a claim's acks) before taking over, in ms.
    #[serde(default = "d_claim_timeout")]
    pub claim_timeout_ms: u64,
    /// Retransmission interval of claims and commits between servers, in ms.
    #[serde(default = "d_retransmit")]
    pub retransmit_ms: u64,
    /// Worker threads per server.
    #[serde(default = "d_pool_size")]
    pub pool_size: usize,
    /// Folder for servers' and clients' data (relative to the working directory).
    #[serde(default = "d_data_dir")]
    pub data_dir: String,
    /// Folder of cover images.
    #[serde(default = "d_images_dir")]
    pub images_dir: String,
    /// Override: bytes of payload per transfer datagram on every path. Unset, a transfer sends
    /// 1,400 bytes per datagram off loopback (no IP fragmentation on a 1,500-byte MTU) and
    /// 48,000 on loopback.
    #[serde(default)]
    pub chunk_size: Option<usize>,
    /// Override: a fixed cap on chunks in flight per transfer. Unset, the congestion
    /// controller sizes the window to the path.
    #[serde(default)]
    pub window: Option<usize>,
    /// Largest payload accepted by a transfer, in bytes.
    #[serde(default = "d_max_payload")]
    pub max_payload: usize,
    /// Answers kept for retried requests (entries).
    #[serde(default = "d_answer_cache")]
    pub answer_cache: usize,
    /// How long an answer is kept for retries, in ms.
    #[serde(default = "d_answer_ttl")]
    pub answer_ttl_ms: u64,
    /// How long a client waits before resending a request to all servers, in ms.
    #[serde(default = "d_request_retry")]
    pub request_retry_ms: u64,
    /// How long a client keeps trying one request before reporting an error, in ms.
    #[serde(default = "d_request_timeout")]
    pub request_timeout_ms: u64,
    /// Failure simulation: how long the token holder stays down, in ms.
    #[serde(default = "d_down")]
    pub simulate_down_ms: u64,
    /// Failure simulation: how long a server stays up after coming back before passing the token, in ms.
    #[serde(default = "d_up")]
    pub simulate_up_ms: u64,
    /// How far a signed request's or a server frame's timestamp may be from the receiver's
    /// clock, in ms (replays outside it are refused; must be below `answer_ttl_ms`).
    #[serde(default = "d_auth_window")]
    pub auth_window_ms: u64,
    /// File holding the key that authenticates messages between servers (64 hex digits);
    /// created by the first server that starts. Default: `cluster.key` in `data_dir`.
    #[serde(default)]
    pub cluster_key_file: Option<String>,
}

fn d_load_interval() -> u64 {
    1000
}
fn d_failure_timeout() -> u64 {
    3000
}
fn d_claim_timeout() -> u64 {
    300
}
fn d_retransmit() -> u64 {
    40
}
fn d_pool_size() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).max(2)
}
fn d_data_dir() -> String {
    "data".into()
}
fn d_images_dir() -> String {
    "images".into()
}
fn d_max_payload() -> usize {
    50 * 1024 * 1024
}
fn d_answer_cache() -> usize {
    20_000
}
fn d_answer_ttl() -> u64 {
    60_000
}
fn d_request_retry() -> u64 {
    250
}
fn d_request_timeout() -> u64 {
    15_000
}
fn d_down() -> u64 {
    20_000
}
fn d_up() -> u64 {
    10_000
}
fn d_auth_window() -> u64 {
    crate::auth::DEFAULT_WINDOW_MS
}

/// Largest datagram the wire format produces or accepts.
pub const MAX_DATAGRAM: usize = 65_507;

impl ClusterConfig {
    /// Parses and validates a config from JSON text.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let cfg: ClusterConfig = serde_json::from_str(text).map_err(|e| e.to_string())?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads, parses and validates a config file; the error names the file and the field.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
        Self::from_json(&text).map_err(|e| format!("config {}: {e}", path.display()))
    }

    /// A config for the given servers with every default.
    pub fn with_servers(servers: Vec<ServerEntry>) -> Self {
        ClusterConfig {
            servers,
            load_interval_ms: d_load_interval(),
            failure_timeout_ms: d_failure_timeout(),
            claim_timeout_ms: d_claim_timeout(),
            retransmit_ms: d_retransmit(),
            pool_size: d_pool_size(),
            data_dir: d_data_dir(),
            images_dir: d_images_dir(),
            chunk_size: None,
            window: None,
            max_payload: d_max_payload(),
            answer_cache: d_answer_cache(),
            answer_ttl_ms: d_answer_ttl(),
            request_retry_ms: d_request_retry(),
            request_timeout_ms: d_request_timeout(),
            simulate_down_ms: d_down(),
            simulate_up_ms: d_up(),
            auth_window_ms: d_auth_window(),
            cluster_key_file: None,
        }
    }

    /// Checks the values that serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.servers.is_empty() {
            return Err("field `servers`: at least one server is needed".into());
        }
        let mut ids = BTreeSet::new();
        let mut addrs = BTreeSet::new();
        for s in &self.servers {
            if s.id == 0 {
                return Err("field `servers[].id`: ids start at 1".into());
            }
            if !ids.insert(s.id) {
                return Err(format!("field `servers[].id`: id {} appears twice", s.id));
            }
            for a in [s.client_addr, s.peer_addr] {
                if !addrs.insert(a) {
                    return Err(format!("field `servers[].client_addr/peer_addr`: address {a} appears twice"));
                }
            }
        }
        let positive = [
            ("load_interval_ms", self.load_interval_ms),
            ("failure_timeout_ms", self.failure_timeout_ms),
            ("claim_timeout_ms", self.claim_timeout_ms),
            ("retransmit_ms", self.retransmit_ms),
            ("request_retry_ms", self.request_retry_ms),
            ("request_timeout_ms", self.request_timeout_ms),
            ("pool_size", self.pool_size as u64),
            ("window", self.window.map_or(1, |w| w as u64)),
            ("auth_window_ms", self.auth_window_ms),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(format!("field `{name}`: must be greater than 0"));
            }
        }
        if self.failure_timeout_ms <= self.load_interval_ms {
            return Err("field `failure_timeout_ms`: must be longer than `load_interval_ms`".into());
        }
        if self.auth_window_ms >= self.answer_ttl_ms {
            return Err("field `auth_window_ms`: must be shorter than `answer_ttl_ms` (replays in the window must find their answer)".into());
        }
        if self.chunk_size.is_some_and(|c| !(256..=60_000).contains(&c)) {
            return Err("field `chunk_size`: must be between 256 and 60000 bytes".into());
        }
        Ok(())
    }

    /// The transfer settings of this config: the overrides, if any, on the transfer's defaults.
    pub fn transfer(&self) -> TransferConfig {
        let mut t = match self.chunk_size {
            Some(c) => TransferConfig::with_chunk_size(c),
            None => TransferConfig::default(),
        };
        t.window = self.window;
        t.max_payload = self.max_payload;
        t.normalized()
    }

    /// The cluster key file.
    pub fn cluster_key_path(&self) -> std::path::PathBuf {
        match &self.cluster_key_file {
            Some(f) => std::path::PathBuf::from(f),
            None => Path::new(&self.data_dir).join("cluster.key"),
        }
    }

    /// The entry of server `id`.
    pub fn server(&self, id: ServerId) -> Option<&ServerEntry> {
        self.servers.iter().find(|s| s.id == id)
    }

    /// Every server id, ascending.
    pub fn ids(&self) -> Vec<ServerId> {
        let mut v: Vec<ServerId> = self.servers.iter().map(|s| s.id).collect();
        v.sort_unstable();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const THREE: &str = r#"{ "servers": [
        {"id": 1, "client_addr": "127.0.0.1:7101", "peer_addr": "127.0.0.1:7201"},
        {"id": 2, "client_addr": "127.0.0.1:7102", "peer_addr": "127.0.0.1:7202"},
        {"id": 3, "client_addr": "127.0.0.1:7103", "peer_addr": "127.0.0.1:7203"} ] }"#;

    #[test]
    fn defaults_fill_optional_fields() {
        let c = ClusterConfig::from_json(THREE).unwrap();
        assert_eq!(c.ids(), vec![1, 2, 3]);
        assert_eq!(c.load_interval_ms, 1000);
        assert_eq!(c.data_dir, "data");
    }

    #[test]
    fn unknown_field_is_named() {
        let bad = THREE.replacen("\"servers\"", "\"load_intervl_ms\": 5, \"servers\"", 1);
        let e = ClusterConfig::from_json(&bad).unwrap_err();
        assert!(e.contains("load_intervl_ms"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let e = ClusterConfig::from_json(&THREE.replace("7102", "7101")).unwrap_err();
        assert!(e.contains("appears twice"), "{e}");
        let e = ClusterConfig::from_json(&THREE.replace("127.0.0.1:7103", "nowhere")).unwrap_err();
        assert!(e.contains("invalid socket address"), "{e}");
        let e = ClusterConfig::from_json(r#"{"servers": []}"#).unwrap_err();
        assert!(e.contains("servers"), "{e}");
    }
}
