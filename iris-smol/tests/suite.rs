//! The driver suite (`iris-driver/suite`) against the smol node: the `iris-smol` binary,
//! and nodes embedded in this process. `cargo test -p iris-smol --test suite` runs the cases
//! of every runtime; the runtime-independent ones, which iris-tokio's suite runs, are listed
//! here as ignored, and `cargo test -p iris-smol --test suite -- --include-ignored` runs them
//! too (see `iris-driver/suite/mod.rs`).

#![allow(unreachable_pub)]

/// What the suite needs to know of this runtime.
mod rt {
    pub use iris_smol::{client, discovery, driver};

    /// The node binary under test.
    pub const BIN: &str = env!("CARGO_BIN_EXE_iris-smol");
    /// This crate's directory (the fixtures are found from it).
    pub const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
    /// Network names of this runtime's cases end in it (see `common::apart`).
    pub const NAME: &str = "smol";
    /// The runtime.
    pub type Rt = iris_smol::Smol;

    /// Runs a test body with `smol::block_on`; the client's tasks run on smol's global
    /// executor.
    pub fn block_on<T>(fut: impl std::future::Future<Output = T>) -> T {
        smol::block_on(fut)
    }

    /// Runs blocking code (starting a process, joining a node's thread) off the executor.
    pub async fn unblock<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        smol::unblock(f).await
    }
}

/// The suite's runtime-independent cases, as `any_runtime::case`: ignored unless asked for,
/// since iris-tokio's suite runs them.
macro_rules! runtime_independent {
    ($($case:ident),* $(,)?) => {
        mod any_runtime {
            $(
                #[test]
                #[ignore = "runtime-independent: iris-tokio's suite runs it"]
                fn $case() {
                    super::$case()
                }
            )*
        }
    };
}

#[path = "../../iris-driver/suite/mod.rs"]
mod suite;
