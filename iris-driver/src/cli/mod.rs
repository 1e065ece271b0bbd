//! The `iris` command (`iris` on tokio, `iris-smol` on smol): a node (`iris --net ...`,
//! `iris --dev`, the original's command lines), and tools for people at a terminal that
//! talk to a running node: `pub`, `sub`, `bcast`, `req`, `serve`, `bench`, `status`.
//!
//! One concern a file: the node's flags and its run (`node.rs`), the messaging tools
//! (`tools.rs`), the benchmark (`bench.rs`), the status report (`status.rs`).

mod bench;
mod node;
mod status;
mod tools;

use crate::runtime::Runtime;
use clap::{CommandFactory, Parser, Subcommand};
use std::process::ExitCode;

/// Iris node: decentralized messaging for backend services.
///
/// Applications attach to their local node over the relay protocol (TCP on 127.0.0.1 and
/// ::1) and address each other by cluster and topic names. The original's single-dash
/// flags (`iris -dev -port 3333`) work too. The subcommands are tools that talk to a
/// running node (`iris pub events hello`, `iris status`); `iris help SUBCOMMAND` says
/// more of each.
#[derive(Debug, Parser)]
#[command(
    name = "iris",
    version,
    about,
    long_about,
    args_conflicts_with_subcommands = true
)]
struct Args {
    #[command(subcommand)]
    tool: Option<Tool>,

    #[command(flatten)]
    node: node::NodeArgs,
}

/// The tools for people: each talks to a node already running on this machine.
#[derive(Debug, Subcommand)]
enum Tool {
    /// Publish an event to a topic: MSG, or each line of standard input.
    Pub(tools::Pub),
    /// Print the events of a topic, one a line, until interrupted (or --count of them).
    Sub(tools::Sub),
    /// Broadcast a message to every member of a cluster: MSG, or each line of standard input.
    Bcast(tools::Bcast),
    /// Send a request to one member of a cluster and print its reply.
    Req(tools::Req),
    /// Serve a cluster: echo each request, or answer it with what a command prints.
    Serve(tools::Serve),
    /// Measure publish, broadcast, request and tunnel throughput and latency against a node.
    Bench(bench::Bench),
    /// Show a node's peers, trees, clients, rates and drops (from its --metrics address).
    Status(status::Status),
}

/// Rewrites the original's single-dash long flags (`-net x`, `-port=3333`) to clap's
/// `--net x`. The names are those of every long flag clap knows for [`Args`] (with its own
/// `help` and `version`), so a flag added there takes one dash too. Other single-dash words
/// (short flags such as `-h` and `-V`, unknown words, values) are passed on unchanged.
///
/// A tool's words are left alone (`iris pub t -dev` publishes "-dev").
fn normalize(args: impl Iterator<Item = String>) -> Vec<String> {
    let args: Vec<String> = args.collect();
    let mut command = Args::command();
    command.build();
    if args
        .get(1)
        .is_some_and(|w| command.find_subcommand(w).is_some())
    {
        return args;
    }
    let long: Vec<&str> = command
        .get_arguments()
        .filter_map(|a| a.get_long())
        .collect();
    args.into_iter()
        .map(|a| {
            let body = a.strip_prefix('-').filter(|b| !b.starts_with('-'));
            match body {
                Some(b) if long.contains(&b.split('=').next().unwrap_or(b)) => format!("-{a}"),
                _ => a,
            }
        })
        .collect()
}

/// Runs the command on runtime `R`: parses the process's arguments, then runs a node until
/// SIGINT or SIGTERM, or the tool asked for. The `iris` binaries are this one call.
pub fn main<R: Runtime>() -> ExitCode {
    let args = match Args::try_parse_from(normalize(std::env::args())) {
        Ok(args) => args,
        Err(e) => return flag_error(e),
    };
    match args.tool {
        None => node::run::<R>(args.node),
        Some(Tool::Pub(t)) => tools::publish::<R>(t),
        Some(Tool::Sub(t)) => tools::subscribe::<R>(t),
        Some(Tool::Bcast(t)) => tools::broadcast::<R>(t),
        Some(Tool::Req(t)) => tools::request::<R>(t),
        Some(Tool::Serve(t)) => tools::serve::<R>(t),
        Some(Tool::Bench(t)) => bench::run::<R>(t),
        Some(Tool::Status(t)) => status::run(t),
    }
}

/// How often [`return_freed_memory`] has the allocator look for freed memory to return.
pub const COLLECT_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Calls `collect` every [`COLLECT_EVERY`] on a thread of its own, for the life of the
/// process. The binaries pass their allocator's collection (mimalloc's `mi_collect`): it
/// returns freed memory to the system only when it is next called to collect, on its own
/// every so many allocations, which a node left idle once its groups and clients are gone
/// may not make for minutes (a CI run saw one node keep 171 of its 212 MB peak 90 s after
/// every group had gone, while the others were back near their boot size). Returns at
/// once; the thread costs a wake-up every two seconds.
pub fn return_freed_memory(collect: fn()) {
    let spawned = std::thread::Builder::new()
        .name("iris-alloc-collect".into())
        .spawn(move || {
            loop {
                std::thread::sleep(COLLECT_EVERY);
                collect();
            }
        });
    // Before logging is set up: said on stderr.
    if let Err(e) = spawned {
        eprintln!("iris: freed memory will go back to the system more slowly: no thread ({e})");
    }
}

/// Help and version go to stdout as clap writes them; a bad flag is one line on stderr and
/// exit status 2.
fn flag_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    // The message up to the usage line, on one line: what was wrong, and what with.
    let text = e.to_string();
    let said: Vec<&str> = text
        .lines()
        .take_while(|l| !l.starts_with("Usage:"))
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let said = said.join(" ");
    eprintln!(
        "iris: {} (see iris --help)",
        said.strip_prefix("error: ").unwrap_or(&said)
    );
    ExitCode::from(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_dash_flags_of_the_original_still_parse() {
        let argv = ["iris", "-dev", "-port", "3333", "-net=x"].map(String::from);
        let args = Args::parse_from(normalize(argv.into_iter()));
        assert!(args.node.dev);
        assert_eq!(args.node.port, 3333);
        assert_eq!(args.node.net.as_deref(), Some("x"));
        assert!(args.tool.is_none());
        // Short options, unknown words and values that start with one dash are left alone.
        for word in ["-h", "-V", "-bogus", "-5", "-", "--port"] {
            assert_eq!(normalize([word.to_string()].into_iter()), vec![word]);
        }
    }

    /// A value clap accepts for `arg`: its default, else one fitting its value name.
    fn sample_value(arg: &clap::Arg) -> String {
        if let Some(v) = arg.get_default_values().first() {
            return v.to_string_lossy().into_owned();
        }
        let name = arg
            .get_value_names()
            .and_then(|n| n.first())
            .map(|n| n.as_str());
        match name {
            Some("NAME") => "x",
            Some("PATH") => "key.pem",
            Some("HOST:PORT") => "localhost:1",
            Some("ADDR:PORT") => "127.0.0.1:9",
            Some("N" | "BYTES") => "7",
            other => panic!(
                "--{}: this test needs a sample value for {other:?}",
                arg.get_long().unwrap_or_default()
            ),
        }
        .to_string()
    }

    /// Every long flag clap defines, iterated from its own definition, works with one dash
    /// as with two, its value after a space or after `=`.
    #[test]
    fn every_long_flag_takes_one_dash_too() {
        use clap::ArgAction;
        use clap::error::ErrorKind;
        use clap::parser::ValueSource;
        let mut command = Args::command();
        command.build();
        let mut longs = Vec::new();
        for arg in command.get_arguments() {
            let Some(long) = arg.get_long() else {
                continue;
            };
            longs.push(long);
            let id = arg.get_id().as_str();
            let parse = |words: &[String]| {
                let argv = std::iter::once("iris".to_string()).chain(words.iter().cloned());
                Args::command().try_get_matches_from(normalize(argv))
            };
            match arg.get_action() {
                ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong => {
                    let e = parse(&[format!("-{long}")]).unwrap_err();
                    assert_eq!(e.kind(), ErrorKind::DisplayHelp, "-{long}");
                }
                ArgAction::Version => {
                    let e = parse(&[format!("-{long}")]).unwrap_err();
                    assert_eq!(e.kind(), ErrorKind::DisplayVersion, "-{long}");
                }
                action if !action.takes_values() => {
                    let m = parse(&[format!("-{long}")]).unwrap_or_else(|e| panic!("-{long}: {e}"));
                    assert_eq!(
                        m.value_source(id),
                        Some(ValueSource::CommandLine),
                        "-{long}"
                    );
                }
                _ => {
                    let value = sample_value(arg);
                    for words in [
                        vec![format!("-{long}"), value.clone()],
                        vec![format!("-{long}={value}")],
                    ] {
                        let m = parse(&words).unwrap_or_else(|e| panic!("{words:?}: {e}"));
                        assert_eq!(
                            m.value_source(id),
                            Some(ValueSource::CommandLine),
                            "{words:?}"
                        );
                        let got: Vec<_> = m.get_raw(id).expect("a value").collect();
                        assert_eq!(got, [std::ffi::OsStr::new(&value)], "{words:?}");
                    }
                }
            }
        }
        // The flags the hand-kept list once forgot, and clap's own.
        for long in [
            "shutdown-drain-ms",
            "help",
            "version",
            "dev",
            "net",
            "rsa",
            "port",
        ] {
            assert!(longs.contains(&long), "--{long} missing from {longs:?}");
        }
    }
}
