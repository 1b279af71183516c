//! Resuming: the partial payloads an incoming transfer leaves when it breaks off, kept (bounded
//! in bytes and time) so that a later transfer of the same bytes starts from what is held.
//!
//! A payload is recognised by its [`Shape`] (length, chunk count, chunk size and CRC-32 of the
//! whole), which every data chunk carries: a retry that sends the same bytes under a new id has
//! the same shape, whichever server or peer sends it. The receiver adopts the partial on the
//! new transfer's first chunk and acks at once, so the sender learns which chunks are held
//! (the cumulative ack and its bitmap) and sends only the others. If the adopted bytes were
//! not the same after all, the whole-payload CRC fails and the partial is dropped, so a retry
//! then starts from zero. The application checks what arrives in any case (seal, stego).
//!
//! The shell may keep partials across a restart: [`Transfers::partials`] shows what is held
//! (running and parked) and [`Transfers::restore`] puts a saved one back.

use super::recv::Assembly;
use super::*;

/// What identifies a payload across transfers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Shape {
    /// Payload length.
    pub total_len: u64,
    /// Chunks (an empty payload is one empty chunk).
    pub total_chunks: u32,
    /// Payload bytes per chunk.
    pub chunk_size: u16,
    /// CRC-32 of the whole payload.
    pub checksum: u32,
}

impl Shape {
    /// The shape a data chunk announces.
    pub fn of(d: &DataChunk) -> Shape {
        Shape { total_len: d.total_len, total_chunks: d.total_chunks, chunk_size: d.chunk_size, checksum: d.checksum }
    }

    /// True when the chunk count is the one the length and chunk size give.
    pub fn is_consistent(&self) -> bool {
        self.chunk_size > 0 && u64::from(self.total_chunks) == chunk_count(self.total_len, u64::from(self.chunk_size))
    }

    /// Words of the held-chunk bitmap.
    pub fn bitmap_words(&self) -> usize {
        (self.total_chunks as usize).div_ceil(64)
    }
}

/// A partial payload as the shell saves it: the bitmap of held chunks (bit `i % 64` of word
/// `i / 64` is chunk `i`) and the payload buffer (only held chunks are meaningful).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partial {
    /// Which payload.
    pub shape: Shape,
    /// Held chunks.
    pub have: Vec<u64>,
    /// `shape.total_len` bytes.
    pub buf: Vec<u8>,
}

/// A held partial, borrowed from the transfers (for the shell to save).
#[derive(Debug, Clone, Copy)]
pub struct PartialView<'a> {
    /// Which payload.
    pub shape: Shape,
    /// Held chunks.
    pub have: &'a [u64],
    /// The payload buffer.
    pub buf: &'a [u8],
    /// Payload bytes held.
    pub held: u64,
}

impl Assembly {
    /// A fresh, empty reassembly buffer for `shape` (`None`: the memory is not available).
    pub(super) fn empty(shape: Shape) -> Option<Assembly> {
        let n = usize::try_from(shape.total_len).ok()?;
        let mut buf = Vec::new();
        buf.try_reserve_exact(n).ok()?;
        buf.resize(n, 0);
        Some(Assembly { shape, buf, have: vec![0u64; shape.bitmap_words()], cum: 0, high: 0, got_bytes: 0 })
    }

    /// The reassembly buffer a saved partial stands for, if it is well formed.
    pub(super) fn from_partial(p: Partial) -> Result<Assembly, &'static str> {
        let s = p.shape;
        if !s.is_consistent() {
            return Err("chunk count does not match length and chunk size");
        }
        if p.buf.len() as u64 != s.total_len {
            return Err("buffer length is not the payload length");
        }
        if p.have.len() != s.bitmap_words() {
            return Err("bitmap length does not match the chunk count");
        }
        let spare = (u64::from(s.total_chunks) % 64) as u32;
        if spare != 0 && p.have.last().is_some_and(|w| w >> spare != 0) {
            return Err("bitmap marks chunks past the end");
        }
        let mut a = Assembly { shape: s, buf: p.buf, have: p.have, cum: 0, high: 0, got_bytes: 0 };
        a.recount();
        if a.cum >= s.total_chunks {
            return Err("every chunk is held: nothing to resume");
        }
        Ok(a)
    }

    /// Recomputes `cum`, `high` and `got_bytes` from the bitmap.
    pub(super) fn recount(&mut self) {
        let s = self.shape;
        let (mut cum, mut high, mut got) = (0u32, 0u32, 0u64);
        let mut gap = false;
        for seq in 0..s.total_chunks {
            if self.has(u64::from(seq)) {
                got += chunk_len_of(u64::from(seq), u64::from(s.total_chunks), s.total_len, u64::from(s.chunk_size));
                high = seq + 1;
                if !gap {
                    cum = seq + 1;
                }
            } else {
                gap = true;
            }
        }
        (self.cum, self.high, self.got_bytes) = (cum, high, got);
    }

    pub(super) fn view(&self) -> PartialView<'_> {
        PartialView { shape: self.shape, have: &self.have, buf: &self.buf, held: self.got_bytes }
    }
}

/// Partials of transfers that broke off, oldest first.
#[derive(Default)]
pub(super) struct Parked {
    items: VecDeque<(u64, Assembly)>,
    bytes: usize,
}

impl Parked {
    /// Keeps `asm` (if it holds anything) from `now`; the oldest go when over `cap` bytes.
    pub(super) fn park(&mut self, now: u64, asm: Assembly, cap: usize) {
        if asm.got_bytes == 0 || asm.buf.len() > cap {
            return;
        }
        if let Some(old) = self.take(asm.shape) {
            if old.got_bytes > asm.got_bytes {
                self.push(now, old);
                return;
            }
        }
        self.push(now, asm);
        while self.bytes > cap {
            let Some((_, a)) = self.items.pop_front() else { break };
            self.bytes = self.bytes.saturating_sub(a.buf.len());
        }
    }

    fn push(&mut self, now: u64, asm: Assembly) {
        self.bytes += asm.buf.len();
        self.items.push_back((now, asm));
    }

    /// Removes and returns the partial of `shape`.
    pub(super) fn take(&mut self, shape: Shape) -> Option<Assembly> {
        let i = self.items.iter().position(|(_, a)| a.shape == shape)?;
        let (_, a) = self.items.remove(i)?;
        self.bytes = self.bytes.saturating_sub(a.buf.len());
        Some(a)
    }

    /// Drops partials parked `ttl` ago or earlier.
    pub(super) fn expire(&mut self, now: u64, ttl: u64) {
        while self.items.front().is_some_and(|(at, _)| now.saturating_sub(*at) >= ttl) {
            if let Some((_, a)) = self.items.pop_front() {
                self.bytes = self.bytes.saturating_sub(a.buf.len());
            }
        }
    }

    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &Assembly> {
        self.items.iter().map(|(_, a)| a)
    }

    /// When the oldest partial expires.
    pub(super) fn deadline(&self, ttl: u64) -> Option<u64> {
        self.items.front().map(|(at, _)| at.saturating_add(ttl))
    }
}
