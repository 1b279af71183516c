//! Tests of LSB steganography (`common::stego`) and previews (`common::preview`).
//!
//! Run with `cargo test --release -p common`; the timing test runs with `-- --ignored --nocapture`.

use std::path::PathBuf;
use std::time::Instant;

use common::preview::{make_preview, preview_from_bytes, render_ansi, PreviewError, PREVIEW_MAX};
use common::stego::*;
use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::{CompressionType, FilterType as PngFilter, PngEncoder};
use image::{DynamicImage, ExtendedColorType, ImageEncoder, Rgba, RgbaImage};

const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];

/// Deterministic pseudo-random bytes (xorshift).
fn noise_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push((x >> 24) as u8);
    }
    out
}

fn png_bytes(img: &DynamicImage, compression: CompressionType) -> Vec<u8> {
    let rgb = img.to_rgb8();
    let mut out = Vec::new();
    PngEncoder::new_with_quality(&mut out, compression, PngFilter::Adaptive)
        .write_image(rgb.as_raw(), rgb.width(), rgb.height(), ExtendedColorType::Rgb8)
        .unwrap();
    out
}

fn jpeg_bytes(img: &DynamicImage, quality: u8) -> Vec<u8> {
    let rgb = img.to_rgb8();
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, quality)
        .write_image(rgb.as_raw(), rgb.width(), rgb.height(), ExtendedColorType::Rgb8)
        .unwrap();
    out
}

fn scene(w: u32, h: u32, seed: u64) -> DynamicImage {
    DynamicImage::ImageRgba8(procedural_cover(w, h, seed))
}

fn images_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("images")
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("stego-tests-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Bitwise CRC-32 (IEEE), to forge PNG chunks.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// A 1×1 PNG whose header is rewritten to claim `w` × `h` RGBA pixels.
fn forged_png(w: u32, h: u32) -> Vec<u8> {
    let mut png = png_bytes(&scene(1, 1, 0), CompressionType::Fast);
    // Signature (8), IHDR length (4), "IHDR" (4), then width, height, depth, colour type...
    png[16..20].copy_from_slice(&w.to_be_bytes());
    png[20..24].copy_from_slice(&h.to_be_bytes());
    png[24] = 8;
    png[25] = 6;
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    png
}

/// Secrets made of real image files, PNG and JPEG, of about 0 B, 1 B, 10 KB and 1 MB.
fn secrets() -> Vec<(&'static str, Vec<u8>)> {
    let small_jpeg = jpeg_bytes(&scene(120, 90, 7), 80);
    let ten_k_png = png_bytes(&scene(58, 58, 8), CompressionType::Uncompressed);
    // 580×580 RGB stored uncompressed: about 1 MB.
    let one_m_png = png_bytes(&scene(580, 580, 9), CompressionType::Uncompressed);
    let one_m_jpeg = jpeg_bytes(&scene(1800, 1350, 10), 98);
    vec![
        ("empty", Vec::new()),
        ("one byte", vec![0xA5]),
        ("small jpeg", small_jpeg),
        ("10k png", ten_k_png),
        ("1M png", one_m_png),
        ("1M jpeg", one_m_jpeg),
    ]
}

#[test]
fn secrets_have_the_intended_sizes() {
    let s = secrets();
    let len = |name: &str| s.iter().find(|(n, _)| *n == name).map(|(_, b)| b.len()).unwrap();
    assert!((8_000..12_000).contains(&len("10k png")), "{}", len("10k png"));
    assert!((900_000..1_200_000).contains(&len("1M png")), "{}", len("1M png"));
    assert!((800_000..1_200_000).contains(&len("1M jpeg")), "{}", len("1M jpeg"));
}

#[test]
fn round_trip_png_and_jpeg_secrets_in_builtin_covers() {
    let covers = Covers::builtin();
    for (name, secret) in secrets() {
        let cover = covers.choose(secret.len());
        let stego = hide(cover, &secret).unwrap();
        assert!(stego.starts_with(&PNG_SIGNATURE), "{name}");
        let back = reveal(&stego).unwrap();
        assert!(back == secret, "{name}: revealed bytes differ");
        if !secret.is_empty() && secret.len() > 1 {
            let a = decode_image(&secret).unwrap();
            let b = decode_image(&back).unwrap();
            assert_eq!(a.to_rgba8(), b.to_rgba8(), "{name}: revealed image differs");
        }
    }
}

#[test]
fn round_trip_in_shipped_covers_and_sample() {
    let covers = Covers::load_dir(images_dir()).unwrap();
    assert!(!covers.is_builtin());
    assert!(covers.len() >= 3);
    // The sample secret is not used as a cover.
    let sample = std::fs::read(images_dir().join("sample-10k.jpg")).unwrap();
    assert!((9 * 1024..=11 * 1024).contains(&sample.len()), "sample is {} bytes", sample.len());
    decode_image(&sample).unwrap();
    for cover in covers.iter() {
        let stego = hide(cover, &sample).unwrap();
        assert_eq!(reveal(&stego).unwrap(), sample);
    }
    let stego = hide(covers.choose(sample.len()), &sample).unwrap();
    assert_eq!(reveal(&stego).unwrap(), sample);
}

#[test]
fn embed_and_extract_round_trip_at_exact_capacity() {
    let cover = procedural_cover(50, 40, 3);
    let room = capacity(50, 40);
    assert_eq!(room, 50 * 40 * 3 / 8 - HEADER_LEN);
    for n in [0, 1, 2, 3, 7, 8, 9, room - 1, room] {
        let secret = noise_bytes(n, n as u64 + 1);
        let stego = embed(&cover, &secret).unwrap();
        assert_eq!(extract(&stego).unwrap(), secret, "n = {n}");
    }
}

#[test]
fn too_large_for_embed_but_hide_enlarges() {
    let cover = procedural_cover(32, 32, 4);
    let room = capacity(32, 32);
    let secret = noise_bytes(room + 1, 5);
    assert_eq!(embed(&cover, &secret), Err(StegoError::TooLarge { needed: room + 1, capacity: room }));
    let huge = noise_bytes(10_000, 6);
    assert!(matches!(embed(&cover, &huge), Err(StegoError::TooLarge { .. })));

    let dynamic = DynamicImage::ImageRgba8(cover.clone());
    let stego = hide(&dynamic, &huge).unwrap();
    let img = decode_image(&stego).unwrap();
    assert!(img.width() > 32 && img.height() > 32);
    assert_eq!(img.width(), img.height(), "aspect kept");
    assert!(capacity(img.width(), img.height()) >= huge.len());
    assert!(capacity(img.width() - 1, img.height() - 1) < huge.len(), "enlarged more than needed");
    assert_eq!(reveal(&stego).unwrap(), huge);
}

#[test]
fn fit_cover_keeps_fitting_covers_and_enlarges_just_enough() {
    let cover = scene(200, 100, 1);
    let same = fit_cover(&cover, 1000);
    assert_eq!(same.dimensions(), (200, 100));
    assert_eq!(same, cover.to_rgba8());
    let big = fit_cover(&cover, 100_000);
    let (w, h) = big.dimensions();
    assert!(capacity(w, h) >= 100_000);
    assert!((f64::from(w) / f64::from(h) - 2.0).abs() < 0.02, "{w}x{h}");
    assert!(capacity(w - 2, h - 1) < 100_000, "{w}x{h} is more than needed");
    // A degenerate cover still yields something that fits.
    let empty = DynamicImage::ImageRgba8(RgbaImage::new(0, 0));
    let fitted = fit_cover(&empty, 5000);
    assert!(capacity(fitted.width(), fitted.height()) >= 5000);
    assert!(hide(&empty, &noise_bytes(5000, 1)).is_ok());
}

#[test]
fn hide_rejects_payloads_over_the_maximum() {
    let cover = scene(64, 64, 2);
    let secret = vec![0u8; MAX_PAYLOAD + 1];
    assert_eq!(hide(&cover, &secret), Err(StegoError::TooLarge { needed: MAX_PAYLOAD + 1, capacity: MAX_PAYLOAD }));
}

#[test]
fn psnr_of_stego_image_is_high() {
    let covers = Covers::builtin();
    for n in [1usize, 10 * 1024, 100_000] {
        let secret = noise_bytes(n, 11);
        let fitted = fit_cover(covers.choose(n), n);
        let stego = embed(&fitted, &secret).unwrap();
        let db = psnr(&fitted, &stego);
        assert!(db >= 45.0, "{n} bytes: PSNR {db:.2} dB");
        // Through PNG and back nothing changes.
        let png = encode_png(&stego).unwrap();
        assert_eq!(decode_image(&png).unwrap().to_rgba8(), stego);
    }
    // A full cover of random bits changes half of the low bits: about 51 dB.
    let fitted = fit_cover(&scene(166, 166, 3), 10 * 1024);
    let stego = embed(&fitted, &noise_bytes(capacity(166, 166), 12)).unwrap();
    let db = psnr(&fitted, &stego);
    assert!((50.0..53.0).contains(&db), "{db}");
}

#[test]
fn psnr_edge_cases() {
    let a = procedural_cover(10, 10, 1);
    assert!(psnr(&a, &a).is_infinite());
    assert_eq!(psnr(&a, &procedural_cover(10, 11, 1)), 0.0);
    let mut b = a.clone();
    b.get_pixel_mut(0, 0).0[3] = 0;
    assert!(psnr(&a, &b).is_infinite(), "alpha is not counted");
    let mut c = a.clone();
    let p = c.get_pixel_mut(0, 0);
    p.0[0] = p.0[0].wrapping_add(128);
    assert!(psnr(&a, &c).is_finite());
}

#[test]
fn alpha_is_untouched_and_kept_in_the_png() {
    let mut cover = procedural_cover(120, 80, 5);
    for (x, y, p) in cover.enumerate_pixels_mut() {
        p.0[3] = ((x * 7 + y * 13) % 256) as u8;
    }
    let secret = noise_bytes(capacity(120, 80), 13);
    let stego = embed(&cover, &secret).unwrap();
    for (a, b) in cover.pixels().zip(stego.pixels()) {
        assert_eq!(a.0[3], b.0[3]);
        for c in 0..3 {
            assert!(a.0[c].abs_diff(b.0[c]) <= 1);
        }
    }
    let png = hide(&DynamicImage::ImageRgba8(cover.clone()), &secret).unwrap();
    assert!(png.starts_with(&PNG_SIGNATURE));
    let decoded = decode_image(&png).unwrap();
    assert!(decoded.color().has_alpha());
    let decoded = decoded.into_rgba8();
    assert!(cover.pixels().zip(decoded.pixels()).all(|(a, b)| a.0[3] == b.0[3]));
    assert_eq!(reveal(&png).unwrap(), secret);
}

#[test]
fn garbage_is_not_an_image() {
    let png = png_bytes(&scene(64, 48, 1), CompressionType::Fast);
    let jpeg = jpeg_bytes(&scene(64, 48, 1), 80);
    let inputs: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("text", b"hello, this is not an image".to_vec()),
        ("noise", noise_bytes(5000, 3)),
        ("png signature only", PNG_SIGNATURE.to_vec()),
        ("truncated png", png[..png.len() / 2].to_vec()),
        ("truncated png header", png[..20].to_vec()),
        ("truncated jpeg", jpeg[..jpeg.len() / 3].to_vec()),
        ("jpeg magic only", vec![0xFF, 0xD8, 0xFF]),
        ("too wide", png_bytes(&DynamicImage::new_rgb8(MAX_DIMENSION + 1, 1), CompressionType::Fast)),
        ("bomb", forged_png(16_000, 16_000)),
        ("huge header", forged_png(u32::MAX / 2, u32::MAX / 2)),
    ];
    for (name, bytes) in &inputs {
        match decode_image(bytes) {
            Err(StegoError::NotAnImage(why)) => assert!(!why.is_empty(), "{name}"),
            Ok(img) if name.starts_with("truncated jpeg") => {
                // Some decoders return a partial image for truncated JPEG; that is not a crash.
                assert_eq!(img.width(), 64);
            }
            other => panic!("{name}: {other:?}"),
        }
        assert!(reveal(bytes).is_err(), "{name}");
        assert!(preview_from_bytes(bytes).is_err() || name.starts_with("truncated jpeg"), "{name}");
    }
}

#[test]
fn plain_images_have_no_hidden_data() {
    let img = scene(100, 80, 2);
    assert_eq!(reveal(&png_bytes(&img, CompressionType::Fast)), Err(StegoError::NoHiddenData));
    assert_eq!(extract(&img.to_rgba8()), Err(StegoError::NoHiddenData));
    assert_eq!(extract(&RgbaImage::new(3, 3)), Err(StegoError::NoHiddenData));
    // A JPEG of a stego image loses the hidden bits.
    let stego = embed(&img.to_rgba8(), b"secret").unwrap();
    let jpeg = jpeg_bytes(&DynamicImage::ImageRgba8(stego), 90);
    assert!(reveal(&jpeg).is_err());
}

#[test]
fn header_claiming_more_than_capacity_is_corrupt() {
    let cover = procedural_cover(100, 100, 6);
    let secret = noise_bytes(1000, 14);
    let stego = embed(&cover, &secret).unwrap();
    // Keep only the first 20 rows: the header survives, the room for 1000 bytes does not.
    let top = image::imageops::crop_imm(&stego, 0, 0, 100, 20).to_image();
    assert!(capacity(100, 20) < 1000);
    assert!(matches!(extract(&top), Err(StegoError::Corrupt(_))));
    let png = encode_png(&top).unwrap();
    assert!(matches!(reveal(&png), Err(StegoError::Corrupt(_))));
}

#[test]
fn wrong_version_is_corrupt() {
    let cover = procedural_cover(40, 40, 7);
    let mut stego = embed(&cover, b"abc").unwrap();
    // The version is header byte 4: colour bytes 32..40; its last bit is colour byte 39, which is
    // channel 0 of pixel 13.
    let p: &mut Rgba<u8> = stego.get_pixel_mut(13, 0);
    p.0[0] ^= 1;
    assert!(matches!(extract(&stego), Err(StegoError::Corrupt(_))));
}

#[test]
fn errors_display_clearly() {
    let e = StegoError::TooLarge { needed: 10, capacity: 5 };
    assert!(e.to_string().contains("10") && e.to_string().contains('5'));
    let boxed: Box<dyn std::error::Error> = Box::new(StegoError::NoHiddenData);
    assert!(!boxed.to_string().is_empty());
    let p: Box<dyn std::error::Error> = Box::new(PreviewError::Empty);
    assert!(!p.to_string().is_empty());
}

#[test]
fn covers_load_skip_and_fall_back() {
    let dir = temp_dir("covers");
    std::fs::write(dir.join("notes.txt"), "not an image").unwrap();
    std::fs::write(dir.join("broken.png"), PNG_SIGNATURE).unwrap();
    assert!(matches!(Covers::load_dir(&dir), Err(StegoError::NotAnImage(_))));
    assert!(Covers::load_dir_or_builtin(&dir).is_builtin());

    std::fs::write(dir.join("b.png"), png_bytes(&scene(300, 200, 1), CompressionType::Fast)).unwrap();
    std::fs::write(dir.join("a.jpg"), jpeg_bytes(&scene(100, 100, 2), 85)).unwrap();
    std::fs::write(dir.join("sample-secret.png"), png_bytes(&scene(50, 50, 3), CompressionType::Fast)).unwrap();
    let covers = Covers::load_dir(&dir).unwrap();
    assert_eq!(covers.len(), 2);
    assert!(!covers.is_builtin() && !covers.is_empty());
    let sizes: Vec<_> = covers.iter().map(|c| (c.width(), c.height())).collect();
    assert_eq!(sizes, vec![(100, 100), (300, 200)]);
    // choose() also picks among smaller copies of the covers (the ladder), so a payload gets a
    // cover close to its size.
    assert!(covers.choose(0).width() < 100);
    let c = covers.choose(capacity(100, 100) + 1);
    assert!(capacity(c.width(), c.height()) > capacity(100, 100));
    assert!(c.width() < 300, "a smaller copy of the 300-wide cover fits");
    assert_eq!(covers.choose(1 << 30).width(), 300);
    assert!(format!("{covers:?}").contains("300"));
    std::fs::remove_dir_all(&dir).unwrap();

    let missing = dir.join("does-not-exist");
    assert!(matches!(Covers::load_dir(&missing), Err(StegoError::Io(_))));
    let fallback = Covers::load_dir_or_builtin(&missing);
    assert!(fallback.is_builtin() && !fallback.is_empty());
}

#[test]
fn builtin_covers_are_not_flat() {
    for cover in Covers::builtin().iter() {
        let rgba = cover.to_rgba8();
        let mut distinct: Vec<[u8; 3]> = rgba.pixels().map(|p| [p.0[0], p.0[1], p.0[2]]).collect();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(distinct.len() > 1000, "only {} colours", distinct.len());
        assert!(rgba.pixels().all(|p| p.0[3] == 255));
    }
}

#[test]
fn preview_is_small_and_never_upscaled() {
    let cases = [(500, 300, 96, 58), (300, 1000, 29, 96), (96, 96, 96, 96), (40, 30, 40, 30), (1000, 5, 96, 1)];
    for (w, h, pw, ph) in cases {
        let png = make_preview(&scene(w, h, 1)).unwrap();
        assert!(png.starts_with(&PNG_SIGNATURE));
        let p = decode_image(&png).unwrap();
        assert_eq!((p.width(), p.height()), (pw, ph), "{w}x{h}");
        assert!(p.width().max(p.height()) <= PREVIEW_MAX);
    }
    let jpeg = jpeg_bytes(&scene(640, 480, 2), 85);
    let p = decode_image(&preview_from_bytes(&jpeg).unwrap()).unwrap();
    assert_eq!((p.width(), p.height()), (96, 72));
    assert_eq!(make_preview(&DynamicImage::new_rgb8(0, 0)), Err(PreviewError::Empty));
    assert!(matches!(preview_from_bytes(b"nope"), Err(PreviewError::Decode(_))));
    // Alpha survives in previews.
    let mut rgba = procedural_cover(200, 100, 3);
    rgba.get_pixel_mut(0, 0).0[3] = 0;
    let p = decode_image(&make_preview(&DynamicImage::ImageRgba8(rgba)).unwrap()).unwrap();
    assert!(p.color().has_alpha());
}

#[test]
fn ansi_rendering_has_one_line_per_two_rows() {
    let img = scene(200, 100, 4);
    let s = render_ansi(&img, 40);
    // 200×100 scaled to 40×20: 10 lines of 40 cells.
    assert_eq!(s.lines().count(), 10);
    for line in s.lines() {
        assert!(line.ends_with("\x1b[0m"));
        assert_eq!(line.matches('▀').count(), 40);
        assert!(line.starts_with("\x1b[38;2;"));
    }
    // Small images are not upscaled: 10×7 gives 4 lines of 10 cells.
    let s = render_ansi(&scene(10, 7, 5), 80);
    assert_eq!(s.lines().count(), 4);
    assert!(s.lines().all(|l| l.matches('▀').count() == 10 && l.ends_with("\x1b[0m")));
    assert_eq!(render_ansi(&img, 0), "");
    assert_eq!(render_ansi(&DynamicImage::new_rgb8(0, 0), 80), "");
}

/// Release-mode timing of hide/reveal for a 10 KB secret in a cover sized to fit:
/// `cargo test --release -p common --test stego_tests -- --ignored --nocapture`.
#[test]
#[ignore]
fn timing_hide_and_reveal_10k() {
    let secret = std::fs::read(images_dir().join("sample-10k.jpg")).unwrap_or_else(|_| noise_bytes(10 * 1024, 1));
    let fitted = fit_cover(&scene(64, 64, 5), secret.len());
    let cover = DynamicImage::ImageRgba8(fitted.clone());
    let rounds = 2000;
    let time = |label: &str, f: &mut dyn FnMut()| {
        for _ in 0..50 {
            f();
        }
        let t = Instant::now();
        for _ in 0..rounds {
            f();
        }
        let us = t.elapsed().as_secs_f64() * 1e6 / f64::from(rounds);
        println!("{label}: {us:.1} µs");
    };
    let stego = embed(&fitted, &secret).unwrap();
    let png = hide(&cover, &secret).unwrap();
    println!("secret {} bytes, cover {:?}, stego PNG {} bytes", secret.len(), fitted.dimensions(), png.len());
    time("embed", &mut || drop(std::hint::black_box(embed(&fitted, &secret))));
    time("extract", &mut || drop(std::hint::black_box(extract(&stego))));
    time("encode_png", &mut || drop(std::hint::black_box(encode_png(&stego))));
    time("hide", &mut || drop(std::hint::black_box(hide(&cover, &secret))));
    time("reveal", &mut || drop(std::hint::black_box(reveal(&png))));
    println!("PSNR {:.2} dB", psnr(&fitted, &stego));
    // The server's path: the smallest shipped cover that fits.
    let covers = Covers::load_dir_or_builtin(images_dir());
    let chosen = covers.choose(secret.len());
    let png = hide(chosen, &secret).unwrap();
    println!("shipped cover {}x{}, stego PNG {} bytes", chosen.width(), chosen.height(), png.len());
    time("hide (shipped cover)", &mut || drop(std::hint::black_box(hide(chosen, &secret))));
    time("reveal (shipped cover)", &mut || drop(std::hint::black_box(reveal(&png))));
}
