//! The pre-spawned worker pool: heavy jobs (hiding images) go through a crossbeam channel to
//! a fixed set of threads; the queued + running count feeds the load figure. The workers run
//! at the lowest priority, so that a thread woken by a datagram (short work on some request's
//! critical path) gets a core at once instead of waiting for a worker's time slice to end.

use crossbeam_channel::{unbounded, Sender};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A unit of work.
pub type Job = Box<dyn FnOnce() + Send + 'static>;

/// Nice value of the worker threads (and of the timer thread): the lowest priority there is.
pub const WORKER_NICE: i32 = 19;

/// Lowers the calling thread's priority to `nice`; false if the system refused. On Linux the
/// nice value belongs to the thread (`setpriority(2)`, "BUGS").
#[cfg(target_os = "linux")]
pub fn lower_priority(nice: i32) -> bool {
    // SAFETY: setpriority takes plain integers and touches no memory of ours; `who` = 0 is the
    // calling thread.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) == 0 }
}

/// Elsewhere the nice value belongs to the whole process, receive threads included: leave it.
#[cfg(not(target_os = "linux"))]
pub fn lower_priority(_nice: i32) -> bool {
    false
}

/// A fixed pool of worker threads.
pub struct Pool {
    tx: Sender<Job>,
    busy: Arc<AtomicUsize>,
}

impl Pool {
    /// Spawns `n` workers named `worker-i`, at nice `WORKER_NICE` where the system allows it.
    pub fn new(n: usize) -> std::io::Result<Pool> {
        let (tx, rx) = unbounded::<Job>();
        let busy = Arc::new(AtomicUsize::new(0));
        for i in 0..n.max(1) {
            let rx = rx.clone();
            let busy = busy.clone();
            std::thread::Builder::new().name(format!("worker-{i}")).spawn(move || {
                lower_priority(WORKER_NICE);
                for job in rx.iter() {
                    job();
                    busy.fetch_sub(1, Ordering::Relaxed);
                }
            })?;
        }
        Ok(Pool { tx, busy })
    }

    /// Queues a job.
    pub fn submit(&self, job: Job) {
        self.busy.fetch_add(1, Ordering::Relaxed);
        if self.tx.send(job).is_err() {
            self.busy.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Jobs queued or running.
    pub fn depth(&self) -> usize {
        self.busy.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_every_job() {
        let pool = Pool::new(3).unwrap();
        let (tx, rx) = unbounded();
        for i in 0..50 {
            let tx = tx.clone();
            pool.submit(Box::new(move || tx.send(i).unwrap()));
        }
        let mut got: Vec<i32> = (0..50).map(|_| rx.recv().unwrap()).collect();
        got.sort();
        assert_eq!(got, (0..50).collect::<Vec<_>>());
    }

    /// The nice value of the calling thread, from /proc (field 19 of its stat line).
    #[cfg(target_os = "linux")]
    fn own_nice() -> i32 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        after_name.split(' ').nth(16).unwrap().parse().unwrap()
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn jobs_run_at_the_lowest_priority_and_the_rest_does_not() {
        let before = own_nice();
        let pool = Pool::new(1).unwrap();
        let (tx, rx) = unbounded();
        pool.submit(Box::new(move || tx.send(own_nice()).unwrap()));
        assert_eq!(rx.recv().unwrap(), WORKER_NICE);
        assert_eq!(own_nice(), before, "only the workers are lowered");
    }
}
