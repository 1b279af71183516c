//! The network lab for `tests/lab_e2e.rs`: three server hosts, two client hosts and a probe
//! host, each a Linux network namespace with its own IPv4 address, joined by veth pairs to one
//! bridge that lives in a namespace of its own. Every link is shaped to 100 Mbit/s (tbf, both
//! directions); nftables on the bridge drops single frames (so single IP fragments) at a chosen
//! rate and cuts chosen pairs of hosts. The real `server` and `client` binaries run inside the
//! namespaces (`ip netns exec`); the test process talks to the servers through a socket opened
//! in the probe namespace, which is exempt from loss and cuts.
//!
//! Everything is named `iclab-<pid>-<tag>-…`; dropping the [`Lab`] kills what runs in its
//! namespaces and deletes them (the bridge, veths, qdiscs and nft table go with them), and a
//! new lab first removes leftovers of dead test processes. Labs run one at a time (a mutex):
//! the machine has two cores and the big-photo cases need both.

use client::cloud::Cloud;
use client::launch::sibling_binary;
use common::config::{ClusterConfig, ServerEntry, ServerId};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The prefix of everything a lab creates.
pub const PREFIX: &str = "iclab-";
const TABLE: &str = "imgcloud_lab";
const PROBE: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 30);

/// The hosts of a lab: short name and address (`t` is the test process's probe).
pub const HOSTS: [(&str, Ipv4Addr); 6] = [
    ("s1", Ipv4Addr::new(10, 77, 0, 11)),
    ("s2", Ipv4Addr::new(10, 77, 0, 12)),
    ("s3", Ipv4Addr::new(10, 77, 0, 13)),
    ("c1", Ipv4Addr::new(10, 77, 0, 21)),
    ("c2", Ipv4Addr::new(10, 77, 0, 22)),
    ("t", PROBE),
];

/// The address of host `name` (`s1`, `c2`, …).
pub fn ip_of(name: &str) -> Ipv4Addr {
    HOSTS.iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("no lab host {name}")).1
}

/// Runs a command; its stdout, or an error naming the command, its status and its stderr.
pub fn run(args: &[&str], input: Option<&str>) -> Result<String, String> {
    let mut cmd = Command::new(args[0]);
    cmd.args(&args[1..]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("lab command `{}` cannot start: {e}", args.join(" ")))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input.unwrap_or("").as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| format!("lab command `{}`: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let mut msg = format!("lab command FAILED ({}): `{}`", out.status, args.join(" "));
        if let Some(text) = input {
            msg.push_str(&format!("\n  with input:\n{text}"));
        }
        msg.push_str(&format!("\n  stderr: {}", String::from_utf8_lossy(&out.stderr).trim()));
        Err(msg)
    }
}

/// Like [`run`], but a failure is printed and panics (lab setup cannot go on without it).
fn must(args: &[&str]) -> String {
    run(args, None).unwrap_or_else(|e| {
        eprintln!("{e}");
        panic!("{e}")
    })
}

/// Whether the lab can run: `false` (after printing "lab skipped") when IMGCLOUD_SKIP_LAB=1;
/// a panic naming what is missing when not root or `ip`, `tc` or `nft` is not installed.
pub fn available() -> bool {
    if std::env::var("IMGCLOUD_SKIP_LAB").is_ok_and(|v| v == "1") {
        println!("lab skipped (IMGCLOUD_SKIP_LAB=1)");
        return false;
    }
    let mut missing = vec![];
    let uid = run(&["id", "-u"], None).unwrap_or_default();
    if uid.trim() != "0" {
        missing.push(format!("root (running as uid {:?})", uid.trim()));
    }
    for (tool, pkg) in [("ip", "iproute2"), ("tc", "iproute2"), ("nft", "nftables")] {
        if run(&["sh", "-c", &format!("command -v {tool}")], None).is_err() {
            missing.push(format!("`{tool}` (apt-get install -y {pkg})"));
        }
    }
    assert!(missing.is_empty(), "the network lab needs {}; set IMGCLOUD_SKIP_LAB=1 to skip it", missing.join(", "));
    true
}

/// Every network namespace whose name starts with `prefix`.
pub fn namespaces(prefix: &str) -> Vec<String> {
    let list = run(&["ip", "netns", "list"], None).unwrap_or_default();
    list.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(String::from)
        .collect()
}

/// Kills what runs in namespace `ns` (only lab processes run there) and deletes it.
fn remove_namespace(ns: &str) {
    let pids = run(&["ip", "netns", "pids", ns], None).unwrap_or_default();
    for pid in pids.split_whitespace() {
        let _ = run(&["kill", "-KILL", pid], None);
    }
    if let Err(e) = run(&["ip", "netns", "del", ns], None) {
        eprintln!("{e}");
    }
}

/// Removes namespaces left by lab runs whose process is gone, and any of `own` (this run's prefix).
fn remove_leftovers(own: &str) {
    for ns in namespaces(PREFIX) {
        let pid = ns[PREFIX.len()..].split('-').next().unwrap_or("");
        let dead = pid.is_empty() || !Path::new(&format!("/proc/{pid}")).exists();
        if dead || ns.starts_with(own) {
            eprintln!("lab: removing leftover namespace {ns}");
            remove_namespace(&ns);
        }
    }
}

/// `setns(2)` from the C library std already links.
mod ffi {
    use std::os::raw::c_int;
    extern "C" {
        pub fn setns(fd: c_int, nstype: c_int) -> c_int;
    }
    pub const CLONE_NEWNET: c_int = 0x4000_0000;
}

/// A built lab: namespaces, bridge, shaping, an empty loss rule and no cuts.
pub struct Lab {
    /// `iclab-<pid>-<tag>`: the prefix of this lab's namespaces.
    pub name: String,
    /// The test's folder (config, data, logs).
    pub dir: PathBuf,
    /// The cluster config written to `dir/cluster.json`.
    pub cfg: ClusterConfig,
    /// Where the servers' config is (with the cluster key in it, as on three machines).
    pub config_path: PathBuf,
    /// Where the clients' config is: the same without the key.
    pub client_config_path: PathBuf,
    /// When this lab got its turn (after waiting for any other lab of this process).
    pub since: Instant,
    /// Keep `dir` (logs, data) when dropped; it is also kept when dropped by a panic.
    pub keep: bool,
    servers: BTreeMap<ServerId, Child>,
    operator: BTreeMap<ServerId, ChildStdin>,
    others: Vec<Child>,
    _serial: MutexGuard<'static, ()>,
}

impl Lab {
    /// Builds the lab `tag` (waiting for any other lab of this process to finish first).
    pub fn new(tag: &str) -> Lab {
        static SERIAL: Mutex<()> = Mutex::new(());
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        super::ensure_built();
        let since = Instant::now();
        let name = format!("{PREFIX}{}-{tag}", std::process::id());
        remove_leftovers(&name);
        let dir = super::test_dir(&format!("lab-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("lab folder");
        let mut lab = Lab {
            name,
            config_path: dir.join("cluster.json"),
            client_config_path: dir.join("client.json"),
            since,
            keep: false,
            dir,
            cfg: ClusterConfig::with_servers(vec![]),
            servers: BTreeMap::new(),
            operator: BTreeMap::new(),
            others: vec![],
            _serial: serial,
        };
        lab.build_network();
        lab.write_config();
        lab
    }

    /// The namespace of host `host` (`br` is the bridge's).
    pub fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.name)
    }

    fn build_network(&self) {
        let br = self.ns("br");
        must(&["ip", "netns", "add", &br]);
        must(&["ip", "-n", &br, "link", "set", "lo", "up"]);
        must(&["ip", "-n", &br, "link", "add", "br0", "type", "bridge"]);
        must(&["ip", "-n", &br, "link", "set", "br0", "up"]);
        // Bridged frames must reach nftables' bridge family one by one, not defragmented by
        // the IPv4 hooks br_netfilter would call.
        for key in ["iptables", "ip6tables", "arptables"] {
            let knob = format!("net.bridge.bridge-nf-call-{key}=0");
            if let Err(e) = run(&["ip", "netns", "exec", &br, "sysctl", "-qw", &knob], None) {
                eprintln!("{e}");
            }
        }
        for (host, ip) in HOSTS {
            let ns = self.ns(host);
            let port = format!("p-{host}");
            must(&["ip", "netns", "add", &ns]);
            must(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
            must(&["ip", "-n", &br, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns]);
            must(&["ip", "-n", &br, "link", "set", &port, "master", "br0"]);
            must(&["ip", "-n", &br, "link", "set", &port, "up"]);
            must(&["ip", "-n", &ns, "addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
            must(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
            // One wire frame per packet, also for TCP: the loss rule then sees what a radio
            // would (no 64 KB segmentation-offload super-packets crossing the bridge whole).
            must(&["ip", "-n", &ns, "link", "set", "eth0", "gso_max_segs", "1"]);
            must(&["ip", "-n", &br, "link", "set", &port, "gso_max_segs", "1"]);
            // 100 Mbit/s each way: the host's egress and the bridge port's egress towards it.
            for (n, dev) in [(&ns, "eth0"), (&br, port.as_str())] {
                let tbf = ["root", "tbf", "rate", "100mbit", "burst", "32kb", "latency", "50ms"];
                must(&[&["tc", "-n", n, "qdisc", "replace", "dev", dev][..], &tbf[..]].concat());
            }
        }
        let ruleset = format!(
            "table bridge {TABLE} {{\n  chain lab_cuts {{ }}\n  chain lab_loss {{ }}\n  chain lab_forward {{\n    \
             type filter hook forward priority 0; policy accept;\n    jump lab_cuts\n    \
             ether type ip ip saddr != {PROBE} ip daddr != {PROBE} jump lab_loss\n  }}\n}}\n"
        );
        self.nft(&ruleset);
    }

    fn nft(&self, script: &str) {
        run(&["ip", "netns", "exec", &self.ns("br"), "nft", "-f", "-"], Some(script)).unwrap_or_else(|e| {
            eprintln!("{e}");
            panic!("{e}")
        });
    }

    /// Shapes `host`'s link to `rate` (a `tc` rate such as `8mbit`) both ways, instead of the
    /// 100 Mbit/s it is built with.
    pub fn set_rate(&self, host: &str, rate: &str) {
        let port = format!("p-{host}");
        for (n, dev) in [(self.ns(host), "eth0"), (self.ns("br"), port.as_str())] {
            let tbf = ["root", "tbf", "rate", rate, "burst", "32kb", "latency", "50ms"];
            must(&[&["tc", "-n", n.as_str(), "qdisc", "replace", "dev", dev][..], &tbf[..]].concat());
        }
        println!("lab: {host}'s link shaped to {rate}");
    }

    /// Drops each IPv4 frame crossing the bridge (not the probe's) with probability
    /// `permille`/1000; 0 drops nothing.
    pub fn set_loss(&self, permille: u32) {
        let mut s = format!("flush chain bridge {TABLE} lab_loss\nadd rule bridge {TABLE} lab_loss counter\n");
        if permille > 0 {
            s.push_str(&format!("add rule bridge {TABLE} lab_loss numgen random mod 1000 < {permille} counter drop\n"));
        }
        self.nft(&s);
    }

    /// (frames seen, frames dropped) by the loss rule since the last [`Lab::set_loss`].
    pub fn dropped(&self) -> (u64, u64) {
        let args = ["ip", "netns", "exec", &self.ns("br"), "nft", "list", "chain", "bridge", TABLE, "lab_loss"];
        let out = run(&args, None).unwrap_or_default();
        let n = |i| out.split("packets ").nth(i).and_then(|r| r.split_whitespace().next()).and_then(|n| n.parse().ok());
        (n(1).unwrap_or(0), n(2).unwrap_or(0))
    }

    /// Cuts every host in `a` from every host in `b`, both ways.
    pub fn cut(&self, a: &[&str], b: &[&str]) {
        let mut s = String::new();
        for x in a {
            for y in b {
                for (p, q) in [(ip_of(x), ip_of(y)), (ip_of(y), ip_of(x))] {
                    s.push_str(&format!("add rule bridge {TABLE} lab_cuts ip saddr {p} ip daddr {q} drop\n"));
                }
            }
        }
        println!("lab: cut {a:?} from {b:?}");
        self.nft(&s);
    }

    /// Removes every cut.
    pub fn heal(&self) {
        println!("lab: healed every cut");
        self.nft(&format!("flush chain bridge {TABLE} lab_cuts\n"));
    }

    fn write_config(&mut self) {
        let servers = (1..=3u32)
            .map(|id| {
                let ip = ip_of(&format!("s{id}"));
                ServerEntry::new(id, SocketAddr::from((ip, 7100 + id as u16)), SocketAddr::from((ip, 7200 + id as u16)))
            })
            .collect();
        let mut cfg = ClusterConfig::with_servers(servers);
        cfg.data_dir = self.dir.join("data").to_string_lossy().into_owned();
        cfg.images_dir = std::fs::canonicalize("images").map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
        cfg.validate().expect("lab config");
        std::fs::write(&self.client_config_path, serde_json::to_string_pretty(&cfg).expect("json")).expect("config");
        // As the README's "On three machines" says: the key is created once (`server
        // --print-key`) and carried to every server in the config; no key file is left for a
        // server to find, and the clients' config has no key.
        let server = client::launch::sibling_binary("server").expect("server binary");
        let out = Command::new(server).arg("--print-key").arg("--config").arg(&self.client_config_path).output();
        let out = out.expect("server --print-key runs");
        assert!(out.status.success(), "server --print-key: {}", String::from_utf8_lossy(&out.stderr));
        let key = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(key.len(), 64, "--print-key printed {key:?}");
        std::fs::remove_file(cfg.cluster_key_path()).expect("the key file --print-key created");
        let mut v = serde_json::to_value(&cfg).expect("json");
        v["cluster_key"] = serde_json::Value::String(key);
        let with_key: ClusterConfig = serde_json::from_value(v).expect("config with cluster_key");
        std::fs::write(&self.config_path, serde_json::to_string_pretty(&with_key).expect("json")).expect("config");
        self.cfg = with_key;
    }

    /// A command that runs `bin` inside host `host`'s namespace.
    pub fn command(&self, host: &str, bin: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(host)]).arg(bin);
        c
    }

    /// Starts a helper process (e.g. iperf3) in `host`; killed with the lab.
    pub fn spawn(&mut self, host: &str, args: &[&str]) -> &mut Child {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(host)]).args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        self.others.push(c.spawn().unwrap_or_else(|e| panic!("cannot start {args:?} in {host}: {e}")));
        self.others.last_mut().expect("just pushed")
    }

    /// The log file of server `id`.
    pub fn log_path(&self, id: ServerId) -> PathBuf {
        self.dir.join(format!("server-{id}.log"))
    }

    /// Server `id`'s log so far.
    pub fn log(&self, id: ServerId) -> String {
        std::fs::read_to_string(self.log_path(id)).unwrap_or_default()
    }

    /// Starts server `id` on host `s<id>` (`ip netns exec` execs it: the child is the server).
    pub fn start_server(&mut self, id: ServerId) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path(id)).expect("log file");
        let bin = sibling_binary("server").expect("server binary");
        let mut child = self
            .command(&format!("s{id}"), &bin)
            .arg("--id")
            .arg(id.to_string())
            .arg("--config")
            .arg(&self.config_path)
            .stdin(Stdio::piped())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("server starts");
        if let Some(stdin) = child.stdin.take() {
            self.operator.insert(id, stdin);
        }
        self.servers.insert(id, child);
    }

    /// Starts the three servers and waits until each sees the others live.
    pub fn start_cluster(&mut self) {
        for id in 1..=3 {
            self.start_server(id);
        }
        self.wait_ready(Duration::from_secs(60));
    }

    /// SIGKILLs server `id`.
    pub fn kill_server(&mut self, id: ServerId) {
        self.operator.remove(&id);
        if let Some(mut c) = self.servers.remove(&id) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A cloud link opened from the probe namespace (its socket stays there, whichever
    /// thread uses it).
    pub fn probe(&self) -> Cloud {
        let path = format!("/run/netns/{}", self.ns("t"));
        let cfg = self.cfg.clone();
        std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            let f = std::fs::File::open(&path).unwrap_or_else(|e| panic!("cannot open {path}: {e}"));
            // SAFETY: a plain syscall on a valid descriptor; it changes only this thread.
            let rc = unsafe { ffi::setns(f.as_raw_fd(), ffi::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns({path}) failed: {}", std::io::Error::last_os_error());
            Cloud::connect(&cfg, None).expect("probe socket")
        })
        .join()
        .expect("probe thread")
    }

    /// Polls the servers' statuses (from the probe) until `done`, for at most `timeout`;
    /// the last statuses and whether `done` held. Prints what it waited for when it gives up.
    pub fn poll_status(
        &self,
        cloud: &mut Cloud,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut(&HashMap<ServerId, common::protocol::ServerStatus>) -> bool,
    ) -> (bool, HashMap<ServerId, common::protocol::ServerStatus>) {
        let deadline = Instant::now() + timeout;
        loop {
            let st = cloud.statuses(Duration::from_millis(300));
            if done(&st) {
                return (true, st);
            }
            if Instant::now() > deadline {
                eprintln!("lab: gave up after {timeout:?} waiting for {what}; {} servers answered", st.len());
                return (false, st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until every running server answers and sees every other running server live.
    pub fn wait_ready(&self, timeout: Duration) {
        let mut cloud = self.probe();
        let running: Vec<ServerId> = self.servers.keys().copied().collect();
        let (ok, st) = self.poll_status(&mut cloud, "every running server to see the others live", timeout, |st| {
            running.iter().all(|id| {
                st.get(id).is_some_and(|s| running.iter().all(|o| s.peers.iter().any(|p| p.id == *o && p.live)))
            })
        });
        assert!(ok, "lab cluster not ready after {timeout:?}: {st:?}");
    }

    /// The `users` of server `id`'s directory file (the replicated part; `clock` is local).
    pub fn directory_users(&self, id: ServerId) -> Option<serde_json::Value> {
        let path = Path::new(&self.cfg.data_dir).join(format!("server-{id}/directory.json"));
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
        v.get("users").cloned()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in self.servers.values_mut().chain(self.others.iter_mut()) {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in namespaces(&format!("{}-", self.name)) {
            remove_namespace(&ns);
        }
        let left = namespaces(&format!("{}-", self.name));
        if left.is_empty() {
            eprintln!("lab {}: removed every namespace, veth, qdisc and nft table", self.name);
        } else {
            eprintln!("lab {}: could NOT remove {left:?}", self.name);
        }
        if self.keep || std::thread::panicking() {
            eprintln!("lab {}: logs and data kept in {}", self.name, self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Bound on one small step of a lab test.
pub const SMALL: Duration = Duration::from_secs(60);

/// A 3840×2160 JPEG of fine texture, over 8 MB (as in `busy_e2e.rs`), made once.
pub fn big_photo() -> &'static [u8] {
    static PHOTO: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    PHOTO.get_or_init(|| {
        let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
        let img = image::RgbImage::from_fn(3840, 2160, |x, y| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let n = (s & 0x1f) as u8;
            image::Rgb([
                ((x / 8) as u8).wrapping_add(n),
                ((y / 8) as u8).wrapping_add(n >> 1),
                (((x + y) / 16) as u8) ^ n,
            ])
        });
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 97).encode_image(&img).expect("jpeg");
        assert!(out.len() > 8_000_000, "over 8 MB: {}", out.len());
        out
    })
}

/// Writes the photo into the lab folder as `photo.jpg`.
pub fn photo_file(lab: &Lab) -> PathBuf {
    let path = lab.dir.join("photo.jpg");
    std::fs::write(&path, big_photo()).expect("photo written");
    path
}

pub fn signed_in(c: &mut LabClient) {
    let line = c.result(SMALL).unwrap_or_else(|| panic!("{}: no sign-in line within {SMALL:?}", c.name));
    assert!(line.starts_with("ok: signed in"), "{}: {line}", c.name);
}

/// alice's stego file of `id` opened with her own key: the hidden image.
pub fn own_hidden(lab: &Lab, id: &str) -> Vec<u8> {
    let stego = std::fs::read(lab.dir.join(format!("client-alice/images/{id}.png"))).expect("stego file kept");
    let ident: serde_json::Value =
        serde_json::from_slice(&std::fs::read(lab.dir.join("client-alice/identity.json")).expect("identity")).unwrap();
    let secret = common::auth::secret_bytes(ident["secret"].as_str().expect("secret"));
    let own = common::crypto::derive(&secret, common::crypto::Purpose::Own);
    let hidden = common::stego::reveal(&stego).expect("reveal");
    common::crypto::open(&own, &common::auth::own_image_aad("alice"), &hidden).expect("opens")
}

/// A client process in a lab host, driven through its stdin (like `ClientProc`).
pub struct LabClient {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    /// Every line it printed so far.
    pub seen: Vec<String>,
    /// Its user name.
    pub name: String,
}

impl LabClient {
    /// Starts `client --name NAME` in host `host`, data in the lab folder, stderr in a log.
    pub fn start(lab: &Lab, host: &str, name: &str) -> LabClient {
        let bin = sibling_binary("client").expect("client binary");
        let log = std::fs::File::create(lab.dir.join(format!("client-{name}.log"))).expect("client log");
        let mut child = lab
            .command(host, &bin)
            .args(["--name", name, "--config"])
            .arg(&lab.client_config_path)
            .arg("--data")
            .arg(lab.dir.join(format!("client-{name}")))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("client starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        LabClient { stdin: child.stdin.take(), child, lines: rx, seen: vec![], name: name.into() }
    }

    /// Sends one command line.
    pub fn send(&mut self, cmd: &str) {
        if let Some(s) = self.stdin.as_mut() {
            let _ = writeln!(s, "{cmd}").and_then(|_| s.flush());
        }
    }

    /// The next `ok:`/`error:` line within `timeout` (other lines go to `seen`).
    pub fn result(&mut self, timeout: Duration) -> Option<String> {
        self.next_matching(timeout, |l| l.starts_with("ok:") || l.starts_with("error:"))
    }

    /// A line containing `what`, seen before or arriving within `timeout`.
    pub fn wait_for(&mut self, what: &str, timeout: Duration) -> Option<String> {
        if let Some(l) = self.seen.iter().find(|l| l.contains(what)) {
            return Some(l.clone());
        }
        self.next_matching(timeout, |l| l.contains(what))
    }

    fn next_matching(&mut self, timeout: Duration, hit: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let line = self.lines.recv_timeout(left).ok()?;
            self.seen.push(line.clone());
            if hit(&line) {
                return Some(line);
            }
        }
    }

    /// Runs `cmd` and returns its result line, or why there is none.
    pub fn try_run(&mut self, cmd: &str, timeout: Duration) -> Result<String, String> {
        self.send(cmd);
        match self.result(timeout) {
            Some(l) if l.starts_with("ok:") => Ok(l),
            Some(l) => Err(format!("{}> {cmd} -> {l}", self.name)),
            None => Err(format!("{}> {cmd}: no ok:/error: line within {timeout:?}", self.name)),
        }
    }

    /// The last `n` lines it printed.
    pub fn tail(&self, n: usize) -> Vec<String> {
        self.seen.iter().rev().take(n).rev().cloned().collect()
    }

    /// Closes stdin (sign out) and waits a little for the exit.
    pub fn finish(mut self) {
        self.stdin.take();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for LabClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
