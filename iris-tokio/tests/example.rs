//! Runs the Chinese whispers example as a user would and checks what it prints.

use std::process::Command;

#[test]
fn chinese_whispers_loops_back_every_whisper() {
    // `cargo test` builds examples next to the test binaries: target/<profile>/examples.
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let example = dir.join("examples").join("chinese_whispers");
    assert!(
        example.exists(),
        "example not built at {}",
        example.display()
    );
    let out = Command::new(&example)
        .args(["--gophers", "4", "--rounds", "2"])
        .output()
        .expect("run the example");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "example failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let heard: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("gopher #0 hears:"))
        .collect();
    assert_eq!(heard.len(), 2, "{stdout}");
    // Three forwarders each mishear one word on the way round.
    for (round, line) in heard.iter().enumerate() {
        assert!(
            line.ends_with(&format!(
                "gophers bike two dance tunnels deep (whisper {round})"
            )),
            "{line}"
        );
    }
}
