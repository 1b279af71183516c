//! Sending: log lines, messages now, and messages that can wait (`send_later`), which ride in
//! the next datagram to that server or leave together after `LATER_WAIT_MS` (a `Batch`).

use super::*;

impl Node {
    pub(super) fn log(&mut self, line: String) {
        self.out.push(Output::Log(line));
    }

    /// Sends `msg`; to a server, the messages waiting for it (see `send_later`) ride along in
    /// one `Batch`, ahead of it.
    pub(super) fn send(&mut self, to: Peer, msg: Msg) {
        let msg = match to {
            Peer::Server(id) if !matches!(msg, Msg::Batch { .. }) => match self.later.remove(&id) {
                Some((_, mut msgs)) => {
                    msgs.push(msg);
                    Msg::Batch { from: self.cfg.id, msgs }
                }
                None => msg,
            },
            _ => msg,
        };
        self.out.push(Output::Send { to, msg });
    }

    pub(super) fn multicast(&mut self, ids: impl IntoIterator<Item = ServerId>, msg: &Msg) {
        for id in ids {
            self.send(Peer::Server(id), msg.clone());
        }
    }

    /// Sends `msg` to server `to` when convenient: with the next message that goes there, or
    /// after `LATER_WAIT_MS` in one `Batch` with the others waiting. For messages nobody waits
    /// on (the announcement of a decision that wrote nothing, its acknowledgement, a claim to a
    /// voter that is not a first responder), so that they seldom cost a datagram of their own.
    pub(super) fn send_later(&mut self, now: u64, to: ServerId, msg: Msg) {
        let (_, waiting) = self.later.entry(to).or_insert_with(|| (now, Vec::new()));
        waiting.push(msg);
        if waiting.len() >= BATCH_MAX {
            self.flush_later(to);
        }
    }

    pub(super) fn flush_later(&mut self, to: ServerId) {
        let Some((_, mut msgs)) = self.later.remove(&to) else { return };
        let msg = match msgs.len() {
            0 => return,
            1 => msgs.remove(0),
            _ => Msg::Batch { from: self.cfg.id, msgs },
        };
        self.send(Peer::Server(to), msg);
    }
}
