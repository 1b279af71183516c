//! Resuming in the deterministic simulation: a transfer that breaks off (a 60 s outage, a
//! cancel, a restart of either end) leaves its partial payload with the receiver, and a retry
//! of the same bytes under a new id sends only the chunks that are missing.

use common::rng::Rng;
use common::simnet::Faults;
use common::transfer::{Partial, TransferConfig, TransferEvent, Transfers};
mod support;
use support::*;

const CHUNK: usize = 1024;

fn received(sim: &Sim, node: u32, data: &[u8]) -> bool {
    sim.events_of(node).any(|e| matches!(e, TransferEvent::Received { payload, .. } if payload == data))
}

fn resumed_held(sim: &Sim, node: u32) -> Option<u64> {
    sim.events_of(node).find_map(|e| match e {
        TransferEvent::Resumed { held, .. } => Some(*held),
        _ => None,
    })
}

/// Runs until node 1 holds at least `bytes` of transfer 42.
fn run_until_held(sim: &mut Sim, bytes: u64) {
    while sim.nodes[1].progress(42).is_some_and(|(done, _)| done < bytes) {
        sim.advance(u64::MAX);
    }
}

/// What a shell saves of `t`'s partials.
fn saved(t: &Transfers<u32>) -> Vec<Partial> {
    t.partials().iter().map(|p| Partial { shape: p.shape, have: p.have.to_vec(), buf: p.buf.to_vec() }).collect()
}

/// Runs until node 1 has received `data` and node 0 reported `Sent`, at most `limit` ms on.
fn finish(seed: u64, sim: &mut Sim, data: &[u8], limit: u64) {
    let until = sim.now + limit;
    while !(received(sim, 1, data) && sim.events_of(0).any(|e| matches!(e, TransferEvent::Sent { id: 43, .. }))) {
        let failed: Vec<_> =
            sim.events.iter().filter(|(_, _, e)| matches!(e, TransferEvent::Failed { id: 43, .. })).collect();
        assert!(failed.is_empty(), "seed {seed}: the retry failed: {failed:?}");
        assert!(sim.now < until, "seed {seed}: the retry did not finish");
        sim.advance(u64::MAX);
    }
}

/// Starts the retry: the same bytes, id 43, after both ends gave up on id 42.
fn retry(sim: &mut Sim, data: &[u8]) {
    sim.nodes[1].expect(sim.now, 43, 0, data.len()).expect("expect");
    sim.nodes[0].send(sim.now, 43, 1, data.to_vec()).expect("send");
    sim.flush_all();
}

/// Cuts the link once node 1 holds `at` bytes and keeps it cut for `outage` ms (both ends give
/// up meanwhile); returns the bytes node 1 held when the link went down.
fn cut_for(sim: &mut Sim, at: u64, outage: u64) -> u64 {
    while sim.nodes[1].progress(42).is_some_and(|(done, _)| done < at) {
        sim.advance(u64::MAX);
    }
    let held = sim.nodes[1].progress(42).map_or(0, |(d, _)| d);
    sim.net.partition(0, 1);
    let heal_at = sim.now + outage;
    while sim.now < heal_at {
        sim.advance(heal_at);
    }
    sim.net.heal();
    held
}

#[test]
fn a_retry_after_a_60_s_outage_sends_only_the_missing_chunks() {
    for seed in 0..8u64 {
        let cfg = TransferConfig::with_chunk_size(CHUNK);
        let size = 700_000 + seed as usize * 10_000;
        let (mut sim, data) = start_one(seed, cfg, size);
        sim.net.set_faults(Faults::lossy());
        let cut_held = cut_for(&mut sim, 200_000 + seed * 40_000, 60_000);
        assert!(failed_at(&sim, 0).is_some() && failed_at(&sim, 1).is_some(), "seed {seed}: nobody gave up");
        assert!(sim.nodes[1].parked_bytes() > 0, "seed {seed}: the partial was not kept");
        let sent_before = sim.nodes[0].stats().data_sent;
        retry(&mut sim, &data);
        finish(seed, &mut sim, &data, 60_000);
        let held = resumed_held(&sim, 1).unwrap_or_else(|| panic!("seed {seed}: no Resumed event"));
        assert!(held >= cut_held, "seed {seed}: resumed with {held} bytes, {cut_held} were held at the cut");
        let missing = (size as u64 - held).div_ceil(CHUNK as u64);
        let sent = sim.nodes[0].stats().data_sent - sent_before;
        // 10 % loss and the first window (sent before the receiver's first ack) come on top.
        let bound = missing + missing / 3 + 64;
        println!("seed {seed}: held {held} of {size}; {missing} chunks missing, {sent} sent (bound {bound})");
        assert!(sent <= bound, "seed {seed}: {sent} data datagrams for {missing} missing chunks");
        assert_eq!(sim.nodes[1].parked_bytes(), 0, "seed {seed}: the partial outlived its delivery");
    }
}

#[test]
fn a_restarted_sender_resumes_too() {
    let cfg = TransferConfig::with_chunk_size(CHUNK);
    let (mut sim, data) = start_one(5, cfg.clone(), 400_000);
    cut_for(&mut sim, 150_000, 10_000);
    sim.nodes[0] = Transfers::new(cfg); // a new process: nothing of the old transfer
    let before = sim.nodes[0].stats().data_sent;
    retry(&mut sim, &data);
    finish(5, &mut sim, &data, 30_000);
    let held = resumed_held(&sim, 1).expect("no Resumed event");
    let sent = sim.nodes[0].stats().data_sent - before;
    let missing = (400_000 - held).div_ceil(CHUNK as u64);
    assert!(held >= 150_000 && sent <= missing + 64, "held {held}, sent {sent} for {missing}");
}

#[test]
fn a_restarted_receiver_resumes_from_its_saved_partial() {
    let cfg = TransferConfig::with_chunk_size(CHUNK);
    let (mut sim, data) = start_one(6, cfg.clone(), 400_000);
    run_until_held(&mut sim, 250_000);
    // What the shell saves: the running transfer's partial.
    let saved: Vec<Partial> = saved(&sim.nodes[1]);
    assert_eq!(saved.len(), 1);
    sim.alive[1] = false;
    sim.net.drop_to(1);
    while failed_at(&sim, 0).is_none() {
        sim.advance(u64::MAX);
    }
    sim.alive[1] = true;
    sim.nodes[1] = Transfers::new(cfg);
    for p in saved {
        sim.nodes[1].restore(sim.now, p).expect("restore");
    }
    let before = sim.nodes[0].stats().data_sent;
    retry(&mut sim, &data);
    finish(6, &mut sim, &data, 30_000);
    let held = resumed_held(&sim, 1).expect("no Resumed event");
    let sent = sim.nodes[0].stats().data_sent - before;
    assert!(held >= 250_000, "held {held}");
    assert!(sent <= (400_000 - held).div_ceil(CHUNK as u64) + 64, "sent {sent}");
}

#[test]
fn a_sender_cancel_parks_the_partial_and_other_bytes_do_not_adopt_it() {
    let cfg = TransferConfig::with_chunk_size(CHUNK);
    let (mut sim, data) = start_one(7, cfg, 300_000);
    run_until_held(&mut sim, 100_000);
    sim.nodes[0].cancel(42);
    sim.flush_all();
    let settle = sim.now + 100;
    while sim.now < settle {
        sim.advance(settle);
    }
    assert!(sim.nodes[1].parked_bytes() > 0);
    // Other bytes of the same length: another shape, so a transfer from zero.
    let mut other = data.clone();
    other[0] ^= 1;
    retry(&mut sim, &other);
    finish(7, &mut sim, &other, 30_000);
    assert_eq!(resumed_held(&sim, 1), None);
    assert!(sim.nodes[1].parked_bytes() > 0, "the unrelated partial is still kept");
}

#[test]
fn a_partial_with_wrong_bytes_fails_the_checksum_once_then_is_gone() {
    let cfg = TransferConfig::with_chunk_size(CHUNK);
    let (mut sim, data) = start_one(8, cfg.clone(), 200_000);
    run_until_held(&mut sim, 100_000);
    let mut saved: Vec<Partial> = saved(&sim.nodes[1]);
    saved[0].buf[10] ^= 0xFF; // a disk error the file's shape does not show
    sim.nodes[0].cancel(42);
    sim.flush_all();
    sim.nodes[1] = Transfers::new(cfg);
    sim.nodes[1].restore(sim.now, saved.remove(0)).expect("restore");
    retry(&mut sim, &data);
    let until = sim.now + 30_000;
    while !sim.events_of(1).any(|e| matches!(e, TransferEvent::Failed { id: 43, .. })) {
        assert!(sim.now < until, "the bad partial was not detected");
        sim.advance(u64::MAX);
    }
    assert!(!received(&sim, 1, &data));
    assert_eq!(sim.nodes[1].parked_bytes(), 0, "the bad partial was kept");
    let settle = sim.now + 100;
    while sim.now < settle {
        sim.advance(settle);
    }
    // The next retry starts from zero and succeeds.
    sim.nodes[0] = Transfers::new(TransferConfig::with_chunk_size(CHUNK));
    sim.events.clear();
    retry(&mut sim, &data);
    finish(8, &mut sim, &data, 30_000);
    assert_eq!(resumed_held(&sim, 1), None);
}

#[test]
fn parked_partials_are_bounded_in_bytes_and_time() {
    let mut cfg = TransferConfig::with_chunk_size(CHUNK);
    cfg.resume_bytes = 1_000_000;
    cfg.resume_ms = 120_000;
    let mut t: Transfers<u32> = Transfers::new(cfg);
    let mut rng = Rng::new(1);
    for i in 0..4u32 {
        let data = payload(&mut rng, 400_000);
        let mut sender: Transfers<u32> = Transfers::new(TransferConfig::with_chunk_size(CHUNK));
        t.expect(0, u64::from(i), 9, data.len()).unwrap();
        sender.send(0, u64::from(i), 1, data).unwrap();
        while let Some((_, msg)) = sender.poll_send() {
            t.step(0, 9, msg);
        }
        assert!(t.progress(u64::from(i)).is_some_and(|(d, _)| d > 0));
        t.cancel(u64::from(i));
        assert!(t.parked_bytes() <= 1_000_000, "parked {} bytes", t.parked_bytes());
    }
    assert_eq!(t.parked_bytes(), 800_000, "the two newest are kept");
    assert!(t.next_deadline().is_some());
    t.tick(119_999);
    assert_eq!(t.parked_bytes(), 800_000);
    t.tick(120_000);
    assert_eq!(t.parked_bytes(), 0, "kept past resume_ms");
    assert_eq!(t.next_deadline(), None);
}

#[test]
fn restore_rejects_malformed_partials() {
    let mut rng = Rng::new(2);
    let data = payload(&mut rng, 5000);
    let mut sender: Transfers<u32> = Transfers::new(TransferConfig::with_chunk_size(CHUNK));
    let mut t: Transfers<u32> = Transfers::new(TransferConfig::with_chunk_size(CHUNK));
    t.expect(0, 1, 9, data.len()).unwrap();
    sender.send(0, 1, 1, data).unwrap();
    let (_, first) = sender.poll_send().unwrap();
    t.step(0, 9, first);
    let good = saved(&t).into_iter().next().expect("a partial");
    let mut short = good.clone();
    short.buf.pop();
    let mut past_end = good.clone();
    past_end.have[0] |= 1 << 40;
    let mut wrong_count = good.clone();
    wrong_count.shape.total_chunks += 1;
    let mut all = good.clone();
    all.have[0] = 0b11111;
    let mut fresh: Transfers<u32> = Transfers::new(TransferConfig::default());
    for bad in [short, past_end, wrong_count, all] {
        assert!(fresh.restore(0, bad).is_err());
    }
    assert_eq!(fresh.parked_bytes(), 0);
    fresh.restore(0, good).expect("a good partial");
    assert_eq!(fresh.parked_bytes(), 5000);
}

#[test]
fn memory_stays_within_twice_the_payload_across_a_resumed_50_mb_transfer() {
    let cfg = TransferConfig::with_chunk_size(8192);
    let size = 50 * 1024 * 1024;
    let (mut sim, data) = start_one(9, cfg, size);
    let mut peak = 0usize;
    let watch = |sim: &Sim, peak: &mut usize| {
        let n = &sim.nodes[1];
        *peak = (*peak).max(n.buffered_bytes() + n.parked_bytes());
    };
    while sim.nodes[1].progress(42).is_some_and(|(done, _)| done < 20_000_000) {
        sim.advance(u64::MAX);
        watch(&sim, &mut peak);
    }
    sim.net.partition(0, 1);
    let heal_at = sim.now + 20_000;
    while sim.now < heal_at {
        sim.advance(heal_at);
        watch(&sim, &mut peak);
    }
    sim.net.heal();
    retry(&mut sim, &data);
    let until = sim.now + 600_000;
    while !received(&sim, 1, &data) {
        assert!(sim.now < until, "not finished");
        sim.advance(u64::MAX);
        watch(&sim, &mut peak);
    }
    println!("receiver peak: {peak} bytes for a {size}-byte payload");
    assert!(peak <= 2 * size, "receiver held {peak} bytes");
    assert!(resumed_held(&sim, 1).is_some_and(|h| h >= 20_000_000));
}

#[test]
fn a_new_transfer_of_the_same_bytes_takes_over_a_running_one() {
    let cfg = TransferConfig::with_chunk_size(CHUNK);
    let (mut sim, data) = start_one(10, cfg.clone(), 300_000);
    run_until_held(&mut sim, 120_000);
    // The sender restarts and sends again before the receiver notices the silence.
    sim.nodes[0] = Transfers::new(cfg);
    let before = sim.nodes[0].stats().data_sent;
    retry(&mut sim, &data);
    finish(10, &mut sim, &data, 30_000);
    let held = resumed_held(&sim, 1).expect("no Resumed event");
    let sent = sim.nodes[0].stats().data_sent - before;
    assert!(held >= 120_000 && sent <= (300_000 - held).div_ceil(CHUNK as u64) + 64, "held {held}, sent {sent}");
    let old_failed = sim
        .events_of(1)
        .any(|e| matches!(e, TransferEvent::Failed { id: 42, reason, .. } if reason.contains("superseded")));
    assert!(old_failed, "the old transfer is not ended");
}
