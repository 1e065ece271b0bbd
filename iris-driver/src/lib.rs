//! The runtime-agnostic half of every Iris driver: the node's run loop, the Rust client and
//! the `iris` command, written once over [`runtime::Runtime`].
//!
//! `iris-proto` is the node as a pure state machine; this crate feeds it sockets and timers
//! through the few operations a runtime must offer ([`runtime::Runtime`]: local tasks,
//! timers, TCP, UDP, an in-process pipe, signals). `iris-tokio` and `iris-smol` implement
//! them and re-export what is here under their runtime's name, so users depend on one of
//! those, not on this crate.
//!
//! - [`driver`] runs an [`iris_proto::Node`] on real sockets and timers;
//! - [`discovery`] carries the beacons by which nodes of one network find each other;
//! - [`client`] is the Rust client library, modeled on the original Go client;
//! - [`cli`] is the node command;
//! - [`key_file`] loads the network key with clear errors;
//! - [`metrics`] serves the node's counters to Prometheus.

pub mod cli;
pub mod client;
pub mod discovery;
pub mod driver;
pub mod key_file;
mod log_limit;
pub mod metrics;
pub mod runtime;
pub mod seeds;
mod wake;

/// The public modules of a runtime crate (`iris-tokio`, `iris-smol`) for its runtime `$rt`:
/// `driver` (the node: `NodeHandle`, `run`, the options) and `client` (`connect`,
/// `register`, `Dial` and the client's types), so that both crates offer the same API
/// word for word without writing it twice.
#[macro_export]
macro_rules! runtime_crate {
    ($rt:ident) => {
        /// The node's driver on this crate's runtime.
        pub mod driver {
            pub use $crate::driver::{
                DEFAULT_LINK_BUFFER, DIAL_TIMEOUT, EMBEDDED_PIPE, NetworkOptions, NodeOptions,
                READ_CHUNK, SHUTDOWN_GRACE, random_seed,
            };

            /// A node running on a thread of its own (its own single-threaded runtime), for
            /// embedding, tests and benchmarks.
            pub type NodeHandle = $crate::driver::NodeHandle<super::$rt>;

            /// What a node reports once it serves.
            pub type Ready = $crate::driver::Ready<super::$rt>;

            /// Where clients in this process are handed to a running node.
            pub type Attach = $crate::driver::Attach<super::$rt>;

            /// Runs a node until `shutdown` completes ([`iris_driver::driver::run`]), inside
            /// the runtime's `block_on` (`iris_driver::runtime::Runtime::block_on`).
            pub async fn run(
                opts: NodeOptions,
                ready: Option<$crate::async_channel::Sender<Ready>>,
                shutdown: impl ::std::future::Future<Output = String>,
            ) -> ::std::io::Result<$crate::iris_proto::Stats> {
                $crate::driver::run::<super::$rt>(opts, ready, shutdown).await
            }

            /// Runs a node and `app` together on this thread, inside the runtime's
            /// `block_on` ([`iris_driver::driver::run_with`]): `app` gets the node's
            /// [`Attach`] once it serves, and the node stops once `app` is done.
            pub async fn run_with<T, F, Fut>(
                opts: NodeOptions,
                app: F,
            ) -> ::std::io::Result<(T, $crate::iris_proto::Stats)>
            where
                F: FnOnce(Attach) -> Fut,
                Fut: ::std::future::Future<Output = T>,
            {
                $crate::driver::run_with::<super::$rt, T, F, Fut>(opts, app).await
            }
        }

        /// The Rust client on this crate's runtime.
        pub mod client {
            pub use $crate::client::{
                Connection, Error, Limits, MAX_BUFFERED, Result, ServiceHandler, ServiceLimits,
                TUNNEL_WINDOW, TopicHandler, Tunnel,
            };

            /// Where a client's node is: a relay port, or a [`crate::driver::NodeHandle`].
            pub type Dial = $crate::client::Dial<super::$rt>;

            /// Connects to the local node on `port` as a plain client.
            pub async fn connect(port: u16) -> Result<Connection> {
                $crate::client::connect::<super::$rt>(port).await
            }

            /// Connects as a member of `cluster`, served by `handler` within `limits`. The
            /// handler's `init` runs before any delivery reaches it; if it fails, the
            /// connection is closed.
            pub async fn register<H: ServiceHandler>(
                port: u16,
                cluster: &str,
                handler: H,
                limits: ServiceLimits,
            ) -> Result<Connection> {
                $crate::client::register::<super::$rt, H>(port, cluster, handler, limits).await
            }
        }
    };
}

#[doc(hidden)]
pub use async_channel;
#[doc(hidden)]
pub use iris_proto;
