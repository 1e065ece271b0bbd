//! Round trips to peers, as measured by the overlay's pings: per peer, and across all of
//! them for a peer not measured yet. Requests and tunnel builds take each hop's round trip
//! off their time left, so a guess that is too small lets a request reach its member after
//! the requester gave up.

use std::time::Duration;

/// The round trip estimate after a pong that came `sample` after its ping: smoothed as TCP
/// does (7/8 of the estimate, 1/8 of the sample), so that one slow pong moves it little.
/// A pong later than a heartbeat `period` answers a ping that waited on a broken link or a
/// redial, not the path: it says nothing of the round trip and is not a sample. (One pong
/// delayed nine seconds made every request through that peer expire on the way.)
pub(super) fn smoothed_rtt(
    estimate: Option<Duration>,
    sample: Duration,
    period: Duration,
) -> Option<Duration> {
    if sample >= period {
        return estimate;
    }
    Some(estimate.map_or(sample, |e| (e * 7 + sample) / 8))
}

/// The spread of round trips to all peers: a smoothed mean and mean deviation over every
/// sample (RFC 6298's SRTT and RTTVAR, one pair for the whole node).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct RttSpread {
    mean: Option<Duration>,
    deviation: Duration,
}

impl RttSpread {
    /// Takes a pong's round trip (none later than a heartbeat `period`: see
    /// [`smoothed_rtt`]).
    pub(super) fn sample(&mut self, sample: Duration, period: Duration) {
        if sample >= period {
            return;
        }
        match self.mean {
            None => {
                self.mean = Some(sample);
                self.deviation = sample / 2;
            }
            Some(mean) => {
                let off = mean.abs_diff(sample);
                self.deviation = (self.deviation * 3 + off) / 4;
                self.mean = Some((mean * 7 + sample) / 8);
            }
        }
    }

    /// A round trip that few peers exceed: the mean plus four deviations (RFC 6298's first
    /// retransmission timeout); `None` before any sample.
    pub(super) fn cautious(&self) -> Option<Duration> {
        self.mean.map(|m| m + self.deviation * 4)
    }
}

#[cfg(test)]
mod tests {
    use super::{RttSpread, smoothed_rtt};
    use std::time::Duration;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn a_late_pong_is_no_sample_and_one_slow_pong_moves_the_estimate_little() {
        let period = MS(3000);
        assert_eq!(smoothed_rtt(None, MS(40), period), Some(MS(40)));
        // A pong that waited nine seconds on a redial measures the redial, not the path.
        assert_eq!(smoothed_rtt(Some(MS(40)), MS(9090), period), Some(MS(40)));
        assert_eq!(smoothed_rtt(None, MS(9090), period), None);
        // A slow one within the period counts for an eighth.
        assert_eq!(smoothed_rtt(Some(MS(40)), MS(840), period), Some(MS(140)));
    }

    #[test]
    fn the_guess_for_an_unmeasured_peer_covers_the_slow_ones_seen() {
        let period = MS(3000);
        let mut spread = RttSpread::default();
        assert_eq!(spread.cautious(), None);
        // Peers from 20 to 400 ms away, pinged in turn.
        for _ in 0..20 {
            for rtt in [20, 60, 100, 400] {
                spread.sample(MS(rtt), period);
            }
        }
        let guess = spread.cautious().unwrap();
        assert!(
            guess >= MS(400),
            "{guess:?} is below the slowest peer's 400 ms"
        );
        assert!(guess < MS(1200), "{guess:?} is far above every peer");
        // Late pongs do not count.
        let before = spread.cautious();
        spread.sample(MS(9000), period);
        assert_eq!(spread.cautious(), before);
        // Peers all alike: the guess is close to them.
        let mut alike = RttSpread::default();
        for _ in 0..50 {
            alike.sample(MS(30), period);
        }
        assert!(alike.cautious().unwrap() <= MS(40));
    }
}
