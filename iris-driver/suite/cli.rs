//! The `iris` command line: help, and clear errors for bad flags and key files.

use super::common;

use common::fixture;
use std::process::Command;

// Flags and key files are read before any runtime starts, by the same `cli::main` whatever
// the binary; what the last cases' networks do on a runtime, `multinode`'s network of its
// binary checks.
runtime_independent!(
    help_explains_every_flag,
    key_file_problems_are_reported_clearly,
    a_bad_previous_key_is_a_clear_error,
    bad_flags_are_refused,
    two_network_nodes_find_each_other_and_open_their_relay_ports,
    a_bad_seed_is_a_clear_error,
);

fn iris(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(crate::rt::BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn help_explains_every_flag() {
    let (code, out, _) = iris(&["--help"]);
    assert_eq!(code, 0);
    for flag in [
        "--dev",
        "--net",
        "--rsa",
        "--rsa-previous",
        "--seed",
        "--peer-bind",
        "--advertise",
        "--port",
        "--log",
        "--max-message-size",
        "--max-clients",
        "--client-backlog-high",
        "--slow-consumer-timeout-ms",
        "--max-client-backlog",
        "--handshake-timeout-ms",
        "--shutdown-drain-ms",
        "--max-memory",
        "--max-handshakes",
        "--discover",
        "--discovery-ports",
        "--metrics",
        "--max-trees",
        "--max-subscriptions",
    ] {
        assert!(out.contains(flag), "--help does not mention {flag}:\n{out}");
    }
    // The tools are listed, each with what it does.
    for tool in ["pub", "sub", "bcast", "req", "serve", "bench", "status"] {
        assert!(
            out.lines()
                .any(|l| l.trim_start().starts_with(&format!("{tool} "))),
            "--help does not list the tool {tool}:\n{out}"
        );
    }
}

fn key_file_problems_are_reported_clearly() {
    let cases = [
        (fixture("missing.pem"), "does not exist"),
        (fixture("net-public.pem"), "public key"),
        (fixture("small-1024.pem"), "too small"),
        (fixture("garbage.txt"), "PKCS#1 or PKCS#8"),
    ];
    for (path, says) in cases {
        let (code, _, err) = iris(&["-net", "prod", "-rsa", &path]);
        assert_eq!(code, 2, "{path}");
        assert!(err.contains(says), "{path}: {err}");
    }
}

fn a_bad_previous_key_is_a_clear_error() {
    let key = fixture("net-pkcs8.pem");
    for (previous, says) in [
        (fixture("missing.pem"), "--rsa-previous: "),
        (key.clone(), "the same key as --rsa"),
    ] {
        let (code, _, err) = iris(&["--net", "prod", "--rsa", &key, "--rsa-previous", &previous]);
        assert_eq!(code, 2, "{previous}");
        assert!(err.contains(says), "{previous}: {err}");
    }
}

fn bad_flags_are_refused() {
    let (code, _, err) = iris(&[]);
    assert_eq!(code, 2);
    assert!(err.contains("--net NAME and --rsa KEY"), "{err}");
    let (code, _, err) = iris(&["--dev", "--port", "70000"]);
    assert_eq!(code, 2);
    assert!(err.contains("70000"), "{err}");
    let (code, _, err) = iris(&["--dev", "--max-message-size", "0"]);
    assert_eq!(code, 2);
    assert!(err.contains("chunk limit"), "{err}");
    // Flags the parser refuses: one line each, naming the problem.
    for (args, says) in [
        (&["--bogus"][..], "--bogus"),
        (
            &["--dev", "--discover", "wide"][..],
            "expected host, lan or none",
        ),
        (&["--dev", "--metrics", "nowhere"][..], "nowhere"),
        (&["--dev", "--max-memory", "lots"][..], "not a size"),
        (&["--dev", "--shutdown-drain-ms", "5000"][..], "0..=2000"),
        (&["--dev", "--max-trees", "0"][..], "at least 1"),
        (&["--dev", "--max-subscriptions", "many"][..], "not a count"),
        // The original's single-dash forms reach the same checks (cli.rs tries every flag).
        (&["-dev", "-shutdown-drain-ms", "5000"][..], "0..=2000"),
        (&["-dev", "-max-memory=lots"][..], "not a size"),
    ] {
        let (code, _, err) = iris(args);
        assert_eq!(code, 2, "{args:?}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("iris: ") && err.contains(says),
            "{args:?}: {err}"
        );
    }
}

fn two_network_nodes_find_each_other_and_open_their_relay_ports() {
    let key = fixture("net-pkcs8.pem");
    // The original's single-dash flags, as its users wrote them.
    // Discovery off: this is about seeds.
    let a =
        common::IrisProcess::start_with(&["-net", "cli test", "-rsa", &key, "-discover", "none"]);
    // The relay port opened after the overlay converged (alone, at first).
    let line = a.wait_line("iris overlay converged with 0 remote connections");
    assert!(
        a.boot_log.contains(&line),
        "converged before the port opened"
    );
    let peer = a.wait_line("peer listener on ");
    let addr = peer
        .split("advertised as ")
        .nth(1)
        .expect("advertised address")
        .trim()
        .to_string();
    assert!(
        addr.starts_with("127.0.0.1:"),
        "loopback by default: {addr}"
    );
    let b = common::IrisProcess::start_with(&[
        "--net",
        "cli test",
        "--rsa",
        &key,
        "--seed",
        &addr,
        "--discover",
        "none",
    ]);
    b.wait_line("converged with 1 remote connections");
    a.wait_line("converged with 1 remote connections");
    // Both serve clients.
    drop(a.connect(""));
    drop(b.connect(""));
}

fn a_bad_seed_is_a_clear_error() {
    let (code, _, err) = iris(&[
        "--net",
        "x",
        "--rsa",
        &fixture("net-pkcs8.pem"),
        "--seed",
        "not an address",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("seed \"not an address\""), "{err}");
}
