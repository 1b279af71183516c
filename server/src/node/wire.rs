//! The Paxos messages as the node handles them: one type per meaning, so no handler reads a
//! field for something else (the wire's `holder` as an accepted round) or a sentinel round
//! (the wire's [`DECIDED`]). They convert from a [`Msg`] (`Paxos::try_from`, which rejects the
//! combinations of fields no server sends, with the reason) and into one, byte for byte the
//! message servers have always exchanged (pinned by the tests below).

use crate::votes::Proposal;
use common::config::ServerId;
use common::protocol::{Msg, Op, Reply, RequestId, UserRecord, WireError, DECIDED};
use std::net::SocketAddr;

/// The highest round a claim or a proposal may have (the wire keeps the round above it to
/// announce decisions).
pub const MAX_ROUND: u32 = DECIDED - 1;

/// A claim of a request, as the votes weigh it: who, in which round, and whether the claimer
/// was first in the ranking it made when the request arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claimer {
    /// The claiming server.
    pub by: ServerId,
    /// Its round, 1 to [`MAX_ROUND`].
    pub round: u32,
    /// It claims as the winner of its arrival ranking, not on a re-ranking or a timeout.
    pub first: bool,
}

impl Claimer {
    /// Does this claim win against `other`, a claim of the same round? A claim made as the
    /// arrival ranking's winner beats one made on a re-ranking (whose newer figures the others
    /// may not hold yet), then the lower id wins.
    pub fn beats(&self, other: &Claimer) -> bool {
        (self.first, std::cmp::Reverse(self.by)) > (other.first, std::cmp::Reverse(other.by))
    }
}

/// Phase 1a ("Claim" on the wire): `claimer` claims `rid`, and carries the request for
/// takeovers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepare {
    pub rid: RequestId,
    pub claimer: Claimer,
    pub op: Op,
    pub reply_to: SocketAddr,
}

/// Phase 1b ("ClaimAck" on the wire): `from`'s answer to a claim of `rid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promise {
    pub rid: RequestId,
    pub from: ServerId,
    /// A grant echoes the claim's round (a late vote must not count for a later round); a
    /// refusal gives the round the voter promised (0: none).
    pub round: u32,
    pub ballot: Ballot,
}

/// What a voter answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ballot {
    /// A vote, with what the claimer must know.
    Granted(Report),
    /// No vote: the voter promised the round to `holder` (None: to nobody the claimer should
    /// wait for); `firm`: the holder already executes or proposes in it.
    Refused { holder: Option<ServerId>, firm: bool },
    /// No vote: the request is decided, with this reply and the record it wrote.
    Decided { reply: Reply, record: Option<UserRecord> },
}

/// What a vote reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// The voter accepted this proposal in `round` (its reply and the record it writes): the
    /// claimer must propose the highest-round one among its votes.
    Accepted { round: u32, reply: Reply, record: Option<UserRecord> },
    /// The voter accepted nothing: its directory record of the request's user, if it has one.
    Record(Option<UserRecord>),
}

/// Phase 2a ("Done" on the wire): `by` proposes `proposal` (in its round) for `rid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accept {
    pub rid: RequestId,
    pub by: ServerId,
    pub proposal: Proposal,
}

/// The decision of `rid` ("Done" in round [`DECIDED`] on the wire): every server applies
/// `records` and keeps `reply`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub rid: RequestId,
    pub by: ServerId,
    pub reply: Reply,
    pub records: Vec<UserRecord>,
}

/// Phase 2b ("DoneAck" on the wire): `from`'s answer to a proposal or a decision of `rid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub rid: RequestId,
    pub from: ServerId,
    pub ack: Ack,
}

/// What an acceptor answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ack {
    /// The proposal of `round` is accepted (and saved).
    Accepted { round: u32 },
    /// The decision is applied.
    Applied,
    /// Refused: the acceptor promised `round` (0: none) to `holder` (None: to nobody the
    /// proposer should wait for).
    Refused { round: u32, holder: Option<ServerId> },
    /// Refused: another reply was decided, this one.
    Decided { reply: Reply },
}

/// A Paxos message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Paxos {
    Prepare(Prepare),
    Promise(Promise),
    Accept(Accept),
    Decision(Decision),
    Accepted(Accepted),
}

fn bad<T>(why: &str) -> Result<T, WireError> {
    Err(WireError(why.to_string()))
}

/// A claim's or proposal's round must be 1 to [`MAX_ROUND`].
fn proper(round: u32, what: &str) -> Result<u32, WireError> {
    if (1..=MAX_ROUND).contains(&round) {
        Ok(round)
    } else {
        Err(WireError(format!("{what} in round {round}")))
    }
}

/// A promised round may be 0 (nothing promised), never [`DECIDED`].
fn promised(round: u32, what: &str) -> Result<u32, WireError> {
    if round <= MAX_ROUND {
        Ok(round)
    } else {
        Err(WireError(format!("{what} names round {round}")))
    }
}

impl TryFrom<Msg> for Paxos {
    type Error = WireError;

    fn try_from(msg: Msg) -> Result<Paxos, WireError> {
        match msg {
            Msg::Prepare { rid, by, round, op, reply_to, first } => {
                let round = proper(round, "a claim")?;
                Ok(Paxos::Prepare(Prepare { rid, claimer: Claimer { by, round, first }, op, reply_to }))
            }
            Msg::Promise { rid, from, granted, holder, round, firm, reply, record } => {
                let ballot = match (granted, holder, reply) {
                    (true, _, _) if firm => return bad("a vote that calls its holder firm"),
                    (true, Some(accepted), Some(reply)) => {
                        let round = promised(accepted, "a vote's accepted proposal")?;
                        Ballot::Granted(Report::Accepted { round, reply, record })
                    }
                    (true, None, None) => Ballot::Granted(Report::Record(record)),
                    (true, _, _) => return bad("a vote with an accepted round or reply but not both"),
                    (false, holder, Some(reply)) if firm && holder == Some(reply.server) => {
                        Ballot::Decided { reply, record }
                    }
                    (false, _, Some(_)) => return bad("a decided reply not naming its executor firmly"),
                    (false, _, None) if record.is_some() => return bad("a refusal with a record"),
                    (false, holder, None) => Ballot::Refused { holder, firm },
                };
                let round = match ballot {
                    Ballot::Granted(_) => proper(round, "a vote")?,
                    _ => promised(round, "a refusal")?,
                };
                Ok(Paxos::Promise(Promise { rid, from, round, ballot }))
            }
            Msg::Accept { rid, by, round: DECIDED, reply, records } => {
                Ok(Paxos::Decision(Decision { rid, by, reply, records }))
            }
            Msg::Accept { rid, by, round, reply, records } => {
                let round = proper(round, "a proposal")?;
                Ok(Paxos::Accept(Accept { rid, by, proposal: Proposal { round, reply, records } }))
            }
            Msg::Accepted { rid, from, accepted, holder, round, reply } => {
                let ack = match (accepted, holder, reply) {
                    (true, None, None) if round == DECIDED => Ack::Applied,
                    (true, None, None) => Ack::Accepted { round: proper(round, "an acceptance")? },
                    (true, _, _) => return bad("an acceptance naming a holder or a reply"),
                    (false, None, Some(reply)) if round == 0 => Ack::Decided { reply },
                    (false, _, Some(_)) => return bad("a decided reply with a holder or a round"),
                    (false, holder, None) => Ack::Refused { round: promised(round, "a refusal")?, holder },
                };
                Ok(Paxos::Accepted(Accepted { rid, from, ack }))
            }
            other => Err(WireError(format!("{} is not a Paxos message", other.kind()))),
        }
    }
}

impl From<Prepare> for Msg {
    fn from(p: Prepare) -> Msg {
        let Prepare { rid, claimer: Claimer { by, round, first }, op, reply_to } = p;
        Msg::Prepare { rid, by, round, op, reply_to, first }
    }
}

impl From<Promise> for Msg {
    fn from(p: Promise) -> Msg {
        let Promise { rid, from, round, ballot } = p;
        let (granted, holder, firm, reply, record) = match ballot {
            Ballot::Granted(Report::Accepted { round, reply, record }) => {
                (true, Some(round), false, Some(reply), record)
            }
            Ballot::Granted(Report::Record(record)) => (true, None, false, None, record),
            Ballot::Refused { holder, firm } => (false, holder, firm, None, None),
            Ballot::Decided { reply, record } => (false, Some(reply.server), true, Some(reply), record),
        };
        Msg::Promise { rid, from, granted, holder, round, firm, reply, record }
    }
}

impl From<Accept> for Msg {
    fn from(a: Accept) -> Msg {
        let Accept { rid, by, proposal: Proposal { round, reply, records } } = a;
        Msg::Accept { rid, by, round, reply, records }
    }
}

impl From<Decision> for Msg {
    fn from(d: Decision) -> Msg {
        let Decision { rid, by, reply, records } = d;
        Msg::Accept { rid, by, round: DECIDED, reply, records }
    }
}

impl From<Accepted> for Msg {
    fn from(a: Accepted) -> Msg {
        let Accepted { rid, from, ack } = a;
        let (accepted, holder, round, reply) = match ack {
            Ack::Accepted { round } => (true, None, round, None),
            Ack::Applied => (true, None, DECIDED, None),
            Ack::Refused { round, holder } => (false, holder, round, None),
            Ack::Decided { reply } => (false, None, 0, Some(reply)),
        };
        Msg::Accepted { rid, from, accepted, holder, round, reply }
    }
}

impl From<Paxos> for Msg {
    fn from(p: Paxos) -> Msg {
        match p {
            Paxos::Prepare(m) => m.into(),
            Paxos::Promise(m) => m.into(),
            Paxos::Accept(m) => m.into(),
            Paxos::Decision(m) => m.into(),
            Paxos::Accepted(m) => m.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::protocol::{encode_msg, Answer, Version};

    fn rid() -> RequestId {
        RequestId { client: 7, seq: 1 }
    }

    fn reply(server: ServerId) -> Reply {
        let answer = Answer::Registered { user_id: 1, name: "alice".into(), secret: format!("t{server}") };
        Reply { rid: rid(), server, result: Ok(answer) }
    }

    fn record(server: ServerId) -> UserRecord {
        UserRecord {
            name: "alice".into(),
            user_id: 1,
            secret: format!("t{server}"),
            addr: None,
            online: false,
            images: vec![],
            version: Version { counter: 5, server },
            created_by: rid(),
            inbox: vec![],
            shares: vec![],
        }
    }

    /// A "ClaimAck" from server 2, built by hand as servers did before there were types.
    fn claim_ack(
        granted: bool,
        holder: Option<ServerId>,
        round: u32,
        firm: bool,
        reply: Option<Reply>,
        record: Option<UserRecord>,
    ) -> Msg {
        Msg::Promise { rid: rid(), from: 2, granted, holder, round, firm, reply, record }
    }

    /// A "DoneAck" from server 2, built by hand.
    fn done_ack(accepted: bool, holder: Option<ServerId>, round: u32, reply: Option<Reply>) -> Msg {
        Msg::Accepted { rid: rid(), from: 2, accepted, holder, round, reply }
    }

    /// Each typed message with the message servers built by hand before there were types.
    fn pairs() -> Vec<(Paxos, Msg)> {
        let (rid, addr) = (rid(), "127.0.0.1:9".parse().unwrap());
        let promise = |round, ballot| Paxos::Promise(Promise { rid, from: 2, round, ballot });
        let accepted = |ack| Paxos::Accepted(Accepted { rid, from: 2, ack });
        vec![
            (
                Paxos::Prepare(Prepare {
                    rid,
                    claimer: Claimer { by: 1, round: 3, first: true },
                    op: Op::Lookup { name: "bob".into() },
                    reply_to: addr,
                }),
                Msg::Prepare {
                    rid,
                    by: 1,
                    round: 3,
                    op: Op::Lookup { name: "bob".into() },
                    reply_to: addr,
                    first: true,
                },
            ),
            (
                promise(3, Ballot::Granted(Report::Record(Some(record(2))))),
                claim_ack(true, None, 3, false, None, Some(record(2))),
            ),
            (promise(3, Ballot::Granted(Report::Record(None))), claim_ack(true, None, 3, false, None, None)),
            (
                promise(3, Ballot::Granted(Report::Accepted { round: 2, reply: reply(1), record: Some(record(1)) })),
                claim_ack(true, Some(2), 3, false, Some(reply(1)), Some(record(1))),
            ),
            (
                promise(4, Ballot::Refused { holder: Some(3), firm: true }),
                claim_ack(false, Some(3), 4, true, None, None),
            ),
            (promise(0, Ballot::Refused { holder: None, firm: false }), claim_ack(false, None, 0, false, None, None)),
            (
                promise(2, Ballot::Decided { reply: reply(1), record: Some(record(1)) }),
                claim_ack(false, Some(1), 2, true, Some(reply(1)), Some(record(1))),
            ),
            (
                Paxos::Accept(Accept {
                    rid,
                    by: 1,
                    proposal: Proposal { round: 3, reply: reply(1), records: vec![record(1)] },
                }),
                Msg::Accept { rid, by: 1, round: 3, reply: reply(1), records: vec![record(1)] },
            ),
            (
                Paxos::Decision(Decision { rid, by: 1, reply: reply(1), records: vec![] }),
                Msg::Accept { rid, by: 1, round: DECIDED, reply: reply(1), records: vec![] },
            ),
            (accepted(Ack::Accepted { round: 3 }), done_ack(true, None, 3, None)),
            (accepted(Ack::Applied), done_ack(true, None, DECIDED, None)),
            (accepted(Ack::Refused { round: 5, holder: Some(3) }), done_ack(false, Some(3), 5, None)),
            (accepted(Ack::Decided { reply: reply(3) }), done_ack(false, None, 0, Some(reply(3)))),
        ]
    }

    #[test]
    fn typed_messages_keep_the_bytes_servers_always_sent() {
        for (typed, by_hand) in pairs() {
            let msg = Msg::from(typed.clone());
            assert_eq!(serde_json::to_string(&msg).unwrap(), serde_json::to_string(&by_hand).unwrap());
            assert_eq!(encode_msg(&msg), encode_msg(&by_hand), "{typed:?}");
            let parsed: Msg = serde_json::from_slice(&serde_json::to_vec(&by_hand).unwrap()).unwrap();
            assert_eq!(Paxos::try_from(parsed), Ok(typed));
        }
    }

    #[test]
    fn combinations_no_server_sends_are_rejected_with_a_reason() {
        let (rid, addr) = (rid(), "127.0.0.1:9".parse().unwrap());
        let op = Op::Lookup { name: "bob".into() };
        let cases = [
            Msg::Prepare { rid, by: 1, round: 0, op: op.clone(), reply_to: addr, first: true },
            Msg::Prepare { rid, by: 1, round: DECIDED, op, reply_to: addr, first: true },
            claim_ack(true, None, 1, true, None, None),
            claim_ack(true, Some(1), 1, false, None, None),
            claim_ack(true, None, 1, false, Some(reply(1)), None),
            claim_ack(true, None, 0, false, None, None),
            claim_ack(true, Some(DECIDED), 1, false, Some(reply(1)), None),
            claim_ack(false, Some(3), 1, true, Some(reply(1)), None),
            claim_ack(false, Some(1), 1, false, Some(reply(1)), None),
            claim_ack(false, None, 1, false, None, Some(record(1))),
            claim_ack(false, None, DECIDED, false, None, None),
            Msg::Accept { rid, by: 1, round: 0, reply: reply(1), records: vec![] },
            done_ack(true, None, 0, None),
            done_ack(true, Some(3), 1, None),
            done_ack(true, None, 1, Some(reply(1))),
            done_ack(false, None, 2, Some(reply(1))),
            done_ack(false, Some(3), 0, Some(reply(1))),
            done_ack(false, None, DECIDED, None),
            Msg::Working { rid, server: 1 },
        ];
        for msg in cases {
            let why = Paxos::try_from(msg.clone()).expect_err(&format!("{msg:?}"));
            assert!(!why.0.is_empty());
        }
    }
}
