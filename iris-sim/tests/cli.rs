//! The `iris-sim` command: JSON summary last, determinism check, failure replay line.

use std::process::Command;

fn sim(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_iris-sim"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn a_clean_run_ends_with_a_json_summary_and_passes_the_determinism_check() {
    let (code, out) = sim(&[
        "--nodes",
        "30",
        "--minutes",
        "1",
        "--churn",
        "0.1",
        "--seed",
        "9",
        "--check-determinism",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("deterministic: both runs hashed"), "{out}");
    let last = out.lines().last().unwrap();
    assert!(last.starts_with('{') && last.ends_with('}'), "{last}");
    for field in [
        "\"nodes\":",
        "\"virtual_secs\":",
        "\"events\":",
        "\"wall_secs\":",
        "\"events_per_sec\":",
        "\"mean_hops\":",
        "\"p99_hops\":",
        "\"convergence_secs\":",
        "\"maintenance_bytes_per_node_per_sec\":",
        "\"violations\":0",
    ] {
        assert!(last.contains(field), "{field} missing from {last}");
    }
}

#[test]
fn a_failing_run_exits_non_zero_and_prints_how_to_replay_it() {
    let (code, out) = sim(&[
        "--nodes",
        "40",
        "--minutes",
        "2",
        "--churn",
        "0.3",
        "--seed",
        "5",
        "--no-repair",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("replay with: cargo run --release -p iris-sim -- --nodes 40 --minutes 2 --churn 0.3 --seed 5 --no-repair"),
        "{out}"
    );
}

#[test]
fn a_swarm_prints_its_first_seed_and_each_run_and_replays_from_it() {
    let args = [
        "--swarm",
        "--budget",
        "0.1",
        "--max-nodes",
        "12",
        "--swarm-from",
        "42",
    ];
    let (code, out) = sim(&args);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("swarm: first seed 42,"), "{out}");
    assert!(out.contains("swarm seed 42: "), "{out}");
    assert!(out.contains("runs passed"), "{out}");
    // The same first seed draws the same runs.
    let again = sim(&args).1;
    let line = |o: &str| o.lines().nth(1).map(str::to_owned);
    assert_eq!(line(&out), line(&again));
}

#[test]
fn a_partition_can_be_asked_for_and_a_malformed_one_is_refused_clearly() {
    let (code, out) = sim(&[
        "--nodes",
        "20",
        "--minutes",
        "1",
        "--churn",
        "0",
        "--workload",
        "messaging",
        "--partition",
        "0.3:10:15",
    ]);
    assert_eq!(code, 0, "{out}");
    let last = out.lines().last().unwrap();
    assert!(last.contains("\"stable_losses\":0"), "{last}");
    for (bad, says) in [
        ("1.5:10:15", "between 0 and 1"),
        ("0.3:ten:15", "start \"ten\""),
        ("0.3:10", "FRACTION:START:SECS"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_iris-sim"))
            .args(["--partition", bad])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {err}");
        assert!(err.contains(says), "{bad}: {err}");
    }
}
