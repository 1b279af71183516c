//! The receiving end of one transfer: reassembly, selective acks, recently closed ids.

use super::resume::{Parked, Shape};
use super::wire::*;
use super::*;

/// Chunks at least this large are acked at once (a window of them is only a few chunks).
const ACK_AT_ONCE_BYTES: usize = 32 * 1024;

/// Receiver's reassembly buffer, created by the first valid chunk.
pub(super) struct Assembly {
    pub(super) shape: Shape,
    pub(super) buf: Vec<u8>,
    pub(super) have: Vec<u64>,
    /// Every chunk below this is held.
    pub(super) cum: u32,
    /// One past the highest chunk held.
    pub(super) high: u32,
    pub(super) got_bytes: u64,
}

impl Assembly {
    pub(super) fn has(&self, seq: u64) -> bool {
        self.have.get((seq / 64) as usize).is_some_and(|w| w & (1 << (seq % 64)) != 0)
    }

    pub(super) fn set(&mut self, seq: u64) {
        if let Some(w) = self.have.get_mut((seq / 64) as usize) {
            *w |= 1 << (seq % 64);
        }
    }

    pub(super) fn ack_msg(&self, id: TransferId) -> TransferMsg {
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
pub(super) enum InStep {
    Continue,
    Complete(Vec<u8>),
    Fail(CancelReason, String),
}

/// One incoming transfer (expected, possibly started).
pub(super) struct Incoming<A> {
    pub(super) from: A,
    pub(super) max_len: usize,
    pub(super) last_heard: u64,
    pub(super) asm: Option<Assembly>,
    pub(super) ack_owed: u32,
    pub(super) ack_due: Option<u64>,
    pub(super) next_progress: u64,
}

impl<A: Copy> Incoming<A> {
    pub(super) fn send_ack(&mut self, id: TransferId, io: &mut Io<A>) {
        if let Some(asm) = &self.asm {
            io.stats.acks_sent += 1;
            io.outbox.push_back((self.from, asm.ack_msg(id)));
        }
        self.ack_owed = 0;
        self.ack_due = None;
    }

    /// The first valid chunk: the reassembly buffer, a parked partial of the same bytes if
    /// one is kept (true: resumed), else a fresh one.
    fn start(&mut self, id: TransferId, shape: Shape, parked: &mut Parked, io: &mut Io<A>) -> Result<bool, InStep> {
        let max = self.max_len as u64;
        if shape.total_len > max {
            return Err(InStep::Fail(CancelReason::TooLarge, format!("{} bytes > limit {max}", shape.total_len)));
        }
        if let Some(a) = parked.take(shape) {
            // The same bytes broke off earlier: start from what is held.
            let held = a.got_bytes;
            io.events.push_back(TransferEvent::Resumed { id, peer: self.from, held, total: shape.total_len });
            self.asm = Some(a);
            return Ok(true);
        }
        let Some(a) = Assembly::empty(shape) else {
            return Err(InStep::Fail(CancelReason::NoMemory, format!("cannot reserve {} bytes", shape.total_len)));
        };
        self.asm = Some(a);
        Ok(false)
    }

    pub(super) fn on_data(
        &mut self,
        now: u64,
        d: DataChunk,
        parked: &mut Parked,
        cfg: &TransferConfig,
        io: &mut Io<A>,
    ) -> InStep {
        let id = d.id;
        self.last_heard = now;
        let shape = Shape::of(&d);
        let mut resumed = false;
        if self.asm.is_none() {
            match self.start(id, shape, parked, io) {
                Ok(r) => resumed = r,
                Err(fail) => return fail,
            }
        }
        let Some(asm) = self.asm.as_mut() else {
            return InStep::Continue;
        };
        if asm.shape != shape {
            return InStep::Fail(CancelReason::Protocol, "chunks disagree on the transfer's shape".into());
        }
        let seq = d.seq;
        if seq >= asm.shape.total_chunks {
            return InStep::Fail(CancelReason::Protocol, "chunk seq out of range".into());
        }
        if asm.has(u64::from(seq)) {
            if !resumed {
                io.stats.duplicates += 1;
            }
            self.send_ack(id, io);
            return InStep::Continue;
        }
        let start = (seq as usize).saturating_mul(usize::from(asm.shape.chunk_size));
        let Some(dst) = asm.buf.get_mut(start..start.saturating_add(d.data.len())) else {
            return InStep::Fail(CancelReason::Protocol, "chunk outside the payload".into());
        };
        dst.copy_from_slice(&d.data);
        asm.set(u64::from(seq));
        asm.got_bytes += d.data.len() as u64;
        let (old_cum, old_high) = (asm.cum, asm.high);
        asm.high = asm.high.max(seq + 1);
        while asm.cum < asm.shape.total_chunks && asm.has(u64::from(asm.cum)) {
            asm.cum += 1;
        }
        let (done, total) = (asm.got_bytes, asm.shape.total_len);
        if asm.cum >= asm.shape.total_chunks {
            if crc32(&asm.buf) != asm.shape.checksum {
                return InStep::Fail(CancelReason::ChecksumMismatch, "payload checksum mismatch".into());
            }
            let payload = std::mem::take(&mut asm.buf);
            self.send_ack(id, io);
            return InStep::Complete(payload);
        }
        self.ack_owed += 1;
        let out_of_order = seq != old_cum || old_cum < old_high;
        // Large chunks (loopback) are acked one by one: a window holds only a few of them.
        let large = usize::from(asm.shape.chunk_size) >= ACK_AT_ONCE_BYTES;
        // A resumed transfer tells the sender at once what it need not send.
        if resumed || out_of_order || large || self.ack_owed >= cfg.ack_every {
            self.send_ack(id, io);
        } else if self.ack_due.is_none() {
            self.ack_due = Some(now.saturating_add(cfg.ack_delay_ms));
        }
        let moved = Moved { id, peer: self.from, outgoing: false, done, total };
        progress_event(io, cfg.progress_step, &mut self.next_progress, moved);
        InStep::Continue
    }

    /// Timers; returns false when the transfer must be abandoned.
    pub(super) fn tick(&mut self, id: TransferId, now: u64, cfg: &TransferConfig, io: &mut Io<A>) -> bool {
        if now.saturating_sub(self.last_heard) >= cfg.give_up_ms {
            return false;
        }
        if self.ack_due.is_some_and(|t| now >= t) {
            self.send_ack(id, io);
        }
        true
    }

    pub(super) fn deadline(&self, cfg: &TransferConfig) -> u64 {
        let give_up = self.last_heard.saturating_add(cfg.give_up_ms);
        self.ack_due.map_or(give_up, |t| t.min(give_up))
    }
}

/// How a recently closed incoming transfer ended.
#[derive(Debug, Clone, Copy)]
pub(super) enum Closed {
    Completed { total_chunks: u32 },
    Failed(CancelReason),
}

/// Bounded memory of recently closed incoming transfers.
pub(super) struct Recent<A> {
    pub(super) map: HashMap<TransferId, (A, Closed)>,
    pub(super) order: VecDeque<TransferId>,
}

impl<A> Recent<A> {
    pub(super) fn insert(&mut self, cap: usize, id: TransferId, peer: A, how: Closed) {
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
