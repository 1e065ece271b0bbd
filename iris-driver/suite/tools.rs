//! The tools of the `iris` command (`pub`, `sub`, `bcast`, `req`, `serve`, `bench`,
//! `status`), each run as a process against a node process, as people run them.

use super::common;

use common::{IrisProcess, metrics_addr};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

/// Runs `iris ARGS` to its end, `input` on its standard input.
fn iris(args: &[String], input: &str) -> Output {
    let mut child = Command::new(crate::rt::BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start iris");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// `words` and `--port PORT`, as the tools take them.
fn at(port: u16, words: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = words.iter().map(|w| w.to_string()).collect();
    v.extend(["--port".to_string(), port.to_string()]);
    v
}

/// `iris serve CLUSTER --port PORT -- COMMAND...`.
fn serve_with(port: u16, cluster: &str, command: &[&str]) -> Vec<String> {
    let mut v = at(port, &["serve", cluster]);
    v.push("--".into());
    v.extend(command.iter().map(|w| w.to_string()));
    v
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A long-running tool (`sub`, `serve`): its output lines as they come; killed when dropped.
struct Running {
    child: Child,
    out: Receiver<String>,
    err: Receiver<String>,
}

impl Running {
    fn start(args: &[String]) -> Running {
        let mut child = Command::new(crate::rt::BIN)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start iris");
        let lines = |r: Box<dyn std::io::Read + Send>| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(r).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            rx
        };
        let out = lines(Box::new(child.stdout.take().unwrap()));
        let err = lines(Box::new(child.stderr.take().unwrap()));
        Running { child, out, err }
    }

    /// The next line of its standard output, past warm-up probes that came late.
    fn line(&self) -> String {
        loop {
            let line = self
                .out
                .recv_timeout(Duration::from_secs(10))
                .expect("a line from the tool");
            if line != "probe" {
                return line;
            }
        }
    }

    /// Waits for a line of its standard error containing `needle`.
    fn said(&self, needle: &str) -> String {
        loop {
            let line = self
                .err
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("the tool never said {needle:?}"));
            if line.contains(needle) {
                return line;
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn pub_and_sub_carry_events_in_order() {
    let node = IrisProcess::start(&[]);
    let sub = Running::start(&at(node.port, &["sub", "news"]));
    // The subscription is live once a probe comes through.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(
            Instant::now() < deadline,
            "the subscription never went live"
        );
        let out = iris(&at(node.port, &["pub", "news", "probe"]), "");
        assert!(out.status.success(), "{}", text(&out.stderr));
        if sub.out.recv_timeout(Duration::from_millis(200)).is_ok() {
            break;
        }
    }
    while sub.out.recv_timeout(Duration::from_millis(200)).is_ok() {}
    // One event as an argument, then one a line of standard input; a word that looks like
    // a node flag is a message here.
    let out = iris(&at(node.port, &["pub", "news", "-dev"]), "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = iris(&at(node.port, &["pub", "news"]), "first\nsecond\nthird\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    for want in ["-dev", "first", "second", "third"] {
        assert_eq!(sub.line(), want);
    }
    // --count ends a subscriber by itself.
    let mut child = Running::start(&at(node.port, &["sub", "news", "--count", "2"]));
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        assert!(Instant::now() < deadline, "sub --count 2 did not end");
        let _ = iris(&at(node.port, &["pub", "news", "x"]), "");
        if let Some(status) = child.child.try_wait().unwrap() {
            break status;
        }
    };
    assert!(status.success());
    assert_eq!((child.line(), child.line()), ("x".into(), "x".into()));
}

#[test]
fn serve_answers_req_and_prints_bcast() {
    let node = IrisProcess::start(&[]);
    let echo = Running::start(&at(node.port, &["serve", "echo"]));
    echo.said("serving cluster \"echo\"");
    let upper = Running::start(&serve_with(node.port, "upper", &["tr", "a-z", "A-Z"]));
    upper.said("serving cluster \"upper\"");
    let failing = Running::start(&serve_with(
        node.port,
        "failing",
        &["sh", "-c", "echo out of paper >&2; exit 3"],
    ));
    failing.said("serving cluster \"failing\"");

    let out = iris(&at(node.port, &["req", "echo", "ping"]), "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "ping\n");
    // The request from standard input, answered by the command.
    let out = iris(&at(node.port, &["req", "upper"]), "shout this");
    assert_eq!(text(&out.stdout), "SHOUT THIS\n");
    // A failing command is the requester's error, with what it said.
    let out = iris(&at(node.port, &["req", "failing", "x"]), "");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("failed") && err.contains("out of paper"),
        "{err}"
    );
    // Nobody serves this cluster: a clear timeout.
    let out = iris(
        &at(node.port, &["req", "nobody", "x", "--timeout", "300"]),
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no reply from cluster \"nobody\" within 300 ms"));

    let out = iris(&at(node.port, &["bcast", "echo", "to all"]), "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(echo.line(), "to all");
    let out = iris(&at(node.port, &["bcast", "echo"]), "one\ntwo\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!((echo.line(), echo.line()), ("one".into(), "two".into()));
}

#[test]
fn bench_measures_every_operation_and_loses_nothing() {
    let node = IrisProcess::start(&[]);
    let out = iris(
        &at(
            node.port,
            &["bench", "--count", "2000", "--size", "256", "--json"],
        ),
        "",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let results = report["results"].as_array().unwrap();
    let ops: Vec<&str> = results.iter().map(|r| r["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["publish", "broadcast", "request", "tunnel"]);
    for r in results {
        assert_eq!(r["messages"], 2000, "{r}");
        assert_eq!(r["lost"], 0, "{r}");
        assert!(r["msgs_per_sec"].as_f64().unwrap() > 0.0, "{r}");
        let l = &r["latency_us"];
        let (p50, p99, max) = (
            l["p50"].as_f64().unwrap(),
            l["p99"].as_f64().unwrap(),
            l["max"].as_f64().unwrap(),
        );
        assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{r}");
    }
    // The table, for people, with one operation.
    let out = iris(
        &at(node.port, &["bench", "--count", "100", "--ops", "req"]),
        "",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(table.starts_with("operation"), "{table}");
    assert!(table.lines().any(|l| l.starts_with("request")), "{table}");
    assert!(!table.lines().any(|l| l.starts_with("publish")), "{table}");
}

#[test]
fn status_reports_the_node_from_its_metrics_address() {
    let node = IrisProcess::start(&["--metrics", "127.0.0.1:0"]);
    let metrics = metrics_addr(&node);
    let _member = Running::start(&at(node.port, &["serve", "svc"]));
    _member.said("serving");
    let out = iris(
        &["status", "--metrics", &metrics, "--interval", "200"].map(String::from),
        "",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    assert!(
        report.starts_with("node (development node)  ready  converged"),
        "{report}"
    );
    assert!(report.contains("clusters 1"), "{report}");
    assert!(
        report.contains("no peers") && report.contains("drops: none"),
        "{report}"
    );
    let out = iris(
        &["status", "--metrics", &metrics, "--json"].map(String::from),
        "",
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["gauges"]["clusters"], 1);
    assert_eq!(j["ready"], true);
}

#[test]
fn every_tool_says_clearly_when_no_node_listens() {
    // A port nobody listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for words in [
        &["pub", "t", "m"][..],
        &["sub", "t"],
        &["bcast", "c", "m"],
        &["req", "c", "m"],
        &["serve", "c"],
        &["bench", "--count", "10"],
    ] {
        let out = iris(&at(port, words), "");
        assert_eq!(out.status.code(), Some(1), "{words:?}");
        let err = text(&out.stderr);
        assert!(
            err.starts_with(&format!("iris: no Iris node answers on port {port} (")),
            "{words:?}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{words:?}: {err}");
    }
    let out = iris(
        &["status", "--metrics", &format!("127.0.0.1:{port}")].map(String::from),
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(&format!("no metrics endpoint answers at 127.0.0.1:{port}"))
    );
    // A missing argument names it.
    let out = iris(&["pub".to_string()], "");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("<TOPIC>"),
        "{}",
        text(&out.stderr)
    );
}
