//! Arbitrary bytes as one message between nodes: no panic, re-encoding gives the same bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| iris_proto::fuzzing::overlay_decode(data));
