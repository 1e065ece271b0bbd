//! Entry points shared by the fuzz targets and by the corpus replay test, so that the stable
//! test suite runs exactly what the fuzzers run.

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

/// Decodes `data` as a stream of packets in both directions. Panics only if the decoder
/// breaks its contract: consumed bytes plus what is left must equal the input.
pub fn decode_stream(data: &[u8]) {
    let limits = fuzz_limits();
    let mut buf = BytesMut::from(data);
    let mut consumed = 0;
    loop {
        let before = buf.len();
        match decode_client(&mut buf, &limits) {
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

    let mut buf = BytesMut::from(data);
    let mut consumed = 0;
    loop {
        let before = buf.len();
        match decode_node(&mut buf, &limits) {
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
    let limits = fuzz_limits();
    let mut buf = BytesMut::from(data);
    while let Ok(Some(p)) = decode_client(&mut buf, &limits) {
        let mut wire = BytesMut::new();
        p.encode(&mut wire);
        let again = decode_client(&mut wire, &limits);
        assert_eq!(again, Ok(Some(p)));
        assert!(wire.is_empty());
    }
    let mut buf = BytesMut::from(data);
    while let Ok(Some(p)) = decode_node(&mut buf, &limits) {
        let mut wire = BytesMut::new();
        p.encode(&mut wire);
        let again = decode_node(&mut wire, &limits);
        assert_eq!(again, Ok(Some(p)));
        assert!(wire.is_empty());
    }
}
