//! Access rights carried inside a shared image file, and the gallery codec.
//!
//! When an owner shares a stego PNG (a cover with the secret hidden in its low bits) with a
//! viewer, the rights travel in the file itself: a private ancillary PNG chunk of type
//! [`CHUNK_TYPE`], placed right before `IEND`, holds who owns the image, who may view it, the
//! image id, the views remaining and a version number chosen by the owner (higher wins). The
//! viewer decrements the views and rewrites the chunk with [`embed`]; the pixels, and so the
//! hidden secret, are never touched.
//!
//! Chunk data layout (at most [`MAX_RIGHTS_LEN`] bytes):
//!
//! ```text
//! format version (1 byte, FORMAT_VERSION) | JSON of Rights (UTF-8)
//! ```
//!
//! The leading format byte leaves room for a later layout (for example one that adds a MAC);
//! [`read`] rejects versions it does not know as `Corrupt`.
//!
//! The gallery codec ([`encode_gallery`] / [`decode_gallery`]) is the compact binary list of
//! previews an owner sends to a peer browsing its gallery (integers little-endian, as in the
//! other wire formats of this crate):
//!
//! ```text
//! count (u16) | count × ( id length (u8) | id bytes | preview length (u32) | preview bytes )
//! ```
//!
//! All parsing is bounded and never panics, whatever the input.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::names::{check_image_id, check_user};
use crate::transfer::{crc32, crc32_update};

/// Type of the PNG chunk holding the rights.
///
/// The case of each letter is a property bit (PNG specification, section 5.4):
/// `i` lowercase = ancillary (a decoder that does not know it can ignore it and still show the
/// image); `m` lowercase = private (not a registered public chunk); `R` uppercase = the reserved
/// bit, which must be uppercase; `T` uppercase = not safe to copy: the rights belong to these
/// exact pixels (the hidden secret), so an editor that changes the image data must drop them.
pub const CHUNK_TYPE: [u8; 4] = *b"imRT";
/// Version of the chunk data layout written by [`embed`] (the first byte of the chunk data).
pub const FORMAT_VERSION: u8 = 1;
/// Largest rights chunk data, in bytes, that [`embed`] writes and [`read`] accepts.
pub const MAX_RIGHTS_LEN: usize = 4096;
/// Most items a gallery may hold.
pub const MAX_GALLERY_ITEMS: usize = 256;
/// Largest preview, in bytes, a gallery item may carry (256 KiB).
pub const MAX_PREVIEW_LEN: usize = 256 * 1024;

/// The eight bytes that start every PNG file.
const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
/// Largest chunk length the PNG specification allows (2^31 - 1).
const MAX_CHUNK_LEN: usize = 0x7FFF_FFFF;
/// Bytes around the data of every chunk: length (4), type (4), CRC (4).
const CHUNK_OVERHEAD: usize = 12;

/// The access rights of one viewer to one shared image.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct Rights {
    /// User name of the owner who shared the image.
    pub owner: String,
    /// User name of the peer allowed to view it.
    pub viewer: String,
    /// Id of the image (as in the owner's gallery).
    pub image_id: String,
    /// Views remaining; the viewer decrements it on each view.
    pub views: u32,
    /// Version set by the owner; when two copies disagree, the higher version wins.
    pub version: u64,
}

impl Rights {
    /// Checks the names: `owner` and `viewer` as user names, `image_id` as an image id.
    pub fn validate(&self) -> Result<(), String> {
        check_user(&self.owner).map_err(|e| format!("owner: {e}"))?;
        check_user(&self.viewer).map_err(|e| format!("viewer: {e}"))?;
        check_image_id(&self.image_id).map_err(|e| format!("image id: {e}"))?;
        Ok(())
    }
}

/// What can go wrong with rights chunks or galleries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RightsError {
    /// The bytes are not a well-formed PNG (signature, chunk structure, CRC, lengths).
    NotPng(String),
    /// The PNG is well formed but carries no rights chunk.
    NoRights,
    /// A rights chunk is present but unusable (duplicate, too long, unknown format, bad JSON,
    /// invalid names).
    Corrupt(String),
    /// The rights given to [`embed`] are invalid (bad names, too large).
    Invalid(String),
    /// Gallery bytes are malformed or over the limits.
    Gallery(String),
}

impl fmt::Display for RightsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RightsError::NotPng(why) => write!(f, "not a well-formed PNG: {why}"),
            RightsError::NoRights => write!(f, "the image carries no access rights"),
            RightsError::Corrupt(why) => write!(f, "the access rights in the image are corrupt: {why}"),
            RightsError::Invalid(why) => write!(f, "invalid access rights: {why}"),
            RightsError::Gallery(why) => write!(f, "invalid gallery: {why}"),
        }
    }
}

impl std::error::Error for RightsError {}

/// One chunk of a parsed PNG, borrowing from the input.
pub(crate) struct Chunk<'a> {
    /// Chunk type (four ASCII letters).
    pub(crate) kind: [u8; 4],
    /// Chunk data.
    pub(crate) data: &'a [u8],
    /// The whole chunk as stored: length, type, data and CRC.
    pub(crate) raw: &'a [u8],
    /// Whether the stored CRC matches type and data.
    crc_ok: bool,
}

/// Reads a big-endian u32 at `at`, `None` if out of bounds.
fn be_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_be_bytes(b))
}

/// Splits a PNG into its chunks, checking the signature, every length, type and CRC (except
/// that a rights chunk with a bad CRC is returned, marked), that `IHDR` comes first, and that
/// `IEND` comes last with nothing after it.
pub(crate) fn parse_png(png: &[u8]) -> Result<Vec<Chunk<'_>>, RightsError> {
    let bad = |why: String| RightsError::NotPng(why);
    if png.get(..PNG_SIGNATURE.len()) != Some(&PNG_SIGNATURE[..]) {
        return Err(bad("missing PNG signature".into()));
    }
    let mut chunks = Vec::new();
    let mut at = PNG_SIGNATURE.len();
    loop {
        if at == png.len() {
            return Err(bad("no IEND chunk".into()));
        }
        let len = be_u32(png, at).ok_or_else(|| bad(format!("truncated chunk header at byte {at}")))?;
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len > MAX_CHUNK_LEN {
            return Err(bad(format!("chunk length {len} at byte {at} exceeds 2^31-1")));
        }
        let end = at
            .checked_add(CHUNK_OVERHEAD)
            .and_then(|e| e.checked_add(len))
            .filter(|&e| e <= png.len())
            .ok_or_else(|| bad(format!("truncated chunk at byte {at}")))?;
        let raw = png.get(at..end).ok_or_else(|| bad(format!("truncated chunk at byte {at}")))?;
        let (head, rest) = raw.split_at_checked(8).ok_or_else(|| bad("truncated chunk".into()))?;
        let (data, crc_bytes) = rest.split_at_checked(len).ok_or_else(|| bad("truncated chunk".into()))?;
        let kind: [u8; 4] = head.get(4..8).and_then(|k| k.try_into().ok()).ok_or_else(|| bad("bad chunk".into()))?;
        if !kind.iter().all(u8::is_ascii_alphabetic) {
            return Err(bad(format!("invalid chunk type {kind:02x?} at byte {at}")));
        }
        let stored = be_u32(crc_bytes, 0).ok_or_else(|| bad("truncated chunk".into()))?;
        let typed = head.get(4..).ok_or_else(|| bad("truncated chunk".into()))?;
        let actual = crc32_update(crc32(typed), data);
        let crc_ok = stored == actual;
        // A damaged rights chunk is kept (for `read` to report as `Corrupt`, and for `embed` and
        // `strip` to drop); any other damaged chunk makes the file unusable.
        if !crc_ok && kind != CHUNK_TYPE {
            return Err(bad(format!("CRC mismatch in {} chunk at byte {at}", String::from_utf8_lossy(&kind))));
        }
        let first = chunks.is_empty();
        if first != (&kind == b"IHDR") {
            return Err(bad(if first { "first chunk is not IHDR".into() } else { "second IHDR chunk".into() }));
        }
        chunks.push(Chunk { kind, data, raw, crc_ok });
        at = end;
        if &kind == b"IEND" {
            if at != png.len() {
                return Err(bad(format!("{} bytes after IEND", png.len() - at)));
            }
            return Ok(chunks);
        }
    }
}

/// Appends one chunk (length, type, data, CRC over type and data) to `out`.
pub(crate) fn push_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    // Callers only pass small data (at most MAX_RIGHTS_LEN bytes, or a preview's caption).
    let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    out.extend_from_slice(&crc32_update(crc32(kind), data).to_be_bytes());
}

/// Rebuilds a PNG from its chunks without the rights chunks, inserting a rights chunk holding
/// `extra` right before `IEND` if given.
fn rebuild(png_len: usize, chunks: &[Chunk<'_>], extra: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(png_len + extra.map_or(0, |d| d.len() + CHUNK_OVERHEAD));
    out.extend_from_slice(&PNG_SIGNATURE);
    for chunk in chunks {
        if chunk.kind == CHUNK_TYPE {
            continue;
        }
        if &chunk.kind == b"IEND" {
            if let Some(data) = extra {
                push_chunk(&mut out, &CHUNK_TYPE, data);
            }
        }
        out.extend_from_slice(chunk.raw);
    }
    out
}

/// Returns `png` with `rights` in a rights chunk right before `IEND`, replacing any rights
/// chunk already there; every other chunk (so every pixel) is copied unchanged.
///
/// Fails with `NotPng` unless `png` is a well-formed PNG (valid signature, chunk lengths and
/// types, CRCs, `IHDR` first, `IEND` last with nothing after it) and with `Invalid` if the
/// rights carry invalid names. Damaged rights chunks are dropped like intact ones.
pub fn embed(png: &[u8], rights: &Rights) -> Result<Vec<u8>, RightsError> {
    rights.validate().map_err(RightsError::Invalid)?;
    let json = serde_json::to_vec(rights).map_err(|e| RightsError::Invalid(e.to_string()))?;
    let mut data = Vec::with_capacity(1 + json.len());
    data.push(FORMAT_VERSION);
    data.extend_from_slice(&json);
    if data.len() > MAX_RIGHTS_LEN {
        return Err(RightsError::Invalid(format!("{} bytes encoded, at most {MAX_RIGHTS_LEN}", data.len())));
    }
    let chunks = parse_png(png)?;
    Ok(rebuild(png.len(), &chunks, Some(&data)))
}

/// Reads the rights carried by `png`.
///
/// Errors: `NotPng` if `png` is not a well-formed PNG (every chunk CRC is checked), `NoRights`
/// if it has no rights chunk, `Corrupt` if it has several, or one with a bad CRC, too long, of
/// an unknown format version, not valid JSON of [`Rights`], or with invalid names.
pub fn read(png: &[u8]) -> Result<Rights, RightsError> {
    let chunks = parse_png(png)?;
    let mut found = chunks.iter().filter(|c| c.kind == CHUNK_TYPE);
    let chunk = found.next().ok_or(RightsError::NoRights)?;
    if found.next().is_some() {
        return Err(RightsError::Corrupt("more than one rights chunk".into()));
    }
    if !chunk.crc_ok {
        return Err(RightsError::Corrupt("CRC mismatch".into()));
    }
    if chunk.data.len() > MAX_RIGHTS_LEN {
        return Err(RightsError::Corrupt(format!("{} bytes, at most {MAX_RIGHTS_LEN}", chunk.data.len())));
    }
    let (&format, json) = chunk.data.split_first().ok_or_else(|| RightsError::Corrupt("empty chunk".into()))?;
    if format != FORMAT_VERSION {
        return Err(RightsError::Corrupt(format!("unknown format version {format}")));
    }
    let rights: Rights = serde_json::from_slice(json).map_err(|e| RightsError::Corrupt(e.to_string()))?;
    rights.validate().map_err(RightsError::Corrupt)?;
    Ok(rights)
}

/// Returns `png` without any rights chunk, damaged or not (unchanged otherwise); `NotPng` if it
/// is not a well-formed PNG. A PNG without rights is returned as is.
pub fn strip(png: &[u8]) -> Result<Vec<u8>, RightsError> {
    let chunks = parse_png(png)?;
    Ok(rebuild(png.len(), &chunks, None))
}

/// One image of an owner's gallery as shown to a browsing peer.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct GalleryItem {
    /// Id of the image in the owner's gallery.
    pub image_id: String,
    /// A small PNG preview of the image (at most [`MAX_PREVIEW_LEN`] bytes).
    pub preview_png: Vec<u8>,
}

/// True when [`decode_gallery`] would accept the item.
fn item_ok(item: &GalleryItem) -> bool {
    check_image_id(&item.image_id).is_ok()
        && item.image_id.len() <= usize::from(u8::MAX)
        && item.preview_png.len() <= MAX_PREVIEW_LEN
}

/// Encodes a gallery (layout in the module doc).
///
/// So that the result always decodes, items that [`decode_gallery`] would reject (invalid
/// id, preview over [`MAX_PREVIEW_LEN`]) are skipped, and only the first
/// [`MAX_GALLERY_ITEMS`] valid items are kept.
pub fn encode_gallery(items: &[GalleryItem]) -> Vec<u8> {
    let kept: Vec<&GalleryItem> = items.iter().filter(|i| item_ok(i)).take(MAX_GALLERY_ITEMS).collect();
    let size: usize = kept.iter().map(|i| 5 + i.image_id.len() + i.preview_png.len()).sum();
    let mut out = Vec::with_capacity(2 + size);
    // At most MAX_GALLERY_ITEMS (256) items, each id at most 255 bytes, each preview at most
    // MAX_PREVIEW_LEN: the conversions below cannot saturate.
    out.extend_from_slice(&u16::try_from(kept.len()).unwrap_or(u16::MAX).to_le_bytes());
    for item in kept {
        out.push(u8::try_from(item.image_id.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(item.image_id.as_bytes());
        out.extend_from_slice(&u32::try_from(item.preview_png.len()).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(&item.preview_png);
    }
    out
}

/// Takes `n` bytes from the front of `rest`, `None` if fewer remain.
fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    let (head, tail) = rest.split_at_checked(n)?;
    *rest = tail;
    Some(head)
}

/// Decodes a gallery made by [`encode_gallery`]; never panics.
///
/// Rejects (`Gallery` error) more than [`MAX_GALLERY_ITEMS`] items, invalid ids, previews
/// over [`MAX_PREVIEW_LEN`], truncated input and trailing bytes.
pub fn decode_gallery(bytes: &[u8]) -> Result<Vec<GalleryItem>, RightsError> {
    let bad = |why: String| RightsError::Gallery(why);
    let mut rest = bytes;
    let count = take(&mut rest, 2).and_then(|b| b.try_into().ok()).map(u16::from_le_bytes);
    let count = usize::from(count.ok_or_else(|| bad("truncated item count".into()))?);
    if count > MAX_GALLERY_ITEMS {
        return Err(bad(format!("{count} items, at most {MAX_GALLERY_ITEMS}")));
    }
    let mut items = Vec::with_capacity(count);
    for n in 0..count {
        let id_len = take(&mut rest, 1).and_then(|b| b.first().copied());
        let id_len = usize::from(id_len.ok_or_else(|| bad(format!("item {n}: truncated id length")))?);
        let id = take(&mut rest, id_len).ok_or_else(|| bad(format!("item {n}: truncated id")))?;
        let id = std::str::from_utf8(id).map_err(|_| bad(format!("item {n}: id is not UTF-8")))?;
        check_image_id(id).map_err(|e| bad(format!("item {n}: {e}")))?;
        let len = take(&mut rest, 4).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes);
        let len = len.ok_or_else(|| bad(format!("item {n}: truncated preview length")))?;
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len > MAX_PREVIEW_LEN {
            return Err(bad(format!("item {n}: preview of {len} bytes, at most {MAX_PREVIEW_LEN}")));
        }
        let preview = take(&mut rest, len).ok_or_else(|| bad(format!("item {n}: truncated preview")))?;
        items.push(GalleryItem { image_id: id.to_owned(), preview_png: preview.to_vec() });
    }
    if !rest.is_empty() {
        return Err(bad(format!("{} trailing bytes", rest.len())));
    }
    Ok(items)
}
