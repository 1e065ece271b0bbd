//! Sequences of node inputs (clients, packets with extreme values, garbage, flushes,
//! disconnects, time jumps, shutdown): no panic, one outcome per request, memory released.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| iris_proto::fuzzing::node_inputs(data));
