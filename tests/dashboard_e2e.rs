//! The dashboard in a real browser: a cluster started by `./run.sh` (so the page can kill and
//! restart), `status --web` on a free port, and Debian's `chromium --headless --dump-dom`
//! loading the page (a virtual-time budget lets its polling script run). The page shows the
//! three servers up; a request without the token gets 403 and nothing else; switching the
//! failure simulation on from the page's endpoint shows two servers taking their turns; a
//! server SIGKILLed from the page's endpoint shows DOWN within 5 s, then failed (999), and comes
//! back up after a restart. And `./run.sh ctl` through run.sh: a typo exits non-zero with the
//! error, `status` prints the server's table. Without chromium the browser checks fail, unless
//! IMGCLOUD_SKIP_BROWSER=1 (then they are skipped, saying so).

mod support;

use client::cloud::Cloud;
use client::launch::{sibling_binary, Cluster};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::web::{dump_dom, http};
use support::{ensure_built, test_dir, wait_until};

/// The processes this test started; stopped (and checked gone) on drop, also on failure.
struct Procs {
    run_sh: Child,
    run_dir: PathBuf,
    dashboard: Option<Child>,
}

impl Drop for Procs {
    fn drop(&mut self) {
        if let Some(mut d) = self.dashboard.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
        // As Ctrl-C would: run.sh stops its servers and its restart loops.
        let _ = Command::new("kill").arg("-TERM").arg(self.run_sh.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline && matches!(self.run_sh.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(100));
        }
        if matches!(self.run_sh.try_wait(), Ok(Some(_))) {
            return;
        }
        // Whatever is left of a run.sh that did not stop is SIGKILLed by its pid files.
        for entry in std::fs::read_dir(&self.run_dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".pid") || name.ends_with(".supervisor") {
                if let Ok(pid) = std::fs::read_to_string(entry.path()) {
                    let _ = Command::new("kill").arg("-KILL").arg(pid.trim()).stderr(Stdio::null()).status();
                }
            }
        }
        let _ = self.run_sh.kill();
        let _ = self.run_sh.wait();
    }
}

/// Attribute `name` of server `id`'s card in `dom`.
fn card_attr(dom: &str, id: u32, name: &str) -> Option<String> {
    let start = dom.find(&format!("id=\"server-{id}\""))?;
    let tag = &dom[start..start + dom[start..].find('>')?];
    let at = tag.find(&format!("{name}=\""))? + name.len() + 2;
    Some(tag[at..at + tag[at..].find('"')?].to_string())
}

/// The text of server `id`'s card (tags and all).
fn card(dom: &str, id: u32) -> &str {
    let start = dom.find(&format!("id=\"server-{id}\"")).unwrap_or(dom.len());
    let end = dom[start..].find("</section>").map_or(dom.len(), |e| start + e);
    &dom[start..end]
}

fn state(addr: SocketAddr, token: &str) -> serde_json::Value {
    let (status, body) = http(addr, "GET", &format!("/api/state?t={token}"), "");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("state JSON")
}

fn run_sh(config: &Path, run_dir: &Path) -> Command {
    let mut cmd = Command::new("./run.sh");
    cmd.env("CONFIG", config).env("RUN_DIR", run_dir);
    cmd
}

// Long on purpose: one story in order (start, look, simulate, kill, restart), each step on the
// state the one before left.
#[test]
fn the_dashboard_in_a_browser_follows_the_cluster_and_commands_it() {
    ensure_built();
    let dir = test_dir("dashboard");
    let c = Cluster::new(&dir, 3, |cfg| {
        cfg.images_dir = std::fs::canonicalize("images").map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
        cfg.simulate_down_ms = 2000;
        cfg.simulate_up_ms = 1500;
    })
    .expect("config");
    let run_dir = dir.join("run");
    let log = std::fs::File::create(dir.join("run.log")).expect("log");
    let run_sh_child = run_sh(&c.config_path, &run_dir)
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("./run.sh starts");
    let mut procs = Procs { run_sh: run_sh_child, run_dir: run_dir.clone(), dashboard: None };
    let mut cloud = Cloud::connect(&c.cfg, None).expect("cloud");
    let ready = wait_until(Duration::from_secs(120), || {
        let st = cloud.statuses(Duration::from_millis(300));
        st.len() == 3 && st.values().all(|s| s.peers.iter().all(|p| p.live))
    });
    assert!(ready, "run.sh's cluster not ready: {}", std::fs::read_to_string(dir.join("run.log")).unwrap_or_default());

    // ./run.sh ctl: a typo fails where it was typed; status prints the server's table.
    let typo = run_sh(&c.config_path, &run_dir).args(["ctl", "2", "dwon", "10"]).output().expect("run.sh ctl");
    assert_ne!(typo.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&typo.stderr).contains("unknown command \"dwon 10\""), "{typo:?}");
    let status = run_sh(&c.config_path, &run_dir).args(["ctl", "2", "status"]).output().expect("run.sh ctl");
    assert!(status.status.success(), "{status:?}");
    assert!(String::from_utf8_lossy(&status.stdout).starts_with("server 2 — up"), "{status:?}");

    let mut dashboard = Command::new(sibling_binary("status").expect("status"))
        .arg("--config")
        .arg(&c.config_path)
        .arg("--run-dir")
        .arg(&run_dir)
        .args(["--web", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the dashboard starts");
    let stdout = dashboard.stdout.take().expect("stdout");
    procs.dashboard = Some(dashboard);
    let mut first = String::new();
    BufReader::new(stdout).read_line(&mut first).expect("the dashboard's URL");
    let url = first.trim().strip_prefix("dashboard: ").unwrap_or_else(|| panic!("{first:?}")).to_string();
    let rest = url.strip_prefix("http://").expect("http URL");
    let (addr, token) = rest.split_once("/?t=").expect("a token in the URL");
    let addr: SocketAddr = addr.parse().expect("address");
    assert!(addr.ip().is_loopback(), "bound to loopback by default");

    // The token guards everything: 403 and nothing else without it.
    for target in ["/", "/api/state", "/api/state?t=", "/api/state?t=0123", "/favicon.ico"] {
        assert_eq!(http(addr, "GET", target, ""), (403, String::new()), "{target}");
    }
    assert_eq!(http(addr, "POST", "/api/op", r#"{"command":"simulate on"}"#), (403, String::new()));
    assert_eq!(http(addr, "POST", &format!("/api/op?t={token}"), "{not json").0, 400);
    assert!(wait_until(Duration::from_secs(30), || state(addr, token)["up"] == 3));

    // The page, once its script ran: three servers up, one next winner, the polls answered.
    let browser = dump_dom(&url, &dir);
    if let Some(dom) = &browser {
        for id in 1..=3 {
            assert_eq!(card_attr(dom, id, "data-state").as_deref(), Some("up"), "server {id}:\n{dom}");
            assert!(card(dom, id).contains(&format!("Server {id}")), "{dom}");
        }
        assert_eq!((1..=3).filter(|id| card_attr(dom, *id, "data-winner").as_deref() == Some("true")).count(), 1);
        assert!(dom.contains("data-polls=\""), "the polling script ran:\n{dom}");
    }

    // The failure simulation, switched on from the page's endpoint: the servers take turns.
    let (status, body) =
        http(addr, "POST", &format!("/api/op?t={token}"), r#"{"server":null,"command":"simulate on"}"#);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body.matches("failure simulation on").count(), 3, "{body}");
    let took_turns =
        |dom: &str| (1..=3).filter(|id| card_attr(dom, *id, "data-down-seconds").is_some_and(|n| n != "0")).count();
    let mut seen = String::new();
    let turns = wait_until(Duration::from_secs(120), || {
        seen = match &browser {
            Some(_) => dump_dom(&url, &dir).unwrap_or_default(),
            None => String::new(),
        };
        let from_state = state(addr, token)["servers"]
            .as_array()
            .map(|s| {
                s.iter()
                    .filter(|c| c["history"].as_array().is_some_and(|h| h.iter().any(|x| x["down"] == true)))
                    .count()
            })
            .unwrap_or(0);
        (browser.is_none() || took_turns(&seen) >= 2) && from_state >= 2
    });
    assert!(turns, "two servers should have taken their turn:\n{seen}");
    if browser.is_some() {
        assert!(seen.contains("class=\"down-second\""), "down seconds shaded:\n{seen}");
    }
    let (status, body) = http(addr, "POST", &format!("/api/op?t={token}"), r#"{"command":"simulate off"}"#);
    assert_eq!(status, 200, "{body}");
    assert!(wait_until(Duration::from_secs(60), || state(addr, token)["up"] == 3), "all back up after the simulation");

    // SIGKILL from the page's endpoint: DOWN within 5 s, then failed (999), then restarted.
    let pid = state(addr, token)["servers"][2]["pid"].as_u64().expect("server 3's pid");
    let killed_at = Instant::now();
    let (status, body) = http(addr, "POST", &format!("/api/op?t={token}"), r#"{"server":3,"command":"kill"}"#);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("killed with SIGKILL"), "{body}");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(stat.is_empty() || stat.contains(") Z "), "server 3 (pid {pid}) still runs: {stat}");
    if browser.is_some() {
        let mut dom = String::new();
        let mut shown = false;
        while !shown && killed_at.elapsed() <= Duration::from_secs(5) {
            dom = dump_dom(&url, &dir).unwrap_or_default();
            shown = card_attr(&dom, 3, "data-state").as_deref() == Some("down");
        }
        assert!(shown, "server 3 not shown DOWN by a page loaded within 5 s of the kill:\n{dom}");
        assert!(card(&dom, 3).contains(">DOWN<"), "{dom}");
        let failed = wait_until(Duration::from_secs(60), || {
            dom = dump_dom(&url, &dir).unwrap_or_default();
            card(&dom, 3).contains("999 · failed")
        });
        assert!(failed, "the others count it failed (999):\n{dom}");
    } else {
        assert!(wait_until(Duration::from_secs(5), || state(addr, token)["servers"][2]["up"] == false));
    }
    let (status, body) = http(addr, "POST", &format!("/api/op?t={token}"), r#"{"server":3,"command":"restart"}"#);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("server 3 restarted"), "{body}");
    assert!(wait_until(Duration::from_secs(60), || state(addr, token)["servers"][2]["up"] == true), "back up");
    if browser.is_some() {
        let dom = dump_dom(&url, &dir).unwrap_or_default();
        assert_eq!(card_attr(&dom, 3, "data-state").as_deref(), Some("up"), "{dom}");
    }
    drop(procs);
    let _ = std::fs::remove_dir_all(&dir);
}
