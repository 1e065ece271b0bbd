//! Arbitrary bytes as handshake messages: no panic, and no link opens without the key.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| iris_proto::fuzzing::link_handshake(data));
