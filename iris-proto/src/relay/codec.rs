//! The relay protocol v1 wire format, both directions.
//!
//! A packet is an opcode byte followed by fields in a fixed order, with no length prefix, so
//! the decoder finds packet boundaries by parsing. Decoding is incremental: [`decode_client`]
//! and [`decode_node`] take a buffer holding whatever bytes have arrived, return `Ok(None)` when
//! a packet is still incomplete (leaving the buffer untouched), and otherwise split exactly one
//! packet off the front. Every length is checked against [`Limits`] as soon as its varint has
//! been read, before anything is buffered or allocated for it. Payloads and names are slices of
//! the frame they arrived in, so decoding copies nothing.

use super::name::Name;
use bytes::{BufMut, Bytes, BytesMut};
use std::ops::Range;
use thiserror::Error;

/// The magic string a client sends in its INIT.
pub const CLIENT_MAGIC: &str = "iris-client-magic";
/// The magic string the node sends in its INIT and DENY.
pub const RELAY_MAGIC: &str = "iris-relay-magic";
/// The one protocol version this crate speaks.
pub const PROTOCOL_VERSION: &str = "v1.0-draft2";
/// The longest valid varint: ten bytes hold 64 bits.
pub const MAX_VARINT_LEN: usize = 10;

/// Opcode bytes, shared by both directions.
#[allow(missing_docs)]
pub mod op {
    pub const INIT: u8 = 0x00;
    pub const DENY: u8 = 0x01;
    pub const CLOSE: u8 = 0x02;
    pub const BROADCAST: u8 = 0x03;
    pub const REQUEST: u8 = 0x04;
    pub const REPLY: u8 = 0x05;
    pub const SUBSCRIBE: u8 = 0x06;
    pub const UNSUBSCRIBE: u8 = 0x07;
    pub const PUBLISH: u8 = 0x08;
    pub const TUN_INIT: u8 = 0x09;
    pub const TUN_CONFIRM: u8 = 0x0a;
    pub const TUN_ALLOW: u8 = 0x0b;
    pub const TUN_TRANSFER: u8 = 0x0c;
    pub const TUN_CLOSE: u8 = 0x0d;
}

/// Size bounds the decoder enforces before buffering a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest message, request, reply, event or fault text, in bytes.
    pub max_message_size: u64,
    /// Largest cluster or topic name, magic or version string, in bytes.
    pub max_name_size: u64,
    /// Largest tunnel chunk payload, in bytes (the protocol's chunk limit, 64 KiB).
    pub max_chunk_size: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_message_size: 64 << 20,
            max_name_size: 64 << 10,
            max_chunk_size: 64 << 10,
        }
    }
}

/// Why bytes are not a valid packet. Every variant is the remote side's fault.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The opcode is unknown or never sent in this direction.
    #[error("unknown opcode 0x{0:02x}")]
    UnknownOpcode(u8),
    /// A bool byte other than 0 or 1.
    #[error("invalid bool byte 0x{0:02x}")]
    InvalidBool(u8),
    /// A varint longer than ten bytes.
    #[error("varint longer than 10 bytes")]
    VarintTooLong,
    /// A varint whose value does not fit in 64 bits.
    #[error("varint overflows 64 bits")]
    VarintOverflow,
    /// A length above the configured maximum for that field.
    #[error("{field} of {len} bytes exceeds the limit of {max}")]
    TooLong {
        /// Which field.
        field: &'static str,
        /// The announced length.
        len: u64,
        /// The configured bound.
        max: u64,
    },
    /// A string field that is not UTF-8.
    #[error("{0} is not valid UTF-8")]
    InvalidUtf8(&'static str),
}

/// A packet sent by a client to the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientPacket {
    /// Connection initiation. Magic and version stay raw bytes so that a node can tell a
    /// wrong magic (silent drop) from a wrong version (DENY) whatever they hold.
    Init {
        /// Should be [`CLIENT_MAGIC`].
        magic: Bytes,
        /// Should be [`PROTOCOL_VERSION`].
        version: Bytes,
        /// Empty for a plain client, else the cluster to join.
        cluster: Name,
    },
    /// Tear-down request.
    Close,
    /// Broadcast to every member of a cluster.
    Broadcast {
        /// Target cluster.
        cluster: Name,
        /// Payload.
        message: Bytes,
    },
    /// Request to one member of a cluster.
    Request {
        /// Client-chosen id, echoed in the REPLY.
        id: u64,
        /// Target cluster.
        cluster: Name,
        /// Payload.
        request: Bytes,
        /// Milliseconds the node waits for the reply.
        timeout_ms: u64,
    },
    /// Reply to a delivered request.
    Reply {
        /// The node's id from the REQUEST delivery.
        id: u64,
        /// The reply, or the fault text.
        outcome: Result<Bytes, Name>,
    },
    /// Subscribe to a topic.
    Subscribe {
        /// Topic.
        topic: Name,
    },
    /// Unsubscribe from a topic.
    Unsubscribe {
        /// Topic.
        topic: Name,
    },
    /// Publish an event.
    Publish {
        /// Topic.
        topic: Name,
        /// Payload.
        event: Bytes,
    },
    /// Tunnel construction request.
    TunInit {
        /// Client-chosen tunnel id.
        tun_id: u64,
        /// Target cluster.
        cluster: Name,
        /// Milliseconds to wait for the tunnel to be built.
        timeout_ms: u64,
    },
    /// Accept an inbound tunnel.
    TunConfirm {
        /// The node's build id from its TUN_INIT.
        build_id: u64,
        /// Client-chosen tunnel id.
        tun_id: u64,
    },
    /// Grant the node send allowance.
    TunAllow {
        /// Tunnel.
        tun_id: u64,
        /// Bytes granted.
        space: u64,
    },
    /// A data chunk.
    TunTransfer {
        /// Tunnel.
        tun_id: u64,
        /// Total message size on a first chunk, 0 on a continuation.
        size_or_cont: u64,
        /// Chunk bytes.
        payload: Bytes,
    },
    /// Close request.
    TunClose {
        /// Tunnel.
        tun_id: u64,
    },
}

/// The outcome of a request as the node reports it to the requester.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyOutcome {
    /// No reply in time.
    TimedOut,
    /// The member's reply.
    Success(Bytes),
    /// The member's fault text.
    Fault(Name),
}

/// A packet sent by the node to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodePacket {
    /// Connection accepted.
    Init {
        /// Should be [`RELAY_MAGIC`].
        magic: Bytes,
        /// The node's protocol version.
        version: Bytes,
    },
    /// Connection refused.
    Deny {
        /// Should be [`RELAY_MAGIC`].
        magic: Bytes,
        /// Why.
        reason: Name,
    },
    /// Tear-down notification; empty reason means graceful.
    Close {
        /// Why.
        reason: Name,
    },
    /// Broadcast delivery.
    Broadcast {
        /// Payload.
        message: Bytes,
    },
    /// Request delivery to a member.
    Request {
        /// Node-chosen id for the REPLY.
        id: u64,
        /// Payload.
        request: Bytes,
        /// The requester's timeout, unchanged.
        timeout_ms: u64,
    },
    /// Outcome of the client's own request.
    Reply {
        /// The client's request id.
        id: u64,
        /// What happened.
        outcome: ReplyOutcome,
    },
    /// Event delivery.
    Publish {
        /// Topic.
        topic: Name,
        /// Payload.
        event: Bytes,
    },
    /// Inbound tunnel offer.
    TunInit {
        /// Node-chosen build id.
        build_id: u64,
        /// Largest chunk either side may send.
        chunk_limit: u64,
    },
    /// Outcome of the client's tunnel construction request.
    TunConfirm {
        /// The client's tunnel id.
        tun_id: u64,
        /// `None` if timed out, else the chunk limit.
        chunk_limit: Option<u64>,
    },
    /// Grant the client send allowance.
    TunAllow {
        /// Tunnel.
        tun_id: u64,
        /// Bytes granted.
        space: u64,
    },
    /// A data chunk.
    TunTransfer {
        /// Tunnel.
        tun_id: u64,
        /// Total message size on a first chunk, 0 on a continuation.
        size_or_cont: u64,
        /// Chunk bytes.
        payload: Bytes,
    },
    /// Close notification or acknowledgement; empty reason means graceful.
    TunClose {
        /// Tunnel.
        tun_id: u64,
        /// Why.
        reason: Name,
    },
}

/// Decodes one client → node packet from the front of `buf`.
///
/// `Ok(None)`: incomplete, `buf` untouched. `Ok(Some(p))`: exactly that packet's bytes were
/// removed from `buf`. `Err`: a protocol violation; `buf` is untouched and the stream is
/// unusable.
pub fn decode_client(
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<ClientPacket>, DecodeError> {
    let mut r = Reader::new(buf, limits);
    let shape = match parse_client(&mut r) {
        Ok(shape) => shape,
        Err(Stop::Incomplete) => return Ok(None),
        Err(Stop::Invalid(e)) => return Err(e),
    };
    let frame = buf.split_to(r.pos).freeze();
    shape.build(&frame).map(Some)
}

/// The total length of the client packet whose first bytes are in `buf`, once its header
/// says it (its last length field has been read); `None` while that is not yet known, or
/// if the bytes are invalid (which [`decode_client`] reports). Lets the node reserve memory
/// for a large message when it starts to arrive rather than as each byte comes.
pub fn client_packet_len(buf: &[u8], limits: &Limits) -> Option<usize> {
    let mut r = Reader::new(buf, limits);
    match parse_client(&mut r) {
        Ok(_) => Some(r.pos),
        Err(Stop::Incomplete) => r.need,
        Err(Stop::Invalid(_)) => None,
    }
}

/// Decodes one node → client packet from the front of `buf`; same contract as
/// [`decode_client`].
pub fn decode_node(buf: &mut BytesMut, limits: &Limits) -> Result<Option<NodePacket>, DecodeError> {
    let mut r = Reader::new(buf, limits);
    let shape = match parse_node(&mut r) {
        Ok(shape) => shape,
        Err(Stop::Incomplete) => return Ok(None),
        Err(Stop::Invalid(e)) => return Err(e),
    };
    let frame = buf.split_to(r.pos).freeze();
    shape.build(&frame).map(Some)
}

impl ClientPacket {
    /// Appends the packet's wire bytes to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            ClientPacket::Init {
                magic,
                version,
                cluster,
            } => {
                out.put_u8(op::INIT);
                put_binary(out, magic);
                put_binary(out, version);
                put_binary(out, cluster.as_bytes());
            }
            ClientPacket::Close => encode_close_request(out),
            ClientPacket::Broadcast { cluster, message } => {
                encode_broadcast(out, cluster.as_str(), message)
            }
            ClientPacket::Request {
                id,
                cluster,
                request,
                timeout_ms,
            } => encode_request(out, *id, cluster.as_str(), request, *timeout_ms),
            ClientPacket::Reply { id, outcome } => {
                let outcome = match outcome {
                    Ok(reply) => Ok(&reply[..]),
                    Err(fault) => Err(fault.as_str()),
                };
                encode_reply(out, *id, outcome);
            }
            ClientPacket::Subscribe { topic } => encode_subscribe(out, topic.as_str()),
            ClientPacket::Unsubscribe { topic } => encode_unsubscribe(out, topic.as_str()),
            ClientPacket::Publish { topic, event } => {
                encode_publish_client(out, topic.as_str(), event)
            }
            ClientPacket::TunInit {
                tun_id,
                cluster,
                timeout_ms,
            } => encode_tun_init(out, *tun_id, cluster.as_str(), *timeout_ms),
            ClientPacket::TunConfirm { build_id, tun_id } => {
                encode_tun_confirm(out, *build_id, *tun_id)
            }
            ClientPacket::TunAllow { tun_id, space } => encode_tun_allow(out, *tun_id, *space),
            ClientPacket::TunTransfer {
                tun_id,
                size_or_cont,
                payload,
            } => encode_tun_transfer(out, *tun_id, *size_or_cont, payload),
            ClientPacket::TunClose { tun_id } => encode_tun_close_request(out, *tun_id),
        }
    }
}

impl NodePacket {
    /// Appends the packet's wire bytes to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        self.encode_with(out, |out, payload| out.put_slice(payload));
    }

    /// Appends the packet's wire bytes to `out`, except the bytes of its payload field
    /// (message, request, reply, event or chunk), which go to `payload` at their place:
    /// the node shares large payloads between recipients instead of copying them.
    pub fn encode_with(&self, out: &mut BytesMut, mut payload: impl FnMut(&mut BytesMut, &Bytes)) {
        let mut put_payload = |out: &mut BytesMut, data: &Bytes| {
            put_varint(out, data.len() as u64);
            payload(out, data);
        };
        match self {
            NodePacket::Init { magic, version } => {
                out.put_u8(op::INIT);
                put_binary(out, magic);
                put_binary(out, version);
            }
            NodePacket::Deny { magic, reason } => {
                out.put_u8(op::DENY);
                put_binary(out, magic);
                put_binary(out, reason.as_bytes());
            }
            NodePacket::Close { reason } => {
                out.put_u8(op::CLOSE);
                put_binary(out, reason.as_bytes());
            }
            NodePacket::Broadcast { message } => {
                out.put_u8(op::BROADCAST);
                put_payload(out, message);
            }
            NodePacket::Request {
                id,
                request,
                timeout_ms,
            } => {
                out.put_u8(op::REQUEST);
                put_varint(out, *id);
                put_payload(out, request);
                put_varint(out, *timeout_ms);
            }
            NodePacket::Reply { id, outcome } => {
                out.put_u8(op::REPLY);
                put_varint(out, *id);
                match outcome {
                    ReplyOutcome::TimedOut => out.put_u8(1),
                    ReplyOutcome::Success(reply) => {
                        out.put_slice(&[0, 1]);
                        put_payload(out, reply);
                    }
                    ReplyOutcome::Fault(fault) => {
                        out.put_slice(&[0, 0]);
                        put_binary(out, fault.as_bytes());
                    }
                }
            }
            NodePacket::Publish { topic, event } => {
                out.put_u8(op::PUBLISH);
                put_binary(out, topic.as_bytes());
                put_payload(out, event);
            }
            tunnel => tunnel.encode_tunnel(out, put_payload),
        }
    }

    /// The tunnel packets (see [`NodePacket::encode_with`]).
    fn encode_tunnel(
        &self,
        out: &mut BytesMut,
        mut put_payload: impl FnMut(&mut BytesMut, &Bytes),
    ) {
        match self {
            NodePacket::TunInit {
                build_id,
                chunk_limit,
            } => {
                out.put_u8(op::TUN_INIT);
                put_varint(out, *build_id);
                put_varint(out, *chunk_limit);
            }
            NodePacket::TunConfirm {
                tun_id,
                chunk_limit,
            } => {
                out.put_u8(op::TUN_CONFIRM);
                put_varint(out, *tun_id);
                match chunk_limit {
                    None => out.put_u8(1),
                    Some(limit) => {
                        out.put_u8(0);
                        put_varint(out, *limit);
                    }
                }
            }
            NodePacket::TunAllow { tun_id, space } => encode_tun_allow(out, *tun_id, *space),
            NodePacket::TunTransfer {
                tun_id,
                size_or_cont,
                payload,
            } => {
                out.put_u8(op::TUN_TRANSFER);
                put_varint(out, *tun_id);
                put_varint(out, *size_or_cont);
                put_payload(out, payload);
            }
            NodePacket::TunClose { tun_id, reason } => {
                out.put_u8(op::TUN_CLOSE);
                put_varint(out, *tun_id);
                put_binary(out, reason.as_bytes());
            }
            _ => unreachable!("encoded by encode_with"),
        }
    }
}

/// Encodes a client BROADCAST without building a [`ClientPacket`] (hot path of the client).
pub fn encode_broadcast(out: &mut BytesMut, cluster: &str, message: &[u8]) {
    out.put_u8(op::BROADCAST);
    put_binary(out, cluster.as_bytes());
    put_binary(out, message);
}

/// Encodes a client REQUEST without building a [`ClientPacket`].
pub fn encode_request(out: &mut BytesMut, id: u64, cluster: &str, request: &[u8], timeout: u64) {
    out.put_u8(op::REQUEST);
    put_varint(out, id);
    put_binary(out, cluster.as_bytes());
    put_binary(out, request);
    put_varint(out, timeout);
}

/// Encodes a client PUBLISH without building a [`ClientPacket`].
pub fn encode_publish_client(out: &mut BytesMut, topic: &str, event: &[u8]) {
    out.put_u8(op::PUBLISH);
    put_binary(out, topic.as_bytes());
    put_binary(out, event);
}

/// Encodes a client REPLY to the node's request `id`: the reply, or a fault text.
pub fn encode_reply(out: &mut BytesMut, id: u64, outcome: Result<&[u8], &str>) {
    out.put_u8(op::REPLY);
    put_varint(out, id);
    match outcome {
        Ok(reply) => {
            out.put_u8(1);
            put_binary(out, reply);
        }
        Err(fault) => {
            out.put_u8(0);
            put_binary(out, fault.as_bytes());
        }
    }
}

/// Encodes a client CLOSE.
pub fn encode_close_request(out: &mut BytesMut) {
    out.put_u8(op::CLOSE);
}

/// Encodes a client SUBSCRIBE.
pub fn encode_subscribe(out: &mut BytesMut, topic: &str) {
    out.put_u8(op::SUBSCRIBE);
    put_binary(out, topic.as_bytes());
}

/// Encodes a client UNSUBSCRIBE.
pub fn encode_unsubscribe(out: &mut BytesMut, topic: &str) {
    out.put_u8(op::UNSUBSCRIBE);
    put_binary(out, topic.as_bytes());
}

/// Encodes a client TUN_INIT.
pub fn encode_tun_init(out: &mut BytesMut, tun_id: u64, cluster: &str, timeout_ms: u64) {
    out.put_u8(op::TUN_INIT);
    put_varint(out, tun_id);
    put_binary(out, cluster.as_bytes());
    put_varint(out, timeout_ms);
}

/// Encodes a client TUN_CONFIRM.
pub fn encode_tun_confirm(out: &mut BytesMut, build_id: u64, tun_id: u64) {
    out.put_u8(op::TUN_CONFIRM);
    put_varint(out, build_id);
    put_varint(out, tun_id);
}

/// Encodes a client TUN_CLOSE (no reason in this direction).
pub fn encode_tun_close_request(out: &mut BytesMut, tun_id: u64) {
    out.put_u8(op::TUN_CLOSE);
    put_varint(out, tun_id);
}

/// Encodes TUN_ALLOW (same layout in both directions).
pub fn encode_tun_allow(out: &mut BytesMut, tun_id: u64, space: u64) {
    out.put_u8(op::TUN_ALLOW);
    put_varint(out, tun_id);
    put_varint(out, space);
}

/// Encodes TUN_TRANSFER (same layout in both directions).
pub fn encode_tun_transfer(out: &mut BytesMut, tun_id: u64, size_or_cont: u64, payload: &[u8]) {
    out.put_u8(op::TUN_TRANSFER);
    put_varint(out, tun_id);
    put_varint(out, size_or_cont);
    put_binary(out, payload);
}

/// Appends `v` as unsigned LEB128.
pub fn put_varint(out: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

/// Bytes `v` takes as LEB128.
pub fn varint_len(v: u64) -> usize {
    (64 - v.max(1).leading_zeros() as usize).div_ceil(7)
}

/// Splits a LEB128 varint off the front of a complete message: the value and the bytes it
/// took (`varint_len(value)` unless the encoding is padded); `None` if it is truncated,
/// longer than [`MAX_VARINT_LEN`] bytes, or overflows 64 bits.
pub fn take_varint(p: &mut &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for i in 0..MAX_VARINT_LEN {
        let b = *p.get(i)?;
        let bits = u64::from(b & 0x7f);
        if i == MAX_VARINT_LEN - 1 && bits > 1 {
            return None;
        }
        value |= bits << (7 * i);
        if b & 0x80 == 0 {
            *p = &p[i + 1..];
            return Some((value, i + 1));
        }
    }
    None
}

/// Appends a length-prefixed byte string.
pub fn put_binary(out: &mut BytesMut, data: &[u8]) {
    put_varint(out, data.len() as u64);
    out.put_slice(data);
}

/// Why parsing stopped.
enum Stop {
    Incomplete,
    Invalid(DecodeError),
}

impl From<DecodeError> for Stop {
    fn from(e: DecodeError) -> Stop {
        Stop::Invalid(e)
    }
}

/// A bounds-checked cursor over the bytes received so far.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    limits: &'a Limits,
    /// Set when a length field's bytes are missing: the position its field ends at. Only the
    /// last such field counts, and fields after it (a REQUEST's timeout) add a few bytes.
    need: Option<usize>,
}

/// Which bound applies to a length-prefixed field.
#[derive(Clone, Copy)]
enum Field {
    Message,
    Name,
    Chunk,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], limits: &'a Limits) -> Reader<'a> {
        Reader {
            buf,
            pos: 0,
            limits,
            need: None,
        }
    }

    fn byte(&mut self) -> Result<u8, Stop> {
        let b = *self.buf.get(self.pos).ok_or(Stop::Incomplete)?;
        self.pos += 1;
        Ok(b)
    }

    fn bool(&mut self) -> Result<bool, Stop> {
        match self.byte()? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(DecodeError::InvalidBool(b).into()),
        }
    }

    fn varint(&mut self) -> Result<u64, Stop> {
        let mut value = 0u64;
        for i in 0..MAX_VARINT_LEN {
            let b = self.byte()?;
            let bits = u64::from(b & 0x7f);
            if i == MAX_VARINT_LEN - 1 && bits > 1 {
                return Err(DecodeError::VarintOverflow.into());
            }
            value |= bits << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::VarintTooLong.into())
    }

    /// A length-prefixed field: checks the bound first, then waits for the bytes.
    fn binary(&mut self, field: Field, name: &'static str) -> Result<Range<usize>, Stop> {
        let len = self.varint()?;
        let max = match field {
            Field::Message => self.limits.max_message_size,
            Field::Name => self.limits.max_name_size,
            Field::Chunk => self.limits.max_chunk_size,
        };
        if len > max {
            return Err(DecodeError::TooLong {
                field: name,
                len,
                max,
            }
            .into());
        }
        // `len <= max` and max comes from the config, so this cannot truncate on 64-bit hosts;
        // on 32-bit ones an absurd max is still rejected here instead of wrapping.
        let len = usize::try_from(len).map_err(|_| DecodeError::TooLong {
            field: name,
            len,
            max,
        })?;
        let start = self.pos;
        if self.buf.len() - start < len {
            self.need = Some(start + len);
            return Err(Stop::Incomplete);
        }
        self.pos += len;
        Ok(start..self.pos)
    }

    fn string(&mut self, field: Field, name: &'static str) -> Result<Range<usize>, Stop> {
        let range = self.binary(field, name)?;
        std::str::from_utf8(&self.buf[range.clone()])
            .map_err(|_| DecodeError::InvalidUtf8(name))?;
        Ok(range)
    }
}

/// A parsed client packet whose byte fields are still ranges into the frame.
enum ClientShape {
    Init(Range<usize>, Range<usize>, Range<usize>),
    Close,
    Broadcast(Range<usize>, Range<usize>),
    Request(u64, Range<usize>, Range<usize>, u64),
    Reply(u64, bool, Range<usize>),
    Subscribe(Range<usize>),
    Unsubscribe(Range<usize>),
    Publish(Range<usize>, Range<usize>),
    TunInit(u64, Range<usize>, u64),
    TunConfirm(u64, u64),
    TunAllow(u64, u64),
    TunTransfer(u64, u64, Range<usize>),
    TunClose(u64),
}

fn parse_client(r: &mut Reader<'_>) -> Result<ClientShape, Stop> {
    use Field::{Chunk, Message, Name as N};
    Ok(match r.byte()? {
        op::INIT => ClientShape::Init(
            r.binary(N, "magic")?,
            r.binary(N, "version")?,
            r.string(N, "cluster")?,
        ),
        op::CLOSE => ClientShape::Close,
        op::BROADCAST => {
            ClientShape::Broadcast(r.string(N, "cluster")?, r.binary(Message, "message")?)
        }
        op::REQUEST => ClientShape::Request(
            r.varint()?,
            r.string(N, "cluster")?,
            r.binary(Message, "request")?,
            r.varint()?,
        ),
        op::REPLY => {
            let id = r.varint()?;
            let success = r.bool()?;
            let body = if success {
                r.binary(Message, "reply")?
            } else {
                r.string(Message, "fault")?
            };
            ClientShape::Reply(id, success, body)
        }
        op::SUBSCRIBE => ClientShape::Subscribe(r.string(N, "topic")?),
        op::UNSUBSCRIBE => ClientShape::Unsubscribe(r.string(N, "topic")?),
        op::PUBLISH => ClientShape::Publish(r.string(N, "topic")?, r.binary(Message, "event")?),
        op::TUN_INIT => ClientShape::TunInit(r.varint()?, r.string(N, "cluster")?, r.varint()?),
        op::TUN_CONFIRM => ClientShape::TunConfirm(r.varint()?, r.varint()?),
        op::TUN_ALLOW => ClientShape::TunAllow(r.varint()?, r.varint()?),
        op::TUN_TRANSFER => {
            ClientShape::TunTransfer(r.varint()?, r.varint()?, r.binary(Chunk, "chunk")?)
        }
        op::TUN_CLOSE => ClientShape::TunClose(r.varint()?),
        other => return Err(DecodeError::UnknownOpcode(other).into()),
    })
}

impl ClientShape {
    fn build(self, f: &Bytes) -> Result<ClientPacket, DecodeError> {
        let name =
            |r: Range<usize>| Name::from_utf8(f.slice(r)).ok_or(DecodeError::InvalidUtf8("name"));
        Ok(match self {
            ClientShape::Init(m, v, c) => ClientPacket::Init {
                magic: f.slice(m),
                version: f.slice(v),
                cluster: name(c)?,
            },
            ClientShape::Close => ClientPacket::Close,
            ClientShape::Broadcast(c, m) => ClientPacket::Broadcast {
                cluster: name(c)?,
                message: f.slice(m),
            },
            ClientShape::Request(id, c, req, timeout_ms) => ClientPacket::Request {
                id,
                cluster: name(c)?,
                request: f.slice(req),
                timeout_ms,
            },
            ClientShape::Reply(id, true, body) => ClientPacket::Reply {
                id,
                outcome: Ok(f.slice(body)),
            },
            ClientShape::Reply(id, false, body) => ClientPacket::Reply {
                id,
                outcome: Err(name(body)?),
            },
            ClientShape::Subscribe(t) => ClientPacket::Subscribe { topic: name(t)? },
            ClientShape::Unsubscribe(t) => ClientPacket::Unsubscribe { topic: name(t)? },
            ClientShape::Publish(t, e) => ClientPacket::Publish {
                topic: name(t)?,
                event: f.slice(e),
            },
            ClientShape::TunInit(tun_id, c, timeout_ms) => ClientPacket::TunInit {
                tun_id,
                cluster: name(c)?,
                timeout_ms,
            },
            ClientShape::TunConfirm(build_id, tun_id) => {
                ClientPacket::TunConfirm { build_id, tun_id }
            }
            ClientShape::TunAllow(tun_id, space) => ClientPacket::TunAllow { tun_id, space },
            ClientShape::TunTransfer(tun_id, size_or_cont, p) => ClientPacket::TunTransfer {
                tun_id,
                size_or_cont,
                payload: f.slice(p),
            },
            ClientShape::TunClose(tun_id) => ClientPacket::TunClose { tun_id },
        })
    }
}

/// A parsed node packet whose byte fields are still ranges into the frame.
enum NodeShape {
    Init(Range<usize>, Range<usize>),
    Deny(Range<usize>, Range<usize>),
    Close(Range<usize>),
    Broadcast(Range<usize>),
    Request(u64, Range<usize>, u64),
    Reply(u64, Option<(bool, Range<usize>)>),
    Publish(Range<usize>, Range<usize>),
    TunInit(u64, u64),
    TunConfirm(u64, Option<u64>),
    TunAllow(u64, u64),
    TunTransfer(u64, u64, Range<usize>),
    TunClose(u64, Range<usize>),
}

fn parse_node(r: &mut Reader<'_>) -> Result<NodeShape, Stop> {
    use Field::{Chunk, Message, Name as N};
    Ok(match r.byte()? {
        op::INIT => NodeShape::Init(r.binary(N, "magic")?, r.binary(N, "version")?),
        op::DENY => NodeShape::Deny(r.binary(N, "magic")?, r.string(Message, "reason")?),
        op::CLOSE => NodeShape::Close(r.string(Message, "reason")?),
        op::BROADCAST => NodeShape::Broadcast(r.binary(Message, "message")?),
        op::REQUEST => NodeShape::Request(r.varint()?, r.binary(Message, "request")?, r.varint()?),
        op::REPLY => {
            let id = r.varint()?;
            if r.bool()? {
                NodeShape::Reply(id, None)
            } else if r.bool()? {
                NodeShape::Reply(id, Some((true, r.binary(Message, "reply")?)))
            } else {
                NodeShape::Reply(id, Some((false, r.string(Message, "fault")?)))
            }
        }
        op::PUBLISH => NodeShape::Publish(r.string(N, "topic")?, r.binary(Message, "event")?),
        op::TUN_INIT => NodeShape::TunInit(r.varint()?, r.varint()?),
        op::TUN_CONFIRM => {
            let tun_id = r.varint()?;
            if r.bool()? {
                NodeShape::TunConfirm(tun_id, None)
            } else {
                NodeShape::TunConfirm(tun_id, Some(r.varint()?))
            }
        }
        op::TUN_ALLOW => NodeShape::TunAllow(r.varint()?, r.varint()?),
        op::TUN_TRANSFER => {
            NodeShape::TunTransfer(r.varint()?, r.varint()?, r.binary(Chunk, "chunk")?)
        }
        op::TUN_CLOSE => NodeShape::TunClose(r.varint()?, r.string(Message, "reason")?),
        other => return Err(DecodeError::UnknownOpcode(other).into()),
    })
}

impl NodeShape {
    fn build(self, f: &Bytes) -> Result<NodePacket, DecodeError> {
        let name =
            |r: Range<usize>| Name::from_utf8(f.slice(r)).ok_or(DecodeError::InvalidUtf8("name"));
        Ok(match self {
            NodeShape::Init(m, v) => NodePacket::Init {
                magic: f.slice(m),
                version: f.slice(v),
            },
            NodeShape::Deny(m, reason) => NodePacket::Deny {
                magic: f.slice(m),
                reason: name(reason)?,
            },
            NodeShape::Close(reason) => NodePacket::Close {
                reason: name(reason)?,
            },
            NodeShape::Broadcast(m) => NodePacket::Broadcast {
                message: f.slice(m),
            },
            NodeShape::Request(id, req, timeout_ms) => NodePacket::Request {
                id,
                request: f.slice(req),
                timeout_ms,
            },
            NodeShape::Reply(id, None) => NodePacket::Reply {
                id,
                outcome: ReplyOutcome::TimedOut,
            },
            NodeShape::Reply(id, Some((true, body))) => NodePacket::Reply {
                id,
                outcome: ReplyOutcome::Success(f.slice(body)),
            },
            NodeShape::Reply(id, Some((false, body))) => NodePacket::Reply {
                id,
                outcome: ReplyOutcome::Fault(name(body)?),
            },
            NodeShape::Publish(t, e) => NodePacket::Publish {
                topic: name(t)?,
                event: f.slice(e),
            },
            NodeShape::TunInit(build_id, chunk_limit) => NodePacket::TunInit {
                build_id,
                chunk_limit,
            },
            NodeShape::TunConfirm(tun_id, chunk_limit) => NodePacket::TunConfirm {
                tun_id,
                chunk_limit,
            },
            NodeShape::TunAllow(tun_id, space) => NodePacket::TunAllow { tun_id, space },
            NodeShape::TunTransfer(tun_id, size_or_cont, p) => NodePacket::TunTransfer {
                tun_id,
                size_or_cont,
                payload: f.slice(p),
            },
            NodeShape::TunClose(tun_id, reason) => NodePacket::TunClose {
                tun_id,
                reason: name(reason)?,
            },
        })
    }
}

#[cfg(test)]
mod tests;
