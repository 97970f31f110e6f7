//! The Orchestrator's decisions as a state machine: which requests wait
//! for a reply, what a reply means, when an attempt has waited too long,
//! and how far the history is known to be acknowledged.
//!
//! The driver (`actors::orchestrator`) hands each request to the core
//! with whatever waits for its answer (`W`: a channel) and, for a read,
//! its operation (`P`); the core answers the correlation id and stamp to
//! send it under, and queues the [`Effect`]s to carry out (deliver an
//! answer, send a read that waited, ask the master for the head), taken
//! with [`OrchestratorCore::effects`]. Time is milliseconds, passed in.
//!
//! What it guarantees:
//! - only the reply to an attempt still waiting counts: a reply of another
//!   cluster, or one whose correlation id matches nothing (late, or sent
//!   to this reply queue by mistake), changes nothing. Ids count up from a
//!   seed the driver draws at random, so a restarted orchestrator does not
//!   reuse an earlier run's;
//! - a write answered under an epoch older than the one followed came
//!   from a deposed master: it is answered [`Error::Fenced`], so retried;
//! - a newer master (announced, named by the watcher, or answering) makes
//!   the writes waiting on the old one fail over to their retry at once;
//! - a strong read carries the highest acknowledged seq. A fresh core does
//!   not know it (the acknowledgements were given by an earlier run): it
//!   asks the master ([`MasterRequest::Head`](crate::model::wire::MasterRequest::Head)),
//!   again with [`Backoff`] while unanswered, and a strong read's answer
//!   waits for the head (see "Checked reads"), each within its attempt's
//!   deadline. An acknowledged
//!   write teaches it too: its request was sent by this run, so it was
//!   applied after every write an earlier run acknowledged, and it is
//!   acknowledged only once every earlier seq is. Eventual reads never
//!   wait for the head;
//! - with read-index on ([`OrchestratorCore::with_read_index`]), a strong
//!   read sees every write acknowledged before it began by *any*
//!   orchestrator of the cluster, not only this one (see below).
//!
//! # Read index
//!
//! Several orchestrators may send writes to the same master: what one of
//! them acknowledged, another has not heard of, so its own acknowledged
//! seq is no bound for its strong reads. With read-index on, a strong
//! read that begins at `t` goes only in a batch whose min seq is at least
//! a head the master answered to an ask *sent after `t`* (Raft's
//! ReadIndex): the master answers the head only while its lease holds, so
//! every write acknowledged before `t`, by whichever orchestrator, is at
//! or below it.
//!
//! Asks are batched, one at a time: a strong read arriving while none is
//! unanswered sends one when it is due (see "When asks go") and rides
//! it; those arriving while one is unanswered wait (`parked`) and ride
//! the next. An answer checks every read that rode its ask (see
//! "Checked reads"). An ask unanswered in its wait ([`HEAD_BACKOFF`]), refused
//! by the broker, answered by a deposed master (an epoch older than the one
//! followed), or outlived by its master (a newer one leads) is sent again;
//! its reads, having begun before the new ask, ride that one. Each read
//! still gives up at its own deadline; the asks' wait halves with each
//! answer, down to the first, so that a master slow to answer under load
//! is not asked again and again.
//!
//! # Checked reads
//!
//! A strong read that needs a head not known yet (with read-index, every
//! strong read; without, those before the first head is learned) does not
//! wait for it to go while the history stands still (the last two heads
//! learned were the same, and this run acknowledged no write since): it
//! goes at once, at the seq this run knows acknowledged, while its ask is
//! under way, so that the two round trips overlap instead of adding up.
//! Its answer tells the seq the slave had applied when it read
//! (`ReadReply::seq`). The answer is handed over only once the head its
//! ask learned is known, and only if the slave read at or past it: then
//! the read saw every write acknowledged before it began. An answer read
//! below the head is dropped and the read goes again, under a new
//! correlation id (a late copy of the old answer then matches nothing),
//! at least at the head, where the slave waits for it. While the history
//! moves, a read sent at once would mostly be read below its head and go
//! twice: it waits for its head instead, and goes at it. An error is
//! handed over at once (it shows no data; a retryable one is retried as a
//! new read).
//!
//! # When asks go
//!
//! An ask costs the broker and the master a message each way, as much as
//! a batch of reads. It goes (none being unanswered) as soon as a read
//! waits for it: one that waits for its head to go, or one whose answer
//! came and is held; and at once for a read sent to an idle lane (no
//! batch of reads unanswered), as under light load, where it would
//! otherwise add its round trip to the read's (a lane whose only
//! unanswered batches are slow, [`SLOW_MS`], counts as idle: a worker
//! paused with a batch does not make every read pay both round trips in
//! turn). A read sent to an idle lane while an ask cannot go (one is
//! unanswered, or a refused one's wait runs) is owed the next one, as
//! soon as it can go. Under load, reads sent
//! beside unanswered batches do not send one: their answers take a
//! round trip anyway, and an ask sent when the first of them is held
//! covers every read begun by then. Measured over RabbitMQ at 64
//! clients: asks fell from 0.9 to 0.6 a batch of reads, and strong reads
//! rose 5-15% (BENCHMARKS.md, "Fewer asks for the head under load").
//!
//! # Batches
//!
//! Requests travel in batches, one message for many (so the broker moves
//! one message, not one per request): reads waiting for a slave go
//! together in one `readQ` message ([`Effect::SendReads`]), writes waiting
//! for the master in one `writeQ` message ([`Effect::SendWrites`]). A
//! request goes at once when no batch of its kind is unanswered; beside
//! unanswered ones, a batch goes only while fewer than the window's are
//! ([`READ_WINDOW`], [`WRITE_WINDOW`]) and enough requests wait to fill
//! it ([`READ_FILL`], [`WRITE_FILL`]); otherwise they wait for the next
//! batch, which goes as soon as one is answered. So a lone request is
//! never delayed by a timer, and under load the batches grow by
//! themselves (a second batch of a few requests beside the first would
//! cost the broker and the workers a message for little). A batch
//! unanswered for [`SLOW_MS`] no longer holds its place (its slave may be
//! paused with it): what waits behind it goes.
//!
//! Each request of a batch is its own attempt, under its own correlation
//! id, answered by that id (the batch's reply names each), with its own
//! deadline and its own consistency: a strong read carries the
//! acknowledged head as of when its batch goes (at least as of when it
//! began), an eventual one 0. A batch's own id names its message: a
//! publish of it the broker refused fails every request in it.

use std::collections::{BTreeMap, VecDeque};

use super::backoff::Backoff;
use crate::error::Error;
use crate::model::wire::{Reply, Stamp};
use crate::model::Consistency;

/// How long one attempt waits for its reply.
pub const ATTEMPT_MS: u64 = 5_000;
/// How long an ask for the head waits before it is sent again, doubling.
pub const HEAD_BACKOFF: Backoff = Backoff::new(250, 4_000);
/// How many read batches may be unanswered before reads wait to go
/// together in the next one: two keep two slaves busy; more make batches
/// smaller (a window freed takes whoever came first), and the broker's work
/// grows with the messages, not the reads.
pub const READ_WINDOW: usize = 2;
/// How many write batches may be unanswered before writes wait to go
/// together: two keep the master applying one while it confirms another's
/// syncs.
pub const WRITE_WINDOW: usize = 2;
/// How many reads must wait before a batch of them goes beside one
/// unanswered (see [`READ_WINDOW`]); with none unanswered, a lone read
/// goes at once. Measured over RabbitMQ at 64 clients (BENCHMARKS.md):
/// 1 (any read took a free place) gave 13.6k reads/s, 32 gave 17-20k.
pub const READ_FILL: usize = 32;
/// The same for writes (4.2k writes/s with 1, 4.9-5.2k with 32).
pub const WRITE_FILL: usize = 32;
/// Most reads in one batch.
pub const READ_BATCH: usize = 256;
/// Most writes in one batch.
pub const WRITE_BATCH: usize = 256;
/// Most bytes of writes in one batch (as the driver weighs them, see
/// [`OrchestratorCore::weighing_writes`]): a batch is one broker message,
/// and RabbitMQ refuses one past its limit (16 MiB by default), which
/// would fail every write in it, again on every retry. A single write
/// heavier than this goes alone.
pub const WRITE_BATCH_BYTES: usize = 4 << 20;
/// A batch unanswered this long (ms) no longer holds its place in the
/// window.
pub const SLOW_MS: u64 = 50;

/// What a pending attempt is, and who waits for it.
#[derive(Debug)]
enum Waiting<W> {
    Read(W),
    Write(W),
    Head,
}

#[derive(Debug)]
struct Attempt<W, P> {
    waiting: Waiting<W>,
    deadline: u64,
    /// The batch it went in (0: none yet, not batched, or answered).
    batch: u64,
    /// A strong read whose answer waits for the head (module docs,
    /// "Checked reads").
    check: Option<Check<P>>,
}

/// What a checked read keeps until its head is known.
#[derive(Debug)]
struct Check<P> {
    /// Its operation: to send it once its head is known, if it waits for
    /// it, or again, should the slave read below the head.
    op: P,
    /// Whether it has gone (beside its ask, or once its head was known).
    sent: bool,
    /// The head its ask learned.
    head: Option<u64>,
    /// Its answer, and the seq the slave read at, until then.
    held: Option<(u64, Reply)>,
}

/// A read to send in a batch: its correlation id, the seq the slave must
/// have applied, and the operation.
#[derive(Debug, PartialEq, Eq)]
pub struct Outgoing<P> {
    pub id: u64,
    pub min_seq: u64,
    pub op: P,
}

/// A batch unanswered.
#[derive(Debug)]
struct Flight {
    /// Its requests still waiting for their answers.
    open: usize,
    /// When it went.
    sent: u64,
}

/// The requests of one kind waiting to go, and the batches of that kind
/// unanswered.
#[derive(Debug)]
struct Lane<T> {
    waiting: VecDeque<(u64, T)>,
    flying: BTreeMap<u64, Flight>,
    window: usize,
    /// Fewest requests waiting for a batch to go while another of the
    /// lane is unanswered (with none unanswered, one request goes alone).
    fill: usize,
    most: usize,
    /// Most bytes a batch holds (but for a single heavier request), as
    /// `weigh` weighs each request.
    most_bytes: usize,
    weigh: fn(&T) -> usize,
}

impl<T> Lane<T> {
    fn new(window: usize, most: usize) -> Self {
        Lane {
            waiting: VecDeque::new(),
            flying: BTreeMap::new(),
            window,
            fill: 1,
            most,
            most_bytes: usize::MAX,
            weigh: |_| 0,
        }
    }

    fn filled(mut self, fill: usize) -> Self {
        self.fill = fill.max(1);
        self
    }

    /// Whether a batch may go now: none is unanswered and not yet slow,
    /// or fewer than the window's are and enough requests wait to fill
    /// one (`waiting` may still hold a few given up: a batch then goes a
    /// little short).
    fn has_room(&self, now: u64) -> bool {
        let busy = self.busy(now);
        busy == 0 || (busy < self.window && self.waiting.len() >= self.fill)
    }

    /// The batches unanswered and not yet slow.
    fn busy(&self, now: u64) -> usize {
        self.flying
            .values()
            .filter(|f| now < f.sent.saturating_add(SLOW_MS))
            .count()
    }

    /// Whether no batch is unanswered but slow ones (light load, or a
    /// worker paused with a batch).
    fn idle(&self, now: u64) -> bool {
        self.busy(now) == 0
    }

    /// One of batch `batch`'s requests is answered (or failed).
    fn settled(&mut self, batch: u64) {
        if let Some(f) = self.flying.get_mut(&batch) {
            f.open = f.open.saturating_sub(1);
            if f.open == 0 {
                self.flying.remove(&batch);
            }
        }
    }
}

/// What the driver carries out.
#[derive(Debug)]
pub enum Effect<W, P, Q = P> {
    /// Hand an answer (or why there is none: retryable) to who waits.
    Deliver {
        waiter: W,
        reply: Result<Reply, Error>,
    },
    /// Send these reads in one `readQ` message, under correlation id
    /// `batch`.
    SendReads {
        batch: u64,
        stamp: Stamp,
        reads: Vec<Outgoing<P>>,
    },
    /// Send these writes (each with its correlation id; the request
    /// carries `stamp`'s epoch) in one `writeQ` message, under correlation
    /// id `batch`.
    SendWrites {
        batch: u64,
        stamp: Stamp,
        writes: Vec<(u64, Q)>,
    },
    /// Ask the master how far the history is acknowledged:
    /// `MasterRequest::Head` on `writeQ` under correlation id `id`.
    AskHead { id: u64, stamp: Stamp },
}

/// The counters `GetStats` reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Reads since start.
    pub reads: u64,
    /// Writes acknowledged since start.
    pub writes: u64,
    /// The highest seq known acknowledged (by this run, or the head).
    pub last_acked_seq: u64,
    /// The epoch followed.
    pub epoch: u64,
    /// Reads and writes waiting for a reply now.
    pub in_flight: usize,
    /// Batches of reads sent (a read sent again counts again), and the
    /// reads in them: their ratio is how well reads share a message.
    pub read_batches_sent: u64,
    pub reads_sent: u64,
    /// The same for writes.
    pub write_batches_sent: u64,
    pub writes_sent: u64,
    /// Asks for the head sent (again after a failed one too): beside
    /// `reads`, how well strong reads share them under read-index.
    pub head_asks: u64,
    /// Checked reads sent beside their ask, and those of them sent again
    /// because the slave read below the head ("Checked reads").
    pub reads_beside_ask: u64,
    pub reads_again: u64,
}

/// What is known of the head.
#[derive(Debug)]
struct Head {
    known: bool,
    /// The ask waiting for its answer.
    asking: Option<u64>,
    /// When to ask again (after an ask that could not be sent).
    retry_at: Option<u64>,
    /// How long the next ask waits.
    wait: u64,
    /// The last head an ask learned.
    last: Option<u64>,
    /// Whether the history stands still: the last two heads learned were
    /// the same, and this run acknowledged no write since (module docs,
    /// "Checked reads"). So it is taken to until a head is learned.
    steady: bool,
    /// A parked read went to an idle lane while an ask could not go (one
    /// unanswered, or a refused one's wait running): the next ask is due
    /// as soon as it can go (module docs, "When asks go").
    owed: bool,
}

/// The Orchestrator's state: see the module documentation. `W` is who
/// waits for an answer, `P` a read's operation, `Q` a write's.
#[derive(Debug)]
pub struct OrchestratorCore<W, P, Q = P> {
    cluster: u64,
    pending: BTreeMap<u64, Attempt<W, P>>,
    /// Checked reads waiting for an ask for the head to be sent (their
    /// attempts are pending): one is unanswered, or waits to be sent
    /// again.
    parked: Vec<u64>,
    /// Checked reads that began before the ask for the head now (or last)
    /// sent: its answer checks them.
    riding: Vec<u64>,
    /// Whether every strong read waits for a head asked after it began
    /// (module docs, "Read index"), or only for the first head.
    read_index: bool,
    /// A planted bug ([`Self::trusting_early_answers`]).
    trusting_early_answers: bool,
    /// Reads waiting to go (strong or not), and their batches unanswered.
    reads: Lane<(bool, P)>,
    /// Writes waiting to go, and their batches unanswered.
    writes: Lane<Q>,
    next_id: u64,
    counters: Counters,
    /// The newest epoch whose master has answered (or announced itself).
    answering: u64,
    head: Head,
    out: Vec<Effect<W, P, Q>>,
}

impl<W, P: Clone, Q> OrchestratorCore<W, P, Q> {
    /// The core of `cluster`'s orchestrator, following `epoch`; ids count
    /// up from `seed`. It does not know the head: call [`Self::start`].
    pub fn new(cluster: u64, epoch: u64, seed: u64) -> Self {
        OrchestratorCore {
            cluster,
            pending: BTreeMap::new(),
            parked: Vec::new(),
            riding: Vec::new(),
            read_index: false,
            trusting_early_answers: false,
            reads: Lane::new(READ_WINDOW, READ_BATCH).filled(READ_FILL),
            writes: Lane::new(WRITE_WINDOW, WRITE_BATCH).filled(WRITE_FILL),
            next_id: seed,
            counters: Counters {
                epoch,
                ..Counters::default()
            },
            answering: 0,
            head: Head {
                known: false,
                asking: None,
                retry_at: None,
                wait: HEAD_BACKOFF.first,
                last: None,
                steady: true,
                owed: false,
            },
            out: Vec::new(),
        }
    }

    /// The same core weighing each write with `weigh` (its bytes on the
    /// wire, or near): a batch of writes holds at most
    /// [`WRITE_BATCH_BYTES`] of them, but for a single heavier write.
    pub fn weighing_writes(mut self, weigh: fn(&Q) -> usize) -> Self {
        self.writes.weigh = weigh;
        self.writes.most_bytes = WRITE_BATCH_BYTES;
        self
    }

    /// The same core with other windows (at least one batch each).
    pub fn with_windows(mut self, reads: usize, writes: usize) -> Self {
        self.reads.window = reads.max(1);
        self.writes.window = writes.max(1);
        self
    }

    /// The same core with other fills: how many requests must wait before
    /// a batch goes beside an unanswered one (at least one each).
    pub fn with_fills(mut self, reads: usize, writes: usize) -> Self {
        self.reads = self.reads.filled(reads);
        self.writes = self.writes.filled(writes);
        self
    }

    /// The same core with read-index on or off (off by default): on,
    /// each strong read waits for a head asked after it began, so that it
    /// sees what other orchestrators acknowledged too (module docs).
    pub fn with_read_index(mut self, on: bool) -> Self {
        self.read_index = on;
        self
    }

    /// Asks for the head at once, so that the first strong read need not
    /// wait for it (without read-index; with it, the ask teaches the
    /// counters the head early, and reads ask their own).
    pub fn start(&mut self, now: u64) {
        self.ask_if_wanted(now, true);
    }

    /// The effects decided since they were last taken.
    pub fn effects(&mut self) -> std::vec::Drain<'_, Effect<W, P, Q>> {
        self.out.drain(..)
    }

    pub fn stats(&self) -> Counters {
        Counters {
            in_flight: self.pending.len() - usize::from(self.head.asking.is_some()),
            ..self.counters
        }
    }

    /// How many batches of reads and of writes are unanswered.
    pub fn batches_in_flight(&self) -> (usize, usize) {
        (self.reads.flying.len(), self.writes.flying.len())
    }

    /// The rule before the head was asked for (a planted bug, for checking
    /// that the simulator catches it; never used in production): a fresh
    /// orchestrator takes the head to be 0, so its strong reads act as
    /// eventual until its first acknowledged write.
    pub fn trusting_a_zero_head(mut self) -> Self {
        self.learn_head(0, 0);
        self
    }

    /// A planted bug, for checking that the simulator catches it (never
    /// used in production): a checked read's answer is handed over once
    /// its head is known, whatever seq the slave read at.
    pub fn trusting_early_answers(mut self) -> Self {
        self.trusting_early_answers = true;
        self
    }

    /// The correlation id given last.
    pub fn last_id(&self) -> u64 {
        self.next_id
    }

    /// Whether the head was learned (without read-index, strong reads
    /// are sent at once from then on).
    pub fn knows_head(&self) -> bool {
        self.head.known
    }

    pub fn stamp(&self) -> Stamp {
        Stamp {
            cluster: self.cluster,
            epoch: self.counters.epoch,
        }
    }

    /// A new attempt, under the next id.
    fn attempt(&mut self, waiting: Waiting<W>, deadline: u64) -> u64 {
        let id = self.next();
        let attempt = Attempt {
            waiting,
            deadline,
            batch: 0,
            check: None,
        };
        self.pending.insert(id, attempt);
        id
    }

    fn next(&mut self) -> u64 {
        self.next_id = self.next_id.wrapping_add(1);
        self.next_id
    }

    /// A read: it goes in a batch ([`Effect::SendReads`]) at once or with
    /// the next (module docs). A strong one's answer is handed over once
    /// the head is known (without read-index), or once an ask sent after
    /// it began is answered (with it), if the slave read at or past that
    /// head ("Checked reads"). Answers its correlation id.
    pub fn read(&mut self, consistency: Consistency, waiter: W, op: P, now: u64) -> u64 {
        self.counters.reads += 1;
        let id = self.attempt(Waiting::Read(waiter), now.saturating_add(ATTEMPT_MS));
        let strong = consistency == Consistency::Strong;
        let send = if strong && (self.read_index || !self.head.known) {
            // While the history moves, it waits for its head to go.
            let sent = self.head.steady;
            let (kept, send) = if sent {
                (op.clone(), Some(op))
            } else {
                (op, None)
            };
            if let Some(a) = self.pending.get_mut(&id) {
                a.check = Some(Check {
                    op: kept,
                    sent,
                    head: None,
                    held: None,
                });
            }
            self.parked.push(id);
            // A read that waits to go needs its ask now, as does one sent
            // to an idle lane; one sent beside unanswered batches goes
            // with the next ask due (module docs, "When asks go").
            self.head.owed |= self.reads.idle(now);
            self.ask_if_wanted(now, !sent);
            self.counters.reads_beside_ask += u64::from(sent);
            send
        } else {
            Some(op)
        };
        if let Some(op) = send {
            self.reads.waiting.push_back((id, (strong, op)));
            self.send_reads(now);
        }
        id
    }

    /// A write: it goes in a batch ([`Effect::SendWrites`]) at once or
    /// with the next. Answers its correlation id.
    pub fn write(&mut self, waiter: W, op: Q, now: u64) -> u64 {
        let id = self.attempt(Waiting::Write(waiter), now.saturating_add(ATTEMPT_MS));
        self.writes.waiting.push_back((id, op));
        self.send_writes(now);
        id
    }

    /// Sends the reads waiting, in batches, while the window has room.
    fn send_reads(&mut self, now: u64) {
        let idle = self.reads.idle(now);
        let mut went = false;
        while self.reads.has_room(now) {
            let min_seq = self.counters.last_acked_seq;
            let taken = take_batch(&mut self.reads, &self.pending);
            if taken.is_empty() {
                return;
            }
            let reads = taken
                .into_iter()
                .map(|(id, (strong, op))| Outgoing {
                    id,
                    min_seq: if strong { min_seq } else { 0 },
                    op,
                })
                .collect::<Vec<_>>();
            let ids: Vec<u64> = reads.iter().map(|o| o.id).collect();
            let batch = self.fly(&ids, now, true);
            let stamp = self.stamp();
            self.out.push(Effect::SendReads {
                batch,
                stamp,
                reads,
            });
            went = true;
        }
        // Reads going to an idle lane would otherwise wait for their ask.
        if idle && went && !self.parked.is_empty() {
            self.head.owed = true;
            self.ask_if_wanted(now, true);
        }
    }

    /// Sends the writes waiting, in batches, while the window has room.
    fn send_writes(&mut self, now: u64) {
        while self.writes.has_room(now) {
            let writes = take_batch(&mut self.writes, &self.pending);
            if writes.is_empty() {
                return;
            }
            let ids: Vec<u64> = writes.iter().map(|(id, _)| *id).collect();
            let batch = self.fly(&ids, now, false);
            let stamp = self.stamp();
            self.out.push(Effect::SendWrites {
                batch,
                stamp,
                writes,
            });
        }
    }

    /// A new batch of these attempts, unanswered from `now`.
    fn fly(&mut self, ids: &[u64], now: u64, reads: bool) -> u64 {
        let batch = self.next();
        for id in ids {
            if let Some(a) = self.pending.get_mut(id) {
                a.batch = batch;
            }
        }
        let lane = if reads {
            &mut self.reads.flying
        } else {
            &mut self.writes.flying
        };
        let open = ids.len();
        let c = &mut self.counters;
        if reads {
            c.read_batches_sent += 1;
            c.reads_sent += open as u64;
        } else {
            c.write_batches_sent += 1;
            c.writes_sent += open as u64;
        }
        lane.insert(batch, Flight { open, sent: now });
        batch
    }

    /// An attempt left `pending`: its batch has one answer fewer to wait
    /// for.
    fn settled(&mut self, attempt: &Attempt<W, P>) {
        match attempt.waiting {
            Waiting::Read(_) => self.reads.settled(attempt.batch),
            Waiting::Write(_) => self.writes.settled(attempt.batch),
            Waiting::Head => {}
        }
    }

    /// Sends what waits, as far as the windows allow.
    fn send_waiting(&mut self, now: u64) {
        self.send_reads(now);
        self.send_writes(now);
    }

    /// A reply on the orchestrator's reply queue, with its correlation id.
    pub fn reply(&mut self, stamp: Stamp, reply: Reply, id: Option<u64>, now: u64) {
        if stamp.cluster != self.cluster {
            return;
        }
        if matches!(reply, Reply::Leading) {
            self.new_master(stamp.epoch, now);
            return;
        }
        // Only the answer to an attempt still waiting counts.
        let Some((id, a)) = id.and_then(|id| Some((id, self.pending.get_mut(&id)?))) else {
            return;
        };
        if let (Reply::Read(Ok(r)), Some(check)) = (&reply, a.check.as_mut()) {
            let served = r.seq;
            // Its batch has its answer (a copy later settles nothing).
            self.reads.settled(std::mem::take(&mut a.batch));
            let held = match check.head {
                Some(head) => {
                    self.checked(id, head, served, reply, now);
                    false
                }
                // Held for its head; the copy read furthest is kept.
                None if check.held.as_ref().is_some_and(|(s, _)| *s >= served) => false,
                None => {
                    check.held = Some((served, reply));
                    true
                }
            };
            // An answer waits for its head: its ask is due.
            self.ask_if_wanted(now, held);
            self.send_waiting(now);
            return;
        }
        let Some(attempt) = self.pending.remove(&id) else {
            return;
        };
        self.settled(&attempt);
        if attempt.check.is_some() {
            // A checked read answered with an error: no head is wanted
            // for it any more.
            self.forget_gone_checks();
        }
        self.answered(stamp, reply, attempt, now);
        self.send_waiting(now);
    }

    /// Drops from the reads waiting for an ask (`parked`, `riding`) those
    /// whose attempts are over, so that no ask goes for nobody.
    fn forget_gone_checks(&mut self) {
        let pending = &self.pending;
        self.parked.retain(|id| pending.contains_key(id));
        self.riding.retain(|id| pending.contains_key(id));
    }

    /// A checked read's answer, read at `served`, now that its head is
    /// known: handed over if the slave read at or past it, else the read
    /// goes again ("Checked reads").
    fn checked(&mut self, id: u64, head: u64, served: u64, reply: Reply, now: u64) {
        let Some(mut attempt) = self.pending.remove(&id) else {
            return;
        };
        if served >= head || self.trusting_early_answers {
            if let Waiting::Read(w) = attempt.waiting {
                self.deliver(w, Ok(reply));
            }
            return;
        }
        // Under a new id: a late copy of the answer read too early then
        // matches nothing. It goes first, at least at the head.
        let Some(op) = attempt.check.as_ref().map(|c| c.op.clone()) else {
            return;
        };
        attempt.batch = 0;
        self.counters.reads_again += 1;
        let again = self.next();
        self.pending.insert(again, attempt);
        self.reads.waiting.push_front((again, (true, op)));
        self.send_reads(now);
    }

    /// The head that the ask `reads` rode learned: each of them that
    /// waited for it goes now, at least at it (first, in order); each
    /// whose answer is held is handed over or goes again; the others are
    /// checked when their answer comes.
    fn check_reads(&mut self, reads: Vec<u64>, head: u64, now: u64) {
        let mut go = Vec::new();
        for id in reads {
            let Some(check) = self.pending.get_mut(&id).and_then(|a| a.check.as_mut()) else {
                continue;
            };
            let head = check.head.map_or(head, |h| h.max(head));
            check.head = Some(head);
            if !check.sent {
                check.sent = true;
                go.push((id, check.op.clone()));
            } else if let Some((served, reply)) = check.held.take() {
                self.checked(id, head, served, reply, now);
            }
        }
        for (id, op) in go.into_iter().rev() {
            self.reads.waiting.push_front((id, (true, op)));
        }
    }

    fn answered(&mut self, stamp: Stamp, reply: Reply, attempt: Attempt<W, P>, now: u64) {
        let waiter = match attempt.waiting {
            Waiting::Head => return self.head_answered(stamp, &reply, now),
            Waiting::Read(w) => return self.deliver(w, Ok(reply)),
            Waiting::Write(w) => w,
        };
        let current = self.counters.epoch;
        match reply {
            Reply::Write(_) if stamp.epoch < current => {
                let fenced = Error::Fenced {
                    got: stamp.epoch,
                    current,
                };
                self.deliver(waiter, Ok(Reply::Write(Err(fenced))));
            }
            Reply::Write(Ok(w)) => {
                let seq = w.seq;
                self.counters.writes += 1;
                // The history moves: strong reads wait for their head.
                self.head.steady = false;
                self.deliver(waiter, Ok(Reply::Write(Ok(w))));
                self.learn_head(seq, now);
                self.new_master(stamp.epoch, now);
            }
            // The master moved on to a newer epoch: carry it from now on.
            Reply::Write(Err(Error::Fenced { got, current })) => {
                self.deliver(
                    waiter,
                    Ok(Reply::Write(Err(Error::Fenced { got, current }))),
                );
                self.set_epoch(current, now);
            }
            other => self.deliver(waiter, Ok(other)),
        }
    }

    /// A seq acknowledged outside the request pipeline (a restore, which
    /// travels on a reply queue of its own): strong reads from now on
    /// wait for it, as for a write's.
    pub fn acknowledged(&mut self, seq: u64, now: u64) {
        self.learn_head(seq, now);
        self.send_waiting(now);
    }

    /// A send was refused by the broker (`id`: a batch's, or an ask for
    /// the head's): the requests in it fail (retryably).
    pub fn unsent(&mut self, id: u64, why: &str, now: u64) {
        if self.reads.flying.contains_key(&id) || self.writes.flying.contains_key(&id) {
            self.fail_where(why, |a| a.batch == id);
        } else if let Some(Waiting::Head) = self.pending.get(&id).map(|a| &a.waiting) {
            self.pending.remove(&id);
            self.head.asking = None;
            self.head.retry_at = Some(now.saturating_add(self.head.wait));
            self.head.wait = HEAD_BACKOFF.next(self.head.wait);
            // Its reads ride the next ask, sent after its wait.
        }
        self.send_waiting(now);
    }

    /// Follows a newer epoch, however it was heard of (the watcher, or a
    /// fenced answer): the writes waiting on the old master (gone, or
    /// deposed and paused with them) fail over to their retry at once.
    pub fn set_epoch(&mut self, epoch: u64, now: u64) {
        if epoch > self.counters.epoch {
            self.counters.epoch = epoch;
            self.resend(now);
        }
        self.send_waiting(now);
    }

    /// The reply queue's consumer ended: nothing waiting will be answered
    /// on it (the queue itself may be gone); every attempt fails now, to
    /// be retried at once.
    pub fn consumer_ended(&mut self, now: u64) {
        self.fail_where("reply queue consumer ended", |_| true);
        self.parked.clear();
        self.riding.clear();
        self.head.owed = false;
        if self.head.asking.take().is_some() {
            self.head.retry_at = Some(now);
        }
        self.reads.waiting.clear();
        self.writes.waiting.clear();
    }

    /// Time passes: attempts past their deadline fail (retryably), and an
    /// unanswered ask for the head is sent again (while it is wanted).
    pub fn tick(&mut self, now: u64) {
        let why = "no reply within the attempt's deadline";
        if self.fail_where(why, |a| a.deadline <= now) {
            self.head.asking = None;
            self.head.wait = HEAD_BACKOFF.next(self.head.wait);
        }
        self.forget_gone_checks();
        let pending = &self.pending;
        self.reads
            .waiting
            .retain(|(id, _)| pending.contains_key(id));
        self.writes
            .waiting
            .retain(|(id, _)| pending.contains_key(id));
        self.ask_if_wanted(now, self.parked_wait(now));
        self.send_waiting(now);
    }

    /// Fails (retryably) the attempts `which` selects; answers whether an
    /// ask for the head was among them.
    fn fail_where(&mut self, why: &str, mut which: impl FnMut(&Attempt<W, P>) -> bool) -> bool {
        let mut head = false;
        let failed: Vec<Attempt<W, P>> = self
            .pending
            .extract_if(.., |_, a| which(a))
            .map(|(_, a)| a)
            .collect();
        if failed.iter().any(|a| a.check.is_some()) {
            self.forget_gone_checks();
        }
        for a in failed {
            self.settled(&a);
            match a.waiting {
                Waiting::Read(waiter) | Waiting::Write(waiter) => {
                    let reply = Err(Error::Unavailable(why.to_owned()));
                    self.out.push(Effect::Deliver { waiter, reply });
                }
                Waiting::Head => head = true,
            }
        }
        head
    }

    fn deliver(&mut self, waiter: W, reply: Result<Reply, Error>) {
        self.out.push(Effect::Deliver { waiter, reply });
    }

    /// A master of `epoch` consumes `writeQ` (it said so, or answered a
    /// write). The first time: writes sent before it did went to whoever
    /// consumed then: they are sent again at once.
    fn new_master(&mut self, epoch: u64, now: u64) {
        if epoch > self.answering {
            self.answering = epoch;
            self.counters.epoch = self.counters.epoch.max(epoch);
            self.resend(now);
        }
    }

    /// The writes waiting now fail over to their retry, which sends them
    /// again at once (same request ids: answered once however often
    /// sent); an ask for the head goes to the new master too.
    fn resend(&mut self, now: u64) {
        let why = "a new master leads: sent again";
        self.fail_where(why, |a| matches!(a.waiting, Waiting::Write(_)));
        if let Some(id) = self.head.asking.take() {
            self.pending.remove(&id);
            self.head.wait = HEAD_BACKOFF.first;
            self.ask_head(now);
        }
    }

    /// Whether a head is wanted: none learned yet, or strong reads wait
    /// for one (only while none is learned, without read-index).
    fn wants_head(&self) -> bool {
        !self.head.known || !self.parked.is_empty() || !self.riding.is_empty()
    }

    /// Asks for the head if it is wanted, none is unanswered, no refused
    /// ask's wait runs, and an ask is due: `urgent` (the caller knows a
    /// read waits for it), or the head is not known, or reads rode an ask
    /// that failed (module docs, "When asks go").
    fn ask_if_wanted(&mut self, now: u64, urgent: bool) {
        let due = self.head.retry_at.is_none_or(|at| at <= now);
        let needed = urgent || self.head.owed || !self.head.known || !self.riding.is_empty();
        if self.head.asking.is_none() && due && needed && self.wants_head() {
            self.ask_head(now);
        }
    }

    /// Whether a parked read waits for an ask to be sent: one waiting to
    /// go, or one whose answer is held, or one that went to an idle lane,
    /// or any while the lane is idle.
    fn parked_wait(&self, now: u64) -> bool {
        !self.parked.is_empty() && (self.head.owed || self.reads.idle(now))
            || self.parked.iter().any(|id| {
                let check = self.pending.get(id).and_then(|a| a.check.as_ref());
                check.is_some_and(|c| !c.sent || c.held.is_some())
            })
    }

    /// Sends an ask for the head: every strong read waiting began before
    /// it, so its answer releases them all.
    fn ask_head(&mut self, now: u64) {
        let id = self.attempt(Waiting::Head, now.saturating_add(self.head.wait));
        self.head.asking = Some(id);
        self.head.retry_at = None;
        self.head.owed = false;
        self.riding.append(&mut self.parked);
        self.counters.head_asks += 1;
        let stamp = self.stamp();
        self.out.push(Effect::AskHead { id, stamp });
    }

    fn head_answered(&mut self, stamp: Stamp, reply: &Reply, now: u64) {
        self.head.asking = None;
        match reply {
            // A deposed master's head may lack what its successor
            // acknowledged: ask again.
            Reply::Head(seq) if stamp.epoch >= self.counters.epoch => {
                self.head.wait = (self.head.wait / 2).max(HEAD_BACKOFF.first);
                self.head.steady = self.head.last.is_none_or(|last| last == *seq);
                self.head.last = Some(*seq);
                self.learn_head(*seq, now);
                // The reads that began before the ask are checked against
                // the head; those that came since ride the next ask.
                let riding = std::mem::take(&mut self.riding);
                self.check_reads(riding, *seq, now);
                self.ask_if_wanted(now, self.parked_wait(now));
                self.send_waiting(now);
            }
            _ => {
                self.head.wait = HEAD_BACKOFF.next(self.head.wait);
                self.ask_if_wanted(now, true);
            }
        }
    }

    /// Every write acknowledged so far has a seq at most `seq`. Without
    /// read-index, the first time: strong reads that waited are checked
    /// against it, and none waits from now on. With it, each read waits
    /// for its own ask (a seq this run acknowledged says nothing of other
    /// orchestrators').
    fn learn_head(&mut self, seq: u64, now: u64) {
        self.counters.last_acked_seq = self.counters.last_acked_seq.max(seq);
        if self.head.known {
            return;
        }
        self.head.known = true;
        if self.read_index {
            return;
        }
        self.head.retry_at = None;
        if let Some(id) = self.head.asking.take() {
            self.pending.remove(&id);
        }
        let mut waited = std::mem::take(&mut self.riding);
        waited.append(&mut self.parked);
        let head = self.counters.last_acked_seq;
        self.check_reads(waited, head, now);
    }
}

/// The requests of the next batch of `lane`: those waiting whose attempts
/// still wait (not failed at their deadline meanwhile), at most a batch
/// in number and in bytes (a first request heavier than a batch goes
/// alone).
fn take_batch<W, P, T>(
    lane: &mut Lane<T>,
    pending: &BTreeMap<u64, Attempt<W, P>>,
) -> Vec<(u64, T)> {
    let mut batch = Vec::new();
    let mut bytes = 0usize;
    while batch.len() < lane.most {
        let Some((id, item)) = lane.waiting.pop_front() else {
            break;
        };
        if !pending.contains_key(&id) {
            continue;
        }
        let weight = (lane.weigh)(&item);
        if !batch.is_empty() && bytes.saturating_add(weight) > lane.most_bytes {
            lane.waiting.push_front((id, item));
            break;
        }
        bytes = bytes.saturating_add(weight);
        batch.push((id, item));
    }
    batch
}

#[cfg(test)]
mod tests;
