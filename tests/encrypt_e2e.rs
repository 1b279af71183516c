//! Encryption end to end through a real three-server cluster: a real image comes back hidden
//! in a cover, byte-exact; a non-image is refused with `error:`; and when the server handling
//! the request is SIGKILLed mid-transfer, the client's retry is elected afresh and succeeds.

mod support;

use client::cloud::Cloud;
use common::protocol::{Answer, Op};
use std::time::{Duration, Instant};
use support::{cluster, ClientProc};

#[test]
fn encrypt_a_real_image_and_refuse_a_non_image() {
    let c = cluster("encrypt", 3);
    let mut alice = ClientProc::start(&c, "alice");
    assert!(alice.result(Duration::from_secs(20)).unwrap_or_default().starts_with("ok: signed in"));
    let line = alice.run("encrypt images/sample-10k.jpg");
    assert!(line.starts_with("ok: encrypted as sample-10k"), "{line}");
    let stego = std::fs::read(c.dir.join("client-alice/images/sample-10k.png")).expect("stego file kept");
    let original = std::fs::read("images/sample-10k.jpg").expect("sample");
    assert_eq!(common::stego::reveal(&stego).expect("reveal"), original);
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
    let junk = b"this is not an image at all".to_vec();
    let r = cloud.call(Op::Encrypt { len: junk.len() as u64 }, Some(&junk)).expect("answered");
    let err = r.reply.result.expect_err("refused");
    assert!(err.contains("not an image"), "{err}");
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

#[test]
fn encrypt_survives_a_sigkill_of_the_elected_server_mid_transfer() {
    let mut c = cluster("encrypt-kill", 3);
    let image = big_png();
    assert!(image.len() > 1_000_000, "big enough to take a while: {}", image.len());
    let cfg = c.cfg.clone();
    let data = image.clone();
    let worker = std::thread::spawn(move || {
        let mut cloud = Cloud::connect(&cfg, None).expect("connect");
        let start = Instant::now();
        let mut tries = 0;
        loop {
            tries += 1;
            match cloud.call(Op::Encrypt { len: data.len() as u64 }, Some(&data)) {
                Ok(r) => return (r, tries, start.elapsed()),
                Err(e) if tries < 3 => eprintln!("try {tries} failed: {e}"),
                Err(e) => panic!("encrypt failed {tries} times: {e}"),
            }
        }
    });
    // All servers are idle, so the tie goes to the lowest id: server 1 handles the request.
    std::thread::sleep(Duration::from_millis(40));
    c.kill(1);
    let (r, tries, took) = worker.join().expect("client thread");
    let Ok(Answer::Encrypted { .. }) = r.reply.result else { panic!("{:?}", r.reply.result) };
    assert_ne!(r.reply.server, 1, "a surviving server answered");
    let stego = r.blob.expect("result downloaded");
    assert_eq!(common::stego::reveal(&stego).expect("reveal"), image, "byte-exact after {tries} tries, {took:?}");
}
