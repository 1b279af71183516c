//! The thread shell around the node state machine: two blocking UDP sockets (clients, servers)
//! each with a receive thread, the worker pool, the load thread, a timer thread and an
//! operator thread reading stdin (operator commands also come from `ctl` and the dashboard as
//! `Msg::Operator` frames under the cluster key on the servers' port, and are answered there).
//! The node, the heavy-request services and the store sit behind one lock ([`Server`]);
//! whichever thread has something to handle takes the lock and handles it to the end: it feeds
//! the node the event and the time, saves the directory before anything that depends on it is
//! sent, and sends what the node returns.

use crate::election::Policy;
use crate::keys::BadTags;
use crate::load;
use crate::node::{Input, Node, NodeConfig, Output, Peer};
use crate::pool::Pool;
use crate::services::{self, Datagram};
use crate::store::Store;
use common::auth::{self, decode_at_server, encode_server};
use common::config::{ClusterConfig, ServerId, MAX_DATAGRAM};
use common::crypto::Key;
use common::operator::{OperatorCmd, MAX_REPLY, USAGE};
use common::protocol::{encode_attached, encode_msg, encode_xfer, Frame, Msg};
use common::rng::Rng;
use common::stego::Covers;
use crossbeam_channel::{bounded, Sender};
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::io::BufRead;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// How often the node's timers run, in ms.
pub const TICK_MS: u64 = 5;

/// Everything the server binary was asked for.
#[derive(Debug, Clone)]
pub struct Options {
    /// This server's id.
    pub id: ServerId,
    /// The cluster.
    pub cfg: ClusterConfig,
    /// Data folder (already resolved from --data or the config).
    pub data_dir: PathBuf,
    /// Election policy.
    pub policy: Policy,
    /// Pass the failure-simulation token around.
    pub simulate_failures: bool,
    /// Extra artificial work per heavy request, ms (benchmark only).
    pub slow_ms: u64,
    /// Read operator commands from stdin.
    pub stdin: bool,
}

/// What the server reacts to.
#[allow(clippy::large_enum_variant)] // moved once through the queue
pub enum Event {
    /// A node input (datagram, load sample, worker result, operator command).
    Node(Input),
    /// A peer acknowledged a message the cloud relayed.
    PeerAck(SocketAddr, u64),
    /// A transfer datagram from `from`.
    Xfer(SocketAddr, common::transfer::TransferMsg),
    /// A client's request with its payload attached.
    Attached { from: SocketAddr, msg: Msg, payload: Vec<u8> },
    /// A worker finished hiding an image for `client`.
    Worked { rid: common::protocol::RequestId, client: SocketAddr, result: Result<Vec<u8>, String> },
    /// Ctrl-C: announce 999 and exit.
    Shutdown,
}

/// Rate-limits "dropped datagram" log lines: a flood of garbage must not become a flood of logs.
struct DropLog {
    who: String,
    window: Instant,
    shown: u32,
    hidden: u32,
}

impl DropLog {
    fn new(who: &str) -> Self {
        DropLog { who: who.into(), window: Instant::now(), shown: 0, hidden: 0 }
    }

    fn drop(&mut self, from: SocketAddr, why: &str) {
        if self.window.elapsed() >= Duration::from_secs(1) {
            if self.hidden > 0 {
                common::log::log(&self.who, &format!("... and {} more datagrams dropped", self.hidden));
            }
            self.window = Instant::now();
            self.shown = 0;
            self.hidden = 0;
        }
        if self.shown < 5 {
            self.shown += 1;
            common::log::log(&self.who, &format!("dropped datagram from {from}: {why}"));
        } else {
            self.hidden += 1;
        }
    }
}

/// How a receive thread checks what arrives: the cluster key and the replay window.
#[derive(Clone)]
struct Guard {
    key: Key,
    window_ms: u64,
}

/// Pairs (server, source address) logged as a server's frames coming from an address other
/// than its `peer_addr`, at most.
const MAX_ROAMING_LOGGED: usize = 32;

/// Who is who on the server port. A server is known by the address its frames come from: its
/// advertised `peer_addr`. A server that binds another address (`peer_bind`, e.g. `0.0.0.0`)
/// sends from whatever address the kernel picks for the route, which may not be `peer_addr`
/// (several interfaces, NAT); for those servers only, an authenticated frame from an address
/// that is no server's is taken as sent by the server it names. The frame's tag proves it was
/// made with the cluster key; a copy replayed from elsewhere within the replay window is a
/// duplicate, which the protocol tolerates as it tolerates the network's.
struct Peers {
    me: ServerId,
    by_addr: HashMap<SocketAddr, ServerId>,
    roaming: HashMap<ServerId, (SocketAddr, SocketAddr)>,
    logged: std::collections::BTreeSet<(ServerId, SocketAddr)>,
}

impl Peers {
    fn new(cfg: &ClusterConfig, me: ServerId) -> Self {
        Peers {
            me,
            by_addr: cfg.servers.iter().map(|s| (s.peer_addr, s.id)).collect(),
            roaming: cfg
                .servers
                .iter()
                .filter(|s| s.id != me && s.peer_bind_differs())
                .map(|s| (s.id, (s.peer_addr, s.peer_bind_addr())))
                .collect(),
            logged: Default::default(),
        }
    }

    /// The server that sent `frame` from `from`, if it is one of this cluster's.
    fn identify(&mut self, from: SocketAddr, frame: &Frame, who: &str) -> Option<ServerId> {
        if let Some(&id) = self.by_addr.get(&from) {
            return Some(id);
        }
        let Frame::Ctl(msg) = frame else { return None };
        let id = msg.sender().filter(|id| *id != self.me)?;
        let (advertised, bind) = self.roaming.get(&id)?;
        if self.logged.len() < MAX_ROAMING_LOGGED && self.logged.insert((id, from)) {
            common::log::log(
                who,
                &format!(
                    "server {id}'s frames come from {from}, not its peer_addr {advertised}: taken as its own \
                     (authenticated; it binds {bind})"
                ),
            );
        }
        Some(id)
    }
}

// Long on purpose: one receive thread's loop: read, authenticate, sort, hand over.
fn spawn_receiver(
    name: String,
    who: String,
    sock: UdpSocket,
    mut peers: Option<Peers>,
    guard: Guard,
    server: Arc<Server>,
) -> std::io::Result<()> {
    std::thread::Builder::new().name(name.clone()).spawn(move || {
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        let mut drops = DropLog::new(&name);
        let mut bad_tags = BadTags::default();
        let start = Instant::now();
        loop {
            let (n, from) = match sock.recv_from(&mut buf) {
                Ok(x) => x,
                Err(e) => {
                    // ICMP errors from earlier sends surface here on some systems: keep going.
                    if e.kind() != std::io::ErrorKind::ConnectionRefused {
                        drops.drop(SocketAddr::from(([0, 0, 0, 0], 0)), &format!("receive error: {e}"));
                    }
                    continue;
                }
            };
            let frame = match decode_at_server(&buf[..n], &guard.key, auth::wall_ms(), guard.window_ms) {
                Ok((f, authenticated)) => {
                    if authenticated != peers.is_some() {
                        drops.drop(from, "server frames belong on the server port only");
                        continue;
                    }
                    f
                }
                Err(e) => {
                    match &peers {
                        // Another cluster key: said plainly, once a minute per address.
                        Some(p) if auth::is_bad_tag(&e) => {
                            let now = start.elapsed().as_millis() as u64;
                            let verdict = bad_tags.record(now, from, p.by_addr.get(&from).copied());
                            for line in verdict.log.iter().flat_map(|l| l.lines()) {
                                common::log::log(&who, line);
                            }
                            if verdict.note && !server.deliver(Event::Node(Input::KeyMismatch { from })) {
                                return;
                            }
                        }
                        _ => drops.drop(from, &e.0),
                    }
                    continue;
                }
            };
            if let (Frame::Ctl(Msg::Operator { nonce, cmd }), Some(_)) = (&frame, &peers) {
                // The operator is no server: its tag under the cluster key is what counts.
                if !server.operate_for(from, *nonce, *cmd) {
                    return;
                }
                continue;
            }
            let peer = match peers.as_mut() {
                None => Peer::Client(from),
                Some(p) => match p.identify(from, &frame, &who) {
                    Some(id) => Peer::Server(id),
                    None => {
                        drops.drop(from, "not a server of this cluster");
                        continue;
                    }
                },
            };
            let ev = match (frame, peer) {
                (Frame::Ctl(Msg::PeerAck { id, .. }), Peer::Client(addr)) => Event::PeerAck(addr, id),
                (Frame::Ctl(msg), from) => Event::Node(Input::Message { from, msg }),
                (Frame::Xfer(x), Peer::Client(addr)) => Event::Xfer(addr, x),
                (Frame::Attached(msg @ Msg::Request { .. }, payload), Peer::Client(addr)) => {
                    Event::Attached { from: addr, msg, payload }
                }
                (Frame::Attached(..), Peer::Client(_)) => {
                    drops.drop(from, "only requests come to a server with an attachment");
                    continue;
                }
                (Frame::Xfer(_) | Frame::Attached(..), Peer::Server(_)) => {
                    drops.drop(from, "client traffic on the server port");
                    continue;
                }
            };
            // Handled here, in this thread: one wake-up per datagram, no hand-over. A flood
            // waits on the lock and overflows the socket's buffer, not our memory.
            if !server.deliver(ev) {
                return; // shut down
            }
        }
    })?;
    Ok(())
}

/// The operator's commands on stdin: the node logs what it does; `status` prints the table.
fn spawn_operator(server: Arc<Server>, who: String) -> std::io::Result<()> {
    std::thread::Builder::new().name("operator".into()).spawn(move || {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            let Ok(line) = line else { return };
            let words: Vec<&str> = line.split_whitespace().collect();
            if words.is_empty() {
                continue;
            }
            let cmd = match OperatorCmd::parse(&words) {
                Ok(cmd) => cmd,
                Err(e) => {
                    common::log::log(&who, &format!("{e}; commands: {USAGE}"));
                    continue;
                }
            };
            let (going, result) = server.operate(cmd);
            if let (OperatorCmd::Status, Ok(table)) = (cmd, result) {
                println!("{table}");
            }
            if !going {
                return;
            }
        }
    })?;
    Ok(())
}

/// Operator commands answered lately, by nonce, at most [`ANSWERS_KEPT`]: a copy of one (the
/// sender's retransmission, or a replay within the authentication window) is answered again,
/// not done again.
#[derive(Default)]
struct Answered {
    by_nonce: HashMap<u64, Result<String, String>>,
    order: VecDeque<u64>,
}

/// Operator answers kept for copies.
const ANSWERS_KEPT: usize = 256;

impl Answered {
    fn get(&self, nonce: u64) -> Option<Result<String, String>> {
        self.by_nonce.get(&nonce).cloned()
    }

    fn keep(&mut self, nonce: u64, result: Result<String, String>) {
        if self.by_nonce.insert(nonce, result).is_none() {
            self.order.push_back(nonce);
        }
        while self.order.len() > ANSWERS_KEPT {
            if let Some(old) = self.order.pop_front() {
                self.by_nonce.remove(&old);
            }
        }
    }
}

/// Runs a server until Ctrl-C.
// Long on purpose: the server's start-up sequence (sockets, store, node, threads) in order.
pub fn run(opts: Options) -> Result<(), String> {
    let who = format!("server {}", opts.id);
    let log = |line: &str| common::log::log(&who, line);
    let me = opts.cfg.server(opts.id).ok_or(format!("server id {} is not in the config", opts.id))?.clone();
    let bind = |addr: SocketAddr, field: &str| {
        UdpSocket::bind(addr).map_err(|e| format!("cannot bind {addr} (`{field}` of server {}): {e}", opts.id))
    };
    let (client_bind, peer_bind) = (me.client_bind_addr(), me.peer_bind_addr());
    let client_sock = bind(client_bind, if me.client_bind.is_some() { "client_bind" } else { "client_addr" })?;
    let peer_sock = bind(peer_bind, if me.peer_bind.is_some() { "peer_bind" } else { "peer_addr" })?;
    // Messages go to the advertised addresses; the binds are only where this server listens.
    let peer_addrs: HashMap<ServerId, SocketAddr> = opts.cfg.servers.iter().map(|s| (s.id, s.peer_addr)).collect();
    let peer_ids = Peers::new(&opts.cfg, opts.id);

    let mut store = Store::open(&opts.data_dir, opts.id)?;
    let (saved, warning) = store.load();
    if let Some(w) = warning {
        log(&w);
    }
    let bound = |adv: SocketAddr, bound: SocketAddr| {
        if adv == bound {
            adv.to_string()
        } else {
            format!("{adv} (bound {bound})")
        }
    };
    log(&format!(
        "listening for clients on {}, servers on {}; {} users in the directory; policy {:?}",
        bound(me.client_addr, client_bind),
        bound(me.peer_addr, peer_bind),
        saved.directory.len(),
        opts.policy
    ));
    let key = crate::keys::cluster_key(&opts.cfg)?;
    let guard = Guard { key, window_ms: opts.cfg.auth_window_ms };
    let mut node_cfg = NodeConfig::from_cluster(&opts.cfg, opts.id, opts.policy, opts.simulate_failures);
    let start = Instant::now();
    node_cfg.wall_base = auth::wall_ms();
    let node = Node::new(node_cfg, 0, saved, Rng::from_entropy());

    let err = |e: std::io::Error| e.to_string();
    let pool = Arc::new(Pool::new(opts.cfg.pool_size).map_err(err)?);
    let (done_tx, done_rx) = bounded::<()>(1);
    let shell = Shell {
        id: opts.id,
        who: who.clone(),
        client_sock: client_sock.try_clone().map_err(err)?,
        peer_sock: peer_sock.try_clone().map_err(err)?,
        peer_addrs,
        key,
        down_ms: opts.cfg.simulate_down_ms,
    };
    let covers = Arc::new(Covers::load_dir_or_builtin(std::path::Path::new(&opts.cfg.images_dir)));
    let services = services::Services::new(opts.id, &opts.cfg);
    let server = Arc::new_cyclic(|me: &Weak<Server>| {
        let workers = Workers { pool, covers, slow_ms: opts.slow_ms, server: me.clone() };
        let core = Mutex::new(Core { node, services, store, stopped: false, answered: Answered::default() });
        Server { shell, start, done: done_tx, core, workers }
    });

    spawn_receiver(format!("{who} clients"), who.clone(), client_sock, None, guard.clone(), server.clone())
        .map_err(err)?;
    spawn_receiver(format!("{who} servers"), who.clone(), peer_sock, Some(peer_ids), guard, server.clone())
        .map_err(err)?;
    let load_server = server.clone();
    load::spawn(Duration::from_millis(opts.cfg.load_interval_ms), move |s| {
        load_server.deliver(Event::Node(Input::LoadSample { cpu_percent: s.cpu_percent, rss_kb: s.rss_kb }))
    })
    .map_err(err)?;
    if opts.stdin {
        spawn_operator(server.clone(), who.clone()).map_err(err)?;
    }
    let ctrl_server = server.clone();
    ctrlc::set_handler(move || {
        ctrl_server.deliver(Event::Shutdown);
    })
    .map_err(|e| format!("cannot install the Ctrl-C handler: {e}"))?;
    let tick_server = server.clone();
    std::thread::Builder::new()
        .name("tick".into())
        .spawn(move || {
            while tick_server.tick() {
                std::thread::sleep(Duration::from_millis(TICK_MS));
            }
        })
        .map_err(err)?;
    // Every thread handles what it receives itself; this one waits for the end.
    let _ = done_rx.recv();
    Ok(())
}

/// What does not change while the server runs: its name, sockets, peers, cluster key, and how
/// long an operator `down` without a time lasts (the failure simulation's time down).
struct Shell {
    id: ServerId,
    who: String,
    client_sock: UdpSocket,
    peer_sock: UdpSocket,
    peer_addrs: HashMap<ServerId, SocketAddr>,
    key: Key,
    down_ms: u64,
}

/// What changes, behind the server's one lock: the node, the services, the store and the
/// operator's recent answers.
struct Core {
    node: Node,
    services: services::Services,
    store: Store,
    stopped: bool,
    answered: Answered,
}

/// A running server. Every thread that receives something (a datagram, a worker's result, a
/// timer, a load sample, an operator command) takes the lock and handles it to the end: the
/// node steps, the directory is saved, the messages are sent. No queue and no hand-over between
/// threads, so a datagram costs one wake-up.
pub struct Server {
    shell: Shell,
    start: Instant,
    done: Sender<()>,
    core: Mutex<Core>,
    workers: Workers,
}

/// Runs the services' hide jobs on the pool and hands each result back to the server, reached
/// through a weak handle (the server owns the workers: a strong one would be a cycle).
struct Workers {
    pool: Arc<Pool>,
    covers: Arc<Covers>,
    slow_ms: u64,
    server: Weak<Server>,
}

impl Workers {
    fn run(&self, jobs: Vec<services::HideJob>) {
        for job in jobs {
            let (covers, server, slow) = (self.covers.clone(), self.server.clone(), self.slow_ms);
            self.pool.submit(Box::new(move || {
                if slow > 0 {
                    std::thread::sleep(Duration::from_millis(slow));
                }
                let result = common::stego::hide_upload(&covers, &job.key, &job.owner, &job.payload);
                if let Some(server) = server.upgrade() {
                    server.deliver(Event::Worked { rid: job.rid, client: job.client, result });
                }
            }));
        }
    }
}

impl Server {
    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Handles one event to the end. False once the server has shut down.
    pub fn deliver(&self, ev: Event) -> bool {
        let mut guard = self.core.lock();
        let (going, outbox) = self.handle(&mut guard, ev);
        drop(guard);
        self.shell.send_all(outbox);
        going
    }

    /// Handles one event under the lock: whether the server goes on, and what to send.
    fn handle(&self, core: &mut Core, ev: Event) -> (bool, Vec<Datagram>) {
        if core.stopped {
            return (false, Vec::new());
        }
        // Read under the lock, so the node never sees time go backwards.
        let now = self.now_ms();
        match ev {
            Event::Node(input) => {
                let outs = core.node.step(now, input);
                self.shell.apply(core, now, outs);
            }
            Event::Xfer(from, msg) => core.services.on_transfer(now, from, msg),
            Event::Attached { from, msg, payload } => {
                // Kept aside first, so that if this server wins the request it has the payload.
                if let Msg::Request { rid, .. } = &msg {
                    core.services.stash(now, *rid, from, payload);
                }
                let outs = core.node.step(now, Input::Message { from: Peer::Client(from), msg });
                self.shell.apply(core, now, outs);
            }
            Event::PeerAck(from, id) => core.services.on_peer_ack(from, id),
            Event::Worked { rid, client, result } => core.services.on_worked(now, rid, client, result),
            Event::Shutdown => {
                self.shell.log("Ctrl-C: announcing 999 and stopping");
                let outs = core.node.step(now, Input::Shutdown);
                self.shell.apply(core, now, outs);
                core.stopped = true;
                let _ = self.done.try_send(());
                return (false, core.services.take_outbox());
            }
        }
        self.shell.feed_back(core, now);
        self.workers.run(core.services.take_jobs());
        (true, core.services.take_outbox())
    }

    /// Does an operator command: whether the server goes on, and what to tell the operator.
    pub fn operate(&self, cmd: OperatorCmd) -> (bool, Result<String, String>) {
        let mut guard = self.core.lock();
        let (going, outbox, result) = self.operate_locked(&mut guard, cmd);
        drop(guard);
        self.shell.send_all(outbox);
        (going, result)
    }

    /// An operator command that came over the network: done once per nonce, answered to `from`.
    fn operate_for(&self, from: SocketAddr, nonce: u64, cmd: OperatorCmd) -> bool {
        let mut guard = self.core.lock();
        let (going, outbox, result) = match guard.answered.get(nonce) {
            Some(result) => (!guard.stopped, Vec::new(), result),
            None => {
                self.shell.log(&format!("operator at {from}: {cmd}"));
                let (going, outbox, result) = self.operate_locked(&mut guard, cmd);
                guard.answered.keep(nonce, result.clone());
                (going, outbox, result)
            }
        };
        drop(guard);
        self.shell.send_all(outbox);
        self.shell.send_operator_reply(from, Msg::OperatorReply { nonce, server: self.shell.id, result });
        going
    }

    fn operate_locked(&self, core: &mut Core, cmd: OperatorCmd) -> (bool, Vec<Datagram>, Result<String, String>) {
        if core.stopped {
            return (false, Vec::new(), Err("the server is stopping".into()));
        }
        let who = &self.shell.who;
        let was_down = core.node.is_down();
        let (input, text) = match cmd {
            OperatorCmd::Status => return (true, Vec::new(), Ok(status_table(&core.node, self.now_ms()))),
            OperatorCmd::Down { secs } => {
                let ms = secs.map_or(self.shell.down_ms, |s| s.saturating_mul(1000));
                let again = if was_down { " (it was down already: the time starts again)" } else { "" };
                let text = format!(
                    "{who} is DOWN for {:.1} s: it announces 999 and ignores all traffic{again}",
                    ms as f64 / 1000.0
                );
                (Input::Down { ms }, text)
            }
            OperatorCmd::Up if was_down => (Input::Up, format!("{who} is back UP: it announces its load")),
            OperatorCmd::Up => (Input::Up, format!("{who} was not down: nothing to do")),
            OperatorCmd::Simulate { on } => {
                (Input::Simulate { on }, format!("{who}: failure simulation {}", if on { "on" } else { "off" }))
            }
        };
        let (going, outbox) = self.handle(core, Event::Node(input));
        (going, outbox, Ok(text))
    }

    /// Runs the timers. False once the server has shut down.
    fn tick(&self) -> bool {
        let mut guard = self.core.lock();
        let core = &mut *guard;
        if core.stopped {
            return false;
        }
        let now = self.now_ms();
        let outs = core.node.tick(now);
        self.shell.apply(core, now, outs);
        core.services.tick(now);
        self.shell.feed_back(core, now);
        self.workers.run(core.services.take_jobs());
        let outbox = core.services.take_outbox();
        drop(guard);
        self.shell.send_all(outbox);
        true
    }
}

impl Shell {
    fn log(&self, line: &str) {
        common::log::log(&self.who, line);
    }

    /// Results of heavy work go back into the node (which commits them).
    fn feed_back(&self, core: &mut Core, now: u64) {
        loop {
            let inputs = core.services.take_inputs();
            if inputs.is_empty() {
                return;
            }
            for input in inputs {
                let outs = core.node.step(now, input);
                self.apply(core, now, outs);
            }
        }
    }

    fn apply(&self, core: &mut Core, now: u64, outs: Vec<Output>) {
        // Persist first: nothing that depends on a change leaves before the change is on disk.
        if core.node.take_dirty() {
            let (dir, votes) = core.node.durable_mut();
            if let Err(e) = core.store.save(dir, votes) {
                self.log(&format!("cannot save the directory: {e}"));
            }
        }
        for o in outs {
            match o {
                Output::Send { to: Peer::Server(id), msg } => core.services.post(Datagram::Server(id, msg)),
                Output::Send { to: Peer::Client(addr), msg } => core.services.post(Datagram::Client(addr, msg)),
                Output::Execute { rid, op, reply_to, key } => core.services.execute(now, rid, op, reply_to, key),
                Output::Log(line) => self.log(&line),
            }
        }
    }

    /// Answers the operator at `to`, in a frame under the cluster key (so `ctl` knows it is
    /// the server's); a text too long for one datagram is cut.
    fn send_operator_reply(&self, to: SocketAddr, mut msg: Msg) {
        if let Msg::OperatorReply { result: Ok(text) | Err(text), .. } = &mut msg {
            if text.len() > MAX_REPLY {
                let mut cut = MAX_REPLY - 3;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text.truncate(cut);
                text.push_str("...");
            }
        }
        let bytes = encode_server(&self.key, auth::wall_ms(), &msg);
        if let Err(e) = self.peer_sock.send_to(&bytes, to) {
            self.log(&format!("cannot answer the operator at {to}: {e}"));
        }
    }

    /// Sends what a step produced, in order (outside the lock).
    fn send_all(&self, outbox: Vec<Datagram>) {
        for d in outbox {
            self.send(d);
        }
    }

    fn send(&self, d: Datagram) {
        let (bytes, sock, to) = match d {
            Datagram::Server(id, msg) => {
                let Some(addr) = self.peer_addrs.get(&id) else { return };
                let bytes = encode_server(&self.key, auth::wall_ms(), &msg);
                if let (true, Msg::Batch { msgs, .. }) = (bytes.len() > MAX_DATAGRAM, msg) {
                    // Messages that rode along made it too large: each goes on its own.
                    for m in msgs {
                        self.send(Datagram::Server(id, m));
                    }
                    return;
                }
                (bytes, &self.peer_sock, *addr)
            }
            Datagram::Client(addr, msg) => (encode_msg(&msg), &self.client_sock, addr),
            Datagram::Attached(addr, msg, bytes) => match encode_attached(&msg, &bytes) {
                Some(b) => (b, &self.client_sock, addr),
                None => {
                    self.log(&format!("not sending a {}-byte result to {addr}: it may not go attached", bytes.len()));
                    return;
                }
            },
            Datagram::Xfer(addr, x) => (encode_xfer(&x), &self.client_sock, addr),
        };
        if bytes.len() > MAX_DATAGRAM {
            self.log(&format!("not sending a {}-byte message to {to}: too large for a datagram", bytes.len()));
            return;
        }
        if let Err(e) = sock.send_to(&bytes, to) {
            if e.kind() != std::io::ErrorKind::ConnectionRefused {
                self.log(&format!("send to {to} failed: {e}"));
            }
        }
    }
}

/// The operator's `status` table.
pub fn status_table(node: &Node, now: u64) -> String {
    let st = node.status(now);
    let mut out = format!(
        "server {} — {} — handled {} — {} users, online: {}\n",
        st.id,
        if st.down { "DOWN" } else { "up" },
        st.handled,
        st.users,
        if st.online.is_empty() { "-".to_string() } else { st.online.join(", ") }
    );
    for p in st.peers {
        let state = if p.live { "live" } else { "failed" };
        out.push_str(&format!("  server {}: load {:>3}  {state}\n", p.id, p.load));
    }
    if !st.key_mismatch.is_empty() {
        out.push_str(&format!(
            "  frames with a bad tag (a different cluster key) from: {}\n",
            st.key_mismatch.join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::protocol::{Reply, RequestId};

    #[test]
    fn operator_answers_are_kept_for_copies_and_bounded() {
        let mut a = Answered::default();
        for nonce in 0..(ANSWERS_KEPT as u64 + 10) {
            a.keep(nonce, Ok(format!("did {nonce}")));
        }
        a.keep(300, Err("again".into()));
        assert_eq!(a.get(0), None, "the oldest are forgotten");
        assert_eq!(a.get(20), Some(Ok("did 20".into())));
        assert_eq!(a.get(300), Some(Err("again".into())));
        assert!(a.by_nonce.len() <= ANSWERS_KEPT && a.order.len() <= ANSWERS_KEPT);
    }

    #[test]
    fn a_batch_too_large_for_a_datagram_goes_message_by_message() {
        let to = UdpSocket::bind("127.0.0.1:0").unwrap();
        to.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let from = UdpSocket::bind("127.0.0.1:0").unwrap();
        let key = common::crypto::random_key();
        let shell = Shell {
            id: 1,
            who: "test".into(),
            client_sock: from.try_clone().unwrap(),
            peer_sock: from,
            peer_addrs: HashMap::from([(2, to.local_addr().unwrap())]),
            key,
            down_ms: 1000,
        };
        // Three decided replies of 30 KB of error text each: together over one datagram.
        let msgs: Vec<Msg> = (0..3)
            .map(|seq| {
                let rid = RequestId { client: 1, seq };
                let reply = Reply { rid, server: 1, result: Err("x".repeat(30_000)) };
                Msg::Accept { rid, by: 1, round: 7, reply, records: vec![] }
            })
            .collect();
        shell.send(Datagram::Server(2, Msg::Batch { from: 1, msgs }));
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        for seq in 0..3 {
            let (n, _) = to.recv_from(&mut buf).unwrap();
            let (frame, authenticated) = decode_at_server(&buf[..n], &key, auth::wall_ms(), 60_000).unwrap();
            assert!(authenticated);
            assert!(matches!(frame, Frame::Ctl(Msg::Accept { rid, .. }) if rid.seq == seq), "{frame:?}");
        }
    }
}
