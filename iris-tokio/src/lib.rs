//! The Iris node and the Rust client on tokio.
//!
//! The driver, the client and the command are written once in `iris-driver` over its
//! `Runtime` trait; this crate is that trait for tokio ([`Tokio`]) and the names a tokio
//! user wants: [`driver::NodeHandle`], [`client::connect`], the `iris` binary.
//!
//! - [`driver`] runs the `iris-proto` node on tokio's sockets and timers;
//! - [`client`] is the Rust client library, modeled on the original Go client;
//! - [`discovery`], [`key_file`] and [`metrics`] are the shared ones, re-exported.

mod runtime;

pub use iris_driver::{discovery, key_file, metrics};
pub use runtime::{
    Io, PipeRead, PipeWrite, TcpRead, TcpWrite, Tokio, TokioListener, TokioTask, TokioUdp,
};

iris_driver::runtime_crate!(Tokio);

/// The README's Rust snippets, compiled as doctests so they stay true.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
