//! Scenario scripts for the node (in the style of toydb's `src/raft/testscripts`): each file in
//! `server/tests/scripts/` is a list of commands, each followed by `----` and the trace the
//! real `server::node::Node`s printed (every message delivered, every log line), compared with
//! the text. `UPDATE_SCRIPTS=1 cargo test --release -p server --test scripts` writes the traces
//! that came out instead; `git diff` then shows what changed, to be read like code.
//!
//! Commands:
//! - `cluster 1 2 3`: servers with those ids, each having heard the others announce load 0;
//! - `request CLIENT SEQ register NAME` (or `lookup NAME`): the client sends the request to
//!   every live server;
//! - `deliver [N]`: delivers queued messages in order (all, or the first N), with what they
//!   cause; messages to clients are printed and end there, load announcements are delivered but
//!   not printed;
//! - `tick MS`: time moves on by MS ms: each live server runs its timers every 5 ms and samples
//!   its load every second, and what they send is delivered at once (lines carry the time);
//! - `crash ID`: the server stops; messages to it are dropped (and said so);
//! - `drop FROM TO`: the queued messages from FROM to TO are lost.

use common::config::ServerId;
use common::protocol::{Msg, Op, RequestId, DECIDED};
use common::rng::Rng;
use server::node::{Input, Node, NodeConfig, Output, Peer};
use server::store::Saved;
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;

/// Where a message goes or comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Server(ServerId),
    Client(u16),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Server(id) => write!(f, "{id}"),
            End::Client(c) => write!(f, "c{c}"),
        }
    }
}

/// How often the shell samples the load (`load_interval_ms`).
const LOAD_INTERVAL_MS: u64 = 1000;

fn client_addr(c: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 20_000 + c))
}

fn end_of(p: &Peer) -> End {
    match p {
        Peer::Server(id) => End::Server(*id),
        Peer::Client(a) => End::Client(a.port().saturating_sub(20_000)),
    }
}

/// A message in a few words: what a reader checks against the protocol.
fn show(msg: &Msg) -> String {
    let yes = |b: bool| if b { "yes" } else { "no" };
    match msg {
        Msg::Request { rid, op } => format!("Request {rid} {}", op.kind()),
        Msg::Reply(r) => match &r.result {
            Ok(a) => format!("Reply {} by {}: {}", r.rid, r.server, answer_kind(a)),
            Err(e) => format!("Reply {} by {}: error {e:?}", r.rid, r.server),
        },
        Msg::Prepare { rid, round, first, .. } => format!("Prepare {rid} round {round} first={}", yes(*first)),
        Msg::Promise { rid, granted, holder, round, firm, reply, record, .. } => {
            let mut s = format!("Promise {rid} round {round} granted={}", yes(*granted));
            if let Some(h) = holder {
                let _ = write!(s, " holder={h}");
            }
            if *firm {
                s.push_str(" firm");
            }
            if reply.is_some() {
                s.push_str(" +reply");
            }
            if record.is_some() {
                s.push_str(" +record");
            }
            s
        }
        Msg::Accept { rid, round: DECIDED, records, .. } => format!("Decision {rid} ({} records)", records.len()),
        Msg::Accept { rid, round, records, .. } => format!("Accept {rid} round {round} ({} records)", records.len()),
        Msg::Accepted { rid, accepted, round, reply, .. } => {
            let round = if *round == DECIDED { "decision".to_string() } else { format!("round {round}") };
            format!(
                "Accepted {rid} {round} accepted={}{}",
                yes(*accepted),
                if reply.is_some() { " +reply" } else { "" }
            )
        }
        Msg::Batch { msgs, .. } => format!("Batch [{}]", msgs.iter().map(show).collect::<Vec<_>>().join("; ")),
        other => other.kind().to_string(),
    }
}

fn answer_kind(a: &common::protocol::Answer) -> String {
    let debug = format!("{a:?}");
    debug.split([' ', '(', '{']).next().unwrap_or("").to_string()
}

/// The servers, the messages between them, and the time.
struct World {
    nodes: BTreeMap<ServerId, Node>,
    queue: VecDeque<(End, End, Msg)>,
    now: u64,
    /// Inside `tick`: trace lines carry the time.
    timed: bool,
}

impl World {
    fn new(ids: &[ServerId]) -> World {
        let mut nodes = BTreeMap::new();
        for &id in ids {
            nodes.insert(id, Node::new(NodeConfig::simulated(id, ids), 0, Saved::default(), Rng::new(id as u64)));
        }
        let mut w = World { nodes, queue: VecDeque::new(), now: 1, timed: false };
        // Every server announces its load once: then each has heard the others and is ready.
        let mut quiet = String::new();
        let ids: Vec<ServerId> = w.nodes.keys().copied().collect();
        for id in ids {
            let outs = w.nodes.get_mut(&id).map(|n| n.step(1, Input::LoadSample { cpu_percent: 0.0, rss_kb: 0 }));
            w.outputs(id, outs.unwrap_or_default(), &mut quiet);
        }
        w.deliver(None, &mut quiet);
        w
    }

    fn outputs(&mut self, id: ServerId, outs: Vec<Output>, trace: &mut String) {
        for o in outs {
            match o {
                Output::Send { to, msg } => self.queue.push_back((End::Server(id), end_of(&to), msg)),
                Output::Log(line) => {
                    let _ = writeln!(trace, "  [{id}] {line}");
                }
                Output::Execute { rid, op, .. } => {
                    let _ = writeln!(trace, "  [{id}] executes {rid} {} on the workers", op.kind());
                }
            }
        }
    }

    fn deliver(&mut self, limit: Option<usize>, trace: &mut String) {
        let at = if self.timed { format!("{:>5} ms  ", self.now) } else { String::new() };
        let mut n = 0;
        while let Some((from, to, msg)) = self.queue.pop_front() {
            let quiet = matches!(msg, Msg::Load { .. });
            match to {
                End::Client(_) => {
                    let _ = writeln!(trace, "{at}{from} -> {to}: {}", show(&msg));
                }
                End::Server(id) => {
                    if !quiet {
                        let _ = writeln!(trace, "{at}{from} -> {to}: {}", show(&msg));
                    }
                    let peer = match from {
                        End::Server(s) => Peer::Server(s),
                        End::Client(c) => Peer::Client(client_addr(c)),
                    };
                    match self.nodes.get_mut(&id) {
                        Some(node) => {
                            let outs = node.step(self.now, Input::Message { from: peer, msg });
                            self.outputs(id, outs, trace);
                        }
                        None if !quiet => {
                            let _ = writeln!(trace, "  (server {id} is down: dropped)");
                        }
                        None => {}
                    }
                }
            }
            n += 1;
            if limit.is_some_and(|l| n >= l) {
                return;
            }
        }
    }

    fn run(&mut self, line: &str, trace: &mut String) -> Result<(), String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["request", c, seq, kind, name] => {
                let c: u16 = c.trim_start_matches('c').parse().map_err(|_| format!("bad client {c}"))?;
                let seq: u64 = seq.parse().map_err(|_| format!("bad seq {seq}"))?;
                let op = match *kind {
                    "register" => Op::Register { name: name.to_string() },
                    "lookup" => Op::Lookup { name: name.to_string() },
                    other => return Err(format!("unknown operation {other}")),
                };
                let rid = RequestId { client: u64::from(c), seq };
                for &id in self.nodes.keys() {
                    self.queue.push_back((End::Client(c), End::Server(id), Msg::Request { rid, op: op.clone() }));
                }
            }
            ["deliver"] => self.deliver(None, trace),
            ["deliver", n] => self.deliver(Some(n.parse().map_err(|_| format!("bad count {n}"))?), trace),
            ["tick", ms] => {
                let ms: u64 = ms.parse().map_err(|_| format!("bad time {ms}"))?;
                let end = self.now + ms;
                // Timers run every 5 ms and the load is sampled every second, as in the shell;
                // what they send arrives at once (load announcements are not printed).
                self.timed = true;
                while self.now < end {
                    let before = self.now;
                    self.now = (self.now + 5).min(end);
                    let sample = self.now / LOAD_INTERVAL_MS > before / LOAD_INTERVAL_MS;
                    let ids: Vec<ServerId> = self.nodes.keys().copied().collect();
                    for id in ids {
                        let Some(n) = self.nodes.get_mut(&id) else { continue };
                        let mut outs = n.tick(self.now);
                        if sample {
                            outs.extend(n.step(self.now, Input::LoadSample { cpu_percent: 0.0, rss_kb: 0 }));
                        }
                        self.outputs(id, outs, trace);
                    }
                    self.deliver(None, trace);
                }
                self.timed = false;
            }
            ["crash", id] => {
                let id: ServerId = id.parse().map_err(|_| format!("bad id {id}"))?;
                self.nodes.remove(&id);
                let _ = writeln!(trace, "server {id} crashed");
            }
            ["drop", a, b] => {
                let (a, b) = (parse_end(a)?, parse_end(b)?);
                let before = self.queue.len();
                self.queue.retain(|(f, t, _)| !(*f == a && *t == b));
                let _ = writeln!(trace, "dropped {} message(s) {a} -> {b}", before - self.queue.len());
            }
            _ => return Err(format!("unknown command {line:?}")),
        }
        Ok(())
    }
}

fn parse_end(s: &str) -> Result<End, String> {
    match s.strip_prefix('c') {
        Some(c) => c.parse().map(End::Client).map_err(|_| format!("bad end {s}")),
        None => s.parse().map(End::Server).map_err(|_| format!("bad end {s}")),
    }
}

/// Runs one script; returns the file as it should be (commands with their actual traces).
fn run_script(text: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut world: Option<World> = None;
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        out.push_str(line);
        out.push('\n');
        // Skip the expected trace that follows, up to and with the next blank line.
        if lines.peek().is_some_and(|l| l.trim() == "----") {
            while lines.peek().is_some_and(|l| !l.trim().is_empty()) {
                lines.next();
            }
        }
        if lines.peek().is_some_and(|l| l.trim().is_empty()) {
            lines.next();
        }
        let mut trace = String::new();
        let words: Vec<&str> = trimmed.split_whitespace().collect();
        if words.first() == Some(&"cluster") {
            let ids: Result<Vec<ServerId>, _> = words[1..].iter().map(|w| w.parse()).collect();
            world = Some(World::new(&ids.map_err(|_| format!("bad ids in {trimmed:?}"))?));
        } else {
            let w = world.as_mut().ok_or("the first command must be `cluster`")?;
            w.run(trimmed, &mut trace)?;
        }
        out.push_str("----\n");
        out.push_str(&trace);
        out.push('\n');
    }
    Ok(out)
}

#[test]
fn scenario_scripts_print_the_expected_traces() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scripts");
    let update = std::env::var("UPDATE_SCRIPTS").is_ok();
    let mut files: Vec<_> =
        std::fs::read_dir(&dir).expect("tests/scripts").filter_map(|e| e.ok()).map(|e| e.path()).collect();
    files.sort();
    assert!(!files.is_empty(), "no scripts in {}", dir.display());
    let mut failed = Vec::new();
    for path in files.iter().filter(|p| p.extension().is_some_and(|x| x == "txt")) {
        let text = std::fs::read_to_string(path).expect("script");
        let want = run_script(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if update {
            std::fs::write(path, &want).expect("write script");
        } else if want != text {
            let first = want.lines().zip(text.lines()).position(|(a, b)| a != b).unwrap_or(0);
            let got: Vec<&str> = want.lines().skip(first.saturating_sub(2)).take(8).collect();
            let had: Vec<&str> = text.lines().skip(first.saturating_sub(2)).take(8).collect();
            failed.push(format!(
                "{} differs at line {}:\n  got:\n    {}\n  expected:\n    {}",
                path.display(),
                first + 1,
                got.join("\n    "),
                had.join("\n    ")
            ));
        }
    }
    assert!(failed.is_empty(), "{}\n(UPDATE_SCRIPTS=1 rewrites the traces; read the diff)", failed.join("\n"));
}
