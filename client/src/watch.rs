//! The watch: a thread of a signed-in client that probes every server each second, says so
//! (a `notice:` line) when no server has answered for a while, keeps probing, and signs the
//! user in again by itself when the cloud answers again. While the cloud counts as lost,
//! requests give up quickly (see [`crate::cloud::LOST_WAIT`]) instead of hanging the prompt.

use crate::cloud::{Cloud, Health, Prober};
use crate::notice::notice;
use crate::store::Identity;
use common::protocol::{Answer, Op};
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;

/// How often the cloud is probed.
pub const PROBE_EVERY: Duration = Duration::from_millis(1000);

/// Silence of every server after which the cloud counts as lost.
pub const LOST_AFTER: Duration = Duration::from_millis(3500);

/// Longest a sign-in attempt of the watch waits for an answer.
pub const SIGN_IN_WAIT: Duration = Duration::from_secs(3);

/// Starts the watch thread for the signed-in user `me`.
pub fn spawn(cloud: Arc<Mutex<Cloud>>, me: Identity) -> Result<(), String> {
    let (health, prober) = {
        let c = cloud.lock();
        (c.health(), c.prober()?)
    };
    std::thread::Builder::new()
        .name("cloud-watch".into())
        .spawn(move || run(cloud, health, prober, me))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn run(cloud: Arc<Mutex<Cloud>>, health: Arc<Health>, mut prober: Prober, me: Identity) {
    loop {
        prober.probe();
        std::thread::sleep(PROBE_EVERY);
        let silence = health.silence();
        if !health.is_lost() {
            if silence >= LOST_AFTER {
                health.set_lost(true);
                notice(&format!(
                    "lost the cloud: no server has answered for {} s; retrying in the background \
                     (commands that need the cloud fail until it is back)",
                    silence.as_secs()
                ));
            }
            continue;
        }
        if silence >= PROBE_EVERY * 2 {
            continue;
        }
        // A server answers again: sign in again (the directory may have marked us offline).
        let op = Op::SignIn { name: me.name.clone(), auth: Default::default() };
        let answer = cloud.lock().call_within(op, None, Some(SIGN_IN_WAIT)).map(|r| r.reply.result);
        match answer {
            Ok(Ok(Answer::SignedIn { .. })) => {
                health.set_lost(false);
                notice(&format!("the cloud is back: signed in again as {}", me.name));
            }
            Ok(Err(e)) => {
                health.set_lost(false);
                notice(&format!("the cloud is back but refused to sign you in: {e}"));
            }
            // Not ready yet (a restarted server waits to hear the others): try again.
            _ => {}
        }
    }
}
