//! The link handshake: ephemeral X25519 on both sides, each side signing the transcript
//! (both ephemeral keys, the network name, the protocol version, its own role) with the
//! network key, and session keys from HKDF-SHA256.
//!
//! Both sides send HELLO at once. The initiator, on the responder's HELLO, sends AUTH (its
//! signature); the responder signs only once that AUTH verifies, then sends its own; on it
//! the initiator's link is up. Two messages each way, one RSA signature per side.
//!
//! **Why the responder waits** (version 2; version 1 had both sides sign on HELLO): a
//! signature is a private-key operation of 1-4.5 ms on the node's thread, and anyone who
//! can reach the peer port could ask for one with 69 bytes. Now a stranger (garbage, a
//! wrong key, or a first flight replayed from a genuine member, whose signature covers
//! another responder ephemeral) costs the responder one X25519 key and one public-key
//! verification before the link closes, and never a signature.

use super::key::NetworkKey;
use bytes::{BufMut, BytesMut};
use rand::Rng;
use rand::rngs::ChaCha8Rng;
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};

/// Bytes of a HELLO payload.
pub const HELLO_LEN: usize = 2 + 1 + 32 + 32;
/// Largest AUTH payload accepted (an RSA-8192 signature).
pub const MAX_AUTH_LEN: usize = 1024;

/// Which end of a link this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The end that dialed.
    Initiator = 0,
    /// The end that accepted.
    Responder = 1,
}

/// A decoded HELLO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The sender's handshake protocol version.
    pub version: u16,
    /// The sender's role.
    pub role: Role,
    /// SHA-256 of the sender's network name.
    pub network: [u8; 32],
    /// The sender's ephemeral X25519 public key.
    pub ephemeral: [u8; 32],
}

impl Hello {
    /// Appends the payload bytes.
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u16(self.version);
        out.put_u8(self.role as u8);
        out.put_slice(&self.network);
        out.put_slice(&self.ephemeral);
    }

    /// Parses a payload; `None` if malformed.
    pub fn decode(p: &[u8]) -> Option<Hello> {
        if p.len() != HELLO_LEN {
            return None;
        }
        let role = match p[2] {
            0 => Role::Initiator,
            1 => Role::Responder,
            _ => return None,
        };
        Some(Hello {
            version: u16::from_be_bytes([p[0], p[1]]),
            role,
            network: p[3..35].try_into().ok()?,
            ephemeral: p[35..67].try_into().ok()?,
        })
    }
}

/// SHA-256 of a network name, as HELLO carries it.
pub fn network_hash(name: &str) -> [u8; 32] {
    Sha256::digest(name.as_bytes()).into()
}

/// One side's handshake state.
pub(crate) struct Handshake {
    pub(crate) role: Role,
    secret: StaticSecret,
    pub(crate) hello: Hello,
    transcript: Option<[u8; 32]>,
    peer_ephemeral: Option<[u8; 32]>,
}

impl std::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handshake")
            .field("role", &self.role)
            .field("hello", &self.hello)
            .finish_non_exhaustive()
    }
}

/// Why a handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The peer speaks another version.
    #[error("peer speaks link protocol {theirs}, this node {ours}")]
    Version {
        /// Ours.
        ours: u16,
        /// Theirs.
        theirs: u16,
    },
    /// The peer belongs to another network.
    #[error("peer belongs to another network")]
    Network,
    /// Both ends claim the same role.
    #[error("peer claims the same role")]
    Role,
    /// The peer's signature does not verify: it does not hold the network key.
    #[error("peer's signature does not verify: wrong network key")]
    Signature,
    /// The peer closed the connection before the handshake finished (it may have refused us).
    #[error(
        "peer closed the connection during the handshake (it may hold another network key or name)"
    )]
    PeerClosed,
    /// A handshake message that does not parse, or comes out of order.
    #[error("malformed handshake: {0}")]
    Malformed(&'static str),
}

impl Handshake {
    pub(crate) fn new(role: Role, version: u16, network: &str, rng: &mut ChaCha8Rng) -> Handshake {
        let mut bytes = [0u8; 32];
        rng.fill_bytes(&mut bytes);
        let secret = StaticSecret::from(bytes);
        let ephemeral = PublicKey::from(&secret).to_bytes();
        Handshake {
            role,
            secret,
            hello: Hello {
                version,
                role,
                network: network_hash(network),
                ephemeral,
            },
            transcript: None,
            peer_ephemeral: None,
        }
    }

    /// Takes the peer's HELLO; returns our AUTH payload (the signature) if it is ours to
    /// send now: the initiator's. The responder signs in [`Handshake::on_auth`].
    pub(crate) fn on_hello(
        &mut self,
        peer: &Hello,
        key: &NetworkKey,
        rng: &mut ChaCha8Rng,
    ) -> Result<Option<Vec<u8>>, HandshakeError> {
        if self.transcript.is_some() {
            return Err(HandshakeError::Malformed("second HELLO"));
        }
        if peer.version != self.hello.version {
            return Err(HandshakeError::Version {
                ours: self.hello.version,
                theirs: peer.version,
            });
        }
        if peer.network != self.hello.network {
            return Err(HandshakeError::Network);
        }
        if peer.role == self.role {
            return Err(HandshakeError::Role);
        }
        let (i, r) = match self.role {
            Role::Initiator => (&self.hello.ephemeral, &peer.ephemeral),
            Role::Responder => (&peer.ephemeral, &self.hello.ephemeral),
        };
        let mut h = Sha256::new();
        h.update(b"iris-link-v1 transcript");
        h.update(self.hello.version.to_be_bytes());
        h.update(self.hello.network);
        h.update(i);
        h.update(r);
        let transcript: [u8; 32] = h.finalize().into();
        self.transcript = Some(transcript);
        self.peer_ephemeral = Some(peer.ephemeral);
        Ok(match self.role {
            Role::Initiator => Some(key.sign(rng, &signed(&transcript, self.role))),
            Role::Responder => None,
        })
    }

    /// Checks the peer's AUTH; returns the session keys (send, receive) and, for the
    /// responder, its own AUTH payload, signed only now that the peer proved it holds the
    /// network key.
    pub(crate) fn on_auth(
        &self,
        signature: &[u8],
        key: &NetworkKey,
        rng: &mut ChaCha8Rng,
    ) -> Result<Keys, HandshakeError> {
        let (Some(transcript), Some(peer_eph)) = (self.transcript, self.peer_ephemeral) else {
            return Err(HandshakeError::Malformed("AUTH before HELLO"));
        };
        let peer_role = match self.role {
            Role::Initiator => Role::Responder,
            Role::Responder => Role::Initiator,
        };
        if !key.verify(&signed(&transcript, peer_role), signature) {
            return Err(HandshakeError::Signature);
        }
        let shared = self.secret.diffie_hellman(&PublicKey::from(peer_eph));
        let hk = hkdf::Hkdf::<Sha256>::new(Some(&transcript), shared.as_bytes());
        let mut i2r = [0u8; 32];
        let mut r2i = [0u8; 32];
        hk.expand(b"iris-link initiator to responder", &mut i2r)
            .expect("valid HKDF length");
        hk.expand(b"iris-link responder to initiator", &mut r2i)
            .expect("valid HKDF length");
        Ok(match self.role {
            Role::Initiator => Keys {
                send: i2r,
                recv: r2i,
                auth: None,
            },
            Role::Responder => Keys {
                send: r2i,
                recv: i2r,
                auth: Some(key.sign(rng, &signed(&transcript, self.role))),
            },
        })
    }
}

/// What a verified AUTH yields.
pub(crate) struct Keys {
    /// Key of what this side seals.
    pub(crate) send: [u8; 32],
    /// Key of what this side opens.
    pub(crate) recv: [u8; 32],
    /// The responder's own AUTH payload, to send before any record.
    pub(crate) auth: Option<Vec<u8>>,
}

/// What a side signs: the transcript and its own role, so a signature cannot be reflected.
fn signed(transcript: &[u8; 32], role: Role) -> [u8; 33] {
    let mut m = [0u8; 33];
    m[..32].copy_from_slice(transcript);
    m[32] = role as u8;
    m
}
