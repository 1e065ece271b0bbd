//! The link handshake: ephemeral X25519 on both sides, each side signing the transcript
//! (both ephemeral keys, the network name, the protocol version, its own role) with the
//! network key, and session keys from HKDF-SHA256.
//!
//! Both sides send HELLO at once. The initiator, on the responder's HELLO, sends AUTH (its
//! signature); the responder signs only once that AUTH verifies, then sends its own; on it
//! the initiator's link is up. Two messages each way, one RSA signature per side.
//!
//! **Key rotation** (version 3): a node may hold a previous key beside its current one.
//! HELLO lists the ids ([`KeyId`]) of the keys a node accepts; the initiator signs with its
//! current key if the responder accepts it, else with its previous one, and AUTH names the
//! key it was made with; the responder verifies with that key and signs with it too. So a
//! node moved to key B that still holds A links with nodes on A alone, on A and B, and on B
//! alone, and a network rolls from A to B one node at a time. A peer that holds none of the
//! initiator's keys is refused before anyone signs.
//!
//! **Why the responder waits** (version 2; version 1 had both sides sign on HELLO): a
//! signature is a private-key operation of 1-4.5 ms on the node's thread, and anyone who
//! can reach the peer port could ask for one with 69 bytes. Now a stranger (garbage, a
//! wrong key, or a first flight replayed from a genuine member, whose signature covers
//! another responder ephemeral) costs the responder one X25519 key and one public-key
//! verification before the link closes, and never a signature.

use super::key::{KeyId, NetworkKey};
use bytes::{BufMut, BytesMut};
use rand::Rng;
use rand::rngs::ChaCha8Rng;
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};

/// Bytes of a version 2 HELLO payload, and of a version 3 one before its key ids.
pub(crate) const HELLO_LEN: usize = 2 + 1 + 32 + 32;
/// Most key ids a HELLO may list (a node holds at most two; room to spare).
pub(crate) const MAX_HELLO_KEYS: usize = 4;
/// Largest AUTH payload accepted: a key id and an RSA-8192 signature.
pub(crate) const MAX_AUTH_LEN: usize = 8 + 1024;

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
pub(crate) struct Hello {
    /// The sender's handshake protocol version.
    pub version: u16,
    /// The sender's role.
    pub role: Role,
    /// SHA-256 of the sender's network name.
    pub network: [u8; 32],
    /// The sender's ephemeral X25519 public key.
    pub ephemeral: [u8; 32],
    /// The keys the sender accepts, current first (empty on a plain link, and in a
    /// version 2 HELLO, which has no such field).
    pub keys: Vec<KeyId>,
}

impl Hello {
    /// Appends the payload bytes.
    pub(crate) fn encode(&self, out: &mut BytesMut) {
        out.put_u16(self.version);
        out.put_u8(self.role as u8);
        out.put_slice(&self.network);
        out.put_slice(&self.ephemeral);
        out.put_u8(self.keys.len() as u8);
        for id in &self.keys {
            out.put_slice(id);
        }
    }

    /// Bytes of the payload [`Hello::encode`] writes.
    pub(crate) fn encoded_len(&self) -> usize {
        HELLO_LEN + 1 + 8 * self.keys.len()
    }

    /// Parses a payload; `None` if malformed. A version 2 HELLO (no key ids) parses too,
    /// so that its sender is refused naming both versions rather than as garbage.
    pub(crate) fn decode(p: &[u8]) -> Option<Hello> {
        let keys = match p.len() {
            HELLO_LEN => Vec::new(),
            n if n > HELLO_LEN => {
                let count = usize::from(p[HELLO_LEN]);
                if count > MAX_HELLO_KEYS || n != HELLO_LEN + 1 + 8 * count {
                    return None;
                }
                p[HELLO_LEN + 1..]
                    .chunks_exact(8)
                    .map(|c| c.try_into().expect("8-byte chunks"))
                    .collect()
            }
            _ => return None,
        };
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
            keys,
        })
    }
}

/// SHA-256 of a network name, as HELLO carries it.
pub(crate) fn network_hash(name: &str) -> [u8; 32] {
    Sha256::digest(name.as_bytes()).into()
}

/// The keys a node authenticates links with: its current one, and during a rotation the
/// one before it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Keyring<'a> {
    pub(crate) current: &'a NetworkKey,
    pub(crate) previous: Option<&'a NetworkKey>,
}

impl<'a> Keyring<'a> {
    /// The keys, current first.
    fn iter(&self) -> impl Iterator<Item = &'a NetworkKey> {
        std::iter::once(self.current).chain(self.previous)
    }

    /// Ids of the keys accepted, current first.
    pub(crate) fn ids(&self) -> Vec<KeyId> {
        self.iter().map(NetworkKey::id).collect()
    }

    /// The key with this id, if held.
    pub(crate) fn get(&self, id: &[u8]) -> Option<&'a NetworkKey> {
        self.iter().find(|k| k.id() == id)
    }
}

/// One side's handshake state.
pub(crate) struct Handshake {
    pub(crate) role: Role,
    secret: StaticSecret,
    pub(crate) hello: Hello,
    transcript: Option<[u8; 32]>,
    peer_ephemeral: Option<[u8; 32]>,
    /// The key the initiator signed with, which the responder's AUTH must use too.
    signed_with: Option<KeyId>,
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
    /// The peer accepts none of the keys this node holds (another key, or a rotation that
    /// skipped a step).
    #[error(
        "peer holds none of this node's network keys (during a key rotation, give nodes the old key with --rsa-previous)"
    )]
    NoCommonKey,
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
    pub(crate) fn new(
        role: Role,
        version: u16,
        network: &str,
        keys: Vec<KeyId>,
        rng: &mut ChaCha8Rng,
    ) -> Handshake {
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
                keys,
            },
            transcript: None,
            peer_ephemeral: None,
            signed_with: None,
        }
    }

    /// Takes the peer's HELLO; returns what to sign for our AUTH if it is ours to send now:
    /// the initiator's. The responder's comes from [`Handshake::on_auth`].
    pub(crate) fn on_hello(
        &mut self,
        peer: &Hello,
        keys: Keyring<'_>,
    ) -> Result<Option<ToSign>, HandshakeError> {
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
        // The initiator signs with a key the responder accepts: its current one if it can.
        let key = match self.role {
            Role::Initiator => Some(
                keys.iter()
                    .find(|k| peer.keys.contains(&k.id()))
                    .ok_or(HandshakeError::NoCommonKey)?,
            ),
            Role::Responder => None,
        };
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
        Ok(key.map(|key| {
            self.signed_with = Some(key.id());
            ToSign {
                key: key.id(),
                message: signed(&transcript, self.role),
            }
        }))
    }

    /// Checks the peer's AUTH; returns the session keys (send, receive) and, for the
    /// responder, what to sign for its own AUTH: only now that the peer proved it holds the
    /// network key.
    pub(crate) fn on_auth(
        &self,
        payload: &[u8],
        keys: Keyring<'_>,
    ) -> Result<Keys, HandshakeError> {
        let (Some(transcript), Some(peer_eph)) = (self.transcript, self.peer_ephemeral) else {
            return Err(HandshakeError::Malformed("AUTH before HELLO"));
        };
        let peer_role = match self.role {
            Role::Initiator => Role::Responder,
            Role::Responder => Role::Initiator,
        };
        if payload.len() < 8 {
            return Err(HandshakeError::Malformed("AUTH"));
        }
        let (id, signature) = payload.split_at(8);
        // The responder verifies with the key the initiator names (if it holds it); the
        // initiator expects the key it signed with.
        let key = match (self.role, self.signed_with) {
            (Role::Initiator, Some(ours)) if ours[..] == *id => keys.get(id),
            (Role::Initiator, _) => None,
            (Role::Responder, _) => keys.get(id),
        };
        let Some(key) = key else {
            return Err(HandshakeError::Signature);
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
                auth: Some(ToSign {
                    key: key.id(),
                    message: signed(&transcript, self.role),
                }),
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
    /// What the responder signs for its own AUTH, to send before any record.
    pub(crate) auth: Option<ToSign>,
}

/// A signature a side owes its peer: the message, and the key to sign it with. The link
/// signs it at once, or hands it to its driver ([`crate::link::LinkEvent::Sign`]) so that
/// the private-key operation runs off the node's thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToSign {
    /// Which of the node's keys.
    pub key: KeyId,
    /// What to sign (RSA-PSS, SHA-256).
    pub message: [u8; 33],
}

impl ToSign {
    /// The AUTH payload carrying `signature`.
    pub(crate) fn auth(&self, signature: &[u8]) -> Vec<u8> {
        let mut out = self.key.to_vec();
        out.extend_from_slice(signature);
        out
    }
}

/// What a side signs: the transcript and its own role, so a signature cannot be reflected.
fn signed(transcript: &[u8; 32], role: Role) -> [u8; 33] {
    let mut m = [0u8; 33];
    m[..32].copy_from_slice(transcript);
    m[32] = role as u8;
    m
}
