//! The node protocol's codec (`node/wire.rs`: tree messages, casts, anycasts, replies,
//! tunnel traffic, multicast credit), two ways:
//!
//! - **decoded**: the input as one message, as a link delivers it. No panic; a message
//!   that decodes encodes to bytes that decode to the same message, and that encoding is a
//!   fixed point (encoding is canonical). The decoder accepts more than the encoder writes,
//!   in three places, so the input's bytes come back only when they were canonical:
//!   varints may be padded (`take_varint` takes `0x80 0x00` for 0, and the node's reader
//!   drops the length), a beat's capacity above `u32::MAX` is read as `u32::MAX`, and
//!   CAST_CREDIT's tree index byte is read and dropped (written as 0). So the re-encoding is
//!   never longer than the input, and one of the same length differs only in a beat or a
//!   credit.
//! - **built**: messages of every kind built from the input (values at the edges of every
//!   varint length, names of the pools or fresh, ids of every form), encoded and decoded:
//!   the same message back (or, for a group name beyond the decoder's bound, a refusal);
//!   every strict prefix refused or read as another message; nothing around a client's
//!   payload beyond [`MAX_OVERHEAD`].

use super::reader::Reader;
use crate::node::MAX_OVERHEAD;
use crate::node::wire::{self, Anycast, Cast, MAX_NAME, NodeMsg, Via, Wanted};
use crate::overlay::{Contact, NodeId};
use crate::relay::Name;
use crate::scribe::{Group, ScribeMsg};
use bytes::Bytes;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

/// Most messages one input builds.
const MAX_BUILT: usize = 16;

/// Decodes the input as one node message, then builds messages of every kind from it.
pub fn node_wire(data: &[u8]) {
    decoded_round_trip(data);
    let pools = Pools::standalone();
    let mut bytes = Bytes::copy_from_slice(data);
    let mut r = Reader(&mut bytes);
    for _ in 0..MAX_BUILT {
        if r.0.is_empty() {
            break;
        }
        built_round_trip(&node_msg(&mut r, &pools.view()));
    }
}

/// Arbitrary bytes as a message: no panic; what decodes re-encodes canonically.
fn decoded_round_trip(data: &[u8]) {
    let input = Bytes::copy_from_slice(data);
    let Ok(msg) = wire::decode(&input) else {
        return;
    };
    let again = wire::encode(&msg);
    assert_eq!(
        wire::decode(&again).as_ref(),
        Ok(&msg),
        "decode-encode-decode changed the message"
    );
    assert_eq!(wire::encode(&msg), again, "encoding is not deterministic");
    assert!(
        again.len() <= input.len(),
        "the re-encoding is longer than the input ({} > {})",
        again.len(),
        input.len()
    );
    if again.len() == input.len() && again != input {
        // Same length, other bytes: only a saturated capacity or a dropped tree index.
        assert!(
            matches!(
                msg,
                NodeMsg::Tree(ScribeMsg::Beat { .. })
                    | NodeMsg::CastCredit { .. }
                    | NodeMsg::CastUntether { .. }
            ),
            "{msg:?} re-encodes to other bytes of the same length"
        );
    }
}

/// A message built from the fuzzer's bytes: it survives the wire.
fn built_round_trip(msg: &NodeMsg) {
    let wire_bytes = wire::encode(msg);
    let decoded = wire::decode(&wire_bytes);
    if group_name_len(msg) > MAX_NAME {
        assert!(
            decoded.is_err(),
            "a group name over {MAX_NAME} bytes decoded"
        );
        return;
    }
    assert_eq!(decoded.as_ref(), Ok(msg), "a built message did not survive");
    // Encoding is a fixed point.
    assert_eq!(wire::encode(msg), wire_bytes);
    // Cut anywhere, the message is refused or read as another (only one whose last field
    // is a payload or a text may end early).
    let len = wire_bytes.len();
    let cuts: Vec<usize> = if len <= 96 {
        (0..len).collect()
    } else {
        vec![0, 1, len / 2, len - 1]
    };
    for cut in cuts {
        if let Ok(other) = wire::decode(&wire_bytes.slice(..cut)) {
            assert_ne!(&other, msg, "a prefix of {cut} bytes read as the whole");
        }
    }
    if let Some(payload) = client_payload(msg) {
        assert!(
            len - payload <= MAX_OVERHEAD,
            "{} bytes around a client's payload",
            len - payload
        );
    }
}

/// The longest group name the message carries (0 if none).
fn group_name_len(msg: &NodeMsg) -> usize {
    match msg {
        NodeMsg::Tree(ScribeMsg::Subscribe { group, .. })
        | NodeMsg::Cast(Cast { group, .. })
        | NodeMsg::CastCredit { group, .. }
        | NodeMsg::CastUntether { group } => group.name.len(),
        NodeMsg::Anycast(a) => a.cluster.len(),
        _ => 0,
    }
}

/// Bytes of a client's payload the message carries, for the messages that carry one
/// (whose overhead links allow for).
fn client_payload(msg: &NodeMsg) -> Option<usize> {
    match msg {
        NodeMsg::Cast(c) => Some(c.payload.len()),
        NodeMsg::Anycast(Anycast {
            wanted: Wanted::Request(p),
            ..
        }) => Some(p.len()),
        NodeMsg::Reply { outcome: Ok(p), .. } => Some(p.len()),
        NodeMsg::Reply {
            outcome: Err(fault),
            ..
        } if fault.len() <= MAX_NAME => Some(0),
        NodeMsg::TunnelData { payload, .. } => Some(payload.len()),
        _ => None,
    }
}

/// What built messages draw their names, nodes and ids from, so that they mean something
/// to the node that receives them (groups its clients are in, peers it knows, requests and
/// tunnels it started).
pub(super) struct PoolsView<'a> {
    pub(super) groups: &'a [Group],
    pub(super) contacts: &'a [Contact],
    pub(super) requests: &'a [u64],
    pub(super) tunnels: &'a [u64],
    /// Trees per group, as the receiver is configured.
    pub(super) splits: u8,
    /// Now and then a group name beyond the decoder's bound (only where nothing else is
    /// measured: such a message is refused whole).
    pub(super) oversized: bool,
}

/// Pools for the codec alone.
struct Pools {
    groups: Vec<Group>,
    contacts: Vec<Contact>,
}

impl Pools {
    fn standalone() -> Pools {
        let v4 = SocketAddr::from(([127, 0, 0, 1], 9));
        let v6 = SocketAddr::from((Ipv6Addr::from(u128::MAX), u16::MAX));
        Pools {
            groups: vec![
                Group::cluster("svc".into()),
                Group::topic("news".into()),
                Group::cluster(Name::default()),
                Group::topic("ünïcödé".into()),
            ],
            contacts: vec![
                Contact::new(NodeId(5), v4, 3),
                Contact::new(NodeId(u128::MAX), v6, u64::MAX),
            ],
        }
    }

    fn view(&self) -> PoolsView<'_> {
        PoolsView {
            groups: &self.groups,
            contacts: &self.contacts,
            requests: &[1, 2],
            tunnels: &[1, 2],
            splits: 5,
            oversized: true,
        }
    }
}

/// A node message of any kind, from the fuzzer's bytes.
pub(super) fn node_msg(r: &mut Reader<'_>, p: &PoolsView<'_>) -> NodeMsg {
    match r.b() % 23 {
        0 => {
            let (group, index, key) = group(r, p);
            NodeMsg::Tree(ScribeMsg::Subscribe { key, group, index })
        }
        1 => NodeMsg::Tree(ScribeMsg::Unsubscribe { key: key(r, p) }),
        2 => NodeMsg::Tree(ScribeMsg::NotInTree { key: key(r, p) }),
        3 => {
            let caps = (0..r.b() % 9)
                .map(|_| (key(r, p), u32::try_from(r.wide()).unwrap_or(u32::MAX)))
                .collect();
            let parents = match r.b() % 3 {
                0 => None,
                1 => Some(crate::scribe::Listed::all(
                    (0..r.b() % 9).map(|_| key(r, p)).collect(),
                )),
                _ => Some(crate::scribe::Listed {
                    from: key(r, p),
                    to: key(r, p),
                    keys: (0..r.b() % 9).map(|_| key(r, p)).collect(),
                }),
            };
            NodeMsg::Tree(ScribeMsg::Beat { caps, parents })
        }
        4 | 5 => NodeMsg::Cast(cast(r, p)),
        6 | 7 => NodeMsg::Anycast(anycast(r, p)),
        8 | 9 => NodeMsg::Reply {
            id: pick_or_wide(r, p.requests),
            outcome: if r.b().is_multiple_of(3) {
                Err(text(r, p))
            } else {
                Ok(payload(r))
            },
        },
        10 => NodeMsg::TunnelConfirm {
            tun: pick_or_wide(r, p.tunnels),
            peer: r.wide(),
            window: r.wide(),
        },
        11 => NodeMsg::TunnelRefused {
            tun: pick_or_wide(r, p.tunnels),
        },
        12 | 13 => {
            let tun = pick_or_wide(r, p.tunnels);
            let payload = payload(r);
            NodeMsg::TunnelData {
                tun,
                size_or_cont: match r.b() % 3 {
                    0 => 0,
                    1 => payload.len() as u64,
                    _ => r.wide(),
                },
                payload,
            }
        }
        14 => NodeMsg::TunnelAllow {
            tun: pick_or_wide(r, p.tunnels),
            space: r.wide(),
        },
        15 => NodeMsg::TunnelClose {
            tun: pick_or_wide(r, p.tunnels),
            reason: text(r, p),
        },
        k @ 16..=18 => repair_msg(r, p, k),
        19 => NodeMsg::Tree(ScribeMsg::Probe),
        21 => NodeMsg::Forward {
            from: contact(r, p),
            to: node_id(r, p),
            hops: hops(r),
            inner: payload(r),
        },
        k => flow_msg(r, p, k),
    }
}

/// A multicast group's credit (20) or a slow consumers' release (22).
fn flow_msg(r: &mut Reader<'_>, p: &PoolsView<'_>, kind: u8) -> NodeMsg {
    let group = group(r, p).0;
    match kind {
        22 => NodeMsg::CastUntether { group },
        _ => NodeMsg::CastCredit {
            group,
            bytes: r.wide(),
        },
    }
}

/// An ask for multicasts sent again (16), its answer (17), or a parent's heads (18).
fn repair_msg(r: &mut Reader<'_>, p: &PoolsView<'_>, kind: u8) -> NodeMsg {
    match kind {
        16 => NodeMsg::CastAsk {
            key: key(r, p),
            origin: node_id(r, p),
            epoch: r.wide(),
            asker: contact(r, p),
            ranges: ranges(r),
            within_ms: r.wide(),
            sent_ms: r.wide(),
            hops: hops(r),
        },
        17 => NodeMsg::CastGone {
            key: key(r, p),
            epoch: r.wide(),
            gone: ranges(r),
            skipped: ranges(r),
        },
        _ => {
            let key = key(r, p);
            let n = usize::from(r.b()) % (crate::scribe::MAX_HEADS + 1);
            let heads = (0..n)
                .map(|_| (node_id(r, p), r.wide(), r.wide(), r.wide()))
                .collect();
            NodeMsg::Tree(ScribeMsg::Heads { key, heads })
        }
    }
}

/// Ranges of multicast numbers for an ask or its answer, within the wire's bound.
fn ranges(r: &mut Reader<'_>) -> Vec<(u64, u64)> {
    let n = usize::from(r.b()) % (wire::MAX_ASK_RANGES + 1);
    (0..n)
        .map(|_| {
            let lo = r.wide();
            (lo, lo.saturating_add(u64::from(r.b())))
        })
        .collect()
}

/// A multicast: mostly on a real tree of a pooled group, from a pooled origin.
pub(super) fn cast(r: &mut Reader<'_>, p: &PoolsView<'_>) -> Cast {
    let (group, index, key) = group(r, p);
    let (origin, epoch, seq) = (node_id(r, p), r.wide(), r.wide());
    let (via, hops, flags) = (via(r), hops(r), r.b());
    // A tail carries nothing: the wire refuses one with a payload.
    let tail = flags % 5 == 0;
    Cast {
        key,
        group,
        index,
        origin,
        epoch,
        seq,
        via,
        hops,
        tail,
        resent: flags % 3 == 0,
        prev_ms: r.wide(),
        payload: if tail { Bytes::new() } else { payload(r) },
    }
}

/// An anycast (a request or a tunnel build) on a cluster's tree.
pub(super) fn anycast(r: &mut Reader<'_>, p: &PoolsView<'_>) -> Anycast {
    let (mut group, index, key) = group(r, p);
    group.kind = crate::scribe::GroupKind::Cluster;
    let tunnel = r.b().is_multiple_of(3);
    let ids = if tunnel { p.tunnels } else { p.requests };
    Anycast {
        key,
        cluster: group.name,
        index,
        origin: contact(r, p),
        id: pick_or_wide(r, ids),
        timeout_ms: r.wide(),
        budget_ms: match r.b() % 3 {
            0 => r.wide(),
            _ => u64::from(r.b()) * 100,
        },
        // Not drawn: a harness that sends it stamps it with its clock.
        due_ms: 0,
        via: via(r),
        hops: hops(r),
        wanted: if tunnel {
            Wanted::Tunnel
        } else {
            Wanted::Request(payload(r))
        },
    }
}

/// A group, its tree index and the tree's key (mostly the group's own).
fn group(r: &mut Reader<'_>, p: &PoolsView<'_>) -> (Group, u8, NodeId) {
    let pick = usize::from(r.b());
    let pooled = p.groups.get(pick % (p.groups.len() + 1));
    let group = match pooled {
        Some(g) if pick != 255 => g.clone(),
        _ => {
            let name: Name = if p.oversized && pick == 255 {
                "n".repeat(MAX_NAME + 1).into()
            } else {
                r.text(40).into()
            };
            let kind = crate::scribe::GroupKind::from_byte(r.b() % 2).expect("0 or 1");
            Group { kind, name }
        }
    };
    let index = match r.b() {
        255 => r.b(),
        b => b % p.splits.max(1),
    };
    let key = if r.b().is_multiple_of(8) {
        NodeId(r.u128())
    } else {
        group.tree_key(index)
    };
    (group, index, key)
}

/// A tree key: of a pooled group, or any.
fn key(r: &mut Reader<'_>, p: &PoolsView<'_>) -> NodeId {
    match r.b() % 4 {
        0 => NodeId(r.u128()),
        _ => group(r, p).2,
    }
}

/// A node id: a pooled node's, or any.
fn node_id(r: &mut Reader<'_>, p: &PoolsView<'_>) -> NodeId {
    match p.contacts.get(usize::from(r.b()) % (p.contacts.len() + 1)) {
        Some(c) => c.id,
        None => NodeId(r.u128()),
    }
}

/// A contact: a pooled node, or any (v4 or v6, any port and epoch).
pub(super) fn contact(r: &mut Reader<'_>, p: &PoolsView<'_>) -> Contact {
    if let Some(c) = p.contacts.get(usize::from(r.b()) % (p.contacts.len() + 1)) {
        return *c;
    }
    let id = NodeId(r.u128());
    let raw = r.u128();
    let port = u16::from_le_bytes([r.b(), r.b()]);
    let ip = if r.b().is_multiple_of(2) {
        std::net::IpAddr::V4(Ipv4Addr::from(raw as u32))
    } else {
        std::net::IpAddr::V6(Ipv6Addr::from(raw))
    };
    Contact::new(id, SocketAddr::new(ip, port), r.wide())
}

fn pick_or_wide(r: &mut Reader<'_>, pool: &[u64]) -> u64 {
    match pool.get(usize::from(r.b()) % (pool.len() + 1)) {
        Some(&id) => id,
        None => r.wide(),
    }
}

fn via(r: &mut Reader<'_>) -> Via {
    match r.b() % 3 {
        0 => Via::Routed,
        1 => Via::Tree,
        _ => Via::Detour,
    }
}

fn hops(r: &mut Reader<'_>) -> u8 {
    match r.b() % 4 {
        0 => u8::MAX,
        _ => r.b() % 8,
    }
}

fn payload(r: &mut Reader<'_>) -> Bytes {
    let fill = r.b();
    Bytes::from(vec![fill; r.size()])
}

/// A text (a fault, a close reason): short, or over the name bound now and then.
fn text(r: &mut Reader<'_>, p: &PoolsView<'_>) -> Name {
    match r.b() {
        255 if p.oversized => "f".repeat(MAX_NAME + 1).into(),
        _ => r.text(40).into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(b: &[u8]) -> NodeMsg {
        wire::decode(&Bytes::copy_from_slice(b)).expect("decodes")
    }

    /// The three places where the decoder accepts bytes the encoder never writes (see the
    /// module docs): each decodes, and re-encodes to other bytes.
    #[test]
    fn the_decoder_accepts_three_non_canonical_forms() {
        // TUNNEL_REFUSED with tun 0 as a padded varint.
        let padded = [20, 0x80, 0x00];
        assert_eq!(decode(&padded), NodeMsg::TunnelRefused { tun: 0 });
        assert_eq!(&wire::encode(&decode(&padded))[..], &[20, 0]);
        // A BEAT whose one capacity is 2^32: read as u32::MAX.
        let mut beat = vec![3, 1];
        beat.extend_from_slice(&[0; 16]);
        beat.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x10]);
        beat.push(0);
        let NodeMsg::Tree(ScribeMsg::Beat { caps, .. }) = decode(&beat) else {
            panic!("not a beat");
        };
        assert_eq!(caps, vec![(NodeId(0), u32::MAX)]);
        assert_ne!(&wire::encode(&decode(&beat))[..], &beat[..]);
        // CAST_CREDIT with tree index 7: the index is dropped, written back as 0.
        let credit = [24, 0, 7, 1, b'g', 5];
        assert_eq!(&wire::encode(&decode(&credit))[..], &[24, 0, 0, 1, b'g', 5]);
    }
}
