//! The drain of an elected replica: it stops serving, publishes a fence of
//! its own to `syncQ`, applies everything that came before the fence in
//! its queue (first in, first out: then everything the old master had
//! published is in), flushes, and reports the seq reached. It fails
//! rather than end short: a gap left at the fence means writes the old
//! master may have acknowledged are missing here, and a replica that
//! diverged holds writes the history does not.

use super::{Effect, Level, ReplicaCore};

/// A drain under way.
#[derive(Debug)]
pub(super) struct Drain {
    nonce: u64,
    phase: Phase,
    /// Elected as an heir: not being confirmed current does not stop it.
    heir: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Applying what comes; `fenced` once its own fence is back.
    Waiting {
        fenced: bool,
    },
    Flushing,
    /// Reported; the replica serves again only once resumed.
    Over,
}

impl Drain {
    /// Whether the drain applies what comes (even before a first
    /// snapshot).
    pub(super) fn applies(&self) -> bool {
        matches!(self.phase, Phase::Waiting { .. })
    }
}

impl ReplicaCore {
    pub(super) fn start_drain(&mut self, nonce: u64, heir: bool) {
        self.requeue_parked();
        self.drain = Some(Drain {
            nonce,
            phase: Phase::Waiting { fenced: false },
            heir,
        });
        self.fx.push(Effect::PublishFence { nonce });
    }

    /// A fence came back through the sync queue (another replica's, or an
    /// earlier drain's, changes nothing).
    pub(super) fn fence_seen(&mut self, worker: u64, nonce: u64) {
        let id = self.id;
        if let Some(d) = self.drain.as_mut() {
            if d.phase == (Phase::Waiting { fenced: false }) && worker == id && nonce == d.nonce {
                d.phase = Phase::Waiting { fenced: true };
            }
        }
    }

    /// The sync queue's consumer ended during the drain: subscribed again,
    /// the queue may be one declared afresh (the broker deleted it while
    /// this replica was cut off), the writes it held gone. The drain fails
    /// rather than lead without them.
    pub(super) fn sync_lost(&mut self) {
        if self
            .drain
            .as_ref()
            .is_some_and(|d| matches!(d.phase, Phase::Waiting { .. }))
        {
            self.end_drain(Err(
                "the sync queue's consumer ended during the drain".into()
            ));
        }
    }

    pub(super) fn fence_failed(&mut self, nonce: u64, error: String) {
        if self.drain_in(nonce, |p| matches!(p, Phase::Waiting { .. })) {
            self.end_drain(Err(format!("the fence was not published: {error}")));
        }
    }

    pub(super) fn flushed(&mut self, nonce: u64, result: Result<u64, String>) {
        if self.drain_in(nonce, |p| p == Phase::Flushing) {
            self.end_drain(result);
        }
    }

    fn drain_in(&self, nonce: u64, phase: impl Fn(Phase) -> bool) -> bool {
        self.drain
            .as_ref()
            .is_some_and(|d| d.nonce == nonce && phase(d.phase))
    }

    fn end_drain(&mut self, result: Result<u64, String>) {
        if let Some(d) = self.drain.as_mut() {
            d.phase = Phase::Over;
            let nonce = d.nonce;
            self.fx.push(Effect::DrainDone { nonce, result });
        }
    }

    /// Once the fence is back and nothing that follows the applied seq is
    /// left to apply, the drain flushes (or fails).
    pub(super) fn check_drain(&mut self) {
        let Some((nonce, heir)) = self
            .drain
            .as_ref()
            .filter(|d| d.phase == (Phase::Waiting { fenced: true }))
            .map(|d| (d.nonce, d.heir))
        else {
            return;
        };
        if self.applying.is_some() || self.snapshot.replaces_store() {
            return; // judged once the store settles
        }
        if self.diverged {
            return self.end_drain(Err("this replica diverged; it awaits a snapshot".into()));
        }
        // Elected for what its store holds (nobody was caught up), it
        // needs no master's word: there is none to give it, and waiting
        // for one would leave the cluster without a master for ever.
        if self.confirming && !heir {
            return self.end_drain(Err(
                "not yet told by the master that it missed nothing while cut off".into(),
            ));
        }
        if let Some(seq) = self.restore_due() {
            if !heir {
                let why = format!("a restore at seq {seq} it has not installed");
                return self.end_drain(Err(why));
            }
            // Elected for its store (nobody caught up, and no store that
            // applied the restore stands): the master that applied it is
            // gone with its store, and no replica installed it, so it was
            // never acknowledged, nor was anything after it (writes wait
            // for a restore to be installed on a replica). It leads
            // without them rather than never.
            let dropped: Vec<_> = std::mem::take(&mut self.pending)
                .into_values()
                .filter_map(|run| run.token)
                .collect();
            self.log(
                Level::Warn,
                format!(
                    "elected for its store, it leads without the restore at seq {seq}: \
                     the store that applied it is gone and no replica installed it"
                ),
            );
            self.ack(dropped);
        }
        let next = self.applied.saturating_add(1);
        match self.pending.keys().next().copied() {
            Some(first) if first <= next => {} // a run starts once it may
            Some(first) => {
                // Writes past a gap came: the ones in it were confirmed to
                // the old master (and may have been acknowledged) but are
                // not here (dropped from a capped queue).
                let applied = self.applied;
                let why = format!("a gap after seq {applied} (the next here is {first})");
                self.end_drain(Err(why));
            }
            None => {
                if let Some(d) = self.drain.as_mut() {
                    d.phase = Phase::Flushing;
                }
                self.fx.push(Effect::Flush { nonce });
            }
        }
    }
}
