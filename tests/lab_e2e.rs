//! The network lab end to end (see `tests/support/lab.rs`): the real binaries in five network
//! namespaces on one bridge, every link shaped to 100 Mbit/s, frames (so single IP fragments)
//! dropped like on a radio, and partitions that heal. Checks, with the default config:
//! the whole sharing story with a photo of over 8 MB at 0 %, 1 % and 5 % loss, byte-exact;
//! a SIGKILL of the server working on that photo's encryption (the photo still comes back
//! once); and a server cut off from the others, then one cut off from everyone, while clients
//! keep encrypting, after which every replica's directory is equal. `lab_goodput` (ignored)
//! measures TCP goodput with iperf3 in the same lab, for comparison.
//!
//! Needs root, iproute2 and nftables (iperf3 for `lab_goodput`); IMGCLOUD_SKIP_LAB=1 skips it.
//! Waits end on observed events; their bounds are generous and say what they waited for.

mod support;

use common::config::ServerId;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::lab::{self, big_photo, own_hidden, photo_file, signed_in, Lab, LabClient};

/// Bound on one step with the big photo (the client gives up on its own well before).
const BIG: Duration = Duration::from_secs(180);
use support::lab::SMALL;

/// A step's outcome: its time, or the error with the client's last lines.
fn step(log: &mut Vec<String>, what: &str, started: Instant, r: Result<String, String>) -> Result<String, String> {
    let took = started.elapsed();
    match r {
        Ok(line) => {
            log.push(format!("{what}: ok in {:.1} s", took.as_secs_f64()));
            println!("  {what}: ok in {:.1} s ({line})", took.as_secs_f64());
            Ok(line)
        }
        Err(e) => {
            log.push(format!("{what}: FAILED after {:.1} s: {e}", took.as_secs_f64()));
            Err(format!("{what} FAILED after {:.1} s: {e}", took.as_secs_f64()))
        }
    }
}

/// The sharing story at `permille`/1000 frame loss; Err names the failing step.
fn sharing_story(permille: u32) -> Result<Vec<String>, String> {
    let photo_len = big_photo().len();
    let mut lab = Lab::new(&format!("loss{permille}"));
    let pct = permille as f64 / 10.0;
    println!("sharing story with a {photo_len} byte photo at {pct} % frame loss (lab {}):", lab.name);
    let mut log = vec![fragments(&lab, permille), format!("lab built: {:.1} s", lab.since.elapsed().as_secs_f64())];
    lab.set_loss(permille);
    let t = Instant::now();
    lab.start_cluster();
    let path = photo_file(&lab);
    let mut alice = LabClient::start(&lab, "c1", "alice");
    signed_in(&mut alice);
    let mut bob = LabClient::start(&lab, "c2", "bob");
    signed_in(&mut bob);
    log.push(format!("cluster ready and both signed in: {:.1} s", t.elapsed().as_secs_f64()));
    let res = (|| {
        let t = Instant::now();
        let enc = step(&mut log, "encrypt", t, alice.try_run(&format!("encrypt {}", path.display()), BIG))?;
        if !enc.starts_with("ok: encrypted as photo") {
            return Err(format!("unexpected {enc}"));
        }
        let t = Instant::now();
        let g = step(&mut log, "gallery", t, bob.try_run("gallery alice", BIG))?;
        if !g.contains("1 image in") || !bob.seen.iter().any(|l| l.contains("photo")) {
            return Err(format!("gallery without the photo: {g}; {:?}", bob.tail(5)));
        }
        let t = Instant::now();
        step(&mut log, "request", t, bob.try_run("request alice photo 1", BIG))?;
        let asked = alice.wait_for("bob asks for photo", BIG).ok_or("alice saw no request from bob".to_string());
        step(&mut log, "request reaches alice", t, asked)?;
        let t = Instant::now();
        step(&mut log, "approve", t, alice.try_run("approve 1", BIG))?;
        let got = bob.wait_for("received photo from alice", BIG).ok_or("bob received no photo".to_string());
        step(&mut log, "delivery to bob", t, got)?;
        let t = Instant::now();
        let view = step(&mut log, "view", t, bob.try_run("view photo", BIG))?;
        if !client::viewing::revealed_is(&view, big_photo()) {
            return Err(format!("NOT byte-exact: {view}"));
        }
        log.push(format!("view byte-exact ({} bytes)", big_photo().len()));
        Ok(())
    })();
    log.push(frames(&lab));
    match res {
        Ok(()) => {
            alice.finish();
            bob.finish();
            log.push(format!("whole case: {:.1} s", lab.since.elapsed().as_secs_f64()));
            Ok(log)
        }
        Err(e) => {
            lab.keep = true;
            eprintln!("alice's last lines: {:#?}\nbob's last lines: {:#?}", alice.tail(8), bob.tail(8));
            log.push(format!("whole case: {:.1} s", lab.since.elapsed().as_secs_f64()));
            Err(format!("{e}\n  steps: {log:#?}"))
        }
    }
}

/// How many IPv4 fragments one transfer chunk of the config is, and how likely it crosses
/// the bridge whole at `permille` frame loss.
fn fragments(lab: &Lab, permille: u32) -> String {
    // The chunk between hosts, its frame (4 bytes) and data header (34), the UDP header, in
    // 1480-byte fragments.
    let chunk = lab.cfg.transfer().chunk_size;
    let n = (chunk + 4 + 34 + 8).div_ceil(1480);
    let whole = (1.0 - permille as f64 / 1000.0).powi(n as i32) * 100.0;
    format!("chunk of {chunk} bytes = {n} IPv4 fragment(s): crosses whole with p = {whole:.0} %")
}

/// What the loss rule saw and dropped, as a line.
fn frames(lab: &Lab) -> String {
    let (seen, dropped) = lab.dropped();
    let pct = if seen == 0 { 0.0 } else { 100.0 * dropped as f64 / seen as f64 };
    format!("IPv4 frames crossing the bridge: {seen}, dropped {dropped} ({pct:.2} %)")
}

fn sharing_case(permille: u32) {
    if !lab::available() {
        return;
    }
    let pct = permille as f64 / 10.0;
    match sharing_story(permille) {
        Ok(log) => println!("PASS at {pct} % loss: {log:#?}"),
        Err(e) => panic!("FAIL at {pct} % loss: {e}"),
    }
}

#[test]
fn sharing_a_big_photo_at_0_percent_loss() {
    sharing_case(0);
}

/// Expected to fail with the current transfer code (48,000-byte chunks are 33 fragments).
#[test]
fn sharing_a_big_photo_at_1_percent_loss() {
    sharing_case(10);
}

/// Expected to fail with the current transfer code (48,000-byte chunks are 33 fragments).
#[test]
fn sharing_a_big_photo_at_5_percent_loss() {
    sharing_case(50);
}

/// Encryptions counted by each server that answers.
fn encrypts(st: &std::collections::HashMap<ServerId, common::protocol::ServerStatus>) -> Vec<(ServerId, u64)> {
    let mut v: Vec<(ServerId, u64)> = st
        .values()
        .map(|s| (s.id, s.handled_by_kind.iter().find(|(k, _)| k == "encrypt").map_or(0, |(_, n)| *n)))
        .collect();
    v.sort();
    v
}

#[test]
fn a_sigkill_of_the_server_hiding_a_big_photo() {
    if !lab::available() {
        return;
    }
    let mut lab = Lab::new("kill");
    lab.start_cluster();
    let path = photo_file(&lab);
    let mut alice = LabClient::start(&lab, "c1", "alice");
    signed_in(&mut alice);
    let mut probe = lab.probe();
    let (_, st) = lab.poll_status(&mut probe, "all three servers to answer", SMALL, |st| st.len() == 3);
    let before = encrypts(&st);
    assert_eq!(before.len(), 3, "all three servers answer: {before:?}");
    let started = Instant::now();
    alice.send(&format!("encrypt {}", path.display()));
    let rose = |st: &_| encrypts(st).iter().any(|(id, n)| before.iter().any(|(b, m)| b == id && n > m));
    let (ok, st) = lab.poll_status(&mut probe, "a server to start alice's encryption", BIG, rose);
    assert!(ok, "no server started the encryption: {:?}", encrypts(&st));
    let (w, _) = *encrypts(&st).iter().find(|(id, n)| before.iter().any(|(b, m)| b == id && n > m)).expect("winner");
    println!("server {w} works on the photo after {:.1} s: SIGKILL", started.elapsed().as_secs_f64());
    lab.kill_server(w);
    let line = alice.result(BIG).unwrap_or_else(|| panic!("no answer within {BIG:?}; saw {:?}", alice.tail(8)));
    println!("after {:.1} s: {line}", started.elapsed().as_secs_f64());
    assert!(line.starts_with("ok: encrypted as photo"), "{line}; saw {:?}", alice.tail(8));
    assert!(!line.contains(&format!("by server {w} ")), "the killed server cannot have answered: {line}");
    let stats = alice.try_run("stats", SMALL).expect("stats");
    assert!(stats.contains("handled_twice=0"), "{stats}");
    let imgs = alice.try_run("images", SMALL).expect("images");
    assert!(imgs.contains("ok: 1 image"), "the photo once: {imgs}; {:?}", alice.tail(4));
    assert!(own_hidden(&lab, "photo") == big_photo(), "the photo comes back byte-exact");
    println!("the photo came back once, byte-exact ({stats})");
    alice.finish();
}

/// Waits until the three servers' directory files hold the same users.
fn wait_equal(lab: &Lab, after: &str) {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(120);
    loop {
        let dirs: Vec<_> = (1..=3).map(|id| lab.directory_users(id)).collect();
        if dirs[0].is_some() && dirs.iter().all(|d| *d == dirs[0]) {
            println!("{after}: the three replicas are equal after {:.1} s", started.elapsed().as_secs_f64());
            return;
        }
        assert!(Instant::now() < deadline, "{after}: replicas still differ after 120 s: {dirs:#?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Whether server `id`'s replica differs from the others' (printed, for the record).
fn report_divergence(lab: &Lab, id: ServerId, during: &str) {
    let me = lab.directory_users(id);
    let others: Vec<_> = (1..=3).filter(|o| *o != id).map(|o| lab.directory_users(o)).collect();
    let differs = others.iter().any(|o| *o != me);
    println!("{during}: server {id}'s replica {} the others'", if differs { "differs from" } else { "equals" });
}

/// Waits until servers `by` see server `id` as not live (the probe still reaches every server).
fn wait_unseen(lab: &Lab, id: ServerId, by: &[ServerId]) {
    let t = Instant::now();
    let mut probe = lab.probe();
    let what = format!("servers {by:?} to count server {id} as failed");
    let (ok, st) = lab.poll_status(&mut probe, &what, SMALL, |st| {
        by.iter().all(|b| st.get(b).is_some_and(|s| s.peers.iter().any(|p| p.id == id && !p.live)))
    });
    assert!(ok, "{what}: not within {SMALL:?}: {st:?}");
    println!("servers {by:?} count server {id} as failed after {:.1} s", t.elapsed().as_secs_f64());
}

fn encrypt_small(lab: &Lab, c: &mut LabClient, name: &str, during: &str) {
    let path: PathBuf = lab.dir.join(format!("{name}.jpg"));
    std::fs::copy(Path::new("images/sample-10k.jpg"), &path).expect("sample copied");
    let t = Instant::now();
    let line = c.try_run(&format!("encrypt {}", path.display()), SMALL).unwrap_or_else(|e| panic!("{during}: {e}"));
    assert!(line.starts_with(&format!("ok: encrypted as {name}")), "{during}: {line}");
    println!("{during}: {line} in {:.1} s", t.elapsed().as_secs_f64());
}

#[test]
fn partitions_heal_to_equal_replicas() {
    if !lab::available() {
        return;
    }
    let mut lab = Lab::new("part");
    lab.start_cluster();
    let mut alice = LabClient::start(&lab, "c1", "alice");
    signed_in(&mut alice);
    let mut bob = LabClient::start(&lab, "c2", "bob");
    signed_in(&mut bob);
    encrypt_small(&lab, &mut alice, "before", "no cut");
    wait_equal(&lab, "no cut");

    lab.cut(&["s1"], &["s2", "s3"]);
    encrypt_small(&lab, &mut alice, "cutone", "s1 cut from s2, s3");
    wait_unseen(&lab, 1, &[2, 3]);
    encrypt_small(&lab, &mut bob, "cutoneb", "s1 cut from s2, s3");
    let peers = bob.try_run("peers", SMALL).unwrap_or_else(|e| panic!("s1 cut from s2, s3: {e}"));
    println!("s1 cut from s2, s3: bob> peers -> {peers}");
    report_divergence(&lab, 1, "s1 cut from s2, s3");
    lab.heal();
    wait_equal(&lab, "healed s1");

    lab.cut(&["s3"], &["s1", "s2", "c1", "c2"]);
    encrypt_small(&lab, &mut alice, "cutall", "s3 cut from everyone");
    wait_unseen(&lab, 3, &[1, 2]);
    encrypt_small(&lab, &mut bob, "cutallb", "s3 cut from everyone");
    report_divergence(&lab, 3, "s3 cut from everyone");
    lab.heal();
    wait_equal(&lab, "healed s3");
    let imgs = alice.try_run("peers", SMALL).expect("peers after healing");
    println!("after healing: alice> peers -> {imgs}");
    alice.finish();
    bob.finish();
}

/// TCP goodput (iperf3) from c1 to c2 through the lab's 100 Mbit/s links at 0, 1 and 5 % loss.
#[test]
#[ignore = "a measurement: cargo test --release --test lab_e2e -- --ignored lab_goodput"]
fn lab_goodput() {
    if !lab::available() {
        return;
    }
    assert!(
        lab::run(&["sh", "-c", "command -v iperf3"], None).is_ok(),
        "lab_goodput needs iperf3 (apt-get install -y iperf3)"
    );
    let mut lab = Lab::new("gput");
    let server = lab::ip_of("c2").to_string();
    for (round, permille) in [0u32, 10, 50].into_iter().enumerate() {
        lab.set_loss(permille);
        let port = (5201 + round).to_string();
        lab.spawn("c2", &["iperf3", "-s", "-1", "-B", &server, "-p", &port]);
        let deadline = Instant::now() + SMALL;
        let v: serde_json::Value = loop {
            let args = ["ip", "netns", "exec", &lab.ns("c1"), "iperf3", "-J", "-t", "5", "-c", &server, "-p", &port];
            let out = lab::run(&args, None);
            let v = serde_json::from_str::<serde_json::Value>(out.as_deref().unwrap_or("{}")).unwrap_or_default();
            if out.is_ok() && v.get("error").is_none() {
                break v;
            }
            let why = v.get("error").map_or_else(|| out.err().unwrap_or_default(), |e| e.to_string());
            assert!(Instant::now() < deadline, "iperf3 client never got through within {SMALL:?}: {why}");
            eprintln!("iperf3 not through yet ({}); again", why.lines().last().unwrap_or(""));
            std::thread::sleep(Duration::from_millis(200));
        };
        let mbit = v["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or(0.0) / 1e6;
        let retr = v["end"]["sum_sent"]["retransmits"].as_u64().unwrap_or(0);
        let pct = permille as f64 / 10.0;
        println!("GOODPUT at {pct} % loss: {mbit:.1} Mbit/s TCP c1 -> c2 ({retr} retransmits; {})", frames(&lab));
        // The same link for the cloud's transfer and for the bench's own TCP stream.
        let bench = client::launch::sibling_binary("bench").expect("bench binary");
        let bench = bench.to_string_lossy().to_string();
        let at = format!("{server}:{}", 9100 + round);
        lab.spawn("c2", &[&bench, "--transfer-listen", &at]);
        for tcp in [false, true] {
            let ns = lab.ns("c1");
            let mut args = vec!["ip", "netns", "exec", ns.as_str(), bench.as_str()];
            args.extend(["--transfer-to", at.as_str(), "--transfer-mb", "50"]);
            if tcp {
                args.push("--tcp");
            }
            let deadline = Instant::now() + SMALL;
            let line = loop {
                match lab::run(&args, None) {
                    Ok(out) => break out.lines().last().unwrap_or("").to_string(),
                    Err(e) => {
                        assert!(Instant::now() < deadline, "bench --transfer-to never got through: {e}");
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
            };
            println!("GOODPUT at {pct} % loss, bench c1 -> c2: {line}");
        }
    }
}
