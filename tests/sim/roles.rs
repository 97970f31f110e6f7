//! The simulated master: the production pipeline
//! ([`dbaas::core::pipeline`]) around a model of the driver. Each turn it
//! takes a group of writes from `writeQ` (holding them unacknowledged),
//! applies and flushes them, and publishes their syncs as the pipeline's
//! runs; a publish reaches every sync queue a little later (when the
//! process runs: a paused master publishes when it resumes, even deposed),
//! and its confirm may fail, with the message routed or not (the pipeline
//! has it sent again). The pipeline says when a group is answered (its
//! writes acknowledged) or goes back to the head of `writeQ`. Between groups the master answers the snapshot
//! requests waiting, once every seq it holds is confirmed: with the
//! production rule (current, a catch-up from its log, or a snapshot).

use std::collections::BTreeMap;

use dbaas::core::catchup::{Limits, SyncLog};
use dbaas::core::pipeline::{sync_runs, Effect, GroupId, Pipeline};
use dbaas::model::wire::{SyncBatch, SyncItem, SyncMessage};

use super::orch::HEAD;
use super::slave::sync_message;
use super::world::{invalid, restore, Rec, World};

/// Groups a master keeps in flight at most.
const DEPTH: usize = 3;
/// Writes taken into one group at most.
const GROUP: usize = 6;

/// One master (a worker leading at an epoch) and its pipeline.
#[derive(Debug)]
pub struct Leading {
    pub worker: u64,
    pub pid: u64,
    pub epoch: u64,
    pub pipeline: Pipeline,
    /// The `writeQ` messages each group holds unacknowledged, each a
    /// batch of entries (writes, and asks for the head), each entry with
    /// its seq (a write's, or the head's).
    pub groups: BTreeMap<GroupId, Vec<Vec<(u64, u64)>>>,
    /// Each group's sync messages, by run (a failed one goes again).
    pub runs: BTreeMap<(GroupId, usize), SyncBatch>,
    /// The writes it logged since it began (what it catches slaves up
    /// from), the production log.
    pub log: SyncLog,
}

/// A sync on its way to the broker.
#[derive(Clone, Debug)]
pub struct Publish {
    pub at: u64,
    pub worker: u64,
    pub pid: u64,
    pub epoch: u64,
    pub group: GroupId,
    pub run: usize,
    pub batch: SyncBatch,
}

impl World {
    /// Worker `id` begins to lead at `epoch` over what its store holds.
    /// The orchestrator hears of it and sends the writes still waiting
    /// (on another, deposed, perhaps paused with them) again, under their
    /// own request ids.
    pub(super) fn begin_leading(&mut self, id: u64, epoch: u64) {
        self.end_leading(id);
        self.orch_new_epoch(epoch);
        let w = &self.workers[&id];
        let limits = Limits {
            writes: self.setup.log_writes,
            bytes: usize::MAX,
        };
        let first = w.store.applied.len() as u64 + 1;
        let leading = Leading {
            worker: id,
            pid: w.pid,
            epoch,
            pipeline: match self.setup.pipeline_mutation {
                Some(m) => Pipeline::mutated(w.store.applied.len() as u64, m),
                None => Pipeline::new(w.store.applied.len() as u64),
            },
            groups: BTreeMap::new(),
            runs: BTreeMap::new(),
            log: SyncLog::new(first, limits),
        };
        self.leading.insert(id, leading);
    }

    /// The master stops (or dies): what its groups hold goes back to
    /// `writeQ`; publishes already sent still reach the broker.
    pub(super) fn end_leading(&mut self, id: u64) {
        let Some(mut l) = self.leading.remove(&id) else {
            return;
        };
        let effects = l.pipeline.stop();
        self.carry_pipeline(&mut l, effects);
    }

    /// The master's turn.
    pub(super) fn lead(&mut self, id: u64, epoch: u64) {
        let Some(mut l) = self.leading.remove(&id) else {
            return;
        };
        if l.epoch != epoch {
            self.leading.insert(id, l);
            return;
        }
        let effects = l.pipeline.tick(self.now, true);
        self.carry_pipeline(&mut l, effects);
        let head = self.workers[&id].store.applied.len() as u64;
        if l.pipeline.synced() >= head {
            self.answer_snapshots(id, epoch, &l.log);
        }
        if l.pipeline.in_flight() < DEPTH && !self.write_q.is_empty() {
            self.take_group(&mut l);
        }
        self.leading.insert(id, l);
    }

    /// Takes, applies and flushes a group of messages (each a batch of
    /// entries, applied in order); hands its runs to the broker.
    fn take_group(&mut self, l: &mut Leading) {
        let n = self.rng.usize(1..=GROUP).min(self.write_q.len());
        let messages: Vec<Vec<u64>> = self.write_q.drain(..n).collect();
        let store = &mut self.workers.get_mut(&l.worker).expect("listed").store;
        let mut recs = Vec::with_capacity(n);
        let mut held: Vec<Vec<(u64, u64)>> = Vec::with_capacity(n);
        let mut needs = 0;
        for (&write, m) in messages
            .iter()
            .enumerate()
            .flat_map(|(m, entries)| entries.iter().map(move |e| (e, m)))
        {
            while held.len() <= m {
                held.push(Vec::new());
            }
            let held = &mut held[m];
            if write & HEAD != 0 {
                // How far the history reaches here, once it is confirmed.
                let head = store.applied.len() as u64;
                needs = needs.max(head);
                held.push((write, head));
                continue;
            }
            // A write applied before (its group went back) is answered
            // again from the record, and its sync sent again.
            let rec = match store.applied.iter().find(|r| r.write == write) {
                Some(r) => *r,
                None => {
                    let rec = Rec {
                        seq: store.next(),
                        epoch: l.epoch,
                        write,
                        refused: invalid(write),
                        restored: self.setup.restores && restore(write),
                    };
                    store.applied.push(rec);
                    rec
                }
            };
            recs.push(rec);
            if rec.restored && l.log.next() <= rec.seq {
                // As the master does: its log starts again past a
                // restore, so no catch-up holds one.
                let limits = Limits {
                    writes: self.setup.log_writes,
                    bytes: usize::MAX,
                };
                l.log = SyncLog::new(rec.seq + 1, limits);
            }
            l.log.push(sync_message(rec));
            held.push((write, rec.seq));
        }
        store.flush();
        let lineage = store.lineage.clone();
        let seqs: Vec<Option<u64>> = recs.iter().map(|r| Some(r.seq)).collect();
        let (runs, run_of) = sync_runs(&seqs);
        let mut messages: Vec<Vec<SyncMessage>> = vec![Vec::new(); runs.len()];
        for (rec, run) in recs.iter().zip(&run_of) {
            if let Some(run) = run {
                messages[*run].push(sync_message(*rec));
            }
        }
        let (group, effects) = l.pipeline.applied(self.now, true, &runs, needs);
        self.log(format!(
            "worker {} applied group {group}: {held:?} at {runs:?}",
            l.worker
        ));
        l.groups.insert(group, held);
        for (run, mut writes) in messages.into_iter().enumerate() {
            writes.sort_by_key(|m| m.seq);
            writes.dedup_by_key(|m| m.seq);
            let batch = SyncBatch {
                lineage: lineage.clone(),
                writes,
            };
            l.runs.insert((group, run), batch);
        }
        self.carry_pipeline(l, effects);
    }

    /// Publishes that are due, from processes that run: each reaches the
    /// queues unless refused (a refused one may still have been routed:
    /// a confirm that timed out), and its confirm goes to the pipeline of
    /// the master that sent it, if that master still leads.
    pub(super) fn deliver_publishes(&mut self) {
        let now = self.now;
        let mut due = Vec::new();
        let mut later = Vec::new();
        for p in std::mem::take(&mut self.publishes) {
            let runs = self
                .workers
                .get(&p.worker)
                .is_some_and(|w| w.alive && w.pid == p.pid && w.paused_until.is_none());
            if !runs {
                // A dead process sends nothing more; a paused one later.
                if self.workers[&p.worker].alive && self.workers[&p.worker].pid == p.pid {
                    later.push(p);
                }
                continue;
            }
            if p.at <= now {
                due.push(p);
            } else {
                later.push(p);
            }
        }
        self.publishes = later;
        for p in due {
            let refused = self.rng.f64() < self.setup.refuse_chance;
            let routed = !refused || self.rng.bool();
            let span = p.batch.span();
            self.log(format!(
                "worker {} publishes seqs {span:?} (epoch {}): {}",
                p.worker,
                p.epoch,
                match (refused, routed) {
                    (false, _) => "confirmed",
                    (true, true) => "routed, but not confirmed",
                    (true, false) => "refused",
                }
            ));
            if routed {
                self.publish(SyncItem::Writes(p.batch));
            }
            let Some(mut l) = self.leading.remove(&p.worker) else {
                continue;
            };
            if (l.pid, l.epoch) == (p.pid, p.epoch) {
                let leased = self.leased(p.worker, p.epoch);
                let effects = l.pipeline.published(now, leased, p.group, p.run, !refused);
                self.carry_pipeline(&mut l, effects);
            }
            self.leading.insert(p.worker, l);
        }
    }

    /// Whether worker `id` holds the lease of `epoch` now.
    pub(super) fn leased(&self, id: u64, epoch: u64) -> bool {
        let w = &self.workers[&id];
        w.leased
            && self
                .master
                .is_some_and(|m| m.pid == w.pid && m.epoch == epoch)
    }

    /// Carries out the pipeline's verdicts: acknowledge a group's writes,
    /// or put them back at the head of `writeQ` (in their order).
    pub(super) fn carry_pipeline(&mut self, l: &mut Leading, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Publish { group, run } => {
                    let Some(batch) = l.runs.get(&(group, run)).cloned() else {
                        continue;
                    };
                    let at = self.now + self.rng.u64(0..=2);
                    self.publishes.push(Publish {
                        at,
                        worker: l.worker,
                        pid: l.pid,
                        epoch: l.epoch,
                        group,
                        run,
                        batch,
                    });
                }
                Effect::Answer(g) => {
                    l.runs.retain(|k, _| k.0 != g);
                    let first = *self.answered_in.entry(l.epoch).or_insert(l.worker);
                    if first != l.worker {
                        self.broken.push(format!(
                            "one master an epoch: workers {first} and {} both acknowledged writes in epoch {}",
                            l.worker, l.epoch
                        ));
                    }
                    let entries = l.groups.remove(&g).unwrap_or_default();
                    for (entry, seq) in entries.into_iter().flatten() {
                        if entry & HEAD != 0 {
                            // An ask for the head: no write.
                        } else if invalid(entry) {
                            // Answered with its refusal.
                            self.refused.insert(entry);
                        } else if self.is_restore(entry) {
                            // Acknowledged once a replica serves a strong
                            // read past it: see `orch.rs`.
                            self.restores_answered.insert(entry);
                        } else if self.acked.insert(entry) {
                            self.answered_log.push(entry);
                        }
                        self.orch_answered(entry, seq, l.epoch);
                    }
                    self.log(format!("worker {} answered group {g}", l.worker));
                }
                Effect::Requeue(g) => {
                    l.runs.retain(|k, _| k.0 != g);
                    let messages = l.groups.remove(&g).unwrap_or_default();
                    for m in messages.into_iter().rev() {
                        self.write_q
                            .push_front(m.into_iter().map(|e| e.0).collect());
                    }
                    self.log(format!("worker {} requeued group {g}", l.worker));
                }
            }
        }
    }

    /// Puts `item` on every sync queue (the fanout), each capped.
    pub(super) fn publish(&mut self, item: SyncItem) {
        let cap = self.setup.queue_cap;
        for q in self.queues.values_mut() {
            q.push(item.clone(), cap);
        }
    }
}
