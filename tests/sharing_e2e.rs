//! Peer-to-peer sharing end to end with real processes (three servers, clients alice and bob
//! driven by piped commands): encrypt, gallery, request, approve, views running out, a grant
//! while online, a grant queued while bob is offline and delivered after all three servers
//! restarted, and a revoke that deletes bob's copy.

mod support;

use std::time::Duration;
use support::{cluster, ClientProc};

fn signed_in(c: &mut ClientProc) {
    let line = c.result(Duration::from_secs(20)).unwrap_or_default();
    assert!(line.starts_with("ok: signed in"), "{line}");
}

fn ok(c: &mut ClientProc, cmd: &str) -> String {
    let line = c.run(cmd);
    assert!(line.starts_with("ok:"), "{cmd:?} -> {line}; saw {:?}", c.seen);
    line
}

/// Waits until a `notice:` line containing `what` shows up.
fn notice(c: &mut ClientProc, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if c.seen.iter().any(|l| l.starts_with("notice:") && l.contains(what)) {
            return;
        }
        // `stats` is a harmless command that lets us read whatever the engine printed.
        c.run("stats");
    }
    panic!("no notice containing {what:?}; saw {:?}", c.seen);
}

fn views_of(c: &mut ClientProc, image: &str) -> Option<u32> {
    ok(c, "received");
    let line = c
        .seen
        .iter()
        .rev()
        .take_while(|l| !l.starts_with("ok:") || l.contains("received images"))
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
    assert!(g.contains("1 images"), "{g}");
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
        assert!(line.contains(&format!("({left} views left)")), "{line}");
        let path = line.rsplit(" in ").next().expect("path").trim().to_string();
        assert_eq!(std::fs::read(&path).expect("revealed file"), original, "byte-exact");
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
    if std::env::var("SHOW").is_ok() {
        println!("ALICE {:#?}\nBOB {:#?}", alice.seen, bob.seen);
    }
    alice.finish();
    bob.finish();
}
