//! Reliable, fragmented transfer of whole payloads over UDP, as a socket-free state machine.
//!
//! A [`Transfers`] value multiplexes many outgoing and incoming transfers, each named by a
//! [`TransferId`] chosen by the application. It owns no socket, thread, clock or randomness:
//! the shell hands it datagrams ([`Transfers::step`]) and the time ([`Transfers::tick`], with
//! `now` in milliseconds), sends what [`Transfers::poll_send`] returns, and reads the results
//! from [`Transfers::poll_event`]. [`Transfers::next_deadline`] says how long the shell may
//! sleep. Everything is deterministic, so the same inputs replay the same run.
//!
//! # Protocol
//!
//! The sender cuts the payload into `chunk_size` pieces (an empty payload is one empty chunk)
//! and keeps at most `window` unacknowledged chunks in flight. Every data datagram repeats the
//! whole transfer's shape (chunk count, total length, chunk size and a CRC-32 of the whole
//! payload), so whichever chunk arrives first lets the receiver reserve exactly `total_len`
//! bytes, once, and only for a transfer it was told to [`Transfers::expect`]. Data for any
//! other id is dropped without allocating.
//!
//! The receiver answers with selective acks: the cumulative ack `cum` (every chunk below it is
//! held) and a bitmap of the chunks after `cum` that it also holds. It acks every `ack_every`
//! new chunks, at once on a gap, a duplicate or the last chunk, and otherwise after
//! `ack_delay_ms` (on `tick`). When the last chunk is in, it checks the CRC-32 of the whole
//! payload: a match delivers [`TransferEvent::Received`] and a final ack; a mismatch fails the
//! transfer and sends [`TransferMsg::Cancel`]. Ids completed recently are remembered (bounded),
//! so late retransmissions are re-acked (letting the sender finish) but never delivered twice.
//!
//! The sender retransmits a chunk when its timer expires (RTO adapted from measured round
//! trips, Karn's rule, exponential backoff) or at once when three acks in a row show a chunk
//! sent after it arrived while it is still missing (fast retransmit). The transfer is `Sent`
//! when every chunk is acknowledged. Either side abandons a transfer whose peer has been
//! silent for `give_up_ms` ([`TransferEvent::Failed`]) and frees its memory.
//!
//! # Resuming
//!
//! An incoming transfer that breaks off (its sender silent for `give_up_ms`, a cancel by either
//! side, a newer transfer of the same bytes starting) keeps its partial payload, at most `resume_bytes` in all for `resume_ms`. When a later
//! transfer, under any id and from any peer, announces the same shape (the payload's length,
//! chunking and CRC-32), the receiver adopts the partial ([`TransferEvent::Resumed`]) and acks at
//! once; the sender takes a cumulative ack beyond what it sent, or bitmap bits for chunks it has
//! not sent yet, as chunks it need not send. Nothing changes on the wire. The shell may save the
//! partials ([`Transfers::partials`]) and give them back after a restart ([`Transfers::restore`]).
//! If adopted bytes were wrong after all, the CRC-32 fails, the partial is dropped and the next
//! retry starts from zero.
//!
//! # Wire format (all integers little-endian)
//!
//! ```text
//! Data   : B7 01 id:u64 seq:u32 total_chunks:u32 total_len:u64 chunk_size:u16 crc32:u32 len:u16 data[len]
//! Ack    : B7 02 id:u64 cum:u32 nbytes:u16 bitmap[nbytes]      (bit i of the bitmap = chunk cum+1+i)
//! Cancel : B7 03 id:u64 by:u8 (1 sender, 2 receiver) reason:u8
//! ```
//!
//! [`TransferMsg::decode`] checks every field against the others (chunk count matches length and
//! chunk size, `seq < total_chunks`, `len` is exactly the size of that chunk and of the rest of
//! the datagram, bounded bitmap, known codes) and never panics.

pub mod cc;
mod recv;
mod resume;
mod send;
mod wire;

pub use resume::{Partial, PartialView, Shape};
pub use wire::*;

use recv::{Closed, InStep, Incoming, Recent};
use resume::Parked;
use send::{Outgoing, Rtt};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

/// Largest fixed window (chunks in flight per transfer).
pub const MAX_WINDOW: usize = 1024;
/// Bytes in flight on a local path (loopback): three local chunks, under Linux's default
/// 208 KB receive buffer, which a burst on loopback fills at once.
pub const DEFAULT_INFLIGHT_BYTES: usize = 3 * LOCAL_CHUNK_SIZE;
/// Payload per datagram off loopback: with the frame (4 bytes) and the data header (34 bytes) a
/// datagram of 1,438 bytes, which a 1,500-byte MTU carries unfragmented over IPv4 and IPv6
/// (1,472 and 1,452 bytes of UDP payload), with room left for a PPPoE or VPN header.
pub const NET_CHUNK_SIZE: usize = 1400;
/// Payload per datagram on loopback, where IP fragments cannot be lost.
pub const LOCAL_CHUNK_SIZE: usize = 48_000;

/// What a transfer needs to know about a peer's address: whether the path to it is local.
pub trait PathHint {
    /// True for a peer reached over loopback (large datagrams are free there).
    fn is_local(&self) -> bool {
        false
    }
}

impl PathHint for std::net::SocketAddr {
    fn is_local(&self) -> bool {
        self.ip().is_loopback()
    }
}

impl PathHint for u8 {}
impl PathHint for u16 {}
impl PathHint for u32 {}
impl PathHint for u64 {}

/// Acks showing a later-sent chunk received before a missing chunk is retransmitted.
const DUP_THRESH: u8 = 3;
/// `Dropped` events are only queued while fewer than this many events wait (junk cannot grow memory).
const MAX_QUEUED_FOR_DROPPED: usize = 1024;
/// Largest exponential backoff shift.
const MAX_BACKOFF: u32 = 16;
/// Peers whose measured RTT is remembered for the next transfer.
const MAX_PEER_RTT: usize = 4096;

/// Tuning of [`Transfers`]; `Default` suits loopback and LAN.
#[derive(Debug, Clone, PartialEq)]
pub struct TransferConfig {
    /// Payload bytes per data datagram to a peer off loopback (1..=`MAX_CHUNK_SIZE`).
    pub chunk_size: usize,
    /// Payload bytes per data datagram to a peer on loopback.
    pub local_chunk_size: usize,
    /// A fixed cap on unacknowledged chunks per transfer (1..=`MAX_WINDOW`); `None`: the
    /// congestion controller alone decides.
    pub window: Option<usize>,
    /// Largest payload sent or accepted (at most `WIRE_MAX_PAYLOAD`).
    pub max_payload: usize,
    /// Retransmit timeout before any round trip was measured.
    pub rto_ms: u64,
    /// Floor of the adaptive retransmit timeout.
    pub min_rto_ms: u64,
    /// Ceiling of the retransmit timeout, backoff included.
    pub max_rto_ms: u64,
    /// A transfer whose peer has been silent this long is abandoned (also an unused `expect`).
    pub give_up_ms: u64,
    /// The receiver acks after this many new in-order chunks (at most half the window, so the
    /// sender never stalls waiting for an ack).
    pub ack_every: u32,
    /// An ack owed for fewer chunks is sent after this delay (on `tick`).
    pub ack_delay_ms: u64,
    /// Most incoming transfers (expected or running) at once.
    pub max_incoming: usize,
    /// How many completed or failed incoming ids are remembered to re-ack or re-cancel.
    pub recent_capacity: usize,
    /// Payloads larger than this emit `Progress` events every this many bytes (0: never).
    pub progress_step: u64,
    /// Bytes of partial payloads kept for resuming (oldest out first; 0: never resume).
    pub resume_bytes: usize,
    /// How long a partial payload is kept for resuming, ms.
    pub resume_ms: u64,
}

impl Default for TransferConfig {
    fn default() -> Self {
        TransferConfig {
            chunk_size: NET_CHUNK_SIZE,
            local_chunk_size: LOCAL_CHUNK_SIZE,
            window: None,
            max_payload: 50 * 1024 * 1024,
            rto_ms: 200,
            min_rto_ms: 10,
            max_rto_ms: 1000,
            give_up_ms: 5000,
            ack_every: 4,
            ack_delay_ms: 2,
            max_incoming: 64,
            recent_capacity: 1024,
            progress_step: 1024 * 1024,
            resume_bytes: 64 * 1024 * 1024,
            resume_ms: 10 * 60 * 1000,
        }
    }
}

impl TransferConfig {
    /// The defaults with one chunk size on every path.
    pub fn with_chunk_size(chunk_size: usize) -> Self {
        let chunk_size = chunk_size.clamp(1, MAX_CHUNK_SIZE);
        TransferConfig { chunk_size, local_chunk_size: chunk_size, ..TransferConfig::default() }
    }

    /// Payload bytes per data datagram to `peer`.
    pub fn chunk_for(&self, peer: &impl PathHint) -> usize {
        if peer.is_local() {
            self.local_chunk_size
        } else {
            self.chunk_size
        }
    }

    /// This config with every field forced into its valid range.
    pub fn normalized(&self) -> Self {
        let min_rto_ms = self.min_rto_ms.max(1);
        let max_rto_ms = self.max_rto_ms.max(min_rto_ms);
        TransferConfig {
            chunk_size: self.chunk_size.clamp(1, MAX_CHUNK_SIZE),
            local_chunk_size: self.local_chunk_size.clamp(1, MAX_CHUNK_SIZE),
            window: self.window.map(|w| w.clamp(1, MAX_WINDOW)),
            max_payload: self.max_payload.min(usize::try_from(WIRE_MAX_PAYLOAD).unwrap_or(usize::MAX)),
            rto_ms: self.rto_ms.clamp(min_rto_ms, max_rto_ms),
            min_rto_ms,
            max_rto_ms,
            give_up_ms: self.give_up_ms.max(1),
            ack_every: self.ack_every.clamp(1, (self.window.map_or(8, |w| w.clamp(1, MAX_WINDOW)) as u32 / 2).max(1)),
            ack_delay_ms: self.ack_delay_ms,
            max_incoming: self.max_incoming,
            recent_capacity: self.recent_capacity,
            progress_step: self.progress_step,
            resume_bytes: self.resume_bytes,
            resume_ms: self.resume_ms.max(1),
        }
    }
}

/// What happened to a transfer, for the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferEvent<A> {
    /// An expected payload arrived whole and passed its checksum (delivered once).
    Received {
        /// The transfer.
        id: TransferId,
        /// The sender.
        from: A,
        /// The payload.
        payload: Vec<u8>,
    },
    /// Every chunk of an outgoing payload was acknowledged.
    Sent {
        /// The transfer.
        id: TransferId,
        /// The receiver.
        to: A,
    },
    /// The transfer was abandoned; its state is freed.
    Failed {
        /// The transfer.
        id: TransferId,
        /// The other end.
        peer: A,
        /// True for an outgoing transfer, false for an incoming one.
        outgoing: bool,
        /// Why.
        reason: String,
    },
    /// Progress of a payload larger than `progress_step`, every `progress_step` bytes.
    Progress {
        /// The transfer.
        id: TransferId,
        /// The other end.
        peer: A,
        /// True for an outgoing transfer.
        outgoing: bool,
        /// Bytes acknowledged (outgoing) or received (incoming).
        done: u64,
        /// Payload length.
        total: u64,
    },
    /// An incoming transfer carries the same bytes as one that broke off earlier: it starts
    /// from the `held` bytes kept (the sender sends only the rest).
    Resumed {
        /// The transfer.
        id: TransferId,
        /// The sender.
        peer: A,
        /// Bytes already held.
        held: u64,
        /// Payload length.
        total: u64,
    },
    /// A datagram was ignored (e.g. data for a transfer nobody expected); for logs only.
    Dropped {
        /// The transfer it named.
        id: TransferId,
        /// Who sent it.
        from: A,
        /// Why it was ignored.
        reason: &'static str,
    },
}

/// Counters for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransferStats {
    /// Data datagrams produced, retransmissions included.
    pub data_sent: u64,
    /// Data datagrams produced again after a timeout or fast retransmit.
    pub retransmits: u64,
    /// Retransmissions triggered by selective acks.
    pub fast_retransmits: u64,
    /// Acks showing an earlier retransmission was needless (the reordering window then grows).
    pub spurious: u64,
    /// Retransmit timer expiries (per transfer and tick).
    pub timeouts: u64,
    /// Acks produced (re-acks of completed transfers included).
    pub acks_sent: u64,
    /// Data chunks received that were already held.
    pub duplicates: u64,
    /// Data datagrams ignored (not expected, wrong peer).
    pub dropped: u64,
    /// Acks and cancels ignored (unknown transfer, wrong peer, impossible ack).
    pub ignored: u64,
}

/// Output queues shared by all transfers.
pub(super) struct Io<A> {
    outbox: VecDeque<(A, TransferMsg)>,
    events: VecDeque<TransferEvent<A>>,
    order: u64,
    stats: TransferStats,
}

impl<A> Io<A> {
    fn dropped(&mut self, id: TransferId, from: A, reason: &'static str) {
        self.stats.dropped += 1;
        if self.events.len() < MAX_QUEUED_FOR_DROPPED {
            self.events.push_back(TransferEvent::Dropped { id, from, reason });
        }
    }

    fn next_order(&mut self) -> u64 {
        self.order += 1;
        self.order
    }
}

/// One transfer's progress so far, for [`progress_event`].
pub(super) struct Moved<A> {
    pub(super) id: TransferId,
    pub(super) peer: A,
    pub(super) outgoing: bool,
    pub(super) done: u64,
    pub(super) total: u64,
}

/// Emits a `Progress` event when `done` crossed the next multiple of `step`.
pub(super) fn progress_event<A>(io: &mut Io<A>, step: u64, next: &mut u64, m: Moved<A>) {
    let Moved { id, peer, outgoing, done, total } = m;
    if step == 0 || total <= step || done < *next || done >= total {
        return;
    }
    *next = (done / step).saturating_add(1).saturating_mul(step);
    io.events.push_back(TransferEvent::Progress { id, peer, outgoing, done, total });
}

/// Many outgoing and incoming transfers, keyed by id, with peers addressed by `A`.
pub struct Transfers<A: Copy + Eq + Hash + fmt::Debug + PathHint> {
    cfg: TransferConfig,
    out: BTreeMap<TransferId, Outgoing<A>>,
    inc: BTreeMap<TransferId, Incoming<A>>,
    recent: Recent<A>,
    parked: Parked,
    peer_rtt: HashMap<A, Rtt>,
    io: Io<A>,
}

impl<A: Copy + Eq + Hash + fmt::Debug + PathHint> Transfers<A> {
    /// An empty multiplexer using `cfg` (normalized into valid ranges).
    pub fn new(cfg: TransferConfig) -> Self {
        Transfers {
            cfg: cfg.normalized(),
            out: BTreeMap::new(),
            inc: BTreeMap::new(),
            recent: Recent { map: HashMap::new(), order: VecDeque::new() },
            parked: Parked::default(),
            peer_rtt: HashMap::new(),
            io: Io { outbox: VecDeque::new(), events: VecDeque::new(), order: 0, stats: TransferStats::default() },
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &TransferConfig {
        &self.cfg
    }

    /// Starts sending `payload` to `to` as transfer `id`; the first window is queued at once.
    pub fn send(
        &mut self,
        now: u64,
        id: TransferId,
        to: A,
        payload: impl Into<Arc<[u8]>>,
    ) -> Result<(), TransferError> {
        let payload: Arc<[u8]> = payload.into();
        if payload.len() > self.cfg.max_payload {
            return Err(TransferError::TooLarge { len: payload.len() as u64, max: self.cfg.max_payload as u64 });
        }
        if self.out.contains_key(&id) {
            return Err(TransferError::DuplicateId(id));
        }
        let chunk_size = self.cfg.chunk_for(&to);
        let total_chunks = u32::try_from(chunk_count(payload.len() as u64, chunk_size as u64))
            .map_err(|_| TransferError::Invalid("too many chunks"))?;
        let rtt = self.peer_rtt.get(&to).copied().unwrap_or_else(|| Rtt::new(&self.cfg));
        let cap = self.cfg.window.map(|w| w.saturating_mul(chunk_size));
        let min_rtt = rtt.measured.then_some(rtt.min_rtt);
        let cc = if to.is_local() {
            cc::Bbr::fixed(now, chunk_size, cap.unwrap_or(DEFAULT_INFLIGHT_BYTES))
        } else {
            cc::Bbr::new(now, chunk_size, 0, cap, min_rtt)
        };
        let mut o = Outgoing {
            cc,
            to,
            checksum: crc32(&payload),
            payload,
            chunk_size,
            total_chunks,
            base: 0,
            next_new: 0,
            slots: VecDeque::new(),
            unacked: 0,
            acked_bytes: 0,
            last_heard: now,
            rtt,
            backoff: 0,
            next_progress: self.cfg.progress_step,
            held_ahead: Vec::new(),
        };
        o.pump(id, now, &self.cfg, &mut self.io);
        self.out.insert(id, o);
        Ok(())
    }

    /// Accepts an incoming transfer `id` from `from` of at most `min(max_len, max_payload)` bytes.
    ///
    /// Memory is reserved only when its first valid chunk arrives. If no data comes for
    /// `give_up_ms`, the expectation ends with `Failed`.
    pub fn expect(&mut self, now: u64, id: TransferId, from: A, max_len: usize) -> Result<(), TransferError> {
        if self.inc.contains_key(&id) {
            return Err(TransferError::DuplicateId(id));
        }
        if self.inc.len() >= self.cfg.max_incoming {
            return Err(TransferError::TooManyIncoming);
        }
        self.recent.map.remove(&id);
        self.inc.insert(
            id,
            Incoming {
                from,
                max_len: max_len.min(self.cfg.max_payload),
                last_heard: now,
                asm: None,
                ack_owed: 0,
                ack_due: None,
                next_progress: self.cfg.progress_step,
            },
        );
        Ok(())
    }

    /// Handles one decoded datagram from `from`.
    pub fn step(&mut self, now: u64, from: A, msg: TransferMsg) {
        match msg {
            TransferMsg::Data(d) => self.on_data(now, from, d),
            TransferMsg::Ack { id, cum, sack } => {
                let Some(o) = self.out.get_mut(&id) else {
                    self.io.stats.ignored += 1;
                    return;
                };
                if o.to != from {
                    self.io.stats.ignored += 1;
                    return;
                }
                if o.on_ack(id, now, cum, &sack, &self.cfg, &mut self.io) {
                    if let Some(o) = self.out.remove(&id) {
                        if self.peer_rtt.len() >= MAX_PEER_RTT {
                            self.peer_rtt.clear();
                        }
                        if o.rtt.measured {
                            self.peer_rtt.insert(o.to, o.rtt);
                        }
                        self.io.events.push_back(TransferEvent::Sent { id, to: o.to });
                    }
                }
            }
            TransferMsg::Cancel { id, by: Side::Receiver, reason } => {
                if self.out.get(&id).is_some_and(|o| o.to == from) {
                    self.out.remove(&id);
                    let reason = format!("cancelled by receiver: {reason}");
                    self.io.events.push_back(TransferEvent::Failed { id, peer: from, outgoing: true, reason });
                } else {
                    self.io.stats.ignored += 1;
                }
            }
            TransferMsg::Cancel { id, by: Side::Sender, reason } => {
                if self.inc.get(&id).is_some_and(|i| i.from == from) {
                    if let Some(asm) = self.inc.remove(&id).and_then(|i| i.asm) {
                        self.parked.park(now, asm, self.cfg.resume_bytes);
                    }
                    self.recent.insert(self.cfg.recent_capacity, id, from, Closed::Failed(reason));
                    let reason = format!("cancelled by sender: {reason}");
                    self.io.events.push_back(TransferEvent::Failed { id, peer: from, outgoing: false, reason });
                } else {
                    self.io.stats.ignored += 1;
                }
            }
        }
    }

    fn on_data(&mut self, now: u64, from: A, d: DataChunk) {
        let id = d.id;
        // `decode` already checked this; `step` may also be fed messages built in memory.
        if d.validate(self.cfg.max_payload as u64).is_err() {
            self.io.dropped(id, from, "malformed data chunk");
            return;
        }
        if self.inc.get(&id).is_some_and(|i| i.asm.is_none() && i.from == from) {
            self.supersede(now, id, Shape::of(&d));
        }
        let Some(inc) = self.inc.get_mut(&id) else {
            match self.recent.map.get(&id) {
                Some(&(peer, Closed::Completed { total_chunks })) if peer == from => {
                    self.io.stats.acks_sent += 1;
                    let ack = TransferMsg::Ack { id, cum: total_chunks, sack: Vec::new() };
                    self.io.outbox.push_back((from, ack));
                }
                Some(&(peer, Closed::Failed(reason))) if peer == from => {
                    let cancel = TransferMsg::Cancel { id, by: Side::Receiver, reason };
                    self.io.outbox.push_back((from, cancel));
                }
                _ => self.io.dropped(id, from, "data for a transfer not expected"),
            }
            return;
        };
        if inc.from != from {
            self.io.dropped(id, from, "data from a peer other than the expected one");
            return;
        }
        match inc.on_data(now, d, &mut self.parked, &self.cfg, &mut self.io) {
            InStep::Continue => {}
            InStep::Complete(payload) => {
                let total_chunks = inc.asm.as_ref().map_or(1, |a| a.shape.total_chunks);
                self.inc.remove(&id);
                self.recent.insert(self.cfg.recent_capacity, id, from, Closed::Completed { total_chunks });
                self.io.events.push_back(TransferEvent::Received { id, from, payload });
            }
            InStep::Fail(reason, detail) => {
                self.inc.remove(&id);
                self.fail_incoming(id, from, reason, detail);
            }
        }
    }

    /// A new transfer `id` of payload `shape` starts while an older one of the same bytes is
    /// still running (its sender restarted, or retried before this end gave up): the older
    /// one ends, and what it holds is parked for the new one to adopt.
    fn supersede(&mut self, now: u64, id: TransferId, shape: Shape) {
        let older = self.inc.iter().find(|(k, i)| **k != id && i.asm.as_ref().is_some_and(|a| a.shape == shape));
        let Some(old) = older.map(|(k, _)| *k) else { return };
        if let Some(mut i) = self.inc.remove(&old) {
            if let Some(asm) = i.asm.take() {
                self.parked.park(now, asm, self.cfg.resume_bytes);
            }
            let detail = format!("superseded by transfer {id:x} of the same bytes");
            self.fail_incoming(old, i.from, CancelReason::Cancelled, detail);
        }
    }

    fn fail_incoming(&mut self, id: TransferId, from: A, reason: CancelReason, detail: String) {
        self.recent.insert(self.cfg.recent_capacity, id, from, Closed::Failed(reason));
        self.io.outbox.push_back((from, TransferMsg::Cancel { id, by: Side::Receiver, reason }));
        let reason = format!("{reason}: {detail}");
        self.io.events.push_back(TransferEvent::Failed { id, peer: from, outgoing: false, reason });
    }

    /// Advances timers to `now`: retransmissions, delayed acks, giving up on silent peers.
    pub fn tick(&mut self, now: u64) {
        let Transfers { cfg, out, inc, recent, parked, io, .. } = self;
        parked.expire(now, cfg.resume_ms);
        out.retain(|&id, o| {
            if o.tick(id, now, cfg, io) {
                return true;
            }
            io.outbox.push_back((o.to, TransferMsg::Cancel { id, by: Side::Sender, reason: CancelReason::GaveUp }));
            let reason = format!("receiver silent for {} ms", now.saturating_sub(o.last_heard));
            io.events.push_back(TransferEvent::Failed { id, peer: o.to, outgoing: true, reason });
            false
        });
        inc.retain(|&id, i| {
            if i.tick(id, now, cfg, io) {
                return true;
            }
            let reason = CancelReason::GaveUp;
            if let Some(asm) = i.asm.take() {
                parked.park(now, asm, cfg.resume_bytes);
            }
            recent.insert(cfg.recent_capacity, id, i.from, Closed::Failed(reason));
            io.outbox.push_back((i.from, TransferMsg::Cancel { id, by: Side::Receiver, reason }));
            let reason = format!("sender silent for {} ms", now.saturating_sub(i.last_heard));
            io.events.push_back(TransferEvent::Failed { id, peer: i.from, outgoing: false, reason });
            false
        });
    }

    /// Next datagram to send, with its destination.
    pub fn poll_send(&mut self) -> Option<(A, TransferMsg)> {
        self.io.outbox.pop_front()
    }

    /// Next event for the application.
    pub fn poll_event(&mut self) -> Option<TransferEvent<A>> {
        self.io.events.pop_front()
    }

    /// `(done, total)` bytes of transfer `id` (outgoing checked first); `None` once it ended.
    pub fn progress(&self, id: TransferId) -> Option<(u64, u64)> {
        if let Some(o) = self.out.get(&id) {
            return Some((o.acked_bytes, o.total_len()));
        }
        let i = self.inc.get(&id)?;
        Some(i.asm.as_ref().map_or((0, 0), |a| (a.got_bytes, a.shape.total_len)))
    }

    /// Earliest time at which `tick` has something to do (`None`: nothing is running).
    pub fn next_deadline(&self) -> Option<u64> {
        let outs = self.out.values().map(|o| o.deadline(&self.cfg));
        let ins = self.inc.values().map(|i| i.deadline(&self.cfg));
        outs.chain(ins).chain(self.parked.deadline(self.cfg.resume_ms)).min()
    }

    /// Cancels transfer `id` in both directions, telling the peer; `Failed` follows. False if unknown.
    pub fn cancel(&mut self, id: TransferId) -> bool {
        let mut found = false;
        let reason = CancelReason::Cancelled;
        if let Some(o) = self.out.remove(&id) {
            found = true;
            self.io.outbox.push_back((o.to, TransferMsg::Cancel { id, by: Side::Sender, reason }));
            let text = "cancelled locally".to_string();
            self.io.events.push_back(TransferEvent::Failed { id, peer: o.to, outgoing: true, reason: text });
        }
        if let Some(mut i) = self.inc.remove(&id) {
            found = true;
            if let Some(asm) = i.asm.take() {
                self.parked.park(i.last_heard, asm, self.cfg.resume_bytes);
            }
            self.fail_incoming(id, i.from, reason, "locally".to_string());
        }
        found
    }

    /// Partial payloads held for resuming: those of running incoming transfers, then those
    /// kept after a transfer broke off (for the shell to save across a restart).
    pub fn partials(&self) -> Vec<PartialView<'_>> {
        let running = self.inc.values().filter_map(|i| i.asm.as_ref()).filter(|a| a.got_bytes > 0);
        running.chain(self.parked.iter()).map(|a| a.view()).collect()
    }

    /// Keeps a saved partial payload for resuming, as if its transfer had broken off at `now`.
    pub fn restore(&mut self, now: u64, p: Partial) -> Result<(), TransferError> {
        if p.shape.total_len > self.cfg.max_payload as u64 {
            return Err(TransferError::TooLarge { len: p.shape.total_len, max: self.cfg.max_payload as u64 });
        }
        let asm = recv::Assembly::from_partial(p).map_err(TransferError::Invalid)?;
        self.parked.park(now, asm, self.cfg.resume_bytes);
        Ok(())
    }

    /// Bytes of partial payloads kept for resuming.
    pub fn parked_bytes(&self) -> usize {
        self.parked.bytes()
    }

    /// The application heard from the other end of transfer `id` by another way (for example
    /// that the sender is still working on the payload): its silence timer starts again.
    /// False if unknown.
    pub fn touch(&mut self, now: u64, id: TransferId) -> bool {
        let mut found = false;
        if let Some(o) = self.out.get_mut(&id) {
            o.last_heard = o.last_heard.max(now);
            found = true;
        }
        if let Some(i) = self.inc.get_mut(&id) {
            i.last_heard = i.last_heard.max(now);
            found = true;
        }
        found
    }

    /// Outgoing transfers still running.
    pub fn outgoing_count(&self) -> usize {
        self.out.len()
    }

    /// Incoming transfers expected or running.
    pub fn incoming_count(&self) -> usize {
        self.inc.len()
    }

    /// Bytes reserved for reassembling incoming payloads.
    pub fn buffered_bytes(&self) -> usize {
        self.inc.values().filter_map(|i| i.asm.as_ref()).map(|a| a.buf.capacity()).sum()
    }

    /// Counters since creation.
    pub fn stats(&self) -> &TransferStats {
        &self.io.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crc32_bytewise(data: &[u8]) -> u32 {
        let mut c = !0u32;
        for &b in data {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            }
        }
        !c
    }

    #[test]
    fn acks_come_at_least_twice_per_window() {
        let small = TransferConfig { window: Some(2), ack_every: 4, ..TransferConfig::default() }.normalized();
        assert_eq!(small.ack_every, 1);
        let wide = TransferConfig { window: Some(64), ack_every: 4, ..TransferConfig::default() }.normalized();
        assert_eq!(wide.ack_every, 4);
    }

    #[test]
    fn crc32_matches_reference() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
        let mut rng = crate::rng::Rng::new(9);
        for len in 0..100 {
            let mut v = vec![0u8; len * 7];
            rng.fill(&mut v);
            assert_eq!(crc32(&v), crc32_bytewise(&v));
            let cut = v.len() / 3;
            assert_eq!(crc32_update(crc32(&v[..cut]), &v[cut..]), crc32(&v));
        }
    }

    #[test]
    fn chunk_shapes() {
        assert_eq!(chunk_count(0, 10), 1);
        assert_eq!(chunk_count(10, 10), 1);
        assert_eq!(chunk_count(11, 10), 2);
        assert_eq!(chunk_len_of(0, 1, 0, 10), 0);
        assert_eq!(chunk_len_of(1, 2, 11, 10), 1);
        assert_eq!(chunk_len_of(0, 2, 11, 10), 10);
    }

    #[test]
    fn ack_bitmap_marks_held_chunks() {
        let mut t: Transfers<u8> = Transfers::new(TransferConfig::with_chunk_size(4));
        t.send(0, 1, 2, vec![7u8; 40]).unwrap();
        let msgs: Vec<_> = std::iter::from_fn(|| t.poll_send()).collect();
        assert_eq!(msgs.len(), 10);
        let mut r: Transfers<u8> = Transfers::new(TransferConfig::with_chunk_size(4));
        r.expect(0, 1, 1, 100).unwrap();
        for (i, (_, m)) in msgs.into_iter().enumerate() {
            if i != 2 && i != 5 {
                r.step(1, 1, m);
            }
        }
        let last_ack = std::iter::from_fn(|| r.poll_send()).last().unwrap().1;
        // cum = 2; after it: 3 4 held, 5 missing, 6..=9 held.
        assert_eq!(last_ack, TransferMsg::Ack { id: 1, cum: 2, sack: vec![0b0111_1011] });
    }
}
