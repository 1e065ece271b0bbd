//! Arbitrary bytes as relay packets in both directions: no panic, consumed lengths add up.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| iris_proto::fuzzing::decode_stream(data));
