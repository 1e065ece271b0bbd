//! The relay session's handshake and decoding, without IO: the INIT packet, and the node's
//! bytes decoded into packets with the handshake rules applied. The [`super::ClientMachine`]
//! is built on it; code that speaks the protocol by hand (the node's tests, the simulator's
//! clients, benchmarks) uses it alone.

use crate::relay::codec::{CLIENT_MAGIC, Limits, PROTOCOL_VERSION, RELAY_MAGIC, decode_node};
use crate::relay::{ClientPacket, DecodeError, NodePacket};
use bytes::{Bytes, BytesMut};
use thiserror::Error;

/// Why a session with the node cannot go on.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SessionError {
    /// The node refused the handshake.
    #[error("node denied the connection: {0}")]
    Denied(String),
    /// The node's bytes broke the protocol.
    #[error("protocol violation by the node: {0}")]
    Protocol(#[from] DecodeError),
    /// The node answered the handshake with something else, or a wrong magic.
    #[error("unexpected handshake answer: {0}")]
    Handshake(&'static str),
}

/// What the session yields once bytes have been fed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// The node accepted the handshake.
    Accepted,
    /// A packet after the handshake.
    Packet(NodePacket),
}

/// The client's side of one relay connection.
#[derive(Debug)]
pub struct ClientSession {
    limits: Limits,
    rbuf: BytesMut,
    accepted: bool,
}

impl ClientSession {
    /// A session about to hand-shake; `limits` bound what the node may send.
    pub fn new(limits: Limits) -> ClientSession {
        ClientSession {
            limits,
            rbuf: BytesMut::new(),
            accepted: false,
        }
    }

    /// Appends the INIT packet for `cluster` ("" for a plain client) to `out`.
    pub fn encode_init(cluster: &str, out: &mut BytesMut) {
        ClientPacket::Init {
            magic: Bytes::from_static(CLIENT_MAGIC.as_bytes()),
            version: Bytes::from_static(PROTOCOL_VERSION.as_bytes()),
            cluster: cluster.into(),
        }
        .encode(out);
    }

    /// The buffer the driver reads into (or [`ClientSession::feed`] appends to).
    pub fn read_buf(&mut self) -> &mut BytesMut {
        &mut self.rbuf
    }

    /// Appends bytes received from the node.
    pub fn feed(&mut self, data: &[u8]) {
        self.rbuf.extend_from_slice(data);
    }

    /// True once the node accepted the handshake.
    pub fn is_accepted(&self) -> bool {
        self.accepted
    }

    /// The next event decodable from the bytes fed so far.
    pub fn poll(&mut self) -> Result<Option<SessionEvent>, SessionError> {
        let Some(packet) = decode_node(&mut self.rbuf, &self.limits)? else {
            return Ok(None);
        };
        if self.accepted {
            return match packet {
                NodePacket::Init { .. } | NodePacket::Deny { .. } => Err(SessionError::Handshake(
                    "handshake packet after the handshake",
                )),
                p => Ok(Some(SessionEvent::Packet(p))),
            };
        }
        match packet {
            NodePacket::Init { magic, version } => {
                if magic != RELAY_MAGIC.as_bytes() {
                    return Err(SessionError::Handshake("wrong relay magic"));
                }
                if version != PROTOCOL_VERSION.as_bytes() {
                    return Err(SessionError::Handshake(
                        "node speaks another protocol version",
                    ));
                }
                self.accepted = true;
                Ok(Some(SessionEvent::Accepted))
            }
            NodePacket::Deny { reason, .. } => Err(SessionError::Denied(reason.to_string())),
            _ => Err(SessionError::Handshake(
                "packet before the handshake answer",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_accept_and_deny() {
        let mut s = ClientSession::new(Limits::default());
        let mut b = BytesMut::new();
        NodePacket::Init {
            magic: Bytes::from_static(RELAY_MAGIC.as_bytes()),
            version: Bytes::from_static(PROTOCOL_VERSION.as_bytes()),
        }
        .encode(&mut b);
        s.feed(&b);
        assert_eq!(s.poll(), Ok(Some(SessionEvent::Accepted)));
        assert!(s.is_accepted());

        let mut s = ClientSession::new(Limits::default());
        let mut b = BytesMut::new();
        NodePacket::Deny {
            magic: Bytes::from_static(RELAY_MAGIC.as_bytes()),
            reason: "nope".into(),
        }
        .encode(&mut b);
        s.feed(&b);
        assert_eq!(s.poll(), Err(SessionError::Denied("nope".into())));
    }
}
