//! Arbitrary record plaintexts (sealed with the right key) and raw frames: no panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| iris_proto::fuzzing::link_records(data));
