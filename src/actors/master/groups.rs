//! Carries out the pipeline's decisions ([`crate::core::pipeline`]) for
//! the master's group tasks.
//!
//! Each applied group is finished on a task of its own (publishing its
//! syncs, then answering or requeueing), so that the next group is applied
//! while the broker confirms; they share the one pipeline through this.
//! The master actor ticks it (a group waiting too long for an earlier seq
//! goes back) and stops it (every group still out goes back).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::mpsc;

use super::super::lease::Lease;
use crate::core::pipeline::{Effect, GroupId, Pipeline};

/// The pipeline, and the task of each group in flight.
pub(super) struct Groups {
    inner: Mutex<Inner>,
    base: Instant,
    lease: Arc<Lease>,
}

struct Inner {
    core: Pipeline,
    tasks: HashMap<GroupId, mpsc::UnboundedSender<Step>>,
}

/// What a group's task does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// Publish this run (again).
    Publish(usize),
    /// Answer the group and acknowledge it.
    Answer,
    /// Put the group back on `writeQ`.
    Requeue,
}

impl Groups {
    /// The pipeline of a master whose store holds every seq to `applied`.
    pub(super) fn new(applied: u64, lease: Arc<Lease>) -> Self {
        Groups {
            inner: Mutex::new(Inner {
                core: Pipeline::new(applied),
                tasks: HashMap::new(),
            }),
            base: Instant::now(),
            lease,
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A group was applied and flushed (see [`Pipeline::applied`]): its
    /// id, and its task's steps (ending with an answer or a requeue; a
    /// closed channel, when the master stopped, means requeue).
    pub(super) fn applied(
        &self,
        runs: &[(u64, u64)],
        needs: u64,
    ) -> (GroupId, mpsc::UnboundedReceiver<Step>) {
        let (now, lease) = (self.now(), self.lease.valid());
        let (tx, steps) = mpsc::unbounded_channel();
        let mut inner = self.lock();
        let (group, effects) = inner.core.applied(now, lease, runs, needs);
        inner.tasks.insert(group, tx);
        inner.carry(effects);
        (group, steps)
    }

    /// A run's publish ended (see [`Pipeline::published`]).
    pub(super) fn published(&self, group: GroupId, run: usize, ok: bool) {
        let (now, lease) = (self.now(), self.lease.valid());
        let mut inner = self.lock();
        let effects = inner.core.published(now, lease, group, run, ok);
        inner.carry(effects);
    }

    /// Time passes (see [`Pipeline::tick`]).
    pub(super) fn tick(&self) {
        let (now, lease) = (self.now(), self.lease.valid());
        let mut inner = self.lock();
        let effects = inner.core.tick(now, lease);
        inner.carry(effects);
    }

    /// The gap a lapse of the lease left (see [`Pipeline::gap_after_lapse`]).
    pub(super) fn gap_after_lapse(&self, applied: u64) -> Option<(u64, u64)> {
        self.lock().core.gap_after_lapse(applied)
    }

    /// The gap a lapse left counts as sent (see [`Pipeline::count_sent`]).
    pub(super) fn count_sent(&self, applied: u64) {
        self.lock().core.count_sent(applied);
    }

    /// The master stops: every group still out goes back.
    pub(super) fn stop(&self) {
        let mut inner = self.lock();
        let effects = inner.core.stop();
        inner.carry(effects);
    }
}

impl Inner {
    /// Hands each step to its group's task.
    fn carry(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            let (group, step) = match effect {
                Effect::Publish { group, run } => (group, Step::Publish(run)),
                Effect::Answer(g) => (g, Step::Answer),
                Effect::Requeue(g) => (g, Step::Requeue),
            };
            let Some(task) = self.tasks.get(&group) else {
                continue;
            };
            let _ = task.send(step);
            if !matches!(step, Step::Publish(_)) {
                self.tasks.remove(&group);
            }
        }
    }
}
