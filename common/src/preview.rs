//! Low-resolution previews of images: small PNG thumbnails (long side at most [`PREVIEW_MAX`]
//! pixels) for listings, and 24-bit colour half-block renderings for terminals.

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

/// Decodes image bytes (any supported format, with limits) and returns a PNG preview.
pub fn preview_from_bytes(bytes: &[u8]) -> Result<Vec<u8>, PreviewError> {
    let img = stego::decode_image(bytes)?;
    make_preview(&img)
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

    #[test]
    fn odd_height_uses_default_background_on_last_line() {
        let img = DynamicImage::ImageRgb8(image::RgbImage::new(3, 3));
        let s = render_ansi(&img, 80);
        assert_eq!(s.lines().count(), 2);
        assert!(s.lines().last().is_some_and(|l| l.contains("\x1b[49m")));
    }
}
