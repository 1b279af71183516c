//! The simulated world the transfer tests share: endpoints of `common::transfer` over
//! `common::simnet::SimNet`, every delivery through `encode` → bytes → `decode`.
#![allow(dead_code)]

use common::rng::Rng;
use common::simnet::{Faults, NodeId, SimNet};
use common::transfer::{TransferConfig, TransferEvent, TransferMsg, Transfers, DATA_HEADER_LEN};

/// Nodes, the network between them, and every event they reported, with its time.
pub struct Sim {
    pub net: SimNet<Vec<u8>>,
    pub nodes: Vec<Transfers<NodeId>>,
    pub alive: Vec<bool>,
    pub now: u64,
    pub events: Vec<(NodeId, u64, TransferEvent<NodeId>)>,
    /// Corrupt one byte of the data of the first data datagram with this seq.
    pub corrupt_seq: Option<u32>,
}

impl Sim {
    pub fn new(seed: u64, faults: Faults, cfgs: Vec<TransferConfig>) -> Self {
        let n = cfgs.len();
        Sim {
            net: SimNet::new(seed, faults),
            nodes: cfgs.into_iter().map(Transfers::new).collect(),
            alive: vec![true; n],
            now: 0,
            events: Vec::new(),
            corrupt_seq: None,
        }
    }

    /// Moves node `i`'s queued datagrams onto the network and its events into `events`.
    pub fn flush(&mut self, i: usize) {
        let from = i as NodeId;
        while let Some((to, msg)) = self.nodes[i].poll_send() {
            let mut bytes = Vec::new();
            msg.encode(&mut bytes);
            if let (Some(seq), TransferMsg::Data(d)) = (self.corrupt_seq, &msg) {
                if d.seq == seq && !d.data.is_empty() {
                    bytes[DATA_HEADER_LEN] ^= 0x5A;
                    self.corrupt_seq = None;
                }
            }
            if self.alive[i] {
                self.net.send(self.now, from, to, bytes);
            }
        }
        while let Some(ev) = self.nodes[i].poll_event() {
            self.events.push((from, self.now, ev));
        }
    }

    pub fn flush_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.flush(i);
        }
    }

    /// Delivers everything due, ticks every live node, then advances time to the next thing to do.
    pub fn advance(&mut self, limit: u64) {
        while let Some(m) = self.net.pop_due(self.now) {
            let to = m.to as usize;
            if !self.alive[to] {
                continue;
            }
            let msg = TransferMsg::decode(&m.msg).expect("decoding our own encoding");
            let mut again = Vec::new();
            msg.encode(&mut again);
            assert_eq!(again, m.msg, "encode(decode(bytes)) differs");
            self.nodes[to].step(self.now, m.from, msg);
            self.flush(to);
        }
        for i in 0..self.nodes.len() {
            if self.alive[i] {
                self.nodes[i].tick(self.now);
                self.flush(i);
            }
        }
        let mut next = self.net.next_time().unwrap_or(limit);
        for (i, n) in self.nodes.iter().enumerate() {
            if self.alive[i] {
                if let Some(d) = n.next_deadline() {
                    next = next.min(d);
                }
            }
        }
        self.now = next.clamp(self.now + 1, limit.max(self.now + 1));
    }

    pub fn events_of(&self, node: NodeId) -> impl Iterator<Item = &TransferEvent<NodeId>> {
        self.events.iter().filter(move |(n, _, _)| *n == node).map(|(_, _, e)| e)
    }
}

pub fn payload(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rng.fill(&mut v);
    v
}

/// Starts one transfer (id 42) of `size` random bytes from node 0 to node 1 on a perfect network.
pub fn start_one(seed: u64, cfg: TransferConfig, size: usize) -> (Sim, Vec<u8>) {
    start_one_corrupting(seed, cfg, size, None)
}

/// Like `start_one`, corrupting the data of the first datagram carrying chunk `corrupt`.
pub fn start_one_corrupting(seed: u64, cfg: TransferConfig, size: usize, corrupt: Option<u32>) -> (Sim, Vec<u8>) {
    let mut sim = Sim::new(seed, Faults::none(), vec![cfg.clone(), cfg]);
    sim.corrupt_seq = corrupt;
    let mut rng = Rng::new(seed);
    let data = payload(&mut rng, size);
    sim.nodes[1].expect(0, 42, 0, size).unwrap();
    sim.nodes[0].send(0, 42, 1, data.clone()).unwrap();
    sim.flush_all();
    (sim, data)
}

pub fn failed_at(sim: &Sim, node: NodeId) -> Option<(u64, bool)> {
    sim.events.iter().find_map(|(n, t, e)| match e {
        TransferEvent::Failed { outgoing, .. } if *n == node => Some((*t, *outgoing)),
        _ => None,
    })
}
