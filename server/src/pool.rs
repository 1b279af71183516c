//! The pre-spawned worker pool: heavy jobs (hiding images) go through a crossbeam channel to
//! a fixed set of threads; the queued + running count feeds the load figure. The workers run
//! at the process's normal priority: at the lowest one (nice 19) they starved whenever anything
//! else on the machine wanted the CPU (an 8.5 MB photo took minutes beside two busy processes),
//! and a starved worker delivering its result held the server's lock the whole time.

use crossbeam_channel::{unbounded, Sender};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A unit of work.
pub type Job = Box<dyn FnOnce() + Send + 'static>;

/// A fixed pool of worker threads.
pub struct Pool {
    tx: Sender<Job>,
    busy: Arc<AtomicUsize>,
}

impl Pool {
    /// Spawns `n` workers named `worker-i`.
    pub fn new(n: usize) -> std::io::Result<Pool> {
        let (tx, rx) = unbounded::<Job>();
        let busy = Arc::new(AtomicUsize::new(0));
        for i in 0..n.max(1) {
            let rx = rx.clone();
            let busy = busy.clone();
            std::thread::Builder::new().name(format!("worker-{i}")).spawn(move || {
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
}
