//! The one retry rule: wait, double the wait, up to a ceiling.
//!
//! Every retry in the cluster (reconnecting to the broker or the
//! coordinator, subscribing again, asking for a snapshot again, a request
//! the orchestrator sends again) steps its wait with [`Backoff`]. Time is
//! milliseconds, as everywhere in the core; the drivers turn it into a
//! `Duration`.

use std::time::Duration;

/// A doubling wait between `first` and `last` milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub first: u64,
    pub last: u64,
}

/// Reconnecting and subscribing again: 50 ms, doubling up to 2 s.
pub const RECONNECT: Backoff = Backoff::new(50, 2_000);

impl Backoff {
    pub const fn new(first: u64, last: u64) -> Self {
        Backoff { first, last }
    }

    /// The wait after `wait`: doubled, at least `first`, at most `last`.
    pub fn next(self, wait: u64) -> u64 {
        wait.saturating_mul(2)
            .clamp(self.first, self.last.max(self.first))
    }

    /// The first wait as a `Duration`.
    pub fn first_wait(self) -> Duration {
        Duration::from_millis(self.first)
    }

    /// [`Backoff::next`] over `Duration`s (whole milliseconds).
    pub fn next_wait(self, wait: Duration) -> Duration {
        let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(self.next(ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_within_its_bounds() {
        let b = Backoff::new(50, 2_000);
        assert_eq!(b.next(0), 50);
        assert_eq!(b.next(50), 100);
        assert_eq!(b.next(1_500), 2_000);
        assert_eq!(b.next(u64::MAX), 2_000);
        assert_eq!(
            b.next_wait(Duration::from_millis(400)),
            Duration::from_millis(800)
        );
        assert_eq!(RECONNECT.first_wait(), Duration::from_millis(50));
    }
}
