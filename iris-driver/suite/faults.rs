//! Multicasts through faults on real processes (issue 21): five `iris --net` processes,
//! each in a network namespace of its own on one bridge (no route out), with a subscriber
//! and a member on every node and broadcasts and events at a steady rate, every one
//! counted. One node is stopped for 12 s (SIGSTOP), or its link goes down for 20 s: nothing
//! is lost or duplicated between the healthy nodes, and the faulty node's clients get
//! everything too once it is back.

use super::common::{self, Bridged, IrisProcess};
use std::collections::BTreeMap;
use std::io::Write;
use std::ops::Range;
use std::process::{Child, ChildStdin};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

/// Nodes in the network.
const NODES: usize = 5;
/// Messages per second each sending node broadcasts, and as many events it publishes.
const RATE: u64 = 10;

/// An `iris` tool running inside a namespace, killed when dropped.
struct Tool(Child);

impl Drop for Tool {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `iris ARGS` in namespace `ns` (see [`common::tool_in`]).
fn tool(ns: &str, args: &[&str], input: bool) -> (Tool, Option<ChildStdin>, Receiver<String>) {
    let (child, stdin, out) = common::tool_in(ns, args, input);
    (Tool(child), stdin, out)
}

/// The network, its clients and what they got (the processes go before their
/// namespaces: fields drop in order).
struct Net {
    _tools: Vec<Tool>,
    nodes: Vec<IrisProcess>,
    /// Per node: the broadcast and the event senders' standard inputs.
    senders: Vec<(ChildStdin, ChildStdin)>,
    /// Per node: the member's and the subscriber's output.
    heard: Vec<(Receiver<String>, Receiver<String>)>,
    /// Per node: each message its member or subscriber got, how often and when first.
    got: Vec<BTreeMap<String, (u32, Instant)>>,
    /// Every counted message sent, with when.
    sent: Vec<(String, Instant)>,
    ns: Bridged,
}

impl Net {
    /// Five nodes on a bridge, a member of "svc", a subscriber of "t" and a sender of each
    /// on every node; returns once every node's clients hear every other node.
    fn start(kind: &str, net: u8) -> Option<Net> {
        let ns = match Bridged::create(kind, net, NODES) {
            Ok(ns) => ns,
            Err(why) => {
                common::skip_without_namespaces(&why);
                return None;
            }
        };
        let tag = std::process::id() % 200;
        let addrs: Vec<String> = (1..=NODES)
            .map(|i| format!("10.{net}.{tag}.{i}:7000"))
            .collect();
        let nodes = common::network_in(&ns.names, "fault test", &addrs);
        let mut tools = Vec::new();
        let mut senders = Vec::new();
        let mut heard = Vec::new();
        for (i, node) in nodes.iter().enumerate() {
            let port = node.port.to_string();
            let p = port.as_str();
            let (m, _, member) = tool(&ns.names[i], &["serve", "svc", "--port", p], false);
            let (s, _, sub) = tool(&ns.names[i], &["sub", "t", "--port", p], false);
            let (b, bin, _) = tool(&ns.names[i], &["bcast", "svc", "--port", p], true);
            let (e, ein, _) = tool(&ns.names[i], &["pub", "t", "--port", p], true);
            tools.extend([m, s, b, e]);
            senders.push((bin.unwrap(), ein.unwrap()));
            heard.push((member, sub));
        }
        let mut net = Net {
            _tools: tools,
            nodes,
            senders,
            heard,
            got: vec![BTreeMap::new(); NODES],
            sent: Vec::new(),
            ns,
        };
        net.warm_up();
        Some(net)
    }

    /// Sends uncounted messages from every node until every node's member and subscriber
    /// has heard one from each (the trees are up), then forgets them.
    fn warm_up(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut round = 0;
        loop {
            assert!(Instant::now() < deadline, "the network never formed");
            for i in 0..NODES {
                self.send_one(i, &format!("warm-{i}-{round}"));
            }
            round += 1;
            std::thread::sleep(Duration::from_millis(200));
            self.collect();
            let ready = self.got.iter().all(|got| {
                (0..NODES).all(|i| {
                    ["b", "p"].iter().all(|kind| {
                        got.keys()
                            .any(|m| m.starts_with(&format!("{kind}warm-{i}-")))
                    })
                })
            });
            if ready {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(500));
        self.collect();
        self.got.iter_mut().for_each(BTreeMap::clear);
    }

    /// Node `i`'s clients broadcast `b<text>` and publish `p<text>`.
    fn send_one(&mut self, i: usize, text: &str) {
        let (b, p) = &mut self.senders[i];
        writeln!(b, "b{text}").and_then(|()| b.flush()).unwrap();
        writeln!(p, "p{text}").and_then(|()| p.flush()).unwrap();
    }

    /// Sends `RATE` counted rounds a second from the nodes in `from` for `secs`, calling
    /// `at(second)` at the start of each second.
    fn send_for(&mut self, from: &[usize], secs: u64, mut at: impl FnMut(&mut Net, u64)) {
        let start = Instant::now();
        for k in 0..secs * RATE {
            if k % RATE == 0 {
                at(self, k / RATE);
            }
            let due = start + Duration::from_millis(k * 1000 / RATE);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            for &i in from {
                let text = format!("{i}-{k}");
                self.send_one(i, &text);
                let now = Instant::now();
                self.sent.push((format!("b{text}"), now));
                self.sent.push((format!("p{text}"), now));
            }
            self.collect();
        }
    }

    /// How many messages the clients of the nodes in `from` sent in `during`, and how
    /// long after its end the nodes in `at` had them all (what was sent after it would
    /// measure only how long sending went on).
    fn caught_up(&self, at: &[usize], from: &[usize], during: Range<Instant>) -> (usize, Duration) {
        let sent: Vec<&String> = self
            .sent
            .iter()
            .filter(|(m, when)| {
                during.contains(when) && from.iter().any(|i| m[1..].starts_with(&format!("{i}-")))
            })
            .map(|(m, _)| m)
            .collect();
        let last = at
            .iter()
            .flat_map(|&i| sent.iter().filter_map(move |m| self.got[i].get(*m)))
            .map(|(_, when)| when.saturating_duration_since(during.end))
            .max()
            .unwrap_or_default();
        (sent.len(), last)
    }

    /// The longest any message sent in `during` took to reach the nodes in `at` (to
    /// within the 100 ms between collections).
    fn slowest(&self, at: &[usize], during: Range<Instant>) -> Duration {
        self.sent
            .iter()
            .filter(|(_, when)| during.contains(when))
            .flat_map(|(m, sent)| {
                at.iter()
                    .filter_map(move |&i| self.got[i].get(m))
                    .map(move |(_, got)| got.saturating_duration_since(*sent))
            })
            .max()
            .unwrap_or_default()
    }

    /// Takes what every member and subscriber printed so far.
    fn collect(&mut self) {
        let now = Instant::now();
        for (i, (member, sub)) in self.heard.iter().enumerate() {
            for line in member.try_iter().chain(sub.try_iter()) {
                self.got[i].entry(line).or_insert((0, now)).0 += 1;
            }
        }
    }

    /// Waits until every node has every counted message, or `limit` passed.
    fn settle(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline && !(0..NODES).all(|i| self.missing(i).is_empty()) {
            std::thread::sleep(Duration::from_millis(200));
            self.collect();
        }
        // Anything that would come twice comes meanwhile.
        std::thread::sleep(Duration::from_secs(1));
        self.collect();
    }

    /// The counted messages node `i` never got.
    fn missing(&self, i: usize) -> Vec<&String> {
        self.sent
            .iter()
            .map(|(m, _)| m)
            .filter(|m| !self.got[i].contains_key(*m))
            .collect()
    }

    /// The counted messages node `i` got more than once.
    fn twice(&self, i: usize) -> Vec<&String> {
        self.got[i]
            .iter()
            .filter(|(m, (n, _))| *n > 1 && !m.contains("warm"))
            .map(|(m, _)| m)
            .collect()
    }

    /// Asserts that every node got every counted message exactly once.
    fn assert_whole(&self, what: &str) {
        for i in 0..NODES {
            let (missing, twice) = (self.missing(i), self.twice(i));
            assert!(
                missing.is_empty() && twice.is_empty(),
                "{what}: node {i} missed {} of {} ({:?}...) and got {} twice ({:?}...)",
                missing.len(),
                self.sent.len(),
                &missing[..missing.len().min(8)],
                twice.len(),
                &twice[..twice.len().min(8)],
            );
        }
    }
}

/// One node stopped for 12 s (SIGSTOP) while the other four broadcast and publish ten
/// each a second: every one reaches every healthy node once, and the stopped node's member
/// and subscriber once it resumes (it asks their origins for what it missed).
#[test]
fn a_node_stopped_for_12_s_costs_the_others_nothing_and_gets_what_it_missed() {
    let Some(mut net) = Net::start("stop", 233) else {
        return;
    };
    let stopped = NODES - 1;
    let healthy: Vec<usize> = (0..NODES).filter(|&i| i != stopped).collect();
    let (mut stopped_at, mut resumed) = (None, None);
    net.send_for(&healthy, 20, |net, second| match second {
        3 => {
            net.nodes[stopped].kill("STOP");
            stopped_at = Some(Instant::now());
        }
        15 => {
            net.nodes[stopped].kill("CONT");
            resumed = Some(Instant::now());
        }
        _ => {}
    });
    net.settle(Duration::from_secs(30));
    let (stopped_at, resumed) = (stopped_at.unwrap(), resumed.unwrap());
    let (count, last) = net.caught_up(&[stopped], &healthy, stopped_at..resumed);
    let slowest = net.slowest(&healthy, stopped_at..resumed);
    eprintln!(
        "stop of 12 s: {} messages; the stopped node had the {count} sent during the stop \
         {last:?} after it resumed; the slowest to a healthy node took {slowest:?}",
        net.sent.len()
    );
    net.assert_whole("stop of 12 s");
    // 0.3-1.2 s measured on this machine (5.4 s before the first beat after a stop listed
    // the trees whose parents may have let the node go). Looser for a loaded machine.
    assert!(last < Duration::from_secs(5), "{last:?}");
    // 1.3 s measured on this machine: its tree neighbours probe it under the data and
    // route around it (`scribe::probe`); 3.2 s without probes, when only its silent beats
    // gave it away. Looser for a loaded machine, but below what beats alone achieve.
    assert!(slowest < Duration::from_secs(3), "{slowest:?}");
}

/// One node's link down for 20 s while all five broadcast and publish ten each a second:
/// every message reaches every node once, and what the cut-off node's clients sent
/// meanwhile reaches the others within seconds of the heal.
#[test]
fn a_node_cut_off_for_20_s_loses_nothing_and_catches_up_at_the_heal() {
    let Some(mut net) = Net::start("part", 234) else {
        return;
    };
    let cut = NODES - 1;
    let all: Vec<usize> = (0..NODES).collect();
    let (mut cut_at, mut healed) = (None, None);
    net.send_for(&all, 28, |net, second| match second {
        3 => {
            net.ns.link(cut, "down");
            cut_at = Some(Instant::now());
        }
        23 => {
            net.ns.link(cut, "up");
            healed = Some(Instant::now());
        }
        _ => {}
    });
    net.settle(Duration::from_secs(30));
    let (cut_at, healed) = (cut_at.unwrap(), healed.unwrap());
    let (count, caught_up) = net.caught_up(&all[..cut], &[cut], cut_at..healed);
    assert!(count > 300, "{count} sent during the cut");
    eprintln!(
        "partition of 20 s: {} messages; the {count} the cut-off node's clients sent during \
         the cut were all at the others {caught_up:?} after the heal",
        net.sent.len()
    );
    net.assert_whole("partition of 20 s");
    // 0.5 s measured on this machine (16.4 s before the node redialled its seeds and
    // former peers every second; 2.2 s before forgotten peers were pinged at once); 3 s is
    // what the issue asks, six times that, for a machine loaded by the other tests.
    assert!(caught_up < Duration::from_secs(3), "{caught_up:?}");
}
