//! Snapshots (and catch-ups, which answer the same requests): when one
//! is asked for (a first one once the sync queue is
//! bound, a resync, a wait at a gap that lasted [`GAP_WAIT_MS`]), which
//! answer may be installed (only the latest request's, never a deposed
//! master's), and what an installed one settles. A snapshot is installed
//! only while no run is being applied, and no run starts until it is in.

use super::catchup::CatchUpParts;
use super::{
    Delivered, Effect, Level, ReplicaCore, Run, Token, ANSWER_WAIT, FIRST_RETRY_MS, GAP_WAIT_MS,
    REFUSED_RETRY_MS, RETRY,
};
use crate::model::wire::{Reply, Snapshot, SnapshotParts, Stamp};
use crate::model::Lineage;

/// Where the replica's snapshot stands.
#[derive(Debug, Default)]
pub(super) enum Snap {
    #[default]
    Idle,
    /// Request `request` (for the state past `have_seq`) is out, since
    /// `heard` (or its answer's last part came then); the parts of its
    /// answer so far (a snapshot's, or a catch-up's). A failure to send
    /// it waits `wait`.
    Asked {
        request: u64,
        have_seq: u64,
        heard: u64,
        wait: u64,
        parts: SnapshotParts,
        catch_up: CatchUpParts,
    },
    /// Every part of a catch-up to `through` came: its writes are applied
    /// as syncs are, and the replica serves once the store reaches it.
    CatchingUp { through: u64 },
    /// To be asked for again at `at`.
    RetryAt { at: u64, have_seq: u64, wait: u64 },
    /// A whole answer, waiting for the run in flight to end.
    Held {
        request: u64,
        snapshot: Option<Snapshot>,
    },
    /// Being installed (up to `seq`); `then`, a snapshot to ask for once
    /// it is in (a resync decided meanwhile).
    Installing {
        request: u64,
        seq: u64,
        then: Option<u64>,
    },
}

impl Snap {
    /// Whether a catch-up's writes are being applied.
    pub(super) fn catching_up(&self) -> bool {
        matches!(self, Snap::CatchingUp { .. })
    }

    /// Whether a snapshot is about to replace the store.
    pub(super) fn replaces_store(&self) -> bool {
        matches!(self, Snap::Held { .. } | Snap::Installing { .. })
    }

    /// The seq a snapshot about to replace the store holds (0 if none).
    pub(super) fn installing_seq(&self) -> u64 {
        match self {
            Snap::Held {
                snapshot: Some(s), ..
            } => s.seq,
            Snap::Installing { seq, .. } => *seq,
            _ => 0,
        }
    }
}

impl ReplicaCore {
    /// The sync queue is bound: a replica not caught up asks now (what is
    /// written after the snapshot is then already in its queue).
    pub(super) fn first_ask(&mut self) {
        if !self.ready && matches!(self.snapshot, Snap::Idle) {
            self.ask(self.applied, FIRST_RETRY_MS);
        }
    }

    /// Subscribed to the sync queue again while caught up: asks the master
    /// whether the store is current (a cheap answer when it is), standing
    /// for no history until the answer is in.
    pub(super) fn confirm_current(&mut self) {
        self.confirming = true;
        let applied = self.applied;
        self.log(
            Level::Info,
            format!("sync queue subscribed again at seq {applied}; asking whether it is current"),
        );
        self.want_snapshot(applied);
    }

    /// Asks for the state past `have_seq`, superseding any request out,
    /// or once the snapshot being installed is in.
    pub(super) fn want_snapshot(&mut self, have_seq: u64) {
        match &mut self.snapshot {
            Snap::Installing { then, .. } => *then = Some(have_seq),
            _ => self.ask(have_seq, FIRST_RETRY_MS),
        }
    }

    pub(super) fn ask(&mut self, have_seq: u64, wait: u64) {
        self.close_snapshot();
        self.snapshot = Snap::Idle;
        if self.closing {
            return;
        }
        let request = self.next_request;
        self.next_request += 1;
        self.snapshot = Snap::Asked {
            request,
            have_seq,
            heard: self.now,
            wait,
            parts: SnapshotParts::default(),
            catch_up: CatchUpParts::default(),
        };
        let have_epoch = self.lineage.owner(have_seq);
        self.fx.push(Effect::AskSnapshot {
            request,
            have_seq,
            have_epoch,
        });
    }

    /// Stops listening for the answer to the request out, if any.
    pub(super) fn close_snapshot(&mut self) {
        if let Snap::Asked { request, .. } = self.snapshot {
            self.fx.push(Effect::CloseSnapshot { request });
            self.snapshot = Snap::Idle;
        }
    }

    pub(super) fn ask_failed(&mut self, request: u64, error: &str) {
        let Snap::Asked {
            request: out,
            have_seq,
            wait,
            ..
        } = self.snapshot
        else {
            return;
        };
        if out == request {
            self.log(
                Level::Warn,
                format!("snapshot request failed: {error}; retrying"),
            );
            self.retry_at(self.now.saturating_add(wait), have_seq, RETRY.next(wait));
        }
    }

    pub(super) fn retry_at(&mut self, at: u64, have_seq: u64, wait: u64) {
        self.close_snapshot();
        self.snapshot = Snap::RetryAt { at, have_seq, wait };
    }

    /// The request out heard nothing for its wait: its answer is lost
    /// (module docs); asked again, waiting longer.
    pub(super) fn expire_ask(&mut self) {
        let Snap::Asked {
            request,
            have_seq,
            heard,
            wait,
            ..
        } = self.snapshot
        else {
            return;
        };
        if self.now.saturating_sub(heard) < self.answer_wait {
            return;
        }
        let msg = format!(
            "no answer to snapshot request {request} in {} ms; asking again",
            self.answer_wait
        );
        self.log(Level::Warn, msg);
        self.answer_wait = ANSWER_WAIT.next(self.answer_wait);
        self.ask(have_seq, wait);
    }

    pub(super) fn retry_ask(&mut self) {
        if let Snap::RetryAt { at, have_seq, wait } = self.snapshot {
            if at <= self.now {
                self.ask(have_seq, wait);
            }
        }
    }

    /// The answers to `request` ended with no whole snapshot: ask again.
    pub(super) fn lost(&mut self, request: u64) {
        if let Snap::Asked {
            request: out,
            have_seq,
            ..
        } = self.snapshot
        {
            if out == request {
                self.log(Level::Warn, "snapshot answers ended; asking again".into());
                self.ask(have_seq, FIRST_RETRY_MS);
            }
        }
    }

    pub(super) fn answer(&mut self, request: u64, answer: Delivered<Reply>) {
        let token = answer.token;
        let Some(have_seq) = self.asked_for(request) else {
            return self.stray(token);
        };
        // A part came: the request is answered, however slowly.
        if let Snap::Asked { heard, .. } = &mut self.snapshot {
            *heard = self.now;
        }
        self.answer_wait = ANSWER_WAIT.first;
        let whole = match answer.item {
            Err(e) => Err(e),
            Ok((stamp, _)) if refused(stamp, self.cluster, self.lineage.epoch()) => {
                return self.refuse(token, stamp, have_seq);
            }
            Ok((_, Reply::CatchUpPart(part))) => {
                return self.catch_up_part(request, token, part);
            }
            Ok((_, reply)) => match self.assemble(reply) {
                Some(whole) => whole,
                None => return self.ack(vec![token]), // more parts to come
            },
        };
        self.ack(vec![token]);
        self.close_snapshot();
        match whole {
            Ok(snapshot) => self.snapshot = Snap::Held { request, snapshot },
            Err(e) => self.resync(&format!("the snapshot did not install: {e}")),
        }
    }

    /// The `have_seq` of `request`, if it is the request out.
    pub(super) fn asked_for(&self, request: u64) -> Option<u64> {
        match self.snapshot {
            Snap::Asked {
                request: out,
                have_seq,
                ..
            } if out == request => Some(have_seq),
            _ => None,
        }
    }

    /// The whole answer `reply` completes, if it completes one.
    fn assemble(&mut self, reply: Reply) -> Option<Result<Option<Snapshot>, String>> {
        let Snap::Asked { parts, .. } = &mut self.snapshot else {
            return Some(Err("no snapshot asked for".into()));
        };
        match reply {
            Reply::SnapshotPart(part) => match parts.add(part) {
                Ok(None) => None,
                Ok(Some(s)) => Some(Ok(Some(s))),
                Err(e) => Some(Err(e.to_string())),
            },
            Reply::Snapshot(s) => Some(s.map_err(|e| e.to_string())),
            _ => Some(Err("not a snapshot".into())),
        }
    }

    fn stray(&mut self, token: Token) {
        self.log(
            Level::Debug,
            "an answer to an earlier snapshot request dropped".into(),
        );
        self.ack(vec![token]);
    }

    /// A deposed master answered (it still consumes `writeQ`): its state
    /// is not the history's. Ask again, later.
    fn refuse(&mut self, token: Token, stamp: Stamp, have_seq: u64) {
        let e = stamp.epoch;
        self.log(
            Level::Warn,
            format!("snapshot of epoch {e} refused (another cluster's or older)"),
        );
        self.ack(vec![token]);
        let at = self.now.saturating_add(REFUSED_RETRY_MS);
        self.retry_at(at, have_seq, FIRST_RETRY_MS);
    }

    /// Installs a whole answer once no run is in flight.
    pub(super) fn install_held(&mut self) {
        if self.applying.is_some() || !matches!(self.snapshot, Snap::Held { .. }) {
            return;
        }
        let Snap::Held { request, snapshot } = std::mem::take(&mut self.snapshot) else {
            return;
        };
        let seq = snapshot.as_ref().map_or(0, |s| s.seq);
        self.snapshot = Snap::Installing {
            request,
            seq,
            then: None,
        };
        self.fx.push(Effect::Install { request, snapshot });
    }

    pub(super) fn installed(&mut self, request: u64, result: Result<(u64, Lineage), String>) {
        let then = match self.snapshot {
            Snap::Installing {
                request: r, then, ..
            } if r == request => then,
            _ => {
                let msg = format!("an install result nobody waited for dropped ({request})");
                return self.log(Level::Warn, msg);
            }
        };
        self.snapshot = Snap::Idle;
        match (result, then) {
            (Err(e), _) => self.resync(&format!("the snapshot did not install: {e}")),
            (Ok((seq, _)), Some(have_seq)) => {
                self.applied = seq;
                self.ask(have_seq, FIRST_RETRY_MS);
            }
            (Ok((seq, lineage)), None) => self.caught_up(seq, lineage),
        }
    }

    /// The store holds the snapshot, up to `seq` of `theirs`.
    fn caught_up(&mut self, seq: u64, theirs: Lineage) {
        self.applied = seq;
        self.behind_since = None;
        self.confirming = false;
        // A newer lineage heard meanwhile stays, if the snapshot's writes
        // are all in it.
        if theirs.epoch() >= self.lineage.epoch() {
            self.lineage = theirs;
        } else if !self.lineage.agrees(&theirs, seq) {
            return self.resync("the snapshot holds writes the newer history does not");
        }
        self.ready = true;
        self.diverged = false;
        self.refilter();
        // What the snapshot already holds is settled.
        let (held, later): (Vec<(u64, Run)>, _) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|(_, run)| run.last() <= seq);
        self.pending = later.into_iter().collect();
        self.ack(held.into_iter().filter_map(|(_, run)| run.token).collect());
    }

    /// Takes a snapshot when a wait for a write has lasted [`GAP_WAIT_MS`]
    /// without progress; it holds every write the master logged. Reads go
    /// on meanwhile: what this replica holds is a consistent prefix.
    pub(super) fn watch_gaps(&mut self) {
        let busy = !self.ready || self.applying.is_some() || !matches!(self.snapshot, Snap::Idle);
        if busy || !(self.has_gap() || self.reads_wait()) {
            self.behind_since = None;
            return;
        }
        let since = *self.behind_since.get_or_insert(self.now);
        if self.now.saturating_sub(since) >= GAP_WAIT_MS {
            let applied = self.applied;
            let msg = format!("no progress past seq {applied}; taking a snapshot");
            self.log(Level::Warn, msg);
            self.behind_since = None;
            self.awaited = 0;
            self.ask(applied, FIRST_RETRY_MS);
        }
    }
}

/// Whether an answer stamped `stamp` must not be installed by a replica
/// of `cluster` that follows `epoch`.
fn refused(stamp: Stamp, cluster: u64, epoch: u64) -> bool {
    stamp.cluster != cluster || stamp.epoch < epoch
}
