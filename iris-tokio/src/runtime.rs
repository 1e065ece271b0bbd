//! [`Tokio`]: the driver's [`Runtime`] on tokio.

use bytes::BytesMut;
use iris_driver::runtime::{Datagrams, Listener, ReadBytes, Runtime, Task, WriteBytes, tune_tcp};
use std::future::Future;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// The tokio runtime, as the driver and the client use it. The node runs on a
/// `current_thread` runtime with a `LocalSet`; clients on whatever tokio runtime they are
/// called from.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tokio;

/// A tokio stream half, as the driver reads and writes it.
#[derive(Debug)]
pub struct Io<T>(pub T);

impl<T: AsyncRead + Send + Unpin + 'static> ReadBytes for Io<T> {
    async fn read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        self.0.read_buf(buf).await
    }
}

impl<T: AsyncWrite + Send + Unpin + 'static> WriteBytes for Io<T> {
    async fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.write_vectored(bufs).await
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        self.0.shutdown().await
    }
}

/// A tokio TCP listener whose connections come tuned ([`tune_tcp`]) and split.
#[derive(Debug)]
pub struct TokioListener(TcpListener);

impl Listener<Tokio> for TokioListener {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }

    async fn accept(&self) -> io::Result<(TcpRead, TcpWrite, SocketAddr)> {
        let (stream, from) = self.0.accept().await?;
        let (rd, wr) = split(stream);
        Ok((rd, wr, from))
    }
}

/// The read half of a TCP stream.
pub type TcpRead = Io<tokio::net::tcp::OwnedReadHalf>;
/// The write half of a TCP stream.
pub type TcpWrite = Io<tokio::net::tcp::OwnedWriteHalf>;

fn split(stream: TcpStream) -> (TcpRead, TcpWrite) {
    tune_tcp(socket2::SockRef::from(&stream));
    let (rd, wr) = stream.into_split();
    (Io(rd), Io(wr))
}

/// A tokio UDP socket.
#[derive(Debug)]
pub struct TokioUdp(UdpSocket);

impl Datagrams for TokioUdp {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }

    fn set_broadcast(&self, on: bool) -> io::Result<()> {
        self.0.set_broadcast(on)
    }

    fn try_send_to(&self, data: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.0.try_send_to(data, to)
    }

    fn recv_from(&self, buf: &mut [u8]) -> impl Future<Output = io::Result<(usize, SocketAddr)>> {
        self.0.recv_from(buf)
    }
}

/// A tokio task: aborted on request, detached when dropped.
#[derive(Debug)]
pub struct TokioTask(tokio::task::JoinHandle<()>);

impl Task for TokioTask {
    fn abort(self) {
        self.0.abort();
    }

    fn detach(self) {}
}

/// One end's read half of an in-process pipe.
pub type PipeRead = Io<tokio::io::ReadHalf<DuplexStream>>;
/// One end's write half of an in-process pipe.
pub type PipeWrite = Io<tokio::io::WriteHalf<DuplexStream>>;

impl Runtime for Tokio {
    type Reader = TcpRead;
    type Writer = TcpWrite;
    type Listener = TokioListener;
    type Udp = TokioUdp;
    type Task = TokioTask;
    type PipeReader = PipeRead;
    type PipeWriter = PipeWrite;

    const NAME: &'static str = "tokio";

    fn block_on<F: Future>(fut: F) -> io::Result<F::Output> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let local = tokio::task::LocalSet::new();
        Ok(local.block_on(&rt, fut))
    }

    fn spawn_local(fut: impl Future<Output = ()> + 'static) -> TokioTask {
        TokioTask(tokio::task::spawn_local(fut))
    }

    fn spawn(fut: impl Future<Output = ()> + Send + 'static) {
        tokio::spawn(fut);
    }

    async fn unblock<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        match tokio::task::spawn_blocking(f).await {
            Ok(v) => v,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    fn sleep_until(deadline: Instant) -> impl Future<Output = ()> + Send {
        tokio::time::sleep_until(deadline.into())
    }

    async fn listen(addr: SocketAddr) -> io::Result<TokioListener> {
        TcpListener::bind(addr).await.map(TokioListener)
    }

    fn bound_buffers(reader: &TcpRead, bytes: usize) -> io::Result<()> {
        iris_driver::runtime::bound_buffers(socket2::SockRef::from(reader.0.as_ref()), bytes)
    }

    async fn connect(addr: SocketAddr) -> io::Result<(TcpRead, TcpWrite)> {
        TcpStream::connect(addr).await.map(split)
    }

    async fn bind_udp(addr: SocketAddr) -> io::Result<TokioUdp> {
        UdpSocket::bind(addr).await.map(TokioUdp)
    }

    fn pipe(capacity: usize) -> ((PipeRead, PipeWrite), (PipeRead, PipeWrite)) {
        let (a, b) = tokio::io::duplex(capacity);
        let (ar, aw) = tokio::io::split(a);
        let (br, bw) = tokio::io::split(b);
        ((Io(ar), Io(aw)), (Io(br), Io(bw)))
    }

    fn shutdown_signals() -> io::Result<impl Future<Output = String> + 'static> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        Ok(async move {
            let reason = tokio::select! {
                _ = int.recv() => "node shutting down (SIGINT)",
                _ = term.recv() => "node shutting down (SIGTERM)",
            };
            tokio::spawn(async move {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
                eprintln!("iris: second signal: exiting at once");
                std::process::exit(130);
            });
            reason.into()
        })
    }
}
