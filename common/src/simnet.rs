//! A simulated network for deterministic tests: loss, duplication, reordering, delay, partition.
//!
//! Nodes are plain numbers. `send` queues a message with a random delay (which also reorders),
//! may drop or duplicate it, and drops it if the two ends are partitioned at send time or at
//! delivery time. `pop_due(now)` hands out the next message whose time has come. Everything is
//! driven by one seeded [`Rng`], so a seed replays a run exactly.

use crate::rng::Rng;
use std::collections::{BTreeMap, BTreeSet};

/// A node address in the simulation.
pub type NodeId = u32;

/// The fault mix of a simulated network.
#[derive(Debug, Clone)]
pub struct Faults {
    /// Probability that a message is lost.
    pub loss: f64,
    /// Probability that a message is delivered twice.
    pub duplicate: f64,
    /// Smallest delay in milliseconds.
    pub min_delay: u64,
    /// Largest delay in milliseconds (a spread reorders messages).
    pub max_delay: u64,
}

impl Faults {
    /// A perfect network with a 1 ms delay.
    pub fn none() -> Self {
        Faults { loss: 0.0, duplicate: 0.0, min_delay: 1, max_delay: 1 }
    }

    /// The mix the issue asks for: 10 % loss, some duplication, reordering delays.
    pub fn lossy() -> Self {
        Faults { loss: 0.10, duplicate: 0.05, min_delay: 1, max_delay: 20 }
    }
}

/// A message in flight.
#[derive(Debug, Clone)]
pub struct InFlight<M> {
    /// Sender.
    pub from: NodeId,
    /// Receiver.
    pub to: NodeId,
    /// The message.
    pub msg: M,
}

/// The simulated network.
pub struct SimNet<M> {
    rng: Rng,
    faults: Faults,
    queue: BTreeMap<(u64, u64), InFlight<M>>,
    seq: u64,
    cut: BTreeSet<(NodeId, NodeId)>,
    /// Messages handed to `send`.
    pub sent: u64,
    /// Messages dropped by loss or partition.
    pub dropped: u64,
}

impl<M: Clone> SimNet<M> {
    /// A network whose randomness comes from `seed`.
    pub fn new(seed: u64, faults: Faults) -> Self {
        SimNet {
            rng: Rng::new(seed),
            faults,
            queue: BTreeMap::new(),
            seq: 0,
            cut: BTreeSet::new(),
            sent: 0,
            dropped: 0,
        }
    }

    /// Replaces the fault mix (e.g. to heal the network at the end of a run).
    pub fn set_faults(&mut self, faults: Faults) {
        self.faults = faults;
    }

    /// The network's own RNG, for scenario decisions that should replay with the seed.
    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    /// Cuts both directions between `a` and `b`.
    pub fn partition(&mut self, a: NodeId, b: NodeId) {
        self.cut.insert((a, b));
        self.cut.insert((b, a));
    }

    /// Removes every cut.
    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// True if `a` cannot reach `b`.
    pub fn is_cut(&self, a: NodeId, b: NodeId) -> bool {
        self.cut.contains(&(a, b))
    }

    /// Queues `msg` from `from` to `to` at time `now`.
    pub fn send(&mut self, now: u64, from: NodeId, to: NodeId, msg: M) {
        self.sent += 1;
        if self.is_cut(from, to) || self.rng.chance(self.faults.loss) {
            self.dropped += 1;
            return;
        }
        let copies = if self.rng.chance(self.faults.duplicate) { 2 } else { 1 };
        for _ in 0..copies {
            let at = now + self.rng.range(self.faults.min_delay, self.faults.max_delay);
            self.seq += 1;
            self.queue.insert((at, self.seq), InFlight { from, to, msg: msg.clone() });
        }
    }

    /// The time of the next delivery, if any.
    pub fn next_time(&self) -> Option<u64> {
        self.queue.keys().next().map(|(t, _)| *t)
    }

    /// The next message due at or before `now`; partitioned ones are dropped on the way.
    pub fn pop_due(&mut self, now: u64) -> Option<InFlight<M>> {
        loop {
            let key = *self.queue.keys().next()?;
            if key.0 > now {
                return None;
            }
            let m = self.queue.remove(&key)?;
            if self.is_cut(m.from, m.to) {
                self.dropped += 1;
                continue;
            }
            return Some(m);
        }
    }

    /// Drops every queued message addressed to `node` (it crashed: its socket buffer is gone).
    pub fn drop_to(&mut self, node: NodeId) {
        let before = self.queue.len();
        self.queue.retain(|_, m| m.to != node);
        self.dropped += (before - self.queue.len()) as u64;
    }

    /// Messages still in flight.
    pub fn in_flight(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_network_delivers_everything_once() {
        let mut net = SimNet::new(1, Faults::none());
        for i in 0..10u32 {
            net.send(0, 1, 2, i);
        }
        let mut got = vec![];
        while let Some(m) = net.pop_due(10) {
            got.push(m.msg);
        }
        assert_eq!(got.len(), 10);
    }

    #[test]
    fn partition_drops_and_heal_restores() {
        let mut net = SimNet::new(1, Faults::none());
        net.partition(1, 2);
        net.send(0, 1, 2, 0u32);
        assert!(net.pop_due(10).is_none());
        net.heal();
        net.send(0, 1, 2, 1u32);
        assert_eq!(net.pop_due(10).map(|m| m.msg), Some(1));
    }

    #[test]
    fn lossy_network_loses_some() {
        let mut net = SimNet::new(5, Faults::lossy());
        for i in 0..1000u32 {
            net.send(0, 1, 2, i);
        }
        assert!(net.dropped > 50 && net.dropped < 200, "dropped {}", net.dropped);
    }
}
