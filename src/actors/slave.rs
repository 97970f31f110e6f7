//! The SlaveWorker actor: a replica that serves reads.
//!
//! On start it binds its own sync queue to `syncQ` first, then asks the
//! master (through `writeQ`, so in write order) for a snapshot, installs it,
//! applies what queued after it, and only then consumes `readQ` (promise 4).
//! Sync messages apply strictly in sequence order; duplicates are dropped
//! (promise 2). A read waits, bounded, until the slave has applied the
//! sequence number it asks for (promise 3).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures::StreamExt;

use super::messages::{GetStatus, Promote, Shutdown, WorkerStatus};
use super::{blocking, reply_to, MasterWorker};
use super::{next_retry, FIRST_RETRY};
use crate::broker::{self, Broker, Delivery, Message, QueueKind, READ_Q, SYNC_X, WRITE_Q};
use crate::error::{Error, Result};
use crate::model::wire::{
    self, MasterRequest, ReadRequest, Reply, Snapshot, SnapshotParts, SyncBatch,
};
use crate::model::{ReadOp, ReadReply};
use crate::store::Store;

/// How long a read may wait for this slave to catch up before the
/// orchestrator is told to try again.
const READ_WAIT: Duration = Duration::from_secs(2);
/// Reads a slave may hold unacknowledged.
const READ_PREFETCH: u16 = 32;
const SYNC_PREFETCH: u16 = 4096;
/// Most replicated writes applied as one sled batch.
const APPLY_GROUP: u64 = 1024;

/// A replica over its own store.
pub struct SlaveWorker {
    id: u64,
    store: Store,
    broker: Arc<dyn Broker>,
    applied: u64,
    /// Caught up: snapshot installed (or found current).
    ready: bool,
    /// Sync batches ahead of `applied`, by their first sequence number.
    pending: BTreeMap<u64, (SyncBatch, Delivery)>,
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
    pub fn new(id: u64, store: Store, broker: Arc<dyn Broker>) -> Self {
        let applied = store.applied_seq();
        SlaveWorker {
            id,
            store,
            broker,
            applied,
            ready: false,
            pending: BTreeMap::new(),
            parked: Vec::new(),
            reads_served: 0,
            sync: None,
            reads: None,
            snapshot: None,
            parts: SnapshotParts::default(),
            applying: false,
            closing: false,
        }
    }

    /// Binds and consumes the sync queue; the first time (not yet
    /// ready), then asks for a snapshot. Retried while the broker is away.
    fn subscribe_sync(&mut self, ctx: &mut Context<Self>, wait: Duration) {
        let (broker, id) = (self.broker.clone(), self.id);
        let setup = async move {
            broker::declare_topology(broker.as_ref()).await?;
            let sync_q = broker::sync_queue(id);
            broker.declare_queue(&sync_q, QueueKind::Durable).await?;
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

    /// Asks the master for the state past `have_seq`.
    fn ask_snapshot(&mut self, ctx: &mut Context<Self>, have_seq: u64, wait: Duration) {
        let (broker, id) = (self.broker.clone(), self.id);
        let ask = async move { request_snapshot(broker.as_ref(), id, have_seq).await };
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
        let store = self.store.clone();
        let apply = blocking(move || {
            let mut group = store.group();
            for m in batches.iter().flatten() {
                // A batch may start below what a snapshot already holds.
                if m.seq < group.next_seq() {
                    continue;
                }
                group.apply(m.seq, m.request_id, &m.op)?;
                if group.len() >= APPLY_GROUP {
                    group.commit()?;
                    group = store.group();
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
                    act.applied = act.applied.max(seq);
                    act.serve_parked(ctx);
                    act.apply_pending(ctx);
                }
                Err(e) => act.resync(ctx, e),
            }
        }));
    }

    /// A sync failed to apply: this replica diverged; take a fresh snapshot.
    fn resync(&mut self, ctx: &mut Context<Self>, e: Error) {
        tracing::error!(worker = self.id, error = %e, "sync failed to apply; resyncing");
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
        let (store, broker) = (self.store.clone(), self.broker.clone());
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
            let replies = deliveries.into_iter().zip(results).map(|(d, r)| {
                let broker = broker.clone();
                async move {
                    match reply_to(broker.as_ref(), &d, &Reply::Read(r)).await {
                        Ok(()) => d.ack().await,
                        Err(_) => d.nack(true).await,
                    }
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
        for p in late {
            let broker = self.broker.clone();
            let err = Error::Unavailable(format!(
                "slave {} has applied {} of {}",
                self.id, self.applied, p.req.min_seq
            ));
            actix::spawn(async move {
                let _ = reply_to(broker.as_ref(), &p.delivery, &Reply::Read(Err(err))).await;
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

/// The last sequence number of a (non-empty, checked) sync batch.
fn last_seq(batch: &SyncBatch) -> u64 {
    batch.last().map_or(0, |m| m.seq)
}

/// Declares a private reply queue, consumes it, and asks for a snapshot.
async fn request_snapshot(broker: &dyn Broker, id: u64, have_seq: u64) -> Result<broker::Consumer> {
    let reply_q = format!("snapshot.{id}.{}", fastrand::u64(..));
    broker.declare_queue(&reply_q, QueueKind::Transient).await?;
    let answers = broker.consume(&reply_q, 1).await?;
    let ask = Message {
        body: wire::encode(&MasterRequest::Snapshot { have_seq }),
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
        ctx.run_interval(Duration::from_millis(50), |act, _| act.expire_parked());
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
        for d in batch {
            let batch = match wire::decode_sync(&d.message.body) {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(worker = self.id, error = %e, "bad sync message dropped");
                    actix::spawn(async move {
                        let _ = d.nack(false).await;
                    });
                    continue;
                }
            };
            let first = batch[0].seq;
            let known = self.pending.get(&first).map_or(0, |(b, _)| last_seq(b));
            if last_seq(&batch) <= self.applied.max(known) {
                actix::spawn(d.ack()); // a duplicate
                continue;
            }
            // A longer batch from the same seq replaces a shorter one.
            if let Some((_, shorter)) = self.pending.insert(first, (batch, d)) {
                actix::spawn(shorter.ack());
            }
        }
        if self.ready {
            self.apply_pending(ctx);
        }
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
            Ok(Reply::SnapshotPart(part)) => match self.parts.add(part) {
                Ok(None) => {
                    actix::spawn(d.ack());
                    return; // more parts to come
                }
                whole => whole,
            },
            Ok(Reply::Snapshot(s)) => s,
            Ok(_) => Err(Error::BadMessage("not a snapshot".into())),
            Err(e) => Err(e),
        };
        actix::spawn(async move {
            let _ = d.ack().await;
        });
        self.parts = SnapshotParts::default();
        if let Some(h) = self.snapshot.take() {
            ctx.cancel_future(h);
        }
        let store = self.store.clone();
        let install = blocking(move || {
            if let Some(snap) = answer? {
                store.install(&snap)?;
            }
            Ok(store.applied_seq())
        });
        ctx.wait(install.into_actor(self).map(|res, act, ctx| match res {
            Ok(seq) => {
                act.applied = seq;
                act.ready = true;
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
            Err(e) => act.resync(ctx, e),
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
                Ok(req) if req.min_seq <= self.applied => now.push((req, d)),
                Ok(req) => self.parked.push(Parked {
                    req,
                    delivery: d,
                    deadline: Instant::now() + READ_WAIT,
                }),
                Err(e) => {
                    tracing::warn!(worker = self.id, error = %e, "bad read message dropped");
                    actix::spawn(async move {
                        let _ = d.nack(false).await;
                    });
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
            ready: self.ready,
            reads_served: self.reads_served,
        })
    }
}

impl Handler<Shutdown> for SlaveWorker {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        self.unsubscribe(ctx);
        ctx.stop();
    }
}

impl Handler<Promote> for SlaveWorker {
    type Result = Result<Addr<MasterWorker>>;

    fn handle(&mut self, msg: Promote, ctx: &mut Context<Self>) -> Self::Result {
        tracing::info!(
            worker = self.id,
            epoch = msg.epoch,
            seq = self.applied,
            "promoted to master"
        );
        self.unsubscribe(ctx);
        let broker = self.broker.clone();
        let sync_q = broker::sync_queue(self.id);
        actix::spawn(async move {
            let _ = broker.delete_queue(&sync_q).await;
        });
        ctx.stop();
        let master = MasterWorker::new(self.id, self.store.clone(), self.broker.clone(), msg.epoch);
        Ok(master.start())
    }
}
