//! Who may say what: users' requests carry an HMAC-SHA256 tag under a key derived from their
//! secret, over the request id, a timestamp and the operation; messages between servers travel
//! in authenticated frames under the cluster key; rights messages between peers carry a tag
//! under their per-share key. Every check here is a function of bytes, keys and a clock, so
//! the node and the simulations call the same code as the threads.

use crate::crypto::{self, Key, Purpose};
use crate::frame::FrameKind;
use crate::protocol::{decode, Frame, Msg, Op, RequestId, WireError};

/// Bytes of the tag and the timestamp at the head of an authenticated frame.
pub const SERVER_HEAD: usize = 32 + 8;

/// Milliseconds since the Unix epoch on this machine.
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The signed bytes of a request: its id, and the operation with an empty tag.
fn request_body(rid: RequestId, op: &Op) -> Vec<u8> {
    let mut unsigned = op.clone();
    if let Some(a) = unsigned.auth_mut() {
        a.tag.clear();
    }
    let mut body = Vec::with_capacity(128);
    body.extend_from_slice(&rid.client.to_le_bytes());
    body.extend_from_slice(&rid.seq.to_le_bytes());
    // Serialising these plain structs cannot fail.
    let _ = serde_json::to_writer(&mut body, &unsigned);
    body
}

/// Signs `op` (if it acts for a user) for request `rid` at wall-clock time `now_ms`.
pub fn sign_request(op: &mut Op, rid: RequestId, secret: &[u8], now_ms: u64) {
    if let Some(a) = op.auth_mut() {
        a.ts = now_ms;
        a.tag.clear();
    } else {
        return;
    }
    let key = crypto::derive(secret, Purpose::Auth);
    let t = crypto::tag(&key, &[b"imgcloud request", &request_body(rid, op)]);
    if let Some(a) = op.auth_mut() {
        a.tag = crypto::to_hex(&t);
    }
}

/// Checks the tag and the timestamp of a request that acts for a user whose secret is `secret`.
pub fn check_request(op: &Op, rid: RequestId, secret: &[u8], now_ms: u64, window_ms: u64) -> Result<(), String> {
    let Some(a) = op.auth() else { return Ok(()) };
    let user = op.signer().unwrap_or("?");
    let Some(tag) = crypto::from_hex(&a.tag) else {
        return Err(format!("authentication failed for {user}: malformed tag"));
    };
    let key = crypto::derive(secret, Purpose::Auth);
    crypto::verify(&key, &[b"imgcloud request", &request_body(rid, op)], &tag)
        .map_err(|_| format!("authentication failed for {user}: bad tag"))?;
    if a.ts.abs_diff(now_ms) > window_ms {
        return Err(format!(
            "authentication failed for {user}: timestamp {} ms away from the server's clock (replay or clock skew)",
            a.ts.abs_diff(now_ms)
        ));
    }
    Ok(())
}

/// Encodes a server-to-server message in an authenticated frame at wall-clock time `now_ms`.
pub fn encode_server(key: &Key, now_ms: u64, msg: &Msg) -> Vec<u8> {
    let body = serde_json::to_vec(msg).unwrap_or_default();
    let ts = now_ms.to_le_bytes();
    let t = crypto::tag(key, &[b"imgcloud server frame", &ts, &body]);
    let mut out = Vec::with_capacity(4 + SERVER_HEAD + body.len());
    out.extend_from_slice(&FrameKind::Server.header());
    out.extend_from_slice(&t);
    out.extend_from_slice(&ts);
    out.extend_from_slice(&body);
    out
}

/// Why [`decode_at_server`] refused an authenticated frame whose tag is wrong.
pub const BAD_TAG: &str = "server frame with a bad tag (not from this cluster)";

/// True if [`decode_at_server`] refused a frame for its tag: an authenticated frame made under
/// another key (a server with a different cluster key, or a forger).
pub fn is_bad_tag(e: &WireError) -> bool {
    e.0 == BAD_TAG
}

/// Decodes a datagram that arrived at a server: an authenticated frame must carry a valid tag
/// under `key` and a timestamp within `window_ms` of `now_ms`; a server-to-server message in a
/// plain frame is rejected.
pub fn decode_at_server(bytes: &[u8], key: &Key, now_ms: u64, window_ms: u64) -> Result<(Frame, bool), WireError> {
    if let Ok((FrameKind::Server, rest)) = crate::frame::split(bytes) {
        if rest.len() < SERVER_HEAD {
            return Err(WireError("authenticated frame too short".into()));
        }
        let (t, rest) = rest.split_at(32);
        let (ts, body) = rest.split_at(8);
        crypto::verify(key, &[b"imgcloud server frame", ts, body], t).map_err(|_| WireError(BAD_TAG.into()))?;
        let mut ts8 = [0u8; 8];
        ts8.copy_from_slice(ts);
        let ts = u64::from_le_bytes(ts8);
        if ts.abs_diff(now_ms) > window_ms {
            return Err(WireError(format!("server frame {} ms old or ahead: replay?", ts.abs_diff(now_ms))));
        }
        let mut plain = Vec::with_capacity(4 + body.len());
        plain.extend_from_slice(&FrameKind::Ctl.header());
        plain.extend_from_slice(body);
        return decode(&plain).map(|f| (f, true));
    }
    let frame = decode(bytes)?;
    if let Frame::Ctl(m) = &frame {
        if m.server_only() {
            return Err(WireError("server message without the cluster's authentication".into()));
        }
    }
    Ok((frame, false))
}

/// What a rights message's tag covers: `owner` gives `viewer` `views` views of `image_id`,
/// version `version` (`kind` tells a delivery from an update, so one cannot stand for the other).
#[derive(Debug, Clone, Copy)]
pub struct RightsFields<'a> {
    /// "deliver" or "grant".
    pub kind: &'a str,
    /// The owner.
    pub owner: &'a str,
    /// The viewer.
    pub viewer: &'a str,
    /// The image.
    pub image_id: &'a str,
    /// Views granted.
    pub views: u32,
    /// Version of the grant.
    pub version: u64,
}

impl RightsFields<'_> {
    /// Runs `f` on the framed fields the tag covers (and `extra`, if not empty: a delivery's
    /// digest of the sealed image).
    fn with_fields<R>(&self, extra: &[u8], f: impl FnOnce(&[&[u8]]) -> R) -> R {
        let (v, n) = (self.views.to_le_bytes(), self.version.to_le_bytes());
        let mut fields: Vec<&[u8]> = vec![
            b"imgcloud rights",
            self.kind.as_bytes(),
            self.owner.as_bytes(),
            self.viewer.as_bytes(),
            self.image_id.as_bytes(),
            &v,
            &n,
        ];
        if !extra.is_empty() {
            fields.push(extra);
        }
        f(&fields)
    }

    /// The tag under `rights_key` (hex).
    pub fn tag(&self, rights_key: &Key) -> String {
        self.tag_with(rights_key, "")
    }

    /// The tag under `rights_key` (hex) covering also `digest` (a delivery's: the SHA-256 of the
    /// sealed image hidden in the copy, so the viewer can tell a damaged copy without opening it).
    pub fn tag_with(&self, rights_key: &Key, digest: &str) -> String {
        crypto::to_hex(&self.with_fields(digest.as_bytes(), |fields| crypto::tag(rights_key, fields)))
    }

    /// Checks `tag` (hex) in constant time.
    pub fn check(&self, rights_key: &Key, tag: &str) -> Result<(), String> {
        self.check_with(rights_key, "", tag)
    }

    /// Checks a tag made by [`RightsFields::tag_with`].
    pub fn check_with(&self, rights_key: &Key, digest: &str, tag: &str) -> Result<(), String> {
        let t = crypto::from_hex(tag).ok_or("malformed rights tag")?;
        self.with_fields(digest.as_bytes(), |fields| crypto::verify(rights_key, fields, &t))
            .map_err(|_| format!("the {} from {} for {} is not authentic", self.kind, self.owner, self.image_id))
    }
}

/// Associated data binding a per-share key (as the cloud wraps it) to its share.
pub fn share_aad(owner: &str, viewer: &str, image_id: &str) -> Vec<u8> {
    format!("imgcloud share key\0{owner}\0{viewer}\0{image_id}").into_bytes()
}

/// Associated data of an image sealed under a per-share key.
pub fn shared_image_aad(owner: &str, viewer: &str, image_id: &str) -> Vec<u8> {
    format!("imgcloud shared image\0{owner}\0{viewer}\0{image_id}").into_bytes()
}

/// Associated data of an owner's own image sealed under its own key.
pub fn own_image_aad(owner: &str) -> Vec<u8> {
    format!("imgcloud own image\0{owner}").into_bytes()
}

/// The secret of a user as bytes (hex in the directory and the identity file).
pub fn secret_bytes(secret_hex: &str) -> Vec<u8> {
    crypto::from_hex(secret_hex).unwrap_or_else(|| secret_hex.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{encode_msg, Auth};

    fn rid() -> RequestId {
        RequestId { client: 9, seq: 4 }
    }

    fn sign_in() -> Op {
        Op::SignIn { name: "alice".into(), auth: Auth::default() }
    }

    #[test]
    fn requests_verify_only_with_the_secret_rid_op_and_time() {
        let mut op = sign_in();
        sign_request(&mut op, rid(), b"alice-secret", 1_000_000);
        assert!(check_request(&op, rid(), b"alice-secret", 1_000_500, 30_000).is_ok());
        assert!(check_request(&op, rid(), b"mallory-secret", 1_000_500, 30_000).unwrap_err().contains("bad tag"));
        let other = RequestId { client: 9, seq: 5 };
        assert!(check_request(&op, other, b"alice-secret", 1_000_500, 30_000).is_err());
        assert!(check_request(&op, rid(), b"alice-secret", 1_040_000, 30_000).unwrap_err().contains("replay"));
        let Op::SignIn { auth, .. } = &op else { panic!() };
        let moved = Op::SignOut { name: "alice".into(), auth: auth.clone() };
        assert!(check_request(&moved, rid(), b"alice-secret", 1_000_500, 30_000).is_err(), "tag is bound to the op");
    }

    #[test]
    fn server_frames_need_the_cluster_key() {
        let key = crypto::random_key();
        let msg = Msg::Token { from: 1, to: 2, round: 3 };
        let bytes = encode_server(&key, 5_000, &msg);
        assert_eq!(decode_at_server(&bytes, &key, 5_100, 1_000).unwrap(), (Frame::Ctl(msg.clone()), true));
        assert!(is_bad_tag(&decode_at_server(&bytes, &crypto::random_key(), 5_100, 1_000).unwrap_err()));
        assert!(!is_bad_tag(&decode_at_server(&bytes, &key, 9_000, 1_000).unwrap_err()), "old, not forged");
        assert!(decode_at_server(&bytes, &key, 9_000, 1_000).is_err(), "too old");
        let mut t = bytes.clone();
        let last = t.len() - 2;
        t[last] ^= 1;
        assert!(decode_at_server(&t, &key, 5_100, 1_000).is_err());
        assert!(decode_at_server(&encode_msg(&msg), &key, 5_100, 1_000).is_err(), "plain server message");
        assert!(decode_at_server(&bytes[..20], &key, 5_100, 1_000).is_err());
    }

    #[test]
    fn rights_tags_bind_every_field() {
        let k = crypto::random_key();
        let grant =
            RightsFields { kind: "grant", owner: "alice", viewer: "bob", image_id: "cat", views: 3, version: 7 };
        let t = grant.tag(&k);
        assert!(grant.check(&k, &t).is_ok());
        assert!(RightsFields { views: 4, ..grant }.check(&k, &t).is_err());
        assert!(RightsFields { version: 8, ..grant }.check(&k, &t).is_err());
        assert!(RightsFields { kind: "deliver", ..grant }.check(&k, &t).is_err());
        assert!(RightsFields { viewer: "carol", ..grant }.check(&k, &t).is_err());
        assert!(grant.check(&crypto::random_key(), &t).is_err());
        assert!(grant.check(&k, "zz").is_err());
    }
}
