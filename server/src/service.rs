//! Directory operations a server executes for a request it won: register, sign in and out,
//! look up, list online users, set shared images. Functions of the directory and the request,
//! so the node can run them inside `step` and the simulation can replay them.
//!
//! Executing does not write: it reads the directory, mints versions for the records it would
//! change and returns them. The node applies them only once a majority accepted the outcome, so
//! an execution abandoned to a takeover leaves no trace that could win last-writer-wins later.

use crate::directory::Directory;
use common::config::ServerId;
use common::protocol::{Answer, InboxEntry, Op, RequestId, UserInfo, UserRecord, MAX_LIST};
use common::rng::Rng;
use std::net::SocketAddr;

/// Messages one user may have waiting in the cloud (a record must fit one datagram).
pub const MAX_PENDING: usize = 64;
/// Delivered tombstones kept per user.
pub const MAX_TOMBSTONES: usize = 64;

/// Rough byte budget of one answer, so it (and the commit carrying it) fits a datagram.
pub const ANSWER_BUDGET: usize = 40_000;

/// What executing a directory operation produced.
pub struct Outcome {
    /// The answer for the client.
    pub result: Result<Answer, String>,
    /// Records to write (not yet applied), to replicate once the request is decided. At most
    /// the request's user's record: a vote reports an accepted outcome's write in one record.
    pub changed: Vec<UserRecord>,
}

fn fail(msg: impl Into<String>) -> Outcome {
    Outcome { result: Err(msg.into()), changed: vec![] }
}

fn user_id_of(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in name.as_bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h & 0x000f_ffff_ffff_ffff
}

fn new_token(rng: &mut Rng) -> String {
    format!("{:016x}{:016x}", rng.next_u64(), rng.next_u64())
}

/// Executes a directory operation; `from` is the client's address. Only the clock of `dir`
/// moves (so versions stay unique); the changed records are returned, not applied.
pub fn execute(dir: &mut Directory, me: ServerId, rid: RequestId, op: &Op, from: SocketAddr, rng: &mut Rng) -> Outcome {
    let authed = |dir: &Directory, name: &str, token: &str| -> Result<UserRecord, String> {
        match dir.get(name) {
            Some(r) if r.token == token => Ok(r.clone()),
            Some(_) => Err(format!("wrong token for user {name}")),
            None => Err(format!("unknown user {name}")),
        }
    };
    match op {
        Op::Register { name } => {
            if let Some(r) = dir.get(name) {
                if r.created_by == rid {
                    // A retried registration handled twice returns the same user.
                    let result =
                        Ok(Answer::Registered { user_id: r.user_id, name: r.name.clone(), token: r.token.clone() });
                    return Outcome { result, changed: vec![] };
                }
                return fail(format!("the name {name} is taken"));
            }
            let rec = UserRecord {
                name: name.clone(),
                user_id: user_id_of(name),
                token: new_token(rng),
                addr: None,
                online: false,
                images: vec![],
                version: dir.next_version(me),
                created_by: rid,
                inbox: vec![],
            };
            let result =
                Ok(Answer::Registered { user_id: rec.user_id, name: rec.name.clone(), token: rec.token.clone() });
            Outcome { result, changed: vec![rec] }
        }
        Op::SignIn { name, token } | Op::SignOut { name, token } => {
            let mut rec = match authed(dir, name, token) {
                Ok(r) => r,
                Err(e) => return fail(e),
            };
            let signing_in = matches!(op, Op::SignIn { .. });
            let result = Ok(if signing_in { Answer::SignedIn { user_id: rec.user_id } } else { Answer::SignedOut });
            let addr = if signing_in { Some(from) } else { rec.addr };
            if rec.online == signing_in && rec.addr == addr {
                return Outcome { result, changed: vec![] };
            }
            rec.online = signing_in;
            rec.addr = addr;
            rec.version = dir.next_version(me);
            Outcome { result, changed: vec![rec] }
        }
        Op::SetImages { name, token, images } => {
            let mut rec = match authed(dir, name, token) {
                Ok(r) => r,
                Err(e) => return fail(e),
            };
            if &rec.images == images {
                return Outcome { result: Ok(Answer::Done), changed: vec![] };
            }
            rec.images = images.clone();
            rec.version = dir.next_version(me);
            Outcome { result: Ok(Answer::Done), changed: vec![rec] }
        }
        Op::Lookup { name } => match dir.get(name) {
            Some(r) => Outcome { result: Ok(Answer::User(UserInfo::from(r))), changed: vec![] },
            None => fail(format!("unknown user {name}")),
        },
        Op::ListOnline => {
            let mut list = Vec::new();
            let mut size = 0;
            for u in dir.online() {
                size += 64 + u.name.len() + u.images.iter().map(|i| i.len() + 3).sum::<usize>();
                if size > ANSWER_BUDGET || list.len() >= MAX_LIST {
                    break;
                }
                list.push(u);
            }
            Outcome { result: Ok(Answer::Online(list)), changed: vec![] }
        }
        Op::Encrypt { .. } | Op::Status | Op::Relay { .. } => {
            fail(format!("{} is not a directory operation", op.kind()))
        }
        Op::Buffer { name, token, envelope, unreachable } => {
            if let Err(e) = authed(dir, name, token) {
                return fail(e);
            }
            let Some(mut rec) = dir.get(&envelope.to).cloned() else {
                return fail(format!("unknown user {}", envelope.to));
            };
            if rec.inbox.iter().any(|e| e.envelope.from == envelope.from && e.envelope.id == envelope.id) {
                return Outcome { result: Ok(Answer::Buffered), changed: vec![] };
                // a retry
            }
            if rec.inbox.iter().filter(|e| !e.delivered).count() >= MAX_PENDING {
                return fail(format!("{}'s inbox is full", envelope.to));
            }
            let v = dir.next_version(me);
            rec.inbox.push(InboxEntry { seq: v, envelope: envelope.clone(), delivered: false, version: v });
            // The sender and then the cloud could not reach the recipient at its recorded address:
            // it is offline. (Not when it signed in again elsewhere meanwhile.)
            if unreachable.is_some() && *unreachable == rec.addr {
                rec.online = false;
            }
            rec.version = v;
            Outcome { result: Ok(Answer::Buffered), changed: vec![rec] }
        }
        Op::InboxAck { name, token, ids } => {
            let mut rec = match authed(dir, name, token) {
                Ok(r) => r,
                Err(e) => return fail(e),
            };
            let v = dir.next_version(me);
            let mut changed = false;
            for e in rec.inbox.iter_mut().filter(|e| !e.delivered && ids.contains(&e.envelope.id)) {
                e.delivered = true;
                e.version = v;
                changed = true;
            }
            // Keep the newest tombstones only (enough for replicas to drop what was delivered).
            let tombstones = rec.inbox.iter().filter(|e| e.delivered).count();
            if tombstones > MAX_TOMBSTONES {
                let mut drop = tombstones - MAX_TOMBSTONES;
                rec.inbox.retain(|e| {
                    let gone = e.delivered && drop > 0;
                    if gone {
                        drop -= 1;
                    }
                    !gone
                });
            }
            let mut pending = Vec::new();
            let mut size = 0;
            for e in rec.inbox.iter().filter(|e| !e.delivered) {
                size += 200 + serde_json::to_vec(&e.envelope).map(|b| b.len()).unwrap_or(0);
                if size > ANSWER_BUDGET {
                    break;
                }
                pending.push(e.envelope.clone());
            }
            let result = Ok(Answer::Inbox(pending));
            if !changed {
                return Outcome { result, changed: vec![] };
            }
            rec.version = v;
            Outcome { result, changed: vec![rec] }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        "127.0.0.1:5000".parse().unwrap()
    }

    /// Executes and applies the outcome, as the node does once the request is decided.
    fn run(d: &mut Directory, me: ServerId, rid: RequestId, op: &Op, rng: &mut Rng) -> Outcome {
        let out = execute(d, me, rid, op, addr(), rng);
        for r in &out.changed {
            d.apply(r.clone());
        }
        out
    }

    #[test]
    fn execution_writes_nothing_until_applied() {
        let mut d = Directory::default();
        let mut rng = Rng::new(1);
        let rid = RequestId { client: 1, seq: 1 };
        let out = execute(&mut d, 1, rid, &Op::Register { name: "alice".into() }, addr(), &mut rng);
        assert_eq!(out.changed.len(), 1);
        assert!(d.get("alice").is_none(), "an abandoned execution must leave no record");
        let again = execute(&mut d, 1, rid, &Op::Register { name: "alice".into() }, addr(), &mut rng);
        assert!(again.changed[0].version > out.changed[0].version, "versions stay unique");
    }

    #[test]
    fn register_sign_in_and_retry_is_idempotent() {
        let mut d = Directory::default();
        let mut rng = Rng::new(1);
        let rid = RequestId { client: 1, seq: 1 };
        let reg = Op::Register { name: "alice".into() };
        let a = run(&mut d, 1, rid, &reg, &mut rng);
        let b = run(&mut d, 2, rid, &reg, &mut rng);
        assert_eq!(a.result, b.result);
        assert!(b.changed.is_empty());
        let other = run(&mut d, 1, RequestId { client: 2, seq: 1 }, &reg, &mut rng);
        assert!(other.result.unwrap_err().contains("taken"));
        let Ok(Answer::Registered { token, .. }) = a.result else { panic!() };
        let bad = Op::SignIn { name: "alice".into(), token: "x".into() };
        assert!(run(&mut d, 1, rid, &bad, &mut rng).result.is_err());
        let ok = Op::SignIn { name: "alice".into(), token };
        let s = run(&mut d, 1, rid, &ok, &mut rng);
        assert!(s.result.is_ok());
        assert_eq!(d.get("alice").unwrap().addr, Some(addr()));
        let Ok(Answer::Online(list)) = execute(&mut d, 1, rid, &Op::ListOnline, addr(), &mut rng).result else {
            panic!()
        };
        assert_eq!(list.len(), 1);
    }
}
