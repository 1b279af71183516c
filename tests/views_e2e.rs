//! Views counted by the cloud, with real servers and clients: a viewer who copies his data
//! folder back gets no extra view; a revoke sent while the viewer is offline holds even when
//! he puts his old files back; a server SIGKILLed during a view counts it once or not at all;
//! a forged view request is refused and a replayed one gets its first answer, never a second
//! view.

mod support;

use client::cloud::Cloud;
use client::launch::Cluster;
use common::auth::{sign_request, wall_ms};
use common::protocol::{Answer, Auth, Op};
use common::views::{self, slot_rid};
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::{cluster, notice, ok, ClientProc};

const IMAGE: &str = "sample-10k";

fn started(c: &Cluster, name: &str) -> ClientProc {
    let mut p = ClientProc::start(c, name);
    let first = p.result(Duration::from_secs(20)).unwrap_or_default();
    assert!(first.starts_with("ok: signed in"), "{name}: {first}");
    p
}

/// alice encrypts the sample and shares it with bob with `views` views; both stay signed in.
fn shared(c: &Cluster, views: u32) -> (ClientProc, ClientProc) {
    let mut alice = started(c, "alice");
    ok(&mut alice, "encrypt images/sample-10k.jpg");
    let mut bob = started(c, "bob");
    ok(&mut bob, &format!("request alice {IMAGE} {views}"));
    notice(&mut alice, "bob asks for");
    ok(&mut alice, "approve 1");
    notice(&mut bob, &format!("received {IMAGE} from alice"));
    (alice, bob)
}

/// `cp -a from to` (the viewer's own backup of his data folder).
fn copy_folder(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    let st = Command::new("cp").arg("-a").arg(from).arg(to).status().expect("cp runs");
    assert!(st.success(), "cp -a {} {}", from.display(), to.display());
}

/// bob's data folder replaced by `backup`, a new bob process, one `view`: what it answered.
fn view_with_old_files(c: &Cluster, backup: &Path) -> String {
    let folder = c.dir.join("client-bob");
    std::fs::remove_dir_all(&folder).expect("remove");
    copy_folder(backup, &folder);
    let mut bob = started(c, "bob");
    let line = bob.run(&format!("view {IMAGE}"));
    bob.finish();
    line
}

/// bob's secret, from his identity file.
fn secret_of(c: &Cluster, name: &str) -> Vec<u8> {
    let id: serde_json::Value =
        serde_json::from_slice(&std::fs::read(c.dir.join(format!("client-{name}/identity.json"))).expect("identity"))
            .expect("json");
    common::auth::secret_bytes(id["secret"].as_str().expect("secret"))
}

/// A cloud link of our own that signs as `name`.
fn link_as(c: &Cluster, secret: Vec<u8>) -> Cloud {
    let mut cloud = Cloud::connect(&c.cfg, None).expect("connect");
    cloud.set_secret(secret);
    cloud
}

/// The views bob has left of alice's image, as the cloud counts them.
fn cloud_left(c: &Cluster) -> u32 {
    let mut cloud = link_as(c, secret_of(c, "bob"));
    let op = Op::Views { viewer: "bob".into(), auth: Auth::default(), owner: "alice".into(), image_id: IMAGE.into() };
    match cloud.call(op, None).expect("answered").reply.result {
        Ok(Answer::Views { left, .. }) => left,
        other => panic!("views: {other:?}"),
    }
}

#[test]
fn a_folder_copied_back_buys_no_view() {
    let c = cluster("views-copy", 3);
    let (alice, bob) = shared(&c, 1);
    bob.finish();
    let folder = c.dir.join("client-bob");
    let backup = c.dir.join("backup-bob");
    copy_folder(&folder, &backup);

    let mut bob = started(&c, "bob");
    let line = ok(&mut bob, &format!("view {IMAGE}"));
    assert!(line.contains("(0 views left)"), "{line}");
    let again = bob.run(&format!("view {IMAGE}"));
    assert!(again.starts_with("error: no views left"), "{again}");
    bob.finish();

    // bob puts his old folder back: his copy says 1 view left, the cloud knows better.
    let line = view_with_old_files(&c, &backup);
    assert!(line.starts_with("error: no views left"), "the replay bought a view: {line}");
    println!("after the folder was copied back: {line}");
    assert_eq!(cloud_left(&c), 0);
    alice.finish();
}

#[test]
fn a_revoke_sent_while_the_viewer_is_offline_holds_against_his_old_files() {
    let c = cluster("views-revoke", 3);
    let (mut alice, mut bob) = shared(&c, 3);
    ok(&mut bob, &format!("view {IMAGE}"));
    bob.finish();
    let folder = c.dir.join("client-bob");
    let backup = c.dir.join("backup-bob");
    copy_folder(&folder, &backup);

    let r = ok(&mut alice, &format!("grant bob {IMAGE} 0"));
    assert!(r.contains("revoked") && r.contains("offline"), "{r}");
    assert_eq!(cloud_left(&c), 0, "the revoke holds in the cloud at once");

    // bob comes back: his client learns of the revoke and deletes the copy.
    let mut bob = started(&c, "bob");
    notice(&mut bob, &format!("alice revoked {IMAGE}"));
    bob.finish();
    // He puts his old files back: the copy, its rights (2 views left) and its keys.
    let line = view_with_old_files(&c, &backup);
    assert!(line.starts_with("error: no views left"), "viewed after the revoke: {line}");

    // A new grant gives views again, counted from the cloud's window.
    ok(&mut alice, &format!("grant bob {IMAGE} 1"));
    let mut bob = started(&c, "bob");
    let line = ok(&mut bob, &format!("view {IMAGE}"));
    assert!(line.contains("(0 views left)"), "{line}");
    bob.finish();
    alice.finish();
}

#[test]
fn a_server_killed_during_a_view_counts_it_once_or_not_at_all() {
    let mut c = cluster("views-kill", 3);
    let granted = 6;
    let (alice, mut bob) = shared(&c, granted);
    let original = std::fs::read("images/sample-10k.jpg").expect("sample");
    let mut shown = 0u32;
    let mut failed = 0u32;
    // Each round kills the server that wins the view on an idle cluster (equal loads: the tie
    // goes by the request id, which is the slot's) as the request leaves, then restarts it.
    for delay_ms in [0u64, 0, 1, 2] {
        let rid = slot_rid("alice", "bob", IMAGE, shown + 1);
        let victim = (1..=3).min_by_key(|&id| server::election::tie_key(rid, id)).expect("a server");
        bob.send(&format!("view {IMAGE}"));
        std::thread::sleep(Duration::from_millis(delay_ms));
        c.kill(victim);
        let line = bob.result(Duration::from_secs(30)).expect("the view finishes");
        println!("view while server {victim} was SIGKILLed after {delay_ms} ms: {line}");
        if line.starts_with("ok:") {
            assert!(client::viewing::revealed_is(&line, &original), "byte-exact: {line}");
            shown += 1;
        } else {
            failed += 1;
        }
        c.start(victim).expect("restart");
        c.wait_ready(Duration::from_secs(20)).expect("ready again");
    }
    // The rest, until the cloud says no more.
    loop {
        let line = bob.run(&format!("view {IMAGE}"));
        if line.starts_with("error: no views left") {
            break;
        }
        assert!(line.starts_with("ok:"), "{line}");
        shown += 1;
        assert!(shown <= granted, "more views than granted");
    }
    // Every shown view was counted once; a failed one was counted once or not at all.
    assert!(shown <= granted && shown + failed >= granted, "shown {shown}, failed {failed} of {granted}");
    assert_eq!(cloud_left(&c), 0);
    println!("{shown} views shown, {failed} failed during a kill, {granted} granted");
    bob.finish();
    alice.finish();
}

#[test]
fn forged_and_replayed_view_requests_get_no_view() {
    let c = cluster("views-forged", 3);
    let (alice, bob) = shared(&c, 2);
    let mut carol = Cloud::connect(&c.cfg, None).expect("connect");
    support::register(&mut carol, "carol");

    // carol asks for bob's view, signing with her own secret.
    let rid = slot_rid("alice", "bob", IMAGE, 1);
    let view = |nonce: &str| Op::View {
        viewer: "bob".into(),
        auth: Auth::default(),
        owner: "alice".into(),
        image_id: IMAGE.into(),
        slot: 1,
        nonce: nonce.into(),
        lease: false,
    };
    let forged = carol.call_as(rid, view(&views::new_nonce())).expect("answered").reply.result;
    assert!(forged.as_ref().is_err_and(|e| e.contains("authentication failed")), "{forged:?}");
    assert_eq!(cloud_left(&c), 2, "a forged request spends nothing");

    // bob's own request, captured and replayed after the window: refused.
    let secret = secret_of(&c, "bob");
    let mut stale = view(&views::new_nonce());
    sign_request(&mut stale, rid, &secret, wall_ms() - 120_000);
    let mut raw = Cloud::connect(&c.cfg, None).expect("connect"); // sends requests as signed
    let r = raw.call_as(rid, stale).expect("answered").reply.result;
    assert!(r.as_ref().is_err_and(|e| e.contains("replay")), "{r:?}");
    assert_eq!(cloud_left(&c), 2, "a stale request spends nothing");

    // A valid request sent twice (a replay inside the window, or a retry): one view counted, and
    // the second copy gets the first answer, sealed for the first request's nonce.
    let nonce = views::new_nonce();
    let mut valid = view(&nonce);
    sign_request(&mut valid, rid, &secret, wall_ms());
    // (A link of its own: the servers' refusals of the stale copy may still be arriving.)
    let mut raw = Cloud::connect(&c.cfg, None).expect("connect");
    let first = raw.call_as(rid, valid.clone()).expect("answered").reply.result;
    let second = raw.call_as(rid, valid).expect("answered").reply.result;
    assert_eq!(first, second, "one answer");
    let Ok(Answer::Viewed(a)) = first else { panic!("{first:?}") };
    assert!(a.key.is_some() && a.nonce == nonce);
    assert_eq!(cloud_left(&c), 1, "counted once");
    // The same slot asked again with a fresh nonce (a restored client): the first answer, which
    // does not open for this nonce, and no view.
    let mut again = view(&views::new_nonce());
    sign_request(&mut again, rid, &secret, wall_ms());
    let r = raw.call_as(rid, again).expect("answered").reply.result;
    let Ok(Answer::Viewed(b)) = r else { panic!("{r:?}") };
    assert_eq!(b.nonce, nonce, "the first attempt's answer, not a second key");
    assert_eq!(cloud_left(&c), 1);
    bob.finish();
    alice.finish();
}

#[test]
fn a_lease_gives_views_without_the_cloud_counted_when_taken() {
    let mut c = cluster("views-lease", 3);
    let (mut alice, mut bob) = shared(&c, 5);
    let r = bob.run(&format!("lease {IMAGE} 2"));
    assert!(r.starts_with("error:") && r.contains("allows no offline views"), "{r}");
    ok(&mut alice, &format!("offline bob {IMAGE} 2 60"));
    let r = ok(&mut bob, &format!("lease {IMAGE} 2"));
    assert!(r.contains(&format!("2 views of {IMAGE} leased")), "{r}");
    assert_eq!(cloud_left(&c), 3, "leased views are counted when taken");

    // The cloud goes away: the lease still shows the photo, twice, and then a view needs the cloud.
    c.kill_all();
    notice(&mut bob, "lost the cloud");
    let original = std::fs::read("images/sample-10k.jpg").expect("sample");
    for _ in 0..2 {
        let line = ok(&mut bob, &format!("view {IMAGE}"));
        assert!(line.contains("in your offline lease") && client::viewing::revealed_is(&line, &original), "{line}");
    }
    let line = bob.run(&format!("view {IMAGE}"));
    assert!(line.starts_with("error: views are counted by the cloud, which is unreachable"), "{line}");
    bob.kill();
    alice.kill();
}
