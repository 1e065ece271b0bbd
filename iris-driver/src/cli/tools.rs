//! The messaging tools: `iris pub`, `sub`, `bcast`, `req` and `serve`, each a Rust client
//! of the node on this machine (`--port`, 55555 by default), as `nats pub` and friends are
//! of a NATS server.

use crate::client::{self, Connection, Error, Limits, ServiceHandler, ServiceLimits, TopicHandler};
use crate::runtime::Runtime;
use bytes::Bytes;
use std::io::Write;
use std::marker::PhantomData;
use std::process::ExitCode;
use std::time::Duration;

/// Where the node is.
#[derive(Debug, Clone, Copy, clap::Args)]
pub(super) struct Target {
    /// The node's relay port on this machine.
    #[arg(long, default_value_t = 55555, value_name = "PORT")]
    pub(super) port: u16,
}

/// `iris pub TOPIC [MSG]`.
#[derive(Debug, clap::Args)]
pub(super) struct Pub {
    /// The topic.
    topic: String,
    /// The event; without it, each line of standard input is one.
    #[arg(allow_hyphen_values = true)]
    message: Option<String>,
    #[command(flatten)]
    target: Target,
}

/// `iris sub TOPIC`.
#[derive(Debug, clap::Args)]
pub(super) struct Sub {
    /// The topic.
    topic: String,
    /// Exit after this many events.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    #[command(flatten)]
    target: Target,
}

/// `iris bcast CLUSTER [MSG]`.
#[derive(Debug, clap::Args)]
pub(super) struct Bcast {
    /// The cluster.
    cluster: String,
    /// The message; without it, each line of standard input is one.
    #[arg(allow_hyphen_values = true)]
    message: Option<String>,
    #[command(flatten)]
    target: Target,
}

/// `iris req CLUSTER [MSG]`.
#[derive(Debug, clap::Args)]
pub(super) struct Req {
    /// The cluster.
    cluster: String,
    /// The request; without it, all of standard input is.
    #[arg(allow_hyphen_values = true)]
    message: Option<String>,
    /// Milliseconds to wait for the reply.
    #[arg(long, default_value_t = 5000, value_name = "MS")]
    timeout: u64,
    #[command(flatten)]
    target: Target,
}

/// `iris serve CLUSTER [-- COMMAND ARGS...]`.
#[derive(Debug, clap::Args)]
pub(super) struct Serve {
    /// The cluster to serve as a member of.
    cluster: String,
    /// Answer each request with what this command prints when given the request on its
    /// standard input (a failing command's standard error is the requester's error).
    /// Without it, requests are echoed. Broadcasts to the cluster are printed, one a line.
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
    /// Requests handled at once.
    #[arg(long, default_value_t = 8, value_name = "N")]
    concurrency: usize,
    #[command(flatten)]
    target: Target,
}

/// Runs a tool's body on runtime `R`; an error is one line on stderr and exit status 1.
pub(super) fn run_tool<R: Runtime>(
    body: impl std::future::Future<Output = Result<(), String>>,
) -> ExitCode {
    match R::block_on(body) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("iris: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("iris: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Connects to the node on `port`, saying clearly when none listens.
pub(super) async fn connect<R: Runtime>(port: u16) -> Result<Connection, String> {
    client::connect::<R>(port)
        .await
        .map_err(|e| refused(port, e))
}

/// The error of a connection attempt, for people.
pub(super) fn refused(port: u16, e: Error) -> String {
    match e {
        Error::Io(why) => format!(
            "no Iris node answers on port {port} ({why}); start one (`iris --dev`) or name its \
             relay port with --port"
        ),
        other => format!("the node on port {port} refused the connection: {other}"),
    }
}

/// The messages to send: the one given, or each line of standard input (read on a thread
/// of its own, so the runtime's tasks keep running; at most 64 lines ahead).
fn messages(given: Option<String>) -> async_channel::Receiver<Bytes> {
    let (tx, rx) = async_channel::bounded(64);
    match given {
        Some(m) => {
            let _ = tx.try_send(Bytes::from(m));
        }
        None => {
            std::thread::spawn(move || {
                // Lines of bytes: a message need not be UTF-8.
                use std::io::BufRead;
                for line in std::io::stdin().lock().split(b'\n') {
                    let Ok(mut line) = line else { break };
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    if tx.send_blocking(Bytes::from(line)).is_err() {
                        break;
                    }
                }
            });
        }
    }
    rx
}

/// `iris pub`.
pub(super) fn publish<R: Runtime>(t: Pub) -> ExitCode {
    send_each::<R>(t.target.port, t.message, t.topic, true)
}

/// `iris bcast`.
pub(super) fn broadcast<R: Runtime>(t: Bcast) -> ExitCode {
    send_each::<R>(t.target.port, t.message, t.cluster, false)
}

/// Sends `message`, or each line of standard input, to `to`: published to that topic
/// (`publish`), or broadcast to that cluster.
fn send_each<R: Runtime>(
    port: u16,
    message: Option<String>,
    to: String,
    publish: bool,
) -> ExitCode {
    run_tool::<R>(async move {
        let conn = connect::<R>(port).await?;
        let rx = messages(message);
        while let Ok(m) = rx.recv().await {
            let (what, sent) = match publish {
                true => ("publish", conn.publish(&to, m).await),
                false => ("broadcast", conn.broadcast(&to, m).await),
            };
            sent.map_err(|e| format!("{what} to {to:?}: {e}"))?;
        }
        conn.close().await.map_err(|e| e.to_string())
    })
}

/// Writes `data` and a newline to stdout, flushed: the reader may be a pipe.
fn print_line(data: &[u8]) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    out.write_all(data)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush())
        .map_err(|e| format!("cannot write to standard output: {e}"))
}

/// Hands a topic's events to the printing loop, in order.
struct Printer(async_channel::Sender<Bytes>);

impl TopicHandler for Printer {
    async fn handle_event(&self, event: Bytes) {
        let _ = self.0.send(event).await;
    }
}

/// Waits for the next item of `rx`, checking every half second that `conn` is still up:
/// `Err` with why it ended otherwise.
async fn next_or_end<R: Runtime, T>(
    rx: &async_channel::Receiver<T>,
    conn: &Connection,
) -> Result<T, String> {
    loop {
        let tick = async {
            crate::runtime::sleep::<R>(Duration::from_millis(500)).await;
            None
        };
        let got = futures_lite::future::or(async { rx.recv().await.ok() }, tick).await;
        if let Some(item) = got {
            return Ok(item);
        }
        if let Some(e) = conn.ended() {
            return Err(format!("the node ended the connection: {e}"));
        }
    }
}

/// `iris sub`.
pub(super) fn subscribe<R: Runtime>(t: Sub) -> ExitCode {
    run_tool::<R>(async move {
        let conn = connect::<R>(t.target.port).await?;
        let (tx, rx) = async_channel::bounded(1024);
        // One worker: events are printed in the order the node delivered them.
        let limits = Limits {
            concurrency: 1,
            ..Limits::default()
        };
        conn.subscribe(&t.topic, Printer(tx), limits)
            .await
            .map_err(|e| format!("subscribe to {:?}: {e}", t.topic))?;
        let mut seen = 0;
        while t.count.is_none_or(|n| seen < n) {
            let event = next_or_end::<R, _>(&rx, &conn).await?;
            print_line(&event)?;
            seen += 1;
        }
        conn.close().await.map_err(|e| e.to_string())
    })
}

/// `iris req`.
pub(super) fn request<R: Runtime>(t: Req) -> ExitCode {
    let request = match t.message {
        Some(m) => Bytes::from(m),
        None => {
            let mut all = Vec::new();
            if let Err(e) = std::io::Read::read_to_end(&mut std::io::stdin(), &mut all) {
                eprintln!("iris: cannot read the request from standard input: {e}");
                return ExitCode::FAILURE;
            }
            Bytes::from(all)
        }
    };
    run_tool::<R>(async move {
        let conn = connect::<R>(t.target.port).await?;
        let timeout = Duration::from_millis(t.timeout);
        let reply = conn.request(&t.cluster, request, timeout).await;
        let _ = conn.close().await;
        match reply {
            Ok(reply) => print_line(&reply),
            Err(Error::TimedOut) => Err(format!(
                "no reply from cluster {:?} within {} ms (no member, or none answered)",
                t.cluster, t.timeout
            )),
            Err(Error::Remote(fault)) => {
                Err(format!("the member of {:?} failed: {fault}", t.cluster))
            }
            Err(e) => Err(format!("request to {:?}: {e}", t.cluster)),
        }
    })
}

/// The member `iris serve` registers: echoes, or runs a command per request.
struct Server<R> {
    command: Vec<String>,
    dropped: async_channel::Sender<Error>,
    runtime: PhantomData<fn() -> R>,
}

impl<R: Runtime> ServiceHandler for Server<R> {
    async fn handle_broadcast(&self, message: Bytes) {
        if let Err(e) = print_line(&message) {
            eprintln!("iris: {e}");
        }
    }

    async fn handle_request(&self, request: Bytes) -> Result<Bytes, String> {
        if self.command.is_empty() {
            return Ok(request);
        }
        let command = self.command.clone();
        R::unblock(move || run_command(&command, &request)).await
    }

    async fn handle_drop(&self, reason: Error) {
        let _ = self.dropped.try_send(reason);
    }
}

/// Runs `command` with `input` on its standard input: its standard output, or why it failed.
fn run_command(command: &[String], input: &[u8]) -> Result<Bytes, String> {
    use std::process::{Command, Stdio};
    let name = &command[0];
    let mut child = Command::new(name)
        .args(&command[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {name:?}: {e}"))?;
    // Fed from a thread: a command that writes before it has read everything must not
    // block on a full pipe while we block on its input.
    let mut stdin = child.stdin.take().expect("piped");
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{name:?}: {e}"))?;
    let _ = feeder.join();
    if out.status.success() {
        Ok(Bytes::from(out.stdout))
    } else {
        let said = String::from_utf8_lossy(&out.stderr);
        Err(format!("{name} failed ({}): {}", out.status, said.trim()))
    }
}

/// `iris serve`.
pub(super) fn serve<R: Runtime>(t: Serve) -> ExitCode {
    run_tool::<R>(async move {
        let signals = R::shutdown_signals().map_err(|e| format!("cannot catch signals: {e}"))?;
        let (dropped, gone) = async_channel::bounded(1);
        let server = Server::<R> {
            command: t.command.clone(),
            dropped,
            runtime: PhantomData,
        };
        let limits = ServiceLimits {
            request: Limits {
                concurrency: t.concurrency.max(1),
                ..Limits::default()
            },
            ..ServiceLimits::default()
        };
        let conn = client::register::<R, _>(t.target.port, &t.cluster, server, limits)
            .await
            .map_err(|e| refused(t.target.port, e))?;
        let how = match t.command.is_empty() {
            true => "echoing requests".to_string(),
            false => format!("answering with {:?}", t.command.join(" ")),
        };
        eprintln!(
            "iris: serving cluster {:?} on port {}, {how}",
            t.cluster, t.target.port
        );
        let ended = futures_lite::future::or(
            async {
                signals.await;
                None
            },
            async { gone.recv().await.ok() },
        )
        .await;
        match ended {
            None => conn.close().await.map_err(|e| e.to_string()),
            Some(why) => Err(format!("the node dropped the service: {why}")),
        }
    })
}
