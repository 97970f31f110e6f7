//! How far the master's syncs are confirmed without a gap: the rule that
//! keeps a reply from overtaking an earlier sync.
//!
//! Groups publish their syncs concurrently, a publish can fail, and the
//! writes of a failed one come back from `writeQ` in no promised order. A
//! write is answered only once the sync of every seq up to its own is
//! confirmed (by its group or any other): else a slave could wait at a gap
//! that no acknowledged write lets it pass.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;

/// The seqs whose syncs the broker confirmed, as a prefix and the runs
/// confirmed beyond it.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Confirmed {
    /// Every seq up to here is confirmed.
    through: u64,
    /// Confirmed runs past a gap, by first seq: the last seq of each.
    beyond: BTreeMap<u64, u64>,
}

impl Confirmed {
    /// Everything up to `through` counts as confirmed: a master starts
    /// with what its store held (those writes' syncs are sent again as
    /// their requests come back; a slave that misses one takes a snapshot).
    pub(crate) fn starting_at(through: u64) -> Self {
        Confirmed {
            through,
            beyond: BTreeMap::new(),
        }
    }

    /// Records that the syncs of `first..=last` were confirmed; returns the
    /// new prefix.
    pub(crate) fn confirm(&mut self, first: u64, last: u64) -> u64 {
        if last > self.through {
            let first = first.max(self.through + 1);
            let end = self.beyond.entry(first).or_insert(last);
            *end = (*end).max(last);
        }
        while let Some((&first, &last)) = self.beyond.first_key_value() {
            if first > self.through + 1 {
                break;
            }
            self.through = self.through.max(last);
            self.beyond.remove(&first);
        }
        self.through
    }
}

/// [`Confirmed`] shared by the master's group tasks, with a way to wait
/// for the prefix to reach a seq.
pub(crate) struct SyncedPrefix {
    confirmed: Mutex<Confirmed>,
    through: watch::Sender<u64>,
}

impl SyncedPrefix {
    pub(crate) fn new(through: u64) -> Self {
        SyncedPrefix {
            confirmed: Mutex::new(Confirmed::starting_at(through)),
            through: watch::Sender::new(through),
        }
    }

    pub(crate) fn confirm(&self, first: u64, last: u64) {
        let through = self
            .confirmed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .confirm(first, last);
        self.through.send_if_modified(|t| {
            let moved = through > *t;
            *t = through;
            moved
        });
    }

    /// Waits until every sync up to `seq` is confirmed; false if that
    /// does not happen within `within`.
    pub(crate) async fn reaches(&self, seq: u64, within: Duration) -> bool {
        let mut rx = self.through.subscribe();
        let reached = tokio::time::timeout(within, rx.wait_for(|&t| t >= seq)).await;
        matches!(reached, Ok(Ok(_)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_grows_only_without_gaps() {
        let mut c = Confirmed::starting_at(10);
        assert_eq!(c.confirm(13, 15), 10);
        assert_eq!(c.confirm(20, 20), 10);
        assert_eq!(c.confirm(5, 9), 10, "below the prefix: nothing changes");
        assert_eq!(c.confirm(11, 12), 15);
        assert_eq!(c.confirm(16, 19), 20);
        assert_eq!(c.confirm(18, 25), 25, "overlapping runs merge");
        assert_eq!(c.through, 25);
        assert!(c.beyond.is_empty());
        // The same run twice, and a run inside another.
        assert_eq!(c.confirm(30, 40), 25);
        assert_eq!(c.confirm(30, 35), 25);
        assert_eq!(c.confirm(26, 29), 40);
    }

    #[tokio::test]
    async fn waiters_are_woken_when_the_prefix_reaches_them() {
        let p = std::sync::Arc::new(SyncedPrefix::new(0));
        assert!(p.reaches(0, Duration::ZERO).await);
        let waiter = {
            let p = p.clone();
            tokio::spawn(async move { p.reaches(3, Duration::from_secs(30)).await })
        };
        p.confirm(2, 3);
        assert!(!p.reaches(3, Duration::from_millis(1)).await);
        p.confirm(1, 1);
        assert!(waiter.await.unwrap());
    }
}
