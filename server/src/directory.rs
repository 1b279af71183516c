//! The directory of service: users, addresses, online state and shared image ids, replicated
//! on every server (this server's own Paxos votes are apart, in `votes.rs`).
//!
//! Each user is one last-writer-wins record versioned by (Lamport counter, server id), so
//! replicas that apply the same records in any order, any number of times, end up equal.
//! Equality and the digest cover the records only: two replicas are equal when they hold the
//! same records.

use common::config::ServerId;
use common::protocol::{InboxEntry, UserInfo, UserRecord, Version};
use common::views::merge_shares;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The replicated directory.
#[derive(Debug, Clone, Default, Eq, Serialize, Deserialize)]
pub struct Directory {
    users: BTreeMap<String, UserRecord>,
    clock: u64,
    /// True when a user record changed since the last save.
    #[serde(skip)]
    users_changed: bool,
}

impl PartialEq for Directory {
    fn eq(&self, other: &Self) -> bool {
        self.users == other.users
    }
}

/// The inbox of `newer` plus the messages still pending in `older` that `newer` lacks (a
/// concurrent buffering elsewhere). Tombstones come only from `newer`, so tombstones it trimmed
/// stay trimmed; for a message in both, the newer entry (a delivered tombstone) wins. Ordered by
/// arrival.
pub fn merge_inbox(newer: &[InboxEntry], older: &[InboxEntry]) -> Vec<InboxEntry> {
    let mut by_key: BTreeMap<(String, u64), InboxEntry> = BTreeMap::new();
    for e in newer {
        by_key.insert((e.envelope.from.clone(), e.envelope.id), e.clone());
    }
    for e in older.iter().filter(|e| !e.delivered) {
        let key = (e.envelope.from.clone(), e.envelope.id);
        match by_key.get(&key) {
            Some(have) if have.version >= e.version => {}
            _ => {
                by_key.insert(key, e.clone());
            }
        }
    }
    let mut out: Vec<InboxEntry> = by_key.into_values().collect();
    out.sort_by_key(|e| e.seq);
    out
}

impl Directory {
    /// Applies a record if it is newer than ours; returns true if it changed anything.
    ///
    /// The newer record wins, except its inbox and its shares: the two inboxes are merged
    /// (union by message, a delivered tombstone beating its pending entry), so two servers
    /// buffering messages for the same user at once lose neither; shares are joined share by
    /// share (the newer grant, the highest slot used), so a view and a grant decided at once on
    /// two servers are both kept.
    pub fn apply(&mut self, rec: UserRecord) -> bool {
        self.clock = self.clock.max(rec.version.counter);
        let Some(old) = self.users.get(&rec.name) else {
            self.users.insert(rec.name.clone(), rec);
            self.users_changed = true;
            return true;
        };
        let (mut merged, other) = if rec.version > old.version { (rec, old.clone()) } else { (old.clone(), rec) };
        merged.inbox = merge_inbox(&merged.inbox, &other.inbox);
        merged.shares = merge_shares(&merged.shares, &other.shares);
        if Some(&merged) == self.users.get(&merged.name) {
            return false;
        }
        self.users.insert(merged.name.clone(), merged);
        self.users_changed = true;
        true
    }

    /// A fresh version for a local change by server `me`.
    pub fn next_version(&mut self, me: ServerId) -> Version {
        self.clock += 1;
        Version { counter: self.clock, server: me }
    }

    /// One user's record.
    pub fn get(&self, name: &str) -> Option<&UserRecord> {
        self.users.get(name)
    }

    /// Every record, by name.
    pub fn records(&self) -> impl Iterator<Item = &UserRecord> {
        self.users.values()
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// True when there are no users.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Users online now.
    pub fn online(&self) -> impl Iterator<Item = UserInfo> + '_ {
        self.users.values().filter(|r| r.online).map(UserInfo::from)
    }

    /// True once if a user record changed since the last call (the snapshot must be rewritten).
    pub fn take_users_changed(&mut self) -> bool {
        std::mem::take(&mut self.users_changed)
    }

    /// Moves the clock past `counter` (a version this server's votes hold), so versions stay
    /// unique after a restart.
    pub fn advance_clock(&mut self, counter: u64) {
        self.clock = self.clock.max(counter);
    }

    /// A hash of every (name, version): equal digests mean equal directories.
    pub fn digest(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for &b in bytes {
                h ^= b as u64;
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        };
        for r in self.users.values() {
            eat(r.name.as_bytes());
            eat(&[0]);
            eat(&r.version.counter.to_le_bytes());
            eat(&r.version.server.to_le_bytes());
            for e in &r.inbox {
                eat(e.envelope.from.as_bytes());
                eat(&e.envelope.id.to_le_bytes());
                eat(&[e.delivered as u8]);
            }
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::protocol::RequestId;

    fn rec(name: &str, counter: u64, server: ServerId, online: bool) -> UserRecord {
        UserRecord {
            name: name.into(),
            user_id: 1,
            secret: "t".into(),
            addr: None,
            online,
            images: vec![],
            version: Version { counter, server },
            created_by: RequestId { client: 1, seq: 1 },
            inbox: vec![],
            shares: vec![],
        }
    }

    #[test]
    fn any_order_any_repeats_converge() {
        let recs = vec![rec("a", 1, 1, false), rec("a", 2, 2, true), rec("a", 2, 3, false), rec("b", 1, 1, true)];
        let mut x = Directory::default();
        let mut y = Directory::default();
        for r in &recs {
            x.apply(r.clone());
        }
        for r in recs.iter().rev().chain(recs.iter()) {
            y.apply(r.clone());
        }
        assert_eq!(x, y);
        assert_eq!(x.digest(), y.digest());
        assert!(!x.get("a").unwrap().online, "(2,3) beats (2,2)");
    }

    #[test]
    fn clock_moves_past_what_was_seen() {
        let mut d = Directory::default();
        d.apply(rec("a", 41, 2, false));
        assert_eq!(d.next_version(1), Version { counter: 42, server: 1 });
    }
}
