//! This server's Paxos votes: what it promised and accepted for each request it still tracks
//! (see `node/`). They are not replicated; the shell appends their changes to the vote log
//! (`store.rs`) before sending anything a step produced, so a server restarted from disk
//! neither votes twice in a round nor forgets a reply it accepted.

use common::config::ServerId;
use common::protocol::{Reply, RequestId, UserRecord};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A request's outcome as proposed in one round: the reply and the records it writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// The round it was proposed (and accepted) in.
    pub round: u32,
    /// The answer for the client; `reply.server` is the server that executed the request.
    pub reply: Reply,
    /// The directory records it writes, applied once the request is decided.
    pub records: Vec<UserRecord>,
}

/// One server's durable Paxos state for one request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    /// Highest round this server voted in (for itself or another claimer); 0 for none.
    pub round: u32,
    /// The claimer it voted for in that round.
    pub holder: ServerId,
    /// The last proposal it accepted.
    pub accepted: Option<Proposal>,
    /// True once it knows a majority accepted `accepted`: the request is decided.
    pub decided: bool,
}

impl Vote {
    /// True if there is nothing to remember.
    pub fn is_empty(&self) -> bool {
        self.round == 0 && self.accepted.is_none()
    }
}

/// Every vote of this server, and the changes not yet saved (equality: the votes only).
#[derive(Debug, Clone, Default, Eq)]
pub struct VoteLog {
    votes: BTreeMap<RequestId, Vote>,
    /// Vote changes not yet saved (`None`: the vote was dropped).
    journal: Vec<(RequestId, Option<Vote>)>,
}

impl PartialEq for VoteLog {
    fn eq(&self, other: &Self) -> bool {
        self.votes == other.votes
    }
}

impl VoteLog {
    /// Votes restored from the log at start (nothing to save).
    pub fn restored(votes: impl IntoIterator<Item = (RequestId, Vote)>) -> VoteLog {
        VoteLog { votes: votes.into_iter().collect(), journal: Vec::new() }
    }

    /// The vote for `rid`.
    pub fn get(&self, rid: &RequestId) -> Option<&Vote> {
        self.votes.get(rid)
    }

    /// How many votes are kept.
    pub fn len(&self) -> usize {
        self.votes.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.votes.is_empty()
    }

    /// Every vote.
    pub fn iter(&self) -> impl Iterator<Item = (&RequestId, &Vote)> {
        self.votes.iter()
    }

    /// Sets the vote for `rid` (an empty vote removes it); returns true if anything changed.
    pub fn set(&mut self, rid: RequestId, vote: &Vote) -> bool {
        if vote.is_empty() {
            if self.votes.remove(&rid).is_none() {
                return false;
            }
            self.journal.push((rid, None));
            return true;
        }
        if self.votes.get(&rid) == Some(vote) {
            return false;
        }
        self.votes.insert(rid, vote.clone());
        self.journal.push((rid, Some(vote.clone())));
        true
    }

    /// Vote changes since the last call, to append to the vote log.
    pub fn take_journal(&mut self) -> Vec<(RequestId, Option<Vote>)> {
        std::mem::take(&mut self.journal)
    }

    /// The highest version counter the accepted proposals hold (the directory's clock must
    /// move past it, so versions stay unique after a restart).
    pub fn max_counter(&self) -> u64 {
        let records = self.votes.values().filter_map(|v| v.accepted.as_ref()).flat_map(|p| p.records.iter());
        records.map(|r| r.version.counter).max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn votes_are_journaled_and_an_empty_one_is_removed() {
        let rid = RequestId { client: 9, seq: 3 };
        let reply = Reply { rid, server: 2, result: Err("x".into()) };
        let rec: UserRecord = serde_json::from_str(
            r#"{"name":"a","user_id":1,"secret":"","addr":null,"online":true,"images":[],
                "version":{"counter":7,"server":2},"created_by":{"client":1,"seq":1},"inbox":[]}"#,
        )
        .expect("a record");
        let vote = Vote {
            round: 2,
            holder: 3,
            accepted: Some(Proposal { round: 1, reply, records: vec![rec] }),
            decided: false,
        };
        let mut v = VoteLog::default();
        assert!(v.set(rid, &vote));
        assert!(!v.set(rid, &vote), "unchanged");
        assert_eq!(v.take_journal(), vec![(rid, Some(vote.clone()))]);
        assert!(v.take_journal().is_empty());
        assert_eq!(v.max_counter(), 7, "the clock must move past versions the votes hold");
        assert!(v.set(rid, &Vote::default()) && v.get(&rid).is_none(), "an empty vote is removed");
        assert_eq!(v.take_journal(), vec![(rid, None)]);
    }
}
