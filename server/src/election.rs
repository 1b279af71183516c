//! The load table and the election: who is live, each server's effective load, and the ranking
//! of servers for one request (the winner first, then the order of takeover).
//!
//! Effective load of a server = the load it last announced (CPU part + [`WORK_WEIGHT`] × its
//! queued and in-flight requests); a busy server's announced queue moves the next requests
//! elsewhere, and a server whose queue grows announces early (see the node), so a burst spreads
//! within milliseconds. Servers of equal load are ordered by a hash of the request id and the
//! server id ([`tie_key`]), so an idle cluster spreads its requests (a client's background
//! inbox pulls every 5 s no longer all go to server 1) and every server still orders the tie
//! the same way.
//!
//! A ranking is a pure function of the load table ([`LoadTable::snapshot`]: every server's
//! announced figure and whether it counts as live) and the request id ([`rank`]); a server's
//! own entry holds exactly the figure it announced, and nothing local (claims seen, work
//! started) enters it. So two servers whose tables agree rank a request the same way, by
//! construction. Tables can disagree for a moment — an announcement reaches the servers at
//! slightly different times, or one server suspects another — and then two servers may both
//! claim, or both wait; Paxos keeps that safe and the node's re-ranking keeps it short.

use common::config::ServerId;
use common::protocol::{PeerView, RequestId};
use common::rng::Rng;
use std::collections::BTreeMap;

/// The load that means "failed or going down"; it never wins.
pub const FAILED: u32 = 999;
/// Load added per queued or in-flight request.
pub const WORK_WEIGHT: u32 = 10;
/// Highest load a live server reports.
pub const MAX_LIVE_LOAD: u32 = 998;

/// How the winner of a request is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Least effective load, ties by a hash of the request id and the server id (the real policy).
    LeastLoad,
    /// Live servers in turn by request number (benchmark comparison only).
    RoundRobin,
    /// Always the lowest live id (benchmark comparison only).
    Single,
}

impl Policy {
    /// Parses `least-load`, `round-robin` or `single`.
    pub fn parse(s: &str) -> Result<Policy, String> {
        match s {
            "least-load" => Ok(Policy::LeastLoad),
            "round-robin" => Ok(Policy::RoundRobin),
            "single" => Ok(Policy::Single),
            _ => Err(format!("unknown policy {s:?} (least-load, round-robin, single)")),
        }
    }
}

/// The load formula announced by a server: CPU part + work part, capped below 999.
pub fn load_figure(cpu_percent: f32, work: u32) -> u32 {
    let cpu = if cpu_percent.is_finite() { (cpu_percent.max(0.0) / 10.0).round() as u32 } else { 0 };
    cpu.saturating_add(work.saturating_mul(WORK_WEIGHT)).min(MAX_LIVE_LOAD)
}

#[derive(Debug, Clone, Default)]
struct Entry {
    base: u32,
    announced: u32,
    outstanding: u32,
    failed: bool,
    last_heard: Option<u64>,
    suspect: bool,
    epoch: u64,
    /// It said it takes requests (a server that just started does not until it heard the others).
    ready: bool,
}

/// One server's view of every server's load and liveness.
#[derive(Debug, Clone)]
pub struct LoadTable {
    me: ServerId,
    entries: BTreeMap<ServerId, Entry>,
    failure_timeout: u64,
    policy: Policy,
    /// True while this server itself is down (failure simulation).
    pub me_down: bool,
}

impl LoadTable {
    /// A table for server `me` among `ids`; others count as failed until heard from.
    pub fn new(me: ServerId, ids: &[ServerId], failure_timeout: u64, policy: Policy) -> Self {
        let entries = ids.iter().map(|&id| (id, Entry::default())).collect();
        LoadTable { me, entries, failure_timeout, policy, me_down: false }
    }

    /// Every configured server id, ascending.
    pub fn ids(&self) -> impl Iterator<Item = ServerId> + '_ {
        self.entries.keys().copied()
    }

    /// Every other server id.
    pub fn others(&self) -> impl Iterator<Item = ServerId> + '_ {
        let me = self.me;
        self.ids().filter(move |&id| id != me)
    }

    /// Records that `from` spoke (any message): it is not silent, and no longer suspect.
    pub fn heard(&mut self, now: u64, from: ServerId) {
        if let Some(e) = self.entries.get_mut(&from) {
            e.last_heard = Some(now);
            e.suspect = false;
        }
    }

    /// Applies a load announcement; returns true if `from` just came back (was not live).
    pub fn on_load(&mut self, now: u64, from: ServerId, load: u32, work: u32, ready: bool) -> bool {
        let was_live = self.is_live(now, from);
        if let Some(e) = self.entries.get_mut(&from) {
            e.ready = ready;
            e.failed = load >= FAILED;
            e.announced = load;
            e.base = load.saturating_sub(work.saturating_mul(WORK_WEIGHT));
            e.outstanding = work;
        }
        self.heard(now, from);
        !was_live && self.is_live(now, from)
    }

    /// Records `from`'s process epoch; returns true if it changed (the server restarted).
    pub fn set_epoch(&mut self, from: ServerId, epoch: u64) -> bool {
        match self.entries.get_mut(&from) {
            Some(e) if e.epoch != epoch => {
                let restarted = e.epoch != 0;
                e.epoch = epoch;
                restarted
            }
            _ => false,
        }
    }

    /// Requests `id` is counted as holding.
    pub fn outstanding(&self, id: ServerId) -> u32 {
        self.entries.get(&id).map_or(0, |e| e.outstanding)
    }

    /// Sets this server's own announced figures.
    pub fn set_mine(&mut self, now: u64, load: u32, work: u32) {
        let me = self.me;
        if let Some(e) = self.entries.get_mut(&me) {
            e.announced = load;
            e.base = load.saturating_sub(work.saturating_mul(WORK_WEIGHT));
            e.outstanding = work;
            e.last_heard = Some(now);
        }
    }

    /// True if `id` spoke (any message) at or after `t`.
    pub fn heard_since(&self, id: ServerId, t: u64) -> bool {
        self.entries.get(&id).and_then(|e| e.last_heard).is_some_and(|h| h >= t)
    }

    /// Marks `id` suspect (it missed a claim or commit): not live until heard from again.
    pub fn suspect(&mut self, id: ServerId) {
        if id != self.me {
            if let Some(e) = self.entries.get_mut(&id) {
                e.suspect = true;
            }
        }
    }

    /// A request was claimed by `id`.
    pub fn add_work(&mut self, id: ServerId) {
        if let Some(e) = self.entries.get_mut(&id) {
            e.outstanding = e.outstanding.saturating_add(1);
        }
    }

    /// A request claimed by `id` finished or moved elsewhere.
    pub fn remove_work(&mut self, id: ServerId) {
        if let Some(e) = self.entries.get_mut(&id) {
            e.outstanding = e.outstanding.saturating_sub(1);
        }
    }

    /// True if `id` counts as live now.
    pub fn is_live(&self, now: u64, id: ServerId) -> bool {
        if id == self.me {
            return !self.me_down;
        }
        match self.entries.get(&id) {
            Some(e) => {
                !e.failed && !e.suspect && e.last_heard.is_some_and(|t| now.saturating_sub(t) <= self.failure_timeout)
            }
            None => false,
        }
    }

    /// Live servers other than this one.
    pub fn live_others(&self, now: u64) -> Vec<ServerId> {
        self.others().filter(|&id| self.is_live(now, id)).collect()
    }

    /// The load used in elections; [`FAILED`] when not live.
    ///
    /// Only announced figures count, never local guesses: every server holds the same
    /// announcements, so every server ranks a request the same way whatever order requests
    /// arrive in (a local adjustment per claim seen made concurrent requests rank differently
    /// on each server, and nobody claimed them until the takeover timeout).
    pub fn effective(&self, now: u64, id: ServerId) -> u32 {
        match self.entries.get(&id) {
            Some(e) if self.is_live(now, id) => e.announced.min(MAX_LIVE_LOAD),
            _ => FAILED,
        }
    }

    /// The table a request is ranked with: every server's announced load ([`FAILED`] when not
    /// live) and whether it can win (live, and ready to take requests; this server counts as
    /// ready: a node that is not ranks nothing).
    pub fn snapshot(&self, now: u64) -> Vec<PeerView> {
        self.entries
            .iter()
            .map(|(&id, e)| PeerView {
                id,
                load: self.effective(now, id),
                live: self.is_live(now, id) && (id == self.me || e.ready),
            })
            .collect()
    }

    /// Live servers for `rid`, the winner first, then the takeover order.
    pub fn ranking(&self, now: u64, rid: RequestId) -> Vec<ServerId> {
        rank(&self.snapshot(now), self.policy, rid)
    }

    /// Servers that count for a majority: all but those that announced 999 (they execute
    /// nothing while down). Silent servers still count: silence may be a partition.
    pub fn quorum_base(&self) -> usize {
        self.entries.iter().filter(|(&id, e)| if id == self.me { !self.me_down } else { !e.failed }).count()
    }

    /// Votes needed (this server's own included) to claim or commit a request.
    pub fn quorum(&self) -> usize {
        self.quorum_base() / 2 + 1
    }

    /// Other servers that have not announced 999: where claims and commits go.
    pub fn voters(&self) -> Vec<ServerId> {
        self.entries.iter().filter(|(&id, e)| id != self.me && !e.failed).map(|(&id, _)| id).collect()
    }

    /// Has every other server been heard from at least once (startup is over)?
    pub fn heard_all(&self) -> bool {
        self.entries.iter().all(|(&id, e)| id == self.me || e.last_heard.is_some())
    }
}

/// The order of server `id` among the servers of equal load for request `rid`: a hash of both
/// (SplitMix64), so each of the tied servers comes first for about as many requests, whatever
/// the pattern of request ids. Nothing local enters: every server computes the same key.
pub fn tie_key(rid: RequestId, id: ServerId) -> u64 {
    let request = Rng::new(rid.client ^ Rng::new(rid.seq).next_u64()).next_u64();
    Rng::new(request ^ u64::from(id)).next_u64()
}

/// The ranking of `rid` from a load table: the servers that can win, the winner first, then
/// the takeover order. Least load: by (load, [`tie_key`], id). Nothing but the table and the
/// request enters.
pub fn rank(table: &[PeerView], policy: Policy, rid: RequestId) -> Vec<ServerId> {
    let mut live: Vec<&PeerView> = table.iter().filter(|p| p.live).collect();
    live.sort_by_key(|p| p.id);
    match policy {
        Policy::LeastLoad => live.sort_by_key(|p| (p.load, tie_key(rid, p.id), p.id)),
        Policy::Single => {}
        Policy::RoundRobin => {
            if !live.is_empty() {
                let k = (rid.seq.wrapping_add(rid.client) % live.len() as u64) as usize;
                live.rotate_left(k);
            }
        }
    }
    live.into_iter().map(|p| p.id).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rid(seq: u64) -> RequestId {
        RequestId { client: 0, seq }
    }

    #[test]
    fn least_load_wins_and_999_never_wins() {
        let mut t = LoadTable::new(1, &[1, 2, 3], 3000, Policy::LeastLoad);
        t.set_mine(0, 50, 0);
        t.on_load(0, 2, 20, 0, true);
        t.on_load(0, 3, 30, 0, true);
        assert_eq!(t.ranking(0, rid(1)), vec![2, 3, 1]);
        t.on_load(1, 2, FAILED, 0, true);
        assert_eq!(t.ranking(1, rid(1)), vec![3, 1]);
        assert_eq!(t.effective(1, 2), FAILED);
    }

    /// How often each server ranks first over `n` consecutive requests of one client.
    fn firsts(table: &[PeerView], n: u64) -> BTreeMap<ServerId, u64> {
        let mut won = BTreeMap::new();
        for seq in 0..n {
            let first = rank(table, Policy::LeastLoad, RequestId { client: 0x5eed, seq })[0];
            *won.entry(first).or_insert(0) += 1;
        }
        won
    }

    fn view(id: ServerId, load: u32) -> PeerView {
        PeerView { id, load, live: true }
    }

    #[test]
    fn ties_spread_by_request_id_and_load_still_decides() {
        // An idle cluster: each server first for about a third of the requests, not server 1
        // for all of them.
        let idle = [view(1, 0), view(2, 0), view(3, 0)];
        let won = firsts(&idle, 300);
        assert!(won.values().all(|&n| n >= 70), "an idle cluster spreads its requests: {won:?}");
        assert_eq!(won.len(), 3, "{won:?}");
        // A tie among the two least loaded: they share, the loaded one is always last.
        let two = [view(1, 10), view(2, 0), view(3, 0)];
        let won = firsts(&two, 200);
        assert!(won.get(&2).is_some_and(|&n| n >= 50) && won.get(&3).is_some_and(|&n| n >= 50), "{won:?}");
        assert!(!won.contains_key(&1), "a loaded server never wins a tie it is not in: {won:?}");
        for seq in 0..50 {
            let r = rank(&two, Policy::LeastLoad, RequestId { client: 9, seq });
            assert_eq!(r[2], 1, "{r:?}");
        }
        // A lower load wins whatever the request id.
        let one = [view(1, 5), view(2, 5), view(3, 0)];
        assert_eq!(firsts(&one, 100).keys().copied().collect::<Vec<_>>(), vec![3]);
    }

    #[test]
    fn every_server_orders_a_tie_the_same_way() {
        // The same table, listed in any order, and the same request give the same ranking.
        let table = [view(1, 0), view(2, 0), view(3, 0), view(4, 7)];
        let mut reversed = table.to_vec();
        reversed.reverse();
        for seq in 0..100 {
            let rid = RequestId { client: 0xabcd, seq };
            let r = rank(&table, Policy::LeastLoad, rid);
            assert_eq!(r, rank(&reversed, Policy::LeastLoad, rid));
            assert_eq!(r.len(), 4);
            assert_eq!(r[3], 4);
            assert_eq!(tie_key(rid, 2), tie_key(rid, 2), "a pure function");
        }
        // The load tables of two servers holding the same announcements rank alike.
        let (a, b) = two_views([(0, 0), (0, 0), (0, 0)]);
        for seq in 0..100 {
            assert_eq!(a.ranking(0, rid(seq)), b.ranking(0, rid(seq)));
        }
    }

    #[test]
    fn silence_means_failed_and_return_is_reported() {
        let mut t = LoadTable::new(1, &[1, 2], 3000, Policy::LeastLoad);
        assert!(!t.is_live(0, 2), "unheard servers are not live");
        assert!(t.on_load(0, 2, 5, 0, true), "first announcement is a return");
        assert!(t.is_live(3000, 2));
        assert!(!t.is_live(3001, 2));
        assert!(t.on_load(4000, 2, 5, 0, true));
        assert!(!t.on_load(4001, 2, 5, 0, true));
    }

    #[test]
    fn ranking_follows_announcements_not_claims_seen() {
        let mut t = LoadTable::new(1, &[1, 2, 3], 3000, Policy::LeastLoad);
        t.set_mine(0, 0, 0);
        t.on_load(0, 2, 0, 0, true);
        t.on_load(0, 3, 0, 0, true);
        // A request that server 1 wins while every server is idle.
        let r = (0..).map(rid).find(|r| t.ranking(0, *r)[0] == 1).expect("server 1 wins some ties");
        t.add_work(1);
        t.add_work(1);
        assert_eq!(t.ranking(0, r)[0], 1, "claims seen locally do not move the ranking");
        t.set_mine(1, load_figure(0.0, 2), 2);
        assert_eq!(t.ranking(1, r)[2], 1, "announced queued work does");
    }

    #[test]
    fn quorum_ignores_announced_failures_but_not_silence() {
        let mut t = LoadTable::new(1, &[1, 2, 3], 3000, Policy::LeastLoad);
        assert_eq!(t.quorum(), 2, "silent servers still count");
        t.on_load(0, 2, FAILED, 0, true);
        assert_eq!(t.quorum_base(), 2);
        assert_eq!(t.voters(), vec![3]);
        t.on_load(0, 3, FAILED, 0, true);
        assert_eq!(t.quorum(), 1, "alone after the others shut down cleanly");
    }

    #[test]
    fn suspect_until_heard() {
        let mut t = LoadTable::new(1, &[1, 2], 3000, Policy::LeastLoad);
        t.on_load(0, 2, 0, 0, true);
        t.suspect(2);
        assert!(!t.is_live(1, 2));
        t.heard(2, 2);
        assert!(t.is_live(2, 2));
        assert!(t.heard_since(2, 2) && !t.heard_since(2, 3));
        assert!(!t.heard_since(3, 0), "unknown servers were never heard");
    }

    #[test]
    fn a_server_not_ready_is_left_out_of_the_ranking_but_not_of_the_quorum() {
        let mut t = LoadTable::new(1, &[1, 2, 3], 3000, Policy::LeastLoad);
        t.set_mine(0, 50, 0);
        t.on_load(0, 2, 0, 0, false);
        t.on_load(0, 3, 20, 0, true);
        assert_eq!(t.ranking(0, rid(1)), vec![3, 1]);
        assert_eq!(t.quorum(), 2);
        assert!(t.is_live(0, 2));
        t.on_load(1, 2, 0, 0, true);
        assert_eq!(t.ranking(1, rid(1)), vec![2, 3, 1]);
    }

    /// Servers 1 and 2's load tables after servers 1, 2 and 3 announced (load, work) each: each
    /// holds its own figure as announced.
    fn two_views(announced: [(u32, u32); 3]) -> (LoadTable, LoadTable) {
        let [(l1, w1), (l2, w2), (l3, w3)] = announced;
        let mut a = LoadTable::new(1, &[1, 2, 3], 3000, Policy::LeastLoad);
        let mut b = LoadTable::new(2, &[1, 2, 3], 3000, Policy::LeastLoad);
        a.set_mine(0, l1, w1);
        b.on_load(0, 1, l1, w1, true);
        b.set_mine(0, l2, w2);
        a.on_load(0, 2, l2, w2, true);
        for t in [&mut a, &mut b] {
            t.on_load(0, 3, l3, w3, true);
        }
        (a, b)
    }

    #[test]
    fn equal_tables_give_equal_rankings() {
        let (mut a, mut b) = two_views([(10, 1), (4, 0), (6, 0)]);
        a.add_work(1);
        b.add_work(3);
        assert_eq!(a.snapshot(0), b.snapshot(0), "work seen locally is not in the table");
        assert_eq!(a.ranking(0, rid(5)), b.ranking(0, rid(5)));
        assert_eq!(a.ranking(0, rid(5)), vec![2, 3, 1]);
    }

    #[test]
    fn load_figure_combines_cpu_and_work() {
        assert_eq!(load_figure(0.0, 0), 0);
        assert_eq!(load_figure(55.0, 2), 6 + 20);
        assert_eq!(load_figure(f32::NAN, 1000), MAX_LIVE_LOAD);
    }
}
