//! Directory operations a server executes for a request it won: register, sign in and out,
//! look up, list online users, set shared images. Pure functions of the directory and the
//! request, so the node can run them inside `step` and the simulation can replay them.

use crate::directory::Directory;
use common::config::ServerId;
use common::protocol::{Answer, Op, RequestId, UserInfo, UserRecord, MAX_LIST};
use common::rng::Rng;
use std::net::SocketAddr;

/// Rough byte budget of one answer, so it (and the commit carrying it) fits a datagram.
pub const ANSWER_BUDGET: usize = 40_000;

/// What executing a directory operation produced.
pub struct Outcome {
    /// The answer for the client.
    pub result: Result<Answer, String>,
    /// Records changed, to replicate.
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

/// Executes a directory operation; `from` is the client's address.
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
            };
            dir.apply(rec.clone());
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
            dir.apply(rec.clone());
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
            dir.apply(rec.clone());
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
        Op::Encrypt { .. } | Op::Status => fail(format!("{} is not a directory operation", op.kind())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        "127.0.0.1:5000".parse().unwrap()
    }

    #[test]
    fn register_sign_in_and_retry_is_idempotent() {
        let mut d = Directory::default();
        let mut rng = Rng::new(1);
        let rid = RequestId { client: 1, seq: 1 };
        let reg = Op::Register { name: "alice".into() };
        let a = execute(&mut d, 1, rid, &reg, addr(), &mut rng);
        let b = execute(&mut d, 2, rid, &reg, addr(), &mut rng);
        assert_eq!(a.result, b.result);
        assert!(b.changed.is_empty());
        let other = execute(&mut d, 1, RequestId { client: 2, seq: 1 }, &reg, addr(), &mut rng);
        assert!(other.result.unwrap_err().contains("taken"));
        let Ok(Answer::Registered { token, .. }) = a.result else { panic!() };
        let bad = Op::SignIn { name: "alice".into(), token: "x".into() };
        assert!(execute(&mut d, 1, rid, &bad, addr(), &mut rng).result.is_err());
        let ok = Op::SignIn { name: "alice".into(), token };
        let s = execute(&mut d, 1, rid, &ok, addr(), &mut rng);
        assert!(s.result.is_ok());
        assert_eq!(d.get("alice").unwrap().addr, Some(addr()));
        let Ok(Answer::Online(list)) = execute(&mut d, 1, rid, &Op::ListOnline, addr(), &mut rng).result else {
            panic!()
        };
        assert_eq!(list.len(), 1);
    }
}
