//! The project's cryptography, all of it from RustCrypto (`hmac`, `sha2`, `chacha20poly1305`):
//! HMAC-SHA256 tags over length-prefixed fields, keys derived from a user's secret, and
//! ChaCha20-Poly1305 sealing with a random or a message-derived nonce. Nothing here is hand-rolled; this module only
//! fixes how fields are framed and which label each derived key carries.
//!
//! Keys of a user, all derived from the secret the cloud issued at registration:
//! - [`Purpose::Auth`]: tags the user's requests to the cloud;
//! - [`Purpose::Wrap`]: the cloud seals per-share keys for the user under it;
//! - [`Purpose::Own`]: seals the images the user owns (the payload hidden in its stego files).

use chacha20poly1305::aead::{Aead, OsRng, Payload};
use chacha20poly1305::{AeadCore, ChaCha20Poly1305, KeyInit};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;

/// A 256-bit key.
pub type Key = [u8; 32];
/// An HMAC-SHA256 tag.
pub type Tag = [u8; 32];

/// Bytes a sealed payload adds: a 12-byte nonce and a 16-byte Poly1305 tag.
pub const SEAL_OVERHEAD: usize = 12 + 16;

type HmacSha256 = Hmac<Sha256>;

/// What a key derived from a user's secret is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Tags requests to the cloud.
    Auth,
    /// Seals per-share keys the cloud hands out.
    Wrap,
    /// Seals the user's own images.
    Own,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::Auth => b"imgcloud v1 request authentication",
            Purpose::Wrap => b"imgcloud v1 share key wrapping",
            Purpose::Own => b"imgcloud v1 own image sealing",
        }
    }
}

/// A failed check: a wrong tag, a wrong key, or modified bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CryptoError(pub &'static str);

impl fmt::Display for CryptoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for CryptoError {}

fn hmac(key: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length.
    <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key length"))
}

fn feed(m: &mut HmacSha256, fields: &[&[u8]]) {
    for f in fields {
        m.update(&(f.len() as u64).to_le_bytes());
        m.update(f);
    }
}

/// HMAC-SHA256 of `fields`, each prefixed by its length (so field boundaries cannot shift).
pub fn tag(key: &[u8], fields: &[&[u8]]) -> Tag {
    let mut m = hmac(key);
    feed(&mut m, fields);
    m.finalize().into_bytes().into()
}

/// Checks `expected` against the tag of `fields` in constant time.
pub fn verify(key: &[u8], fields: &[&[u8]], expected: &[u8]) -> Result<(), CryptoError> {
    let mut m = hmac(key);
    feed(&mut m, fields);
    m.verify_slice(expected).map_err(|_| CryptoError("bad authentication tag"))
}

/// The key for `purpose` derived from a user's secret.
pub fn derive(secret: &[u8], purpose: Purpose) -> Key {
    tag(secret, &[purpose.label()])
}

/// The SHA-256 digest of `bytes`, in hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    to_hex(&Sha256::digest(bytes))
}

/// A fresh random key from the operating system.
pub fn random_key() -> Key {
    ChaCha20Poly1305::generate_key(&mut OsRng).into()
}

/// Seals `plain` under `key`, bound to `aad`: nonce ‖ ciphertext ‖ tag.
pub fn seal(key: &Key, aad: &[u8], plain: &[u8]) -> Vec<u8> {
    let cipher = ChaCha20Poly1305::new(key.into());
    let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
    // Encryption fails only for messages beyond ChaCha20's 256 GiB limit.
    let sealed = cipher.encrypt(&nonce, Payload { msg: plain, aad }).unwrap_or_default();
    let mut out = Vec::with_capacity(SEAL_OVERHEAD + plain.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    out
}

/// Seals like [`seal`], with the nonce derived from the key, `aad` and `plain` (HMAC-SHA256,
/// truncated to 12 bytes) instead of drawn at random: the same bytes sealed twice under the same
/// key give the same sealed bytes, so a retried transfer of them can resume. A nonce repeats only
/// for a repeated message, which then shows nothing but that it was repeated (the synthetic-IV
/// idea of RFC 5297 with ChaCha20-Poly1305). [`open`] opens it like any other.
pub fn seal_deterministic(key: &Key, aad: &[u8], plain: &[u8]) -> Vec<u8> {
    let nonce_key = tag(key, &[b"imgcloud v1 synthetic nonce"]);
    let t = tag(&nonce_key, &[aad, plain]);
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&t[..12]);
    let cipher = ChaCha20Poly1305::new(key.into());
    let sealed = cipher.encrypt((&nonce).into(), Payload { msg: plain, aad }).unwrap_or_default();
    let mut out = Vec::with_capacity(SEAL_OVERHEAD + plain.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    out
}

/// Opens what [`seal`] made with the same key and `aad`; anything else is an error.
pub fn open(key: &Key, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if sealed.len() < SEAL_OVERHEAD {
        return Err(CryptoError("sealed data too short"));
    }
    let (nonce, body) = sealed.split_at(12);
    let cipher = ChaCha20Poly1305::new(key.into());
    cipher.decrypt(nonce.into(), Payload { msg: body, aad }).map_err(|_| CryptoError("wrong key or modified data"))
}

/// A stream of secret keys: HMAC-SHA256 as a pseudo-random function of a counter, keyed by a
/// 256-bit seed (from the operating system, or from a test's seed for reproducible runs).
#[derive(Clone)]
pub struct KeyGen {
    seed: Key,
    counter: u64,
}

impl fmt::Debug for KeyGen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyGen(..)")
    }
}

impl KeyGen {
    /// Seeded by the operating system.
    pub fn from_os() -> Self {
        KeyGen { seed: random_key(), counter: 0 }
    }

    /// Seeded by a number (simulations and tests only: predictable).
    pub fn from_seed(seed: u64) -> Self {
        KeyGen { seed: tag(&seed.to_le_bytes(), &[b"imgcloud test key generator"]), counter: 0 }
    }

    /// The next key.
    pub fn next_key(&mut self) -> Key {
        self.counter += 1;
        tag(&self.seed, &[b"key", &self.counter.to_le_bytes()])
    }
}

/// Lower-case hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Bytes of a hex string (either case); `None` if it is not hex.
pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return None;
    }
    b.chunks_exact(2).map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?)).collect()
}

/// A 256-bit key written as 64 hex digits; `None` otherwise.
pub fn key_from_hex(s: &str) -> Option<Key> {
    from_hex(s)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_sealing_repeats_only_for_the_same_message() {
        let (k, k2) = (random_key(), random_key());
        let a = seal_deterministic(&k, b"aad", b"photo");
        assert_eq!(a, seal_deterministic(&k, b"aad", b"photo"));
        assert_ne!(a, seal_deterministic(&k, b"aad", b"photp"));
        assert_ne!(a, seal_deterministic(&k, b"aae", b"photo"));
        assert_ne!(a[..12], seal_deterministic(&k2, b"aad", b"photo")[..12]);
        assert_eq!(open(&k, b"aad", &a).unwrap(), b"photo");
        assert!(open(&k, b"aae", &a).is_err() && open(&k2, b"aad", &a).is_err());
    }

    #[test]
    fn seal_opens_only_with_the_same_key_aad_and_bytes() {
        let k = random_key();
        let sealed = seal(&k, b"aad", b"hello image");
        assert_eq!(sealed.len(), SEAL_OVERHEAD + 11);
        assert_eq!(open(&k, b"aad", &sealed).unwrap(), b"hello image");
        assert!(open(&k, b"other", &sealed).is_err());
        assert!(open(&random_key(), b"aad", &sealed).is_err());
        for i in 0..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 1;
            assert!(open(&k, b"aad", &t).is_err(), "a flipped bit at {i} must be rejected");
        }
        assert!(open(&k, b"aad", &sealed[..10]).is_err());
        assert_ne!(seal(&k, b"aad", b"x"), seal(&k, b"aad", b"x"), "fresh nonces");
    }

    #[test]
    fn tags_frame_fields_and_verify() {
        let t = tag(b"k", &[b"ab", b"c"]);
        assert!(verify(b"k", &[b"ab", b"c"], &t).is_ok());
        assert!(verify(b"k", &[b"a", b"bc"], &t).is_err(), "field boundaries are part of the tag");
        assert!(verify(b"j", &[b"ab", b"c"], &t).is_err());
        assert!(verify(b"k", &[b"ab", b"c"], &t[..31]).is_err());
        assert_ne!(derive(b"s", Purpose::Auth), derive(b"s", Purpose::Own));
    }

    #[test]
    fn key_generator_and_hex() {
        let mut a = KeyGen::from_seed(1);
        let mut b = KeyGen::from_seed(1);
        assert_eq!(a.next_key(), b.next_key());
        assert_ne!(a.next_key(), KeyGen::from_seed(2).next_key());
        assert_ne!(KeyGen::from_os().next_key(), KeyGen::from_os().next_key());
        let k = random_key();
        assert_eq!(key_from_hex(&to_hex(&k)), Some(k));
        assert_eq!(from_hex("0aFf"), Some(vec![10, 255]));
        assert_eq!(from_hex("0g"), None);
        assert_eq!(from_hex("abc"), None);
        assert_eq!(key_from_hex("00"), None);
    }
}
