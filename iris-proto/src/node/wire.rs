//! What nodes say to each other about relay traffic: tree maintenance, multicasts
//! (broadcasts and events), anycasts (requests and tunnel builds), replies and tunnel
//! traffic. A tag byte, then the fields; the payload of a message is its last field and
//! is sliced out of the received bytes, not copied.

use crate::overlay::wire::{WireError, put_contact, take_contact, take_u8, take_u128};
use crate::overlay::{Contact, NodeId};
use crate::relay::Name;
use crate::relay::codec::{put_varint, take_varint};
use crate::scribe::{Group, GroupKind, Listed, ScribeMsg};
use bytes::{BufMut, Bytes, BytesMut};

/// Longest group name accepted from a peer (the relay protocol's default name bound).
pub(crate) const MAX_NAME: usize = 64 << 10;

/// Most bytes a node message adds around a client's payload: one name (a group or a
/// fault text) of at most [`MAX_NAME`] bytes and a few ids. Links must carry the relay's
/// largest message plus this, or that message could not cross nodes.
pub(crate) const MAX_OVERHEAD: usize = MAX_NAME + 1024;

mod tag {
    pub(super) const SUBSCRIBE: u8 = 1;
    pub(super) const UNSUBSCRIBE: u8 = 2;
    pub(super) const BEAT: u8 = 3;
    pub(super) const NOT_IN_TREE: u8 = 4;
    pub(super) const HEADS: u8 = 5;
    pub(super) const PROBE: u8 = 6;
    pub(super) const CAST: u8 = 16;
    pub(super) const ANYCAST: u8 = 17;
    pub(super) const REPLY: u8 = 18;
    pub(super) const TUNNEL_CONFIRM: u8 = 19;
    pub(super) const TUNNEL_REFUSED: u8 = 20;
    pub(super) const TUNNEL_DATA: u8 = 21;
    pub(super) const TUNNEL_ALLOW: u8 = 22;
    pub(super) const TUNNEL_CLOSE: u8 = 23;
    pub(super) const CAST_CREDIT: u8 = 24;
    pub(super) const CAST_ASK: u8 = 25;
    pub(super) const CAST_GONE: u8 = 26;
    pub(super) const FORWARD: u8 = 27;
    pub(super) const CAST_UNTETHER: u8 = 28;
}

/// An inclusive range of multicast numbers.
pub(crate) type Range = (u64, u64);

/// Most ranges of numbers one ask (or its answer) names.
pub(crate) const MAX_ASK_RANGES: usize = 64;

/// Flag bits of a multicast (see [`Cast`]).
mod flag {
    pub(super) const TAIL: u8 = 1;
    pub(super) const RESENT: u8 = 2;
}

/// How a tree message is travelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    /// Routed toward the tree's key, not yet in the tree.
    Routed = 0,
    /// Along the tree, from a tree neighbour.
    Tree = 1,
    /// Routed, and sent on once past the key's closest node, which was not in the tree (a
    /// node that just joined closest to the key, before the old root handed over).
    Detour = 2,
}

impl Via {
    fn from_byte(b: u8) -> Option<Via> {
        match b {
            0 => Some(Via::Routed),
            1 => Some(Via::Tree),
            2 => Some(Via::Detour),
            _ => None,
        }
    }
}

/// A multicast on a tree: a broadcast to a cluster or an event on a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cast {
    /// The tree.
    pub(crate) key: NodeId,
    pub(crate) group: Group,
    pub(crate) index: u8,
    /// Who sent it, in which incarnation, with which number (duplicate suppression).
    pub(crate) origin: NodeId,
    pub(crate) epoch: u64,
    pub(crate) seq: u64,
    /// How it travels.
    pub(crate) via: Via,
    /// Hops so far, bounded.
    pub(crate) hops: u8,
    /// Not a client's message: the origin's word that it sent up to `seq` on this tree, a
    /// while after its last message, so that a tree node that missed the last ones learns
    /// of them (see `scribe::window`). Its payload is empty; nobody delivers it.
    pub(crate) tail: bool,
    /// Sent again by the origin straight to a tree node that asked for it: delivered
    /// there, never passed on.
    pub(crate) resent: bool,
    /// How long before it the origin sent its previous message on this tree: 0 for none,
    /// else milliseconds plus one (a tree node that has nothing from the origin yet learns
    /// whether it was owed something before: `scribe::window`).
    pub(crate) prev_ms: u64,
    /// The message or event.
    pub(crate) payload: Bytes,
}

/// What an anycast carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Wanted {
    /// A request with its payload.
    Request(Bytes),
    /// A tunnel to build.
    Tunnel,
}

/// An anycast on a cluster's tree: a request or a tunnel build, for one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Anycast {
    pub(crate) key: NodeId,
    /// The cluster's name.
    pub(crate) cluster: Name,
    pub(crate) index: u8,
    /// Where the outcome goes, and the origin's name for this request or tunnel.
    pub(crate) origin: Contact,
    pub(crate) id: u64,
    /// The requester's timeout, forwarded unchanged to the member.
    pub(crate) timeout_ms: u64,
    /// What is left of the timeout after the time spent in nodes on the way.
    pub(crate) budget_ms: u64,
    /// When it is due at the next node by the budget's plan, on the clock (ms) of the node
    /// that passed it on: the time it did plus half the hop's cost (the way there; the
    /// other half is for the way back). The next node learns from it how late the anycast
    /// arrived (see `mesh::one_way`).
    pub(crate) due_ms: u64,
    pub(crate) via: Via,
    pub(crate) hops: u8,
    pub(crate) wanted: Wanted,
}

/// One message of the node protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NodeMsg {
    Tree(ScribeMsg),
    Cast(Cast),
    Anycast(Anycast),
    /// The outcome of request `id` of the receiver: the member's reply or fault.
    Reply {
        id: u64,
        outcome: Result<Bytes, Name>,
    },
    /// The receiver's tunnel `tun` was accepted by a member; the sender calls it `peer`
    /// and grants `window` bytes.
    TunnelConfirm {
        tun: u64,
        peer: u64,
        window: u64,
    },
    /// The receiver's tunnel `tun` found no member that confirmed in time.
    TunnelRefused {
        tun: u64,
    },
    /// A chunk for the receiver's tunnel `tun`.
    TunnelData {
        tun: u64,
        size_or_cont: u64,
        payload: Bytes,
    },
    /// The receiver may send `space` more bytes on its tunnel `tun`.
    TunnelAllow {
        tun: u64,
        space: u64,
    },
    /// The receiver's tunnel `tun` is closed; an empty reason is graceful.
    TunnelClose {
        tun: u64,
        reason: Name,
    },
    /// The sender took `bytes` more of the receiver's multicasts of `group` (see
    /// `castflow`).
    CastCredit {
        group: Group,
        bytes: u64,
    },
    /// The sender's multicasts of `group` went on to others while they waited for the
    /// receiver's credit for a grace: its members of the group that hold it back stop
    /// doing so (see `castflow`).
    CastUntether {
        group: Group,
    },
    /// Routed toward `origin`: the tree node `asker` misses numbers `ranges` of the
    /// origin's multicasts (at `epoch`) on tree `key` and asks for them again.
    CastAsk {
        key: NodeId,
        origin: NodeId,
        epoch: u64,
        asker: Contact,
        ranges: Vec<(u64, u64)>,
        /// How long the asker has had members of the group (ms): nothing older is owed.
        /// Each hop adds what the ask's trip to it took beyond the link's fastest, so that
        /// an ask held up on the way (a delay spike) does not make the origin take owed
        /// messages for older ones.
        within_ms: u64,
        /// When the last hop sent it, on its clock (`mesh::one_way::stamp`).
        sent_ms: u64,
        hops: u8,
    },
    /// The sender (the origin, at `epoch`) no longer has numbers `gone` of tree `key`, and
    /// sent `skipped` before the asker had members: the receiver stops waiting for them.
    CastGone {
        key: NodeId,
        epoch: u64,
        gone: Vec<(u64, u64)>,
        skipped: Vec<(u64, u64)>,
    },
    /// Passed on for node `to`: `inner` (the bytes of a message `from` sent it) that `from`
    /// could not send it straight (no link could be made). Each hop passes it on toward
    /// `to`; there it is taken as `from`'s. Only asks for multicasts and an origin's
    /// answers go this way (a multicast sent again, or what is gone).
    Forward {
        from: Contact,
        to: NodeId,
        hops: u8,
        inner: Bytes,
    },
}

impl NodeMsg {
    /// What the message is, for a log line about its loss.
    pub(crate) fn describe(&self) -> String {
        match self {
            NodeMsg::Tree(_) => "a tree message".into(),
            NodeMsg::Cast(c) => format!("a multicast of {}", c.group),
            NodeMsg::Anycast(_) => "a request or tunnel build".into(),
            NodeMsg::Reply { .. } => "a reply".into(),
            NodeMsg::TunnelConfirm { .. } | NodeMsg::TunnelRefused { .. } => {
                "a tunnel's answer".into()
            }
            NodeMsg::TunnelData { .. } | NodeMsg::TunnelAllow { .. } => "a tunnel's data".into(),
            NodeMsg::TunnelClose { .. } => "a tunnel's close".into(),
            NodeMsg::CastCredit { group, .. } => format!("multicast credit of {group}"),
            NodeMsg::CastUntether { group } => format!("a slow consumers' release of {group}"),
            NodeMsg::CastAsk { key, .. } => format!("an ask for multicasts of tree {key}"),
            NodeMsg::CastGone { key, .. } => format!("an answer to an ask of tree {key}"),
            NodeMsg::Forward { to, .. } => format!("a message passed on for node {to}"),
        }
    }
}

/// The message's bytes.
pub(crate) fn encode(msg: &NodeMsg) -> Bytes {
    let mut out = BytesMut::with_capacity(64 + payload_len(msg));
    match msg {
        NodeMsg::Tree(t) => encode_tree(t, &mut out),
        NodeMsg::Cast(c) => encode_cast(c, &mut out),
        NodeMsg::Anycast(a) => encode_anycast(a, &mut out),
        NodeMsg::Reply { id, outcome } => {
            out.put_u8(tag::REPLY);
            put_varint(&mut out, *id);
            match outcome {
                Ok(reply) => {
                    out.put_u8(1);
                    out.put_slice(reply);
                }
                Err(fault) => {
                    out.put_u8(0);
                    out.put_slice(fault.as_bytes());
                }
            }
        }
        NodeMsg::CastAsk {
            key,
            origin,
            epoch,
            asker,
            ranges,
            within_ms,
            sent_ms,
            hops,
        } => {
            out.put_u8(tag::CAST_ASK);
            out.put_u128(key.0);
            out.put_u128(origin.0);
            put_varint(&mut out, *epoch);
            put_contact(&mut out, asker);
            put_varint(&mut out, *within_ms);
            put_varint(&mut out, *sent_ms);
            out.put_u8(*hops);
            put_ranges(&mut out, ranges);
        }
        NodeMsg::CastGone {
            key,
            epoch,
            gone,
            skipped,
        } => {
            out.put_u8(tag::CAST_GONE);
            out.put_u128(key.0);
            put_varint(&mut out, *epoch);
            put_ranges(&mut out, gone);
            put_ranges(&mut out, skipped);
        }
        NodeMsg::Forward {
            from,
            to,
            hops,
            inner,
        } => {
            out.put_u8(tag::FORWARD);
            put_contact(&mut out, from);
            out.put_u128(to.0);
            out.put_u8(*hops);
            out.put_slice(inner);
        }
        tunnel => encode_tunnel(tunnel, &mut out),
    }
    out.freeze()
}

fn encode_cast(c: &Cast, out: &mut BytesMut) {
    out.put_u8(tag::CAST);
    out.put_u128(c.key.0);
    put_group(out, &c.group, c.index);
    out.put_u128(c.origin.0);
    put_varint(out, c.epoch);
    put_varint(out, c.seq);
    out.put_u8(c.via as u8);
    out.put_u8(c.hops);
    let mut flags = 0;
    if c.tail {
        flags |= flag::TAIL;
    }
    if c.resent {
        flags |= flag::RESENT;
    }
    out.put_u8(flags);
    put_varint(out, c.prev_ms);
    out.put_slice(&c.payload);
}

/// Ranges of numbers: a count, then each as its first number and its length less one.
fn put_ranges(out: &mut BytesMut, ranges: &[(u64, u64)]) {
    put_varint(out, ranges.len() as u64);
    for &(lo, hi) in ranges {
        put_varint(out, lo);
        put_varint(out, hi - lo);
    }
}

fn encode_anycast(a: &Anycast, out: &mut BytesMut) {
    out.put_u8(tag::ANYCAST);
    out.put_u128(a.key.0);
    put_group(out, &Group::cluster(a.cluster.clone()), a.index);
    put_contact(out, &a.origin);
    put_varint(out, a.id);
    put_varint(out, a.timeout_ms);
    put_varint(out, a.budget_ms);
    put_varint(out, a.due_ms);
    out.put_u8(a.via as u8);
    out.put_u8(a.hops);
    match &a.wanted {
        Wanted::Tunnel => out.put_u8(0),
        Wanted::Request(p) => {
            out.put_u8(1);
            out.put_slice(p);
        }
    }
}

/// Tunnel traffic and multicast credit: small fixed messages.
fn encode_tunnel(msg: &NodeMsg, out: &mut BytesMut) {
    match msg {
        NodeMsg::TunnelConfirm { tun, peer, window } => {
            out.put_u8(tag::TUNNEL_CONFIRM);
            put_varint(out, *tun);
            put_varint(out, *peer);
            put_varint(out, *window);
        }
        NodeMsg::TunnelRefused { tun } => {
            out.put_u8(tag::TUNNEL_REFUSED);
            put_varint(out, *tun);
        }
        NodeMsg::TunnelData {
            tun,
            size_or_cont,
            payload,
        } => {
            out.put_u8(tag::TUNNEL_DATA);
            put_varint(out, *tun);
            put_varint(out, *size_or_cont);
            out.put_slice(payload);
        }
        NodeMsg::TunnelAllow { tun, space } => {
            out.put_u8(tag::TUNNEL_ALLOW);
            put_varint(out, *tun);
            put_varint(out, *space);
        }
        NodeMsg::TunnelClose { tun, reason } => {
            out.put_u8(tag::TUNNEL_CLOSE);
            put_varint(out, *tun);
            out.put_slice(reason.as_bytes());
        }
        NodeMsg::CastCredit { group, bytes } => {
            out.put_u8(tag::CAST_CREDIT);
            put_group(out, group, 0);
            put_varint(out, *bytes);
        }
        NodeMsg::CastUntether { group } => {
            out.put_u8(tag::CAST_UNTETHER);
            put_group(out, group, 0);
        }
        NodeMsg::Tree(_)
        | NodeMsg::Cast(_)
        | NodeMsg::Anycast(_)
        | NodeMsg::Reply { .. }
        | NodeMsg::CastAsk { .. }
        | NodeMsg::CastGone { .. }
        | NodeMsg::Forward { .. } => {
            unreachable!("encoded by encode")
        }
    }
}

/// Parses one whole message; payloads are slices of `b`.
pub(crate) fn decode(b: &Bytes) -> Result<NodeMsg, WireError> {
    let mut r = Reader { all: b, p: b };
    let kind = r.u8()?;
    let msg = match kind {
        tag::SUBSCRIBE => {
            let key = r.id()?;
            let (group, index) = r.group()?;
            NodeMsg::Tree(ScribeMsg::Subscribe { key, group, index })
        }
        tag::UNSUBSCRIBE => NodeMsg::Tree(ScribeMsg::Unsubscribe { key: r.id()? }),
        tag::NOT_IN_TREE => NodeMsg::Tree(ScribeMsg::NotInTree { key: r.id()? }),
        tag::HEADS => NodeMsg::Tree(decode_heads(&mut r)?),
        tag::PROBE => NodeMsg::Tree(ScribeMsg::Probe),
        tag::BEAT => NodeMsg::Tree(decode_beat(&mut r)?),
        tag::CAST => NodeMsg::Cast(decode_cast(&mut r)?),
        tag::ANYCAST => NodeMsg::Anycast(decode_anycast(&mut r)?),
        tag::REPLY => {
            let id = r.varint()?;
            let outcome = match r.u8()? {
                1 => Ok(r.rest()),
                0 => Err(r.name_rest()?),
                _ => return Err(WireError::Malformed("reply flag")),
            };
            NodeMsg::Reply { id, outcome }
        }
        tag::TUNNEL_CONFIRM => NodeMsg::TunnelConfirm {
            tun: r.varint()?,
            peer: r.varint()?,
            window: r.varint()?,
        },
        tag::TUNNEL_REFUSED => NodeMsg::TunnelRefused { tun: r.varint()? },
        tag::TUNNEL_DATA => NodeMsg::TunnelData {
            tun: r.varint()?,
            size_or_cont: r.varint()?,
            payload: r.rest(),
        },
        tag::TUNNEL_ALLOW => NodeMsg::TunnelAllow {
            tun: r.varint()?,
            space: r.varint()?,
        },
        tag::TUNNEL_CLOSE => NodeMsg::TunnelClose {
            tun: r.varint()?,
            reason: r.name_rest()?,
        },
        tag::CAST_CREDIT => {
            let (group, _) = r.group()?;
            NodeMsg::CastCredit {
                group,
                bytes: r.varint()?,
            }
        }
        tag::CAST_UNTETHER => NodeMsg::CastUntether {
            group: r.group()?.0,
        },
        tag::CAST_ASK | tag::CAST_GONE => decode_repair(kind, &mut r)?,
        tag::FORWARD => NodeMsg::Forward {
            from: take_contact(&mut r.p)?,
            to: r.id()?,
            hops: r.u8()?,
            inner: r.rest(),
        },
        _ => return Err(WireError::Malformed("unknown node message tag")),
    };
    if !r.p.is_empty() {
        return Err(WireError::Malformed("trailing bytes"));
    }
    Ok(msg)
}

fn decode_heads(r: &mut Reader<'_>) -> Result<ScribeMsg, WireError> {
    let key = r.id()?;
    let n = r.count(19)?;
    if n > crate::scribe::MAX_HEADS {
        return Err(WireError::Malformed("too many heads"));
    }
    let mut heads = Vec::with_capacity(n);
    for _ in 0..n {
        heads.push((r.id()?, r.varint()?, r.varint()?, r.varint()?));
    }
    Ok(ScribeMsg::Heads { key, heads })
}

/// An ask for multicasts sent again, or its answer (`tag`).
fn decode_repair(tag: u8, r: &mut Reader<'_>) -> Result<NodeMsg, WireError> {
    Ok(match tag {
        tag::CAST_ASK => NodeMsg::CastAsk {
            key: r.id()?,
            origin: r.id()?,
            epoch: r.varint()?,
            asker: take_contact(&mut r.p)?,
            within_ms: r.varint()?,
            sent_ms: r.varint()?,
            hops: r.u8()?,
            ranges: r.ranges()?,
        },
        _ => NodeMsg::CastGone {
            key: r.id()?,
            epoch: r.varint()?,
            gone: r.ranges()?,
            skipped: r.ranges()?,
        },
    })
}

fn decode_beat(r: &mut Reader<'_>) -> Result<ScribeMsg, WireError> {
    let n = r.count(17)?;
    let mut caps = Vec::with_capacity(n);
    for _ in 0..n {
        let key = r.id()?;
        let cap = u32::try_from(r.varint()?).unwrap_or(u32::MAX);
        caps.push((key, cap));
    }
    let range = match r.u8()? {
        0 => None,
        1 => Some((NodeId(0), NodeId(u128::MAX))),
        2 => Some((r.id()?, r.id()?)),
        _ => return Err(WireError::Malformed("beat flag")),
    };
    let parents = match range {
        None => None,
        Some((from, to)) => {
            let n = r.count(16)?;
            let mut keys = Vec::with_capacity(n);
            for _ in 0..n {
                keys.push(r.id()?);
            }
            Some(Listed { from, to, keys })
        }
    };
    Ok(ScribeMsg::Beat { caps, parents })
}

fn decode_cast(r: &mut Reader<'_>) -> Result<Cast, WireError> {
    let key = r.id()?;
    let (group, index) = r.group()?;
    Ok(Cast {
        key,
        group,
        index,
        origin: r.id()?,
        epoch: r.varint()?,
        seq: r.varint()?,
        via: r.via()?,
        hops: r.u8()?,
        tail: false,
        resent: false,
        prev_ms: 0,
        payload: Bytes::new(),
    })
    .and_then(|mut c| {
        let flags = r.u8()?;
        if flags & !(flag::TAIL | flag::RESENT) != 0 {
            return Err(WireError::Malformed("multicast flags"));
        }
        c.tail = flags & flag::TAIL != 0;
        c.resent = flags & flag::RESENT != 0;
        c.prev_ms = r.varint()?;
        c.payload = r.rest();
        if c.tail && !c.payload.is_empty() {
            return Err(WireError::Malformed("a tail with a payload"));
        }
        Ok(c)
    })
}

fn decode_anycast(r: &mut Reader<'_>) -> Result<Anycast, WireError> {
    let key = r.id()?;
    let (group, index) = r.group()?;
    if group.kind != GroupKind::Cluster {
        return Err(WireError::Malformed("anycast to a topic"));
    }
    let origin = take_contact(&mut r.p)?;
    let (id, timeout_ms, budget_ms) = (r.varint()?, r.varint()?, r.varint()?);
    let due_ms = r.varint()?;
    let (via, hops) = (r.via()?, r.u8()?);
    let wanted = match r.u8()? {
        0 => Wanted::Tunnel,
        1 => Wanted::Request(r.rest()),
        _ => return Err(WireError::Malformed("anycast kind")),
    };
    Ok(Anycast {
        key,
        cluster: group.name,
        index,
        origin,
        id,
        timeout_ms,
        budget_ms,
        due_ms,
        via,
        hops,
        wanted,
    })
}

fn encode_tree(t: &ScribeMsg, out: &mut BytesMut) {
    match t {
        ScribeMsg::Subscribe { key, group, index } => {
            out.put_u8(tag::SUBSCRIBE);
            out.put_u128(key.0);
            put_group(out, group, *index);
        }
        ScribeMsg::Unsubscribe { key } => {
            out.put_u8(tag::UNSUBSCRIBE);
            out.put_u128(key.0);
        }
        ScribeMsg::NotInTree { key } => {
            out.put_u8(tag::NOT_IN_TREE);
            out.put_u128(key.0);
        }
        ScribeMsg::Probe => out.put_u8(tag::PROBE),
        ScribeMsg::Heads { key, heads } => {
            out.put_u8(tag::HEADS);
            out.put_u128(key.0);
            put_varint(out, heads.len() as u64);
            for &(origin, epoch, seq, age_ms) in heads {
                out.put_u128(origin.0);
                put_varint(out, epoch);
                put_varint(out, seq);
                put_varint(out, age_ms);
            }
        }
        ScribeMsg::Beat { caps, parents } => {
            out.put_u8(tag::BEAT);
            put_varint(out, caps.len() as u64);
            for (key, cap) in caps {
                out.put_u128(key.0);
                put_varint(out, u64::from(*cap));
            }
            match parents {
                None => out.put_u8(0),
                Some(listed) => {
                    // 1: every key; 2: a range of keys.
                    if listed.is_all() {
                        out.put_u8(1);
                    } else {
                        out.put_u8(2);
                        out.put_u128(listed.from.0);
                        out.put_u128(listed.to.0);
                    }
                    put_varint(out, listed.keys.len() as u64);
                    for k in &listed.keys {
                        out.put_u128(k.0);
                    }
                }
            }
        }
    }
}

fn put_group(out: &mut BytesMut, g: &Group, index: u8) {
    out.put_u8(g.kind as u8);
    out.put_u8(index);
    put_varint(out, g.name.len() as u64);
    out.put_slice(g.name.as_bytes());
}

fn payload_len(msg: &NodeMsg) -> usize {
    match msg {
        NodeMsg::Cast(c) => c.payload.len(),
        NodeMsg::Anycast(Anycast {
            wanted: Wanted::Request(p),
            ..
        }) => p.len(),
        NodeMsg::Reply { outcome: Ok(p), .. } => p.len(),
        NodeMsg::TunnelData { payload, .. } => payload.len(),
        NodeMsg::Forward { inner, .. } => inner.len(),
        _ => 0,
    }
}

/// A cursor over a whole message.
struct Reader<'a> {
    all: &'a Bytes,
    p: &'a [u8],
}

impl Reader<'_> {
    fn u8(&mut self) -> Result<u8, WireError> {
        take_u8(&mut self.p)
    }

    fn via(&mut self) -> Result<Via, WireError> {
        Via::from_byte(self.u8()?).ok_or(WireError::Malformed("via"))
    }

    fn id(&mut self) -> Result<NodeId, WireError> {
        take_u128(&mut self.p).map(NodeId)
    }

    fn varint(&mut self) -> Result<u64, WireError> {
        take_varint(&mut self.p)
            .map(|(v, _)| v)
            .ok_or(WireError::Malformed("varint"))
    }

    /// A count of items of at least `min` bytes each: never more than the bytes left hold.
    fn count(&mut self, min: usize) -> Result<usize, WireError> {
        let n = self.varint()?;
        if n > (self.p.len() / min) as u64 {
            return Err(WireError::Malformed("count beyond the message"));
        }
        Ok(n as usize)
    }

    fn group(&mut self) -> Result<(Group, u8), WireError> {
        let kind = GroupKind::from_byte(self.u8()?).ok_or(WireError::Malformed("group kind"))?;
        let index = self.u8()?;
        let len = self.varint()?;
        if len > MAX_NAME as u64 || len > self.p.len() as u64 {
            return Err(WireError::Malformed("group name length"));
        }
        let start = self.all.len() - self.p.len();
        let name = self.all.slice(start..start + len as usize);
        self.p = &self.p[len as usize..];
        let name = Name::from_utf8(name).ok_or(WireError::Malformed("group name"))?;
        Ok((Group { kind, name }, index))
    }

    /// Ranges of numbers (see `put_ranges`), each well formed, at most
    /// [`MAX_ASK_RANGES`].
    fn ranges(&mut self) -> Result<Vec<(u64, u64)>, WireError> {
        let n = self.count(2)?;
        if n > MAX_ASK_RANGES {
            return Err(WireError::Malformed("too many ranges"));
        }
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let lo = self.varint()?;
            let hi = lo
                .checked_add(self.varint()?)
                .ok_or(WireError::Malformed("range"))?;
            out.push((lo, hi));
        }
        Ok(out)
    }

    /// Everything left, as a slice of the message.
    fn rest(&mut self) -> Bytes {
        let start = self.all.len() - self.p.len();
        self.p = &[];
        self.all.slice(start..)
    }

    fn name_rest(&mut self) -> Result<Name, WireError> {
        Name::from_utf8(self.rest()).ok_or(WireError::Malformed("text"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<NodeMsg> {
        let g = Group::cluster("svc".into());
        let c = Contact::new(NodeId(5), "127.0.0.1:9".parse().unwrap(), 3);
        vec![
            NodeMsg::Tree(ScribeMsg::Subscribe {
                key: g.tree_key(2),
                group: g.clone(),
                index: 2,
            }),
            NodeMsg::Tree(ScribeMsg::Unsubscribe { key: NodeId(1) }),
            NodeMsg::Tree(ScribeMsg::NotInTree { key: NodeId(1) }),
            NodeMsg::Tree(ScribeMsg::Heads {
                key: NodeId(1),
                heads: vec![(NodeId(2), 3, 4, 5), (NodeId(u128::MAX), u64::MAX, 0, 0)],
            }),
            NodeMsg::Tree(ScribeMsg::Beat {
                caps: vec![(NodeId(1), 7), (NodeId(u128::MAX), u32::MAX)],
                parents: Some(Listed::all(vec![NodeId(3)])),
            }),
            NodeMsg::Tree(ScribeMsg::Beat {
                caps: vec![],
                parents: Some(Listed {
                    from: NodeId(4),
                    to: NodeId(9),
                    keys: vec![NodeId(5), NodeId(9)],
                }),
            }),
            NodeMsg::Tree(ScribeMsg::Beat {
                caps: vec![],
                parents: None,
            }),
            NodeMsg::Cast(Cast {
                key: NodeId(9),
                group: Group::topic("news".into()),
                index: 4,
                origin: NodeId(5),
                epoch: 1,
                seq: u64::MAX,
                via: Via::Tree,
                hops: 3,
                tail: false,
                resent: false,
                prev_ms: 1001,
                payload: Bytes::from_static(b"event"),
            }),
            NodeMsg::Anycast(Anycast {
                key: NodeId(9),
                cluster: "svc".into(),
                index: 0,
                origin: c,
                id: 77,
                timeout_ms: 1,
                budget_ms: 0,
                due_ms: 0,
                via: Via::Routed,
                hops: 0,
                wanted: Wanted::Request(Bytes::new()),
            }),
            NodeMsg::Anycast(Anycast {
                key: NodeId(9),
                cluster: "svc".into(),
                index: 1,
                origin: c,
                id: 78,
                timeout_ms: 5000,
                budget_ms: 4000,
                due_ms: 0,
                via: Via::Detour,
                hops: 9,
                wanted: Wanted::Tunnel,
            }),
            NodeMsg::Reply {
                id: 1,
                outcome: Ok(Bytes::from_static(b"")),
            },
            NodeMsg::Reply {
                id: 2,
                outcome: Err("kaput".into()),
            },
            NodeMsg::TunnelConfirm {
                tun: 1,
                peer: 2,
                window: 4 << 20,
            },
            NodeMsg::TunnelRefused { tun: 3 },
            NodeMsg::TunnelData {
                tun: 1,
                size_or_cont: 0,
                payload: Bytes::from_static(b"chunk"),
            },
            NodeMsg::TunnelAllow { tun: 1, space: 9 },
            NodeMsg::TunnelClose {
                tun: 1,
                reason: "".into(),
            },
            NodeMsg::CastCredit {
                group: Group::cluster("ring".into()),
                bytes: 1 << 22,
            },
            NodeMsg::CastUntether {
                group: Group::topic("news".into()),
            },
            NodeMsg::CastAsk {
                key: NodeId(9),
                origin: NodeId(5),
                epoch: 2,
                asker: c,
                ranges: vec![(3, 3), (7, u64::MAX)],
                within_ms: 12_000,
                sent_ms: 987_654,
                hops: 1,
            },
            NodeMsg::Forward {
                from: c,
                to: NodeId(77),
                hops: 3,
                inner: Bytes::from_static(b"\x1a inner bytes"),
            },
            NodeMsg::CastGone {
                key: NodeId(9),
                epoch: 2,
                gone: vec![],
                skipped: vec![(0, 2)],
            },
        ]
    }

    #[test]
    fn every_message_round_trips_and_truncations_are_refused() {
        for m in samples() {
            let b = encode(&m);
            assert_eq!(decode(&b), Ok(m.clone()), "{m:?}");
            // Cut anywhere before the payload, the message is refused, never misread.
            for cut in 0..b.len() {
                let short = b.slice(..cut);
                if let Ok(other) = decode(&short) {
                    // Only a message whose last field is a payload may end early.
                    assert_ne!(other, m);
                }
            }
        }
    }

    #[test]
    fn no_message_adds_more_than_the_overhead_links_allow_for() {
        let name = "n".repeat(MAX_NAME);
        let c = Contact::new(
            NodeId(u128::MAX),
            "[ffff::1]:65535".parse().unwrap(),
            u64::MAX,
        );
        let largest = [
            NodeMsg::Cast(Cast {
                key: NodeId(u128::MAX),
                group: Group::topic(name.as_str().into()),
                index: u8::MAX,
                origin: NodeId(u128::MAX),
                epoch: u64::MAX,
                seq: u64::MAX,
                via: Via::Detour,
                hops: u8::MAX,
                tail: true,
                resent: true,
                prev_ms: u64::MAX,
                payload: Bytes::new(),
            }),
            NodeMsg::Anycast(Anycast {
                key: NodeId(u128::MAX),
                cluster: name.as_str().into(),
                index: u8::MAX,
                origin: c,
                id: u64::MAX,
                timeout_ms: u64::MAX,
                budget_ms: u64::MAX,
                due_ms: u64::MAX,
                via: Via::Detour,
                hops: u8::MAX,
                wanted: Wanted::Request(Bytes::new()),
            }),
            NodeMsg::Reply {
                id: u64::MAX,
                outcome: Err(name.as_str().into()),
            },
            NodeMsg::TunnelData {
                tun: u64::MAX,
                size_or_cont: u64::MAX,
                payload: Bytes::new(),
            },
        ];
        for m in largest {
            let len = encode(&m).len();
            assert!(len <= MAX_OVERHEAD, "{len} bytes around an empty payload");
            assert!(len > MAX_NAME || matches!(m, NodeMsg::TunnelData { .. }));
        }
    }

    #[test]
    fn counts_beyond_the_message_are_refused_before_allocating() {
        let mut b = BytesMut::new();
        b.put_u8(tag::BEAT);
        put_varint(&mut b, u64::MAX);
        assert!(decode(&b.freeze()).is_err());
        assert!(decode(&Bytes::from_static(&[99])).is_err());
        assert!(decode(&Bytes::new()).is_err());
    }
}
