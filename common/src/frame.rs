//! The datagram framing every message travels in: `b"IC"`, a version byte, a kind byte, then
//! the body. The four kinds, in one place:
//!
//! | kind | [`FrameKind`] | body | codec |
//! |---|---|---|---|
//! | 0 | `Ctl` | a control message (`Msg`, JSON) | `protocol::encode_msg` / `decode` |
//! | 1 | `Xfer` | a transfer message (compact binary) | `protocol::encode_xfer` / `decode` |
//! | 2 | `Server` | tag (32) ‖ timestamp (8) ‖ a control message: server to server, under the cluster key | `auth::encode_server` / `decode_at_server` |
//! | 3 | `Attached` | JSON length (u32 BE) ‖ a request or an encryption's reply (JSON) ‖ its bytes | `protocol::encode_attached` / `decode` |
//!
//! A leaf: the codecs live beside their message types and all frame through here.

/// First bytes of every datagram.
pub const MAGIC: [u8; 2] = *b"IC";
/// Wire format version.
pub const VERSION: u8 = 1;

/// What the body of a datagram is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// A control message.
    Ctl,
    /// A reliable-transfer message.
    Xfer,
    /// A server-to-server control message, tagged under the cluster key.
    Server,
    /// A control message with bytes attached.
    Attached,
}

impl FrameKind {
    /// The kind byte.
    pub const fn code(self) -> u8 {
        match self {
            FrameKind::Ctl => 0,
            FrameKind::Xfer => 1,
            FrameKind::Server => 2,
            FrameKind::Attached => 3,
        }
    }

    /// The kind a byte names, if any.
    pub const fn from_code(code: u8) -> Option<FrameKind> {
        match code {
            0 => Some(FrameKind::Ctl),
            1 => Some(FrameKind::Xfer),
            2 => Some(FrameKind::Server),
            3 => Some(FrameKind::Attached),
            _ => None,
        }
    }

    /// The four bytes a datagram of this kind starts with.
    pub const fn header(self) -> [u8; 4] {
        [MAGIC[0], MAGIC[1], VERSION, self.code()]
    }
}

/// Why a datagram's header was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// Fewer than four bytes.
    TooShort(usize),
    /// Not `b"IC"`.
    BadMagic,
    /// Another version of the wire format.
    Version(u8),
    /// An unknown kind byte.
    Kind(u8),
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderError::TooShort(n) => write!(f, "datagram of {n} bytes is too short"),
            HeaderError::BadMagic => f.write_str("bad magic"),
            HeaderError::Version(v) => write!(f, "unsupported version {v}"),
            HeaderError::Kind(k) => write!(f, "unknown kind {k}"),
        }
    }
}

/// A datagram's kind and body.
pub fn split(bytes: &[u8]) -> Result<(FrameKind, &[u8]), HeaderError> {
    let Some((head, body)) = bytes.split_first_chunk::<4>() else {
        return Err(HeaderError::TooShort(bytes.len()));
    };
    if head[..2] != MAGIC {
        return Err(HeaderError::BadMagic);
    }
    if head[2] != VERSION {
        return Err(HeaderError::Version(head[2]));
    }
    FrameKind::from_code(head[3]).map(|k| (k, body)).ok_or(HeaderError::Kind(head[3]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_and_bad_headers_say_why() {
        for k in [FrameKind::Ctl, FrameKind::Xfer, FrameKind::Server, FrameKind::Attached] {
            let mut d = k.header().to_vec();
            d.extend_from_slice(b"body");
            assert_eq!(split(&d), Ok((k, &b"body"[..])));
        }
        assert_eq!(split(b"IC"), Err(HeaderError::TooShort(2)));
        assert_eq!(split(b"XX\x01\x00"), Err(HeaderError::BadMagic));
        assert_eq!(split(b"IC\x02\x00"), Err(HeaderError::Version(2)));
        assert_eq!(split(b"IC\x01\x09"), Err(HeaderError::Kind(9)));
    }
}
