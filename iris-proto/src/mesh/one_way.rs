//! How much later than its fastest a peer's message arrived: a one-way delay excess, with no
//! synchronised clocks.
//!
//! A node stamps every overlay message (pings and pongs, every few seconds on every link)
//! with its own clock. The receiver keeps the least `arrival - stamp` it has seen: that is
//! the two clocks' offset plus the fastest one-way trip, whatever the offset is. A message
//! stamped `sent` that arrives at `now` was delayed `now - sent - least` more than the
//! fastest trip: by queueing, a retransmission, a stall anywhere on the way. The least is
//! kept over two windows of a minute (as LEDBAT keeps its base delay), so it follows the
//! clocks' slow drift and a path that got slower for good.

use crate::time::Instant;
use std::time::Duration;

/// How long a window of samples lasts; the base is the least of this one and the last.
const WINDOW: Duration = Duration::from_secs(60);

/// A peer's base one-way delay (offset included), from the stamps of its messages.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OneWay {
    /// Least `arrival - stamp` (ms) of this window, and of the one before.
    current: i64,
    previous: i64,
    window_start: Instant,
}

impl Default for OneWay {
    fn default() -> OneWay {
        OneWay {
            current: i64::MAX,
            previous: i64::MAX,
            window_start: Instant::ZERO,
        }
    }
}

/// `now` in milliseconds of the local clock: what a node stamps its messages with.
pub(crate) fn stamp(now: Instant) -> u64 {
    now.as_nanos() / 1_000_000
}

impl OneWay {
    /// A message stamped `sent` (the peer's clock, ms) arrived at `now`.
    pub(crate) fn sample(&mut self, now: Instant, sent: u64) {
        if now.saturating_duration_since(self.window_start) >= WINDOW {
            self.previous = self.current;
            self.current = i64::MAX;
            self.window_start = now;
        }
        self.current = self.current.min(gap(now, sent));
    }

    /// Whether every sample is older than two windows: nothing is known any more.
    pub(crate) fn is_stale(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.window_start) >= WINDOW * 2
    }

    /// How much longer than the fastest trip seen a message stamped `sent` took to arrive
    /// at `now`; `None` before any sample.
    pub(crate) fn excess(&self, now: Instant, sent: u64) -> Option<Duration> {
        let base = self.current.min(self.previous);
        (base != i64::MAX)
            .then(|| Duration::from_millis(gap(now, sent).saturating_sub(base).max(0) as u64))
    }
}

/// `arrival - stamp` in ms; the clocks' offset is in it, so it may be negative.
fn gap(now: Instant, sent: u64) -> i64 {
    (stamp(now) as i64).wrapping_sub(sent as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Instant {
        Instant::from_nanos(ms * 1_000_000)
    }

    #[test]
    fn the_excess_is_the_delay_beyond_the_fastest_trip_whatever_the_clock_offset() {
        // The peer's clock is 1,000,000 ms ahead of ours; trips take 20 to 35 ms.
        let offset = 1_000_000;
        let mut w = OneWay::default();
        assert_eq!(w.excess(at(10), offset), None);
        for (sent, trip) in [(0, 30), (100, 20), (200, 35)] {
            w.sample(at(sent + trip), sent + offset);
        }
        assert_eq!(
            w.excess(at(320), 300 + offset),
            Some(Duration::from_millis(0))
        );
        // Stuck 3 s on the way.
        assert_eq!(
            w.excess(at(3_420), 400 + offset),
            Some(Duration::from_millis(3_000))
        );
        // A late sample does not move the base.
        w.sample(at(3_420), 400 + offset);
        assert_eq!(
            w.excess(at(545), 500 + offset),
            Some(Duration::from_millis(25))
        );
    }

    #[test]
    fn the_base_follows_a_path_that_got_slower_after_two_windows() {
        let mut w = OneWay::default();
        w.sample(at(10), 0);
        // From now on every trip takes 100 ms.
        let mut t = 1_000;
        while t < 150_000 {
            w.sample(at(t + 100), t);
            t += 3_000;
        }
        assert_eq!(
            w.excess(at(t + 100), t),
            Some(Duration::from_millis(0)),
            "the 10 ms trip of two windows ago is forgotten"
        );
    }
}
