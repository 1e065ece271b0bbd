//! A networked node fed by linked peers (plain and sealed links, real handshakes, node and
//! overlay messages, garbage) and by its clients: no panic, every frame it sends its peers
//! parses, nothing sent on a closed link, client promises kept, all released at shutdown.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| iris_proto::fuzzing::node_peers(data));
