//! Resuming in the network lab (see `tests/support/lab.rs`), with the photo of over 8 MB and
//! the client hosts' links shaped to 30 Mbit/s so that a transfer takes seconds: the download
//! of an encryption result cut by a SIGKILL of the client; a peer delivery cut by a SIGKILL of
//! the viewer, then one cut by a SIGKILL of the owner; a peer delivery cut by the network for
//! 60 s. Each time the retry (the same
//! command, run again) continues from the chunks the receiver kept on disk (the client says
//! "resum…") and the photo arrives byte-exact.
//!
//! Needs root, iproute2 and nftables; IMGCLOUD_SKIP_LAB=1 skips it.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};
use support::lab::{self, big_photo, own_hidden, photo_file, signed_in, Lab, LabClient, SMALL};

/// Bound on one step with the big photo.
const BIG: Duration = Duration::from_secs(180);
/// Bytes the receiver must hold on disk before the transfer is cut.
const CUT_AT: u64 = 3_000_000;

/// Payload bytes the partials in `dir` claim to hold (their bitmaps, chunk size each).
fn held_on_disk(dir: &Path) -> u64 {
    let files = std::fs::read_dir(dir).into_iter().flatten().filter_map(|e| e.ok()).map(|e| e.path());
    files
        .filter(|p| p.extension().is_some_and(|x| x == "have"))
        .filter_map(|p| std::fs::read(p).ok())
        .filter(|b| b.len() >= 30)
        .map(|b| {
            let chunk = u64::from(u16::from_le_bytes([b[20], b[21]]));
            let bits: u64 = b[30..].iter().map(|x| u64::from(x.count_ones())).sum();
            bits * chunk
        })
        .sum()
}

/// Waits until the partials in `dir` hold at least `at` bytes; returns what they hold.
fn wait_held(dir: &Path, at: u64, what: &str) -> u64 {
    let deadline = Instant::now() + BIG;
    loop {
        let held = held_on_disk(dir);
        if held >= at {
            println!("{what}: {held} bytes kept on disk");
            return held;
        }
        assert!(Instant::now() < deadline, "{what}: only {held} bytes on disk in {}", dir.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The request number in the owner's notice of `viewer`'s request.
fn request_number(owner: &mut LabClient, viewer: &str) -> String {
    let line = owner.wait_for(&format!("{viewer} asks for photo"), BIG).expect("the request reaches alice");
    let n = line.split("`approve ").nth(1).and_then(|r| r.split('`').next()).expect("a request number");
    n.to_string()
}

/// `viewer` views the photo: byte-exact.
fn view_exact(viewer: &mut LabClient) {
    let view = viewer.try_run("view photo", BIG).unwrap_or_else(|e| panic!("{e}"));
    assert!(client::viewing::revealed_is(&view, big_photo()), "{}: not byte-exact: {view}", viewer.name);
    println!("{} viewed the photo byte-exact", viewer.name);
}

/// `viewer` asks alice for the photo; returns the request number alice answers.
fn ask(alice: &mut LabClient, viewer: &mut LabClient) -> String {
    viewer.try_run("request alice photo 1", BIG).unwrap_or_else(|e| panic!("{e}"));
    request_number(alice, &viewer.name)
}

/// After a cut delivery: alice's approve failed; approving again resumes at `viewer`.
fn approve_again_resumes(alice: &mut LabClient, viewer: &mut LabClient, n: &str, held: u64) {
    let t = Instant::now();
    let line = alice.try_run(&format!("approve {n}"), BIG).unwrap_or_else(|e| panic!("the re-approval: {e}"));
    println!("alice> approve {n} (again) -> {line} in {:.1} s", t.elapsed().as_secs_f64());
    let resumed = viewer.wait_for("resuming photo from alice", BIG);
    let resumed = resumed.unwrap_or_else(|| panic!("{}: no resuming notice; saw {:?}", viewer.name, viewer.tail(6)));
    println!("{}: {resumed}", viewer.name);
    let here: f64 = resumed.split(": ").nth(2).and_then(|r| r.split(' ').next()).and_then(|x| x.parse().ok()).unwrap();
    assert!(here * 1e6 >= held as f64 - 1e5, "resumed from {here} MB, {held} bytes were kept");
    let got = viewer.wait_for("received photo from alice", BIG);
    assert!(got.is_some(), "{}: the photo did not arrive; saw {:?}", viewer.name, viewer.tail(6));
    let progress =
        viewer.seen.iter().find(|l| l.starts_with("notice: receiving photo from alice:") && l.contains(" %, "));
    println!("{}: {}", viewer.name, progress.unwrap_or_else(|| panic!("{}: no progress notice", viewer.name)));
    view_exact(viewer);
}

/// `name` starts on c2, asks for the photo and alice approves; returns the viewer, the request
/// number and the bytes the viewer kept on disk once they are over [`CUT_AT`].
fn delivery_under_way(lab: &Lab, alice: &mut LabClient, name: &str) -> (LabClient, String, u64) {
    let mut viewer = LabClient::start(lab, "c2", name);
    signed_in(&mut viewer);
    let n = ask(alice, &mut viewer);
    alice.send(&format!("approve {n}"));
    let dir = lab.dir.join(format!("client-{name}/partial/peer"));
    let held = wait_held(&dir, CUT_AT, &format!("{name}'s delivery"));
    (viewer, n, held)
}

/// alice's approval `n` ends in an error that keeps the request.
fn approve_failed(alice: &mut LabClient, n: &str) {
    let line = alice.result(BIG).expect("alice's approve ends");
    println!("alice> approve {n} -> {line}");
    assert!(line.starts_with("error:") && line.contains("stays pending"), "{line}");
}

#[test]
fn interrupted_transfers_resume_in_the_lab() {
    if !lab::available() {
        return;
    }
    let mut lab = Lab::new("resume");
    lab.start_cluster();
    let path = photo_file(&lab);
    lab.set_rate("c1", "30mbit");
    lab.set_rate("c2", "30mbit");
    let encrypt = format!("encrypt {}", path.display());

    // 1. The encryption's result, cut by a SIGKILL of alice's client while it downloads.
    let mut alice = LabClient::start(&lab, "c1", "alice");
    signed_in(&mut alice);
    let t = Instant::now();
    alice.send(&encrypt);
    let cloud_dir = lab.dir.join("client-alice/partial/cloud");
    let held = wait_held(&cloud_dir, CUT_AT, "alice's download");
    println!("SIGKILL alice's client after {:.1} s", t.elapsed().as_secs_f64());
    drop(alice);
    let mut alice = LabClient::start(&lab, "c1", "alice");
    signed_in(&mut alice);
    let t = Instant::now();
    let line = alice.try_run(&encrypt, BIG).unwrap_or_else(|e| panic!("encrypt again: {e}"));
    println!("alice> encrypt (again) -> {line} in {:.1} s", t.elapsed().as_secs_f64());
    assert!(line.starts_with("ok: encrypted as photo") && line.contains("resumed with"), "{line}");
    let here: f64 = line.split("resumed with ").nth(1).and_then(|r| r.split(' ').next()).unwrap().parse().unwrap();
    assert!(here * 1e6 >= held as f64 - 1e5, "resumed from {here} MB, {held} bytes were kept");
    assert!(own_hidden(&lab, "photo") == big_photo(), "the photo comes back byte-exact");
    assert_eq!(held_on_disk(&cloud_dir), 0, "the finished download's partial is deleted");

    // 2. A delivery to bob, cut by a SIGKILL of bob's client.
    let (bob, n, held) = delivery_under_way(&lab, &mut alice, "bob");
    drop(bob);
    approve_failed(&mut alice, &n);
    let mut bob = LabClient::start(&lab, "c2", "bob");
    signed_in(&mut bob);
    approve_again_resumes(&mut alice, &mut bob, &n, held);
    bob.finish();

    // 3. A delivery to dave, cut by a SIGKILL of alice's client (the sender): dave asks again
    // at once, before his end gives up on the silent sender; the new delivery of the same
    // bytes takes over what the old one holds.
    let (mut dave, _, held) = delivery_under_way(&lab, &mut alice, "dave");
    drop(alice);
    let mut alice = LabClient::start(&lab, "c1", "alice");
    signed_in(&mut alice);
    let n = ask(&mut alice, &mut dave);
    approve_again_resumes(&mut alice, &mut dave, &n, held);
    dave.finish();

    // 4. A delivery to carol, cut by the network for 60 s.
    let (mut carol, n, held) = delivery_under_way(&lab, &mut alice, "carol");
    lab.cut(&["c2"], &["s1", "s2", "s3", "c1"]);
    let cut = Instant::now();
    approve_failed(&mut alice, &n);
    assert!(carol.wait_for("lost the cloud", SMALL).is_some(), "carol never lost the cloud");
    std::thread::sleep(Duration::from_secs(60).saturating_sub(cut.elapsed()));
    lab.heal();
    let back = carol.wait_for("the cloud is back", SMALL);
    assert!(back.is_some(), "carol is not back; saw {:?}", carol.tail(6));
    approve_again_resumes(&mut alice, &mut carol, &n, held);
    carol.finish();
    alice.finish();
}
