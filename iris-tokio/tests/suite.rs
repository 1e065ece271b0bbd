//! The driver suite (`iris-driver/suite`) against the tokio node: the `iris` binary, and
//! nodes embedded in this process. `cargo test -p iris-tokio --test suite` runs it all: the
//! cases of every runtime, and the runtime-independent ones, which only this runtime runs
//! (see `iris-driver/suite/mod.rs`).

#![allow(unreachable_pub)]

/// What the suite needs to know of this runtime.
mod rt {
    pub use iris_tokio::{client, discovery, driver};

    /// The node binary under test.
    pub const BIN: &str = env!("CARGO_BIN_EXE_iris");
    /// This crate's directory (the fixtures are found from it).
    pub const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
    /// Network names of this runtime's cases end in it (see `common::apart`).
    pub const NAME: &str = "tokio";
    /// The runtime.
    pub type Rt = iris_tokio::Tokio;

    /// Runs a test body on a multi-threaded tokio runtime, as applications usually do.
    pub fn block_on<T>(fut: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime")
            .block_on(fut)
    }

    /// Runs blocking code (starting a process, joining a node's thread) off the runtime.
    pub async fn unblock<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        tokio::task::spawn_blocking(f).await.expect("blocking task")
    }
}

/// The suite's runtime-independent cases run here, as `any_runtime::case`.
macro_rules! runtime_independent {
    ($($case:ident),* $(,)?) => {
        mod any_runtime {
            $(
                #[test]
                fn $case() {
                    super::$case()
                }
            )*
        }
    };
}

#[path = "../../iris-driver/suite/mod.rs"]
mod suite;
