//! Deterministic simulations of `common::transfer` over `common::simnet::SimNet`.
//!
//! Every delivery goes through `encode` → bytes on the simulated wire → `decode`, so the wire
//! format is exercised too. Simulated time says nothing about real speed.

use common::rng::Rng;
use common::simnet::{Faults, NodeId};
use common::transfer::{
    DataChunk, TransferConfig, TransferEvent, TransferId, TransferMsg, Transfers, MAX_ACK_BITMAP_BYTES,
};
use std::collections::HashMap;
mod support;
use support::*;

/// One planned transfer of a scenario.
struct Plan {
    id: TransferId,
    from: NodeId,
    to: NodeId,
    start: u64,
    data: Vec<u8>,
}

/// Runs `plans` to completion and checks each was delivered once, byte-exact, and `Sent`.
fn run_plans(seed: u64, sim: &mut Sim, mut plans: Vec<Plan>) {
    plans.sort_by_key(|p| p.start);
    let mut started = 0;
    let give_up = sim.nodes.iter().map(|n| n.config().give_up_ms).max().unwrap_or(5000);
    let hard_limit = 3_600_000;
    let mut all_done_at: Option<u64> = None;
    loop {
        while started < plans.len() && plans[started].start <= sim.now {
            let p = &plans[started];
            let max_len = p.data.len() + 1;
            sim.nodes[p.to as usize].expect(sim.now, p.id, p.from, max_len).expect("expect");
            sim.nodes[p.from as usize].send(sim.now, p.id, p.to, p.data.clone()).expect("send");
            sim.flush_all();
            started += 1;
        }
        let failed: Vec<_> = sim.events.iter().filter(|(_, _, e)| matches!(e, TransferEvent::Failed { .. })).collect();
        assert!(failed.is_empty(), "seed {seed}: failures {failed:?}");
        let received = sim.events.iter().filter(|(_, _, e)| matches!(e, TransferEvent::Received { .. })).count();
        let sent = sim.events.iter().filter(|(_, _, e)| matches!(e, TransferEvent::Sent { .. })).count();
        if all_done_at.is_none() && started == plans.len() && received >= plans.len() && sent >= plans.len() {
            let last = sim.events.iter().map(|(_, t, _)| *t).max().unwrap_or(sim.now);
            all_done_at = Some(last);
        }
        // Keep running well past the end so late duplicates and timers get their chance.
        if let Some(t) = all_done_at {
            if sim.now > t + 2 * give_up && sim.net.in_flight() == 0 {
                break;
            }
        }
        assert!(sim.now < hard_limit, "seed {seed}: not finished after {hard_limit} ms simulated");
        let limit = match (plans.get(started), all_done_at) {
            (Some(p), _) => p.start,
            (None, Some(t)) => t + 2 * give_up + 1,
            (None, None) => hard_limit,
        };
        sim.advance(limit);
    }
    // Exactly once, byte-exact, both ends informed, nothing left behind.
    let mut got: HashMap<(NodeId, NodeId, TransferId), Vec<&Vec<u8>>> = HashMap::new();
    let mut sent: HashMap<(NodeId, NodeId, TransferId), usize> = HashMap::new();
    for (node, _, e) in &sim.events {
        match e {
            TransferEvent::Received { id, from, payload } => got.entry((*from, *node, *id)).or_default().push(payload),
            TransferEvent::Sent { id, to } => *sent.entry((*node, *to, *id)).or_default() += 1,
            _ => {}
        }
    }
    for p in &plans {
        let key = (p.from, p.to, p.id);
        let g = got.get(&key).map_or(&[][..], |v| &v[..]);
        assert_eq!(g.len(), 1, "seed {seed}: transfer {key:?} delivered {} times", g.len());
        assert!(*g[0] == p.data, "seed {seed}: transfer {key:?} ({} bytes) corrupted", p.data.len());
        assert_eq!(sent.get(&key), Some(&1), "seed {seed}: transfer {key:?} not Sent exactly once");
    }
    assert_eq!(got.len(), plans.len(), "seed {seed}: unexpected deliveries");
    for (i, n) in sim.nodes.iter().enumerate() {
        assert_eq!(n.outgoing_count(), 0, "seed {seed}: node {i} still sending");
        assert_eq!(n.incoming_count(), 0, "seed {seed}: node {i} still receiving");
        assert_eq!(n.buffered_bytes(), 0, "seed {seed}: node {i} still holds buffers");
    }
}

/// A random fault mix: loss 0..15 %, duplication, delay and reordering.
fn random_faults(rng: &mut Rng) -> Faults {
    let loss = [0.0, 0.0, 0.01, 0.03, 0.05, 0.10, 0.10, 0.15][rng.below(8) as usize];
    let min_delay = rng.range(1, 5);
    Faults {
        loss,
        duplicate: [0.0, 0.01, 0.05][rng.below(3) as usize],
        min_delay,
        max_delay: min_delay + [0, 2, 10, 40][rng.below(4) as usize],
    }
}

/// A random config: chunk sizes from tiny to default (1024 often), sometimes odd windows.
fn random_config(rng: &mut Rng) -> TransferConfig {
    let chunk = match rng.below(8) {
        0..=2 => 1024,
        3 => 1200,
        4 => 16384,
        5 => 4096,
        _ => rng.range(16, 3000) as usize,
    };
    let mut cfg = TransferConfig::with_chunk_size(chunk);
    match rng.below(4) {
        0 => cfg.window = Some(rng.range(1, 32) as usize),
        1 => cfg.ack_every = rng.range(1, 4) as u32,
        _ => {}
    }
    cfg
}

/// A payload size: mostly small or medium, chunk-boundary cases, a few of 1–5 MB when `big`.
fn random_size(rng: &mut Rng, chunk: usize, big: bool) -> usize {
    if big {
        return rng.range(1 << 20, 5 << 20) as usize;
    }
    let size = match rng.below(10) {
        0 => 0,
        1 => rng.range(1, 3) as usize,
        2 => chunk.saturating_sub(1),
        3 => chunk,
        4 => chunk + 1,
        5 => chunk * rng.range(2, 20) as usize,
        6 => rng.range(100_000, 300_000) as usize,
        _ => rng.below(60_000) as usize,
    };
    // Keep the number of chunks reasonable for tiny chunk sizes.
    size.min(chunk * 3000)
}

#[test]
fn two_endpoints_many_seeds() {
    let mut fast_retransmits = 0;
    let mut retransmits = 0;
    // TRANSFER_SIM_SEEDS=N runs more seeds (and TRANSFER_SIM_FIRST=S starts elsewhere) for soak tests.
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    let seeds = env("TRANSFER_SIM_SEEDS").unwrap_or(240);
    let first = env("TRANSFER_SIM_FIRST").unwrap_or(0);
    for seed in first..first + seeds {
        let mut rng = Rng::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5EED);
        let faults = random_faults(&mut rng);
        let cfg = random_config(&mut rng);
        let big = seed % 48 == 7; // 5 seeds of 1–5 MB
        let size = random_size(&mut rng, cfg.chunk_size, big);
        let data = payload(&mut rng, size);
        let mut sim = Sim::new(seed, faults.clone(), vec![cfg.clone(), cfg.clone()]);
        let plans = vec![Plan { id: rng.next_u64(), from: 0, to: 1, start: 0, data }];
        run_plans(seed, &mut sim, plans);
        fast_retransmits += sim.nodes[0].stats().fast_retransmits;
        retransmits += sim.nodes[0].stats().retransmits;
    }
    assert!(fast_retransmits > 0, "no fast retransmit ever happened");
    println!("{seeds} seeds: {retransmits} retransmits, {fast_retransmits} fast");
}

#[test]
fn three_endpoints_concurrent_both_directions() {
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    let seeds = env("TRANSFER_SIM_SEEDS").map_or(40, |n| n / 6);
    let first = 1_000_000 + env("TRANSFER_SIM_FIRST").unwrap_or(0);
    for seed in first..first + seeds {
        let mut rng = Rng::new(seed ^ 0xABCD_EF01);
        let faults = random_faults(&mut rng);
        let cfg = random_config(&mut rng);
        let mut sim = Sim::new(seed, faults, vec![cfg.clone(), cfg.clone(), cfg.clone()]);
        let mut plans = Vec::new();
        let n = rng.range(6, 12);
        for k in 0..n {
            let from = rng.below(3) as NodeId;
            let to = (from + 1 + rng.below(2) as NodeId) % 3;
            let size = random_size(&mut rng, cfg.chunk_size, false).min(200_000);
            plans.push(Plan { id: rng.next_u64(), from, to, start: rng.below(300), data: payload(&mut rng, size) });
            if k == 0 {
                // The same id in the opposite direction, at the same time.
                let size = random_size(&mut rng, cfg.chunk_size, false).min(200_000);
                let id = plans[0].id;
                plans.push(Plan { id, from: to, to: from, start: plans[0].start, data: payload(&mut rng, size) });
            }
        }
        run_plans(seed, &mut sim, plans);
    }
}

#[test]
fn sender_gives_up_when_receiver_disappears() {
    let mut cfg = TransferConfig::with_chunk_size(1024);
    cfg.give_up_ms = 3000;
    let (mut sim, _) = start_one(1, cfg, 2_000_000);
    while sim.nodes[0].progress(42).is_some_and(|(done, _)| done < 200_000) {
        sim.advance(u64::MAX);
    }
    let cut = sim.now;
    sim.alive[1] = false; // crashed: everything to it is dropped
    sim.net.drop_to(1);
    while failed_at(&sim, 0).is_none() {
        assert!(sim.now < cut + 60_000, "sender never gave up");
        sim.advance(u64::MAX);
    }
    let (t, outgoing) = failed_at(&sim, 0).unwrap();
    assert!(outgoing);
    assert!(t >= cut + 3000 - 5 && t <= cut + 3000 + 5, "gave up at {t}, cut at {cut}");
    assert_eq!(sim.nodes[0].outgoing_count(), 0);
    assert_eq!(sim.nodes[0].next_deadline(), None);
    assert!(!sim.events_of(0).any(|e| matches!(e, TransferEvent::Sent { .. })));
}

#[test]
fn receiver_gives_up_when_sender_disappears() {
    let mut cfg = TransferConfig::with_chunk_size(1024);
    cfg.give_up_ms = 4000;
    let (mut sim, _) = start_one(2, cfg, 1_000_000);
    while sim.nodes[1].progress(42).is_some_and(|(done, _)| done < 300_000) {
        sim.advance(u64::MAX);
    }
    assert!(sim.nodes[1].buffered_bytes() >= 1_000_000);
    let cut = sim.now;
    sim.alive[0] = false;
    sim.net.partition(0, 1);
    while failed_at(&sim, 1).is_none() {
        assert!(sim.now < cut + 60_000, "receiver never gave up");
        sim.advance(u64::MAX);
    }
    let (t, outgoing) = failed_at(&sim, 1).unwrap();
    assert!(!outgoing);
    assert!(t >= cut + 4000 - 5 && t <= cut + 4000 + 5, "gave up at {t}, cut at {cut}");
    assert_eq!(sim.nodes[1].incoming_count(), 0);
    assert_eq!(sim.nodes[1].buffered_bytes(), 0);
    assert!(!sim.events_of(1).any(|e| matches!(e, TransferEvent::Received { .. })));
}

#[test]
fn unused_expectation_expires() {
    let mut t: Transfers<u32> = Transfers::new(TransferConfig::default());
    t.expect(100, 5, 9, 1000).unwrap();
    assert_eq!(t.next_deadline(), Some(5100));
    t.tick(5099);
    assert!(t.poll_event().is_none());
    t.tick(5100);
    assert!(matches!(t.poll_event(), Some(TransferEvent::Failed { id: 5, peer: 9, outgoing: false, .. })));
    assert_eq!(t.incoming_count(), 0);
}

#[test]
fn checksum_mismatch_is_detected() {
    for (seed, seq) in [(3u64, 0u32), (4, 5), (5, 40)] {
        let cfg = TransferConfig::with_chunk_size(1024);
        let (mut sim, _) = start_one_corrupting(seed, cfg, 41 * 1024 - 100, Some(seq));
        while failed_at(&sim, 0).is_none() || failed_at(&sim, 1).is_none() {
            assert!(sim.now < 60_000, "seed {seed}: corruption not detected on both sides");
            sim.advance(u64::MAX);
        }
        assert_eq!(sim.corrupt_seq, None, "nothing corrupted");
        let reason = sim.events.iter().find_map(|(n, _, e)| match e {
            TransferEvent::Failed { reason, .. } if *n == 1 => Some(reason.clone()),
            _ => None,
        });
        assert!(reason.unwrap().contains("checksum"), "seed {seed}");
        assert!(!sim
            .events
            .iter()
            .any(|(_, _, e)| matches!(e, TransferEvent::Received { .. } | TransferEvent::Sent { .. })));
        // The sender learnt it from the receiver's Cancel, long before any give-up.
        assert!(failed_at(&sim, 0).unwrap().0 < 1000, "seed {seed}");
        assert_eq!(sim.nodes[1].buffered_bytes(), 0);
    }
}

fn data_msg(id: TransferId, seq: u32, total_len: u64, chunk: u16, data: Vec<u8>) -> TransferMsg {
    let total_chunks = total_len.div_ceil(u64::from(chunk)).max(1) as u32;
    TransferMsg::Data(DataChunk { id, seq, total_chunks, total_len, chunk_size: chunk, checksum: 0, data })
}

#[test]
fn unexpected_data_is_ignored_without_allocating() {
    let mut t: Transfers<u32> = Transfers::new(TransferConfig::default());
    let big = 50 * 1024 * 1024;
    for seq in 0..100u32 {
        t.step(seq as u64, 7, data_msg(seq as u64, seq, big, 16384, vec![1; 16384]));
    }
    assert_eq!(t.incoming_count(), 0);
    assert_eq!(t.buffered_bytes(), 0);
    assert!(t.poll_send().is_none(), "junk must not be answered");
    let dropped = std::iter::from_fn(|| t.poll_event()).filter(|e| matches!(e, TransferEvent::Dropped { .. })).count();
    assert_eq!(dropped, 100);
    assert_eq!(t.stats().dropped, 100);

    // Expected id, but from another peer: still ignored.
    t.expect(0, 1, 8, big as usize).unwrap();
    t.step(1, 7, data_msg(1, 0, big, 16384, vec![1; 16384]));
    assert_eq!(t.buffered_bytes(), 0);
    assert!(t.poll_send().is_none());

    // Expected, from the right peer, but longer than allowed: refused with Cancel, nothing kept.
    t.expect(0, 2, 8, 1000).unwrap();
    t.step(1, 8, data_msg(2, 0, 1001, 1024, vec![1; 1001]));
    assert_eq!(t.buffered_bytes(), 0);
    assert!(matches!(t.poll_send(), Some((8, TransferMsg::Cancel { id: 2, .. }))));
    assert!(std::iter::from_fn(|| t.poll_event())
        .any(|e| matches!(e, TransferEvent::Failed { id: 2, outgoing: false, .. })));
    assert_eq!(t.incoming_count(), 1); // transfer 1 still expected
}

#[test]
fn replay_after_completion_is_reacked_not_redelivered() {
    let cfg = TransferConfig::with_chunk_size(1024);
    let mut s: Transfers<u32> = Transfers::new(cfg.clone());
    let mut r: Transfers<u32> = Transfers::new(cfg);
    let data = payload(&mut Rng::new(11), 10_000);
    r.expect(0, 9, 1, 10_000).unwrap();
    s.send(0, 9, 2, data.clone()).unwrap();
    let mut all_data = Vec::new();
    for now in 1..100 {
        while let Some((_, m)) = s.poll_send() {
            all_data.push(m.clone());
            r.step(now, 1, m);
        }
        while let Some((_, m)) = r.poll_send() {
            s.step(now, 2, m);
        }
        s.tick(now);
        r.tick(now);
    }
    let ev: Vec<_> = std::iter::from_fn(|| r.poll_event()).collect();
    assert_eq!(ev, vec![TransferEvent::Received { id: 9, from: 1, payload: data }]);
    assert_eq!(std::iter::from_fn(|| s.poll_event()).collect::<Vec<_>>(), vec![TransferEvent::Sent { id: 9, to: 2 }]);
    for m in all_data {
        if let TransferMsg::Data(d) = &m {
            r.step(200, 1, m.clone());
            let ack = r.poll_send();
            assert_eq!(ack, Some((1, TransferMsg::Ack { id: 9, cum: d.total_chunks, sack: vec![] })));
        }
    }
    assert!(r.poll_event().is_none());
    assert_eq!(r.buffered_bytes(), 0);
}

#[test]
fn cancel_reaches_the_other_side() {
    for cancel_at_sender in [true, false] {
        let (mut sim, _) = start_one(6, TransferConfig::with_chunk_size(1024), 500_000);
        while sim.nodes[1].progress(42).is_some_and(|(done, _)| done < 100_000) {
            sim.advance(u64::MAX);
        }
        let (me, other): (NodeId, NodeId) = if cancel_at_sender { (0, 1) } else { (1, 0) };
        assert!(sim.nodes[me as usize].cancel(42));
        assert!(!sim.nodes[me as usize].cancel(42));
        sim.flush_all();
        let cut = sim.now;
        while failed_at(&sim, other).is_none() {
            sim.advance(u64::MAX);
        }
        assert!(failed_at(&sim, other).unwrap().0 < cut + 100, "cancel not seen promptly");
        assert_eq!(failed_at(&sim, me).map(|f| f.1), Some(cancel_at_sender));
        for n in &sim.nodes {
            assert_eq!(n.outgoing_count() + n.incoming_count(), 0);
        }
    }
}

#[test]
fn progress_and_limits() {
    let mut t: Transfers<u32> = Transfers::new(TransferConfig { max_incoming: 2, ..TransferConfig::default() });
    t.expect(0, 1, 1, 10).unwrap();
    assert!(t.expect(0, 1, 1, 10).is_err());
    t.expect(0, 2, 1, 10).unwrap();
    assert!(t.expect(0, 3, 1, 10).is_err(), "max_incoming not enforced");
    assert!(t.send(0, 4, 1, vec![0u8; 50 * 1024 * 1024 + 1]).is_err());
    t.send(0, 4, 1, vec![0u8; 3 * 1024 * 1024]).unwrap();
    assert!(t.send(0, 4, 1, vec![]).is_err());
    assert_eq!(t.progress(4), Some((0, 3 * 1024 * 1024)));
    assert_eq!(t.progress(1), Some((0, 0)));
    assert_eq!(t.progress(99), None);
    // An empty payload is one empty chunk.
    t.send(0, 5, 1, Vec::new()).unwrap();
    let empties = std::iter::from_fn(|| t.poll_send())
        .filter(|(_, m)| matches!(m, TransferMsg::Data(d) if d.id == 5 && d.data.is_empty() && d.total_chunks == 1))
        .count();
    assert_eq!(empties, 1);
}

#[test]
fn large_transfer_reports_progress() {
    let (mut sim, data) = start_one(8, TransferConfig::default(), 3_500_000);
    while !sim.events_of(0).any(|e| matches!(e, TransferEvent::Sent { .. })) {
        assert!(sim.now < 100_000);
        sim.advance(u64::MAX);
    }
    let steps = |node| sim.events_of(node).filter(|e| matches!(e, TransferEvent::Progress { .. })).count();
    assert_eq!((steps(0), steps(1)), (3, 3));
    assert!(sim.events_of(1).any(|e| matches!(e, TransferEvent::Received { payload, .. } if *payload == data)));
}

/// A random valid message.
fn random_msg(rng: &mut Rng) -> TransferMsg {
    let id = rng.next_u64();
    match rng.below(3) {
        0 => {
            let chunk = rng.range(1, 2000) as u16;
            let total_len = match rng.below(3) {
                0 => 0,
                1 => rng.below(5000),
                _ => rng.below(50 << 20),
            };
            let total_chunks = total_len.div_ceil(u64::from(chunk)).max(1);
            let seq = rng.below(total_chunks);
            let len = if seq + 1 < total_chunks {
                u64::from(chunk)
            } else {
                total_len - (total_chunks - 1) * u64::from(chunk)
            };
            let data = payload(rng, len as usize);
            TransferMsg::Data(DataChunk {
                id,
                seq: seq as u32,
                total_chunks: total_chunks as u32,
                total_len,
                chunk_size: chunk,
                checksum: rng.next_u64() as u32,
                data,
            })
        }
        1 => {
            let n = rng.below(MAX_ACK_BITMAP_BYTES as u64 + 1) as usize;
            TransferMsg::Ack { id, cum: rng.next_u64() as u32, sack: payload(rng, n) }
        }
        _ => {
            let mut b = vec![0xB7, 3];
            b.extend_from_slice(&id.to_le_bytes());
            b.push(rng.range(1, 2) as u8);
            b.push(rng.range(1, 6) as u8);
            TransferMsg::decode(&b).expect("valid cancel")
        }
    }
}

#[test]
fn decode_never_panics() {
    let mut rng = Rng::new(0xF022);
    let (mut ok, mut err) = (0u32, 0u32);
    for i in 0..100_000u32 {
        let msg = random_msg(&mut rng);
        let mut bytes = Vec::new();
        msg.encode(&mut bytes);
        if i % 10 == 0 {
            assert_eq!(TransferMsg::decode(&bytes).as_ref(), Ok(&msg), "valid message rejected");
        }
        match rng.below(6) {
            0 => {
                let n = rng.below(80) as usize;
                bytes = payload(&mut rng, n);
                if n > 2 && rng.chance(0.7) {
                    bytes[0] = 0xB7;
                    bytes[1] = rng.range(0, 4) as u8;
                }
            }
            1 => bytes.truncate(rng.below(bytes.len() as u64 + 1) as usize),
            2 => {
                for _ in 0..rng.range(1, 4) {
                    let at = rng.below(bytes.len() as u64) as usize;
                    bytes[at] ^= 1 << rng.below(8);
                }
            }
            3 => {
                let n = rng.range(1, 40) as usize;
                bytes.extend(payload(&mut rng, n));
            }
            4 => {
                // Extreme values in a random header field.
                let at = rng.below(bytes.len().min(34) as u64) as usize;
                for b in bytes.iter_mut().skip(at).take(rng.range(1, 8) as usize) {
                    *b = if rng.chance(0.5) { 0xFF } else { 0 };
                }
            }
            _ => {
                let n = rng.range(100, 70_000) as usize;
                bytes = payload(&mut rng, n);
                bytes[0] = 0xB7;
                bytes[1] = 1;
            }
        }
        match TransferMsg::decode(&bytes) {
            Ok(m) => {
                ok += 1;
                let mut again = Vec::new();
                m.encode(&mut again);
                assert_eq!(again, bytes, "accepted bytes do not re-encode identically");
            }
            Err(_) => err += 1,
        }
    }
    assert!(ok > 100 && err > 50_000, "ok {ok} err {err}");
}

/// CPU cost of the state machines and the codec with instant, lossless delivery: no sockets, no
/// network. Not a throughput figure for the real system. Run with `--ignored --nocapture`.
#[test]
#[ignore]
fn cpu_cost_in_memory() {
    let size = 10 * 1024 * 1024;
    let data = payload(&mut Rng::new(1), size);
    for cfg in [TransferConfig::default(), TransferConfig::with_chunk_size(1024)] {
        let mut s: Transfers<u32> = Transfers::new(cfg.clone());
        let mut r: Transfers<u32> = Transfers::new(cfg.clone());
        let started = std::time::Instant::now();
        r.expect(0, 1, 0, size).unwrap();
        s.send(0, 1, 1, data.clone()).unwrap();
        let mut buf = Vec::new();
        let mut done = false;
        while !done {
            while let Some((_, m)) = s.poll_send() {
                buf.clear();
                m.encode(&mut buf);
                r.step(0, 0, TransferMsg::decode(&buf).unwrap());
            }
            while let Some((_, m)) = r.poll_send() {
                buf.clear();
                m.encode(&mut buf);
                s.step(0, 1, TransferMsg::decode(&buf).unwrap());
            }
            r.tick(0);
            done = std::iter::from_fn(|| s.poll_event()).any(|e| matches!(e, TransferEvent::Sent { .. }));
        }
        let secs = started.elapsed().as_secs_f64();
        println!("chunk {}: 10 MiB through both state machines in {:.1} ms of CPU", cfg.chunk_size, secs * 1e3);
    }
}

/// Not a speed test: counts datagrams. On an in-order path the protocol sends each chunk once
/// and acks every second chunk; losses cost about one retransmission each; reordering costs little.
#[test]
fn datagram_economy() {
    // (loss, delay spread, max data datagrams per chunk)
    for (loss, spread, max_ratio) in [(0.0, 0u64, 1.0), (0.05, 0, 1.10), (0.10, 0, 1.20), (0.0, 10, 1.35)] {
        for chunk in [1024usize, 16384] {
            let cfg = TransferConfig::with_chunk_size(chunk);
            let faults = Faults { loss, duplicate: 0.0, min_delay: 2, max_delay: 2 + spread };
            let mut sim = Sim::new(77, faults, vec![cfg.clone(), cfg]);
            let data = payload(&mut Rng::new(5), 2_000_000);
            let chunks = data.len().div_ceil(chunk) as u64;
            run_plans(77, &mut sim, vec![Plan { id: 1, from: 0, to: 1, start: 0, data }]);
            let (s, r) = (sim.nodes[0].stats(), sim.nodes[1].stats());
            let what = format!("loss {loss} spread {spread} chunk {chunk}: {chunks} chunks, {s:?}, {r:?}");
            println!("{what}");
            assert!(s.data_sent as f64 <= chunks as f64 * max_ratio, "{what}");
            if loss == 0.0 && spread == 0 {
                assert_eq!(s.retransmits, 0, "{what}");
                assert!(r.acks_sent <= chunks / 2 + 2, "{what}");
            }
        }
    }
}

#[test]
fn inconsistent_chunks_given_to_step_are_dropped() {
    let mut t: Transfers<u32> = Transfers::new(TransferConfig::default());
    t.expect(0, 1, 7, 1 << 20).unwrap();
    // A chunk count that does not match the length would size the bitmap: refused.
    let bad = DataChunk {
        id: 1,
        seq: 0,
        total_chunks: u32::MAX,
        total_len: 10,
        chunk_size: 10,
        checksum: 0,
        data: vec![0; 10],
    };
    assert!(bad.validate(u64::MAX).is_err());
    t.step(0, 7, TransferMsg::Data(bad));
    // Data shorter than its header says: refused.
    let short =
        DataChunk { id: 1, seq: 0, total_chunks: 2, total_len: 20, chunk_size: 10, checksum: 0, data: vec![0; 9] };
    t.step(0, 7, TransferMsg::Data(short));
    assert_eq!(t.buffered_bytes(), 0);
    assert_eq!(t.stats().dropped, 2);
    assert!(t.poll_send().is_none());
}

#[test]
fn outage_shorter_than_give_up_recovers() {
    for seed in 0..10u64 {
        let cfg = TransferConfig::with_chunk_size(1024);
        let (mut sim, data) = start_one(seed, cfg, 600_000);
        sim.net.set_faults(Faults::lossy());
        while sim.nodes[1].progress(42).is_some_and(|(done, _)| done < 100_000 + seed * 30_000) {
            sim.advance(u64::MAX);
        }
        sim.net.partition(0, 1);
        let heal_at = sim.now + 1000 + seed * 300; // up to 3.7 s of a 5 s give-up
        while sim.now < heal_at {
            sim.advance(heal_at);
        }
        sim.net.heal();
        while !sim.events_of(1).any(|e| matches!(e, TransferEvent::Received { .. })) {
            assert!(failed_at(&sim, 0).is_none() && failed_at(&sim, 1).is_none(), "seed {seed}: gave up");
            assert!(sim.now < heal_at + 60_000, "seed {seed}: no recovery");
            sim.advance(u64::MAX);
        }
        while !sim.events_of(0).any(|e| matches!(e, TransferEvent::Sent { .. })) {
            assert!(sim.now < heal_at + 60_000, "seed {seed}: sender never finished");
            sim.advance(u64::MAX);
        }
        assert!(sim.events_of(1).any(|e| matches!(e, TransferEvent::Received { payload, .. } if *payload == data)));
    }
}

#[test]
fn late_expect_recovers_by_retransmission() {
    let cfg = TransferConfig::with_chunk_size(1024);
    let mut sim = Sim::new(3, Faults::none(), vec![cfg.clone(), cfg]);
    let data = payload(&mut Rng::new(3), 50_000);
    sim.nodes[0].send(0, 8, 1, data.clone()).unwrap();
    sim.flush_all();
    while sim.now < 30 {
        sim.advance(30);
    }
    assert!(sim.events_of(1).any(|e| matches!(e, TransferEvent::Dropped { .. })));
    sim.nodes[1].expect(sim.now, 8, 0, 50_000).unwrap();
    while !sim.events_of(0).any(|e| matches!(e, TransferEvent::Sent { .. })) {
        assert!(sim.now < 10_000, "never recovered");
        sim.advance(u64::MAX);
    }
    assert!(sim.events_of(1).any(|e| matches!(e, TransferEvent::Received { payload, .. } if *payload == data)));
}
