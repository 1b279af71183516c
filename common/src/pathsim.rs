//! A deterministic simulation of transfers over one bottleneck path (rate, round trip, queue,
//! random loss), to measure goodput and fairness where `tc netem` is not available.
//!
//! Each flow is a sender and a receiver [`Transfers`] of its own; all flows' data crosses one
//! FIFO bottleneck of `rate_mbit` with a tail-drop queue of `queue_bytes`, then half the round
//! trip; acks come back after the other half (no queue). Loss drops a datagram at random in
//! either direction, as a radio does. Time advances in 1 ms steps: datagrams due by a step are
//! delivered and answered at once (as the shells' receive threads do), and every node ticks
//! every `tick_ms` (the shells tick every 5 ms). A seed replays a run exactly.

use crate::rng::Rng;
use crate::transfer::{TransferConfig, TransferEvent, TransferMsg, Transfers};
use std::collections::VecDeque;

/// The simulated path.
#[derive(Debug, Clone)]
pub struct PathSpec {
    /// Bottleneck rate in Mbit/s.
    pub rate_mbit: f64,
    /// Round-trip propagation time in ms.
    pub rtt_ms: u64,
    /// Bytes the bottleneck's queue holds before it drops.
    pub queue_bytes: usize,
    /// Probability that a datagram is lost, each direction.
    pub loss: f64,
    /// How often every node's `tick` runs, in ms.
    pub tick_ms: u64,
    /// Seed of the loss and of the payloads.
    pub seed: u64,
}

impl PathSpec {
    /// A 100 Mbit/s path with `rtt_ms` and `loss`, a queue of one bandwidth-delay product
    /// (at least 64 KB), the shells' 5 ms tick.
    pub fn new(rtt_ms: u64, loss: f64, seed: u64) -> Self {
        let bdp = (100e6 / 8.0 * rtt_ms as f64 / 1000.0) as usize;
        PathSpec { rate_mbit: 100.0, rtt_ms, queue_bytes: bdp.max(64 * 1024), loss, tick_ms: 5, seed }
    }
}

/// What one flow did.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowResult {
    /// Payload bytes.
    pub bytes: usize,
    /// When the flow started (ms).
    pub start_ms: u64,
    /// When the receiver had it all (ms), if it did.
    pub end_ms: Option<u64>,
    /// Whether the payload arrived byte-exact (and once).
    pub exact: bool,
    /// Payload bits per second from start to end, in Mbit/s (0 if it never finished).
    pub goodput_mbit: f64,
    /// Bytes the receiver held when the first flow to finish finished (for fairness).
    pub held_at_first_end: u64,
    /// Data datagrams sent again.
    pub retransmits: u64,
}

/// A datagram on the path: (arrival ms, flow, to the receiver?, bytes).
type Packet = (u64, usize, bool, Vec<u8>);

struct Flow {
    start: u64,
    data: Vec<u8>,
    tx: Transfers<u32>,
    rx: Transfers<u32>,
    started: bool,
    end: Option<u64>,
    exact: bool,
}

/// The bottleneck: a FIFO drained at `rate`, times in µs.
struct Link {
    bytes_per_us: f64,
    busy_until_us: f64,
    queue_bytes: usize,
}

impl Link {
    /// When a datagram of `len` bytes entering at `now_us` leaves, or `None` if the queue is full.
    fn enter(&mut self, now_us: f64, len: usize) -> Option<f64> {
        let backlog = (self.busy_until_us - now_us).max(0.0) * self.bytes_per_us;
        if backlog + len as f64 > self.queue_bytes as f64 {
            return None;
        }
        self.busy_until_us = self.busy_until_us.max(now_us) + len as f64 / self.bytes_per_us;
        Some(self.busy_until_us)
    }
}

/// Runs flows of `(start_ms, bytes)` over `spec` with `cfg` until all finish or `limit_ms`.
// Long on purpose: the simulation's one event loop (sender, queue, link, receiver) in order.
pub fn run(spec: &PathSpec, cfg: &TransferConfig, flows: &[(u64, usize)], limit_ms: u64) -> Vec<FlowResult> {
    let mut rng = Rng::new(spec.seed);
    let mut fl: Vec<Flow> = flows
        .iter()
        .map(|&(start, bytes)| {
            let mut data = vec![0u8; bytes];
            rng.fill(&mut data);
            Flow {
                start,
                data,
                tx: Transfers::new(cfg.clone()),
                rx: Transfers::new(cfg.clone()),
                started: false,
                end: None,
                exact: false,
            }
        })
        .collect();
    let mut link = Link { bytes_per_us: spec.rate_mbit / 8.0, busy_until_us: 0.0, queue_bytes: spec.queue_bytes };
    let half_us = spec.rtt_ms as f64 * 500.0;
    let mut wire: VecDeque<Packet> = VecDeque::new();
    let mut held_at_first_end: Option<Vec<u64>> = None;
    let tick = spec.tick_ms.max(1);
    for now in 0..limit_ms {
        // Deliver what is due (the wire is kept sorted by arrival).
        let mut due = Vec::new();
        while wire.front().is_some_and(|p| p.0 <= now) {
            due.extend(wire.pop_front());
        }
        for (_, i, to_rx, bytes) in due {
            let Ok(msg) = TransferMsg::decode(&bytes) else {
                continue;
            };
            let f = &mut fl[i];
            if to_rx {
                f.rx.step(now, 0, msg);
            } else {
                f.tx.step(now, 1, msg);
            }
        }
        for (i, f) in fl.iter_mut().enumerate() {
            if !f.started && now >= f.start {
                f.started = true;
                let id = i as u64 + 1;
                let _ = f.rx.expect(now, id, 0, f.data.len());
                let _ = f.tx.send(now, id, 1, f.data.clone());
            }
            if now % tick == 0 {
                f.tx.tick(now);
                f.rx.tick(now);
            }
        }
        // Put what the nodes sent on the wire, the flows' data interleaved datagram by
        // datagram (senders on different hosts do not queue behind each other's bursts).
        let now_us = now as f64 * 1000.0;
        let mut bursts: Vec<VecDeque<Vec<u8>>> = Vec::new();
        for (i, f) in fl.iter_mut().enumerate() {
            let mut burst = VecDeque::new();
            while let Some((_, msg)) = f.tx.poll_send() {
                let mut bytes = Vec::new();
                msg.encode(&mut bytes);
                burst.push_back(bytes);
            }
            bursts.push(burst);
            while let Some((_, msg)) = f.rx.poll_send() {
                let mut bytes = Vec::new();
                msg.encode(&mut bytes);
                if !rng.chance(spec.loss) {
                    insert(&mut wire, ((now_us + half_us) / 1000.0).ceil() as u64, i, false, bytes);
                }
            }
            while let Some(ev) = f.rx.poll_event() {
                if let TransferEvent::Received { payload, .. } = ev {
                    f.exact = f.end.is_none() && payload == f.data;
                    f.end = Some(now);
                }
            }
            while f.tx.poll_event().is_some() {}
        }
        while bursts.iter().any(|b| !b.is_empty()) {
            for (i, burst) in bursts.iter_mut().enumerate() {
                let Some(bytes) = burst.pop_front() else {
                    continue;
                };
                if rng.chance(spec.loss) {
                    continue;
                }
                // Frame, UDP and IP headers count on the link too.
                if let Some(out) = link.enter(now_us, bytes.len() + 4 + 28) {
                    insert(&mut wire, ((out + half_us) / 1000.0).ceil() as u64, i, true, bytes);
                }
            }
        }
        if held_at_first_end.is_none() && fl.iter().any(|f| f.end.is_some()) {
            let held = fl
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    if f.end.is_some() {
                        f.data.len() as u64
                    } else {
                        f.rx.progress(i as u64 + 1).map_or(0, |(d, _)| d)
                    }
                })
                .collect();
            held_at_first_end = Some(held);
        }
        if fl.iter().all(|f| f.end.is_some() && f.tx.outgoing_count() == 0) {
            break;
        }
    }
    let held = held_at_first_end.unwrap_or_default();
    fl.iter()
        .enumerate()
        .map(|(i, f)| {
            let secs = f.end.map_or(0.0, |e| e.saturating_sub(f.start).max(1) as f64 / 1000.0);
            FlowResult {
                bytes: f.data.len(),
                start_ms: f.start,
                end_ms: f.end,
                exact: f.exact,
                goodput_mbit: if secs > 0.0 { f.data.len() as f64 * 8.0 / secs / 1e6 } else { 0.0 },
                held_at_first_end: held.get(i).copied().unwrap_or(0),
                retransmits: f.tx.stats().retransmits,
            }
        })
        .collect()
}

/// Inserts a packet keeping the wire sorted by arrival (stable for equal times).
fn insert(wire: &mut VecDeque<Packet>, at: u64, flow: usize, to_rx: bool, bytes: Vec<u8>) {
    let pos = wire.partition_point(|p| p.0 <= at);
    wire.insert(pos, (at, flow, to_rx, bytes));
}
