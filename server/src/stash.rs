//! Bytes kept aside for a request, keyed by request and client address, bounded in count,
//! bytes and time, oldest out first. Two uses: the payloads that came attached to requests
//! (every server keeps its copy; only the winner takes it), and the stego PNGs that go back
//! attached to their replies (kept for the client's retries, since nothing acknowledges them).

use common::protocol::RequestId;
use std::collections::VecDeque;
use std::net::SocketAddr;

/// How much a stash holds at most.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Items.
    pub count: usize,
    /// Bytes in all.
    pub bytes: usize,
    /// Age of an item, ms.
    pub ms: u64,
    /// Keep only the newest item of each address (a client runs one request at a time: once
    /// its next one arrives, it no longer needs the last one's).
    pub newest_per_address: bool,
}

/// Payloads that came attached to requests: until their request is won here, or they expire
/// (a server that wins later asks for an upload).
pub const UPLOADS: Limits = Limits { count: 256, bytes: 8 * 1024 * 1024, ms: 2000, newest_per_address: false };

/// Results that go back attached to their replies: until their client's next result, or they
/// expire (a client that missed one asks again within this time; later, it sends a new request).
pub const RESULTS: Limits = Limits { count: 256, bytes: 8 * 1024 * 1024, ms: 3000, newest_per_address: true };

/// Bytes kept per (request, client), oldest first.
pub struct Stash {
    limits: Limits,
    items: VecDeque<(u64, RequestId, SocketAddr, Vec<u8>)>,
    bytes: usize,
}

impl Stash {
    /// An empty stash holding at most `limits`.
    pub fn new(limits: Limits) -> Self {
        Stash { limits, items: VecDeque::new(), bytes: 0 }
    }

    /// Keeps `payload` for `rid` from (or for) `addr`. A second copy for `rid` is ignored: the
    /// first stays.
    pub fn put(&mut self, now: u64, rid: RequestId, addr: SocketAddr, payload: Vec<u8>) {
        if self.items.iter().any(|(_, r, _, _)| *r == rid) {
            return;
        }
        if self.limits.newest_per_address {
            let mut freed = 0;
            self.items.retain(|(_, _, a, p)| {
                let keep = *a != addr;
                if !keep {
                    freed += p.len();
                }
                keep
            });
            self.bytes -= freed;
        }
        self.bytes += payload.len();
        self.items.push_back((now, rid, addr, payload));
        while self.items.len() > self.limits.count || self.bytes > self.limits.bytes {
            self.pop();
        }
    }

    fn pop(&mut self) {
        if let Some((_, _, _, p)) = self.items.pop_front() {
            self.bytes -= p.len();
        }
    }

    fn position(&self, rid: RequestId, addr: SocketAddr) -> Option<usize> {
        self.items.iter().position(|(_, r, a, _)| *r == rid && *a == addr)
    }

    /// The bytes kept for `rid` and `addr`, taken out.
    pub fn take(&mut self, rid: RequestId, addr: SocketAddr) -> Option<Vec<u8>> {
        let (_, _, _, p) = self.items.remove(self.position(rid, addr)?)?;
        self.bytes -= p.len();
        Some(p)
    }

    /// The bytes kept for `rid` and `addr`, left in place.
    pub fn get(&self, rid: RequestId, addr: SocketAddr) -> Option<&[u8]> {
        self.items.get(self.position(rid, addr)?).map(|(_, _, _, p)| &p[..])
    }

    /// Drops what is older than the time limit.
    pub fn expire(&mut self, now: u64) {
        while self.items.front().is_some_and(|(t, ..)| now >= t + self.limits.ms) {
            self.pop();
        }
    }

    /// Items kept.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True if nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rid(seq: u64) -> RequestId {
        RequestId { client: 1, seq }
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn bytes_are_given_once_to_their_address_and_the_first_copy_stays() {
        let mut s = Stash::new(UPLOADS);
        s.put(0, rid(1), addr(1), vec![1; 10]);
        s.put(1, rid(1), addr(1), vec![2; 10]);
        assert_eq!(s.take(rid(1), addr(2)), None, "another address gets nothing");
        assert_eq!(s.get(rid(1), addr(1)), Some(&[1u8; 10][..]), "read in place");
        assert_eq!(s.take(rid(1), addr(1)), Some(vec![1; 10]), "the first copy");
        assert_eq!(s.take(rid(1), addr(1)), None, "taken once");
        assert_eq!(s.get(rid(1), addr(1)), None);
        assert_eq!(s.bytes, 0);
    }

    #[test]
    fn a_stash_is_bounded_in_count_bytes_and_time() {
        let limits = Limits { count: 8, bytes: 1000, ms: 50, newest_per_address: false };
        let mut s = Stash::new(limits);
        for i in 0..(limits.count as u64 + 3) {
            s.put(i, rid(i), addr(1), vec![0; 10]);
        }
        assert_eq!(s.len(), limits.count);
        assert_eq!(s.take(rid(0), addr(1)), None, "the oldest went first");
        assert!(s.take(rid(limits.count as u64 + 2), addr(1)).is_some());
        let mut s = Stash::new(limits);
        for i in 0..4 {
            s.put(i, rid(i), addr(1), vec![0; limits.bytes / 3]);
        }
        assert!(s.bytes <= limits.bytes && s.len() == 3, "{} bytes", s.bytes);
        s.expire(3 + limits.ms);
        assert!(s.is_empty() && s.bytes == 0, "all expired");
    }

    #[test]
    fn a_results_stash_keeps_only_the_newest_of_each_client() {
        let mut s = Stash::new(RESULTS);
        s.put(0, rid(1), addr(1), vec![1; 10]);
        s.put(0, rid(2), addr(2), vec![2; 10]);
        s.put(1, rid(3), addr(1), vec![3; 20]);
        assert_eq!(s.get(rid(1), addr(1)), None, "the client moved on");
        assert_eq!(s.get(rid(3), addr(1)), Some(&[3u8; 20][..]));
        assert_eq!(s.get(rid(2), addr(2)), Some(&[2u8; 10][..]), "other clients keep theirs");
        assert_eq!((s.len(), s.bytes), (2, 30));
    }
}
