//! Every message on the wire, and the codecs of the plain frames that carry them (see
//! [`crate::frame`] for the kinds): a control message ([`Msg`], JSON: small and readable in a
//! packet capture), a transfer message ([`TransferMsg`], compact binary: the hot path), or a
//! message with bytes attached. [`decode`] never panics: anything malformed,
//! oversized or semantically invalid is rejected with a reason the receiver logs.

use crate::config::{ServerId, MAX_DATAGRAM};
use crate::frame::FrameKind;
use crate::names::{check_image_id, check_user};
use crate::operator::{OperatorCmd, MAX_REPLY};
use crate::transfer::TransferMsg;
use crate::views::{LeasePolicy, ShareRecord, MAX_LEASE_SECS, MAX_LEASE_VIEWS, MAX_SHARES, MAX_VIEWS};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;

pub use crate::frame::{MAGIC, VERSION};

/// The round of an `Accept` that announces a decision instead of proposing a value.
pub const DECIDED: u32 = u32::MAX;
/// Most image ids one user may list in the directory.
pub const MAX_IMAGES_PER_USER: usize = 256;
/// Most users listed in one answer.
pub const MAX_LIST: usize = 200;

/// A request's identity: the client instance that made it and its sequence number there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RequestId {
    /// Random id of the client process.
    pub client: u64,
    /// Sequence number within that client.
    pub seq: u64,
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}/{}", self.client & 0xffff_ffff, self.seq)
    }
}

/// The transfer id of a request's payload (`purpose` 0: upload, 1: result).
pub fn transfer_id(rid: RequestId, purpose: u8) -> u64 {
    let mut h =
        rid.client ^ rid.seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (purpose as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93);
    h ^= h >> 31;
    h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h ^ (h >> 29)
}

/// A version of a directory record: a Lamport counter, ties broken by server id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct Version {
    /// Lamport counter.
    pub counter: u64,
    /// The server that wrote this version.
    pub server: ServerId,
}

/// One user in the replicated directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// Unique user name.
    pub name: String,
    /// Stable numeric id.
    pub user_id: u64,
    /// The user's secret (64 hex digits), issued at registration: the keys that authenticate
    /// the user's requests, wrap its share keys and seal its own images derive from it.
    #[serde(alias = "token")]
    pub secret: String,
    /// Where the user's client listens, when known.
    pub addr: Option<SocketAddr>,
    /// Signed in right now.
    pub online: bool,
    /// Ids of the images the user shares.
    pub images: Vec<String>,
    /// Version for last-writer-wins merging.
    pub version: Version,
    /// The request that created the user (a retried registration returns the same user).
    pub created_by: RequestId,
    /// Messages buffered for the user while offline (and tombstones of delivered ones).
    #[serde(default)]
    pub inbox: Vec<InboxEntry>,
    /// The images the user shares with others, each with the views the cloud counts for it
    /// (left out when empty: a record without shares is the same bytes as before views).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shares: Vec<ShareRecord>,
}

/// What other users may see of a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    /// User name.
    pub name: String,
    /// Numeric id.
    pub user_id: u64,
    /// Peer address when online.
    pub addr: Option<SocketAddr>,
    /// Signed in.
    pub online: bool,
    /// Shared image ids.
    pub images: Vec<String>,
}

impl From<&UserRecord> for UserInfo {
    fn from(r: &UserRecord) -> Self {
        UserInfo { name: r.name.clone(), user_id: r.user_id, addr: r.addr, online: r.online, images: r.images.clone() }
    }
}

/// What one peer tells another (directly, relayed by the cloud, or buffered for later).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerBody {
    /// Send me your gallery of previews by transfer `transfer`.
    GalleryRequest { transfer: u64 },
    /// May I have `image_id` with `views` views? (`more`: I have it and want more views.)
    ImageRequest { image_id: String, views: u32, more: bool },
    /// The owner said no.
    Rejected { image_id: String, reason: String },
    /// The owner approved: the stego image (the hidden image sealed under the share's image key,
    /// which the cloud hands the viewer once per view) follows by transfer once acked. `ticket`:
    /// the share's rights key as the cloud sealed it for the viewer (hex); `digest`: SHA-256 of
    /// the sealed hidden image (hex); `mac`: the rights tag, covering the digest, under the
    /// rights key (hex).
    Deliver {
        image_id: String,
        views: u32,
        version: u64,
        transfer: u64,
        len: u64,
        ticket: String,
        #[serde(default)]
        digest: String,
        mac: String,
    },
    /// The owner sets the views left on its image (0 = revoked: delete the copy); `mac`: the
    /// rights tag under the share key (hex), so only the owner can send it.
    Rights { image_id: String, views: u32, version: u64, mac: String },
}

/// A peer message with its sender, recipient and an id for acknowledgement and deduplication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique per sender (random base + counter).
    pub id: u64,
    /// Sending user.
    pub from: String,
    /// Receiving user.
    pub to: String,
    /// The message.
    pub body: PeerBody,
}

/// A message buffered by the cloud for a user who was offline, in arrival order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxEntry {
    /// Order of arrival (Lamport counter of the buffering server, then its id).
    pub seq: Version,
    /// The message (its `to` is the recipient).
    pub envelope: Envelope,
    /// Acknowledged by the recipient: kept only as a tombstone so replicas drop it too.
    pub delivered: bool,
    /// Version of this entry (a tombstone is newer than the pending entry).
    pub version: Version,
}

/// Proof that a request comes from the user it acts for: a wall-clock timestamp (ms since the
/// Unix epoch) and an HMAC-SHA256 tag (hex) over the request id and the operation (see `auth.rs`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Auth {
    /// When the client signed the request.
    pub ts: u64,
    /// The tag, 64 hex digits.
    pub tag: String,
}

/// An operation a client asks the cloud for. On the wire, `ListOnline` without a cursor is the
/// bare string `"ListOnline"` (as before paging), and that string still parses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub enum Op {
    /// Create a user; the answer carries its secret.
    Register { name: String },
    /// Mark the user online at the request's source address.
    SignIn { name: String, auth: Auth },
    /// Mark the user offline.
    SignOut { name: String, auth: Auth },
    /// Look one user up.
    Lookup { name: String },
    /// Online users with their address and images, by name. `after`: a page of those whose
    /// name comes after it (`""`: from the first), answered by [`Answer::OnlinePage`]; `None`:
    /// the first [`MAX_LIST`] at most, answered by [`Answer::Online`] (the request before paging).
    ListOnline {
        #[serde(default)]
        after: Option<String>,
    },
    /// Replace the list of images the user shares.
    SetImages { name: String, auth: Auth, images: Vec<String> },
    /// Hide `owner`'s image of `len` bytes (sealed under the owner's own key) in a cover; the
    /// bytes follow by transfer once accepted.
    Encrypt { owner: String, auth: Auth, len: u64 },
    /// Every server answers with its own status (not elected).
    Status,
    /// Try to deliver a peer message the sender (`envelope.from`) could not deliver itself, at `addr`.
    Relay { auth: Auth, envelope: Envelope, addr: SocketAddr },
    /// Keep a peer message for its offline recipient (`name` is the sender).
    /// `unreachable`: the address the sender and the cloud failed to reach, if any.
    Buffer { name: String, auth: Auth, envelope: Envelope, unreachable: Option<SocketAddr> },
    /// The recipient got these buffered messages: drop them everywhere.
    InboxAck { name: String, auth: Auth, ids: Vec<u64> },
    /// The owner approved `viewer`'s request for `image_id`: the cloud (key distribution
    /// centre) makes a fresh share key and seals it for the owner and for the viewer.
    ShareKey { owner: String, auth: Auth, viewer: String, image_id: String },
    /// The owner sets the views `viewer` has left on `image_id` (`add`: adds them to what is
    /// left), and the offline leases it allows (None: as before). Needs a share key first.
    Grant {
        owner: String,
        auth: Auth,
        viewer: String,
        image_id: String,
        views: u32,
        add: bool,
        lease: Option<LeasePolicy>,
    },
    /// The viewer spends view slot `slot` of `owner`'s `image_id` (the request id must be the
    /// slot's: see [`crate::views::slot_rid`]); `nonce`: drawn for this view, the answer's key is
    /// sealed under it; `lease`: keep this view for offline use.
    View { viewer: String, auth: Auth, owner: String, image_id: String, slot: u32, nonce: String, lease: bool },
    /// The viewer asks how many views of `owner`'s `image_id` it has left, and the leases allowed.
    Views { viewer: String, auth: Auth, owner: String, image_id: String },
}

impl Serialize for Op {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Op::ListOnline { after: None } => s.serialize_unit_variant("Op", 4, "ListOnline"),
            op => Op::serialize(op, s),
        }
    }
}

impl<'de> Deserialize<'de> for Op {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Op, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        if value.as_str() == Some("ListOnline") {
            return Ok(Op::ListOnline { after: None });
        }
        Op::deserialize(value).map_err(serde::de::Error::custom)
    }
}

/// The `auth` field of the operations that act for a user (by reference or mutable reference,
/// as `$op` is).
macro_rules! auth_of {
    ($op:expr) => {
        match $op {
            Op::SignIn { auth, .. }
            | Op::SignOut { auth, .. }
            | Op::SetImages { auth, .. }
            | Op::Encrypt { auth, .. }
            | Op::Relay { auth, .. }
            | Op::Buffer { auth, .. }
            | Op::InboxAck { auth, .. }
            | Op::ShareKey { auth, .. }
            | Op::Grant { auth, .. }
            | Op::View { auth, .. }
            | Op::Views { auth, .. } => Some(auth),
            Op::Register { .. } | Op::Lookup { .. } | Op::ListOnline { .. } | Op::Status => None,
        }
    };
}

impl Op {
    /// Short name for logs and statistics.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Register { .. } => "register",
            Op::SignIn { .. } => "signin",
            Op::SignOut { .. } => "signout",
            Op::Lookup { .. } => "lookup",
            Op::ListOnline { .. } => "list",
            Op::SetImages { .. } => "set-images",
            Op::Encrypt { .. } => "encrypt",
            Op::Status => "status",
            Op::Relay { .. } => "relay",
            Op::Buffer { .. } => "buffer",
            Op::InboxAck { .. } => "inbox-ack",
            Op::ShareKey { .. } => "share-key",
            Op::Grant { .. } => "grant",
            Op::View { .. } => "view",
            Op::Views { .. } => "views",
        }
    }

    /// The user the operation acts for, who must sign it (None: anyone may ask).
    pub fn signer(&self) -> Option<&str> {
        match self {
            Op::SignIn { name, .. }
            | Op::SignOut { name, .. }
            | Op::SetImages { name, .. }
            | Op::Buffer { name, .. }
            | Op::InboxAck { name, .. } => Some(name),
            Op::Encrypt { owner, .. } | Op::ShareKey { owner, .. } | Op::Grant { owner, .. } => Some(owner),
            Op::View { viewer, .. } | Op::Views { viewer, .. } => Some(viewer),
            Op::Relay { envelope, .. } => Some(&envelope.from),
            Op::Register { .. } | Op::Lookup { .. } | Op::ListOnline { .. } | Op::Status => None,
        }
    }

    /// The operation's authentication, if it acts for a user.
    pub fn auth(&self) -> Option<&Auth> {
        auth_of!(self)
    }

    /// The operation's authentication, to sign it.
    pub fn auth_mut(&mut self) -> Option<&mut Auth> {
        auth_of!(self)
    }

    /// The user whose record the operation writes, or else the user it acts for (a vote
    /// carries the voter's copy of that record, so the executor never acts on a stale replica).
    pub fn user(&self) -> Option<&str> {
        match self {
            Op::Register { name } | Op::Lookup { name } => Some(name),
            Op::Buffer { envelope, .. } => Some(&envelope.to),
            // A view spends a slot of the owner's share: the owner's record is written.
            Op::View { owner, .. } | Op::Views { owner, .. } => Some(owner),
            _ => self.signer(),
        }
    }

    /// True for operations a worker must do (heavy), false for directory operations.
    pub fn needs_worker(&self) -> bool {
        matches!(self, Op::Encrypt { .. } | Op::Relay { .. })
    }
}

/// A server's view of one server, in a status answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerView {
    /// Server id.
    pub id: ServerId,
    /// Effective load used in elections (999 = failed).
    pub load: u32,
    /// Counted live.
    pub live: bool,
}

/// A server's own status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerStatus {
    /// Server id.
    pub id: ServerId,
    /// True while failure simulation has it down.
    pub down: bool,
    /// Its view of every server's load.
    pub peers: Vec<PeerView>,
    /// Requests it executed (those of [`ServerStatus::background`] included).
    pub handled: u64,
    /// Of `handled`, the requests a client sends by itself rather than for a command of its
    /// user: sign-ins (at start and by its watch after an outage) and inbox pulls (every 5 s
    /// while online). Status probes are answered by every server, never elected, and not counted.
    #[serde(default)]
    pub background: u64,
    /// Requests it executed, by kind.
    pub handled_by_kind: Vec<(String, u64)>,
    /// Users in its directory.
    pub users: usize,
    /// Online users in its directory.
    pub online: Vec<String>,
    /// Entries in its request table (bounded).
    pub tracked_requests: usize,
    /// Resident memory in KiB, when known.
    pub rss_kb: u64,
    /// Requests of users (not [`ServerStatus::background`]) it executed (won) in the last
    /// [`RECENT_SECS`] seconds.
    #[serde(default)]
    pub recent_wins: u64,
    /// The server that would win a request arriving now, in its view (None: no live server).
    #[serde(default)]
    pub next_winner: Option<ServerId>,
    /// How it ranked the newest requests it received (at most [`ELECTIONS_KEPT`], oldest first;
    /// status probes are not elected and not listed).
    #[serde(default)]
    pub elections: Vec<Election>,
    /// Addresses that sent it server frames with a bad tag in the last minute: servers with a
    /// different cluster key (or strangers).
    #[serde(default)]
    pub key_mismatch: Vec<String>,
}

/// How often a server working on a client's request tells the client so ([`Msg::Working`]), ms.
pub const WORKING_PING_MS: u64 = 1000;

fn yes() -> bool {
    true
}

/// How one server ranked one request when it arrived: the load table it ranked with (its view
/// of every server: announced load, live) and the resulting order, winner first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Election {
    /// The request.
    pub rid: RequestId,
    /// Its operation's kind (`encrypt`, `list`, ...).
    pub kind: String,
    /// When it arrived, in ms of the server's own clock (since it started).
    #[serde(default)]
    pub at: u64,
    /// The table it was ranked with.
    pub table: Vec<PeerView>,
    /// Live servers, the winner first, then the takeover order.
    pub ranking: Vec<ServerId>,
}

/// Elections a server keeps for its `status` answer (the newest).
pub const ELECTIONS_KEPT: usize = 32;

/// The window of [`ServerStatus::recent_wins`], in seconds.
pub const RECENT_SECS: u64 = 10;

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Answer {
    /// A new user and its secret (64 hex digits): keep it private.
    Registered { user_id: u64, name: String, secret: String },
    /// Signed in.
    SignedIn { user_id: u64 },
    /// Signed out.
    SignedOut,
    /// One user.
    User(UserInfo),
    /// Online users (the answer to `ListOnline` without a cursor).
    Online(Vec<UserInfo>),
    /// A page of online users, by name, after the request's cursor; `more`: others follow (ask
    /// again with the last name as the cursor).
    OnlinePage { users: Vec<UserInfo>, more: bool },
    /// Done, nothing to return.
    Done,
    /// The stego PNG (`len` bytes) follows by transfer `transfer`.
    Encrypted { len: u64, transfer: u64 },
    /// A server's status.
    Status(Box<ServerStatus>),
    /// The cloud reached the recipient (`true`) or could not (`false`).
    Relayed { delivered: bool },
    /// Kept for the offline recipient.
    Buffered,
    /// Messages buffered for the user while offline, oldest first (sent after sign-in).
    Inbox(Vec<Envelope>),
    /// A fresh share key (hex of a sealed key), sealed for the owner and for the viewer under
    /// each one's wrapping key, bound to (owner, viewer, image).
    ShareKey { for_owner: String, for_viewer: String },
    /// The views the viewer has left after a grant, and the grant's number.
    Granted { left: u32, grant: u64 },
    /// What a view request did with its slot.
    Viewed(ViewAnswer),
    /// A share as the cloud counts it: views left, the next slot, the latest grant's number and
    /// the offline leases the owner allows.
    Views { left: u32, next: u32, grant: u64, lease: LeasePolicy },
}

/// The answer to [`Op::View`]: the slot was spent (`key` is set) or not (no views left, or the
/// slot was used before: try `next`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewAnswer {
    /// The slot asked for.
    pub slot: u32,
    /// The nonce of the request this answer was made for (an answer for another attempt at the
    /// same slot, kept by the cloud, carries that attempt's nonce and opens for nobody else).
    pub nonce: String,
    /// The image key sealed for this view (hex), if the slot was spent.
    pub key: Option<String>,
    /// Views left after this request.
    pub left: u32,
    /// The next slot to try.
    pub next: u32,
    /// With a leased view: how long it may be kept for offline use, seconds (0: not leased).
    pub lease_secs: u32,
    /// The number of the owner's latest grant.
    pub grant: u64,
}

/// The answer to a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// The request answered.
    pub rid: RequestId,
    /// The server that executed it.
    pub server: ServerId,
    /// The answer or a human-readable error.
    pub result: Result<Answer, String>,
}

/// A control message (everything but transfer chunks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    /// Client → every server: please do `op`.
    Request { rid: RequestId, op: Op },
    /// Server → client: the answer.
    Reply(Reply),
    /// Server → client ("Accepted" on the wire): I handle `rid`; send its payload to me by
    /// transfer id `transfer` — or, if `inline`, I already have it (it came with the request):
    /// only wait for the result.
    #[serde(rename = "Accepted")]
    Started {
        rid: RequestId,
        server: ServerId,
        transfer: u64,
        #[serde(default)]
        inline: bool,
    },
    /// Server → servers: my load (999 = going down), queued + in-flight work, directory digest,
    /// process epoch (changes on restart), whether I hold the failure-simulation token, and
    /// whether I take requests yet (a server that just started does not until it has heard the
    /// others: it is left out of the ranking meanwhile, so nobody waits for its claim).
    Load {
        from: ServerId,
        load: u32,
        work: u32,
        digest: u64,
        epoch: u64,
        token: bool,
        #[serde(default = "yes")]
        ready: bool,
    },
    /// Winning server → client, every [`WORKING_PING_MS`] while it works on `rid` (hiding a
    /// large image can take long on a busy machine): the client keeps waiting for the result
    /// instead of taking the silence for a dead server.
    Working { rid: RequestId, server: ServerId },
    /// Server → servers: Paxos prepare (phase 1a, "Claim" on the wire): I claim `rid` in round
    /// `round` (carries the request for takeovers).
    ///
    /// `first`: the claimer was first in the ranking it made when the request arrived (not a
    /// claim made on a later re-ranking or after a timeout). Two claims of one round are
    /// settled in favour of a `first` one, then of the lower id.
    #[serde(rename = "Claim")]
    Prepare {
        rid: RequestId,
        by: ServerId,
        round: u32,
        op: Op,
        reply_to: SocketAddr,
        #[serde(default)]
        first: bool,
    },
    /// Server → claimer: Paxos promise (phase 1b, "ClaimAck" on the wire), a vote. Refused
    /// votes name the holder and its round, whether the holder is already executing (`firm`),
    /// and the reply if the request is already done.
    #[serde(rename = "ClaimAck")]
    Promise {
        rid: RequestId,
        from: ServerId,
        granted: bool,
        holder: Option<ServerId>,
        round: u32,
        firm: bool,
        reply: Option<Reply>,
        /// With a vote: the voter's record of the user the request is about, so the executor
        /// never acts on a stale replica (a majority always holds the latest committed write).
        record: Option<UserRecord>,
    },
    /// Server → servers: Paxos accept (phase 2a, "Done" on the wire; in round [`DECIDED`], the
    /// decision): `rid` is executed in round `round`: its reply (for retries and takeovers)
    /// and the directory records it changed, so a majority of replicas has the write before
    /// the client hears of it.
    #[serde(rename = "Done")]
    Accept { rid: RequestId, by: ServerId, round: u32, reply: Reply, records: Vec<UserRecord> },
    /// Server → proposer: Paxos accepted (phase 2b, "DoneAck" on the wire): the proposal is
    /// accepted, or refused (a later round holds the request, or another reply was already
    /// accepted: then it is included).
    #[serde(rename = "DoneAck")]
    Accepted {
        rid: RequestId,
        from: ServerId,
        accepted: bool,
        holder: Option<ServerId>,
        round: u32,
        reply: Option<Reply>,
    },
    /// Server → servers: a directory record (replication and full resync).
    Record { from: ServerId, record: UserRecord },
    /// Failure simulation: the token passes to `to`.
    Token { from: ServerId, to: ServerId, round: u64 },
    /// Failure simulation: token received.
    TokenAck { from: ServerId, round: u64 },
    /// Server → server: several messages that could wait a tick, in one datagram (never nested).
    Batch { from: ServerId, msgs: Vec<Msg> },
    /// Peer → peer (or cloud → peer): a peer message.
    Peer(Envelope),
    /// The recipient of envelope `id` got it.
    PeerAck { id: u64, from: String },
    /// Operator → server, only in a frame tagged under the cluster key (the servers' port):
    /// do `cmd`. `nonce` (random) names the command: a copy seen again is answered, not redone.
    Operator { nonce: u64, cmd: OperatorCmd },
    /// Server → operator, in a frame tagged under the cluster key: what command `nonce` did
    /// (a line or a table), or why it failed.
    OperatorReply { nonce: u64, server: ServerId, result: Result<String, String> },
}

impl Msg {
    /// The message's kind, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Msg::Request { .. } => "Request",
            Msg::Reply(_) => "Reply",
            Msg::Started { .. } => "Started",
            Msg::Working { .. } => "Working",
            Msg::Load { .. } => "Load",
            Msg::Prepare { .. } => "Prepare",
            Msg::Promise { .. } => "Promise",
            Msg::Accept { round: DECIDED, .. } => "Decision",
            Msg::Accept { .. } => "Accept",
            Msg::Accepted { .. } => "Accepted",
            Msg::Record { .. } => "Record",
            Msg::Token { .. } => "Token",
            Msg::TokenAck { .. } => "TokenAck",
            Msg::Batch { .. } => "Batch",
            Msg::Peer(_) => "Peer",
            Msg::PeerAck { .. } => "PeerAck",
            Msg::Operator { .. } => "Operator",
            Msg::OperatorReply { .. } => "OperatorReply",
        }
    }

    /// The server a server-to-server message names as its sender (checked against the
    /// address it came from).
    pub fn sender(&self) -> Option<ServerId> {
        match self {
            Msg::Batch { from, .. }
            | Msg::Load { from, .. }
            | Msg::Promise { from, .. }
            | Msg::Accepted { from, .. }
            | Msg::Record { from, .. }
            | Msg::Token { from, .. }
            | Msg::TokenAck { from, .. } => Some(*from),
            Msg::Prepare { by, .. } | Msg::Accept { by, .. } => Some(*by),
            _ => None,
        }
    }

    /// True for the messages only servers (and their operator, who holds the cluster key) may
    /// send (they must come in an authenticated frame).
    pub fn server_only(&self) -> bool {
        !matches!(
            self,
            Msg::Request { .. }
                | Msg::Reply(_)
                | Msg::Started { .. }
                | Msg::Working { .. }
                | Msg::Peer(_)
                | Msg::PeerAck { .. }
        )
    }
}

/// A decoded datagram.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // moved once from socket to handler; boxing would allocate per datagram
pub enum Frame {
    /// A control message.
    Ctl(Msg),
    /// A reliable-transfer message.
    Xfer(TransferMsg),
    /// A message with bytes attached: a `Msg::Request` with its small payload (client to
    /// server), so the server that wins it need not ask for an upload; or the `Msg::Reply` of
    /// an encryption with its stego PNG (server to client), when it fits one datagram.
    Attached(Msg, Vec<u8>),
}

/// True for the messages that may carry `payload`: a request, or the reply of an encryption
/// whose answer gives the payload's length.
fn may_attach(msg: &Msg, payload: &[u8]) -> bool {
    match msg {
        Msg::Request { .. } => true,
        Msg::Reply(Reply { result: Ok(Answer::Encrypted { len, .. }), .. }) => *len == payload.len() as u64,
        _ => false,
    }
}

/// Why a datagram was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError(pub String);

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WireError {}

fn bad<T>(why: impl Into<String>) -> Result<T, WireError> {
    Err(WireError(why.into()))
}

/// Encodes a control message into a datagram.
pub fn encode_msg(msg: &Msg) -> Vec<u8> {
    let mut out = FrameKind::Ctl.header().to_vec();
    // Serialising these plain structs to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, msg);
    out
}

/// Encodes a transfer message into a datagram.
pub fn encode_xfer(msg: &TransferMsg) -> Vec<u8> {
    let mut out = FrameKind::Xfer.header().to_vec();
    msg.encode(&mut out);
    out
}

/// Encodes a message with bytes attached: the message's JSON length (4 bytes, big endian), the
/// JSON, the bytes. `None` if it does not fit one datagram or may not carry them.
pub fn encode_attached(msg: &Msg, payload: &[u8]) -> Option<Vec<u8>> {
    if !may_attach(msg, payload) {
        return None;
    }
    let json = serde_json::to_vec(msg).ok()?;
    let len = u32::try_from(json.len()).ok()?;
    let mut out = Vec::with_capacity(8 + json.len() + payload.len());
    out.extend_from_slice(&FrameKind::Attached.header());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(payload);
    (out.len() <= MAX_DATAGRAM).then_some(out)
}

/// Decodes and validates a datagram.
pub fn decode(bytes: &[u8]) -> Result<Frame, WireError> {
    if bytes.len() > MAX_DATAGRAM {
        return bad(format!("datagram of {} bytes is too large", bytes.len()));
    }
    let (kind, body) = crate::frame::split(bytes).map_err(|e| WireError(e.to_string()))?;
    match kind {
        FrameKind::Ctl => {
            let msg: Msg = serde_json::from_slice(body).map_err(|e| WireError(format!("bad message: {e}")))?;
            validate(&msg)?;
            Ok(Frame::Ctl(msg))
        }
        FrameKind::Xfer => {
            TransferMsg::decode(body).map(Frame::Xfer).map_err(|e| WireError(format!("bad transfer message: {e}")))
        }
        FrameKind::Attached => {
            let Some((len, rest)) = body.split_first_chunk::<4>() else {
                return bad("attached message without its length");
            };
            let Some((json, payload)) = rest.split_at_checked(u32::from_be_bytes(*len) as usize) else {
                return bad("attached message longer than the datagram");
            };
            let msg: Msg = serde_json::from_slice(json).map_err(|e| WireError(format!("bad message: {e}")))?;
            if !may_attach(&msg, payload) {
                return bad("only a request, or an encryption's reply with its result, may carry an attachment");
            }
            validate(&msg)?;
            Ok(Frame::Attached(msg, payload.to_vec()))
        }
        // Authenticated frames are opened by `auth::decode_at_server`, never here.
        FrameKind::Server => bad("a server frame outside the servers' socket"),
    }
}

fn check_op(op: &Op) -> Result<(), WireError> {
    let user = |n: &str| check_user(n).map_err(WireError);
    if let Some(a) = op.auth() {
        if a.tag.len() != 64 {
            return bad("authentication tag must be 64 hex digits");
        }
    }
    match op {
        Op::Register { name } | Op::Lookup { name } => user(name),
        Op::SignIn { name, .. } | Op::SignOut { name, .. } => user(name),
        Op::SetImages { name, images, .. } => {
            user(name)?;
            check_images(images)
        }
        Op::ListOnline { after: Some(a) } if !a.is_empty() => user(a),
        Op::ListOnline { .. } | Op::Status => Ok(()),
        Op::Encrypt { owner, .. } => user(owner),
        Op::ShareKey { owner, viewer, image_id, .. } => {
            user(owner)?;
            user(viewer)?;
            check_image_id(image_id).map_err(WireError)
        }
        Op::Grant { owner, viewer, image_id, views, lease, .. } => {
            user(owner)?;
            user(viewer)?;
            check_image_id(image_id).map_err(WireError)?;
            if *views > MAX_VIEWS {
                return bad(format!("more than {MAX_VIEWS} views"));
            }
            match lease {
                Some(l) if l.views > MAX_LEASE_VIEWS || l.secs > MAX_LEASE_SECS => bad("lease too long"),
                _ => Ok(()),
            }
        }
        Op::Views { viewer, owner, image_id, .. } => {
            user(owner)?;
            user(viewer)?;
            check_image_id(image_id).map_err(WireError)
        }
        Op::View { viewer, owner, image_id, slot, nonce, .. } => {
            user(owner)?;
            user(viewer)?;
            check_image_id(image_id).map_err(WireError)?;
            if *slot == 0 || nonce.len() != 32 || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
                return bad("a view needs a slot from 1 and a nonce of 32 hex digits");
            }
            Ok(())
        }
        Op::Relay { envelope, .. } => check_envelope(envelope),
        Op::Buffer { name, envelope, .. } => {
            user(name)?;
            check_envelope(envelope)?;
            if &envelope.from != name {
                return bad("a buffered message must come from its sender");
            }
            Ok(())
        }
        Op::InboxAck { name, ids, .. } => {
            user(name)?;
            if ids.len() > 1024 {
                return bad("too many ids");
            }
            Ok(())
        }
    }
}

/// Checks a peer message: names, image ids, bounded text.
pub fn check_envelope(e: &Envelope) -> Result<(), WireError> {
    check_user(&e.from).map_err(WireError)?;
    check_user(&e.to).map_err(WireError)?;
    match &e.body {
        PeerBody::GalleryRequest { .. } => Ok(()),
        PeerBody::ImageRequest { image_id, .. } => check_image_id(image_id).map_err(WireError),
        PeerBody::Deliver { image_id, ticket, mac, digest, .. } => {
            check_image_id(image_id).map_err(WireError)?;
            if ticket.len() > 256 || mac.len() > 64 || digest.len() > 64 {
                return bad("ticket or tag too long");
            }
            Ok(())
        }
        PeerBody::Rights { image_id, mac, .. } => {
            check_image_id(image_id).map_err(WireError)?;
            if mac.len() > 64 {
                return bad("tag too long");
            }
            Ok(())
        }
        PeerBody::Rejected { image_id, reason } => {
            check_image_id(image_id).map_err(WireError)?;
            if reason.len() > 200 {
                return bad("reason too long");
            }
            Ok(())
        }
    }
}

fn check_images(images: &[String]) -> Result<(), WireError> {
    if images.len() > MAX_IMAGES_PER_USER {
        return bad(format!("more than {MAX_IMAGES_PER_USER} images"));
    }
    for i in images {
        check_image_id(i).map_err(WireError)?;
    }
    Ok(())
}

/// Most inbox entries (pending and tombstones) one record may carry.
pub const MAX_INBOX: usize = 512;

fn check_record(record: &UserRecord) -> Result<(), WireError> {
    check_user(&record.name).map_err(WireError)?;
    check_images(&record.images)?;
    if record.inbox.len() > MAX_INBOX {
        return bad("inbox too long");
    }
    if record.shares.len() > MAX_SHARES {
        return bad("too many shares");
    }
    for s in &record.shares {
        check_user(&s.viewer).map_err(WireError)?;
        check_image_id(&s.image_id).map_err(WireError)?;
        if s.key.len() != 64 {
            return bad("a share key must be 64 hex digits");
        }
    }
    record.inbox.iter().try_for_each(|e| check_envelope(&e.envelope))
}

/// Checks what the JSON shape cannot: names, list sizes.
pub fn validate(msg: &Msg) -> Result<(), WireError> {
    match msg {
        Msg::Request { op, .. } | Msg::Prepare { op, .. } => check_op(op),
        Msg::Record { record, .. } => check_record(record),
        Msg::Accept { records, .. } => records.iter().try_for_each(check_record),
        Msg::Promise { record: Some(record), .. } => check_record(record),
        Msg::Peer(e) => check_envelope(e),
        Msg::PeerAck { from, .. } => check_user(from).map_err(WireError),
        Msg::Load { load, .. } if *load > 999 => bad("load above 999"),
        Msg::Operator { cmd, .. } => cmd.validate().map_err(WireError),
        Msg::OperatorReply { result: Ok(text) | Err(text), .. } if text.len() > MAX_REPLY => {
            bad("operator reply too long")
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_paxos_names_in_the_code_keep_the_wire_names() {
        let rid = RequestId { client: 1, seq: 2 };
        let reply = Reply { rid, server: 1, result: Err("x".into()) };
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let cases = [
            (
                Msg::Prepare { rid, by: 1, round: 1, op: Op::ListOnline { after: None }, reply_to: addr, first: true },
                "Claim",
            ),
            (
                Msg::Promise {
                    rid,
                    from: 2,
                    granted: true,
                    holder: None,
                    round: 1,
                    firm: false,
                    reply: None,
                    record: None,
                },
                "ClaimAck",
            ),
            (Msg::Accept { rid, by: 1, round: DECIDED, reply: reply.clone(), records: vec![] }, "Done"),
            (Msg::Accepted { rid, from: 2, accepted: true, holder: None, round: 1, reply: None }, "DoneAck"),
            (Msg::Started { rid, server: 1, transfer: 3, inline: false }, "Accepted"),
        ];
        for (msg, wire) in cases {
            let bytes = encode_msg(&msg);
            let json = String::from_utf8_lossy(&bytes[4..]).to_string();
            assert!(json.starts_with(&format!("{{\"{wire}\":")), "{} is {json}", msg.kind());
            assert_eq!(decode(&bytes), Ok(Frame::Ctl(msg)));
        }
    }

    fn rid() -> RequestId {
        RequestId { client: 7, seq: 1 }
    }

    #[test]
    fn control_round_trip() {
        let msgs = vec![
            Msg::Request { rid: rid(), op: Op::Register { name: "alice".into() } },
            Msg::Reply(Reply { rid: rid(), server: 2, result: Err("no".into()) }),
            Msg::Load { from: 1, load: 999, work: 0, digest: 5, epoch: 9, token: false, ready: true },
            Msg::Working { rid: rid(), server: 2 },
            Msg::Prepare {
                rid: rid(),
                by: 1,
                round: 1,
                op: Op::ListOnline { after: None },
                reply_to: "127.0.0.1:9".parse().unwrap(),
                first: true,
            },
        ];
        for m in msgs {
            assert_eq!(decode(&encode_msg(&m)), Ok(Frame::Ctl(m)));
        }
    }

    #[test]
    fn rejects_bad_datagrams() {
        assert!(decode(b"").is_err());
        assert!(decode(b"XX\x01\x00{}").is_err());
        assert!(decode(b"IC\x02\x00{}").is_err());
        assert!(decode(b"IC\x01\x09{}").is_err());
        assert!(decode(b"IC\x01\x00{\"Request\":").is_err());
        let evil = Msg::Request { rid: rid(), op: Op::Register { name: "../etc".into() } };
        assert!(decode(&encode_msg(&evil)).is_err());
        assert!(decode(&vec![b'I'; MAX_DATAGRAM + 1]).is_err());
    }

    #[test]
    fn an_encryption_reply_carries_its_result_of_the_announced_length_only() {
        let answer = Answer::Encrypted { len: 3, transfer: 9 };
        let reply = Msg::Reply(Reply { rid: rid(), server: 2, result: Ok(answer) });
        let bytes = encode_attached(&reply, b"png").expect("fits");
        assert_eq!(decode(&bytes), Ok(Frame::Attached(reply.clone(), b"png".to_vec())));
        assert!(encode_attached(&reply, b"pn").is_none(), "another length");
        let mut cut = bytes.clone();
        cut.pop();
        assert!(decode(&cut).is_err(), "shorter than announced");
    }

    #[test]
    fn attached_requests_round_trip_and_nothing_else_may_carry_a_payload() {
        let req = Msg::Request { rid: rid(), op: Op::Register { name: "alice".into() } };
        for payload in [vec![], vec![7u8; 10_000]] {
            let bytes = encode_attached(&req, &payload).expect("fits");
            assert_eq!(decode(&bytes), Ok(Frame::Attached(req.clone(), payload)));
        }
        assert!(encode_attached(&req, &vec![0u8; MAX_DATAGRAM]).is_none(), "too large for a datagram");
        let reply = Msg::Reply(Reply { rid: rid(), server: 2, result: Err("no".into()) });
        assert!(encode_attached(&reply, b"x").is_none());
        let json = serde_json::to_vec(&reply).unwrap();
        let mut forged = FrameKind::Attached.header().to_vec();
        forged.extend_from_slice(&(json.len() as u32).to_be_bytes());
        forged.extend_from_slice(&json);
        assert!(decode(&forged).is_err(), "a refusal with an attachment");
        let good = encode_attached(&req, b"abc").unwrap();
        assert!(decode(&good[..6]).is_err(), "cut inside the length");
        let mut long = good.clone();
        long[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode(&long).is_err(), "length beyond the datagram");
    }

    #[test]
    fn list_online_without_a_cursor_keeps_its_old_wire_form_and_a_cursor_is_checked() {
        let rid = RequestId { client: 7, seq: 1 };
        let old = Msg::Request { rid, op: Op::ListOnline { after: None } };
        let json = String::from_utf8_lossy(&encode_msg(&old)[4..]).to_string();
        assert_eq!(json, r#"{"Request":{"rid":{"client":7,"seq":1},"op":"ListOnline"}}"#);
        for wire in [r#""ListOnline""#, r#"{"ListOnline":{}}"#, r#"{"ListOnline":{"after":null}}"#] {
            let op: Op = serde_json::from_str(wire).unwrap();
            assert_eq!(op, Op::ListOnline { after: None }, "{wire}");
        }
        let paged = Msg::Request { rid, op: Op::ListOnline { after: Some("bob".into()) } };
        assert_eq!(decode(&encode_msg(&paged)), Ok(Frame::Ctl(paged)));
        let first = Msg::Request { rid, op: Op::ListOnline { after: Some(String::new()) } };
        assert_eq!(decode(&encode_msg(&first)), Ok(Frame::Ctl(first)));
        let bad = Msg::Request { rid, op: Op::ListOnline { after: Some("no such name!".into()) } };
        assert!(decode(&encode_msg(&bad)).is_err(), "a cursor is a user name");
        for wire in [r#""ListOnlin""#, r#"{"ListOnline":{"after":5}}"#, r#"{"ListOnline":[]}"#, "7"] {
            assert!(serde_json::from_str::<Op>(wire).is_err(), "{wire}");
        }
        let other = Op::Lookup { name: "alice".into() };
        assert_eq!(serde_json::from_str::<Op>(&serde_json::to_string(&other).unwrap()).unwrap(), other);
    }
}
