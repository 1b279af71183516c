//! The server as a state machine: `step(now, input)` and `tick(now)` return the messages to
//! send and the work to start. No sockets, threads or clocks inside: the shell (`runtime.rs`)
//! moves datagrams and time, the simulation tests drive it directly.
//!
//! Per request the protocol is (a single-decree Paxos with the load election as leader hint):
//! 1. every live server receives the client's request and ranks the live servers for it
//!    (least effective load, ties to the lowest id); the winner claims it in round 1;
//! 2. a claim needs votes from a majority of the servers that have not announced 999 (its own
//!    included). A server votes for the first claimer of a round and for any later round; a
//!    claimer gives its own vote to a lower-id claimer of the same round. Majorities overlap,
//!    so two servers never both hold a round's majority — even when load tables disagree;
//! 3. the holder executes the request, then commits: `Done` with the reply and the changed
//!    directory records to every server; once a majority accepts, the client gets the reply.
//!    A server that voted for a later round refuses an older commit, so a holder that was
//!    presumed dead cannot answer after someone took over;
//! 4. if no claim comes within the claim timeout, the next server in the ranking claims; if the
//!    holder fails (999, silent, or restarted), the next live server claims in a higher round.
//!    A server that already accepted a commit answers any claim with that reply, which the
//!    claimer adopts instead of executing again: one request, one answer.
//!
//! Availability: a majority of the servers that have not announced 999 must be reachable. A
//! server isolated alone never answers, so a healed partition never yields a second answer;
//! servers that shut down cleanly (announcing 999) leave the majority to the others.

use crate::directory::Directory;
use crate::election::{load_figure, LoadTable, Policy, FAILED};
use crate::failure::{FailureSim, SimAction};
use crate::service;
use common::config::{ClusterConfig, ServerId};
use common::protocol::{Answer, Msg, Op, PeerView, Reply, RequestId, ServerStatus, UserRecord};
use common::rng::Rng;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;

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
}

impl NodeConfig {
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
        }
    }
}

/// Something that happened to the node.
#[derive(Debug, Clone)]
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
    /// The process is stopping: announce 999.
    Shutdown,
}

/// Something the shell must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send a message.
    Send { to: Peer, msg: Msg },
    /// Run a heavy request on the worker pool, then feed back `Input::Executed`.
    Execute { rid: RequestId, op: Op, reply_to: SocketAddr },
    /// A line for the log.
    Log(String),
}

#[derive(Debug, Clone)]
enum State {
    /// Seen, not held by anyone we know of.
    Waiting,
    /// We voted for `holder` in `round`.
    Claimed { holder: ServerId, round: u32 },
    /// We claim it in `round`; `votes` granted so far, `answered` who replied at all.
    Claiming { round: u32, votes: BTreeSet<ServerId>, answered: BTreeSet<ServerId>, since: u64, last: u64 },
    /// We hold a majority and execute it.
    Executing { round: u32 },
    /// We executed it and wait for a majority to accept the commit.
    Committing { round: u32, reply: Reply, records: Vec<UserRecord>, acks: BTreeSet<ServerId>, since: u64, last: u64 },
    /// Answered; the reply is kept for retries and takeovers.
    Done { reply: Reply, by: ServerId },
}

#[derive(Debug, Clone)]
struct Entry {
    op: Option<Op>,
    reply_to: Option<SocketAddr>,
    seen: u64,
    rank: Vec<ServerId>,
    state: State,
    holder: Option<ServerId>,
    max_round: u32,
}

impl Entry {
    fn new(op: Option<Op>, reply_to: Option<SocketAddr>, now: u64, rank: Vec<ServerId>) -> Self {
        Entry { op, reply_to, seen: now, rank, state: State::Waiting, holder: None, max_round: 0 }
    }
}

/// One server's protocol state.
pub struct Node {
    cfg: NodeConfig,
    table: LoadTable,
    dir: Directory,
    requests: HashMap<RequestId, Entry>,
    active: BTreeSet<RequestId>,
    finished: VecDeque<(u64, RequestId)>,
    rng: Rng,
    out: Vec<Output>,
    epoch: u64,
    started: u64,
    heard_since_start: BTreeSet<ServerId>,
    ready: bool,
    down_until: Option<u64>,
    cpu: f32,
    rss_kb: u64,
    dirty: bool,
    mismatches: BTreeMap<ServerId, u32>,
    failure: FailureSim,
    handled: u64,
    handled_by_kind: BTreeMap<&'static str, u64>,
    /// Requests executed here, in order (only with `record_executions`).
    pub executions: Vec<RequestId>,
}

impl Node {
    /// A node starting at `now` with the directory it loaded from disk.
    pub fn new(cfg: NodeConfig, now: u64, dir: Directory, rng: Rng) -> Self {
        let mut rng = rng;
        let epoch = rng.next_u64() | 1;
        let table = LoadTable::new(cfg.id, &cfg.servers, cfg.failure_timeout, cfg.policy);
        let failure = FailureSim::new(&cfg, now);
        Node {
            cfg,
            table,
            dir,
            requests: HashMap::new(),
            active: BTreeSet::new(),
            finished: VecDeque::new(),
            rng,
            out: Vec::new(),
            epoch,
            started: now,
            heard_since_start: BTreeSet::new(),
            ready: false,
            down_until: None,
            cpu: 0.0,
            rss_kb: 0,
            dirty: false,
            mismatches: BTreeMap::new(),
            failure,
            handled: 0,
            handled_by_kind: BTreeMap::new(),
            executions: Vec::new(),
        }
    }

    /// This server's id.
    pub fn id(&self) -> ServerId {
        self.cfg.id
    }

    /// The directory (to persist or inspect).
    pub fn directory(&self) -> &Directory {
        &self.dir
    }

    /// True once since the last call if the directory changed and must be saved.
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
            peers: self
                .table
                .ids()
                .map(|id| PeerView { id, load: self.table.effective(now, id), live: self.table.is_live(now, id) })
                .collect(),
            handled: self.handled,
            handled_by_kind: self.handled_by_kind.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            users: self.dir.len(),
            online: self.dir.online().take(100).map(|u| u.name).collect(),
            tracked_requests: self.requests.len(),
            rss_kb: self.rss_kb,
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
            Input::Shutdown => {
                self.table.me_down = true;
                self.announce(now);
            }
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
                self.log(format!("failure simulation: my turn, down for {} s", ms / 1000));
                self.go_down(now, ms);
            }
            SimAction::Send(to, msg) => self.send(Peer::Server(to), msg),
            SimAction::Suspect(id) => self.table.suspect(id),
        }
        if self.is_down() {
            return std::mem::take(&mut self.out);
        }
        if !self.ready && now >= self.started + self.cfg.failure_timeout {
            self.ready = true;
        }
        let active: Vec<RequestId> = self.active.iter().copied().collect();
        for rid in active {
            self.tick_entry(now, rid);
        }
        self.evict(now);
        std::mem::take(&mut self.out)
    }

    fn log(&mut self, line: String) {
        self.out.push(Output::Log(line));
    }

    fn send(&mut self, to: Peer, msg: Msg) {
        self.out.push(Output::Send { to, msg });
    }

    fn to_servers(&mut self, ids: impl IntoIterator<Item = ServerId>, msg: &Msg) {
        for id in ids {
            self.send(Peer::Server(id), msg.clone());
        }
    }

    fn announce(&mut self, now: u64) {
        let work = self.table.outstanding(self.cfg.id);
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
        };
        let others: Vec<ServerId> = self.table.others().collect();
        self.to_servers(others, &msg);
    }

    fn go_down(&mut self, now: u64, ms: u64) {
        let was_down = self.is_down();
        self.down_until = Some(now + ms);
        if was_down {
            return;
        }
        self.table.me_down = true;
        for rid in std::mem::take(&mut self.active) {
            if let Some(e) = self.requests.remove(&rid) {
                if let Some(h) = e.holder {
                    self.table.remove_work(h);
                }
            }
        }
        self.log(format!("going DOWN for {} s: announcing 999 and ignoring all traffic", ms / 1000));
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
                other => self.log(format!("dropped {} from client {addr}: not a request", kind_of(&other))),
            },
            Peer::Server(s) => {
                if s == self.cfg.id || !self.cfg.servers.contains(&s) {
                    self.log(format!("dropped message from unknown server {s}"));
                    return;
                }
                if let Some(claimed) = sender_field(&msg) {
                    if claimed != s {
                        self.log(format!("dropped {} claiming to be from {claimed} but sent by {s}", kind_of(&msg)));
                        return;
                    }
                }
                self.table.heard(now, s);
                self.heard_since_start.insert(s);
                if !self.ready && self.table.others().all(|o| self.heard_since_start.contains(&o)) {
                    self.ready = true;
                }
                self.on_server_message(now, s, msg);
            }
        }
    }

    fn on_server_message(&mut self, now: u64, s: ServerId, msg: Msg) {
        match msg {
            Msg::Load { load, work, digest, epoch, token, .. } => {
                let restarted = self.table.set_epoch(s, epoch);
                let came_back = self.table.on_load(now, s, load, work);
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
            Msg::Claim { rid, by, round, op, reply_to } => self.on_claim(now, rid, by, round, op, reply_to),
            Msg::ClaimAck { rid, from, granted, holder, round, firm, reply, record } => {
                if let Some(record) = record {
                    if self.dir.apply(record) {
                        self.dirty = true;
                    }
                }
                self.on_claim_ack(now, rid, from, granted, holder, round, firm, reply)
            }
            Msg::Done { rid, by, round, reply, records } => {
                if self.ready {
                    let ack = self.on_done(now, rid, by, round, reply, records);
                    self.send(Peer::Server(s), ack);
                }
            }
            Msg::DoneAck { rid, from, accepted, holder, round, reply } => {
                self.on_done_ack(now, rid, from, accepted, holder, round, reply)
            }
            Msg::Record { record, .. } => {
                if self.dir.apply(record) {
                    self.dirty = true;
                }
            }
            Msg::Token { round, .. } => {
                self.send(Peer::Server(s), Msg::TokenAck { from: self.cfg.id, round });
                self.failure.on_token(now, round);
            }
            Msg::TokenAck { from, round } => self.failure.on_token_ack(from, round),
            other => self.log(format!("dropped {} from server {s}: not a server message", kind_of(&other))),
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
            if let State::Done { reply, by } = &e.state {
                let (reply, by) = (reply.clone(), *by);
                if by == self.cfg.id || !self.table.is_live(now, by) {
                    self.send(Peer::Client(addr), Msg::Reply(reply));
                }
            }
            return;
        }
        if !self.ready {
            return;
        }
        let rank = self.table.ranking(now, rid);
        let mine = rank.first() == Some(&self.cfg.id);
        self.requests.insert(rid, Entry::new(Some(op), Some(addr), now, rank));
        self.active.insert(rid);
        if mine {
            self.start_claim(now, rid);
        }
    }

    /// Moves an entry to `state`, keeping the per-server outstanding counts right.
    fn set_state(&mut self, now: u64, rid: RequestId, state: State) {
        let me = self.cfg.id;
        let Some(e) = self.requests.get_mut(&rid) else { return };
        let holder = match &state {
            State::Waiting | State::Done { .. } => None,
            State::Claimed { holder, .. } => Some(*holder),
            State::Claiming { .. } | State::Executing { .. } | State::Committing { .. } => Some(me),
        };
        let round = match &state {
            State::Claimed { round, .. }
            | State::Claiming { round, .. }
            | State::Executing { round }
            | State::Committing { round, .. } => *round,
            _ => 0,
        };
        e.max_round = e.max_round.max(round);
        let old = e.holder;
        e.holder = holder;
        let done = matches!(state, State::Done { .. });
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
            self.finished.push_back((now, rid));
        } else {
            self.active.insert(rid);
        }
    }

    fn start_claim(&mut self, now: u64, rid: RequestId) {
        let Some(e) = self.requests.get(&rid) else { return };
        let (Some(op), Some(reply_to)) = (e.op.clone(), e.reply_to) else { return };
        let round = e.max_round + 1;
        let state = State::Claiming { round, votes: BTreeSet::new(), answered: BTreeSet::new(), since: now, last: now };
        self.set_state(now, rid, state);
        if self.table.quorum() <= 1 {
            self.begin_execution(now, rid, round);
            return;
        }
        let claim = Msg::Claim { rid, by: self.cfg.id, round, op, reply_to };
        self.to_servers(self.table.voters(), &claim);
    }

    /// What this server answers to a claim of `rid` by `by` in `round`, updating its vote.
    fn vote(&mut self, now: u64, rid: RequestId, by: ServerId, round: u32) -> Msg {
        let me = self.cfg.id;
        let refuse = |holder: ServerId, round: u32, firm: bool, reply: Option<Reply>| Msg::ClaimAck {
            rid,
            from: me,
            granted: false,
            holder: Some(holder),
            round,
            firm,
            reply,
            record: None,
        };
        let Some(e) = self.requests.get(&rid) else { return refuse(me, 0, false, None) };
        let record = e.op.as_ref().and_then(|op| op.user()).and_then(|u| self.dir.get(u)).cloned();
        let grant =
            Msg::ClaimAck { rid, from: me, granted: true, holder: None, round, firm: false, reply: None, record };
        match &e.state {
            State::Done { reply, by: d } => refuse(*d, 0, true, Some(reply.clone())),
            State::Waiting => {
                self.set_state(now, rid, State::Claimed { holder: by, round });
                grant
            }
            State::Claimed { holder, round: r } => {
                if round > *r || (round == *r && *holder == by) {
                    self.set_state(now, rid, State::Claimed { holder: by, round });
                    grant
                } else {
                    refuse(*holder, *r, false, None)
                }
            }
            State::Claiming { round: r, .. } => {
                if round > *r || (round == *r && by < me) {
                    self.log(format!("yielding {rid} to server {by} (round {round})"));
                    self.set_state(now, rid, State::Claimed { holder: by, round });
                    grant
                } else {
                    refuse(me, *r, false, None)
                }
            }
            State::Executing { round: r } | State::Committing { round: r, .. } => refuse(me, *r, true, None),
        }
    }

    fn on_claim(&mut self, now: u64, rid: RequestId, by: ServerId, round: u32, op: Op, reply_to: SocketAddr) {
        if !self.ready {
            return; // a restarted server has forgotten its votes: it votes again once resynced
        }
        if !self.requests.contains_key(&rid) {
            let rank = self.table.ranking(now, rid);
            self.requests.insert(rid, Entry::new(Some(op), Some(reply_to), now, rank));
            self.active.insert(rid);
        } else if let Some(e) = self.requests.get_mut(&rid) {
            e.reply_to.get_or_insert(reply_to);
            if e.op.is_none() {
                e.op = Some(op);
            }
        }
        let answer = self.vote(now, rid, by, round);
        self.send(Peer::Server(by), answer);
    }

    #[allow(clippy::too_many_arguments)]
    fn on_claim_ack(
        &mut self,
        now: u64,
        rid: RequestId,
        from: ServerId,
        granted: bool,
        holder: Option<ServerId>,
        their_round: u32,
        firm: bool,
        reply: Option<Reply>,
    ) {
        let me = self.cfg.id;
        let quorum = self.table.quorum();
        let Some(e) = self.requests.get_mut(&rid) else { return };
        let State::Claiming { round, votes, answered, .. } = &mut e.state else { return };
        let round = *round;
        answered.insert(from);
        if let Some(reply) = reply {
            self.log(format!("request {rid} was already answered by server {}: adopting that reply", reply.server));
            self.finalize(now, rid, reply);
            return;
        }
        if granted {
            votes.insert(from);
            if votes.len() + 1 >= quorum {
                self.begin_execution(now, rid, round);
            }
            return;
        }
        let live = holder.filter(|&h| h != me && self.table.is_live(now, h));
        match live {
            Some(h) if firm || their_round > round || (their_round == round && h < me) => {
                self.set_state(now, rid, State::Claimed { holder: h, round: their_round.max(round) });
            }
            Some(_) => {} // a higher id of my round: it yields to me when my claim reaches it
            None if their_round >= round => {
                // Promised to a dead holder or to a round of mine I no longer run: go higher.
                if let Some(e) = self.requests.get_mut(&rid) {
                    e.max_round = e.max_round.max(their_round);
                }
                self.start_claim(now, rid);
            }
            None => {}
        }
    }

    fn begin_execution(&mut self, now: u64, rid: RequestId, round: u32) {
        self.set_state(now, rid, State::Executing { round });
        let Some(e) = self.requests.get(&rid) else { return };
        let (Some(op), Some(reply_to)) = (e.op.clone(), e.reply_to) else { return };
        self.handled += 1;
        *self.handled_by_kind.entry(op.kind()).or_insert(0) += 1;
        if self.cfg.record_executions {
            self.executions.push(rid);
        }
        if op.needs_worker() {
            self.out.push(Output::Execute { rid, op, reply_to });
            return;
        }
        let outcome = service::execute(&mut self.dir, self.cfg.id, rid, &op, reply_to, &mut self.rng);
        if !outcome.changed.is_empty() {
            self.dirty = true;
        }
        let reply = Reply { rid, server: self.cfg.id, result: outcome.result };
        self.commit(now, rid, round, reply, outcome.changed);
    }

    fn on_executed(&mut self, now: u64, rid: RequestId, result: Result<Answer, String>) {
        match self.requests.get(&rid).map(|e| &e.state) {
            Some(&State::Executing { round }) => {
                let reply = Reply { rid, server: self.cfg.id, result };
                self.commit(now, rid, round, reply, vec![]);
            }
            _ => self.log(format!("result of {rid} arrived after the request moved on; dropped")),
        }
    }

    /// Sends the reply and the changed records to every server; the client gets the reply once
    /// a majority accepts.
    fn commit(&mut self, now: u64, rid: RequestId, round: u32, reply: Reply, records: Vec<UserRecord>) {
        if self.table.quorum() <= 1 {
            self.finalize(now, rid, reply);
            return;
        }
        let done = Msg::Done { rid, by: self.cfg.id, round, reply: reply.clone(), records: records.clone() };
        self.to_servers(self.table.voters(), &done);
        self.set_state(
            now,
            rid,
            State::Committing { round, reply, records, acks: BTreeSet::new(), since: now, last: now },
        );
    }

    /// A commit is complete when a majority accepted it (safety) and every live server did, or
    /// the claim timeout passed (so the next request sees the write on whichever server runs it).
    fn commit_complete(&self, now: u64, rid: RequestId) -> bool {
        let Some(State::Committing { acks, since, .. }) = self.requests.get(&rid).map(|e| &e.state) else {
            return false;
        };
        if acks.len() + 1 < self.table.quorum() {
            return false;
        }
        now >= since + self.cfg.claim_timeout || self.table.live_others(now).iter().all(|p| acks.contains(p))
    }

    fn finalize(&mut self, now: u64, rid: RequestId, reply: Reply) {
        if let Some(addr) = self.requests.get(&rid).and_then(|e| e.reply_to) {
            self.send(Peer::Client(addr), Msg::Reply(reply.clone()));
        }
        let by = if reply.server == self.cfg.id { self.cfg.id } else { reply.server };
        self.set_state(now, rid, State::Done { reply, by });
    }

    /// A commit arrived: accept it unless this server promised a later round. (A commit of
    /// round r means its sender held a majority of round r, so nobody else can win round r.)
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
        let refuse = |holder: ServerId, round: u32, reply: Option<Reply>| Msg::DoneAck {
            rid,
            from: me,
            accepted: false,
            holder: Some(holder),
            round,
            reply,
        };
        let accept = Msg::DoneAck { rid, from: me, accepted: true, holder: None, round, reply: None };
        if !self.requests.contains_key(&rid) {
            self.requests.insert(rid, Entry::new(None, None, now, vec![]));
        }
        let Some(e) = self.requests.get(&rid) else { return refuse(me, 0, None) };
        let promised = match &e.state {
            State::Done { reply: mine, by: d } => {
                return if mine.server == reply.server { accept } else { refuse(*d, 0, Some(mine.clone())) };
            }
            State::Waiting => None,
            State::Claimed { holder, round } => Some((*holder, *round)),
            State::Claiming { round, .. } | State::Executing { round } | State::Committing { round, .. } => {
                Some((me, *round))
            }
        };
        if let Some((holder, r)) = promised {
            if round < r {
                return refuse(holder, r, None);
            }
        }
        for record in records {
            if self.dir.apply(record) {
                self.dirty = true;
            }
        }
        self.set_state(now, rid, State::Done { reply, by });
        accept
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
        let Some(e) = self.requests.get_mut(&rid) else { return };
        let State::Committing { round, reply: mine, acks, .. } = &mut e.state else { return };
        if accepted {
            acks.insert(from);
            let mine = mine.clone();
            if self.commit_complete(now, rid) {
                self.finalize(now, rid, mine);
            }
            return;
        }
        let round = *round;
        match (reply, holder) {
            (Some(theirs), _) => {
                self.log(format!("commit of {rid} refused: server {} answered it first", theirs.server));
                self.finalize(now, rid, theirs);
            }
            (None, Some(h)) if their_round > round => {
                self.log(format!("commit of {rid} refused: server {h} took it over in round {their_round}"));
                self.set_state(now, rid, State::Claimed { holder: h, round: their_round });
            }
            _ => {}
        }
    }

    /// A server failed or restarted: requests it held go back to the election.
    fn release_held_by(&mut self, now: u64, s: ServerId) {
        let held: Vec<RequestId> = self
            .active
            .iter()
            .filter(|rid| matches!(self.requests.get(rid).map(|e| &e.state), Some(State::Claimed { holder, .. }) if *holder == s))
            .copied()
            .collect();
        for rid in held {
            self.rewait(now, rid);
        }
    }

    fn rewait(&mut self, now: u64, rid: RequestId) {
        let rank = self.table.ranking(now, rid);
        if let Some(e) = self.requests.get_mut(&rid) {
            e.seen = now;
            e.rank = rank;
        }
        self.set_state(now, rid, State::Waiting);
    }

    fn tick_entry(&mut self, now: u64, rid: RequestId) {
        let me = self.cfg.id;
        let Some(e) = self.requests.get(&rid) else {
            self.active.remove(&rid);
            return;
        };
        if now.saturating_sub(e.seen) > self.cfg.answer_ttl && matches!(e.state, State::Waiting | State::Claimed { .. })
        {
            self.forget(now, rid);
            return;
        }
        match e.state.clone() {
            State::Waiting => {
                if e.op.is_none() || e.reply_to.is_none() {
                    return;
                }
                let live: Vec<ServerId> = e.rank.iter().copied().filter(|&s| self.table.is_live(now, s)).collect();
                match live.iter().position(|&s| s == me) {
                    Some(0) => self.start_claim(now, rid),
                    Some(k) if now >= e.seen + self.cfg.claim_timeout * k as u64 => self.start_claim(now, rid),
                    Some(_) => {}
                    None => self.rewait(now, rid),
                }
            }
            State::Claimed { holder, .. } => {
                if !self.table.is_live(now, holder) {
                    self.rewait(now, rid);
                }
            }
            State::Claiming { round, votes, answered, since, last } => {
                if now >= since + self.cfg.claim_timeout && answered.len() < self.table.voters().len() {
                    // Whoever stays silent is suspected: it stops winning elections until heard.
                    for p in self.table.voters() {
                        if !answered.contains(&p) {
                            self.table.suspect(p);
                        }
                    }
                }
                if now >= last + self.cfg.retransmit {
                    if let (Some(op), Some(reply_to)) = (e.op.clone(), e.reply_to) {
                        let missing: Vec<ServerId> =
                            self.table.voters().into_iter().filter(|p| !votes.contains(p)).collect();
                        self.to_servers(missing, &Msg::Claim { rid, by: me, round, op, reply_to });
                    }
                    if let Some(e) = self.requests.get_mut(&rid) {
                        if let State::Claiming { last, .. } = &mut e.state {
                            *last = now;
                        }
                    }
                }
                if votes.len() + 1 >= self.table.quorum() {
                    self.begin_execution(now, rid, round);
                }
            }
            State::Committing { round, reply, records, acks, last, .. } => {
                if self.commit_complete(now, rid) {
                    self.finalize(now, rid, reply);
                } else if now >= last + self.cfg.retransmit {
                    let missing: Vec<ServerId> =
                        self.table.voters().into_iter().filter(|p| !acks.contains(p)).collect();
                    self.to_servers(
                        missing,
                        &Msg::Done { rid, by: me, round, reply: reply.clone(), records: records.clone() },
                    );
                    if let Some(e) = self.requests.get_mut(&rid) {
                        if let State::Committing { last, .. } = &mut e.state {
                            *last = now;
                        }
                    }
                }
            }
            State::Executing { .. } | State::Done { .. } => {}
        }
    }

    fn forget(&mut self, now: u64, rid: RequestId) {
        self.set_state(now, rid, State::Done { reply: stale_reply(rid, self.cfg.id), by: self.cfg.id });
        self.requests.remove(&rid);
    }

    fn evict(&mut self, now: u64) {
        while let Some(&(at, rid)) = self.finished.front() {
            let too_many = self.requests.len() > self.cfg.answer_cache;
            if !too_many && now.saturating_sub(at) <= self.cfg.answer_ttl {
                break;
            }
            self.finished.pop_front();
            if matches!(self.requests.get(&rid).map(|e| &e.state), Some(State::Done { .. })) {
                self.requests.remove(&rid);
            }
        }
        // Waiting entries beyond the bound (a flood of requests nobody claims) go too.
        while self.active.len() > self.cfg.answer_cache {
            let Some(rid) = self.active.iter().next().copied() else {
                break;
            };
            self.set_state(now, rid, State::Done { reply: stale_reply(rid, self.cfg.id), by: self.cfg.id });
            self.requests.remove(&rid);
        }
    }
}

fn stale_reply(rid: RequestId, me: ServerId) -> Reply {
    Reply { rid, server: me, result: Err("forgotten".into()) }
}

/// The server id a server message says it is from, to check against the sender's address.
fn sender_field(msg: &Msg) -> Option<ServerId> {
    match msg {
        Msg::Load { from, .. }
        | Msg::ClaimAck { from, .. }
        | Msg::DoneAck { from, .. }
        | Msg::Record { from, .. }
        | Msg::Token { from, .. }
        | Msg::TokenAck { from, .. } => Some(*from),
        Msg::Claim { by, .. } | Msg::Done { by, .. } => Some(*by),
        _ => None,
    }
}

/// A message's kind, for logs.
pub fn kind_of(msg: &Msg) -> &'static str {
    match msg {
        Msg::Request { .. } => "Request",
        Msg::Reply(_) => "Reply",
        Msg::Accepted { .. } => "Accepted",
        Msg::Load { .. } => "Load",
        Msg::Claim { .. } => "Claim",
        Msg::ClaimAck { .. } => "ClaimAck",
        Msg::Done { .. } => "Done",
        Msg::DoneAck { .. } => "DoneAck",
        Msg::Record { .. } => "Record",
        Msg::Token { .. } => "Token",
        Msg::TokenAck { .. } => "TokenAck",
    }
}
