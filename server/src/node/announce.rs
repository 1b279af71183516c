//! The load multicast (with the directory digest) and directory repair: applying a record
//! another server sent, and pushing the whole directory to a server that needs it.

use super::*;

impl Node {
    pub(super) fn announce(&mut self, now: u64) {
        let work = self.table.outstanding(self.cfg.id);
        self.announced_work = work;
        self.announced_at = now;
        let load = if self.is_down() { FAILED } else { load_figure(self.cpu, work) };
        if !self.is_down() {
            self.table.set_mine(now, load, work);
        }
        let msg = Msg::Load {
            from: self.cfg.id,
            load,
            work,
            digest: self.dir.digest(),
            epoch: self.epoch,
            token: self.failure.holds_token(),
            ready: self.ready,
        };
        let others: Vec<ServerId> = self.table.others().collect();
        self.multicast(others, &msg);
    }

    /// Applies a committed record (last writer wins).
    pub(super) fn apply_record(&mut self, record: UserRecord) {
        if self.dir.apply(record) {
            self.dirty = true;
        }
    }

    pub(super) fn push_directory(&mut self, to: ServerId) {
        let records: Vec<Msg> =
            self.dir.records().map(|r| Msg::Record { from: self.cfg.id, record: r.clone() }).collect();
        for m in records {
            self.send(Peer::Server(to), m);
        }
    }
}
