//! The discovery socket: where beacons go and where they are heard.
//!
//! The core says when to send a beacon and what to do with one heard
//! (`iris_proto::mesh::discovery`); this module carries them. Host discovery (the default
//! of the `iris` command) binds UDP on 127.0.0.1 at the first free one of a few well-known
//! ports ([`DEFAULT_PORTS`]) and sends beacons to all of them, so nodes on one machine find
//! each other with no flag; a node that found every port taken binds any port and is found
//! through its beacons to the others (they answer it). LAN discovery binds the same ports on
//! every IPv4 address and also sweeps the local subnets, a slice of addresses per beacon:
//! opt-in only, since it sends to every address of the networks this host is on.

use crate::runtime::{Datagrams, Runtime};
use bytes::Bytes;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;
use tracing::{debug, info, warn};

/// Where a node looks for other nodes of its network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discover {
    /// Nowhere: seeds only.
    None,
    /// Other nodes on this host, over loopback.
    Host,
    /// This host and every address of the local IPv4 subnets.
    Lan,
}

impl std::fmt::Display for Discover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Discover::None => "none",
            Discover::Host => "host",
            Discover::Lan => "lan",
        })
    }
}

impl std::str::FromStr for Discover {
    type Err = String;

    fn from_str(s: &str) -> Result<Discover, String> {
        match s {
            "none" => Ok(Discover::None),
            "host" => Ok(Discover::Host),
            "lan" => Ok(Discover::Lan),
            _ => Err(format!("{s:?}: expected host, lan or none")),
        }
    }
}

/// The well-known discovery ports: the 2014 original's three (digits of sqrt 2, e and pi)
/// and a few more of the same kind, so that several networks on one host still find a
/// free one. A node binds the first free port and beacons to all of them.
pub const DEFAULT_PORTS: [u16; 8] = [14142, 27182, 31415, 16180, 17320, 22360, 26457, 14427];

/// Subnet addresses swept per beacon in LAN mode.
const SWEEP: usize = 64;

/// Largest subnet swept (a /20): a node on a larger network sweeps the /20 around its
/// own address.
const MAX_SWEEP_PREFIX: u8 = 20;

/// The discovery socket and where beacons go.
pub(crate) struct Beacons<R: Runtime> {
    socket: Rc<R::Udp>,
    /// The well-known ports on this host (but this socket's own).
    host: Vec<SocketAddr>,
    /// Subnet addresses (LAN mode), swept a slice at a time.
    lan: Vec<SocketAddr>,
    cursor: usize,
}

impl<R: Runtime> Beacons<R> {
    /// Binds the discovery socket for `scope` on the first free of `ports` (any port if
    /// all are taken); `None` for [`Discover::None`].
    pub(crate) async fn bind(scope: Discover, ports: &[u16]) -> io::Result<Option<Beacons<R>>> {
        let ip = match scope {
            Discover::None => return Ok(None),
            Discover::Host => IpAddr::V4(Ipv4Addr::LOCALHOST),
            Discover::Lan => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        };
        let mut socket = None;
        for &port in ports.iter().chain(std::iter::once(&0)) {
            match R::bind_udp(SocketAddr::new(ip, port)).await {
                Ok(s) => {
                    socket = Some(s);
                    break;
                }
                Err(e) if port != 0 => debug!("discovery port {port} taken: {e}"),
                Err(e) => return Err(e),
            }
        }
        let socket = socket.expect("port 0 binds or returns");
        let own = socket.local_addr()?;
        if scope == Discover::Lan {
            socket.set_broadcast(false)?;
        }
        let host = ports
            .iter()
            .filter(|&&p| p != own.port())
            .map(|&p| SocketAddr::from((Ipv4Addr::LOCALHOST, p)))
            .collect();
        let lan = if scope == Discover::Lan {
            lan_targets(&ports[..ports.len().min(3)])
        } else {
            Vec::new()
        };
        if ports.contains(&own.port()) {
            info!("{scope} discovery on {own}");
        } else {
            info!("discovery on {own}: every well-known port was taken; found through the others");
        }
        if scope == Discover::Lan {
            info!("LAN discovery sweeps {} subnet addresses", lan.len());
        }
        Ok(Some(Beacons {
            socket: Rc::new(socket),
            host,
            lan,
            cursor: 0,
        }))
    }

    /// The socket, for the task that reads it.
    pub(crate) fn socket(&self) -> Rc<R::Udp> {
        self.socket.clone()
    }

    /// Sends a beacon to `to`, or everywhere discovery looks (the next slice of the
    /// subnets included). Best effort: what the socket cannot take now is dropped.
    pub(crate) fn send(&mut self, to: Option<SocketAddr>, data: &Bytes) {
        let one = |addr: SocketAddr| {
            if let Err(e) = self.socket.try_send_to(data, addr)
                && e.kind() != io::ErrorKind::WouldBlock
            {
                debug!("beacon to {addr}: {e}");
            }
        };
        match to {
            Some(addr) => one(addr),
            None => {
                for &addr in &self.host {
                    one(addr);
                }
                let n = self.lan.len().min(SWEEP);
                for _ in 0..n {
                    one(self.lan[self.cursor]);
                    self.cursor = (self.cursor + 1) % self.lan.len();
                }
            }
        }
    }
}

/// Every host address of this machine's IPv4 subnets (loopback excluded), at each port.
fn lan_targets(ports: &[u16]) -> Vec<SocketAddr> {
    let ifaces = match if_addrs::get_if_addrs() {
        Ok(i) => i,
        Err(e) => {
            warn!("cannot list network interfaces for LAN discovery: {e}");
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for iface in ifaces {
        let if_addrs::IfAddr::V4(v4) = iface.addr else {
            continue;
        };
        if v4.ip.is_loopback() {
            continue;
        }
        for host in subnet_hosts(v4.ip, v4.prefixlen) {
            for &port in ports {
                out.push(SocketAddr::from((host, port)));
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// The host addresses of `ip`'s subnet (of at most a /20 around it), but `ip` itself.
fn subnet_hosts(ip: Ipv4Addr, prefix: u8) -> Vec<Ipv4Addr> {
    let prefix = prefix.max(MAX_SWEEP_PREFIX);
    if prefix >= 31 {
        return Vec::new(); // point to point: nothing to sweep
    }
    let mask = u32::MAX << (32 - prefix);
    let net = u32::from(ip) & mask;
    let broadcast = net | !mask;
    (net + 1..broadcast)
        .map(Ipv4Addr::from)
        .filter(|&h| h != ip)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subnet_sweep_covers_its_hosts_but_not_itself_and_stops_at_a_slash_20() {
        let hosts = subnet_hosts(Ipv4Addr::new(10, 1, 2, 3), 24);
        assert_eq!(hosts.len(), 253);
        assert!(!hosts.contains(&Ipv4Addr::new(10, 1, 2, 3)));
        assert!(!hosts.contains(&Ipv4Addr::new(10, 1, 2, 0)));
        assert!(!hosts.contains(&Ipv4Addr::new(10, 1, 2, 255)));
        assert_eq!(subnet_hosts(Ipv4Addr::new(10, 1, 2, 3), 8).len(), 4093);
        assert!(subnet_hosts(Ipv4Addr::new(10, 1, 2, 3), 31).is_empty());
    }

    #[test]
    fn scopes_parse_and_nonsense_is_refused() {
        assert_eq!("host".parse(), Ok(Discover::Host));
        assert_eq!("lan".parse(), Ok(Discover::Lan));
        assert_eq!("none".parse(), Ok(Discover::None));
        assert!("everywhere".parse::<Discover>().is_err());
    }
}
