//! The cloud's count of views: each share (owner, viewer, image) is a numbered line of view
//! *slots*, and a view is the request that spends one slot. Spending slot `k` is the request
//! whose id is [`slot_rid`]`(share, k)`: the cluster decides each request exactly once (Paxos
//! per request), so each slot is spent at most once, whatever is retried, duplicated or
//! replayed. The owner's grant opens a *window* of slots above every slot used so far; a slot
//! is spendable only inside the current window and above `top`, the highest slot used. So the
//! views that ever succeed are distinct slots of windows the owner opened: never more than the
//! owner granted, and none once a revoke (an empty window) is in the directory.
//!
//! The share key never leaves the cloud except wrapped: the owner receives it (to seal the
//! image under [`image_key`] and tag rights under [`rights_key`]); the viewer receives only the
//! rights key at delivery, and the image key once per view, wrapped under a key derived from its
//! own wrapping key and a nonce it drew for that view and keeps in memory only
//! ([`view_wrap_key`]): an answer saved or replayed later opens for no other attempt.
//!
//! Pure functions and plain data: the server's directory and operations, the client and the
//! simulations all use this file.

use crate::crypto::{self, Key};
use crate::protocol::{RequestId, Version};
use serde::{Deserialize, Serialize};

/// Most views one grant may open, and the highest slot number.
pub const MAX_VIEWS: u32 = 1_000_000;
/// Most shares one owner keeps in the directory (a record must fit one datagram).
pub const MAX_SHARES: usize = 128;
/// Longest offline lease, seconds (a week).
pub const MAX_LEASE_SECS: u32 = 7 * 24 * 3600;
/// Most views one lease may take.
pub const MAX_LEASE_VIEWS: u32 = 100;

/// Whether a viewer may keep views for offline use, and how many and for how long.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeasePolicy {
    /// Most views one lease may take (0: no leases).
    pub views: u32,
    /// How long a lease lasts, seconds.
    pub secs: u32,
}

/// One share as the cloud counts it, kept in the owner's directory record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareRecord {
    /// Who may view.
    pub viewer: String,
    /// Which of the owner's images.
    pub image_id: String,
    /// The share key (64 hex digits), made by the cloud at the first approval.
    pub key: String,
    /// The window of spendable slots the latest grant opened: `from..=to` (empty when
    /// `to < from`: revoked).
    pub from: u32,
    /// See `from`.
    pub to: u32,
    /// The number of the latest grant (the viewer applies only newer rights messages).
    pub grant: u64,
    /// Offline leases the owner allows.
    #[serde(default)]
    pub lease: LeasePolicy,
    /// When the grant fields (`key` to `lease`) were last written: the newer write wins a merge.
    pub version: Version,
    /// The highest slot used (spent, or refused and so burned); only grows.
    pub top: u32,
}

impl ShareRecord {
    /// A new share with no views.
    pub fn new(viewer: &str, image_id: &str, key: &Key, version: Version) -> ShareRecord {
        ShareRecord {
            viewer: viewer.into(),
            image_id: image_id.into(),
            key: crypto::to_hex(key),
            from: 1,
            to: 0,
            grant: 0,
            lease: LeasePolicy::default(),
            version,
            top: 0,
        }
    }

    /// Views left: the slots of the window above `top`.
    pub fn left(&self) -> u32 {
        self.to.saturating_sub(self.top.max(self.from.saturating_sub(1)))
    }

    /// The next slot a view should try.
    pub fn next_slot(&self) -> u32 {
        self.top.max(self.from.saturating_sub(1)).saturating_add(1)
    }

    /// Opens a new window of `left` views above every slot used so far (0: revoked) and counts
    /// a new grant; returns its number.
    pub fn set_left(&mut self, left: u32, version: Version) -> u64 {
        self.from = self.top.saturating_add(1);
        self.to = self.top.saturating_add(left.min(MAX_VIEWS)).min(u32::MAX - 1);
        self.grant += 1;
        self.version = version;
        self.grant
    }

    /// May slot `k` be spent now?
    pub fn spendable(&self, k: u32) -> bool {
        k > self.top && k >= self.from && k <= self.to
    }

    /// The share key.
    pub fn share_key(&self) -> Option<Key> {
        crypto::key_from_hex(&self.key)
    }

    /// The join of two replicas of the same share: the newer grant fields, the higher top. It is
    /// commutative, associative and idempotent, so replicas converge in any order.
    pub fn merge(&self, other: &ShareRecord) -> ShareRecord {
        let mut m =
            if (other.grant, other.version) > (self.grant, self.version) { other.clone() } else { self.clone() };
        m.top = self.top.max(other.top);
        m
    }
}

/// The owner's shares of `newer` and `older` joined share by share (see [`ShareRecord::merge`]).
pub fn merge_shares(newer: &[ShareRecord], older: &[ShareRecord]) -> Vec<ShareRecord> {
    let mut out: Vec<ShareRecord> = newer.to_vec();
    for o in older {
        match out.iter_mut().find(|s| s.viewer == o.viewer && s.image_id == o.image_id) {
            Some(s) => *s = s.merge(o),
            None => out.push(o.clone()),
        }
    }
    out.sort_by(|a, b| (&a.viewer, &a.image_id).cmp(&(&b.viewer, &b.image_id)));
    out
}

/// The request id that spends slot `slot` of a share: the same for every client, so the cluster
/// decides each slot once.
pub fn slot_rid(owner: &str, viewer: &str, image_id: &str, slot: u32) -> RequestId {
    let h = crypto::tag(b"imgcloud v1 view slot", &[owner.as_bytes(), viewer.as_bytes(), image_id.as_bytes()]);
    let mut c = [0u8; 8];
    c.copy_from_slice(&h[..8]);
    RequestId { client: u64::from_le_bytes(c), seq: slot as u64 }
}

/// The key the hidden image is sealed under, from the share key.
pub fn image_key(share_key: &Key) -> Key {
    crypto::tag(share_key, &[b"imgcloud v1 shared image key"])
}

/// The key rights messages are tagged under, from the share key (the viewer holds this one).
pub fn rights_key(share_key: &Key) -> Key {
    crypto::tag(share_key, &[b"imgcloud v1 rights key"])
}

/// The key a view's answer is sealed under: the viewer's wrapping key and the view's nonce.
pub fn view_wrap_key(viewer_wrap: &Key, nonce: &str) -> Key {
    crypto::tag(viewer_wrap, &[b"imgcloud v1 view", nonce.as_bytes()])
}

/// Associated data of a view's answer: the share and the slot.
pub fn view_aad(owner: &str, viewer: &str, image_id: &str, slot: u32) -> Vec<u8> {
    format!("imgcloud view\0{owner}\0{viewer}\0{image_id}\0{slot}").into_bytes()
}

/// A fresh nonce for one view (32 hex digits).
pub fn new_nonce() -> String {
    crypto::to_hex(&crypto::random_key()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(counter: u64) -> Version {
        Version { counter, server: 1 }
    }

    fn share() -> ShareRecord {
        ShareRecord::new("bob", "cat", &[7u8; 32], v(1))
    }

    #[test]
    fn a_grant_opens_a_window_above_every_used_slot() {
        let mut s = share();
        assert_eq!(s.left(), 0);
        assert!(!s.spendable(1));
        s.set_left(2, v(2));
        assert_eq!((s.left(), s.next_slot()), (2, 1));
        assert!(s.spendable(1) && s.spendable(2) && !s.spendable(3));
        s.top = 1;
        assert_eq!((s.left(), s.next_slot()), (1, 2));
        s.top = 5; // a refused slot 5 burned 2..5
        assert_eq!(s.left(), 0);
        s.set_left(3, v(3));
        assert_eq!((s.from, s.to, s.left(), s.next_slot()), (6, 8, 3, 6));
        assert!(!s.spendable(2), "a hole below the window stays dead");
        s.set_left(0, v(4));
        assert_eq!(s.left(), 0);
        assert!(!s.spendable(6), "revoked");
    }

    #[test]
    fn merging_is_a_join() {
        let mut a = share();
        a.set_left(3, v(2));
        let mut b = a.clone();
        b.top = 2; // a view spent on another replica
        let mut c = a.clone();
        c.set_left(0, v(3)); // a revoke
        for (x, y, z) in [(&a, &b, &c), (&c, &b, &a), (&b, &a, &c), (&c, &a, &b)] {
            let m = x.merge(y).merge(z);
            assert_eq!((m.grant, m.top, m.to), (2, 2, 0), "revoke and spend both kept");
            assert_eq!(m, m.merge(x), "idempotent");
        }
    }

    #[test]
    fn slot_rids_are_per_share_and_slot() {
        let r = slot_rid("alice", "bob", "cat", 3);
        assert_eq!(r, slot_rid("alice", "bob", "cat", 3));
        assert_eq!(r.seq, 3);
        assert_ne!(r.client, slot_rid("alice", "bob", "dog", 3).client);
        assert_ne!(r.client, slot_rid("alice", "carol", "cat", 3).client);
    }
}
