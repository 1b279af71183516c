//! The status table as the demo shows it: the rows of `client::status`, narrow enough for a
//! projector (39 columns and the online users: server, state, load, next winner, requests
//! won, users, online users), state in capitals so the voice colours UP green and DOWN red.

use client::status::Row;

/// The table's lines, header first, then one per server and a summary.
pub fn lines(rows: &[Row]) -> Vec<String> {
    let dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let mut out = vec![format!(
        "{:<6} {:<5} {:>4}  {:<7} {:>4} {:>5}  online",
        "server", "state", "load", "next", "won", "users"
    )];
    for r in rows {
        let next = if r.tied {
            "<- tie"
        } else if r.next_winner {
            "<- next"
        } else {
            ""
        };
        let online = r.online_text();
        out.push(format!(
            "{:<6} {:<5} {:>4}  {next:<7} {:>4} {:>5}  {online}",
            r.id,
            if r.up { "UP" } else { "DOWN" },
            dash(r.load.map(|l| l.to_string())),
            dash(r.handled.map(|h| h.to_string())),
            dash(r.users.map(|u| u.to_string())),
        ));
    }
    let up = rows.iter().filter(|r| r.up).count();
    out.push(format!("{up} of {} servers up (won: users' requests)", rows.len()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: common::config::ServerId, up: bool) -> Row {
        Row {
            id,
            up,
            load: up.then_some(10),
            next_winner: id == 1,
            tied: false,
            recent_wins: None,
            handled: up.then_some(3),
            background: None,
            users: up.then_some(2),
            online: if up { vec!["alice".into(), "bob".into()] } else { vec![] },
            key_mismatch: vec![],
        }
    }

    #[test]
    fn a_down_server_shows_down_and_the_table_fits_a_narrow_screen() {
        let t = lines(&[row(1, true), row(2, false), row(3, true)]);
        assert!(t[2].starts_with("2 ") && t[2].contains("DOWN"), "{t:?}");
        assert!(t[1].contains("UP") && t[1].contains("<- next") && t[1].ends_with("alice, bob"), "{t:?}");
        assert!(t.last().is_some_and(|l| l.starts_with("2 of 3 servers up")), "{t:?}");
        assert!(t[..4].iter().all(|l| l.chars().count() <= 39 + "alice, bob".len()), "{t:?}");
    }
}
