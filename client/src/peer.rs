//! The peer link, a state machine without sockets: sends peer messages with an id and resends
//! them until acknowledged, at most [`TRIES`] times; acknowledges every incoming message and
//! hands each one over once (duplicates are acknowledged again but not repeated). A message
//! that is never acknowledged is handed back as `Failed`, for the cloud to relay or buffer.

use common::protocol::{Envelope, Msg};
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::net::SocketAddr;

/// Direct tries before a message is given up to the cloud.
pub const TRIES: u32 = 3;
/// Wait for an acknowledgement before trying again, ms.
pub const TRY_MS: u64 = 300;
/// Incoming message ids remembered for deduplication.
pub const REMEMBER: usize = 4096;

/// What the link reports.
#[derive(Debug, Clone, PartialEq)]
pub enum LinkEvent {
    /// The recipient acknowledged.
    Delivered { id: u64 },
    /// No acknowledgement after every try.
    Failed { envelope: Envelope },
    /// A new message for us (`from` is where it came from: the peer, or a server relaying it).
    Incoming { from: SocketAddr, envelope: Envelope },
}

#[derive(Debug, Clone)]
struct Pending {
    to: SocketAddr,
    envelope: Envelope,
    tries: u32,
    last: u64,
}

/// One user's peer link.
#[derive(Debug)]
pub struct PeerLink {
    me: String,
    next_id: u64,
    pending: BTreeMap<u64, Pending>,
    seen: HashSet<(String, u64)>,
    seen_order: VecDeque<(String, u64)>,
    out: Vec<(SocketAddr, Msg)>,
    events: VecDeque<LinkEvent>,
}

impl PeerLink {
    /// A link for user `me`; `id_base` should be random so ids differ across restarts.
    pub fn new(me: &str, id_base: u64) -> Self {
        PeerLink {
            me: me.into(),
            next_id: id_base & !0xffff_ffff,
            pending: BTreeMap::new(),
            seen: HashSet::new(),
            seen_order: VecDeque::new(),
            out: Vec::new(),
            events: VecDeque::new(),
        }
    }

    /// A fresh message id.
    pub fn next_id(&mut self) -> u64 {
        self.next_id = self.next_id.wrapping_add(1);
        self.next_id
    }

    /// Sends `envelope` to `to`, resending until acknowledged or [`TRIES`] are spent.
    pub fn send(&mut self, now: u64, to: SocketAddr, envelope: Envelope) {
        self.out.push((to, Msg::Peer(envelope.clone())));
        self.pending.insert(envelope.id, Pending { to, envelope, tries: 1, last: now });
    }

    /// Handles a datagram addressed to this link.
    pub fn on_message(&mut self, from: SocketAddr, msg: Msg) {
        match msg {
            Msg::Peer(envelope) => {
                if envelope.to != self.me {
                    return;
                }
                self.out.push((from, Msg::PeerAck { id: envelope.id, from: self.me.clone() }));
                let key = (envelope.from.clone(), envelope.id);
                if self.seen.insert(key.clone()) {
                    self.seen_order.push_back(key);
                    while self.seen_order.len() > REMEMBER {
                        if let Some(old) = self.seen_order.pop_front() {
                            self.seen.remove(&old);
                        }
                    }
                    self.events.push_back(LinkEvent::Incoming { from, envelope });
                }
            }
            Msg::PeerAck { id, .. } if self.pending.remove(&id).is_some() => {
                self.events.push_back(LinkEvent::Delivered { id });
            }
            _ => {}
        }
    }

    /// Resends what is due; gives up after the last try.
    pub fn tick(&mut self, now: u64) {
        let due: Vec<u64> = self.pending.iter().filter(|(_, p)| now >= p.last + TRY_MS).map(|(&id, _)| id).collect();
        for id in due {
            let Some(p) = self.pending.get_mut(&id) else { continue };
            if p.tries >= TRIES {
                if let Some(p) = self.pending.remove(&id) {
                    self.events.push_back(LinkEvent::Failed { envelope: p.envelope });
                }
                continue;
            }
            p.tries += 1;
            p.last = now;
            self.out.push((p.to, Msg::Peer(p.envelope.clone())));
        }
    }

    /// Marks that `id` was handed to the cloud instead (no more direct tries).
    pub fn forget(&mut self, id: u64) {
        self.pending.remove(&id);
    }

    /// Datagrams to send.
    pub fn drain_out(&mut self) -> Vec<(SocketAddr, Msg)> {
        std::mem::take(&mut self.out)
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<LinkEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::protocol::PeerBody;

    fn env(id: u64, from: &str, to: &str) -> Envelope {
        Envelope { id, from: from.into(), to: to.into(), body: PeerBody::GalleryRequest { transfer: 1 } }
    }

    fn addr(p: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], p))
    }

    #[test]
    fn three_tries_then_failed() {
        let mut l = PeerLink::new("alice", 0);
        l.send(0, addr(1), env(5, "alice", "bob"));
        assert_eq!(l.drain_out().len(), 1);
        l.tick(TRY_MS);
        l.tick(2 * TRY_MS);
        assert_eq!(l.drain_out().len(), 2, "two more tries");
        l.tick(3 * TRY_MS);
        assert!(matches!(l.poll_event(), Some(LinkEvent::Failed { .. })));
        assert!(l.drain_out().is_empty());
    }

    #[test]
    fn ack_delivers_and_duplicates_are_acked_but_not_repeated() {
        let mut a = PeerLink::new("alice", 0);
        let mut b = PeerLink::new("bob", 0);
        a.send(0, addr(2), env(7, "alice", "bob"));
        for (_, m) in a.drain_out() {
            b.on_message(addr(1), m.clone());
            b.on_message(addr(1), m);
        }
        assert!(matches!(b.poll_event(), Some(LinkEvent::Incoming { .. })));
        assert!(b.poll_event().is_none(), "delivered once");
        let acks = b.drain_out();
        assert_eq!(acks.len(), 2, "acknowledged twice");
        for (_, m) in acks {
            a.on_message(addr(2), m);
        }
        assert_eq!(a.poll_event(), Some(LinkEvent::Delivered { id: 7 }));
        a.tick(10 * TRY_MS);
        assert!(a.poll_event().is_none());
    }

    #[test]
    fn messages_for_someone_else_are_ignored() {
        let mut b = PeerLink::new("bob", 0);
        b.on_message(addr(1), Msg::Peer(env(1, "alice", "carol")));
        assert!(b.poll_event().is_none());
        assert!(b.drain_out().is_empty());
    }
}
