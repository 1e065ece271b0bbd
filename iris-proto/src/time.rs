//! The core's own timestamp type: drivers map their clock onto it, simulators construct it.

use std::ops::Add;
use std::time::Duration;

/// A point in time, in nanoseconds since an epoch the driver chooses (its start, usually).
/// The core never reads a clock: every `Instant` comes in as an argument.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(u64);

impl Instant {
    /// The epoch.
    pub const ZERO: Instant = Instant(0);

    /// `nanos` nanoseconds after the epoch.
    pub const fn from_nanos(nanos: u64) -> Instant {
        Instant(nanos)
    }

    /// Nanoseconds since the epoch.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Time elapsed since `earlier`, zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// `d` earlier, or the epoch.
    pub fn saturating_sub(self, d: Duration) -> Instant {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Instant(self.0.saturating_sub(nanos))
    }
}

/// Notices when a periodic timer fires much later than it was due: the node itself was
/// stopped (a process under SIGSTOP, a suspended VM, a machine swapping), so silence
/// measured across that time says nothing about its peers. Its owner calls
/// [`Lateness::jumped`] at each period's work.
#[derive(Debug, Clone)]
pub(crate) struct Lateness {
    last: Instant,
}

impl Lateness {
    /// Periods counted from `start` (the owner's creation): a node stopped before its
    /// first period's work resumes with that work late too (found by swarm testing: a node
    /// stopped 18 s a moment after it joined took every peer it had learned for dead at
    /// its first heartbeat, having no earlier one to measure from).
    pub(crate) fn new(start: Instant) -> Lateness {
        Lateness { last: start }
    }

    /// Time since the last period's work (or the start).
    pub(crate) fn since(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last)
    }

    /// Whether this period's work comes more than two periods after the last one's.
    pub(crate) fn jumped(&mut self, now: Instant, period: Duration) -> bool {
        let jumped = self.since(now) > period * 2;
        self.last = now;
        jumped
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;

    /// Saturates instead of overflowing, so that absurd client timeouts mean "never".
    fn add(self, d: Duration) -> Instant {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Instant(self.0.saturating_add(nanos))
    }
}
