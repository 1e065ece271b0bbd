//! The client's handle on its runtime: where its tasks run and how it waits.
//!
//! The client's types are the same on every runtime (a [`super::Connection`] made on tokio
//! and one made on smol are one type), so the runtime travels with each connection as two
//! function pointers rather than as a type parameter.

use crate::runtime::{Runtime, sleep};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// A boxed task or timer.
pub(crate) type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// How a connection starts tasks and sleeps.
#[derive(Clone, Copy)]
pub(crate) struct Spawner {
    spawn: fn(BoxFuture),
    sleep: fn(Duration) -> BoxFuture,
}

impl std::fmt::Debug for Spawner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Spawner")
    }
}

impl Spawner {
    /// From the two functions.
    #[cfg(test)]
    pub(crate) fn new(spawn: fn(BoxFuture), sleep: fn(Duration) -> BoxFuture) -> Spawner {
        Spawner { spawn, sleep }
    }

    /// `R`'s.
    pub(crate) fn of<R: Runtime>() -> Spawner {
        Spawner {
            spawn: |f| R::spawn(f),
            sleep: |d| Box::pin(sleep::<R>(d)),
        }
    }

    /// Starts a detached task.
    pub(crate) fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        (self.spawn)(Box::pin(fut))
    }

    /// `fut`, or `None` if `d` passes first.
    pub(crate) async fn timeout<T>(&self, d: Duration, fut: impl Future<Output = T>) -> Option<T> {
        let timer = (self.sleep)(d);
        futures_lite::future::or(async { Some(fut.await) }, async {
            timer.await;
            None
        })
        .await
    }
}
