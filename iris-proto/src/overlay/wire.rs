//! Overlay messages on the wire: a link frame (`version | kind | length`) of kind
//! [`FrameKind::Plain`] holding the sender's id, a tag and the message's ids. Secure links
//! carry the same payload inside records; the simulator sends these frames as they are.

use super::{NodeId, OverlayMsg};
use crate::link::frame::{FrameError, FrameKind, HEADER_LEN, decode_frame, put_header};
use crate::relay::codec::put_varint;
use bytes::{Buf, BufMut, BytesMut};
use thiserror::Error;

/// Most ids one message may carry (32 table rows of 16, plus a leaf set, with room).
pub const MAX_IDS: usize = 1024;
/// Largest payload a plain overlay frame may announce.
pub const MAX_PAYLOAD: usize = 16 + 1 + 2 * (10 + 16 * MAX_IDS) + 1;

/// Why bytes are not an overlay message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WireError {
    /// The frame itself is bad.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A frame of another kind where a plain overlay frame was expected.
    #[error("not a plain overlay frame")]
    Kind,
    /// The payload does not parse.
    #[error("malformed overlay message: {0}")]
    Malformed(&'static str),
}

mod tag {
    pub(super) const JOIN: u8 = 1;
    pub(super) const JOIN_STATE: u8 = 2;
    pub(super) const PING: u8 = 3;
    pub(super) const PONG: u8 = 4;
    pub(super) const LEAF_REQUEST: u8 = 5;
    pub(super) const LEAF_REPLY: u8 = 6;
    pub(super) const LEAVE: u8 = 7;
}

/// Appends a plain frame carrying `msg` from `from`.
pub fn encode(from: NodeId, msg: &OverlayMsg, out: &mut BytesMut) {
    let start = out.len();
    put_header(out, FrameKind::Plain, 0);
    out.put_u128(from.0);
    match msg {
        OverlayMsg::Join { joiner } => {
            out.put_u8(tag::JOIN);
            out.put_u128(joiner.0);
        }
        OverlayMsg::JoinState { rows, leaves } => {
            out.put_u8(tag::JOIN_STATE);
            put_ids(out, rows);
            put_opt_ids(out, leaves.as_deref());
        }
        OverlayMsg::Ping => out.put_u8(tag::PING),
        OverlayMsg::Pong { leaves } => {
            out.put_u8(tag::PONG);
            put_opt_ids(out, leaves.as_deref());
        }
        OverlayMsg::LeafRequest => out.put_u8(tag::LEAF_REQUEST),
        OverlayMsg::LeafReply { leaves } => {
            out.put_u8(tag::LEAF_REPLY);
            put_ids(out, leaves);
        }
        OverlayMsg::Leave => out.put_u8(tag::LEAVE),
    }
    // The length is known only now: patch the header.
    let len = out.len() - start - HEADER_LEN;
    let hdr = crate::link::frame::header(FrameKind::Plain, len);
    out[start..start + HEADER_LEN].copy_from_slice(&hdr);
}

/// Splits one overlay message off the front of `buf`: `Ok(None)` while incomplete.
pub fn decode(buf: &mut BytesMut) -> Result<Option<(NodeId, OverlayMsg)>, WireError> {
    let Some(frame) = decode_frame(buf, MAX_PAYLOAD)? else {
        return Ok(None);
    };
    if frame.kind != FrameKind::Plain {
        return Err(WireError::Kind);
    }
    let mut p = &frame.payload[..];
    let from = NodeId(take_u128(&mut p)?);
    let msg = match take_u8(&mut p)? {
        tag::JOIN => OverlayMsg::Join {
            joiner: NodeId(take_u128(&mut p)?),
        },
        tag::JOIN_STATE => OverlayMsg::JoinState {
            rows: take_ids(&mut p)?,
            leaves: take_opt_ids(&mut p)?,
        },
        tag::PING => OverlayMsg::Ping,
        tag::PONG => OverlayMsg::Pong {
            leaves: take_opt_ids(&mut p)?,
        },
        tag::LEAF_REQUEST => OverlayMsg::LeafRequest,
        tag::LEAF_REPLY => OverlayMsg::LeafReply {
            leaves: take_ids(&mut p)?,
        },
        tag::LEAVE => OverlayMsg::Leave,
        _ => return Err(WireError::Malformed("unknown message tag")),
    };
    if !p.is_empty() {
        return Err(WireError::Malformed("trailing bytes"));
    }
    Ok(Some((from, msg)))
}

/// Bytes `msg` takes on the wire, frame header included.
pub fn size(msg: &OverlayMsg) -> usize {
    let ids = |v: &[NodeId]| varint_len(v.len()) + 16 * v.len();
    let opt = |v: &Option<Vec<NodeId>>| 1 + v.as_deref().map_or(0, ids);
    HEADER_LEN
        + 16
        + 1
        + match msg {
            OverlayMsg::Join { .. } => 16,
            OverlayMsg::JoinState { rows, leaves } => ids(rows) + opt(leaves),
            OverlayMsg::Pong { leaves } => opt(leaves),
            OverlayMsg::LeafReply { leaves } => ids(leaves),
            OverlayMsg::Ping | OverlayMsg::LeafRequest | OverlayMsg::Leave => 0,
        }
}

fn varint_len(n: usize) -> usize {
    (64 - (n as u64).max(1).leading_zeros() as usize).div_ceil(7)
}

fn put_ids(out: &mut BytesMut, ids: &[NodeId]) {
    put_varint(out, ids.len() as u64);
    for id in ids {
        out.put_u128(id.0);
    }
}

fn put_opt_ids(out: &mut BytesMut, ids: Option<&[NodeId]>) {
    match ids {
        None => out.put_u8(0),
        Some(ids) => {
            out.put_u8(1);
            put_ids(out, ids);
        }
    }
}

fn take_u8(p: &mut &[u8]) -> Result<u8, WireError> {
    if p.is_empty() {
        return Err(WireError::Malformed("truncated"));
    }
    Ok(p.get_u8())
}

fn take_u128(p: &mut &[u8]) -> Result<u128, WireError> {
    if p.len() < 16 {
        return Err(WireError::Malformed("truncated id"));
    }
    Ok(p.get_u128())
}

fn take_ids(p: &mut &[u8]) -> Result<Vec<NodeId>, WireError> {
    let mut n = 0u64;
    for i in 0..10 {
        let b = take_u8(p)?;
        n |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            break;
        }
        if i == 9 {
            return Err(WireError::Malformed("count varint too long"));
        }
    }
    // The count is checked against the bytes present before anything is allocated.
    if n > MAX_IDS as u64 || p.len() < 16 * n as usize {
        return Err(WireError::Malformed("id count exceeds the message"));
    }
    (0..n).map(|_| take_u128(p).map(NodeId)).collect()
}

fn take_opt_ids(p: &mut &[u8]) -> Result<Option<Vec<NodeId>>, WireError> {
    match take_u8(p)? {
        0 => Ok(None),
        1 => take_ids(p).map(Some),
        _ => Err(WireError::Malformed("invalid option flag")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ids() -> impl Strategy<Value = Vec<NodeId>> {
        proptest::collection::vec(any::<u128>().prop_map(NodeId), 0..40)
    }

    fn msg() -> impl Strategy<Value = OverlayMsg> {
        prop_oneof![
            any::<u128>().prop_map(|j| OverlayMsg::Join { joiner: NodeId(j) }),
            (ids(), proptest::option::of(ids()))
                .prop_map(|(rows, leaves)| OverlayMsg::JoinState { rows, leaves }),
            Just(OverlayMsg::Ping),
            proptest::option::of(ids()).prop_map(|leaves| OverlayMsg::Pong { leaves }),
            Just(OverlayMsg::LeafRequest),
            ids().prop_map(|leaves| OverlayMsg::LeafReply { leaves }),
            Just(OverlayMsg::Leave),
        ]
    }

    proptest! {
        /// Messages round-trip through any split of the stream, and `size` is exact.
        #[test]
        fn round_trip_and_size(msgs in proptest::collection::vec((any::<u128>(), msg()), 1..10), cut in 1usize..200) {
            let mut wire = BytesMut::new();
            for (from, m) in &msgs {
                let before = wire.len();
                encode(NodeId(*from), m, &mut wire);
                prop_assert_eq!(wire.len() - before, size(m));
            }
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for piece in wire.chunks(cut) {
                buf.extend_from_slice(piece);
                while let Some((from, m)) = decode(&mut buf).unwrap() {
                    got.push((from.0, m));
                }
            }
            prop_assert_eq!(got, msgs);
        }
    }

    #[test]
    fn hostile_counts_and_kinds_are_refused() {
        let mut b = BytesMut::new();
        encode(
            NodeId(1),
            &OverlayMsg::LeafReply {
                leaves: vec![NodeId(2)],
            },
            &mut b,
        );
        // Claim 1000 ids in a message that holds one.
        let at = HEADER_LEN + 16 + 1;
        let mut bad = b.clone();
        bad[at] = 0xe8;
        bad.truncate(at + 1);
        bad.extend_from_slice(&[0x07]);
        bad.extend_from_slice(&[0u8; 16]);
        let len = (bad.len() - HEADER_LEN) as u32;
        bad[2..6].copy_from_slice(&len.to_be_bytes());
        assert_eq!(
            decode(&mut bad),
            Err(WireError::Malformed("id count exceeds the message"))
        );
        let mut record = BytesMut::from(&[1u8, 3, 0, 0, 0, 0][..]);
        assert_eq!(decode(&mut record), Err(WireError::Kind));
        let mut huge = BytesMut::from(&[1u8, 4, 0xff, 0xff, 0xff, 0xff][..]);
        assert!(matches!(
            decode(&mut huge),
            Err(WireError::Frame(FrameError::TooLong { .. }))
        ));
    }
}
