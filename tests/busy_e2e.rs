//! A busy machine makes the cloud slower, never makes it fail: with two CPU-bound processes
//! beside a real three-server cluster (what a teacher's laptop with a browser and a projector
//! looks like to the scheduler), alice encrypts a photo of over 8 MB and shares it with bob,
//! who views it byte-exact. The servers' workers used to run at the lowest priority and the
//! client gave up after 5 s without a sign of the result; now the workers share the CPU fairly
//! and the winner tells the client it is still working (`Working`) while it hides the photo.

mod support;

use std::process::{Child, Command};
use std::time::{Duration, Instant};
use support::lab::big_photo;
use support::{cluster, test_dir, ClientProc};

/// Two busy loops, killed when dropped.
struct Hogs(Vec<Child>);

impl Hogs {
    fn start(n: usize) -> Hogs {
        Hogs((0..n).map(|_| Command::new("sh").args(["-c", "while :; do :; done"]).spawn().expect("sh")).collect())
    }
}

impl Drop for Hogs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn ok(c: &mut ClientProc, cmd: &str, wait: Duration) -> String {
    c.send(cmd);
    let line = c.result(wait).unwrap_or_else(|| panic!("no answer to {cmd:?} within {wait:?}; saw {:?}", c.seen));
    assert!(line.starts_with("ok:"), "{cmd:?} -> {line}; saw {:?}", c.seen);
    line
}

#[test]
fn a_large_photo_is_encrypted_and_shared_beside_two_busy_processes() {
    let c = cluster("busy", 3);
    let photo = big_photo();
    assert!(photo.len() > 8_000_000, "over 8 MB: {}", photo.len());
    let dir = test_dir("busy-photo");
    std::fs::create_dir_all(&dir).expect("test folder");
    let path = dir.join("photo.jpg");
    std::fs::write(&path, photo).expect("photo written");

    let mut alice = ClientProc::start(&c, "alice");
    assert!(alice.result(Duration::from_secs(30)).unwrap_or_default().starts_with("ok: signed in"));
    let mut bob = ClientProc::start(&c, "bob");
    assert!(bob.result(Duration::from_secs(30)).unwrap_or_default().starts_with("ok: signed in"));

    let hogs = Hogs::start(2);
    // Generous bounds: the point is that nothing gives up while the machine is slow.
    let long = Duration::from_secs(240);
    let started = Instant::now();
    let line = ok(&mut alice, &format!("encrypt {}", path.display()), long);
    let encrypted_in = started.elapsed();
    assert!(line.starts_with("ok: encrypted as photo"), "{line}");
    ok(&mut bob, "request alice photo 1", long);
    alice.wait_for("bob asks for photo", long).expect("the request reaches alice");
    ok(&mut alice, "approve 1", long);
    bob.wait_for("received photo from alice", long).expect("the photo reaches bob");
    let view = ok(&mut bob, "view photo", long);
    drop(hogs);
    assert!(client::viewing::revealed_is(&view, photo), "byte-exact: {view}");
    println!(
        "encrypted {} bytes beside two busy processes in {encrypted_in:?}; shared and viewed byte-exact",
        photo.len()
    );
    alice.finish();
    bob.finish();
    let _ = std::fs::remove_dir_all(&dir);
}
