//! Directory operations a server executes for a request it won: register, sign in and out,
//! look up, list online users, set shared images. Functions of the directory and the request,
//! so the node can run them inside `step` and the simulation can replay them.
//!
//! Executing does not write: it reads the directory, mints versions for the records it would
//! change and returns them. The node applies them only once a majority accepted the outcome, so
//! an execution abandoned to a takeover leaves no trace that could win last-writer-wins later.

use crate::directory::Directory;
use common::auth::{self, secret_bytes};
use common::config::ServerId;
use common::crypto::{self, KeyGen, Purpose};
use common::protocol::{Answer, Envelope, InboxEntry, Op, RequestId, UserInfo, UserRecord, ViewAnswer, MAX_LIST};
use common::views::{self, LeasePolicy, ShareRecord};
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

/// Checks that a request acting for a user carries that user's valid tag, made within
/// `window_ms` of `wall_ms` (the server's wall clock). Requests acting for nobody pass.
pub fn authorize(dir: &Directory, rid: RequestId, op: &Op, wall_ms: u64, window_ms: u64) -> Result<(), String> {
    let Some(user) = op.signer() else { return Ok(()) };
    let rec = dir.get(user).ok_or_else(|| format!("authentication failed: unknown user {user}"))?;
    auth::check_request(op, rid, &secret_bytes(&rec.secret), wall_ms, window_ms)
}

/// Checks, as it arrives, a request whose id is prescribed by its operation (a view: the id of
/// its slot), so that only the user it acts for can start the one decision of that id. Other
/// requests pass (they are checked when executed).
pub fn admit(dir: &Directory, rid: RequestId, op: &Op, wall_ms: u64, window_ms: u64) -> Result<(), String> {
    let Op::View { viewer, owner, image_id, slot, .. } = op else { return Ok(()) };
    if rid != views::slot_rid(owner, viewer, image_id, *slot) {
        return Err("a view's request id must be its slot's".into());
    }
    authorize(dir, rid, op, wall_ms, window_ms)
}

/// The key `purpose` of `user`, from the directory.
pub fn user_key(dir: &Directory, user: &str, purpose: Purpose) -> Option<crypto::Key> {
    dir.get(user).map(|r| crypto::derive(&secret_bytes(&r.secret), purpose))
}

/// Executes a directory operation already authorized; `from` is the client's address. Only
/// the clock of `dir` moves (so versions stay unique); the changed records are returned, not
/// applied. `keys` makes secrets and share keys. One function per operation follows.
pub fn execute(
    dir: &mut Directory,
    me: ServerId,
    rid: RequestId,
    op: &Op,
    from: SocketAddr,
    keys: &mut KeyGen,
) -> Outcome {
    let done = |r: Result<Outcome, String>| r.unwrap_or_else(fail);
    match op {
        Op::Register { name } => register(dir, me, rid, name, keys),
        Op::SignIn { name, .. } => done(sign_in_or_out(dir, me, name, Some(from))),
        Op::SignOut { name, .. } => done(sign_in_or_out(dir, me, name, None)),
        Op::SetImages { name, images, .. } => done(set_images(dir, me, name, images)),
        Op::Lookup { name } => match dir.get(name) {
            Some(r) => Outcome { result: Ok(Answer::User(UserInfo::from(r))), changed: vec![] },
            None => fail(format!("unknown user {name}")),
        },
        Op::ListOnline { after } => list_online(dir, after.as_deref()),
        Op::Encrypt { .. } | Op::Status | Op::Relay { .. } => {
            fail(format!("{} is not a directory operation", op.kind()))
        }
        Op::ShareKey { owner, viewer, image_id, .. } => done(share_key(dir, me, owner, viewer, image_id, keys)),
        Op::Grant { owner, viewer, image_id, views, add, lease, .. } => {
            done(grant(dir, me, owner, viewer, image_id, Grant { views: *views, add: *add, lease: *lease }))
        }
        Op::View { .. } => done(view(dir, me, rid, op)),
        Op::Views { viewer, owner, image_id, .. } => done(authed(dir, owner).and_then(|rec| {
            let s = find_share(&rec, viewer, image_id)
                .ok_or_else(|| format!("{owner} shares no {image_id} with {viewer}"))?;
            let result = Ok(Answer::Views { left: s.left(), next: s.next_slot(), grant: s.grant, lease: s.lease });
            Ok(Outcome { result, changed: vec![] })
        })),
        Op::Buffer { name, envelope, unreachable, .. } => done(buffer(dir, me, name, envelope, *unreachable)),
        Op::InboxAck { name, ids, .. } => done(inbox_ack(dir, me, name, ids)),
    }
}

/// The record of a signed-in user the operation acts for.
fn authed(dir: &Directory, name: &str) -> Result<UserRecord, String> {
    dir.get(name).cloned().ok_or_else(|| format!("unknown user {name}"))
}

/// A new user with a fresh secret (a retried registration gets the same user back).
fn register(dir: &mut Directory, me: ServerId, rid: RequestId, name: &str, keys: &mut KeyGen) -> Outcome {
    if let Some(r) = dir.get(name) {
        if r.created_by == rid {
            // A retried registration handled twice returns the same user.
            let result = Ok(Answer::Registered { user_id: r.user_id, name: r.name.clone(), secret: r.secret.clone() });
            return Outcome { result, changed: vec![] };
        }
        return fail(format!("the name {name} is taken"));
    }
    let rec = UserRecord {
        name: name.to_string(),
        user_id: user_id_of(name),
        secret: crypto::to_hex(&keys.next_key()),
        addr: None,
        online: false,
        images: vec![],
        version: dir.next_version(me),
        created_by: rid,
        inbox: vec![],
        shares: vec![],
    };
    let result = Ok(Answer::Registered { user_id: rec.user_id, name: rec.name.clone(), secret: rec.secret.clone() });
    Outcome { result, changed: vec![rec] }
}

/// Signs `name` in at `at`, or out (`None`: the address stays recorded).
fn sign_in_or_out(dir: &mut Directory, me: ServerId, name: &str, at: Option<SocketAddr>) -> Result<Outcome, String> {
    let mut rec = authed(dir, name)?;
    let signing_in = at.is_some();
    let result = Ok(if signing_in { Answer::SignedIn { user_id: rec.user_id } } else { Answer::SignedOut });
    let addr = at.or(rec.addr);
    if rec.online == signing_in && rec.addr == addr {
        return Ok(Outcome { result, changed: vec![] });
    }
    rec.online = signing_in;
    rec.addr = addr;
    rec.version = dir.next_version(me);
    Ok(Outcome { result, changed: vec![rec] })
}

/// The image ids `name` shares.
fn set_images(dir: &mut Directory, me: ServerId, name: &str, images: &[String]) -> Result<Outcome, String> {
    let mut rec = authed(dir, name)?;
    if rec.images == images {
        return Ok(Outcome { result: Ok(Answer::Done), changed: vec![] });
    }
    rec.images = images.to_vec();
    rec.version = dir.next_version(me);
    Ok(Outcome { result: Ok(Answer::Done), changed: vec![rec] })
}

/// The online users, as many as fit one answer.
/// The online users after `after` by name (all from the first without it), as many as fit
/// one answer (at least one): a page and whether more follow. Without a cursor, the answer
/// before paging (`Online`, the first page with nothing said about the rest).
fn list_online(dir: &Directory, after: Option<&str>) -> Outcome {
    let mut list = Vec::new();
    let mut size = 0;
    let mut more = false;
    let from = after.unwrap_or_default();
    for u in dir.online().skip_while(|u| u.name.as_str() <= from) {
        size += 64 + u.name.len() + u.images.iter().map(|i| i.len() + 3).sum::<usize>();
        if !list.is_empty() && (size > ANSWER_BUDGET || list.len() >= MAX_LIST) {
            more = true;
            break;
        }
        list.push(u);
    }
    let answer = match after {
        None => Answer::Online(list),
        Some(_) => Answer::OnlinePage { users: list, more },
    };
    Outcome { result: Ok(answer), changed: vec![] }
}

/// The share key of `owner`'s `image_id` shared with `viewer` — made fresh at the first
/// approval and kept in the owner's record — sealed for the owner, and the rights key derived
/// from it sealed for the viewer (the viewer never holds the key that opens the image: the cloud
/// hands that out once per view).
fn share_key(
    dir: &mut Directory,
    me: ServerId,
    owner: &str,
    viewer: &str,
    image_id: &str,
    keys: &mut KeyGen,
) -> Result<Outcome, String> {
    let mut rec = authed(dir, owner)?;
    let v = dir.get(viewer).cloned().ok_or_else(|| format!("unknown user {viewer}"))?;
    let mut changed = vec![];
    let key = match find_share(&rec, viewer, image_id).and_then(|s| s.share_key()) {
        Some(k) => k,
        None => {
            make_room(&mut rec.shares)?;
            let k = keys.next_key();
            let version = dir.next_version(me);
            rec.shares.push(ShareRecord::new(viewer, image_id, &k, version));
            rec.version = version;
            changed.push(rec.clone());
            k
        }
    };
    let aad = auth::share_aad(owner, viewer, image_id);
    let wrap = |r: &UserRecord, k: &crypto::Key| {
        crypto::to_hex(&crypto::seal(&crypto::derive(&secret_bytes(&r.secret), Purpose::Wrap), &aad, k))
    };
    let result = Ok(Answer::ShareKey { for_owner: wrap(&rec, &key), for_viewer: wrap(&v, &views::rights_key(&key)) });
    Ok(Outcome { result, changed })
}

/// Room for one more share: when the owner has [`views::MAX_SHARES`], the oldest share with no
/// views left goes (its viewer can no longer view it anyway).
fn make_room(shares: &mut Vec<ShareRecord>) -> Result<(), String> {
    if shares.len() < views::MAX_SHARES {
        return Ok(());
    }
    let oldest = shares.iter().enumerate().filter(|(_, s)| s.left() == 0).min_by_key(|(_, s)| s.version);
    match oldest {
        Some((i, _)) => {
            shares.remove(i);
            Ok(())
        }
        None => Err(format!("you share {} images with views left: revoke some first", views::MAX_SHARES)),
    }
}

fn find_share<'a>(rec: &'a UserRecord, viewer: &str, image_id: &str) -> Option<&'a ShareRecord> {
    rec.shares.iter().find(|s| s.viewer == viewer && s.image_id == image_id)
}

/// What the owner's grant asks.
struct Grant {
    views: u32,
    add: bool,
    lease: Option<LeasePolicy>,
}

/// Sets the views `viewer` has left on `owner`'s `image_id` (or adds to them): a new window of
/// slots above every slot used so far.
fn grant(
    dir: &mut Directory,
    me: ServerId,
    owner: &str,
    viewer: &str,
    image_id: &str,
    g: Grant,
) -> Result<Outcome, String> {
    let mut rec = authed(dir, owner)?;
    let version = dir.next_version(me);
    let share = rec
        .shares
        .iter_mut()
        .find(|s| s.viewer == viewer && s.image_id == image_id)
        .ok_or_else(|| format!("{viewer} has no share of {image_id} (approve a request first)"))?;
    let left = if g.add { share.left().saturating_add(g.views) } else { g.views }.min(views::MAX_VIEWS);
    let grant = share.set_left(left, version);
    if let Some(l) = g.lease {
        share.lease = l;
    }
    rec.version = version;
    Ok(Outcome { result: Ok(Answer::Granted { left, grant }), changed: vec![rec] })
}

/// One view: spends the slot the request asks for if the owner's current window allows it, and
/// seals the image key for this request's nonce; a slot that is not spendable is burned (so its
/// request id, decided once, can never spend it later) and the answer says where to try next.
fn view(dir: &mut Directory, me: ServerId, rid: RequestId, op: &Op) -> Result<Outcome, String> {
    let Op::View { viewer, owner, image_id, slot, nonce, lease, .. } = op else {
        return Err("not a view".into());
    };
    if rid != views::slot_rid(owner, viewer, image_id, *slot) {
        return Err("a view's request id must be its slot's".into());
    }
    let wrap = user_key(dir, viewer, Purpose::Wrap).ok_or_else(|| format!("unknown user {viewer}"))?;
    let mut rec = authed(dir, owner)?;
    let share = rec
        .shares
        .iter_mut()
        .find(|s| &s.viewer == viewer && &s.image_id == image_id)
        .ok_or_else(|| format!("{owner} shares no {image_id} with {viewer}"))?;
    // A lease the owner does not allow spends nothing (the answer says so: no lease time).
    let spent = share.spendable(*slot) && (!*lease || share.lease.views > 0);
    let key = match (spent, share.share_key()) {
        (true, Some(k)) => {
            let sealed = crypto::seal(
                &views::view_wrap_key(&wrap, nonce),
                &views::view_aad(owner, viewer, image_id, *slot),
                &views::image_key(&k),
            );
            Some(crypto::to_hex(&sealed))
        }
        _ => None,
    };
    let moved = *slot > share.top;
    share.top = share.top.max(*slot);
    let answer = ViewAnswer {
        slot: *slot,
        nonce: nonce.clone(),
        key,
        left: share.left(),
        next: share.next_slot(),
        lease_secs: if spent && *lease { share.lease.secs } else { 0 },
        grant: share.grant,
    };
    let mut changed = vec![];
    if moved {
        rec.version = dir.next_version(me);
        changed.push(rec);
    }
    Ok(Outcome { result: Ok(Answer::Viewed(answer)), changed })
}

/// Keeps `envelope` in its recipient's inbox; if neither the sender nor the cloud could reach
/// the recipient at its recorded address, it is offline.
fn buffer(
    dir: &mut Directory,
    me: ServerId,
    name: &str,
    envelope: &Envelope,
    unreachable: Option<SocketAddr>,
) -> Result<Outcome, String> {
    authed(dir, name)?;
    let mut rec = dir.get(&envelope.to).cloned().ok_or_else(|| format!("unknown user {}", envelope.to))?;
    if rec.inbox.iter().any(|e| e.envelope.from == envelope.from && e.envelope.id == envelope.id) {
        return Ok(Outcome { result: Ok(Answer::Buffered), changed: vec![] }); // a retry
    }
    if rec.inbox.iter().filter(|e| !e.delivered).count() >= MAX_PENDING {
        return Err(format!("{}'s inbox is full", envelope.to));
    }
    let v = dir.next_version(me);
    rec.inbox.push(InboxEntry { seq: v, envelope: envelope.clone(), delivered: false, version: v });
    // (Not when it signed in again elsewhere meanwhile.)
    if unreachable.is_some() && unreachable == rec.addr {
        rec.online = false;
    }
    rec.version = v;
    Ok(Outcome { result: Ok(Answer::Buffered), changed: vec![rec] })
}

/// Marks the envelopes `ids` of `name`'s inbox delivered (keeping the newest tombstones only)
/// and answers with what is still pending, as much as fits one answer.
fn inbox_ack(dir: &mut Directory, me: ServerId, name: &str, ids: &[u64]) -> Result<Outcome, String> {
    let mut rec = authed(dir, name)?;
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
        return Ok(Outcome { result, changed: vec![] });
    }
    rec.version = v;
    Ok(Outcome { result, changed: vec![rec] })
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::protocol::Auth;

    fn addr() -> SocketAddr {
        "127.0.0.1:5000".parse().unwrap()
    }

    /// Executes and applies the outcome, as the node does once the request is decided.
    fn run(d: &mut Directory, me: ServerId, rid: RequestId, op: &Op, keys: &mut KeyGen) -> Outcome {
        let out = execute(d, me, rid, op, addr(), keys);
        for r in &out.changed {
            d.apply(r.clone());
        }
        out
    }

    fn signed(mut op: Op, rid: RequestId, secret: &str, now: u64) -> Op {
        auth::sign_request(&mut op, rid, &secret_bytes(secret), now);
        op
    }

    #[test]
    fn execution_writes_nothing_until_applied() {
        let mut d = Directory::default();
        let mut keys = KeyGen::from_seed(1);
        let rid = RequestId { client: 1, seq: 1 };
        let out = execute(&mut d, 1, rid, &Op::Register { name: "alice".into() }, addr(), &mut keys);
        assert_eq!(out.changed.len(), 1);
        assert!(d.get("alice").is_none(), "an abandoned execution must leave no record");
        let again = execute(&mut d, 1, rid, &Op::Register { name: "alice".into() }, addr(), &mut keys);
        assert!(again.changed[0].version > out.changed[0].version, "versions stay unique");
        assert_ne!(again.changed[0].secret, out.changed[0].secret, "every registration gets a fresh secret");
    }

    #[test]
    fn register_sign_in_and_retry_is_idempotent() {
        let mut d = Directory::default();
        let mut keys = KeyGen::from_seed(1);
        let rid = RequestId { client: 1, seq: 1 };
        let reg = Op::Register { name: "alice".into() };
        let a = run(&mut d, 1, rid, &reg, &mut keys);
        let b = run(&mut d, 2, rid, &reg, &mut keys);
        assert_eq!(a.result, b.result);
        assert!(b.changed.is_empty());
        let other = run(&mut d, 1, RequestId { client: 2, seq: 1 }, &reg, &mut keys);
        assert!(other.result.unwrap_err().contains("taken"));
        let Ok(Answer::Registered { secret, .. }) = a.result else { panic!() };
        assert_eq!(secret.len(), 64);
        let rid = RequestId { client: 1, seq: 2 };
        let ok = signed(Op::SignIn { name: "alice".into(), auth: Auth::default() }, rid, &secret, 5_000);
        assert!(authorize(&d, rid, &ok, 5_100, 1_000).is_ok());
        let s = run(&mut d, 1, rid, &ok, &mut keys);
        assert!(s.result.is_ok());
        assert_eq!(d.get("alice").unwrap().addr, Some(addr()));
        let Ok(Answer::Online(list)) =
            execute(&mut d, 1, rid, &Op::ListOnline { after: None }, addr(), &mut keys).result
        else {
            panic!()
        };
        assert_eq!(list.len(), 1);
    }

    #[test]
    fn forged_and_replayed_requests_are_refused() {
        let mut d = Directory::default();
        let mut keys = KeyGen::from_seed(3);
        for (seq, name) in [(1, "alice"), (2, "mallory")] {
            run(&mut d, 1, RequestId { client: 1, seq }, &Op::Register { name: name.into() }, &mut keys);
        }
        let mallory = d.get("mallory").unwrap().secret.clone();
        let rid = RequestId { client: 66, seq: 1 };
        // Mallory signs a sign-in (an address change) as alice with her own secret.
        let forged = signed(Op::SignIn { name: "alice".into(), auth: Auth::default() }, rid, &mallory, 5_000);
        assert!(authorize(&d, rid, &forged, 5_000, 1_000).unwrap_err().contains("bad tag"));
        // An unsigned request and an unknown user.
        let bare = Op::SetImages { name: "alice".into(), auth: Auth::default(), images: vec![] };
        assert!(authorize(&d, rid, &bare, 5_000, 1_000).is_err());
        let ghost = signed(Op::SignIn { name: "ghost".into(), auth: Auth::default() }, rid, &mallory, 5_000);
        assert!(authorize(&d, rid, &ghost, 5_000, 1_000).unwrap_err().contains("unknown user"));
        // Mallory queues a message as alice.
        let env = common::protocol::Envelope {
            id: 1,
            from: "alice".into(),
            to: "mallory".into(),
            body: common::protocol::PeerBody::GalleryRequest { transfer: 1 },
        };
        let buffer = Op::Buffer { name: "alice".into(), auth: Auth::default(), envelope: env, unreachable: None };
        let buffer = signed(buffer, rid, &mallory, 5_000);
        assert!(authorize(&d, rid, &buffer, 5_000, 1_000).is_err());
        // Mallory's own valid request, replayed after the window.
        let own = signed(Op::SignOut { name: "mallory".into(), auth: Auth::default() }, rid, &mallory, 5_000);
        assert!(authorize(&d, rid, &own, 5_500, 1_000).is_ok());
        assert!(authorize(&d, rid, &own, 7_000, 1_000).unwrap_err().contains("replay"));
    }

    #[test]
    fn share_keys_open_for_owner_and_viewer_only() {
        let mut d = Directory::default();
        let mut keys = KeyGen::from_seed(4);
        for (seq, name) in [(1, "alice"), (2, "bob"), (3, "carol")] {
            run(&mut d, 1, RequestId { client: 1, seq }, &Op::Register { name: name.into() }, &mut keys);
        }
        let op =
            Op::ShareKey { owner: "alice".into(), auth: Auth::default(), viewer: "bob".into(), image_id: "cat".into() };
        let Ok(Answer::ShareKey { for_owner, for_viewer }) =
            run(&mut d, 1, RequestId { client: 2, seq: 1 }, &op, &mut keys).result
        else {
            panic!()
        };
        let wrap = |u: &str| crypto::derive(&secret_bytes(&d.get(u).unwrap().secret), Purpose::Wrap);
        let aad = auth::share_aad("alice", "bob", "cat");
        let open = |u: &str, sealed: &str| crypto::open(&wrap(u), &aad, &crypto::from_hex(sealed).unwrap());
        let k1: crypto::Key = open("alice", &for_owner).unwrap().try_into().unwrap();
        assert_eq!(open("bob", &for_viewer).unwrap(), views::rights_key(&k1).to_vec(), "the viewer: the rights key");
        assert!(open("carol", &for_viewer).is_err());
        assert!(crypto::open(
            &wrap("bob"),
            &auth::share_aad("alice", "carol", "cat"),
            &crypto::from_hex(&for_viewer).unwrap()
        )
        .is_err());
    }

    /// alice, bob and carol registered; alice shares "cat" with bob (the share key made).
    fn shared() -> (Directory, KeyGen) {
        let mut d = Directory::default();
        let mut keys = KeyGen::from_seed(5);
        for (seq, name) in [(1, "alice"), (2, "bob"), (3, "carol")] {
            run(&mut d, 1, RequestId { client: 1, seq }, &Op::Register { name: name.into() }, &mut keys);
        }
        let op =
            Op::ShareKey { owner: "alice".into(), auth: Auth::default(), viewer: "bob".into(), image_id: "cat".into() };
        assert!(run(&mut d, 1, RequestId { client: 2, seq: 1 }, &op, &mut keys).result.is_ok());
        (d, keys)
    }

    fn grant_op(views: u32, add: bool) -> Op {
        Op::Grant {
            owner: "alice".into(),
            auth: Auth::default(),
            viewer: "bob".into(),
            image_id: "cat".into(),
            views,
            add,
            lease: None,
        }
    }

    fn view_op(slot: u32, nonce: &str) -> (RequestId, Op) {
        let op = Op::View {
            viewer: "bob".into(),
            auth: Auth::default(),
            owner: "alice".into(),
            image_id: "cat".into(),
            slot,
            nonce: nonce.into(),
            lease: false,
        };
        (views::slot_rid("alice", "bob", "cat", slot), op)
    }

    fn viewed(d: &mut Directory, keys: &mut KeyGen, slot: u32, nonce: &str) -> ViewAnswer {
        let (rid, op) = view_op(slot, nonce);
        match run(d, 2, rid, &op, keys).result {
            Ok(Answer::Viewed(a)) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn each_slot_of_the_window_is_one_view_and_the_key_opens_for_the_nonce_only() {
        let (mut d, mut keys) = shared();
        let g = run(&mut d, 1, RequestId { client: 2, seq: 2 }, &grant_op(2, false), &mut keys);
        assert_eq!(g.result, Ok(Answer::Granted { left: 2, grant: 1 }));
        let n = "0123456789abcdef0123456789abcdef";
        let a = viewed(&mut d, &mut keys, 1, n);
        assert_eq!((a.left, a.next), (1, 2));
        let wrap = user_key(&d, "bob", Purpose::Wrap).unwrap();
        let sealed = crypto::from_hex(a.key.as_deref().unwrap()).unwrap();
        let share = find_share(d.get("alice").unwrap(), "bob", "cat").unwrap().share_key().unwrap();
        let opened = crypto::open(&views::view_wrap_key(&wrap, n), &views::view_aad("alice", "bob", "cat", 1), &sealed);
        assert_eq!(opened.unwrap(), views::image_key(&share).to_vec());
        let other = views::view_wrap_key(&wrap, "ffffffffffffffffffffffffffffffff");
        assert!(crypto::open(&other, &views::view_aad("alice", "bob", "cat", 1), &sealed).is_err(), "another nonce");
        // Slot 1 again (a request whose decision was forgotten): used, nothing sealed.
        let again = viewed(&mut d, &mut keys, 1, n);
        assert_eq!((again.key, again.left, again.next), (None, 1, 2));
        assert!(viewed(&mut d, &mut keys, 2, n).key.is_some());
        let none = viewed(&mut d, &mut keys, 3, n);
        assert_eq!((none.key, none.left, none.next), (None, 0, 4), "no views left: slot 3 is burned");
        // More views open a window above slot 3.
        run(&mut d, 1, RequestId { client: 2, seq: 3 }, &grant_op(2, true), &mut keys);
        assert!(viewed(&mut d, &mut keys, 3, n).key.is_none(), "a burned slot stays dead");
        assert!(viewed(&mut d, &mut keys, 4, n).key.is_some());
        // A revoke closes the window.
        run(&mut d, 1, RequestId { client: 2, seq: 4 }, &grant_op(0, false), &mut keys);
        assert_eq!(viewed(&mut d, &mut keys, 5, n).key, None);
    }

    #[test]
    fn a_view_must_use_its_slots_request_id_and_a_share() {
        let (mut d, mut keys) = shared();
        run(&mut d, 1, RequestId { client: 2, seq: 2 }, &grant_op(5, false), &mut keys);
        let (_, op) = view_op(1, "0123456789abcdef0123456789abcdef");
        let wrong = RequestId { client: 77, seq: 1 };
        assert!(run(&mut d, 1, wrong, &op, &mut keys).result.unwrap_err().contains("request id"));
        let carol = Op::View {
            viewer: "carol".into(),
            auth: Auth::default(),
            owner: "alice".into(),
            image_id: "cat".into(),
            slot: 1,
            nonce: "0123456789abcdef0123456789abcdef".into(),
            lease: false,
        };
        let rid = views::slot_rid("alice", "carol", "cat", 1);
        assert!(run(&mut d, 1, rid, &carol, &mut keys).result.unwrap_err().contains("shares no cat with carol"));
        let lease = Op::View {
            viewer: "bob".into(),
            auth: Auth::default(),
            owner: "alice".into(),
            image_id: "cat".into(),
            slot: 1,
            nonce: "0123456789abcdef0123456789abcdef".into(),
            lease: true,
        };
        let Ok(Answer::Viewed(a)) = run(&mut d, 1, views::slot_rid("alice", "bob", "cat", 1), &lease, &mut keys).result
        else {
            panic!()
        };
        assert_eq!((a.key, a.lease_secs, a.left), (None, 0, 4), "no lease allowed: the slot is burned, no view spent");
    }

    #[test]
    fn the_share_key_is_made_once_and_the_viewer_gets_only_the_rights_key() {
        let (mut d, mut keys) = shared();
        let op =
            Op::ShareKey { owner: "alice".into(), auth: Auth::default(), viewer: "bob".into(), image_id: "cat".into() };
        let Ok(Answer::ShareKey { for_owner, for_viewer }) =
            run(&mut d, 1, RequestId { client: 3, seq: 1 }, &op, &mut keys).result
        else {
            panic!()
        };
        let wrap = |u: &str| crypto::derive(&secret_bytes(&d.get(u).unwrap().secret), Purpose::Wrap);
        let aad = auth::share_aad("alice", "bob", "cat");
        let open = |u: &str, sealed: &str| crypto::open(&wrap(u), &aad, &crypto::from_hex(sealed).unwrap()).unwrap();
        let share = find_share(d.get("alice").unwrap(), "bob", "cat").unwrap().share_key().unwrap();
        assert_eq!(open("alice", &for_owner), share.to_vec(), "the same key as at the first approval");
        assert_eq!(open("bob", &for_viewer), views::rights_key(&share).to_vec());
    }

    #[test]
    fn the_online_list_comes_in_pages_that_cover_everyone_once() {
        let mut d = Directory::default();
        for i in 0..1_000u64 {
            d.apply(UserRecord {
                name: format!("u{i:04}"),
                user_id: i,
                secret: "0".repeat(64),
                addr: Some(addr()),
                online: i % 7 != 3,
                images: if i % 10 == 0 { vec!["x".repeat(60); 200] } else { vec![] },
                version: common::protocol::Version { counter: 1, server: 1 },
                created_by: RequestId { client: 1, seq: i },
                inbox: vec![],
                shares: vec![],
            });
        }
        let online: Vec<String> = d.online().map(|u| u.name).collect();
        let mut keys = KeyGen::from_seed(1);
        let rid = RequestId { client: 9, seq: 1 };
        let mut list = |after: Option<&str>, keys: &mut KeyGen| {
            execute(&mut d, 1, rid, &Op::ListOnline { after: after.map(String::from) }, addr(), keys).result
        };
        let Ok(Answer::Online(old)) = list(None, &mut keys) else { panic!("no cursor: the old answer") };
        assert!(old.len() < online.len() && old.len() <= MAX_LIST);
        let (mut seen, mut after, mut pages) = (Vec::new(), String::new(), 0);
        loop {
            let Ok(Answer::OnlinePage { users, more }) = list(Some(&after), &mut keys) else { panic!() };
            assert!(!users.is_empty() && users.len() <= MAX_LIST, "page {pages}: {}", users.len());
            let bytes = serde_json::to_vec(&users).unwrap().len();
            assert!(bytes <= ANSWER_BUDGET + 20_000, "page {pages}: {bytes} bytes");
            seen.extend(users.into_iter().map(|u| u.name));
            pages += 1;
            if !more {
                break;
            }
            after = seen.last().unwrap().clone();
        }
        assert_eq!(seen, online, "every online user once, in order, over {pages} pages");
        assert!(pages > 4);
        let Ok(Answer::OnlinePage { users, more }) = list(Some("u9999"), &mut keys) else { panic!() };
        assert!(users.is_empty() && !more);
        let Ok(Answer::OnlinePage { users, .. }) = list(Some("u0500"), &mut keys) else { panic!() };
        assert_eq!(users[0].name, "u0501");
    }
}
