//! Measures the reliable transfer over real loopback sockets: one payload from a sending thread
//! to a receiving thread, each with its own UDP socket and `Transfers` state machine, with an
//! optional share of datagrams dropped on purpose (both directions) to show recovery.

use common::protocol::{decode, encode_xfer, Frame};
use common::rng::Rng;
use common::transfer::{TransferConfig, TransferEvent, Transfers};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// What one run measured.
#[derive(Debug, Clone)]
pub struct TransferReport {
    /// Payload bytes.
    pub bytes: usize,
    /// Wall time from the first datagram until the sender saw every chunk acknowledged.
    pub seconds: f64,
    /// Megabytes (10^6 bytes) per second.
    pub mb_per_s: f64,
    /// True if the received payload equals the one sent.
    pub exact: bool,
    /// Datagrams dropped on purpose.
    pub dropped: u64,
    /// Datagrams sent by both ends.
    pub datagrams: u64,
}

/// One end's socket, its deliberate loss, and its counters.
pub struct End {
    /// The socket (with a short read timeout).
    pub sock: UdpSocket,
    rng: Rng,
    loss: f64,
    /// Datagrams dropped on purpose.
    pub dropped: u64,
    /// Datagrams produced.
    pub sent: u64,
    start: Instant,
}

impl End {
    /// An end on `sock`, dropping a `loss` share of what it sends.
    pub fn new(sock: UdpSocket, loss: f64, seed: u64) -> Result<End, String> {
        sock.set_read_timeout(Some(Duration::from_millis(2))).map_err(|e| e.to_string())?;
        Ok(End { sock, rng: Rng::new(seed), loss, dropped: 0, sent: 0, start: Instant::now() })
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn pump(&mut self, t: &mut Transfers<SocketAddr>) {
        while let Some((to, m)) = t.poll_send() {
            self.sent += 1;
            if self.loss > 0.0 && self.rng.chance(self.loss) {
                self.dropped += 1;
                continue;
            }
            let _ = self.sock.send_to(&encode_xfer(&m), to);
        }
    }

    /// Receives, ticks and sends once (waiting at most the read timeout).
    fn turn(&mut self, t: &mut Transfers<SocketAddr>, buf: &mut [u8]) {
        if let Ok((n, from)) = self.sock.recv_from(buf) {
            if let Ok(Frame::Xfer(m)) = decode(&buf[..n]) {
                t.step(self.now(), from, m);
            }
        }
        t.tick(self.now());
        self.pump(t);
    }

    /// Runs `t` (one transfer expected) until it delivers, fails or `limit` passes.
    pub fn receive(&mut self, t: &mut Transfers<SocketAddr>, limit: Duration) -> Result<Vec<u8>, String> {
        let mut buf = vec![0u8; 65_536];
        let until = Instant::now() + limit;
        while Instant::now() < until {
            self.turn(t, &mut buf);
            while let Some(ev) = t.poll_event() {
                match ev {
                    TransferEvent::Received { payload, .. } => {
                        // Keep acking for a moment so the sender learns it is done.
                        let linger = Instant::now() + Duration::from_millis(300);
                        while Instant::now() < linger {
                            self.turn(t, &mut buf);
                        }
                        return Ok(payload);
                    }
                    TransferEvent::Failed { reason, .. } => return Err(format!("receive failed: {reason}")),
                    _ => {}
                }
            }
        }
        Err("nothing received in time".into())
    }

    /// Runs `t` (one transfer started) until every chunk is acknowledged; returns the seconds.
    pub fn send(&mut self, t: &mut Transfers<SocketAddr>, limit: Duration) -> Result<f64, String> {
        let mut buf = vec![0u8; 65_536];
        let started = Instant::now();
        while started.elapsed() < limit {
            self.pump(t);
            self.turn(t, &mut buf);
            while let Some(ev) = t.poll_event() {
                match ev {
                    TransferEvent::Sent { .. } => return Ok(started.elapsed().as_secs_f64()),
                    TransferEvent::Failed { reason, .. } => return Err(format!("transfer failed: {reason}")),
                    _ => {}
                }
            }
        }
        Err("the sender never saw every chunk acknowledged".into())
    }

    /// Milliseconds on this end's clock (what its `Transfers` are driven with).
    pub fn clock(&self) -> u64 {
        self.now()
    }
}

/// Sends `bytes` of random data over loopback with `cfg`, dropping a `loss` share of datagrams.
pub fn run(bytes: usize, cfg: TransferConfig, loss: f64, seed: u64) -> Result<TransferReport, String> {
    let rx_sock = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let tx_sock = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let rx_addr = rx_sock.local_addr().map_err(|e| e.to_string())?;
    let tx_addr = tx_sock.local_addr().map_err(|e| e.to_string())?;
    let mut payload = vec![0u8; bytes];
    Rng::new(seed).fill(&mut payload);
    let expected = payload.clone();
    let id = 42;
    let rcfg = cfg.clone();
    let mut rx = End::new(rx_sock, loss, seed ^ 1)?;
    let receiver = std::thread::spawn(move || -> (Result<Vec<u8>, String>, u64, u64) {
        let mut t = Transfers::new(rcfg);
        if let Err(e) = t.expect(rx.clock(), id, tx_addr, usize::MAX) {
            return (Err(e.to_string()), 0, 0);
        }
        let got = rx.receive(&mut t, Duration::from_secs(120));
        (got, rx.dropped, rx.sent)
    });
    let mut tx = End::new(tx_sock, loss, seed ^ 2)?;
    let mut t = Transfers::new(cfg);
    t.send(tx.clock(), id, rx_addr, payload).map_err(|e| e.to_string())?;
    let sent = tx.send(&mut t, Duration::from_secs(120));
    let (got, rdropped, rsent) = receiver.join().map_err(|_| "receiver thread panicked".to_string())?;
    let seconds = sent?;
    let got = got?;
    Ok(TransferReport {
        bytes,
        seconds,
        mb_per_s: bytes as f64 / 1e6 / seconds,
        exact: got == expected,
        dropped: tx.dropped + rdropped,
        datagrams: tx.sent + rsent,
    })
}
