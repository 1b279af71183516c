//! The transfer's datagrams: their types, encoding and checked decoding (never panics).

use std::fmt;

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
/// Largest selective-ack bitmap in bytes (it covers 2048 chunks after the cumulative ack).
pub const MAX_ACK_BITMAP_BYTES: usize = 256;
/// Hard bound on a payload length that [`TransferMsg::decode`] accepts (2 GiB).
pub const WIRE_MAX_PAYLOAD: u64 = 1 << 31;

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
pub(super) fn chunk_len_of(seq: u64, total_chunks: u64, total_len: u64, chunk_size: u64) -> u64 {
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
