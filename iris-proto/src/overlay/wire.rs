//! Overlay messages on the wire: a tag and the message's contacts. They travel as control
//! messages of a peer link (sealed records, or plain frames in simulations), which already
//! know the sender, so no message repeats it.

use super::{Contact, NodeId, OverlayMsg};
use crate::relay::codec::{put_varint, take_varint, varint_len};
use bytes::{Buf, BufMut, BytesMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use thiserror::Error;

/// Most contacts one message may carry (32 table rows of 16, plus a leaf set, with room).
pub(crate) const MAX_CONTACTS: usize = 1024;

/// Longest round trip a ping may report (a pong later than a heartbeat is no sample).
const MAX_RTT: Duration = Duration::from_secs(60);

/// Why bytes are not an overlay message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub(crate) enum WireError {
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

/// Appends `msg`.
pub(crate) fn encode(msg: &OverlayMsg, out: &mut BytesMut) {
    match msg {
        OverlayMsg::Join { joiner } => {
            out.put_u8(tag::JOIN);
            put_contact(out, joiner);
        }
        OverlayMsg::JoinState { rows, leaves } => {
            out.put_u8(tag::JOIN_STATE);
            put_contacts(out, rows);
            put_opt_contacts(out, leaves.as_deref());
        }
        OverlayMsg::Ping { leaves, rtt } => {
            out.put_u8(tag::PING);
            put_opt_contacts(out, leaves.as_deref());
            put_varint(out, rtt_micros(*rtt));
        }
        OverlayMsg::Pong { leaves } => {
            out.put_u8(tag::PONG);
            put_opt_contacts(out, leaves.as_deref());
        }
        OverlayMsg::LeafRequest => out.put_u8(tag::LEAF_REQUEST),
        OverlayMsg::LeafReply { leaves } => {
            out.put_u8(tag::LEAF_REPLY);
            put_contacts(out, leaves);
        }
        OverlayMsg::Leave => out.put_u8(tag::LEAVE),
    }
}

/// Parses one whole message; trailing bytes are an error.
pub(crate) fn decode(mut p: &[u8]) -> Result<OverlayMsg, WireError> {
    let p = &mut p;
    let msg = match take_u8(p)? {
        tag::JOIN => OverlayMsg::Join {
            joiner: take_contact(p)?,
        },
        tag::JOIN_STATE => OverlayMsg::JoinState {
            rows: take_contacts(p)?,
            leaves: take_opt_contacts(p)?,
        },
        tag::PING => OverlayMsg::Ping {
            leaves: take_opt_contacts(p)?,
            rtt: take_rtt(p)?,
        },
        tag::PONG => OverlayMsg::Pong {
            leaves: take_opt_contacts(p)?,
        },
        tag::LEAF_REQUEST => OverlayMsg::LeafRequest,
        tag::LEAF_REPLY => OverlayMsg::LeafReply {
            leaves: take_contacts(p)?,
        },
        tag::LEAVE => OverlayMsg::Leave,
        _ => return Err(WireError::Malformed("unknown message tag")),
    };
    if !p.is_empty() {
        return Err(WireError::Malformed("trailing bytes"));
    }
    Ok(msg)
}

/// Bytes `msg` takes on the wire.
pub(crate) fn size(msg: &OverlayMsg) -> usize {
    let all = |v: &[Contact]| varint_len(v.len() as u64) + v.iter().map(contact_len).sum::<usize>();
    let opt = |v: &Option<Vec<Contact>>| 1 + v.as_deref().map_or(0, all);
    1 + match msg {
        OverlayMsg::Join { joiner } => contact_len(joiner),
        OverlayMsg::JoinState { rows, leaves } => all(rows) + opt(leaves),
        OverlayMsg::Ping { leaves, rtt } => opt(leaves) + varint_len(rtt_micros(*rtt)),
        OverlayMsg::Pong { leaves } => opt(leaves),
        OverlayMsg::LeafReply { leaves } => all(leaves),
        OverlayMsg::LeafRequest | OverlayMsg::Leave => 0,
    }
}

/// A round trip on the wire: microseconds, at least 1, with 0 for none (so that a round
/// trip below a microsecond still counts as measured).
fn rtt_micros(rtt: Option<Duration>) -> u64 {
    rtt.map_or(0, |d| (d.as_micros() as u64).max(1))
}

/// Parses a round trip (see [`rtt_micros`]); one longer than a minute is no round trip.
fn take_rtt(p: &mut &[u8]) -> Result<Option<Duration>, WireError> {
    let (micros, used) = take_varint(p).ok_or(WireError::Malformed("bad round trip varint"))?;
    if used != varint_len(micros) {
        return Err(WireError::Malformed("round trip varint not minimal"));
    }
    if micros > MAX_RTT.as_micros() as u64 {
        return Err(WireError::Malformed("round trip over a minute"));
    }
    Ok((micros > 0).then(|| Duration::from_micros(micros)))
}

/// Appends a contact: the id, the epoch, then the address (`4 | ip | port` or
/// `6 | ip | port`).
pub(crate) fn put_contact(out: &mut BytesMut, c: &Contact) {
    out.put_u128(c.id.0);
    out.put_u64(c.epoch);
    put_addr(out, &c.addr);
}

/// Parses a contact.
pub(crate) fn take_contact(p: &mut &[u8]) -> Result<Contact, WireError> {
    let id = NodeId(take_u128(p)?);
    if p.len() < 8 {
        return Err(WireError::Malformed("truncated epoch"));
    }
    let epoch = p.get_u64();
    Ok(Contact::new(id, take_addr(p)?, epoch))
}

/// Appends a socket address.
pub(crate) fn put_addr(out: &mut BytesMut, addr: &SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.put_u8(4);
            out.put_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.put_u8(6);
            out.put_slice(&ip.octets());
        }
    }
    out.put_u16(addr.port());
}

/// Parses a socket address.
pub(crate) fn take_addr(p: &mut &[u8]) -> Result<SocketAddr, WireError> {
    let ip = match take_u8(p)? {
        4 if p.len() >= 6 => {
            let mut o = [0u8; 4];
            p.copy_to_slice(&mut o);
            IpAddr::V4(Ipv4Addr::from(o))
        }
        6 if p.len() >= 18 => {
            let mut o = [0u8; 16];
            p.copy_to_slice(&mut o);
            IpAddr::V6(Ipv6Addr::from(o))
        }
        4 | 6 => return Err(WireError::Malformed("truncated address")),
        _ => return Err(WireError::Malformed("unknown address family")),
    };
    Ok(SocketAddr::new(ip, p.get_u16()))
}

/// Bytes a contact takes.
pub(crate) fn contact_len(c: &Contact) -> usize {
    16 + 8 + 1 + 2 + if c.addr.is_ipv4() { 4 } else { 16 }
}

fn put_contacts(out: &mut BytesMut, all: &[Contact]) {
    put_varint(out, all.len() as u64);
    for c in all {
        put_contact(out, c);
    }
}

fn put_opt_contacts(out: &mut BytesMut, all: Option<&[Contact]>) {
    match all {
        None => out.put_u8(0),
        Some(all) => {
            out.put_u8(1);
            put_contacts(out, all);
        }
    }
}

pub(crate) fn take_u8(p: &mut &[u8]) -> Result<u8, WireError> {
    if p.is_empty() {
        return Err(WireError::Malformed("truncated"));
    }
    Ok(p.get_u8())
}

pub(crate) fn take_u128(p: &mut &[u8]) -> Result<u128, WireError> {
    if p.len() < 16 {
        return Err(WireError::Malformed("truncated id"));
    }
    Ok(p.get_u128())
}

fn take_contacts(p: &mut &[u8]) -> Result<Vec<Contact>, WireError> {
    let (n, used) = take_varint(p).ok_or(WireError::Malformed("bad count varint"))?;
    // One encoding per count, so that re-encoding gives the same bytes.
    if used != varint_len(n) {
        return Err(WireError::Malformed("count varint not minimal"));
    }
    // The count is checked against the bytes present (31 at least per contact) before
    // anything is allocated.
    if n > MAX_CONTACTS as u64 || p.len() < 31 * n as usize {
        return Err(WireError::Malformed("contact count exceeds the message"));
    }
    (0..n).map(|_| take_contact(p)).collect()
}

fn take_opt_contacts(p: &mut &[u8]) -> Result<Option<Vec<Contact>>, WireError> {
    match take_u8(p)? {
        0 => Ok(None),
        1 => take_contacts(p).map(Some),
        _ => Err(WireError::Malformed("invalid option flag")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn contact() -> impl Strategy<Value = Contact> {
        (
            any::<u128>(),
            any::<bool>(),
            any::<u128>(),
            any::<u16>(),
            any::<u64>(),
        )
            .prop_map(|(id, v4, ip, port, epoch)| {
                let ip = if v4 {
                    IpAddr::V4(Ipv4Addr::from(ip as u32))
                } else {
                    IpAddr::V6(Ipv6Addr::from(ip))
                };
                Contact::new(NodeId(id), SocketAddr::new(ip, port), epoch)
            })
    }

    fn contacts() -> impl Strategy<Value = Vec<Contact>> {
        proptest::collection::vec(contact(), 0..40)
    }

    fn msg() -> impl Strategy<Value = OverlayMsg> {
        prop_oneof![
            contact().prop_map(|joiner| OverlayMsg::Join { joiner }),
            (contacts(), proptest::option::of(contacts()))
                .prop_map(|(rows, leaves)| OverlayMsg::JoinState { rows, leaves }),
            (
                proptest::option::of(contacts()),
                proptest::option::of(1..=MAX_RTT.as_micros() as u64)
            )
                .prop_map(|(leaves, rtt)| OverlayMsg::Ping {
                    leaves,
                    rtt: rtt.map(Duration::from_micros)
                }),
            proptest::option::of(contacts()).prop_map(|leaves| OverlayMsg::Pong { leaves }),
            Just(OverlayMsg::LeafRequest),
            contacts().prop_map(|leaves| OverlayMsg::LeafReply { leaves }),
            Just(OverlayMsg::Leave),
        ]
    }

    proptest! {
        /// Messages round-trip, `size` is exact, and every strict prefix is refused.
        #[test]
        fn round_trip_and_size(m in msg()) {
            let mut wire = BytesMut::new();
            encode(&m, &mut wire);
            prop_assert_eq!(wire.len(), size(&m));
            prop_assert_eq!(decode(&wire), Ok(m));
            for cut in [0, wire.len() / 2, wire.len() - 1] {
                if cut < wire.len() {
                    prop_assert!(decode(&wire[..cut]).is_err());
                }
            }
        }
    }

    #[test]
    fn hostile_counts_and_tags_are_refused() {
        let c = Contact::new(NodeId(2), "127.0.0.1:9".parse().unwrap(), 1);
        let mut b = BytesMut::new();
        encode(&OverlayMsg::LeafReply { leaves: vec![c] }, &mut b);
        // Claim 1000 contacts in a message that holds one.
        let mut bad = BytesMut::from(&[6u8, 0xe8, 0x07][..]);
        bad.extend_from_slice(&b[2..]);
        assert_eq!(
            decode(&bad),
            Err(WireError::Malformed("contact count exceeds the message"))
        );
        assert_eq!(
            decode(&[99]),
            Err(WireError::Malformed("unknown message tag"))
        );
        let mut family = b.clone();
        family[2 + 16 + 8] = 5;
        assert_eq!(
            decode(&family),
            Err(WireError::Malformed("unknown address family"))
        );
        let mut trailing = b.clone();
        trailing.extend_from_slice(&[0]);
        assert_eq!(
            decode(&trailing),
            Err(WireError::Malformed("trailing bytes"))
        );
    }

    #[test]
    fn a_ping_round_trip_is_canonical_and_bounded() {
        // A ping with no leaf set: its tag, `0` for no leaves, then the round trip.
        let ping = |rtt: &[u8]| [&[tag::PING, 0][..], rtt].concat();
        let measured = OverlayMsg::Ping {
            leaves: None,
            rtt: Some(Duration::from_micros(300)),
        };
        assert_eq!(decode(&ping(&[0xac, 0x02])), Ok(measured));
        let unmeasured = OverlayMsg::Ping {
            leaves: None,
            rtt: None,
        };
        assert_eq!(decode(&ping(&[0])), Ok(unmeasured));
        // A round trip below a microsecond still says it was measured.
        let mut b = BytesMut::new();
        let tiny = Some(Duration::from_nanos(200));
        encode(
            &OverlayMsg::Ping {
                leaves: None,
                rtt: tiny,
            },
            &mut b,
        );
        assert_eq!(&b[..], &ping(&[1])[..]);
        assert_eq!(
            decode(&ping(&[0x80, 0x00])),
            Err(WireError::Malformed("round trip varint not minimal"))
        );
        // 61 s in microseconds.
        let mut long = BytesMut::new();
        put_varint(&mut long, 61_000_000);
        assert_eq!(
            decode(&ping(&long)),
            Err(WireError::Malformed("round trip over a minute"))
        );
        assert_eq!(
            decode(&ping(&[])),
            Err(WireError::Malformed("bad round trip varint"))
        );
    }
}
