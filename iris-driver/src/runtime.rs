//! What a driver needs from an async runtime, and nothing more.
//!
//! The driver ([`crate::driver`]), the client ([`crate::client`]) and the `iris` command
//! ([`crate::cli`]) are written once over [`Runtime`]; `iris-tokio` and `iris-smol`
//! implement it for their runtime with a zero-sized type. The node runs on one thread, so
//! its tasks are local (`spawn_local`); the client's tasks may run on any thread (`spawn`).
//! Streams are read into a `BytesMut` (no buffer is zeroed per read) and written with
//! vectored writes, so each runtime can take its fastest path.

use bytes::BytesMut;
use std::future::Future;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The read half of a byte stream (a socket or an in-process pipe).
pub trait ReadBytes: Send + Unpin + 'static {
    /// Reads what is available into `buf`'s spare capacity (at least one byte of it); `Ok(0)`
    /// at the end of the stream.
    fn read_buf(&mut self, buf: &mut BytesMut) -> impl Future<Output = io::Result<usize>> + Send;
}

/// The write half of a byte stream.
pub trait WriteBytes: Send + Unpin + 'static {
    /// Writes some of `bufs` in one system call (or one pipe transfer); how much it wrote.
    fn write_vectored(
        &mut self,
        bufs: &[IoSlice<'_>],
    ) -> impl Future<Output = io::Result<usize>> + Send;

    /// Flushes and ends the stream's write side: the other end reads to its end.
    fn shutdown(&mut self) -> impl Future<Output = io::Result<()>> + Send;

    /// Writes all of `data`.
    fn write_all(&mut self, mut data: &[u8]) -> impl Future<Output = io::Result<()>> + Send {
        async move {
            while !data.is_empty() {
                let n = self.write_vectored(&[IoSlice::new(data)]).await?;
                if n == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                data = &data[n..];
            }
            Ok(())
        }
    }
}

/// A UDP socket (node discovery's beacons).
pub trait Datagrams: 'static {
    /// The bound address.
    fn local_addr(&self) -> io::Result<SocketAddr>;
    /// Whether sends to broadcast addresses are allowed.
    fn set_broadcast(&self, on: bool) -> io::Result<()>;
    /// Sends if the socket can take it now; a beacon that cannot be sent at once is dropped.
    fn try_send_to(&self, data: &[u8], to: SocketAddr) -> io::Result<usize>;
    /// Receives the next datagram.
    fn recv_from(&self, buf: &mut [u8]) -> impl Future<Output = io::Result<(usize, SocketAddr)>>;
}

/// A TCP listener.
pub trait Listener<R: Runtime>: 'static {
    /// The bound address.
    fn local_addr(&self) -> io::Result<SocketAddr>;
    /// The next connection, tuned for messaging (no Nagle delay, keepalive).
    fn accept(&self) -> impl Future<Output = io::Result<(R::Reader, R::Writer, SocketAddr)>>;
}

/// A task that can be stopped: tokio's join handle or smol's task.
pub trait Task: 'static {
    /// Stops the task at its next await (it is dropped there).
    fn abort(self);
    /// Lets the task run to its end on its own.
    fn detach(self);
}

/// An async runtime, as the driver and the client use it. Implemented by zero-sized types
/// (`iris_tokio::Tokio`, `iris_smol::Smol`); every method is an associated function.
pub trait Runtime: Sized + Send + Sync + 'static {
    /// Read half of a TCP stream.
    type Reader: ReadBytes;
    /// Write half of a TCP stream.
    type Writer: WriteBytes;
    /// A TCP listener.
    type Listener: Listener<Self>;
    /// A UDP socket.
    type Udp: Datagrams;
    /// A local task.
    type Task: Task;
    /// One end's read half of an in-process pipe.
    type PipeReader: ReadBytes;
    /// One end's write half of an in-process pipe.
    type PipeWriter: WriteBytes;

    /// The runtime's name, for logs and the command line.
    const NAME: &'static str;

    /// Builds a single-threaded runtime on this thread and runs `fut` on it, local tasks
    /// included, to its end.
    fn block_on<F: Future>(fut: F) -> io::Result<F::Output>;

    /// Starts a task on this thread's runtime (only inside [`Runtime::block_on`]).
    fn spawn_local(fut: impl Future<Output = ()> + 'static) -> Self::Task;

    /// Starts a task that may run on any thread of the runtime, detached (the client's
    /// reader, writer and handlers).
    fn spawn(fut: impl Future<Output = ()> + Send + 'static);

    /// Runs blocking or CPU-heavy `f` on a thread pool (the handshake's RSA signatures:
    /// milliseconds the node's thread must not spend).
    fn unblock<T: Send + 'static>(
        f: impl FnOnce() -> T + Send + 'static,
    ) -> impl Future<Output = T> + Send;

    /// Completes at `deadline`.
    fn sleep_until(deadline: Instant) -> impl Future<Output = ()> + Send;

    /// Binds a TCP listener.
    fn listen(addr: SocketAddr) -> impl Future<Output = io::Result<Self::Listener>>;

    /// Bounds the kernel's buffers of a TCP stream to `bytes` each way (see
    /// [`bound_buffers`]), given its read half.
    fn bound_buffers(reader: &Self::Reader, bytes: usize) -> io::Result<()>;

    /// Connects a TCP stream, tuned like accepted ones.
    fn connect(
        addr: SocketAddr,
    ) -> impl Future<Output = io::Result<(Self::Reader, Self::Writer)>> + Send;

    /// Binds a UDP socket.
    fn bind_udp(addr: SocketAddr) -> impl Future<Output = io::Result<Self::Udp>>;

    /// An in-process pipe holding up to `capacity` bytes each way: its two ends.
    #[allow(clippy::type_complexity)]
    fn pipe(
        capacity: usize,
    ) -> (
        (Self::PipeReader, Self::PipeWriter),
        (Self::PipeReader, Self::PipeWriter),
    );

    /// SIGINT and SIGTERM: resolves on the first with the reason clients are told, and
    /// exits the process at once on a second.
    fn shutdown_signals() -> io::Result<impl Future<Output = String> + 'static>;
}

/// Completes after `d`.
pub fn sleep<R: Runtime>(d: Duration) -> impl Future<Output = ()> + Send {
    R::sleep_until(Instant::now() + d)
}

/// `fut`, or `None` if `d` passes first.
pub async fn timeout<R: Runtime, T>(d: Duration, fut: impl Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(fut.await) }, async {
        sleep::<R>(d).await;
        None
    })
    .await
}

/// Writes every buffer of `batch` with as few system calls as the stream allows: a batch
/// is often many small transmits and the odd shared payload, gathered into one `writev`.
pub async fn write_all_vectored(
    wr: &mut impl WriteBytes,
    batch: &mut std::collections::VecDeque<bytes::Bytes>,
) -> io::Result<()> {
    use bytes::Buf;
    const MAX_SLICES: usize = 64;
    while !batch.is_empty() {
        let mut wrote = {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let n = batch.len().min(MAX_SLICES);
            for (slot, b) in slices.iter_mut().zip(batch.iter()) {
                *slot = IoSlice::new(b);
            }
            wr.write_vectored(&slices[..n]).await?
        };
        if wrote == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while wrote > 0 {
            let Some(front) = batch.front_mut() else {
                break;
            };
            if wrote >= front.len() {
                wrote -= front.len();
                batch.pop_front();
            } else {
                front.advance(wrote);
                wrote = 0;
            }
        }
    }
    Ok(())
}

/// Lets the runtime run its other tasks before this one goes on: a future that is pending
/// once, having woken itself.
pub async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return std::task::Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
    .await
}

/// TCP keepalive: how half-open connections (a peer or client whose host vanished) are
/// found, since relay clients may rightly stay silent for hours.
const KEEPALIVE: socket2::TcpKeepalive = socket2::TcpKeepalive::new()
    .with_time(Duration::from_secs(60))
    .with_interval(Duration::from_secs(10))
    .with_retries(6);

/// Bounds a TCP socket's kernel buffers to `bytes` each way (`SO_SNDBUF`, `SO_RCVBUF`;
/// Linux doubles both), which bounds the bytes in flight on it. What the kernel holds is a
/// queue the node cannot reorder or schedule: a request written on a peer link behind
/// megabytes of a flood waits for all of them, and a flood's relay connections, whose
/// sockets always have more to read or room to write, keep the node's thread busy in long
/// runs (issue 22: request p99 beside a 64 KiB flood 17-18 ms with the kernel's autotuned
/// buffers, 9-11 ms with relay connections at 64 KiB; `benches/README.md`, "Requests beside
/// a flood").
pub fn bound_buffers(socket: socket2::SockRef<'_>, bytes: usize) -> io::Result<()> {
    socket.set_send_buffer_size(bytes)?;
    socket.set_recv_buffer_size(bytes)
}

/// [`Runtime::bound_buffers`] unless `bytes` is 0 (the kernel's own sizing); a socket
/// that refuses keeps the kernel's sizing, logged.
pub(crate) fn limit_buffers<R: Runtime>(reader: &R::Reader, bytes: usize) {
    if bytes > 0
        && let Err(e) = R::bound_buffers(reader, bytes)
    {
        tracing::debug!("socket buffers stay the kernel's: {e}");
    }
}

/// Tunes a TCP socket for messaging: no Nagle delay, keepalive. Failures are logged only.
pub fn tune_tcp(socket: socket2::SockRef<'_>) {
    if let Err(e) = socket.set_tcp_nodelay(true) {
        tracing::debug!("TCP_NODELAY failed: {e}");
    }
    if let Err(e) = socket.set_tcp_keepalive(&KEEPALIVE) {
        tracing::debug!("TCP keepalive failed: {e}");
    }
}
