//! Failure simulation for the classroom: a token passes round-robin between the servers; its
//! holder goes down (announces 999, ignores all traffic) for a while, comes back, is resynced,
//! stays up for a while, then passes the token to the next live server. If the holder dies for
//! real, the lowest live server makes a new token after a long silence.

use crate::election::LoadTable;
use common::config::ServerId;
use common::protocol::Msg;

/// What the node must do for the simulation on this tick.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // returned once per tick
pub enum SimAction {
    /// Nothing.
    None,
    /// Go down for this many ms.
    GoDown(u64),
    /// Send a token message.
    Send(ServerId, Msg),
    /// That server did not take the token: count it failed until heard from.
    Suspect(ServerId),
}

#[derive(Debug, Clone, PartialEq)]
enum Phase {
    Idle,
    Waiting { until: u64 },
    Down,
    Recovering { until: u64 },
    Passing { to: ServerId, since: u64, last: u64 },
}

/// What the failure simulation needs to know (taken from the node's settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureConfig {
    /// This server.
    pub me: ServerId,
    /// Every server of the cluster.
    pub ids: Vec<ServerId>,
    /// Pass the token around from the start.
    pub enabled: bool,
    /// Time down, ms.
    pub down_ms: u64,
    /// Time up before passing the token, ms.
    pub up_ms: u64,
    /// Retransmission interval of the token, ms.
    pub retransmit: u64,
    /// Silence after which a server counts as failed, ms.
    pub failure_timeout: u64,
}

/// The failure-simulation token state of one server.
#[derive(Debug, Clone)]
pub struct FailureSim {
    enabled: bool,
    me: ServerId,
    ids: Vec<ServerId>,
    down_ms: u64,
    up_ms: u64,
    retransmit: u64,
    failure_timeout: u64,
    phase: Phase,
    round: u64,
    last_token_seen: u64,
}

impl FailureSim {
    /// The simulation state at start; the lowest id holds the first token.
    pub fn new(cfg: &FailureConfig, now: u64) -> Self {
        let first = cfg.ids.iter().min().copied() == Some(cfg.me);
        let phase = if cfg.enabled && first { Phase::Waiting { until: now + cfg.up_ms } } else { Phase::Idle };
        FailureSim {
            enabled: cfg.enabled,
            me: cfg.me,
            ids: cfg.ids.clone(),
            down_ms: cfg.down_ms,
            up_ms: cfg.up_ms,
            retransmit: cfg.retransmit,
            failure_timeout: cfg.failure_timeout,
            phase,
            round: 1,
            last_token_seen: now,
        }
    }

    /// Switches the simulation on (the lowest id takes the first token and goes down at once)
    /// or off (whoever holds the token keeps it; a server down comes back when its time is up).
    pub fn set_enabled(&mut self, now: u64, on: bool) {
        if on == self.enabled {
            return;
        }
        self.enabled = on;
        self.last_token_seen = now;
        let first = self.ids.iter().min() == Some(&self.me);
        self.phase = if on && first { Phase::Waiting { until: now } } else { Phase::Idle };
    }

    /// True while this server holds the token.
    pub fn holds_token(&self) -> bool {
        self.phase != Phase::Idle
    }

    /// A load announcement arrived; `token` says whether its sender holds the token.
    pub fn on_load(&mut self, now: u64, token: bool) {
        if token {
            self.last_token_seen = now;
        }
    }

    /// The token arrived.
    pub fn on_token(&mut self, now: u64, round: u64) {
        if self.enabled && round > self.round {
            self.round = round;
            self.phase = Phase::Waiting { until: now };
            self.last_token_seen = now;
        }
    }

    /// The next holder confirmed.
    pub fn on_token_ack(&mut self, from: ServerId, round: u64) {
        if matches!(self.phase, Phase::Passing { to, .. } if to == from) && round == self.round {
            self.phase = Phase::Idle;
        }
    }

    fn next_live(&self, now: u64, table: &LoadTable) -> Option<ServerId> {
        let mut ids = self.ids.clone();
        ids.sort_unstable();
        let pos = ids.iter().position(|&i| i == self.me).unwrap_or(0);
        (1..ids.len()).map(|k| ids[(pos + k) % ids.len()]).find(|&id| table.is_live(now, id))
    }

    /// Advances the simulation.
    pub fn tick(&mut self, now: u64, table: &LoadTable, is_down: bool) -> SimAction {
        if !self.enabled {
            return SimAction::None;
        }
        match self.phase.clone() {
            Phase::Idle => {
                let quiet =
                    now.saturating_sub(self.last_token_seen) > 2 * (self.down_ms + self.up_ms) + self.failure_timeout;
                let lowest_live = table.ids().find(|&id| table.is_live(now, id)) == Some(self.me);
                if quiet && lowest_live && !is_down {
                    self.round += 1;
                    self.phase = Phase::Waiting { until: now };
                    self.last_token_seen = now;
                }
                SimAction::None
            }
            Phase::Waiting { until } if now >= until => {
                self.phase = Phase::Down;
                SimAction::GoDown(self.down_ms)
            }
            Phase::Waiting { .. } => SimAction::None,
            Phase::Down => {
                if !is_down {
                    self.phase = Phase::Recovering { until: now + self.up_ms };
                }
                SimAction::None
            }
            Phase::Recovering { until } if now >= until => match self.next_live(now, table) {
                None => {
                    self.phase = Phase::Waiting { until: now + self.up_ms };
                    SimAction::None
                }
                Some(to) => {
                    self.round += 1;
                    self.phase = Phase::Passing { to, since: now, last: now };
                    SimAction::Send(to, Msg::Token { from: self.me, to, round: self.round })
                }
            },
            Phase::Recovering { .. } => SimAction::None,
            Phase::Passing { to, since, last } => {
                if now >= since + self.failure_timeout {
                    self.phase = Phase::Recovering { until: now };
                    SimAction::Suspect(to)
                } else if now >= last + self.retransmit {
                    self.phase = Phase::Passing { to, since, last: now };
                    SimAction::Send(to, Msg::Token { from: self.me, to, round: self.round })
                } else {
                    SimAction::None
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::election::Policy;

    #[test]
    fn switched_on_by_the_operator_the_lowest_id_goes_down_at_once_and_off_stops_it() {
        let ids = [1, 2, 3];
        let table = LoadTable::new(1, &ids, 3000, Policy::LeastLoad);
        let cfg = |me| FailureConfig {
            me,
            ids: ids.to_vec(),
            enabled: false,
            down_ms: 20_000,
            up_ms: 10_000,
            retransmit: 40,
            failure_timeout: 3000,
        };
        let mut first = FailureSim::new(&cfg(1), 0);
        let mut second = FailureSim::new(&cfg(2), 0);
        assert_eq!(first.tick(10, &table, false), SimAction::None, "off by default");
        first.set_enabled(20, true);
        second.set_enabled(20, true);
        assert_eq!(first.tick(20, &table, false), SimAction::GoDown(20_000));
        assert_eq!(second.tick(20, &table, false), SimAction::None, "only the lowest id starts");
        assert!(first.holds_token() && !second.holds_token());
        first.set_enabled(30, false);
        assert!(!first.holds_token());
        assert_eq!(first.tick(40, &table, false), SimAction::None);
    }
}
