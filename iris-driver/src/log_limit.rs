//! Rate limits for warnings that a remote party can trigger at will (refused connections,
//! failed handshakes): the first few of each window are logged, the rest are counted and
//! summed up in one line when the next window opens.

use std::time::{Duration, Instant};

/// How many lines of one kind a window lets through.
const PER_WINDOW: u32 = 10;
/// The window.
const WINDOW: Duration = Duration::from_secs(10);

/// One kind of warning's budget.
#[derive(Debug)]
pub(crate) struct LogLimit {
    start: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl LogLimit {
    pub(crate) const fn new() -> LogLimit {
        LogLimit {
            start: None,
            logged: 0,
            suppressed: 0,
        }
    }

    /// Whether to log one more line now; the second value is how many lines the previous
    /// window suppressed, to be reported once (0 if none).
    pub(crate) fn allow(&mut self, now: Instant) -> (bool, u64) {
        let mut suppressed = 0;
        if self.start.is_none_or(|s| now.duration_since(s) >= WINDOW) {
            self.start = Some(now);
            self.logged = 0;
            suppressed = std::mem::take(&mut self.suppressed);
        }
        if self.logged < PER_WINDOW {
            self.logged += 1;
            (true, suppressed)
        } else {
            self.suppressed += 1;
            (false, suppressed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lets_a_few_through_per_window_and_reports_the_rest_once() {
        let mut l = LogLimit::new();
        let t = Instant::now();
        let allowed = (0..25).filter(|_| l.allow(t).0).count();
        assert_eq!(allowed, PER_WINDOW as usize);
        assert_eq!(l.allow(t + WINDOW), (true, 15));
        assert_eq!(l.allow(t + WINDOW), (true, 0));
    }
}
