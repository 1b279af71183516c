//! The cluster on the projector (`status --web ADDR`): a page with one card per server — up or
//! DOWN, its load as a bar (999: failed), the next winner marked, requests won per second over
//! the last minute as a sparkline with the seconds it was down shaded, its online users — and
//! buttons for the operator's commands. A poller asks every server for its status each second
//! and keeps the last minute ([`Board`], socket-free); the page polls `GET /api/state` (JSON)
//! each second; the buttons `POST /api/op` with `{"server": ID or null for all, "command":
//! "down 10"}`, sent to the servers under the cluster key (kill and restart: through run.sh's
//! run folder).

use super::http::{Request, Response};
use crate::cloud::Cloud;
use crate::operator::{Action, Operator};
use crate::rundir::RunDir;
use crate::status::{rows, Row};
use common::config::{ClusterConfig, ServerId};
use common::protocol::ServerStatus;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Seconds of history on each card.
pub const WINDOW: usize = 60;

/// The page: HTML with inline CSS and JavaScript, nothing fetched from elsewhere.
const PAGE: &str = include_str!("dashboard.html");

/// One second of one server's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Second {
    /// Requests it won in that second.
    pub wins: u64,
    /// It did not answer (down or dead).
    pub down: bool,
}

/// One server's last minute.
#[derive(Debug, Default)]
struct Track {
    last_handled: Option<u64>,
    seconds: VecDeque<Second>,
}

impl Track {
    fn record(&mut self, answer: Option<&ServerStatus>) {
        let second = match answer.filter(|s| !s.down) {
            Some(st) => {
                // Users' requests only: the background ones (sign-ins, inbox pulls) are apart.
                let users = st.handled.saturating_sub(st.background);
                let wins = match self.last_handled {
                    Some(prev) if users >= prev => users - prev,
                    Some(_) => users, // restarted: its count started again
                    None => 0,        // nothing to compare with yet
                };
                self.last_handled = Some(users);
                Second { wins, down: false }
            }
            None => Second { wins: 0, down: true },
        };
        self.seconds.push_back(second);
        while self.seconds.len() > WINDOW {
            self.seconds.pop_front();
        }
    }
}

/// One server's card, as the page gets it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Card {
    /// Server id.
    pub id: ServerId,
    /// Answered and not down.
    pub up: bool,
    /// Its load: its own when up, else the highest the others announce for it.
    pub load: Option<u32>,
    /// Load 999: counted failed.
    pub failed: bool,
    /// Would win the next request.
    pub next_winner: bool,
    /// Requests won in the last 10 s, and since it started.
    pub recent_wins: Option<u64>,
    /// Requests won since it (last) started.
    pub handled: Option<u64>,
    /// Online users in its directory.
    pub online: Vec<String>,
    /// The last minute, oldest first.
    pub history: Vec<Second>,
    /// Its process, when started by run.sh and running.
    pub pid: Option<u32>,
    /// run.sh can start it again.
    pub restartable: bool,
}

/// The whole page's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct View {
    /// When the servers were last asked (local time).
    pub at: String,
    /// The config file.
    pub config: String,
    /// Servers up.
    pub up: usize,
    /// Everyone online, over all servers.
    pub online: Vec<String>,
    /// The cards.
    pub servers: Vec<Card>,
    /// Seconds of history.
    pub window: usize,
    /// Why operator commands cannot be sent from here (no cluster key), if so.
    pub no_operator: Option<String>,
    /// Kill and restart are possible (a run folder was given).
    pub run_dir: bool,
    /// The failure simulation as last switched from this page.
    pub simulate: Option<String>,
    /// Servers that see frames with a bad tag (another cluster key): "server N: addresses".
    pub key_mismatch: Vec<String>,
}

/// The last minute of the cluster, from the servers' answers (socket-free).
#[derive(Debug, Default)]
pub struct Board {
    tracks: BTreeMap<ServerId, Track>,
    rows: Vec<Row>,
    others_load: HashMap<ServerId, u32>,
    at: String,
    simulate: Option<String>,
}

impl Board {
    /// Records one round of answers (`at`: the time to show).
    pub fn record(&mut self, cfg: &ClusterConfig, answers: &HashMap<ServerId, ServerStatus>, at: String) {
        self.rows = rows(cfg, answers);
        self.others_load.clear();
        for st in answers.values().filter(|s| !s.down) {
            for p in st.peers.iter().filter(|p| p.id != st.id) {
                let load = if p.live { p.load } else { 999 };
                let l = self.others_load.entry(p.id).or_insert(0);
                *l = (*l).max(load);
            }
        }
        for id in cfg.ids() {
            self.tracks.entry(id).or_default().record(answers.get(&id));
        }
        self.at = at;
    }

    /// The page's state (`run`: run.sh's run folder, if known).
    pub fn view(&self, config: &str, run: Option<&RunDir>, no_operator: Option<String>) -> View {
        let servers: Vec<Card> = self
            .rows
            .iter()
            .map(|r| {
                let load = if r.up { r.load } else { self.others_load.get(&r.id).copied() };
                Card {
                    id: r.id,
                    up: r.up,
                    load,
                    failed: load.is_some_and(|l| l >= 999),
                    next_winner: r.next_winner,
                    recent_wins: r.recent_wins,
                    handled: r.handled,
                    online: r.online.clone(),
                    history: self.tracks.get(&r.id).map(|t| t.seconds.iter().copied().collect()).unwrap_or_default(),
                    pid: run.and_then(|d| d.pid(r.id)),
                    restartable: run.is_some_and(|d| d.supervised(r.id)),
                }
            })
            .collect();
        let online: BTreeSet<String> = self.rows.iter().flat_map(|r| r.online.iter().cloned()).collect();
        View {
            at: self.at.clone(),
            config: config.to_string(),
            up: self.rows.iter().filter(|r| r.up).count(),
            online: online.into_iter().collect(),
            servers,
            window: WINDOW,
            no_operator,
            run_dir: run.is_some(),
            simulate: self.simulate.clone(),
            key_mismatch: self
                .rows
                .iter()
                .filter(|r| !r.key_mismatch.is_empty())
                .map(|r| format!("server {}: {}", r.id, r.key_mismatch.join(", ")))
                .collect(),
        }
    }
}

/// What the buttons send.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OpRequest {
    /// One server, or every server when absent or null.
    #[serde(default)]
    server: Option<ServerId>,
    /// `down 10`, `up`, `simulate on`, `kill`, ...
    command: String,
}

/// One server's answer to a button.
#[derive(Debug, Serialize)]
struct OpResult {
    server: ServerId,
    ok: bool,
    text: String,
}

/// The dashboard: the board, the operator and the routes.
pub struct Dashboard {
    cfg: ClusterConfig,
    config_name: String,
    board: Mutex<Board>,
    operator: Result<Operator, String>,
    run: Option<RunDir>,
}

impl Dashboard {
    /// The dashboard of `cfg` (read from `config_name`); `run`: run.sh's run folder, for kill
    /// and restart. Without the cluster key it shows the cluster but cannot command it.
    pub fn new(cfg: &ClusterConfig, config_name: &str, run: Option<RunDir>) -> Dashboard {
        Dashboard {
            cfg: cfg.clone(),
            config_name: config_name.to_string(),
            board: Mutex::new(Board::default()),
            operator: Operator::new(cfg),
            run,
        }
    }

    /// Why operator commands cannot be sent from here, if so.
    pub fn no_operator(&self) -> Option<String> {
        self.operator.as_ref().err().cloned()
    }

    /// Asks every server for its status every `every` (waiting `wait` for the answers), for ever.
    pub fn poll(self: Arc<Self>, every: Duration, wait: Duration) -> Result<(), String> {
        let mut cloud = Cloud::connect(&self.cfg, None)?;
        loop {
            let started = Instant::now();
            let answers = cloud.statuses(wait);
            let at = chrono::Local::now().format("%H:%M:%S").to_string();
            self.board.lock().record(&self.cfg, &answers, at);
            std::thread::sleep(every.saturating_sub(started.elapsed()));
        }
    }

    /// The page's state now.
    pub fn view(&self) -> View {
        self.board.lock().view(&self.config_name, self.run.as_ref(), self.no_operator())
    }

    /// Answers a request that carried the token.
    pub fn handle(&self, req: &Request) -> Response {
        match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/") => self.page(),
            ("GET", "/api/state") => Response::json(200, &self.view()),
            ("POST", "/api/op") => self.op(&req.body),
            (_, "/" | "/api/state" | "/api/op") => Response::text(405, "method not allowed"),
            _ => Response::text(404, "not found"),
        }
    }

    fn page(&self) -> Response {
        super::server::html_page(PAGE, &self.view(), "data:")
    }

    fn op(&self, body: &[u8]) -> Response {
        let error = |status: u16, e: String| Response::json(status, &serde_json::json!({ "error": e }));
        let req: OpRequest = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => return error(400, format!("bad JSON: {e}")),
        };
        let words: Vec<&str> = req.command.split_whitespace().collect();
        let action = match Action::parse(&words) {
            Ok(a) => a,
            Err(e) => return error(400, e),
        };
        let ids = match req.server {
            None => self.cfg.ids(),
            Some(id) if self.cfg.server(id).is_some() => vec![id],
            Some(id) => return error(400, format!("no server {id} (ids: {:?})", self.cfg.ids())),
        };
        let results: Vec<OpResult> = ids
            .iter()
            .map(|&server| match action.run(server, &self.operator, self.run.as_ref(), Duration::from_secs(3)) {
                Ok(text) => OpResult { server, ok: true, text },
                Err(text) => OpResult { server, ok: false, text },
            })
            .collect();
        let ok = results.iter().all(|r| r.ok);
        if let (Action::Server(common::operator::OperatorCmd::Simulate { on }), true) = (action, ok) {
            let at = chrono::Local::now().format("%H:%M:%S");
            self.board.lock().simulate = Some(format!("{} since {at}", if on { "on" } else { "off" }));
        }
        Response::json(if ok { 200 } else { 502 }, &serde_json::json!({ "ok": ok, "results": results }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::server::INITIAL;
    use common::config::ServerEntry;
    use common::protocol::PeerView;

    fn cluster() -> ClusterConfig {
        let addr = |port: u16| std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let mut cfg = ClusterConfig::with_servers(
            (1..=3).map(|i| ServerEntry::new(i, addr(9 + i as u16), addr(19 + i as u16))).collect(),
        );
        cfg.cluster_key_file = Some("/nonexistent/imgcloud-test.key".into());
        cfg
    }

    fn status(id: ServerId, handled: u64, peers: &[(ServerId, u32, bool)]) -> ServerStatus {
        ServerStatus {
            id,
            down: false,
            peers: peers.iter().map(|&(id, load, live)| PeerView { id, load, live }).collect(),
            handled,
            handled_by_kind: vec![],
            users: 1,
            online: vec!["alice".into()],
            tracked_requests: 0,
            rss_kb: 0,
            recent_wins: 0,
            next_winner: Some(1),
            elections: vec![],
            key_mismatch: vec![],
            background: 0,
        }
    }

    #[test]
    fn the_board_counts_wins_per_second_and_shades_the_silent_seconds() {
        let cfg = cluster();
        let mut b = Board::default();
        let peers = [(1, 12, true), (2, 30, true), (3, 999, false)];
        for (i, handled) in [5u64, 8, 8, 2].into_iter().enumerate() {
            let mut answers = HashMap::from([(1, status(1, handled, &peers)), (2, status(2, 0, &peers))]);
            if i == 3 {
                answers.remove(&2);
            }
            b.record(&cfg, &answers, format!("t{i}"));
        }
        let v = b.view("c.json", None, None);
        let one = &v.servers[0];
        assert!(one.up && one.next_winner && !one.failed && one.load == Some(12));
        let wins: Vec<u64> = one.history.iter().map(|s| s.wins).collect();
        assert_eq!(wins, vec![0, 3, 0, 2], "a smaller count is a restart: counted from 0");
        assert_eq!(v.servers[1].history.iter().filter(|s| s.down).count(), 1);
        let three = &v.servers[2];
        assert!(!three.up && three.failed && three.load == Some(999), "{three:?}");
        assert!(three.history.iter().all(|s| s.down));
        assert_eq!((v.up, v.online.clone(), v.at.as_str()), (1, vec!["alice".to_string()], "t3"));
        for _ in 0..100 {
            b.record(&cfg, &HashMap::new(), "later".into());
        }
        assert_eq!(b.view("c.json", None, None).servers[0].history.len(), WINDOW);
    }

    fn post(d: &Dashboard, body: &str) -> Response {
        let req = Request {
            method: "POST".into(),
            path: "/api/op".into(),
            body: body.as_bytes().to_vec(),
            ..Default::default()
        };
        d.handle(&req)
    }

    fn body(r: &Response) -> String {
        String::from_utf8_lossy(&r.body).into_owned()
    }

    #[test]
    fn bad_json_and_bad_commands_get_400_and_the_routes_are_few() {
        let d = Dashboard::new(&cluster(), "c.json", None);
        assert!(d.no_operator().is_some_and(|e| e.contains("cluster key")), "{:?}", d.no_operator());
        for bad in [
            "",
            "{",
            "[]",
            "null",
            "{\"command\": 5}",
            "{\"server\": 1}",
            "{\"server\": 1, \"command\": \"up\", \"x\": 1}",
            "\u{0}",
        ] {
            let r = post(&d, bad);
            assert_eq!(r.status, 400, "{bad:?}: {}", body(&r));
            assert!(body(&r).contains("bad JSON"), "{}", body(&r));
        }
        let r = post(&d, r#"{"server": 2, "command": "dwon 10"}"#);
        assert_eq!(r.status, 400);
        assert!(body(&r).contains("unknown command") && body(&r).contains("kill | restart"), "{}", body(&r));
        let r = post(&d, r#"{"server": 9, "command": "up"}"#);
        assert_eq!(r.status, 400);
        let r = post(&d, r#"{"server": 2, "command": "up"}"#);
        assert_eq!(r.status, 502, "no key, no command: {}", body(&r));
        assert!(body(&r).contains("cluster key"), "{}", body(&r));
        let r = post(&d, r#"{"server": 2, "command": "kill"}"#);
        assert!(r.status == 502 && body(&r).contains("started by ./run.sh"), "{}", body(&r));
        let get = |path: &str| d.handle(&Request { method: "GET".into(), path: path.into(), ..Default::default() });
        assert_eq!(get("/nothing").status, 404);
        assert_eq!(get("/api/op").status, 405);
        let state = get("/api/state");
        assert_eq!((state.status, state.content_type), (200, "application/json"));
        let page = get("/");
        assert!(body(&page).contains("<title>") && !body(&page).contains(INITIAL), "the state is in the page");
        assert!(page.headers.iter().any(|(k, v)| *k == "Content-Security-Policy" && v.contains("default-src 'none'")));
    }

    #[test]
    fn nothing_in_the_state_can_close_the_page_script() {
        let cfg = cluster();
        let mut b = Board::default();
        b.record(&cfg, &HashMap::new(), "</script><script>alert(1)</script>".into());
        let d = Dashboard {
            cfg: cfg.clone(),
            config_name: "c.json".into(),
            board: Mutex::new(b),
            operator: Err("no".into()),
            run: None,
        };
        let page = String::from_utf8_lossy(&d.page().body).into_owned();
        assert!(!page.contains("</script><script>alert"), "escaped");
        assert!(page.contains("\\u003c/script>"));
    }
}
