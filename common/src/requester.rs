//! The client side of a cloud request, as a state machine: multicast the request to every
//! server, resend it until one answers, take the first answer and notice any duplicate.
//!
//! `start` returns the request to multicast; `tick` returns resends and timeouts; `on_reply`
//! completes a request. A reply for a request that already completed is a duplicate; if it
//! comes from a different server than the first answer, the request was handled twice — which
//! the cloud must never do — and it is counted.

use crate::config::ServerId;
use crate::protocol::{Msg, Op, Reply, RequestId};
use std::collections::{BTreeMap, VecDeque};

/// How many completed requests are remembered to recognise duplicates.
pub const REMEMBER: usize = 4096;

#[derive(Debug, Clone)]
struct Outstanding {
    op: Op,
    started: u64,
    last_sent: u64,
}

/// A finished request.
#[derive(Debug, Clone, PartialEq)]
pub enum Completion {
    /// The cloud answered.
    Answered(Reply),
    /// No answer in time.
    TimedOut(RequestId),
}

/// Counters a client can report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequesterStats {
    /// Requests started.
    pub started: u64,
    /// Requests answered.
    pub answered: u64,
    /// Requests that timed out.
    pub timed_out: u64,
    /// Extra copies of an answer (resends of the same answer: harmless).
    pub duplicate_replies: u64,
    /// Answers from a second server for one request (the request was handled twice).
    pub handled_twice: u64,
    /// Resends of requests.
    pub resends: u64,
}

/// Outstanding requests of one client.
#[derive(Debug, Clone)]
pub struct Requester {
    client: u64,
    next_seq: u64,
    retry_ms: u64,
    timeout_ms: u64,
    outstanding: BTreeMap<RequestId, Outstanding>,
    done: BTreeMap<RequestId, ServerId>,
    done_order: VecDeque<RequestId>,
    /// Counters.
    pub stats: RequesterStats,
}

impl Requester {
    /// A requester for client instance `client` (random per process).
    pub fn new(client: u64, retry_ms: u64, timeout_ms: u64) -> Self {
        Requester {
            client,
            next_seq: 1,
            retry_ms,
            timeout_ms,
            outstanding: BTreeMap::new(),
            done: BTreeMap::new(),
            done_order: VecDeque::new(),
            stats: RequesterStats::default(),
        }
    }

    /// Starts a request: returns its id and the message to multicast to every server.
    pub fn start(&mut self, now: u64, op: Op) -> (RequestId, Msg) {
        self.start_with(now, op, |_, _| {})
    }

    /// Starts a request, letting `sign` fill in its authentication once its id is known.
    pub fn start_with(&mut self, now: u64, op: Op, sign: impl FnOnce(&mut Op, RequestId)) -> (RequestId, Msg) {
        self.start_as(now, None, op, sign)
    }

    /// Starts a request under `rid` if given (a request whose identity is part of its meaning,
    /// as a view's slot is: see `views::slot_rid`), else under this requester's next id.
    pub fn start_as(
        &mut self,
        now: u64,
        rid: Option<RequestId>,
        mut op: Op,
        sign: impl FnOnce(&mut Op, RequestId),
    ) -> (RequestId, Msg) {
        let rid = rid.unwrap_or_else(|| {
            self.next_seq += 1;
            RequestId { client: self.client, seq: self.next_seq - 1 }
        });
        sign(&mut op, rid);
        self.stats.started += 1;
        self.outstanding.insert(rid, Outstanding { op: op.clone(), started: now, last_sent: now });
        (rid, Msg::Request { rid, op })
    }

    /// Requests still waiting for an answer.
    pub fn pending(&self) -> usize {
        self.outstanding.len()
    }

    /// True if `rid` is still waiting.
    pub fn is_pending(&self, rid: RequestId) -> bool {
        self.outstanding.contains_key(&rid)
    }

    /// A server said it is working on `rid`: its timeout counts from `now` again (slow work on
    /// a busy machine is not a lost request), and it is not resent before the retry interval.
    pub fn extend(&mut self, rid: RequestId, now: u64) {
        if let Some(o) = self.outstanding.get_mut(&rid) {
            o.started = o.started.max(now);
            o.last_sent = o.last_sent.max(now);
        }
    }

    /// Gives up on `rid` (counted as timed out); a late answer counts as a duplicate.
    pub fn abandon(&mut self, rid: RequestId) {
        if self.outstanding.remove(&rid).is_some() {
            self.stats.timed_out += 1;
        }
    }

    /// An answer arrived; returns the completion if it is the first for its request.
    pub fn on_reply(&mut self, reply: Reply) -> Option<Completion> {
        if self.outstanding.remove(&reply.rid).is_some() {
            self.stats.answered += 1;
            self.done.insert(reply.rid, reply.server);
            self.done_order.push_back(reply.rid);
            while self.done_order.len() > REMEMBER {
                if let Some(old) = self.done_order.pop_front() {
                    self.done.remove(&old);
                }
            }
            return Some(Completion::Answered(reply));
        }
        match self.done.get(&reply.rid) {
            Some(&first) if first != reply.server => self.stats.handled_twice += 1,
            _ => self.stats.duplicate_replies += 1,
        }
        None
    }

    /// Resends due requests (messages to multicast) and reports timeouts.
    pub fn tick(&mut self, now: u64) -> (Vec<Msg>, Vec<Completion>) {
        let mut resend = Vec::new();
        let mut timeouts = Vec::new();
        for (rid, o) in self.outstanding.iter_mut() {
            if now >= o.started + self.timeout_ms {
                timeouts.push(*rid);
            } else if now >= o.last_sent + self.retry_ms {
                o.last_sent = now;
                self.stats.resends += 1;
                resend.push(Msg::Request { rid: *rid, op: o.op.clone() });
            }
        }
        for rid in &timeouts {
            self.outstanding.remove(rid);
            self.stats.timed_out += 1;
        }
        (resend, timeouts.into_iter().map(Completion::TimedOut).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Answer;

    #[test]
    fn first_answer_wins_and_second_server_is_counted() {
        let mut r = Requester::new(1, 100, 1000);
        let (rid, _) = r.start(0, Op::ListOnline { after: None });
        let reply = |server| Reply { rid, server, result: Ok(Answer::Done) };
        assert!(r.on_reply(reply(1)).is_some());
        assert!(r.on_reply(reply(1)).is_none());
        assert!(r.on_reply(reply(2)).is_none());
        assert_eq!(r.stats.duplicate_replies, 1);
        assert_eq!(r.stats.handled_twice, 1);
    }

    #[test]
    fn resends_then_times_out() {
        let mut r = Requester::new(1, 100, 1000);
        r.start(0, Op::ListOnline { after: None });
        assert_eq!(r.tick(50).0.len(), 0);
        assert_eq!(r.tick(100).0.len(), 1);
        let (_, t) = r.tick(1000);
        assert_eq!(t.len(), 1);
        assert_eq!(r.pending(), 0);
    }
}
