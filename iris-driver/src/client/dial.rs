//! Where a client's node is: its relay port, or a node running in this process.

use super::{Connection, Result, ServiceHandler, ServiceLimits};
use crate::driver::{Attach, NodeHandle};
use crate::runtime::Runtime;
use std::sync::Arc;

/// How clients reach their node on runtime `R`, for code that serves either kind (a
/// service configured to run its node in-process or to use the machine's). The runtime
/// crates name it for their runtime (`iris_tokio::client::Dial`).
pub enum Dial<R: Runtime> {
    /// The relay port of a node on this machine.
    Port(u16),
    /// A node running in this process, reached through in-memory pipes.
    Embedded(Arc<NodeHandle<R>>),
    /// A node running in this process, reached through its [`Attach`] (a node run with
    /// [`crate::driver::run_with`] or [`crate::driver::run`] on the application's own
    /// runtime).
    Attached(Attach<R>),
}

impl<R: Runtime> Clone for Dial<R> {
    fn clone(&self) -> Self {
        match self {
            Dial::Port(p) => Dial::Port(*p),
            Dial::Embedded(n) => Dial::Embedded(n.clone()),
            Dial::Attached(a) => Dial::Attached(a.clone()),
        }
    }
}

impl<R: Runtime> std::fmt::Debug for Dial<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Dial({self})")
    }
}

impl<R: Runtime> From<u16> for Dial<R> {
    fn from(port: u16) -> Dial<R> {
        Dial::Port(port)
    }
}

impl<R: Runtime> std::fmt::Display for Dial<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dial::Port(port) => write!(f, "port {port}"),
            Dial::Embedded(node) => {
                write!(f, "embedded {} node (relay port {})", R::NAME, node.port())
            }
            Dial::Attached(a) => {
                write!(f, "attached {} node (relay port {})", R::NAME, a.port())
            }
        }
    }
}

impl<R: Runtime> Dial<R> {
    /// [`super::connect`] or [`NodeHandle::connect`].
    pub async fn connect(&self) -> Result<Connection> {
        match self {
            Dial::Port(port) => super::connect::<R>(*port).await,
            Dial::Embedded(node) => node.connect().await,
            Dial::Attached(a) => a.connect().await,
        }
    }

    /// [`super::register`] or [`NodeHandle::register`].
    pub async fn register<H: ServiceHandler>(
        &self,
        cluster: &str,
        handler: H,
        limits: ServiceLimits,
    ) -> Result<Connection> {
        match self {
            Dial::Port(port) => super::register::<R, H>(*port, cluster, handler, limits).await,
            Dial::Embedded(node) => node.register(cluster, handler, limits).await,
            Dial::Attached(a) => a.register(cluster, handler, limits).await,
        }
    }
}
