//! Tests of access rights carried in PNG files and of the gallery codec (`common::rights`).
//!
//! Run with `cargo test --release -p common --test rights_tests`.

use common::rights::*;
use common::rng::Rng;
use common::stego::{decode_image, encode_png, hide, procedural_cover, reveal, Covers};
use common::transfer::crc32;

const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];

fn rights(views: u32, version: u64) -> Rights {
    Rights { owner: "alice".into(), viewer: "bob_2".into(), image_id: "cat-1.png".into(), views, version }
}

fn payload(n: usize, seed: u64) -> Vec<u8> {
    let mut out = vec![0u8; n];
    Rng::new(seed).fill(&mut out);
    out
}

/// A stego PNG made the way the servers make them: builtin cover, small payload.
fn stego_png(secret: &[u8]) -> Vec<u8> {
    let covers = Covers::builtin();
    hide(covers.choose(secret.len()), secret).unwrap()
}

/// A tiny valid PNG, for fast fuzzing.
fn tiny_png() -> Vec<u8> {
    encode_png(&procedural_cover(4, 3, 7)).unwrap()
}

/// The chunks of a (trusted, well-formed) PNG: (type, data).
fn chunks(png: &[u8]) -> Vec<([u8; 4], Vec<u8>)> {
    assert_eq!(png[..8], PNG_SIGNATURE);
    let mut at = 8;
    let mut out = Vec::new();
    while at < png.len() {
        let len = u32::from_be_bytes(png[at..at + 4].try_into().unwrap()) as usize;
        let kind: [u8; 4] = png[at + 4..at + 8].try_into().unwrap();
        out.push((kind, png[at + 8..at + 8 + len].to_vec()));
        at += 12 + len;
    }
    assert_eq!(at, png.len());
    out
}

/// Serialises one chunk with a correct CRC.
fn chunk_bytes(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut typed = kind.to_vec();
    typed.extend_from_slice(data);
    out.extend_from_slice(&crc32(&typed).to_be_bytes());
    out
}

/// Rebuilds a PNG from (type, data) pairs with correct CRCs.
fn assemble(parts: &[([u8; 4], Vec<u8>)]) -> Vec<u8> {
    let mut out = PNG_SIGNATURE.to_vec();
    for (kind, data) in parts {
        out.extend_from_slice(&chunk_bytes(kind, data));
    }
    out
}

/// `png` with a raw rights chunk of `data` inserted before IEND.
fn with_raw_rights(png: &[u8], data: &[u8]) -> Vec<u8> {
    let mut parts = chunks(png);
    let iend = parts.pop().unwrap();
    parts.push((CHUNK_TYPE, data.to_vec()));
    parts.push(iend);
    assemble(&parts)
}

fn count_rights(png: &[u8]) -> usize {
    chunks(png).iter().filter(|(k, _)| *k == CHUNK_TYPE).count()
}

#[test]
fn chunk_type_follows_png_property_bits() {
    let [a, p, r, s] = CHUNK_TYPE;
    assert!(CHUNK_TYPE.iter().all(u8::is_ascii_alphabetic));
    assert!(a.is_ascii_lowercase(), "ancillary");
    assert!(p.is_ascii_lowercase(), "private");
    assert!(r.is_ascii_uppercase(), "reserved bit must be 0 (uppercase)");
    assert!(s.is_ascii_uppercase(), "not safe to copy");
}

#[test]
fn round_trip_on_stego_png_keeps_secret() {
    let secret = payload(3000, 1);
    let png = stego_png(&secret);
    assert_eq!(read(&png), Err(RightsError::NoRights));

    let r = rights(5, 7);
    let shared = embed(&png, &r).unwrap();
    assert_eq!(read(&shared).unwrap(), r);
    assert_eq!(reveal(&shared).unwrap(), secret);
    assert_eq!(count_rights(&shared), 1);
    // Right before IEND; every other chunk copied as is.
    let parts = chunks(&shared);
    assert_eq!(parts[parts.len() - 2].0, CHUNK_TYPE);
    assert_eq!(&parts[parts.len() - 1].0, b"IEND");
    let original: Vec<_> = chunks(&png);
    let others: Vec<_> = parts.iter().filter(|(k, _)| *k != CHUNK_TYPE).cloned().collect();
    assert_eq!(others, original);
    // Same pixels.
    assert_eq!(decode_image(&shared).unwrap().to_rgba8(), decode_image(&png).unwrap().to_rgba8());

    // The viewer views it: views decremented, file rewritten; still exactly one chunk.
    let mut current = shared;
    for views in (0..5).rev() {
        let mut r2 = read(&current).unwrap();
        r2.views -= 1;
        assert_eq!(r2.views, views);
        current = embed(&current, &r2).unwrap();
        assert_eq!(read(&current).unwrap(), r2);
        assert_eq!(count_rights(&current), 1);
        assert_eq!(reveal(&current).unwrap(), secret);
    }
    assert_eq!(read(&current).unwrap().views, 0);

    // Strip gives back the original bytes.
    assert_eq!(strip(&current).unwrap(), png);
    assert_eq!(strip(&png).unwrap(), png);
    assert_eq!(read(&strip(&current).unwrap()), Err(RightsError::NoRights));
}

#[test]
fn replacing_rights_keeps_one_chunk_and_fixes_duplicates() {
    let png = tiny_png();
    let a = embed(&png, &rights(3, 1)).unwrap();
    let b = embed(&a, &rights(9, 2)).unwrap();
    assert_eq!(count_rights(&b), 1);
    assert_eq!(read(&b).unwrap(), rights(9, 2));

    // Two rights chunks (not something embed writes) are corrupt; embed leaves one again.
    let mut parts = chunks(&b);
    let dup = parts[parts.len() - 2].clone();
    parts.insert(1, dup);
    let twice = assemble(&parts);
    assert_eq!(count_rights(&twice), 2);
    assert!(matches!(read(&twice), Err(RightsError::Corrupt(_))));
    let fixed = embed(&twice, &rights(1, 3)).unwrap();
    assert_eq!(count_rights(&fixed), 1);
    assert_eq!(read(&fixed).unwrap(), rights(1, 3));
    assert_eq!(count_rights(&strip(&twice).unwrap()), 0);
}

#[test]
fn corrupt_crc_is_detected() {
    let png = tiny_png();
    let shared = embed(&png, &rights(2, 1)).unwrap();
    let parts = chunks(&shared);
    let data_len = parts[parts.len() - 2].1.len();
    // The rights chunk ends 12 bytes (IEND) before the end; its CRC is its last 4 bytes.
    let crc_at = shared.len() - 12 - 4;
    let mut bad = shared.clone();
    bad[crc_at] ^= 0x01;
    assert!(matches!(read(&bad), Err(RightsError::Corrupt(_))), "{:?}", read(&bad));
    // A flipped data byte is caught by the CRC too.
    let mut bad = shared.clone();
    bad[crc_at - data_len / 2] ^= 0x20;
    assert!(matches!(read(&bad), Err(RightsError::Corrupt(_))));
    // embed and strip drop the damaged chunk.
    assert_eq!(strip(&bad).unwrap(), png);
    assert_eq!(read(&embed(&bad, &rights(4, 4)).unwrap()).unwrap(), rights(4, 4));

    // A bad CRC anywhere else: not a usable PNG.
    let mut bad = shared.clone();
    bad[8 + 8 + 13] ^= 0x01; // IHDR CRC
    assert!(matches!(read(&bad), Err(RightsError::NotPng(_))));
    assert!(matches!(embed(&bad, &rights(1, 1)), Err(RightsError::NotPng(_))));
    assert!(matches!(strip(&bad), Err(RightsError::NotPng(_))));
}

#[test]
fn corrupt_rights_data_is_rejected() {
    let png = tiny_png();
    let json = serde_json::to_vec(&rights(1, 1)).unwrap();
    let mut good = vec![FORMAT_VERSION];
    good.extend_from_slice(&json);
    assert_eq!(read(&with_raw_rights(&png, &good)).unwrap(), rights(1, 1));

    let mut unknown_version = good.clone();
    unknown_version[0] = FORMAT_VERSION + 1;
    let mut bad_names = vec![FORMAT_VERSION];
    let evil = Rights { image_id: "../etc/passwd".into(), ..rights(1, 1) };
    bad_names.extend_from_slice(&serde_json::to_vec(&evil).unwrap());
    let mut too_long = vec![FORMAT_VERSION];
    too_long.extend_from_slice(&json[..json.len() - 1]);
    too_long.extend_from_slice(format!(",\"pad\":\"{}\"}}", "x".repeat(MAX_RIGHTS_LEN)).as_bytes());
    let mut negative = vec![FORMAT_VERSION];
    negative.extend_from_slice(br#"{"owner":"a","viewer":"b","image_id":"c","views":-1,"version":1}"#);
    for data in [vec![], vec![FORMAT_VERSION], unknown_version, bad_names, too_long, negative, b"\x01not json".to_vec()]
    {
        let file = with_raw_rights(&png, &data);
        assert!(matches!(read(&file), Err(RightsError::Corrupt(_))), "{:?}", read(&file));
        assert_eq!(strip(&file).unwrap(), png);
    }
}

#[test]
fn not_png_is_rejected() {
    let png = tiny_png();
    let mut trailing = png.clone();
    trailing.push(0);
    let no_iend = png[..png.len() - 12].to_vec();
    let mut parts = chunks(&png);
    parts.swap(0, 1);
    let ihdr_not_first = assemble(&parts);
    let mut parts = chunks(&png);
    parts.insert(1, parts[0].clone());
    let two_ihdr = assemble(&parts);
    let mut parts = chunks(&png);
    parts.insert(1, (*b"a1cd", vec![]));
    let bad_type = assemble(&parts);
    let mut huge_len = png.clone();
    huge_len[33..37].copy_from_slice(&0x8000_0000u32.to_be_bytes());
    let jpeg = {
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new(&mut out)
            .encode_image(&image::DynamicImage::ImageRgba8(procedural_cover(8, 8, 1)).to_rgb8())
            .unwrap();
        out
    };
    for bad in [
        vec![],
        PNG_SIGNATURE.to_vec(),
        png[..20].to_vec(),
        trailing,
        no_iend,
        ihdr_not_first,
        two_ihdr,
        bad_type,
        huge_len,
        jpeg,
        b"hello".to_vec(),
    ] {
        assert!(matches!(read(&bad), Err(RightsError::NotPng(_))), "{:?}", read(&bad));
        assert!(matches!(embed(&bad, &rights(1, 1)), Err(RightsError::NotPng(_))));
        assert!(matches!(strip(&bad), Err(RightsError::NotPng(_))));
    }
}

#[test]
fn invalid_rights_are_not_embedded() {
    let png = tiny_png();
    for r in [
        Rights { owner: "".into(), ..rights(1, 1) },
        Rights { viewer: "a b".into(), ..rights(1, 1) },
        Rights { image_id: "../x".into(), ..rights(1, 1) },
        Rights { owner: "x".repeat(33), ..rights(1, 1) },
    ] {
        assert!(r.validate().is_err());
        assert!(matches!(embed(&png, &r), Err(RightsError::Invalid(_))));
    }
    // Extremes of views and version survive.
    let r = rights(u32::MAX, u64::MAX);
    assert_eq!(read(&embed(&png, &r).unwrap()).unwrap(), r);
}

#[test]
fn errors_display() {
    for e in [
        RightsError::NotPng("x".into()),
        RightsError::NoRights,
        RightsError::Corrupt("x".into()),
        RightsError::Invalid("x".into()),
        RightsError::Gallery("x".into()),
    ] {
        let boxed: Box<dyn std::error::Error> = Box::new(e);
        assert!(!boxed.to_string().is_empty());
    }
}

/// Applies a random mutation: truncate, flip bytes, insert or delete, keep as is.
fn mutate(rng: &mut Rng, src: &[u8]) -> Vec<u8> {
    let mut v = src.to_vec();
    match rng.below(6) {
        0 => v.truncate(rng.below(v.len() as u64 + 1) as usize),
        1 | 2 => {
            for _ in 0..rng.range(1, 4) {
                if !v.is_empty() {
                    let i = rng.below(v.len() as u64) as usize;
                    v[i] ^= 1 << rng.below(8);
                }
            }
        }
        3 => {
            let i = rng.below(v.len() as u64 + 1) as usize;
            v.insert(i, rng.next_u64() as u8);
        }
        4 => {
            if !v.is_empty() {
                let i = rng.below(v.len() as u64) as usize;
                v.remove(i);
            }
        }
        _ => {
            let i = rng.below(v.len() as u64 + 1) as usize;
            v[i..].iter_mut().for_each(|b| *b = 0xFF);
        }
    }
    v
}

/// A mutation of the rights chunk data that keeps the CRC valid, to reach the JSON parser.
fn mutate_rights_chunk(rng: &mut Rng, png: &[u8]) -> Vec<u8> {
    let mut parts = chunks(png);
    for (kind, data) in parts.iter_mut() {
        if *kind == CHUNK_TYPE {
            *data = mutate(rng, data);
        }
    }
    assemble(&parts)
}

#[test]
fn random_inputs_never_panic() {
    let mut rng = Rng::new(0x5EED);
    let plain = tiny_png();
    let shared = embed(&plain, &rights(3, 9)).unwrap();
    let gallery = encode_gallery(&[
        GalleryItem { image_id: "a".into(), preview_png: plain.clone() },
        GalleryItem { image_id: "b.png".into(), preview_png: vec![] },
        GalleryItem { image_id: "c-3".into(), preview_png: shared.clone() },
    ]);
    let r = rights(1, 2);
    let (mut ok_reads, mut ok_galleries) = (0, 0);
    for i in 0..20_000u32 {
        let input = match i % 5 {
            0 => {
                let mut v = vec![0u8; rng.below(200) as usize];
                rng.fill(&mut v);
                if rng.chance(0.5) && v.len() >= 8 {
                    v[..8].copy_from_slice(&PNG_SIGNATURE);
                }
                v
            }
            1 => mutate(&mut rng, &plain),
            2 => mutate(&mut rng, &shared),
            3 => mutate_rights_chunk(&mut rng, &shared),
            _ => mutate(&mut rng, &gallery),
        };
        if let Ok(got) = read(&input) {
            assert!(got.validate().is_ok());
            ok_reads += 1;
        }
        if let Ok(out) = embed(&input, &r) {
            assert_eq!(read(&out).unwrap(), r);
            assert_eq!(count_rights(&out), 1);
        }
        if let Ok(out) = strip(&input) {
            assert_eq!(read(&out), Err(RightsError::NoRights));
        }
        if let Ok(items) = decode_gallery(&input) {
            assert!(items.len() <= MAX_GALLERY_ITEMS);
            assert_eq!(encode_gallery(&items), input);
            ok_galleries += 1;
        }
    }
    // The mutations kept some inputs valid, so both paths were exercised past the checks.
    assert!(ok_reads > 100, "{ok_reads}");
    assert!(ok_galleries > 100, "{ok_galleries}");
}

#[test]
fn gallery_round_trip() {
    assert_eq!(decode_gallery(&encode_gallery(&[])).unwrap(), vec![]);
    assert_eq!(encode_gallery(&[]), vec![0, 0]);
    let items: Vec<GalleryItem> = (0..5)
        .map(|i| GalleryItem {
            image_id: format!("img-{i}.png"),
            preview_png: common::preview::make_preview(&image::DynamicImage::ImageRgba8(procedural_cover(
                40 + i,
                30,
                u64::from(i),
            )))
            .unwrap(),
        })
        .collect();
    let bytes = encode_gallery(&items);
    let expected: usize = 2 + items.iter().map(|i| 1 + i.image_id.len() + 4 + i.preview_png.len()).sum::<usize>();
    assert_eq!(bytes.len(), expected);
    assert_eq!(decode_gallery(&bytes).unwrap(), items);
    // Limits reached exactly are fine.
    let max: Vec<GalleryItem> = (0..MAX_GALLERY_ITEMS)
        .map(|i| GalleryItem { image_id: format!("{i:0>64}"), preview_png: vec![i as u8; 10] })
        .collect();
    assert_eq!(decode_gallery(&encode_gallery(&max)).unwrap(), max);
    let big = vec![GalleryItem { image_id: "big".into(), preview_png: vec![7; MAX_PREVIEW_LEN] }];
    assert_eq!(decode_gallery(&encode_gallery(&big)).unwrap(), big);
}

#[test]
fn encode_gallery_skips_what_decode_would_reject() {
    let ok = GalleryItem { image_id: "ok".into(), preview_png: vec![1, 2, 3] };
    let items = vec![
        GalleryItem { image_id: "../x".into(), preview_png: vec![] },
        ok.clone(),
        GalleryItem { image_id: "huge".into(), preview_png: vec![0; MAX_PREVIEW_LEN + 1] },
        GalleryItem { image_id: "".into(), preview_png: vec![] },
    ];
    assert_eq!(decode_gallery(&encode_gallery(&items)).unwrap(), vec![ok.clone()]);
    let many = vec![ok; MAX_GALLERY_ITEMS + 44];
    assert_eq!(decode_gallery(&encode_gallery(&many)).unwrap().len(), MAX_GALLERY_ITEMS);
}

#[test]
fn invalid_gallery_is_rejected() {
    let item = |id: &[u8], len: u32, body: &[u8]| {
        let mut v = vec![id.len() as u8];
        v.extend_from_slice(id);
        v.extend_from_slice(&len.to_le_bytes());
        v.extend_from_slice(body);
        v
    };
    let with_count = |count: u16, rest: &[u8]| {
        let mut v = count.to_le_bytes().to_vec();
        v.extend_from_slice(rest);
        v
    };
    let good = with_count(1, &item(b"a", 2, b"xy"));
    assert_eq!(decode_gallery(&good).unwrap().len(), 1);
    let mut trailing = good.clone();
    trailing.push(0);
    let too_many = with_count((MAX_GALLERY_ITEMS + 1) as u16, &item(b"a", 0, b"").repeat(MAX_GALLERY_ITEMS + 1));
    let oversized = with_count(1, &item(b"a", MAX_PREVIEW_LEN as u32 + 1, &vec![0; MAX_PREVIEW_LEN + 1]));
    let huge_claim = with_count(1, &item(b"a", u32::MAX, b""));
    for bad in [
        vec![],
        vec![1],
        with_count(u16::MAX, b""),
        with_count(2, &item(b"a", 2, b"xy")),
        with_count(1, &item(b"a", 3, b"xy")),
        with_count(1, &item(b"../x", 0, b"")),
        with_count(1, &item(b"", 0, b"")),
        with_count(1, &item(b"a\xffb", 0, b"")),
        with_count(1, &item(b".hidden", 0, b"")),
        with_count(1, &item(&[b'x'; 65], 0, b"")),
        trailing,
        too_many,
        oversized,
        huge_claim,
        good[..good.len() - 1].to_vec(),
    ] {
        assert!(matches!(decode_gallery(&bad), Err(RightsError::Gallery(_))), "{:?}", decode_gallery(&bad));
    }
}
