//! What each simulated worker does in its turn: the master takes writes,
//! an elected slave drains to its fence, a slave replicates (and takes a
//! snapshot when it must).

use dbaas::core::role::Input as RoleInput;

use super::world::{QMsg, Rec, World};

/// Sync messages a worker takes from its queue in one turn.
const PER_TURN: usize = 4;

impl World {
    /// The master: one write at a time, applied and flushed, its sync
    /// published (the broker may refuse: the write goes back to the end
    /// of `writeQ`, and later ones go on), then answered.
    pub(super) fn lead(&mut self, id: u64, epoch: u64) {
        if let Some(h) = self.in_hand.filter(|h| h.worker == id) {
            if !h.published {
                if self.rng.f64() < self.setup.refuse_chance {
                    self.log(format!("sync of seq {} refused", h.rec.seq));
                    self.in_hand = None;
                    self.write_q.retain(|&w| w != h.rec.write);
                    self.write_q.push_back(h.rec.write);
                    return;
                }
                self.publish(QMsg::Sync(h.rec));
                self.in_hand = Some(super::world::InHand {
                    published: true,
                    ..h
                });
                return;
            }
            self.in_hand = None;
            self.write_q.retain(|&w| w != h.rec.write);
            self.acked.insert(h.rec.write);
            let r = h.rec;
            self.log(format!(
                "worker {id} acknowledged write {} at seq {} (epoch {})",
                r.write, r.seq, r.epoch
            ));
            return;
        }
        let Some(&write) = self.write_q.front() else {
            return;
        };
        let w = self.workers.get_mut(&id).expect("listed");
        // Answered before (a redelivery): from the record, its sync again.
        let rec = match w.store.applied.iter().find(|r| r.write == write) {
            Some(r) => *r,
            None => {
                let rec = Rec {
                    seq: w.store.next(),
                    epoch,
                    write,
                };
                w.store.applied.push(rec);
                w.store.flush();
                rec
            }
        };
        self.in_hand = Some(super::world::InHand {
            worker: id,
            rec,
            published: false,
        });
    }

    /// Puts `msg` on every sync queue (the fanout), each capped.
    pub(super) fn publish(&mut self, msg: QMsg) {
        let cap = self.setup.queue_cap;
        for q in self.queues.values_mut() {
            q.push_back(msg);
            while q.len() > cap {
                q.pop_front();
            }
        }
    }

    /// Elected: applies what came before its fence, then flushes; a gap
    /// at the fence (writes it lacks) fails the drain.
    pub(super) fn drain(&mut self, id: u64, fence: u64) {
        for _ in 0..PER_TURN {
            let Some(msg) = self.queues.get_mut(&id).and_then(|q| q.pop_front()) else {
                return;
            };
            match msg {
                QMsg::Sync(rec) => self.apply_sync(id, rec),
                QMsg::Fence(f) if f == fence => {
                    let w = self.workers.get_mut(&id).expect("listed");
                    let ok = !w.gapped();
                    if ok {
                        w.store.flush();
                    }
                    self.role_step(id, RoleInput::Drained(ok));
                    return;
                }
                QMsg::Fence(_) => {}
            }
        }
    }

    /// A slave: installs a snapshot from the leader when it has none yet
    /// (or a gap has lasted), else applies what its queue holds.
    pub(super) fn replicate(&mut self, id: u64) {
        let (ready, stuck) = {
            let w = &self.workers[&id];
            let stuck = w
                .gap_since
                .is_some_and(|t| self.now >= t + self.setup.gap_wait);
            (w.ready, stuck)
        };
        if !ready || stuck {
            self.snapshot(id);
            return;
        }
        for _ in 0..PER_TURN {
            let Some(msg) = self.queues.get_mut(&id).and_then(|q| q.pop_front()) else {
                return;
            };
            if let QMsg::Sync(rec) = msg {
                self.apply_sync(id, rec);
            }
        }
    }

    fn snapshot(&mut self, id: u64) {
        let Some(leader) = self.leader().filter(|l| l.id != id) else {
            return;
        };
        let state = leader.store.applied.clone();
        let seq = state.len() as u64;
        let w = self.workers.get_mut(&id).expect("listed");
        w.store.applied = state;
        w.store.flush();
        w.held.retain(|&s, _| s > seq);
        w.gap_since = None;
        w.ready = true;
        self.log(format!("worker {id} installed a snapshot at seq {seq}"));
        self.settle_held(id);
    }

    /// Applies a sync in sequence order: a duplicate is dropped, one that
    /// differs from what this store holds at its seq makes it resync, one
    /// past a gap is held until the gap fills.
    fn apply_sync(&mut self, id: u64, rec: Rec) {
        let now = self.now;
        let w = self.workers.get_mut(&id).expect("listed");
        let next = w.store.next();
        if rec.seq < next {
            if w.store.applied[rec.seq as usize - 1] != rec {
                w.ready = false; // diverged: a snapshot next
            }
            return;
        }
        if rec.seq > next {
            w.held.insert(rec.seq, rec);
            w.gap_since.get_or_insert(now);
            return;
        }
        w.store.applied.push(rec);
        self.settle_held(id);
    }

    /// Applies the held syncs that now follow.
    fn settle_held(&mut self, id: u64) {
        let w = self.workers.get_mut(&id).expect("listed");
        loop {
            let next = w.store.next();
            match w.held.first_key_value() {
                Some((&s, _)) if s < next => {
                    w.held.pop_first();
                }
                Some((&s, &rec)) if s == next => {
                    w.held.pop_first();
                    w.store.applied.push(rec);
                }
                _ => break,
            }
        }
        if w.held.is_empty() {
            w.gap_since = None;
        }
    }
}
