//! The directory of service: users, addresses, online state and shared image ids.
//!
//! Each user is one last-writer-wins record versioned by (Lamport counter, server id), so
//! replicas that apply the same records in any order, any number of times, end up equal.

use common::config::ServerId;
use common::protocol::{UserInfo, UserRecord, Version};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The replicated directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Directory {
    users: BTreeMap<String, UserRecord>,
    clock: u64,
}

impl Directory {
    /// Applies a record if it is newer than ours; returns true if it changed anything.
    pub fn apply(&mut self, rec: UserRecord) -> bool {
        self.clock = self.clock.max(rec.version.counter);
        match self.users.get(&rec.name) {
            Some(old) if old.version >= rec.version => false,
            _ => {
                self.users.insert(rec.name.clone(), rec);
                true
            }
        }
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
            token: "t".into(),
            addr: None,
            online,
            images: vec![],
            version: Version { counter, server },
            created_by: RequestId { client: 1, seq: 1 },
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
