//! End to end with real processes: three servers, three clients issuing 1,000 directory
//! requests in total while one server is SIGKILLed midway; every request gets exactly one
//! answer. Then every server is restarted: users and sessions are still there.

mod support;

use std::time::Duration;
use support::{cluster, ClientProc};

#[test]
fn thousand_requests_survive_a_sigkill_and_a_full_restart() {
    let mut c = cluster("kill", 3);
    let names = ["alice", "bob", "carol"];
    let mut clients: Vec<ClientProc> = names.iter().map(|n| ClientProc::start(&c, n)).collect();
    for cl in clients.iter_mut() {
        let first = cl.result(Duration::from_secs(20)).expect("sign-in line");
        assert!(first.starts_with("ok: signed in"), "{first}");
    }
    // 1,000 directory requests: 334 + 333 + 333, alternating lookups and listings.
    let per: [usize; 3] = [334, 333, 333];
    let mut answers = [0usize; 3];
    let mut killed = false;
    for round in 0..334 {
        for (i, cl) in clients.iter_mut().enumerate() {
            if round < per[i] {
                cl.send(if round % 2 == 0 { "whoami" } else { "peers" });
            }
        }
        for (i, cl) in clients.iter_mut().enumerate() {
            if round < per[i] {
                let line = cl.result(Duration::from_secs(30)).unwrap_or_else(|| panic!("{} got no answer", names[i]));
                assert!(line.starts_with("ok:"), "{}: {line}", names[i]);
                answers[i] += 1;
            }
        }
        if round == 167 && !killed {
            c.kill(1);
            killed = true;
        }
    }
    assert_eq!(answers.iter().sum::<usize>(), 1000);
    for cl in clients.iter_mut() {
        let stats = cl.run("stats");
        assert!(stats.contains("handled_twice=0"), "{stats}");
        assert!(stats.contains("timed_out=0"), "{stats}");
    }
    for id in [2, 3] {
        assert!(c.is_alive(id), "server {id} exited");
    }
    // No sign-out for carol: her session must survive the restart.
    let carol = clients.pop().expect("carol");
    carol.kill();
    for cl in clients {
        cl.finish();
    }
    c.kill_all();
    c.start_all().expect("restart");
    c.wait_ready(Duration::from_secs(20)).expect("ready after restart");
    let mut dave = ClientProc::start(&c, "dave");
    assert!(dave.result(Duration::from_secs(20)).unwrap_or_default().starts_with("ok: signed in"));
    let peers = dave.run("peers");
    assert!(peers.starts_with("ok:"), "{peers}");
    assert!(dave.seen.iter().any(|l| l.trim_start().starts_with("carol ")), "carol still online: {:?}", dave.seen);
    dave.finish();
    // alice signs in again with the token saved at registration: the user survived.
    let mut alice = ClientProc::start(&c, "alice");
    let line = alice.result(Duration::from_secs(20)).unwrap_or_default();
    assert!(line.starts_with("ok: signed in as alice"), "{line}");
    alice.finish();
}

#[test]
fn simulated_failures_take_turns_and_the_cloud_keeps_answering() {
    let c = support::cluster_with(
        "simulate",
        3,
        |cfg| {
            cfg.simulate_down_ms = 1500;
            cfg.simulate_up_ms = 1500;
        },
        &["--simulate-failures"],
    );
    let mut zed = ClientProc::start(&c, "zed");
    assert!(zed.result(Duration::from_secs(20)).unwrap_or_default().starts_with("ok: signed in"));
    let start = std::time::Instant::now();
    let mut answered = 0;
    while start.elapsed() < Duration::from_secs(10) {
        let line = zed.run("peers");
        assert!(line.starts_with("ok: 1 online"), "{line}");
        answered += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    zed.finish();
    for id in c.cfg.ids() {
        let log = c.log(id);
        assert!(log.contains("failure simulation: my turn"), "server {id} never took its turn:\n{log}");
        assert!(log.contains("back UP"), "server {id} never came back:\n{log}");
    }
    assert!(c.log(2).contains("server 1 is back") && c.log(1).contains("server 2 is back"), "resync pushes");
    assert!(answered > 50, "{answered}");
}
