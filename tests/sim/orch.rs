//! The simulated orchestrator: the production state machine
//! ([`dbaas::core::orchestrator`]) for writes, strong reads and what it
//! knows of the acknowledged head. Writes go in its batches (one `writeQ`
//! message holding several), each retried by its client, under the same
//! number, whenever its attempt fails (no answer in time, a new master).
//! Strong reads go in batches to a slave's replica (the production
//! [`dbaas::core::replica`]) with the seq the orchestrator gives each;
//! when the replica serves one, the slave answers the orchestrator with
//! the seq it read at, and what its store held then is judged: every
//! write acknowledged before the read began must be there (promise 3).
//! The judgement counts once the orchestrator hands that answer to the
//! client: it may drop an answer read too early and send the read again
//! (a checked read, see `dbaas::core::orchestrator`). The orchestrator can be restarted: the new one knows nothing of
//! what was acknowledged before, and asks the master
//! (`MasterRequest::Head`, on `writeQ` like a write).
//!
//! With read-index on (`Setup::read_index`) every strong read waits for a
//! head asked after it began; with `Setup::reads_see_every_answer` the
//! checker holds each strong read to every write a master answered before
//! it began, not only those its orchestrator delivered: what it must see
//! when other orchestrators (whose clients may have been told) share the
//! cluster.
//!
//! A restore's answer from the master tells its client nothing yet: as
//! `OrchestratorHandle::restore` does, the orchestrator then sends a
//! strong read (which carries the restore's seq, acknowledged), tried
//! again until one is served; only then is the restore acknowledged (the
//! sync of a restore carries no rows, so until a replica has installed a
//! snapshot past it the master's store alone holds it). Writes wait
//! meanwhile, behind the orchestrator's gate (the handle's `RwLock`, fair:
//! first come, first through): a write goes once no restore holds the
//! gate, a restore once no write is under way, and it holds the gate
//! until it is confirmed.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use dbaas::core::orchestrator::{Effect, OrchestratorCore, Outgoing};
use dbaas::core::replica::{Delivered, Input};
use dbaas::core::watcher::{Input as WatcherInput, WatcherCore};
use dbaas::model::wire::{Reply, Stamp};
use dbaas::model::{Consistency, ReadReply, ReadResult, WriteReply, WriteResult};

use super::world::{Setup, World, CLUSTER};

/// `writeQ` entries that are asks for the head, not writes.
pub const HEAD: u64 = 1 << 62;
/// Tokens of reads handed to a replica.
pub const READ: u64 = 1 << 61;

/// Waiters that are reads (the others are writes, by their number).
pub const READER: u64 = 1 << 60;
/// Reads that confirm a restore (with [`READER`] and the restore's number).
pub const CONFIRM: u64 = 1 << 59;

/// The orchestrator core as the simulator runs it: a read's waiter is the
/// read's number (with [`READER`]), and so is its operation (what the
/// slave is asked travels with the read); a write's waiter is its number,
/// which it carries.
pub type Orch = OrchestratorCore<u64, u64, u64>;

/// A new orchestrator following `epoch`, its ids from `seed`, with the
/// setup's windows (read and write batches unanswered) and read-index.
pub fn orchestrator(epoch: u64, seed: u64, now: u64, setup: &Setup) -> Orch {
    let (reads, writes) = setup.windows;
    let mut o = Orch::new(CLUSTER, epoch, seed % (1 << 40))
        .with_windows(reads, writes)
        .with_read_index(setup.read_index);
    if setup.early_answers {
        o = o.trusting_early_answers();
    }
    o.start(now);
    o
}

/// How many writes a strong read must see: of those its orchestrator
/// acknowledged, and of those any master answered.
#[derive(Clone, Copy, Debug, Default)]
pub struct MustSee {
    acked: usize,
    answered: usize,
}

/// Strong reads under way: where each went, and how many acknowledged
/// writes it must see.
#[derive(Debug, Default)]
pub struct Reads {
    /// By waiter: the acknowledged writes when it began.
    started: BTreeMap<u64, MustSee>,
    /// By token: the worker serving it, and its waiter.
    at: BTreeMap<u64, (u64, u64)>,
    /// Answers a slave sent, by the number each carries: what was wrong
    /// with what it read, if anything (judged when the orchestrator hands
    /// it over).
    serves: BTreeMap<u64, (String, Vec<String>)>,
    next_serve: u64,
    /// Handed to their clients and checked.
    pub checked: u64,
    /// Client reads not served yet, by number: what each must see, and
    /// the wait before its next try (the handle's backoff).
    pub outstanding: BTreeMap<u64, (MustSee, u64)>,
    /// Client reads to ask again: when, and which.
    again: Vec<(u64, u64)>,
    /// Client writes waiting at the gate, in order.
    pub gated: VecDeque<u64>,
    /// The restore holding the gate alone, and when it went.
    restoring: Option<(u64, u64)>,
}

/// How long a restore is tried, its confirmation included, before its
/// client is answered an error (and the gate is let go).
fn restore_deadline() -> u64 {
    dbaas::actors::BACKUP_DEADLINE.as_millis() as u64
}

impl World {
    /// A client's strong read, asked again (under a new attempt) each
    /// time it fails, until one is served.
    pub fn strong_read(&mut self) {
        let n = self.must_see();
        self.next_read += 1;
        let first = dbaas::actors::REQUEST_RETRY.first_wait().as_millis() as u64;
        self.reads_state
            .outstanding
            .insert(self.next_read, (n, first));
        self.ask_read(self.next_read);
        self.orch_effects();
    }

    /// What a strong read beginning now must see.
    fn must_see(&self) -> MustSee {
        MustSee {
            acked: self.acked_log.len(),
            answered: self.answered_log.len(),
        }
    }

    /// An attempt of client read `number`: it must see what was
    /// acknowledged when the client first asked.
    fn ask_read(&mut self, number: u64) {
        let Some(&(n, _)) = self.reads_state.outstanding.get(&number) else {
            return;
        };
        let waiter = READER | number;
        self.reads_state.started.insert(waiter, n);
        // Sent now, or later with others.
        self.orch
            .read(Consistency::Strong, waiter, waiter, self.now);
    }

    /// A slave answered reads "unavailable" (it gave up waiting for their
    /// seq): the orchestrator hears it, and their clients ask again.
    pub(super) fn reads_unavailable(&mut self, tokens: Vec<u64>) {
        let stamp = self.orch.stamp();
        let now = self.now;
        for token in tokens.into_iter().filter(|t| t & READ != 0) {
            let why = dbaas::error::Error::Unavailable("not applied that far".into());
            self.orch
                .reply(stamp, Reply::Read(Err(why)), Some(token & !READ), now);
        }
        self.orch_effects();
    }

    /// The strong read that confirms restore `write` (sent again until
    /// one is served).
    fn confirm_restore(&mut self, write: u64) {
        let now = self.now;
        let n = self.must_see();
        let waiter = READER | CONFIRM | write;
        self.reads_state.started.insert(waiter, n);
        self.orch.read(Consistency::Strong, waiter, waiter, now);
    }

    /// Lets through the gate what may go, in order.
    pub fn pump_gate(&mut self) {
        while let Some(&next) = self.reads_state.gated.front() {
            let free = self.reads_state.restoring.is_none();
            let may = if self.is_restore(next) {
                free && self.write_attempts.is_empty()
            } else {
                free
            };
            if !may {
                return;
            }
            self.reads_state.gated.pop_front();
            if self.is_restore(next) {
                self.reads_state.restoring = Some((next, self.now));
            }
            self.submit(next);
        }
    }

    /// A client's write (or its retry, under the same number).
    pub fn submit(&mut self, write: u64) {
        let attempt = self.orch.write(write, write, self.now);
        self.write_attempts.insert(write, attempt);
        self.orch_effects();
    }

    /// Hands a batch of reads to one slave that consumes its queue.
    fn send_reads(&mut self, stamp: Stamp, reads: Vec<Outgoing<u64>>) {
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
        let mut batch = Vec::with_capacity(reads.len());
        for out in reads {
            let token = READ | out.id;
            self.log(format!(
                "read {} to worker {id} at min seq {}",
                out.id, out.min_seq
            ));
            self.reads_state.at.insert(token, (id, out.op));
            batch.push(Delivered {
                token,
                item: Ok((stamp, out.min_seq)),
            });
        }
        self.worker(id).replica_inbox.push(Input::Reads(batch));
    }

    /// A replica serves reads: it answers each with the seq it read at,
    /// and what it read is judged (the judgement counts once the
    /// orchestrator hands the answer over).
    pub(super) fn served(&mut self, id: u64, tokens: &[u64]) {
        for token in tokens.iter().filter(|t| *t & READ != 0) {
            let Some((worker, waiter)) = self.reads_state.at.remove(token) else {
                continue;
            };
            if worker != id {
                continue;
            }
            let must_see = self
                .reads_state
                .started
                .get(&waiter)
                .copied()
                .unwrap_or_default();
            let store = &self.workers[&id].store;
            let seq = store.applied.len() as u64;
            let has: BTreeSet<u64> = store.applied.iter().map(|r| r.write).collect();
            let mut wrong = Vec::new();
            let missing: Vec<u64> = self.acked_log[..must_see.acked]
                .iter()
                .filter(|w| !has.contains(w))
                .copied()
                .collect();
            if !missing.is_empty() {
                wrong.push(format!(
                    "a strong read on worker {id} missed writes acknowledged before it began: {missing:?}"
                ));
            }
            let unseen: Vec<u64> = self.answered_log[..must_see.answered]
                .iter()
                .filter(|w| !has.contains(w))
                .copied()
                .collect();
            if self.setup.reads_see_every_answer && !unseen.is_empty() {
                wrong.push(format!(
                    "a strong read on worker {id} missed writes a master answered before it began \
                     (another orchestrator's clients may have been told): {unseen:?}"
                ));
            }
            self.log(format!(
                "worker {id} reads {} at seq {seq}{}",
                token & !READ,
                if wrong.is_empty() {
                    ""
                } else {
                    ": it misses some"
                }
            ));
            self.reads_state.next_serve += 1;
            let serve = self.reads_state.next_serve;
            let served = format!(
                "worker {id} served a strong read that must see {} writes (read at seq {seq})",
                must_see.acked
            );
            self.reads_state.serves.insert(serve, (served, wrong));
            let reply = Reply::Read(Ok(ReadReply {
                seq,
                result: ReadResult::Count(serve),
            }));
            let (stamp, now) = (self.orch.stamp(), self.now);
            self.orch.reply(stamp, reply, Some(token & !READ), now);
        }
        self.orch_effects();
    }

    /// The orchestrator handed a strong read's answer to its client
    /// (`waiter`): what the slave read is judged now.
    fn handed_over(&mut self, waiter: u64, serve: u64) {
        let Some((served, wrong)) = self.reads_state.serves.remove(&serve) else {
            return;
        };
        self.log(format!("{served}: handed over"));
        self.reads_state.started.remove(&waiter);
        self.reads_state.checked += 1;
        self.broken.extend(wrong);
        if waiter & CONFIRM != 0 {
            let write = waiter & !(READER | CONFIRM);
            self.log(format!("served past restore {write}: acknowledged"));
            self.acked.insert(write);
            if !self.acked_log.contains(&write) {
                self.acked_log.push(write);
            }
            if self.reads_state.restoring.is_some_and(|(r, _)| r == write) {
                self.reads_state.restoring = None;
                self.pump_gate();
            }
        } else {
            self.reads_state.outstanding.remove(&(waiter & !READER));
        }
    }

    /// The orchestrator's turn: time passes, and what it decided is done.
    pub(super) fn orch_tick(&mut self) {
        let now = self.now;
        let (due, later) = std::mem::take(&mut self.reads_state.again)
            .into_iter()
            .partition(|(at, _)| *at <= now);
        self.reads_state.again = later;
        for (_, number) in due {
            self.ask_read(number);
        }
        self.orch.tick(self.now);
        self.orch_effects();
    }

    fn orch_effects(&mut self) {
        loop {
            let effects: Vec<Effect<u64, u64, u64>> = self.orch.effects().collect();
            if effects.is_empty() {
                return;
            }
            let mut retry = Vec::new();
            let mut confirm = Vec::new();
            let mut again = Vec::new();
            for effect in effects {
                match effect {
                    Effect::Deliver { waiter, reply } if waiter & READER == 0 => {
                        // A write that failed is sent again by its client.
                        let ok = matches!(reply, Ok(Reply::Write(Ok(_))));
                        if ok && self.is_restore(waiter) {
                            self.write_attempts.remove(&waiter);
                            confirm.push(waiter);
                        } else if ok {
                            self.write_attempts.remove(&waiter);
                            // Its client is told: from now on a strong
                            // read must see it (told again: counted once).
                            if !self.acked_log.contains(&waiter) {
                                self.acked_log.push(waiter);
                            }
                        } else {
                            retry.push(waiter);
                        }
                    }
                    // A strong read handed over: judged now (a confirming
                    // one acknowledges its restore).
                    Effect::Deliver {
                        waiter,
                        reply: Ok(Reply::Read(Ok(r))),
                    } if waiter & READER != 0 => {
                        let serve = match r.result {
                            ReadResult::Count(serve) => serve,
                            ReadResult::Rows(_) => 0,
                        };
                        self.handed_over(waiter, serve);
                    }
                    // A confirming read that failed is sent again, until
                    // the restore's deadline.
                    Effect::Deliver { waiter, .. } if waiter & CONFIRM != 0 => {
                        let write = waiter & !(READER | CONFIRM);
                        let began = match self.reads_state.restoring {
                            Some((r, began)) if r == write => began,
                            _ => continue,
                        };
                        if self.now.saturating_sub(began) >= restore_deadline() {
                            self.log(format!(
                                "restore {write} not confirmed in time: its client gets an error"
                            ));
                            self.reads_state.restoring = None;
                        } else {
                            confirm.push(write);
                        }
                    }
                    // A strong read that failed is asked again by its
                    // client, unless it was served meanwhile.
                    Effect::Deliver { waiter, .. } if waiter & READER != 0 => {
                        let number = waiter & !READER;
                        if self.reads_state.outstanding.contains_key(&number) {
                            again.push(number);
                        }
                    }
                    Effect::Deliver { .. } => {}
                    Effect::SendReads { stamp, reads, .. } => self.send_reads(stamp, reads),
                    Effect::SendWrites { writes, .. } => {
                        let message: Vec<u64> = writes.into_iter().map(|(_, w)| w).collect();
                        self.log(format!("the orchestrator sends writes {message:?}"));
                        self.write_q.push_back(message);
                    }
                    Effect::AskHead { id, .. } => self.write_q.push_back(vec![HEAD | id]),
                }
            }
            for write in retry {
                let attempt = self.orch.write(write, write, self.now);
                self.write_attempts.insert(write, attempt);
            }
            for write in confirm {
                self.confirm_restore(write);
            }
            for number in again {
                // Asked again after the handle's wait, doubling.
                let Some((_, wait)) = self.reads_state.outstanding.get_mut(&number) else {
                    continue;
                };
                let at = self.now + *wait;
                let next =
                    dbaas::actors::REQUEST_RETRY.next_wait(std::time::Duration::from_millis(*wait));
                *wait = next.as_millis() as u64;
                self.reads_state.again.push((at, number));
            }
            self.pump_gate();
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
            // Only the answer to an attempt of this orchestrator reaches
            // it: one to an earlier run's carries a correlation id the new
            // one never gave (and may be an old seq, answered again from
            // the record, below writes acknowledged since). Such an answer
            // tells no client anything, so no strong read need see it: the
            // write joins `acked_log` only when the orchestrator delivers
            // its success (above).
            let Some(&id) = self.write_attempts.get(&entry) else {
                self.orch_effects();
                return;
            };
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
        self.orch = orchestrator(epoch, seed, self.now, &self.setup);
        // Its clients' requests died with it.
        self.write_attempts.clear();
        if self.setup.zero_head {
            let o = std::mem::replace(&mut self.orch, orchestrator(0, 0, 0, &self.setup));
            self.orch = o.trusting_a_zero_head();
        }
        self.reads_state.started.clear();
        // A restore not confirmed yet was never acknowledged to its
        // client; the gate and those waiting at it are gone too.
        self.reads_state.restoring = None;
        self.reads_state.gated.clear();
        self.reads_state.outstanding.clear();
        self.reads_state.again.clear();
        self.orch_effects();
    }

    /// The leading orchestrator dies, or is paused past its lease, and
    /// another takes the lead, as `actors::watcher::lead` does: the
    /// orchestrator core starts afresh (what it knew is gone) and the
    /// writes its clients had under way are sent again through it under
    /// the same numbers (the services move on to another orchestrator with
    /// the same idempotency key); the watcher and the Scaler start from
    /// fresh cores, on what the coordinator and the runtime say now; and
    /// nothing the old leader had under way reaches them (its lease ran
    /// out: what it decided is not carried out, what it was told is lost).
    pub fn another_orchestrator_leads(&mut self) {
        self.log("another orchestrator takes the lead".into());
        let retried: Vec<u64> = self
            .write_attempts
            .keys()
            .copied()
            .filter(|&w| !self.is_restore(w))
            .collect();
        self.restart_orchestrator();
        self.reads_state.gated.extend(retried);
        self.pump_gate();
        self.inbox.clear();
        let expect = self.workers.values().filter(|w| !w.retired).count();
        let expect = expect.max(self.setup.slaves + 1);
        let mut core = WatcherCore::new(expect, self.now).with_succession(self.rule.clone());
        core.set_hung_after(self.setup.hung_after);
        // Which stores an election must hear, as the watchers before it
        // kept (`/succession`).
        if !self.setup.forget_succession {
            core.inherit(&self.kept);
        }
        self.watcher = core;
        self.leadership += 1;
        self.starts_asked.clear();
        if let Some(s) = &mut self.scaler {
            *s = dbaas::core::scaler::ScalerCore::new(*s.policy());
            self.scaler_inbox.clear();
        }
        // It brings the workers up first (`runtime::ensure_workers`):
        // every worker whose store is kept (not retired) and that does not
        // run is started over it.
        let down: Vec<u64> = self
            .workers
            .values()
            .filter(|w| !w.alive && !w.retired)
            .map(|w| w.id)
            .filter(|id| !self.starts.iter().any(|(_, s, _, _)| s == id))
            .collect();
        for id in down {
            self.log(format!("the new leader starts worker {id}"));
            // Tries 0: `ensure_workers`' own start, awaited before the
            // new core exists (not told to it).
            self.starts.push((self.now, id, 0, self.leadership));
        }
        let running = self.running();
        let record = self.master.map(|m| (m, self.version));
        let view = self.view();
        for input in [
            WatcherInput::Connected,
            WatcherInput::Master(record),
            WatcherInput::View(view),
        ] {
            let effects = self.watcher.on(input, self.now, &running);
            self.carry_out(effects);
        }
    }
}
