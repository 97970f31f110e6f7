//! The simulated orchestrator: the production state machine
//! ([`dbaas::core::orchestrator`]) for strong reads and for what it knows
//! of the acknowledged head. A strong read goes to a slave's replica (the
//! production [`dbaas::core::replica`]) with the seq the orchestrator
//! gives it; when the replica serves it, the checker looks at the slave's
//! store: every write acknowledged before the read began must be there
//! (promise 3). The orchestrator can be restarted: the new one knows
//! nothing of what was acknowledged before, and asks the master
//! (`MasterRequest::Head`, on `writeQ` like a write).

use std::collections::{BTreeMap, BTreeSet};

use dbaas::core::orchestrator::{Effect, OrchestratorCore, Outgoing};
use dbaas::core::replica::{Delivered, Input};
use dbaas::model::wire::{Reply, Stamp};
use dbaas::model::{Consistency, WriteReply, WriteResult};

use super::world::{World, CLUSTER};

/// `writeQ` entries that are asks for the head, not writes.
pub const HEAD: u64 = 1 << 62;
/// Tokens of reads handed to a replica.
pub const READ: u64 = 1 << 61;

/// The orchestrator core as the simulator runs it: a read's waiter is the
/// read's number; nothing rides with the operation.
pub type Orch = OrchestratorCore<u64, ()>;

/// A new orchestrator following `epoch`, its ids from `seed`.
pub fn orchestrator(epoch: u64, seed: u64, now: u64) -> Orch {
    let mut o = Orch::new(CLUSTER, epoch, seed % (1 << 40));
    o.start(now);
    o
}

/// Strong reads under way: where each went, and how many acknowledged
/// writes it must see.
#[derive(Debug, Default)]
pub struct Reads {
    /// By correlation id: the acknowledged writes when it began.
    started: BTreeMap<u64, usize>,
    /// By token: the worker serving it and what it must see.
    at: BTreeMap<u64, (u64, usize)>,
    /// Served and checked.
    pub checked: u64,
}

impl World {
    /// A client's strong read.
    pub fn strong_read(&mut self) {
        let now = self.now;
        let n = self.acked_log.len();
        self.next_read += 1;
        let out = self.orch.read(Consistency::Strong, self.next_read, (), now);
        if let Some(out) = out {
            self.reads_state.started.insert(out.id, n);
            self.send_read(out);
        } else {
            // Parked until the head is known; sent later under this id.
            self.reads_state.started.insert(self.orch.last_id(), n);
        }
        self.orch_effects();
    }

    /// Hands a read to a slave that consumes its queue.
    fn send_read(&mut self, out: Outgoing<()>) {
        let must_see = self.reads_state.started.remove(&out.id).unwrap_or(0);
        let slaves: Vec<u64> = self
            .workers
            .values()
            .filter(|w| w.alive && w.replica.is_some() && w.consuming)
            .map(|w| w.id)
            .collect();
        if slaves.is_empty() {
            return;
        }
        let id = slaves[self.rng.usize(0..slaves.len())];
        let token = READ | out.id;
        self.log(format!(
            "read {} to worker {id} at min seq {}",
            out.id, out.min_seq
        ));
        self.reads_state.at.insert(token, (id, must_see));
        let read = Delivered {
            token,
            item: Ok((out.stamp, out.min_seq)),
        };
        self.worker(id).replica_inbox.push(Input::Reads(vec![read]));
    }

    /// A replica serves reads: each must see what it must.
    pub(super) fn served(&mut self, id: u64, tokens: &[u64]) {
        for token in tokens.iter().filter(|t| *t & READ != 0) {
            let Some((worker, must_see)) = self.reads_state.at.remove(token) else {
                continue;
            };
            if worker != id {
                continue;
            }
            let has: BTreeSet<u64> = self.workers[&id]
                .store
                .applied
                .iter()
                .map(|r| r.write)
                .collect();
            let missing: Vec<u64> = self.acked_log[..must_see]
                .iter()
                .filter(|w| !has.contains(w))
                .copied()
                .collect();
            self.reads_state.checked += 1;
            self.log(format!(
                "worker {id} served a strong read that must see {must_see} writes"
            ));
            if !missing.is_empty() {
                self.broken.push(format!(
                    "a strong read on worker {id} missed writes acknowledged before it began: {missing:?}"
                ));
            }
        }
    }

    /// The orchestrator's turn: time passes, and what it decided is done.
    pub(super) fn orch_tick(&mut self) {
        self.orch.tick(self.now);
        self.orch_effects();
    }

    fn orch_effects(&mut self) {
        let effects: Vec<Effect<u64, ()>> = self.orch.effects().collect();
        for effect in effects {
            match effect {
                Effect::Deliver { .. } => {}
                Effect::SendRead(out) => self.send_read(out),
                Effect::AskHead { id, .. } => self.write_q.push_back(HEAD | id),
            }
        }
    }

    /// The master answered an entry of `writeQ`: a write (its seq) or an
    /// ask for the head (how far its store reaches).
    pub(super) fn orch_answered(&mut self, entry: u64, seq: u64, epoch: u64) {
        let now = self.now;
        let stamp = Stamp {
            cluster: CLUSTER,
            epoch,
        };
        if entry & HEAD != 0 {
            let id = entry & !HEAD;
            self.orch.reply(stamp, Reply::Head(seq), Some(id), now);
        } else {
            self.acked_log.push(entry);
            // Only a write this orchestrator sent reaches it: the answer
            // to one an earlier run sent carries a correlation id the new
            // one never gave (and may be an old seq, answered again from
            // the record, below writes acknowledged since).
            if entry < self.orch_first_write {
                self.orch_effects();
                return;
            }
            let (id, _) = self.orch.write(0, now);
            let reply = Reply::Write(Ok(WriteReply {
                seq,
                result: WriteResult::Cleared,
            }));
            self.orch.reply(stamp, reply, Some(id), now);
        }
        self.orch_effects();
    }

    /// A new master leads: the watcher tells the orchestrator.
    pub(super) fn orch_new_epoch(&mut self, epoch: u64) {
        self.orch.set_epoch(epoch, self.now);
        self.orch_effects();
    }

    /// The orchestrator process restarts: what it knew is gone.
    pub fn restart_orchestrator(&mut self) {
        self.log("the orchestrator restarts".into());
        let epoch = self.master.map_or(0, |m| m.epoch);
        let seed = self.rng.u64(..);
        self.orch = orchestrator(epoch, seed, self.now);
        self.orch_first_write = self.next_write;
        if self.setup.zero_head {
            let o = std::mem::replace(&mut self.orch, orchestrator(0, 0, 0));
            self.orch = o.trusting_a_zero_head();
        }
        self.reads_state.started.clear();
        self.orch_effects();
    }
}
