//! The cluster's status table, from the `status` answers of the servers themselves: each
//! server up or down (no answer), its load, whether it would win the next request (the
//! least-loaded live server; when several tie, the request id picks one), how many requests of
//! users it won recently and in all, how many background requests (sign-ins, inbox pulls), and
//! the online users; then the servers that receive frames with a bad tag (another cluster key),
//! and from where. Used by the `status` binary and the demo.

use common::config::{ClusterConfig, ServerId};
use common::protocol::{ServerStatus, RECENT_SECS};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// One server's line of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Server id.
    pub id: ServerId,
    /// Answered and not down.
    pub up: bool,
    /// The load it announces (its own view of itself), when up.
    pub load: Option<u32>,
    /// The servers that answered say it would win a request now.
    pub next_winner: bool,
    /// It shares the least load with other servers that are up (the request id decides).
    pub tied: bool,
    /// Requests of users it won in the last [`RECENT_SECS`] seconds, when up.
    pub recent_wins: Option<u64>,
    /// Requests of users it won since it (last) started, when up.
    pub handled: Option<u64>,
    /// Background requests (sign-ins, inbox pulls) it won since it (last) started, when up.
    pub background: Option<u64>,
    /// Users in its directory, when up.
    pub users: Option<usize>,
    /// Online users in its directory, when up.
    pub online: Vec<String>,
    /// Addresses it received server frames with a bad tag from lately (another cluster key).
    pub key_mismatch: Vec<String>,
}

impl Row {
    /// The online users as the tables show them: `-` when down, `(none)`, or the names.
    pub fn online_text(&self) -> String {
        if !self.up {
            "-".to_string()
        } else if self.online.is_empty() {
            "(none)".to_string()
        } else {
            self.online.join(", ")
        }
    }
}

/// The rows of every configured server, from the answers received (a missing answer is down).
pub fn rows(cfg: &ClusterConfig, answers: &HashMap<ServerId, ServerStatus>) -> Vec<Row> {
    // The next winner: what most answering servers name (they rank by the same announcements).
    let mut votes: BTreeMap<ServerId, usize> = BTreeMap::new();
    for st in answers.values().filter(|s| !s.down) {
        if let Some(w) = st.next_winner {
            *votes.entry(w).or_insert(0) += 1;
        }
    }
    let winner = votes.iter().max_by_key(|(id, n)| (**n, std::cmp::Reverse(**id))).map(|(id, _)| *id);
    let load_of = |id: ServerId| {
        let st = answers.get(&id).filter(|s| !s.down)?;
        st.peers.iter().find(|p| p.id == id && p.live).map(|p| p.load)
    };
    let loads: Vec<u32> = cfg.ids().into_iter().filter_map(load_of).collect();
    let least = loads.iter().min().copied();
    let tie = loads.iter().filter(|l| Some(**l) == least).count() > 1;
    cfg.ids()
        .into_iter()
        .map(|id| match answers.get(&id).filter(|s| !s.down) {
            Some(st) => Row {
                id,
                up: true,
                load: st.peers.iter().find(|p| p.id == id).map(|p| p.load),
                next_winner: winner == Some(id),
                tied: tie && load_of(id) == least,
                recent_wins: Some(st.recent_wins),
                handled: Some(st.handled.saturating_sub(st.background)),
                background: Some(st.background),
                users: Some(st.users),
                online: st.online.clone(),
                key_mismatch: st.key_mismatch.clone(),
            },
            None => Row {
                id,
                up: false,
                load: None,
                next_winner: false,
                tied: false,
                recent_wins: None,
                handled: None,
                background: None,
                users: None,
                online: vec![],
                key_mismatch: vec![],
            },
        })
        .collect()
}

fn or_dash<T: ToString>(v: Option<T>) -> String {
    v.map(|x| x.to_string()).unwrap_or_else(|| "-".into())
}

/// The table as text (one header line, one line per server, then the online users).
pub fn render(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<7} {:<5} {:>5}  {:<12} {:>13} {:>10} {:>11} {:>6}  online users\n",
        "server",
        "state",
        "load",
        "next request",
        format!("won last {RECENT_SECS}s"),
        "won total",
        "background",
        "users"
    );
    for r in rows {
        let online = r.online_text();
        let next = if r.tied {
            "<- tie"
        } else if r.next_winner {
            "<- wins it"
        } else {
            ""
        };
        out.push_str(&format!(
            "{:<7} {:<5} {:>5}  {next:<12} {:>13} {:>10} {:>11} {:>6}  {online}\n",
            r.id,
            if r.up { "up" } else { "DOWN" },
            or_dash(r.load),
            or_dash(r.recent_wins),
            or_dash(r.handled),
            or_dash(r.background),
            or_dash(r.users),
        ));
    }
    let all: BTreeSet<&String> = rows.iter().flat_map(|r| r.online.iter()).collect();
    let all: Vec<&str> = all.into_iter().map(|s| s.as_str()).collect();
    let up = rows.iter().filter(|r| r.up).count();
    out.push_str(&format!(
        "{up} of {} servers up; online: {}\n",
        rows.len(),
        if all.is_empty() { "(none)".to_string() } else { all.join(", ") }
    ));
    let tied: Vec<String> = rows.iter().filter(|r| r.tied).map(|r| r.id.to_string()).collect();
    if !tied.is_empty() {
        out.push_str(&format!(
            "servers {} tie for the least load: each request's id picks one of them\n",
            tied.join(", ")
        ));
    }
    out.push_str("won: requests of users; background: sign-ins and inbox pulls (clients send them by themselves)\n");
    for r in rows.iter().filter(|r| !r.key_mismatch.is_empty()) {
        out.push_str(&format!(
            "server {}: frames from {} carry a bad tag: a different cluster key (copy the key with ./run.sh key)\n",
            r.id,
            r.key_mismatch.join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::config::ServerEntry;
    use common::protocol::PeerView;

    fn status(id: ServerId, load: u32, winner: ServerId) -> ServerStatus {
        ServerStatus {
            id,
            down: false,
            peers: vec![PeerView { id, load, live: true }],
            handled: 5,
            background: 0,
            handled_by_kind: vec![],
            users: 2,
            online: vec!["alice".into()],
            tracked_requests: 0,
            rss_kb: 0,
            recent_wins: 1,
            next_winner: Some(winner),
            elections: vec![],
            key_mismatch: vec![],
        }
    }

    /// A cluster of `n` servers on loopback.
    fn cluster(n: u32) -> ClusterConfig {
        let addr = |port: u32| format!("127.0.0.1:{port}").parse().unwrap();
        ClusterConfig::with_servers((1..=n).map(|i| ServerEntry::new(i, addr(1000 + i), addr(2000 + i))).collect())
    }

    #[test]
    fn a_silent_server_is_down_and_the_majority_names_the_winner() {
        let cfg = cluster(3);
        let answers: HashMap<_, _> = [(1, status(1, 20, 2)), (2, status(2, 3, 2))].into_iter().collect();
        let rows = rows(&cfg, &answers);
        assert!(rows[0].up && rows[1].up && !rows[2].up);
        assert_eq!(rows.iter().filter(|r| r.next_winner).map(|r| r.id).collect::<Vec<_>>(), vec![2]);
        assert_eq!(rows[0].load, Some(20));
        let text = render(&rows);
        assert!(text.contains("DOWN") && text.contains("2 of 3 servers up; online: alice"), "{text}");
        assert!(!text.contains("bad tag"), "{text}");
    }

    #[test]
    fn a_key_mismatch_is_shown_under_the_table() {
        let cfg = cluster(2);
        let mut two = status(2, 3, 2);
        two.key_mismatch = vec!["10.0.0.13:7203".into()];
        let answers: HashMap<_, _> = [(1, status(1, 20, 2)), (2, two)].into_iter().collect();
        let text = render(&rows(&cfg, &answers));
        assert!(
            text.contains("server 2: frames from 10.0.0.13:7203 carry a bad tag: a different cluster key"),
            "{text}"
        );
    }

    #[test]
    fn background_requests_are_counted_apart_and_a_tie_is_shown_as_one() {
        let cfg = cluster(3);
        let mut one = status(1, 0, 1);
        (one.handled, one.background) = (465, 461);
        let answers: HashMap<_, _> = [(1, one), (2, status(2, 0, 1)), (3, status(3, 7, 1))].into_iter().collect();
        let rows = rows(&cfg, &answers);
        assert_eq!((rows[0].handled, rows[0].background), (Some(4), Some(461)), "{rows:?}");
        assert_eq!(rows.iter().filter(|r| r.tied).map(|r| r.id).collect::<Vec<_>>(), vec![1, 2]);
        let text = render(&rows);
        assert!(text.contains("servers 1, 2 tie for the least load"), "{text}");
        let line = text.lines().find(|l| l.starts_with("1 ")).unwrap_or_default();
        assert!(line.contains("<- tie") && line.contains(" 4 ") && line.contains(" 461 "), "{text}");
        // No tie: the winner alone is marked.
        let answers: HashMap<_, _> = [(1, status(1, 3, 1)), (2, status(2, 5, 1))].into_iter().collect();
        let text = render(&super::rows(&cfg, &answers));
        assert!(text.contains("<- wins it") && !text.contains("tie"), "{text}");
    }
}
