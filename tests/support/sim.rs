//! The simulated world the seeded simulations share (`tests/sim_cluster.rs`,
//! `tests/sim_sharing.rs`): three real `server::node::Node`s with their `Services` and their
//! disk, client-side actors that each simulation brings, one `common::simnet::SimNet` between
//! them, and a millisecond clock. One seed drives everything, so a failing seed replays exactly
//! (`SIM_SEED=n SIM_TRACE=1 cargo test --release --test NAME`; `SIM_SEEDS=n` runs seeds 1 to n).
//!
//! What the world owns and does, following the code it stands for:
//! - the nodes ([`SERVERS`], each a [`Server`]): every datagram for a server is stepped through
//!   its node (a `PeerAck` from a client goes to its services, as the shell routes it), every
//!   [`TICK`] ms its node's and services' timers run, every [`LOAD_INTERVAL`] ms (at a phase of
//!   its own) it samples its load (0 % CPU, or random shares from [`World::cpu`]); an
//!   `Output::Execute` goes to the services (recorded in [`World::worker_ops`]);
//! - the disk: after every step a dirty node's `Saved` (directory and votes) is copied, before
//!   anything the step produced is sent (the shell saves first); [`World::crash`] drops the node,
//!   its services and the datagrams queued for it (its executions are counted first);
//!   [`World::restart`] starts a node from the copy;
//! - the network ([`Net`]): every node is a number (servers below [`CLIENT_BASE`], clients from
//!   it) with an address ([`addr_of`], [`node_of`]); a datagram the real socket or the
//!   receiver's `decode` would refuse (larger than a datagram, failing `validate`) is dropped
//!   and recorded in [`Net::invalid`]; [`World::isolate`] cuts a server from every other node,
//!   [`World::heal`] and [`World::calm`] undo the faults;
//! - time: [`World::step_ms`] runs one millisecond — the due [`Schedule`] events, the due
//!   datagrams (in the network's order), the servers' samples and timers, then every [`TICK`]
//!   the actors' [`Actors::tick`]; [`World::run_while`] steps until a limit or a condition;
//! - the trace: [`World::note`] keeps a line (printed at once with `SIM_TRACE`, where every
//!   datagram but load announcements and every server log line are printed too); a failing run
//!   returns a [`Failure`] and [`run_seeds`] prints its last lines;
//! - the common invariants: [`World::check_requests`] (no cloud request timed out, none answered
//!   by two servers, no datagram refused) and [`World::check_replicas`] (every server up, every
//!   replica's directory equal, what each saved equal to what it holds).
//!
//! A simulation puts its client-side actors in one type implementing [`Actors`] and runs a
//! `World<ItsActors>`; its scenario methods are an `impl World<ItsActors>` of its own (the world
//! is a type of the test crate). To add an actor (a client process):
//! 1. give it a [`CloudClient`] (its node, `Requester`, signing secret, current request and
//!    timeouts) and, if it talks to peers, a `client::peer::PeerLink` (flushed with
//!    [`Net::flush_link`]);
//! 2. route its datagrams in [`Actors::deliver`] (by the node it is at), list its node in
//!    [`Actors::nodes`], run its timers in [`Actors::tick`] ([`CloudClient::tick`] resends and
//!    returns timeouts), settle its replies with [`CloudClient::settle`];
//! 3. add it to the [`World::check_requests`] call, and its own invariants to the simulation's
//!    check; scenario events of its own (leaving, coming back) are an [`Event::Actor`].
//!
//! In outline (see `tests/sim_cluster.rs` for the smallest whole one):
//! ```text
//! struct Viewer { cloud: CloudClient, /* its state machine */ }
//! struct Mine { viewer: Viewer }
//! impl Actors for Mine {
//!     type Event = std::convert::Infallible;            // or an enum of its own events
//!     fn nodes(&self) -> Vec<NodeId> { vec![self.viewer.cloud.node] }
//!     fn deliver(w: &mut World<Self>, to: NodeId, from: NodeId, msg: Msg) {
//!         if let Msg::Reply(r) = msg {
//!             if let Some(done) = w.actors.viewer.cloud.req.on_reply(r) { w.viewer_done(done) }
//!         }
//!     }
//!     fn tick(w: &mut World<Self>) {
//!         for t in w.actors.viewer.cloud.tick(&mut w.net) { w.viewer_done(t) }
//!         // maybe start its next request: w.actors.viewer.cloud.request(&mut w.net, op)
//!     }
//!     fn on_event(_: &mut World<Self>, ev: Self::Event) { match ev {} }
//! }
//! impl World<Mine> {
//!     fn viewer_done(&mut self, done: Completion) {
//!         let Some(out) = self.actors.viewer.cloud.settle(&mut self.net, done) else { return };
//!         // advance the state machine on out.result
//!     }
//! }
//! // a run: let mut w = World::new(seed, Mine { .. }); let mut ev = Schedule::default();
//! // ev.push(3000, Event::Crash(2)); w.run_until(&mut ev, 20_000); w.calm(); ...;
//! // w.check_requests(&[&w.actors.viewer.cloud])?; w.check_replicas()?; then its own checks,
//! // all inside run_seeds(name, &seeds(), |seed| ...) with errors through w.fail(e).
//! ```

#![allow(dead_code)]

use client::peer::PeerLink;
use common::config::{ClusterConfig, ServerId, MAX_DATAGRAM};
use common::protocol::{encode_msg, validate, Answer, Auth, Msg, Op, RequestId};
use common::requester::{Completion, Requester};
use common::rng::Rng;
use common::simnet::{Faults, NodeId, SimNet};
use server::directory::Directory;
use server::node::{Input, Node, NodeConfig, Output, Peer};
use server::services::{Datagram, Services};
use server::store::Saved;
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// The simulated cluster.
pub const SERVERS: [ServerId; 3] = [1, 2, 3];
/// Client nodes are numbered from here (servers below).
pub const CLIENT_BASE: NodeId = 100;
/// How often timers run, in ms.
pub const TICK: u64 = 5;
/// How often a server samples its load, in ms.
pub const LOAD_INTERVAL: u64 = 1000;
/// Trace lines printed with a failing seed.
const TRACE_TAIL: usize = 40;

/// The settings of server `id` in the simulations.
pub fn node_cfg(id: ServerId) -> NodeConfig {
    NodeConfig::simulated(id, &SERVERS)
}

/// Every simulation node (server or client process) has one UDP address.
pub fn addr_of(node: NodeId) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 10_000 + node as u16))
}

/// The node at `addr`.
pub fn node_of(addr: SocketAddr) -> NodeId {
    (addr.port() as NodeId).saturating_sub(10_000)
}

/// The seeds to run: `SIM_SEED=n` alone, else 1 to `SIM_SEEDS` (default 200).
pub fn seeds() -> Vec<u64> {
    match std::env::var("SIM_SEED") {
        Ok(s) => vec![s.parse().expect("SIM_SEED is a number")],
        Err(_) => (1..=std::env::var("SIM_SEEDS").ok().and_then(|n| n.parse().ok()).unwrap_or(200)).collect(),
    }
}

/// A failed run: what went wrong and the run's trace.
#[derive(Debug)]
pub struct Failure {
    pub error: String,
    pub trace: Vec<String>,
}

/// Runs `run` for every seed; prints each failure with the end of its trace, then fails the
/// test naming the failing seeds. Returns what the passing runs returned.
pub fn run_seeds<T>(name: &str, seeds: &[u64], mut run: impl FnMut(u64) -> Result<T, Failure>) -> Vec<T> {
    let mut failed = vec![];
    let mut passed = vec![];
    for &seed in seeds {
        match run(seed) {
            Ok(t) => passed.push(t),
            Err(f) => {
                println!("{name} seed {seed} FAILED: {}", f.error);
                for line in &f.trace[f.trace.len().saturating_sub(TRACE_TAIL)..] {
                    println!("    {line}");
                }
                failed.push(seed);
            }
        }
    }
    assert!(failed.is_empty(), "{name}: failing seeds (replay with SIM_SEED=n SIM_TRACE=1): {failed:?}");
    passed
}

/// The network, the clock and the trace: what anything that sends needs.
pub struct Net {
    /// Milliseconds since the start.
    pub now: u64,
    pub sim: SimNet<Msg>,
    /// `SIM_TRACE` is set: print as it happens.
    pub live: bool,
    pub trace: Vec<String>,
    /// Datagrams a receiver would have refused (dropped).
    pub invalid: Vec<String>,
}

impl Net {
    /// Keeps a line of the trace (stamped with the time).
    pub fn note(&mut self, line: String) {
        let line = format!("{:>7} {line}", self.now);
        if self.live {
            println!("{line}");
        }
        self.trace.push(line);
    }

    /// Sends a datagram. What the real socket or the receiver's `decode` would refuse (larger
    /// than a datagram, failing validation) is recorded and dropped. Only messages carrying
    /// records can grow, so only those are encoded to measure them.
    pub fn send(&mut self, from: NodeId, to: NodeId, msg: Msg) {
        if let Err(e) = validate(&msg) {
            self.invalid.push(format!("{from} -> {to}: {} refused: {e}", msg.kind()));
            return;
        }
        let carries_record = match &msg {
            Msg::Accept { records, .. } => !records.is_empty(),
            Msg::Record { .. } | Msg::Promise { record: Some(_), .. } => true,
            _ => false,
        };
        if carries_record {
            let len = encode_msg(&msg).len();
            if len > MAX_DATAGRAM {
                self.invalid.push(format!("{from} -> {to}: {} of {len} bytes does not fit a datagram", msg.kind()));
                return;
            }
        }
        if self.live && !matches!(msg, Msg::Load { .. }) {
            println!("{:>7}   {from} -> {to}: {msg:?}", self.now);
        }
        self.sim.send(self.now, from, to, msg);
    }

    /// Sends `msg` to every server, as a client sends its requests.
    pub fn send_to_servers(&mut self, from: NodeId, msg: &Msg) {
        for s in SERVERS {
            self.send(from, s, msg.clone());
        }
    }

    /// Sends what `link` (at node `from`) has queued.
    pub fn flush_link(&mut self, from: NodeId, link: &mut PeerLink) {
        for (to, msg) in link.drain_out() {
            self.send(from, node_of(to), msg);
        }
    }
}

/// How a cloud request ended, for the actor that waited on it.
#[derive(Debug)]
pub struct Outcome {
    pub rid: RequestId,
    /// The server that executed it; `None`: timed out.
    pub server: Option<ServerId>,
    pub result: Result<Answer, String>,
}

/// A client process's side of the cloud: its node, its `Requester` (retries, one answer per
/// request), the secret it signs with, the request it waits on and the requests that timed out.
pub struct CloudClient {
    /// Who it is, in messages.
    pub name: String,
    pub node: NodeId,
    pub req: Requester,
    /// The secret from registration ("" before).
    pub token: String,
    pub current: Option<RequestId>,
    /// The kind of the current request's operation.
    doing: &'static str,
    pub timeouts: Vec<String>,
    /// Answers from a second server seen by the earlier processes' requesters.
    twice_before: u64,
}

impl CloudClient {
    pub fn new(name: &str, node: NodeId, req: Requester) -> Self {
        CloudClient {
            name: name.into(),
            node,
            req,
            token: String::new(),
            current: None,
            doing: "",
            timeouts: vec![],
            twice_before: 0,
        }
    }

    /// Starts `op`, signed as `Cloud::call` does with the simulated wall clock the nodes use,
    /// sends it to every server and waits on it.
    pub fn request(&mut self, net: &mut Net, op: Op) -> RequestId {
        self.request_as(net, None, op)
    }

    /// [`CloudClient::request`] under `rid` if given (a request whose id is its meaning: a
    /// view's slot).
    pub fn request_as(&mut self, net: &mut Net, rid: Option<RequestId>, op: Op) -> RequestId {
        let now = net.now;
        let secret = common::auth::secret_bytes(&self.token);
        self.doing = op.kind();
        let (rid, msg) = self.req.start_as(now, rid, op, |op, rid| {
            common::auth::sign_request(op, rid, &secret, server::node::SIM_WALL_BASE + now)
        });
        net.send_to_servers(self.node, &msg);
        self.current = Some(rid);
        rid
    }

    /// Registered: keeps the secret and signs in with it, as a new user's client does.
    pub fn sign_in_with(&mut self, net: &mut Net, secret: String) -> RequestId {
        self.token = secret;
        let op = Op::SignIn { name: self.name.clone(), auth: Auth::default() };
        self.request(net, op)
    }

    /// The requester's timers: resends go out; the requests that timed out are returned.
    pub fn tick(&mut self, net: &mut Net) -> Vec<Completion> {
        let (resend, timeouts) = self.req.tick(net.now);
        for msg in resend {
            net.send_to_servers(self.node, &msg);
        }
        timeouts
    }

    /// The outcome of the request waited on, if `done` ends it (`None` for any other); a
    /// timeout is recorded and is an error "no server answered".
    pub fn settle(&mut self, net: &mut Net, done: Completion) -> Option<Outcome> {
        let (rid, server, result) = match done {
            Completion::Answered(r) => (r.rid, Some(r.server), r.result),
            Completion::TimedOut(rid) => (rid, None, Err("no server answered".to_string())),
        };
        if Some(rid) != self.current {
            return None;
        }
        self.current = None;
        if server.is_none() {
            let (name, what) = (&self.name, self.doing);
            self.timeouts.push(format!("{name} {what} {rid}"));
            net.note(format!("{name}'s request {rid} ({what}) timed out"));
        }
        Some(Outcome { rid, server, result })
    }

    /// A new process of the same client: a fresh requester, nothing waited on.
    pub fn new_process(&mut self, req: Requester) {
        self.twice_before += self.req.stats.handled_twice;
        self.req = req;
        self.current = None;
    }

    /// Answers from a second server, over every process.
    pub fn handled_twice(&self) -> u64 {
        self.twice_before + self.req.stats.handled_twice
    }
}

/// One server: its node (`None` while crashed), what it saved, its services.
pub struct Server {
    pub node: Option<Node>,
    pub disk: Saved,
    pub services: Services,
    load_phase: u64,
}

/// A server's services as a freshly started process has them.
fn services(id: ServerId) -> Services {
    Services::new(id, &ClusterConfig::with_servers(Vec::new()))
}

/// Something that happens at a scheduled time.
#[derive(Debug, Clone)]
pub enum Event<E> {
    Crash(ServerId),
    Restart(ServerId),
    /// Cuts the server from every other node until `Heal`.
    Isolate(ServerId),
    Heal,
    /// An event of the simulation's actors.
    Actor(E),
}

/// Events by time (those at the same time in the order they were pushed).
pub struct Schedule<E> {
    queue: BTreeMap<(u64, u64), Event<E>>,
    seq: u64,
}

impl<E> Default for Schedule<E> {
    fn default() -> Self {
        Schedule { queue: BTreeMap::new(), seq: 0 }
    }
}

impl<E> Schedule<E> {
    pub fn push(&mut self, at: u64, ev: Event<E>) {
        self.seq += 1;
        self.queue.insert((at, self.seq), ev);
    }

    pub fn clear(&mut self) {
        self.queue.clear();
    }

    /// The next event due at or before `now`.
    pub fn pop_due(&mut self, now: u64) -> Option<Event<E>> {
        let key = *self.queue.keys().next()?;
        if key.0 > now {
            return None;
        }
        self.queue.remove(&key)
    }
}

/// A simulation's client-side actors (see the module's doc for adding one).
pub trait Actors: Sized {
    /// The actors' own scheduled events.
    type Event;
    /// The client nodes the actors are at now (what `Isolate` cuts a server from).
    fn nodes(&self) -> Vec<NodeId>;
    /// A datagram for client node `to` (one no actor is at is dropped).
    fn deliver(w: &mut World<Self>, to: NodeId, from: NodeId, msg: Msg);
    /// Every `TICK` ms, after the servers' timers.
    fn tick(w: &mut World<Self>);
    /// One of the actors' events is due.
    fn on_event(w: &mut World<Self>, ev: Self::Event);
    /// A datagram reaches server `to` (up or not), for simulations that measure traffic.
    fn observe(_w: &mut World<Self>, _to: ServerId, _msg: &Msg) {}
}

/// The servers, the network and the actors `A`.
pub struct World<A> {
    pub seed: u64,
    pub net: Net,
    pub servers: BTreeMap<ServerId, Server>,
    pub actors: A,
    /// Load samples with a random CPU share (0–100 % of a core), from their own RNG; `None`: 0 %.
    pub cpu: Option<Rng>,
    /// Executions per request, counted from the nodes' records by `collect_executions` and at
    /// each crash.
    pub executions: BTreeMap<RequestId, u32>,
    /// Each restart, in order.
    pub restarted: Vec<ServerId>,
    /// Every operation handed to a server's services (`Output::Execute`).
    pub worker_ops: Vec<(ServerId, RequestId)>,
}

impl<A: Actors> World<A> {
    /// Three fresh servers on a lossy network (`Faults::lossy`), all from `seed`.
    pub fn new(seed: u64, actors: A) -> Self {
        let mut sim = SimNet::new(seed, Faults::lossy());
        let mut servers = BTreeMap::new();
        for id in SERVERS {
            let rng = Rng::new(seed.wrapping_mul(31).wrapping_add(id as u64));
            let node = Node::new(node_cfg(id), 0, Saved::default(), rng);
            let load_phase = sim.rng().below(LOAD_INTERVAL);
            servers.insert(id, Server { node: Some(node), disk: Saved::default(), services: services(id), load_phase });
        }
        let live = std::env::var("SIM_TRACE").is_ok();
        World {
            seed,
            net: Net { now: 0, sim, live, trace: vec![], invalid: vec![] },
            servers,
            actors,
            cpu: None,
            executions: BTreeMap::new(),
            restarted: vec![],
            worker_ops: vec![],
        }
    }

    pub fn now(&self) -> u64 {
        self.net.now
    }

    pub fn note(&mut self, line: String) {
        self.net.note(line);
    }

    /// `error` with this run's trace.
    pub fn fail(&self, error: String) -> Failure {
        Failure { error, trace: self.net.trace.clone() }
    }

    // ---------------------------------------------------------------- servers

    /// Steps server `id`'s node with `input` (`None`: its timers), if it is up.
    pub fn step_node(&mut self, id: ServerId, input: Option<Input>) {
        let now = self.net.now;
        let Some(Server { node: Some(node), disk, .. }) = self.servers.get_mut(&id) else { return };
        let outs = match input {
            Some(i) => node.step(now, i),
            None => node.tick(now),
        };
        // The shell saves before it sends what the step produced.
        if node.take_dirty() {
            *disk = node.saved();
        }
        for o in outs {
            match o {
                Output::Send { to: Peer::Server(s), msg } => self.net.send(id, s, msg),
                Output::Send { to: Peer::Client(a), msg } => self.net.send(id, node_of(a), msg),
                Output::Execute { rid, op, reply_to, key } => {
                    self.worker_ops.push((id, rid));
                    if let Some(s) = self.servers.get_mut(&id) {
                        s.services.execute(now, rid, op, reply_to, key);
                    }
                    self.drain_services(id);
                }
                Output::Log(line) => {
                    if self.net.live {
                        println!("{now:>7}   [server {id}] {line}");
                    }
                }
            }
        }
    }

    fn on_server_msg(&mut self, id: ServerId, from: NodeId, msg: Msg) {
        A::observe(self, id, &msg);
        if self.servers.get(&id).is_none_or(|s| s.node.is_none()) {
            return;
        }
        if from < CLIENT_BASE {
            self.step_node(id, Some(Input::Message { from: Peer::Server(from), msg }));
            return;
        }
        if let Msg::PeerAck { id: env_id, .. } = msg {
            if let Some(srv) = self.servers.get_mut(&id) {
                srv.services.on_peer_ack(addr_of(from), env_id);
            }
            self.drain_services(id);
            return;
        }
        self.step_node(id, Some(Input::Message { from: Peer::Client(addr_of(from)), msg }));
    }

    /// Runs server `id`'s services' timers.
    fn tick_services(&mut self, id: ServerId) {
        let now = self.net.now;
        if let Some(Server { node: Some(_), services, .. }) = self.servers.get_mut(&id) {
            services.tick(now);
        }
        self.drain_services(id);
    }

    /// What server `id`'s services produced: datagrams onto the network (as the shell sends
    /// them), inputs into the node. Nothing here hides images.
    fn drain_services(&mut self, id: ServerId) {
        loop {
            let Some(srv) = self.servers.get_mut(&id) else { return };
            let (outbox, inputs, jobs) =
                (srv.services.take_outbox(), srv.services.take_inputs(), srv.services.take_jobs());
            if outbox.is_empty() && inputs.is_empty() {
                assert!(jobs.is_empty(), "hide jobs in a simulation without encryption");
                return;
            }
            for d in outbox {
                match d {
                    Datagram::Client(to, msg) => self.net.send(id, node_of(to), msg),
                    Datagram::Server(to, msg) => self.net.send(id, to, msg),
                    Datagram::Attached(..) | Datagram::Xfer(..) => self
                        .net
                        .invalid
                        .push(format!("server {id}: a result transfer in a simulation without encryption")),
                }
            }
            for input in inputs {
                self.step_node(id, Some(input));
            }
        }
    }

    /// Counts the executions the up nodes recorded since the last call.
    pub fn collect_executions(&mut self) {
        for srv in self.servers.values_mut() {
            if let Some(n) = &mut srv.node {
                for rid in n.executions.drain(..) {
                    *self.executions.entry(rid).or_insert(0) += 1;
                }
            }
        }
    }

    /// Server `id` dies (if up): its node, services and queued datagrams are gone; its disk stays.
    pub fn crash(&mut self, id: ServerId) {
        let Some(srv) = self.servers.get_mut(&id) else { return };
        let Some(mut node) = srv.node.take() else { return };
        for rid in node.executions.drain(..) {
            *self.executions.entry(rid).or_insert(0) += 1;
        }
        srv.services = services(id);
        self.net.sim.drop_to(id);
        self.note(format!("CRASH server {id}"));
    }

    /// Server `id` starts again (if down) from what it saved.
    pub fn restart(&mut self, id: ServerId) {
        let now = self.net.now;
        let rng = Rng::new(self.seed ^ ((id as u64) << 32) ^ now);
        let Some(srv) = self.servers.get_mut(&id) else { return };
        if srv.node.is_some() {
            return;
        }
        srv.node = Some(Node::new(node_cfg(id), now, srv.disk.clone(), rng));
        self.restarted.push(id);
        self.note(format!("RESTART server {id} from its saved directory"));
    }

    /// Cuts server `id` from the other servers and every actor's node.
    pub fn isolate(&mut self, id: ServerId) {
        self.note(format!("ISOLATE server {id}"));
        for other in SERVERS.into_iter().chain(self.actors.nodes()) {
            if other != id {
                self.net.sim.partition(id, other);
            }
        }
    }

    pub fn heal(&mut self) {
        self.note("HEAL".into());
        self.net.sim.heal();
    }

    /// No more faults: every cut healed, a perfect network from now on.
    pub fn calm(&mut self) {
        self.heal();
        self.net.sim.set_faults(Faults::none());
    }

    pub fn apply(&mut self, ev: Event<A::Event>) {
        match ev {
            Event::Crash(id) => self.crash(id),
            Event::Restart(id) => self.restart(id),
            Event::Isolate(id) => self.isolate(id),
            Event::Heal => self.heal(),
            Event::Actor(e) => A::on_event(self, e),
        }
    }

    // ---------------------------------------------------------------- time

    /// One millisecond: due events, due datagrams, the servers' load samples and (every `TICK`)
    /// timers, then the actors' timers.
    pub fn step_ms(&mut self, events: &mut Schedule<A::Event>) {
        self.net.now += 1;
        let now = self.net.now;
        while let Some(ev) = events.pop_due(now) {
            self.apply(ev);
        }
        while let Some(m) = self.net.sim.pop_due(now) {
            if m.to < CLIENT_BASE {
                self.on_server_msg(m.to, m.from, m.msg);
            } else {
                A::deliver(self, m.to, m.from, m.msg);
            }
        }
        for id in SERVERS {
            if now % LOAD_INTERVAL == self.servers[&id].load_phase {
                let cpu_percent = self.cpu.as_mut().map_or(0.0, |r| r.below(101) as f32);
                self.step_node(id, Some(Input::LoadSample { cpu_percent, rss_kb: 0 }));
            }
            if now.is_multiple_of(TICK) {
                self.step_node(id, None);
                self.tick_services(id);
            }
        }
        if now.is_multiple_of(TICK) {
            A::tick(self);
        }
    }

    /// Steps while `cond` holds, up to `limit`.
    pub fn run_while(&mut self, events: &mut Schedule<A::Event>, limit: u64, mut cond: impl FnMut(&Self) -> bool) {
        while self.net.now < limit && cond(self) {
            self.step_ms(events);
        }
    }

    /// Steps up to `until`.
    pub fn run_until(&mut self, events: &mut Schedule<A::Event>, until: u64) {
        self.run_while(events, until, |_| true);
    }

    // ---------------------------------------------------------------- invariants

    /// Every cloud request of `clients` answered (none timed out), none answered by two
    /// servers, and no datagram a receiver would refuse.
    pub fn check_requests(&self, clients: &[&CloudClient]) -> Result<(), String> {
        let timeouts: Vec<&String> = clients.iter().flat_map(|c| &c.timeouts).collect();
        if !timeouts.is_empty() {
            return Err(format!("requests timed out: {timeouts:?}"));
        }
        for c in clients {
            if c.handled_twice() > 0 {
                return Err(format!("{}: {} answers from a second server", c.name, c.handled_twice()));
            }
        }
        if !self.net.invalid.is_empty() {
            return Err(format!("messages a receiver would reject: {:?}", self.net.invalid));
        }
        Ok(())
    }

    /// Every server up, every replica's directory equal, and what each server saved equal to
    /// what it holds. Returns the directory.
    pub fn check_replicas(&self) -> Result<&Directory, String> {
        let mut first: Option<(ServerId, &Directory)> = None;
        for (id, srv) in &self.servers {
            let Some(node) = &srv.node else { return Err(format!("server {id} is down at the end")) };
            if srv.disk != node.saved() {
                return Err(format!("server {id} saved a directory or votes other than those it holds"));
            }
            let dir = node.directory();
            match first {
                None => first = Some((*id, dir)),
                Some((f, d)) if d != dir => {
                    return Err(format!("directory of server {id} differs from server {f}:\n{dir:?}\n{d:?}"))
                }
                _ => {}
            }
        }
        first.map(|(_, d)| d).ok_or_else(|| "no servers".into())
    }
}
