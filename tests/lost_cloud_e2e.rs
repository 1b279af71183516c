//! A client and the cloud going away, with real processes: every server SIGKILLed, the client
//! says it lost the cloud, a command fails with a clear error instead of hanging, and when the
//! servers restart the client signs in again by itself; and Ctrl-C (SIGINT) on a client signs
//! it out, which another client sees in `peers`.

mod support;

use std::time::Duration;
use support::{cluster, ClientProc};

fn signed_in(c: &mut ClientProc) {
    let line = c.result(Duration::from_secs(20)).unwrap_or_default();
    assert!(line.starts_with("ok: signed in"), "{line}");
}

/// The names `peers` listed in its last answer.
fn online(c: &mut ClientProc) -> Vec<String> {
    c.seen.clear();
    let line = c.run("peers");
    assert!(line.starts_with("ok:"), "{line}; saw {:?}", c.seen);
    c.seen
        .iter()
        .filter(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect()
}

#[test]
fn a_client_that_lost_the_cloud_fails_fast_and_signs_in_again_when_it_returns() {
    let mut c = cluster("lostcloud", 3);
    let mut alice = ClientProc::start(&c, "alice");
    signed_in(&mut alice);
    assert_eq!(online(&mut alice), vec!["alice"]);

    c.kill_all();
    let lost = alice.wait_for("notice: lost the cloud", Duration::from_secs(20));
    assert!(lost.is_some(), "no notice of the lost cloud; saw {:?}", alice.seen);
    let line = alice.run("peers");
    assert!(line.starts_with("error: the cloud is unreachable"), "{line}");
    let line = alice.run("encrypt images/sample-10k.jpg");
    assert!(line.starts_with("error: the cloud is unreachable"), "{line}");

    c.start_all().expect("restart");
    c.wait_ready(Duration::from_secs(20)).expect("ready");
    let back = alice.wait_for("notice: the cloud is back: signed in again as alice", Duration::from_secs(30));
    assert!(back.is_some(), "no sign-in notice; saw {:?}", alice.seen);
    assert_eq!(online(&mut alice), vec!["alice"]);
    let line = alice.run("encrypt images/sample-10k.jpg");
    assert!(line.starts_with("ok: encrypted as sample-10k"), "{line}");
    alice.finish();
}

#[test]
fn ctrl_c_on_a_client_signs_it_out() {
    let c = cluster("ctrlc", 3);
    let mut alice = ClientProc::start(&c, "alice");
    signed_in(&mut alice);
    let mut bob = ClientProc::start(&c, "bob");
    signed_in(&mut bob);
    assert_eq!(online(&mut alice), vec!["alice", "bob"]);

    bob.interrupt();
    assert_eq!(bob.wait_exit(Duration::from_secs(20)), Some(0), "bob exits after Ctrl-C");
    assert!(bob.wait_for("ok: signed out", Duration::from_secs(1)).is_some(), "saw {:?}", bob.seen);
    assert_eq!(online(&mut alice), vec!["alice"], "bob shows offline");
    alice.finish();
}
