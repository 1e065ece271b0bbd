//! Entry points shared by the fuzz targets and by the corpus replay test, so that the stable
//! test suite runs exactly what the fuzzers run.

mod clients;
mod node_inputs;
mod node_peers;
mod node_wire;
mod peer;
mod reader;

#[cfg(test)]
mod corpus;
#[cfg(test)]
mod seeds;

pub use node_inputs::node_inputs;
pub use node_peers::node_peers;
pub use node_wire::node_wire;

use crate::relay::codec::{Limits, decode_client, decode_node};
use bytes::BytesMut;

/// Limits small enough that fuzzers reach the length checks quickly.
pub fn fuzz_limits() -> Limits {
    Limits {
        max_message_size: 1 << 16,
        max_name_size: 1 << 10,
        max_chunk_size: 1 << 12,
    }
}

/// A decoder of one direction.
type Decode<P> = fn(&mut BytesMut, &Limits) -> Result<Option<P>, crate::relay::DecodeError>;

/// Decodes `data` as a stream of packets in both directions. Panics only if the decoder
/// breaks its contract: consumed bytes plus what is left must equal the input.
pub fn decode_stream(data: &[u8]) {
    check_stream(data, decode_client);
    check_stream(data, decode_node);
}

fn check_stream<P>(data: &[u8], decode: Decode<P>) {
    let limits = fuzz_limits();
    let mut buf = BytesMut::from(data);
    let mut consumed = 0;
    loop {
        let before = buf.len();
        match decode(&mut buf, &limits) {
            Ok(Some(_)) => {
                assert!(buf.len() < before, "a packet consumed nothing");
                consumed += before - buf.len();
            }
            Ok(None) | Err(_) => {
                assert_eq!(buf.len(), before, "a failed decode consumed bytes");
                break;
            }
        }
    }
    assert_eq!(consumed + buf.len(), data.len());
}

/// Every packet decoded from `data` (either direction) encodes to bytes that decode to the
/// same packet, with nothing left over.
pub fn round_trip(data: &[u8]) {
    check_round_trip(data, decode_client, crate::relay::ClientPacket::encode);
    check_round_trip(data, decode_node, crate::relay::NodePacket::encode);
}

fn check_round_trip<P: PartialEq + std::fmt::Debug>(
    data: &[u8],
    decode: Decode<P>,
    encode: fn(&P, &mut BytesMut),
) {
    let limits = fuzz_limits();
    let mut buf = BytesMut::from(data);
    while let Ok(Some(p)) = decode(&mut buf, &limits) {
        let mut wire = BytesMut::new();
        encode(&p, &mut wire);
        let again = decode(&mut wire, &limits);
        assert_eq!(again, Ok(Some(p)));
        assert!(wire.is_empty());
    }
}

/// Arbitrary bytes as one message between nodes (IDENT or overlay maintenance, as a link
/// delivers them): no panic, no allocation beyond what the bytes hold, and every decoded
/// message encodes back to exactly the same bytes.
pub fn overlay_decode(data: &[u8]) {
    use crate::mesh::wire::{decode, encode, size};
    if let Ok(msg) = decode(data) {
        let again = encode(&msg);
        assert_eq!(&again[..], data, "re-encoding changed the bytes");
        assert_eq!(again.len(), size(&msg));
    }
}

#[cfg(any(test, fuzzing))]
pub use links::{link_handshake, link_records};

#[cfg(any(test, fuzzing))]
mod links {
    use crate::link::record::{RekeyLimits, Sealer};
    use crate::link::{Link, LinkConfig, LinkEvent, LinkInput, NetworkKey, Role};
    use crate::time::Instant;
    use bytes::BytesMut;
    use std::sync::{Arc, OnceLock};

    fn key() -> Arc<NetworkKey> {
        static KEY: OnceLock<Arc<NetworkKey>> = OnceLock::new();
        KEY.get_or_init(|| {
            let pem = include_bytes!("../../tests/fixtures/net-pkcs8.pem");
            Arc::new(NetworkKey::from_bytes(pem).expect("fixture key"))
        })
        .clone()
    }

    fn cfg() -> LinkConfig {
        LinkConfig {
            network: "fuzz".into(),
            max_record: 4096,
            max_message: 1 << 16,
            ..LinkConfig::default()
        }
    }

    /// Arbitrary bytes as a peer's handshake messages to a responder: never a panic, and the
    /// link never opens (nobody without the key can sign).
    pub fn link_handshake(data: &[u8]) {
        let mut link = Link::new(Role::Responder, key(), cfg(), [0; 32], Instant::ZERO);
        let _ = link.poll_transmit();
        link.handle(Instant::ZERO, LinkInput::Bytes(data));
        while let Some(e) = link.poll_output() {
            assert_ne!(
                e,
                LinkEvent::Established,
                "opened without a valid signature"
            );
        }
        assert!(!link.is_open());
        let _ = link.poll_transmit();
        link.handle(Instant::ZERO, LinkInput::Eof);
    }

    /// Arbitrary plaintexts sealed as records (the first byte of each piece gives the next
    /// piece's length) and fed to an open link, then the raw bytes as frames to another:
    /// never a panic, and every reassembled message within bounds.
    pub fn link_records(data: &[u8]) {
        let (send, recv) = ([1; 32], [2; 32]);
        let mut link = Link::open_with_keys(key(), cfg(), send, recv);
        let mut sealer = Sealer::new(
            recv,
            RekeyLimits {
                records: 4,
                bytes: 1 << 20,
            },
        );
        let mut rest = data;
        while let Some((&len, tail)) = rest.split_first() {
            let (piece, tail) = tail.split_at(usize::from(len).min(tail.len()));
            let mut rec = BytesMut::from(&[0u8; crate::link::frame::HEADER_LEN][..]);
            rec.extend_from_slice(piece);
            sealer.seal(&mut rec, 0);
            link.handle(Instant::ZERO, LinkInput::Bytes(&rec));
            rest = tail;
        }
        while let Some(e) = link.poll_output() {
            if let LinkEvent::Data(m) | LinkEvent::Control(m) = e {
                assert!(m.len() <= 1 << 16);
            }
        }
        let mut raw = Link::open_with_keys(key(), cfg(), send, recv);
        raw.handle(Instant::ZERO, LinkInput::Bytes(data));
        while raw.poll_output().is_some() {}
    }
}
