//! Phase 1 of a request's Paxos instance (see the story in `node/mod.rs`): a request arrives
//! and is ranked, the claim (`Prepare`), the votes (`Promise`, carrying the voter's
//! accepted proposal), and the quorum that lets the claimer go on. Each request's state
//! changes in one place, `set_state`, which also saves the vote before anything depends on it.

use super::*;

impl Node {
    pub(super) fn on_request(&mut self, now: u64, addr: SocketAddr, rid: RequestId, op: Op) {
        if op == Op::Status {
            let reply = Reply { rid, server: self.cfg.id, result: Ok(Answer::Status(Box::new(self.status(now)))) };
            self.send(Peer::Client(addr), Msg::Reply(reply));
            return;
        }
        // A request whose id is its meaning (a view's slot) is checked before any vote: a forged
        // or stale copy is answered here and never decided, so it cannot take the slot's one
        // decision from its owner.
        if let Err(e) = ops::admit(&self.dir, rid, &op, self.cfg.wall_base + now, self.cfg.auth_window) {
            self.log(format!("{rid}: {} refused before any vote: {e}", op.kind()));
            let reply = Reply { rid, server: self.cfg.id, result: Err(e) };
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
    pub(super) fn set_state(&mut self, now: u64, rid: RequestId, state: State) {
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

    /// Mirrors an entry's vote into the vote log, to be saved before anything is sent.
    pub(super) fn save_vote(&mut self, rid: RequestId) {
        let changed = match self.requests.get(&rid) {
            Some(e) => self.votes.set(rid, &e.vote),
            None => self.votes.set(rid, &Vote::default()),
        };
        if changed {
            self.dirty = true;
        }
    }

    /// Claims `rid` in a round above every round seen, voting for ourselves.
    pub(super) fn start_claim(&mut self, now: u64, rid: RequestId) {
        let me = self.cfg.id;
        let Some(e) = self.requests.get_mut(&rid) else { return };
        if matches!(
            e.state,
            State::Executing { .. } | State::Accepting { .. } | State::Deciding { .. } | State::Decided { .. }
        ) {
            return;
        }
        let (Some(op), Some(reply_to)) = (e.op.clone(), e.reply_to) else { return };
        let round = e.max_round.max(e.vote.round).saturating_add(1).min(MAX_ROUND);
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
        let claim = Msg::from(Prepare { rid, claimer: Claimer { by: me, round, first }, op, reply_to });
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
    pub(super) fn drop_waiting_claims(&mut self, rid: RequestId) {
        for (_, msgs) in self.later.values_mut() {
            msgs.retain(|m| !matches!(m, Msg::Prepare { rid: r, .. } if *r == rid));
        }
        self.later.retain(|_, (_, msgs)| !msgs.is_empty());
    }

    /// Our vote as a refusal names: the holder of our promise, unless that is us and we are not
    /// using the round any more (then the claimer should simply go higher).
    pub(super) fn promise_holder(&self, e: &Entry) -> Option<ServerId> {
        let mine_in_use = matches!(e.state, State::Claiming { .. } | State::Executing { .. } | State::Accepting { .. });
        (e.vote.round > 0 && (e.vote.holder != self.cfg.id || mine_in_use)).then_some(e.vote.holder)
    }

    /// What this server answers to a claim of `rid` by `claimer`, updating its vote.
    pub(super) fn vote(&mut self, now: u64, rid: RequestId, claimer: Claimer) -> Promise {
        let me = self.cfg.id;
        let Claimer { by, round, .. } = claimer;
        let answer = |round: u32, ballot: Ballot| Promise { rid, from: me, round, ballot };
        let refuse = |holder: Option<ServerId>, round: u32, firm: bool| answer(round, Ballot::Refused { holder, firm });
        let Some(e) = self.requests.get(&rid) else { return refuse(None, 0, false) };
        if let Some(reply) = e.state.decided() {
            let record = e.vote.accepted.as_ref().and_then(|p| p.records.first()).cloned();
            return answer(e.vote.round, Ballot::Decided { reply: reply.clone(), record });
        }
        let grant = match &e.state {
            State::Executing { round: r } => return refuse(Some(me), *r, true),
            State::Accepting { proposal, .. } => return refuse(Some(me), proposal.round, true),
            State::Claiming { round: r, first, .. } => {
                round > *r || (round == *r && claimer.beats(&Claimer { by: me, round: *r, first: *first }))
            }
            _ => round > e.vote.round || (round == e.vote.round && by == e.vote.holder),
        };
        if !grant {
            return refuse(self.promise_holder(e), e.vote.round, false);
        }
        // A grant echoes the claim's round (a late grant must not count for a later round) and
        // reports our accepted proposal, or else our record of the request's user.
        let report = match &e.vote.accepted {
            Some(p) => Report::Accepted { round: p.round, reply: p.reply.clone(), record: p.records.first().cloned() },
            None => Report::Record(e.op.as_ref().and_then(|op| op.user()).and_then(|u| self.dir.get(u)).cloned()),
        };
        if matches!(e.state, State::Claiming { .. }) {
            self.log(format!("yielding {rid} to server {by} (round {round})"));
        }
        if let Some(e) = self.requests.get_mut(&rid) {
            e.vote.round = round;
            e.vote.holder = by;
        }
        self.set_state(now, rid, State::Following { holder: by, round });
        answer(round, Ballot::Granted(report))
    }

    pub(super) fn on_prepare(&mut self, now: u64, prepare: Prepare) {
        let Prepare { rid, claimer, op, reply_to } = prepare;
        let by = claimer.by;
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
        let repeat = self.requests.get(&rid).is_some_and(|e| e.vote.round == claimer.round && e.vote.holder == by);
        let answer = self.vote(now, rid, claimer);
        // A grant the claimer does not wait for stays unsent the first time (the promise is
        // kept all the same); a repeat of the claim is answered.
        let granted = matches!(answer.ballot, Ballot::Granted(_));
        if granted && !repeat && !self.responders(now, by).contains(&self.cfg.id) {
            return;
        }
        self.send(Peer::Server(by), answer.into());
    }

    /// The servers whose votes a claim by `claimer` waits for first: the live servers heard
    /// from lately, after it in id order (cyclically), as many as its quorum needs besides its
    /// own vote. The others get the claim later (see `start_claim`) and grant it silently the
    /// first time; a retransmission, which goes to every voter that has not answered, reaches
    /// them. The proposal then goes to the servers that voted.
    pub(super) fn responders(&self, now: u64, claimer: ServerId) -> Vec<ServerId> {
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

    pub(super) fn on_promise(&mut self, now: u64, promise: Promise) {
        let Promise { rid, from, round: their_round, ballot } = promise;
        let me = self.cfg.id;
        let quorum = self.table.quorum();
        if let Ballot::Decided { reply, record } = ballot {
            // The voter knows the decision: adopt it, whatever we are doing.
            if let Some(record) = record {
                self.apply_record(record);
            }
            self.adopt(now, rid, reply, from);
            return;
        }
        let Some(e) = self.requests.get_mut(&rid) else { return };
        if let Ballot::Refused { .. } = ballot {
            e.max_round = e.max_round.max(their_round);
        }
        let State::Claiming { round, votes, answered, best, first, .. } = &mut e.state else { return };
        let (round, first) = (*round, *first);
        answered.insert(from);
        let (holder, firm) = match ballot {
            Ballot::Granted(report) => {
                if their_round != round {
                    return; // a vote for an earlier round of ours
                }
                match report {
                    // The voter accepted this proposal: a candidate we must propose if it is the
                    // highest-round one among our votes.
                    Report::Accepted { round: accepted_in, reply, record } => {
                        if best.as_ref().is_none_or(|b| b.round < accepted_in) {
                            *best = Some(Proposal { round: accepted_in, reply, records: record.into_iter().collect() });
                        }
                    }
                    Report::Record(Some(record)) => {
                        if self.dir.apply(record) {
                            self.dirty = true;
                        }
                    }
                    Report::Record(None) => {}
                }
                votes.insert(from);
                if votes.len() + 1 >= quorum {
                    self.on_quorum(now, rid);
                }
                return;
            }
            Ballot::Refused { holder, firm } => (holder, firm),
            Ballot::Decided { .. } => return, // adopted above
        };
        let live = holder.filter(|&h| h != me && self.table.is_live(now, h));
        match live {
            // A higher round, or an executor of our round, or a lower id of our round while we
            // claim on a re-ranking: it goes first. (Claiming as our arrival ranking's winner,
            // we keep claiming: the lower id yields when our claim reaches it, unless it claims
            // as its own arrival winner, in which case we yield when its claim reaches us.)
            Some(h) if their_round > round || (their_round == round && (firm || (h < me && !first))) => {
                self.set_state(now, rid, State::Following { holder: h, round: their_round });
            }
            // A lower round (it cannot commit past our promises) or a claimer of our round that
            // our claim beats (it yields when our claim reaches it): keep claiming.
            Some(_) => {}
            // Promised to a dead holder, or to a round of ours we no longer run: go higher.
            None if their_round >= round => self.start_claim(now, rid),
            None => {}
        }
    }

    /// A majority voted for our claim: propose the highest accepted proposal reported, or
    /// execute the request if there is none.
    pub(super) fn on_quorum(&mut self, now: u64, rid: RequestId) {
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
}
