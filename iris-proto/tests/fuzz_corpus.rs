//! Replays the committed fuzz corpus on stable, through the very functions the fuzz targets
//! call, so that CI checks every input the fuzzers kept without a nightly toolchain.

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(outcome.is_ok(), "corpus input {} fails", path.display());
        n += 1;
    }
    n
}

#[test]
fn relay_decode_corpus() {
    let n = replay("relay_decode", iris_proto::fuzzing::decode_stream);
    assert!(n >= 20, "corpus unexpectedly small: {n}");
}

#[test]
fn relay_roundtrip_corpus() {
    let n = replay("relay_roundtrip", iris_proto::fuzzing::round_trip);
    assert!(n >= 20, "corpus unexpectedly small: {n}");
}
