//! Hostile input against real servers: 10,000 random, truncated and mutated-valid datagrams
//! at each server's client port and peer port. No server may exit, and afterwards a normal
//! client still gets answers.

mod support;

use common::protocol::{encode_msg, encode_xfer, Msg, Op, RequestId};
use common::rng::Rng;
use common::transfer::{DataChunk, TransferMsg};
use std::net::UdpSocket;
use std::time::Duration;
use support::{cluster, ClientProc};

fn valid_samples() -> Vec<Vec<u8>> {
    let rid = RequestId { client: 1, seq: 1 };
    let mut v = vec![
        encode_msg(&Msg::Request { rid, op: Op::Register { name: "mallory".into() } }),
        encode_msg(&Msg::Request { rid, op: Op::ListOnline }),
        encode_msg(&Msg::Request { rid, op: Op::Encrypt { len: 50 } }),
        encode_msg(&Msg::Load { from: 1, load: 5, work: 0, digest: 0, epoch: 3, token: false }),
    ];
    let chunk =
        DataChunk { id: 9, seq: 0, total_chunks: 1, total_len: 4, chunk_size: 4, checksum: 0, data: vec![1, 2, 3, 4] };
    v.push(encode_xfer(&TransferMsg::Data(chunk)));
    v
}

fn garbage(rng: &mut Rng, samples: &[Vec<u8>]) -> Vec<u8> {
    match rng.below(4) {
        0 => {
            let mut b = vec![0u8; rng.below(1500) as usize];
            rng.fill(&mut b);
            b
        }
        1 => {
            let s = &samples[rng.below(samples.len() as u64) as usize];
            s[..rng.below(s.len() as u64) as usize].to_vec()
        }
        2 => {
            let mut s = samples[rng.below(samples.len() as u64) as usize].clone();
            for _ in 0..=rng.below(4) {
                let i = rng.below(s.len() as u64) as usize;
                s[i] = rng.next_u64() as u8;
            }
            s
        }
        _ => {
            // Right header, random body.
            let mut b = vec![b'I', b'C', 1, rng.below(2) as u8];
            let mut body = vec![0u8; rng.below(600) as usize];
            rng.fill(&mut body);
            b.extend(body);
            b
        }
    }
}

#[test]
fn ten_thousand_bad_datagrams_per_port_do_not_stop_a_server() {
    let mut c = cluster("fuzz", 3);
    let sock = UdpSocket::bind("127.0.0.1:0").expect("socket");
    let mut rng = Rng::new(0xf022);
    let samples = valid_samples();
    let ports: Vec<_> = c.cfg.servers.iter().flat_map(|s| [s.client_addr, s.peer_addr]).collect();
    for (k, addr) in ports.iter().enumerate() {
        for i in 0..10_000 {
            let d = garbage(&mut rng, &samples);
            let _ = sock.send_to(&d, addr);
            if i % 200 == 0 {
                std::thread::sleep(Duration::from_millis(2)); // let the receiver keep up
            }
        }
        assert!(c.cfg.ids().iter().all(|&id| c.is_alive(id)), "a server exited after port #{k}");
    }
    for id in c.cfg.ids() {
        assert!(c.is_alive(id), "server {id} exited");
    }
    let mut client = ClientProc::start(&c, "victor");
    let first = client.result(Duration::from_secs(20)).unwrap_or_default();
    assert!(first.starts_with("ok: signed in"), "{first}");
    assert!(client.run("peers").starts_with("ok:"));
    client.finish();
    assert!(c.log(1).contains("dropped datagram"), "drops are logged");
}
