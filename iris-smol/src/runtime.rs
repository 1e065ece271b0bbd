//! [`Smol`]: the driver's [`Runtime`] on smol (`async-io` for sockets and timers,
//! `async-executor` for tasks).

use bytes::{BufMut, BytesMut};
use futures_lite::{AsyncWriteExt, StreamExt};
use iris_driver::runtime::{Datagrams, Listener, ReadBytes, Runtime, Task, WriteBytes, tune_tcp};
use smol::{Async, LocalExecutor};
use std::cell::RefCell;
use std::future::Future;
use std::io::{self, IoSlice, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

/// The smol runtime, as the driver and the client use it. The node runs on a
/// `LocalExecutor` driven by `async_io::block_on` on its thread. Clients spawn their tasks
/// where they are called from: on that executor when on a [`Smol::block_on`] thread (as
/// tokio's current-thread runtime keeps its tasks), so that clients of a node on their
/// own thread never cross threads; on smol's global executor anywhere else. As on tokio,
/// a connection made inside a `Smol::block_on` lives as long as that `block_on`: its tasks
/// end with it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Smol;

thread_local! {
    /// The executor of this thread's [`Smol::block_on`], for [`Smol::spawn_local`].
    static LOCAL: RefCell<Option<Rc<LocalExecutor<'static>>>> = const { RefCell::new(None) };
}

/// The read half of a TCP stream.
#[derive(Debug)]
pub struct TcpRead(Arc<Async<TcpStream>>);

/// The write half of a TCP stream.
#[derive(Debug)]
pub struct TcpWrite(Arc<Async<TcpStream>>);

impl ReadBytes for TcpRead {
    fn read_buf(&mut self, buf: &mut BytesMut) -> impl Future<Output = io::Result<usize>> + Send {
        if buf.capacity() == buf.len() {
            buf.reserve(4096);
        }
        self.0.read_with(move |s| {
            let len = buf.len();
            let n = socket2::SockRef::from(s).recv(buf.spare_capacity_mut())?;
            // SAFETY: recv initialized the first `n` bytes of the spare capacity it was
            // given (the kernel wrote them), so they may join the buffer's contents.
            unsafe { buf.set_len(len + n) };
            Ok(n)
        })
    }
}

impl WriteBytes for TcpWrite {
    fn write_vectored(
        &mut self,
        bufs: &[IoSlice<'_>],
    ) -> impl Future<Output = io::Result<usize>> + Send {
        self.0.write_with(move |s| (&*s).write_vectored(bufs))
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        self.0.get_ref().shutdown(Shutdown::Write)
    }
}

fn split(stream: Async<TcpStream>) -> (TcpRead, TcpWrite) {
    tune_tcp(socket2::SockRef::from(stream.get_ref()));
    let s = Arc::new(stream);
    (TcpRead(s.clone()), TcpWrite(s))
}

/// A TCP listener whose connections come tuned ([`tune_tcp`]) and split.
#[derive(Debug)]
pub struct SmolListener(Async<TcpListener>);

impl Listener<Smol> for SmolListener {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().local_addr()
    }

    async fn accept(&self) -> io::Result<(TcpRead, TcpWrite, SocketAddr)> {
        let (stream, from) = self.0.accept().await?;
        let (rd, wr) = split(stream);
        Ok((rd, wr, from))
    }
}

/// A UDP socket.
#[derive(Debug)]
pub struct SmolUdp(Async<UdpSocket>);

impl Datagrams for SmolUdp {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().local_addr()
    }

    fn set_broadcast(&self, on: bool) -> io::Result<()> {
        self.0.get_ref().set_broadcast(on)
    }

    fn try_send_to(&self, data: &[u8], to: SocketAddr) -> io::Result<usize> {
        // The socket is non-blocking: a full buffer is WouldBlock, not a wait.
        self.0.get_ref().send_to(data, to)
    }

    fn recv_from(&self, buf: &mut [u8]) -> impl Future<Output = io::Result<(usize, SocketAddr)>> {
        self.0.recv_from(buf)
    }
}

/// A smol task: cancelled when aborted, left to run when detached.
#[derive(Debug)]
pub struct SmolTask(smol::Task<()>);

impl Task for SmolTask {
    fn abort(self) {
        drop(self.0);
    }

    fn detach(self) {
        self.0.detach();
    }
}

/// One end's read half of an in-process pipe.
pub struct PipeRead(piper::Reader);

/// One end's write half of an in-process pipe.
pub struct PipeWrite(piper::Writer);

impl std::fmt::Debug for PipeRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PipeRead")
    }
}

impl std::fmt::Debug for PipeWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PipeWrite")
    }
}

impl ReadBytes for PipeRead {
    fn read_buf(&mut self, buf: &mut BytesMut) -> impl Future<Output = io::Result<usize>> + Send {
        let room = buf.capacity() - buf.len();
        // Straight from the pipe's buffer into ours: nothing zeroed, one copy.
        futures_lite::future::poll_fn(move |cx| {
            self.0
                .poll_drain(cx, (&mut *buf).limit(room.max(1)).writer())
        })
    }
}

impl WriteBytes for PipeWrite {
    async fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.write_vectored(bufs).await
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        self.0.close().await
    }
}

impl Runtime for Smol {
    type Reader = TcpRead;
    type Writer = TcpWrite;
    type Listener = SmolListener;
    type Udp = SmolUdp;
    type Task = SmolTask;
    type PipeReader = PipeRead;
    type PipeWriter = PipeWrite;

    const NAME: &'static str = "smol";

    fn block_on<F: Future>(fut: F) -> io::Result<F::Output> {
        let ex = Rc::new(LocalExecutor::new());
        let outer = LOCAL.with(|l| l.borrow_mut().replace(ex.clone()));
        let out = smol::block_on(ex.run(fut));
        LOCAL.with(|l| *l.borrow_mut() = outer);
        Ok(out)
    }

    fn spawn_local(fut: impl Future<Output = ()> + 'static) -> SmolTask {
        let ex = LOCAL.with(|l| l.borrow().clone());
        let ex = ex.expect("Smol::spawn_local outside Smol::block_on");
        SmolTask(ex.spawn(fut))
    }

    fn spawn(fut: impl Future<Output = ()> + Send + 'static) {
        match LOCAL.with(|l| l.borrow().clone()) {
            Some(ex) => ex.spawn(fut).detach(),
            None => smol::spawn(fut).detach(),
        }
    }

    fn unblock<T: Send + 'static>(
        f: impl FnOnce() -> T + Send + 'static,
    ) -> impl Future<Output = T> + Send {
        smol::unblock(f)
    }

    fn sleep_until(deadline: Instant) -> impl Future<Output = ()> + Send {
        let timer = smol::Timer::at(deadline);
        async move {
            timer.await;
        }
    }

    async fn listen(addr: SocketAddr) -> io::Result<SmolListener> {
        Async::<TcpListener>::bind(addr).map(SmolListener)
    }

    fn bound_buffers(reader: &TcpRead, bytes: usize) -> io::Result<()> {
        iris_driver::runtime::bound_buffers(socket2::SockRef::from(reader.0.get_ref()), bytes)
    }

    async fn connect(addr: SocketAddr) -> io::Result<(TcpRead, TcpWrite)> {
        Async::<TcpStream>::connect(addr).await.map(split)
    }

    async fn bind_udp(addr: SocketAddr) -> io::Result<SmolUdp> {
        Async::<UdpSocket>::bind(addr).map(SmolUdp)
    }

    fn pipe(capacity: usize) -> ((PipeRead, PipeWrite), (PipeRead, PipeWrite)) {
        let (a_rd, b_wr) = piper::pipe(capacity);
        let (b_rd, a_wr) = piper::pipe(capacity);
        (
            (PipeRead(a_rd), PipeWrite(a_wr)),
            (PipeRead(b_rd), PipeWrite(b_wr)),
        )
    }

    fn shutdown_signals() -> io::Result<impl Future<Output = String> + 'static> {
        use async_signal::{Signal, Signals};
        let mut signals = Signals::new([Signal::Int, Signal::Term])?;
        Ok(async move {
            let reason = match signals.next().await {
                Some(Ok(Signal::Int)) => "node shutting down (SIGINT)",
                _ => "node shutting down (SIGTERM)",
            };
            smol::spawn(async move {
                signals.next().await;
                eprintln!("iris: second signal: exiting at once");
                std::process::exit(130);
            })
            .detach();
            reason.into()
        })
    }
}
