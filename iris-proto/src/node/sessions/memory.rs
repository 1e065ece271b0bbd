//! The node-wide memory budget: every byte the node holds for clients is charged here once
//! (partial input, queued output, shared payloads once however many connections they go to,
//! tunnel buffers, held packets), and the node pushes back before it runs out.

use super::outbox::{Released, SharedId};

use crate::lookup::LookupMap as Map;

/// Packets announced at least this large reserve their whole size when their first bytes
/// arrive, so that a message once started can always finish (no deadlock of half-read
/// messages waiting for each other's memory).
pub(crate) const LARGE_PACKET: usize = 1 << 20;

/// Where the budget stands, for the node's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pressure {
    /// Under the high mark (or back under the low mark after being tight).
    Normal,
    /// Over three quarters: the node stops reading new input until it is under half.
    Tight,
    /// Over the budget: the node cuts its largest consumers.
    Exhausted,
}

/// Bytes charged against `max`.
#[derive(Debug)]
pub(crate) struct Memory {
    max: usize,
    used: usize,
    peak: usize,
    /// Input reservations of large packets in progress; at most half the budget, so that
    /// large messages cannot starve small ones.
    large: usize,
    /// Shared payloads: length and references still held.
    shared: Map<SharedId, (usize, usize)>,
    next_shared: u64,
    tight: bool,
    /// Bytes of group and tree state, set by the node: not client data, but part of the
    /// same budget, so that many groups make the node push back on clients sooner.
    groups: usize,
}

impl Memory {
    pub(crate) fn new(max: usize) -> Memory {
        Memory {
            max,
            used: 0,
            peak: 0,
            large: 0,
            shared: Map::default(),
            next_shared: 0,
            tight: false,
            groups: 0,
        }
    }

    /// Bytes charged now, group state included.
    pub(crate) fn used(&self) -> usize {
        self.used + self.groups
    }

    /// Bytes charged for clients: [`Memory::used`] less the group state.
    pub(crate) fn client_used(&self) -> usize {
        self.used
    }

    /// Sets the bytes of group and tree state.
    pub(crate) fn set_groups(&mut self, bytes: usize) {
        self.groups = bytes;
        self.peak = self.peak.max(self.used());
    }

    /// The most ever charged.
    pub(crate) fn peak(&self) -> usize {
        self.peak
    }

    pub(crate) fn charge(&mut self, n: usize) {
        self.used += n;
        self.peak = self.peak.max(self.used());
    }

    pub(crate) fn release(&mut self, n: usize) {
        debug_assert!(n <= self.used, "released more than charged");
        self.used = self.used.saturating_sub(n);
    }

    /// Moves a charge from `old` to `new` bytes.
    pub(crate) fn recharge(&mut self, old: usize, new: usize) {
        if new > old {
            self.charge(new - old);
        } else {
            self.release(old - new);
        }
    }

    /// Whether a large packet of `n` bytes, `already` of them charged, fits now.
    pub(crate) fn fits_large(&self, n: usize, already: usize) -> bool {
        self.large + n <= self.max / 2 && self.used() + n.saturating_sub(already) <= self.max
    }

    /// Tries to reserve `n` bytes for a large packet's input; false if they do not fit.
    pub(crate) fn reserve_large(&mut self, n: usize, already: usize) -> bool {
        if !self.fits_large(n, already) {
            return false;
        }
        self.large += n;
        true
    }

    /// Gives back a large reservation (the packet completed, or its client left).
    pub(crate) fn unreserve_large(&mut self, n: usize) {
        self.large = self.large.saturating_sub(n);
    }

    /// Registers a payload about to be shared by several connections, charged once.
    pub(crate) fn share(&mut self, len: usize) -> SharedId {
        let id = SharedId(self.next_shared);
        self.next_shared += 1;
        self.shared.insert(id, (len, 0));
        self.charge(len);
        id
    }

    /// One more connection holds the shared payload.
    pub(crate) fn add_ref(&mut self, id: SharedId) {
        if let Some((_, refs)) = self.shared.get_mut(&id) {
            *refs += 1;
        }
    }

    /// Drops the registration if no connection took the payload after all.
    pub(crate) fn unshare_if_unused(&mut self, id: SharedId) {
        if let Some(&(len, 0)) = self.shared.get(&id) {
            self.shared.remove(&id);
            self.release(len);
        }
    }

    /// Returns what an outbox released.
    pub(crate) fn give_back(&mut self, r: Released) {
        self.release(r.private);
        for id in r.shared {
            if let Some((len, refs)) = self.shared.get_mut(&id) {
                *refs -= 1;
                if *refs == 0 {
                    let len = *len;
                    self.shared.remove(&id);
                    self.release(len);
                }
            }
        }
    }

    /// The pressure now, with hysteresis: tight from three quarters until back under half.
    pub(crate) fn pressure(&mut self) -> Pressure {
        let used = self.used();
        if used > self.max {
            self.tight = true;
            return Pressure::Exhausted;
        }
        if used > self.max / 4 * 3 {
            self.tight = true;
        } else if used < self.max / 2 {
            self.tight = false;
        }
        if self.tight {
            Pressure::Tight
        } else {
            Pressure::Normal
        }
    }

    /// Whether new input is held back (the last [`Memory::pressure`] was not normal).
    pub(crate) fn is_tight(&self) -> bool {
        self.tight
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_payloads_are_charged_once_and_freed_with_the_last_reference() {
        let mut m = Memory::new(1000);
        let id = m.share(100);
        for _ in 0..30 {
            m.add_ref(id);
        }
        assert_eq!(m.used(), 100);
        for i in 0..30 {
            assert_eq!(m.used(), 100, "still referenced after {i} releases");
            m.give_back(Released {
                private: 0,
                shared: vec![id],
            });
        }
        assert_eq!(m.used(), 0);
        let unused = m.share(50);
        m.unshare_if_unused(unused);
        assert_eq!(m.used(), 0);
    }

    #[test]
    fn pressure_has_hysteresis_and_large_reservations_take_at_most_half() {
        let mut m = Memory::new(1000);
        m.charge(760);
        assert_eq!(m.pressure(), Pressure::Tight);
        m.release(200);
        assert_eq!(m.pressure(), Pressure::Tight, "560 is not under half");
        m.release(100);
        assert_eq!(m.pressure(), Pressure::Normal);
        m.charge(600);
        assert_eq!(m.pressure(), Pressure::Exhausted);
        m.release(1060);
        assert!(m.reserve_large(400, 0));
        assert!(!m.reserve_large(200, 0), "more than half the budget");
        m.unreserve_large(400);
        assert!(m.reserve_large(500, 0));
    }
}
