//! Runs the Chinese whispers example as a user would and checks what it prints: the whole
//! ring on one in-process node, and each gopher on its own `iris` process.

#![allow(unreachable_pub)]

/// The node binary the example's gophers attach to, for the suite's helpers.
mod rt {
    pub const BIN: &str = env!("CARGO_BIN_EXE_iris");
    pub const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
    /// Network names of this runtime's cases end in it (see `common::apart`).
    pub const NAME: &str = "tokio";
}

#[path = "../../iris-driver/suite/common.rs"]
mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// `cargo test` builds examples next to the test binaries: target/<profile>/examples.
fn example() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let example = dir.join("examples").join("chinese_whispers");
    assert!(
        example.exists(),
        "example not built at {}",
        example.display()
    );
    example
}

/// Checks that gopher #0 heard each of `rounds` whispers back, misheard by the forwarders.
fn assert_heard(stdout: &str, rounds: usize, misheard: &str) {
    let heard: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("gopher #0 hears:"))
        .collect();
    assert_eq!(heard.len(), rounds, "{stdout}");
    for (round, line) in heard.iter().enumerate() {
        assert!(
            line.ends_with(&format!("{misheard} (whisper {round})")),
            "{line}"
        );
    }
}

#[test]
fn each_gopher_on_its_own_node_loops_every_whisper() {
    let nodes = common::network("whisperers", 3, "23401,23402,23403");
    let forwarders: Vec<_> = (1..3)
        .map(|i| {
            Command::new(example())
                .args(["--gophers", "3", "--gopher", &i.to_string()])
                .args(["--port", &nodes[i].port.to_string()])
                .stdout(Stdio::null())
                .spawn()
                .expect("start a forwarder")
        })
        .collect();
    let out = Command::new(example())
        .args(["--gophers", "3", "--gopher", "0", "--rounds", "2"])
        .args(["--port", &nodes[0].port.to_string()])
        .output()
        .expect("run the initiator");
    for mut f in forwarders {
        let _ = f.kill();
        let _ = f.wait();
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "initiator failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Two forwarders each mishear one word on the way round.
    assert_heard(&stdout, 2, "gophers bike two dig tunnels deep");
}

#[test]
fn chinese_whispers_loops_back_every_whisper() {
    let out = Command::new(example())
        .args(["--gophers", "4", "--rounds", "2"])
        .output()
        .expect("run the example");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "example failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Three forwarders each mishear one word on the way round.
    assert_heard(&stdout, 2, "gophers bike two dance tunnels deep");
}
