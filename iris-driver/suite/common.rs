//! Shared by the integration tests: the real `iris` binary on a free loopback port, and a
//! raw relay client that speaks the wire protocol byte by byte.
#![allow(dead_code, unreachable_pub)]

use bytes::{Bytes, BytesMut};
use iris_proto::relay::codec::{Limits, decode_node};
use iris_proto::relay::{ClientPacket, NodePacket};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Generous bound for anything that should happen "at once" on loopback.
pub const PROMPT: Duration = Duration::from_secs(5);

/// The `iris` binary in dev mode on a free port; killed when dropped.
pub struct IrisProcess {
    pub child: Child,
    pub port: u16,
    pub log: std::sync::mpsc::Receiver<String>,
    /// Log lines read before the relay port was reported.
    pub boot_log: Vec<String>,
}

impl IrisProcess {
    pub fn start(extra: &[&str]) -> IrisProcess {
        let mut args = vec!["--dev"];
        args.extend_from_slice(extra);
        IrisProcess::start_with(&args)
    }

    /// A node with exactly these flags (plus a free relay port and info logs), once its
    /// relay port is open.
    pub fn start_with(flags: &[&str]) -> IrisProcess {
        let mut p = IrisProcess::launch(flags);
        p.wait_port();
        p
    }

    /// Waits until the node reports its relay port (for a networked node: once its overlay
    /// has converged) and notes it.
    pub fn wait_port(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        self.port = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .log
                .recv_timeout(left)
                .expect("iris did not report its port");
            if let Some(rest) = line.split("listening on port ").nth(1) {
                break rest.trim_end_matches('.').parse().expect("port number");
            }
            self.boot_log.push(line);
        };
    }

    /// A node with these flags (plus a free relay port and info logs unless `flags` name
    /// another `--log`), without waiting for anything: `port` is 0 until it is known.
    pub fn launch(flags: &[&str]) -> IrisProcess {
        IrisProcess::launch_in(None, flags)
    }

    /// [`IrisProcess::launch`] inside a network namespace (`ip netns exec`). The flags are
    /// kept [`apart`] from other runs of the suite.
    pub fn launch_in(netns: Option<&str>, flags: &[&str]) -> IrisProcess {
        let log: &[&str] = if flags.contains(&"--log") {
            &[]
        } else {
            &["--log", "info"]
        };
        let mut command = match netns {
            None => Command::new(crate::rt::BIN),
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, crate::rt::BIN]);
                c
            }
        };
        let mut child = command
            .args(["--port", "0"])
            .args(log)
            .args(apart(flags))
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start iris");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        IrisProcess {
            child,
            port: 0,
            log: rx,
            boot_log: Vec::new(),
        }
    }

    /// Sends a signal without waiting for anything.
    pub fn kill(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok);
    }

    /// Waits for a log line containing `needle` (from the boot log, then as they come).
    pub fn wait_line(&self, needle: &str) -> String {
        if let Some(l) = self.boot_log.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .log
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no log line with {needle:?}"));
            if line.contains(needle) {
                return line;
            }
        }
    }

    pub fn connect(&self, cluster: &str) -> RawClient {
        RawClient::connect(self.port, cluster)
    }

    /// Waits for the process to exit (after a signal sent with [`IrisProcess::kill`]).
    pub fn wait(&mut self) -> std::process::ExitStatus {
        self.child.wait().expect("wait for iris")
    }

    /// Sends SIGTERM and waits for the process to exit; returns how long that took.
    pub fn terminate(&mut self) -> (Duration, std::process::ExitStatus) {
        self.signal("TERM")
    }

    /// Sends a signal (`TERM`, `INT`) and waits for the process to exit.
    pub fn signal(&mut self, sig: &str) -> (Duration, std::process::ExitStatus) {
        let t = Instant::now();
        self.kill(sig);
        let status = self.child.wait().expect("wait for iris");
        (t.elapsed(), status)
    }

    /// Every log line not yet read, up to the end of the output: for a process that has
    /// exited (its reader thread may still be passing lines on; this waits for it to end).
    pub fn rest_of_log(&self) -> Vec<String> {
        let mut rest = Vec::new();
        while let Ok(line) = self.log.recv_timeout(Duration::from_secs(30)) {
            rest.push(line);
        }
        rest
    }

    /// Resident memory of the node process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

impl Drop for IrisProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking relay client that sends exactly the bytes it is told to.
pub struct RawClient {
    pub stream: TcpStream,
    buf: BytesMut,
    limits: Limits,
}

/// What a read from the node turned up.
#[derive(Debug, PartialEq, Eq)]
pub enum Got {
    Packet(NodePacket),
    /// The node closed the socket.
    Eof,
    /// Nothing within the wait.
    Nothing,
}

impl RawClient {
    /// [`RawClient::open`] and [`RawClient::handshake`] as `cluster` ("": a plain client).
    pub fn connect(port: u16, cluster: &str) -> RawClient {
        let mut c = RawClient::open(port);
        c.handshake(cluster);
        c
    }

    pub fn open(port: u16) -> RawClient {
        RawClient::from_stream(TcpStream::connect(("127.0.0.1", port)).expect("connect"))
    }

    pub fn from_stream(stream: TcpStream) -> RawClient {
        stream.set_nodelay(true).unwrap();
        RawClient {
            stream,
            buf: BytesMut::new(),
            limits: Limits::default(),
        }
    }

    pub fn handshake(&mut self, cluster: &str) {
        let mut b = BytesMut::new();
        iris_proto::relay::client::ClientSession::encode_init(cluster, &mut b);
        self.write(&b);
        match self.recv() {
            NodePacket::Init { magic, version } => {
                assert_eq!(&magic[..], b"iris-relay-magic");
                assert_eq!(&version[..], b"v1.0-draft2");
            }
            other => panic!("expected INIT, got {other:?}"),
        }
    }

    pub fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to node");
    }

    pub fn send(&mut self, p: ClientPacket) {
        let mut b = BytesMut::new();
        p.encode(&mut b);
        self.write(&b);
    }

    /// The next packet, or EOF, or nothing within `wait`.
    pub fn poll(&mut self, wait: Duration) -> Got {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(p) = decode_node(&mut self.buf, &self.limits).expect("node sent garbage") {
                return Got::Packet(p);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Got::Nothing;
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Got::Eof,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Got::Nothing;
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Got::Eof,
                Err(e) => panic!("read from node: {e}"),
            }
        }
    }

    /// The next packet; fails the test if none comes promptly.
    pub fn recv(&mut self) -> NodePacket {
        match self.poll(PROMPT) {
            Got::Packet(p) => p,
            other => panic!("expected a packet, got {other:?}"),
        }
    }

    /// Asserts that nothing arrives for `wait`.
    pub fn expect_silence(&mut self, wait: Duration) {
        assert_eq!(self.poll(wait), Got::Nothing);
    }

    /// Asserts the node closes the socket promptly, after any packets; returns those.
    pub fn expect_eof(&mut self) -> Vec<NodePacket> {
        let mut got = Vec::new();
        loop {
            match self.poll(PROMPT) {
                Got::Packet(p) => got.push(p),
                Got::Eof => return got,
                Got::Nothing => panic!("node did not close the connection; got {got:?}"),
            }
        }
    }

    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }
}

pub fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// `flags` with the network name and the discovery ports made this run's own: the suite
/// runs once per runtime, often at the same time, and on a shared machine other clones run
/// it too; the networks of one run's cases must not find (or take the discovery ports of)
/// another's. A name gets the runtime and this process's id; each discovery port a case
/// names stands for a free port of this process's own ([`own_port`]).
pub fn apart(flags: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(flags.len());
    let mut flags = flags.iter();
    while let Some(&f) = flags.next() {
        out.push(f.to_string());
        // `--net` and the original's single-dash `-net` alike.
        let flag = f.strip_prefix('-').map(|g| g.trim_start_matches('-'));
        match (flag.unwrap_or_default(), flags.clone().next()) {
            ("net", Some(name)) => {
                out.push(format!(
                    "{name} ({} {})",
                    crate::rt::NAME,
                    std::process::id()
                ));
                flags.next();
            }
            ("discovery-ports", Some(ports)) => {
                let own: Vec<String> = ports
                    .split(',')
                    .map(|p| match p.parse::<u16>() {
                        Ok(p) => own_port(p).to_string(),
                        Err(_) => p.to_string(),
                    })
                    .collect();
                out.push(own.join(","));
                flags.next();
            }
            _ => {}
        }
    }
    out
}

/// The UDP port that stands for `port` in this process: a free one on loopback, picked by
/// the kernel the first time a case names `port`, the same for every node after that.
/// (Fixed ports were shared with every other run of the suite on the machine, whose nodes
/// then took them or answered on them.)
pub fn own_port(port: u16) -> u16 {
    static OWN: std::sync::Mutex<std::collections::BTreeMap<u16, u16>> =
        std::sync::Mutex::new(std::collections::BTreeMap::new());
    let mut own = OWN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(&p) = own.get(&port) {
        return p;
    }
    let free = loop {
        let socket = std::net::UdpSocket::bind(("127.0.0.1", 0)).expect("a free UDP port");
        let p = socket.local_addr().expect("its port").port();
        if !own.values().any(|&q| q == p) {
            break p;
        }
    };
    own.insert(port, free);
    free
}

/// The path of a key in iris-proto's test fixtures.
pub fn fixture(name: &str) -> String {
    format!(
        "{}/../iris-proto/tests/fixtures/{name}",
        crate::rt::MANIFEST_DIR
    )
}

/// `n` nodes of network `name` (the fixture key), each its own `iris` process, finding
/// each other by host discovery on their own UDP `ports` (so that networks of tests running
/// at once stay apart), returned once every one serves and has converged with all others.
pub fn network(name: &str, n: usize, ports: &str) -> Vec<IrisProcess> {
    network_with(name, n, ports, &[])
}

/// [`network`], each node started with the `extra` flags too.
pub fn network_with(name: &str, n: usize, ports: &str, extra: &[&str]) -> Vec<IrisProcess> {
    let key = fixture("net-pkcs8.pem");
    let mut flags = vec!["--net", name, "--rsa", &key, "--discovery-ports", ports];
    flags.extend_from_slice(extra);
    let mut nodes: Vec<IrisProcess> = (0..n).map(|_| IrisProcess::launch(&flags)).collect();
    for node in &mut nodes {
        node.wait_port();
    }
    let all = format!("converged with {} remote connections", n - 1);
    for node in &nodes {
        node.wait_line(&all);
    }
    nodes
}

/// Builds a tunnel from `c` (its id 5) to the member `m` (its id 9) of `cluster`; returns
/// once both sides have their windows.
pub fn build_tunnel(c: &mut RawClient, m: &mut RawClient, cluster: &str) {
    c.send(ClientPacket::TunInit {
        tun_id: 5,
        cluster: cluster.into(),
        timeout_ms: 5000,
    });
    let NodePacket::TunInit {
        build_id,
        chunk_limit: 65536,
    } = m.recv()
    else {
        panic!("expected an inbound tunnel offer");
    };
    m.send(ClientPacket::TunConfirm {
        build_id,
        tun_id: 9,
    });
    m.send(ClientPacket::TunAllow {
        tun_id: 9,
        space: 64 << 20,
    });
    assert_eq!(
        c.recv(),
        NodePacket::TunConfirm {
            tun_id: 5,
            chunk_limit: Some(65536)
        }
    );
    assert_eq!(
        c.recv(),
        NodePacket::TunAllow {
            tun_id: 5,
            space: 4 << 20
        }
    );
    assert_eq!(
        m.recv(),
        NodePacket::TunAllow {
            tun_id: 9,
            space: 4 << 20
        }
    );
}

/// The metrics address a node logged.
pub fn metrics_addr(node: &IrisProcess) -> String {
    let line = node.wait_line("metrics on http://");
    let rest = line.split("http://").nth(1).unwrap();
    rest.split("/metrics").next().unwrap().trim().to_string()
}

/// `GET path`: the status line and the body.
pub fn get(addr: &str, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

/// The value of the sample `name` (with its labels, as written) in a scrape.
pub fn sample(body: &str, name: &str) -> u64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {name} in\n{body}"))
        .parse()
        .unwrap()
}

/// The body of a scrape of `/metrics` at `addr`.
pub fn scrape(addr: &str) -> String {
    get(addr, "/metrics").1
}

/// A case that needs network namespaces says why it cannot run where none can be made (not
/// root, no iproute2) and skips, unless `IRIS_REQUIRE_NETNS` is set (CI sets it: there
/// such a case must run, not pass by skipping).
pub fn skip_without_namespaces(why: &str) {
    assert!(
        std::env::var_os("IRIS_REQUIRE_NETNS").is_none(),
        "IRIS_REQUIRE_NETNS is set and network namespaces cannot be made here: {why}"
    );
    eprintln!("skipped: cannot create network namespaces here ({why})");
}

/// One `iris --net NET` process in each of namespaces `names`, node `i` on peer address
/// `addrs[i]` (no discovery), every one but the first seeded with the first; each has
/// opened its relay port.
pub fn network_in(names: &[String], net: &str, addrs: &[String]) -> Vec<IrisProcess> {
    let key = fixture("net-pkcs8.pem");
    (0..names.len())
        .map(|i| {
            let mut flags = vec![
                "--net",
                net,
                "--rsa",
                key.as_str(),
                "--discover",
                "none",
                "--peer-bind",
                addrs[i].as_str(),
            ];
            if i > 0 {
                flags.extend(["--seed", addrs[0].as_str()]);
            }
            let mut p = IrisProcess::launch_in(Some(&names[i]), &flags);
            p.wait_port();
            p
        })
        .collect()
}

/// Runs `ip ARGS`: its error output as the error if it fails.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs `iris ARGS` (the runtime's binary) inside network namespace `ns`: the process, its
/// standard input if `input`, and its standard output line by line.
pub fn tool_in(
    ns: &str,
    args: &[&str],
    input: bool,
) -> (
    Child,
    Option<std::process::ChildStdin>,
    std::sync::mpsc::Receiver<String>,
) {
    use std::io::BufRead;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, crate::rt::BIN])
        .args(args)
        .stdin(if input {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("ip netns exec iris");
    let stdin = child.stdin.take();
    let out = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, stdin, rx)
}

/// Two network namespaces joined by a veth pair (10.`net`.N.1 and .2 /24, N from this
/// process's id), removed on drop.
pub struct Namespaces {
    pub names: [String; 2],
    pub veth: [String; 2],
}

impl Namespaces {
    /// `None` (with the reason) where namespaces cannot be made (not root, no iproute2).
    /// `kind` names them apart from other cases' (`lan`, `cut`), as does `net`.
    pub fn create(kind: &str, net: u8) -> Result<Namespaces, String> {
        let tag = std::process::id() % 200;
        let names = [format!("iris-{kind}-a{tag}"), format!("iris-{kind}-b{tag}")];
        let veth = [format!("iris{kind}a{tag}"), format!("iris{kind}b{tag}")];
        let ns = Namespaces {
            names: names.clone(),
            veth: veth.clone(),
        };
        for n in &names {
            ip(&["netns", "add", n])?;
        }
        ip(&[
            "link", "add", &veth[0], "netns", &names[0], "type", "veth", "peer", "name", &veth[1],
            "netns", &names[1],
        ])?;
        for (i, (n, v)) in names.iter().zip(&veth).enumerate() {
            let addr = format!("10.{net}.{tag}.{}/24", i + 1);
            ip(&["-n", n, "addr", "add", &addr, "dev", v])?;
            ip(&["-n", n, "link", "set", v, "up"])?;
            ip(&["-n", n, "link", "set", "lo", "up"])?;
        }
        Ok(ns)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

/// `n` network namespaces on one bridge (each 10.`net`.N.(i+1)/24 on a veth into a hub
/// namespace that holds the bridge; N from this process's id; no route out), removed on
/// drop. A host's link goes down with `ip -n names[i] link set veth[i] down`.
pub struct Bridged {
    pub names: Vec<String>,
    pub veth: Vec<String>,
    hub: String,
}

impl Bridged {
    /// `None` (with the reason) where namespaces cannot be made (not root, no iproute2).
    /// `kind` names them apart from other cases' (at most 6 characters), as does `net`.
    pub fn create(kind: &str, net: u8, n: usize) -> Result<Bridged, String> {
        let tag = std::process::id() % 200;
        let hub = format!("iris-{kind}-hub{tag}");
        let names: Vec<String> = (0..n).map(|i| format!("iris-{kind}-{i}-{tag}")).collect();
        let veth: Vec<String> = (0..n).map(|i| format!("ir{kind}{i}x{tag}")).collect();
        let ns = Bridged {
            names: names.clone(),
            veth: veth.clone(),
            hub: hub.clone(),
        };
        ip(&["netns", "add", &hub])?;
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        for (i, (name, v)) in names.iter().zip(&veth).enumerate() {
            ip(&["netns", "add", name])?;
            let port = format!("ir{kind}{i}h{tag}");
            ip(&[
                "link", "add", v, "netns", name, "type", "veth", "peer", "name", &port, "netns",
                &hub,
            ])?;
            ip(&["-n", &hub, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", &hub, "link", "set", &port, "up"])?;
            let addr = format!("10.{net}.{tag}.{}/24", i + 1);
            ip(&["-n", name, "addr", "add", &addr, "dev", v])?;
            ip(&["-n", name, "link", "set", v, "up"])?;
            ip(&["-n", name, "link", "set", "lo", "up"])?;
        }
        Ok(ns)
    }

    /// Host `i`'s link goes `state` ("up" or "down").
    pub fn link(&self, i: usize, state: &str) {
        let ok = Command::new("ip")
            .args(["-n", &self.names[i], "link", "set", &self.veth[i], state])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ip link set {} {state}", self.veth[i]);
    }
}

impl Drop for Bridged {
    fn drop(&mut self) {
        for n in self.names.iter().chain([&self.hub]) {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

/// A client whose socket has a small receive buffer, so that what it has not read stays
/// in the node rather than in the kernel.
pub fn small_window_client(port: u16, cluster: &str) -> RawClient {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(64 << 10).unwrap();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    sock.connect(&addr.into()).unwrap();
    let mut c = RawClient::from_stream(sock.into());
    c.handshake(cluster);
    c
}
