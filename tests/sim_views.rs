//! Deterministic simulation of views counted by the cloud (`common/src/views.rs`): alice grants,
//! adds to and revokes bob's views while two processes of bob (a second client, or a folder
//! copied back) view as fast as they can, each with its own slot hints and nonces, over the
//! shared simulated world (`tests/support/sim.rs`): 10 % loss, duplication, reordering, delay,
//! crashes and restarts of any server, a partition that heals. Seeds as in the other
//! simulations (`SIM_SEED=n SIM_TRACE=1`, `SIM_SEEDS=n`).
//!
//! Invariants, per seed: every view that succeeded (an answer sealed for the asking attempt's own
//! nonce, whose key opens and is the share's image key) is a distinct slot; the views that
//! succeeded never exceed the views alice's answered grants opened; every view was spent under a
//! grant that left views, and one asked for after a revoke was answered, under a later grant
//! (the revoke holds until alice grants again); in the race without later grants, never more
//! than the one grant; and the common ones (every request answered once, replicas equal and
//! saved).

mod support {
    pub mod sim;
}

use common::crypto::{self, Key, Purpose};
use common::protocol::{Answer, Auth, Msg, Op, RequestId};
use common::requester::{Completion, Requester};
use common::rng::Rng;
use common::simnet::NodeId;
use common::views::{self, slot_rid};
use std::collections::BTreeMap;
use support::sim::{run_seeds, seeds, Actors, CloudClient, Event, Failure, Schedule, World, CLIENT_BASE, SERVERS};

const IMAGE: &str = "cat";
/// Long enough that no request times out while a partition lasts.
const TIMEOUT_MS: u64 = 120_000;
/// A viewer told "no views left" waits this long before asking again.
const NO_VIEWS_PAUSE: u64 = 300;

/// One process of bob's viewing as fast as it can.
struct Viewer {
    cloud: CloudClient,
    /// The slot to try next.
    hint: u32,
    /// The nonce of each slot asked for by this process (kept until that slot's view opens).
    nonces: BTreeMap<RequestId, (String, u64)>,
    /// The slot and nonce of the request waited on.
    asking: Option<(u32, String)>,
    /// When it may ask again.
    pause_until: u64,
    counter: u64,
}

/// A view that succeeded: its slot, who, when its attempt began, and the number of the grant in
/// force when the cloud spent it.
#[derive(Debug, Clone)]
struct Success {
    slot: u32,
    viewer: usize,
    began: u64,
    grant: u64,
}

/// alice's grants: when each was sent and answered, and the views left after it.
#[derive(Debug, Clone)]
struct GrantLog {
    answered: u64,
    left: u32,
    number: u64,
}

enum AliceStep {
    Register,
    WaitBob,
    ShareKey,
    Grant,
    Idle,
}

struct Alice {
    cloud: CloudClient,
    step: AliceStep,
    /// Grants to make, in order: (views, add), each after a pause.
    plan: Vec<(u32, bool)>,
    next_at: u64,
    grants: Vec<GrantLog>,
    share_key: Option<Key>,
}

struct Views {
    alice: Alice,
    viewers: Vec<Viewer>,
    bob_token: Option<String>,
    successes: Vec<Success>,
    failures: Vec<String>,
    rng: Rng,
}

impl Actors for Views {
    type Event = std::convert::Infallible;

    fn nodes(&self) -> Vec<NodeId> {
        std::iter::once(self.alice.cloud.node).chain(self.viewers.iter().map(|v| v.cloud.node)).collect()
    }

    fn deliver(w: &mut World<Self>, to: NodeId, _from: NodeId, msg: Msg) {
        let Msg::Reply(r) = msg else { return };
        if to == w.actors.alice.cloud.node {
            if let Some(done) = w.actors.alice.cloud.req.on_reply(r) {
                w.alice_done(done);
            }
        } else if let Some(i) = w.actors.viewers.iter().position(|v| v.cloud.node == to) {
            if let Some(done) = w.actors.viewers[i].cloud.req.on_reply(r) {
                w.viewer_done(i, done);
            }
        }
    }

    fn tick(w: &mut World<Self>) {
        for t in w.actors.alice.cloud.tick(&mut w.net) {
            w.alice_done(t);
        }
        w.alice_next();
        for i in 0..w.actors.viewers.len() {
            for t in w.actors.viewers[i].cloud.tick(&mut w.net) {
                w.viewer_done(i, t);
            }
            w.viewer_next(i);
        }
    }

    fn on_event(_w: &mut World<Self>, ev: Self::Event) {
        match ev {}
    }
}

impl World<Views> {
    fn alice_next(&mut self) {
        let now = self.now();
        let a = &mut self.actors.alice;
        if a.cloud.current.is_some() || now < a.next_at {
            return;
        }
        let op = match a.step {
            AliceStep::Register => Op::Register { name: "alice".into() },
            AliceStep::WaitBob if self.actors.bob_token.is_some() => {
                a.step = AliceStep::ShareKey;
                return;
            }
            AliceStep::WaitBob | AliceStep::Idle => return,
            AliceStep::ShareKey => Op::ShareKey {
                owner: "alice".into(),
                auth: Auth::default(),
                viewer: "bob".into(),
                image_id: IMAGE.into(),
            },
            AliceStep::Grant => {
                if a.plan.is_empty() {
                    a.step = AliceStep::Idle;
                    return;
                }
                let (views, add) = a.plan.remove(0);
                self.net.note(format!("alice grants {views} ({})", if add { "add" } else { "set" }));
                Op::Grant {
                    owner: "alice".into(),
                    auth: Auth::default(),
                    viewer: "bob".into(),
                    image_id: IMAGE.into(),
                    views,
                    add,
                    lease: None,
                }
            }
        };
        a.cloud.request(&mut self.net, op);
    }

    fn alice_done(&mut self, done: Completion) {
        let Some(out) = self.actors.alice.cloud.settle(&mut self.net, done) else { return };
        let now = self.now();
        let a = &mut self.actors.alice;
        match (&a.step, out.result) {
            (AliceStep::Register, Ok(Answer::Registered { secret, .. })) => {
                a.cloud.token = secret;
                a.step = AliceStep::WaitBob;
            }
            (AliceStep::ShareKey, Ok(Answer::ShareKey { for_owner, .. })) => {
                let wrap = crypto::derive(&common::auth::secret_bytes(&a.cloud.token), Purpose::Wrap);
                let sealed = crypto::from_hex(&for_owner).unwrap_or_default();
                let opened = crypto::open(&wrap, &common::auth::share_aad("alice", "bob", IMAGE), &sealed);
                a.share_key = opened.ok().and_then(|k| k.try_into().ok());
                a.step = AliceStep::Grant;
            }
            (AliceStep::Grant, Ok(Answer::Granted { left, grant })) => {
                a.grants.push(GrantLog { answered: now, left, number: grant });
                let pause = 200 + self.actors.rng.below(1500);
                let a = &mut self.actors.alice;
                a.next_at = now + pause;
                self.net.note(format!("alice's grant answered: {left} left"));
            }
            (_, r) => {
                let e = format!("alice: unexpected {r:?}");
                self.actors.failures.push(e);
            }
        }
    }

    fn viewer_next(&mut self, i: usize) {
        let now = self.now();
        let Some(token) = self.actors.bob_token.clone() else {
            // bob registers through his first process.
            let v = &mut self.actors.viewers[i];
            if i == 0 && v.cloud.current.is_none() {
                v.cloud.request(&mut self.net, Op::Register { name: "bob".into() });
            }
            return;
        };
        if self.actors.alice.grants.is_empty() {
            return;
        }
        let seed = self.seed;
        let v = &mut self.actors.viewers[i];
        if v.cloud.current.is_some() || now < v.pause_until {
            return;
        }
        v.cloud.token = token;
        let slot = v.hint;
        let rid = slot_rid("alice", "bob", IMAGE, slot);
        v.counter += 1;
        let fresh = format!("{seed:016x}{:08x}{:08x}", i, v.counter);
        let (nonce, _) = v.nonces.entry(rid).or_insert((fresh, now)).clone();
        v.asking = Some((slot, nonce.clone()));
        let op = Op::View {
            viewer: "bob".into(),
            auth: Auth::default(),
            owner: "alice".into(),
            image_id: IMAGE.into(),
            slot,
            nonce,
            lease: false,
        };
        v.cloud.request_as(&mut self.net, Some(rid), op);
    }

    fn viewer_done(&mut self, i: usize, done: Completion) {
        let Some(out) = self.actors.viewers[i].cloud.settle(&mut self.net, done) else { return };
        let now = self.now();
        if self.actors.bob_token.is_none() {
            match out.result {
                Ok(Answer::Registered { secret, .. }) => self.actors.bob_token = Some(secret),
                r => self.actors.failures.push(format!("bob register: {r:?}")),
            }
            return;
        }
        let Some((slot, nonce)) = self.actors.viewers[i].asking.take() else { return };
        let a = match out.result {
            Ok(Answer::Viewed(a)) => a,
            r => {
                self.actors.failures.push(format!("bob {i} view of slot {slot}: {r:?}"));
                return;
            }
        };
        let rid = slot_rid("alice", "bob", IMAGE, slot);
        if a.nonce != nonce {
            // Another attempt's answer: that slot is used.
            let v = &mut self.actors.viewers[i];
            v.hint = (slot + 1).max(a.next);
            return;
        }
        let began = self.actors.viewers[i].nonces.get(&rid).map_or(now, |(_, t)| *t);
        match &a.key {
            Some(sealed) => {
                if let Err(e) = self.check_key(sealed, &nonce, slot) {
                    self.actors.failures.push(format!("bob {i} slot {slot}: {e}"));
                }
                self.net.note(format!("bob {i} VIEWED slot {slot} ({} left)", a.left));
                self.actors.successes.push(Success { slot, viewer: i, began, grant: a.grant });
                let v = &mut self.actors.viewers[i];
                v.nonces.remove(&rid);
                v.hint = a.next;
            }
            None if a.left > 0 && a.next > slot => self.actors.viewers[i].hint = a.next,
            None => {
                let v = &mut self.actors.viewers[i];
                v.hint = a.next;
                v.pause_until = now + NO_VIEWS_PAUSE;
            }
        }
    }

    /// The key in a view's answer opens for bob and this nonce, and is the share's image key.
    fn check_key(&self, sealed: &str, nonce: &str, slot: u32) -> Result<(), String> {
        let token = self.actors.bob_token.clone().unwrap_or_default();
        let wrap = crypto::derive(&common::auth::secret_bytes(&token), Purpose::Wrap);
        let sealed = crypto::from_hex(sealed).ok_or("malformed key")?;
        let key =
            crypto::open(&views::view_wrap_key(&wrap, nonce), &views::view_aad("alice", "bob", IMAGE, slot), &sealed)
                .map_err(|_| "the key does not open for bob's nonce".to_string())?;
        let share = self.actors.alice.share_key.ok_or("alice has no share key")?;
        if key != views::image_key(&share).to_vec() {
            return Err("the key is not the share's image key".into());
        }
        Ok(())
    }

    /// The views invariants (see the file's doc).
    fn check_views(&self, one_grant: bool) -> Result<(), String> {
        let s = &self.actors;
        if let Some(f) = s.failures.first() {
            return Err(f.clone());
        }
        let mut slots: Vec<u32> = s.successes.iter().map(|x| x.slot).collect();
        slots.sort_unstable();
        if slots.windows(2).any(|w| w[0] == w[1]) {
            return Err(format!("a slot viewed twice: {slots:?}"));
        }
        let opened: u32 = s.alice.grants.iter().map(|g| g.left).sum();
        if slots.len() as u32 > opened {
            return Err(format!("{} views succeeded, the grants opened {opened}", slots.len()));
        }
        if one_grant && slots.len() as u32 > s.alice.grants[0].left {
            return Err(format!("{} views on a grant of {}", slots.len(), s.alice.grants[0].left));
        }
        // Every view was spent under a grant that left views (never under a revoke), and a view
        // asked for after a revoke was answered was spent under a later grant.
        for x in &s.successes {
            match s.alice.grants.iter().find(|g| g.number == x.grant) {
                Some(g) if g.left > 0 => {}
                g => return Err(format!("bob {} viewed slot {} under grant {g:?}", x.viewer, x.slot)),
            }
            if let Some(r) = s.alice.grants.iter().find(|r| r.left == 0 && r.answered < x.began && x.grant <= r.number)
            {
                return Err(format!(
                    "bob {} viewed slot {} under grant {} after revoke {r:?}",
                    x.viewer, x.slot, x.grant
                ));
            }
        }
        Ok(())
    }
}

fn viewer(i: u32) -> Viewer {
    Viewer {
        cloud: CloudClient::new("bob", CLIENT_BASE + 1 + i, Requester::new(0xb0b0 + i as u64, 250, TIMEOUT_MS)),
        hint: 1,
        nonces: BTreeMap::new(),
        asking: None,
        pause_until: 0,
        counter: 0,
    }
}

fn actors(seed: u64, plan: Vec<(u32, bool)>) -> Views {
    Views {
        alice: Alice {
            cloud: CloudClient::new("alice", CLIENT_BASE, Requester::new(0xa11ce, 250, TIMEOUT_MS)),
            step: AliceStep::Register,
            plan,
            next_at: 1500,
            grants: vec![],
            share_key: None,
        },
        viewers: vec![viewer(0), viewer(1)],
        bob_token: None,
        successes: vec![],
        failures: vec![],
        rng: Rng::new(seed ^ 0x5eed),
    }
}

/// Faults for one run: crashes and restarts of two servers, two partitions that heal (while
/// alice is still granting, so a server cut off during a revoke may win a view after healing).
fn faults(rng: &mut Rng) -> Schedule<std::convert::Infallible> {
    let mut ev = Schedule::default();
    let a = SERVERS[rng.below(3) as usize];
    let b = SERVERS[rng.below(3) as usize];
    let t = 2_500 + rng.below(3_000);
    ev.push(t, Event::Crash(a));
    ev.push(t + 1_000 + rng.below(3_000), Event::Restart(a));
    let t = 3_000 + rng.below(3_000);
    ev.push(t, Event::Isolate(SERVERS[rng.below(3) as usize]));
    ev.push(t + 500 + rng.below(2_500), Event::Heal);
    let t = 9_000 + rng.below(3_000);
    ev.push(t, Event::Isolate(b));
    ev.push(t + 1_000 + rng.below(2_000), Event::Heal);
    let t = 14_000 + rng.below(2_000);
    ev.push(t, Event::Crash(b));
    ev.push(t + 500 + rng.below(2_000), Event::Restart(b));
    ev
}

/// One run: alice's `plan`, two viewers, the faults; then calm until every request is
/// answered and both viewers were told there are no views left.
fn run(seed: u64, plan: Vec<(u32, bool)>) -> Result<(usize, u32), Failure> {
    let one_grant = plan.len() == 1;
    let mut w = World::new(seed, actors(seed, plan));
    let mut rng = Rng::new(seed);
    let mut ev = faults(&mut rng);
    w.run_until(&mut ev, 20_000);
    w.calm();
    let settled = |w: &World<Views>| {
        matches!(w.actors.alice.step, AliceStep::Idle)
            && w.actors.alice.cloud.current.is_none()
            && w.actors.viewers.iter().all(|v| v.pause_until > w.now() && v.cloud.current.is_none())
    };
    w.run_while(&mut ev, 200_000, |w| !settled(w));
    if !settled(&w) {
        return Err(w.fail("not settled: a request or a viewer still waits".into()));
    }
    let clients: Vec<&CloudClient> =
        std::iter::once(&w.actors.alice.cloud).chain(w.actors.viewers.iter().map(|v| &v.cloud)).collect();
    w.check_requests(&clients).map_err(|e| w.fail(e))?;
    w.check_replicas().map_err(|e| w.fail(e))?;
    w.check_views(one_grant).map_err(|e| w.fail(e))?;
    let opened = w.actors.alice.grants.iter().map(|g| g.left).sum();
    Ok((w.actors.successes.len(), opened))
}

fn report(name: &str, results: &[(usize, u32)]) {
    let viewed: usize = results.iter().map(|r| r.0).sum();
    let opened: u32 = results.iter().map(|r| r.1).sum();
    println!("{name}: {} seeds, {viewed} views succeeded of {opened} granted", results.len());
}

#[test]
fn two_viewers_racing_on_one_grant_never_exceed_it() {
    let results = run_seeds("race", &seeds(), |seed| run(seed, vec![(5, false)]));
    report("race", &results);
}

#[test]
fn grants_adds_and_revokes_bound_the_views_and_a_revoke_holds() {
    let results = run_seeds("grants", &seeds(), |seed| {
        let mut rng = Rng::new(seed ^ 0x9a);
        let mut plan: Vec<(u32, bool)> = vec![(3, false)];
        for _ in 0..9 {
            plan.push(match rng.below(3) {
                0 => (rng.below(4) as u32, false),
                1 => (1 + rng.below(3) as u32, true),
                _ => (0, false),
            });
        }
        plan.push((0, false)); // it ends revoked
        run(seed, plan)
    });
    report("grants", &results);
}
