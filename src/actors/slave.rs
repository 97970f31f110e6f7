//! The SlaveWorker actor: a replica that serves reads.
//!
//! On start it binds its own sync queue to `syncQ` first, then asks the
//! master (through `writeQ`, so in write order) for a snapshot, installs it,
//! applies what queued after it, and only then consumes `readQ` (promise 4).
//! Sync messages apply strictly in sequence order; duplicates are dropped
//! (promise 2). A read waits, bounded, until the slave has applied the
//! sequence number it asks for (promise 3).
//!
//! What it will not apply: messages of another cluster (a reused broker),
//! and writes its [`Lineage`] does not admit (a deposed master's). A sender
//! with a newer lineage is followed; if this replica holds writes the new
//! lineage does not, it resyncs by snapshot and serves no read meanwhile.
//! A replica that waits for more than [`GAP_WAIT`] without progress (a sync
//! lost, or dropped from its capped queue while it was away) resyncs too.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures::StreamExt;

use super::messages::{Drain, GetStatus, Resume, Shutdown, WorkerStatus};
use super::{blocking, reply_to};
use super::{next_retry, FIRST_RETRY};
use crate::broker::{self, Broker, Delivery, Message, QueueKind, READ_Q, SYNC_X, WRITE_Q};
use crate::error::{Error, Result};
use crate::model::wire::{
    self, Entry, MasterRequest, ReadRequest, Reply, Snapshot, SnapshotParts, Stamp, SyncItem,
    SyncMessage,
};
use crate::model::{Follow, Lineage, ReadOp, ReadReply};
use crate::store::Store;

/// How long a read may wait for this slave to catch up before the
/// orchestrator is told to try again.
const READ_WAIT: Duration = Duration::from_secs(2);
/// Reads a slave may hold unacknowledged.
const READ_PREFETCH: u16 = 32;
const SYNC_PREFETCH: u16 = 4096;
/// Most replicated writes applied as one sled batch.
const APPLY_GROUP: u64 = 1024;
/// How long a slave waits without progress for a write it knows exists
/// (a later one came, or a read asked for it) before it takes a snapshot.
pub const GAP_WAIT: Duration = Duration::from_secs(3);
/// How long a gap may last before the slave stops counting as caught up
/// (and so as a candidate in an election).
const GAP_UNREADY: Duration = Duration::from_millis(500);
/// Messages a slave's sync queue keeps while nobody consumes it (the
/// oldest go first; the slave then finds a gap and takes a snapshot).
pub const SYNC_QUEUE_CAP: u32 = 10_000;

/// A replica over its own store.
pub struct SlaveWorker {
    id: u64,
    store: Store,
    broker: Arc<dyn Broker>,
    cluster: u64,
    /// The history followed; written with the next run of syncs.
    lineage: Lineage,
    sync_cap: u32,
    applied: u64,
    /// Caught up: snapshot installed (or found current).
    ready: bool,
    /// Admitted sync writes ahead of `applied`, by their first seq.
    pending: BTreeMap<u64, (Vec<SyncMessage>, Delivery)>,
    /// Since when a write known to exist has not come, with no progress.
    behind_since: Option<Instant>,
    parked: Vec<Parked>,
    reads_served: u64,
    /// The consumers: the sync queue, `readQ`, a pending snapshot answer.
    sync: Option<SpawnHandle>,
    reads: Option<SpawnHandle>,
    snapshot: Option<SpawnHandle>,
    /// The parts of the snapshot received so far.
    parts: SnapshotParts,
    /// A run of syncs is being applied (on the blocking pool).
    applying: bool,
    /// Shutting down or promoted: consumers that end stay ended.
    closing: bool,
    /// Elected: draining what the old master sent before it leads.
    draining: Option<Draining>,
}

/// A drain in progress: its fence, whether it came back, and who waits.
struct Draining {
    nonce: u64,
    fenced: bool,
    done: tokio::sync::oneshot::Sender<Result<u64>>,
}

struct Parked {
    req: ReadRequest,
    delivery: Delivery,
    deadline: Instant,
}

/// A group of deliveries from this slave's sync queue.
struct SyncDeliveries(Vec<Delivery>);
/// A group of deliveries from `readQ`.
struct ReadBatch(Vec<Delivery>);
/// The master's answer to a snapshot request.
struct SnapshotAnswer(Delivery);

impl SlaveWorker {
    /// A slave of `cluster` (which its store must have joined), whose sync
    /// queue keeps at most `sync_cap` messages.
    pub fn new(id: u64, store: Store, broker: Arc<dyn Broker>, sync_cap: u32) -> Self {
        let (applied, lineage) = (store.applied_seq(), store.lineage());
        SlaveWorker {
            id,
            cluster: store.cluster().unwrap_or(0),
            store,
            broker,
            lineage,
            sync_cap,
            applied,
            ready: false,
            pending: BTreeMap::new(),
            behind_since: None,
            parked: Vec::new(),
            reads_served: 0,
            sync: None,
            reads: None,
            snapshot: None,
            parts: SnapshotParts::default(),
            applying: false,
            closing: false,
            draining: None,
        }
    }

    /// Binds and consumes the sync queue; the first time (not yet
    /// ready), then asks for a snapshot. Retried while the broker is away.
    fn subscribe_sync(&mut self, ctx: &mut Context<Self>, wait: Duration) {
        let (broker, id, cap) = (self.broker.clone(), self.id, self.sync_cap);
        let setup = async move {
            broker::declare_topology(broker.as_ref()).await?;
            let sync_q = broker::sync_queue(id);
            broker
                .declare_queue(&sync_q, QueueKind::Capped(cap))
                .await?;
            broker.bind(&sync_q, SYNC_X).await?;
            broker.consume(&sync_q, SYNC_PREFETCH).await
        };
        ctx.wait(setup.into_actor(self).map(move |res, act, ctx| match res {
            Ok(sync) => {
                act.sync = Some(ctx.add_stream(sync.ready_chunks(512).map(SyncDeliveries)));
                if !act.ready {
                    act.ask_snapshot(ctx, act.applied, FIRST_RETRY);
                }
            }
            Err(e) => {
                tracing::warn!(worker = act.id, error = %e, "cannot consume the sync queue; retrying");
                let next = next_retry(wait);
                ctx.run_later(wait, move |act, ctx| act.subscribe_sync(ctx, next));
            }
        }));
    }

    /// The stamp of what this slave sends.
    fn stamp(&self) -> Stamp {
        Stamp {
            cluster: self.cluster,
            epoch: self.lineage.epoch(),
        }
    }

    /// Asks the master for the state past `have_seq`.
    fn ask_snapshot(&mut self, ctx: &mut Context<Self>, have_seq: u64, wait: Duration) {
        let (broker, id) = (self.broker.clone(), self.id);
        let ask = MasterRequest::Snapshot {
            have_seq,
            have_epoch: self.lineage.owner(have_seq),
        };
        let body = wire::encode(self.stamp(), &ask);
        let ask = async move { request_snapshot(broker.as_ref(), id, body).await };
        ctx.wait(ask.into_actor(self).map(move |res, act, ctx| match res {
            Ok(answers) => {
                // Only the latest request's answer may be installed.
                if let Some(h) = act.snapshot.take() {
                    ctx.cancel_future(h);
                }
                act.parts = SnapshotParts::default();
                act.snapshot = Some(ctx.add_stream(answers.map(SnapshotAnswer)));
            }
            Err(e) => {
                tracing::warn!(worker = act.id, error = %e, "snapshot request failed; retrying");
                let next = next_retry(wait);
                ctx.run_later(wait, move |act, ctx| act.ask_snapshot(ctx, have_seq, next));
            }
        }));
    }

    /// Consumes `readQ`; retried while the broker is away.
    fn subscribe_reads(&mut self, ctx: &mut Context<Self>, wait: Duration) {
        let broker = self.broker.clone();
        let consume = async move { broker.consume(READ_Q, READ_PREFETCH).await };
        ctx.wait(consume.into_actor(self).map(move |res, act, ctx| match res {
            Ok(reads) => {
                act.reads = Some(ctx.add_stream(reads.ready_chunks(64).map(ReadBatch)));
                tracing::info!(worker = act.id, seq = act.applied, "slave caught up; serving reads");
            }
            Err(e) => {
                tracing::warn!(worker = act.id, error = %e, "cannot consume readQ; retrying");
                let next = next_retry(wait);
                ctx.run_later(wait, move |act, ctx| act.subscribe_reads(ctx, next));
            }
        }));
    }

    /// Applies the run of pending sync batches that follows `applied`, one
    /// run at a time; reads go on being served meanwhile.
    fn apply_pending(&mut self, ctx: &mut Context<Self>) {
        if self.applying {
            return; // the run in progress applies what follows when done
        }
        let mut next = self.applied + 1;
        let mut run = Vec::new();
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() > next {
                break; // a gap: wait for what fills it
            }
            let (batch, d) = entry.remove();
            if last_seq(&batch) >= next {
                next = last_seq(&batch) + 1;
                run.push((batch, d));
            } else {
                actix::spawn(d.ack()); // wholly applied already
            }
        }
        if run.is_empty() {
            return;
        }
        let (batches, deliveries): (Vec<_>, Vec<_>) = run.into_iter().unzip();
        let (store, lineage) = (self.store.clone(), self.lineage.clone());
        let apply = blocking(move || {
            let mut group = store.group();
            group.set_lineage(lineage.clone());
            for m in batches.iter().flatten() {
                // A batch may start below what a snapshot already holds.
                if m.seq < group.next_seq() {
                    continue;
                }
                match &m.entry {
                    Entry::Write(op) => group.apply(m.seq, m.request_id, op).map(|_| ())?,
                    Entry::Refused(e) => group.refuse(m.seq, m.request_id, e)?,
                }
                if group.len() >= APPLY_GROUP {
                    group.commit()?;
                    group = store.group();
                    group.set_lineage(lineage.clone());
                }
            }
            group.commit()
        });
        self.applying = true;
        ctx.spawn(apply.into_actor(self).map(|res, act, ctx| {
            act.applying = false;
            let acks = deliveries.into_iter().map(|d| d.ack());
            actix::spawn(futures::future::join_all(acks));
            match res {
                Ok(seq) => {
                    if seq > act.applied {
                        act.behind_since = None;
                    }
                    act.applied = act.applied.max(seq);
                    act.serve_parked(ctx);
                    act.apply_pending(ctx);
                    act.check_drained(ctx);
                }
                Err(e) => act.resync(ctx, &format!("a sync failed to apply: {e}")),
            }
        }));
    }

    /// This replica diverged (a sync failed to apply, or it holds a
    /// deposed master's writes): take a fresh snapshot, serving no reads.
    fn resync(&mut self, ctx: &mut Context<Self>, why: &str) {
        tracing::error!(worker = self.id, why, "replica diverged; resyncing");
        self.applied = self.store.applied_seq();
        self.ready = false;
        // No reads from a store that diverged: what this slave holds goes
        // back to `readQ` for the others, until the snapshot is installed.
        if let Some(h) = self.reads.take() {
            ctx.cancel_future(h);
        }
        self.requeue_parked();
        self.ask_snapshot(ctx, u64::MAX, FIRST_RETRY);
    }

    /// Whether a later write came but one before it did not.
    fn has_gap(&self) -> bool {
        let next = self.applied + 1;
        self.pending
            .keys()
            .next()
            .is_some_and(|&first| first > next)
    }

    /// Whether a gap has lasted past [`GAP_UNREADY`].
    fn stuck_at_gap(&self) -> bool {
        self.has_gap()
            && self
                .behind_since
                .is_some_and(|t| t.elapsed() >= GAP_UNREADY)
    }

    /// Whether a write this slave knows exists has not come: a later one
    /// is pending, or a read asks for more than is applied.
    fn waits_for_more(&self) -> bool {
        self.has_gap() || self.parked.iter().any(|p| p.req.min_seq > self.applied)
    }

    /// Takes a snapshot when a wait for a write has lasted [`GAP_WAIT`]
    /// without progress; it holds every write the master logged. Reads go
    /// on meanwhile: what this replica holds is a consistent prefix.
    fn watch_gaps(&mut self, ctx: &mut Context<Self>) {
        let busy = !self.ready || self.applying || self.snapshot.is_some();
        if busy || !self.waits_for_more() {
            self.behind_since = None;
            return;
        }
        let since = *self.behind_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= GAP_WAIT {
            tracing::warn!(
                worker = self.id,
                applied = self.applied,
                "no progress past a gap; taking a snapshot"
            );
            self.behind_since = None;
            self.ask_snapshot(ctx, self.applied, FIRST_RETRY);
        }
    }

    /// Drops what the lineage no longer admits from the pending syncs.
    fn refilter_pending(&mut self) {
        for (first, (batch, d)) in std::mem::take(&mut self.pending) {
            let kept = admitted(&self.lineage, batch);
            match kept.first().map(|m| m.seq) {
                Some(f) => {
                    self.pending.insert(f, (kept, d));
                }
                None => {
                    tracing::debug!(
                        worker = self.id,
                        first,
                        "pending syncs of a deposed master dropped"
                    );
                    actix::spawn(d.ack());
                }
            }
        }
    }

    /// Once the fence is back and nothing that follows `applied` is left
    /// to apply, the drain is done: flush, and answer the applied seq. A
    /// gap left then fails the drain: this replica lacks writes the old
    /// master may have acknowledged.
    fn check_drained(&mut self, ctx: &mut Context<Self>) {
        if !self.draining.as_ref().is_some_and(|d| d.fenced) || self.applying {
            return;
        }
        let next = self.applied + 1;
        if self
            .pending
            .keys()
            .next()
            .is_some_and(|&first| first <= next)
        {
            self.apply_pending(ctx); // even before a first snapshot
            return;
        }
        let Some(drain) = self.draining.take() else {
            return;
        };
        if let Some((&first, _)) = self.pending.first_key_value() {
            // Writes past a gap came: the ones in it were confirmed to the
            // old master (and may have been acknowledged) but are not
            // here (dropped from a capped queue): this replica must not
            // lead without them.
            let e = Error::Unavailable(format!(
                "a gap after seq {} (the next here is {first})",
                self.applied
            ));
            let _ = drain.done.send(Err(e));
            return;
        }
        let store = self.store.clone();
        let flush = blocking(move || {
            store.flush()?;
            Ok(store.applied_seq())
        });
        ctx.spawn(flush.into_actor(self).map(|res, _act, _ctx| {
            let _ = drain.done.send(res);
        }));
    }

    fn serve_parked(&mut self, ctx: &mut Context<Self>) {
        let applied = self.applied;
        let (now, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.parked)
            .into_iter()
            .partition(|p| p.req.min_seq <= applied);
        self.parked = later;
        if !now.is_empty() {
            self.serve(ctx, now.into_iter().map(|p| (p.req, p.delivery)).collect());
        }
    }

    /// Runs reads (point lookups here, scans on the blocking pool), then
    /// replies and acknowledges.
    fn serve(&mut self, ctx: &mut Context<Self>, reads: Vec<(ReadRequest, Delivery)>) {
        let (store, broker, stamp) = (self.store.clone(), self.broker.clone(), self.stamp());
        let (reqs, deliveries): (Vec<_>, Vec<_>) = reads.into_iter().unzip();
        self.reads_served += reqs.len() as u64;
        // Point lookups take microseconds: done here, they save two thread
        // hops. Anything that scans goes to the blocking pool.
        let inline = reads_are_point_lookups(&reqs);
        let read_all = move || {
            let seq = store.applied_seq();
            Ok(reqs
                .iter()
                .map(|r| store.read(&r.op).map(|result| ReadReply { seq, result }))
                .collect::<Vec<_>>())
        };
        let run = async move {
            let results = if inline {
                read_all()
            } else {
                blocking(read_all).await
            };
            let results = match results {
                Ok(r) => r,
                Err(e) => deliveries.iter().map(|_| Err(e.clone())).collect(),
            };
            // A reply that cannot be published is not retried: the
            // orchestrator asks again within its deadline.
            let replies = deliveries.into_iter().zip(results).map(|(d, r)| {
                let broker = broker.clone();
                async move {
                    let _ = reply_to(broker.as_ref(), stamp, &d, &Reply::Read(r)).await;
                    d.ack().await
                }
            });
            futures::future::join_all(replies).await;
        };
        ctx.spawn(run.into_actor(self));
    }

    fn expire_parked(&mut self) {
        let now = Instant::now();
        let (late, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.parked)
            .into_iter()
            .partition(|p| p.deadline <= now);
        self.parked = waiting;
        let stamp = self.stamp();
        for p in late {
            let broker = self.broker.clone();
            let err = Error::Unavailable(format!(
                "slave {} has applied {} of {}",
                self.id, self.applied, p.req.min_seq
            ));
            actix::spawn(async move {
                let _ = reply_to(broker.as_ref(), stamp, &p.delivery, &Reply::Read(Err(err))).await;
                let _ = p.delivery.ack().await;
            });
        }
    }

    /// Puts the parked reads back on `readQ`.
    fn requeue_parked(&mut self) {
        for p in self.parked.drain(..) {
            actix::spawn(async move {
                let _ = p.delivery.nack(true).await;
            });
        }
    }

    /// Stops consuming; what is held but not done goes back to the queues.
    fn unsubscribe(&mut self, ctx: &mut Context<Self>) {
        self.closing = true;
        for h in [self.sync.take(), self.reads.take(), self.snapshot.take()]
            .into_iter()
            .flatten()
        {
            ctx.cancel_future(h);
        }
        self.requeue_parked();
    }
}

fn reads_are_point_lookups(reqs: &[ReadRequest]) -> bool {
    reqs.iter().all(|r| matches!(r.op, ReadOp::Get { .. }))
}

/// The last sequence number of a (non-empty, checked) run of syncs.
fn last_seq(batch: &[SyncMessage]) -> u64 {
    batch.last().map_or(0, |m| m.seq)
}

/// The writes of a batch that `lineage` admits: the longest such prefix
/// (past a write it refuses, the sender's history is not this one).
fn admitted(lineage: &Lineage, writes: Vec<SyncMessage>) -> Vec<SyncMessage> {
    writes
        .into_iter()
        .take_while(|m| lineage.admits(m.epoch, m.seq))
        .collect()
}

/// Declares a private reply queue, consumes it, and sends `ask` (an
/// encoded snapshot request) through `writeQ`.
async fn request_snapshot(broker: &dyn Broker, id: u64, ask: Vec<u8>) -> Result<broker::Consumer> {
    let reply_q = format!("snapshot.{id}.{}", fastrand::u64(..));
    broker.declare_queue(&reply_q, QueueKind::Transient).await?;
    let answers = broker.consume(&reply_q, 1).await?;
    let ask = Message {
        body: ask,
        correlation_id: Some(id),
        reply_to: Some(reply_q),
    };
    broker.publish(WRITE_Q, ask).await?;
    Ok(answers)
}

impl Actor for SlaveWorker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        tracing::info!(worker = self.id, seq = self.applied, "slave starting");
        self.subscribe_sync(ctx, FIRST_RETRY);
        ctx.run_interval(Duration::from_millis(50), |act, ctx| {
            act.expire_parked();
            act.watch_gaps(ctx);
        });
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        if let Err(e) = self.store.flush() {
            tracing::error!(worker = self.id, error = %e, "flush on stop failed");
        }
        tracing::info!(worker = self.id, "slave stopped");
    }
}

impl StreamHandler<SyncDeliveries> for SlaveWorker {
    fn handle(&mut self, SyncDeliveries(batch): SyncDeliveries, ctx: &mut Context<Self>) {
        let (mut foreign, mut stale, mut diverged) = (0, 0, false);
        for d in batch {
            let (stamp, item) = match wire::decode_sync(&d.message.body) {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(worker = self.id, error = %e, "bad sync message dropped");
                    actix::spawn(d.ack());
                    continue;
                }
            };
            if stamp.cluster != self.cluster {
                foreign += 1;
                actix::spawn(d.ack());
                continue;
            }
            let batch = match item {
                SyncItem::Writes(batch) => batch,
                SyncItem::Fence { worker, nonce } => {
                    if let Some(drain) = self.draining.as_mut() {
                        drain.fenced |= worker == self.id && nonce == drain.nonce;
                    }
                    actix::spawn(d.ack());
                    continue;
                }
            };
            match self.lineage.follow(&batch.lineage, self.applied) {
                Follow::Kept => {}
                Follow::Adopted => self.refilter_pending(),
                Follow::Diverged => {
                    self.refilter_pending();
                    diverged = true;
                }
            }
            let writes = admitted(&self.lineage, batch.writes);
            let Some(first) = writes.first().map(|m| m.seq) else {
                stale += 1;
                actix::spawn(d.ack());
                continue;
            };
            let known = self.pending.get(&first).map_or(0, |(b, _)| last_seq(b));
            if last_seq(&writes) <= self.applied.max(known) {
                actix::spawn(d.ack()); // a duplicate
                continue;
            }
            // A longer batch from the same seq replaces a shorter one.
            if let Some((_, shorter)) = self.pending.insert(first, (writes, d)) {
                actix::spawn(shorter.ack());
            }
        }
        if foreign + stale > 0 {
            tracing::warn!(
                worker = self.id,
                foreign,
                stale,
                "sync messages of another cluster or a deposed master dropped"
            );
        }
        if diverged {
            self.resync(ctx, "it holds writes the new master's history does not");
        } else if self.ready {
            self.apply_pending(ctx);
        }
        self.check_drained(ctx);
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        self.sync = None;
        if !self.closing {
            tracing::warn!(worker = self.id, "sync consumer ended; resubscribing");
            self.subscribe_sync(ctx, FIRST_RETRY);
        }
    }
}

impl StreamHandler<SnapshotAnswer> for SlaveWorker {
    fn handle(&mut self, SnapshotAnswer(d): SnapshotAnswer, ctx: &mut Context<Self>) {
        let answer: Result<Option<Snapshot>> = match wire::decode(&d.message.body) {
            Ok((s, _)) if s.cluster != self.cluster || s.epoch < self.lineage.epoch() => {
                // A deposed master answered (it still consumes writeQ):
                // its state is not the history's. Ask again, later.
                tracing::warn!(
                    worker = self.id,
                    epoch = s.epoch,
                    "snapshot of an older epoch refused"
                );
                actix::spawn(d.ack());
                self.parts = SnapshotParts::default();
                if let Some(h) = self.snapshot.take() {
                    ctx.cancel_future(h);
                }
                let have = self.applied;
                ctx.run_later(Duration::from_millis(100), move |act, ctx| {
                    act.ask_snapshot(ctx, have, FIRST_RETRY)
                });
                return;
            }
            Ok((_, Reply::SnapshotPart(part))) => match self.parts.add(part) {
                Ok(None) => {
                    actix::spawn(d.ack());
                    return; // more parts to come
                }
                whole => whole,
            },
            Ok((_, Reply::Snapshot(s))) => s,
            Ok(_) => Err(Error::BadMessage("not a snapshot".into())),
            Err(e) => Err(e),
        };
        actix::spawn(d.ack());
        self.parts = SnapshotParts::default();
        if let Some(h) = self.snapshot.take() {
            ctx.cancel_future(h);
        }
        let store = self.store.clone();
        let install = blocking(move || {
            if let Some(snap) = answer? {
                store.install(&snap)?;
            }
            Ok((store.applied_seq(), store.lineage()))
        });
        ctx.wait(install.into_actor(self).map(|res, act, ctx| match res {
            Ok((seq, lineage)) => {
                act.applied = seq;
                act.behind_since = None;
                // A newer lineage heard meanwhile stays; the snapshot's
                // writes are the master's, so they are in it.
                if lineage.epoch() >= act.lineage.epoch() {
                    act.lineage = lineage;
                }
                act.ready = true;
                act.refilter_pending();
                // What the snapshot already holds is settled.
                for (first, (batch, d)) in std::mem::take(&mut act.pending) {
                    if last_seq(&batch) <= seq {
                        actix::spawn(d.ack());
                    } else {
                        act.pending.insert(first, (batch, d));
                    }
                }
                act.apply_pending(ctx);
                if act.reads.is_none() {
                    act.subscribe_reads(ctx, FIRST_RETRY);
                }
            }
            Err(e) => act.resync(ctx, &format!("the snapshot did not install: {e}")),
        }));
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        // Ended without an answer (the broker went away): ask again.
        self.parts = SnapshotParts::default();
        if self.snapshot.take().is_some() && !self.closing {
            self.ask_snapshot(ctx, self.applied, FIRST_RETRY);
        }
    }
}

impl StreamHandler<ReadBatch> for SlaveWorker {
    fn handle(&mut self, ReadBatch(batch): ReadBatch, ctx: &mut Context<Self>) {
        let mut now = Vec::new();
        for d in batch {
            match wire::decode::<ReadRequest>(&d.message.body) {
                Ok((s, _)) if s.cluster != self.cluster => {
                    tracing::warn!(worker = self.id, "a read of another cluster dropped");
                    actix::spawn(d.ack());
                }
                Ok((_, req)) if req.min_seq <= self.applied => now.push((req, d)),
                Ok((_, req)) => self.parked.push(Parked {
                    req,
                    delivery: d,
                    deadline: Instant::now() + READ_WAIT,
                }),
                Err(e) => {
                    tracing::warn!(worker = self.id, error = %e, "bad read message dropped");
                    actix::spawn(d.ack());
                }
            }
        }
        if !now.is_empty() {
            self.serve(ctx, now);
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        self.reads = None;
        if !self.closing {
            tracing::warn!(worker = self.id, "readQ consumer ended; resubscribing");
            self.subscribe_reads(ctx, FIRST_RETRY);
        }
    }
}

impl Handler<GetStatus> for SlaveWorker {
    type Result = MessageResult<GetStatus>;

    fn handle(&mut self, _: GetStatus, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(WorkerStatus {
            id: self.id,
            master: false,
            applied_seq: self.applied,
            // Not while a gap lasts: it cannot stand for the history then.
            // (Syncs of two groups may arrive out of order for a moment.)
            ready: self.ready && !self.stuck_at_gap(),
            reads_served: self.reads_served,
            epoch: self.lineage.epoch(),
            last_epoch: self.lineage.owner(self.applied),
        })
    }
}

impl Handler<Shutdown> for SlaveWorker {
    type Result = ResponseActFuture<Self, ()>;

    /// Stops consuming (what it held goes back), then deletes its sync
    /// queue: a slave stopped on purpose must not leave a queue filling
    /// behind it. If it comes back, it binds a new one and takes a
    /// snapshot (one that says "you are current" if nothing was written).
    /// Answers once the queue is gone (a process exits right after).
    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) -> Self::Result {
        self.unsubscribe(ctx);
        let (broker, queue, id) = (self.broker.clone(), broker::sync_queue(self.id), self.id);
        let delete = async move {
            if let Err(e) = broker.delete_queue(&queue).await {
                tracing::warn!(worker = id, error = %e, "cannot delete the sync queue");
            }
        };
        Box::pin(delete.into_actor(self).map(|(), _act, ctx| ctx.stop()))
    }
}

impl Handler<Drain> for SlaveWorker {
    type Result = ResponseFuture<Result<u64>>;

    /// Elected: stops serving reads (what it holds goes back to `readQ`),
    /// publishes a fence to `syncQ` and applies everything that comes
    /// before it in its own queue, then answers the seq it reached. The
    /// worker then stops it and leads on the same store.
    fn handle(&mut self, _: Drain, ctx: &mut Context<Self>) -> Self::Result {
        if let Some(h) = self.reads.take() {
            ctx.cancel_future(h);
        }
        self.requeue_parked();
        let (done, answer) = tokio::sync::oneshot::channel();
        let nonce = fastrand::u64(..);
        self.draining = Some(Draining {
            nonce,
            fenced: false,
            done,
        });
        let fence = SyncItem::Fence {
            worker: self.id,
            nonce,
        };
        let msg = Message::new(wire::encode(self.stamp(), &fence));
        let broker = self.broker.clone();
        ctx.spawn(
            async move { broker.publish_fanout(SYNC_X, msg).await }
                .into_actor(self)
                .map(|res, act, _ctx| {
                    if let Err(e) = res {
                        if let Some(drain) = act.draining.take() {
                            let _ = drain.done.send(Err(e));
                        }
                    }
                }),
        );
        Box::pin(async move {
            answer
                .await
                .unwrap_or_else(|_| Err(Error::Unavailable("the slave stopped draining".into())))
        })
    }
}

impl Handler<Resume> for SlaveWorker {
    type Result = ();

    /// The drain failed (or timed out): this replica goes on as a slave,
    /// serving reads again once it is caught up.
    fn handle(&mut self, _: Resume, ctx: &mut Context<Self>) {
        self.draining = None;
        if self.ready && self.reads.is_none() && !self.closing {
            self.subscribe_reads(ctx, FIRST_RETRY);
        }
    }
}
