//! Deterministic simulation of the peer and buffering protocol: an owner (alice) sets the views
//! of one image for a viewer (bob) again and again, while the network loses (10 %), duplicates
//! and reorders datagrams, bob goes offline and comes back (cleanly signed out or killed, on the
//! same or a new port), and servers crash and restart from what they saved — one of them, all
//! three in turn, or all three at once. One seed drives everything; a failing seed is printed
//! with a trace and replays exactly (`SIM_SEED=n SIM_TRACE=1 cargo test --release --test
//! sim_sharing`; `SIM_SEEDS=n` runs more seeds than the default 200).
//!
//! What runs for real: three `server::node::Node`s (election, Paxos, replicated directory with
//! the inbox, votes saved with the directory), both clients' `Requester`s (cloud requests) and
//! `PeerLink`s (direct messages: three tries, acks, deduplication), the owner's
//! `Sharing::grant` (versions), and each server's `server::services::Services` (the relay: up to
//! `RELAY_TRIES` tries from the server's client socket, `Relayed { delivered }` as the peer's
//! `PeerAck` says; a crash loses the relays in progress). The servers, their disk, crashes, the
//! sockets (a datagram the receiver would refuse is dropped and reported) and time are the
//! shared world (`tests/support/sim.rs`); alice and bob are this file's actors. What is
//! modelled here, following the code it stands for:
//! - the owner's sending (`client/src/engine.rs`, `commands.rs`): `Lookup` the viewer; online →
//!   direct through the link, else `Buffer`; on `LinkEvent::Failed` → `Lookup` again → online →
//!   `Relay`, and if not delivered (or offline) → `Buffer`. A grant is acknowledged by a
//!   `PeerAck` (direct), `Relayed { delivered: true }` or `Buffered`; an error or a timeout
//!   leaves it unacknowledged (the owner is told it failed). Grants go one at a time;
//! - the viewer (`client/src/sharing.rs::apply_rights`): its copy's (views, version) is durable;
//!   an update is applied only if its version is newer (views 0 deletes the copy; no copy: no
//!   update applies); coming online is a new process (new requester, new link): `SignIn`, then
//!   `InboxAck { ids applied }` until the inbox is empty (`Session::pull_inbox`). Quitting
//!   cleanly signs out first (the process still answers peers meanwhile); a kill does not.
//!
//! At the end everything heals, faults stop, every server is up and the viewer is brought
//! online and runs the inbox loop (again, if his process was running: a pull concurrent with
//! the last `Buffer` may have missed it), then the cluster settles. Invariants:
//! 1. the viewer's copy is the state the last acknowledged grant set (a later grant whose
//!    outcome the owner never learnt may have landed too: then one of those);
//! 2. the versions the viewer applied strictly increase (in order, none twice);
//! 3. no replica holds a pending inbox entry for the viewer (a delivered message is dropped
//!    from every server's buffer), every replica's directory is equal, and what each server
//!    saved equals what it holds;
//! 4. no buffered grant is lost: each was applied or superseded by a newer applied grant;
//! 5. every cloud request is answered (none times out), no request is answered by two
//!    servers (over every process bob ran), and no message is too large or refused.
//!
//! Tests: mixed runs (crash kind, viewer's comings and goings, 5 to 15 grants, maybe a final
//! revoke, all drawn from the seed); runs where the viewer is away for every grant while the
//! servers restart in turn (and maybe all at once), so each grant must come from the inbox and
//! none may be skipped; runs where an online viewer never signs in again (messages buffered
//! while he is online reach him through the periodic pull); and repeated rounds of 40 buffered
//! grants, after which the viewer's record must still hold at most `MAX_TOMBSTONES` tombstones
//! (these two found real bugs, now fixed: a buffered message stranded until the next sign-in,
//! and trimmed tombstones resurrected by the inbox merge until the record outgrew a datagram).

mod support {
    pub mod sim;
}

use client::peer::{LinkEvent, PeerLink};
use client::sharing::Sharing;
use common::protocol::{encode_msg, Answer, Auth, Envelope, Msg, Op, PeerBody};
use common::requester::{Completion, Requester};
use common::rng::Rng;
use common::simnet::NodeId;
use server::ops::MAX_TOMBSTONES;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use support::sim::{
    addr_of, node_of, run_seeds, seeds, Actors, CloudClient, Event, Failure, Schedule, World, CLIENT_BASE, SERVERS,
};

/// Simulation node of the owner's process.
const ALICE: NodeId = CLIENT_BASE;
/// Simulation node of the viewer's first process (a restart on a new port takes the next).
const BOB_FIRST: NodeId = 200;
const IMAGE: &str = "sunset.png";
/// The share key of alice's image for bob (as if the cloud issued it at delivery).
const SHARE_KEY: [u8; 32] = [7; 32];

/// What the tag of alice's grant of `views` (version `version`) to bob covers.
fn grant_fields(views: u32, version: u64) -> common::auth::RightsFields<'static> {
    common::auth::RightsFields { kind: "grant", owner: "alice", viewer: "bob", image_id: IMAGE, views, version }
}

/// Records alice's next grant to bob with the number the cloud would give it (this simulation
/// exercises the peer messages, not the cloud's count: see sim_views).
fn next_grant(sharing: &mut Sharing, views: u32) -> u64 {
    let v = sharing.shares.get(&format!("bob/{IMAGE}")).map_or(0, |s| s.version) + 1;
    sharing.record_grant("bob", IMAGE, views, v);
    v
}

/// The client defaults (`request_retry_ms`, `request_timeout_ms`).
const RETRY_MS: u64 = 250;
const TIMEOUT_MS: u64 = 15_000;
/// A run that has not finished its grants by then is stuck.
const GIVE_UP_MS: u64 = 400_000;
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ack {
    Direct,
    Relayed,
    Buffered,
}

#[derive(Debug, Clone)]
struct Grant {
    version: u64,
    views: u32,
    ack: Option<Ack>,
    failed: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AliceStep {
    Register,
    SignIn,
    /// Signed in, waiting for the grants to begin.
    Ready,
    /// Between grants.
    Idle {
        until: u64,
    },
    /// `online_addr` before sending.
    Lookup,
    /// Waiting for the link: delivered, or failed after every try.
    Direct,
    /// `failed_addr`: where does the directory say bob is now?
    FailedLookup,
    Relay,
    Buffer,
    Done,
}

struct Alice {
    cloud: CloudClient,
    link: PeerLink,
    step: AliceStep,
    sharing: Sharing,
    /// (views, pause before) of the grants still to make.
    plan: VecDeque<(u32, u64)>,
    grants: Vec<Grant>,
    env: Option<Envelope>,
    /// Where the cloud was asked to relay the current grant.
    relay_addr: Option<SocketAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BobStep {
    Register,
    SignIn,
    Inbox,
    Online,
    Quitting,
    Offline,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Held {
    views: u32,
    version: u64,
}

struct Bob {
    /// At `cloud.node`; a new process on a new port takes `next_node`.
    cloud: CloudClient,
    next_node: NodeId,
    link: PeerLink,
    step: BobStep,
    acked: Vec<u64>,
    /// When bob last started an inbox pull; a periodic pull failing leaves him online.
    last_pull: u64,
    periodic: bool,
    /// When to start again (and on a new port?), while offline.
    restart: Option<(u64, bool)>,
    /// The durable state: the received copy's rights.
    copy: Option<Held>,
    applied: Vec<(u64, u32, &'static str)>,
    ignored: u32,
    processes: u32,
    processes_at_end_start: u32,
}

impl Bob {
    fn running(&self) -> bool {
        self.step != BobStep::Offline
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CrashKind {
    None,
    One,
    AllInTurn,
    AllAtOnce,
}

/// Bob's comings and goings (`Event::Actor`).
#[derive(Debug, Clone)]
enum BobEvent {
    /// He quits (signing out first if `clean`) or his process is killed.
    Off { clean: bool },
    /// He starts the client again.
    On { new_port: bool },
}

/// The actors: alice's and bob's processes.
struct Parties {
    /// Draws the ids of bob's new processes.
    rng: Rng,
    alice: Alice,
    bob: Bob,
}

impl Parties {
    fn new(seed: u64) -> Self {
        let mut rng = Rng::new(seed ^ 0x5ea1_5ea1);
        let alice = Alice {
            cloud: CloudClient::new("alice", ALICE, Requester::new(rng.next_u64(), RETRY_MS, TIMEOUT_MS)),
            link: PeerLink::new("alice", rng.next_u64()),
            step: AliceStep::Register,
            sharing: Sharing::default(),
            plan: VecDeque::new(),
            grants: vec![],
            env: None,
            relay_addr: None,
        };
        let bob = Bob {
            cloud: CloudClient::new("bob", BOB_FIRST, Requester::new(rng.next_u64(), RETRY_MS, TIMEOUT_MS)),
            next_node: BOB_FIRST + 1,
            link: PeerLink::new("bob", rng.next_u64()),
            step: BobStep::Register,
            acked: vec![],
            last_pull: 0,
            periodic: false,
            restart: None,
            copy: None,
            applied: vec![],
            ignored: 0,
            processes: 1,
            processes_at_end_start: 0,
        };
        Parties { rng, alice, bob }
    }
}

impl Actors for Parties {
    type Event = BobEvent;

    fn nodes(&self) -> Vec<NodeId> {
        vec![ALICE, self.bob.cloud.node]
    }

    fn deliver(w: &mut World<Self>, to: NodeId, from: NodeId, msg: Msg) {
        w.on_client_msg(to, from, msg);
    }

    fn tick(w: &mut World<Self>) {
        w.alice_tick();
        w.bob_tick();
    }

    fn on_event(w: &mut World<Self>, ev: BobEvent) {
        w.on_bob_event(ev);
    }
}

impl World<Parties> {
    fn flush_links(&mut self) {
        self.net.flush_link(ALICE, &mut self.actors.alice.link);
        self.net.flush_link(self.actors.bob.cloud.node, &mut self.actors.bob.link);
    }

    fn alice_request(&mut self, step: AliceStep, op: Op) {
        self.actors.alice.step = step;
        self.actors.alice.cloud.request(&mut self.net, op);
    }

    fn lookup_bob() -> Op {
        Op::Lookup { name: "bob".into() }
    }

    fn buffer_op(&self, unreachable: Option<SocketAddr>) -> Op {
        let envelope = self.actors.alice.env.clone().expect("a grant in progress");
        Op::Buffer { name: "alice".into(), auth: Auth::default(), envelope, unreachable }
    }

    fn grant_done(&mut self, outcome: Result<Ack, String>) {
        let now = self.now();
        let g = self.actors.alice.grants.last_mut().expect("a grant in progress");
        let line = match outcome {
            Ok(ack) => {
                g.ack = Some(ack);
                format!("grant v{} ({} views) acknowledged: {ack:?}", g.version, g.views)
            }
            Err(e) => {
                g.failed = Some(e.clone());
                format!("grant v{} ({} views) FAILED: {e}", g.version, g.views)
            }
        };
        self.actors.alice.env = None;
        self.actors.alice.step = match self.actors.alice.plan.front() {
            Some(&(_, pause)) => AliceStep::Idle { until: now + pause },
            None => AliceStep::Done,
        };
        self.note(line);
    }

    fn alice_next_grant(&mut self) {
        let Some((views, _)) = self.actors.alice.plan.pop_front() else {
            self.actors.alice.step = AliceStep::Done;
            return;
        };
        let version = next_grant(&mut self.actors.alice.sharing, views);
        let id = self.actors.alice.link.next_id();
        // The tag under the share key the cloud issued when alice delivered the image.
        let mac = grant_fields(views, version).tag(&SHARE_KEY);
        let body = PeerBody::Rights { image_id: IMAGE.into(), views, version, mac };
        self.actors.alice.env = Some(Envelope { id, from: "alice".into(), to: "bob".into(), body });
        self.actors.alice.grants.push(Grant { version, views, ack: None, failed: None });
        self.note(format!("alice grants v{version}: {views} views (envelope {id:x})"));
        self.alice_request(AliceStep::Lookup, Self::lookup_bob());
    }

    fn alice_complete(&mut self, done: Completion) {
        let Some(out) = self.actors.alice.cloud.settle(&mut self.net, done) else { return };
        match (self.actors.alice.step, out.result) {
            (AliceStep::Register, Ok(Answer::Registered { secret, .. })) => {
                self.actors.alice.step = AliceStep::SignIn;
                self.actors.alice.cloud.sign_in_with(&mut self.net, secret);
            }
            (AliceStep::SignIn, Ok(Answer::SignedIn { .. })) => self.actors.alice.step = AliceStep::Ready,
            (AliceStep::Register | AliceStep::SignIn, r) => {
                self.note(format!("alice's setup failed: {r:?}; trying again"));
                self.actors.alice.step = AliceStep::Register;
                let op = Op::Register { name: "alice".into() };
                self.alice_request(AliceStep::Register, op);
            }
            // commands.rs `online_addr`: an error aborts the grant.
            (AliceStep::Lookup, Ok(Answer::User(u))) => match (u.online, u.addr) {
                (true, Some(addr)) => {
                    self.actors.alice.step = AliceStep::Direct;
                    let env = self.actors.alice.env.clone().expect("a grant in progress");
                    self.actors.alice.link.send(self.now(), addr, env);
                }
                _ => {
                    let op = self.buffer_op(None);
                    self.alice_request(AliceStep::Buffer, op);
                }
            },
            (AliceStep::Lookup, r) => self.grant_done(Err(format!("lookup: {r:?}"))),
            // engine.rs `failed_addr`: any error means "not online".
            (AliceStep::FailedLookup, Ok(Answer::User(u))) if u.online && u.addr.is_some() => {
                let envelope = self.actors.alice.env.clone().expect("a grant in progress");
                let addr = u.addr.expect("checked");
                self.actors.alice.relay_addr = Some(addr);
                self.alice_request(AliceStep::Relay, Op::Relay { auth: Auth::default(), envelope, addr });
            }
            (AliceStep::FailedLookup, _) => {
                let op = self.buffer_op(None);
                self.alice_request(AliceStep::Buffer, op);
            }
            // engine.rs `through_cloud`.
            (AliceStep::Relay, Ok(Answer::Relayed { delivered: true })) => self.grant_done(Ok(Ack::Relayed)),
            (AliceStep::Relay, Ok(_)) => {
                let op = self.buffer_op(self.actors.alice.relay_addr);
                self.alice_request(AliceStep::Buffer, op);
            }
            (AliceStep::Relay, Err(e)) => self.grant_done(Err(format!("relay: {e}"))),
            (AliceStep::Buffer, Ok(Answer::Buffered)) => self.grant_done(Ok(Ack::Buffered)),
            (AliceStep::Buffer, r) => self.grant_done(Err(format!("buffer: {r:?}"))),
            (step, r) => self.note(format!("alice: unexpected answer in {step:?}: {r:?}")),
        }
    }

    fn alice_link_events(&mut self) {
        while let Some(ev) = self.actors.alice.link.poll_event() {
            let mine = self.actors.alice.env.as_ref().map(|e| e.id);
            match ev {
                LinkEvent::Delivered { id } if Some(id) == mine && self.actors.alice.step == AliceStep::Direct => {
                    self.grant_done(Ok(Ack::Direct))
                }
                LinkEvent::Failed { envelope }
                    if Some(envelope.id) == mine && self.actors.alice.step == AliceStep::Direct =>
                {
                    self.note(format!("alice: no ack from bob after every try for {:x}", envelope.id));
                    self.alice_request(AliceStep::FailedLookup, Self::lookup_bob());
                }
                _ => {}
            }
        }
    }

    fn alice_tick(&mut self) {
        let now = self.now();
        for t in self.actors.alice.cloud.tick(&mut self.net) {
            self.alice_complete(t);
        }
        self.actors.alice.link.tick(now);
        self.alice_link_events();
        if let AliceStep::Idle { until } = self.actors.alice.step {
            if now >= until {
                self.alice_next_grant();
            }
        }
        self.flush_links();
    }

    /// `apply_rights`: only a newer version changes the copy; views 0 deletes it.
    fn bob_apply(&mut self, env: &Envelope, via: &'static str) {
        if env.to != "bob" || env.from != "alice" {
            return;
        }
        let PeerBody::Rights { image_id, views, version, mac } = &env.body else { return };
        if image_id != IMAGE {
            return;
        }
        if let Err(e) = grant_fields(*views, *version).check(&SHARE_KEY, mac) {
            self.net.invalid.push(format!("bob refused a grant: {e}"));
            return;
        }
        let (views, version) = (*views, *version);
        match self.actors.bob.copy {
            Some(c) if version > c.version => {
                self.actors.bob.copy = (views > 0).then_some(Held { views, version });
                self.actors.bob.applied.push((version, views, via));
                self.note(format!("bob APPLIES v{version} ({views} views) {via}"));
            }
            _ => {
                self.actors.bob.ignored += 1;
                self.note(format!("bob ignores v{version} {via}: copy is {:?}", self.actors.bob.copy));
            }
        }
    }

    fn bob_request(&mut self, step: BobStep, op: Op) {
        self.actors.bob.step = step;
        self.actors.bob.cloud.request(&mut self.net, op);
    }

    fn bob_inbox_ack(&mut self) {
        let op = Op::InboxAck { name: "bob".into(), auth: Auth::default(), ids: self.actors.bob.acked.clone() };
        self.bob_request(BobStep::Inbox, op);
    }

    /// The process dies (or exits after signing out): nothing reaches it any more.
    fn bob_gone(&mut self) {
        self.actors.bob.step = BobStep::Offline;
        self.actors.bob.cloud.current = None;
        self.net.sim.drop_to(self.actors.bob.cloud.node);
    }

    /// A new process: new requester, new link, maybe a new port; signs in and pulls the inbox.
    fn bob_start(&mut self, new_port: bool) {
        if new_port {
            self.actors.bob.cloud.node = self.actors.bob.next_node;
            self.actors.bob.next_node += 1;
        }
        let req = Requester::new(self.actors.rng.next_u64(), RETRY_MS, TIMEOUT_MS);
        self.actors.bob.cloud.new_process(req);
        self.actors.bob.link = PeerLink::new("bob", self.actors.rng.next_u64());
        self.actors.bob.acked.clear();
        self.actors.bob.restart = None;
        self.actors.bob.processes += 1;
        self.note(format!(
            "bob STARTS at {} (process {})",
            addr_of(self.actors.bob.cloud.node),
            self.actors.bob.processes
        ));
        let op = Op::SignIn { name: "bob".into(), auth: Auth::default() };
        self.bob_request(BobStep::SignIn, op);
    }

    fn bob_complete(&mut self, done: Completion) {
        let Some(out) = self.actors.bob.cloud.settle(&mut self.net, done) else { return };
        match (self.actors.bob.step, out.result) {
            (BobStep::Register, Ok(Answer::Registered { secret, .. })) => {
                self.actors.bob.step = BobStep::SignIn;
                self.actors.bob.cloud.sign_in_with(&mut self.net, secret);
            }
            (BobStep::Register, r) => {
                self.note(format!("bob's registration failed: {r:?}; trying again"));
                self.bob_request(BobStep::Register, Op::Register { name: "bob".into() });
            }
            (BobStep::SignIn, Ok(Answer::SignedIn { .. })) => {
                self.actors.bob.last_pull = self.now();
                self.actors.bob.periodic = false;
                self.actors.bob.acked.clear();
                self.bob_inbox_ack();
            }
            (BobStep::Inbox, Ok(Answer::Inbox(list))) => {
                if list.is_empty() {
                    self.actors.bob.step = BobStep::Online;
                    self.note("bob is online, inbox empty".into());
                    return;
                }
                self.note(format!("bob's inbox holds {} messages", list.len()));
                for env in &list {
                    self.bob_apply(env, "from the inbox");
                }
                self.actors.bob.acked = list.iter().map(|e| e.id).collect();
                self.bob_inbox_ack();
            }
            // A periodic pull that fails is only logged; the next one tries again.
            (BobStep::Inbox, r) if self.actors.bob.periodic => {
                self.note(format!("bob's periodic inbox pull failed: {r:?}"));
                self.actors.bob.step = BobStep::Online;
            }
            // Session::start failed: the process exits; the user starts it again a bit later.
            (BobStep::SignIn | BobStep::Inbox, r) => {
                self.note(format!("bob's start failed ({r:?}): exits, starts again in 1 s"));
                self.bob_gone();
                self.actors.bob.restart = Some((self.now() + 1000, false));
            }
            (BobStep::Quitting, r) => {
                self.note(format!("bob signed out ({r:?}) and exits"));
                let restart = self.actors.bob.restart;
                self.bob_gone();
                self.actors.bob.restart = restart;
            }
            (step, r) => self.note(format!("bob: unexpected answer in {step:?}: {r:?}")),
        }
    }

    fn bob_tick(&mut self) {
        let now = self.now();
        if self.actors.bob.step == BobStep::Offline {
            if let Some((at, new_port)) = self.actors.bob.restart {
                if now >= at {
                    self.bob_start(new_port);
                }
            }
            return;
        }
        // engine.rs: an online client pulls its inbox every INBOX_POLL_MS.
        if self.actors.bob.step == BobStep::Online && now >= self.actors.bob.last_pull + client::engine::INBOX_POLL_MS {
            self.actors.bob.last_pull = now;
            self.actors.bob.periodic = true;
            self.actors.bob.acked.clear();
            self.bob_inbox_ack();
        }
        for t in self.actors.bob.cloud.tick(&mut self.net) {
            self.bob_complete(t);
        }
        self.actors.bob.link.tick(now);
        self.flush_links();
    }

    /// What bob's link received: grants, directly or relayed by a server.
    fn bob_link_events(&mut self) {
        while let Some(ev) = self.actors.bob.link.poll_event() {
            if let LinkEvent::Incoming { envelope, from } = ev {
                let via = if node_of(from) == ALICE { "directly" } else { "relayed by a server" };
                self.bob_apply(&envelope, via);
            }
        }
    }

    fn on_client_msg(&mut self, to: NodeId, from: NodeId, msg: Msg) {
        let alice = to == ALICE;
        // Anything for a process that is not there is dropped.
        if alice || (to == self.actors.bob.cloud.node && self.actors.bob.running()) {
            let (cloud, link) = match alice {
                true => (&mut self.actors.alice.cloud, &mut self.actors.alice.link),
                false => (&mut self.actors.bob.cloud, &mut self.actors.bob.link),
            };
            match msg {
                Msg::Reply(reply) => match cloud.req.on_reply(reply) {
                    Some(done) if alice => self.alice_complete(done),
                    Some(done) => self.bob_complete(done),
                    None => {}
                },
                m @ (Msg::Peer(_) | Msg::PeerAck { .. }) => {
                    link.on_message(addr_of(from), m);
                    if alice {
                        self.alice_link_events();
                    } else {
                        self.bob_link_events();
                    }
                }
                _ => {}
            }
        }
        self.flush_links();
    }

    fn on_bob_event(&mut self, ev: BobEvent) {
        match ev {
            BobEvent::Off { clean } => match self.actors.bob.step {
                BobStep::Online if clean => {
                    self.note("bob quits: signing out".into());
                    let op = Op::SignOut { name: "bob".into(), auth: Auth::default() };
                    self.bob_request(BobStep::Quitting, op);
                }
                BobStep::Offline | BobStep::Quitting | BobStep::Register => {}
                _ => {
                    self.note("bob's process is KILLED".into());
                    self.bob_gone();
                }
            },
            BobEvent::On { new_port } => match self.actors.bob.step {
                BobStep::Offline => self.bob_start(new_port),
                BobStep::Quitting => self.actors.bob.restart = Some((self.now(), new_port)),
                _ => {}
            },
        }
    }

    /// Both register and sign in; bob already holds a copy (version 1, from `approve`).
    fn setup(&mut self) -> Result<(), String> {
        let v1 = next_grant(&mut self.actors.alice.sharing, 1);
        self.actors.bob.copy = Some(Held { views: 1, version: v1 });
        let mut events = Schedule::default();
        self.run_until(&mut events, 1500);
        self.alice_request(AliceStep::Register, Op::Register { name: "alice".into() });
        self.bob_request(BobStep::Register, Op::Register { name: "bob".into() });
        self.run_while(&mut events, 60_000, |w| {
            w.actors.alice.step != AliceStep::Ready || w.actors.bob.step != BobStep::Online
        });
        if self.actors.alice.step != AliceStep::Ready || self.actors.bob.step != BobStep::Online {
            return Err(format!(
                "setup did not finish: alice {:?}, bob {:?}",
                self.actors.alice.step, self.actors.bob.step
            ));
        }
        Ok(())
    }

    fn check(&self, kind: CrashKind, shape: Shape) -> Result<Tally, String> {
        let grants = &self.actors.alice.grants;
        // 5. Liveness, single answers (over all of bob's processes), no datagram refused.
        self.check_requests(&[&self.actors.alice.cloud, &self.actors.bob.cloud])?;
        if self.actors.alice.step != AliceStep::Done || self.actors.bob.step != BobStep::Online {
            return Err(format!("not finished: alice {:?}, bob {:?}", self.actors.alice.step, self.actors.bob.step));
        }
        // 1. The last acknowledged grant is what the viewer holds (or a later unacknowledged one).
        let state = |g: &Grant| (g.views > 0).then_some(Held { views: g.views, version: g.version });
        let last_acked = grants.iter().rposition(|g| g.ack.is_some());
        let acceptable: Vec<Option<Held>> = match last_acked {
            Some(i) => grants[i..]
                .iter()
                .enumerate()
                .filter(|(k, g)| *k == 0 || g.failed.is_some())
                .map(|(_, g)| state(g))
                .collect(),
            None => std::iter::once(Some(Held { views: 1, version: 1 })).chain(grants.iter().map(state)).collect(),
        };
        if !acceptable.contains(&self.actors.bob.copy) {
            return Err(format!(
                "bob's copy is {:?}, but the last acknowledged grant is {:?} (acceptable: {acceptable:?})",
                self.actors.bob.copy,
                last_acked.map(|i| &grants[i])
            ));
        }
        // 2. Applied in order, none twice.
        for w in self.actors.bob.applied.windows(2) {
            if w[1].0 <= w[0].0 {
                return Err(format!("bob applied v{} after v{}", w[1].0, w[0].0));
            }
        }
        // 4. No buffered grant lost.
        let newest = self.actors.bob.applied.last().map_or(1, |a| a.0);
        for g in grants.iter().filter(|g| g.ack == Some(Ack::Buffered)) {
            let applied = self.actors.bob.applied.iter().any(|a| a.0 >= g.version);
            if g.version > newest || !applied {
                return Err(format!(
                    "buffered grant v{} was lost (bob applied {:?})",
                    g.version, self.actors.bob.applied
                ));
            }
        }
        // Away for every grant (a quitting process may still take the first directly), bob gets
        // each buffered one from his inbox, oldest first: none is skipped.
        if shape.bob_away {
            let buffered: Vec<u64> =
                grants.iter().filter(|g| g.ack == Some(Ack::Buffered)).map(|g| g.version).collect();
            let applied: Vec<u64> = self.actors.bob.applied.iter().map(|a| a.0).collect();
            if buffered.iter().any(|v| !applied.contains(v)) {
                return Err(format!("bob was away: buffered {buffered:?}, but he applied {applied:?}"));
            }
        }
        // 3. Every server up, every replica equal and saved, every buffer emptied.
        self.check_replicas()?;
        for (id, srv) in &self.servers {
            let dir = srv.node.as_ref().map(|n| n.directory()).ok_or(format!("server {id} is down at the end"))?;
            let rec = dir.get("bob").ok_or(format!("server {id} has no record of bob"))?;
            let pending: Vec<_> = rec.inbox.iter().filter(|e| !e.delivered).map(|e| e.envelope.id).collect();
            if !pending.is_empty() {
                return Err(format!("server {id} still buffers {pending:x?} for bob"));
            }
        }
        let count = |a: Ack| grants.iter().filter(|g| g.ack == Some(a)).count();
        Ok(Tally {
            runs: 1,
            grants: grants.len(),
            direct: count(Ack::Direct),
            relayed: count(Ack::Relayed),
            buffered: count(Ack::Buffered),
            failed: grants.iter().filter(|g| g.failed.is_some()).count(),
            processes: self.actors.bob.processes as usize,
            applied: self.actors.bob.applied.len(),
            ignored: self.actors.bob.ignored as usize,
            restarts: self.restarted.len(),
            kinds: BTreeMap::from([(format!("{kind:?}"), 1)]),
        })
    }
}

/// What the runs did, to see that every path is taken.
#[derive(Debug, Default)]
struct Tally {
    runs: usize,
    grants: usize,
    direct: usize,
    relayed: usize,
    buffered: usize,
    failed: usize,
    processes: usize,
    applied: usize,
    ignored: usize,
    restarts: usize,
    kinds: BTreeMap<String, usize>,
}

impl Tally {
    fn add(&mut self, t: Tally) {
        self.runs += t.runs;
        self.grants += t.grants;
        self.direct += t.direct;
        self.relayed += t.relayed;
        self.buffered += t.buffered;
        self.failed += t.failed;
        self.processes += t.processes;
        self.applied += t.applied;
        self.ignored += t.ignored;
        self.restarts += t.restarts;
        for (k, n) in t.kinds {
            *self.kinds.entry(k).or_insert(0) += n;
        }
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} runs passed {:?}: {} grants ({} direct, {} relayed, {} buffered, {} failed), \
             bob ran {} processes, applied {} grants and ignored {} repeats, {} server restarts",
            self.runs,
            self.kinds,
            self.grants,
            self.direct,
            self.relayed,
            self.buffered,
            self.failed,
            self.processes,
            self.applied,
            self.ignored,
            self.restarts
        )
    }
}

/// How a scenario is shaped.
#[derive(Debug, Clone, Copy)]
struct Shape {
    kind: Option<CrashKind>,
    /// Bob stays offline from the first grant until every grant is acknowledged.
    bob_away: bool,
    /// At the end a bob who is online pulls his inbox again (as a new process would); without
    /// it, what the cloud buffered after his last pull waits for his next sign-in.
    final_pull: bool,
}

/// The events of one seed, relative to the first grant.
fn plan(r: &mut Rng, shape: Shape, grants: usize, t0: u64, events: &mut Schedule<BobEvent>) -> CrashKind {
    let kind = shape.kind.unwrap_or(match r.below(10) {
        0 | 1 => CrashKind::None,
        2..=4 => CrashKind::One,
        5..=8 => CrashKind::AllInTurn,
        _ => CrashKind::AllAtOnce,
    });
    let span = grants as u64 * 1500;
    match kind {
        CrashKind::None => {}
        CrashKind::One => {
            let s = SERVERS[r.below(3) as usize];
            let at = r.range(0, span);
            events.push(t0 + at, Event::Crash(s));
            events.push(t0 + at + r.range(300, 8000), Event::Restart(s));
        }
        CrashKind::AllInTurn => {
            let mut order = SERVERS.to_vec();
            let first = r.below(3) as usize;
            order.rotate_left(first);
            if r.chance(0.5) {
                order.swap(1, 2);
            }
            let mut t = r.range(0, span / 2);
            for s in order {
                let back = t + r.range(300, 5000);
                events.push(t0 + t, Event::Crash(s));
                events.push(t0 + back, Event::Restart(s));
                t = back + r.range(0, 4000);
            }
        }
        CrashKind::AllAtOnce => {
            let at = r.range(0, span);
            for s in SERVERS {
                events.push(t0 + at + r.below(50), Event::Crash(s));
                events.push(t0 + at + r.range(500, 4000), Event::Restart(s));
            }
        }
    }
    if shape.bob_away {
        events.push(t0, Event::Actor(BobEvent::Off { clean: r.chance(0.5) }));
    } else {
        let mut t = r.range(0, 3000);
        for _ in 0..r.below(5) {
            events.push(t0 + t, Event::Actor(BobEvent::Off { clean: r.chance(0.4) }));
            let on = t + r.range(200, 6000);
            events.push(t0 + on, Event::Actor(BobEvent::On { new_port: r.chance(0.5) }));
            t = on + r.range(100, 8000);
        }
    }
    kind
}

fn run_seed(seed: u64, shape: Shape) -> Result<Tally, Failure> {
    let mut w = World::new(seed, Parties::new(seed));
    let mut r = Rng::new(seed ^ 0x0a11_ce00_0b0b);
    let k = r.range(5, 15) as usize;
    w.setup().map_err(|e| w.fail(e))?;
    let t0 = w.now();
    w.note(format!("setup done: {k} grants follow"));
    for _ in 0..k {
        let views = r.range(1, 20) as u32;
        w.actors.alice.plan.push_back((views, r.range(0, 2000)));
    }
    if r.chance(0.2) {
        if let Some(last) = w.actors.alice.plan.back_mut() {
            last.0 = 0; // a final revoke
        }
    }
    let mut events = Schedule::default();
    let kind = plan(&mut r, shape, k, t0, &mut events);
    w.actors.alice.step = AliceStep::Idle { until: t0 + 100 };
    w.run_while(&mut events, t0 + GIVE_UP_MS, |w| w.actors.alice.step != AliceStep::Done);
    if w.actors.alice.step != AliceStep::Done {
        return Err(w.fail(format!("the grants did not finish: alice is at {:?}", w.actors.alice.step)));
    }
    if shape.bob_away {
        // With every grant buffered, the servers restart in turn (still under faults), and
        // maybe all at once too; bob may come back in the middle of it.
        events.clear();
        let mut order = SERVERS;
        order.rotate_left(r.below(3) as usize);
        let mut t = w.now() + r.range(0, 1000);
        for s in order {
            let back = t + r.range(300, 5000);
            events.push(t, Event::Crash(s));
            events.push(back, Event::Restart(s));
            t = back + r.range(0, 3000);
        }
        if r.chance(0.3) {
            for s in SERVERS {
                events.push(t, Event::Crash(s));
                events.push(t + r.range(300, 3000), Event::Restart(s));
            }
            t += 3000;
        }
        if r.chance(0.5) {
            events.push(r.range(w.now(), t), Event::Actor(BobEvent::On { new_port: r.chance(0.5) }));
        }
        w.run_until(&mut events, t + 1);
    }
    // The end: heal, no faults, every server up, bob online with his inbox pulled, settle.
    w.note("END: healing, faults off, every server up, bob brought online".into());
    events.clear();
    w.actors.bob.processes_at_end_start = w.actors.bob.processes;
    w.calm();
    for s in SERVERS {
        w.restart(s);
    }
    match w.actors.bob.step {
        BobStep::Offline => w.bob_start(false),
        BobStep::Quitting => w.actors.bob.restart = Some((w.now(), false)),
        _ => {}
    }
    let limit = w.now() + 60_000;
    w.run_while(&mut events, limit, |w| w.actors.bob.step != BobStep::Online);
    if shape.final_pull && w.actors.bob.processes_at_end_start == w.actors.bob.processes {
        // Bob's process was running at the end: its pull may have raced the last buffering.
        w.note("bob pulls his inbox again".into());
        w.actors.bob.acked.clear();
        w.bob_inbox_ack();
        let limit = w.now() + 60_000;
        w.run_while(&mut events, limit, |w| w.actors.bob.step != BobStep::Online);
    }
    let settle = w.now() + 8_000;
    w.run_until(&mut events, settle);
    // A periodic pull may have just started: let it finish before checking.
    let limit = w.now() + 60_000;
    w.run_while(&mut events, limit, |w| w.actors.bob.step != BobStep::Online);
    w.check(kind, shape).map_err(|e| w.fail(e))
}

fn run_all(name: &str, shape: Shape) {
    let mut total = Tally::default();
    for tally in run_seeds(name, &seeds(), |seed| run_seed(seed, shape)) {
        total.add(tally);
    }
    println!("{name}: {total}");
}

#[test]
fn acknowledged_grants_are_applied_once_in_order_under_faults_and_crashes() {
    run_all("mixed", Shape { kind: None, bob_away: false, final_pull: true });
}

/// Bob is away for every grant, so each is buffered; the servers restart one after the other
/// meanwhile. When bob comes back he must get them all, oldest first.
#[test]
fn buffered_grants_survive_all_three_servers_restarting_in_turn() {
    run_all("away", Shape { kind: Some(CrashKind::AllInTurn), bob_away: true, final_pull: true });
}

/// The same runs, except that a viewer whose process was running at the end does not pull his
/// inbox again: what the cloud buffered while (or after) he last pulled it must reach him anyway
/// (the client pulls every `INBOX_POLL_MS`, and `Op::Buffer` marks him offline only if the
/// address the cloud failed to reach is still his recorded one).
#[test]
fn an_online_viewer_gets_every_acknowledged_grant_without_signing_in_again() {
    run_all("no-repull", Shape { kind: None, bob_away: false, final_pull: false });
}

/// Bob is away, alice buffers 40 grants, bob comes back and pulls them; three times over. After
/// each pull every replica must hold at most `MAX_TOMBSTONES` delivered tombstones for bob: his
/// record travels whole in votes, proposals and resyncs, so it must stay well inside a
/// datagram (`merge_inbox` takes only pending entries from the older record, so tombstones
/// `InboxAck` trimmed stay trimmed).
#[test]
fn delivered_messages_do_not_grow_the_viewer_record_without_bound() {
    let runs = if std::env::var("SIM_SEED").is_ok() { seeds() } else { (1..=2).collect() };
    for seed in runs {
        let mut w = World::new(seed, Parties::new(seed));
        w.setup().unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        let mut events = Schedule::default();
        let mut r = Rng::new(seed ^ 0x70b5);
        for round in 1..=3 {
            w.on_bob_event(BobEvent::Off { clean: r.chance(0.5) });
            for _ in 0..40 {
                w.actors.alice.plan.push_back((r.range(1, 20) as u32, r.range(0, 100)));
            }
            w.actors.alice.step = AliceStep::Idle { until: w.now() + 1 };
            let limit = w.now() + 200_000;
            w.run_while(&mut events, limit, |w| w.actors.alice.step != AliceStep::Done);
            w.on_bob_event(BobEvent::On { new_port: r.chance(0.5) });
            let limit = w.now() + 60_000;
            w.run_while(&mut events, limit, |w| w.actors.bob.step != BobStep::Online);
            let settle = w.now() + 5000;
            w.run_until(&mut events, settle);
            if let Err(e) = w.check_requests(&[&w.actors.alice.cloud, &w.actors.bob.cloud]) {
                panic!("seed {seed}: {e}");
            }
            assert_eq!(w.actors.bob.applied.len(), 40 * round, "seed {seed}: every buffered grant applied");
            for (id, srv) in &w.servers {
                let rec = srv.node.as_ref().and_then(|n| n.directory().get("bob")).expect("bob's record");
                let size = encode_msg(&Msg::Record { from: *id, record: rec.clone() }).len();
                assert!(
                    rec.inbox.len() <= MAX_TOMBSTONES,
                    "seed {seed}, after {} delivered messages: server {id} keeps {} inbox entries ({size} bytes)",
                    40 * round,
                    rec.inbox.len()
                );
            }
        }
    }
}
