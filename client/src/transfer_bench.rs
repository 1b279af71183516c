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

fn pump(sock: &UdpSocket, t: &mut Transfers<SocketAddr>, rng: &mut Rng, loss: f64, dropped: &mut u64, sent: &mut u64) {
    while let Some((to, m)) = t.poll_send() {
        *sent += 1;
        if loss > 0.0 && rng.chance(loss) {
            *dropped += 1;
            continue;
        }
        let _ = sock.send_to(&encode_xfer(&m), to);
    }
}

/// Sends `bytes` of random data over loopback with `cfg`, dropping a `loss` share of datagrams.
pub fn run(bytes: usize, cfg: TransferConfig, loss: f64, seed: u64) -> Result<TransferReport, String> {
    let rx_sock = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let tx_sock = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let rx_addr = rx_sock.local_addr().map_err(|e| e.to_string())?;
    let tx_addr = tx_sock.local_addr().map_err(|e| e.to_string())?;
    for s in [&rx_sock, &tx_sock] {
        s.set_read_timeout(Some(Duration::from_millis(2))).map_err(|e| e.to_string())?;
    }
    let mut payload = vec![0u8; bytes];
    Rng::new(seed).fill(&mut payload);
    let expected = payload.clone();
    let id = 42;
    let rcfg = cfg.clone();
    let receiver = std::thread::spawn(move || -> (Option<Vec<u8>>, u64, u64) {
        let start = Instant::now();
        let mut t = Transfers::new(rcfg);
        let mut rng = Rng::new(seed ^ 1);
        let (mut dropped, mut sent) = (0, 0);
        if t.expect(0, id, tx_addr, usize::MAX).is_err() {
            return (None, 0, 0);
        }
        let mut buf = vec![0u8; 65_536];
        while start.elapsed() < Duration::from_secs(120) {
            let now = start.elapsed().as_millis() as u64;
            if let Ok((n, from)) = rx_sock.recv_from(&mut buf) {
                if let Ok(Frame::Xfer(m)) = decode(&buf[..n]) {
                    t.step(now, from, m);
                }
            }
            t.tick(start.elapsed().as_millis() as u64);
            pump(&rx_sock, &mut t, &mut rng, loss, &mut dropped, &mut sent);
            while let Some(ev) = t.poll_event() {
                match ev {
                    TransferEvent::Received { payload, .. } => {
                        // Keep acking for a moment so the sender learns it is done.
                        let until = Instant::now() + Duration::from_millis(300);
                        while Instant::now() < until {
                            if let Ok((n, from)) = rx_sock.recv_from(&mut buf) {
                                if let Ok(Frame::Xfer(m)) = decode(&buf[..n]) {
                                    t.step(start.elapsed().as_millis() as u64, from, m);
                                }
                            }
                            t.tick(start.elapsed().as_millis() as u64);
                            pump(&rx_sock, &mut t, &mut rng, loss, &mut dropped, &mut sent);
                        }
                        return (Some(payload), dropped, sent);
                    }
                    TransferEvent::Failed { .. } => return (None, dropped, sent),
                    _ => {}
                }
            }
        }
        (None, dropped, sent)
    });
    let start = Instant::now();
    let mut t = Transfers::new(cfg);
    let mut rng = Rng::new(seed ^ 2);
    let (mut dropped, mut sent) = (0, 0);
    t.send(0, id, rx_addr, payload).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 65_536];
    let mut done: Option<f64> = None;
    while done.is_none() && start.elapsed() < Duration::from_secs(120) {
        pump(&tx_sock, &mut t, &mut rng, loss, &mut dropped, &mut sent);
        if let Ok((n, from)) = tx_sock.recv_from(&mut buf) {
            if let Ok(Frame::Xfer(m)) = decode(&buf[..n]) {
                t.step(start.elapsed().as_millis() as u64, from, m);
            }
        }
        t.tick(start.elapsed().as_millis() as u64);
        while let Some(ev) = t.poll_event() {
            match ev {
                TransferEvent::Sent { .. } => done = Some(start.elapsed().as_secs_f64()),
                TransferEvent::Failed { reason, .. } => return Err(format!("transfer failed: {reason}")),
                _ => {}
            }
        }
    }
    let (got, rdropped, rsent) = receiver.join().map_err(|_| "receiver thread panicked".to_string())?;
    let seconds = done.ok_or("the sender never saw every chunk acknowledged")?;
    let got = got.ok_or("nothing received")?;
    Ok(TransferReport {
        bytes,
        seconds,
        mb_per_s: bytes as f64 / 1e6 / seconds,
        exact: got == expected,
        dropped: dropped + rdropped,
        datagrams: sent + rsent,
    })
}
