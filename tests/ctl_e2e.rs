//! `ctl`, the operator's commands over the network, against a real cluster: a mistyped command
//! or a bad number exits non-zero with the error and the valid commands; `status` prints the
//! server's table; `down` and `up` answer and act (the `status` table agrees); a server that does
//! not answer is an error within the wait. The servers take the command only in a frame under
//! the cluster key: a plain one or one under another key gets no answer and changes nothing,
//! and a copy of a real one is answered again but done once. The stdin path still works.

mod support;

use client::launch::sibling_binary;
use common::auth::{decode_at_server, encode_server, wall_ms};
use common::operator::OperatorCmd;
use common::protocol::{encode_msg, Frame, Msg};
use std::net::UdpSocket;
use std::process::{Command, Output};
use std::time::Duration;
use support::{cluster_with, status_once, wait_until};

fn ctl(config: &std::path::Path, args: &[&str]) -> Output {
    Command::new(sibling_binary("ctl").expect("ctl")).arg("--config").arg(config).args(args).output().expect("ctl runs")
}

fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn server_2_line(table: &str) -> String {
    table.lines().find(|l| l.starts_with("2 ")).unwrap_or_default().to_string()
}

// Long on purpose: one cluster, the commands in order, each on the state the one before left.
#[test]
fn ctl_answers_where_it_was_typed_and_fails_loudly() {
    // Nobody's turn comes while the simulation is on for a moment.
    let mut c = cluster_with("ctl", 3, |cfg| cfg.simulate_up_ms = 600_000, &[]);
    let cfg = c.config_path.clone();

    let typo = ctl(&cfg, &["2", "dwon", "10"]);
    let (_, err) = text(&typo);
    assert_ne!(typo.status.code(), Some(0), "{err}");
    assert!(err.contains("unknown command \"dwon 10\"") && err.contains("down [SECONDS] | up"), "{err}");
    let nan = ctl(&cfg, &["2", "down", "ten"]);
    assert_ne!(nan.status.code(), Some(0));
    assert!(text(&nan).1.contains("\"ten\" is not a whole number of seconds"), "{:?}", text(&nan));
    let nobody = ctl(&cfg, &["9", "status"]);
    assert_ne!(nobody.status.code(), Some(0));
    assert!(text(&nobody).1.contains("not a server"), "{:?}", text(&nobody));

    let status = ctl(&cfg, &["2", "status"]);
    let (out, err) = text(&status);
    assert!(status.status.success(), "{err}");
    assert!(out.starts_with("server 2 — up") && out.contains("server 3: load"), "{out}");

    let down = ctl(&cfg, &["2", "down", "30"]);
    assert!(down.status.success(), "{:?}", text(&down));
    assert!(text(&down).0.contains("server 2 is DOWN for 30.0 s"), "{:?}", text(&down));
    assert!(server_2_line(&status_once(&cfg)).contains("DOWN"), "{}", status_once(&cfg));
    let (out, _) = text(&ctl(&cfg, &["2", "status"]));
    assert!(out.starts_with("server 2 — DOWN"), "a down server still answers its operator: {out}");
    let up = ctl(&cfg, &["2", "up"]);
    assert!(up.status.success() && text(&up).0.contains("back UP"), "{:?}", text(&up));
    assert!(wait_until(Duration::from_secs(10), || server_2_line(&status_once(&cfg)).contains(" up ")));

    // Without the cluster key's tag, or under another key: no answer, nothing done.
    let peer = c.cfg.server(2).expect("server 2").peer_addr;
    let sock = UdpSocket::bind("127.0.0.1:0").expect("socket");
    sock.set_read_timeout(Some(Duration::from_millis(1500))).expect("timeout");
    let down = Msg::Operator { nonce: 1, cmd: OperatorCmd::Down { secs: Some(60) } };
    sock.send_to(&encode_msg(&down), peer).expect("send");
    sock.send_to(&encode_server(&common::crypto::random_key(), wall_ms(), &down), peer).expect("send");
    let mut buf = vec![0u8; 65_536];
    assert!(sock.recv_from(&mut buf).is_err(), "no answer to a forged command");
    assert!(server_2_line(&status_once(&cfg)).contains(" up "), "{}", status_once(&cfg));

    // A copy of a real command (a retransmission, or a replay within the window) is answered
    // again with the first answer, and done once.
    let key = client::operator::cluster_key(&c.cfg).expect("the cluster key");
    let on = encode_server(&key, wall_ms(), &Msg::Operator { nonce: 42, cmd: OperatorCmd::Simulate { on: true } });
    for _ in 0..3 {
        sock.send_to(&on, peer).expect("send");
        let (n, _) = sock.recv_from(&mut buf).expect("an answer to each copy");
        let (frame, tagged) = decode_at_server(&buf[..n], &key, wall_ms(), 30_000).expect("a tagged answer");
        assert!(tagged);
        let Frame::Ctl(Msg::OperatorReply { nonce: 42, server: 2, result: Ok(text) }) = frame else {
            panic!("{frame:?}")
        };
        assert!(text.contains("failure simulation on"), "{text}");
    }
    let off = ctl(&cfg, &["all", "simulate", "off"]);
    assert!(off.status.success(), "{:?}", text(&off));
    assert_eq!(text(&off).0.matches("failure simulation off").count(), 3, "{:?}", text(&off));
    assert_eq!(c.log(2).matches("failure simulation on").count(), 1, "{}", c.log(2));

    // The stdin path still takes commands, and names the valid ones after a typo.
    c.operator(2, "dwon").expect("stdin");
    assert!(wait_until(Duration::from_secs(10), || c.log(2).contains("unknown command \"dwon\"; commands: down")));

    // No answer: an error within the wait; kill and restart need a cluster started by run.sh.
    c.kill(3);
    let silent = ctl(&cfg, &["--wait-ms", "500", "3", "status"]);
    assert_eq!(silent.status.code(), Some(1));
    assert!(text(&silent).1.contains("no answer from server 3"), "{:?}", text(&silent));
    let run_dir = c.dir.join("run");
    let kill = ctl(&cfg, &["--run-dir", run_dir.to_str().unwrap_or("run"), "1", "kill"]);
    assert_eq!(kill.status.code(), Some(1));
    assert!(text(&kill).1.contains("not started by ./run.sh"), "{:?}", text(&kill));
}

#[test]
fn ctl_help_and_unknown_options() {
    support::ensure_built();
    let help = Command::new(sibling_binary("ctl").expect("ctl")).arg("--help").output().expect("runs");
    assert!(help.status.success());
    assert!(text(&help).0.contains("ID|all COMMAND") && text(&help).0.contains("[default: "));
    let bad = Command::new(sibling_binary("ctl").expect("ctl")).arg("--no-such-option").output().expect("runs");
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad).1.contains("unknown option --no-such-option"), "{:?}", text(&bad));
}
