//! Baseline: `nats-server` on loopback, driven by a raw-protocol client (fairer than a
//! full client library, which adds its own overhead and silently drops when its queues fill).

use crate::report::Rate;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A nats-server child process on 127.0.0.1, killed on drop.
pub(crate) struct Server {
    child: Child,
    pub(crate) port: u16,
}

impl Server {
    pub(crate) fn start() -> Result<Server, BoxError> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start nats-server (apt-get install nats-server): {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err("nats-server did not start".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Server { child, port })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Conn {
    rd: BufReader<OwnedReadHalf>,
    wr: BufWriter<OwnedWriteHalf>,
    line: Vec<u8>,
}

impl Conn {
    async fn open(port: u16) -> Result<Conn, BoxError> {
        let s = TcpStream::connect(("127.0.0.1", port)).await?;
        s.set_nodelay(true)?;
        let (rd, wr) = s.into_split();
        let mut c = Conn {
            rd: BufReader::with_capacity(64 << 10, rd),
            wr: BufWriter::with_capacity(64 << 10, wr),
            line: Vec::new(),
        };
        c.read_line().await?; // INFO
        c.wr.write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\n")
            .await?;
        Ok(c)
    }

    async fn read_line(&mut self) -> Result<&[u8], BoxError> {
        self.line.clear();
        if self.rd.read_until(b'\n', &mut self.line).await? == 0 {
            return Err("nats closed the connection".into());
        }
        Ok(&self.line)
    }

    /// Round trip to the server: everything sent before is processed.
    async fn sync(&mut self) -> Result<(), BoxError> {
        self.wr.write_all(b"PING\r\n").await?;
        self.wr.flush().await?;
        loop {
            if self.read_line().await?.starts_with(b"PONG") {
                return Ok(());
            }
        }
    }

    /// The next MSG: its reply subject (if any) and payload.
    async fn next_msg(&mut self, payload: &mut Vec<u8>) -> Result<Option<String>, BoxError> {
        loop {
            let line = self.read_line().await?;
            if line.starts_with(b"PING") {
                self.wr.write_all(b"PONG\r\n").await?;
                self.wr.flush().await?;
                continue;
            }
            if !line.starts_with(b"MSG ") {
                continue;
            }
            let text = std::str::from_utf8(line)?.trim_end().to_string();
            let parts: Vec<&str> = text.split(' ').collect();
            let len: usize = parts.last().ok_or("bad MSG")?.parse()?;
            let reply = (parts.len() == 5).then(|| parts[3].to_string());
            payload.resize(len + 2, 0);
            self.rd.read_exact(payload).await?;
            payload.truncate(len);
            return Ok(reply);
        }
    }
}

pub(crate) async fn pub_sub(port: u16, size: usize, n: usize) -> Result<Rate, BoxError> {
    let mut sub = Conn::open(port).await?;
    sub.wr.write_all(b"SUB bench 1\r\n").await?;
    sub.sync().await?;
    let receiver = tokio::spawn(async move {
        let mut payload = Vec::new();
        let mut got = 0u64;
        while got < n as u64 {
            match tokio::time::timeout(Duration::from_secs(10), sub.next_msg(&mut payload)).await {
                Ok(Ok(_)) => got += 1,
                _ => break,
            }
        }
        got
    });
    let mut publisher = Conn::open(port).await?;
    let header = format!("PUB bench {size}\r\n");
    let payload = vec![0x5au8; size];
    let start = Instant::now();
    for _ in 0..n {
        publisher.wr.write_all(header.as_bytes()).await?;
        publisher.wr.write_all(&payload).await?;
        publisher.wr.write_all(b"\r\n").await?;
    }
    publisher.wr.flush().await?;
    let delivered = receiver.await?;
    Ok(Rate {
        delivered,
        dropped: n as u64 - delivered,
        elapsed: start.elapsed(),
    })
}

pub(crate) async fn request(
    port: u16,
    size: usize,
    rounds: usize,
) -> Result<Vec<Duration>, BoxError> {
    let mut responder = Conn::open(port).await?;
    responder.wr.write_all(b"SUB req 1\r\n").await?;
    responder.sync().await?;
    let serve = tokio::spawn(async move {
        let mut payload = Vec::new();
        while let Ok(Some(reply)) = responder.next_msg(&mut payload).await {
            let head = format!("PUB {reply} {}\r\n", payload.len());
            let ok = responder.wr.write_all(head.as_bytes()).await.is_ok()
                && responder.wr.write_all(&payload).await.is_ok()
                && responder.wr.write_all(b"\r\n").await.is_ok()
                && responder.wr.flush().await.is_ok();
            if !ok {
                break;
            }
        }
    });
    let mut c = Conn::open(port).await?;
    c.wr.write_all(b"SUB inbox 2\r\n").await?;
    c.sync().await?;
    let head = format!("PUB req inbox {size}\r\n");
    let payload = vec![0x5au8; size];
    let mut buf = Vec::new();
    let mut samples = Vec::with_capacity(rounds);
    for i in 0..rounds + rounds / 10 {
        let t = Instant::now();
        c.wr.write_all(head.as_bytes()).await?;
        c.wr.write_all(&payload).await?;
        c.wr.write_all(b"\r\n").await?;
        c.wr.flush().await?;
        c.next_msg(&mut buf).await?;
        // The first tenth warms up, as for Iris.
        if i >= rounds / 10 {
            samples.push(t.elapsed());
        }
    }
    serve.abort();
    Ok(samples)
}
