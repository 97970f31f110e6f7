//! The master's lease: how long it may still take writes.
//!
//! The coordinator expires a session no sooner than its timeout after the
//! last request it got from it. So after a round trip that began at `t`,
//! the session is alive at least until `t + timeout`; the worker extends
//! its lease to a safe part of that. While it cannot reach the coordinator
//! the lease runs out before the session can have expired, and the master
//! stops applying and answering writes: no two masters ever accept writes
//! at once, even when one is cut off (or paused) and another is elected.
//! Time is monotonic; a paused process finds its lease run out when it
//! resumes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A lease shared by the worker (which extends it) and its master actor
/// (which checks it).
#[derive(Debug)]
pub struct Lease {
    base: Instant,
    /// Valid until this many nanoseconds after `base` (0: not valid).
    until: AtomicU64,
}

impl Default for Lease {
    fn default() -> Self {
        Lease {
            base: Instant::now(),
            until: AtomicU64::new(0),
        }
    }
}

impl Lease {
    /// A lease valid until a caller extends it.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether writes may be taken now.
    pub fn valid(&self) -> bool {
        let until = self.until.load(Ordering::Acquire);
        until != 0 && self.nanos(Instant::now()) < until
    }

    /// Valid until `from + by` (or longer, if it already was).
    pub fn extend(&self, from: Instant, by: Duration) {
        // A session that never expires (the in-process coordinator's)
        // gives a lease without end.
        let until = from
            .checked_add(by)
            .map_or(u64::MAX, |t| self.nanos(t))
            .max(1);
        self.until.fetch_max(until, Ordering::AcqRel);
    }

    /// Valid until `other` runs out (or longer, if it already was).
    pub fn extend_as(&self, other: &Lease) {
        let until = other.until.load(Ordering::Acquire);
        if until == 0 {
            return;
        }
        let end = other
            .base
            .checked_add(Duration::from_nanos(until))
            .map_or(u64::MAX, |t| self.nanos(t));
        self.until.fetch_max(end.max(1), Ordering::AcqRel);
    }

    /// Sets the lease to run until `until` (shorter or longer than now).
    pub fn set(&self, until: Instant) {
        self.until
            .store(self.nanos(until).max(1), Ordering::Release);
    }

    /// Not valid from now on, until extended again.
    pub fn revoke(&self) {
        self.until.store(0, Ordering::Release);
    }

    fn nanos(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }
}

/// The part of a session timeout a lease is extended by, from the start
/// of a round trip: well inside the timeout, for clock granularity and
/// the time the check itself takes.
pub fn lease_span(session_timeout: Duration) -> Duration {
    session_timeout / 5 * 3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_runs_out_and_can_be_revoked() {
        let l = Lease::new();
        assert!(!l.valid());
        l.extend(Instant::now(), Duration::from_secs(60));
        assert!(l.valid());
        // An earlier round trip does not shorten it.
        l.extend(
            Instant::now() - Duration::from_secs(120),
            Duration::from_secs(1),
        );
        assert!(l.valid());
        l.revoke();
        assert!(!l.valid());
        l.extend(
            Instant::now() - Duration::from_secs(2),
            Duration::from_secs(1),
        );
        assert!(!l.valid(), "it ran out a second ago");
    }

    #[test]
    fn leases_end_well_before_the_session_could() {
        let t = Duration::from_millis(500);
        assert!(lease_span(t) < t);
    }
}
