//! What nodes say to each other on a link's control channel: a tag, then the message. Every
//! link starts with IDENT both ways (who is speaking and where it listens); overlay
//! maintenance follows, and the node's own messages (trees, relayed traffic) ride along as
//! opaque [`PeerMsg::Node`] payloads. The data channel carries node messages only, untagged.

use crate::overlay::wire::{WireError, put_contact, take_contact};
use crate::overlay::{Contact, OverlayMsg, wire as overlay_wire};
use crate::relay::codec::{put_varint, take_varint, varint_len};
use bytes::{BufMut, Bytes, BytesMut};

mod tag {
    pub(super) const IDENT: u8 = 1;
    pub(super) const OVERLAY: u8 = 2;
    pub(super) const NODE: u8 = 3;
}

/// One message between nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PeerMsg {
    /// The sender's id and the address its peer listener is reachable at; the first message
    /// on a link, once each way. Stamped with the sender's clock (ms), as overlay messages
    /// are, so a link knows its fastest trip from its first message on.
    Ident(u64, Contact),
    /// Overlay maintenance, stamped with the sender's clock (ms): the receiver learns from
    /// the stamps how late a peer's messages are (see `mesh::one_way`).
    Overlay(u64, OverlayMsg),
    /// A message of the node's (trees, relayed traffic), sent as control.
    Node(Bytes),
}

/// The message's bytes, as a link carries them.
pub(crate) fn encode(msg: &PeerMsg) -> Bytes {
    let mut out = BytesMut::with_capacity(size(msg));
    match msg {
        PeerMsg::Ident(clock, c) => {
            out.put_u8(tag::IDENT);
            put_varint(&mut out, *clock);
            put_contact(&mut out, c);
        }
        PeerMsg::Overlay(clock, m) => {
            out.put_u8(tag::OVERLAY);
            put_varint(&mut out, *clock);
            overlay_wire::encode(m, &mut out);
        }
        PeerMsg::Node(b) => {
            out.put_u8(tag::NODE);
            out.put_slice(b);
        }
    }
    out.freeze()
}

/// Parses one whole message. A node payload is sliced out of `p`, not copied.
pub(crate) fn decode_bytes(p: &Bytes) -> Result<PeerMsg, WireError> {
    match p.first() {
        Some(&tag::NODE) => Ok(PeerMsg::Node(p.slice(1..))),
        _ => decode(p),
    }
}

/// Parses one whole message.
pub(crate) fn decode(p: &[u8]) -> Result<PeerMsg, WireError> {
    match p.split_first() {
        Some((&tag::NODE, rest)) => Ok(PeerMsg::Node(Bytes::copy_from_slice(rest))),
        Some((&tag::IDENT, mut rest)) => {
            let clock = take_clock(&mut rest)?;
            let c = take_contact(&mut rest)?;
            if !rest.is_empty() {
                return Err(WireError::Malformed("trailing bytes"));
            }
            Ok(PeerMsg::Ident(clock, c))
        }
        Some((&tag::OVERLAY, mut rest)) => {
            let clock = take_clock(&mut rest)?;
            overlay_wire::decode(rest).map(|m| PeerMsg::Overlay(clock, m))
        }
        Some(_) => Err(WireError::Malformed("unknown peer message tag")),
        None => Err(WireError::Malformed("empty peer message")),
    }
}

/// A clock stamp: canonical LEB128 (a padded one is refused).
fn take_clock(p: &mut &[u8]) -> Result<u64, WireError> {
    let (clock, used) = take_varint(p).ok_or(WireError::Malformed("bad clock varint"))?;
    if used != varint_len(clock) {
        return Err(WireError::Malformed("padded clock varint"));
    }
    Ok(clock)
}

/// Bytes `msg` takes.
pub(crate) fn size(msg: &PeerMsg) -> usize {
    1 + match msg {
        PeerMsg::Ident(clock, c) => varint_len(*clock) + crate::overlay::wire::contact_len(c),
        PeerMsg::Overlay(clock, m) => varint_len(*clock) + overlay_wire::size(m),
        PeerMsg::Node(b) => b.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overlay::NodeId;

    #[test]
    fn round_trips_and_refuses_garbage() {
        for addr in ["127.0.0.1:4000", "[::1]:5"] {
            let m = PeerMsg::Ident(300, Contact::new(NodeId(7), addr.parse().unwrap(), 3));
            let b = encode(&m);
            assert_eq!(b.len(), size(&m));
            assert_eq!(decode(&b), Ok(m));
            assert!(decode(&b[..b.len() - 1]).is_err());
        }
        let m = PeerMsg::Overlay(
            123_456_789,
            OverlayMsg::Ping {
                leaves: None,
                rtt: None,
            },
        );
        assert_eq!(encode(&m).len(), size(&m));
        assert_eq!(decode(&encode(&m)), Ok(m));
        // The clock stamp is canonical LEB128: a padded one is refused.
        assert!(decode(&[2, 0x80, 0x00, 3]).is_err());
        assert!(decode(&[]).is_err());
        assert!(decode(&[9, 1, 2]).is_err());
    }
}
