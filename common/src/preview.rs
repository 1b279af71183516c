//! Low-resolution previews of images: small PNG thumbnails (long side at most [`PREVIEW_MAX`]
//! pixels, carrying the original's pixel and file size in a `tEXt` chunk, see [`original`]) for
//! listings, and 24-bit colour half-block renderings for terminals: one picture sized to the
//! terminal ([`fit_columns`]), or a gallery's previews side by side ([`grid`]), blurred
//! ([`blur`]) until the viewer is granted the image.

use std::fmt;
use std::fmt::Write as _;

use image::codecs::png::{CompressionType, FilterType as PngFilter, PngEncoder};
use image::imageops::FilterType;
use image::{DynamicImage, ExtendedColorType, GenericImageView, ImageEncoder};

use crate::stego::{self, StegoError};

/// Longest side, in pixels, of a preview.
pub const PREVIEW_MAX: u32 = 96;

/// What can go wrong while making a preview.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreviewError {
    /// The input bytes are not a decodable image.
    Decode(StegoError),
    /// The image has no pixels.
    Empty,
    /// Writing the PNG failed.
    Encode(String),
}

impl fmt::Display for PreviewError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PreviewError::Decode(e) => write!(f, "cannot preview: {e}"),
            PreviewError::Empty => write!(f, "cannot preview an image with no pixels"),
            PreviewError::Encode(why) => write!(f, "cannot encode preview: {why}"),
        }
    }
}

impl std::error::Error for PreviewError {}

impl From<StegoError> for PreviewError {
    fn from(e: StegoError) -> Self {
        PreviewError::Decode(e)
    }
}

/// Dimensions fitting `w` × `h` inside `max` × `max` with the aspect kept; never enlarged.
fn shrink_dims(w: u32, h: u32, max: u32) -> (u32, u32) {
    if w <= max && h <= max {
        return (w, h);
    }
    let (w64, h64, max64) = (u64::from(w), u64::from(h), u64::from(max));
    if w >= h {
        (max, ((h64 * max64 + w64 / 2) / w64).clamp(1, max64) as u32)
    } else {
        (((w64 * max64 + h64 / 2) / h64).clamp(1, max64) as u32, max)
    }
}

/// The image scaled down (aspect kept, Triangle filter) to fit `max` × `max`; a copy if smaller.
fn shrink(img: &DynamicImage, max: u32) -> DynamicImage {
    let (w, h) = img.dimensions();
    let (nw, nh) = shrink_dims(w, h, max);
    if (nw, nh) == (w, h) {
        img.clone()
    } else {
        img.resize_exact(nw, nh, FilterType::Triangle)
    }
}

/// A PNG preview of `img`, long side at most [`PREVIEW_MAX`] pixels (never upscaled), aspect kept.
pub fn make_preview(img: &DynamicImage) -> Result<Vec<u8>, PreviewError> {
    if img.width() == 0 || img.height() == 0 {
        return Err(PreviewError::Empty);
    }
    let small = shrink(img, PREVIEW_MAX);
    let (w, h) = small.dimensions();
    let mut out = Vec::new();
    // zlib's default level costs milliseconds even at this size; fast deflate is plenty.
    let encoder = PngEncoder::new_with_quality(&mut out, CompressionType::Fast, PngFilter::Adaptive);
    let result = if small.color().has_alpha() {
        encoder.write_image(small.to_rgba8().as_raw(), w, h, ExtendedColorType::Rgba8)
    } else {
        encoder.write_image(small.to_rgb8().as_raw(), w, h, ExtendedColorType::Rgb8)
    };
    result.map_err(|e| PreviewError::Encode(e.to_string()))?;
    Ok(out)
}

/// Decodes image bytes (any supported format, with limits) and returns a PNG preview that
/// records the original's pixel size and file size (see [`original`]).
pub fn preview_from_bytes(bytes: &[u8]) -> Result<Vec<u8>, PreviewError> {
    let img = stego::decode_image(bytes)?;
    let png = make_preview(&img)?;
    let size = Original { width: img.width(), height: img.height(), bytes: bytes.len() as u64 };
    Ok(with_original(&png, size).unwrap_or(png))
}

/// The `tEXt` keyword of the chunk that records the original's size in a preview.
const ORIGINAL_KEYWORD: &[u8] = b"imgcloud-original";

/// The size of the image a preview was made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Original {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// File size in bytes.
    pub bytes: u64,
}

impl fmt::Display for Original {
    /// `1920×1080, 2.4 MB`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}×{}, {}", self.width, self.height, human_bytes(self.bytes))
    }
}

/// `2.4 MB`, `812 KB`, `90 B` (decimal units).
pub fn human_bytes(n: u64) -> String {
    match n {
        0..1_000 => format!("{n} B"),
        1_000..1_000_000 => format!("{} KB", n / 1_000),
        _ => format!("{:.1} MB", n as f64 / 1e6),
    }
}

/// `png` with a `tEXt` chunk recording `size` right after `IHDR`; None if `png` is malformed.
fn with_original(png: &[u8], size: Original) -> Option<Vec<u8>> {
    let chunks = crate::rights::parse_png(png).ok()?;
    let mut text = ORIGINAL_KEYWORD.to_vec();
    text.push(0);
    text.extend_from_slice(format!("{}x{} {}", size.width, size.height, size.bytes).as_bytes());
    let mut out = Vec::with_capacity(png.len() + text.len() + 12);
    out.extend_from_slice(png.get(..8)?);
    for (i, chunk) in chunks.iter().enumerate() {
        out.extend_from_slice(chunk.raw);
        if i == 0 {
            crate::rights::push_chunk(&mut out, b"tEXt", &text);
        }
    }
    Some(out)
}

/// The original's size recorded in a preview; None for a preview made before previews carried
/// it, or anything malformed.
pub fn original(preview_png: &[u8]) -> Option<Original> {
    let chunks = crate::rights::parse_png(preview_png).ok()?;
    let text = chunks.iter().find_map(|c| {
        let (key, value) = c.data.split_at_checked(ORIGINAL_KEYWORD.len() + 1)?;
        (&c.kind == b"tEXt" && key.strip_suffix(&[0]) == Some(ORIGINAL_KEYWORD)).then_some(value)
    })?;
    let text = std::str::from_utf8(text).ok()?;
    let (dims, bytes) = text.split_once(' ')?;
    let (w, h) = dims.split_once('x')?;
    Some(Original { width: w.parse().ok()?, height: h.parse().ok()?, bytes: bytes.parse().ok()? })
}

/// `img` blurred beyond recognition at preview size (Gaussian, sigma a twelfth of its long
/// side): what a viewer sees of an image before its owner grants it.
pub fn blur(img: &DynamicImage) -> DynamicImage {
    let sigma = (img.width().max(img.height()) as f32 / 12.0).max(2.0);
    img.blur(sigma)
}

/// The columns to draw a `w` × `h` picture with [`render_ansi`] so that it is at most `cols`
/// wide and `lines` tall (at least one column).
pub fn fit_columns(w: u32, h: u32, cols: u32, lines: u32) -> u32 {
    if w == 0 || h == 0 {
        return cols.max(1);
    }
    // `c` columns draw h·c/w pixel rows, two per line.
    let by_height = u64::from(lines) * 2 * u64::from(w) / u64::from(h);
    u32::try_from(by_height).unwrap_or(u32::MAX).min(cols).max(1)
}

/// One picture of a [`grid`] with its caption lines (cut to the tile's width).
pub struct Tile {
    /// The picture (None: caption only, e.g. an undecodable preview).
    pub image: Option<DynamicImage>,
    /// Lines under the picture.
    pub caption: Vec<String>,
}

/// Columns between two tiles of a [`grid`].
pub const GRID_GAP: u32 = 2;
/// Narrowest tile that a [`grid`] puts beside another.
pub const GRID_MIN_TILE: u32 = 18;
/// Widest tile of a [`grid`].
pub const GRID_MAX_TILE: u32 = 40;

/// How many tiles a [`grid`] puts in a row of `width` columns, and how wide each is.
pub fn grid_shape(width: u32, count: usize) -> (usize, u32) {
    let width = width.max(1);
    let fit = ((width + GRID_GAP) / (GRID_MIN_TILE + GRID_GAP)).max(1) as usize;
    let per_row = fit.min(count.max(1));
    let gaps = GRID_GAP * (per_row as u32 - 1);
    (per_row, ((width - gaps) / per_row as u32).clamp(1, GRID_MAX_TILE))
}

/// The columns a terminal shows for `line`: its characters outside `ESC [ … m` sequences.
pub fn visible_width(line: &str) -> usize {
    let mut n = 0;
    let mut in_escape = false;
    for c in line.chars() {
        match (in_escape, c) {
            (false, '\x1b') => in_escape = true,
            (false, _) => n += 1,
            (true, 'm') => in_escape = false,
            (true, _) => {}
        }
    }
    n
}

/// `text` cut to `cols` characters (an ellipsis marks a cut).
fn cut(text: &str, cols: usize) -> String {
    if text.chars().count() <= cols {
        return text.to_string();
    }
    let mut s: String = text.chars().take(cols.saturating_sub(1)).collect();
    s.push('…');
    s
}

/// Draws `tiles` side by side in rows fitting `width` columns (see [`grid_shape`]): each picture
/// drawn with [`render_ansi`] at the tile's width, its caption below it; one string of lines.
pub fn grid(tiles: &[Tile], width: u32) -> String {
    let (per_row, tile_w) = grid_shape(width, tiles.len());
    let tw = tile_w as usize;
    let gap = " ".repeat(GRID_GAP as usize);
    let mut out = String::new();
    for row in tiles.chunks(per_row) {
        let pictures: Vec<Vec<String>> = row
            .iter()
            .map(|t| {
                t.image.as_ref().map_or_else(Vec::new, |i| render_ansi(i, tile_w).lines().map(String::from).collect())
            })
            .collect();
        let tall = pictures.iter().map(Vec::len).max().unwrap_or(0);
        let captions = row.iter().map(|t| t.caption.len()).max().unwrap_or(0);
        for y in 0..tall + captions {
            let cells: Vec<String> = row
                .iter()
                .zip(&pictures)
                .map(|(tile, picture)| {
                    let cell = if y < tall {
                        picture.get(y).cloned().unwrap_or_default()
                    } else {
                        tile.caption.get(y - tall).map(|c| cut(c, tw)).unwrap_or_default()
                    };
                    let pad = tw.saturating_sub(visible_width(&cell));
                    cell + &" ".repeat(pad)
                })
                .collect();
            out.push_str(cells.join(&gap).trim_end());
            out.push('\n');
        }
    }
    out
}

/// Draws `img` for a 24-bit colour terminal with `▀` half blocks, at most `max_cols` columns wide.
pub fn render_ansi(img: &DynamicImage, max_cols: u32) -> String {
    // Upper pixel = foreground, lower pixel = background; one line per two pixel rows (never
    // upscaled), each ending in `\x1b[0m\n`; the last line of an odd height has the default
    // background. Empty string for an empty image or `max_cols == 0`.
    if max_cols == 0 || img.width() == 0 || img.height() == 0 {
        return String::new();
    }
    // Terminal cells are about twice as tall as wide, and each cell shows two pixel rows, so
    // scaling the width to the column count and keeping the aspect gives a faithful shape.
    let (w, h) = img.dimensions();
    let (nw, nh) = if w > max_cols {
        let nh = (u64::from(h) * u64::from(max_cols) + u64::from(w) / 2) / u64::from(w);
        (max_cols, u32::try_from(nh.max(1)).unwrap_or(u32::MAX))
    } else {
        (w, h)
    };
    let small =
        if (nw, nh) == (w, h) { img.to_rgba8() } else { img.resize_exact(nw, nh, FilterType::Triangle).into_rgba8() };
    // Transparent pixels are shown over black.
    let rgb = |x: u32, y: u32| -> [u8; 3] {
        let p = small.get_pixel(x, y).0;
        let a = u16::from(p[3]);
        let f = |c: u8| ((u16::from(c) * a + 127) / 255) as u8;
        [f(p[0]), f(p[1]), f(p[2])]
    };
    let rows = nh.div_ceil(2);
    let mut out = String::with_capacity((rows as usize) * (nw as usize) * 40);
    for row in 0..rows {
        let top = row * 2;
        for x in 0..nw {
            let [r, g, b] = rgb(x, top);
            let _ = write!(out, "\x1b[38;2;{r};{g};{b}m");
            if top + 1 < nh {
                let [r, g, b] = rgb(x, top + 1);
                let _ = write!(out, "\x1b[48;2;{r};{g};{b}m");
            } else {
                out.push_str("\x1b[49m");
            }
            out.push('▀');
        }
        out.push_str("\x1b[0m\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shrink_dims_keeps_aspect_and_never_enlarges() {
        assert_eq!(shrink_dims(50, 20, 96), (50, 20));
        assert_eq!(shrink_dims(960, 480, 96), (96, 48));
        assert_eq!(shrink_dims(480, 960, 96), (48, 96));
        assert_eq!(shrink_dims(10_000, 1, 96), (96, 1));
    }

    /// A picture of black and white squares `side` pixels wide.
    fn checker(w: u32, h: u32, side: u32) -> DynamicImage {
        DynamicImage::ImageRgb8(image::RgbImage::from_fn(w, h, |x, y| {
            if (x / side + y / side).is_multiple_of(2) {
                image::Rgb([255, 255, 255])
            } else {
                image::Rgb([0, 0, 0])
            }
        }))
    }

    /// Sum of absolute differences between horizontally adjacent pixels (sharpness).
    fn edges(img: &DynamicImage) -> u64 {
        let g = img.to_luma8();
        let mut sum = 0u64;
        for y in 0..g.height() {
            for x in 1..g.width() {
                sum += u64::from(g.get_pixel(x, y).0[0].abs_diff(g.get_pixel(x - 1, y).0[0]));
            }
        }
        sum
    }

    #[test]
    fn blur_removes_detail_and_keeps_size_and_tone() {
        let sharp = checker(96, 64, 8);
        let blurred = blur(&sharp);
        assert_eq!(blurred.dimensions(), (96, 64));
        assert!(edges(&blurred) * 10 < edges(&sharp), "{} vs {}", edges(&blurred), edges(&sharp));
        let mean = |i: &DynamicImage| i.to_luma8().pixels().map(|p| u64::from(p.0[0])).sum::<u64>() / (96 * 64);
        assert!(mean(&blurred).abs_diff(mean(&sharp)) < 16);
    }

    #[test]
    fn grid_shape_fits_the_width() {
        assert_eq!(grid_shape(40, 6), (2, 19));
        assert_eq!(grid_shape(100, 6), (5, 18));
        assert_eq!(grid_shape(100, 2), (2, 40));
        assert_eq!(grid_shape(10, 6), (1, 10));
        assert_eq!(grid_shape(0, 0), (1, 1));
        for width in 1..200 {
            for count in 0..8 {
                let (n, w) = grid_shape(width, count);
                assert!(n as u32 * w + (n as u32 - 1) * GRID_GAP <= width.max(1), "{width} {count}");
            }
        }
    }

    #[test]
    fn grid_lays_tiles_side_by_side_within_the_width() {
        let tiles: Vec<Tile> = (0..6)
            .map(|i| Tile {
                image: Some(checker(96, 54 + i * 4, 6)),
                caption: vec![format!("image-with-a-long-name-{i}"), "1920×1080, 2.4 MB".into()],
            })
            .collect();
        for width in [40u32, 100] {
            let out = grid(&tiles, width);
            let (per_row, tile_w) = grid_shape(width, tiles.len());
            assert!(out.lines().all(|l| visible_width(l) <= width as usize), "{width}:\n{out}");
            // Every tile's caption is there, cut to the tile, `per_row` of them on a line.
            let names: Vec<&str> = out.lines().filter(|l| l.contains("image-with")).collect();
            assert_eq!(names.len(), tiles.len().div_ceil(per_row));
            assert_eq!(names[0].matches("image-with").count(), per_row);
            assert!(names[0].contains('…'));
            // The pictures' rows: each at most as wide as its tile, `per_row` side by side.
            let first = out.lines().next().unwrap_or_default();
            assert_eq!(first.matches('▀').count(), per_row * tile_w as usize);
            // Each row as tall as its tallest picture plus the captions: shorter than a column.
            let tall = |t: &Tile| render_ansi(t.image.as_ref().unwrap(), tile_w).lines().count();
            let rows: usize = tiles.chunks(per_row).map(|r| r.iter().map(tall).max().unwrap_or(0) + 2).sum();
            assert_eq!(out.lines().count(), rows);
            assert!(rows < tiles.iter().map(|t| tall(t) + 2).sum::<usize>());
        }
        // A tile without a picture is its caption alone.
        let bare = grid(&[Tile { image: None, caption: vec!["x".into()] }], 40);
        assert_eq!(bare, "x\n");
    }

    #[test]
    fn fit_columns_keeps_the_picture_on_screen() {
        // 1920×1080 in 130×40: the width rules; in 130×20, the height (2·18 rows of pixels).
        assert_eq!(fit_columns(1920, 1080, 130, 40), 130);
        assert_eq!(fit_columns(1920, 1080, 130, 18), 64);
        assert_eq!(fit_columns(100, 1000, 80, 24), 4);
        assert_eq!(fit_columns(0, 10, 80, 24), 80);
        assert_eq!(fit_columns(10, 10, 80, 0), 1);
    }

    #[test]
    fn previews_carry_the_originals_size_and_old_ones_do_not() {
        let img = checker(300, 200, 10);
        let mut bytes = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).unwrap();
        let preview = preview_from_bytes(&bytes).unwrap();
        let got = original(&preview).unwrap();
        assert_eq!(got, Original { width: 300, height: 200, bytes: bytes.len() as u64 });
        assert_eq!(stego::decode_image(&preview).unwrap().dimensions(), (96, 64));
        assert_eq!(original(&make_preview(&img).unwrap()), None);
        assert_eq!(original(b"not a png"), None);
        let shown = Original { width: 1920, height: 1080, bytes: 2_400_000 }.to_string();
        assert_eq!(shown, "1920×1080, 2.4 MB");
        assert_eq!((human_bytes(999), human_bytes(11_512)), ("999 B".to_string(), "11 KB".to_string()));
    }

    #[test]
    fn odd_height_uses_default_background_on_last_line() {
        let img = DynamicImage::ImageRgb8(image::RgbImage::new(3, 3));
        let s = render_ansi(&img, 80);
        assert_eq!(s.lines().count(), 2);
        assert!(s.lines().last().is_some_and(|l| l.contains("\x1b[49m")));
    }
}
