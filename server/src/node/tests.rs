//! The node's unit tests: hand-picked interleavings of the protocol.

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
    let mut n = Node::new(cfg(id), 0, Saved::default(), Rng::new(id as u64));
    for s in [1, 2, 3].into_iter().filter(|&s| s != id) {
        let load = Msg::Load { from: s, load: 0, work: 0, digest: 0, epoch: 10 + s as u64, token: false, ready: true };
        n.step(1, Input::Message { from: Peer::Server(s), msg: load });
    }
    n
}

#[test]
fn a_growing_queue_is_announced_before_the_periodic_multicast() {
    let mut n = node(1);
    for s in [2, 3] {
        // The others shut down cleanly: server 1 alone is the majority.
        let load =
            Msg::Load { from: s, load: FAILED, work: 0, digest: 0, epoch: 10 + s as u64, token: false, ready: true };
        n.step(2, Input::Message { from: Peer::Server(s), msg: load });
    }
    let loads =
        |outs: &[Output]| outs.iter().filter(|o| matches!(o, Output::Send { msg: Msg::Load { .. }, .. })).count();
    let secret = known_user(&mut n);
    for seq in 1..=EARLY_ANNOUNCE_WORK as u64 {
        let req =
            Msg::Request { rid: RequestId { client: 7, seq }, op: encrypt(RequestId { client: 7, seq }, &secret, 10) };
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
        let load =
            Msg::Load { from: s, load: FAILED, work: 0, digest: 0, epoch: 10 + s as u64, token: false, ready: true };
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
    Node::new(cfg(n.id()), now, n.saved(), Rng::new(99))
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
        shares: vec![],
    }
}

fn done(by: ServerId, round: u32, token: &str) -> Msg {
    Msg::Accept { rid: rid(), by, round, reply: reply(by, token), records: vec![record(by, token)] }
}

fn claim(by: ServerId, round: u32) -> Msg {
    Msg::Prepare { rid: rid(), by, round, op: register(), reply_to: client(), first: true }
}

fn grant(from: ServerId, round: u32) -> Msg {
    Msg::Promise { rid: rid(), from, granted: true, holder: None, round, firm: false, reply: None, record: None }
}

/// Node 1 wins the client's request and claims it in round 1.
fn claiming_node() -> Node {
    let mut n = node(1);
    let out = sent(
        n.step(2, Input::Message { from: Peer::Client(client()), msg: Msg::Request { rid: rid(), op: register() } }),
    );
    assert!(out.iter().any(|m| matches!(m, Msg::Prepare { round: 1, .. })), "{out:?}");
    n
}

fn proposals(out: &[Msg]) -> Vec<(u32, Reply)> {
    out.iter()
        .filter_map(|m| match m {
            Msg::Accept { round, reply, .. } => Some((*round, reply.clone())),
            _ => None,
        })
        .collect()
}

/// The announcement of a decision that wrote nothing, by `by`, for request `seq`.
fn unhurried(by: ServerId, seq: u64) -> Msg {
    let rid = RequestId { client: 7, seq };
    let reply = Reply { rid, server: by, result: Ok(Answer::Encrypted { len: 10, transfer: seq }) };
    Msg::Accept { rid, by, round: DECIDED, reply, records: vec![] }
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
            msgs.iter().filter(|a| matches!(a, Msg::Accepted { accepted: true, round: DECIDED, .. })).count()
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
            assert!(matches!(msgs[..], [Msg::Accepted { round: DECIDED, .. }, Msg::Promise { .. }]), "{msgs:?}");
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
    assert!(matches!(from(&mut n, 6, 2, done(2, 1, "t2"))[0], Msg::Accepted { accepted: true, .. }));
    from(&mut n, 7, 2, done(2, DECIDED, "t2"));
    let mut r = restart(&n, 100);
    // A server that missed everything claims in a higher round: it must learn the decision.
    let out = from(&mut r, 101, 3, claim(3, 2));
    assert!(
        matches!(&out[0], Msg::Promise { granted: false, reply: Some(rep), .. } if *rep == reply(2, "t2")),
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
        matches!(&out[0], Msg::Promise { granted: true, round: 2, holder: Some(1), reply: Some(rep), .. } if *rep == reply(2, "t2")),
        "the vote reports the accepted proposal and its round: {out:?}"
    );
    let mut r = restart(&r, 200);
    let out = from(&mut r, 201, 2, done(2, 1, "t2"));
    assert!(matches!(out[0], Msg::Accepted { accepted: false, round: 2, .. }), "round 2 was promised: {out:?}");
    let out = from(&mut r, 202, 2, claim(2, 2));
    assert!(matches!(out[0], Msg::Promise { granted: false, holder: Some(3), .. }), "one vote per round: {out:?}");
}

#[test]
fn only_the_first_responders_answer_a_first_claim_and_get_the_proposal() {
    // Server 1 claims; with three servers its quorum needs one other vote: server 2's.
    let claim = Msg::Prepare { rid: rid(), by: 1, round: 1, op: register(), reply_to: client(), first: true };
    let mut n3 = node(3);
    assert!(from(&mut n3, 2, 1, claim.clone()).is_empty(), "server 3 grants silently the first time");
    let out = from(&mut n3, 3, 1, claim.clone());
    assert!(matches!(out[..], [Msg::Promise { granted: true, round: 1, .. }]), "a repeat is answered: {out:?}");
    let mut n2 = node(2);
    let out = from(&mut n2, 2, 1, claim);
    assert!(matches!(out[..], [Msg::Promise { granted: true, round: 1, .. }]), "server 2 answers at once: {out:?}");
    // The proposal goes to server 2 alone; a retransmission reaches whoever has not accepted.
    let mut n = claiming_node();
    let outs = n.step(3, Input::Message { from: Peer::Server(2), msg: grant(2, 1) });
    let to: Vec<Peer> = outs
        .iter()
        .filter_map(|o| match o {
            Output::Send { to, msg: Msg::Accept { .. } } => Some(*to),
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
                Msg::Batch { msgs, .. } => msgs.iter().any(|m| matches!(m, Msg::Prepare { .. })),
                m => matches!(m, Msg::Prepare { .. }),
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
    let accepted = Msg::Accepted { rid: rid(), from: 2, accepted: true, holder: None, round: 1, reply: None };
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
    assert!(matches!(to_3[..], [Msg::Accept { round: DECIDED, .. }]), "server 3 gets only the decision: {to_3:?}");
}

#[test]
fn a_voter_answers_at_once_when_the_first_responder_went_quiet() {
    let claim = Msg::Prepare { rid: rid(), by: 1, round: 1, op: register(), reply_to: client(), first: true };
    let mut n3 = node(3);
    // Server 2 was last heard at time 1: by time 200 it no longer counts as a first responder.
    let out = from(&mut n3, 200, 1, claim);
    assert!(matches!(out[..], [Msg::Promise { granted: true, round: 1, .. }]), "{out:?}");
}

#[test]
fn an_abandoned_execution_writes_nothing() {
    let mut n = claiming_node();
    let out = from(&mut n, 3, 2, grant(2, 1));
    assert_eq!(proposals(&out).len(), 1, "executed and proposed to server 2, the first responder: {out:?}");
    assert!(n.directory().get("alice").is_none(), "nothing is written before the decision");
    let refusal = Msg::Accepted { rid: rid(), from: 2, accepted: false, holder: Some(3), round: 5, reply: None };
    from(&mut n, 4, 2, refusal);
    assert!(n.directory().get("alice").is_none());
    // Server 3 decides its own execution: that is the record everybody keeps.
    from(&mut n, 10, 3, done(3, DECIDED, "t3"));
    assert_eq!(n.directory().get("alice").map(|r| r.secret.as_str()), Some("t3"));
}

#[test]
fn a_claimer_proposes_the_reported_accepted_reply_instead_of_executing() {
    let mut n = claiming_node();
    let report = Msg::Promise {
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
    let refusal = Msg::Promise {
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
    assert!(out.iter().any(|m| matches!(m, Msg::Prepare { round: 2, .. })), "{out:?}");
    assert!(proposals(&from(&mut n, 4, 3, grant(3, 1))).is_empty(), "a vote for round 1 is not one for round 2");
    assert_eq!(proposals(&from(&mut n, 5, 3, grant(3, 2))).len(), 1);
}

#[test]
fn a_majority_of_acceptances_decides_whatever_comes_later() {
    let mut n = claiming_node();
    from(&mut n, 3, 2, grant(2, 1));
    let accepted = Msg::Accepted { rid: rid(), from: 2, accepted: true, holder: None, round: 1, reply: None };
    let out = from(&mut n, 4, 2, accepted);
    assert!(proposals(&out).iter().all(|(r, _)| *r == DECIDED) && !out.is_empty(), "{out:?}");
    assert!(n.directory().get("alice").is_some(), "the decider applies the write");
    let refusal = Msg::Accepted { rid: rid(), from: 3, accepted: false, holder: Some(3), round: 7, reply: None };
    from(&mut n, 5, 3, refusal);
    let ack = Msg::Accepted { rid: rid(), from: 2, accepted: true, holder: None, round: DECIDED, reply: None };
    let out = n.step(6, Input::Message { from: Peer::Server(2), msg: ack });
    let out = [sent(out), sent(n.tick(6 + CLAIM_TIMEOUT))].concat();
    assert!(out.iter().any(|m| matches!(m, Msg::Reply(r) if r.server == 1)), "the client is answered: {out:?}");
}

#[test]
fn a_claimer_does_not_wait_for_a_lower_round() {
    let mut n = claiming_node();
    let refusal = Msg::Promise {
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
