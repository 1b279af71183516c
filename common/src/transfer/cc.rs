//! Congestion control of one outgoing transfer: a BBR-style model of the path.
//!
//! The sender estimates the path's bottleneck bandwidth (`btl_bw`, the largest delivery rate
//! measured over the last [`BW_WINDOW_ROUNDS`] round trips) and its round-trip propagation time
//! (`min_rtt`, the smallest sample). It paces data at `pacing_gain × btl_bw` and keeps at most
//! `cwnd = cwnd_gain × btl_bw × min_rtt` bytes in flight, after Cardwell et al., "BBR:
//! Congestion-Based Congestion Control" (ACM Queue, 2016):
//!
//! - **Startup** doubles the sending rate every round trip (gain 2/ln 2) until the measured
//!   bandwidth stops growing by 25 % for three rounds: the pipe is full.
//! - **Drain** sends at the inverse gain until the queue Startup built is gone
//!   (in flight ≤ one bandwidth-delay product).
//! - **ProbeBW** cycles the pacing gain through 1.25, 0.75 and six rounds of 1: it probes for more
//!   bandwidth, then drains the queue the probe made. A queue (queueing delay) does not raise the
//!   delivery rate, so the model does not grow into it; in flight stays within 2 × BDP.
//!
//! Random loss (a radio) does not shrink the model, which is what keeps throughput up where
//! Reno halves its window on every loss. Heavy loss in a round (more than [`LOSS_THRESH`] of
//! what was sent, as a full queue makes) does: the bandwidth estimate is cut to what that
//! round actually delivered.
//!
//! Time is in milliseconds (the shells' clock). Delivery rates are measured over at least
//! [`SAMPLE_MIN_MS`] (or one `min_rtt`), so the clock's granularity does not inflate them.
//! Everything is deterministic.

use std::collections::VecDeque;

/// Round trips over which the bandwidth estimate keeps its largest sample.
pub const BW_WINDOW_ROUNDS: u64 = 10;
/// Shortest interval a delivery-rate sample is measured over, in ms.
pub const SAMPLE_MIN_MS: u64 = 4;
/// Bytes of pacing credit a sender may accumulate, in ms of its pacing rate (the shells tick
/// every 5 ms, so a smaller burst would cap the rate).
pub const PACE_BURST_MS: f64 = 6.0;
/// Fraction of a round's data lost above which the loss is taken as congestion.
pub const LOSS_THRESH: f64 = 0.2;
/// Gain of Startup: 2/ln 2, the smallest that doubles the delivery rate each round.
const HIGH_GAIN: f64 = 2.885;
/// Pacing gains of ProbeBW's eight phases.
const PROBE_GAINS: [f64; 8] = [1.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0];
/// Initial window in datagrams (as TCP's IW10).
const INITIAL_WINDOW: usize = 10;
/// Smallest window in datagrams.
const MIN_WINDOW: usize = 4;
/// Delivery-history entries kept for rate samples (one per ms at most).
const MAX_HISTORY: usize = 4096;

/// Where the model is in its cycle.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Doubling each round until the bandwidth stops growing.
    Startup,
    /// Emptying the queue Startup built.
    Drain,
    /// Steady state: phase index of [`PROBE_GAINS`] and when it began.
    ProbeBw {
        /// Index into the gain cycle.
        phase: usize,
        /// When the phase began (ms).
        since: u64,
    },
}

/// The congestion controller of one outgoing transfer.
#[derive(Debug, Clone)]
pub struct Bbr {
    mss: usize,
    floor: usize,
    cap: Option<usize>,
    paced: bool,
    mode: Mode,
    /// (round, bytes per ms) samples, the largest of the window is `btl_bw`.
    bw: VecDeque<(u64, f64)>,
    min_rtt: Option<u64>,
    round: u64,
    round_end: u64,
    delivered: u64,
    history: VecDeque<(u64, u64)>,
    full_bw: f64,
    full_rounds: u32,
    tokens: f64,
    refilled: u64,
    round_delivered: u64,
    round_lost: u64,
}

impl Bbr {
    /// A controller for datagrams of `mss` payload bytes, never below `floor` bytes in flight
    /// and never above `cap` (a fixed window) if given; `min_rtt` from an earlier transfer.
    pub fn new(now: u64, mss: usize, floor: usize, cap: Option<usize>, min_rtt: Option<u64>) -> Self {
        let mss = mss.max(1);
        let mut b = Bbr {
            mss,
            floor: floor.max(MIN_WINDOW * mss),
            cap,
            paced: true,
            mode: Mode::Startup,
            bw: VecDeque::new(),
            min_rtt,
            round: 0,
            round_end: 0,
            delivered: 0,
            history: VecDeque::new(),
            full_bw: 0.0,
            full_rounds: 0,
            tokens: 0.0,
            refilled: now,
            round_delivered: 0,
            round_lost: 0,
        };
        b.tokens = b.cwnd() as f64;
        b
    }

    /// A fixed window of `window` bytes, unpaced: for loopback, where the path is the receiver's
    /// socket buffer and a millisecond clock cannot pace.
    pub fn fixed(now: u64, mss: usize, window: usize) -> Self {
        let mut b = Bbr::new(now, mss, window, Some(window), None);
        b.paced = false;
        b
    }

    /// The bottleneck bandwidth estimate in bytes per ms (`None` before any sample).
    pub fn btl_bw(&self) -> Option<f64> {
        self.bw.iter().map(|&(_, r)| r).reduce(f64::max)
    }

    /// The smallest round trip seen, in ms.
    pub fn min_rtt(&self) -> Option<u64> {
        self.min_rtt
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Bytes delivered (acknowledged) so far; a sent chunk records it for round counting.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Estimated bandwidth-delay product in bytes.
    fn bdp(&self) -> Option<f64> {
        let bw = self.btl_bw()?;
        Some(bw * self.min_rtt.unwrap_or(1).max(1) as f64)
    }

    fn gains(&self) -> (f64, f64) {
        match self.mode {
            Mode::Startup => (HIGH_GAIN, HIGH_GAIN),
            Mode::Drain => (1.0 / HIGH_GAIN, HIGH_GAIN),
            Mode::ProbeBw { phase, .. } => (PROBE_GAINS.get(phase).copied().unwrap_or(1.0), 2.0),
        }
    }

    /// Bytes allowed in flight.
    pub fn cwnd(&self) -> usize {
        let w = match self.bdp() {
            None => (INITIAL_WINDOW * self.mss).max(self.floor),
            Some(bdp) => {
                let (_, cwnd_gain) = self.gains();
                ((cwnd_gain * bdp) as usize).saturating_add(3 * self.mss).max(self.floor)
            }
        };
        self.cap.map_or(w, |c| w.min(c.max(self.mss)))
    }

    /// Pacing rate in bytes per ms (`None`: not paced yet).
    pub fn pacing_rate(&self) -> Option<f64> {
        if !self.paced {
            return None;
        }
        let (gain, _) = self.gains();
        self.btl_bw().map(|bw| (gain * bw).max(self.mss as f64 / 100.0))
    }

    fn refill(&mut self, now: u64) {
        let Some(rate) = self.pacing_rate() else {
            self.refilled = now;
            self.tokens = self.cwnd() as f64;
            return;
        };
        let elapsed = now.saturating_sub(self.refilled) as f64;
        self.refilled = now.max(self.refilled);
        let burst = (rate * PACE_BURST_MS).max(2.0 * self.mss as f64);
        self.tokens = (self.tokens + elapsed * rate).min(burst);
    }

    /// May `bytes` more go out now, with `inflight` bytes unacknowledged?
    pub fn can_send(&mut self, now: u64, inflight: usize, bytes: usize) -> bool {
        if inflight.saturating_add(bytes) > self.cwnd() && inflight > 0 {
            return false;
        }
        self.refill(now);
        self.tokens >= bytes.min(self.mss) as f64 || inflight == 0
    }

    /// `bytes` went out.
    pub fn on_sent(&mut self, bytes: usize) {
        self.tokens -= bytes as f64;
    }

    /// When pacing lets the next datagram go (ms), if pacing is what holds it back.
    pub fn next_send_time(&self) -> u64 {
        match self.pacing_rate() {
            Some(rate) if self.tokens < self.mss as f64 => {
                let wait = ((self.mss as f64 - self.tokens) / rate).ceil().max(1.0);
                self.refilled.saturating_add(wait as u64)
            }
            _ => self.refilled,
        }
    }

    /// `bytes` of chunks are taken as lost (a retransmission was sent).
    pub fn on_lost(&mut self, bytes: u64) {
        self.round_lost = self.round_lost.saturating_add(bytes);
    }

    /// An ack newly delivered `bytes`; `sent_delivered` is the largest [`Bbr::delivered`]
    /// recorded by the chunks it acked; `rtt` a round-trip sample if it gave one;
    /// `inflight` the bytes still unacknowledged.
    pub fn on_ack(&mut self, now: u64, bytes: u64, sent_delivered: Option<u64>, rtt: Option<u64>, inflight: usize) {
        if let Some(r) = rtt {
            self.min_rtt = Some(self.min_rtt.map_or(r, |m| m.min(r)));
        }
        if bytes == 0 {
            return;
        }
        self.delivered = self.delivered.saturating_add(bytes);
        self.round_delivered = self.round_delivered.saturating_add(bytes);
        if self.history.back().is_none_or(|&(t, _)| t < now) {
            self.history.push_back((now, self.delivered));
        } else if let Some(last) = self.history.back_mut() {
            last.1 = self.delivered;
        }
        let span = self.min_rtt.unwrap_or(0).max(SAMPLE_MIN_MS);
        while self.history.len() > MAX_HISTORY
            || self.history.get(1).is_some_and(|&(t, _)| t.saturating_add(span) <= now)
        {
            self.history.pop_front();
        }
        let new_round = sent_delivered.is_some_and(|d| d >= self.round_end);
        if new_round {
            self.round += 1;
            self.round_end = self.delivered;
        }
        if let Some(&(t, d)) = self.history.front() {
            let interval = now.saturating_sub(t);
            if interval >= span {
                let rate = self.delivered.saturating_sub(d) as f64 / interval as f64;
                self.bw.push_back((self.round, rate));
            }
        }
        while self.bw.front().is_some_and(|&(r, _)| r.saturating_add(BW_WINDOW_ROUNDS) < self.round) {
            self.bw.pop_front();
        }
        // Keep the filter small: only samples that may still become the maximum.
        while self.bw.len() > 64 {
            self.bw.pop_front();
        }
        if new_round {
            self.on_round_end();
        }
        self.advance_mode(now, inflight);
    }

    fn on_round_end(&mut self) {
        let sent = self.round_delivered.saturating_add(self.round_lost);
        if sent >= 20 * self.mss as u64 && self.round_lost as f64 > LOSS_THRESH * sent as f64 {
            if let Some(bw) = self.btl_bw() {
                let cut = bw * (1.0 - LOSS_THRESH);
                self.bw.clear();
                self.bw.push_back((self.round, cut));
            }
            if self.mode == Mode::Startup {
                self.mode = Mode::Drain;
            }
        }
        self.round_delivered = 0;
        self.round_lost = 0;
        if self.mode == Mode::Startup {
            let bw = self.btl_bw().unwrap_or(0.0);
            if bw >= self.full_bw * 1.25 {
                self.full_bw = bw;
                self.full_rounds = 0;
            } else {
                self.full_rounds += 1;
                if self.full_rounds >= 3 {
                    self.mode = Mode::Drain;
                }
            }
        }
    }

    fn advance_mode(&mut self, now: u64, inflight: usize) {
        match self.mode {
            Mode::Startup => {}
            Mode::Drain => {
                if self.bdp().is_none_or(|bdp| inflight as f64 <= bdp) {
                    // Senders that drained together should not probe in step.
                    self.mode = Mode::ProbeBw { phase: 2 + (self.round as usize % 6), since: now };
                }
            }
            Mode::ProbeBw { phase, since } => {
                let rtt = self.min_rtt.unwrap_or(1).max(1);
                if now.saturating_sub(since) >= rtt {
                    self.mode = Mode::ProbeBw { phase: (phase + 1) % PROBE_GAINS.len(), since: now };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds a pipe of `rate` bytes per ms and `rtt` ms: every ms, what was sent `rtt` ms ago arrives.
    fn drive(b: &mut Bbr, rate: u64, rtt: u64, ms: u64) -> Vec<usize> {
        let mss = 1400usize;
        let mut in_flight: VecDeque<(u64, u64, u64)> = VecDeque::new(); // (arrive, bytes, delivered at send)
        let mut inflight = 0usize;
        let mut queue_free_at = 0u64;
        let mut cwnds = Vec::new();
        for now in 0..ms {
            while in_flight.front().is_some_and(|&(t, _, _)| t <= now) {
                let (_, bytes, d) = in_flight.pop_front().unwrap_or_default();
                inflight -= bytes as usize;
                b.on_ack(now, bytes, Some(d), Some(rtt), inflight);
            }
            while b.can_send(now, inflight, mss) {
                b.on_sent(mss);
                inflight += mss;
                // A bottleneck of `rate` bytes per ms: each datagram leaves it in turn.
                queue_free_at = queue_free_at.max(now * rate) + mss as u64;
                in_flight.push_back((queue_free_at / rate + rtt, mss as u64, b.delivered()));
            }
            cwnds.push(b.cwnd());
        }
        cwnds
    }

    #[test]
    fn finds_the_bandwidth_and_leaves_startup() {
        // 100 Mbit/s (12,500 bytes per ms), 20 ms: a BDP of 250,000 bytes.
        let mut b = Bbr::new(0, 1400, 0, None, None);
        drive(&mut b, 12_500, 20, 2000);
        let bw = b.btl_bw().unwrap_or(0.0);
        assert!((11_000.0..=16_000.0).contains(&bw), "bandwidth estimate {bw} bytes/ms for a 12,500 bytes/ms pipe");
        assert!(matches!(b.mode(), Mode::ProbeBw { .. }), "{:?}", b.mode());
        assert_eq!(b.min_rtt(), Some(20));
        // About 2 × BDP, plus a little.
        assert!((400_000..=700_000).contains(&b.cwnd()), "cwnd {}", b.cwnd());
    }

    #[test]
    fn a_fixed_window_caps_the_model() {
        let mut b = Bbr::new(0, 1400, 0, Some(14_000), None);
        let cwnds = drive(&mut b, 12_500, 20, 500);
        assert!(cwnds.iter().all(|&c| c <= 14_000));
    }

    #[test]
    fn heavy_loss_cuts_the_estimate() {
        let mut b = Bbr::new(0, 1400, 0, None, None);
        drive(&mut b, 12_500, 20, 1000);
        let before = b.btl_bw().unwrap_or(0.0);
        b.on_lost(1_000_000);
        let d = b.delivered();
        b.on_ack(1001, 1400, Some(d), Some(20), 0);
        assert!(b.btl_bw().unwrap_or(f64::MAX) < before, "the estimate must fall after heavy loss");
    }
}
