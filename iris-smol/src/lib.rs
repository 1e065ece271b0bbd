//! The Iris node and the Rust client on smol.
//!
//! The driver, the client and the command are written once in `iris-driver` over its
//! `Runtime` trait; this crate is that trait for smol ([`Smol`]) and the names a smol user
//! wants: [`driver::NodeHandle`], [`client::connect`], the `iris-smol` binary (the same
//! flags as `iris`). Nothing here pulls in tokio.

mod runtime;

pub use iris_driver::{discovery, key_file, metrics};
pub use runtime::{PipeRead, PipeWrite, Smol, SmolListener, SmolTask, SmolUdp, TcpRead, TcpWrite};

iris_driver::runtime_crate!(Smol);
