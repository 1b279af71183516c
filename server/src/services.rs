//! Heavy requests, done outside the node, as a socket-free state machine: the shell hands it
//! what arrives (`execute`, `on_transfer`, `on_peer_ack`, `on_worked`) and the time (`tick`), and
//! takes what it produced: datagrams (`take_outbox`), hide jobs to run on the worker pool
//! (`take_jobs`) and inputs for the node (`take_inputs`). For `Encrypt` the server that won the request takes
//! the sealed image that came attached to the request, or else tells the client where to send
//! it (`Accepted`) and receives it by reliable transfer. It checks the upload is the owner's
//! image sealed under the owner's own key and that it decodes, hides the sealed bytes (never the
//! plain image) in a cover on the worker pool, and reports the answer to the node, which commits
//! it like any other. The stego PNG goes back attached to the reply when it fits one datagram
//! (kept a while for retries), else by transfer. For `Relay` it tries to reach a peer the
//! sender could not, and reports whether the peer acknowledged.

use crate::node::Input;
use crate::stash::{self, Stash};
use common::config::{ClusterConfig, ServerId};
use common::crypto::Key;
use common::protocol::{transfer_id, Answer, Msg, Op, RequestId, WORKING_PING_MS};
use common::transfer::{TransferEvent, TransferMsg, Transfers};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

/// How often `Accepted` is resent until the upload starts, ms.
pub const ACCEPT_RESEND_MS: u64 = 100;
/// Tries the cloud makes to reach a peer for a relayed message.
pub const RELAY_TRIES: u32 = 3;
/// Wait for the peer's acknowledgement between tries, ms.
pub const RELAY_TRY_MS: u64 = 200;
/// A datagram to send once the server's lock is released: encoding and the kernel's loopback
/// delivery then no longer hold up the threads waiting for the lock.
pub enum Datagram {
    /// A message to another server (tagged with the cluster key).
    Server(ServerId, Msg),
    /// A message to a client.
    Client(SocketAddr, Msg),
    /// A reply to a client with its result attached.
    Attached(SocketAddr, Msg, Vec<u8>),
    /// A transfer datagram to a client.
    Xfer(SocketAddr, TransferMsg),
}

/// Hiding `owner`'s uploaded image (`stego::hide_upload`), for the worker pool; its result comes
/// back through [`Services::on_worked`].
pub struct HideJob {
    /// The request.
    pub rid: RequestId,
    /// Who gets the result.
    pub client: SocketAddr,
    /// The image's owner.
    pub owner: String,
    /// The owner's own-image key.
    pub key: Key,
    /// The sealed image.
    pub payload: Vec<u8>,
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
    hide_jobs: Vec<HideJob>,
    max_payload: usize,
    transfers: Transfers<SocketAddr>,
    jobs: HashMap<u64, Job>,
    relays: HashMap<u64, Relay>,
    stash: Stash,
    /// Results that go back attached to their replies.
    results: Stash,
    /// Requests whose upload came attached: their client has not been told who runs them.
    unannounced: HashSet<RequestId>,
    /// Requests being hidden on the pool: their client, and when it was last told so.
    working: HashMap<RequestId, (SocketAddr, u64)>,
    inputs: Vec<Input>,
}

impl Services {
    /// The services of server `id`.
    pub fn new(id: ServerId, cfg: &ClusterConfig) -> Self {
        Services {
            id,
            outbox: Vec::new(),
            hide_jobs: Vec::new(),
            max_payload: cfg.max_payload,
            transfers: Transfers::new(cfg.transfer()),
            jobs: HashMap::new(),
            relays: HashMap::new(),
            stash: Stash::new(stash::UPLOADS),
            results: Stash::new(stash::RESULTS),
            unannounced: HashSet::new(),
            working: HashMap::new(),
            inputs: Vec::new(),
        }
    }

    /// Hide jobs produced since the last call, for the worker pool.
    pub fn take_jobs(&mut self) -> Vec<HideJob> {
        std::mem::take(&mut self.hide_jobs)
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
    /// A reply whose result this server holds carries it.
    pub fn post(&mut self, d: Datagram) {
        let d = match d {
            Datagram::Client(to, Msg::Reply(r)) => {
                // Only our own execution's result, as the decided reply describes it.
                let png = self.results.get(r.rid, to).filter(|png| {
                    r.server == self.id
                        && matches!(r.result, Ok(Answer::Encrypted { len, .. }) if len == png.len() as u64)
                });
                match png {
                    Some(png) => Datagram::Attached(to, Msg::Reply(r), png.to_vec()),
                    None => Datagram::Client(to, Msg::Reply(r)),
                }
            }
            d => d,
        };
        self.outbox.push(d);
    }

    /// The datagrams queued since the last call, in order.
    pub fn take_outbox(&mut self) -> Vec<Datagram> {
        std::mem::take(&mut self.outbox)
    }

    fn send_ctl(&mut self, to: SocketAddr, msg: &Msg) {
        self.outbox.push(Datagram::Client(to, msg.clone()));
    }

    fn flush(&mut self, now: u64) {
        while let Some((to, msg)) = self.transfers.poll_send() {
            self.outbox.push(Datagram::Xfer(to, msg));
        }
        while let Some(ev) = self.transfers.poll_event() {
            self.on_event(now, ev);
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
            // learns who sends it from the reply, or from `Accepted` before a long result.
            self.unannounced.insert(rid);
            self.start_job(now, rid, client, owner, key, payload);
            return;
        }
        if let Err(e) = self.transfers.expect(now, upload, client, len as usize) {
            self.inputs.push(Input::Executed { rid, result: Err(format!("cannot receive the image: {e}")) });
            return;
        }
        self.send_ctl(client, &Msg::Started { rid, server: self.id, transfer: upload, inline: false });
        self.jobs.insert(upload, Job { rid, client, owner, key, last_accept: now, started: false });
        self.flush(now);
    }

    /// A transfer datagram arrived from a client.
    pub fn on_transfer(&mut self, now: u64, from: SocketAddr, msg: TransferMsg) {
        let id = msg.id();
        if let Some(job) = self.jobs.get_mut(&id) {
            job.started = true;
        }
        self.transfers.step(now, from, msg);
        self.flush(now);
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
        self.working.remove(&rid);
        let unannounced = self.unannounced.remove(&rid);
        let result = match result {
            Ok(png) if unannounced && png.len() <= self.transfers.config().chunk_for(&client) => {
                // One datagram: it goes with the reply (see `post`).
                let len = png.len() as u64;
                self.results.put(now, rid, client, png);
                Ok(Answer::Encrypted { len, transfer: transfer_id(rid, 1) })
            }
            Ok(png) => {
                let id = transfer_id(rid, 1);
                if unannounced {
                    // Bind the client to this server before the chunks come.
                    let accepted = Msg::Started { rid, server: self.id, transfer: transfer_id(rid, 0), inline: true };
                    self.send_ctl(client, &accepted);
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
        self.flush(now);
    }

    /// Timers: transfer retransmissions, resending `Accepted` until the upload starts.
    pub fn tick(&mut self, now: u64) {
        self.transfers.tick(now);
        self.stash.expire(now);
        self.results.expire(now);
        let mut resend: Vec<(SocketAddr, Msg)> = self
            .jobs
            .iter_mut()
            .filter(|(_, j)| !j.started && now >= j.last_accept + ACCEPT_RESEND_MS)
            .map(|(&id, j)| {
                j.last_accept = now;
                (j.client, Msg::Started { rid: j.rid, server: self.id, transfer: id, inline: false })
            })
            .collect();
        // A client waiting on slow work hears that it goes on (not a silence to give up on).
        for (&rid, (client, last)) in self.working.iter_mut() {
            if now >= *last + WORKING_PING_MS {
                *last = now;
                resend.push((*client, Msg::Working { rid, server: self.id }));
            }
        }
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
        self.flush(now);
    }

    /// Hides `owner`'s uploaded image on the worker pool; the result comes back to `on_worked`.
    fn start_job(&mut self, now: u64, rid: RequestId, client: SocketAddr, owner: String, key: Key, payload: Vec<u8>) {
        self.working.insert(rid, (client, now));
        self.hide_jobs.push(HideJob { rid, client, owner, key, payload });
    }

    fn on_event(&mut self, now: u64, ev: TransferEvent<SocketAddr>) {
        match ev {
            TransferEvent::Received { id, from, payload } => {
                let Some(job) = self.jobs.remove(&id) else { return };
                self.start_job(now, job.rid, from, job.owner, job.key, payload);
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
            TransferEvent::Resumed { id, peer, held, total } => {
                let text = format!("upload {id:x} from {peer} resumes with {held} of {total} bytes held");
                common::log::log(&format!("server {}", self.id), &text);
            }
            TransferEvent::Sent { .. } | TransferEvent::Progress { .. } | TransferEvent::Dropped { .. } => {}
        }
    }
}
