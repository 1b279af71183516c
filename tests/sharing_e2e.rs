//! Peer-to-peer sharing end to end with real processes (three servers, clients alice and bob
//! driven by piped commands): encrypt, gallery, request, approve, views running out, a grant
//! while online, a grant queued while bob is offline and delivered after all three servers
//! restarted, and a revoke that deletes bob's copy.

mod support;

use std::time::Duration;
use support::{cluster, notice, ok, ClientProc};

fn signed_in(c: &mut ClientProc) {
    let line = c.result(Duration::from_secs(20)).unwrap_or_default();
    assert!(line.starts_with("ok: signed in"), "{line}");
}

fn views_of(c: &mut ClientProc, image: &str) -> Option<u32> {
    ok(c, "received");
    let line = c
        .seen
        .iter()
        .rev()
        .take_while(|l| !l.starts_with("ok:") || l.contains("received image"))
        .find(|l| l.contains(image))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn share_view_grant_offline_restart_revoke() {
    let mut c = cluster("sharing", 3);
    let mut alice = ClientProc::start(&c, "alice");
    signed_in(&mut alice);
    let mut bob = ClientProc::start(&c, "bob");
    signed_in(&mut bob);

    ok(&mut alice, "encrypt images/sample-10k.jpg");
    let g = ok(&mut bob, "gallery alice");
    assert!(g.contains("1 image in"), "{g}");
    assert!(bob.seen.iter().any(|l| l.contains("sample-10k")), "{:?}", bob.seen);
    ok(&mut bob, "request alice sample-10k 2");
    notice(&mut alice, "bob asks for");
    ok(&mut alice, "requests");
    assert!(alice.seen.iter().any(|l| l.contains("#1 bob asks for sample-10k with 2 views")), "{:?}", alice.seen);
    ok(&mut alice, "approve 1");
    notice(&mut bob, "received sample-10k from alice with 2 views");

    let original = std::fs::read("images/sample-10k.jpg").expect("sample");
    for left in [1, 0] {
        let line = ok(&mut bob, "view sample-10k");
        assert!(line.contains(&format!("({} left)", client::usage::plural(left, "view"))), "{line}");
        assert!(client::viewing::revealed_is(&line, &original), "byte-exact: {line}");
    }
    let third = bob.run("view sample-10k");
    assert!(third.starts_with("error:") && third.contains("only the cover"), "{third}");

    let r = ok(&mut alice, "grant bob sample-10k 3");
    assert!(r.contains("delivered to bob"), "{r}");
    notice(&mut bob, "set sample-10k to 3 views");
    assert_eq!(views_of(&mut bob, "alice/sample-10k"), Some(3));

    ok(&mut bob, "quit");
    bob.finish();
    let r = ok(&mut alice, "grant bob sample-10k 5");
    assert!(r.contains("queued for bob (offline)"), "{r}");

    // All three servers restart: the buffered grant must survive on disk.
    c.kill_all();
    c.start_all().expect("restart");
    c.wait_ready(Duration::from_secs(20)).expect("ready");

    let mut bob = ClientProc::start(&c, "bob");
    signed_in(&mut bob);
    notice(&mut bob, "set sample-10k to 5 views");
    assert_eq!(views_of(&mut bob, "alice/sample-10k"), Some(5));

    let r = ok(&mut alice, "grant bob sample-10k 0");
    assert!(r.contains("delivered"), "{r}");
    notice(&mut bob, "revoked sample-10k");
    assert_eq!(views_of(&mut bob, "alice/sample-10k"), None, "the copy is gone");
    ok(&mut alice, "shared");
    assert!(alice.seen.iter().any(|l| l.contains("sample-10k → bob: 0 views")), "{:?}", alice.seen);

    // The owner is offline when the viewer asks for more views: she gets it when she signs in.
    ok(&mut alice, "quit");
    alice.finish();
    let r = ok(&mut bob, "more alice sample-10k 2");
    assert!(r.contains("queued for alice (offline)"), "{r}");
    let mut alice = ClientProc::start(&c, "alice");
    signed_in(&mut alice);
    notice(&mut alice, "bob asks for 2 more views of sample-10k: `approve ");
    ok(&mut alice, "requests");
    assert!(
        alice.seen.iter().any(|l| l.starts_with("  #") && l.ends_with("bob asks for 2 more views of sample-10k")),
        "{:?}",
        alice.seen
    );
    alice.finish();
    bob.finish();
}

/// A big image and a slow transfer (small chunks, window 1) so the viewer can be killed mid-way.
#[test]
fn a_viewer_killed_mid_transfer_gets_no_copy_or_a_complete_one() {
    let c = support::cluster_with(
        "midtransfer",
        3,
        |cfg| {
            cfg.chunk_size = Some(1024);
            cfg.window = Some(1);
        },
        &[],
    );
    let dir = c.dir.clone();
    let big = dir.join("big.png");
    let img =
        image::RgbImage::from_fn(700, 500, |x, y| image::Rgb([((x * 5) ^ y) as u8, (y * 3) as u8, (x + 2 * y) as u8]));
    img.save(&big).expect("big image");

    let mut alice = ClientProc::start(&c, "alice");
    signed_in(&mut alice);
    let line = alice.run(&format!("encrypt {}", big.display()));
    assert!(line.starts_with("ok: encrypted as big"), "{line}");
    let mut bob = ClientProc::start(&c, "bob");
    signed_in(&mut bob);
    ok(&mut bob, "request alice big 4");
    notice(&mut alice, "bob asks for big");
    alice.send("approve 1");
    std::thread::sleep(Duration::from_millis(300));
    bob.kill();
    let outcome = alice.result(Duration::from_secs(30)).expect("approve finishes");
    eprintln!("approve during the kill: {outcome}");
    let bob_file = dir.join("client-bob/received/alice/big.png");
    if outcome.starts_with("error:") {
        assert!(outcome.contains("pending"), "{outcome}");
        assert!(!bob_file.exists(), "no partial copy");
        let mut bob = ClientProc::start(&c, "bob");
        signed_in(&mut bob);
        ok(&mut bob, "received");
        assert!(bob.seen.iter().any(|l| l == "ok: 0 received images"), "{:?}", bob.seen);
        ok(&mut alice, "approve 1");
        notice(&mut bob, "received big from alice with 4 views");
        bob.finish();
    }
    // Either way bob now holds one complete copy with the right views.
    let png = std::fs::read(&bob_file).expect("bob's copy");
    let rights = common::rights::read(&png).expect("rights");
    assert_eq!((rights.views, rights.owner.as_str()), (4, "alice"));
    // The copy holds the sealed image bob's client was told of, and it opens only through a view
    // the cloud counts: bob (started again) views it, byte-exact.
    let hidden = common::stego::reveal(&png).expect("reveal");
    let shares: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("client-bob/shares.json")).expect("bob's keys")).expect("json");
    assert_eq!(shares["keys"]["alice/big"]["digest"].as_str(), Some(common::crypto::sha256_hex(&hidden).as_str()));
    let mut bob = ClientProc::start(&c, "bob");
    signed_in(&mut bob);
    let line = ok(&mut bob, "view big");
    assert!(line.contains("(3 views left)"), "{line}");
    assert!(client::viewing::revealed_is(&line, &std::fs::read(&big).expect("original")), "byte-exact: {line}");
    bob.finish();
    alice.finish();
}
