//! A raw relay connection for the scenarios that need exact control over what is read and
//! written (back-pressure end to end): the sans-IO client session over a tokio socket.

use bytes::BytesMut;
use iris_proto::relay::client::{ClientSession, SessionEvent};
use iris_proto::relay::codec::Limits;
use iris_proto::relay::{ClientPacket, NodePacket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A raw relay connection: handshake done, packets encoded by hand.
pub(crate) struct Raw {
    pub(crate) stream: TcpStream,
    pub(crate) session: ClientSession,
}

impl Raw {
    /// Connects to the node at `port` as a member of `cluster` (a plain client if empty).
    pub(crate) async fn connect(port: u16, cluster: &str) -> Result<Raw, BoxError> {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.set_nodelay(true)?;
        let mut init = BytesMut::new();
        ClientSession::encode_init(cluster, &mut init);
        stream.write_all(&init).await?;
        let mut raw = Raw {
            stream,
            session: ClientSession::new(Limits::default()),
        };
        match raw.next().await? {
            SessionEvent::Accepted => Ok(raw),
            other => Err(format!("handshake: {other:?}").into()),
        }
    }

    /// Sends one packet.
    pub(crate) async fn send(&mut self, p: ClientPacket) -> Result<(), BoxError> {
        let mut b = BytesMut::new();
        p.encode(&mut b);
        self.stream.write_all(&b).await?;
        Ok(())
    }

    /// The next event from the node.
    pub(crate) async fn next(&mut self) -> Result<SessionEvent, BoxError> {
        loop {
            if let Some(e) = self.session.poll()? {
                return Ok(e);
            }
            if self.stream.read_buf(room(self.session.read_buf())).await? == 0 {
                return Err("node closed the connection".into());
            }
        }
    }

    /// Subscribes, and returns once the node has the subscription in place (a request on
    /// the same connection to a cluster nobody serves times out after it).
    pub(crate) async fn subscribe(&mut self, topic: &str) -> Result<(), BoxError> {
        self.send(ClientPacket::Subscribe {
            topic: topic.into(),
        })
        .await?;
        self.send(ClientPacket::Request {
            id: 0,
            cluster: "nobody".into(),
            request: "sync".into(),
            timeout_ms: 1,
        })
        .await?;
        loop {
            if let SessionEvent::Packet(NodePacket::Reply { .. }) = self.next().await? {
                return Ok(());
            }
        }
    }
}

/// The read buffer with room for a large read: `read_buf` fills only spare capacity, and an
/// exhausted `BytesMut` grows by 64 bytes at a time (one system call per 64 bytes).
pub(crate) fn room(buf: &mut BytesMut) -> &mut BytesMut {
    buf.reserve(64 << 10);
    buf
}
