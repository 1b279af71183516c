//! Attacks on a real cluster and real clients, each of which must fail: a forged sign-in and
//! address change (mallory signs as alice with her own secret), messages queued as alice, a
//! request replayed after the window and a valid one replayed from another address, forged
//! grants sent straight to the viewer and through the cloud, a tampered stego file, and
//! extracting a shared image's hidden payload without the key. The legitimate flow around
//! them keeps working.

mod support;

use client::cloud::Cloud;
use common::auth::{sign_request, wall_ms};
use common::protocol::{decode, encode_msg, Answer, Auth, Envelope, Frame, Msg, Op, PeerBody, Reply, RequestId};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use support::{cluster_with, notice, ok, register, ClientProc};

/// The replay window of this test's cluster, ms.
const WINDOW_MS: u64 = 2_000;

/// Sends `msg` to every server's client port from `sock`; waits for the reply to `rid`.
fn raw_call(sock: &UdpSocket, servers: &[SocketAddr], rid: RequestId, msg: &Msg) -> Option<Reply> {
    let bytes = encode_msg(msg);
    for s in servers {
        sock.send_to(&bytes, s).expect("send");
    }
    sock.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = vec![0u8; 65_536];
    while Instant::now() < deadline {
        let Ok((n, _)) = sock.recv_from(&mut buf) else {
            for s in servers {
                sock.send_to(&bytes, s).expect("resend");
            }
            continue;
        };
        if let Ok(Frame::Ctl(Msg::Reply(r))) = decode(&buf[..n]) {
            if r.rid == rid {
                return Some(r);
            }
        }
    }
    None
}

fn lookup(cloud: &mut Cloud, name: &str) -> common::protocol::UserInfo {
    match cloud.call(Op::Lookup { name: name.into() }, None).expect("lookup").reply.result {
        Ok(Answer::User(u)) => u,
        other => panic!("lookup {name}: {other:?}"),
    }
}

fn refused(r: Result<client::cloud::CallResult, String>, what: &str) -> String {
    let e = r.expect("answered").reply.result.expect_err(what);
    assert!(e.contains("authentication failed"), "{what}: {e}");
    e
}

fn views_of(c: &mut ClientProc, what: &str) -> String {
    ok(c, "received");
    c.seen.iter().rev().find(|l| l.contains(what)).cloned().unwrap_or_default()
}

#[test]
fn forged_replayed_and_tampered_inputs_are_refused() {
    let c = cluster_with("security", 3, |cfg| cfg.auth_window_ms = WINDOW_MS, &[]);
    let servers: Vec<SocketAddr> = c.cfg.servers.iter().map(|s| s.client_addr).collect();
    let mut alice = ClientProc::start(&c, "alice");
    assert!(alice.result(Duration::from_secs(20)).unwrap_or_default().starts_with("ok: signed in"));
    ok(&mut alice, "encrypt images/sample-10k.jpg");
    let mut bob = ClientProc::start(&c, "bob");
    assert!(bob.result(Duration::from_secs(20)).unwrap_or_default().starts_with("ok: signed in"));
    ok(&mut bob, "request alice sample-10k 2");
    notice(&mut alice, "bob asks for sample-10k");
    ok(&mut alice, "approve 1");
    notice(&mut bob, "received sample-10k from alice with 2 views");

    // Mallory is a registered user: she signs with her own secret.
    let mut mallory = Cloud::connect(&c.cfg, None).expect("connect");
    register(&mut mallory, "mallory");
    let mut observer = Cloud::connect(&c.cfg, None).expect("connect");
    let alice_addr = lookup(&mut observer, "alice").addr;
    let bob_addr = lookup(&mut observer, "bob").addr.expect("bob's address");

    // Forged sign-in, which would also move alice's address to mallory's socket.
    refused(mallory.call(Op::SignIn { name: "alice".into(), auth: Auth::default() }, None), "forged sign-in");
    assert_eq!(lookup(&mut observer, "alice").addr, alice_addr, "alice's address did not move");
    // Forged sign-out and image list, and a message queued as alice.
    refused(mallory.call(Op::SignOut { name: "alice".into(), auth: Auth::default() }, None), "forged sign-out");
    assert!(lookup(&mut observer, "alice").online);
    let set = Op::SetImages { name: "alice".into(), auth: Auth::default(), images: vec!["evil".into()] };
    refused(mallory.call(set, None), "forged image list");
    let grant = |views, version, mac: &str| Envelope {
        id: 77 + version,
        from: "alice".into(),
        to: "bob".into(),
        body: PeerBody::Rights { image_id: "sample-10k".into(), views, version, mac: mac.into() },
    };
    let forged = grant(50, 1_000, &"ab".repeat(32));
    let buffer =
        Op::Buffer { name: "alice".into(), auth: Auth::default(), envelope: forged.clone(), unreachable: None };
    refused(mallory.call(buffer, None), "message queued as alice");

    // Forged grants: straight to bob, relayed by the cloud as alice (refused), and relayed as
    // mallory with alice's name inside the rights (delivered, then ignored by bob).
    let raw = UdpSocket::bind("127.0.0.1:0").expect("socket");
    raw.send_to(&encode_msg(&Msg::Peer(forged.clone())), bob_addr).expect("send");
    let relay = Op::Relay { auth: Auth::default(), envelope: forged, addr: bob_addr };
    refused(mallory.call(relay, None), "relay as alice");
    let own_name = Envelope { from: "mallory".into(), ..grant(60, 2_000, &"cd".repeat(32)) };
    let relayed = mallory.call(Op::Relay { auth: Auth::default(), envelope: own_name, addr: bob_addr }, None);
    assert_eq!(relayed.expect("answered").reply.result, Ok(Answer::Relayed { delivered: true }));
    notice(&mut bob, "is not authentic");
    let line = views_of(&mut bob, "alice/sample-10k");
    assert!(line.contains("2 views left"), "forged grants changed nothing: {line}");

    // Replay after the window: trudy's valid request, signed (and captured) too long ago.
    let trudy = register(&mut Cloud::connect(&c.cfg, None).expect("connect"), "trudy");
    let rid = RequestId { client: 0xbad, seq: 1 };
    let mut stale = Op::SignOut { name: "trudy".into(), auth: Auth::default() };
    sign_request(&mut stale, rid, &trudy, wall_ms() - 3 * WINDOW_MS);
    let r = raw_call(&raw, &servers, rid, &Msg::Request { rid, op: stale }).expect("answered");
    let e = r.result.expect_err("stale request refused");
    assert!(e.contains("replay"), "{e}");

    // A valid sign-in replayed within the window from another address: the request id finds
    // its first answer, and the address stays where the real client signed in.
    let real = UdpSocket::bind("127.0.0.1:0").expect("socket");
    let rid = RequestId { client: 0xbad, seq: 2 };
    let mut sign_in = Op::SignIn { name: "trudy".into(), auth: Auth::default() };
    sign_request(&mut sign_in, rid, &trudy, wall_ms());
    let msg = Msg::Request { rid, op: sign_in };
    assert!(raw_call(&real, &servers, rid, &msg).expect("answered").result.is_ok());
    let replayed = raw_call(&raw, &servers, rid, &msg).expect("answered");
    assert!(replayed.result.is_ok(), "the same answer: {replayed:?}");
    assert_eq!(lookup(&mut observer, "trudy").addr, real.local_addr().ok(), "the replay did not move trudy");

    // The legitimate flow still works: a view, then a grant from alice.
    ok(&mut bob, "view alice/sample-10k");
    ok(&mut alice, "grant bob sample-10k 5");
    notice(&mut bob, "alice set sample-10k to 5 views");

    // Whoever copies bob's stego file gets ciphertext; a modified file is refused, at no view.
    let file = c.dir.join("client-bob/received/alice/sample-10k.png");
    let png = std::fs::read(&file).expect("bob's copy");
    let hidden = common::stego::reveal(&png).expect("the low bits");
    let original = std::fs::read("images/sample-10k.jpg").expect("sample");
    assert!(common::stego::decode_image(&hidden).is_err(), "the hidden payload is not an image");
    assert!(!hidden.windows(32).any(|w| w == &original[200..232]), "no plaintext in the payload");
    let rights = common::rights::read(&png).expect("rights");
    let mut pixels = common::stego::decode_image(&png).expect("png").to_rgba8();
    let p = pixels.get_pixel_mut(40, 3);
    p[0] ^= 1;
    let tampered = common::stego::encode_png(&pixels).expect("encode");
    let tampered = common::rights::embed(&tampered, &rights).expect("rights again");
    std::fs::write(&file, tampered).expect("write");
    let line = bob.run("view alice/sample-10k");
    assert!(line.starts_with("error:") && line.contains("modified"), "{line}");
    let line = views_of(&mut bob, "alice/sample-10k");
    assert!(line.contains("5 views left"), "no view spent on a refused copy: {line}");
    alice.finish();
    bob.finish();
}
