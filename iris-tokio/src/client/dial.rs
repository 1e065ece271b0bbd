//! Where a client's node is: its relay port, or a node running in this process.

use super::{Connection, Result, ServiceHandler, ServiceLimits};
use crate::driver::NodeHandle;
use std::sync::Arc;

/// How clients reach their node, for code that serves either kind (a service configured
/// to run its node in-process or to use the machine's).
#[derive(Debug, Clone)]
pub enum Dial {
    /// The relay port of a node on this machine.
    Port(u16),
    /// A node running in this process, reached through in-memory pipes.
    Embedded(Arc<NodeHandle>),
}

impl From<u16> for Dial {
    fn from(port: u16) -> Dial {
        Dial::Port(port)
    }
}

impl std::fmt::Display for Dial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dial::Port(port) => write!(f, "port {port}"),
            Dial::Embedded(node) => write!(f, "embedded node (relay port {})", node.port()),
        }
    }
}

impl Dial {
    /// [`Connection::connect`] or [`Connection::connect_embedded`].
    pub async fn connect(&self) -> Result<Connection> {
        match self {
            Dial::Port(port) => Connection::connect(*port).await,
            Dial::Embedded(node) => Connection::connect_embedded(node).await,
        }
    }

    /// [`Connection::register`] or [`Connection::register_embedded`].
    pub async fn register<H: ServiceHandler>(
        &self,
        cluster: &str,
        handler: H,
        limits: ServiceLimits,
    ) -> Result<Connection> {
        match self {
            Dial::Port(port) => Connection::register(*port, cluster, handler, limits).await,
            Dial::Embedded(node) => {
                Connection::register_embedded(node, cluster, handler, limits).await
            }
        }
    }
}
