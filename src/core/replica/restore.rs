//! A restore in the history: a seq whose sync says "every row was
//! replaced here" without the rows. The replica applies what comes before
//! it, then stops: it keeps serving the state it holds (reads that need
//! the restore or later wait), reports itself not ready (its store cannot
//! stand for a history with the restore in it), and asks for a snapshot
//! past its applied seq, which replaces the store in one step. What
//! queued after the restore applies on top of that snapshot; nothing of
//! before the restore is ever applied on top of it (a master's log starts
//! again past a restore, so no catch-up holds one).

use super::snapshot::Snap;
use super::{Level, ReplicaCore, Run, Token, FIRST_RETRY_MS, REFUSED_RETRY_MS};
use crate::model::wire::{Entry, SyncMessage};

/// Whether a logged answer is a restore.
pub(super) fn is_restore(m: &SyncMessage) -> bool {
    matches!(m.entry, Entry::Restored { .. })
}

impl ReplicaCore {
    /// The seq of a restore that is the next thing to apply, if one is.
    pub(super) fn restore_due(&self) -> Option<u64> {
        let next = self.applied.saturating_add(1);
        self.pending
            .range(..=next)
            .flat_map(|(_, run)| &run.writes)
            .find(|m| m.seq == next && is_restore(m))
            .map(|m| m.seq)
    }

    /// Keeps the writes of `run` from a restore at or past `from` on (if
    /// there is one) back in `pending`, to wait for a snapshot; answers the
    /// writes before it, and tokens of deliveries settled meanwhile.
    pub(super) fn hold_restore(
        &mut self,
        run: Run,
        from: u64,
        settled: &mut Vec<Token>,
    ) -> Result<Vec<SyncMessage>, Run> {
        let Some(at) = run
            .writes
            .iter()
            .find(|m| m.seq >= from && is_restore(m))
            .map(|m| m.seq)
        else {
            return Err(run);
        };
        let (before, after): (Vec<_>, Vec<_>) = run.writes.into_iter().partition(|m| m.seq < at);
        let held = Run {
            writes: after,
            token: run.token,
        };
        // Of two runs from the restore's seq, the longer stays.
        let keep = match self.pending.remove(&at) {
            Some(other) if other.last() >= held.last() => {
                settled.extend(held.token);
                other
            }
            Some(other) => {
                settled.extend(other.token);
                held
            }
            None => held,
        };
        self.pending.insert(at, keep);
        Ok(before.into_iter().filter(|m| m.seq >= from).collect())
    }

    /// Asks for a snapshot past a restore that is due, once nothing else
    /// is under way (not twice within [`REFUSED_RETRY_MS`]: an answer
    /// that did not reach past it is asked for again a little later).
    pub(super) fn take_restore(&mut self) {
        let Some(seq) = self.restore_due() else {
            return;
        };
        let busy = self.applying.is_some() || !matches!(self.snapshot, Snap::Idle);
        if busy || self.closing || self.diverged || self.drain.is_some() {
            return;
        }
        let applied = self.applied;
        let at = self
            .restore_asked
            .map_or(0, |t| t.saturating_add(REFUSED_RETRY_MS));
        if at > self.now {
            let wait = FIRST_RETRY_MS;
            self.snapshot = Snap::RetryAt {
                at,
                have_seq: applied,
                wait,
            };
            return;
        }
        self.restore_asked = Some(self.now);
        self.log(
            Level::Info,
            format!("a restore at seq {seq}: taking a snapshot past it, serving seq {applied} meanwhile"),
        );
        self.ask(applied, FIRST_RETRY_MS);
    }
}
