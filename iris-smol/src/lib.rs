//! The Iris node and the Rust client on smol.
//!
//! The driver, the client and the command are written once in `iris-driver` over its
//! `Runtime` trait; this crate is that trait for smol ([`Smol`]) and the names a smol user
//! wants: [`driver::NodeHandle`], [`client::connect`], the `iris-smol` binary (the same
//! flags as `iris`). Nothing here pulls in tokio.

mod runtime;

pub use iris_driver::{discovery, key_file, metrics};
pub use runtime::{PipeRead, PipeWrite, Smol, SmolListener, SmolTask, SmolUdp, TcpRead, TcpWrite};

/// The node's driver on smol.
pub mod driver {
    pub use iris_driver::driver::{
        DIAL_TIMEOUT, EMBEDDED_PIPE, NetworkOptions, NodeOptions, READ_CHUNK, SHUTDOWN_GRACE,
        random_seed,
    };

    use crate::Smol;
    use iris_proto::Stats;
    use std::future::Future;
    use std::io;

    /// A node running on its own thread (its own smol executor), for embedding, tests and
    /// benchmarks.
    pub type NodeHandle = iris_driver::driver::NodeHandle<Smol>;

    /// What a node reports once it serves.
    pub type Ready = iris_driver::driver::Ready<Smol>;

    /// Runs a node until `shutdown` completes ([`iris_driver::driver::run`]). Must run
    /// inside [`iris_driver::runtime::Runtime::block_on`] of [`Smol`].
    pub async fn run(
        opts: NodeOptions,
        ready: Option<async_channel::Sender<Ready>>,
        shutdown: impl Future<Output = String>,
    ) -> io::Result<Stats> {
        iris_driver::driver::run::<Smol>(opts, ready, shutdown).await
    }
}

/// The Rust client on smol: its tasks run on smol's global executor, so it can be called
/// from any async context (`smol::block_on` included).
pub mod client {
    pub use iris_driver::client::{
        Connection, Error, Limits, MAX_BUFFERED, Result, ServiceHandler, ServiceLimits,
        TUNNEL_WINDOW, TopicHandler, Tunnel,
    };

    use crate::Smol;

    /// Where a client's node is: a relay port, or a [`crate::driver::NodeHandle`].
    pub type Dial = iris_driver::client::Dial<Smol>;

    /// Connects to the local node on `port` as a plain client.
    pub async fn connect(port: u16) -> Result<Connection> {
        iris_driver::client::connect::<Smol>(port).await
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
        iris_driver::client::register::<Smol, H>(port, cluster, handler, limits).await
    }
}
