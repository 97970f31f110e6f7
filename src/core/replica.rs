//! A replica's decisions as a state machine: what a slave applies, when
//! it serves a read, when it takes a snapshot, and how it drains when it
//! is elected.
//!
//! [`ReplicaCore::on`] takes an [`Input`] (syncs and reads delivered, a
//! snapshot's answer, a run applied, a snapshot installed, a flush done,
//! a tick, a drain, a resume, a shutdown) and the time, and answers the
//! [`Effect`]s to carry out. The driver (`actors::slave`) owns the broker,
//! the store, the deliveries (the core sees a [`Token`] for each) and the
//! clock.
//!
//! What it guarantees:
//! - it binds its sync queue before it asks for a first snapshot, so
//!   nothing written after the snapshot is missed, and serves no read
//!   before one is installed;
//! - writes apply in sequence order, one run at a time; duplicates,
//!   messages of another cluster and writes the [`Lineage`] does not admit
//!   (a deposed master's) are dropped; of two batches from one seq the
//!   longer stays;
//! - a newer lineage is judged against every write applied *or being
//!   applied* (a run in flight, a snapshot being installed): one that
//!   disowns any of them makes the replica resync, serving no read until a
//!   fresh snapshot is installed;
//! - subscribed to its sync queue again (a lost connection), it may find
//!   the queue declared afresh, empty (the broker deletes one unused for a
//!   while): it asks the master whether it is current, and reports itself
//!   not ready (standing in no election) until the answer is in; the
//!   writes it missed show otherwise only at the next write or read;
//! - a snapshot request unanswered for [`ANSWER_WAIT`] is asked again
//!   (its answer was lost: the reply could not be published, or its
//!   reply queue was gone);
//! - a wait for a write known to exist lasts at most [`GAP_WAIT_MS`]
//!   before a snapshot is asked for, and a replica held at a gap for
//!   [`GAP_UNREADY_MS`] does not report itself ready;
//! - a read waits at most [`READ_WAIT_MS`] for the seq it needs;
//! - a drain applies everything up to its own fence and fails, rather
//!   than end short, if a gap is left or the replica diverged;
//! - an answer from a master of an older epoch is never installed;
//! - a catch-up (the writes missed, from the master's log, instead of a
//!   snapshot) is applied as syncs are: judged by the same lineage,
//!   strictly in seq order, duplicates dropped; only once all its parts
//!   came, and the replica serves once the store reaches its end;
//! - a restore (a seq whose rows are not in its sync) is never applied as
//!   a write: the replica serves what it holds until a snapshot past the
//!   restore replaces its store in one step, and stands in no election
//!   meanwhile.

mod apply;
mod catchup;
mod drain;
mod io;
mod reads;
mod restore;
mod snapshot;
mod sync;
#[cfg(test)]
mod tests;

pub use io::{Consumer, Delivered, Effect, Input, Level, Status, Token};

use std::collections::BTreeMap;

use super::backoff::{Backoff, RECONNECT};
use crate::model::wire::{Stamp, SyncMessage};
use crate::model::Lineage;
use drain::Drain;
use reads::{Parked, Subscription};
use snapshot::Snap;

/// How long a write known to exist may stay missing, without progress,
/// before the replica takes a snapshot.
pub const GAP_WAIT_MS: u64 = 3_000;
/// How long a gap may last before the replica stops reporting itself
/// caught up (and so stops standing in elections).
pub const GAP_UNREADY_MS: u64 = 500;
/// How long a read may wait for its seq before it is answered
/// "unavailable" (the orchestrator then tries another slave).
pub const READ_WAIT_MS: u64 = 2_000;
/// How soon a snapshot is asked for again after a deposed master answered.
pub const REFUSED_RETRY_MS: u64 = 100;
/// How long a snapshot request waits with no part of its answer before it
/// is asked again, doubling while none comes (so that a master slow to
/// take a large snapshot is not asked again and again): the master takes
/// a request off `writeQ` once it has answered, even when its reply could
/// not be published, and the asker is the one to ask again.
pub const ANSWER_WAIT: Backoff = Backoff::new(3_000, 60_000);
/// How the broker is tried again: the first wait, doubled each time up to
/// [`LAST_RETRY_MS`] ([`super::backoff::RECONNECT`]).
pub const RETRY: Backoff = RECONNECT;
pub const FIRST_RETRY_MS: u64 = RETRY.first;
pub const LAST_RETRY_MS: u64 = RETRY.last;

/// A deliberately wrong rule, for checking that the tests catch what they
/// should (never set in production).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutation {
    /// Judge a newer lineage against the applied seq only, not the run
    /// being applied (the rule before the fix): a fork can be kept.
    JudgeAgainstApplied,
    /// Take a sync queue subscribed again for one that kept every write
    /// (the rule before sync queues expired): a replica whose queue came
    /// back empty stays ready and may be elected without what it missed.
    TrustResubscribe,
    /// Watch a gap only while a read waits for it (the rule before a
    /// read's gap was kept): each read that gives up and is asked again
    /// starts the gap's clock afresh, so a lost sync with no write after
    /// it is never repaired while strong reads keep coming.
    ForgetAwaited,
}

/// Admitted writes ahead of the applied seq, from one delivery (a sync,
/// or a catch-up part, acknowledged as it came: no token).
#[derive(Debug)]
struct Run {
    writes: Vec<SyncMessage>,
    token: Option<Token>,
}

impl Run {
    fn last(&self) -> u64 {
        self.writes.last().map_or(0, |m| m.seq)
    }
}

/// The run the driver is applying.
#[derive(Debug)]
struct InFlight {
    /// Its last seq.
    through: u64,
    /// The seq and epoch of each of its writes.
    owners: Vec<(u64, u64)>,
    tokens: Vec<Token>,
}

/// A replica's state: see the module documentation.
#[derive(Debug)]
pub struct ReplicaCore {
    id: u64,
    cluster: u64,
    /// The history followed; written with the next run.
    lineage: Lineage,
    applied: u64,
    /// Caught up: a snapshot installed (or found current).
    ready: bool,
    /// Holds writes the history does not (or a run failed): a snapshot
    /// must replace the store before anything is applied or served.
    diverged: bool,
    /// The sync queue was consumed before: a later subscription may find
    /// it declared afresh (the broker deleted it, unused, while this
    /// replica was cut off), the writes published meanwhile gone.
    subscribed_before: bool,
    /// Since subscribing again, not yet told by the master that it is
    /// current (or given a snapshot): it reports itself not ready, so it
    /// does not stand in an election with writes it may have missed.
    confirming: bool,
    pending: BTreeMap<u64, Run>,
    applying: Option<InFlight>,
    /// Since when a write known to exist has not come, with no progress.
    behind_since: Option<u64>,
    /// The highest seq a read waited for (acknowledged, so it exists):
    /// the gap it shows is watched for after the read gave up waiting
    /// (answered "unavailable", to be asked again), until that seq is
    /// applied or a snapshot is asked for.
    awaited: u64,
    parked: Vec<Parked>,
    reads_served: u64,
    sync: Subscription,
    reads: Subscription,
    snapshot: Snap,
    next_request: u64,
    /// How long the request out may wait for its answer's next part
    /// ([`ANSWER_WAIT`]).
    answer_wait: u64,
    drain: Option<Drain>,
    /// When a snapshot was last asked for to pass a restore.
    restore_asked: Option<u64>,
    closing: bool,
    mutation: Option<Mutation>,
    /// The input being handled: its time and the effects so far.
    now: u64,
    fx: Vec<Effect>,
}

impl ReplicaCore {
    /// Replica `id` of `cluster`, over a store that holds the writes up to
    /// `applied` of `lineage`.
    pub fn new(id: u64, cluster: u64, applied: u64, lineage: Lineage) -> Self {
        ReplicaCore {
            id,
            cluster,
            lineage,
            applied,
            ready: false,
            diverged: false,
            subscribed_before: false,
            confirming: false,
            pending: BTreeMap::new(),
            applying: None,
            behind_since: None,
            awaited: 0,
            parked: Vec::new(),
            reads_served: 0,
            sync: Subscription::default(),
            reads: Subscription::default(),
            snapshot: Snap::Idle,
            next_request: 0,
            answer_wait: ANSWER_WAIT.first,
            drain: None,
            restore_asked: None,
            closing: false,
            mutation: None,
            now: 0,
            fx: Vec::new(),
        }
    }

    /// With a planted bug (tests only).
    pub fn mutated(mut self, mutation: Mutation) -> Self {
        self.mutation = Some(mutation);
        self
    }

    /// Takes `input` at `now` (milliseconds of a clock that never goes
    /// back); answers what to do, in order.
    pub fn on(&mut self, input: Input, now: u64) -> Vec<Effect> {
        self.now = self.now.max(now);
        match input {
            Input::Start => self.log(
                Level::Info,
                format!("slave starting at seq {}", self.applied),
            ),
            Input::Rejoined => {
                if self.ready && self.mutation != Some(Mutation::TrustResubscribe) {
                    self.confirm_current();
                }
            }
            Input::Consuming(c) => self.consuming(c),
            Input::ConsumeFailed { consumer, error } => self.consume_failed(consumer, &error),
            Input::ConsumerEnded(c) => self.consumer_ended(c),
            Input::Syncs(batch) => self.syncs(batch),
            Input::Reads(batch) => self.reads(batch),
            Input::AskFailed { request, error } => self.ask_failed(request, &error),
            Input::SnapshotAnswer { request, answer } => self.answer(request, answer),
            Input::SnapshotLost { request } => self.lost(request),
            Input::Applied { seq, error } => self.applied(seq, error),
            Input::Installed { request, result } => self.installed(request, result),
            Input::FenceFailed { nonce, error } => self.fence_failed(nonce, error),
            Input::Flushed { nonce, result } => self.flushed(nonce, result),
            Input::Tick => self.tick(),
            Input::Drain { nonce, heir } => self.start_drain(nonce, heir),
            Input::Resume => self.drain = None,
            Input::Shutdown => self.shutdown(),
        }
        self.settle();
        std::mem::take(&mut self.fx)
    }

    /// What follows from any input: apply what may be, serve what can be,
    /// end a drain, consume what is wanted.
    fn settle(&mut self) {
        self.install_held();
        self.pump();
        self.take_restore();
        self.end_catch_up();
        self.serve_parked();
        self.check_drain();
        self.subscribe();
    }

    fn tick(&mut self) {
        self.expire_parked();
        self.watch_gaps();
        self.retry_ask();
        self.expire_ask();
    }

    fn shutdown(&mut self) {
        self.closing = true;
        self.close_snapshot();
        self.requeue_parked();
    }

    /// What the replica reports of itself at `now`.
    pub fn status(&self, now: u64) -> Status {
        Status {
            applied: self.applied,
            // Not while a gap lasts: it cannot stand for the history then.
            // (Syncs of two groups may arrive out of order for a moment.)
            // Nor while it has not confirmed it missed nothing when its
            // sync queue was subscribed again. Nor while a restore it has
            // not installed is the next seq.
            ready: self.ready
                && !self.stuck_at_gap(now)
                && !self.confirming
                && self.restore_due().is_none(),
            reads_served: self.reads_served,
            epoch: self.lineage.epoch(),
            last_epoch: self.lineage.owner(self.applied),
        }
    }

    /// The stamp of what this replica sends.
    pub fn stamp(&self) -> Stamp {
        Stamp {
            cluster: self.cluster,
            epoch: self.lineage.epoch(),
        }
    }

    /// The highest seq applied or being applied (a run in flight, a
    /// snapshot held or being installed): what a new lineage is judged
    /// against.
    fn horizon(&self) -> u64 {
        let run = self.applying.as_ref().map_or(0, |r| r.through);
        self.applied.max(run).max(self.snapshot.installing_seq())
    }

    /// Whether a later write came but one before it did not.
    fn has_gap(&self) -> bool {
        let next = self.horizon().saturating_add(1);
        self.pending
            .keys()
            .next()
            .is_some_and(|&first| first > next)
    }

    fn stuck_at_gap(&self, now: u64) -> bool {
        self.has_gap()
            && self
                .behind_since
                .is_some_and(|t| now.saturating_sub(t) >= GAP_UNREADY_MS)
    }

    fn log(&mut self, level: Level, message: String) {
        self.fx.push(Effect::Log(level, message));
    }

    fn ack(&mut self, tokens: Vec<Token>) {
        if !tokens.is_empty() {
            self.fx.push(Effect::Ack(tokens));
        }
    }

    /// This replica diverged (a run failed, or it holds writes the history
    /// does not): no reads until a fresh snapshot replaces the store.
    fn resync(&mut self, why: &str) {
        self.log(Level::Error, format!("replica diverged ({why}); resyncing"));
        self.ready = false;
        self.diverged = true;
        self.requeue_parked();
        self.want_snapshot(u64::MAX);
    }
}
