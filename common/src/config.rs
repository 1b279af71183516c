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
    /// The server's id (unique, ≥ 1).
    pub id: ServerId,
    /// Where clients send requests.
    pub client_addr: SocketAddr,
    /// Where the other servers send loads, claims and directory updates.
    pub peer_addr: SocketAddr,
    /// The local address the server binds for clients, when not `client_addr` itself (NAT,
    /// several interfaces: e.g. `0.0.0.0:7101`). Everything else uses `client_addr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_bind: Option<SocketAddr>,
    /// The local address the server binds for the other servers, when not `peer_addr` itself
    /// (e.g. `0.0.0.0:7201`). Everything else uses `peer_addr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_bind: Option<SocketAddr>,
}

impl ServerEntry {
    /// A server reached, and bound, at these addresses.
    pub fn new(id: ServerId, client_addr: SocketAddr, peer_addr: SocketAddr) -> Self {
        ServerEntry { id, client_addr, peer_addr, client_bind: None, peer_bind: None }
    }

    /// The address its client socket binds: `client_bind`, else `client_addr`.
    pub fn client_bind_addr(&self) -> SocketAddr {
        self.client_bind.unwrap_or(self.client_addr)
    }

    /// The address its server socket binds: `peer_bind`, else `peer_addr`.
    pub fn peer_bind_addr(&self) -> SocketAddr {
        self.peer_bind.unwrap_or(self.peer_addr)
    }

    /// True if its server socket binds an address other than the one the others send to, so
    /// its frames may come from an address that is not `peer_addr` (see the server's runtime).
    pub fn peer_bind_differs(&self) -> bool {
        self.peer_bind.is_some_and(|b| b != self.peer_addr)
    }

    /// Checks its addresses: advertised ones others can send to, binds of the same family and
    /// with a port, and two sockets that can both be bound.
    fn validate(&self) -> Result<(), String> {
        let id = self.id;
        for (field, a) in [("client_addr", self.client_addr), ("peer_addr", self.peer_addr)] {
            if a.ip().is_unspecified() {
                return Err(format!(
                    "field `servers[id {id}].{field}`: {a} is where the others send, not a real address; \
                     give the machine's address and bind the wildcard with `{}`",
                    field.replace("_addr", "_bind")
                ));
            }
            if a.port() == 0 {
                return Err(format!("field `servers[id {id}].{field}`: port 0 cannot be reached"));
            }
        }
        for (field, bind, adv) in
            [("client_bind", self.client_bind, self.client_addr), ("peer_bind", self.peer_bind, self.peer_addr)]
        {
            let Some(b) = bind else { continue };
            if b.port() == 0 {
                return Err(format!("field `servers[id {id}].{field}`: port 0 (a random port) cannot be reached"));
            }
            if b.is_ipv4() != adv.is_ipv4() {
                return Err(format!(
                    "field `servers[id {id}].{field}`: {b} and the advertised {adv} must both be IPv4 or both IPv6"
                ));
            }
        }
        let (c, p) = (self.client_bind_addr(), self.peer_bind_addr());
        let overlap = c.ip() == p.ip() || c.ip().is_unspecified() || p.ip().is_unspecified();
        if c.port() == p.port() && overlap {
            return Err(format!(
                "field `servers[id {id}]`: the client socket ({c}) and the server socket ({p}) would bind the same port"
            ));
        }
        Ok(())
    }
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
    /// The cluster key itself (64 hex digits), instead of `cluster_key_file` (which is then
    /// not used); setting both is an error. Whoever reads the config can then act as a server:
    /// give clients a copy without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_key: Option<KeyHex>,
}

/// A cluster key written in the config (64 hex digits), never shown by `Debug`.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct KeyHex(pub String);

impl std::fmt::Debug for KeyHex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyHex(..)")
    }
}

/// Checks a cluster key written as text: exactly 64 hex digits (surrounding blanks allowed).
/// The error says what is wrong without repeating the key.
pub fn check_key_hex(text: &str) -> Result<(), String> {
    let t = text.trim();
    if let Some(pos) = t.find(|c: char| !c.is_ascii_hexdigit()) {
        let at = t[..pos].chars().count() + 1;
        return Err(format!("must be 64 hex digits (0-9, a-f); character {at} is not one"));
    }
    if t.len() != 64 {
        return Err(format!("must be exactly 64 hex digits; it has {}", t.len()));
    }
    Ok(())
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
    DEFAULT_WINDOW_MS
}

/// Default for how far a request's or a frame's timestamp may be from the receiver's clock, ms.
pub const DEFAULT_WINDOW_MS: u64 = 30_000;

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
            cluster_key: None,
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
            s.validate()?;
        }
        if let Some(k) = &self.cluster_key {
            check_key_hex(&k.0).map_err(|e| format!("field `cluster_key`: {e}"))?;
            if self.cluster_key_file.is_some() {
                return Err("fields `cluster_key` and `cluster_key_file`: give the key or its file, not both".into());
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

    const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";

    fn with(field: &str) -> String {
        THREE.replacen("\"servers\"", &format!("{field}, \"servers\""), 1)
    }

    #[test]
    fn cluster_key_is_64_hex_digits_and_excludes_the_key_file() {
        let c = ClusterConfig::from_json(&with(&format!("\"cluster_key\": \"{KEY}\""))).unwrap();
        assert_eq!(c.cluster_key, Some(KeyHex(KEY.into())));
        assert!(!format!("{c:?}").contains(KEY), "Debug must not show the key");
        let e = ClusterConfig::from_json(&with(&format!("\"cluster_key\": \"{}\"", &KEY[..63]))).unwrap_err();
        assert!(e.contains("`cluster_key`") && e.contains("exactly 64 hex digits; it has 63"), "{e}");
        let e = ClusterConfig::from_json(&with(&format!("\"cluster_key\": \"{}g\"", &KEY[..63]))).unwrap_err();
        assert!(e.contains("`cluster_key`") && e.contains("character 64 is not one"), "{e}");
        assert!(!e.contains(&KEY[..63]), "the error must not repeat the key: {e}");
        let e = ClusterConfig::from_json(&with("\"cluster_key\": 5")).unwrap_err();
        assert!(e.contains("invalid type"), "{e}");
        let e = ClusterConfig::from_json(&with("\"cluster_key\": \"\"")).unwrap_err();
        assert!(e.contains("it has 0"), "{e}");
        let both = with(&format!("\"cluster_key\": \"{KEY}\", \"cluster_key_file\": \"k\""));
        let e = ClusterConfig::from_json(&both).unwrap_err();
        assert!(e.contains("not both"), "{e}");
        // Written back out, a config without the field does not grow one.
        let plain = ClusterConfig::from_json(THREE).unwrap();
        let text = serde_json::to_string(&plain).unwrap();
        assert!(!text.contains("cluster_key\"") && !text.contains("_bind"), "{text}");
        assert_eq!(ClusterConfig::from_json(&text).unwrap(), plain);
    }

    #[test]
    fn binds_default_to_the_advertised_addresses() {
        let c = ClusterConfig::from_json(THREE).unwrap();
        let s = c.server(1).unwrap();
        assert_eq!(s.client_bind_addr(), s.client_addr);
        assert_eq!(s.peer_bind_addr(), s.peer_addr);
        assert!(!s.peer_bind_differs());
        let text = THREE.replacen(
            "\"peer_addr\": \"127.0.0.1:7201\"",
            "\"peer_addr\": \"10.0.0.11:7201\", \"peer_bind\": \"0.0.0.0:7201\", \"client_bind\": \"0.0.0.0:7101\"",
            1,
        );
        let c = ClusterConfig::from_json(&text).unwrap();
        let s = c.server(1).unwrap();
        assert_eq!(s.peer_bind_addr(), "0.0.0.0:7201".parse().unwrap());
        assert_eq!(s.client_bind_addr(), "0.0.0.0:7101".parse().unwrap());
        assert_eq!(s.peer_addr, "10.0.0.11:7201".parse().unwrap());
        assert!(s.peer_bind_differs());
        assert_eq!(ClusterConfig::from_json(&serde_json::to_string(&c).unwrap()).unwrap(), c);
        // Every machine may bind the same wildcard address: binds need not be unique.
        let all = THREE
            .replace(
                "\"peer_addr\": \"127.0.0.1:7201\"",
                "\"peer_addr\": \"127.0.0.1:7201\", \"peer_bind\": \"0.0.0.0:7200\"",
            )
            .replace(
                "\"peer_addr\": \"127.0.0.1:7202\"",
                "\"peer_addr\": \"127.0.0.1:7202\", \"peer_bind\": \"0.0.0.0:7200\"",
            );
        assert!(ClusterConfig::from_json(&all).is_ok());
    }

    #[test]
    fn bad_binds_and_advertised_addresses_are_named() {
        let bind = |extra: &str| {
            THREE.replacen(
                "\"peer_addr\": \"127.0.0.1:7202\"",
                &format!("\"peer_addr\": \"127.0.0.1:7202\", {extra}"),
                1,
            )
        };
        let e = ClusterConfig::from_json(&bind("\"peer_bind\": \"0.0.0.0:0\"")).unwrap_err();
        assert!(e.contains("servers[id 2].peer_bind") && e.contains("port 0"), "{e}");
        let e = ClusterConfig::from_json(&bind("\"peer_bind\": \"[::]:7202\"")).unwrap_err();
        assert!(e.contains("servers[id 2].peer_bind") && e.contains("IPv4"), "{e}");
        let e = ClusterConfig::from_json(&bind("\"client_bind\": \"0.0.0.0:7202\"")).unwrap_err();
        assert!(e.contains("servers[id 2]") && e.contains("same port"), "{e}");
        let e = ClusterConfig::from_json(&bind("\"peer_bind\": \"nowhere\"")).unwrap_err();
        assert!(e.contains("invalid socket address"), "{e}");
        let e = ClusterConfig::from_json(&bind("\"peer_bnd\": \"0.0.0.0:7202\"")).unwrap_err();
        assert!(e.contains("peer_bnd"), "{e}");
        let e = ClusterConfig::from_json(&THREE.replace("127.0.0.1:7203", "0.0.0.0:7203")).unwrap_err();
        assert!(e.contains("servers[id 3].peer_addr") && e.contains("`peer_bind`"), "{e}");
        let e = ClusterConfig::from_json(&THREE.replace("127.0.0.1:7101", "127.0.0.1:0")).unwrap_err();
        assert!(e.contains("servers[id 1].client_addr") && e.contains("port 0"), "{e}");
        // Different addresses on one port are fine (two interfaces).
        assert!(ClusterConfig::from_json(&bind("\"client_bind\": \"127.0.0.5:7202\"")).is_ok());
    }
}
