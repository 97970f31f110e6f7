//! The simulated SlaveWorker: a driver around the production
//! [`ReplicaCore`], as `actors::slave` is. It hands the core what its
//! sync queue delivers, the snapshots the master answers and the time,
//! and carries out what the core decides on the worker's store and
//! queue (the master answers snapshot requests here too, with the
//! production rule: current, a catch-up or a snapshot). Applying a run
//! and installing a snapshot finish on the
//! worker's next turn (in production they run on a thread pool), so
//! syncs may arrive meanwhile.

use dbaas::core::catchup::{self, Answer, SyncLog};
use dbaas::core::replica::{Consumer, Delivered, Effect, Input, Level, ReplicaCore};
use dbaas::error::Error;
use dbaas::model::wire::{
    CatchUpPart, Entry, Reply, Snapshot, Stamp, SyncBatch, SyncItem, SyncMessage,
};
use dbaas::model::WriteOp;

use super::world::{Rec, World, CLUSTER};

/// Sync messages a slave takes from its queue in one turn.
const PER_TURN: usize = 4;
/// How often the replica's timer ticks.
const TICK_MS: u64 = 50;
/// Tokens of snapshot answers (apart from the queue's own).
pub const ANSWER: u64 = 1 << 63;

/// A snapshot request waiting in `writeQ`: worker, pid, request, the
/// seq it holds and the epoch that wrote it.
type Ask = (u64, u64, u64, u64, u64);

/// A replicated write as the master publishes it.
pub fn sync_message(rec: Rec) -> SyncMessage {
    SyncMessage {
        seq: rec.seq,
        epoch: rec.epoch,
        request_id: u128::from(rec.write),
        entry: if rec.refused {
            Entry::Refused(Error::BadRequest("breaks the schema".into()))
        } else if rec.restored {
            Entry::Restored { rows: 0 }
        } else {
            Entry::Write(WriteOp::Clear { table: None })
        },
    }
}

fn rec(m: &SyncMessage) -> Rec {
    Rec {
        seq: m.seq,
        epoch: m.epoch,
        write: u64::try_from(m.request_id).unwrap_or(u64::MAX),
        refused: matches!(m.entry, Entry::Refused(_)),
        restored: matches!(m.entry, Entry::Restored { .. }),
    }
}

/// A store's writes as snapshot entries.
pub fn snapshot_of(recs: &[Rec]) -> Snapshot {
    let entries = recs
        .iter()
        .map(|r| {
            let mut v = r.epoch.to_be_bytes().to_vec();
            v.extend(r.write.to_be_bytes());
            v.push(u8::from(r.refused));
            v.push(u8::from(r.restored));
            (r.seq.to_be_bytes().to_vec(), v)
        })
        .collect();
    Snapshot {
        seq: recs.len() as u64,
        entries,
    }
}

fn recs_of(snap: &Snapshot) -> Vec<Rec> {
    let n = |b: &[u8]| u64::from_be_bytes(b.try_into().unwrap_or([0; 8]));
    snap.entries
        .iter()
        .map(|(k, v)| Rec {
            seq: n(k),
            epoch: n(&v[..8]),
            write: n(&v[8..16]),
            refused: v.get(16) == Some(&1),
            restored: v.get(17) == Some(&1),
        })
        .collect()
}

impl World {
    /// Starts worker `id`'s replica over its store.
    pub(super) fn start_replica(&mut self, id: u64) {
        let w = self.workers.get_mut(&id).expect("listed");
        let applied = w.store.applied.len() as u64;
        let core = ReplicaCore::new(id, CLUSTER, applied, w.store.lineage.clone());
        w.replica = Some(match self.setup.replica_mutation {
            Some(m) => core.mutated(m),
            None => core,
        });
        w.consuming = false;
        w.replica_inbox.clear();
        self.queues.entry(id).or_default();
        self.replica_step(id, Input::Start);
    }

    /// A slave's turn: what finished since its last turn, what its queue
    /// delivers, and the time.
    pub(super) fn replicate(&mut self, id: u64) {
        let inbox = std::mem::take(&mut self.workers.get_mut(&id).expect("listed").replica_inbox);
        for input in inbox {
            self.replica_step(id, input);
        }
        if self.workers[&id].consuming {
            let taken = self
                .queues
                .get_mut(&id)
                .map(|q| q.take(PER_TURN))
                .unwrap_or_default();
            if !taken.is_empty() {
                let batch = taken
                    .into_iter()
                    .map(|(token, item)| Delivered {
                        token,
                        item: Ok((self.stamp_of(&item), item)),
                    })
                    .collect();
                self.replica_step(id, Input::Syncs(batch));
            }
        }
        // The driver's timer ticks every 50 ms, as in production.
        if self.now.is_multiple_of(TICK_MS) {
            self.replica_step(id, Input::Tick);
        }
    }

    fn stamp_of(&self, item: &SyncItem) -> Stamp {
        let epoch = match item {
            SyncItem::Writes(b) => b.lineage.epoch(),
            SyncItem::Fence { .. } => 0,
        };
        Stamp {
            cluster: CLUSTER,
            epoch,
        }
    }

    /// Feeds worker `id`'s replica and carries out its effects.
    pub(super) fn replica_step(&mut self, id: u64, input: Input) {
        let now = self.now;
        let Some(replica) = self.workers.get_mut(&id).and_then(|w| w.replica.as_mut()) else {
            return;
        };
        let effects = replica.on(input, now);
        for effect in effects {
            self.replica_effect(id, effect);
        }
    }

    fn replica_effect(&mut self, id: u64, effect: Effect) {
        match effect {
            Effect::Log(Level::Warn | Level::Error, what) => {
                self.log(format!("worker {id}: {what}"))
            }
            Effect::Log(..) => {}
            Effect::Unavailable(answers) => {
                self.reads_unavailable(answers.into_iter().map(|(t, _)| t).collect())
            }
            Effect::Serve(tokens) => self.served(id, &tokens),
            Effect::Consume(c) => {
                if c == Consumer::Sync {
                    self.worker(id).consuming = true;
                }
                self.later(id, Input::Consuming(c));
            }
            Effect::StopConsuming(Consumer::Sync) => self.worker(id).consuming = false,
            Effect::StopConsuming(Consumer::Reads) => {}
            Effect::Ack(tokens) => {
                let tokens: Vec<u64> = tokens
                    .into_iter()
                    .filter(|t| t & (ANSWER | super::orch::READ) == 0)
                    .collect();
                self.queues.entry(id).or_default().ack(&tokens);
            }
            Effect::Requeue(tokens) => {
                let tokens: Vec<u64> = tokens
                    .into_iter()
                    .filter(|t| t & super::orch::READ == 0)
                    .collect();
                self.queues.entry(id).or_default().requeue(&tokens)
            }
            Effect::Apply { writes, lineage } => self.apply_run(id, &writes, lineage),
            Effect::AskSnapshot {
                request,
                have_seq,
                have_epoch,
            } => {
                let pid = self.workers[&id].pid;
                self.snapshot_asks
                    .push((id, pid, request, have_seq, have_epoch));
            }
            Effect::CloseSnapshot { request } => {
                self.snapshot_asks
                    .retain(|a| !(a.0 == id && a.2 == request));
            }
            Effect::Install { request, snapshot } => self.install(id, request, snapshot),
            Effect::PublishFence { nonce } => {
                let at = self.now + self.rng.u64(1..=20);
                self.fences
                    .push((at, id, SyncItem::Fence { worker: id, nonce }));
            }
            Effect::Flush { nonce } => {
                let w = self.worker(id);
                w.store.flush();
                let seq = w.store.applied.len() as u64;
                self.later(
                    id,
                    Input::Flushed {
                        nonce,
                        result: Ok(seq),
                    },
                );
            }
            Effect::DrainDone { nonce, result } => self.drain_done(id, nonce, result.is_ok()),
        }
    }

    fn apply_run(&mut self, id: u64, writes: &[SyncMessage], lineage: dbaas::model::Lineage) {
        let mut error = None;
        for m in writes {
            let w = self.worker(id);
            if m.seq != w.store.next() {
                error = Some(format!(
                    "seq {} out of order: {} is next",
                    m.seq,
                    w.store.next()
                ));
                break;
            }
            if matches!(m.entry, Entry::Restored { .. }) {
                error = Some(format!("seq {} is a restore", m.seq));
                let why = format!(
                    "worker {id} applied the restore at seq {} as a write",
                    m.seq
                );
                self.broken.push(why);
                break;
            }
            let w = self.worker(id);
            w.store.applied.push(rec(m));
        }
        let w = self.worker(id);
        w.store.lineage = lineage;
        let seq = w.store.applied.len() as u64;
        self.later(id, Input::Applied { seq, error });
    }

    fn install(&mut self, id: u64, request: u64, snapshot: Option<Snapshot>) {
        let lineage = self.snapshot_lineages.remove(&(id, request));
        let whole = snapshot.is_some();
        let now = self.now;
        let mut early = String::new();
        if let (Some(snap), Some(lineage)) = (snapshot, lineage.clone()) {
            let recs = recs_of(&snap);
            if self.worker(id).store.is_blank() && !recs.iter().any(|r| r.restored) {
                // `Store::install_early`: a blank store serves at once and
                // is durable only once its install is written to sled.
                let written_in = self.rng.u64(1..=1_500);
                self.worker(id)
                    .store
                    .install_early(recs, lineage, now + written_in);
                early = format!(" (early: on disk in {written_in} ms, or at a flush)");
            } else {
                let w = self.worker(id);
                // Flushed before the replica hears of it, as
                // `Store::install` flushes before it returns.
                w.store.install(recs, lineage);
                w.store.flush();
            }
        } else if let Some(lineage) = lineage {
            self.worker(id).store.lineage = lineage;
        }
        let w = self.worker(id);
        let seq = w.store.applied.len() as u64;
        let result = Ok((seq, w.store.lineage.clone()));
        if whole {
            self.log(format!(
                "worker {id} installed a snapshot at seq {seq}{early}"
            ));
        } else {
            self.log(format!("worker {id} is current at seq {seq}"));
        }
        self.later(id, Input::Installed { request, result });
    }

    /// The master answers the snapshot requests waiting in `writeQ`,
    /// between two writes, by the production rule: current, the writes
    /// missed from its `log`, or a snapshot.
    pub(super) fn answer_snapshots(&mut self, leader: u64, epoch: u64, log: &SyncLog) {
        let asks = std::mem::take(&mut self.snapshot_asks);
        let store = self.workers[&leader].store.clone();
        for ask in asks {
            let (id, pid, request, have_seq, have_epoch) = ask;
            let w = &self.workers[&id];
            if !w.alive || w.pid != pid {
                continue; // its reply queue went with it
            }
            if self.setup.lose_answers && !self.calm && self.rng.f64() < 0.25 {
                self.log(format!(
                    "worker {leader} answers worker {id}'s request {request}; the answer is lost"
                ));
                continue;
            }
            let head = store.applied.len() as u64;
            let snapshot = match catchup::decide(have_seq, have_epoch, head, &store.lineage, log) {
                Answer::Current => None,
                Answer::Snapshot => Some(snapshot_of(&store.applied)),
                Answer::CatchUp { from, through } => {
                    let parts = catchup::parts(log, &store.lineage, from, through);
                    self.catch_up(leader, epoch, ask, parts);
                    continue;
                }
            };
            self.snapshot_lineages
                .insert((id, request), store.lineage.clone());
            self.answer(id, epoch, request, Reply::Snapshot(Ok(snapshot)));
        }
    }

    /// Sends a catch-up's writes in a few parts. A part may come twice;
    /// the master may die between parts (its request goes back to
    /// `writeQ` and is answered again, here by whoever leads next turn).
    fn catch_up(&mut self, leader: u64, epoch: u64, ask: Ask, parts: Vec<CatchUpPart>) {
        let (id, _, request, _, _) = ask;
        let Some(first) = parts.first() else {
            return;
        };
        let (through, lineage) = (first.through, first.batch.lineage.clone());
        let writes: Vec<SyncMessage> = parts.into_iter().flat_map(|p| p.batch.writes).collect();
        let from = writes.first().map_or(0, |m| m.seq);
        let size = writes.len().div_ceil(self.rng.usize(1..=3)).max(1);
        let chunks: Vec<Vec<SyncMessage>> = writes.chunks(size).map(<[_]>::to_vec).collect();
        let n = chunks.len() as u32;
        let cut = if self.rng.f64() < 0.2 {
            self.rng.usize(0..chunks.len())
        } else {
            chunks.len()
        };
        self.log(format!(
            "worker {leader} answers worker {id}'s request {request} with seqs {from}..={through} from its log, in {n} parts{}",
            if cut < chunks.len() { format!(", dying after {cut}") } else { String::new() }
        ));
        for (i, writes) in chunks.into_iter().take(cut).enumerate() {
            let part = CatchUpPart {
                through,
                part: i as u32,
                parts: n,
                batch: SyncBatch {
                    lineage: lineage.clone(),
                    writes,
                },
            };
            if self.rng.f64() < 0.1 {
                self.answer(id, epoch, request, Reply::CatchUpPart(part.clone()));
            }
            self.answer(id, epoch, request, Reply::CatchUpPart(part));
        }
        if cut < n as usize {
            self.snapshot_asks.push(ask);
        }
    }

    fn answer(&mut self, id: u64, epoch: u64, request: u64, reply: Reply) {
        self.answers += 1;
        let answer = Delivered {
            token: ANSWER | self.answers,
            item: Ok((
                Stamp {
                    cluster: CLUSTER,
                    epoch,
                },
                reply,
            )),
        };
        self.later(id, Input::SnapshotAnswer { request, answer });
    }

    /// An input for worker `id`'s replica on its next turn.
    fn later(&mut self, id: u64, input: Input) {
        self.worker(id).replica_inbox.push(input);
    }

    pub(super) fn worker(&mut self, id: u64) -> &mut super::world::Worker {
        self.workers.get_mut(&id).expect("listed")
    }
}
