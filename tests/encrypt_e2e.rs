//! Encryption end to end through a real three-server cluster: a real image comes back hidden
//! in a cover, sealed under the owner's key (extracting the low bits without the key yields
//! nothing usable; with it, the image byte-exact); a non-image and an upload not sealed by its
//! owner are refused with `error:`; and when the server handling the request is SIGKILLed
//! mid-transfer, the client's retry is elected afresh and succeeds.

mod support;

use client::cloud::Cloud;
use common::config::{ClusterConfig, ServerId};
use common::protocol::Answer;
use std::time::{Duration, Instant};
use support::{cluster, encrypt_op, register, seal_own, ClientProc};

#[test]
fn encrypt_a_real_image_and_refuse_a_non_image() {
    let c = cluster("encrypt", 3);
    let mut alice = ClientProc::start(&c, "alice");
    assert!(alice.result(Duration::from_secs(20)).unwrap_or_default().starts_with("ok: signed in"));
    let line = alice.run("encrypt images/sample-10k.jpg");
    assert!(line.starts_with("ok: encrypted as sample-10k"), "{line}");
    let stego = std::fs::read(c.dir.join("client-alice/images/sample-10k.png")).expect("stego file kept");
    let original = std::fs::read("images/sample-10k.jpg").expect("sample");
    let hidden = common::stego::reveal(&stego).expect("reveal");
    // Whoever extracts the low bits gets ciphertext: no image, no trace of the original bytes.
    assert!(common::stego::decode_image(&hidden).is_err(), "the hidden payload is not an image");
    assert!(!hidden.windows(64).any(|w| w == &original[100..164]), "no plaintext run in the payload");
    // alice's own key (from her secret) opens it, byte-exact.
    let ident: serde_json::Value =
        serde_json::from_slice(&std::fs::read(c.dir.join("client-alice/identity.json")).expect("identity")).unwrap();
    let secret = common::auth::secret_bytes(ident["secret"].as_str().expect("secret"));
    let own = common::crypto::derive(&secret, common::crypto::Purpose::Own);
    let opened = common::crypto::open(&own, &common::auth::own_image_aad("alice"), &hidden).expect("opens");
    assert_eq!(opened, original);
    assert!(c.dir.join("client-alice/previews/sample-10k.png").exists());
    let line = alice.run("encrypt Cargo.toml");
    assert!(line.starts_with("error:"), "{line}");
    let line = alice.run("peers");
    assert!(line.starts_with("ok:"), "{line}");
    assert!(alice.seen.iter().any(|l| l.contains("images: sample-10k")), "directory lists the image: {:?}", alice.seen);
    alice.finish();
}

#[test]
fn the_server_itself_refuses_a_non_image() {
    let c = cluster("refuse", 3);
    let mut cloud = Cloud::connect(&c.cfg, None).expect("connect");
    let secret = register(&mut cloud, "dave");
    let junk = seal_own(&secret, "dave", b"this is not an image at all");
    let r = cloud.call(encrypt_op("dave", junk.len()), Some(&junk)).expect("answered");
    let err = r.reply.result.expect_err("refused");
    assert!(err.contains("not an image"), "{err}");
    // A real image, but not sealed under dave's key: the server cannot vouch for it.
    let plain = std::fs::read("images/sample-10k.jpg").expect("sample");
    let r = cloud.call(encrypt_op("dave", plain.len()), Some(&plain)).expect("answered");
    let err = r.reply.result.expect_err("refused");
    assert!(err.contains("sealed image"), "{err}");
}

/// A large image keeps the elected server busy long enough to kill it mid-request.
fn big_png() -> Vec<u8> {
    let img = image::RgbImage::from_fn(1400, 1000, |x, y| {
        image::Rgb([((x * 7) ^ (y * 3)) as u8, (x + y) as u8, (x * y) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img).write_to(&mut out, image::ImageFormat::Png).expect("png");
    out.into_inner()
}

/// The server the servers ranked first for the encryption they received (from their `status`).
fn first_ranked_encrypt(cfg: &ClusterConfig) -> ServerId {
    let mut cloud = Cloud::connect(cfg, None).expect("connect");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st = cloud.statuses(Duration::from_millis(300));
        let encrypt = st.values().flat_map(|s| s.elections.iter()).find(|e| e.kind == "encrypt");
        if let Some(first) = encrypt.and_then(|e| e.ranking.first()) {
            return *first;
        }
        assert!(Instant::now() < deadline, "no server recorded the encryption's election");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn encrypt_survives_a_sigkill_of_the_elected_server_mid_transfer() {
    let mut c = cluster("encrypt-kill", 3);
    let image = big_png();
    assert!(image.len() > 1_000_000, "big enough to take a while: {}", image.len());
    let cfg = c.cfg.clone();
    let mut cloud = Cloud::connect(&cfg, None).expect("connect");
    let secret = register(&mut cloud, "erin");
    let data = seal_own(&secret, "erin", &image);
    let sealed = data.clone();
    let worker = std::thread::spawn(move || {
        let start = Instant::now();
        let mut tries = 0;
        loop {
            tries += 1;
            match cloud.call(encrypt_op("erin", data.len()), Some(&data)) {
                Ok(r) => return (r, tries, start.elapsed()),
                Err(e) if tries < 3 => eprintln!("try {tries} failed: {e}"),
                Err(e) => panic!("encrypt failed {tries} times: {e}"),
            }
        }
    });
    // All servers are idle: the request id breaks the tie. Kill the server ranked first.
    let winner = first_ranked_encrypt(&cfg);
    c.kill(winner);
    let (r, tries, took) = worker.join().expect("client thread");
    let Ok(Answer::Encrypted { .. }) = r.reply.result else { panic!("{:?}", r.reply.result) };
    assert_ne!(r.reply.server, winner, "a surviving server answered");
    let stego = r.blob.expect("result downloaded");
    assert_eq!(common::stego::reveal(&stego).expect("reveal"), sealed, "byte-exact after {tries} tries, {took:?}");
}
