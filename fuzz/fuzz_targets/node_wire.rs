//! Arbitrary bytes as one node message (trees, casts, anycasts, replies, tunnels): no
//! panic, decode-encode-decode equality; and messages of every kind built from the bytes
//! survive the wire.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| iris_proto::fuzzing::node_wire(data));
