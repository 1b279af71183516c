//! The request table over time: each request's timers (`tick_entry`: retransmissions,
//! takeovers, giving up), and the bounded memory of finished requests (`touch`, `forget`,
//! `evict`).

use super::*;

impl Node {
    pub(super) fn tick_entry(&mut self, now: u64, rid: RequestId) {
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
            State::Waiting => self.tick_waiting(now, rid),
            State::Following { holder, .. } => {
                if !self.table.is_live(now, holder) {
                    self.rewait(now, rid);
                }
            }
            claiming @ State::Claiming { .. } => self.tick_claiming(now, rid, claiming),
            State::Accepting { proposal, acks, last } => {
                if acks.len() + 1 >= self.table.quorum() {
                    self.decide(now, rid, proposal);
                } else if now >= last + self.cfg.retransmit {
                    self.resend(now, rid, Accept { rid, by: self.cfg.id, proposal }.into(), &acks);
                }
            }
            State::Deciding { proposal, acks, last, .. } => {
                if self.decision_spread(now, rid) {
                    self.finish_decision(now, rid);
                } else if now >= last + self.cfg.retransmit {
                    let Proposal { reply, records, .. } = proposal;
                    self.resend(now, rid, Decision { rid, by: self.cfg.id, reply, records }.into(), &acks);
                }
            }
            State::Executing { .. } | State::Decided { .. } => {}
        }
    }

    /// A request nobody claimed yet: claim it when this server is first in the ranking, or
    /// when those before it had their claim timeout each.
    fn tick_waiting(&mut self, now: u64, rid: RequestId) {
        let me = self.cfg.id;
        let Some(e) = self.requests.get(&rid) else { return };
        if e.op.is_none() || e.reply_to.is_none() {
            return;
        }
        // After a short grace, rank again: a load announcement that reached the servers at
        // slightly different moments must not leave everyone waiting for another. The others'
        // figures are taken as they are now, but our own as it was when we ranked the request:
        // a newer figure of ours has not reached the others yet, and claiming on it would
        // contest a claim they agreed on.
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

    /// Our prepare: suspect the silent after the claim timeout, go on at a quorum of
    /// promises, else send it again to those that have not answered.
    fn tick_claiming(&mut self, now: u64, rid: RequestId, state: State) {
        let State::Claiming { round, votes, answered, since, last, first, .. } = state else { return };
        if now >= since + self.cfg.claim_timeout {
            // Whoever stayed silent since the claim began is suspected: it stops winning
            // elections until heard from again.
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
            let request = self.requests.get(&rid).map(|e| (e.op.clone(), e.reply_to));
            if let Some((Some(op), Some(reply_to))) = request {
                let missing: Vec<ServerId> = self.table.voters().into_iter().filter(|p| !votes.contains(p)).collect();
                let claimer = Claimer { by: self.cfg.id, round, first };
                self.multicast(missing, &Prepare { rid, claimer, op, reply_to }.into());
            }
            self.touch(rid, now);
        }
    }

    /// Sends our proposal or our decision again to the voters that have not acknowledged it.
    fn resend(&mut self, now: u64, rid: RequestId, msg: Msg, acks: &BTreeSet<ServerId>) {
        let missing: Vec<ServerId> = self.table.voters().into_iter().filter(|p| !acks.contains(p)).collect();
        self.multicast(missing, &msg);
        self.touch(rid, now);
    }

    /// Notes a retransmission time.
    pub(super) fn touch(&mut self, rid: RequestId, now: u64) {
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
    pub(super) fn forget(&mut self, rid: RequestId) {
        if let Some(e) = self.requests.remove(&rid) {
            if let Some(h) = e.holder {
                self.table.remove_work(h);
            }
        }
        self.active.remove(&rid);
        self.save_vote(rid);
    }

    pub(super) fn evict(&mut self, now: u64) {
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
