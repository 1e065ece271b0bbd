//! Every decodable packet encodes back to bytes that decode to the same packet.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| iris_proto::fuzzing::round_trip(data));
