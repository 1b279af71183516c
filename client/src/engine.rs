//! The peer engine: a thread that answers other users while the prompt waits on stdin, and runs
//! the prompt's peer commands. It drives the peer link (acks, three tries) and a transfer
//! multiplexer for peer-to-peer payloads (galleries, images); a message no direct try gets
//! through is handed to the cloud, which relays it or buffers it for the offline recipient.

use crate::cloud::{Cloud, Incoming};
use crate::notice::notice;
use crate::partials::Mirror;
use crate::peer::{LinkEvent, PeerLink};
use crate::progress::Meter;
use crate::sharing::{self, Delivery, Sharing};
use crate::store::{Identity, Store};
use common::auth::{share_aad, RightsFields};
use common::crypto::{self, Purpose};
use common::protocol::{encode_msg, encode_xfer, Answer, Auth, Envelope, Op, PeerBody};
use common::rights::{decode_gallery, encode_gallery, GalleryItem};
use common::rng::Rng;
use common::transfer::{TransferConfig, TransferEvent, Transfers};
use crossbeam_channel::{after, select, unbounded, Receiver, Sender};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often an online client fetches messages the cloud buffered for it, ms.
pub const INBOX_POLL_MS: u64 = 5_000;

/// Largest gallery accepted from a peer.
pub const MAX_GALLERY: usize = 16 * 1024 * 1024;

/// A reply channel for a command's outcome.
pub type Reply<T> = Sender<Result<T, String>>;

/// What the prompt asks the engine to do.
pub enum Command {
    /// Fetch `user`'s gallery from `addr`.
    Gallery { user: String, addr: SocketAddr, reply: Reply<Vec<GalleryItem>> },
    /// Send `body` to `user` (at `addr` if online), falling back to the cloud.
    Send { user: String, addr: Option<SocketAddr>, body: PeerBody, reply: Reply<String> },
    /// Fetch, apply in order and acknowledge what the cloud buffered for us; replies the count.
    PullInbox { reply: Reply<usize> },
    /// Send an approved image (stego PNG; the viewer writes the rights into it) to `user` at `addr`, announced
    /// by `body` (a `Deliver` with the ticket and the rights tag).
    Deliver { user: String, addr: SocketAddr, body: PeerBody, png: Vec<u8>, reply: Reply<String> },
}

/// Everything the engine works with.
pub struct EngineCtx {
    /// Who we are.
    pub me: Identity,
    /// Our data folder.
    pub store: Store,
    /// The cloud (shared with the prompt).
    pub cloud: Arc<Mutex<Cloud>>,
    /// Owner-side sharing state (shared with the prompt).
    pub sharing: Arc<Mutex<Sharing>>,
    /// Socket to send with.
    pub sock: UdpSocket,
    /// Peer traffic from the receive thread.
    pub incoming: Receiver<Incoming>,
    /// Transfer settings.
    pub transfer: TransferConfig,
}

/// A handle on the running engine.
pub struct Engine {
    tx: Sender<Command>,
}

impl Engine {
    /// Starts the engine thread.
    pub fn start(ctx: EngineCtx) -> Result<Engine, String> {
        let (tx, rx) = unbounded();
        std::thread::Builder::new()
            .name("peer-engine".into())
            .spawn(move || State::new(ctx).run(rx))
            .map_err(|e| e.to_string())?;
        Ok(Engine { tx })
    }

    /// Runs a command and waits (at most `timeout`) for its outcome.
    pub fn ask<T>(&self, timeout: Duration, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, String> {
        let (tx, rx) = unbounded();
        self.tx.send(make(tx)).map_err(|_| "the peer engine stopped".to_string())?;
        rx.recv_timeout(timeout).map_err(|_| "no outcome in time".to_string())?
    }
}

struct State {
    ctx: EngineCtx,
    link: PeerLink,
    transfers: Transfers<SocketAddr>,
    /// The partials of incoming payloads, kept on disk across a restart.
    mirror: Option<Mirror>,
    start: Instant,
    rng: Rng,
    sends: HashMap<u64, (String, Reply<String>)>,
    deliver_offers: HashMap<u64, (SocketAddr, u64, Vec<u8>, Reply<String>)>,
    deliver_to: HashMap<u64, String>,
    deliver_sending: HashMap<u64, Reply<String>>,
    /// Galleries coming in: whose, and who waits for them.
    galleries: HashMap<u64, (String, Reply<Vec<GalleryItem>>)>,
    gallery_asks: HashMap<u64, u64>,
    incoming_images: HashMap<u64, Delivery>,
    /// Deliveries coming in: when each started, the bytes held then (a resumed one), and the
    /// next quarter to report.
    incoming_progress: HashMap<u64, (Instant, u64, u64)>,
    last_pull: u64,
    /// Why the last background inbox pull failed, if it did (said once, not every 5 s).
    pull_error: Option<String>,
    health: Arc<crate::cloud::Health>,
    /// The progress line of a delivery over 1 MB (the prompt waits for `approve` meanwhile).
    meter: Meter,
}

impl State {
    fn new(ctx: EngineCtx) -> Self {
        let mut rng = Rng::from_entropy();
        let link = PeerLink::new(&ctx.me.name, rng.next_u64());
        let mut transfers = Transfers::new(ctx.transfer.clone());
        let health = ctx.cloud.lock().health();
        let dir = ctx.store.root().join("partial").join("peer");
        let mirror = match Mirror::attach(dir, &mut transfers, 0) {
            Ok(m) => Some(m),
            Err(e) => {
                notice(&format!("partials: {e}; interrupted deliveries will start again from zero"));
                None
            }
        };
        State {
            health,
            ctx,
            link,
            transfers,
            mirror,
            start: Instant::now(),
            rng,
            sends: HashMap::new(),
            deliver_offers: HashMap::new(),
            deliver_sending: HashMap::new(),
            deliver_to: HashMap::new(),
            galleries: HashMap::new(),
            gallery_asks: HashMap::new(),
            incoming_images: HashMap::new(),
            incoming_progress: HashMap::new(),
            last_pull: 0,
            pull_error: None,
            meter: Meter::default(),
        }
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn run(mut self, commands: Receiver<Command>) {
        let incoming = self.ctx.incoming.clone();
        loop {
            select! {
                recv(incoming) -> m => match m {
                    Ok(Incoming::Ctl(from, msg)) => self.link.on_message(from, msg),
                    Ok(Incoming::Xfer(from, x)) => { let now = self.now(); self.transfers.step(now, from, x) }
                    Ok(Incoming::Result(..)) => {} // cloud traffic: never sorted to the engine
                    Err(_) => return,
                },
                recv(commands) -> c => match c {
                    Ok(cmd) => self.command(cmd),
                    Err(_) => return,
                },
                recv(after(Duration::from_millis(5))) -> _ => {},
            }
            let now = self.now();
            // Not while the cloud is lost: the watch signs in again, then pulls resume.
            if now >= self.last_pull + INBOX_POLL_MS && !self.health.is_lost() {
                self.last_pull = now;
                let pulled = self.pull_inbox().err();
                self.pull_failed(pulled);
            }
            self.link.tick(now);
            self.transfers.tick(now);
            if let Some(m) = self.mirror.as_mut() {
                m.tick(now, &self.transfers);
            }
            while let Some(ev) = self.link.poll_event() {
                self.link_event(ev);
            }
            while let Some(ev) = self.transfers.poll_event() {
                self.transfer_event(ev);
            }
            self.flush();
        }
    }

    fn flush(&mut self) {
        for (to, msg) in self.link.drain_out() {
            let _ = self.ctx.sock.send_to(&encode_msg(&msg), to);
        }
        while let Some((to, m)) = self.transfers.poll_send() {
            let _ = self.ctx.sock.send_to(&encode_xfer(&m), to);
        }
    }

    fn envelope(&mut self, to: &str, body: PeerBody) -> Envelope {
        Envelope { id: self.link.next_id(), from: self.ctx.me.name.clone(), to: to.into(), body }
    }

    fn command(&mut self, cmd: Command) {
        let now = self.now();
        match cmd {
            Command::Gallery { user, addr, reply } => {
                let transfer = self.rng.next_u64();
                if let Err(e) = self.transfers.expect(now, transfer, addr, MAX_GALLERY) {
                    let _ = reply.send(Err(e.to_string()));
                    return;
                }
                let env = self.envelope(&user, PeerBody::GalleryRequest { transfer });
                self.gallery_asks.insert(env.id, transfer);
                self.galleries.insert(transfer, (user, reply));
                self.link.send(now, addr, env);
            }
            Command::Send { user, addr, body, reply } => {
                let env = self.envelope(&user, body);
                match addr {
                    Some(a) => {
                        self.sends.insert(env.id, (user, reply));
                        self.link.send(now, a, env);
                    }
                    None => {
                        let outcome = self.through_cloud(env, None);
                        let _ = reply.send(outcome);
                    }
                }
            }
            Command::PullInbox { reply } => {
                let _ = reply.send(self.pull_inbox());
            }
            Command::Deliver { user, addr, mut body, png, reply } => {
                let transfer = self.rng.next_u64();
                if let PeerBody::Deliver { transfer: t, len, .. } = &mut body {
                    *t = transfer;
                    *len = png.len() as u64;
                }
                self.deliver_to.insert(transfer, user.clone());
                let env = self.envelope(&user, body);
                self.deliver_offers.insert(env.id, (addr, transfer, png, reply));
                self.link.send(now, addr, env);
            }
        }
    }

    /// Says (once) that a background inbox pull failed with `error`; nothing while the cloud
    /// counts as lost, which the watch said already.
    fn pull_failed(&mut self, error: Option<String>) {
        if let Some(e) = &error {
            if !self.health.is_lost() && self.pull_error.as_ref() != Some(e) {
                notice(&format!("could not fetch your inbox from the cloud: {e} (trying again every 5 s)"));
            }
        }
        self.pull_error = error;
    }

    /// Fetches what the cloud buffered for us, applies it in order and acknowledges it so every
    /// server drops it. Runs at sign-in and every [`INBOX_POLL_MS`] while online: a message can
    /// be buffered while we are online (the sender could not reach us, or raced our sign-in).
    fn pull_inbox(&mut self) -> Result<usize, String> {
        let mut acked: Vec<u64> = Vec::new();
        let mut total = 0;
        let from = SocketAddr::from(([0, 0, 0, 0], 0));
        loop {
            let op = Op::InboxAck { name: self.ctx.me.name.clone(), auth: Auth::default(), ids: acked };
            let answer = self.ctx.cloud.lock().call(op, None)?.reply.result?;
            let Answer::Inbox(pending) = answer else { return Err(format!("unexpected answer {answer:?}")) };
            if pending.is_empty() {
                return Ok(total);
            }
            total += pending.len();
            acked = pending.iter().map(|e| e.id).collect();
            let now = self.now();
            for env in pending {
                if env.to == self.ctx.me.name {
                    self.incoming(now, from, env);
                }
            }
        }
    }

    /// The cloud relays the message, or buffers it when the recipient cannot be reached.
    fn through_cloud(&mut self, env: Envelope, addr: Option<SocketAddr>) -> Result<String, String> {
        let to = env.to.clone();
        let mut cloud = self.ctx.cloud.lock();
        if let Some(addr) = addr {
            let relayed =
                cloud.call(Op::Relay { auth: Auth::default(), envelope: env.clone(), addr }, None)?.reply.result?;
            if relayed == (Answer::Relayed { delivered: true }) {
                return Ok(format!("delivered to {to} (through the cloud)"));
            }
        }
        let op = Op::Buffer { name: self.ctx.me.name.clone(), auth: Auth::default(), envelope: env, unreachable: addr };
        match cloud.call(op, None)?.reply.result? {
            Answer::Buffered => Ok(format!("queued for {to} (offline)")),
            other => Err(format!("unexpected answer {other:?}")),
        }
    }

    fn link_event(&mut self, ev: LinkEvent) {
        let now = self.now();
        match ev {
            LinkEvent::Delivered { id } => {
                if let Some((user, reply)) = self.sends.remove(&id) {
                    let _ = reply.send(Ok(format!("delivered to {user}")));
                } else if let Some((addr, transfer, png, reply)) = self.deliver_offers.remove(&id) {
                    match self.transfers.send(now, transfer, addr, png) {
                        Ok(()) => {
                            self.deliver_sending.insert(transfer, reply);
                        }
                        Err(e) => {
                            let _ = reply.send(Err(e.to_string()));
                        }
                    }
                }
                self.gallery_asks.remove(&id);
            }
            LinkEvent::Failed { envelope } => {
                let id = envelope.id;
                if let Some((user, reply)) = self.sends.remove(&id) {
                    let addr = self.failed_addr(&user);
                    let outcome = self.through_cloud(envelope, addr);
                    let _ = reply.send(outcome);
                } else if let Some((_, _, _, reply)) = self.deliver_offers.remove(&id) {
                    let _ = reply.send(Err(format!("{} does not answer; the request stays pending", envelope.to)));
                } else if let Some(transfer) = self.gallery_asks.remove(&id) {
                    self.transfers.cancel(transfer);
                    if let Some((_, reply)) = self.galleries.remove(&transfer) {
                        let _ = reply.send(Err(format!("{} does not answer", envelope.to)));
                    }
                }
            }
            LinkEvent::Incoming { from, envelope } => self.incoming(now, from, envelope),
        }
    }

    /// The address the directory gives for `user` now, for the cloud to try.
    fn failed_addr(&mut self, user: &str) -> Option<SocketAddr> {
        let mut cloud = self.ctx.cloud.lock();
        match cloud.call(Op::Lookup { name: user.into() }, None).ok()?.reply.result {
            Ok(Answer::User(u)) if u.online => u.addr,
            _ => None,
        }
    }

    fn incoming(&mut self, now: u64, from: SocketAddr, env: Envelope) {
        let who = env.from.clone();
        match env.body {
            PeerBody::GalleryRequest { transfer } => {
                let items: Vec<GalleryItem> = self
                    .ctx
                    .store
                    .images()
                    .into_iter()
                    .filter_map(|id| {
                        let p = self.ctx.store.root().join("previews").join(format!("{id}.png"));
                        std::fs::read(p).ok().map(|preview_png| GalleryItem { image_id: id, preview_png })
                    })
                    .collect();
                let _ = self.transfers.send(now, transfer, from, encode_gallery(&items));
            }
            PeerBody::ImageRequest { image_id, views, more } => {
                if !self.ctx.store.images().contains(&image_id) {
                    let body = PeerBody::Rejected { image_id, reason: "no such image".into() };
                    let reply_env = self.envelope(&who, body);
                    self.link.send(now, from, reply_env);
                    return;
                }
                let mut sharing = self.ctx.sharing.lock();
                let n = sharing.add_request(&who, &image_id, views, more);
                let _ = sharing.save(&self.ctx.store);
                let asked = sharing::Request { n, from: who, image_id, views, more }.describe();
                notice(&format!("{asked}: `approve {n}` or `reject {n}`"));
            }
            PeerBody::Rejected { image_id, reason } => {
                notice(&format!("{who} rejected your request for {image_id}: {reason}"))
            }
            PeerBody::Deliver { image_id, views, version, transfer, len, ticket, digest, mac } => {
                let fields = RightsFields {
                    kind: "deliver",
                    owner: &who,
                    viewer: &self.ctx.me.name,
                    image_id: &image_id,
                    views,
                    version,
                };
                match self.open_delivery(fields, &ticket, &digest, &mac) {
                    Ok(d) => {
                        if len >= crate::progress::MIN_BYTES {
                            let size = crate::progress::mb(len);
                            notice(&format!("receiving {image_id} from {who} ({size})"));
                        }
                        if self.transfers.expect(now, transfer, from, len as usize).is_ok() {
                            self.incoming_images.insert(transfer, d);
                            self.incoming_progress.insert(transfer, (Instant::now(), 0, 1));
                        }
                    }
                    Err(e) => notice(&format!("refused a delivery from {who}: {e}")),
                }
            }
            PeerBody::Rights { image_id, views, version, mac } => {
                let me = self.ctx.me.name.clone();
                match sharing::apply_rights(&self.ctx.store, &me, &who, &image_id, views, version, &mac) {
                    Ok(Some(what)) => notice(&what),
                    Ok(None) => {}
                    Err(e) => notice(&format!("could not apply {who}'s update of {image_id}: {e}")),
                }
            }
        }
    }

    /// Opens the cloud's ticket (the share's rights key sealed for us) and checks the owner's
    /// tag on the announced rights and digest.
    fn open_delivery(&self, f: RightsFields, ticket: &str, digest: &str, mac: &str) -> Result<Delivery, String> {
        let sealed = crypto::from_hex(ticket).ok_or("malformed ticket")?;
        let aad = share_aad(f.owner, f.viewer, f.image_id);
        let key: crypto::Key = crypto::open(&self.ctx.me.key(Purpose::Wrap), &aad, &sealed)
            .map_err(|_| "the ticket was not issued by the cloud for this share".to_string())?
            .try_into()
            .map_err(|_| "the ticket holds no key".to_string())?;
        f.check_with(&key, digest, mac)?;
        let (owner, image_id) = (f.owner.to_string(), f.image_id.to_string());
        Ok(Delivery { owner, image_id, views: f.views, version: f.version, key, digest: digest.into() })
    }

    /// A delivery coming in while the prompt may be in use: its progress as a notice at each
    /// quarter (a line of its own, like every notice, rather than a line redrawn in place).
    fn incoming_quarter(&mut self, id: u64, done: u64, total: u64) {
        let (Some(d), Some((started, base, next))) =
            (self.incoming_images.get(&id), self.incoming_progress.get_mut(&id))
        else {
            return;
        };
        let quarter = done.saturating_mul(4).checked_div(total).unwrap_or(0);
        if quarter < *next || quarter >= 4 {
            return;
        }
        *next = quarter + 1;
        let what = format!("receiving {} from {}", d.image_id, d.owner);
        let line = crate::progress::line_since(&what, done, total, *base, started.elapsed().as_secs_f64());
        notice(&line);
    }

    fn transfer_event(&mut self, ev: TransferEvent<SocketAddr>) {
        if let TransferEvent::Received { id, .. } | TransferEvent::Failed { id, .. } = &ev {
            self.incoming_progress.remove(id);
        }
        match ev {
            TransferEvent::Received { id, payload, .. } => {
                if let Some((_, reply)) = self.galleries.remove(&id) {
                    let _ = reply.send(decode_gallery(&payload).map_err(|e| e.to_string()));
                } else if let Some(d) = self.incoming_images.remove(&id) {
                    match sharing::store_delivery(&self.ctx.store, &self.ctx.me.name, &d, &payload) {
                        Ok(r) => {
                            let views = crate::usage::plural(r.views, "view");
                            notice(&format!("received {} from {} with {views}", d.image_id, d.owner))
                        }
                        Err(e) => notice(&format!("refused the image from {}: {e}", d.owner)),
                    }
                }
            }
            TransferEvent::Resumed { id, held, total, .. } => {
                if let Some(p) = self.incoming_progress.get_mut(&id) {
                    (p.0, p.1) = (Instant::now(), held);
                }
                if let Some(d) = self.incoming_images.get(&id) {
                    let (h, t) = (crate::progress::mb(held), crate::progress::mb(total));
                    notice(&format!("resuming {} from {}: {h} of {t} already here", d.image_id, d.owner));
                }
            }
            TransferEvent::Progress { id, done, total, outgoing: false, .. } => self.incoming_quarter(id, done, total),
            TransferEvent::Progress { id, done, total, outgoing: true, .. }
                if self.deliver_sending.contains_key(&id) =>
            {
                let who = self.deliver_to.get(&id).cloned().unwrap_or_default();
                self.meter.update(&format!("sending to {who}"), done, total);
            }
            TransferEvent::Sent { id, to } => {
                if let Some(reply) = self.deliver_sending.remove(&id) {
                    self.meter.clear();
                    let who = self.deliver_to.remove(&id).unwrap_or_else(|| to.to_string());
                    let _ = reply.send(Ok(format!("delivered to {who}")));
                }
            }
            TransferEvent::Failed { id, reason, .. } => {
                if let Some((user, reply)) = self.galleries.remove(&id) {
                    let _ = reply.send(Err(format!("gallery transfer from {user} failed: {reason}")));
                } else if let Some(reply) = self.deliver_sending.remove(&id) {
                    self.meter.clear();
                    let who = self.deliver_to.remove(&id).unwrap_or_default();
                    let text = format!("image transfer to {who} failed: {reason}; the request stays pending");
                    let _ = reply.send(Err(text));
                }
                self.incoming_images.remove(&id);
            }
            _ => {}
        }
    }
}
