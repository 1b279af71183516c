//! The node's counters and its `Status` answer: requests won (those of users apart from the
//! background ones a client sends by itself), requests won per second, the recent elections
//! (how each request was ranked), and what `status` shows.

use super::*;

/// Kinds of the requests a client sends by itself, not for a command of its user: sign-ins
/// (at start, and by its watch when the cloud answers again) and inbox pulls (every 5 s while
/// online). Counted apart, so the requests won by users show where the election sends work.
pub const BACKGROUND_KINDS: &[&str] = &["signin", "inbox-ack"];

impl Node {
    /// This server's status, as answered to a `Status` request.
    pub fn status(&self, now: u64) -> ServerStatus {
        ServerStatus {
            id: self.cfg.id,
            down: self.is_down(),
            peers: self.table.snapshot(now),
            handled: self.handled,
            background: self
                .handled_by_kind
                .iter()
                .filter(|(k, _)| BACKGROUND_KINDS.contains(*k))
                .map(|(_, n)| n)
                .sum(),
            handled_by_kind: self.handled_by_kind.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            users: self.dir.len(),
            online: self.dir.online().take(100).map(|u| u.name).collect(),
            tracked_requests: self.requests.len(),
            rss_kb: self.rss_kb,
            recent_wins: self.recent_wins(now),
            next_winner: self.table.ranking(now, RequestId { client: 0, seq: 0 }).first().copied(),
            elections: self.elections.iter().cloned().collect(),
            key_mismatch: self.key_mismatch.recent(now),
        }
    }

    /// Records how a client's request was ranked on arrival (of the client's copy, or of a
    /// claim that came first).
    pub(super) fn record_election(
        &mut self,
        now: u64,
        rid: RequestId,
        op: &Op,
        table: Vec<PeerView>,
        ranking: &[ServerId],
    ) {
        let e = Election { rid, kind: op.kind().to_string(), at: now, table, ranking: ranking.to_vec() };
        if self.cfg.record_executions {
            self.election_log.push(e.clone());
        }
        if self.elections.len() >= ELECTIONS_KEPT {
            self.elections.pop_front();
        }
        self.elections.push_back(e);
    }

    /// Requests of users executed here in the last [`RECENT_SECS`] seconds.
    pub(super) fn recent_wins(&self, now: u64) -> u64 {
        let sec = now / 1000;
        self.recent.iter().filter(|(s, _)| s + RECENT_SECS > sec).map(|(_, n)| n).sum()
    }

    /// Counts the execution of `op`: in the totals, and in the per-second window if a user's.
    pub(super) fn count_execution(&mut self, now: u64, op: &Op) {
        self.handled += 1;
        *self.handled_by_kind.entry(op.kind()).or_insert(0) += 1;
        if !BACKGROUND_KINDS.contains(&op.kind()) {
            self.count_recent(now);
        }
    }

    /// Counts one execution in the per-second window (at most `RECENT_SECS` + 1 buckets).
    fn count_recent(&mut self, now: u64) {
        let sec = now / 1000;
        match self.recent.back_mut() {
            Some((s, n)) if *s == sec => *n += 1,
            _ => self.recent.push_back((sec, 1)),
        }
        while self.recent.front().is_some_and(|(s, _)| s + RECENT_SECS <= sec) {
            self.recent.pop_front();
        }
    }
}
