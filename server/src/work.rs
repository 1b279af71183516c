//! Heavy requests, done outside the node: for `Encrypt` the server that won the request tells
//! the client where to send the image (`Accepted`), receives it by reliable transfer, checks
//! it is the owner's image sealed under the owner's own key and that it decodes, hides the
//! sealed bytes (never the plain image) in a cover on the worker pool, streams the stego PNG back by transfer
//! and reports the answer to the node, which commits it like any other. For `Relay` it tries
//! to reach a peer the sender could not, and reports whether the peer acknowledged.

use crate::node::Input;
use crate::pool::Pool;
use crate::runtime::{Datagram, Event, Options, Server};
use common::auth::own_image_aad;
use common::config::ServerId;
use common::crypto::{self, Key};
use common::protocol::{transfer_id, Answer, Msg, Op, RequestId};
use common::stego::{self, Covers};
use common::transfer::{TransferConfig, TransferEvent, TransferMsg, Transfers};
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Weak;
use std::time::Duration;

/// How often `Accepted` is resent until the upload starts, ms.
pub const ACCEPT_RESEND_MS: u64 = 100;
/// Tries the cloud makes to reach a peer for a relayed message.
pub const RELAY_TRIES: u32 = 3;
/// Wait for the peer's acknowledgement between tries, ms.
pub const RELAY_TRY_MS: u64 = 200;
/// Payloads that came attached to requests, kept at most this many at once.
pub const STASH_MAX: usize = 256;
/// ... and at most this many bytes in all.
pub const STASH_BYTES: usize = 8 * 1024 * 1024;
/// ... and for at most this long, ms (a server that wins later asks for an upload).
pub const STASH_MS: u64 = 2000;

/// Payloads that came attached to requests, oldest first, until their request is won here or
/// they expire. Every server receives them; only the winner uses its copy.
#[derive(Default)]
struct Stash {
    items: VecDeque<(u64, RequestId, SocketAddr, Vec<u8>)>,
    bytes: usize,
}

impl Stash {
    fn put(&mut self, now: u64, rid: RequestId, from: SocketAddr, payload: Vec<u8>) {
        if self.items.iter().any(|(_, r, _, _)| *r == rid) {
            return; // a resend: the first copy stays
        }
        self.bytes += payload.len();
        self.items.push_back((now, rid, from, payload));
        while self.items.len() > STASH_MAX || self.bytes > STASH_BYTES {
            self.pop();
        }
    }

    fn pop(&mut self) {
        if let Some((_, _, _, p)) = self.items.pop_front() {
            self.bytes -= p.len();
        }
    }

    /// The payload `from` attached to `rid`, taken out.
    fn take(&mut self, rid: RequestId, from: SocketAddr) -> Option<Vec<u8>> {
        let at = self.items.iter().position(|(_, r, f, _)| *r == rid && *f == from)?;
        let (_, _, _, p) = self.items.remove(at)?;
        self.bytes -= p.len();
        Some(p)
    }

    fn expire(&mut self, now: u64) {
        while self.items.front().is_some_and(|(t, ..)| now >= t + STASH_MS) {
            self.pop();
        }
    }
}

struct Relay {
    rid: RequestId,
    to: SocketAddr,
    msg: Msg,
    tries: u32,
    last: u64,
}

struct Job {
    rid: RequestId,
    client: SocketAddr,
    owner: String,
    key: Key,
    last_accept: u64,
    started: bool,
}

/// The heavy-request services of one server.
pub struct Services {
    id: ServerId,
    outbox: Vec<Datagram>,
    pool: Arc<Pool>,
    sink: Sink,
    covers: Arc<Covers>,
    slow_ms: u64,
    max_payload: usize,
    transfers: Transfers<SocketAddr>,
    jobs: HashMap<u64, Job>,
    relays: HashMap<u64, Relay>,
    stash: Stash,
    /// Requests whose upload came attached: their client has not been told who runs them.
    unannounced: HashSet<RequestId>,
    chunk_size: usize,
    inputs: Vec<Input>,
}

/// Where a worker hands its result: the server, reached through a weak handle (the server owns
/// the services, so a strong one would be a cycle). `None` once the server is gone.
pub type Sink = Weak<Server>;

/// The transfer settings from the cluster config.
pub fn transfer_config(cfg: &common::config::ClusterConfig) -> TransferConfig {
    let mut t = TransferConfig::with_chunk_size(cfg.chunk_size);
    t.window = cfg.window;
    t.max_payload = cfg.max_payload;
    t.normalized()
}

impl Services {
    /// Services running jobs on `pool` and handing their results to `sink`; what they send
    /// waits in their outbox until the server's lock is released.
    pub fn new(opts: &Options, pool: Arc<Pool>, sink: Sink) -> Self {
        let covers = Arc::new(Covers::load_dir_or_builtin(std::path::Path::new(&opts.cfg.images_dir)));
        Services {
            id: opts.id,
            outbox: Vec::new(),
            pool,
            sink,
            covers,
            slow_ms: opts.slow_ms,
            max_payload: opts.cfg.max_payload,
            transfers: Transfers::new(transfer_config(&opts.cfg)),
            jobs: HashMap::new(),
            relays: HashMap::new(),
            stash: Stash::default(),
            unannounced: HashSet::new(),
            chunk_size: transfer_config(&opts.cfg).chunk_size,
            inputs: Vec::new(),
        }
    }

    /// Jobs waiting for an upload or running.
    pub fn depth(&self) -> usize {
        self.jobs.len() + self.pool.depth()
    }

    /// Keeps the payload `from` attached to request `rid`, in case this server wins it.
    pub fn stash(&mut self, now: u64, rid: RequestId, from: SocketAddr, payload: Vec<u8>) {
        self.stash.put(now, rid, from, payload);
    }

    /// Inputs for the node produced since the last call.
    pub fn take_inputs(&mut self) -> Vec<Input> {
        std::mem::take(&mut self.inputs)
    }

    /// Queues a datagram (the node's too, so that everything one event causes leaves in order).
    pub fn post(&mut self, d: Datagram) {
        self.outbox.push(d);
    }

    /// The datagrams queued since the last call, in order.
    pub fn take_outbox(&mut self) -> Vec<Datagram> {
        std::mem::take(&mut self.outbox)
    }

    fn send_ctl(&mut self, to: SocketAddr, msg: &Msg) {
        self.outbox.push(Datagram::Client(to, msg.clone()));
    }

    fn flush(&mut self) {
        while let Some((to, msg)) = self.transfers.poll_send() {
            self.outbox.push(Datagram::Xfer(to, msg));
        }
        while let Some(ev) = self.transfers.poll_event() {
            self.on_event(ev);
        }
    }

    /// The node won a heavy request: start it.
    pub fn execute(&mut self, now: u64, rid: RequestId, op: Op, client: SocketAddr, key: Option<Key>) {
        if let Op::Relay { envelope, addr, .. } = op {
            let msg = Msg::Peer(envelope.clone());
            self.send_ctl(addr, &msg);
            self.relays.insert(envelope.id, Relay { rid, to: addr, msg, tries: 1, last: now });
            return;
        }
        let (Op::Encrypt { owner, len, .. }, Some(key)) = (&op, key) else {
            self.inputs.push(Input::Executed { rid, result: Err(format!("{} is not a worker operation", op.kind())) });
            return;
        };
        let (owner, len) = (owner.clone(), *len);
        if len as usize > self.max_payload {
            let msg = format!("the image is {len} bytes; the limit is {} bytes", self.max_payload);
            self.inputs.push(Input::Executed { rid, result: Err(msg) });
            return;
        }
        let upload = transfer_id(rid, 0);
        if let Some(payload) = self.stash.take(rid, client).filter(|p| p.len() as u64 == len) {
            // It came with the request: no upload. The client only waits for the result, and
            // learns who sends it with the result (see `on_worked`).
            self.unannounced.insert(rid);
            self.start_job(rid, client, owner, key, payload);
            return;
        }
        if let Err(e) = self.transfers.expect(now, upload, client, len as usize) {
            self.inputs.push(Input::Executed { rid, result: Err(format!("cannot receive the image: {e}")) });
            return;
        }
        self.send_ctl(client, &Msg::Accepted { rid, server: self.id, transfer: upload, inline: false });
        self.jobs.insert(upload, Job { rid, client, owner, key, last_accept: now, started: false });
        self.flush();
    }

    /// A transfer datagram arrived from a client.
    pub fn on_transfer(&mut self, now: u64, from: SocketAddr, msg: TransferMsg) {
        let id = msg.id();
        if let Some(job) = self.jobs.get_mut(&id) {
            job.started = true;
        }
        self.transfers.step(now, from, msg);
        self.flush();
    }

    /// A peer acknowledged a relayed message.
    pub fn on_peer_ack(&mut self, from: SocketAddr, id: u64) {
        if self.relays.get(&id).is_some_and(|r| r.to == from) {
            if let Some(r) = self.relays.remove(&id) {
                self.inputs.push(Input::Executed { rid: r.rid, result: Ok(Answer::Relayed { delivered: true }) });
            }
        }
    }

    /// A worker finished hiding an image.
    pub fn on_worked(&mut self, now: u64, rid: RequestId, client: SocketAddr, result: Result<Vec<u8>, String>) {
        let unannounced = self.unannounced.remove(&rid);
        let result = match result {
            Ok(png) => {
                let id = transfer_id(rid, 1);
                // A result in one datagram is taken from whichever server sends it; a longer
                // one is announced first, so the client binds its chunks to this server.
                if unannounced && png.len() > self.chunk_size {
                    self.send_ctl(
                        client,
                        &Msg::Accepted { rid, server: self.id, transfer: transfer_id(rid, 0), inline: true },
                    );
                }
                let len = png.len() as u64;
                match self.transfers.send(now, id, client, png) {
                    Ok(()) => Ok(Answer::Encrypted { len, transfer: id }),
                    Err(e) => Err(format!("cannot send the result: {e}")),
                }
            }
            Err(e) => Err(e),
        };
        self.inputs.push(Input::Executed { rid, result });
        self.flush();
    }

    /// Timers: transfer retransmissions, resending `Accepted` until the upload starts.
    pub fn tick(&mut self, now: u64) {
        self.transfers.tick(now);
        self.stash.expire(now);
        let resend: Vec<(SocketAddr, Msg)> = self
            .jobs
            .iter_mut()
            .filter(|(_, j)| !j.started && now >= j.last_accept + ACCEPT_RESEND_MS)
            .map(|(&id, j)| {
                j.last_accept = now;
                (j.client, Msg::Accepted { rid: j.rid, server: self.id, transfer: id, inline: false })
            })
            .collect();
        for (to, msg) in resend {
            self.send_ctl(to, &msg);
        }
        let due: Vec<u64> =
            self.relays.iter().filter(|(_, r)| now >= r.last + RELAY_TRY_MS).map(|(&id, _)| id).collect();
        for id in due {
            let Some(r) = self.relays.get_mut(&id) else { continue };
            if r.tries >= RELAY_TRIES {
                if let Some(r) = self.relays.remove(&id) {
                    self.inputs.push(Input::Executed { rid: r.rid, result: Ok(Answer::Relayed { delivered: false }) });
                }
                continue;
            }
            r.tries += 1;
            r.last = now;
            let (to, msg) = (r.to, r.msg.clone());
            self.send_ctl(to, &msg);
        }
        self.flush();
    }

    /// Hides `owner`'s uploaded image on the worker pool; the result comes back as `Worked`.
    fn start_job(&mut self, rid: RequestId, client: SocketAddr, owner: String, key: Key, payload: Vec<u8>) {
        let (covers, sink, slow) = (self.covers.clone(), self.sink.clone(), self.slow_ms);
        self.pool.submit(Box::new(move || {
            if slow > 0 {
                std::thread::sleep(Duration::from_millis(slow));
            }
            let result = hide(&covers, &key, &owner, &payload);
            if let Some(server) = sink.upgrade() {
                server.deliver(Event::Worked { rid, client, result });
            }
        }));
    }

    fn on_event(&mut self, ev: TransferEvent<SocketAddr>) {
        match ev {
            TransferEvent::Received { id, from, payload } => {
                let Some(job) = self.jobs.remove(&id) else { return };
                self.start_job(job.rid, from, job.owner, job.key, payload);
            }
            TransferEvent::Failed { id, outgoing: false, reason, .. } => {
                if let Some(job) = self.jobs.remove(&id) {
                    let msg = format!("the image did not arrive: {reason}");
                    self.inputs.push(Input::Executed { rid: job.rid, result: Err(msg) });
                }
            }
            TransferEvent::Failed { id, outgoing: true, reason, peer } => {
                common::log::log(&format!("server {}", self.id), &format!("result {id:x} to {peer} failed: {reason}"));
            }
            TransferEvent::Sent { .. } | TransferEvent::Progress { .. } | TransferEvent::Dropped { .. } => {}
        }
    }
}

/// Checks that `sealed` is `owner`'s image sealed under `key` (the owner's own-image key) and
/// that the image decodes, then hides the sealed bytes, unchanged, in a cover.
pub fn hide(covers: &Covers, key: &Key, owner: &str, sealed: &[u8]) -> Result<Vec<u8>, String> {
    let image = crypto::open(key, &own_image_aad(owner), sealed)
        .map_err(|e| format!("the upload is not {owner}'s sealed image: {e}"))?;
    stego::decode_image(&image).map_err(|e| format!("not an image this server can read: {e}"))?;
    let cover = covers.choose(sealed.len());
    stego::hide(cover, sealed).map_err(|e| format!("cannot hide the image: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rid(seq: u64) -> RequestId {
        RequestId { client: 1, seq }
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn the_stash_gives_a_payload_once_to_its_sender_and_keeps_the_first_copy() {
        let mut s = Stash::default();
        s.put(0, rid(1), addr(1), vec![1; 10]);
        s.put(1, rid(1), addr(1), vec![2; 10]);
        assert_eq!(s.take(rid(1), addr(2)), None, "another address gets nothing");
        assert_eq!(s.take(rid(1), addr(1)), Some(vec![1; 10]), "the first copy");
        assert_eq!(s.take(rid(1), addr(1)), None, "taken once");
        assert_eq!(s.bytes, 0);
    }

    #[test]
    fn the_stash_is_bounded_in_count_bytes_and_time() {
        let mut s = Stash::default();
        for i in 0..(STASH_MAX as u64 + 10) {
            s.put(i, rid(i), addr(1), vec![0; 100]);
        }
        assert_eq!(s.items.len(), STASH_MAX);
        assert_eq!(s.take(rid(0), addr(1)), None, "the oldest went first");
        assert!(s.take(rid(STASH_MAX as u64 + 9), addr(1)).is_some());
        let mut s = Stash::default();
        for i in 0..4 {
            s.put(i, rid(i), addr(1), vec![0; STASH_BYTES / 3]);
        }
        assert!(s.bytes <= STASH_BYTES && s.items.len() == 3, "{} bytes", s.bytes);
        s.expire(3 + STASH_MS);
        assert!(s.items.is_empty() && s.bytes == 0, "all expired");
    }
}
