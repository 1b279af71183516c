//! The server as a state machine: `step(now, input)` and `tick(now)` return the messages to
//! send and the work to start. No sockets, threads or clocks inside: the shell (`runtime.rs`)
//! moves datagrams and time, the simulation tests drive it directly.
//!
//! Each request is decided by single-decree Paxos among the servers, with the load election as
//! leader hint:
//! 1. every live server receives the client's request and ranks the live servers for it
//!    (least effective load, ties to the lowest id); the winner claims it in round 1 (`Claim`:
//!    Paxos prepare). If no claim comes within the claim timeout, the next server in the ranking
//!    claims; if the holder fails (999, silent, restarted), the next live server claims in a
//!    higher round;
//! 2. a server votes (`ClaimAck` granted: promise) for the first claimer of a round and for any
//!    higher round; a claimer gives its own vote to a lower-id claimer of the same round. A vote
//!    carries the voter's accepted proposal, if any, else the voter's directory record of the
//!    request's user, so the executor never acts on a stale replica. A claim needs votes from a
//!    majority of the servers that have not announced 999, its own included. Only its *first
//!    responders* (the live servers after the claimer in id order, heard from lately, as many
//!    as the majority needs) answer a first copy; the others vote silently and answer a
//!    retransmission;
//! 3. the winner of a round proposes the accepted proposal of the highest round among its votes
//!    (it must: that value may already be decided) and executes the request only if there is
//!    none. It sends the proposal (`Done` in its round: Paxos accept) to the servers that voted
//!    for it (to every voter on retransmission); a server accepts unless it voted in a higher
//!    round. Executing writes nothing: the records are applied when decided;
//! 4. once a majority accepted, the request is decided: the decider applies the records and
//!    announces the decision (`Done` in round [`DECIDED`]) to every server, which applies the
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
//! Message fields are reused where the protocol has no dedicated shape: a granted `ClaimAck`
//! echoes the claim's round in `round` and reports the voter's accepted proposal with its reply
//! in `reply`, its record in `record` and its round in `holder`; a refused one carries the
//! decided reply and record if the voter knows the decision; a `Done` with round [`DECIDED`]
//! announces a decision. (Directory operations write at most the request's user's record, so
//! one record carries a proposal's write.)

use crate::directory::{Directory, Proposal, Vote};
use crate::election::{load_figure, LoadTable, Policy, FAILED};
use crate::failure::{FailureConfig, FailureSim, SimAction};
use crate::keys::Mismatches;
use crate::service;
use common::config::{ClusterConfig, ServerId};
use common::crypto::{Key, KeyGen, Purpose};
use common::protocol::{
    Answer, Election, Msg, Op, PeerView, Reply, RequestId, ServerStatus, UserRecord, ELECTIONS_KEPT, RECENT_SECS,
};
use common::rng::Rng;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;

/// The round of a `Done` that announces a decision instead of proposing a value.
pub const DECIDED: u32 = u32::MAX;

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

/// A claim of a request, as the votes weigh it: who, in which round, and whether the claimer
/// was first in the ranking it made when the request arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claimer {
    /// The claiming server.
    pub by: ServerId,
    /// Its round.
    pub round: u32,
    /// It claims as the winner of its arrival ranking, not on a re-ranking or a timeout.
    pub first: bool,
}

impl Claimer {
    /// Does this claim win against `other`, a claim of the same round? A claim made as the
    /// arrival ranking's winner beats one made on a re-ranking (whose newer figures the others
    /// may not hold yet), then the lower id wins.
    fn beats(&self, other: &Claimer) -> bool {
        (self.first, std::cmp::Reverse(self.by)) > (other.first, std::cmp::Reverse(other.by))
    }
}

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
    /// A node starting at `now` with the directory it loaded from disk (and the votes saved in
    /// it, which it keeps honouring).
    pub fn new(cfg: NodeConfig, now: u64, dir: Directory, rng: Rng) -> Self {
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
        let saved: Vec<(RequestId, Vote)> = self.dir.votes().map(|(rid, v)| (*rid, v.clone())).collect();
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

    /// The directory (to persist or inspect), with this server's votes.
    pub fn directory(&self) -> &Directory {
        &self.dir
    }

    /// The directory, for the store to take what changed since the last save.
    pub fn directory_mut(&mut self) -> &mut Directory {
        &mut self.dir
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

    /// This server's status, as answered to a `Status` request.
    pub fn status(&self, now: u64) -> ServerStatus {
        ServerStatus {
            id: self.cfg.id,
            down: self.is_down(),
            peers: self.table.snapshot(now),
            handled: self.handled,
            handled_by_kind: self.handled_by_kind.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            users: self.dir.len(),
            online: self.dir.online().take(100).map(|u| u.name).collect(),
            tracked_requests: self.requests.len(),
            rss_kb: self.rss_kb,
            recent_wins: self.recent_wins(now),
            next_winner: self.table.ranking(now, RequestId { client: 0, seq: 0 }).first().copied(),
            elections: self.elections.iter().cloned().collect(),
            key_mismatch: self.key_mismatch.recent(now),
        }
    }

    /// Records how a client's request was ranked on arrival (of the client's copy, or of a
    /// claim that came first).
    fn record_election(&mut self, now: u64, rid: RequestId, op: &Op, table: Vec<PeerView>, ranking: &[ServerId]) {
        let e = Election { rid, kind: op.kind().to_string(), at: now, table, ranking: ranking.to_vec() };
        if self.cfg.record_executions {
            self.election_log.push(e.clone());
        }
        if self.elections.len() >= ELECTIONS_KEPT {
            self.elections.pop_front();
        }
        self.elections.push_back(e);
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

    /// Requests executed here in the last [`RECENT_SECS`] seconds.
    fn recent_wins(&self, now: u64) -> u64 {
        let sec = now / 1000;
        self.recent.iter().filter(|(s, _)| s + RECENT_SECS > sec).map(|(_, n)| n).sum()
    }

    /// Counts one execution in the per-second window (at most `RECENT_SECS` + 1 buckets).
    fn count_recent(&mut self, now: u64) {
        let sec = now / 1000;
        match self.recent.back_mut() {
            Some((s, n)) if *s == sec => *n += 1,
            _ => self.recent.push_back((sec, 1)),
        }
        while self.recent.front().is_some_and(|(s, _)| s + RECENT_SECS <= sec) {
            self.recent.pop_front();
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

    fn log(&mut self, line: String) {
        self.out.push(Output::Log(line));
    }

    /// Sends `msg`; to a server, the messages waiting for it (see `send_later`) ride along in
    /// one `Batch`, ahead of it.
    fn send(&mut self, to: Peer, msg: Msg) {
        let msg = match to {
            Peer::Server(id) if !matches!(msg, Msg::Batch { .. }) => match self.later.remove(&id) {
                Some((_, mut msgs)) => {
                    msgs.push(msg);
                    Msg::Batch { from: self.cfg.id, msgs }
                }
                None => msg,
            },
            _ => msg,
        };
        self.out.push(Output::Send { to, msg });
    }

    fn multicast(&mut self, ids: impl IntoIterator<Item = ServerId>, msg: &Msg) {
        for id in ids {
            self.send(Peer::Server(id), msg.clone());
        }
    }

    /// Sends `msg` to server `to` when convenient: with the next message that goes there, or
    /// after `LATER_WAIT_MS` in one `Batch` with the others waiting. For messages nobody waits
    /// on (the announcement of a decision that wrote nothing, its acknowledgement, a claim to a
    /// voter that is not a first responder), so that they seldom cost a datagram of their own.
    fn send_later(&mut self, now: u64, to: ServerId, msg: Msg) {
        let (_, waiting) = self.later.entry(to).or_insert_with(|| (now, Vec::new()));
        waiting.push(msg);
        if waiting.len() >= BATCH_MAX {
            self.flush_later(to);
        }
    }

    fn flush_later(&mut self, to: ServerId) {
        let Some((_, mut msgs)) = self.later.remove(&to) else { return };
        let msg = match msgs.len() {
            0 => return,
            1 => msgs.remove(0),
            _ => Msg::Batch { from: self.cfg.id, msgs },
        };
        self.send(Peer::Server(to), msg);
    }

    fn announce(&mut self, now: u64) {
        let work = self.table.outstanding(self.cfg.id);
        self.announced_work = work;
        self.announced_at = now;
        let load = if self.is_down() { FAILED } else { load_figure(self.cpu, work) };
        if !self.is_down() {
            self.table.set_mine(now, load, work);
        }
        let msg = Msg::Load {
            from: self.cfg.id,
            load,
            work,
            digest: self.dir.digest(),
            epoch: self.epoch,
            token: self.failure.holds_token(),
            ready: self.ready,
        };
        let others: Vec<ServerId> = self.table.others().collect();
        self.multicast(others, &msg);
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
            Msg::Claim { rid, by, round, op, reply_to, first } => {
                self.on_claim(now, rid, Claimer { by, round, first }, op, reply_to)
            }
            Msg::ClaimAck { rid, from, granted, holder, round, firm, reply, record } => {
                let ack = Ack { from, granted, holder, round, firm, reply, record };
                self.on_claim_ack(now, rid, ack)
            }
            Msg::Done { rid, by, round, reply, records } => {
                let unhurried = round == DECIDED && records.is_empty();
                let ack = self.on_done(now, rid, by, round, reply, records);
                if unhurried {
                    // Nobody waits on it: the client has its reply (nothing was written).
                    self.send_later(now, s, ack);
                } else {
                    self.send(Peer::Server(s), ack);
                }
            }
            Msg::DoneAck { rid, from, accepted, holder, round, reply } => {
                self.on_done_ack(now, rid, from, accepted, holder, round, reply)
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

    /// Applies a committed record (last writer wins).
    fn apply_record(&mut self, record: UserRecord) {
        if self.dir.apply(record) {
            self.dirty = true;
        }
    }

    fn push_directory(&mut self, to: ServerId) {
        let records: Vec<Msg> =
            self.dir.records().map(|r| Msg::Record { from: self.cfg.id, record: r.clone() }).collect();
        for m in records {
            self.send(Peer::Server(to), m);
        }
    }

    fn on_request(&mut self, now: u64, addr: SocketAddr, rid: RequestId, op: Op) {
        if op == Op::Status {
            let reply = Reply { rid, server: self.cfg.id, result: Ok(Answer::Status(Box::new(self.status(now)))) };
            self.send(Peer::Client(addr), Msg::Reply(reply));
            return;
        }
        if let Some(e) = self.requests.get_mut(&rid) {
            e.reply_to.get_or_insert(addr);
            if e.op.is_none() {
                e.op = Some(op);
            }
            // Whoever knows the decision answers: it is the one reply there is.
            if let Some(reply) = e.state.answer().cloned() {
                self.send(Peer::Client(addr), Msg::Reply(reply));
            }
            return;
        }
        if !self.ready {
            return;
        }
        let table = self.table.snapshot(now);
        let rank = crate::election::rank(&table, self.cfg.policy, rid);
        self.record_election(now, rid, &op, table, &rank);
        let mine = rank.first() == Some(&self.cfg.id);
        let mut e = Entry::new(Some(op), Some(addr), now, rank);
        e.own_load = self.table.effective(now, self.cfg.id);
        self.requests.insert(rid, Box::new(e));
        self.active.insert(rid);
        if mine {
            self.start_claim(now, rid);
        }
    }

    /// Moves an entry to `state`, keeping the outstanding-work counts and the saved vote right.
    fn set_state(&mut self, now: u64, rid: RequestId, state: State) {
        let me = self.cfg.id;
        let Some(e) = self.requests.get_mut(&rid) else { return };
        let holder = match &state {
            State::Waiting | State::Deciding { .. } | State::Decided { .. } => None,
            State::Following { holder, .. } => Some(*holder),
            State::Claiming { .. } | State::Executing { .. } | State::Accepting { .. } => Some(me),
        };
        let round = match &state {
            State::Following { round, .. } | State::Claiming { round, .. } | State::Executing { round } => *round,
            State::Accepting { proposal, .. } | State::Deciding { proposal, .. } => proposal.round,
            State::Waiting | State::Decided { .. } => 0,
        };
        e.max_round = e.max_round.max(round);
        e.vote.decided = state.decided().is_some();
        let old = e.holder;
        e.holder = holder;
        let done = matches!(state, State::Decided { .. });
        let newly_done = done && !matches!(e.state, State::Decided { .. });
        e.state = state;
        if old != holder {
            if let Some(o) = old {
                self.table.remove_work(o);
            }
            if let Some(h) = holder {
                self.table.add_work(h);
            }
        }
        if done {
            self.active.remove(&rid);
            if newly_done {
                self.finished.push_back((now, rid));
            }
        } else {
            self.active.insert(rid);
        }
        self.save_vote(rid);
    }

    /// Mirrors an entry's vote into the directory, to be saved before anything is sent.
    fn save_vote(&mut self, rid: RequestId) {
        let changed = match self.requests.get(&rid) {
            Some(e) => self.dir.set_vote(rid, &e.vote),
            None => self.dir.set_vote(rid, &Vote::default()),
        };
        if changed {
            self.dirty = true;
        }
    }

    /// Claims `rid` in a round above every round seen, voting for ourselves.
    fn start_claim(&mut self, now: u64, rid: RequestId) {
        let me = self.cfg.id;
        let Some(e) = self.requests.get_mut(&rid) else { return };
        if matches!(
            e.state,
            State::Executing { .. } | State::Accepting { .. } | State::Deciding { .. } | State::Decided { .. }
        ) {
            return;
        }
        let (Some(op), Some(reply_to)) = (e.op.clone(), e.reply_to) else { return };
        let round = e.max_round.max(e.vote.round).saturating_add(1).min(DECIDED - 1);
        e.vote.round = round;
        e.vote.holder = me;
        let best = e.vote.accepted.clone();
        let first = e.rank.first() == Some(&me);
        let state = State::Claiming {
            round,
            first,
            votes: BTreeSet::new(),
            answered: BTreeSet::new(),
            best,
            since: now,
            last: now,
        };
        self.set_state(now, rid, state);
        if self.table.quorum() <= 1 {
            self.on_quorum(now, rid);
            return;
        }
        // The first responders get the claim at once; the other voters when convenient (it
        // rides with the next message to them, or goes after `LATER_WAIT_MS`), and not at all
        // if the request is decided before: then the decision is all they need to hear.
        let claim = Msg::Claim { rid, by: me, round, op, reply_to, first };
        let first = self.responders(now, me);
        let enough = first.len() + 1 >= self.table.quorum();
        for to in self.table.voters() {
            if !enough || first.contains(&to) {
                self.send(Peer::Server(to), claim.clone());
            } else {
                self.send_later(now, to, claim.clone());
            }
        }
    }

    /// Drops the claims of `rid` still waiting to be sent (it is decided).
    fn drop_waiting_claims(&mut self, rid: RequestId) {
        for (_, msgs) in self.later.values_mut() {
            msgs.retain(|m| !matches!(m, Msg::Claim { rid: r, .. } if *r == rid));
        }
        self.later.retain(|_, (_, msgs)| !msgs.is_empty());
    }

    /// Our vote as a refusal names: the holder of our promise, unless that is us and we are not
    /// using the round any more (then the claimer should simply go higher).
    fn promise_holder(&self, e: &Entry) -> Option<ServerId> {
        let mine_in_use = matches!(e.state, State::Claiming { .. } | State::Executing { .. } | State::Accepting { .. });
        (e.vote.round > 0 && (e.vote.holder != self.cfg.id || mine_in_use)).then_some(e.vote.holder)
    }

    /// What this server answers to a claim of `rid` by `by` in `round`, updating its vote.
    fn vote(&mut self, now: u64, rid: RequestId, claimer: Claimer) -> Msg {
        let me = self.cfg.id;
        let Claimer { by, round, .. } = claimer;
        let refuse = |holder: Option<ServerId>, round: u32, firm: bool, reply: Option<Reply>, record| Msg::ClaimAck {
            rid,
            from: me,
            granted: false,
            holder,
            round,
            firm,
            reply,
            record,
        };
        let Some(e) = self.requests.get(&rid) else { return refuse(None, 0, false, None, None) };
        if let Some(reply) = e.state.decided() {
            let record = e.vote.accepted.as_ref().and_then(|p| p.records.first()).cloned();
            return refuse(Some(reply.server), e.vote.round, true, Some(reply.clone()), record);
        }
        let grant = match &e.state {
            State::Executing { round: r } => return refuse(Some(me), *r, true, None, None),
            State::Accepting { proposal, .. } => return refuse(Some(me), proposal.round, true, None, None),
            State::Claiming { round: r, first, .. } => {
                round > *r || (round == *r && claimer.beats(&Claimer { by: me, round: *r, first: *first }))
            }
            _ => round > e.vote.round || (round == e.vote.round && by == e.vote.holder),
        };
        if !grant {
            return refuse(self.promise_holder(e), e.vote.round, false, None, None);
        }
        // A grant echoes the claim's round (a late grant must not count for a later round) and
        // reports our accepted proposal: its round in `holder`, its reply and record.
        let ack = match &e.vote.accepted {
            Some(p) => Msg::ClaimAck {
                rid,
                from: me,
                granted: true,
                holder: Some(p.round),
                round,
                firm: false,
                reply: Some(p.reply.clone()),
                record: p.records.first().cloned(),
            },
            None => {
                let record = e.op.as_ref().and_then(|op| op.user()).and_then(|u| self.dir.get(u)).cloned();
                Msg::ClaimAck { rid, from: me, granted: true, holder: None, round, firm: false, reply: None, record }
            }
        };
        if matches!(e.state, State::Claiming { .. }) {
            self.log(format!("yielding {rid} to server {by} (round {round})"));
        }
        if let Some(e) = self.requests.get_mut(&rid) {
            e.vote.round = round;
            e.vote.holder = by;
        }
        self.set_state(now, rid, State::Following { holder: by, round });
        ack
    }

    fn on_claim(&mut self, now: u64, rid: RequestId, claimer: Claimer, op: Op, reply_to: SocketAddr) {
        let Claimer { by, round, .. } = claimer;
        if round == 0 || round == DECIDED {
            self.log(format!("dropped claim of {rid} by server {by}: bad round {round}"));
            return;
        }
        if !self.requests.contains_key(&rid) {
            // The request reaches us first by the claim: we rank it now, as on arrival.
            let table = self.table.snapshot(now);
            let rank = crate::election::rank(&table, self.cfg.policy, rid);
            self.record_election(now, rid, &op, table, &rank);
            let mut e = Entry::new(Some(op), Some(reply_to), now, rank);
            e.own_load = self.table.effective(now, self.cfg.id);
            self.requests.insert(rid, Box::new(e));
            self.active.insert(rid);
        } else if let Some(e) = self.requests.get_mut(&rid) {
            e.reply_to.get_or_insert(reply_to);
            if e.op.is_none() {
                e.op = Some(op);
            }
        }
        let repeat = self.requests.get(&rid).is_some_and(|e| e.vote.round == round && e.vote.holder == by);
        let answer = self.vote(now, rid, claimer);
        // A grant the claimer does not wait for stays unsent the first time (the promise is
        // kept all the same); a repeat of the claim is answered.
        let granted = matches!(answer, Msg::ClaimAck { granted: true, .. });
        if granted && !repeat && !self.responders(now, by).contains(&self.cfg.id) {
            return;
        }
        self.send(Peer::Server(by), answer);
    }

    /// The servers whose votes a claim by `claimer` waits for first: the live servers heard
    /// from lately, after it in id order (cyclically), as many as its quorum needs besides its
    /// own vote. The others get the claim later (see `start_claim`) and grant it silently the
    /// first time; a retransmission, which goes to every voter that has not answered, reaches
    /// them. The proposal then goes to the servers that voted.
    fn responders(&self, now: u64, claimer: ServerId) -> Vec<ServerId> {
        let need = self.table.quorum().saturating_sub(1);
        let me = self.cfg.id;
        let fresh = now.saturating_sub(RESPONDER_FRESH_MS);
        let mut ids: Vec<ServerId> = self.table.voters();
        ids.push(me);
        ids.retain(|&id| {
            id != claimer && self.table.is_live(now, id) && (id == me || self.table.heard_since(id, fresh))
        });
        ids.sort_unstable();
        let split = ids.partition_point(|&id| id < claimer);
        ids.rotate_left(split);
        ids.truncate(need);
        ids
    }

    fn on_claim_ack(&mut self, now: u64, rid: RequestId, ack: Ack) {
        let me = self.cfg.id;
        let quorum = self.table.quorum();
        if !ack.granted {
            if let Some(reply) = ack.reply {
                // The voter knows the decision: adopt it, whatever we are doing.
                if let Some(record) = ack.record {
                    self.apply_record(record);
                }
                self.adopt(now, rid, reply, ack.from);
                return;
            }
        }
        let Some(e) = self.requests.get_mut(&rid) else { return };
        if !ack.granted && ack.round < DECIDED {
            e.max_round = e.max_round.max(ack.round);
        }
        let State::Claiming { round, votes, answered, best, first, .. } = &mut e.state else { return };
        let (round, first) = (*round, *first);
        answered.insert(ack.from);
        if ack.granted {
            if ack.round != round {
                return; // a vote for an earlier round of ours
            }
            match ack.reply {
                Some(reply) => {
                    // The voter accepted this proposal (in round `holder`): a candidate we must
                    // propose if it is the highest-round one among our votes.
                    let accepted_in = ack.holder.unwrap_or(0);
                    if best.as_ref().is_none_or(|b| b.round < accepted_in) {
                        *best = Some(Proposal { round: accepted_in, reply, records: ack.record.into_iter().collect() });
                    }
                }
                None => {
                    if let Some(record) = ack.record {
                        if self.dir.apply(record) {
                            self.dirty = true;
                        }
                    }
                }
            }
            votes.insert(ack.from);
            if votes.len() + 1 >= quorum {
                self.on_quorum(now, rid);
            }
            return;
        }
        let live = ack.holder.filter(|&h| h != me && self.table.is_live(now, h));
        match live {
            // A higher round, or an executor of our round, or a lower id of our round while we
            // claim on a re-ranking: it goes first. (Claiming as our arrival ranking's winner,
            // we keep claiming: the lower id yields when our claim reaches it, unless it claims
            // as its own arrival winner, in which case we yield when its claim reaches us.)
            Some(h) if ack.round > round || (ack.round == round && (ack.firm || (h < me && !first))) => {
                self.set_state(now, rid, State::Following { holder: h, round: ack.round });
            }
            // A lower round (it cannot commit past our promises) or a claimer of our round that
            // our claim beats (it yields when our claim reaches it): keep claiming.
            Some(_) => {}
            // Promised to a dead holder, or to a round of ours we no longer run: go higher.
            None if ack.round >= round => self.start_claim(now, rid),
            None => {}
        }
    }

    /// A majority voted for our claim: propose the highest accepted proposal reported, or
    /// execute the request if there is none.
    fn on_quorum(&mut self, now: u64, rid: RequestId) {
        let Some(State::Claiming { round, best, votes, .. }) = self.requests.get(&rid).map(|e| &e.state) else {
            return;
        };
        let (round, best) = (*round, best.clone());
        let voted: Vec<ServerId> = votes.iter().copied().collect();
        if let Some(e) = self.requests.get_mut(&rid) {
            e.voted = voted;
        }
        match best {
            Some(p) => {
                self.log(format!(
                    "{rid}: proposing the reply of server {} accepted in round {}",
                    p.reply.server, p.round
                ));
                self.propose(now, rid, Proposal { round, ..p });
            }
            None => self.begin_execution(now, rid, round),
        }
    }

    fn begin_execution(&mut self, now: u64, rid: RequestId, round: u32) {
        self.set_state(now, rid, State::Executing { round });
        let Some(e) = self.requests.get(&rid) else { return };
        let (Some(op), Some(reply_to)) = (e.op.clone(), e.reply_to) else { return };
        self.handled += 1;
        *self.handled_by_kind.entry(op.kind()).or_insert(0) += 1;
        self.count_recent(now);
        if self.cfg.record_executions {
            self.executions.push(rid);
        }
        let wall = self.cfg.wall_base + now;
        if let Err(e) = service::authorize(&self.dir, rid, &op, wall, self.cfg.auth_window) {
            self.log(format!("{rid}: {} refused: {e}", op.kind()));
            let reply = Reply { rid, server: self.cfg.id, result: Err(e) };
            self.propose(now, rid, Proposal { round, reply, records: vec![] });
            return;
        }
        if op.needs_worker() {
            let key = op.signer().and_then(|u| service::user_key(&self.dir, u, Purpose::Own));
            self.out.push(Output::Execute { rid, op, reply_to, key });
            return;
        }
        let outcome = service::execute(&mut self.dir, self.cfg.id, rid, &op, reply_to, &mut self.keys);
        let reply = Reply { rid, server: self.cfg.id, result: outcome.result };
        self.propose(now, rid, Proposal { round, reply, records: outcome.changed });
    }

    fn on_executed(&mut self, now: u64, rid: RequestId, result: Result<Answer, String>) {
        match self.requests.get(&rid).map(|e| &e.state) {
            Some(&State::Executing { round }) => {
                let reply = Reply { rid, server: self.cfg.id, result };
                self.propose(now, rid, Proposal { round, reply, records: vec![] });
            }
            _ => self.log(format!("result of {rid} arrived after the request moved on; dropped")),
        }
    }

    /// Accepts our own proposal and sends it to every server (Paxos accept).
    fn propose(&mut self, now: u64, rid: RequestId, proposal: Proposal) {
        let Some(e) = self.requests.get_mut(&rid) else { return };
        e.vote.accepted = Some(proposal.clone());
        if self.table.quorum() <= 1 {
            self.decide(now, rid, proposal);
            return;
        }
        let done = Msg::Done {
            rid,
            by: self.cfg.id,
            round: proposal.round,
            reply: proposal.reply.clone(),
            records: proposal.records.clone(),
        };
        let quorum = self.table.quorum();
        let voted = self.requests.get(&rid).map(|e| e.voted.clone()).unwrap_or_default();
        let to = if voted.len() + 1 >= quorum { voted } else { self.table.voters() };
        self.multicast(to, &done);
        self.set_state(now, rid, State::Accepting { proposal, acks: BTreeSet::new(), last: now });
    }

    /// A majority accepted `proposal`: it is decided. Apply it, announce it, answer the client
    /// (now if nothing is written, else once a majority applied the records).
    fn decide(&mut self, now: u64, rid: RequestId, proposal: Proposal) {
        self.drop_waiting_claims(rid);
        for record in proposal.records.clone() {
            self.apply_record(record);
        }
        let replied = proposal.records.is_empty();
        if replied {
            self.reply_to_client(rid, &proposal.reply);
        }
        let decided = Msg::Done {
            rid,
            by: self.cfg.id,
            round: DECIDED,
            reply: proposal.reply.clone(),
            records: proposal.records.clone(),
        };
        let unhurried = replied && small(&proposal.reply);
        self.set_state(now, rid, State::Deciding { proposal, acks: BTreeSet::new(), since: now, last: now, replied });
        if unhurried {
            // The client has its reply and nothing was written: the others learn it when
            // convenient (riding along, or many decisions to a datagram after a while).
            for to in self.table.voters() {
                self.send_later(now, to, decided.clone());
            }
        } else {
            self.multicast(self.table.voters(), &decided);
        }
        if self.decision_spread(now, rid) {
            self.finish_decision(now, rid);
        }
    }

    /// The decision is applied by a majority, and by every live server or the claim timeout
    /// passed (so the next request sees the write on whichever server runs it).
    fn decision_spread(&self, now: u64, rid: RequestId) -> bool {
        let Some(State::Deciding { acks, since, .. }) = self.requests.get(&rid).map(|e| &e.state) else {
            return false;
        };
        if acks.len() + 1 < self.table.quorum() {
            return false;
        }
        now >= since + self.cfg.claim_timeout || self.table.live_others(now).iter().all(|p| acks.contains(p))
    }

    fn finish_decision(&mut self, now: u64, rid: RequestId) {
        let Some(State::Deciding { proposal, replied, .. }) = self.requests.get(&rid).map(|e| &e.state) else { return };
        let (reply, replied) = (proposal.reply.clone(), *replied);
        if !replied {
            self.reply_to_client(rid, &reply);
        }
        self.set_state(now, rid, State::Decided { reply });
    }

    fn reply_to_client(&mut self, rid: RequestId, reply: &Reply) {
        if let Some(addr) = self.requests.get(&rid).and_then(|e| e.reply_to) {
            self.send(Peer::Client(addr), Msg::Reply(reply.clone()));
        }
    }

    /// Records a decision learnt from another server (its announcement or its answer).
    fn learn(&mut self, now: u64, rid: RequestId, reply: Reply, records: Vec<UserRecord>) {
        for record in records.clone() {
            self.apply_record(record);
        }
        self.requests.entry(rid).or_insert_with(|| Box::new(Entry::new(None, None, now, vec![])));
        let Some(e) = self.requests.get_mut(&rid) else { return };
        if e.state.decided().is_some() {
            return;
        }
        let round = e.vote.round;
        e.vote.accepted = Some(Proposal { round, reply: reply.clone(), records });
        self.set_state(now, rid, State::Decided { reply });
    }

    /// Adopts a decision reported by `from` instead of continuing our own claim or proposal.
    fn adopt(&mut self, now: u64, rid: RequestId, reply: Reply, from: ServerId) {
        let Some(e) = self.requests.get(&rid) else { return };
        if e.state.decided().is_some() {
            return;
        }
        let was_working = matches!(e.state, State::Claiming { .. } | State::Accepting { .. });
        self.log(format!("{rid} was already decided (reply of server {}, told by {from}): adopting it", reply.server));
        self.learn(now, rid, reply.clone(), vec![]);
        if was_working {
            self.reply_to_client(rid, &reply);
        }
    }

    /// A proposal (Paxos accept) or a decision arrived; returns the acknowledgement.
    fn on_done(
        &mut self,
        now: u64,
        rid: RequestId,
        by: ServerId,
        round: u32,
        reply: Reply,
        records: Vec<UserRecord>,
    ) -> Msg {
        let me = self.cfg.id;
        let ack = |accepted: bool, holder: Option<ServerId>, round: u32, reply: Option<Reply>| Msg::DoneAck {
            rid,
            from: me,
            accepted,
            holder,
            round,
            reply,
        };
        if round == DECIDED {
            self.learn(now, rid, reply, records);
            return ack(true, None, DECIDED, None);
        }
        if round == 0 {
            return ack(false, None, 0, None);
        }
        self.requests.entry(rid).or_insert_with(|| Box::new(Entry::new(None, None, now, vec![])));
        let Some(e) = self.requests.get_mut(&rid) else { return ack(false, None, 0, None) };
        if let Some(decided) = e.state.decided() {
            return if *decided == reply {
                ack(true, None, round, None)
            } else {
                ack(false, None, 0, Some(decided.clone()))
            };
        }
        let executing_this_round = match &e.state {
            State::Executing { round: r } => *r == round,
            State::Accepting { proposal, .. } => proposal.round == round,
            _ => false,
        };
        if round < e.vote.round || (round == e.vote.round && executing_this_round) {
            let promised = e.vote.round;
            let holder = self.requests.get(&rid).and_then(|e| self.promise_holder(e));
            return ack(false, holder, promised, None);
        }
        e.vote.round = round;
        e.vote.holder = by;
        e.vote.accepted = Some(Proposal { round, reply, records });
        self.set_state(now, rid, State::Following { holder: by, round });
        ack(true, None, round, None)
    }

    #[allow(clippy::too_many_arguments)]
    fn on_done_ack(
        &mut self,
        now: u64,
        rid: RequestId,
        from: ServerId,
        accepted: bool,
        holder: Option<ServerId>,
        their_round: u32,
        reply: Option<Reply>,
    ) {
        let me = self.cfg.id;
        let quorum = self.table.quorum();
        if !accepted {
            if let Some(reply) = reply {
                self.adopt(now, rid, reply, from);
                return;
            }
        }
        let Some(e) = self.requests.get_mut(&rid) else { return };
        match &mut e.state {
            State::Accepting { proposal, acks, .. } if their_round == proposal.round && accepted => {
                acks.insert(from);
                if acks.len() + 1 >= quorum {
                    let proposal = proposal.clone();
                    self.decide(now, rid, proposal);
                }
            }
            State::Accepting { proposal, .. } if !accepted && their_round > proposal.round && their_round < DECIDED => {
                // A majority may have promised a higher round: our proposal stays accepted here
                // (the new holder learns it from our vote); we wait for that holder.
                e.max_round = e.max_round.max(their_round);
                self.log(format!("proposal for {rid} refused: round {their_round} is running"));
                match holder.filter(|&h| h != me && self.table.is_live(now, h)) {
                    Some(h) => self.set_state(now, rid, State::Following { holder: h, round: their_round }),
                    None => self.rewait(now, rid),
                }
            }
            State::Deciding { acks, .. } if their_round == DECIDED && accepted => {
                acks.insert(from);
                if self.decision_spread(now, rid) {
                    self.finish_decision(now, rid);
                }
            }
            _ => {}
        }
    }

    /// A server failed or restarted: requests it held go back to the election.
    fn release_held_by(&mut self, now: u64, s: ServerId) {
        let held: Vec<RequestId> = self
            .active
            .iter()
            .filter(|rid| {
                matches!(self.requests.get(rid).map(|e| &e.state), Some(State::Following { holder, .. }) if *holder == s)
            })
            .copied()
            .collect();
        for rid in held {
            self.rewait(now, rid);
        }
    }

    fn rewait(&mut self, now: u64, rid: RequestId) {
        let rank = self.table.ranking(now, rid);
        let own_load = self.table.effective(now, self.cfg.id);
        if let Some(e) = self.requests.get_mut(&rid) {
            e.seen = now;
            e.rank = rank;
            e.own_load = own_load;
        }
        self.set_state(now, rid, State::Waiting);
    }

    fn tick_entry(&mut self, now: u64, rid: RequestId) {
        let me = self.cfg.id;
        let Some(e) = self.requests.get(&rid) else {
            self.active.remove(&rid);
            return;
        };
        if now.saturating_sub(e.seen) > self.cfg.answer_ttl
            && matches!(e.state, State::Waiting | State::Following { .. })
        {
            self.forget(rid);
            return;
        }
        match e.state.clone() {
            State::Waiting => {
                if e.op.is_none() || e.reply_to.is_none() {
                    return;
                }
                // After a short grace, rank again: a load announcement that reached the servers
                // at slightly different moments must not leave everyone waiting for another.
                // The others' figures are taken as they are now, but our own as it was when we
                // ranked the request: a newer figure of ours has not reached the others yet,
                // and claiming on it would contest a claim they agreed on.
                let live: Vec<ServerId> = if now >= e.seen + self.cfg.retransmit + RERANK_MARGIN_MS {
                    let mut table = self.table.snapshot(now);
                    if let Some(p) = table.iter_mut().find(|p| p.id == me && p.live) {
                        p.load = e.own_load;
                    }
                    crate::election::rank(&table, self.cfg.policy, rid)
                } else {
                    e.rank.iter().copied().filter(|&s| self.table.is_live(now, s)).collect()
                };
                match live.iter().position(|&s| s == me) {
                    Some(0) => self.start_claim(now, rid),
                    Some(k) if now >= e.seen + self.cfg.claim_timeout * k as u64 => self.start_claim(now, rid),
                    Some(_) => {}
                    None => self.rewait(now, rid),
                }
            }
            State::Following { holder, .. } => {
                if !self.table.is_live(now, holder) {
                    self.rewait(now, rid);
                }
            }
            State::Claiming { round, votes, answered, since, last, first, .. } => {
                if now >= since + self.cfg.claim_timeout {
                    // Whoever stayed silent since the claim began is suspected: it stops
                    // winning elections until heard from again.
                    for p in self.table.voters() {
                        if !answered.contains(&p) && !self.table.heard_since(p, since) {
                            self.table.suspect(p);
                        }
                    }
                }
                if votes.len() + 1 >= self.table.quorum() {
                    self.on_quorum(now, rid);
                    return;
                }
                if now >= last + self.cfg.retransmit {
                    if let (Some(op), Some(reply_to)) = (e.op.clone(), e.reply_to) {
                        let missing: Vec<ServerId> =
                            self.table.voters().into_iter().filter(|p| !votes.contains(p)).collect();
                        self.multicast(missing, &Msg::Claim { rid, by: me, round, op, reply_to, first });
                    }
                    self.touch(rid, now);
                }
            }
            State::Accepting { proposal, acks, last } => {
                if acks.len() + 1 >= self.table.quorum() {
                    self.decide(now, rid, proposal);
                } else if now >= last + self.cfg.retransmit {
                    let missing: Vec<ServerId> =
                        self.table.voters().into_iter().filter(|p| !acks.contains(p)).collect();
                    let done = Msg::Done {
                        rid,
                        by: me,
                        round: proposal.round,
                        reply: proposal.reply,
                        records: proposal.records,
                    };
                    self.multicast(missing, &done);
                    self.touch(rid, now);
                }
            }
            State::Deciding { proposal, acks, last, .. } => {
                if self.decision_spread(now, rid) {
                    self.finish_decision(now, rid);
                } else if now >= last + self.cfg.retransmit {
                    let missing: Vec<ServerId> =
                        self.table.voters().into_iter().filter(|p| !acks.contains(p)).collect();
                    let done =
                        Msg::Done { rid, by: me, round: DECIDED, reply: proposal.reply, records: proposal.records };
                    self.multicast(missing, &done);
                    self.touch(rid, now);
                }
            }
            State::Executing { .. } | State::Decided { .. } => {}
        }
    }

    /// Notes a retransmission time.
    fn touch(&mut self, rid: RequestId, now: u64) {
        if let Some(e) = self.requests.get_mut(&rid) {
            match &mut e.state {
                State::Claiming { last, .. } | State::Accepting { last, .. } | State::Deciding { last, .. } => {
                    *last = now
                }
                _ => {}
            }
        }
    }

    /// Drops an entry and its saved vote.
    fn forget(&mut self, rid: RequestId) {
        if let Some(e) = self.requests.remove(&rid) {
            if let Some(h) = e.holder {
                self.table.remove_work(h);
            }
        }
        self.active.remove(&rid);
        self.save_vote(rid);
    }

    fn evict(&mut self, now: u64) {
        while let Some(&(at, rid)) = self.finished.front() {
            let too_many = self.requests.len() > self.cfg.answer_cache;
            if !too_many && now.saturating_sub(at) <= self.cfg.answer_ttl {
                break;
            }
            self.finished.pop_front();
            if matches!(self.requests.get(&rid).map(|e| &e.state), Some(State::Decided { .. })) {
                self.forget(rid);
            }
        }
        // Undecided entries beyond the bound (a flood of requests nobody claims) go too.
        while self.active.len() > self.cfg.answer_cache {
            let Some(rid) = self.active.iter().next().copied() else {
                break;
            };
            self.forget(rid);
        }
    }
}

/// A `ClaimAck`'s fields.
struct Ack {
    from: ServerId,
    granted: bool,
    holder: Option<ServerId>,
    round: u32,
    firm: bool,
    reply: Option<Reply>,
    record: Option<UserRecord>,
}

/// True for replies small enough to share a batch (not the lists a read may return).
fn small(reply: &Reply) -> bool {
    match &reply.result {
        Ok(Answer::User(_) | Answer::Online(_) | Answer::Status(_) | Answer::Inbox(_)) => false,
        Ok(_) => true,
        Err(e) => e.len() <= 1024,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::protocol::Version;

    const CLAIM_TIMEOUT: u64 = 300;

    fn cfg(id: ServerId) -> NodeConfig {
        NodeConfig { claim_timeout: CLAIM_TIMEOUT, answer_cache: 100, ..NodeConfig::simulated(id, &[1, 2, 3]) }
    }

    fn client() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 20_000))
    }

    fn rid() -> RequestId {
        RequestId { client: 7, seq: 1 }
    }

    fn register() -> Op {
        Op::Register { name: "alice".into() }
    }

    /// A node that has heard both others announce load 0 (so it is ready and ranks first).
    fn node(id: ServerId) -> Node {
        let mut n = Node::new(cfg(id), 0, Directory::default(), Rng::new(id as u64));
        for s in [1, 2, 3].into_iter().filter(|&s| s != id) {
            let load =
                Msg::Load { from: s, load: 0, work: 0, digest: 0, epoch: 10 + s as u64, token: false, ready: true };
            n.step(1, Input::Message { from: Peer::Server(s), msg: load });
        }
        n
    }

    #[test]
    fn a_growing_queue_is_announced_before_the_periodic_multicast() {
        let mut n = node(1);
        for s in [2, 3] {
            // The others shut down cleanly: server 1 alone is the majority.
            let load = Msg::Load {
                from: s,
                load: FAILED,
                work: 0,
                digest: 0,
                epoch: 10 + s as u64,
                token: false,
                ready: true,
            };
            n.step(2, Input::Message { from: Peer::Server(s), msg: load });
        }
        let loads =
            |outs: &[Output]| outs.iter().filter(|o| matches!(o, Output::Send { msg: Msg::Load { .. }, .. })).count();
        let secret = known_user(&mut n);
        for seq in 1..=EARLY_ANNOUNCE_WORK as u64 {
            let req = Msg::Request {
                rid: RequestId { client: 7, seq },
                op: encrypt(RequestId { client: 7, seq }, &secret, 10),
            };
            let outs = n.step(10, Input::Message { from: Peer::Client(client()), msg: req });
            assert!(outs.iter().any(|o| matches!(o, Output::Execute { .. })), "executed at once");
        }
        assert_eq!(loads(&n.tick(20)), 0, "not before EARLY_ANNOUNCE_MS");
        let outs = n.tick(EARLY_ANNOUNCE_MS + 1);
        assert_eq!(loads(&outs), 2, "announced to both others");
        assert!(outs.iter().any(|o| matches!(o, Output::Send { msg: Msg::Load { work: 3, .. }, .. })));
        assert_eq!(loads(&n.tick(EARLY_ANNOUNCE_MS * 3)), 0, "only when the queue moved again");
    }

    /// Puts user "victor" in the node's directory (as a replicated record); returns its secret.
    fn known_user(n: &mut Node) -> String {
        let secret = "5e".repeat(32);
        let rec = UserRecord { name: "victor".into(), secret: secret.clone(), ..record(2, "") };
        n.step(2, Input::Message { from: Peer::Server(2), msg: Msg::Record { from: 2, record: rec } });
        secret
    }

    /// victor's `encrypt` of `len` bytes, signed with `secret` at node time 10.
    fn encrypt(rid: RequestId, secret: &str, len: u64) -> Op {
        let mut op = Op::Encrypt { owner: "victor".into(), auth: Default::default(), len };
        common::auth::sign_request(&mut op, rid, &common::auth::secret_bytes(secret), SIM_WALL_BASE + 10);
        op
    }

    #[test]
    fn forged_and_stale_requests_are_answered_with_an_error_and_never_executed() {
        let mut n = node(1);
        for s in [2, 3] {
            let load = Msg::Load {
                from: s,
                load: FAILED,
                work: 0,
                digest: 0,
                epoch: 10 + s as u64,
                token: false,
                ready: true,
            };
            n.step(2, Input::Message { from: Peer::Server(s), msg: load });
        }
        let secret = known_user(&mut n);
        let cases = [
            ("bad tag", encrypt(RequestId { client: 8, seq: 1 }, &"00".repeat(32), 10), 10),
            ("replay", encrypt(RequestId { client: 8, seq: 2 }, &secret, 10), 10 + 31_000),
        ];
        for (seq, (why, op, now)) in cases.into_iter().enumerate() {
            let rid = RequestId { client: 8, seq: seq as u64 + 1 };
            let outs = n.step(now, Input::Message { from: Peer::Client(client()), msg: Msg::Request { rid, op } });
            assert!(!outs.iter().any(|o| matches!(o, Output::Execute { .. })), "{why}: not executed");
            let refused = outs.iter().any(
                |o| matches!(o, Output::Send { msg: Msg::Reply(Reply { result: Err(e), .. }), .. } if e.contains(why)),
            );
            assert!(refused, "{why}: the client is told: {outs:?}");
        }
    }

    /// The same server restarted from what it saved.
    fn restart(n: &Node, now: u64) -> Node {
        Node::new(cfg(n.id()), now, n.directory().clone(), Rng::new(99))
    }

    fn from(n: &mut Node, now: u64, s: ServerId, msg: Msg) -> Vec<Msg> {
        sent(n.step(now, Input::Message { from: Peer::Server(s), msg }))
    }

    /// The messages sent, batches opened (a batch is only how they travel).
    fn sent(outs: Vec<Output>) -> Vec<Msg> {
        outs.into_iter()
            .flat_map(|o| match o {
                Output::Send { msg: Msg::Batch { msgs, .. }, .. } => msgs,
                Output::Send { msg, .. } => vec![msg],
                _ => vec![],
            })
            .collect()
    }

    fn reply(server: ServerId, token: &str) -> Reply {
        let answer = Answer::Registered { user_id: 1, name: "alice".into(), secret: token.into() };
        Reply { rid: rid(), server, result: Ok(answer) }
    }

    fn record(server: ServerId, token: &str) -> UserRecord {
        UserRecord {
            name: "alice".into(),
            user_id: 1,
            secret: token.into(),
            addr: None,
            online: false,
            images: vec![],
            version: Version { counter: 5, server },
            created_by: rid(),
            inbox: vec![],
        }
    }

    fn done(by: ServerId, round: u32, token: &str) -> Msg {
        Msg::Done { rid: rid(), by, round, reply: reply(by, token), records: vec![record(by, token)] }
    }

    fn claim(by: ServerId, round: u32) -> Msg {
        Msg::Claim { rid: rid(), by, round, op: register(), reply_to: client(), first: true }
    }

    fn grant(from: ServerId, round: u32) -> Msg {
        Msg::ClaimAck { rid: rid(), from, granted: true, holder: None, round, firm: false, reply: None, record: None }
    }

    /// Node 1 wins the client's request and claims it in round 1.
    fn claiming_node() -> Node {
        let mut n = node(1);
        let out = sent(n.step(
            2,
            Input::Message { from: Peer::Client(client()), msg: Msg::Request { rid: rid(), op: register() } },
        ));
        assert!(out.iter().any(|m| matches!(m, Msg::Claim { round: 1, .. })), "{out:?}");
        n
    }

    fn proposals(out: &[Msg]) -> Vec<(u32, Reply)> {
        out.iter()
            .filter_map(|m| match m {
                Msg::Done { round, reply, .. } => Some((*round, reply.clone())),
                _ => None,
            })
            .collect()
    }

    /// The announcement of a decision that wrote nothing, by `by`, for request `seq`.
    fn unhurried(by: ServerId, seq: u64) -> Msg {
        let rid = RequestId { client: 7, seq };
        let reply = Reply { rid, server: by, result: Ok(Answer::Encrypted { len: 10, transfer: seq }) };
        Msg::Done { rid, by, round: DECIDED, reply, records: vec![] }
    }

    fn decided_here(n: &Node, seq: u64) -> bool {
        n.requests.get(&RequestId { client: 7, seq }).is_some_and(|e| e.state.decided().is_some())
    }

    #[test]
    fn decisions_that_wrote_nothing_wait_to_ride_along_or_go_together_later() {
        let mut n = node(2);
        let batch = Msg::Batch { from: 1, msgs: vec![unhurried(1, 1), unhurried(1, 2)] };
        assert!(from(&mut n, 5, 1, batch).is_empty(), "the acknowledgements wait");
        assert!(decided_here(&n, 1) && decided_here(&n, 2), "both decisions learnt");
        // The datagrams a step sends, batches left closed.
        let datagrams = |outs: Vec<Output>| -> Vec<Msg> {
            outs.into_iter()
                .filter_map(|o| match o {
                    Output::Send { msg, .. } => Some(msg),
                    _ => None,
                })
                .collect()
        };
        let acks = |m: &Msg| match m {
            Msg::Batch { from: 2, msgs } => {
                msgs.iter().filter(|a| matches!(a, Msg::DoneAck { accepted: true, round: DECIDED, .. })).count()
            }
            _ => 0,
        };
        assert!(datagrams(n.tick(5 + LATER_WAIT_MS - 1)).is_empty(), "not due yet");
        let out = datagrams(n.tick(5 + LATER_WAIT_MS));
        assert_eq!(out.iter().map(acks).collect::<Vec<_>>(), vec![2], "one datagram, both acks: {out:?}");
        assert!(datagrams(n.tick(5 + LATER_WAIT_MS + 1)).is_empty(), "sent once");
        // Waiting acknowledgements ride ahead of the next message to their server.
        from(&mut n, 30, 1, unhurried(1, 5));
        let out = datagrams(n.step(31, Input::Message { from: Peer::Server(1), msg: claim(1, 1) }));
        match &out[..] {
            [Msg::Batch { from: 2, msgs }] => {
                assert!(matches!(msgs[..], [Msg::DoneAck { round: DECIDED, .. }, Msg::ClaimAck { .. }]), "{msgs:?}");
            }
            other => panic!("expected the ack to ride with the vote: {other:?}"),
        }
        assert!(datagrams(n.tick(31 + LATER_WAIT_MS)).is_empty(), "nothing left to send");
        // A batch inside a batch, and a message naming another sender than the batch's, are dropped.
        let nested =
            Msg::Batch { from: 1, msgs: vec![Msg::Batch { from: 1, msgs: vec![unhurried(1, 3)] }, unhurried(3, 4)] };
        let outs = n.step(8, Input::Message { from: Peer::Server(1), msg: nested });
        let logged = outs.iter().filter(|o| matches!(o, Output::Log(l) if l.starts_with("dropped"))).count();
        assert_eq!(logged, 2, "{outs:?}");
        assert!(!decided_here(&n, 3) && !decided_here(&n, 4));
    }

    #[test]
    fn a_restarted_server_still_answers_claims_with_the_decided_reply() {
        let mut n = node(1);
        from(&mut n, 5, 2, claim(2, 1));
        assert!(matches!(from(&mut n, 6, 2, done(2, 1, "t2"))[0], Msg::DoneAck { accepted: true, .. }));
        from(&mut n, 7, 2, done(2, DECIDED, "t2"));
        let mut r = restart(&n, 100);
        // A server that missed everything claims in a higher round: it must learn the decision.
        let out = from(&mut r, 101, 3, claim(3, 2));
        assert!(
            matches!(&out[0], Msg::ClaimAck { granted: false, reply: Some(rep), .. } if *rep == reply(2, "t2")),
            "{out:?}"
        );
    }

    #[test]
    fn a_restarted_server_reports_what_it_accepted_and_keeps_its_promises() {
        let mut n = node(1);
        from(&mut n, 5, 2, claim(2, 1));
        from(&mut n, 6, 2, done(2, 1, "t2"));
        let mut r = restart(&n, 100);
        let out = from(&mut r, 101, 3, claim(3, 2));
        assert!(
            matches!(&out[0], Msg::ClaimAck { granted: true, round: 2, holder: Some(1), reply: Some(rep), .. } if *rep == reply(2, "t2")),
            "the vote reports the accepted proposal and its round: {out:?}"
        );
        let mut r = restart(&r, 200);
        let out = from(&mut r, 201, 2, done(2, 1, "t2"));
        assert!(matches!(out[0], Msg::DoneAck { accepted: false, round: 2, .. }), "round 2 was promised: {out:?}");
        let out = from(&mut r, 202, 2, claim(2, 2));
        assert!(matches!(out[0], Msg::ClaimAck { granted: false, holder: Some(3), .. }), "one vote per round: {out:?}");
    }

    #[test]
    fn only_the_first_responders_answer_a_first_claim_and_get_the_proposal() {
        // Server 1 claims; with three servers its quorum needs one other vote: server 2's.
        let claim = Msg::Claim { rid: rid(), by: 1, round: 1, op: register(), reply_to: client(), first: true };
        let mut n3 = node(3);
        assert!(from(&mut n3, 2, 1, claim.clone()).is_empty(), "server 3 grants silently the first time");
        let out = from(&mut n3, 3, 1, claim.clone());
        assert!(matches!(out[..], [Msg::ClaimAck { granted: true, round: 1, .. }]), "a repeat is answered: {out:?}");
        let mut n2 = node(2);
        let out = from(&mut n2, 2, 1, claim);
        assert!(
            matches!(out[..], [Msg::ClaimAck { granted: true, round: 1, .. }]),
            "server 2 answers at once: {out:?}"
        );
        // The proposal goes to server 2 alone; a retransmission reaches whoever has not accepted.
        let mut n = claiming_node();
        let outs = n.step(3, Input::Message { from: Peer::Server(2), msg: grant(2, 1) });
        let to: Vec<Peer> = outs
            .iter()
            .filter_map(|o| match o {
                Output::Send { to, msg: Msg::Done { .. } } => Some(*to),
                _ => None,
            })
            .collect();
        assert_eq!(to, vec![Peer::Server(2)]);
        let again = sent(n.tick(3 + 40));
        assert_eq!(proposals(&again).len(), 2, "retransmitted to both: {again:?}");
    }

    #[test]
    fn a_claim_reaches_the_other_voters_later_and_not_at_all_once_decided() {
        let claim_to = |outs: &[Output]| -> Vec<ServerId> {
            let mut to: Vec<ServerId> = outs
                .iter()
                .filter_map(|o| match o {
                    Output::Send { to: Peer::Server(s), msg } => Some((*s, msg)),
                    _ => None,
                })
                .filter(|(_, m)| match m {
                    Msg::Batch { msgs, .. } => msgs.iter().any(|m| matches!(m, Msg::Claim { .. })),
                    m => matches!(m, Msg::Claim { .. }),
                })
                .map(|(s, _)| s)
                .collect();
            to.sort_unstable();
            to
        };
        let request = Msg::Request { rid: rid(), op: register() };
        let mut n = node(1);
        let outs = n.step(2, Input::Message { from: Peer::Client(client()), msg: request.clone() });
        assert_eq!(claim_to(&outs), vec![2], "at once to the first responder only: {outs:?}");
        assert_eq!(claim_to(&n.tick(2 + LATER_WAIT_MS)), vec![3], "the other voter gets it after a while");
        // Decided before it left: server 3 hears the decision, never the claim.
        let mut n = node(1);
        n.step(2, Input::Message { from: Peer::Client(client()), msg: request });
        let mut outs = n.step(3, Input::Message { from: Peer::Server(2), msg: grant(2, 1) });
        let accepted = Msg::DoneAck { rid: rid(), from: 2, accepted: true, holder: None, round: 1, reply: None };
        outs.extend(n.step(4, Input::Message { from: Peer::Server(2), msg: accepted }));
        outs.extend(n.tick(4 + LATER_WAIT_MS));
        assert!(claim_to(&outs).is_empty(), "{outs:?}");
        let to_3: Vec<&Msg> = outs
            .iter()
            .filter_map(|o| match o {
                Output::Send { to: Peer::Server(3), msg } => Some(msg),
                _ => None,
            })
            .collect();
        assert!(matches!(to_3[..], [Msg::Done { round: DECIDED, .. }]), "server 3 gets only the decision: {to_3:?}");
    }

    #[test]
    fn a_voter_answers_at_once_when_the_first_responder_went_quiet() {
        let claim = Msg::Claim { rid: rid(), by: 1, round: 1, op: register(), reply_to: client(), first: true };
        let mut n3 = node(3);
        // Server 2 was last heard at time 1: by time 200 it no longer counts as a first responder.
        let out = from(&mut n3, 200, 1, claim);
        assert!(matches!(out[..], [Msg::ClaimAck { granted: true, round: 1, .. }]), "{out:?}");
    }

    #[test]
    fn an_abandoned_execution_writes_nothing() {
        let mut n = claiming_node();
        let out = from(&mut n, 3, 2, grant(2, 1));
        assert_eq!(proposals(&out).len(), 1, "executed and proposed to server 2, the first responder: {out:?}");
        assert!(n.directory().get("alice").is_none(), "nothing is written before the decision");
        let refusal = Msg::DoneAck { rid: rid(), from: 2, accepted: false, holder: Some(3), round: 5, reply: None };
        from(&mut n, 4, 2, refusal);
        assert!(n.directory().get("alice").is_none());
        // Server 3 decides its own execution: that is the record everybody keeps.
        from(&mut n, 10, 3, done(3, DECIDED, "t3"));
        assert_eq!(n.directory().get("alice").map(|r| r.secret.as_str()), Some("t3"));
    }

    #[test]
    fn a_claimer_proposes_the_reported_accepted_reply_instead_of_executing() {
        let mut n = claiming_node();
        let report = Msg::ClaimAck {
            rid: rid(),
            from: 2,
            granted: true,
            holder: Some(1),
            round: 1,
            firm: false,
            reply: Some(reply(3, "t3")),
            record: Some(record(3, "t3")),
        };
        let out = from(&mut n, 3, 2, report);
        assert_eq!(proposals(&out), vec![(1, reply(3, "t3"))], "{out:?}");
        assert!(n.executions.is_empty(), "no second execution");
    }

    #[test]
    fn a_late_vote_for_an_earlier_round_does_not_count() {
        let mut n = claiming_node();
        // Server 2 promised round 1 to server 3, which is silent: claim higher.
        let refusal = Msg::ClaimAck {
            rid: rid(),
            from: 2,
            granted: false,
            holder: None,
            round: 1,
            firm: false,
            reply: None,
            record: None,
        };
        let out = from(&mut n, 3, 2, refusal);
        assert!(out.iter().any(|m| matches!(m, Msg::Claim { round: 2, .. })), "{out:?}");
        assert!(proposals(&from(&mut n, 4, 3, grant(3, 1))).is_empty(), "a vote for round 1 is not one for round 2");
        assert_eq!(proposals(&from(&mut n, 5, 3, grant(3, 2))).len(), 1);
    }

    #[test]
    fn a_majority_of_acceptances_decides_whatever_comes_later() {
        let mut n = claiming_node();
        from(&mut n, 3, 2, grant(2, 1));
        let accepted = Msg::DoneAck { rid: rid(), from: 2, accepted: true, holder: None, round: 1, reply: None };
        let out = from(&mut n, 4, 2, accepted);
        assert!(proposals(&out).iter().all(|(r, _)| *r == DECIDED) && !out.is_empty(), "{out:?}");
        assert!(n.directory().get("alice").is_some(), "the decider applies the write");
        let refusal = Msg::DoneAck { rid: rid(), from: 3, accepted: false, holder: Some(3), round: 7, reply: None };
        from(&mut n, 5, 3, refusal);
        let ack = Msg::DoneAck { rid: rid(), from: 2, accepted: true, holder: None, round: DECIDED, reply: None };
        let out = n.step(6, Input::Message { from: Peer::Server(2), msg: ack });
        let out = [sent(out), sent(n.tick(6 + CLAIM_TIMEOUT))].concat();
        assert!(out.iter().any(|m| matches!(m, Msg::Reply(r) if r.server == 1)), "the client is answered: {out:?}");
    }

    #[test]
    fn a_claimer_does_not_wait_for_a_lower_round() {
        let mut n = claiming_node();
        let refusal = Msg::ClaimAck {
            rid: rid(),
            from: 2,
            granted: false,
            holder: Some(2),
            round: 0,
            firm: true,
            reply: None,
            record: None,
        };
        from(&mut n, 3, 2, refusal);
        assert_eq!(proposals(&from(&mut n, 4, 3, grant(3, 1))).len(), 1, "still claiming round 1");
    }

    #[test]
    fn only_servers_silent_since_the_claim_are_suspected() {
        let mut n = claiming_node();
        let load = Msg::Load { from: 3, load: 0, work: 0, digest: 0, epoch: 13, token: false, ready: true };
        from(&mut n, 100, 3, load);
        n.tick(2 + CLAIM_TIMEOUT);
        assert!(n.table.is_live(2 + CLAIM_TIMEOUT, 3), "server 3 spoke after the claim began");
        assert!(!n.table.is_live(2 + CLAIM_TIMEOUT, 2), "server 2 has been silent since");
    }
}
