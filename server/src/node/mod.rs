//! The server as a state machine: `step(now, input)` and `tick(now)` return the messages to
//! send and the work to start. No sockets, threads or clocks inside: the shell (`runtime.rs`)
//! moves datagrams and time, the simulation tests drive it directly.
//!
//! Each request is decided by single-decree Paxos among the servers, with the load election as
//! leader hint:
//! 1. every live server receives the client's request and ranks the live servers for it
//!    (least effective load, ties by request id); the winner claims it in round 1
//!    (`Prepare`, "Claim" on the wire). If no claim comes within the claim timeout, the next
//!    server in the ranking claims; if the holder fails (999, silent, restarted), the next live
//!    server claims in a higher round;
//! 2. a server votes (a granted `Promise`, "ClaimAck" on the wire) for the first claimer of a
//!    round and for any higher round; a claimer gives its own vote to a lower-id claimer of the
//!    same round. A vote carries the voter's accepted proposal, if any, else the voter's
//!    directory record of the request's user, so the executor never acts on a stale replica. A claim needs votes from a
//!    majority of the servers that have not announced 999, its own included. Only its *first
//!    responders* (the live servers after the claimer in id order, heard from lately, as many
//!    as the majority needs) answer a first copy; the others vote silently and answer a
//!    retransmission;
//! 3. the winner of a round proposes the accepted proposal of the highest round among its votes
//!    (it must: that value may already be decided) and executes the request only if there is
//!    none. It sends the proposal (`Accept` in its round, "Done" on the wire) to the servers that voted
//!    for it (to every voter on retransmission); a server accepts unless it voted in a higher
//!    round. Executing writes nothing: the records are applied when decided;
//! 4. once a majority accepted, the request is decided: the decider applies the records and
//!    announces the decision (a [`Decision`]) to every server, which applies the
//!    records too. The client gets the reply once a majority applied them (so its next request
//!    reads them) and every live server did or the claim timeout passed — at once if nothing is
//!    written. A server that knows the decision answers retries and claims with it, and the
//!    claimer adopts it: one request, one answer;
//! 5. votes and accepted proposals are saved with the directory ([`Vote`]), so a server that
//!    crashes and restarts from disk keeps its promises and its accepted replies.
//!
//! A holder that is alive but in a lower round than a claimer is not waited for: the higher
//! round wins, and whatever the holder accepted reaches the claimer through the votes. Claimers
//! yield only to higher rounds (or to a lower id in their own round), so two servers never wait
//! for each other.
//!
//! Availability: a majority of the servers that have not announced 999 must be reachable. A
//! server isolated alone never answers, so a healed partition never yields a second answer;
//! servers that shut down cleanly (announcing 999) leave the majority to the others.
//!
//! The code uses Paxos's words; the wire keeps the project's first names (serde renames):
//! `Prepare` is "Claim", `Promise` "ClaimAck", `Accept` "Done", `Accepted` "DoneAck", and the
//! client's `Started` is "Accepted". The wire reuses message fields where the protocol has no
//! dedicated shape (a granted `Promise` carries the voter's accepted round in `holder`; a
//! decision is an `Accept` in round `DECIDED`); the handlers never see that: they take and
//! give the typed messages of [`wire`], converted where messages come in (`on_server_message`)
//! and go out. (Directory operations write at most the request's user's record, so one record
//! carries a proposal's write.)

mod announce;
mod decision;
mod outbox;
mod paxos;
mod status;
mod table;
pub mod wire;

use crate::directory::Directory;
use crate::election::{load_figure, LoadTable, Policy, FAILED};
use crate::failure::{FailureConfig, FailureSim, SimAction};
use crate::keys::Mismatches;
use crate::ops;
use crate::store::Saved;
use crate::votes::{Proposal, Vote, VoteLog};
use common::config::{ClusterConfig, ServerId};
use common::crypto::{Key, KeyGen, Purpose};
use common::protocol::{
    Answer, Election, Msg, Op, PeerView, Reply, RequestId, ServerStatus, UserRecord, ELECTIONS_KEPT, RECENT_SECS,
};
use common::rng::Rng;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use wire::{Accept, Accepted, Ack, Ballot, Claimer, Decision, Paxos, Prepare, Promise, Report, MAX_ROUND};

/// A waiting request is ranked again with the current load table this long after a claim's
/// first retransmission would have reached it, ms: a server whose copy of the winner's claim
/// was lost hears the retransmission first, instead of contesting the claim on newer figures.
pub const RERANK_MARGIN_MS: u64 = 20;

/// A first responder (see `responders`) counts only if heard from this recently, ms: a server
/// that went quiet is skipped, so a voter behind it answers at once instead of after a
/// retransmission.
pub const RESPONDER_FRESH_MS: u64 = 50;

/// Most messages put in one [`Msg::Batch`].
pub const BATCH_MAX: usize = 32;

/// How long a message that may wait (see `send_later`) waits for a ride on a datagram going
/// to the same server before a tick sends it on its own, ms. Well under the retransmission
/// time, so that an announcement and its acknowledgement both fit in it.
pub const LATER_WAIT_MS: u64 = 10;

/// Change of queued work that is announced before the next periodic load multicast.
pub const EARLY_ANNOUNCE_WORK: u32 = 3;
/// Shortest time between two early announcements, ms.
pub const EARLY_ANNOUNCE_MS: u64 = 50;

/// Who a message comes from or goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Peer {
    /// Another server, by id.
    Server(ServerId),
    /// A client, by address.
    Client(SocketAddr),
}

/// Timing and identity of a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This server's id.
    pub id: ServerId,
    /// Every server id of the cluster.
    pub servers: Vec<ServerId>,
    /// Silence after which a server counts as failed, ms.
    pub failure_timeout: u64,
    /// Wait for a claim, or for grants and commit acks, ms.
    pub claim_timeout: u64,
    /// Retransmission interval of claims, commits and the token, ms.
    pub retransmit: u64,
    /// Answers kept for retries.
    pub answer_cache: usize,
    /// How long answers are kept, ms.
    pub answer_ttl: u64,
    /// Election policy.
    pub policy: Policy,
    /// Pass the failure-simulation token around.
    pub simulate_failures: bool,
    /// Failure simulation: time down, ms.
    pub down_ms: u64,
    /// Failure simulation: time up before passing the token, ms.
    pub up_ms: u64,
    /// Keep a list of every request executed here (for tests).
    pub record_executions: bool,
    /// How far a request's timestamp may be from the wall clock, ms (below `answer_ttl`, so a
    /// replay inside the window finds the request's answer and is not executed again).
    pub auth_window: u64,
    /// Wall-clock time (ms since the Unix epoch) at node time 0.
    pub wall_base: u64,
    /// Seed of the secret-key generator (simulations); `None`: the operating system's.
    pub key_seed: Option<u64>,
}

/// Wall-clock time at node time 0 in the simulations.
pub const SIM_WALL_BASE: u64 = 1_700_000_000_000;

impl NodeConfig {
    /// The settings the simulations use: the config defaults for `servers`, executions recorded,
    /// a fixed wall clock and seeded keys.
    pub fn simulated(id: ServerId, servers: &[ServerId]) -> Self {
        let defaults = ClusterConfig::with_servers(Vec::new());
        NodeConfig {
            servers: servers.to_vec(),
            record_executions: true,
            wall_base: SIM_WALL_BASE,
            key_seed: Some(id as u64),
            ..NodeConfig::from_cluster(&defaults, id, Policy::LeastLoad, false)
        }
    }

    /// What the failure simulation takes from these settings.
    pub fn failure(&self) -> FailureConfig {
        FailureConfig {
            me: self.id,
            ids: self.servers.clone(),
            enabled: self.simulate_failures,
            down_ms: self.down_ms,
            up_ms: self.up_ms,
            retransmit: self.retransmit,
            failure_timeout: self.failure_timeout,
        }
    }

    /// The node settings of server `id` from the cluster config.
    pub fn from_cluster(cfg: &ClusterConfig, id: ServerId, policy: Policy, simulate_failures: bool) -> Self {
        NodeConfig {
            id,
            servers: cfg.ids(),
            failure_timeout: cfg.failure_timeout_ms,
            claim_timeout: cfg.claim_timeout_ms,
            retransmit: cfg.retransmit_ms,
            answer_cache: cfg.answer_cache,
            answer_ttl: cfg.answer_ttl_ms,
            policy,
            simulate_failures,
            down_ms: cfg.simulate_down_ms,
            up_ms: cfg.simulate_up_ms,
            record_executions: false,
            auth_window: cfg.auth_window_ms,
            wall_base: 0,
            key_seed: None,
        }
    }
}

/// Something that happened to the node.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // moved once into `step`; boxing would allocate per datagram
pub enum Input {
    /// A datagram arrived.
    Message { from: Peer, msg: Msg },
    /// The load thread sampled the CPU: time to announce the load.
    LoadSample { cpu_percent: f32, rss_kb: u64 },
    /// A worker finished a request.
    Executed { rid: RequestId, result: Result<Answer, String> },
    /// Go down (announce 999, ignore traffic) for `ms`.
    Down { ms: u64 },
    /// Come back now.
    Up,
    /// Operator: switch the failure simulation on or off.
    Simulate { on: bool },
    /// The process is stopping: announce 999.
    Shutdown,
    /// Frames with a bad tag (another cluster key) keep coming from `from` (the receive thread
    /// says so at most every few seconds per address): listed in `status` for a while.
    KeyMismatch { from: SocketAddr },
}

/// Something the shell must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send a message.
    Send { to: Peer, msg: Msg },
    /// Run a heavy request on the worker pool, then feed back `Input::Executed`. `key`: the
    /// own-image key of the user it acts for (to check what it hides).
    Execute { rid: RequestId, op: Op, reply_to: SocketAddr, key: Option<Key> },
    /// A line for the log.
    Log(String),
}

#[derive(Debug, Clone)]
enum State {
    /// No live holder known: the takeover timers run.
    Waiting,
    /// We wait for `holder`, which claims or proposes it in `round`.
    Following { holder: ServerId, round: u32 },
    /// We claim it in `round`: votes granted so far, who answered at all, and the accepted
    /// proposal of the highest round reported (ours included), which we must propose.
    Claiming {
        round: u32,
        /// We were first in the ranking the request got here (see [`Claimer::first`]).
        first: bool,
        votes: BTreeSet<ServerId>,
        answered: BTreeSet<ServerId>,
        best: Option<Proposal>,
        since: u64,
        last: u64,
    },
    /// We won `round` and execute the request.
    Executing { round: u32 },
    /// We propose `proposal` (in its round) and collect acceptances.
    Accepting { proposal: Proposal, acks: BTreeSet<ServerId>, last: u64 },
    /// A majority accepted `proposal`: we announce the decision and answer the client once a
    /// majority applied it (`replied` tells whether the client got the reply already).
    Deciding { proposal: Proposal, acks: BTreeSet<ServerId>, since: u64, last: u64, replied: bool },
    /// Decided; the reply is kept for retries and late claims.
    Decided { reply: Reply },
}

impl State {
    /// The reply to give a client now, if the request is answered.
    fn answer(&self) -> Option<&Reply> {
        match self {
            State::Decided { reply } => Some(reply),
            State::Deciding { proposal, replied: true, .. } => Some(&proposal.reply),
            _ => None,
        }
    }

    /// The decided proposal's reply, if the request is decided.
    fn decided(&self) -> Option<&Reply> {
        match self {
            State::Decided { reply } => Some(reply),
            State::Deciding { proposal, .. } => Some(&proposal.reply),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    op: Option<Op>,
    reply_to: Option<SocketAddr>,
    /// When the request was seen or last went back to the election (takeover timers).
    seen: u64,
    rank: Vec<ServerId>,
    /// This server's own announced load when it ranked the request (see the re-ranking in
    /// `tick_entry`).
    own_load: u32,
    state: State,
    /// Who is counted as working on it, for the outstanding-work figures.
    holder: Option<ServerId>,
    /// Highest round seen in any message, to pick the next one.
    max_round: u32,
    /// The servers that granted our winning claim: our proposal goes to them first.
    voted: Vec<ServerId>,
    /// Our promise and accepted proposal (saved in the directory).
    vote: Vote,
}

impl Entry {
    fn new(op: Option<Op>, reply_to: Option<SocketAddr>, now: u64, rank: Vec<ServerId>) -> Self {
        Entry {
            op,
            reply_to,
            seen: now,
            rank,
            own_load: 0,
            state: State::Waiting,
            holder: None,
            max_round: 0,
            voted: Vec::new(),
            vote: Vote::default(),
        }
    }
}

/// One server's protocol state.
pub struct Node {
    cfg: NodeConfig,
    table: LoadTable,
    dir: Directory,
    /// This server's votes, mirrored from the request table (`save_vote`) for the store.
    votes: VoteLog,
    /// Boxed: the map's table stays small as it grows (an entry is several hundred bytes).
    requests: HashMap<RequestId, Box<Entry>>,
    active: BTreeSet<RequestId>,
    finished: VecDeque<(u64, RequestId)>,
    keys: KeyGen,
    out: Vec<Output>,
    /// Messages that may wait, per server: since when, and the messages. They ride with the
    /// next message to that server, or go in one `Batch` once `LATER_WAIT_MS` passed.
    later: BTreeMap<ServerId, (u64, Vec<Msg>)>,
    epoch: u64,
    started: u64,
    heard_since_start: BTreeSet<ServerId>,
    ready: bool,
    down_until: Option<u64>,
    cpu: f32,
    rss_kb: u64,
    announced_work: u32,
    announced_at: u64,
    dirty: bool,
    mismatches: BTreeMap<ServerId, u32>,
    failure: FailureSim,
    handled: u64,
    handled_by_kind: BTreeMap<&'static str, u64>,
    /// Executions per second of the last `RECENT_SECS` seconds: (second, count), oldest first.
    recent: VecDeque<(u64, u64)>,
    /// Requests executed here, in order (only with `record_executions`).
    pub executions: Vec<RequestId>,
    /// How the newest client requests were ranked on arrival (for `status`).
    elections: VecDeque<Election>,
    /// Every ranking on arrival, in order (only with `record_executions`).
    pub election_log: Vec<Election>,
    /// Addresses that sent frames with a bad tag lately (for `status`).
    key_mismatch: Mismatches,
}

impl Node {
    /// A node starting at `now` with what it loaded from disk: the directory, and the votes,
    /// which it keeps honouring.
    pub fn new(cfg: NodeConfig, now: u64, saved: Saved, rng: Rng) -> Self {
        let Saved { directory: mut dir, votes } = saved;
        dir.advance_clock(votes.max_counter());
        let mut rng = rng;
        let epoch = rng.next_u64() | 1;
        let keys = match cfg.key_seed {
            Some(seed) => KeyGen::from_seed(seed ^ rng.next_u64()),
            None => KeyGen::from_os(),
        };
        let table = LoadTable::new(cfg.id, &cfg.servers, cfg.failure_timeout, cfg.policy);
        let failure = FailureSim::new(&cfg.failure(), now);
        let mut node = Node {
            cfg,
            table,
            dir,
            votes,
            requests: HashMap::new(),
            active: BTreeSet::new(),
            finished: VecDeque::new(),
            keys,
            out: Vec::new(),
            later: BTreeMap::new(),
            epoch,
            started: now,
            heard_since_start: BTreeSet::new(),
            ready: false,
            down_until: None,
            cpu: 0.0,
            rss_kb: 0,
            announced_work: 0,
            announced_at: 0,
            dirty: false,
            mismatches: BTreeMap::new(),
            failure,
            handled: 0,
            handled_by_kind: BTreeMap::new(),
            recent: VecDeque::new(),
            executions: Vec::new(),
            elections: VecDeque::new(),
            election_log: Vec::new(),
            key_mismatch: Mismatches::default(),
        };
        node.restore_votes(now);
        node
    }

    /// Rebuilds the request table from the saved votes: decided requests keep their reply, the
    /// others their promise and accepted proposal (they wait for a client retry or a claim).
    fn restore_votes(&mut self, now: u64) {
        let saved: Vec<(RequestId, Vote)> = self.votes.iter().map(|(rid, v)| (*rid, v.clone())).collect();
        for (rid, vote) in saved {
            let mut e = Entry::new(None, None, now, vec![]);
            e.max_round = vote.round.max(vote.accepted.as_ref().map_or(0, |p| p.round));
            match (&vote.accepted, vote.decided) {
                (Some(p), true) => {
                    e.state = State::Decided { reply: p.reply.clone() };
                    self.finished.push_back((now, rid));
                }
                _ => {
                    self.active.insert(rid);
                }
            }
            e.vote = vote;
            self.requests.insert(rid, Box::new(e));
        }
    }

    /// This server's id.
    pub fn id(&self) -> ServerId {
        self.cfg.id
    }

    /// The directory (to inspect).
    pub fn directory(&self) -> &Directory {
        &self.dir
    }

    /// This server's votes (to inspect).
    pub fn votes(&self) -> &VoteLog {
        &self.votes
    }

    /// A copy of what the store keeps (the simulations' disk).
    pub fn saved(&self) -> Saved {
        Saved { directory: self.dir.clone(), votes: self.votes.clone() }
    }

    /// The directory and the votes, for the store to take what changed since the last save.
    pub fn durable_mut(&mut self) -> (&mut Directory, &mut VoteLog) {
        (&mut self.dir, &mut self.votes)
    }

    /// True once since the last call if the directory or the votes changed and must be saved.
    /// The shell must save before sending the outputs of the step that changed them.
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// True while the failure simulation (or an operator) has this server down.
    pub fn is_down(&self) -> bool {
        self.table.me_down
    }

    /// Requests executed here.
    pub fn handled(&self) -> u64 {
        self.handled
    }

    /// Entries in the request table (bounded by the answer cache).
    pub fn tracked(&self) -> usize {
        self.requests.len()
    }

    /// Startup is over (every server heard, or the failure timeout passed): take requests, and
    /// say so at once, so the others rank this server again.
    fn become_ready(&mut self, now: u64) {
        if !self.ready {
            self.ready = true;
            if !self.is_down() {
                self.announce(now);
            }
        }
    }

    /// Handles one input; returns what to do.
    pub fn step(&mut self, now: u64, input: Input) -> Vec<Output> {
        match input {
            Input::Message { from, msg } => {
                if !self.is_down() {
                    self.on_message(now, from, msg);
                }
            }
            Input::LoadSample { cpu_percent, rss_kb } => {
                self.cpu = cpu_percent;
                self.rss_kb = rss_kb;
                self.announce(now);
            }
            Input::Executed { rid, result } => {
                if !self.is_down() {
                    self.on_executed(now, rid, result);
                }
            }
            Input::Down { ms } => self.go_down(now, ms),
            Input::Up => self.come_up(now),
            Input::Simulate { on } => {
                self.failure.set_enabled(now, on);
                self.log(format!("failure simulation {}", if on { "on" } else { "off" }));
            }
            Input::Shutdown => {
                self.table.me_down = true;
                self.announce(now);
            }
            Input::KeyMismatch { from } => self.key_mismatch.note(now, from),
        }
        std::mem::take(&mut self.out)
    }

    /// Advances timers: takeovers, retransmissions, failure simulation, cache eviction.
    pub fn tick(&mut self, now: u64) -> Vec<Output> {
        if let Some(until) = self.down_until {
            if now >= until {
                self.come_up(now);
            }
        }
        match self.failure.tick(now, &self.table, self.is_down()) {
            SimAction::None => {}
            SimAction::GoDown(ms) => {
                self.log(format!("failure simulation: my turn, down for {:.1} s", ms as f64 / 1000.0));
                self.go_down(now, ms);
            }
            SimAction::Send(to, msg) => self.send(Peer::Server(to), msg),
            SimAction::Suspect(id) => self.table.suspect(id),
        }
        if self.is_down() {
            return std::mem::take(&mut self.out);
        }
        if !self.ready && now >= self.started + self.cfg.failure_timeout {
            self.become_ready(now);
        }
        let active: Vec<RequestId> = self.active.iter().copied().collect();
        for rid in active {
            self.tick_entry(now, rid);
        }
        self.evict(now);
        // A queue that grew or shrank by several requests is announced at once (at most every
        // EARLY_ANNOUNCE_MS), so a burst spreads without waiting for the periodic multicast.
        let work = self.table.outstanding(self.cfg.id);
        if work.abs_diff(self.announced_work) >= EARLY_ANNOUNCE_WORK && now >= self.announced_at + EARLY_ANNOUNCE_MS {
            self.announce(now);
        }
        let due: Vec<ServerId> =
            self.later.iter().filter(|(_, (since, _))| now >= since + LATER_WAIT_MS).map(|(&to, _)| to).collect();
        for to in due {
            self.flush_later(to);
        }
        std::mem::take(&mut self.out)
    }

    /// Goes down: our own claims and proposals stop (what we promised and accepted stays, so
    /// nothing we said before is contradicted when we come back); traffic is ignored.
    fn go_down(&mut self, now: u64, ms: u64) {
        let was_down = self.is_down();
        self.down_until = Some(now + ms);
        if was_down {
            return;
        }
        self.table.me_down = true;
        // Down means silent; the decisions' announcements are retransmitted until acknowledged.
        self.later.clear();
        let active: Vec<RequestId> = self.active.iter().copied().collect();
        for rid in active {
            match self.requests.get(&rid).map(|e| &e.state) {
                Some(State::Claiming { .. } | State::Executing { .. } | State::Accepting { .. }) => {
                    self.rewait(now, rid)
                }
                Some(State::Deciding { proposal, .. }) => {
                    let reply = proposal.reply.clone();
                    self.set_state(now, rid, State::Decided { reply });
                }
                _ => {}
            }
        }
        self.log(format!("going DOWN for {:.1} s: announcing 999 and ignoring all traffic", ms as f64 / 1000.0));
        self.announce(now);
    }

    fn come_up(&mut self, now: u64) {
        self.down_until = None;
        if !self.is_down() {
            return;
        }
        self.table.me_down = false;
        self.ready = false;
        self.started = now;
        self.heard_since_start.clear();
        self.log("back UP: announcing my load; the others will push the directory".into());
        self.announce(now);
    }

    fn on_message(&mut self, now: u64, from: Peer, msg: Msg) {
        match from {
            Peer::Client(addr) => match msg {
                Msg::Request { rid, op } => self.on_request(now, addr, rid, op),
                other => self.log(format!("dropped {} from client {addr}: not a request", other.kind())),
            },
            Peer::Server(s) => {
                if s == self.cfg.id || !self.cfg.servers.contains(&s) {
                    self.log(format!("dropped message from unknown server {s}"));
                    return;
                }
                if !self.sent_by(s, &msg) {
                    return;
                }
                self.table.heard(now, s);
                self.heard_since_start.insert(s);
                if !self.ready && self.table.others().all(|o| self.heard_since_start.contains(&o)) {
                    self.become_ready(now);
                }
                match msg {
                    Msg::Batch { msgs, .. } => {
                        for m in msgs {
                            if matches!(m, Msg::Batch { .. }) {
                                self.log(format!("dropped a batch nested in a batch from server {s}"));
                            } else if self.sent_by(s, &m) {
                                self.on_server_message(now, s, m);
                            }
                        }
                    }
                    msg => self.on_server_message(now, s, msg),
                }
            }
        }
    }

    /// True if `msg` names no sender or names `s`, the server it came from (else logged).
    fn sent_by(&mut self, s: ServerId, msg: &Msg) -> bool {
        match msg.sender() {
            Some(claimed) if claimed != s => {
                self.log(format!("dropped {} claiming to be from {claimed} but sent by {s}", msg.kind()));
                false
            }
            _ => true,
        }
    }

    fn on_server_message(&mut self, now: u64, s: ServerId, msg: Msg) {
        match msg {
            Msg::Load { load, work, digest, epoch, token, ready, .. } => {
                let restarted = self.table.set_epoch(s, epoch);
                let came_back = self.table.on_load(now, s, load, work, ready);
                self.failure.on_load(now, token);
                if restarted {
                    self.log(format!("server {s} restarted: taking back what it held"));
                    self.release_held_by(now, s);
                }
                if came_back || restarted {
                    self.log(format!("server {s} is back (load {load}): pushing the full directory"));
                    self.push_directory(s);
                    self.mismatches.remove(&s);
                } else if load < FAILED && digest != self.dir.digest() {
                    let n = self.mismatches.entry(s).or_insert(0);
                    *n += 1;
                    if *n >= 2 {
                        *n = 0;
                        self.push_directory(s);
                    }
                } else {
                    self.mismatches.remove(&s);
                }
                if load >= FAILED {
                    self.release_held_by(now, s);
                }
            }
            msg @ (Msg::Prepare { .. } | Msg::Promise { .. } | Msg::Accept { .. } | Msg::Accepted { .. }) => {
                let kind = msg.kind();
                match Paxos::try_from(msg) {
                    Ok(paxos) => self.on_paxos(now, s, paxos),
                    Err(why) => self.log(format!("dropped {kind} from server {s}: {why}")),
                }
            }
            Msg::Record { record, .. } => self.apply_record(record),
            Msg::Token { round, .. } => {
                self.send(Peer::Server(s), Msg::TokenAck { from: self.cfg.id, round });
                self.failure.on_token(now, round);
            }
            Msg::TokenAck { from, round } => self.failure.on_token_ack(from, round),
            other => self.log(format!("dropped {} from server {s}: not a server message", other.kind())),
        }
    }

    fn on_paxos(&mut self, now: u64, s: ServerId, msg: Paxos) {
        match msg {
            Paxos::Prepare(prepare) => self.on_prepare(now, prepare),
            Paxos::Promise(promise) => self.on_promise(now, promise),
            Paxos::Accept(accept) => {
                let ack = self.on_accept(now, accept);
                self.send(Peer::Server(s), ack.into());
            }
            Paxos::Decision(decision) => {
                // Nobody waits on the acknowledgement of a decision that wrote nothing: the
                // client has its reply.
                let unhurried = decision.records.is_empty();
                let ack = self.on_decision(now, decision);
                if unhurried {
                    self.send_later(now, s, ack.into());
                } else {
                    self.send(Peer::Server(s), ack.into());
                }
            }
            Paxos::Accepted(accepted) => self.on_accepted(now, accepted),
        }
    }
}

/// True for replies small enough to share a batch (not the lists a read may return).
fn small(reply: &Reply) -> bool {
    match &reply.result {
        Ok(Answer::User(_) | Answer::Online(_) | Answer::OnlinePage { .. } | Answer::Status(_) | Answer::Inbox(_)) => {
            false
        }
        Ok(_) => true,
        Err(e) => e.len() <= 1024,
    }
}
