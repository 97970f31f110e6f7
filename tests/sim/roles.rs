//! The simulated master: one write at a time, applied and flushed, its
//! sync published to every queue (the broker may refuse it), then
//! answered; between writes it answers the snapshot requests waiting in
//! `writeQ`.

use dbaas::model::wire::{SyncBatch, SyncItem};

use super::slave::sync_message;
use super::world::{InHand, Rec, World};

impl World {
    /// The master's turn. A refused publish puts the write back at the
    /// end of `writeQ` (later ones go on): it is answered again from the
    /// record, and its sync published again, when it comes back.
    pub(super) fn lead(&mut self, id: u64, epoch: u64) {
        if let Some(h) = self.in_hand.filter(|h| h.worker == id) {
            if !h.published {
                self.publish_in_hand(h);
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
        self.answer_snapshots(id, epoch);
        let Some(&write) = self.write_q.front() else {
            return;
        };
        let w = self.worker(id);
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
        self.in_hand = Some(InHand {
            worker: id,
            rec,
            published: false,
        });
    }

    fn publish_in_hand(&mut self, h: InHand) {
        if self.rng.f64() < self.setup.refuse_chance {
            self.log(format!("sync of seq {} refused", h.rec.seq));
            self.in_hand = None;
            self.write_q.retain(|&w| w != h.rec.write);
            self.write_q.push_back(h.rec.write);
            return;
        }
        let batch = SyncBatch {
            lineage: self.workers[&h.worker].store.lineage.clone(),
            writes: vec![sync_message(h.rec)],
        };
        self.publish(SyncItem::Writes(batch));
        self.in_hand = Some(InHand {
            published: true,
            ..h
        });
    }

    /// Puts `item` on every sync queue (the fanout), each capped.
    pub(super) fn publish(&mut self, item: SyncItem) {
        let cap = self.setup.queue_cap;
        for q in self.queues.values_mut() {
            q.push(item.clone(), cap);
        }
    }
}
