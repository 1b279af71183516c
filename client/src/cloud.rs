//! Talking to the cloud: one UDP socket, a receive thread, and `call`, which multicasts a
//! request to every server, resends it until one answers, uploads the request's payload to the
//! server that accepted it and downloads the result — all through the socket-free state
//! machines of `common` (requester, transfers).

use crate::partials::Mirror;
use common::config::{ClusterConfig, ServerId, MAX_DATAGRAM};
use common::protocol::{
    decode, encode_attached, encode_msg, encode_xfer, transfer_id, Answer, Frame, Msg, Op, Reply, RequestId,
};
use common::requester::{Completion, Requester, RequesterStats};
use common::rng::Rng;
use common::transfer::{TransferEvent, TransferMsg, Transfers};
use crossbeam_channel::{bounded, unbounded, Receiver, RecvTimeoutError};
use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Peer datagrams queued for the engine before new ones are dropped.
pub const PEER_QUEUE: usize = 4096;

/// How long a request waits for an answer while the cloud counts as lost, before failing.
pub const LOST_WAIT: Duration = Duration::from_secs(2);

/// The start of the error a request gives while the cloud is lost.
pub const UNREACHABLE: &str = "the cloud is unreachable";

/// What this client knows of the cloud's reachability: when a server last sent it anything,
/// and whether the watch (see `crate::watch`) declared the cloud lost. Shared by the receive
/// thread, the watch thread and [`Cloud::call`].
#[derive(Debug)]
pub struct Health {
    start: Instant,
    /// Ms since `start` + 1 of the last datagram from a server (0: never).
    last_heard: AtomicU64,
    lost: AtomicBool,
    /// Request ids of probes carry this client id; their answers stop at the receive thread.
    probe_client: u64,
}

impl Health {
    fn new(probe_client: u64) -> Self {
        Health { start: Instant::now(), last_heard: AtomicU64::new(0), lost: AtomicBool::new(false), probe_client }
    }

    fn heard(&self) {
        self.last_heard.store(self.start.elapsed().as_millis() as u64 + 1, Ordering::Relaxed);
    }

    /// Time since a server last sent this client anything (since the start if never).
    pub fn silence(&self) -> Duration {
        let now = self.start.elapsed().as_millis() as u64;
        let last = self.last_heard.load(Ordering::Relaxed).saturating_sub(1);
        Duration::from_millis(now.saturating_sub(last))
    }

    /// True while the cloud counts as lost.
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }

    /// Declares the cloud lost or found again.
    pub fn set_lost(&self, lost: bool) {
        self.lost.store(lost, Ordering::Relaxed);
    }

    /// The error of a request given up because the cloud is lost.
    pub fn unreachable(&self) -> String {
        format!(
            "{UNREACHABLE} (no server has answered for {} s); still trying in the background",
            self.silence().as_secs()
        )
    }
}

/// Sends a status probe to every server, from a handle of its own on the client's socket (so
/// probing never waits for a request in progress).
pub struct Prober {
    sock: UdpSocket,
    servers: Vec<SocketAddr>,
    probe_client: u64,
    seq: u64,
}

impl Prober {
    /// Multicasts one probe; the answers only refresh [`Health`].
    pub fn probe(&mut self) {
        self.seq += 1;
        let bytes =
            encode_msg(&Msg::Request { rid: RequestId { client: self.probe_client, seq: self.seq }, op: Op::Status });
        for addr in &self.servers {
            let _ = self.sock.send_to(&bytes, addr);
        }
    }
}

/// What the receive thread hands over.
#[allow(clippy::large_enum_variant)] // moved once through a channel
pub enum Incoming {
    /// A control message.
    Ctl(SocketAddr, Msg),
    /// A transfer message.
    Xfer(SocketAddr, TransferMsg),
    /// A reply from a server with its result attached.
    Result(SocketAddr, Reply, Vec<u8>),
}

/// Called with (direction, done bytes, total bytes) while a large payload moves.
pub type ProgressFn = Box<dyn FnMut(&str, u64, u64) + Send>;

/// A finished call.
#[derive(Debug, Clone)]
pub struct CallResult {
    /// The reply (its `server` says who executed it).
    pub reply: Reply,
    /// The downloaded result, for requests that return bytes.
    pub blob: Option<Vec<u8>>,
    /// Bytes of the result already held from an earlier, interrupted download (0: none).
    pub resumed: u64,
}

/// How long `call` waits for a datagram before running its timers.
pub const POLL: Duration = Duration::from_millis(5);

/// While a reply has come without its result, the request is sent again this often, ms: the
/// server that ran it answers with the result attached.
pub const REFETCH_MS: u64 = 100;

/// A server that ran a request and has not been heard from for this long after the reply
/// came, while its result is missing, is taken for dead: the result is lost with it and the
/// call fails (the caller retries with a new request), ms.
pub const EXECUTOR_SILENT_MS: u64 = 1000;

/// Sorts what arrives on a client's socket: peer traffic (messages from other users, even
/// relayed by a server, and peers' transfers) apart from the cloud's replies and transfers;
/// answers to reachability probes only refresh [`Health`].
struct Classifier {
    servers: Vec<SocketAddr>,
    health: Arc<Health>,
}

impl Classifier {
    /// The item and whether it is peer traffic; `None` for what nobody needs.
    fn sort(&self, bytes: &[u8], from: SocketAddr) -> Option<(Incoming, bool)> {
        let from_server = self.servers.contains(&from);
        if from_server {
            self.health.heard();
        }
        match decode(bytes) {
            Ok(Frame::Ctl(m @ (Msg::Peer(_) | Msg::PeerAck { .. }))) => Some((Incoming::Ctl(from, m), true)),
            Ok(Frame::Ctl(Msg::Reply(r))) if r.rid.client == self.health.probe_client => None,
            Ok(Frame::Ctl(m)) => Some((Incoming::Ctl(from, m), false)),
            Ok(Frame::Xfer(x)) => Some((Incoming::Xfer(from, x), !from_server)),
            Ok(Frame::Attached(Msg::Reply(r), blob)) if from_server => Some((Incoming::Result(from, r, blob), false)),
            Ok(Frame::Attached(..)) | Err(_) => None,
        }
    }
}

/// Where `call` gets its datagrams.
enum Source {
    /// From the receive thread, which keeps peer traffic for the engine.
    Thread(Receiver<Incoming>),
    /// From the socket itself (no receive thread; peer traffic dropped).
    Direct { classify: Classifier, buf: Vec<u8> },
}

/// What one call has learnt so far.
#[derive(Default)]
struct CallState {
    /// The server the payload goes to, and the transfer.
    uploading: Option<(ServerId, u64)>,
    /// The decided reply.
    reply: Option<Reply>,
    /// The transfer the result comes by, if it does not ride on the reply.
    want_blob: Option<u64>,
}

/// A client's connection to the cloud.
pub struct Cloud {
    sock: UdpSocket,
    servers: Vec<(ServerId, SocketAddr)>,
    source: Source,
    req: Requester,
    transfers: Transfers<SocketAddr>,
    max_payload: usize,
    /// Payloads up to this size travel attached to their request.
    inline_max: usize,
    start: Instant,
    peer_rx: Option<Receiver<Incoming>>,
    secret: Option<Vec<u8>>,
    health: Arc<Health>,
    /// Called with (what, done, total) while a payload over 1 MB moves, and with `done >= total`
    /// when it stops moving.
    pub progress: Option<ProgressFn>,
    /// The partials of downloads, kept on disk across a restart (see [`Cloud::keep_partials`]).
    mirror: Option<Mirror>,
}

fn bind_addr(cfg: &ClusterConfig) -> SocketAddr {
    let loopback = cfg.servers.iter().all(|s| s.client_addr.ip().is_loopback());
    let ip = match cfg.servers.first().map(|s| s.client_addr) {
        Some(SocketAddr::V6(_)) if loopback => "::1".parse().ok(),
        Some(SocketAddr::V6(_)) => "::".parse().ok(),
        _ if loopback => "127.0.0.1".parse().ok(),
        _ => "0.0.0.0".parse().ok(),
    };
    SocketAddr::new(ip.unwrap_or(std::net::IpAddr::from([0, 0, 0, 0])), 0)
}

impl Cloud {
    /// Opens a socket (on `bind` or an ephemeral port) and starts the receive thread.
    pub fn connect(cfg: &ClusterConfig, bind: Option<SocketAddr>) -> Result<Cloud, String> {
        let addr = bind.unwrap_or_else(|| bind_addr(cfg));
        let sock = UdpSocket::bind(addr).map_err(|e| format!("cannot bind {addr}: {e}"))?;
        let recv = sock.try_clone().map_err(|e| e.to_string())?;
        let (tx, rx) = unbounded();
        let (peer_tx, peer_rx) = bounded(PEER_QUEUE);
        let server_addrs: Vec<SocketAddr> = cfg.servers.iter().map(|s| s.client_addr).collect();
        let mut rng = Rng::from_entropy();
        let health = Arc::new(Health::new(rng.next_u64()));
        let classify = Classifier { servers: server_addrs, health: health.clone() };
        std::thread::Builder::new()
            .name("cloud-recv".into())
            .spawn(move || {
                let mut buf = vec![0u8; MAX_DATAGRAM + 1];
                loop {
                    let Ok((n, from)) = recv.recv_from(&mut buf) else { continue };
                    let delivered = match classify.sort(&buf[..n], from) {
                        None => true,
                        Some((item, true)) => {
                            let _ = peer_tx.try_send(item);
                            true
                        }
                        Some((item, false)) => tx.send(item).is_ok(),
                    };
                    if !delivered {
                        return; // the connection is gone
                    }
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(Cloud::assemble(cfg, sock, Source::Thread(rx), Some(peer_rx), health, rng))
    }

    /// Opens a socket with no receive thread: [`Cloud::call`] reads the socket itself, one
    /// wake-up per datagram fewer. For programs that make requests and share nothing with peers
    /// (the benchmark): peer traffic arriving on this socket is dropped.
    pub fn connect_direct(cfg: &ClusterConfig, bind: Option<SocketAddr>) -> Result<Cloud, String> {
        let addr = bind.unwrap_or_else(|| bind_addr(cfg));
        let sock = UdpSocket::bind(addr).map_err(|e| format!("cannot bind {addr}: {e}"))?;
        sock.set_read_timeout(Some(POLL)).map_err(|e| e.to_string())?;
        let mut rng = Rng::from_entropy();
        let health = Arc::new(Health::new(rng.next_u64()));
        let classify =
            Classifier { servers: cfg.servers.iter().map(|s| s.client_addr).collect(), health: health.clone() };
        let source = Source::Direct { classify, buf: vec![0u8; MAX_DATAGRAM + 1] };
        Ok(Cloud::assemble(cfg, sock, source, None, health, rng))
    }

    fn assemble(
        cfg: &ClusterConfig,
        sock: UdpSocket,
        source: Source,
        peer_rx: Option<Receiver<Incoming>>,
        health: Arc<Health>,
        mut rng: Rng,
    ) -> Cloud {
        let tcfg = cfg.transfer();
        // An upload rides in the request only if it fits one datagram's chunk on every path.
        let inline_max = cfg.servers.iter().map(|s| tcfg.chunk_for(&s.client_addr)).min().unwrap_or(0);
        Cloud {
            sock,
            servers: cfg.servers.iter().map(|s| (s.id, s.client_addr)).collect(),
            source,
            req: Requester::new(rng.next_u64(), cfg.request_retry_ms, cfg.request_timeout_ms),
            transfers: Transfers::new(tcfg),
            max_payload: cfg.max_payload,
            inline_max,
            start: Instant::now(),
            peer_rx,
            secret: None,
            health,
            progress: None,
            mirror: None,
        }
    }

    /// The next datagram for `call`, or `None` after [`POLL`] without one.
    fn next_incoming(&mut self) -> Result<Option<Incoming>, String> {
        match &mut self.source {
            Source::Thread(rx) => match rx.recv_timeout(POLL) {
                Ok(item) => Ok(Some(item)),
                Err(RecvTimeoutError::Timeout) => Ok(None),
                Err(RecvTimeoutError::Disconnected) => Err("the receive thread stopped".into()),
            },
            Source::Direct { classify, buf } => {
                let deadline = Instant::now() + POLL;
                loop {
                    let (n, from) = match self.sock.recv_from(buf) {
                        Ok(x) => x,
                        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                            return Ok(None)
                        }
                        Err(_) => {
                            // An ICMP error from an earlier send (a server that is down).
                            if Instant::now() >= deadline {
                                return Ok(None);
                            }
                            continue;
                        }
                    };
                    match classify.sort(&buf[..n], from) {
                        Some((item, false)) => return Ok(Some(item)),
                        _ if Instant::now() >= deadline => return Ok(None),
                        _ => {}
                    }
                }
            }
        }
    }

    /// Keeps the partials of downloads in `dir`, so that a download cut off by a restart
    /// resumes when the request is made again; what `dir` holds is loaded now.
    pub fn keep_partials(&mut self, dir: PathBuf) -> Result<(), String> {
        let now = self.now();
        self.mirror = Some(Mirror::attach(dir, &mut self.transfers, now)?);
        Ok(())
    }

    /// The user's secret: from now on, requests that act for the user are signed with it.
    pub fn set_secret(&mut self, secret: Vec<u8>) {
        self.secret = Some(secret);
    }

    /// What this client knows of the cloud's reachability.
    pub fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    /// A prober on this client's socket (its answers refresh [`Cloud::health`]).
    pub fn prober(&self) -> Result<Prober, String> {
        Ok(Prober {
            sock: self.socket()?,
            servers: self.servers.iter().map(|(_, a)| *a).collect(),
            probe_client: self.health.probe_client,
            seq: 0,
        })
    }

    /// The peer traffic (messages from other users, their transfers); taken once by the engine.
    pub fn take_peer_rx(&mut self) -> Option<Receiver<Incoming>> {
        self.peer_rx.take()
    }

    /// A second handle on the socket, for the peer engine to send with.
    pub fn socket(&self) -> Result<UdpSocket, String> {
        self.sock.try_clone().map_err(|e| e.to_string())
    }

    /// This client's address (what the servers see).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.sock.local_addr().ok()
    }

    /// Counters of requests, resends and duplicates.
    pub fn stats(&self) -> &RequesterStats {
        &self.req.stats
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn multicast(&self, msg: &Msg) {
        self.multicast_bytes(&encode_msg(msg));
    }

    fn multicast_bytes(&self, bytes: &[u8]) {
        for (_, addr) in &self.servers {
            let _ = self.sock.send_to(bytes, addr);
        }
    }

    /// Sends one control message to `to` (used for peer messages).
    pub fn send_to(&self, to: SocketAddr, msg: &Msg) {
        let _ = self.sock.send_to(&encode_msg(msg), to);
    }

    fn flush_transfers(&mut self) {
        while let Some((to, m)) = self.transfers.poll_send() {
            let _ = self.sock.send_to(&encode_xfer(&m), to);
        }
    }

    /// Runs one request to completion. `payload` is uploaded to the server that accepts it;
    /// a result announced by transfer is downloaded before returning. While the cloud counts as
    /// lost and no server has answered for [`LOST_WAIT`], gives up after [`LOST_WAIT`] with an
    /// error starting with [`UNREACHABLE`].
    pub fn call(&mut self, op: Op, payload: Option<&[u8]>) -> Result<CallResult, String> {
        self.call_within(op, payload, None)
    }

    /// [`Cloud::call`] under a request id the operation prescribes (a view's slot).
    pub fn call_as(&mut self, rid: RequestId, op: Op) -> Result<CallResult, String> {
        let result = self.run_call(Some(rid), op, None, None);
        self.after_call(result)
    }

    /// [`Cloud::call`], giving up after `max_wait` if given (and sooner if the cloud is lost).
    pub fn call_within(
        &mut self,
        op: Op,
        payload: Option<&[u8]>,
        max_wait: Option<Duration>,
    ) -> Result<CallResult, String> {
        let result = self.run_call(None, op, payload, max_wait);
        self.after_call(result)
    }

    /// What every call ends with: the partials mirrored, the progress line (if any) ended.
    fn after_call(&mut self, result: Result<CallResult, String>) -> Result<CallResult, String> {
        if let Some(m) = self.mirror.as_mut() {
            m.checkpoint(&self.transfers);
        }
        if let Some(p) = self.progress.as_mut() {
            p("", 0, 0);
        }
        result
    }

    // Long on purpose: one loop owns one call's state (the reply, the result, the upload, the
    // timers) and reads as the call's story from the multicast to the result; the separate
    // decisions are functions of their own (`on_ctl`, the requester, the transfers).
    fn run_call(
        &mut self,
        rid: Option<RequestId>,
        op: Op,
        payload: Option<&[u8]>,
        max_wait: Option<Duration>,
    ) -> Result<CallResult, String> {
        let started = Instant::now();
        let now = self.now();
        let secret = self.secret.as_deref();
        let (rid, msg) = self.req.start_as(now, rid, op, |op, rid| {
            if let Some(s) = secret {
                common::auth::sign_request(op, rid, s, common::auth::wall_ms());
            }
        });
        // A small payload travels with the request: the winner starts at once, no upload.
        let attached = payload.filter(|p| p.len() <= self.inline_max).and_then(|p| encode_attached(&msg, p));
        match &attached {
            Some(bytes) => self.multicast_bytes(bytes),
            None => self.multicast(&msg),
        }
        let mut st = CallState::default();
        let mut resumed = 0u64;
        let mut blob: Option<(SocketAddr, Vec<u8>)> = None;
        let mut transfer_error: Option<String> = None;
        let mut refetched = self.now();
        // When a reply came, and when each server was last heard from since.
        let mut replied_at: Option<u64> = None;
        let mut heard: Vec<(SocketAddr, u64)> = Vec::new();
        loop {
            if let Some(r) = &st.reply {
                // The result must come from the server whose execution was decided: one taken
                // from another (which ran the request before a takeover) is dropped.
                let executor = self.servers.iter().find(|(id, _)| *id == r.server).map(|(_, a)| *a);
                if blob.as_ref().is_some_and(|(from, _)| st.want_blob.is_some() && Some(*from) != executor) {
                    blob = None;
                }
                if st.want_blob.is_none() || blob.is_some() {
                    return Ok(CallResult { reply: r.clone(), blob: blob.map(|(_, b)| b), resumed });
                }
                if let Some(e) = transfer_error.take() {
                    return Err(e);
                }
                if executor.is_none() {
                    return Err(format!("the reply names server {}, which is not in the cluster config", r.server));
                }
                // The result comes by transfer (its `Accepted` was lost: it is retransmitted
                // until taken), or it was attached to a reply that was lost: ask again.
                if let (Some(t), Some(at)) = (st.want_blob, executor) {
                    let now = self.now();
                    let since = replied_at.get_or_insert(now);
                    let last = heard.iter().find(|(a, _)| *a == at).map_or(*since, |(_, h)| (*h).max(*since));
                    let moving = self.transfers.progress(t).is_some_and(|(done, _)| done > 0);
                    if !moving && now >= last + EXECUTOR_SILENT_MS {
                        let _ = self.transfers.cancel(t);
                        return Err(format!(
                            "server {} ran the request but no longer answers: its result is lost",
                            r.server
                        ));
                    }
                    if self.transfers.progress(t).is_none() {
                        let _ = self.transfers.expect(now, t, at, self.max_payload);
                    }
                    if now >= refetched + REFETCH_MS {
                        refetched = now;
                        self.multicast(&msg);
                    }
                }
            }
            let incoming = self.next_incoming()?;
            if let Some(Incoming::Ctl(from, _) | Incoming::Xfer(from, _) | Incoming::Result(from, _, _)) = &incoming {
                let now = self.now();
                // Only the cluster's servers are tracked (a bounded list).
                if self.servers.iter().any(|(_, a)| a == from) {
                    match heard.iter_mut().find(|(a, _)| a == from) {
                        Some(h) => h.1 = now,
                        None => heard.push((*from, now)),
                    }
                }
            }
            match incoming {
                Some(Incoming::Ctl(from, msg)) => {
                    let now = self.now();
                    self.on_ctl(now, rid, from, msg, payload, &mut st)?;
                }
                Some(Incoming::Xfer(from, x)) => {
                    let now = self.now();
                    self.transfers.step(now, from, x);
                }
                Some(Incoming::Result(from, r, bytes)) => {
                    if r.rid == rid {
                        blob = Some((from, bytes));
                    }
                    let now = self.now();
                    let msg = Msg::Reply(r);
                    self.on_ctl(now, rid, from, msg, payload, &mut st)?;
                }
                None => {}
            }
            let now = self.now();
            self.transfers.tick(now);
            if let Some(m) = self.mirror.as_mut() {
                m.tick(now, &self.transfers);
            }
            self.flush_transfers();
            while let Some(ev) = self.transfers.poll_event() {
                match ev {
                    TransferEvent::Received { id, payload: p, from }
                        if Some(id) == st.want_blob || id == transfer_id(rid, 1) =>
                    {
                        blob = Some((from, p))
                    }
                    TransferEvent::Failed { id, reason, outgoing, peer }
                        if id == transfer_id(rid, 1) || (outgoing && id == transfer_id(rid, 0)) =>
                    {
                        st.uploading = None;
                        let who = match self.servers.iter().find(|(_, a)| *a == peer) {
                            Some((sid, _)) => format!("server {sid} ({peer})"),
                            None => peer.to_string(),
                        };
                        let dir = if outgoing { "upload to" } else { "download from" };
                        transfer_error = Some(format!("transfer failed: {dir} {who}: {reason}"));
                    }
                    TransferEvent::Resumed { id, held, .. }
                        if Some(id) == st.want_blob || id == transfer_id(rid, 1) =>
                    {
                        resumed = held;
                    }
                    TransferEvent::Progress { total, done, outgoing, .. } => {
                        if let Some(p) = self.progress.as_mut() {
                            p(if outgoing { "upload" } else { "download" }, done, total);
                        }
                    }
                    _ => {}
                }
            }
            if st.reply.is_none() {
                // Lost, and still no server answers (a server that answers again may just be starting).
                let lost = self.health.is_lost() && self.health.silence() >= LOST_WAIT;
                let limit = if lost { Some(max_wait.unwrap_or(LOST_WAIT).min(LOST_WAIT)) } else { max_wait };
                if limit.is_some_and(|l| started.elapsed() >= l) {
                    self.req.abandon(rid);
                    let _ = self.transfers.cancel(transfer_id(rid, 0));
                    let _ = self.transfers.cancel(transfer_id(rid, 1));
                    return Err(if lost { self.health.unreachable() } else { "no server answered in time".into() });
                }
                let (resend, timeouts) = self.req.tick(now);
                for m in resend {
                    match &attached {
                        Some(bytes) if matches!(&m, Msg::Request { rid: r, .. } if *r == rid) => {
                            self.multicast_bytes(bytes)
                        }
                        _ => self.multicast(&m),
                    }
                }
                if timeouts.iter().any(|c| matches!(c, Completion::TimedOut(r) if *r == rid)) {
                    let _ = self.transfers.cancel(transfer_id(rid, 0));
                    let _ = self.transfers.cancel(transfer_id(rid, 1));
                    return Err(transfer_error.unwrap_or_else(|| "no server answered (is the cloud running?)".into()));
                }
            }
        }
    }

    fn on_ctl(
        &mut self,
        now: u64,
        rid: RequestId,
        from: SocketAddr,
        msg: Msg,
        payload: Option<&[u8]>,
        st: &mut CallState,
    ) -> Result<(), String> {
        let CallState { uploading, reply, want_blob } = st;
        match msg {
            Msg::Reply(r) => {
                if let Some(Completion::Answered(r)) = self.req.on_reply(r) {
                    if r.rid == rid {
                        if let Ok(Answer::Encrypted { transfer, .. }) = &r.result {
                            *want_blob = Some(*transfer);
                        }
                        *reply = Some(r);
                    }
                }
            }
            // The server that runs it is still at work: not a silence to give up on.
            Msg::Working { rid: r, server }
                if r == rid && self.servers.iter().any(|(id, a)| *id == server && *a == from) =>
            {
                self.req.extend(rid, now);
                self.transfers.touch(now, transfer_id(rid, 1));
            }
            Msg::Started { rid: r, server, transfer, inline } if r == rid => {
                if uploading.map(|(s, _)| s) == Some(server) {
                    return Ok(());
                }
                let Some(&(_, addr)) = self.servers.iter().find(|(id, _)| *id == server) else { return Ok(()) };
                if addr != from {
                    return Ok(());
                }
                // A takeover: the new holder wants the payload; stop sending to the old one.
                let _ = self.transfers.cancel(transfer);
                let _ = self.transfers.cancel(transfer_id(rid, 1));
                if !inline {
                    let data: Vec<u8> = payload.map(|p| p.to_vec()).unwrap_or_default();
                    self.transfers.send(now, transfer, addr, data).map_err(|e| e.to_string())?;
                }
                self.transfers.expect(now, transfer_id(rid, 1), addr, self.max_payload).map_err(|e| e.to_string())?;
                *uploading = Some((server, transfer));
                self.flush_transfers();
            }
            _ => {}
        }
        Ok(())
    }

    /// Asks every server for its status (not elected: each answers for itself).
    pub fn statuses(&mut self, wait: Duration) -> HashMap<ServerId, common::protocol::ServerStatus> {
        // Not tracked by the requester: no one server's answer completes it.
        let rid = RequestId { client: Rng::from_entropy().next_u64(), seq: 0 };
        self.multicast(&Msg::Request { rid, op: Op::Status });
        let mut out = HashMap::new();
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline && out.len() < self.servers.len() {
            if let Ok(Some(Incoming::Ctl(_, Msg::Reply(r)))) = self.next_incoming() {
                if r.rid == rid {
                    if let Ok(Answer::Status(s)) = r.result {
                        out.insert(s.id, *s);
                    }
                }
            }
        }
        out
    }
}
