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
//! crate's `client`, `driver` and `discovery`.

pub mod common;

mod cli;
mod client;
mod conformance;
mod discovery;
mod lifecycle;
mod metrics;
mod multinode;
mod network;
mod overload;
mod restart;
mod rotation;
