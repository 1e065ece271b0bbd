//! The Iris node and the Rust client on tokio.
//!
//! The driver, the client and the command are written once in `iris-driver` over its
//! `Runtime` trait; this crate is that trait for tokio ([`Tokio`]) and the names a tokio
//! user wants: [`driver::NodeHandle`], [`client::connect`], the `iris` binary.
//!
//! - [`driver`] runs an [`iris_proto::Node`] on tokio's sockets and timers;
//! - [`client`] is the Rust client library, modeled on the original Go client;
//! - [`discovery`], [`key_file`] and [`metrics`] are the shared ones, re-exported.

mod runtime;

pub use iris_driver::{discovery, key_file, metrics};
pub use runtime::{
    Io, PipeRead, PipeWrite, TcpRead, TcpWrite, Tokio, TokioListener, TokioTask, TokioUdp,
};

/// The node's driver on tokio.
pub mod driver {
    pub use iris_driver::driver::{
        DIAL_TIMEOUT, EMBEDDED_PIPE, NetworkOptions, NodeOptions, READ_CHUNK, SHUTDOWN_GRACE,
        random_seed,
    };

    use crate::Tokio;
    use iris_proto::Stats;
    use std::future::Future;
    use std::io;

    /// A node running on its own thread (a tokio `current_thread` runtime), for embedding,
    /// tests and benchmarks.
    pub type NodeHandle = iris_driver::driver::NodeHandle<Tokio>;

    /// What a node reports once it serves.
    pub type Ready = iris_driver::driver::Ready<Tokio>;

    /// Runs a node until `shutdown` completes ([`iris_driver::driver::run`]). Must run on a
    /// `current_thread` runtime inside a `LocalSet`.
    pub async fn run(
        opts: NodeOptions,
        ready: Option<async_channel::Sender<Ready>>,
        shutdown: impl Future<Output = String>,
    ) -> io::Result<Stats> {
        iris_driver::driver::run::<Tokio>(opts, ready, shutdown).await
    }
}

/// The Rust client on tokio: call it from inside a tokio runtime.
pub mod client {
    pub use iris_driver::client::{
        Connection, Error, Limits, MAX_BUFFERED, Result, ServiceHandler, ServiceLimits,
        TUNNEL_WINDOW, TopicHandler, Tunnel,
    };

    use crate::Tokio;

    /// Where a client's node is: a relay port, or a [`crate::driver::NodeHandle`].
    pub type Dial = iris_driver::client::Dial<Tokio>;

    /// Connects to the local node on `port` as a plain client.
    pub async fn connect(port: u16) -> Result<Connection> {
        iris_driver::client::connect::<Tokio>(port).await
    }

    /// Connects as a member of `cluster`, served by `handler` within `limits`. The
    /// handler's `init` runs before any delivery reaches it; if it fails, the connection is
    /// closed.
    pub async fn register<H: ServiceHandler>(
        port: u16,
        cluster: &str,
        handler: H,
        limits: ServiceLimits,
    ) -> Result<Connection> {
        iris_driver::client::register::<Tokio, H>(port, cluster, handler, limits).await
    }
}

/// The README's Rust snippets, compiled as doctests so they stay true.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
