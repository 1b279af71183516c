//! The bench's cross-host transfer mode: `--transfer-listen ADDR` receives, `--transfer-to ADDR`
//! sends N MB to it over the reliable transfer (UDP), or with `--tcp` over one TCP stream, so
//! that the two can be compared on the same link.
//!
//! UDP: the sender announces `XBENCH1 id:u64 len:u64` until the listener answers `XBOK id:u64`,
//! then runs the transfer; the listener checks it (the transfer's CRC-32) and times it. TCP: the
//! sender writes `len:u64` and the bytes; the listener answers the CRC-32 of what it read, so the
//! sender's time covers the whole delivery and it can check the bytes arrived exact.

use crate::transfer_bench::End;
use common::args::{Args, Opt};
use common::config::EXIT_USAGE;
use common::pathsim;
use common::rng::Rng;
use common::transfer::{crc32, TransferConfig, Transfers};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

const HELLO: &[u8; 7] = b"XBENCH1";
const OK: &[u8; 4] = b"XBOK";
/// Largest payload a listener accepts.
const MAX_BYTES: u64 = 1 << 30;

/// What the sender measured.
#[derive(Debug, Clone)]
pub struct LabReport {
    /// "udp" or "tcp".
    pub proto: &'static str,
    /// Payload bytes.
    pub bytes: usize,
    /// From the start of the data until the receiver had it all.
    pub seconds: f64,
    /// True if the receiver's check matched.
    pub exact: bool,
}

impl LabReport {
    /// Payload megabits per second.
    pub fn mbit_per_s(&self) -> f64 {
        self.bytes as f64 * 8.0 / 1e6 / self.seconds.max(1e-9)
    }
}

/// Serves transfers at `addr` (UDP and TCP) until the process is killed, printing one line each.
pub fn listen(addr: SocketAddr, cfg: TransferConfig) -> Result<(), String> {
    let tcp = TcpListener::bind(addr).map_err(|e| format!("cannot bind TCP {addr}: {e}"))?;
    std::thread::spawn(move || {
        for stream in tcp.incoming().flatten() {
            match serve_tcp(stream) {
                Ok(n) => println!("listen: tcp {n} bytes received"),
                Err(e) => eprintln!("listen: tcp: {e}"),
            }
        }
    });
    let sock = UdpSocket::bind(addr).map_err(|e| format!("cannot bind UDP {addr}: {e}"))?;
    println!("listen: ready at {addr}");
    let mut end = End::new(sock, 0.0, 1)?;
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((n, from)) = end.sock.recv_from(&mut buf) else {
            continue;
        };
        let Some((id, len)) = parse_hello(&buf[..n]) else {
            continue;
        };
        let mut t = Transfers::new(cfg.clone());
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if let Err(e) = t.expect(end.clock(), id, from, len) {
            eprintln!("listen: {e}");
            continue;
        }
        let mut ok = OK.to_vec();
        ok.extend_from_slice(&id.to_le_bytes());
        let _ = end.sock.send_to(&ok, from);
        let started = Instant::now();
        match end.receive(&mut t, Duration::from_secs(600)) {
            Ok(p) => {
                let secs = started.elapsed().as_secs_f64();
                println!("listen: udp {} bytes from {from} in {secs:.3} s", p.len());
            }
            Err(e) => eprintln!("listen: udp from {from}: {e}"),
        }
    }
}

fn parse_hello(b: &[u8]) -> Option<(u64, u64)> {
    let rest = b.strip_prefix(HELLO.as_slice())?;
    let id = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?);
    let len = u64::from_le_bytes(rest.get(8..16)?.try_into().ok()?);
    (rest.len() == 16 && len <= MAX_BYTES).then_some((id, len))
}

fn serve_tcp(mut s: TcpStream) -> Result<u64, String> {
    s.set_read_timeout(Some(Duration::from_secs(60))).map_err(|e| e.to_string())?;
    let mut head = [0u8; 8];
    s.read_exact(&mut head).map_err(|e| e.to_string())?;
    let len = u64::from_le_bytes(head);
    if len > MAX_BYTES {
        return Err(format!("{len} bytes is more than this listener accepts"));
    }
    let mut data = vec![0u8; len as usize];
    s.read_exact(&mut data).map_err(|e| e.to_string())?;
    s.write_all(&crc32(&data).to_le_bytes()).map_err(|e| e.to_string())?;
    Ok(len)
}

/// Sends `bytes` of random data to a listener at `to`, over TCP if `tcp`.
pub fn send(to: SocketAddr, bytes: usize, tcp: bool, cfg: TransferConfig) -> Result<LabReport, String> {
    let mut payload = vec![0u8; bytes];
    Rng::from_entropy().fill(&mut payload);
    if tcp {
        return send_tcp(to, &payload);
    }
    let bind: SocketAddr = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().map_err(|_| "bad bind")?;
    let sock = UdpSocket::bind(bind).map_err(|e| e.to_string())?;
    let mut end = End::new(sock, 0.0, 2)?;
    let id = Rng::from_entropy().next_u64();
    let mut hello = HELLO.to_vec();
    hello.extend_from_slice(&id.to_le_bytes());
    hello.extend_from_slice(&(bytes as u64).to_le_bytes());
    let mut buf = [0u8; 64];
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        if Instant::now() > until {
            return Err(format!("no listener answered at {to}"));
        }
        end.sock.send_to(&hello, to).map_err(|e| e.to_string())?;
        let wait = Instant::now() + Duration::from_millis(200);
        let mut answered = false;
        while Instant::now() < wait {
            if let Ok((n, from)) = end.sock.recv_from(&mut buf) {
                if from == to && buf[..n].strip_prefix(OK.as_slice()) == Some(&id.to_le_bytes()[..]) {
                    answered = true;
                    break;
                }
            }
        }
        if answered {
            break;
        }
    }
    let mut t = Transfers::new(cfg);
    t.send(end.clock(), id, to, payload).map_err(|e| e.to_string())?;
    let seconds = end.send(&mut t, Duration::from_secs(600))?;
    Ok(LabReport { proto: "udp", bytes, seconds, exact: true })
}

fn send_tcp(to: SocketAddr, payload: &[u8]) -> Result<LabReport, String> {
    let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(10)).map_err(|e| format!("{to}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(600))).map_err(|e| e.to_string())?;
    let started = Instant::now();
    s.write_all(&(payload.len() as u64).to_le_bytes()).map_err(|e| e.to_string())?;
    s.write_all(payload).map_err(|e| e.to_string())?;
    let mut crc = [0u8; 4];
    s.read_exact(&mut crc).map_err(|e| e.to_string())?;
    let seconds = started.elapsed().as_secs_f64();
    let exact = u32::from_le_bytes(crc) == crc32(payload);
    Ok(LabReport { proto: "tcp", bytes: payload.len(), seconds, exact })
}

/// The bench's transfer options (after the cluster's).
pub const TRANSFER_OPTS: &[Opt] = &[
    Opt {
        name: "transfer-mb",
        value: Some("MB"),
        default: "",
        help: "instead: one reliable transfer of MB megabytes (loopback, or to --transfer-to)",
    },
    Opt {
        name: "loss",
        value: Some("P"),
        default: "0",
        help: "with --transfer-mb or --transfer-sim: share of datagrams dropped (0-0.5)",
    },
    Opt {
        name: "transfer-sim",
        value: None,
        default: "",
        help: "instead: transfers over a simulated 100 Mbit/s bottleneck (--rtt-ms, --loss, --flows)",
    },
    Opt { name: "rtt-ms", value: Some("MS"), default: "20", help: "with --transfer-sim: round-trip time" },
    Opt { name: "flows", value: Some("N"), default: "1", help: "with --transfer-sim: transfers sharing the path" },
    Opt {
        name: "transfer-listen",
        value: Some("ADDR"),
        default: "",
        help: "instead: receive transfers (UDP) and TCP streams at ADDR until killed",
    },
    Opt {
        name: "transfer-to",
        value: Some("ADDR"),
        default: "",
        help: "with --transfer-mb: send to a --transfer-listen at ADDR",
    },
    Opt { name: "tcp", value: None, default: "", help: "with --transfer-to: over one TCP stream instead" },
];

fn fail(msg: &str) -> ! {
    eprintln!("bench: {msg}");
    std::process::exit(EXIT_USAGE)
}

/// Runs a transfer mode if the arguments ask for one (then exits); returns otherwise.
pub fn run_mode(args: &Args) {
    let num = |n: &str| args.num::<f64>(n).unwrap_or_else(|e| fail(&e));
    let loss = num("loss").unwrap_or(0.0);
    if !(0.0..=0.5).contains(&loss) {
        fail("--loss must be between 0 and 0.5");
    }
    let addr = |n: &str| args.get(n).map(|a| a.parse::<SocketAddr>().unwrap_or_else(|e| fail(&format!("--{n}: {e}"))));
    let mb = args.num::<usize>("transfer-mb").unwrap_or_else(|e| fail(&e));
    let code = if args.flag("transfer-sim") {
        let rtt = args.num::<u64>("rtt-ms").unwrap_or_else(|e| fail(&e)).unwrap_or(20);
        let flows = args.num::<usize>("flows").unwrap_or_else(|e| fail(&e)).unwrap_or(1).clamp(1, 8);
        sim_mode(mb.unwrap_or(20), rtt, loss, flows)
    } else if let Some(at) = addr("transfer-listen") {
        match listen(at, TransferConfig::default()) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("bench: {e}");
                1
            }
        }
    } else if let Some(to) = addr("transfer-to") {
        let mb = mb.unwrap_or_else(|| fail("--transfer-to needs --transfer-mb"));
        match send(to, mb * 1_000_000, args.flag("tcp"), TransferConfig::default()) {
            Ok(r) => {
                println!(
                    "RESULT {{\"mode\":\"transfer-to\",\"proto\":\"{}\",\"bytes\":{},\"seconds\":{:.4},\"mbit_per_s\":{:.1},\"exact\":{}}}",
                    r.proto,
                    r.bytes,
                    r.seconds,
                    r.mbit_per_s(),
                    r.exact
                );
                i32::from(!r.exact)
            }
            Err(e) => {
                eprintln!("bench: {e}");
                1
            }
        }
    } else if let Some(mb) = mb {
        loopback_mode(mb, loss)
    } else {
        return;
    };
    std::process::exit(code)
}

fn sim_mode(mb: usize, rtt: u64, loss: f64, flows: usize) -> i32 {
    let spec = pathsim::PathSpec::new(rtt, loss, 1);
    let plan: Vec<(u64, usize)> = (0..flows).map(|_| (0, mb * 1_000_000)).collect();
    let r = pathsim::run(&spec, &TransferConfig::default(), &plan, 3_600_000);
    let goodputs: Vec<String> = r.iter().map(|f| format!("{:.1}", f.goodput_mbit)).collect();
    let exact = r.iter().all(|f| f.exact);
    println!(
        "RESULT {{\"mode\":\"transfer-sim\",\"rate_mbit\":{},\"rtt_ms\":{rtt},\"loss\":{loss},\"queue_bytes\":{},\"mb\":{mb},\"goodput_mbit\":[{}],\"retransmits\":[{}],\"exact\":{exact}}}",
        spec.rate_mbit,
        spec.queue_bytes,
        goodputs.join(","),
        r.iter().map(|f| f.retransmits.to_string()).collect::<Vec<_>>().join(",")
    );
    i32::from(!exact)
}

fn loopback_mode(mb: usize, loss: f64) -> i32 {
    let cfg = TransferConfig::default();
    match crate::transfer_bench::run(mb * 1_000_000, cfg.clone(), loss, 7) {
        Ok(r) => {
            println!(
                "transfer: {} bytes in {:.3} s = {:.1} MB/s, chunk {} B (loopback), loss {loss}, dropped {} of {} datagrams, byte-exact: {}",
                r.bytes, r.seconds, r.mb_per_s, cfg.local_chunk_size, r.dropped, r.datagrams, r.exact
            );
            println!(
                "RESULT {{\"mode\":\"transfer\",\"bytes\":{},\"seconds\":{:.4},\"mb_per_s\":{:.1},\"loss\":{loss},\"dropped\":{},\"exact\":{}}}",
                r.bytes, r.seconds, r.mb_per_s, r.dropped, r.exact
            );
            i32::from(!r.exact)
        }
        Err(e) => {
            eprintln!("bench: {e}");
            1
        }
    }
}
