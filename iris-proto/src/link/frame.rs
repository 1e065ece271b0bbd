//! Link frames: `version u8 | kind u8 | length u32 (big endian) | payload`. The version
//! byte and the length prefix let later protocol revisions and the overlay's plain frames
//! share one framing; the length is checked against a bound before anything is buffered.

use bytes::{BufMut, BytesMut};
use thiserror::Error;

/// The link protocol version spoken here.
pub(crate) const LINK_VERSION: u8 = 1;
/// Bytes before every payload.
pub(crate) const HEADER_LEN: usize = 6;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameKind {
    /// Handshake: version, role, network hash, ephemeral key.
    Hello = 1,
    /// Handshake: the signature over the transcript.
    Auth = 2,
    /// An AEAD-sealed record of grouped messages.
    Record = 3,
    /// A plain (unsealed) overlay message, for links without security (simulation, tests).
    Plain = 4,
}

/// Why bytes are not a frame.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    /// A frame of another link protocol version.
    #[error("link protocol version {0} (this node speaks {LINK_VERSION})")]
    Version(u8),
    /// An unknown frame kind.
    #[error("unknown frame kind {0}")]
    Kind(u8),
    /// A length above the bound for this phase.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLong {
        /// Announced length.
        len: usize,
        /// Bound.
        max: usize,
    },
}

/// One frame split off a read buffer; the payload shares the buffer (no copy), so records
/// are decrypted in place.
#[derive(Debug)]
pub(crate) struct Frame {
    /// Its kind.
    pub kind: FrameKind,
    /// The six header bytes (authenticated as associated data of records).
    pub header: [u8; HEADER_LEN],
    /// The payload.
    pub payload: BytesMut,
}

/// Appends a frame header announcing `len` payload bytes.
pub(crate) fn put_header(out: &mut BytesMut, kind: FrameKind, len: usize) {
    out.put_slice(&header(kind, len));
}

/// The header bytes for a frame.
pub(crate) fn header(kind: FrameKind, len: usize) -> [u8; HEADER_LEN] {
    let l = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
    [LINK_VERSION, kind as u8, l[0], l[1], l[2], l[3]]
}

/// Splits one frame off the front of `buf`: `Ok(None)` while incomplete (buffer untouched).
pub(crate) fn decode_frame(
    buf: &mut BytesMut,
    max_len: usize,
) -> Result<Option<Frame>, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    if buf[0] != LINK_VERSION {
        return Err(FrameError::Version(buf[0]));
    }
    let kind = match buf[1] {
        1 => FrameKind::Hello,
        2 => FrameKind::Auth,
        3 => FrameKind::Record,
        4 => FrameKind::Plain,
        k => return Err(FrameError::Kind(k)),
    };
    let len = u32::from_be_bytes([buf[2], buf[3], buf[4], buf[5]]) as usize;
    if len > max_len {
        return Err(FrameError::TooLong { len, max: max_len });
    }
    if buf.len() < HEADER_LEN + len {
        return Ok(None);
    }
    let mut header = [0u8; HEADER_LEN];
    header.copy_from_slice(&buf[..HEADER_LEN]);
    let mut frame = buf.split_to(HEADER_LEN + len);
    let payload = frame.split_off(HEADER_LEN);
    Ok(Some(Frame {
        kind,
        header,
        payload,
    }))
}
