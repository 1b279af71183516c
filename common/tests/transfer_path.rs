//! The transfer over a simulated bottleneck (`common::pathsim`): it fills a 100 Mbit/s, 20 ms
//! path, random loss does not collapse it, two transfers share the path fairly, and a fixed
//! window still caps it. Goodput figures are printed (they are the benchmark's, not timings of
//! this machine: simulated time does not depend on how busy the machine is).

use common::pathsim::{run, PathSpec};
use common::transfer::TransferConfig;

const MB: usize = 1 << 20;

fn one(rtt: u64, loss: f64, seed: u64, bytes: usize) -> f64 {
    let spec = PathSpec::new(rtt, loss, seed);
    let r = run(&spec, &TransferConfig::default(), &[(0, bytes)], 600_000);
    println!("seed {seed}: {rtt} ms, loss {loss}: {:?}", r[0]);
    assert!(r[0].exact, "seed {seed}: not delivered byte-exact: {:?}", r[0]);
    r[0].goodput_mbit
}

#[test]
fn fills_a_100_mbit_20_ms_path() {
    for seed in 1..=3 {
        let g = one(20, 0.0, seed, 20 * MB);
        assert!(g >= 80.0, "seed {seed}: {g:.1} Mbit/s at 0 % loss");
    }
}

#[test]
fn random_loss_does_not_collapse_it() {
    for seed in 1..=3 {
        let g1 = one(20, 0.01, seed, 20 * MB);
        assert!(g1 >= 50.0, "seed {seed}: {g1:.1} Mbit/s at 1 % loss (Reno's Mathis bound is about 7)");
        let g5 = one(20, 0.05, seed, 20 * MB);
        assert!(g5 >= 25.0, "seed {seed}: {g5:.1} Mbit/s at 5 % loss");
    }
}

#[test]
fn works_on_a_short_lossy_wifi_path() {
    for seed in 1..=3 {
        let g = one(3, 0.05, seed, 10 * MB);
        assert!(g >= 25.0, "seed {seed}: {g:.1} Mbit/s at 3 ms and 5 % loss");
    }
}

#[test]
fn two_transfers_share_the_bottleneck() {
    for seed in 1..=3 {
        for (second_start, loss) in [(0, 0.0), (500, 0.0), (0, 0.01)] {
            let spec = PathSpec::new(20, loss, seed);
            let r = run(&spec, &TransferConfig::default(), &[(0, 30 * MB), (second_start, 30 * MB)], 600_000);
            println!("seed {seed}, second at {second_start} ms, loss {loss}: {r:?}");
            assert!(r.iter().all(|f| f.exact), "seed {seed}: {r:?}");
            // Share of what both received while both ran, measured when the first finished.
            let since = |f: &common::pathsim::FlowResult| f.held_at_first_end as f64;
            let (a, b) = (since(&r[0]), since(&r[1]));
            // The first flow had the path alone until the second started.
            let alone = second_start as f64 / 1000.0 * 12.5e6 * 0.9;
            let a_shared = (a - alone).max(0.0);
            let share = a_shared.min(b) / (a_shared + b);
            assert!(share >= 0.4, "seed {seed}: shares {a_shared:.0} vs {b:.0} bytes ({share:.2})");
        }
    }
}

#[test]
fn a_fixed_window_still_caps_it() {
    let spec = PathSpec::new(20, 0.0, 1);
    let cfg = TransferConfig { window: Some(3), ..TransferConfig::default() };
    let r = run(&spec, &cfg, &[(0, 2 * MB)], 600_000);
    println!("{r:?}");
    assert!(r[0].exact);
    // 3 chunks of 1,400 bytes per 20 ms round trip: at most about 1.7 Mbit/s.
    assert!(r[0].goodput_mbit < 2.0, "{:?}", r[0]);
}
