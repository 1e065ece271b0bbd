//! Arbitrary bytes as overlay frames: no panic, lengths add up, re-encoding is exact.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| iris_proto::fuzzing::overlay_decode(data));
