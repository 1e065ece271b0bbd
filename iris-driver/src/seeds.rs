//! Seeds named by host name (`--seed NAME:PORT`): resolved again on every retry, every
//! address they resolve to joined through, and a name that resolves to nothing yet only
//! logged and retried.
//!
//! A Kubernetes headless Service's name lists the ready pods behind it (with
//! `publishNotReadyAddresses`, every pod as soon as it is scheduled), and a round-robin
//! DNS name lists several nodes: resolved once at boot, first address only, either could
//! name nobody useful. The core cannot resolve names (it does no IO); it is told it has
//! seeds still to come (`MeshConfig::seeds_to_come`: it founds no network of its own
//! meanwhile) and each address this task finds ([`iris_proto::Input::JoinVia`]).

use crate::driver::{SharedRc, handle};
use crate::runtime::{Runtime, sleep};
use iris_proto::Input;
use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;
use tracing::{debug, info, warn};

/// A seed given by name: a host and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedName {
    host: String,
    port: u16,
}

impl SeedName {
    /// Parses `HOST:PORT` (a literal address is not a name: see [`parse_seed`]).
    pub fn parse(s: &str) -> Result<SeedName, String> {
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("seed {s:?}: expected HOST:PORT"))?;
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("seed {s:?}: {port:?} is not a port"))?;
        if host.is_empty() || host.contains(':') {
            return Err(format!(
                "seed {s:?}: expected HOST:PORT (an IPv6 address in [ ])"
            ));
        }
        Ok(SeedName {
            host: host.to_string(),
            port,
        })
    }

    /// Every address the name resolves to now (blocking: the system's resolver).
    fn resolve(&self) -> std::io::Result<Vec<SocketAddr>> {
        let mut all: Vec<SocketAddr> = (self.host.as_str(), self.port).to_socket_addrs()?.collect();
        all.dedup();
        Ok(all)
    }
}

impl std::fmt::Display for SeedName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// A `--seed` value: a literal address, or a name to resolve on every retry.
pub fn parse_seed(s: &str) -> Result<Result<SocketAddr, SeedName>, String> {
    match s.parse::<SocketAddr>() {
        Ok(addr) => Ok(Ok(addr)),
        Err(_) => SeedName::parse(s).map(Err),
    }
}

/// Resolves `names` now and every `period` while the node knows nobody, and offers the
/// node every address found. What each name resolves to is logged when it changes.
pub(crate) async fn seed_names_task<R: Runtime>(
    shared: SharedRc<R>,
    names: Vec<SeedName>,
    period: Duration,
) {
    let mut last: BTreeMap<String, Vec<SocketAddr>> = BTreeMap::new();
    loop {
        if crate::driver::peers(&shared) == 0 {
            let batch = names.clone();
            let resolved = R::unblock(move || {
                batch
                    .iter()
                    .map(|n| (n.to_string(), n.resolve()))
                    .collect::<Vec<_>>()
            })
            .await;
            for (name, result) in resolved {
                let addrs = result.as_ref().map_or(&[][..], |a| a.as_slice());
                if last.get(&name).map(Vec::as_slice) != Some(addrs) {
                    match &result {
                        Ok(a) if !a.is_empty() => {
                            let list: Vec<String> = a.iter().map(ToString::to_string).collect();
                            info!("seed {name} resolves to {}", list.join(", "));
                        }
                        Ok(_) => warn!("seed {name} resolves to no address yet; retrying"),
                        Err(e) => warn!("seed {name} does not resolve yet ({e}); retrying"),
                    }
                    last.insert(name.clone(), addrs.to_vec());
                } else {
                    debug!("seed {name}: {addrs:?}");
                }
                for &addr in addrs {
                    handle(&shared, Input::JoinVia(addr));
                }
            }
        }
        sleep::<R>(period).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_are_addresses_or_names_with_a_port() {
        assert_eq!(
            parse_seed("10.0.0.5:7000"),
            Ok(Ok("10.0.0.5:7000".parse().unwrap()))
        );
        assert_eq!(
            parse_seed("[::1]:7000"),
            Ok(Ok("[::1]:7000".parse().unwrap()))
        );
        let name = parse_seed("iris.default.svc.cluster.local:7000")
            .unwrap()
            .unwrap_err();
        assert_eq!(name.to_string(), "iris.default.svc.cluster.local:7000");
        for bad in [
            "iris",
            "iris:",
            "iris:http",
            ":7000",
            "::1:7000",
            "iris:70000",
        ] {
            assert!(parse_seed(bad).is_err(), "{bad}");
        }
    }

    /// (Names from the hosts file only: a test must not query a name server. Names that
    /// resolve to nothing, then to two nodes: the suite's `discovery` case, inside a
    /// network namespace with a hosts file of its own.)
    #[test]
    fn a_name_resolves_to_every_address() {
        let local = SeedName::parse("localhost:7000").unwrap();
        let all = local.resolve().unwrap();
        assert!(!all.is_empty());
        assert!(
            all.iter().all(|a| a.ip().is_loopback() && a.port() == 7000),
            "{all:?}"
        );
    }
}
