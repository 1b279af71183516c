//! Three machines, one config, with real processes: a server started with another cluster key
//! (the config's `cluster_key` field) and the two others say so plainly, in their logs (one line
//! per address) and in their `status` answers, while those two keep serving; and a server that
//! binds the wildcard address (`peer_bind`, `client_bind`) but is advertised at another
//! loopback address works in a cluster, its frames coming from an address that is not its
//! `peer_addr`. And `server --print-key`: the key alone on stdout, the file kept, bad keys in
//! the config a clear error (exit code 2).

mod support;

use client::cloud::Cloud;
use client::launch::{sibling_binary, Cluster};
use common::config::{ClusterConfig, KeyHex};
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};
use support::{ensure_built, status_once, test_dir, ClientProc};

/// Polls `f` every 100 ms until it is true or `timeout` passes; whether it became true.
fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn mismatch_line(from: SocketAddr, id: u32) -> String {
    format!(
        "frames from {from} (server {id}) carry a bad tag: that server has a different cluster key \
         (copy the key with ./run.sh key)"
    )
}

#[test]
fn a_server_with_another_key_is_reported_in_the_logs_and_in_status() {
    ensure_built();
    let mut c = Cluster::new(&test_dir("keys-mismatch"), 3, |cfg| {
        cfg.images_dir = std::fs::canonicalize("images").map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
    })
    .expect("cluster config");
    // Server 3 reads the same config but for its key, given in the config itself.
    let mut other: ClusterConfig = c.cfg.clone();
    other.cluster_key = Some(KeyHex("5a".repeat(32)));
    let other_path = c.dir.join("other-key.json");
    std::fs::write(&other_path, serde_json::to_string_pretty(&other).expect("json")).expect("write config");
    c.set_args(3, vec!["--config".into(), other_path.to_string_lossy().into_owned()]);
    c.start_all().expect("servers start");
    let addr = |id: u32| c.cfg.server(id).expect("server").peer_addr;
    let started = Instant::now();

    // The logs: each side names the other's address, once.
    let ok = wait_until(Duration::from_secs(30), || {
        let three = c.log(3);
        let one = c.log(1);
        three.contains(&mismatch_line(addr(1), 1))
            && three.contains(&mismatch_line(addr(2), 2))
            && one.contains(&mismatch_line(addr(3), 3))
    });
    assert!(ok, "no key-mismatch lines:\nserver 3:\n{}\nserver 1:\n{}", c.log(3), c.log(1));

    // Their status answers list the addresses.
    let mut cloud = Cloud::connect(&c.cfg, None).expect("cloud");
    let mut last = Default::default();
    let ok = wait_until(Duration::from_secs(30), || {
        last = cloud.statuses(Duration::from_millis(300));
        let lists = |id: u32| last.get(&id).map(|s| s.key_mismatch.clone()).unwrap_or_default();
        lists(3).contains(&addr(1).to_string())
            && lists(3).contains(&addr(2).to_string())
            && lists(1).contains(&addr(3).to_string())
            && lists(2).contains(&addr(3).to_string())
            && !lists(1).contains(&addr(2).to_string())
    });
    assert!(ok, "status does not report the mismatch: {last:?}");

    // The operator's table says it too.
    let table = status_once(&c.config_path);
    assert!(
        table.contains(&format!("server 1: frames from {} carry a bad tag: a different cluster key", addr(3))),
        "{table}"
    );

    // Servers 1 and 2 share a key: they are a majority and keep serving.
    let mut alice = ClientProc::start(&c, "alice");
    let line = alice.result(Duration::from_secs(30)).unwrap_or_default();
    assert!(line.starts_with("ok: signed in as alice"), "{line}; saw {:?}", alice.seen);
    let peers = alice.run("peers");
    assert!(peers.starts_with("ok: 1 online"), "{peers}");
    alice.finish();

    // Rate-limited: one line per address per minute (checked while the minute lasts).
    if started.elapsed() < Duration::from_secs(50) {
        for (id, from) in [(3, 1), (3, 2), (1, 3), (2, 3)] {
            let n = c.log(id).matches(&mismatch_line(addr(from), from)).count();
            assert_eq!(n, 1, "server {id} logged server {from}'s bad tags {n} times:\n{}", c.log(id));
        }
    }
    for id in [1, 2, 3] {
        assert!(c.is_alive(id), "server {id} exited");
    }
}

#[test]
fn a_server_binding_the_wildcard_under_another_advertised_address_works() {
    ensure_built();
    let mut c = Cluster::new(&test_dir("keys-bind"), 3, |cfg| {
        cfg.images_dir = std::fs::canonicalize("images").map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
        let s = &mut cfg.servers[0];
        let (cport, pport) = (s.client_addr.port(), s.peer_addr.port());
        // The others reach server 1 at 127.0.0.2; it listens on every address, and its frames
        // leave from 127.0.0.1 (the kernel's choice for the route), not from its peer_addr.
        s.peer_addr = SocketAddr::from(([127, 0, 0, 2], pport));
        s.peer_bind = Some(SocketAddr::from(([0, 0, 0, 0], pport)));
        s.client_bind = Some(SocketAddr::from(([0, 0, 0, 0], cport)));
        // Server 2 names its bind explicitly: the same as its advertised address.
        let s2 = &mut cfg.servers[1];
        s2.peer_bind = Some(s2.peer_addr);
    })
    .expect("cluster config");
    c.start_all().expect("servers start");
    // Every server answers status and sees every other live: traffic flows both ways.
    c.wait_ready(Duration::from_secs(30)).expect("cluster ready");
    let s1 = c.cfg.server(1).expect("server 1").clone();
    let log1 = c.log(1);
    assert!(log1.contains(&format!("servers on {} (bound 0.0.0.0:{})", s1.peer_addr, s1.peer_addr.port())), "{log1}");
    let sent_from = SocketAddr::from(([127, 0, 0, 1], s1.peer_addr.port()));
    let ok = wait_until(Duration::from_secs(20), || {
        c.log(2).contains(&format!("server 1's frames come from {sent_from}, not its peer_addr {}", s1.peer_addr))
    });
    assert!(ok, "server 2 did not note where server 1's frames come from:\n{}", c.log(2));

    // Clients work: requests are elected among all three servers and answered.
    let mut alice = ClientProc::start(&c, "alice");
    let line = alice.result(Duration::from_secs(30)).unwrap_or_default();
    assert!(line.starts_with("ok: signed in as alice"), "{line}; saw {:?}", alice.seen);
    let mut bob = ClientProc::start(&c, "bob");
    let line = bob.result(Duration::from_secs(30)).unwrap_or_default();
    assert!(line.starts_with("ok: signed in as bob"), "{line}; saw {:?}", bob.seen);
    let peers = alice.run("peers");
    assert!(peers.starts_with("ok: 2 online"), "{peers}");
    let mut cloud = Cloud::connect(&c.cfg, None).expect("cloud");
    let st = cloud.statuses(Duration::from_millis(500));
    assert!(st.get(&1).is_some_and(|s| !s.down), "server 1 answers status through its wildcard bind: {st:?}");
    assert!(st.values().all(|s| s.key_mismatch.is_empty()), "{st:?}");
    alice.finish();
    bob.finish();
    for id in [1, 2, 3] {
        assert!(c.is_alive(id), "server {id} exited");
        assert!(!c.log(id).contains("bad tag"), "server {id}:\n{}", c.log(id));
    }
}

#[test]
fn print_key_prints_the_key_alone_and_bad_keys_are_clear_errors() {
    ensure_built();
    let dir = test_dir("keys-print");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let server = sibling_binary("server").expect("server");
    let write = |name: &str, extra: &str| {
        let path = dir.join(name);
        let text = format!(
            r#"{{ {extra} "data_dir": "{}", "servers": [
                {{"id": 1, "client_addr": "127.0.0.1:7101", "peer_addr": "127.0.0.1:7201"}} ] }}"#,
            dir.join("data").display()
        );
        std::fs::write(&path, text).expect("write config");
        path
    };
    let run = |cfg: &std::path::Path| {
        Command::new(&server).arg("--print-key").arg("--config").arg(cfg).output().expect("runs")
    };
    let plain = write("plain.json", "");
    let first = run(&plain);
    assert!(first.status.success(), "{first:?}");
    let key = String::from_utf8_lossy(&first.stdout).into_owned();
    assert_eq!(key.len(), 65, "64 hex digits and a newline, nothing else: {key:?}");
    assert!(key.trim_end().chars().all(|c| c.is_ascii_hexdigit()), "{key:?}");
    assert!(String::from_utf8_lossy(&first.stderr).contains("created now"), "{first:?}");
    let file = std::fs::read_to_string(dir.join("data").join("cluster.key")).expect("key file");
    assert_eq!(file.trim(), key.trim_end());
    let again = run(&plain);
    assert_eq!(String::from_utf8_lossy(&again.stdout), key, "the file is kept");
    // The key in the config is printed as it is (lower case) and wins over no file.
    let inline = write("inline.json", &format!(r#""cluster_key": "{}","#, "AB".repeat(32)));
    let out = run(&inline);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{}\n", "ab".repeat(32)));
    // A bad key is a clear config error, exit code 2, whether printing or serving.
    let bad = write("bad.json", r#""cluster_key": "12345","#);
    for args in [vec!["--print-key"], vec!["--id", "1"]] {
        let out = Command::new(&server).args(&args).arg("--config").arg(&bad).output().expect("runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("`cluster_key`") && err.contains("exactly 64 hex digits; it has 5"), "{err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    let both = write("both.json", &format!(r#""cluster_key": "{}", "cluster_key_file": "k","#, "ab".repeat(32)));
    let out = run(&both);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not both"), "{out:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
