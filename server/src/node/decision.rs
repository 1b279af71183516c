//! Phase 2 of a request's Paxos instance: executing (only when no vote reported an accepted
//! proposal), proposing (`Accept`, in the claimer's round), the acceptances (`Accepted`), the
//! `Decision` applied by every server, and the reply.

use super::*;

impl Node {
    pub(super) fn begin_execution(&mut self, now: u64, rid: RequestId, round: u32) {
        self.set_state(now, rid, State::Executing { round });
        let Some(e) = self.requests.get(&rid) else { return };
        let (Some(op), Some(reply_to)) = (e.op.clone(), e.reply_to) else { return };
        self.count_execution(now, &op);
        if self.cfg.record_executions {
            self.executions.push(rid);
        }
        let wall = self.cfg.wall_base + now;
        if let Err(e) = ops::authorize(&self.dir, rid, &op, wall, self.cfg.auth_window) {
            self.log(format!("{rid}: {} refused: {e}", op.kind()));
            let reply = Reply { rid, server: self.cfg.id, result: Err(e) };
            self.propose(now, rid, Proposal { round, reply, records: vec![] });
            return;
        }
        if op.needs_worker() {
            let key = op.signer().and_then(|u| ops::user_key(&self.dir, u, Purpose::Own));
            self.out.push(Output::Execute { rid, op, reply_to, key });
            return;
        }
        let outcome = ops::execute(&mut self.dir, self.cfg.id, rid, &op, reply_to, &mut self.keys);
        let reply = Reply { rid, server: self.cfg.id, result: outcome.result };
        self.propose(now, rid, Proposal { round, reply, records: outcome.changed });
    }

    pub(super) fn on_executed(&mut self, now: u64, rid: RequestId, result: Result<Answer, String>) {
        match self.requests.get(&rid).map(|e| &e.state) {
            Some(&State::Executing { round }) => {
                let reply = Reply { rid, server: self.cfg.id, result };
                self.propose(now, rid, Proposal { round, reply, records: vec![] });
            }
            _ => self.log(format!("result of {rid} arrived after the request moved on; dropped")),
        }
    }

    /// Accepts our own proposal and sends it to every server (Paxos accept).
    pub(super) fn propose(&mut self, now: u64, rid: RequestId, proposal: Proposal) {
        let Some(e) = self.requests.get_mut(&rid) else { return };
        e.vote.accepted = Some(proposal.clone());
        if self.table.quorum() <= 1 {
            self.decide(now, rid, proposal);
            return;
        }
        let accept = Msg::from(Accept { rid, by: self.cfg.id, proposal: proposal.clone() });
        let quorum = self.table.quorum();
        let voted = self.requests.get(&rid).map(|e| e.voted.clone()).unwrap_or_default();
        let to = if voted.len() + 1 >= quorum { voted } else { self.table.voters() };
        self.multicast(to, &accept);
        self.set_state(now, rid, State::Accepting { proposal, acks: BTreeSet::new(), last: now });
    }

    /// A majority accepted `proposal`: it is decided. Apply it, announce it, answer the client
    /// (now if nothing is written, else once a majority applied the records).
    pub(super) fn decide(&mut self, now: u64, rid: RequestId, proposal: Proposal) {
        self.drop_waiting_claims(rid);
        for record in proposal.records.clone() {
            self.apply_record(record);
        }
        let replied = proposal.records.is_empty();
        if replied {
            self.reply_to_client(rid, &proposal.reply);
        }
        let decided = Msg::from(Decision {
            rid,
            by: self.cfg.id,
            reply: proposal.reply.clone(),
            records: proposal.records.clone(),
        });
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
    pub(super) fn decision_spread(&self, now: u64, rid: RequestId) -> bool {
        let Some(State::Deciding { acks, since, .. }) = self.requests.get(&rid).map(|e| &e.state) else {
            return false;
        };
        if acks.len() + 1 < self.table.quorum() {
            return false;
        }
        now >= since + self.cfg.claim_timeout || self.table.live_others(now).iter().all(|p| acks.contains(p))
    }

    pub(super) fn finish_decision(&mut self, now: u64, rid: RequestId) {
        let Some(State::Deciding { proposal, replied, .. }) = self.requests.get(&rid).map(|e| &e.state) else { return };
        let (reply, replied) = (proposal.reply.clone(), *replied);
        if !replied {
            self.reply_to_client(rid, &reply);
        }
        self.set_state(now, rid, State::Decided { reply });
    }

    pub(super) fn reply_to_client(&mut self, rid: RequestId, reply: &Reply) {
        if let Some(addr) = self.requests.get(&rid).and_then(|e| e.reply_to) {
            self.send(Peer::Client(addr), Msg::Reply(reply.clone()));
        }
    }

    /// Records a decision learnt from another server (its announcement or its answer).
    pub(super) fn learn(&mut self, now: u64, rid: RequestId, reply: Reply, records: Vec<UserRecord>) {
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
    pub(super) fn adopt(&mut self, now: u64, rid: RequestId, reply: Reply, from: ServerId) {
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

    /// A decision arrived: apply it; returns the acknowledgement.
    pub(super) fn on_decision(&mut self, now: u64, decision: Decision) -> Accepted {
        let Decision { rid, reply, records, .. } = decision;
        self.learn(now, rid, reply, records);
        Accepted { rid, from: self.cfg.id, ack: Ack::Applied }
    }

    /// A proposal (Paxos accept) arrived; returns the acknowledgement.
    pub(super) fn on_accept(&mut self, now: u64, accept: Accept) -> Accepted {
        let Accept { rid, by, proposal } = accept;
        let me = self.cfg.id;
        let answer = |ack: Ack| Accepted { rid, from: me, ack };
        let round = proposal.round;
        self.requests.entry(rid).or_insert_with(|| Box::new(Entry::new(None, None, now, vec![])));
        let Some(e) = self.requests.get_mut(&rid) else { return answer(Ack::Refused { round: 0, holder: None }) };
        if let Some(decided) = e.state.decided() {
            return if *decided == proposal.reply {
                answer(Ack::Accepted { round })
            } else {
                answer(Ack::Decided { reply: decided.clone() })
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
            return answer(Ack::Refused { round: promised, holder });
        }
        e.vote.round = round;
        e.vote.holder = by;
        e.vote.accepted = Some(proposal);
        self.set_state(now, rid, State::Following { holder: by, round });
        answer(Ack::Accepted { round })
    }

    /// An acceptance (Paxos accepted) of our proposal or decision, or a refusal.
    pub(super) fn on_accepted(&mut self, now: u64, accepted: Accepted) {
        let Accepted { rid, from, ack } = accepted;
        let me = self.cfg.id;
        let quorum = self.table.quorum();
        if let Ack::Decided { reply } = ack {
            self.adopt(now, rid, reply, from);
            return;
        }
        let Some(e) = self.requests.get_mut(&rid) else { return };
        match (&mut e.state, ack) {
            (State::Accepting { proposal, acks, .. }, Ack::Accepted { round }) if round == proposal.round => {
                acks.insert(from);
                if acks.len() + 1 >= quorum {
                    let proposal = proposal.clone();
                    self.decide(now, rid, proposal);
                }
            }
            (State::Accepting { proposal, .. }, Ack::Refused { round, holder }) if round > proposal.round => {
                // A majority may have promised a higher round: our proposal stays accepted here
                // (the new holder learns it from our vote); we wait for that holder.
                e.max_round = e.max_round.max(round);
                self.log(format!("proposal for {rid} refused: round {round} is running"));
                match holder.filter(|&h| h != me && self.table.is_live(now, h)) {
                    Some(h) => self.set_state(now, rid, State::Following { holder: h, round }),
                    None => self.rewait(now, rid),
                }
            }
            (State::Deciding { acks, .. }, Ack::Applied) => {
                acks.insert(from);
                if self.decision_spread(now, rid) {
                    self.finish_decision(now, rid);
                }
            }
            _ => {}
        }
    }

    /// A server failed or restarted: requests it held go back to the election.
    pub(super) fn release_held_by(&mut self, now: u64, s: ServerId) {
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

    pub(super) fn rewait(&mut self, now: u64, rid: RequestId) {
        let rank = self.table.ranking(now, rid);
        let own_load = self.table.effective(now, self.cfg.id);
        if let Some(e) = self.requests.get_mut(&rid) {
            e.seen = now;
            e.rank = rank;
            e.own_load = own_load;
        }
        self.set_state(now, rid, State::Waiting);
    }
}
