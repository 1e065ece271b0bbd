//! The `iris` command line: help, and clear errors for bad flags and key files.

use std::process::Command;

fn iris(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_iris"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn fixture(name: &str) -> String {
    format!(
        "{}/../iris-proto/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn help_explains_every_flag() {
    let (code, out, _) = iris(&["--help"]);
    assert_eq!(code, 0);
    for flag in [
        "--dev",
        "--net",
        "--rsa",
        "--port",
        "--log",
        "--max-message-size",
        "--max-clients",
        "--client-backlog-high",
        "--slow-consumer-timeout-ms",
        "--max-client-backlog",
        "--handshake-timeout-ms",
    ] {
        assert!(out.contains(flag), "--help does not mention {flag}:\n{out}");
    }
}

#[test]
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

#[test]
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
}
