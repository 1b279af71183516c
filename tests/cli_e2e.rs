//! Every binary's command line: `--help` lists the options with their defaults and exits 0;
//! an unknown option is a clear message and exit code 2. And the `status` binary's table
//! against a real cluster: servers up with the online users, a SIGKILLed one DOWN.

mod support;

use client::launch::sibling_binary;
use std::process::Command;
use std::time::Duration;
use support::{cluster, ensure_built, status_once, ClientProc};

#[test]
fn help_lists_defaults_and_unknown_options_exit_2() {
    ensure_built();
    for bin in ["server", "client", "bench", "status", "demo"] {
        let path = sibling_binary(bin).expect("binary");
        let help = Command::new(&path).arg("--help").output().expect("runs");
        let text = String::from_utf8_lossy(&help.stdout);
        assert!(help.status.success(), "{bin} --help: {:?}", help.status);
        assert!(text.contains("--help") && text.contains("[default: "), "{bin} --help:\n{text}");
        let bad = Command::new(&path).arg("--no-such-option").output().expect("runs");
        let err = String::from_utf8_lossy(&bad.stderr);
        assert_eq!(bad.status.code(), Some(2), "{bin} --no-such-option");
        assert!(err.contains("unknown option --no-such-option"), "{bin}: {err}");
    }
}

#[test]
fn status_table_shows_servers_up_down_and_online_users() {
    let mut c = cluster("status", 3);
    let mut alice = ClientProc::start(&c, "alice");
    assert!(alice.result(Duration::from_secs(20)).unwrap_or_default().starts_with("ok: signed in"));
    let table = status_once(&c.config_path);
    assert!(table.contains("3 of 3 servers up; online: alice"), "{table}");
    // One next winner, or the least-loaded servers tie (the request id picks among them).
    let (wins, ties) = (table.matches("<- wins it").count(), table.matches("<- tie").count());
    assert!((wins, ties) == (1, 0) || (wins == 0 && ties >= 2), "{table}");
    c.kill(2);
    let table = status_once(&c.config_path);
    assert!(table.lines().any(|l| l.starts_with("2 ") && l.contains("DOWN")), "{table}");
    assert!(table.contains("2 of 3 servers up; online: alice"), "{table}");
    alice.finish();
}
