//! Least-significant-bit steganography: hides any bytes (the "secret") in the lowest bit of the
//! red, green and blue channels of a non-secret cover image, and reveals them again.
//!
//! Also decodes untrusted image bytes under size limits, enlarges a cover just enough for a
//! payload, writes the result as PNG (a lossless format, so the hidden bits survive), measures
//! the distortion (PSNR), and keeps the server's set of decoded cover images in memory.
//! [`hide_upload`] is the whole of a server's encryption step (the server and the benchmark's
//! in-process floor both run it).
//!
//! Layout, one bit per colour channel, pixels in row-major order, channels R, G, B (alpha is
//! never touched), most significant bit of each byte first:
//!
//! ```text
//! magic "IMGC" (4 bytes) | version (1) | bits per channel (1) | payload length (u32 LE) | payload
//! ```

use std::fmt;
use std::io::Cursor;
use std::path::Path;
use std::sync::OnceLock;

use image::codecs::png::{CompressionType, FilterType as PngFilter, PngEncoder};
use image::imageops::FilterType;
use image::{DynamicImage, ExtendedColorType, ImageEncoder, ImageReader, Limits, RgbaImage};

/// The four bytes that start every hidden header.
pub const MAGIC: [u8; 4] = *b"IMGC";
/// The version of the hidden layout written by [`embed`].
pub const VERSION: u8 = 1;
/// Bits of payload stored in each colour channel (only 1 is supported).
pub const BITS_PER_CHANNEL: u8 = 1;
/// Size in bytes of the hidden header (magic, version, bits per channel, u32 length).
pub const HEADER_LEN: usize = 10;
/// Largest width or height [`decode_image`] accepts (and [`fit_cover`] produces).
pub const MAX_DIMENSION: u32 = 16384;
/// Most memory in bytes the image decoder may allocate for one image.
pub const MAX_ALLOC: u64 = 512 * 1024 * 1024;
/// Largest payload [`hide`] accepts (and [`fit_cover`] enlarges a cover for): 16 MiB.
pub const MAX_PAYLOAD: usize = 16 * 1024 * 1024;

/// Colour bytes (R, G or B) needed to hold the header.
const HEADER_BITS: usize = HEADER_LEN * 8;

/// What can go wrong while hiding or revealing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StegoError {
    /// The payload needs `needed` bytes of room but the image only offers `capacity`.
    TooLarge {
        /// Payload bytes to hide.
        needed: usize,
        /// Payload bytes the image can hold.
        capacity: usize,
    },
    /// The bytes are not a decodable image (unknown format, garbage, truncated, over limits).
    NotAnImage(String),
    /// The image carries no hidden header (magic bytes missing).
    NoHiddenData,
    /// A hidden header is present but inconsistent (version, bit depth or length).
    Corrupt(String),
    /// Writing the output image failed.
    Encode(String),
    /// Reading a file or directory failed.
    Io(String),
}

impl fmt::Display for StegoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StegoError::TooLarge { needed, capacity } => {
                write!(f, "payload of {needed} bytes does not fit: capacity is {capacity} bytes")
            }
            StegoError::NotAnImage(why) => write!(f, "not a decodable image: {why}"),
            StegoError::NoHiddenData => write!(f, "no hidden data in this image"),
            StegoError::Corrupt(why) => write!(f, "hidden data is corrupt: {why}"),
            StegoError::Encode(why) => write!(f, "cannot encode image: {why}"),
            StegoError::Io(why) => write!(f, "i/o error: {why}"),
        }
    }
}

impl std::error::Error for StegoError {}

/// Payload bytes that fit in a `width` × `height` image (after the header), 0 if none.
pub fn capacity(width: u32, height: u32) -> usize {
    let bits = u64::from(width) * u64::from(height) * 3;
    let bytes = (bits / 8).saturating_sub(HEADER_LEN as u64).min(u64::from(u32::MAX));
    usize::try_from(bytes).unwrap_or(usize::MAX)
}

/// Decodes image bytes of any supported format (guessed from content) under size limits.
pub fn decode_image(bytes: &[u8]) -> Result<DynamicImage, StegoError> {
    if bytes.is_empty() {
        return Err(StegoError::NotAnImage("empty input".into()));
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| StegoError::NotAnImage(e.to_string()))?;
    if reader.format().is_none() {
        return Err(StegoError::NotAnImage("unknown image format".into()));
    }
    let mut reader = reader;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_DIMENSION);
    limits.max_image_height = Some(MAX_DIMENSION);
    limits.max_alloc = Some(MAX_ALLOC);
    reader.limits(limits);
    reader.decode().map_err(|e| StegoError::NotAnImage(e.to_string()))
}

/// Writes `data` MSB first into the low bit of the colour bytes of an RGBA buffer, starting at
/// raw index `at` (which must point at a colour byte); returns the raw index after the last bit.
#[inline]
fn write_bits(buf: &mut [u8], mut at: usize, data: &[u8]) -> usize {
    for &byte in data {
        for shift in (0..8u32).rev() {
            if let Some(c) = buf.get_mut(at) {
                *c = (*c & 0xFE) | ((byte >> shift) & 1);
            }
            at += 1;
            // Every fourth byte of a pixel is alpha: step over it.
            if at & 3 == 3 {
                at += 1;
            }
        }
    }
    at
}

/// Fills `out` from the low bits of the colour bytes of an RGBA buffer (the inverse of
/// [`write_bits`]); returns the raw index after the last bit read.
#[inline]
fn read_bits(buf: &[u8], mut at: usize, out: &mut [u8]) -> usize {
    for slot in out.iter_mut() {
        let mut byte = 0u8;
        for _ in 0..8 {
            let bit = buf.get(at).map_or(0, |c| c & 1);
            byte = (byte << 1) | bit;
            at += 1;
            if at & 3 == 3 {
                at += 1;
            }
        }
        *slot = byte;
    }
    at
}

/// Hides `payload` in `img` itself (header then payload); fails with `TooLarge` if it does not fit.
pub fn embed_in_place(img: &mut RgbaImage, payload: &[u8]) -> Result<(), StegoError> {
    let room = capacity(img.width(), img.height());
    if payload.len() > room {
        return Err(StegoError::TooLarge { needed: payload.len(), capacity: room });
    }
    let len =
        u32::try_from(payload.len()).map_err(|_| StegoError::TooLarge { needed: payload.len(), capacity: room })?;
    let mut header = [0u8; HEADER_LEN];
    header[..4].copy_from_slice(&MAGIC);
    header[4] = VERSION;
    header[5] = BITS_PER_CHANNEL;
    header[6..].copy_from_slice(&len.to_le_bytes());
    let buf: &mut [u8] = img.as_mut();
    let at = write_bits(buf, 0, &header);
    write_bits(buf, at, payload);
    Ok(())
}

/// Returns a copy of `cover` with `payload` hidden in it; `TooLarge` if it does not fit.
pub fn embed(cover: &RgbaImage, payload: &[u8]) -> Result<RgbaImage, StegoError> {
    let room = capacity(cover.width(), cover.height());
    if payload.len() > room {
        return Err(StegoError::TooLarge { needed: payload.len(), capacity: room });
    }
    let mut img = cover.clone();
    embed_in_place(&mut img, payload)?;
    Ok(img)
}

/// Reads the payload hidden by [`embed`], checking magic, version and length against capacity.
pub fn extract(img: &RgbaImage) -> Result<Vec<u8>, StegoError> {
    let pixels = u64::from(img.width()) * u64::from(img.height());
    if pixels * 3 < HEADER_BITS as u64 {
        return Err(StegoError::NoHiddenData);
    }
    let buf: &[u8] = img.as_raw();
    let mut header = [0u8; HEADER_LEN];
    let at = read_bits(buf, 0, &mut header);
    if header[..4] != MAGIC {
        return Err(StegoError::NoHiddenData);
    }
    if header[4] != VERSION {
        return Err(StegoError::Corrupt(format!("unsupported version {}", header[4])));
    }
    if header[5] != BITS_PER_CHANNEL {
        return Err(StegoError::Corrupt(format!("unsupported {} bits per channel", header[5])));
    }
    let len = u32::from_le_bytes([header[6], header[7], header[8], header[9]]);
    let room = capacity(img.width(), img.height());
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    if len > room {
        return Err(StegoError::Corrupt(format!("header claims {len} bytes but the image holds at most {room}")));
    }
    let mut out = vec![0u8; len];
    read_bits(buf, at, &mut out);
    Ok(out)
}

/// Smallest dimensions with the aspect ratio of `w` × `h` (as far as [`MAX_DIMENSION`] allows)
/// whose capacity holds `len` payload bytes.
fn fitted_dims(w: u32, h: u32, len: usize) -> (u32, u32) {
    let needed_px = ((HEADER_LEN + len) as f64 * 8.0 / 3.0).ceil();
    let scale = (needed_px / (f64::from(w) * f64::from(h))).sqrt();
    let max = f64::from(MAX_DIMENSION);
    let mut nw = (f64::from(w) * scale).ceil().clamp(1.0, max) as u32;
    let mut nh = (f64::from(h) * scale).ceil().clamp(1.0, max) as u32;
    // A clamped side: make up the area with the other one.
    if nw == MAX_DIMENSION && nh < MAX_DIMENSION {
        nh = (needed_px / max).ceil().clamp(1.0, max) as u32;
    } else if nh == MAX_DIMENSION && nw < MAX_DIMENSION {
        nw = (needed_px / max).ceil().clamp(1.0, max) as u32;
    }
    // Rounding may leave us a few bytes short: grow the relatively smaller side.
    for _ in 0..64 {
        if capacity(nw, nh) >= len {
            break;
        }
        let grow_w = u64::from(nw) * u64::from(h) <= u64::from(nh) * u64::from(w);
        if (grow_w || nh == MAX_DIMENSION) && nw < MAX_DIMENSION {
            nw += 1;
        } else if nh < MAX_DIMENSION {
            nh += 1;
        } else {
            break;
        }
    }
    (nw, nh)
}

/// The cover as RGBA, enlarged (aspect kept) just enough for `payload_len` bytes, else unchanged.
pub fn fit_cover(cover: &DynamicImage, payload_len: usize) -> RgbaImage {
    // Enlargement is bounded: at most room for MAX_PAYLOAD, sides at most MAX_DIMENSION (a
    // larger payload then fails in `embed` with `TooLarge`). Triangle filtering is fast enough.
    let len = payload_len.min(MAX_PAYLOAD);
    let (w, h) = (cover.width(), cover.height());
    if w == 0 || h == 0 {
        // Nothing to enlarge: paint a procedural square instead.
        let (side, _) = fitted_dims(1, 1, len);
        return procedural_cover(side, side, 0);
    }
    if capacity(w, h) >= len {
        return cover.to_rgba8();
    }
    let (nw, nh) = fitted_dims(w, h, len);
    match cover {
        DynamicImage::ImageRgba8(rgba) => image::imageops::resize(rgba, nw, nh, FilterType::Triangle),
        other => image::imageops::resize(&other.to_rgba8(), nw, nh, FilterType::Triangle),
    }
}

/// Encodes as PNG (fast deflate, Paeth filter); RGB8 when every pixel is opaque, else RGBA8.
pub fn encode_png(img: &RgbaImage) -> Result<Vec<u8>, StegoError> {
    let (w, h) = img.dimensions();
    if w == 0 || h == 0 {
        return Err(StegoError::Encode("image has no pixels".into()));
    }
    let raw: &[u8] = img.as_raw();
    let mut out = Vec::with_capacity(raw.len() / 2 + 1024);
    // Measured on a 166×166 RGB stego image: fast deflate + Paeth about 170 µs for 36 KB, Sub
    // 160 µs for 38 KB, Adaptive 215 µs for 36 KB, no filter 130 µs for 83 KB, zlib level 1
    // about 950 µs, default level about 11 ms. RGB rather than RGBA saves about a quarter.
    let encoder = PngEncoder::new_with_quality(&mut out, CompressionType::Fast, PngFilter::Paeth);
    // One pass drops alpha and checks that it was all opaque (covers usually are).
    let mut rgb = vec![0u8; raw.len() / 4 * 3];
    let mut alpha_and = 0xFFu8;
    for (dst, src) in rgb.chunks_exact_mut(3).zip(raw.chunks_exact(4)) {
        if let ([r, g, b], [sr, sg, sb, sa]) = (dst, src) {
            (*r, *g, *b) = (*sr, *sg, *sb);
            alpha_and &= *sa;
        }
    }
    let result = if alpha_and == 0xFF {
        encoder.write_image(&rgb, w, h, ExtendedColorType::Rgb8)
    } else {
        encoder.write_image(raw, w, h, ExtendedColorType::Rgba8)
    };
    result.map_err(|e| StegoError::Encode(e.to_string()))?;
    Ok(out)
}

/// Hides `payload` in `cover` (enlarged if needed) and returns the stego image as PNG bytes.
pub fn hide(cover: &DynamicImage, payload: &[u8]) -> Result<Vec<u8>, StegoError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(StegoError::TooLarge { needed: payload.len(), capacity: MAX_PAYLOAD });
    }
    let mut img = fit_cover(cover, payload.len());
    embed_in_place(&mut img, payload)?;
    encode_png(&img)
}

/// Decodes a stego image (PNG or any lossless format) and returns the hidden payload.
pub fn reveal(stego_png: &[u8]) -> Result<Vec<u8>, StegoError> {
    let img = decode_image(stego_png)?.into_rgba8();
    extract(&img)
}

/// Peak signal-to-noise ratio in dB over R, G, B; infinity if equal, 0.0 if sizes differ.
pub fn psnr(a: &RgbaImage, b: &RgbaImage) -> f64 {
    if a.dimensions() != b.dimensions() {
        return 0.0;
    }
    let mut sum_sq: u64 = 0;
    for (pa, pb) in a.as_raw().chunks_exact(4).zip(b.as_raw().chunks_exact(4)) {
        for (x, y) in pa.iter().zip(pb.iter()).take(3) {
            let d = u64::from(x.abs_diff(*y));
            sum_sq += d * d;
        }
    }
    let samples = u64::from(a.width()) * u64::from(a.height()) * 3;
    if sum_sq == 0 || samples == 0 {
        return f64::INFINITY;
    }
    let mse = sum_sq as f64 / samples as f64;
    10.0 * (255.0 * 255.0 / mse).log10()
}

/// A 32-bit hash of a lattice point, for value noise.
#[inline]
fn lattice_hash(x: i32, y: i32, seed: u32) -> u32 {
    let mut h = (x as u32).wrapping_mul(0x27D4_EB2D) ^ (y as u32).wrapping_mul(0x1656_67B1) ^ seed;
    h ^= h >> 15;
    h = h.wrapping_mul(0x85EB_CA6B);
    h ^= h >> 13;
    h = h.wrapping_mul(0xC2B2_AE35);
    h ^ (h >> 16)
}

/// Smooth value noise in 0..1 at a point of the plane.
fn value_noise(x: f32, y: f32, seed: u32) -> f32 {
    let (fx, fy) = (x.floor(), y.floor());
    let (ix, iy) = (fx as i32, fy as i32);
    let (tx, ty) = (x - fx, y - fy);
    let (sx, sy) = (tx * tx * (3.0 - 2.0 * tx), ty * ty * (3.0 - 2.0 * ty));
    let v =
        |dx: i32, dy: i32| (lattice_hash(ix.wrapping_add(dx), iy.wrapping_add(dy), seed) >> 8) as f32 / 16_777_216.0;
    let top = v(0, 0) + (v(1, 0) - v(0, 0)) * sx;
    let bottom = v(0, 1) + (v(1, 1) - v(0, 1)) * sx;
    top + (bottom - top) * sy
}

/// Fractal (four octave) value noise in about 0..1.
fn fbm(x: f32, y: f32, seed: u32) -> f32 {
    let (mut sum, mut amp, mut freq, mut norm) = (0.0, 0.5, 1.0, 0.0);
    for octave in 0..4u32 {
        sum += amp * value_noise(x * freq, y * freq, seed.wrapping_add(octave * 7919));
        norm += amp;
        amp *= 0.5;
        freq *= 2.03;
    }
    sum / norm
}

/// Linear blend of two colours, `t` in 0..1.
fn mix(a: [f32; 3], b: [f32; 3], t: f32) -> [f32; 3] {
    let t = t.clamp(0.0, 1.0);
    [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t]
}

/// A natural-looking procedural landscape (sky, sun, clouds, hills, rippled water), opaque RGBA.
pub fn procedural_cover(width: u32, height: u32, seed: u64) -> RgbaImage {
    let s = (seed ^ (seed >> 32)) as u32;
    let phase = (s % 1000) as f32 * 0.013;
    let sun_x = 0.25 + (s % 50) as f32 / 100.0;
    let (w, h) = (width.max(1) as f32, height.max(1) as f32);
    let horizon = 0.62;
    RgbaImage::from_fn(width, height, |x, y| {
        let u = x as f32 / w;
        let v = y as f32 / h;
        // Texture coordinates in "scene units" so that every size shows the same landscape.
        let (nx, ny) = (u * 6.0 * w / h, v * 6.0);
        let sky_top = [38.0, 72.0, 150.0];
        let sky_low = [250.0, 186.0, 140.0];
        let mut c = if v < horizon {
            let t = (v / horizon).powf(1.4);
            let mut c = mix(sky_top, sky_low, t);
            // Sun glow.
            let (dx, dy) = (u - sun_x, (v - 0.42) * h / w);
            let d = (dx * dx + dy * dy).sqrt();
            c = mix(c, [255.0, 236.0, 190.0], (0.09 - d).max(0.0) * 11.0 + (0.35 - d).max(0.0) * 0.9);
            // Clouds.
            let cloud = fbm(nx * 0.8 + phase, ny * 2.2, s ^ 0xC10D);
            let cover = ((cloud - 0.52) * 3.0).clamp(0.0, 1.0) * (1.0 - v / horizon).max(0.15);
            mix(c, [252.0, 246.0, 240.0], cover)
        } else {
            // Water: reflect the sky, with ripples.
            let depth = (v - horizon) / (1.0 - horizon);
            let ripple = (ny * 40.0 + (nx * 3.0 + phase).sin() * 2.0).sin() * 0.5 + 0.5;
            let n = fbm(nx * 2.0, ny * 9.0, s ^ 0x3A7E);
            let base = mix([96.0, 130.0, 170.0], [20.0, 48.0, 82.0], depth);
            let c = mix(base, [236.0, 200.0, 160.0], (1.0 - (u - sun_x).abs() * 5.0).max(0.0) * 0.5 * ripple);
            mix(c, [200.0, 220.0, 235.0], (n - 0.45) * 0.6 + ripple * 0.08)
        };
        // Two ranges of hills in front of the sky, hazier far away.
        for (layer, (height_at, colour)) in
            [(0.50f32, [88.0, 112.0, 140.0]), (0.57, [52.0, 92.0, 60.0])].into_iter().enumerate()
        {
            let k = layer as f32 + 1.0;
            let ridge = height_at
                + 0.035 * (u * 7.0 * k + phase * k).sin()
                + 0.06 * (fbm(nx * 0.7 * k + 11.0 * k, k, s ^ 0x4111) - 0.5);
            if v >= ridge && v < horizon {
                let tex = fbm(nx * 3.0, ny * 3.0, s ^ (0x7000 + layer as u32));
                let shade = 0.75 + 0.5 * tex - (v - ridge) * 1.2;
                c = [colour[0] * shade, colour[1] * shade, colour[2] * shade];
            }
        }
        // Fine grain, as in a photograph.
        let grain = (value_noise(x as f32 * 0.9, y as f32 * 0.9, s ^ 0x9A1) - 0.5) * 10.0;
        let px = |v: f32| (v + grain).round().clamp(0.0, 255.0) as u8;
        image::Rgba([px(c[0]), px(c[1]), px(c[2]), 255])
    })
}

/// A small procedural cover kept for the impossible case of an empty [`Covers`].
fn fallback_cover() -> &'static DynamicImage {
    static FALLBACK: OnceLock<DynamicImage> = OnceLock::new();
    FALLBACK.get_or_init(|| DynamicImage::ImageRgba8(procedural_cover(128, 128, 1)))
}

/// The decoded cover images a server hides payloads in, kept in memory, smallest first.
#[derive(Clone)]
pub struct Covers {
    /// RGBA8 images sorted by capacity (ascending); never empty.
    images: Vec<DynamicImage>,
    /// True when the covers were generated rather than loaded.
    builtin: bool,
    /// The covers and smaller copies of them, sorted by capacity: `choose` picks from these so
    /// a payload gets a cover close to its size (a 10 KB image: ~170 px, not the next 256 px
    /// cover), which keeps both the hiding work and the result small.
    ladder: Vec<DynamicImage>,
}

/// Each step of the ladder is this fraction of the previous side.
pub const LADDER_STEP: f32 = 0.88;
/// The ladder stops below this side length.
pub const LADDER_MIN_SIDE: u32 = 48;

fn build_ladder(images: &[DynamicImage]) -> Vec<DynamicImage> {
    let mut out: Vec<DynamicImage> = Vec::new();
    for img in images {
        out.push(img.clone());
        let (mut w, mut h) = (img.width() as f32, img.height() as f32);
        loop {
            w *= LADDER_STEP;
            h *= LADDER_STEP;
            if (w.min(h) as u32) < LADDER_MIN_SIDE {
                break;
            }
            let small = image::imageops::resize(img, w as u32, h as u32, image::imageops::FilterType::Triangle);
            out.push(DynamicImage::ImageRgba8(small));
        }
    }
    out.sort_by_key(|i| capacity(i.width(), i.height()));
    out
}

impl fmt::Debug for Covers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sizes: Vec<(u32, u32)> = self.images.iter().map(|i| (i.width(), i.height())).collect();
        f.debug_struct("Covers").field("sizes", &sizes).field("builtin", &self.builtin).finish()
    }
}

impl Covers {
    /// Procedural covers generated in memory (128×128, 256×256 and 512×384).
    pub fn builtin() -> Covers {
        let images: Vec<DynamicImage> = [(128, 128, 11), (256, 256, 22), (512, 384, 33)]
            .into_iter()
            .map(|(w, h, seed)| DynamicImage::ImageRgba8(procedural_cover(w, h, seed)))
            .collect();
        let ladder = build_ladder(&images);
        Covers { images, builtin: true, ladder }
    }

    /// Covers from decoded images (converted to RGBA8; empty ones dropped); builtin if none.
    pub fn from_images(images: Vec<DynamicImage>) -> Covers {
        let mut images: Vec<DynamicImage> = images
            .into_iter()
            .filter(|i| i.width() > 0 && i.height() > 0)
            .map(|i| match i {
                DynamicImage::ImageRgba8(_) => i,
                other => DynamicImage::ImageRgba8(other.into_rgba8()),
            })
            .collect();
        if images.is_empty() {
            return Covers::builtin();
        }
        images.sort_by_key(|i| capacity(i.width(), i.height()));
        let ladder = build_ladder(&images);
        Covers { images, builtin: false, ladder }
    }

    /// Loads every decodable image in `dir`, skipping non-images and files named `sample*`.
    pub fn load_dir(dir: impl AsRef<Path>) -> Result<Covers, StegoError> {
        // Not recursive. Errors: `Io` if the folder is unreadable, `NotAnImage` if it holds no
        // decodable image. `sample*` files are sample secrets (images/sample-10k.jpg), not covers.
        let dir = dir.as_ref();
        let entries = std::fs::read_dir(dir).map_err(|e| StegoError::Io(format!("{}: {e}", dir.display())))?;
        let mut paths: Vec<_> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .filter(|p| !p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("sample")))
            .collect();
        paths.sort();
        let images: Vec<DynamicImage> = paths
            .iter()
            .filter_map(|p| std::fs::read(p).ok())
            .filter_map(|bytes| decode_image(&bytes).ok())
            .filter(|i| i.width() > 0 && i.height() > 0)
            .collect();
        if images.is_empty() {
            return Err(StegoError::NotAnImage(format!("no decodable cover image in {}", dir.display())));
        }
        Ok(Covers::from_images(images))
    }

    /// [`Covers::load_dir`], falling back to [`Covers::builtin`] if the folder is missing or empty.
    pub fn load_dir_or_builtin(dir: impl AsRef<Path>) -> Covers {
        Covers::load_dir(dir).unwrap_or_else(|_| Covers::builtin())
    }

    /// Number of covers (at least 1).
    pub fn len(&self) -> usize {
        self.images.len()
    }

    /// Always false: a `Covers` holds at least one image.
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// True when these are the generated builtin covers.
    pub fn is_builtin(&self) -> bool {
        self.builtin
    }

    /// The covers, smallest capacity first.
    pub fn iter(&self) -> impl Iterator<Item = &DynamicImage> {
        self.images.iter()
    }

    /// The smallest cover whose capacity holds `payload_len` bytes, else the largest one.
    pub fn choose(&self, payload_len: usize) -> &DynamicImage {
        self.ladder
            .iter()
            .find(|i| capacity(i.width(), i.height()) >= payload_len)
            .or_else(|| self.ladder.last())
            .unwrap_or_else(|| fallback_cover())
    }
}

/// A server's encryption step: checks that `sealed` is `owner`'s image sealed under `key` (the
/// owner's own-image key) and that the image decodes, then hides the sealed bytes, unchanged, in
/// the cover [`Covers::choose`] picks for their length (deterministic: the same upload gives the
/// same PNG).
pub fn hide_upload(covers: &Covers, key: &crate::crypto::Key, owner: &str, sealed: &[u8]) -> Result<Vec<u8>, String> {
    let aad = crate::auth::own_image_aad(owner);
    let image =
        crate::crypto::open(key, &aad, sealed).map_err(|e| format!("the upload is not {owner}'s sealed image: {e}"))?;
    decode_image(&image).map_err(|e| format!("not an image this server can read: {e}"))?;
    let cover = covers.choose(sealed.len());
    hide(cover, sealed).map_err(|e| format!("cannot hide the image: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_counts_three_bits_per_pixel() {
        assert_eq!(capacity(0, 0), 0);
        assert_eq!(capacity(8, 8), 24 - HEADER_LEN);
        assert_eq!(capacity(2, 2), 0);
    }

    #[test]
    fn bits_skip_alpha() {
        let mut buf = vec![0u8; 4 * 8];
        for (i, b) in buf.iter_mut().enumerate() {
            if i % 4 == 3 {
                *b = 0x80;
            }
        }
        let end = write_bits(&mut buf, 0, &[0xFF, 0x00, 0xA5]);
        assert_eq!(end, 32);
        assert!(buf.iter().enumerate().filter(|(i, _)| i % 4 == 3).all(|(_, &b)| b == 0x80));
        let mut back = [0u8; 3];
        read_bits(&buf, 0, &mut back);
        assert_eq!(back, [0xFF, 0x00, 0xA5]);
    }

    #[test]
    fn fitted_dims_fit_and_keep_aspect() {
        for &(w, h, len) in &[(4, 3, 10_000), (100, 100, 1), (1, 1000, 50_000), (640, 480, 1 << 20)] {
            let (nw, nh) = fitted_dims(w, h, len);
            assert!(capacity(nw, nh) >= len, "{w}x{h} {len} -> {nw}x{nh}");
            let aspect = f64::from(w) / f64::from(h);
            let naspect = f64::from(nw) / f64::from(nh);
            assert!((aspect / naspect - 1.0).abs() < 0.05 || nw < 20 || nh < 20);
        }
        let (nw, nh) = fitted_dims(1, 1, MAX_PAYLOAD);
        assert!(nw <= MAX_DIMENSION && nh <= MAX_DIMENSION && capacity(nw, nh) >= MAX_PAYLOAD);
    }

    #[test]
    fn extract_of_tiny_image_is_no_hidden_data() {
        assert_eq!(extract(&RgbaImage::new(1, 1)), Err(StegoError::NoHiddenData));
        assert_eq!(extract(&RgbaImage::new(0, 0)), Err(StegoError::NoHiddenData));
    }

    #[test]
    fn choose_prefers_a_cover_close_to_the_payload() {
        let covers = Covers::builtin();
        assert!(covers.choose(0).width() < 128, "the ladder goes below the smallest cover");
        for need in [1_000, 10_435, capacity(128, 128) + 1, 50_000] {
            let c = covers.choose(need);
            let cap = capacity(c.width(), c.height());
            assert!(cap >= need, "{need} fits");
            assert!(cap <= need * 14 / 10 + 2_000, "{need}: capacity {cap} is close to the need");
        }
        assert_eq!(covers.choose(usize::MAX).width(), 512, "too large: the largest, to be enlarged");
    }
}
