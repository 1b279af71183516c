//! The load thread: every load interval it samples this process's CPU use and resident memory
//! (sysinfo) and hands them to the node, which announces its load to the other servers.

use std::time::Duration;
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

/// One sample.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// CPU use of this process since the last sample, in percent of one core.
    pub cpu_percent: f32,
    /// Resident memory in KiB.
    pub rss_kb: u64,
}

/// Samples this process.
pub struct Sampler {
    sys: System,
    pid: Pid,
}

impl Sampler {
    /// A sampler for the current process.
    pub fn new() -> Self {
        Sampler { sys: System::new(), pid: Pid::from_u32(std::process::id()) }
    }

    /// Takes a sample (the first one reports 0 % CPU).
    pub fn sample(&mut self) -> Sample {
        let kind = ProcessRefreshKind::nothing().with_cpu().with_memory();
        self.sys.refresh_processes_specifics(ProcessesToUpdate::Some(&[self.pid]), true, kind);
        match self.sys.process(self.pid) {
            Some(p) => Sample { cpu_percent: p.cpu_usage(), rss_kb: p.memory() / 1024 },
            None => Sample { cpu_percent: 0.0, rss_kb: 0 },
        }
    }
}

impl Default for Sampler {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs the load thread: a sample at once, then one every `interval`, handed to `deliver`
/// until it returns false.
pub fn spawn(
    interval: Duration,
    deliver: impl Fn(Sample) -> bool + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("load".into()).spawn(move || {
        let mut s = Sampler::new();
        while deliver(s.sample()) {
            std::thread::sleep(interval);
        }
    })
}
