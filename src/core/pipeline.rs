//! The master's write pipeline: when a group of writes may be answered.
//!
//! The master applies the writes it takes from `writeQ` in groups, one
//! group at a time, and flushes each. A group's syncs go out as runs of
//! consecutive seqs (one message each) while the next group is applied;
//! the broker confirms them in any order, and a publish can fail. The
//! rule this machine keeps (promise 1 and the slaves' gap rule): **a group
//! is answered only once the sync of every seq up to the highest one its
//! answers need is confirmed** (by this group or any other), and the lease
//! still holds. Else a slave could wait at a gap that no acknowledged
//! write lets it pass, or a deposed master could answer.
//!
//! A publish that fails (refused, or its confirm not in time) is sent
//! again by its own group, after a doubling wait ([`RETRY`]), for as long
//! as the lease holds: a gap is filled by the group that made it, never
//! left to whatever order `writeQ` gives back requeued writes in (groups
//! waiting past a gap would fill the master's prefetch, and the writes
//! behind the gap could never come in).
//!
//! A group that cannot be answered goes back to `writeQ` whole (its
//! requests are answered again from the record, and their syncs sent
//! again, when they come back): when the lease runs out, when an earlier
//! seq's sync does not come within [`PREFIX_WAIT_MS`] of its own, or when
//! the master stops.
//!
//! A master whose lease ran out and came back (it claimed its place
//! again) cannot count on the groups it put back: they may never come back
//! (their clients gave up and `writeQ` let them expire), and a gap no
//! group owns would hold back every later answer for good. So it sends
//! their syncs again itself, from its log, as a group of their own
//! ([`Pipeline::gap_after_lapse`]), before it takes writes again; only if
//! its log no longer holds them does it count them as sent
//! ([`Pipeline::resume`]), as a new master counts what its store holds.
//!
//! Inputs: [`Pipeline::applied`], [`Pipeline::published`],
//! [`Pipeline::tick`], [`Pipeline::gap_after_lapse`],
//! [`Pipeline::resume`], [`Pipeline::stop`]; each returns [`Effect`]s for
//! the driver (`actors/master.rs`) to carry out.

use std::collections::BTreeMap;

use super::backoff::Backoff;

/// How long a group whose own syncs are confirmed waits for an earlier
/// seq's (failed, and coming back from `writeQ`) before it goes back too.
pub const PREFIX_WAIT_MS: u64 = 2_000;

/// How soon a failed sync publish is sent again.
pub const RETRY: Backoff = Backoff::new(20, 1_000);

/// A deliberately wrong rule, for checking that the simulator catches
/// what it should (never set in production).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutation {
    /// The rule before the pipeline: a group whose publish failed goes
    /// back to `writeQ` whole instead of sending it again.
    RequeueOnFailedPublish,
}

/// Where one run's publish stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Run {
    /// Sent; its confirm not heard yet.
    Out {
        wait: u64,
    },
    /// Not confirmed; sent again at `at`.
    Failed {
        at: u64,
        wait: u64,
    },
    Confirmed,
}

/// A group, as numbered by the pipeline.
pub type GroupId = u64;

/// What the driver does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Publish run `run` (an index into the runs given to
    /// [`Pipeline::applied`]) of `group` to `syncQ`; report the outcome with
    /// [`Pipeline::published`].
    Publish { group: GroupId, run: usize },
    /// Answer and acknowledge every request of `group`.
    Answer(GroupId),
    /// Put the group's requests back on `writeQ` (answers that need no
    /// sync, such as a refusal to a fenced sender, may still go out).
    Requeue(GroupId),
}

/// The seqs whose syncs the broker confirmed, as a prefix and the runs
/// confirmed beyond it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Confirmed {
    /// Every seq up to here is confirmed.
    through: u64,
    /// Confirmed runs past a gap, by first seq: the last seq of each.
    beyond: BTreeMap<u64, u64>,
}

impl Confirmed {
    /// Everything up to `through` counts as confirmed: a master starts
    /// with what its store held (those writes' syncs are sent again as
    /// their requests come back; a slave that misses one takes a snapshot).
    pub fn starting_at(through: u64) -> Self {
        Confirmed {
            through,
            beyond: BTreeMap::new(),
        }
    }

    /// Every seq up to this one is confirmed.
    pub fn through(&self) -> u64 {
        self.through
    }

    /// Records that the syncs of `first..=last` were confirmed; returns the
    /// new prefix.
    pub fn confirm(&mut self, first: u64, last: u64) -> u64 {
        if last > self.through {
            let first = first.max(self.through + 1);
            let end = self.beyond.entry(first).or_insert(last);
            *end = (*end).max(last);
        }
        while let Some((&first, &last)) = self.beyond.first_key_value() {
            if first > self.through.saturating_add(1) {
                break;
            }
            self.through = self.through.max(last);
            self.beyond.remove(&first);
        }
        self.through
    }
}

/// One group between its apply and its answer.
#[derive(Debug)]
struct Group {
    /// The seq every answer of the group needs confirmed: its highest
    /// logged seq, or a snapshot's or a head's.
    needs: u64,
    /// Each run's seqs, and where its publish stands.
    runs: Vec<(u64, u64, Run)>,
    /// Since when every publish of it is confirmed (it waits for the
    /// prefix from then on).
    waiting_since: Option<u64>,
}

/// The pipeline of one master (one epoch).
#[derive(Debug)]
pub struct Pipeline {
    confirmed: Confirmed,
    groups: BTreeMap<GroupId, Group>,
    next_group: GroupId,
    mutation: Option<Mutation>,
    /// The lease ran out since the prefix last started: groups went back.
    lapsed: bool,
}

impl Pipeline {
    /// A master whose store holds every seq up to `applied`.
    pub fn new(applied: u64) -> Self {
        Pipeline {
            confirmed: Confirmed::starting_at(applied),
            groups: BTreeMap::new(),
            next_group: 0,
            mutation: None,
            lapsed: false,
        }
    }

    /// A pipeline with a planted bug (tests only).
    pub fn mutated(applied: u64, mutation: Mutation) -> Self {
        Pipeline {
            mutation: Some(mutation),
            ..Self::new(applied)
        }
    }

    /// Every seq up to this one is confirmed on `syncQ`.
    pub fn synced(&self) -> u64 {
        self.confirmed.through()
    }

    /// Groups applied and not yet answered or requeued.
    pub fn in_flight(&self) -> usize {
        self.groups.len()
    }

    /// A group was applied and flushed at `now`: its logged writes form
    /// `runs` (first and last seq of each, one sync message each), and its
    /// answers need every seq up to `needs` confirmed. Returns the group's
    /// id and what to do.
    pub fn applied(
        &mut self,
        now: u64,
        lease_valid: bool,
        runs: &[(u64, u64)],
        needs: u64,
    ) -> (GroupId, Vec<Effect>) {
        let group = self.next_group;
        self.next_group += 1;
        let needs = runs.iter().map(|r| r.1).fold(needs, u64::max);
        if !runs.is_empty() && !lease_valid {
            // A master whose lease ran out sends nothing more: its writes
            // go back to writeQ for whoever leads.
            self.lapsed = true;
            return (group, vec![Effect::Requeue(group)]);
        }
        let effects = (0..runs.len())
            .map(|run| Effect::Publish { group, run })
            .collect();
        self.groups.insert(
            group,
            Group {
                needs,
                runs: runs
                    .iter()
                    .map(|&(f, l)| (f, l, Run::Out { wait: 0 }))
                    .collect(),
                waiting_since: None,
            },
        );
        let mut effects: Vec<Effect> = effects;
        self.settle_one(group, now, lease_valid, &mut effects);
        (group, effects)
    }

    /// The publish of `run` of `group` ended: confirmed (`ok`) or not (it
    /// is sent again after a wait, see [`Pipeline::tick`]). Answers every
    /// group this lets through.
    pub fn published(
        &mut self,
        now: u64,
        lease_valid: bool,
        group: GroupId,
        run: usize,
        ok: bool,
    ) -> Vec<Effect> {
        let mut effects = Vec::new();
        let Some(g) = self.groups.get_mut(&group) else {
            return effects;
        };
        let Some(r) = g.runs.get_mut(run) else {
            return effects;
        };
        let Run::Out { wait } = r.2 else {
            return effects;
        };
        let (first, last) = (r.0, r.1);
        if ok {
            r.2 = Run::Confirmed;
            self.confirmed.confirm(first, last);
        } else {
            let wait = RETRY.next(wait);
            r.2 = Run::Failed {
                at: now.saturating_add(wait),
                wait,
            };
            let requeue = self.mutation == Some(Mutation::RequeueOnFailedPublish);
            if !lease_valid || requeue {
                self.lapsed |= !lease_valid;
                self.groups.remove(&group);
                effects.push(Effect::Requeue(group));
            }
            return effects;
        }
        let ids: Vec<GroupId> = self.groups.keys().copied().collect();
        for id in ids {
            self.settle_one(id, now, lease_valid, &mut effects);
        }
        effects
    }

    /// Time passes: failed publishes whose wait is over go again; a group
    /// that has waited [`PREFIX_WAIT_MS`] for an earlier seq goes back to
    /// `writeQ`; without the lease, every group goes back.
    pub fn tick(&mut self, now: u64, lease_valid: bool) -> Vec<Effect> {
        if !lease_valid {
            self.lapsed = true;
            return self.stop();
        }
        let mut effects = Vec::new();
        for (&group, g) in self.groups.iter_mut() {
            for (run, r) in g.runs.iter_mut().enumerate() {
                if let Run::Failed { at, wait } = r.2 {
                    if at <= now {
                        r.2 = Run::Out { wait };
                        effects.push(Effect::Publish { group, run });
                    }
                }
            }
        }
        let late: Vec<GroupId> = self
            .groups
            .iter()
            .filter(|(_, g)| {
                g.waiting_since
                    .is_some_and(|since| now.saturating_sub(since) >= PREFIX_WAIT_MS)
            })
            .map(|(&id, _)| id)
            .collect();
        for id in late {
            self.groups.remove(&id);
            effects.push(Effect::Requeue(id));
        }
        effects
    }

    /// The lease holds again, the store holding every seq up to `applied`:
    /// after a lapse, the seqs the prefix lacks up to there (their groups
    /// went back), for the driver to send again as a group of their own
    /// (see the module docs). `None` without a lapse, or without a gap.
    pub fn gap_after_lapse(&mut self, applied: u64) -> Option<(u64, u64)> {
        if !std::mem::take(&mut self.lapsed) {
            return None;
        }
        let from = self.confirmed.through().saturating_add(1);
        (applied >= from).then_some((from, applied))
    }

    /// The lease holds again, the store holding every seq up to `applied`,
    /// and the gap left by a lapse cannot be sent again (the log no longer
    /// holds it): the prefix starts again there, as a new master's does.
    /// Groups applied since the lapse are kept, each still waiting for its
    /// own runs.
    pub fn resume(&mut self, applied: u64) {
        if std::mem::take(&mut self.lapsed) {
            self.count_sent(applied);
        }
    }

    /// Every seq up to `applied` counts as sent: the gap a lapse left
    /// that [`Pipeline::gap_after_lapse`] handed out, when the driver
    /// cannot send it again (its log no longer holds it).
    pub fn count_sent(&mut self, applied: u64) {
        if applied > self.confirmed.through() {
            let beyond = std::mem::take(&mut self.confirmed.beyond);
            self.confirmed = Confirmed::starting_at(applied);
            for (first, last) in beyond {
                self.confirmed.confirm(first, last);
            }
        }
    }

    /// The master stops: nothing more is answered; every group goes back.
    pub fn stop(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.groups)
            .into_keys()
            .map(Effect::Requeue)
            .collect()
    }

    /// Answers or requeues `group` if its fate is decided.
    fn settle_one(&mut self, group: GroupId, now: u64, lease_valid: bool, out: &mut Vec<Effect>) {
        let Some(g) = self.groups.get_mut(&group) else {
            return;
        };
        if g.runs.iter().any(|r| r.2 != Run::Confirmed) {
            return;
        }
        let since = *g.waiting_since.get_or_insert(now);
        if self.confirmed.through() >= g.needs {
            self.groups.remove(&group);
            out.push(if lease_valid {
                Effect::Answer(group)
            } else {
                Effect::Requeue(group)
            });
        } else if now.saturating_sub(since) >= PREFIX_WAIT_MS {
            self.groups.remove(&group);
            out.push(Effect::Requeue(group));
        }
    }
}

/// A group's logged seqs (`None` for a request with no sync: dropped,
/// fenced, a snapshot or a head) as runs of consecutive seqs, one sync
/// message each, and which run each request went into. The same seq twice
/// (a retry answered from the record in the same group) goes out once.
pub fn sync_runs(seqs: &[Option<u64>]) -> (Vec<(u64, u64)>, Vec<Option<usize>>) {
    let mut logged: Vec<(usize, u64)> = seqs
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.map(|s| (i, s)))
        .collect();
    logged.sort_by_key(|&(_, s)| s);
    let mut runs: Vec<(u64, u64)> = Vec::new();
    let mut run_of = vec![None; seqs.len()];
    for (i, seq) in logged {
        match runs.last_mut() {
            Some(run) if run.1 == seq => {}
            Some(run) if run.1.checked_add(1) == Some(seq) => run.1 = seq,
            _ => runs.push((seq, seq)),
        }
        run_of[i] = Some(runs.len() - 1);
    }
    (runs, run_of)
}

#[cfg(test)]
mod tests;
