//! The committed corpus of every fuzz target (`fuzz/corpus/<target>/`), replayed through the
//! same harness the target runs, so that `cargo test` checks every input the fuzzers found
//! interesting (crash reproducers among them) without a fuzzing toolchain.

use std::path::{Path, PathBuf};

/// A fuzz target: its name, its harness, and the fewest corpus files it must have.
type Target = (&'static str, fn(&[u8]), usize);

/// Every fuzz target.
const TARGETS: &[Target] = &[
    ("relay_decode", super::decode_stream, 20),
    ("relay_roundtrip", super::round_trip, 20),
    ("link_handshake", super::link_handshake, 5),
    ("link_records", super::link_records, 5),
    ("overlay_decode", super::overlay_decode, 5),
    ("node_inputs", super::node_inputs, 5),
    ("node_wire", super::node_wire, 100),
    ("node_peers", super::node_peers, 500),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Replays the committed corpus of one fuzz target; returns how many inputs it held.
fn replay(target: &str) -> usize {
    let &(_, check, min) = TARGETS
        .iter()
        .find(|t| t.0 == target)
        .unwrap_or_else(|| panic!("no harness for {target}"));
    let dir = fuzz_dir().join("corpus").join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(outcome.is_ok(), "corpus input {} fails", path.display());
        n += 1;
    }
    assert!(
        n >= min,
        "{target}: {n} corpus inputs, expected {min} at least"
    );
    n
}

/// Every target in `fuzz/fuzz_targets` has a harness here, and every corpus directory a
/// target: none is left out of the replay.
#[test]
fn every_target_is_replayed() {
    let names = |dir: &str, strip: &str| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(fuzz_dir().join(dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().replace(strip, ""))
            .collect();
        v.sort();
        v
    };
    let mut known: Vec<String> = TARGETS.iter().map(|t| t.0.to_string()).collect();
    known.sort();
    assert_eq!(names("fuzz_targets", ".rs"), known);
    assert_eq!(names("corpus", ""), known);
}

#[test]
fn relay_decode_corpus() {
    replay("relay_decode");
}

#[test]
fn relay_roundtrip_corpus() {
    replay("relay_roundtrip");
}

#[test]
fn link_handshake_corpus() {
    replay("link_handshake");
}

#[test]
fn link_records_corpus() {
    replay("link_records");
}

#[test]
fn overlay_decode_corpus() {
    replay("overlay_decode");
    // The hand-made seeds are valid messages, so the fuzzer starts from the real format.
    let dir = fuzz_dir().join("corpus/overlay_decode");
    let mut seeds = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("peer-")
        {
            let data = std::fs::read(&path).unwrap();
            let decoded = crate::mesh::wire::decode(&data);
            assert!(decoded.is_ok(), "{}: {decoded:?}", path.display());
            seeds += 1;
        }
    }
    assert!(seeds >= 8);
}

#[test]
fn node_inputs_corpus() {
    replay("node_inputs");
}

#[test]
fn node_inputs_survive_random_sequences() {
    // Beyond the corpus: a few thousand pseudo-random inputs every run.
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(11);
    for len in (0..3000).map(|i| 16 + i % 600) {
        let mut data = vec![0u8; len];
        rng.fill_bytes(&mut data);
        super::node_inputs(&data);
    }
}

#[test]
fn node_wire_corpus() {
    replay("node_wire");
}

#[test]
fn node_peers_corpus() {
    replay("node_peers");
}

#[test]
fn node_peers_survive_random_sequences() {
    // Beyond the corpus: pseudo-random inputs, plain and sealed, every run.
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(12);
    for len in (0..300).map(|i| 16 + i % 400) {
        let mut data = vec![0u8; len];
        rng.fill_bytes(&mut data);
        super::node_peers(&data);
    }
}
