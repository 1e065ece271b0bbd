//! The driver suite, written once and run against every runtime: each runtime crate's
//! `tests/suite.rs` names its runtime and its node binary in a module `rt` and includes
//! this directory (`cargo test -p iris-tokio --test suite`, `cargo test -p iris-smol --test
//! suite`). The cases talk to the node as its users do: raw relay sockets and the Rust
//! client against the node binary, the Rust client against a node embedded in the test's
//! process, several node processes forming a network.
//!
//! What a runtime crate's `rt` module provides: `BIN` (its node binary), `MANIFEST_DIR`,
//! `Rt` (its `Runtime`), `block_on` (runs a test body on the runtime, with the client's
//! tasks), `unblock` (runs blocking code off the runtime's threads), and `pub use` of the
//! crate's `client`, `driver` and `discovery`; and, before including this directory, a
//! macro `runtime_independent!(case, ...)` that says what it does with the cases below
//! that do not depend on the runtime.
//!
//! # Which cases depend on the runtime
//!
//! A runtime supplies what [`iris_driver::runtime::Runtime`] asks for: the node's thread
//! and its tasks, the client's tasks, timers, TCP listeners and streams (reads, vectored
//! writes, shutdown), UDP sockets, in-process pipes, the blocking pool where handshakes are
//! signed, and the signals. A case is runtime-specific if its outcome may depend on one of
//! those; every runtime runs it:
//!
//! - `client`: the Rust client runs on the runtime, against its binary and against a node
//!   embedded on it (pipes);
//! - `conformance`: the relay protocol over the node's sockets: reads split and coalesced,
//!   EOF, shutdown, 16 MiB writes, back-pressure, deadlines on its timers, the IPv6
//!   listener, SIGTERM and SIGINT (a few milliseconds a case);
//! - `overload`: reads paused and writes held under floods, 1200 connections at its
//!   accept loop;
//! - `network`: embedded nodes linking over its sockets, signing on its blocking pool;
//! - `lifecycle`: signals while a node boots, and a second signal;
//! - `metrics`: the HTTP endpoint on its listener;
//! - `discovery`: LAN beacons sent to broadcast addresses from its UDP socket;
//! - `multinode`: a network of its binary (links, host discovery), every relay operation
//!   between its processes;
//! - `faults`: five of its processes in network namespaces on a bridge, broadcasts and
//!   events counted through a stopped node and a partition;
//! - `tools`: the `iris` command's tools (`pub`, `sub`, `bcast`, `req`, `serve`, `bench`,
//!   `status`), clients of its runtime, against a node process.
//!
//! The others are runtime-independent: what they check is decided before any runtime
//! starts (flags and key files, `cli`) or by the core and the driver's common code, and
//! what they use of a runtime is what the cases above already use. They are a crashed
//! and a leaving node (`multinode`), a rolling restart (`restart`), key rotation
//! (`rotation`), 100,000 groups over five processes (`groups`), peers of another key or network and the default discovery ports
//! (`discovery`, `lifecycle`), the status page in a headless browser (`status_page`). Each
//! boots networks of node processes (each waits out 3 s of overlay quiet): 16 cases. One
//! runtime, tokio, runs them
//! (`iris-tokio`'s `runtime_independent!` makes them tests); `iris-smol` lists them as
//! ignored, and `cargo test -p iris-smol --test suite -- --include-ignored` runs them there
//! too. So `cargo test --workspace` runs every case once, and the runtime-specific ones on
//! each runtime.

pub mod common;

mod cli;
mod client;
mod conformance;
mod discovery;
mod faults;
mod groups;
mod lifecycle;
mod metrics;
mod multinode;
mod network;
mod overload;
mod restart;
mod rotation;
mod slowsub;
mod status_page;
mod tools;
