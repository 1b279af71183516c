//! The sending end of one transfer: chunks in flight, round-trip estimate, retransmission.

use super::cc::Bbr;
use super::wire::*;
use super::*;

/// Smoothed round-trip estimate (RFC 6298 style, in milliseconds).
#[derive(Debug, Clone, Copy)]
pub(super) struct Rtt {
    pub(super) srtt: f64,
    pub(super) rttvar: f64,
    pub(super) rto: u64,
    pub(super) measured: bool,
    /// Smallest sample seen.
    pub(super) min_rtt: u64,
    /// Extra reordering allowance learnt from spurious retransmissions.
    pub(super) reo_extra: u64,
}

impl Rtt {
    pub(super) fn new(cfg: &TransferConfig) -> Self {
        Rtt { srtt: 0.0, rttvar: 0.0, rto: cfg.rto_ms, measured: false, min_rtt: u64::MAX, reo_extra: 0 }
    }

    /// How much later than expected a chunk may be acked before it is taken as lost (RACK).
    pub(super) fn reorder_window(&self) -> u64 {
        if !self.measured {
            return 0;
        }
        (self.min_rtt / 4 + self.reo_extra).min(self.srtt.ceil() as u64)
    }

    /// An ack came back faster than a retransmission could have: the original was only late.
    pub(super) fn spurious(&mut self) {
        if self.measured {
            self.reo_extra = (self.reo_extra * 2 + 1).min(self.srtt.ceil() as u64);
        }
    }

    pub(super) fn sample(&mut self, ms: u64, cfg: &TransferConfig) {
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
pub(super) struct Slot {
    pub(super) sent_at: u64,
    pub(super) order: u64,
    pub(super) tx: u32,
    pub(super) dup: u8,
    pub(super) acked: bool,
    /// The controller's delivered count when this chunk was (last) sent, for round counting.
    pub(super) delivered: u64,
}

/// What one ack newly acknowledged: the newest transmission order among those chunks, the
/// send time of the newest chunk sent only once (Karn: retransmitted chunks give ambiguous
/// samples), whether a retransmission was needless, and the controller's delivered count when
/// the newest of them was sent.
struct Newly {
    now: u64,
    min_rtt: u64,
    max_order: u64,
    newest_once: Option<(u64, u64)>,
    spurious: bool,
    sent_delivered: Option<u64>,
}

impl Newly {
    fn new(now: u64, min_rtt: u64) -> Self {
        Newly { now, min_rtt, max_order: 0, newest_once: None, spurious: false, sent_delivered: None }
    }

    fn note(&mut self, slot: &Slot) {
        self.max_order = self.max_order.max(slot.order);
        self.sent_delivered = Some(self.sent_delivered.map_or(slot.delivered, |d| d.max(slot.delivered)));
        if slot.tx == 1 && self.newest_once.is_none_or(|(o, _)| slot.order > o) {
            self.newest_once = Some((slot.order, slot.sent_at));
        }
        if slot.tx > 1 && self.now.saturating_sub(slot.sent_at) < self.min_rtt {
            self.spurious = true;
        }
    }
}

/// One outgoing transfer.
pub(super) struct Outgoing<A> {
    pub(super) to: A,
    pub(super) payload: Arc<[u8]>,
    pub(super) chunk_size: usize,
    pub(super) total_chunks: u32,
    pub(super) checksum: u32,
    /// Lowest chunk not yet acknowledged; `slots[0]` is chunk `base`.
    pub(super) base: u32,
    /// Next chunk never sent.
    pub(super) next_new: u32,
    pub(super) slots: VecDeque<Slot>,
    pub(super) unacked: usize,
    pub(super) acked_bytes: u64,
    pub(super) last_heard: u64,
    pub(super) rtt: Rtt,
    pub(super) backoff: u32,
    /// The congestion controller.
    pub(super) cc: Bbr,
    pub(super) next_progress: u64,
    /// Chunks not yet sent that the receiver already holds (a resumed transfer), bit `i % 64`
    /// of word `i / 64`; empty until an ack shows one.
    pub(super) held_ahead: Vec<u64>,
}

impl<A: Copy> Outgoing<A> {
    pub(super) fn total_len(&self) -> u64 {
        self.payload.len() as u64
    }

    pub(super) fn chunk_len(&self, seq: u32) -> u64 {
        chunk_len_of(u64::from(seq), u64::from(self.total_chunks), self.total_len(), self.chunk_size as u64)
    }

    pub(super) fn data_msg(&self, id: TransferId, seq: u32) -> TransferMsg {
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

    pub(super) fn eff_rto(&self, cfg: &TransferConfig) -> u64 {
        self.rtt.rto.saturating_mul(1u64 << self.backoff.min(MAX_BACKOFF)).min(cfg.max_rto_ms)
    }

    /// Bytes sent and not yet acknowledged (every chunk counted at full size).
    pub(super) fn inflight(&self) -> usize {
        self.unacked.saturating_mul(self.chunk_size)
    }

    /// Chunks past `base` that may be sent: the acks' bitmap must be able to describe them.
    fn max_span(cfg: &TransferConfig) -> usize {
        let span = MAX_ACK_BITMAP_BYTES * 8;
        cfg.window.map_or(span, |w| (w * 4).min(span))
    }

    /// Whether new chunks are waiting for the controller (cwnd room or pacing).
    pub(super) fn has_new(&self, cfg: &TransferConfig) -> bool {
        self.next_new < self.total_chunks && ((self.next_new - self.base) as usize) < Self::max_span(cfg)
    }

    fn held_ahead(&self, seq: u32) -> bool {
        self.held_ahead.get(seq as usize / 64).is_some_and(|w| w & (1 << (seq % 64)) != 0)
    }

    /// Notes that the receiver holds chunk `seq`, not sent yet.
    fn note_held_ahead(&mut self, seq: u32) {
        if seq >= self.total_chunks {
            return;
        }
        if self.held_ahead.is_empty() {
            self.held_ahead = vec![0; (self.total_chunks as usize).div_ceil(64)];
        }
        if let Some(w) = self.held_ahead.get_mut(seq as usize / 64) {
            *w |= 1 << (seq % 64);
        }
    }

    /// Sends new chunks while the congestion window and the pacing allow, skipping those the
    /// receiver already holds.
    pub(super) fn pump(&mut self, id: TransferId, now: u64, cfg: &TransferConfig, io: &mut Io<A>) {
        while self.has_new(cfg) {
            let seq = self.next_new;
            if self.held_ahead(seq) {
                self.next_new += 1;
                self.acked_bytes += self.chunk_len(seq);
                if self.slots.is_empty() && self.base == seq {
                    self.base += 1;
                } else {
                    let delivered = self.cc.delivered();
                    self.slots.push_back(Slot { sent_at: now, order: 0, tx: 0, dup: 0, acked: true, delivered });
                }
                continue;
            }
            if !self.cc.can_send(now, self.inflight(), self.chunk_size) {
                break;
            }
            let order = io.next_order();
            self.cc.on_sent(self.chunk_len(seq) as usize);
            let delivered = self.cc.delivered();
            self.slots.push_back(Slot { sent_at: now, order, tx: 1, dup: 0, acked: false, delivered });
            self.unacked += 1;
            self.next_new += 1;
            io.stats.data_sent += 1;
            io.outbox.push_back((self.to, self.data_msg(id, seq)));
        }
    }

    /// Sends `slots[idx]` again.
    pub(super) fn retransmit(&mut self, idx: usize, id: TransferId, now: u64, io: &mut Io<A>) {
        let order = io.next_order();
        let Some(slot) = self.slots.get_mut(idx) else {
            return;
        };
        slot.sent_at = now;
        slot.order = order;
        slot.tx = slot.tx.saturating_add(1);
        slot.dup = 0;
        slot.delivered = self.cc.delivered();
        let seq = self.base.saturating_add(u32::try_from(idx).unwrap_or(u32::MAX));
        let len = self.chunk_len(seq);
        self.cc.on_lost(len);
        self.cc.on_sent(len as usize);
        io.stats.data_sent += 1;
        io.stats.retransmits += 1;
        io.outbox.push_back((self.to, self.data_msg(id, seq)));
    }

    /// Handles an ack; returns true when every chunk is acknowledged.
    pub(super) fn on_ack(
        &mut self,
        id: TransferId,
        now: u64,
        cum: u32,
        sack: &[u8],
        cfg: &TransferConfig,
        io: &mut Io<A>,
    ) -> bool {
        self.last_heard = now;
        if cum > self.total_chunks {
            io.stats.ignored += 1;
            return false;
        }
        let acked_before = self.acked_bytes;
        let mut newly = Newly::new(now, if self.rtt.measured { self.rtt.min_rtt } else { 0 });
        let skipped = self.take_cumulative(cum, &mut newly);
        self.take_selective(cum, sack, &mut newly);
        while self.slots.front().is_some_and(|s| s.acked) {
            self.slots.pop_front();
            self.base += 1;
        }
        if newly.max_order > 0 {
            let delivered = self.acked_bytes - acked_before - skipped;
            self.learn_from_ack(id, now, &newly, delivered, cfg, io);
        }
        if self.base >= self.total_chunks {
            return true;
        }
        self.pump(id, now, cfg, io);
        while self.slots.front().is_some_and(|s| s.acked) {
            self.slots.pop_front();
            self.base += 1;
        }
        self.base >= self.total_chunks
    }

    /// The cumulative ack: every chunk below `cum` is held. Returns the bytes of chunks the
    /// receiver held without our sending them (a resumed transfer): not deliveries the path
    /// made, so the controller does not count them.
    fn take_cumulative(&mut self, cum: u32, newly: &mut Newly) -> u64 {
        while self.base < cum {
            let seq = self.base;
            let Some(slot) = self.slots.pop_front() else {
                break;
            };
            self.base += 1;
            if !slot.acked {
                self.unacked = self.unacked.saturating_sub(1);
                self.acked_bytes += self.chunk_len(seq);
                newly.note(&slot);
            }
        }
        let mut skipped = 0u64;
        while self.base < cum {
            skipped += self.chunk_len(self.base);
            self.base += 1;
        }
        self.next_new = self.next_new.max(self.base);
        self.acked_bytes += skipped;
        skipped
    }

    /// The bitmap: chunks after `cum` that are held too (those not sent yet are noted, so
    /// that `pump` skips them).
    fn take_selective(&mut self, cum: u32, sack: &[u8], newly: &mut Newly) {
        let first = u64::from(cum) + 1;
        for (i, &byte) in sack.iter().enumerate() {
            for bit in (0..8u64).filter(|bit| byte & (1 << bit) != 0) {
                let seq = first + (i as u64) * 8 + bit;
                if seq >= u64::from(self.next_new) {
                    self.note_held_ahead(u32::try_from(seq).unwrap_or(u32::MAX));
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
                newly.note(&copy);
            }
        }
    }

    /// An ack that acknowledged something new: RTT sample (Karn), the controller's delivery
    /// sample, fast retransmit, progress.
    fn learn_from_ack(
        &mut self,
        id: TransferId,
        now: u64,
        newly: &Newly,
        delivered: u64,
        cfg: &TransferConfig,
        io: &mut Io<A>,
    ) {
        self.backoff = 0;
        if newly.spurious {
            io.stats.spurious += 1;
            self.rtt.spurious();
        }
        let mut rack_rtt = self.rtt.srtt as u64;
        let sample = newly.newest_once.map(|(_, sent_at)| now.saturating_sub(sent_at));
        if let Some(r) = sample {
            rack_rtt = r;
            self.rtt.sample(rack_rtt, cfg);
        }
        let inflight = self.inflight();
        self.cc.on_ack(now, delivered, newly.sent_delivered, sample, inflight);
        // Fast retransmit (RACK-like): a chunk sent before one that just got acked, still
        // missing on DUP_THRESH such acks and overdue by more than the reordering window, is
        // taken as lost.
        let overdue = rack_rtt.saturating_add(self.rtt.reorder_window());
        // Early retransmit (RFC 5827): with fewer chunks outstanding than the threshold (a
        // window of a few large chunks), fewer acks must do.
        let thresh = DUP_THRESH.min(u8::try_from(self.unacked).unwrap_or(u8::MAX).max(1));
        for idx in 0..self.slots.len() {
            let Some(slot) = self.slots.get_mut(idx) else {
                break;
            };
            if slot.acked || slot.order >= newly.max_order {
                continue;
            }
            slot.dup = slot.dup.saturating_add(1);
            if slot.dup >= thresh && now >= slot.sent_at.saturating_add(overdue) {
                io.stats.fast_retransmits += 1;
                self.retransmit(idx, id, now, io);
            }
        }
        let (done, total) = (self.acked_bytes, self.total_len());
        let moved = Moved { id, peer: self.to, outgoing: true, done, total };
        progress_event(io, cfg.progress_step, &mut self.next_progress, moved);
    }

    /// Timers; returns false when the transfer must be abandoned.
    pub(super) fn tick(&mut self, id: TransferId, now: u64, cfg: &TransferConfig, io: &mut Io<A>) -> bool {
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

    pub(super) fn deadline(&self, cfg: &TransferConfig) -> u64 {
        let rto = self.eff_rto(cfg);
        let timers = self.slots.iter().filter(|s| !s.acked).map(|s| s.sent_at.saturating_add(rto));
        let mut at = timers.fold(self.last_heard.saturating_add(cfg.give_up_ms), u64::min);
        if self.has_new(cfg) && self.inflight().saturating_add(self.chunk_size) <= self.cc.cwnd() {
            at = at.min(self.cc.next_send_time());
        }
        at
    }
}
