//! A node in the application's process: [`NodeHandle`] runs one on a thread of its own,
//! [`run_with`] beside the application on the application's thread, and [`Attach`] hands
//! it clients through in-memory pipes.

use super::{NodeOptions, Ready, run};
use crate::runtime::Runtime;
use iris_proto::Stats;
use std::future::Future;
use std::io;
use std::net::SocketAddr;

/// The node's end of an in-process client's pipe.
pub type PipeEnd<R> = (<R as Runtime>::PipeReader, <R as Runtime>::PipeWriter);

/// Where clients in this process are handed to a running node: cheap to clone, usable
/// from any thread. A client attached from a task on the node's own thread (the node run
/// with [`run_with`] or [`run`] inside the application's single-threaded runtime) reaches
/// it with no thread hop at all, which is the fastest way to a node (see `benches/README.md`).
pub struct Attach<R: Runtime> {
    tx: async_channel::Sender<PipeEnd<R>>,
    port: u16,
}

impl<R: Runtime> Clone for Attach<R> {
    fn clone(&self) -> Self {
        Attach {
            tx: self.tx.clone(),
            port: self.port,
        }
    }
}

impl<R: Runtime> std::fmt::Debug for Attach<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attach")
            .field("runtime", &R::NAME)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl<R: Runtime> Attach<R> {
    /// Hands pipes to `tx` (the node's attach task); `port` is the node's relay port.
    pub(super) fn new(tx: async_channel::Sender<PipeEnd<R>>, port: u16) -> Attach<R> {
        Attach { tx, port }
    }

    /// The node's relay port (0 if it opened none).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A new client connection to the node: the client's end of an in-memory pipe that
    /// speaks the relay protocol, with no socket or system call in between
    /// ([`Attach::connect`] uses it). Fails once the node has stopped.
    pub async fn pipe(&self) -> io::Result<PipeEnd<R>> {
        let (client, node) = R::pipe(EMBEDDED_PIPE);
        self.tx
            .send(node)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::NotConnected, "the node has stopped"))?;
        Ok(client)
    }
}

/// Bytes an in-process client's pipe holds each way: as much as a loopback socket's
/// buffers, so that back-pressure behaves alike.
pub const EMBEDDED_PIPE: usize = 256 << 10;

/// Runs a node and an application together on this thread (inside
/// [`Runtime::block_on`]): `app` is given the node's [`Attach`] once the node serves, and
/// the node stops (gracefully, as [`run`] does) once `app` has finished. Returns what `app`
/// returned and the node's counters.
///
/// The application's clients, their handlers and the node then share one thread: a
/// request round trip between two of them is a few microseconds, where crossing threads
/// costs tens (see `benches/README.md`). Fails if the node stops before it serves (it
/// cannot bind its ports, say); `app` is not run then.
pub async fn run_with<R, T, F, Fut>(opts: NodeOptions, app: F) -> io::Result<(T, Stats)>
where
    R: Runtime,
    F: FnOnce(Attach<R>) -> Fut,
    Fut: Future<Output = T>,
{
    let (ready_tx, ready_rx) = async_channel::bounded::<Ready<R>>(1);
    // Dropped when the application ends, which is the node's signal to stop.
    let (app_alive, app_ended) = async_channel::bounded::<()>(1);
    let node = run::<R>(opts, Some(ready_tx), async move {
        let _ = app_ended.recv().await;
        "the application ended".to_string()
    });
    let app = async move {
        // No Ready: the node ended before serving (its error is `run`'s).
        let ready = ready_rx.recv().await.ok()?;
        let out = app(ready.attach).await;
        drop(app_alive);
        Some(out)
    };
    let (stats, out) = futures_lite::future::zip(node, app).await;
    let stats = stats?;
    let out = out.ok_or_else(|| io::Error::other("the node stopped before it served"))?;
    Ok((out, stats))
}

/// A node running on its own thread, for tests, benchmarks and embedding.
pub struct NodeHandle<R: Runtime> {
    peer_addr: Option<SocketAddr>,
    attach: Attach<R>,
    stop: Option<async_channel::Sender<String>>,
    thread: Option<std::thread::JoinHandle<io::Result<Stats>>>,
}

impl<R: Runtime> std::fmt::Debug for NodeHandle<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHandle")
            .field("runtime", &R::NAME)
            .field("port", &self.port())
            .field("peer_addr", &self.peer_addr)
            .finish_non_exhaustive()
    }
}

impl<R: Runtime> NodeHandle<R> {
    /// Starts a node on a new thread and waits until its relay port is open (for a
    /// networked node: until the overlay has converged; a node whose seeds all refuse it
    /// never opens it, so run such a node with [`run`] to watch its events instead).
    pub fn spawn(opts: NodeOptions) -> io::Result<NodeHandle<R>> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = async_channel::bounded::<String>(1);
        let thread = std::thread::Builder::new()
            .name("iris-node".into())
            .spawn(move || {
                let (tx, rx) = async_channel::bounded(1);
                let ready_ok = ready_tx.clone();
                let result = R::block_on(async move {
                    let forward = async move {
                        if let Ok(ready) = rx.recv().await {
                            let _ = ready_ok.send(Ok(ready));
                        }
                    };
                    let stop = async move {
                        stop_rx
                            .recv()
                            .await
                            .unwrap_or_else(|_| "node handle dropped".into())
                    };
                    let (result, ()) =
                        futures_lite::future::zip(run::<R>(opts, Some(tx), stop), forward).await;
                    result
                })
                .and_then(|r| r);
                if let Err(e) = &result {
                    let _ = ready_tx.send(Err(io::Error::new(e.kind(), e.to_string())));
                }
                result
            })?;
        let Ready {
            peer_addr, attach, ..
        } = match ready_rx.recv() {
            Ok(Ok(ready)) => ready,
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(io::Error::other("node thread ended before it was ready")),
        };
        Ok(NodeHandle {
            peer_addr,
            attach,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The relay port (0 if it opened none).
    pub fn port(&self) -> u16 {
        self.attach.port()
    }

    /// A new client connection to this node inside this process ([`Attach::pipe`]).
    pub async fn attach(&self) -> io::Result<PipeEnd<R>> {
        self.attach.pipe().await
    }

    /// Where clients are handed to this node, to keep apart from the handle.
    pub fn attacher(&self) -> Attach<R> {
        self.attach.clone()
    }

    /// The address peers dial to reach this node (networked nodes only).
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer_addr
    }

    /// Shuts the node down gracefully and returns its counters.
    pub fn stop(mut self, reason: &str) -> io::Result<Stats> {
        self.stop_inner(reason)
    }

    fn stop_inner(&mut self, reason: &str) -> io::Result<Stats> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.try_send(reason.to_string());
        }
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| io::Error::other("node thread panicked"))?,
            None => Ok(Stats::default()),
        }
    }
}

impl<R: Runtime> Drop for NodeHandle<R> {
    fn drop(&mut self) {
        let _ = self.stop_inner("node handle dropped");
    }
}
