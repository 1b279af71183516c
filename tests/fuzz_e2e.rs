//! Hostile input against real processes: 100,000 random, truncated, oversized and
//! mutated-valid datagrams at each server's client port and peer port, and at a client's peer
//! port. The valid samples cover every kind of message each port reads: signed requests,
//! authenticated server frames (under a key that is not the cluster's), peer messages with
//! rights tags, transfer chunks. No process may exit, and afterwards normal requests succeed.

mod support;

use common::auth::encode_server;
use common::protocol::{
    encode_msg, encode_xfer, Answer, Auth, Envelope, Msg, Op, PeerBody, Reply, RequestId, MAGIC, VERSION,
};
use common::rng::Rng;
use common::transfer::{DataChunk, TransferMsg};
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;
use support::{cluster, ClientProc};

/// Datagrams per port.
const PER_PORT: usize = 100_000;

fn valid_samples() -> Vec<Vec<u8>> {
    let rid = RequestId { client: 1, seq: 1 };
    let mut signed = Op::SignIn { name: "victor".into(), auth: Auth::default() };
    common::auth::sign_request(&mut signed, rid, b"not victor's secret", common::auth::wall_ms());
    let env = |body| Envelope { id: 5, from: "alice".into(), to: "victor".into(), body };
    let tag = "ab".repeat(32);
    let rights = PeerBody::Rights { image_id: "cat".into(), views: 99, version: 1 << 40, mac: tag.clone() };
    let deliver = PeerBody::Deliver {
        digest: String::new(),
        image_id: "cat".into(),
        views: 9,
        version: 9,
        transfer: 3,
        len: 10,
        ticket: tag.clone(),
        mac: tag,
    };
    let someone_elses_key = [3u8; 32];
    let mut v = vec![
        encode_msg(&Msg::Request { rid, op: Op::Register { name: "mallory".into() } }),
        encode_msg(&Msg::Request { rid, op: Op::ListOnline { after: None } }),
        encode_msg(&Msg::Request { rid, op: signed }),
        encode_msg(&Msg::Request {
            rid,
            op: Op::Encrypt { owner: "victor".into(), auth: Auth { ts: 1, tag: "00".repeat(32) }, len: 50 },
        }),
        encode_msg(&Msg::Load { from: 1, load: 5, work: 0, digest: 0, epoch: 3, token: false, ready: true }),
        encode_server(&someone_elses_key, common::auth::wall_ms(), &Msg::Token { from: 1, to: 2, round: 7 }),
        encode_msg(&Msg::Peer(env(rights))),
        encode_msg(&Msg::Peer(env(deliver))),
        encode_msg(&Msg::Peer(env(PeerBody::GalleryRequest { transfer: 77 }))),
        encode_msg(&Msg::PeerAck { id: 5, from: "alice".into() }),
        encode_msg(&Msg::Reply(Reply { rid, server: 1, result: Ok(Answer::Inbox(vec![])) })),
    ];
    let chunk =
        DataChunk { id: 9, seq: 0, total_chunks: 1, total_len: 4, chunk_size: 4, checksum: 0, data: vec![1, 2, 3, 4] };
    v.push(encode_xfer(&TransferMsg::Data(chunk)));
    v
}

fn garbage(rng: &mut Rng, samples: &[Vec<u8>]) -> Vec<u8> {
    match rng.below(5) {
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
        3 => {
            // Oversized: up to the largest datagram, often a valid header first.
            let mut b = vec![0u8; 1500 + rng.below(64_000) as usize];
            rng.fill(&mut b);
            if rng.below(2) == 0 {
                b[..4].copy_from_slice(&[MAGIC[0], MAGIC[1], VERSION, rng.below(3) as u8]);
            }
            b
        }
        _ => {
            // Right header, random body.
            let mut b = vec![MAGIC[0], MAGIC[1], VERSION, rng.below(3) as u8];
            let mut body = vec![0u8; rng.below(600) as usize];
            rng.fill(&mut body);
            b.extend(body);
            b
        }
    }
}

/// Throws `PER_PORT` bad datagrams at `addr`, pacing so the receiver keeps up.
fn flood(sock: &UdpSocket, addr: SocketAddr, rng: &mut Rng, samples: &[Vec<u8>]) {
    for i in 0..PER_PORT {
        let d = garbage(rng, samples);
        let _ = sock.send_to(&d, addr);
        if i % 500 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

#[test]
fn a_hundred_thousand_bad_datagrams_per_port_stop_no_process() {
    let mut c = cluster("fuzz", 3);
    let mut victor = ClientProc::start(&c, "victor");
    let first = victor.result(Duration::from_secs(20)).unwrap_or_default();
    assert!(first.starts_with("ok: signed in"), "{first}");
    victor.run("whoami");
    let me = victor.seen.iter().rev().find(|l| l.starts_with("ok: victor")).cloned().unwrap_or_default();
    let peer_addr: SocketAddr = me
        .split(" at ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("victor's address in {me:?}"));
    let sock = UdpSocket::bind("127.0.0.1:0").expect("socket");
    let mut rng = Rng::new(0xf022);
    let samples = valid_samples();
    let mut ports: Vec<(String, SocketAddr)> = c
        .cfg
        .servers
        .iter()
        .flat_map(|s| {
            [(format!("server {} clients", s.id), s.client_addr), (format!("server {} peers", s.id), s.peer_addr)]
        })
        .collect();
    ports.push(("victor's peer port".into(), peer_addr));
    for (what, addr) in &ports {
        flood(&sock, *addr, &mut rng, &samples);
        assert!(c.cfg.ids().iter().all(|&id| c.is_alive(id)), "a server exited after the flood of {what}");
        assert!(victor.child.try_wait().expect("wait").is_none(), "the client exited after the flood of {what}");
    }
    let line = victor.run("peers");
    assert!(line.starts_with("ok: 1 online"), "victor still works: {line}; {:?}", victor.seen);
    assert!(victor.run("received").starts_with("ok: 0 received"), "no forged delivery or grant took hold");
    let mut other = ClientProc::start(&c, "wendy");
    let first = other.result(Duration::from_secs(20)).unwrap_or_default();
    assert!(first.starts_with("ok: signed in"), "{first}");
    assert!(other.run("peers").starts_with("ok: 2 online"));
    other.finish();
    victor.finish();
    assert!(c.log(1).contains("dropped datagram"), "drops are logged");
}
