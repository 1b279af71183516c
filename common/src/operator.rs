//! The operator's commands to one server — `down [SECONDS]`, `up`, `simulate on|off`, `status` —
//! as typed values, parsed from the words an operator types (a server's stdin, `ctl`, the
//! dashboard). Over the network they travel as `Msg::Operator` in a frame tagged under the
//! cluster key (see `auth::encode_server`), and the server answers with `Msg::OperatorReply`.

use serde::{Deserialize, Serialize};

/// What a server accepts from its operator, as the usage line shows it.
pub const USAGE: &str = "down [SECONDS] | up | simulate on|off | status";

/// The longest `down` accepted, in seconds (a day).
pub const MAX_DOWN_SECS: u64 = 86_400;

/// Most bytes of an operator reply's text (a status table is far smaller).
pub const MAX_REPLY: usize = 16_000;

/// One operator command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OperatorCmd {
    /// Go down (announce 999, ignore traffic) for `secs` seconds, or the config's
    /// `simulate_down_ms` when `None`.
    Down { secs: Option<u64> },
    /// Come back up now.
    Up,
    /// Switch the failure simulation on or off.
    Simulate { on: bool },
    /// The server's own status table.
    Status,
}

impl OperatorCmd {
    /// Parses the words of a command line. The error says what is wrong, not the usage (the
    /// caller adds the commands it accepts).
    pub fn parse(words: &[&str]) -> Result<OperatorCmd, String> {
        match words {
            ["down"] => Ok(OperatorCmd::Down { secs: None }),
            ["down", secs] => match secs.parse::<u64>() {
                Ok(s) if s <= MAX_DOWN_SECS => Ok(OperatorCmd::Down { secs: Some(s) }),
                Ok(_) => Err(format!("down: at most {MAX_DOWN_SECS} seconds")),
                Err(_) => Err(format!("down: {secs:?} is not a whole number of seconds")),
            },
            ["up"] => Ok(OperatorCmd::Up),
            ["simulate", "on"] => Ok(OperatorCmd::Simulate { on: true }),
            ["simulate", "off"] => Ok(OperatorCmd::Simulate { on: false }),
            ["simulate", ..] => Err("simulate: say `simulate on` or `simulate off`".into()),
            ["status"] => Ok(OperatorCmd::Status),
            ["down" | "up" | "status", ..] => Err(format!("{}: too many words", words[0])),
            [] => Err("no command".into()),
            _ => Err(format!("unknown command {:?}", words.join(" "))),
        }
    }

    /// Checks what the JSON shape cannot (the server's `decode` calls it).
    pub fn validate(&self) -> Result<(), String> {
        match self {
            OperatorCmd::Down { secs: Some(s) } if *s > MAX_DOWN_SECS => {
                Err(format!("down: at most {MAX_DOWN_SECS} s"))
            }
            _ => Ok(()),
        }
    }
}

impl std::fmt::Display for OperatorCmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OperatorCmd::Down { secs: None } => f.write_str("down"),
            OperatorCmd::Down { secs: Some(s) } => write!(f, "down {s}"),
            OperatorCmd::Up => f.write_str("up"),
            OperatorCmd::Simulate { on } => write!(f, "simulate {}", if *on { "on" } else { "off" }),
            OperatorCmd::Status => f.write_str("status"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<OperatorCmd, String> {
        OperatorCmd::parse(&line.split_whitespace().collect::<Vec<_>>())
    }

    #[test]
    fn every_command_parses_and_prints_back() {
        for line in ["down", "down 10", "up", "simulate on", "simulate off", "status"] {
            assert_eq!(parse(line).unwrap().to_string(), line);
        }
        assert_eq!(parse("  down   0 "), Ok(OperatorCmd::Down { secs: Some(0) }));
    }

    #[test]
    fn mistakes_say_what_is_wrong() {
        assert_eq!(parse("dwon 10").unwrap_err(), "unknown command \"dwon 10\"");
        assert!(parse("down ten").unwrap_err().contains("\"ten\" is not a whole number"));
        assert!(parse("down -1").is_err());
        assert!(parse("down 86401").unwrap_err().contains("at most"));
        assert!(parse("simulate maybe").unwrap_err().contains("simulate on"));
        assert!(parse("up now").unwrap_err().contains("too many words"));
        assert_eq!(parse("").unwrap_err(), "no command");
        assert!(OperatorCmd::Down { secs: Some(u64::MAX) }.validate().is_err());
    }

    #[test]
    fn on_the_wire_a_command_needs_the_cluster_key_and_a_fresh_timestamp() {
        use crate::auth::{decode_at_server, encode_server};
        use crate::protocol::{decode, encode_msg, Frame, Msg};
        let key = crate::crypto::random_key();
        let msg = Msg::Operator { nonce: 7, cmd: OperatorCmd::Down { secs: Some(10) } };
        let bytes = encode_server(&key, 5_000, &msg);
        assert_eq!(decode_at_server(&bytes, &key, 5_100, 1_000).unwrap(), (Frame::Ctl(msg.clone()), true));
        assert!(decode_at_server(&bytes, &crate::crypto::random_key(), 5_100, 1_000).is_err(), "another key");
        assert!(decode_at_server(&bytes, &key, 9_000, 1_000).is_err(), "replayed after the window");
        assert!(decode_at_server(&encode_msg(&msg), &key, 5_100, 1_000).is_err(), "without a tag");
        let too_long = Msg::Operator { nonce: 7, cmd: OperatorCmd::Down { secs: Some(MAX_DOWN_SECS + 1) } };
        assert!(decode_at_server(&encode_server(&key, 5_000, &too_long), &key, 5_100, 1_000).is_err());
        let reply = Msg::OperatorReply { nonce: 7, server: 2, result: Err("x".repeat(MAX_REPLY + 1)) };
        let mut plain = crate::frame::FrameKind::Ctl.header().to_vec();
        plain.extend_from_slice(&serde_json::to_vec(&reply).unwrap());
        assert!(decode(&plain).is_err(), "an oversized reply");
    }
}
