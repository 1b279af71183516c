//! The demo's scenario: each step says in plain words what happens, makes it happen with real
//! client processes and real servers, and checks what the clients printed and what the servers
//! answer to `status` (and their logs). A step that does not see what it should returns an
//! error saying what was expected and what was seen.

use crate::proc::{self, check_stop, pause, Client, Dashboard, COMMAND_WAIT};
use crate::say::{ColorMode, Say};
use crate::table;
use client::cloud::Cloud;
use client::launch::{sibling_binary, Cluster};
use client::status::rows;
use common::config::ServerId;
use common::protocol::{Election, PeerView, ServerStatus};

/// Load a server adds for each request it holds (as the servers announce it).
const WORK_WEIGHT: u32 = 10;
use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Steps of the scenario.
pub const STEPS: usize = 15;
/// How long a server stays down in the failure simulation step, ms.
const SIM_DOWN_MS: u64 = 3000;

/// The widest picture drawn, columns.
const PICTURE_COLS: usize = 48;

/// How long the demo waits for a notice, a server state or a sign-in.
const WAIT: Duration = Duration::from_secs(20);

/// What the demo was asked for.
pub struct Settings {
    /// Folder for the config, the servers' and clients' data and the logs.
    pub dir: PathBuf,
    /// Extra work per image on every server (makes the load visible).
    pub slow_ms: u64,
    /// Pause after each step.
    pub pace: Duration,
    /// The photo the users share.
    pub image: PathBuf,
    /// Cover images for the servers (None: the built-in cover).
    pub covers: Option<PathBuf>,
    /// When to colour (and draw pictures).
    pub color: ColorMode,
    /// Wait for Enter before each step happens.
    pub step: bool,
    /// Serve the dashboard on this address.
    pub web: Option<String>,
}

/// The running demo: the cluster, the clients, and a status connection.
pub struct Demo {
    s: Settings,
    cluster: Cluster,
    cloud: Cloud,
    client_bin: PathBuf,
    clients: BTreeMap<String, Client>,
    step: usize,
    original: Vec<u8>,
    say: Say,
    _dashboard: Option<Dashboard>,
}

fn expect(ok: bool, expected: &str, seen: &str) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!("expected: {expected}\n      seen:     {seen}"))
    }
}

/// Encryptions counted by a server.
fn encrypts(st: &ServerStatus) -> u64 {
    st.handled_by_kind.iter().find(|(k, _)| k == "encrypt").map_or(0, |(_, n)| *n)
}

/// The server named in `... by server N ...`.
fn server_of(line: &str) -> Option<ServerId> {
    line.split("by server ").nth(1)?.split_whitespace().next()?.parse().ok()
}

/// The image id in `ok: encrypted as ID by ...`.
fn image_of(line: &str) -> Option<String> {
    line.strip_prefix("ok: encrypted as ")?.split_whitespace().next().map(String::from)
}

/// The user names listed by `peers`.
fn names(output: &[String]) -> Vec<String> {
    output.iter().filter_map(|l| l.split_whitespace().next()).map(String::from).collect()
}

/// Starts the dashboard on the cluster, says its URL and, when stdin is a terminal, waits for
/// Enter so the class can open it before the story starts.
fn open_dashboard(cluster: &Cluster, addr: &str, say: &mut Say) -> Result<Dashboard, String> {
    // The page's operator buttons sign with the cluster key, read when it starts: create the
    // key file now (as `./run.sh key` does), before the servers would.
    let made = std::process::Command::new(sibling_binary("server")?)
        .arg("--config")
        .arg(&cluster.config_path)
        .arg("--print-key")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("cannot run server --print-key: {e}"))?;
    if !made.success() {
        return Err(format!("server --print-key failed ({made}): the dashboard's buttons would not work"));
    }
    let d = Dashboard::start(&sibling_binary("status")?, &cluster.config_path, addr, WAIT)?;
    say.story(&format!(
        "The dashboard of this cluster (open it in a browser; it lives as long as the demo): {}",
        d.url
    ));
    say.wait_start("the story starts")?;
    Ok(d)
}

fn load_text(p: &PeerView) -> String {
    if p.live {
        p.load.to_string()
    } else {
        "down".into()
    }
}

impl Demo {
    /// Writes the cluster's config on free ports under the demo folder.
    pub fn new(s: Settings) -> Result<Demo, String> {
        let original =
            std::fs::read(&s.image).map_err(|e| format!("cannot read the photo {}: {e}", s.image.display()))?;
        let covers = s.covers.clone();
        let cluster = Cluster::new(&s.dir, 3, |cfg| {
            // The failure simulation of step 14: each server down 3 s, then up 1 s before it
            // passes the turn on.
            cfg.simulate_down_ms = SIM_DOWN_MS;
            cfg.simulate_up_ms = 1000;
            if let Some(c) = covers {
                cfg.images_dir = c.to_string_lossy().into_owned();
            }
        })?;
        let cloud = Cloud::connect(&cluster.cfg, None)?;
        let listen = s.step || (s.web.is_some() && std::io::stdin().is_terminal());
        let mut say = Say::new(s.color, s.step, listen);
        let dashboard = match &s.web {
            Some(addr) => Some(open_dashboard(&cluster, addr, &mut say)?),
            None => None,
        };
        Ok(Demo {
            s,
            cluster,
            cloud,
            client_bin: sibling_binary("client")?,
            clients: BTreeMap::new(),
            step: 0,
            original,
            say,
            _dashboard: dashboard,
        })
    }

    /// Plays every step; the number of steps that passed.
    pub fn run(&mut self) -> Result<usize, String> {
        self.start_servers()?;
        self.sign_up()?;
        let id = self.encrypt()?;
        self.gallery(&id)?;
        self.request_approve(&id)?;
        self.views_run_out(&id)?;
        self.grant_online(&id)?;
        self.offline_grants(&id)?;
        let killed = self.kill_mid_request()?;
        self.join_while_down(killed)?;
        self.restart(killed)?;
        self.least_loaded()?;
        self.operator_down()?;
        self.failure_simulation()?;
        self.sign_out_all()?;
        Ok(self.step)
    }

    /// The current step number.
    pub fn step(&self) -> usize {
        self.step
    }

    fn title(&mut self, title: &str, story: &str) -> Result<(), String> {
        check_stop()?;
        self.step += 1;
        self.say.title(self.step, STEPS, title);
        self.say.story(story);
        self.say.wait_step(&format!("step {} happens", self.step))?;
        Ok(())
    }

    fn pass(&self, what: &str) -> Result<(), String> {
        self.say.pass(what);
        pause(self.s.pace)
    }

    fn image_arg(&self) -> String {
        self.s.image.display().to_string()
    }

    fn client(&mut self, who: &str) -> Result<&mut Client, String> {
        self.clients.get_mut(who).ok_or(format!("{who} is not running"))
    }

    /// Runs a client command and shows it with its result line.
    fn cmd(&mut self, who: &str, cmd: &str) -> Result<(String, Vec<String>), String> {
        let (line, out) = self.client(who)?.run(cmd)?;
        self.say.line(&format!("{who}> {cmd}"));
        for o in out.iter().take(3) {
            self.say.line(o);
        }
        self.say.line(&line);
        Ok((line, out))
    }

    /// A command that must succeed.
    fn ok(&mut self, who: &str, cmd: &str) -> Result<(String, Vec<String>), String> {
        let r = self.cmd(who, cmd)?;
        expect(r.0.starts_with("ok:"), &format!("`{cmd}` to succeed (an ok: line)"), &r.0)?;
        Ok(r)
    }

    /// Waits for a line of `who` containing `what`, and shows it.
    fn notice(&mut self, who: &str, what: &str) -> Result<String, String> {
        let c = self.client(who)?;
        match c.wait_for(what, WAIT) {
            Ok(l) => {
                self.say.line(&format!("{who}: {l}"));
                Ok(l)
            }
            Err(e) => {
                let last: Vec<&String> = c.seen.iter().rev().take(3).collect();
                Err(format!(
                    "expected: {who} prints a line containing {what:?}\n      seen:     {e}; last lines {last:?}"
                ))
            }
        }
    }

    /// Starts a client, which registers (first run) and signs in.
    fn join(&mut self, name: &str) -> Result<(), String> {
        let data = self.cluster.dir.join(format!("client-{name}"));
        let mut c = Client::start(&self.client_bin, &self.cluster.config_path, &data, name)?;
        let (line, _) = c.result(WAIT)?;
        self.say.line(&format!("$ client --name {name}"));
        self.say.line(&line);
        self.clients.insert(name.into(), c);
        expect(line.starts_with(&format!("ok: signed in as {name}")), &format!("ok: signed in as {name}"), &line)
    }

    /// Quits a client and waits for it to exit.
    fn quit(&mut self, name: &str) -> Result<(), String> {
        self.ok(name, "quit")?;
        if let Some(mut c) = self.clients.remove(name) {
            c.wait_exit(WAIT)?;
        }
        Ok(())
    }

    fn statuses(&mut self) -> HashMap<ServerId, ServerStatus> {
        self.cloud.statuses(Duration::from_millis(400))
    }

    /// Polls the servers' status until `done` holds; the last statuses either way.
    fn poll(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&HashMap<ServerId, ServerStatus>) -> bool,
    ) -> Result<(bool, HashMap<ServerId, ServerStatus>), String> {
        let deadline = Instant::now() + timeout;
        loop {
            check_stop()?;
            let st = self.statuses();
            if done(&st) {
                return Ok((true, st));
            }
            if Instant::now() >= deadline {
                return Ok((false, st));
            }
            std::thread::sleep(Duration::from_millis(40));
        }
    }

    fn print_table(&self, st: &HashMap<ServerId, ServerStatus>) {
        self.say.table(&table::lines(&rows(&self.cluster.cfg, st)));
    }

    /// Draws an image (only when colouring: on a terminal), under a caption.
    fn draw(&self, caption: &str, bytes: &[u8]) {
        if !self.say.color {
            return;
        }
        match common::stego::decode_image(bytes) {
            Ok(img) => {
                self.say.dim(&format!("{caption}:"));
                let cols = self.say.width().saturating_sub(8).min(PICTURE_COLS);
                self.say.picture(&common::preview::render_ansi(&img, cols as u32));
            }
            Err(e) => self.say.dim(&format!("({caption} cannot be drawn: {e})")),
        }
    }

    fn start_server(&mut self, id: ServerId) -> Result<(), String> {
        self.cluster.start(id)?;
        if let Some(pid) = self.cluster.pid(id) {
            proc::register(pid);
        }
        Ok(())
    }

    fn kill_server(&mut self, id: ServerId) {
        if let Some(pid) = self.cluster.pid(id) {
            self.cluster.kill(id);
            proc::unregister(pid);
        }
    }

    /// The server whose encryption count rose above `before`.
    fn wait_winner(&mut self, before: &HashMap<ServerId, u64>) -> Result<Option<ServerId>, String> {
        let (_, st) =
            self.poll(WAIT, |st| st.iter().any(|(id, s)| encrypts(s) > before.get(id).copied().unwrap_or(0)))?;
        Ok(st.iter().find(|(id, s)| encrypts(s) > before.get(id).copied().unwrap_or(0)).map(|(id, _)| *id))
    }

    /// Every running server's count of encryptions (waiting for each one's answer: a count
    /// missing now would look like a rise later).
    fn encrypt_counts(&mut self) -> Result<HashMap<ServerId, u64>, String> {
        let running = self.cluster.running();
        let (_, st) = self.poll(WAIT, |st| running.iter().all(|id| st.get(id).is_some_and(|s| !s.down)))?;
        Ok(st.iter().map(|(id, s)| (*id, encrypts(s))).collect())
    }

    fn start_servers(&mut self) -> Result<(), String> {
        self.title(
            "Three servers start",
            "Three server processes start on free local ports. Every second each one tells the others \
             its load; together they keep one directory of users, replicated and on disk.",
        )?;
        for id in self.cluster.cfg.ids() {
            self.cluster.set_args(id, vec!["--slow-ms".into(), self.s.slow_ms.to_string()]);
            self.start_server(id)?;
        }
        self.cluster.wait_ready(WAIT)?;
        let ids = self.cluster.cfg.ids();
        let (all_see_all, st) = self.poll(WAIT, |st| {
            ids.iter().all(|id| {
                st.get(id).is_some_and(|s| !s.down && ids.iter().all(|o| s.peers.iter().any(|p| p.id == *o && p.live)))
            })
        })?;
        self.print_table(&st);
        expect(all_see_all, "3 servers up, each seeing the others live", &format!("{} answered", st.len()))?;
        self.pass("3 of 3 servers answer, and each one sees the other two live")
    }

    fn sign_up(&mut self) -> Result<(), String> {
        self.title(
            "alice and bob join",
            "alice and bob start the client. The first time, it registers the name with the cloud \
             and keeps a secret; then it signs in: the directory records that they are \
             online and where their client listens.",
        )?;
        self.join("alice")?;
        self.join("bob")?;
        let (ok, st) = self.poll(WAIT, |st| st.len() == 3 && st.values().all(|s| s.online == ["alice", "bob"]))?;
        let seen: Vec<String> = st.values().map(|s| format!("server {}: {:?}", s.id, s.online)).collect();
        expect(ok, "every server lists alice and bob online", &seen.join(", "))?;
        self.pass("alice and bob are signed in, and all 3 servers list them online")
    }

    fn encrypt(&mut self) -> Result<String, String> {
        self.title(
            "alice hides a photo in a cover image",
            "alice seals her photo under her own key and asks the cloud to hide it inside an innocent \
             cover picture. The least-loaded server wins the election, receives the sealed photo, \
             checks it is alice's and an image, hides it and sends the PNG back; alice checks it \
             hides her exact bytes. (The servers run with --slow-ms: each image takes \
             them longer, so the load is easy to watch.)",
        )?;
        let before = self.encrypt_counts()?;
        let (line, _) = self.ok("alice", &format!("encrypt {}", self.image_arg()))?;
        let (Some(id), Some(server)) = (image_of(&line), server_of(&line)) else {
            return Err(format!("expected: ok: encrypted as ID by server N\n      seen:     {line}"));
        };
        let after = self.encrypt_counts()?;
        let rose: Vec<ServerId> =
            after.iter().filter(|(s, n)| **n > before.get(s).copied().unwrap_or(0)).map(|(s, _)| *s).collect();
        expect(rose == [server], &format!("only server {server} counts a new encryption"), &format!("{rose:?}"))?;
        self.pass(&format!("the photo is hidden as {id} by server {server}, the only server that counted the work"))?;
        Ok(id)
    }

    fn gallery(&mut self, id: &str) -> Result<(), String> {
        self.title(
            "bob looks at alice's gallery",
            "bob's client asks alice's client directly (peer to peer, not through the cloud) for \
             small previews of the images she shares.",
        )?;
        let (line, out) = self.ok("bob", "gallery alice")?;
        let listed = out.iter().find(|l| l.trim_start().starts_with(id));
        expect(line.contains("1 image in alice's gallery") && listed.is_some(), &format!("1 image, {id}"), &line)?;
        // bob's client draws it only on a terminal, and the demo reads its output: the caption
        // must give the photo's own size, and the demo draws the preview alice's client keeps.
        let kept = self.cluster.dir.join("client-alice").join("previews").join(format!("{id}.png"));
        let preview = std::fs::read(&kept).map_err(|e| format!("cannot read {}: {e}", kept.display()))?;
        let size = common::stego::decode_image(&self.original).map(|i| format!("{}×{}", i.width(), i.height()));
        let size = size.map_err(|e| format!("alice's photo does not decode: {e}"))?;
        let captioned = listed.is_some_and(|l| l.contains(&size));
        expect(captioned, &format!("the caption gives the photo's size, {size}"), &format!("{listed:?}"))?;
        self.draw("the preview bob received", &preview);
        self.pass(&format!("bob sees the preview of {id}, sent by alice's client"))
    }

    fn request_approve(&mut self, id: &str) -> Result<(), String> {
        self.title(
            "bob asks for the photo with 2 views; alice approves",
            "The request goes peer to peer. alice approves: the cloud issues a fresh key for this \
             share, her client re-seals the hidden photo under it and sends it to bob with his \
             rights (2 views) embedded in the file.",
        )?;
        self.ok("bob", &format!("request alice {id} 2"))?;
        let n = self.notice("alice", &format!("bob asks for {id} with 2 views"))?;
        let n = n.split("`approve ").nth(1).and_then(|r| r.split('`').next()).unwrap_or("1").to_string();
        let (line, _) = self.ok("alice", &format!("approve {n}"))?;
        expect(line.contains("sent to bob with 2 views"), "sent to bob with 2 views", &line)?;
        self.notice("bob", &format!("received {id} from alice with 2 views"))?;
        self.pass("bob holds the photo with 2 views")
    }

    fn views_run_out(&mut self, id: &str) -> Result<(), String> {
        self.title(
            "bob's views run out",
            "Each view asks the cloud, which counts it and hands bob's client the key for this one view; \
             the photo is shown from memory. After the second view only the innocent cover is left \
             to see, whatever bob's files say.",
        )?;
        for left in [1, 0] {
            let (line, _) = self.ok("bob", &format!("view {id}"))?;
            let want = format!("({} left)", client::usage::plural(left, "view"));
            expect(line.contains(&want), &want, &line)?;
            let same = client::viewing::revealed_is(&line, &self.original);
            expect(same, "the revealed image equals alice's photo byte for byte (its SHA-256)", &line)?;
            if left == 1 {
                self.draw("what bob saw: alice's photo (the SHA-256 his client reported is hers)", &self.original);
            }
        }
        let (line, _) = self.cmd("bob", &format!("view {id}"))?;
        expect(line.starts_with("error:") && line.contains("only the cover"), "error: no views left", &line)?;
        self.pass("two views showed alice's exact photo; the third was refused")
    }

    fn grant_online(&mut self, id: &str) -> Result<(), String> {
        self.title(
            "alice grants bob 3 more views while he is online",
            "The cloud counts the new number of views at once; bob's client is told too, so his copy \
             shows it.",
        )?;
        let (line, _) = self.ok("alice", &format!("grant bob {id} 3"))?;
        expect(line.contains("delivered to bob"), "delivered to bob", &line)?;
        self.notice("bob", &format!("alice set {id} to 3 views"))?;
        let (_, out) = self.ok("bob", "received")?;
        let three = out.iter().any(|l| l.contains(&format!("alice/{id}  3 views left")));
        expect(three, &format!("alice/{id} with 3 views left"), &format!("{out:?}"))?;
        self.pass("bob's copy now has 3 views")
    }

    fn offline_grants(&mut self, id: &str) -> Result<(), String> {
        self.title(
            "bob goes offline; alice changes his views twice; bob comes back",
            "bob quits. alice's grants hold in the cloud at once; the messages for bob's client \
             cannot reach him, so the cloud keeps them in the replicated directory. When bob signs \
             in again his client fetches them and applies them in order.",
        )?;
        self.quit("bob")?;
        let (_, out) = self.ok("alice", "peers")?;
        expect(!names(&out).contains(&"bob".to_string()), "bob is not online", &format!("{:?}", names(&out)))?;
        for views in [5, 4] {
            let (line, _) = self.ok("alice", &format!("grant bob {id} {views}"))?;
            expect(line.contains("queued for bob (offline)"), "queued for bob (offline)", &line)?;
        }
        self.join("bob")?;
        let five = self.notice("bob", &format!("alice set {id} to 5 views"))?;
        let four = self.notice("bob", &format!("alice set {id} to 4 views"))?;
        let seen = &self.client("bob")?.seen;
        let order = seen.iter().position(|l| *l == five) < seen.iter().position(|l| *l == four);
        expect(order, "the grant of 5 views applied before the grant of 4", "the other order")?;
        let (_, out) = self.ok("bob", "received")?;
        let four = out.iter().any(|l| l.contains(&format!("alice/{id}  4 views left")));
        expect(four, &format!("alice/{id} with 4 views left"), &format!("{out:?}"))?;
        self.pass("bob got both buffered grants, in order: his copy has 4 views")
    }

    fn kill_mid_request(&mut self) -> Result<ServerId, String> {
        self.title(
            "a server is killed in the middle of a request",
            "bob shares a photo too. While the winning server is still working on it we kill it \
             (SIGKILL: no goodbye). The others notice its silence, the next server in the ranking \
             takes the request over, and bob gets exactly one answer.",
        )?;
        let before = self.encrypt_counts()?;
        let cmd = format!("encrypt {}", self.image_arg());
        let bob = self.client("bob")?;
        bob.take_printed();
        let from = bob.seen.len();
        bob.send(&cmd)?;
        self.say.line(&format!("bob> {cmd}"));
        let Some(w) = self.wait_winner(&before)? else {
            return Err("expected: a server starts bob's encryption\n      seen:     none did".into());
        };
        self.say.line(&format!("(server {w} won it and is working on it: kill -9 server {w})"));
        self.kill_server(w);
        let (line, noticed, took) = self.takeover(w, from)?;
        self.say.line(&line);
        let by = server_of(&line);
        expect(
            line.starts_with("ok: encrypted as") && by.is_some_and(|b| b != w),
            &format!("ok: encrypted … by a server other than {w}"),
            &line,
        )?;
        let by = by.unwrap_or_default();
        let noticed = noticed.map_or("".into(), |n| format!("the others saw server {w} silent after {n:.1} s; "));
        self.say.line(&format!(
            "the takeover: bob's answer came {took:.1} s after the kill ({noticed}server {by} did the work again, \
             --slow-ms {} of it)",
            self.s.slow_ms
        ));
        let (_, st) = self.poll(WAIT, |st| st.len() == 2 && !st.contains_key(&w))?;
        self.print_table(&st);
        let (stats, _) = self.ok("bob", "stats")?;
        expect(stats.contains("handled_twice=0"), "handled_twice=0", &stats)?;
        self.pass(&format!(
            "bob's request completed on server {by} {took:.1} s after server {w} died; nothing was handled twice"
        ))?;
        Ok(w)
    }

    /// Waits for bob's answer (a result line after his line `from`) after server `w` was
    /// killed, watching the other servers meanwhile: the answer, seconds until every other
    /// server saw `w` silent (if seen first), and seconds until the answer.
    fn takeover(&mut self, w: ServerId, from: usize) -> Result<(String, Option<f64>, f64), String> {
        let killed = Instant::now();
        let mut noticed = None;
        loop {
            let bob = self.client("bob")?;
            bob.take_printed();
            if let Some(l) = bob.seen[from..].iter().find(|l| l.starts_with("ok:") || l.starts_with("error:")) {
                return Ok((l.clone(), noticed, killed.elapsed().as_secs_f64()));
            }
            if killed.elapsed() > COMMAND_WAIT {
                return Err(format!("bob printed no ok:/error: line within {} s", COMMAND_WAIT.as_secs()));
            }
            if noticed.is_none() {
                let st = self.statuses();
                if !st.is_empty() && st.values().all(|s| s.peers.iter().any(|p| p.id == w && !p.live)) {
                    noticed = Some(killed.elapsed().as_secs_f64());
                }
            } else {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    fn join_while_down(&mut self, down: ServerId) -> Result<(), String> {
        self.title(
            &format!("carol joins while server {down} is dead"),
            "Two of three servers are a majority: the cloud keeps working. carol registers; only the \
             two live servers record her.",
        )?;
        self.join("carol")?;
        let (ok, st) = self.poll(WAIT, |st| {
            st.len() == 2 && st.values().all(|s| s.users == 3 && s.online.iter().any(|u| u == "carol"))
        })?;
        let seen: Vec<String> = st.values().map(|s| format!("server {}: {} users", s.id, s.users)).collect();
        expect(ok && !st.contains_key(&down), "2 servers answer, each with 3 users", &seen.join(", "))?;
        self.pass(&format!("carol is in the directory of the 2 live servers; server {down} does not answer"))
    }

    fn restart(&mut self, id: ServerId) -> Result<(), String> {
        self.title(
            &format!("server {id} comes back"),
            "It reloads its directory from disk, which has never heard of carol. The others see it \
             return and push it the full directory.",
        )?;
        self.start_server(id)?;
        self.say.line(&format!(
            "demo> start server {id} again: the demo itself restarts it (by hand: ./run.sh ctl {id} restart, or the \
             dashboard's restart button)"
        ));
        let started = Instant::now();
        self.cluster.wait_ready(WAIT)?;
        let (ok, st) =
            self.poll(WAIT, |st| st.get(&id).is_some_and(|s| s.users == 3 && s.online.iter().any(|u| u == "carol")))?;
        self.say.line(&format!(
            "server {id} answers and knows carol {:.1} s after its start",
            started.elapsed().as_secs_f64()
        ));
        let seen = st.get(&id).map_or("no answer".into(), |s| format!("{} users, online {:?}", s.users, s.online));
        expect(ok, &format!("server {id} lists 3 users, carol online"), &seen)?;
        self.print_table(&st);
        let (other, log_line) = self.pushed_to(id)?;
        self.say.line(&format!("server {other}'s log: {log_line}"));
        self.pass(&format!(
            "server {id}, restarted by the demo, now knows carol: server {other} pushed it the directory"
        ))
    }

    /// A line of another server's log saying it pushed the directory to `id`.
    fn pushed_to(&self, id: ServerId) -> Result<(ServerId, String), String> {
        let what = format!("server {id} is back");
        for other in self.cluster.cfg.ids().into_iter().filter(|o| *o != id) {
            if let Some(l) = self.cluster.log(other).lines().rev().find(|l| l.contains(&what)) {
                return Ok((other, l.trim().to_string()));
            }
        }
        Err(format!("expected: a log line {what:?} … pushing the full directory\n      seen:     none"))
    }

    // Long on purpose: one narrated demo step, told in order.
    fn least_loaded(&mut self) -> Result<(), String> {
        self.title(
            "the election moves to the least-loaded server",
            "A server adds 10 to its load for each request it holds. alice, bob and carol each send \
             a photo, one right after the other: each request goes to the server that is least \
             loaded at that moment, so the three land on three different servers.",
        )?;
        let mut sent: Vec<(String, ServerId, usize)> = Vec::new();
        for who in ["alice", "bob", "carol"] {
            // The servers still working on an earlier photo (its sender has no answer yet) must
            // have announced that work before the next photo goes: wait until every server's
            // table shows it.
            let mut busy: Vec<ServerId> = Vec::new();
            for (sender, w, from) in &sent {
                let c = self.client(sender)?;
                c.take_printed();
                if !c.seen[*from..].iter().any(|l| l.starts_with("ok:") || l.starts_with("error:")) {
                    busy.push(*w);
                }
            }
            let announced = |st: &HashMap<ServerId, ServerStatus>| {
                st.len() == 3
                    && st
                        .values()
                        .all(|s| busy.iter().all(|b| s.peers.iter().any(|p| p.id == *b && p.load >= WORK_WEIGHT)))
            };
            let (ok, _) = self.poll(WAIT, announced)?;
            expect(
                ok,
                &format!("servers {busy:?}, each working on a photo, announce it in their load"),
                "not within 20 s",
            )?;
            let before = self.encrypt_counts()?;
            let cmd = format!("encrypt {}", self.image_arg());
            let from = self.client(who)?.seen.len();
            self.client(who)?.send(&cmd)?;
            let Some(w) = self.wait_winner(&before)? else {
                return Err(format!("expected: a server starts {who}'s encryption\n      seen:     none did"));
            };
            // How every server ranked this very request when it arrived, from their own records.
            let rankings = self.rankings_of_newest_encrypt(w);
            for (id, e) in &rankings {
                let table: Vec<String> = e.table.iter().map(|p| format!("{}:{}", p.id, load_text(p))).collect();
                self.say.line(&format!(
                    "server {id} ranked {who}'s request with loads {} → {:?}",
                    table.join(" "),
                    e.ranking
                ));
            }
            self.say.line(&format!("{who}> {cmd} → won by server {w}"));
            let agreed = rankings.windows(2).all(|p| p[0].1.table == p[1].1.table);
            let firsts: Vec<ServerId> = rankings.iter().filter_map(|(_, e)| e.ranking.first().copied()).collect();
            let what = if agreed {
                format!("{who}'s request won by the server first in the servers' common ranking, {firsts:?}")
            } else {
                format!(
                    "{who}'s request won by a server that ranked first for someone ({firsts:?}; the tables differed)"
                )
            };
            expect(!rankings.is_empty() && firsts.contains(&w), &what, &format!("server {w}"))?;
            if agreed && !busy.is_empty() {
                self.say.line(&format!("(servers {busy:?} held a photo each, so server {w} was the least loaded)"));
            }
            sent.push((who.to_string(), w, from));
        }
        for (who, w, _) in &sent {
            let (line, _) = self.client(who)?.result(COMMAND_WAIT)?;
            self.say.line(&format!("{who}: {line}"));
            expect(server_of(&line) == Some(*w), &format!("{who}'s photo encrypted by server {w}"), &line)?;
        }
        let mut distinct: Vec<ServerId> = sent.iter().map(|(_, w, _)| *w).collect();
        distinct.sort_unstable();
        distinct.dedup();
        let story = if distinct.len() == 3 {
            "three requests, three servers".to_string()
        } else {
            // A slow machine: an earlier photo was done before the next one left, and its server
            // was the least loaded again.
            format!("servers {distinct:?} (an earlier photo was done before the next one left)")
        };
        self.pass(&format!("each request went to the least-loaded server, as every server ranked it: {story}"))
    }

    /// How each server ranked the newest encryption that server `w` received.
    fn rankings_of_newest_encrypt(&mut self, w: ServerId) -> Vec<(ServerId, Election)> {
        let Ok((_, st)) = self.poll(WAIT, |st| st.contains_key(&w)) else { return vec![] };
        let Some(rid) = st.get(&w).and_then(|s| s.elections.iter().rev().find(|e| e.kind == "encrypt")).map(|e| e.rid)
        else {
            return vec![];
        };
        let mut out: Vec<(ServerId, Election)> = st
            .iter()
            .filter_map(|(id, s)| s.elections.iter().find(|e| e.rid == rid).map(|e| (*id, e.clone())))
            .collect();
        out.sort_by_key(|(id, _)| *id);
        out
    }

    fn operator_down(&mut self) -> Result<(), String> {
        let st = self.statuses();
        let x = rows(&self.cluster.cfg, &st).iter().find(|r| r.next_winner).map_or(1, |r| r.id);
        self.title(
            &format!("the operator takes server {x} down for 5 seconds"),
            "`down 5` on a server's console: it announces load 999 and ignores all traffic. carol \
             signs out meanwhile; the cloud keeps answering. When the server comes back up, the \
             others push it the directory again.",
        )?;
        self.cluster.operator(x, "down 5")?;
        self.say.line(&format!("server {x}> down 5"));
        let (ok, st) = self.poll(WAIT, |st| !st.contains_key(&x))?;
        expect(ok, &format!("server {x} stops answering"), &format!("{} servers answer", st.len()))?;
        self.print_table(&st);
        self.quit("carol")?;
        let (_, out) = self.ok("alice", "peers")?;
        expect(names(&out) == ["alice", "bob"], "alice and bob online", &format!("{:?}", names(&out)))?;
        let (ok, st) = self.poll(2 * WAIT, |st| st.get(&x).is_some_and(|s| s.online == ["alice", "bob"]))?;
        let seen = st.get(&x).map_or("no answer".into(), |s| format!("online {:?}", s.online));
        expect(ok, &format!("server {x} back up, listing alice and bob online (not carol)"), &seen)?;
        self.print_table(&st);
        let (other, log_line) = self.pushed_to(x)?;
        self.say.line(&format!("server {other}'s log: {log_line}"));
        self.pass(&format!("server {x} is back and knows carol signed out while it was down"))
    }

    fn failure_simulation(&mut self) -> Result<(), String> {
        self.title(
            "the classroom failure simulation",
            "The operator types `simulate on` at every server's console (what `--simulate-failures` \
             does from the start): the servers take turns going down. Each one announces 999, stays \
             down 3 seconds, comes back, is sent the directory, then passes the turn on. alice \
             keeps using the cloud all along. The demo asks the servers for their status and says \
             each change as it sees it.",
        )?;
        let ids = self.cluster.cfg.ids();
        for &id in &ids {
            self.cluster.operator(id, "simulate on")?;
        }
        self.say.line("every server> simulate on");
        let start = Instant::now();
        let mut up: BTreeMap<ServerId, bool> = ids.iter().map(|id| (*id, true)).collect();
        let (mut downs, mut backs): (Vec<ServerId>, Vec<ServerId>) = (vec![], vec![]);
        let mut answered = 0;
        // Two whole turns: two servers down, and back.
        while backs.len() < 2 && start.elapsed() < 3 * WAIT {
            let st = self.statuses();
            for &id in &ids {
                let now_up = st.get(&id).is_some_and(|s| !s.down);
                if up.insert(id, now_up) == Some(now_up) {
                    continue;
                }
                let what = if now_up {
                    backs.push(id);
                    "UP again (the others send it the directory)"
                } else {
                    downs.push(id);
                    "DOWN (its turn)"
                };
                let now = chrono::Local::now();
                let at = format!("{}.{}", now.format("%H:%M:%S"), now.timestamp_subsec_millis() / 100);
                self.say.line(&format!("{at} (+{:.1} s) server {id} {what}", start.elapsed().as_secs_f64()));
            }
            let alice = self.client("alice")?;
            alice.send("peers")?;
            let (line, _) = alice.result(COMMAND_WAIT)?;
            expect(line.starts_with("ok:"), "alice> peers answered", &line)?;
            answered += 1;
            std::thread::sleep(Duration::from_millis(200));
        }
        for &id in &ids {
            self.cluster.operator(id, "simulate off")?;
        }
        self.say.line(&format!("alice> peers, {answered} times meanwhile: every one answered"));
        self.say.line("every server> simulate off");
        let turns = |v: &[ServerId]| v.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(" then ");
        expect(
            downs.len() >= 2 && backs.len() >= 2,
            "two servers going down in turn, and coming back",
            &format!("down: servers {}; back: servers {}", turns(&downs), turns(&backs)),
        )?;
        self.pass(&format!(
            "servers {} went down in turn and came back; all {answered} of alice's requests meanwhile were answered",
            turns(&downs)
        ))
    }

    fn sign_out_all(&mut self) -> Result<(), String> {
        self.title("everyone signs out", "alice and bob quit; the directory shows nobody online.")?;
        self.quit("alice")?;
        self.quit("bob")?;
        let (ok, st) = self.poll(WAIT, |st| st.len() == 3 && st.values().all(|s| s.online.is_empty()))?;
        self.print_table(&st);
        expect(ok, "3 servers, nobody online", &format!("{} servers answered", st.len()))?;
        self.pass("all 3 servers list nobody online")
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        self.clients.clear();
        for id in self.cluster.running() {
            self.kill_server(id);
        }
    }
}
