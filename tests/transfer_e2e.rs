//! The reliable transfer over real loopback sockets: a 5 MB payload arrives byte-exact with and
//! without 10 % of datagrams dropped in both directions, with the loopback chunk size and with
//! 1024-byte chunks (what real networks need). Speed is measured by the bench, not here.

use client::transfer_bench::run;
use common::transfer::TransferConfig;

#[test]
fn five_megabytes_arrive_exactly_even_with_ten_percent_loss() {
    for chunk in [16 * 1024, 1024] {
        for loss in [0.0, 0.10] {
            let cfg = TransferConfig::with_chunk_size(chunk);
            let r = run(5_000_000, cfg, loss, 11).unwrap_or_else(|e| panic!("chunk {chunk}, loss {loss}: {e}"));
            assert!(r.exact, "chunk {chunk}, loss {loss}: payload differs");
            if loss > 0.0 {
                assert!(r.dropped > 0, "the loss was really injected");
            }
        }
    }
}
