//! The benchmark: starts a three-server cluster of real server processes on free loopback
//! ports (or uses a running one, `--config`), sends N encryption requests of one image from C
//! concurrent clients (one `Cloud`, hence one socket, per client thread; each client sends its
//! share one request after the other) and prints a table — per-server handled and answered
//! counts, failures, throughput, latency percentiles, each server's resident memory — and, last,
//! one line `RESULT {json}` for scripts.
//!
//! Variants: `--kill-server-after N` SIGKILLs the busiest server mid-run (clients retry a failed
//! request with a new one, up to 3 times); `--slow-server ID` makes one server slow to compare
//! the election policies; `--floor` does the same stego work in-process on every core, without
//! the network, as the physical floor to compare the cluster with; `--transfer-mb` measures the
//! reliable transfer alone.
//!
//! Besides wall-clock figures it reports the CPU time (Linux /proc) of every server it started
//! and of itself, per request: on a shared machine that figure is steadier than throughput.

use client::cloud::Cloud;
use client::launch::Cluster;
use client::transfer_lab::TRANSFER_OPTS;
use common::args::{usage, Args, Opt};
use common::config::{ClusterConfig, ServerId, EXIT_USAGE};
use common::crypto::{self, Key, Purpose};
use common::protocol::{Answer, Auth, Op, ServerStatus};
use common::rng::Rng;
use common::stego::{self, Covers};
use parking_lot::Mutex;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const OPTS: &[Opt] = &[
    Opt { name: "requests", value: Some("N"), default: "1000", help: "encryption requests to send" },
    Opt { name: "clients", value: Some("C"), default: "3", help: "concurrent clients (one socket each)" },
    Opt { name: "image", value: Some("PATH"), default: "images/sample-10k.jpg", help: "the image to encrypt" },
    Opt {
        name: "policy",
        value: Some("P"),
        default: "least-load",
        help: "least-load | round-robin | single (passed to every server)",
    },
    Opt { name: "config", value: Some("FILE"), default: "", help: "use this running cluster instead of starting one" },
    Opt {
        name: "kill-server-after",
        value: Some("N"),
        default: "",
        help: "after N answers, SIGKILL the server that answered most",
    },
    Opt { name: "slow-server", value: Some("ID"), default: "", help: "make server ID slow (--slow-ms per image)" },
    Opt { name: "slow-ms", value: Some("MS"), default: "20", help: "extra work per image of the slow server" },
    Opt { name: "floor", value: None, default: "", help: "no network: the same stego work in-process on every core" },
];

const ABOUT: &str = "Benchmark of the image cloud: N encryption requests from C concurrent clients.";

/// Servers the benchmark starts.
const SERVERS: u32 = 3;
/// Tries per request: the first one and up to 3 retries, each a new request.
const MAX_TRIES: u32 = 4;
/// Uncounted requests per client before the timed run.
const WARMUP_PER_CLIENT: usize = 3;
/// Every this many requests, the result is revealed and compared with the image.
const VERIFY_EVERY: usize = 100;
/// Failure messages each client prints at most.
const MAX_FAILURE_LOGS: u32 = 5;
/// How long a status round waits for every server.
const STATUS_WAIT: Duration = Duration::from_millis(500);
/// Set by Ctrl-C while this benchmark runs its own cluster.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);
/// Exit code after Ctrl-C.
const EXIT_INTERRUPTED: i32 = 130;
/// How long the servers get to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// What was asked for on the command line.
#[derive(Debug, Clone)]
struct Settings {
    requests: usize,
    clients: usize,
    image: PathBuf,
    policy: String,
    config: Option<PathBuf>,
    kill_after: Option<usize>,
    slow: Option<(ServerId, u64)>,
    floor: bool,
}

fn fail_usage(msg: &str) -> ! {
    eprintln!("bench: {msg}");
    std::process::exit(EXIT_USAGE)
}

fn main() {
    let opts: Vec<Opt> = OPTS.iter().chain(TRANSFER_OPTS).cloned().collect();
    let args = match Args::parse(std::env::args().skip(1), &opts) {
        Ok(a) => a,
        Err(None) => {
            print!("{}", usage("bench", ABOUT, &opts));
            return;
        }
        Err(Some(e)) => fail_usage(&e),
    };
    client::transfer_lab::run_mode(&args);
    let settings = parse_settings(&args).unwrap_or_else(|e| fail_usage(&e));
    let image = load_image(&settings.image).unwrap_or_else(|e| fail_usage(&e));
    let external = settings.config.as_deref().map(ClusterConfig::load).transpose().unwrap_or_else(|e| fail_usage(&e));
    let result = if settings.floor { run_floor(&settings, image) } else { run_cluster(&settings, image, external) };
    match result {
        Ok(report) => {
            print!("{}", report.table());
            println!("RESULT {}", report.json());
        }
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::exit(if INTERRUPTED.load(Ordering::Relaxed) { EXIT_INTERRUPTED } else { 1 });
        }
    }
}

fn parse_settings(args: &Args) -> Result<Settings, String> {
    let requests = args.num::<usize>("requests")?.unwrap_or(1000);
    let clients = args.num::<usize>("clients")?.unwrap_or(3);
    if requests == 0 || clients == 0 {
        return Err("--requests and --clients must be at least 1".into());
    }
    let policy = args.get("policy").unwrap_or("least-load").to_string();
    if !["least-load", "round-robin", "single"].contains(&policy.as_str()) {
        return Err(format!("--policy: unknown policy {policy:?} (least-load, round-robin, single)"));
    }
    let kill_after = args.num::<usize>("kill-server-after")?;
    if kill_after.is_some_and(|k| k == 0 || k >= requests) {
        return Err("--kill-server-after must be between 1 and --requests - 1".into());
    }
    let slow_ms = args.num::<u64>("slow-ms")?;
    let slow = match args.num::<ServerId>("slow-server")? {
        Some(id) if id == 0 || id > SERVERS => return Err(format!("--slow-server: no server {id} (1..={SERVERS})")),
        Some(id) => Some((id, slow_ms.unwrap_or(20))),
        None if slow_ms.is_some() => return Err("--slow-ms needs --slow-server".into()),
        None => None,
    };
    let settings = Settings {
        requests,
        clients,
        image: PathBuf::from(args.get("image").unwrap_or("images/sample-10k.jpg")),
        policy,
        config: args.get("config").map(PathBuf::from),
        kill_after,
        slow,
        floor: args.flag("floor"),
    };
    check_combinations(args, &settings)?;
    Ok(settings)
}

fn check_combinations(args: &Args, s: &Settings) -> Result<(), String> {
    for n in ["loss", "rtt-ms", "flows", "tcp", "transfer-to"] {
        if args.get(n).is_some() || args.flag(n) {
            return Err(format!("--{n} needs --transfer-mb or --transfer-sim"));
        }
    }
    let cluster_only = ["kill-server-after", "slow-server", "slow-ms", "policy"];
    let given = |names: &[&str]| names.iter().find(|n| args.get(n).is_some()).map(|n| n.to_string());
    if s.config.is_some() {
        if let Some(n) = given(&cluster_only) {
            return Err(format!("--{n} is not allowed with --config (the cluster is not ours to start or kill)"));
        }
    }
    if s.floor {
        if let Some(n) = given(&["config", "clients", "kill-server-after", "slow-server", "slow-ms", "policy"]) {
            return Err(format!("--{n} is not allowed with --floor (no servers; one thread per core)"));
        }
    }
    Ok(())
}

fn load_image(path: &Path) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("--image {}: {e}", path.display()))?;
    stego::decode_image(&bytes).map_err(|e| format!("--image {}: {e}", path.display()))?;
    Ok(bytes)
}

/// The repo's cover folder as an absolute path, if it is there.
fn images_dir() -> Option<PathBuf> {
    std::fs::canonicalize("images").ok().filter(|p| p.is_dir())
}

// ---------------------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------------------

/// One timed request as a client saw it.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// From the start of the first try to the result (download included), ms.
    ms: f64,
    /// The server that answered the successful try.
    server: Option<ServerId>,
    /// Tries used.
    tries: u32,
    /// The result was revealed and did not match the image.
    mismatch: bool,
    /// Size of the stego PNG, bytes (0 if none).
    result_bytes: usize,
}

impl Sample {
    fn ok(&self) -> bool {
        self.server.is_some() && !self.mismatch
    }
}

/// One server's line of the table.
#[derive(Debug, Clone, Default)]
struct ServerRow {
    /// Encryptions it started during the timed run (its own counters), if it told us.
    handled: Option<u64>,
    /// Replies from it that clients took.
    answered: u64,
    rss_mb_early: Option<f64>,
    rss_mb: Option<f64>,
    /// CPU time its process used during the timed run, s (servers this benchmark started).
    cpu_s: Option<f64>,
    killed: bool,
}

/// Everything a run measured.
#[derive(Debug, Clone, Default)]
struct Report {
    mode: String,
    policy: String,
    clients: usize,
    image_bytes: usize,
    requests: usize,
    samples: Vec<Sample>,
    duplicates: u64,
    resends: u64,
    seconds: f64,
    /// CPU time of this process during the timed run (clients or floor workers), s.
    own_cpu_s: Option<f64>,
    per_server: BTreeMap<ServerId, ServerRow>,
    killed: Option<ServerId>,
    slow: Option<(ServerId, u64)>,
}

fn round(x: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (x * f).round() / f
}

/// Nearest-rank percentile of sorted values (0 if none).
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl Report {
    fn ok(&self) -> usize {
        self.samples.iter().filter(|s| s.ok()).count()
    }

    fn failed(&self) -> usize {
        self.requests - self.ok()
    }

    fn mismatches(&self) -> usize {
        self.samples.iter().filter(|s| s.mismatch).count()
    }

    fn retries(&self) -> u64 {
        self.samples.iter().map(|s| u64::from(s.tries.saturating_sub(1))).sum()
    }

    /// Successful requests slower than `ms`.
    fn slower_than(&self, ms: f64) -> usize {
        self.samples.iter().filter(|s| s.ok() && s.ms > ms).count()
    }

    /// Mean size of the stego PNGs, bytes.
    fn result_bytes(&self) -> usize {
        let sizes: Vec<usize> = self.samples.iter().filter(|s| s.ok()).map(|s| s.result_bytes).collect();
        sizes.iter().sum::<usize>() / sizes.len().max(1)
    }

    /// CPU time of everything measured (servers and this process) per successful request, ms.
    fn cpu_ms_per_request(&self) -> Option<f64> {
        let servers: Option<f64> = self.per_server.values().map(|r| r.cpu_s).sum();
        let total = self.own_cpu_s? + servers?;
        (self.ok() > 0).then(|| total * 1000.0 / self.ok() as f64)
    }

    fn sorted_latencies(&self) -> Vec<f64> {
        let mut v: Vec<f64> = self.samples.iter().filter(|s| s.ok()).map(|s| s.ms).collect();
        v.sort_by(f64::total_cmp);
        v
    }

    fn throughput(&self) -> f64 {
        if self.seconds > 0.0 {
            self.ok() as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// Largest growth of a server's resident memory from the early sample to the end, MB.
    fn rss_growth_mb(&self) -> Option<f64> {
        self.per_server.values().filter_map(|r| Some(r.rss_mb? - r.rss_mb_early?)).max_by(f64::total_cmp)
    }

    fn table(&self) -> String {
        let mut out = self.header();
        out.push_str(&self.server_table());
        out.push_str(&self.summary());
        out
    }

    fn server_table(&self) -> String {
        if self.per_server.is_empty() {
            return String::new();
        }
        let mut out = String::from("server   handled  answered  rss@10% MB  rss end MB   cpu s  state\n");
        for (id, r) in &self.per_server {
            out.push_str(&format!(
                "{id:>6}  {:>8}  {:>8}  {:>10}  {:>10}  {:>6}  {}\n",
                opt_text(r.handled.map(|h| h as f64), 0),
                r.answered,
                opt_text(r.rss_mb_early, 1),
                opt_text(r.rss_mb, 1),
                opt_text(r.cpu_s, 2),
                if r.killed { "killed" } else { "up" }
            ));
        }
        out
    }

    fn summary(&self) -> String {
        let lat = self.sorted_latencies();
        let mut out = format!(
            "requests {}  ok {}  failed {}  mismatches {}  retries {}  duplicates {}  resends {}\n",
            self.requests,
            self.ok(),
            self.failed(),
            self.mismatches(),
            self.retries(),
            self.duplicates,
            self.resends
        );
        out.push_str(&format!("time {:.2} s  throughput {:.1} req/s\n", self.seconds, self.throughput()));
        out.push_str(&format!(
            "latency ms  p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}  (over 100 ms: {})\n",
            percentile(&lat, 50.0),
            percentile(&lat, 90.0),
            percentile(&lat, 99.0),
            lat.last().copied().unwrap_or(0.0),
            self.slower_than(100.0)
        ));
        if let (Some(own), Some(per)) = (self.own_cpu_s, self.cpu_ms_per_request()) {
            out.push_str(&format!("cpu: this process {own:.2} s; all measured processes {per:.3} ms per request\n"));
        }
        out
    }

    fn header(&self) -> String {
        let mut h = format!(
            "bench ({}): {} requests x {} bytes, {} clients, policy {}",
            self.mode, self.requests, self.image_bytes, self.clients, self.policy
        );
        if let Some((id, ms)) = self.slow {
            h.push_str(&format!(", server {id} slow (+{ms} ms)"));
        }
        if let Some(id) = self.killed {
            h.push_str(&format!(", server {id} killed mid-run"));
        }
        h.push('\n');
        h
    }

    fn json(&self) -> Value {
        let lat = self.sorted_latencies();
        let per_server: Map<String, Value> = self
            .per_server
            .iter()
            .map(|(id, r)| {
                let row = json!({
                    "handled": r.handled,
                    "answered": r.answered,
                    "rss_mb": r.rss_mb.map(|x| round(x, 1)),
                    "rss_mb_early": r.rss_mb_early.map(|x| round(x, 1)),
                    "cpu_s": r.cpu_s.map(|x| round(x, 2)),
                    "killed": r.killed,
                });
                (id.to_string(), row)
            })
            .collect();
        json!({
            "mode": self.mode,
            "requests": self.requests,
            "ok": self.ok(),
            "failed": self.failed(),
            "mismatches": self.mismatches(),
            "retries": self.retries(),
            "duplicates": self.duplicates,
            "resends": self.resends,
            "seconds": round(self.seconds, 3),
            "throughput": round(self.throughput(), 1),
            "p50_ms": round(percentile(&lat, 50.0), 3),
            "p90_ms": round(percentile(&lat, 90.0), 3),
            "p99_ms": round(percentile(&lat, 99.0), 3),
            "max_ms": round(lat.last().copied().unwrap_or(0.0), 3),
            "over_100ms": self.slower_than(100.0),
            "per_server": per_server,
            "rss_growth_mb": self.rss_growth_mb().map(|x| round(x, 1)),
            "own_cpu_s": self.own_cpu_s.map(|x| round(x, 2)),
            "cpu_ms_per_request": self.cpu_ms_per_request().map(|x| round(x, 3)),
            "policy": self.policy,
            "clients": self.clients,
            "image_bytes": self.image_bytes,
            "result_bytes": self.result_bytes(),
            "killed": self.killed,
            "slow_server": self.slow.map(|(id, _)| id),
            "slow_ms": self.slow.map(|(_, ms)| ms),
        })
    }
}

fn opt_text(v: Option<f64>, places: usize) -> String {
    v.map(|x| format!("{x:.places$}")).unwrap_or_else(|| "-".into())
}

// ---------------------------------------------------------------------------------------------
// The cluster run
// ---------------------------------------------------------------------------------------------

/// A cluster started by the benchmark: its servers are killed and its folder removed on drop.
struct OwnCluster {
    cluster: Cluster,
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        self.cluster.kill_all();
        let _ = std::fs::remove_dir_all(&self.cluster.dir);
    }
}

fn start_cluster(s: &Settings) -> Result<OwnCluster, String> {
    let dir = std::env::temp_dir().join(format!("imgcloud-bench-{}", std::process::id()));
    let images = images_dir();
    let cluster = Cluster::new(&dir, SERVERS, |cfg| {
        if let Some(p) = images {
            cfg.images_dir = p.to_string_lossy().into_owned();
        }
    })
    .inspect_err(|_| {
        let _ = std::fs::remove_dir_all(&dir);
    })?;
    let mut own = OwnCluster { cluster };
    // The first Ctrl-C stops the run so the servers are killed and the folder removed.
    let _ = ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::Relaxed) {
            std::process::exit(EXIT_INTERRUPTED);
        }
    });
    for id in own.cluster.cfg.ids() {
        own.cluster.set_args(id, server_args(s, id));
    }
    own.cluster.start_all()?;
    own.cluster.wait_ready(READY_TIMEOUT)?;
    Ok(own)
}

/// Every server's `--policy`, and `--slow-ms` for the slow one.
fn server_args(s: &Settings, id: ServerId) -> Vec<String> {
    let mut args = vec!["--policy".to_string(), s.policy.clone()];
    if let Some((_, ms)) = s.slow.filter(|(slow, _)| *slow == id) {
        args.extend(["--slow-ms".to_string(), ms.to_string()]);
    }
    args
}

/// Waits until every server of a cluster we did not start answers a status request.
fn wait_external(cfg: &ClusterConfig) -> Result<(), String> {
    let mut cloud = Cloud::connect_direct(cfg, None)?;
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let st = cloud.statuses(STATUS_WAIT);
        if cfg.ids().iter().all(|id| st.contains_key(id)) {
            return Ok(());
        }
        if Instant::now() > deadline {
            let missing: Vec<ServerId> = cfg.ids().into_iter().filter(|id| !st.contains_key(id)).collect();
            return Err(format!("servers {missing:?} do not answer after {READY_TIMEOUT:?}"));
        }
    }
}

/// What the client threads share with the monitor.
#[derive(Default)]
struct Shared {
    /// Requests finished (ok or failed).
    finished: AtomicUsize,
    /// Successful answers per answering server.
    answered: Mutex<BTreeMap<ServerId, u64>>,
}

/// What one client thread brings back.
struct ClientOutcome {
    samples: Vec<Sample>,
    duplicates: u64,
    resends: u64,
    finished_at: Instant,
}

/// A registered bench user: its name and own-image key (its secret signs its requests).
struct BenchUser {
    name: String,
    own: Key,
}

/// Registers a fresh user for one client thread and gives its secret to the cloud link.
fn register(cloud: &mut Cloud, k: usize) -> Result<BenchUser, String> {
    let name = format!("bench{:06x}-{k}", Rng::from_entropy().next_u64() & 0xff_ffff);
    match cloud.call(Op::Register { name: name.clone() }, None)?.reply.result? {
        Answer::Registered { secret, .. } => {
            let secret = common::auth::secret_bytes(&secret);
            cloud.set_secret(secret.clone());
            Ok(BenchUser { name, own: crypto::derive(&secret, Purpose::Own) })
        }
        other => Err(format!("unexpected answer to register: {other:?}")),
    }
}

/// One encryption try, as the client does it (seal under the own key, upload, get the stego
/// PNG back): the answering server, the stego PNG and the sealed bytes it must hide.
fn encrypt_once(cloud: &mut Cloud, user: &BenchUser, image: &[u8]) -> Result<(ServerId, Vec<u8>, Vec<u8>), String> {
    let sealed = crypto::seal(&user.own, &common::auth::own_image_aad(&user.name), image);
    let op = Op::Encrypt { owner: user.name.clone(), auth: Auth::default(), len: sealed.len() as u64 };
    let r = cloud.call(op, Some(&sealed))?;
    match r.reply.result {
        Ok(Answer::Encrypted { .. }) => {}
        Ok(other) => return Err(format!("unexpected answer {other:?}")),
        Err(e) => return Err(format!("server {}: {e}", r.reply.server)),
    }
    let blob = r.blob.ok_or("the answer came without its result")?;
    Ok((r.reply.server, blob, sealed))
}

/// One request, retried with a new request while it fails (at most `MAX_TRIES` tries).
fn one_request(cloud: &mut Cloud, user: &BenchUser, image: &[u8], verify: bool, logs: &mut u32) -> Sample {
    let start = Instant::now();
    for tries in 1..=MAX_TRIES {
        match encrypt_once(cloud, user, image) {
            Ok((server, blob, sealed)) => {
                let ms = start.elapsed().as_secs_f64() * 1000.0;
                let mismatch = verify && stego::reveal(&blob).ok().as_deref() != Some(&sealed[..]);
                if mismatch {
                    eprintln!("bench: the result from server {server} does not reveal the image");
                }
                return Sample { ms, server: Some(server), tries, mismatch, result_bytes: blob.len() };
            }
            Err(e) => {
                if *logs < MAX_FAILURE_LOGS {
                    *logs += 1;
                    eprintln!("bench: try {tries} failed: {e}");
                }
            }
        }
    }
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    Sample { ms, server: None, tries: MAX_TRIES, mismatch: false, result_bytes: 0 }
}

/// The requests of client `k` of `clients` (an even share of `0..total`).
fn share(total: usize, clients: usize, k: usize) -> Range<usize> {
    let (base, extra) = (total / clients, total % clients);
    let start = k * base + k.min(extra);
    start..start + base + usize::from(k < extra)
}

/// One client thread: warm up, wait for the start, send its share, return what it saw.
fn client_thread(
    (mut cloud, user): (Cloud, BenchUser),
    image: Arc<Vec<u8>>,
    range: Range<usize>,
    gates: Arc<Barrier>,
    shared: Arc<Shared>,
) -> ClientOutcome {
    let mut logs = 0;
    for _ in 0..WARMUP_PER_CLIENT {
        let _ = encrypt_once(&mut cloud, &user, &image);
    }
    let before = cloud.stats().clone();
    gates.wait(); // warm-up done
    gates.wait(); // start
    let mut samples = Vec::with_capacity(range.len());
    for i in range {
        let sample = one_request(&mut cloud, &user, &image, i.is_multiple_of(VERIFY_EVERY), &mut logs);
        if let (Some(id), true) = (sample.server, sample.ok()) {
            *shared.answered.lock().entry(id).or_insert(0) += 1;
        }
        shared.finished.fetch_add(1, Ordering::Relaxed);
        samples.push(sample);
    }
    let finished_at = Instant::now();
    let st = cloud.stats();
    ClientOutcome {
        samples,
        duplicates: st.handled_twice - before.handled_twice,
        resends: st.resends - before.resends,
        finished_at,
    }
}

/// The main thread during the run: progress, the early memory sample, the kill.
struct Monitor<'a> {
    total: usize,
    next_progress: usize,
    status: Cloud,
    cluster: Option<&'a mut Cluster>,
    kill_after: Option<usize>,
    killed: Option<ServerId>,
    shared: Arc<Shared>,
    /// Statuses before the timed run, after 10 % of it, and at its end.
    baseline: HashMap<ServerId, ServerStatus>,
    early: Option<HashMap<ServerId, ServerStatus>>,
    end: HashMap<ServerId, ServerStatus>,
    /// The last status each server gave (kept for a killed server).
    last: HashMap<ServerId, ServerStatus>,
    /// CPU seconds of each server process we started: at the start, and at the end or kill.
    cpu_start: HashMap<ServerId, f64>,
    cpu_end: HashMap<ServerId, f64>,
    /// CPU seconds of this process at the start, and used during the run.
    own_cpu_start: Option<f64>,
    own_cpu_s: Option<f64>,
}

impl<'a> Monitor<'a> {
    fn new(cfg: &ClusterConfig, s: &Settings, cluster: Option<&'a mut Cluster>) -> Result<Self, String> {
        Ok(Monitor {
            total: s.requests,
            next_progress: 0,
            status: Cloud::connect_direct(cfg, None)?,
            cluster,
            kill_after: s.kill_after,
            killed: None,
            shared: Arc::new(Shared::default()),
            baseline: HashMap::new(),
            early: None,
            end: HashMap::new(),
            last: HashMap::new(),
            cpu_start: HashMap::new(),
            cpu_end: HashMap::new(),
            own_cpu_start: None,
            own_cpu_s: None,
        })
    }

    /// Warms the clients up, runs them, and returns the run's seconds and what they saw.
    fn run(&mut self, cfg: &ClusterConfig, s: &Settings, image: Vec<u8>) -> Result<(f64, Vec<ClientOutcome>), String> {
        let gates = Arc::new(Barrier::new(s.clients + 1));
        let handles = spawn_clients(cfg, s, &Arc::new(image), &gates, &self.shared)?;
        gates.wait(); // every client warmed up
        self.baseline = self.status.statuses(STATUS_WAIT);
        self.read_cpu(true);
        self.own_cpu_start = cpu_seconds("self");
        let start = Instant::now();
        gates.wait(); // go
        while !handles.iter().all(|h| h.is_finished()) {
            if INTERRUPTED.load(Ordering::Relaxed) {
                return Err("interrupted".into());
            }
            self.step(start);
            std::thread::sleep(Duration::from_millis(5));
        }
        let outcomes: Vec<ClientOutcome> = handles.into_iter().filter_map(|h| h.join().ok()).collect();
        if outcomes.len() != s.clients {
            return Err("a client thread panicked".into());
        }
        let seconds = outcomes.iter().map(|o| o.finished_at).max().map_or(0.0, |t| (t - start).as_secs_f64());
        self.own_cpu_s = cpu_seconds("self").zip(self.own_cpu_start).map(|(end, start)| end - start);
        self.read_cpu(false);
        self.end = self.status.statuses(STATUS_WAIT);
        let end = self.end.clone();
        self.remember(&end);
        Ok((seconds, outcomes))
    }

    /// The table rows: counters relative to the start of the timed run.
    fn server_rows(&self, cfg: &ClusterConfig) -> BTreeMap<ServerId, ServerRow> {
        let answered = self.shared.answered.lock().clone();
        let row = |id: ServerId| {
            let base = self.baseline.get(&id).map_or(0, encrypt_count);
            ServerRow {
                handled: self.last.get(&id).map(|s| encrypt_count(s).saturating_sub(base)),
                answered: answered.get(&id).copied().unwrap_or(0),
                rss_mb_early: self.early.as_ref().and_then(|e| e.get(&id)).and_then(rss_mb),
                rss_mb: self.end.get(&id).and_then(rss_mb),
                cpu_s: self.cpu_end.get(&id).zip(self.cpu_start.get(&id)).map(|(e, s)| e - s),
                killed: self.killed == Some(id),
            }
        };
        cfg.ids().into_iter().map(|id| (id, row(id))).collect()
    }

    fn server_cpu(&self, id: ServerId) -> Option<f64> {
        let pid = self.cluster.as_deref()?.pid(id)?;
        cpu_seconds(&pid.to_string())
    }

    /// Reads every running server's CPU time into `start` (true) or `end`.
    fn read_cpu(&mut self, start: bool) {
        let ids = self.cluster.as_deref().map(Cluster::running).unwrap_or_default();
        for id in ids {
            if let Some(t) = self.server_cpu(id) {
                if start { &mut self.cpu_start } else { &mut self.cpu_end }.insert(id, t);
            }
        }
    }

    fn remember(&mut self, st: &HashMap<ServerId, ServerStatus>) {
        for (id, s) in st {
            self.last.insert(*id, s.clone());
        }
    }

    fn step(&mut self, start: Instant) {
        let done = self.shared.finished.load(Ordering::Relaxed);
        while done >= self.next_progress * self.total / 10 && self.next_progress <= 10 {
            if self.next_progress > 0 {
                eprintln!("bench: {:>3}% ({done}/{}) {:.1} s", self.next_progress * 10, self.total, secs(start));
            }
            self.next_progress += 1;
        }
        if self.early.is_none() && done >= self.total.div_ceil(10) {
            let st = self.status.statuses(STATUS_WAIT);
            self.remember(&st);
            self.early = Some(st);
        }
        if self.killed.is_none() && self.kill_after.is_some_and(|k| done >= k) {
            self.kill_busiest(start);
        }
    }

    fn kill_busiest(&mut self, start: Instant) {
        let busiest = self.shared.answered.lock().iter().max_by_key(|(_, n)| **n).map(|(id, _)| *id);
        let Some(id) = busiest else { return };
        let st = self.status.statuses(STATUS_WAIT); // its last counters
        self.remember(&st);
        if let Some(t) = self.server_cpu(id) {
            self.cpu_end.insert(id, t);
        }
        let Some(cluster) = self.cluster.as_deref_mut() else { return };
        cluster.kill(id);
        self.killed = Some(id);
        eprintln!("bench: SIGKILLed server {id} (the busiest) at {:.2} s", secs(start));
    }
}

fn secs(since: Instant) -> f64 {
    since.elapsed().as_secs_f64()
}

/// Clock ticks per second of the CPU times in /proc (USER_HZ, 100 on Linux).
const CLOCK_TICKS: f64 = 100.0;

/// User + system CPU time process `pid` (or "self") used so far, s; None without Linux /proc.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    // After the command name: state is field 3 of stat(5), utime 14 and stime 15.
    Some((ticks(11)? + ticks(12)?) as f64 / CLOCK_TICKS)
}

/// Starts the client threads; they warm up and wait at `gates`.
fn spawn_clients(
    cfg: &ClusterConfig,
    s: &Settings,
    image: &Arc<Vec<u8>>,
    gates: &Arc<Barrier>,
    shared: &Arc<Shared>,
) -> Result<Vec<JoinHandle<ClientOutcome>>, String> {
    let mut clouds = Vec::new();
    for k in 0..s.clients {
        let mut cloud = Cloud::connect_direct(cfg, None)?;
        let user = register(&mut cloud, k)?;
        clouds.push((cloud, user));
    }
    let mut handles = Vec::new();
    for (k, cloud) in clouds.into_iter().enumerate() {
        let (image, gates, shared) = (image.clone(), gates.clone(), shared.clone());
        let range = share(s.requests, s.clients, k);
        let h = std::thread::Builder::new()
            .name(format!("client-{k}"))
            .spawn(move || client_thread(cloud, image, range, gates, shared))
            .map_err(|e| format!("cannot start a client thread: {e}"))?;
        handles.push(h);
    }
    Ok(handles)
}

fn run_cluster(s: &Settings, image: Vec<u8>, external: Option<ClusterConfig>) -> Result<Report, String> {
    let mut own = None;
    let cfg = match external {
        Some(cfg) => {
            wait_external(&cfg)?;
            cfg
        }
        None => {
            let o = start_cluster(s)?;
            let cfg = o.cluster.cfg.clone();
            own = Some(o);
            cfg
        }
    };
    let image_bytes = image.len();
    let ours = own.is_some();
    let mut monitor = Monitor::new(&cfg, s, own.as_mut().map(|o| &mut o.cluster))?;
    let (seconds, outcomes) = monitor.run(&cfg, s, image)?;
    let mut report = Report {
        mode: if ours { "cluster" } else { "external cluster" }.into(),
        policy: if ours { s.policy.clone() } else { "as configured".into() },
        clients: s.clients,
        image_bytes,
        requests: s.requests,
        seconds,
        per_server: monitor.server_rows(&cfg),
        own_cpu_s: monitor.own_cpu_s,
        killed: monitor.killed,
        slow: s.slow,
        ..Report::default()
    };
    for o in outcomes {
        report.samples.extend(o.samples);
        report.duplicates += o.duplicates;
        report.resends += o.resends;
    }
    Ok(report)
}

fn encrypt_count(s: &ServerStatus) -> u64 {
    s.handled_by_kind.iter().find(|(k, _)| k == "encrypt").map_or(s.handled, |(_, n)| *n)
}

fn rss_mb(s: &ServerStatus) -> Option<f64> {
    (s.rss_kb > 0).then(|| s.rss_kb as f64 / 1024.0)
}

// ---------------------------------------------------------------------------------------------
// The floor: the same work, in-process, no network
// ---------------------------------------------------------------------------------------------

/// The owner name the floor seals its image for.
const FLOOR_OWNER: &str = "floor";

fn floor_thread(covers: &Covers, image: &[u8], next: &AtomicUsize, total: usize) -> Vec<Sample> {
    let key = crypto::random_key();
    let sealed = crypto::seal(&key, &common::auth::own_image_aad(FLOOR_OWNER), image);
    let _ = stego::hide_upload(covers, &key, FLOOR_OWNER, &sealed); // warm-up
    let mut samples = Vec::new();
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= total {
            return samples;
        }
        if i > 0 && i.is_multiple_of(total.div_ceil(10)) {
            eprintln!("bench: {:>3}% ({i}/{total})", i * 100 / total);
        }
        let start = Instant::now();
        let result = stego::hide_upload(covers, &key, FLOOR_OWNER, &sealed);
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        let sample = match result {
            Ok(png) => {
                let mismatch =
                    i.is_multiple_of(VERIFY_EVERY) && stego::reveal(&png).ok().as_deref() != Some(&sealed[..]);
                Sample { ms, server: Some(0), tries: 1, mismatch, result_bytes: png.len() }
            }
            Err(_) => Sample { ms, server: None, tries: 1, mismatch: false, result_bytes: 0 },
        };
        samples.push(sample);
    }
}

fn run_floor(s: &Settings, image: Vec<u8>) -> Result<Report, String> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let covers = match images_dir() {
        Some(dir) => Covers::load_dir_or_builtin(dir),
        None => Covers::builtin(),
    };
    let next = AtomicUsize::new(0);
    let cpu_start = cpu_seconds("self");
    let start = Instant::now();
    let samples: Vec<Sample> = std::thread::scope(|scope| {
        let handles: Vec<_> =
            (0..threads).map(|_| scope.spawn(|| floor_thread(&covers, &image, &next, s.requests))).collect();
        handles.into_iter().filter_map(|h| h.join().ok()).flatten().collect()
    });
    let seconds = secs(start);
    let own_cpu_s = cpu_seconds("self").zip(cpu_start).map(|(end, start)| end - start);
    if samples.len() != s.requests {
        return Err("a floor thread panicked".into());
    }
    Ok(Report {
        mode: "floor".into(),
        policy: "floor (in-process)".into(),
        clients: threads,
        image_bytes: image.len(),
        requests: s.requests,
        samples,
        seconds,
        own_cpu_s,
        ..Report::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_every_request_once() {
        let ranges: Vec<Range<usize>> = (0..3).map(|k| share(10, 3, k)).collect();
        assert_eq!(ranges, vec![0..4, 4..7, 7..10]);
        assert_eq!(share(2, 3, 2), 2..2);
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }
}
