//! The cluster key and what goes wrong with it: where a server gets its key (the config's
//! `cluster_key`, else the key file, created if missing), and how a server notices that
//! another one runs with a different key — frames with a bad tag on its server port. The
//! receive thread logs them once per address per minute ([`BadTags`]) and tells the node,
//! which lists the addresses seen lately in its `status` answer ([`Mismatches`]).

use common::config::{ClusterConfig, ServerId};
use common::crypto::{self, Key};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

/// How often one address's bad tags are logged, at most, in ms.
pub const LOG_EVERY_MS: u64 = 60_000;
/// How often the receive thread tells the node about one address, at most, in ms.
pub const NOTE_EVERY_MS: u64 = 10_000;
/// How long an address stays in the `status` answer after the node last heard of it, in ms.
pub const RECENT_MS: u64 = 60_000;
/// Addresses remembered (a flood from many addresses must not grow memory).
pub const MAX_ADDRS: usize = 64;
/// Addresses listed in the `status` answer.
pub const MAX_LISTED: usize = 16;
/// Bad-tag lines logged per minute over all addresses (the rest are counted).
pub const MAX_LINES_PER_WINDOW: u32 = 10;

/// The key that authenticates frames between servers: the config's `cluster_key` if given,
/// else the one in the key file (created with a fresh random key if missing).
pub fn cluster_key(cfg: &ClusterConfig) -> Result<Key, String> {
    match &cfg.cluster_key {
        Some(hex) => {
            crypto::key_from_hex(hex.0.trim()).ok_or_else(|| "field `cluster_key`: must be 64 hex digits".into())
        }
        None => crate::store::cluster_key(&cfg.cluster_key_path()),
    }
}

/// The log line for frames with a bad tag from `from` (`server`: the server whose `peer_addr`
/// that is, if any).
pub fn mismatch_line(from: SocketAddr, server: Option<ServerId>) -> String {
    let who = match server {
        Some(id) => format!(" (server {id})"),
        None => String::new(),
    };
    format!(
        "frames from {from}{who} carry a bad tag: that server has a different cluster key \
         (copy the key with ./run.sh key)"
    )
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    last: u64,
    logged: Option<u64>,
    noted: Option<u64>,
}

/// What to do about one frame with a bad tag.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verdict {
    /// Log this line now.
    pub log: Option<String>,
    /// Tell the node (it lists the address in `status`).
    pub note: bool,
}

/// The receive thread's memory of the addresses that sent frames with a bad tag: each is
/// logged at most once per [`LOG_EVERY_MS`] and noted to the node at most once per
/// [`NOTE_EVERY_MS`]; at most [`MAX_ADDRS`] addresses are remembered and at most
/// [`MAX_LINES_PER_WINDOW`] lines logged per minute in all.
#[derive(Debug, Default)]
pub struct BadTags {
    seen: HashMap<SocketAddr, Seen>,
    window: u64,
    lines: u32,
    hidden: u32,
}

impl BadTags {
    /// A frame with a bad tag came from `from` at `now` (ms, any monotonic origin).
    pub fn record(&mut self, now: u64, from: SocketAddr, server: Option<ServerId>) -> Verdict {
        if !self.seen.contains_key(&from) && self.seen.len() >= MAX_ADDRS {
            self.seen.retain(|_, s| now.saturating_sub(s.last) < LOG_EVERY_MS);
            if self.seen.len() >= MAX_ADDRS {
                if let Some(oldest) = self.seen.iter().min_by_key(|(_, s)| s.last).map(|(a, _)| *a) {
                    self.seen.remove(&oldest);
                }
            }
        }
        let mut verdict = Verdict::default();
        let mut summary = None;
        if now.saturating_sub(self.window) >= LOG_EVERY_MS || self.window == 0 {
            if self.hidden > 0 {
                summary = Some(format!(
                    "... and {} more lines about frames with a bad tag left out in the last minute",
                    self.hidden
                ));
            }
            self.window = now.max(1);
            self.lines = 0;
            self.hidden = 0;
        }
        let s = self.seen.entry(from).or_insert(Seen { last: now, logged: None, noted: None });
        s.last = now;
        if s.logged.is_none_or(|t| now.saturating_sub(t) >= LOG_EVERY_MS) {
            s.logged = Some(now);
            if self.lines < MAX_LINES_PER_WINDOW {
                self.lines += 1;
                verdict.log = Some(mismatch_line(from, server));
            } else {
                self.hidden += 1;
            }
        }
        if s.noted.is_none_or(|t| now.saturating_sub(t) >= NOTE_EVERY_MS) {
            s.noted = Some(now);
            verdict.note = true;
        }
        if let Some(sum) = summary {
            verdict.log = Some(match verdict.log {
                Some(line) => format!("{sum}\n{line}"),
                None => sum,
            });
        }
        verdict
    }
}

/// The node's list of addresses that sent frames with a bad tag lately, for `status`.
#[derive(Debug, Default, Clone)]
pub struct Mismatches {
    last: BTreeMap<SocketAddr, u64>,
}

impl Mismatches {
    /// The receive thread noted `from` at `now` (the node's clock).
    pub fn note(&mut self, now: u64, from: SocketAddr) {
        self.last.retain(|_, t| now.saturating_sub(*t) < RECENT_MS);
        if !self.last.contains_key(&from) && self.last.len() >= MAX_LISTED {
            if let Some(oldest) = self.last.iter().min_by_key(|(_, t)| **t).map(|(a, _)| *a) {
                self.last.remove(&oldest);
            }
        }
        self.last.insert(from, now);
    }

    /// The addresses noted within [`RECENT_MS`] of `now`, in address order.
    pub fn recent(&self, now: u64) -> Vec<String> {
        self.last.iter().filter(|(_, t)| now.saturating_sub(**t) < RECENT_MS).map(|(a, _)| a.to_string()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 13], port))
    }

    #[test]
    fn one_line_per_address_per_minute_and_a_note_every_ten_seconds() {
        let mut b = BadTags::default();
        let v = b.record(1_000, addr(7203), Some(3));
        assert_eq!(
            v.log.as_deref(),
            Some(
                "frames from 10.0.0.13:7203 (server 3) carry a bad tag: that server has a different cluster key \
                 (copy the key with ./run.sh key)"
            )
        );
        assert!(v.note);
        // A frame a second for a minute: no more lines, a note every 10 s.
        let mut notes = 0;
        for t in 1..60 {
            let v = b.record(1_000 + t * 1_000, addr(7203), Some(3));
            assert_eq!(v.log, None, "at {t} s");
            notes += v.note as u32;
        }
        assert_eq!(notes, 5);
        assert!(b.record(61_000, addr(7203), Some(3)).log.is_some(), "a minute later, once more");
        // Another address has its own minute.
        assert!(b
            .record(61_500, addr(7204), None)
            .log
            .is_some_and(|l| l.starts_with("frames from 10.0.0.13:7204 carry")));
    }

    #[test]
    fn a_flood_from_many_addresses_stays_bounded() {
        let mut b = BadTags::default();
        let mut lines = 0;
        for i in 0..10_000u16 {
            lines += b.record(5_000, addr(i), None).log.is_some() as u32;
        }
        assert_eq!(lines, MAX_LINES_PER_WINDOW);
        assert!(b.seen.len() <= MAX_ADDRS);
        let v = b.record(70_000, addr(60_000), None);
        assert!(v.log.is_some_and(|l| l.contains("more lines") && l.contains("frames from")));
        let mut m = Mismatches::default();
        for i in 0..1000u16 {
            m.note(1_000, addr(i));
        }
        assert_eq!(m.recent(1_000).len(), MAX_LISTED);
    }

    #[test]
    fn the_status_list_forgets_an_address_after_a_minute() {
        let mut m = Mismatches::default();
        m.note(1_000, addr(7203));
        m.note(5_000, addr(7201));
        assert_eq!(m.recent(10_000), vec!["10.0.0.13:7201".to_string(), "10.0.0.13:7203".to_string()]);
        assert_eq!(m.recent(61_000), vec!["10.0.0.13:7201".to_string()]);
        m.note(70_000, addr(7201));
        assert_eq!(m.recent(100_000), vec!["10.0.0.13:7201".to_string()]);
        assert!(m.recent(200_000).is_empty());
    }

    #[test]
    fn the_config_key_comes_before_the_file() {
        let dir = std::env::temp_dir().join(format!("imgcloud-keys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut cfg = ClusterConfig::with_servers(vec![]);
        cfg.data_dir = dir.to_string_lossy().into_owned();
        let from_file = cluster_key(&cfg).unwrap();
        assert_eq!(cluster_key(&cfg).unwrap(), from_file, "the file, once created, is kept");
        let hex = "ab".repeat(32);
        cfg.cluster_key = Some(common::config::KeyHex(hex.clone()));
        assert_eq!(crypto::to_hex(&cluster_key(&cfg).unwrap()), hex);
        cfg.cluster_key = Some(common::config::KeyHex("xyz".into()));
        assert!(cluster_key(&cfg).unwrap_err().contains("cluster_key"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
