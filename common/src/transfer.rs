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

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

/// Names one transfer; chosen by the application and unique per direction at a node.
pub type TransferId = u64;

/// First byte of every transfer datagram, so a shell can tell them from its other messages.
pub const MAGIC: u8 = 0xB7;
const KIND_DATA: u8 = 1;
const KIND_ACK: u8 = 2;
const KIND_CANCEL: u8 = 3;

/// Bytes in front of the chunk data in a data datagram.
pub const DATA_HEADER_LEN: usize = 34;
/// Bytes of an ack datagram without its bitmap.
pub const ACK_HEADER_LEN: usize = 16;
/// Largest chunk size (keeps a data datagram under the 65 507-byte UDP limit).
pub const MAX_CHUNK_SIZE: usize = 65_000;
/// Largest datagram this module ever produces.
pub const MAX_DATAGRAM_LEN: usize = DATA_HEADER_LEN + MAX_CHUNK_SIZE;
/// Largest window (chunks in flight per transfer).
pub const MAX_WINDOW: usize = 1024;
/// Largest selective-ack bitmap in bytes (it covers 2048 chunks after the cumulative ack).
pub const MAX_ACK_BITMAP_BYTES: usize = 256;
/// Hard bound on a payload length that [`TransferMsg::decode`] accepts (2 GiB).
pub const WIRE_MAX_PAYLOAD: u64 = 1 << 31;
/// Bytes in flight per transfer that the default window aims at (under Linux's default receive buffer).
pub const DEFAULT_INFLIGHT_BYTES: usize = 128 * 1024;

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
    /// Payload bytes per data datagram (1..=`MAX_CHUNK_SIZE`); 1024 keeps datagrams under 1200 bytes.
    pub chunk_size: usize,
    /// Unacknowledged chunks in flight per transfer (1..=`MAX_WINDOW`).
    pub window: usize,
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
}

impl Default for TransferConfig {
    fn default() -> Self {
        TransferConfig {
            chunk_size: 16 * 1024,
            window: DEFAULT_INFLIGHT_BYTES / (16 * 1024),
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
        }
    }
}

impl TransferConfig {
    /// The defaults with another chunk size and a window of about `DEFAULT_INFLIGHT_BYTES`.
    pub fn with_chunk_size(chunk_size: usize) -> Self {
        let chunk_size = chunk_size.clamp(1, MAX_CHUNK_SIZE);
        TransferConfig {
            chunk_size,
            window: (DEFAULT_INFLIGHT_BYTES / chunk_size).clamp(2, MAX_WINDOW),
            ..TransferConfig::default()
        }
    }

    /// This config with every field forced into its valid range.
    pub fn normalized(&self) -> Self {
        let min_rto_ms = self.min_rto_ms.max(1);
        let max_rto_ms = self.max_rto_ms.max(min_rto_ms);
        TransferConfig {
            chunk_size: self.chunk_size.clamp(1, MAX_CHUNK_SIZE),
            window: self.window.clamp(1, MAX_WINDOW),
            max_payload: self.max_payload.min(usize::try_from(WIRE_MAX_PAYLOAD).unwrap_or(usize::MAX)),
            rto_ms: self.rto_ms.clamp(min_rto_ms, max_rto_ms),
            min_rto_ms,
            max_rto_ms,
            give_up_ms: self.give_up_ms.max(1),
            ack_every: self.ack_every.clamp(1, (self.window.clamp(1, MAX_WINDOW) as u32 / 2).max(1)),
            ack_delay_ms: self.ack_delay_ms,
            max_incoming: self.max_incoming,
            recent_capacity: self.recent_capacity,
            progress_step: self.progress_step,
        }
    }
}

/// Errors of decoding and of starting transfers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferError {
    /// The datagram ended before a field.
    Truncated,
    /// The first byte is not [`MAGIC`].
    BadMagic,
    /// Unknown message kind.
    UnknownKind(u8),
    /// Bytes left after the message.
    TrailingBytes,
    /// A field is out of range or inconsistent with the others.
    Invalid(&'static str),
    /// A payload longer than allowed.
    TooLarge {
        /// The length asked for.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A transfer with this id is already running in that direction.
    DuplicateId(TransferId),
    /// `max_incoming` transfers are already expected or running.
    TooManyIncoming,
}

impl fmt::Display for TransferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransferError::Truncated => write!(f, "truncated transfer message"),
            TransferError::BadMagic => write!(f, "not a transfer message"),
            TransferError::UnknownKind(k) => write!(f, "unknown transfer message kind {k}"),
            TransferError::TrailingBytes => write!(f, "trailing bytes after transfer message"),
            TransferError::Invalid(what) => write!(f, "invalid transfer message: {what}"),
            TransferError::TooLarge { len, max } => {
                write!(f, "payload of {len} bytes exceeds {max}")
            }
            TransferError::DuplicateId(id) => write!(f, "transfer {id:#x} already running"),
            TransferError::TooManyIncoming => write!(f, "too many incoming transfers"),
        }
    }
}

impl std::error::Error for TransferError {}

/// Which end of a transfer sent a `Cancel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The sending end aborts (the receiver should drop its incoming transfer).
    Sender,
    /// The receiving end aborts (the sender should stop).
    Receiver,
}

impl Side {
    fn code(self) -> u8 {
        match self {
            Side::Sender => 1,
            Side::Receiver => 2,
        }
    }

    fn from_code(c: u8) -> Result<Self, TransferError> {
        match c {
            1 => Ok(Side::Sender),
            2 => Ok(Side::Receiver),
            _ => Err(TransferError::Invalid("cancel side")),
        }
    }
}

/// Why a transfer was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    /// The application cancelled it.
    Cancelled,
    /// The reassembled payload failed its checksum.
    ChecksumMismatch,
    /// The payload exceeds what the receiver accepts.
    TooLarge,
    /// The peer was silent for too long.
    GaveUp,
    /// Inconsistent messages (e.g. chunks disagreeing on the transfer's shape).
    Protocol,
    /// The receiver could not reserve memory.
    NoMemory,
}

impl CancelReason {
    fn code(self) -> u8 {
        match self {
            CancelReason::Cancelled => 1,
            CancelReason::ChecksumMismatch => 2,
            CancelReason::TooLarge => 3,
            CancelReason::GaveUp => 4,
            CancelReason::Protocol => 5,
            CancelReason::NoMemory => 6,
        }
    }

    fn from_code(c: u8) -> Result<Self, TransferError> {
        Ok(match c {
            1 => CancelReason::Cancelled,
            2 => CancelReason::ChecksumMismatch,
            3 => CancelReason::TooLarge,
            4 => CancelReason::GaveUp,
            5 => CancelReason::Protocol,
            6 => CancelReason::NoMemory,
            _ => return Err(TransferError::Invalid("cancel reason")),
        })
    }
}

impl fmt::Display for CancelReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CancelReason::Cancelled => "cancelled",
            CancelReason::ChecksumMismatch => "checksum mismatch",
            CancelReason::TooLarge => "payload too large",
            CancelReason::GaveUp => "peer silent, gave up",
            CancelReason::Protocol => "protocol error",
            CancelReason::NoMemory => "out of memory",
        })
    }
}

/// One chunk of a payload, with the shape of the whole transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataChunk {
    /// The transfer.
    pub id: TransferId,
    /// Index of this chunk (`< total_chunks`).
    pub seq: u32,
    /// Number of chunks of the payload (1 for an empty payload).
    pub total_chunks: u32,
    /// Length of the whole payload.
    pub total_len: u64,
    /// Size of every chunk but the last.
    pub chunk_size: u16,
    /// CRC-32 of the whole payload.
    pub checksum: u32,
    /// The chunk's bytes.
    pub data: Vec<u8>,
}

/// A transfer datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferMsg {
    /// A chunk of payload, sender to receiver.
    Data(DataChunk),
    /// Selective ack, receiver to sender: chunks `< cum` are held, bit i of `sack` = chunk `cum+1+i`.
    Ack {
        /// The transfer.
        id: TransferId,
        /// Every chunk below this is held (the next one missing).
        cum: u32,
        /// Bitmap of held chunks after `cum` (LSB first, at most `MAX_ACK_BITMAP_BYTES`).
        sack: Vec<u8>,
    },
    /// Abort the transfer.
    Cancel {
        /// The transfer.
        id: TransferId,
        /// Which end aborts.
        by: Side,
        /// Why.
        reason: CancelReason,
    },
}

/// Number of chunks of a payload (an empty payload is one empty chunk).
pub fn chunk_count(total_len: u64, chunk_size: u64) -> u64 {
    if total_len == 0 || chunk_size == 0 {
        1
    } else {
        total_len.div_ceil(chunk_size)
    }
}

/// Length of chunk `seq` of a payload cut into `chunk_size` pieces.
fn chunk_len_of(seq: u64, total_chunks: u64, total_len: u64, chunk_size: u64) -> u64 {
    if seq.saturating_add(1) < total_chunks {
        chunk_size
    } else {
        total_len.saturating_sub(total_chunks.saturating_sub(1).saturating_mul(chunk_size))
    }
}

/// Checks a data chunk's header fields against each other and against `max_payload`.
fn check_shape(
    seq: u32,
    total_chunks: u32,
    total_len: u64,
    chunk_size: u16,
    len: usize,
    max_payload: u64,
) -> Result<(), TransferError> {
    if chunk_size == 0 || usize::from(chunk_size) > MAX_CHUNK_SIZE {
        return Err(TransferError::Invalid("chunk size"));
    }
    let max = max_payload.min(WIRE_MAX_PAYLOAD);
    if total_len > max {
        return Err(TransferError::TooLarge { len: total_len, max });
    }
    if chunk_count(total_len, u64::from(chunk_size)) != u64::from(total_chunks) {
        return Err(TransferError::Invalid("chunk count"));
    }
    if seq >= total_chunks {
        return Err(TransferError::Invalid("chunk seq"));
    }
    let expected = chunk_len_of(u64::from(seq), u64::from(total_chunks), total_len, u64::from(chunk_size));
    if len as u64 != expected {
        return Err(TransferError::Invalid("chunk length"));
    }
    Ok(())
}

impl DataChunk {
    /// Checks that the header fields agree with each other, the data and `max_payload`.
    pub fn validate(&self, max_payload: u64) -> Result<(), TransferError> {
        check_shape(self.seq, self.total_chunks, self.total_len, self.chunk_size, self.data.len(), max_payload)
    }
}

/// Bounds-checked little-endian reader.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], TransferError> {
        let end = self.pos.checked_add(n).ok_or(TransferError::Truncated)?;
        let s = self.bytes.get(self.pos..end).ok_or(TransferError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], TransferError> {
        self.take(N)?.try_into().map_err(|_| TransferError::Truncated)
    }

    fn u8(&mut self) -> Result<u8, TransferError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, TransferError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, TransferError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, TransferError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }
}

impl TransferMsg {
    /// The transfer this message belongs to.
    pub fn id(&self) -> TransferId {
        match self {
            TransferMsg::Data(d) => d.id,
            TransferMsg::Ack { id, .. } | TransferMsg::Cancel { id, .. } => *id,
        }
    }

    /// Appends the binary encoding to `out` (a message `decode` would reject encodes to bytes it rejects).
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            TransferMsg::Data(d) => {
                out.reserve(DATA_HEADER_LEN + d.data.len());
                out.push(MAGIC);
                out.push(KIND_DATA);
                out.extend_from_slice(&d.id.to_le_bytes());
                out.extend_from_slice(&d.seq.to_le_bytes());
                out.extend_from_slice(&d.total_chunks.to_le_bytes());
                out.extend_from_slice(&d.total_len.to_le_bytes());
                out.extend_from_slice(&d.chunk_size.to_le_bytes());
                out.extend_from_slice(&d.checksum.to_le_bytes());
                let len = u16::try_from(d.data.len()).unwrap_or(u16::MAX);
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(&d.data);
            }
            TransferMsg::Ack { id, cum, sack } => {
                out.reserve(ACK_HEADER_LEN + sack.len());
                out.push(MAGIC);
                out.push(KIND_ACK);
                out.extend_from_slice(&id.to_le_bytes());
                out.extend_from_slice(&cum.to_le_bytes());
                let n = u16::try_from(sack.len()).unwrap_or(u16::MAX);
                out.extend_from_slice(&n.to_le_bytes());
                out.extend_from_slice(sack);
            }
            TransferMsg::Cancel { id, by, reason } => {
                out.push(MAGIC);
                out.push(KIND_CANCEL);
                out.extend_from_slice(&id.to_le_bytes());
                out.push(by.code());
                out.push(reason.code());
            }
        }
    }

    /// Decodes one datagram, accepting payload lengths up to `WIRE_MAX_PAYLOAD`; never panics.
    pub fn decode(bytes: &[u8]) -> Result<TransferMsg, TransferError> {
        Self::decode_limited(bytes, WIRE_MAX_PAYLOAD)
    }

    /// Decodes one datagram, rejecting payload lengths over `max_payload`; never panics.
    pub fn decode_limited(bytes: &[u8], max_payload: u64) -> Result<TransferMsg, TransferError> {
        let mut r = Reader { bytes, pos: 0 };
        if r.u8()? != MAGIC {
            return Err(TransferError::BadMagic);
        }
        let kind = r.u8()?;
        let id = r.u64()?;
        let msg = match kind {
            KIND_DATA => {
                let seq = r.u32()?;
                let total_chunks = r.u32()?;
                let total_len = r.u64()?;
                let chunk_size = r.u16()?;
                let checksum = r.u32()?;
                let len = r.u16()?;
                check_shape(seq, total_chunks, total_len, chunk_size, usize::from(len), max_payload)?;
                if r.remaining() > usize::from(len) {
                    return Err(TransferError::TrailingBytes);
                }
                let data = r.take(usize::from(len))?.to_vec();
                TransferMsg::Data(DataChunk { id, seq, total_chunks, total_len, chunk_size, checksum, data })
            }
            KIND_ACK => {
                let cum = r.u32()?;
                let n = usize::from(r.u16()?);
                if n > MAX_ACK_BITMAP_BYTES {
                    return Err(TransferError::Invalid("ack bitmap length"));
                }
                if r.remaining() > n {
                    return Err(TransferError::TrailingBytes);
                }
                let sack = r.take(n)?.to_vec();
                TransferMsg::Ack { id, cum, sack }
            }
            KIND_CANCEL => {
                let by = Side::from_code(r.u8()?)?;
                let reason = CancelReason::from_code(r.u8()?)?;
                TransferMsg::Cancel { id, by, reason }
            }
            k => return Err(TransferError::UnknownKind(k)),
        };
        if r.remaining() != 0 {
            return Err(TransferError::TrailingBytes);
        }
        Ok(msg)
    }
}

/// CRC-32 (IEEE 802.3, as in zip/PNG) of `data`.
pub fn crc32(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

/// Continues a CRC-32: `crc32_update(crc32(a), b) == crc32(a ++ b)`.
pub fn crc32_update(crc: u32, data: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new_with_initial(crc);
    h.update(data);
    h.finalize()
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
struct Io<A> {
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

/// Emits a `Progress` event when `done` crossed the next step.
#[allow(clippy::too_many_arguments)]
fn progress_event<A>(
    io: &mut Io<A>,
    step: u64,
    next: &mut u64,
    id: TransferId,
    peer: A,
    outgoing: bool,
    done: u64,
    total: u64,
) {
    if step == 0 || total <= step || done < *next || done >= total {
        return;
    }
    *next = (done / step).saturating_add(1).saturating_mul(step);
    io.events.push_back(TransferEvent::Progress { id, peer, outgoing, done, total });
}

/// Smoothed round-trip estimate (RFC 6298 style, in milliseconds).
#[derive(Debug, Clone, Copy)]
struct Rtt {
    srtt: f64,
    rttvar: f64,
    rto: u64,
    measured: bool,
    /// Smallest sample seen.
    min_rtt: u64,
    /// Extra reordering allowance learnt from spurious retransmissions.
    reo_extra: u64,
}

impl Rtt {
    fn new(cfg: &TransferConfig) -> Self {
        Rtt { srtt: 0.0, rttvar: 0.0, rto: cfg.rto_ms, measured: false, min_rtt: u64::MAX, reo_extra: 0 }
    }

    /// How much later than expected a chunk may be acked before it is taken as lost (RACK).
    fn reorder_window(&self) -> u64 {
        if !self.measured {
            return 0;
        }
        (self.min_rtt / 4 + self.reo_extra).min(self.srtt.ceil() as u64)
    }

    /// An ack came back faster than a retransmission could have: the original was only late.
    fn spurious(&mut self) {
        if self.measured {
            self.reo_extra = (self.reo_extra * 2 + 1).min(self.srtt.ceil() as u64);
        }
    }

    fn sample(&mut self, ms: u64, cfg: &TransferConfig) {
        let r = ms as f64;
        self.min_rtt = self.min_rtt.min(ms);
        if self.measured {
            self.rttvar = 0.75 * self.rttvar + 0.25 * (self.srtt - r).abs();
            self.srtt = 0.875 * self.srtt + 0.125 * r;
        } else {
            self.srtt = r;
            self.rttvar = r / 2.0;
            self.measured = true;
        }
        let rto = self.srtt + (4.0 * self.rttvar).max(1.0) + cfg.ack_delay_ms as f64;
        self.rto = (rto.ceil() as u64).clamp(cfg.min_rto_ms, cfg.max_rto_ms);
    }
}

/// Sender's record of one chunk in flight.
#[derive(Debug, Clone, Copy)]
struct Slot {
    sent_at: u64,
    order: u64,
    tx: u32,
    dup: u8,
    acked: bool,
}

/// One outgoing transfer.
struct Outgoing<A> {
    to: A,
    payload: Arc<[u8]>,
    chunk_size: usize,
    total_chunks: u32,
    checksum: u32,
    /// Lowest chunk not yet acknowledged; `slots[0]` is chunk `base`.
    base: u32,
    /// Next chunk never sent.
    next_new: u32,
    slots: VecDeque<Slot>,
    unacked: usize,
    acked_bytes: u64,
    last_heard: u64,
    rtt: Rtt,
    backoff: u32,
    next_progress: u64,
}

impl<A: Copy> Outgoing<A> {
    fn total_len(&self) -> u64 {
        self.payload.len() as u64
    }

    fn chunk_len(&self, seq: u32) -> u64 {
        chunk_len_of(u64::from(seq), u64::from(self.total_chunks), self.total_len(), self.chunk_size as u64)
    }

    fn data_msg(&self, id: TransferId, seq: u32) -> TransferMsg {
        let start = (seq as usize).saturating_mul(self.chunk_size);
        let end = start.saturating_add(self.chunk_size).min(self.payload.len());
        let data = self.payload.get(start..end).map(<[u8]>::to_vec).unwrap_or_default();
        TransferMsg::Data(DataChunk {
            id,
            seq,
            total_chunks: self.total_chunks,
            total_len: self.total_len(),
            chunk_size: u16::try_from(self.chunk_size).unwrap_or(u16::MAX),
            checksum: self.checksum,
            data,
        })
    }

    fn eff_rto(&self, cfg: &TransferConfig) -> u64 {
        self.rtt.rto.saturating_mul(1u64 << self.backoff.min(MAX_BACKOFF)).min(cfg.max_rto_ms)
    }

    /// Sends new chunks while the window allows.
    fn pump(&mut self, id: TransferId, now: u64, cfg: &TransferConfig, io: &mut Io<A>) {
        let max_span = (cfg.window * 4).min(MAX_ACK_BITMAP_BYTES * 8);
        while self.next_new < self.total_chunks
            && self.unacked < cfg.window
            && ((self.next_new - self.base) as usize) < max_span
        {
            let seq = self.next_new;
            let order = io.next_order();
            self.slots.push_back(Slot { sent_at: now, order, tx: 1, dup: 0, acked: false });
            self.unacked += 1;
            self.next_new += 1;
            io.stats.data_sent += 1;
            io.outbox.push_back((self.to, self.data_msg(id, seq)));
        }
    }

    /// Sends `slots[idx]` again.
    fn retransmit(&mut self, idx: usize, id: TransferId, now: u64, io: &mut Io<A>) {
        let order = io.next_order();
        let Some(slot) = self.slots.get_mut(idx) else {
            return;
        };
        slot.sent_at = now;
        slot.order = order;
        slot.tx = slot.tx.saturating_add(1);
        slot.dup = 0;
        let seq = self.base.saturating_add(u32::try_from(idx).unwrap_or(u32::MAX));
        io.stats.data_sent += 1;
        io.stats.retransmits += 1;
        io.outbox.push_back((self.to, self.data_msg(id, seq)));
    }

    /// Handles an ack; returns true when every chunk is acknowledged.
    fn on_ack(
        &mut self,
        id: TransferId,
        now: u64,
        cum: u32,
        sack: &[u8],
        cfg: &TransferConfig,
        io: &mut Io<A>,
    ) -> bool {
        self.last_heard = now;
        if cum > self.next_new {
            io.stats.ignored += 1;
            return false;
        }
        // Newest transmission order among newly acked chunks, and the send time of the newest
        // chunk sent only once (Karn: retransmitted chunks give ambiguous samples).
        let mut max_order = 0u64;
        let mut newest_once: Option<(u64, u64)> = None;
        let mut spurious = false;
        let min_rtt = if self.rtt.measured { self.rtt.min_rtt } else { 0 };
        let mut note = |slot: &Slot| {
            max_order = max_order.max(slot.order);
            if slot.tx == 1 && newest_once.is_none_or(|(o, _)| slot.order > o) {
                newest_once = Some((slot.order, slot.sent_at));
            }
            if slot.tx > 1 && now.saturating_sub(slot.sent_at) < min_rtt {
                spurious = true;
            }
        };
        while self.base < cum {
            let seq = self.base;
            let Some(slot) = self.slots.pop_front() else {
                break;
            };
            self.base += 1;
            if !slot.acked {
                self.unacked = self.unacked.saturating_sub(1);
                self.acked_bytes += self.chunk_len(seq);
                note(&slot);
            }
        }
        let first = u64::from(cum) + 1;
        for (i, &byte) in sack.iter().enumerate() {
            if byte == 0 {
                continue;
            }
            for bit in 0..8u64 {
                if byte & (1 << bit) == 0 {
                    continue;
                }
                let seq = first + (i as u64) * 8 + bit;
                if seq >= u64::from(self.next_new) {
                    continue;
                }
                let Some(idx) = seq.checked_sub(u64::from(self.base)) else {
                    continue;
                };
                let Some(slot) = self.slots.get_mut(idx as usize) else {
                    continue;
                };
                if slot.acked {
                    continue;
                }
                slot.acked = true;
                let copy = *slot;
                self.unacked = self.unacked.saturating_sub(1);
                self.acked_bytes += self.chunk_len(seq as u32);
                note(&copy);
            }
        }
        while self.slots.front().is_some_and(|s| s.acked) {
            self.slots.pop_front();
            self.base += 1;
        }
        if max_order > 0 {
            self.backoff = 0;
            if spurious {
                io.stats.spurious += 1;
                self.rtt.spurious();
            }
            let mut rack_rtt = self.rtt.srtt as u64;
            if let Some((_, sent_at)) = newest_once {
                rack_rtt = now.saturating_sub(sent_at);
                self.rtt.sample(rack_rtt, cfg);
            }
            // Fast retransmit (RACK-like): a chunk sent before one that just got acked, still
            // missing on DUP_THRESH such acks and overdue by more than the reordering window,
            // is taken as lost.
            let overdue = rack_rtt.saturating_add(self.rtt.reorder_window());
            for idx in 0..self.slots.len() {
                let Some(slot) = self.slots.get_mut(idx) else {
                    break;
                };
                if slot.acked || slot.order >= max_order {
                    continue;
                }
                slot.dup = slot.dup.saturating_add(1);
                if slot.dup >= DUP_THRESH && now >= slot.sent_at.saturating_add(overdue) {
                    io.stats.fast_retransmits += 1;
                    self.retransmit(idx, id, now, io);
                }
            }
            let (done, total) = (self.acked_bytes, self.total_len());
            progress_event(io, cfg.progress_step, &mut self.next_progress, id, self.to, true, done, total);
        }
        if self.base >= self.total_chunks {
            return true;
        }
        self.pump(id, now, cfg, io);
        false
    }

    /// Timers; returns false when the transfer must be abandoned.
    fn tick(&mut self, id: TransferId, now: u64, cfg: &TransferConfig, io: &mut Io<A>) -> bool {
        if now.saturating_sub(self.last_heard) >= cfg.give_up_ms {
            return false;
        }
        let rto = self.eff_rto(cfg);
        let mut fired = false;
        for idx in 0..self.slots.len() {
            let Some(slot) = self.slots.get(idx) else {
                break;
            };
            if !slot.acked && now >= slot.sent_at.saturating_add(rto) {
                if !fired {
                    fired = true;
                    self.backoff = (self.backoff + 1).min(MAX_BACKOFF);
                    io.stats.timeouts += 1;
                }
                self.retransmit(idx, id, now, io);
            }
        }
        self.pump(id, now, cfg, io);
        true
    }

    fn deadline(&self, cfg: &TransferConfig) -> u64 {
        let rto = self.eff_rto(cfg);
        let timers = self.slots.iter().filter(|s| !s.acked).map(|s| s.sent_at.saturating_add(rto));
        timers.fold(self.last_heard.saturating_add(cfg.give_up_ms), u64::min)
    }
}

/// Receiver's reassembly buffer, created by the first valid chunk.
struct Assembly {
    total_len: u64,
    total_chunks: u32,
    chunk_size: u16,
    checksum: u32,
    buf: Vec<u8>,
    have: Vec<u64>,
    /// Every chunk below this is held.
    cum: u32,
    /// One past the highest chunk held.
    high: u32,
    got_bytes: u64,
}

impl Assembly {
    fn has(&self, seq: u64) -> bool {
        self.have.get((seq / 64) as usize).is_some_and(|w| w & (1 << (seq % 64)) != 0)
    }

    fn set(&mut self, seq: u64) {
        if let Some(w) = self.have.get_mut((seq / 64) as usize) {
            *w |= 1 << (seq % 64);
        }
    }

    fn ack_msg(&self, id: TransferId) -> TransferMsg {
        let first = u64::from(self.cum) + 1;
        let end = u64::from(self.high).min(first + (MAX_ACK_BITMAP_BYTES * 8) as u64);
        let mut sack = Vec::new();
        if end > first {
            let nbits = (end - first) as usize;
            sack = vec![0u8; nbits.div_ceil(8)];
            for i in 0..nbits {
                if self.has(first + i as u64) {
                    if let Some(b) = sack.get_mut(i / 8) {
                        *b |= 1 << (i % 8);
                    }
                }
            }
        }
        TransferMsg::Ack { id, cum: self.cum, sack }
    }
}

/// What a data chunk did to an incoming transfer.
enum InStep {
    Continue,
    Complete(Vec<u8>),
    Fail(CancelReason, String),
}

/// One incoming transfer (expected, possibly started).
struct Incoming<A> {
    from: A,
    max_len: usize,
    last_heard: u64,
    asm: Option<Assembly>,
    ack_owed: u32,
    ack_due: Option<u64>,
    next_progress: u64,
}

impl<A: Copy> Incoming<A> {
    fn send_ack(&mut self, id: TransferId, io: &mut Io<A>) {
        if let Some(asm) = &self.asm {
            io.stats.acks_sent += 1;
            io.outbox.push_back((self.from, asm.ack_msg(id)));
        }
        self.ack_owed = 0;
        self.ack_due = None;
    }

    fn on_data(&mut self, now: u64, d: DataChunk, cfg: &TransferConfig, io: &mut Io<A>) -> InStep {
        let id = d.id;
        self.last_heard = now;
        if self.asm.is_none() {
            let max = self.max_len as u64;
            if d.total_len > max {
                return InStep::Fail(CancelReason::TooLarge, format!("{} bytes > limit {max}", d.total_len));
            }
            let Ok(n) = usize::try_from(d.total_len) else {
                return InStep::Fail(CancelReason::TooLarge, "length does not fit memory".into());
            };
            let mut buf = Vec::new();
            if buf.try_reserve_exact(n).is_err() {
                return InStep::Fail(CancelReason::NoMemory, format!("cannot reserve {n} bytes"));
            }
            buf.resize(n, 0);
            self.asm = Some(Assembly {
                total_len: d.total_len,
                total_chunks: d.total_chunks,
                chunk_size: d.chunk_size,
                checksum: d.checksum,
                buf,
                have: vec![0u64; (d.total_chunks as usize).div_ceil(64)],
                cum: 0,
                high: 0,
                got_bytes: 0,
            });
        }
        let Some(asm) = self.asm.as_mut() else {
            return InStep::Continue;
        };
        if (asm.total_len, asm.total_chunks, asm.chunk_size, asm.checksum)
            != (d.total_len, d.total_chunks, d.chunk_size, d.checksum)
        {
            return InStep::Fail(CancelReason::Protocol, "chunks disagree on the transfer's shape".into());
        }
        let seq = d.seq;
        if seq >= asm.total_chunks {
            return InStep::Fail(CancelReason::Protocol, "chunk seq out of range".into());
        }
        if asm.has(u64::from(seq)) {
            io.stats.duplicates += 1;
            self.send_ack(id, io);
            return InStep::Continue;
        }
        let start = (seq as usize).saturating_mul(usize::from(asm.chunk_size));
        let Some(dst) = asm.buf.get_mut(start..start.saturating_add(d.data.len())) else {
            return InStep::Fail(CancelReason::Protocol, "chunk outside the payload".into());
        };
        dst.copy_from_slice(&d.data);
        asm.set(u64::from(seq));
        asm.got_bytes += d.data.len() as u64;
        let (old_cum, old_high) = (asm.cum, asm.high);
        asm.high = asm.high.max(seq + 1);
        while asm.cum < asm.total_chunks && asm.has(u64::from(asm.cum)) {
            asm.cum += 1;
        }
        let (done, total) = (asm.got_bytes, asm.total_len);
        if asm.cum >= asm.total_chunks {
            if crc32(&asm.buf) != asm.checksum {
                return InStep::Fail(CancelReason::ChecksumMismatch, "payload checksum mismatch".into());
            }
            let payload = std::mem::take(&mut asm.buf);
            self.send_ack(id, io);
            return InStep::Complete(payload);
        }
        self.ack_owed += 1;
        let out_of_order = seq != old_cum || old_cum < old_high;
        if out_of_order || self.ack_owed >= cfg.ack_every {
            self.send_ack(id, io);
        } else if self.ack_due.is_none() {
            self.ack_due = Some(now.saturating_add(cfg.ack_delay_ms));
        }
        progress_event(io, cfg.progress_step, &mut self.next_progress, id, self.from, false, done, total);
        InStep::Continue
    }

    /// Timers; returns false when the transfer must be abandoned.
    fn tick(&mut self, id: TransferId, now: u64, cfg: &TransferConfig, io: &mut Io<A>) -> bool {
        if now.saturating_sub(self.last_heard) >= cfg.give_up_ms {
            return false;
        }
        if self.ack_due.is_some_and(|t| now >= t) {
            self.send_ack(id, io);
        }
        true
    }

    fn deadline(&self, cfg: &TransferConfig) -> u64 {
        let give_up = self.last_heard.saturating_add(cfg.give_up_ms);
        self.ack_due.map_or(give_up, |t| t.min(give_up))
    }
}

/// How a recently closed incoming transfer ended.
#[derive(Debug, Clone, Copy)]
enum Closed {
    Completed { total_chunks: u32 },
    Failed(CancelReason),
}

/// Bounded memory of recently closed incoming transfers.
struct Recent<A> {
    map: HashMap<TransferId, (A, Closed)>,
    order: VecDeque<TransferId>,
}

impl<A> Recent<A> {
    fn insert(&mut self, cap: usize, id: TransferId, peer: A, how: Closed) {
        if cap == 0 {
            return;
        }
        if self.map.insert(id, (peer, how)).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > cap {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }
}

/// Many outgoing and incoming transfers, keyed by id, with peers addressed by `A`.
pub struct Transfers<A: Copy + Eq + Hash + fmt::Debug> {
    cfg: TransferConfig,
    out: BTreeMap<TransferId, Outgoing<A>>,
    inc: BTreeMap<TransferId, Incoming<A>>,
    recent: Recent<A>,
    peer_rtt: HashMap<A, Rtt>,
    io: Io<A>,
}

impl<A: Copy + Eq + Hash + fmt::Debug> Transfers<A> {
    /// An empty multiplexer using `cfg` (normalized into valid ranges).
    pub fn new(cfg: TransferConfig) -> Self {
        Transfers {
            cfg: cfg.normalized(),
            out: BTreeMap::new(),
            inc: BTreeMap::new(),
            recent: Recent { map: HashMap::new(), order: VecDeque::new() },
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
        let chunk_size = self.cfg.chunk_size;
        let total_chunks = u32::try_from(chunk_count(payload.len() as u64, chunk_size as u64))
            .map_err(|_| TransferError::Invalid("too many chunks"))?;
        let rtt = self.peer_rtt.get(&to).copied().unwrap_or_else(|| Rtt::new(&self.cfg));
        let mut o = Outgoing {
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
                    self.inc.remove(&id);
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
        match inc.on_data(now, d, &self.cfg, &mut self.io) {
            InStep::Continue => {}
            InStep::Complete(payload) => {
                let total_chunks = inc.asm.as_ref().map_or(1, |a| a.total_chunks);
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

    fn fail_incoming(&mut self, id: TransferId, from: A, reason: CancelReason, detail: String) {
        self.recent.insert(self.cfg.recent_capacity, id, from, Closed::Failed(reason));
        self.io.outbox.push_back((from, TransferMsg::Cancel { id, by: Side::Receiver, reason }));
        let reason = format!("{reason}: {detail}");
        self.io.events.push_back(TransferEvent::Failed { id, peer: from, outgoing: false, reason });
    }

    /// Advances timers to `now`: retransmissions, delayed acks, giving up on silent peers.
    pub fn tick(&mut self, now: u64) {
        let Transfers { cfg, out, inc, recent, io, .. } = self;
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
        Some(i.asm.as_ref().map_or((0, 0), |a| (a.got_bytes, a.total_len)))
    }

    /// Earliest time at which `tick` has something to do (`None`: nothing is running).
    pub fn next_deadline(&self) -> Option<u64> {
        let outs = self.out.values().map(|o| o.deadline(&self.cfg));
        let ins = self.inc.values().map(|i| i.deadline(&self.cfg));
        outs.chain(ins).min()
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
        if let Some(i) = self.inc.remove(&id) {
            found = true;
            self.fail_incoming(id, i.from, reason, "locally".to_string());
        }
        found
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
        let small = TransferConfig { window: 2, ack_every: 4, ..TransferConfig::default() }.normalized();
        assert_eq!(small.ack_every, 1);
        let wide = TransferConfig { window: 64, ack_every: 4, ..TransferConfig::default() }.normalized();
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
