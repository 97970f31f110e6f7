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
//! lineage does not (applied, or in a run being applied), it resyncs by
//! snapshot and serves no read meanwhile. A replica that waits for more
//! than [`GAP_WAIT`] without progress (a sync lost, dropped from its
//! capped queue while it was away, or gone with the queue itself, which the
//! broker deletes once unused for [`broker::SYNC_QUEUE_IDLE_MS`] and the
//! slave declares afresh, empty, when it subscribes again) resyncs too:
//! the next write's seq, or a read waiting for a seq it lacks, shows it.
//!
//! The decisions are [`crate::core::replica`]'s: this actor only drives
//! that state machine. It hands it what arrives (sync and read deliveries,
//! snapshot answers, the end of each storage task, the time, the worker's
//! messages), each delivery as a token it keeps, and carries out the
//! effects: broker and store work (sled work on the blocking pool, point
//! lookups on the actor's thread), replies, acks and log lines.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures::StreamExt;
use tokio::sync::oneshot;

use super::messages::{Drain, GetStatus, Promoted, Rejoined, Resume, Shutdown, WorkerStatus};
use super::{blocking, remove_queue, reply_to_queue};
use crate::broker::{self, Broker, Delivery, Message, QueueKind, READ_Q, SYNC_X, WRITE_Q};
use crate::core::replica::{
    Consumer, Delivered, Effect, Input, Level, ReplicaCore, Token, GAP_WAIT_MS,
};
use crate::error::{Error, Result};
use crate::model::wire::{
    self, Entry, MasterRequest, ReadRequest, Reply, Snapshot, SyncItem, SyncMessage,
};
use crate::model::{Lineage, ReadOp, ReadReply};
use crate::store::Store;

/// Reads a slave may hold unacknowledged.
const READ_PREFETCH: u16 = 32;
const SYNC_PREFETCH: u16 = 4096;
/// Most replicated writes applied as one sled batch.
const APPLY_GROUP: u64 = 1024;
/// How often the core is given the time (read deadlines, the gap clock
/// and retries are this precise).
const TICK: Duration = Duration::from_millis(50);
/// How long a slave stopped on purpose tries to delete its sync queue:
/// well within the 15 s a runtime gives a worker to stop, with its flush
/// and its session's close after it.
const REMOVE_WITHIN: Duration = Duration::from_secs(8);
/// How long a slave waits without progress for a write it knows exists
/// (a later one came, or a read asked for it) before it takes a snapshot.
pub const GAP_WAIT: Duration = Duration::from_millis(GAP_WAIT_MS);

mod mailbox;

/// A replica over its own store.
pub struct SlaveWorker {
    id: u64,
    store: Store,
    broker: Arc<dyn Broker>,
    sync_cap: u32,
    core: ReplicaCore,
    /// The core's clock starts here.
    started: Instant,
    next_token: Token,
    /// The deliveries the core was given and has not settled yet (but
    /// for read batches: see `batches`).
    held: HashMap<Token, Delivery>,
    /// The reads of the batches held, each the core's under a token of
    /// its own.
    asked: HashMap<Token, Asked>,
    /// The read batches held, by key: each is acknowledged (or given
    /// back) once the core has settled every read in it.
    batches: HashMap<u64, HeldBatch>,
    sync: Option<SpawnHandle>,
    reads: Option<SpawnHandle>,
    /// The answers to the snapshot request out, and its number.
    answers: Option<(u64, SpawnHandle)>,
    /// Who waits for the drain under way, and its nonce.
    drain: Option<(u64, oneshot::Sender<Result<u64>>)>,
}

/// One read of a batch from `readQ`.
struct Asked {
    /// The batch it came in.
    batch: u64,
    /// The orchestrator's id for it, which its answer carries.
    id: u64,
    read: ReadRequest,
}

/// A batch of reads from `readQ` the core has not settled every read of.
struct HeldBatch {
    delivery: Delivery,
    /// Reads of it not settled yet.
    open: usize,
    /// Whether a read of it was given back (the batch then goes back to
    /// `readQ` whole: what was answered already is answered again, which
    /// the orchestrator ignores).
    requeue: bool,
}

/// Where the answers to a batch go.
#[derive(Clone)]
struct ReplyTo {
    queue: Option<String>,
    correlation_id: Option<u64>,
}

/// Answers to some reads of one batch, published as one reply (a few,
/// when they are large: see [`publish_answers`]); `done`
/// is the batch's delivery once every read of it is settled, to
/// acknowledge (or give back, if a read of it was) after the reply.
struct Answers {
    to: ReplyTo,
    reads: Vec<(u64, Result<ReadReply>)>,
    done: Option<(Delivery, bool)>,
}

/// A group of deliveries from this slave's sync queue.
struct SyncDeliveries(Vec<Delivery>);
/// A group of deliveries from `readQ`.
struct ReadBatch(Vec<Delivery>);
/// The master's answer to snapshot request `.0`; `None` once its answers
/// end (the broker went away).
struct SnapshotAnswer(u64, Option<Delivery>);

impl SlaveWorker {
    /// A slave of `cluster` (which its store must have joined), whose sync
    /// queue keeps at most `sync_cap` messages.
    pub fn new(id: u64, store: Store, broker: Arc<dyn Broker>, sync_cap: u32) -> Self {
        let cluster = store.cluster().unwrap_or(0);
        let core = ReplicaCore::new(id, cluster, store.applied_seq(), store.lineage());
        SlaveWorker {
            id,
            store,
            broker,
            sync_cap,
            core,
            started: Instant::now(),
            next_token: 0,
            held: HashMap::new(),
            asked: HashMap::new(),
            batches: HashMap::new(),
            sync: None,
            reads: None,
            answers: None,
            drain: None,
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Gives the core `input` and carries out what it answers.
    fn feed(&mut self, ctx: &mut Context<Self>, input: Input) {
        let now = self.now();
        for effect in self.core.on(input, now) {
            self.carry_out(ctx, effect);
        }
    }

    fn carry_out(&mut self, ctx: &mut Context<Self>, effect: Effect) {
        match effect {
            Effect::Log(level, msg) => self.log(level, &msg),
            Effect::Consume(Consumer::Sync) => self.subscribe_sync(ctx),
            Effect::Consume(Consumer::Reads) => self.subscribe_reads(ctx),
            Effect::StopConsuming(c) => self.stop_consuming(ctx, c),
            Effect::Ack(tokens) => self.settle(tokens, false),
            Effect::Requeue(tokens) => self.settle(tokens, true),
            Effect::Apply { writes, lineage } => self.apply(ctx, writes, lineage),
            Effect::AskSnapshot {
                request,
                have_seq,
                have_epoch,
            } => self.ask_snapshot(ctx, request, have_seq, have_epoch),
            Effect::CloseSnapshot { request } => self.close_snapshot(ctx, request),
            Effect::Install { request, snapshot } => self.install(ctx, request, snapshot),
            Effect::Serve(tokens) => self.serve(ctx, tokens),
            Effect::Unavailable(reads) => self.unavailable(reads),
            Effect::PublishFence { nonce } => self.publish_fence(ctx, nonce),
            Effect::Flush { nonce } => self.flush(ctx, nonce),
            Effect::DrainDone { nonce, result } => self.drain_done(nonce, result),
        }
    }

    fn log(&self, level: Level, msg: &str) {
        let id = self.id;
        match level {
            Level::Debug => tracing::debug!(worker = id, "{msg}"),
            Level::Info => tracing::info!(worker = id, "{msg}"),
            Level::Warn => tracing::warn!(worker = id, "{msg}"),
            Level::Error => tracing::error!(worker = id, "{msg}"),
        }
    }

    /// Keeps a delivery for the core, under a new token.
    fn hold(&mut self, d: Delivery) -> Token {
        let token = self.next_token;
        self.next_token += 1;
        self.held.insert(token, d);
        token
    }

    /// Keeps a batch of reads for the core: each read under a token of
    /// its own. Answers the core's view of them.
    fn hold_batch(&mut self, d: Delivery) -> Vec<Delivered<u64>> {
        let decoded = match wire::decode::<wire::ReadBatch>(&d.message.body) {
            Ok((_, batch)) if batch.reads.is_empty() => Err("an empty batch of reads".to_owned()),
            other => other.map_err(|e| e.to_string()),
        };
        let (stamp, batch) = match decoded {
            Ok(decoded) => decoded,
            Err(item) => {
                // Held whole, for the core to drop.
                let token = self.hold(d);
                return vec![Delivered {
                    token,
                    item: Err(item),
                }];
            }
        };
        let key = self.next_token;
        self.next_token += 1;
        let open = batch.reads.len();
        self.batches.insert(
            key,
            HeldBatch {
                delivery: d,
                open,
                requeue: false,
            },
        );
        batch
            .reads
            .into_iter()
            .map(|r| {
                let token = self.next_token;
                self.next_token += 1;
                let min_seq = r.read.min_seq;
                let asked = Asked {
                    batch: key,
                    id: r.id,
                    read: r.read,
                };
                self.asked.insert(token, asked);
                Delivered {
                    token,
                    item: Ok((stamp, min_seq)),
                }
            })
            .collect()
    }

    /// One read of batch `key` is settled (given back if `requeue`):
    /// answers the batch's delivery once every read of it is, to settle.
    fn settle_read(&mut self, key: u64, requeue: bool) -> Option<HeldBatch> {
        let batch = self.batches.get_mut(&key)?;
        batch.open = batch.open.saturating_sub(1);
        batch.requeue |= requeue;
        if batch.open == 0 {
            self.batches.remove(&key)
        } else {
            None
        }
    }

    /// Acks (or, with `requeue`, gives back) held deliveries, off the
    /// actor's thread. A read of a batch settles its batch once it is the
    /// last.
    fn settle(&mut self, tokens: Vec<Token>, requeue: bool) {
        let mut done = Vec::new();
        for t in tokens {
            if let Some(asked) = self.asked.remove(&t) {
                if let Some(b) = self.settle_read(asked.batch, requeue) {
                    done.push(settle_one(b.delivery, b.requeue));
                }
            } else if let Some(d) = self.held.remove(&t) {
                done.push(settle_one(d, requeue));
            }
        }
        if !done.is_empty() {
            actix::spawn(futures::future::join_all(done));
        }
    }

    /// Takes the reads of `tokens` (each with what rides along) out of
    /// their batches: one group of answers a batch, to fill in (with the
    /// batch's delivery once every read of it is settled), and each read
    /// with the index of its group.
    fn answering<T>(&mut self, tokens: Vec<(Token, T)>) -> (Vec<Answers>, Vec<(usize, Asked, T)>) {
        let mut groups: Vec<Answers> = Vec::new();
        let mut group_of: HashMap<u64, usize> = HashMap::new();
        let mut reads = Vec::with_capacity(tokens.len());
        for (t, extra) in tokens {
            let Some(asked) = self.asked.remove(&t) else {
                continue;
            };
            let Some(held) = self.batches.get(&asked.batch) else {
                continue;
            };
            let g = *group_of.entry(asked.batch).or_insert_with(|| {
                let m = &held.delivery.message;
                groups.push(Answers {
                    to: ReplyTo {
                        queue: m.reply_to.clone(),
                        correlation_id: m.correlation_id,
                    },
                    reads: Vec::new(),
                    done: None,
                });
                groups.len() - 1
            });
            if let Some(b) = self.settle_read(asked.batch, false) {
                groups[g].done = Some((b.delivery, b.requeue));
            }
            reads.push((g, asked, extra));
        }
        (groups, reads)
    }
    /// Binds and consumes the sync queue.
    fn subscribe_sync(&mut self, ctx: &mut Context<Self>) {
        let (broker, id, cap) = (self.broker.clone(), self.id, self.sync_cap);
        let setup = async move {
            broker::declare_topology(broker.as_ref()).await?;
            let sync_q = broker::sync_queue(id);
            broker
                .declare_queue(&sync_q, broker::sync_queue_kind(cap))
                .await?;
            broker.bind(&sync_q, SYNC_X).await?;
            broker.consume(&sync_q, SYNC_PREFETCH).await
        };
        ctx.wait(setup.into_actor(self).map(|res, act, ctx| match res {
            Ok(sync) => {
                let stream = ctx.add_stream(sync.ready_chunks(512).map(SyncDeliveries));
                if let Some(old) = act.sync.replace(stream) {
                    ctx.cancel_future(old);
                }
                act.feed(ctx, Input::Consuming(Consumer::Sync));
            }
            Err(e) => act.consume_failed(ctx, Consumer::Sync, e),
        }));
    }

    fn subscribe_reads(&mut self, ctx: &mut Context<Self>) {
        let broker = self.broker.clone();
        let consume = async move { broker.consume(READ_Q, READ_PREFETCH).await };
        ctx.wait(consume.into_actor(self).map(|res, act, ctx| match res {
            Ok(reads) => {
                let stream = ctx.add_stream(reads.ready_chunks(64).map(ReadBatch));
                if let Some(old) = act.reads.replace(stream) {
                    ctx.cancel_future(old);
                }
                act.feed(ctx, Input::Consuming(Consumer::Reads));
            }
            Err(e) => act.consume_failed(ctx, Consumer::Reads, e),
        }));
    }

    fn consume_failed(&mut self, ctx: &mut Context<Self>, consumer: Consumer, e: Error) {
        let error = e.to_string();
        self.feed(ctx, Input::ConsumeFailed { consumer, error });
    }

    fn stop_consuming(&mut self, ctx: &mut Context<Self>, c: Consumer) {
        let handle = match c {
            Consumer::Sync => self.sync.take(),
            Consumer::Reads => self.reads.take(),
        };
        if let Some(h) = handle {
            ctx.cancel_future(h);
        }
    }

    /// Sends snapshot request `request`; its answers come as a stream of
    /// their own, replacing the previous request's.
    fn ask_snapshot(&mut self, ctx: &mut Context<Self>, request: u64, have: u64, epoch: u64) {
        let (broker, id) = (self.broker.clone(), self.id);
        let ask = MasterRequest::Snapshot {
            have_seq: have,
            have_epoch: epoch,
        };
        let body = wire::encode(self.core.stamp(), &ask);
        let ask = async move { request_snapshot(broker.as_ref(), id, body).await };
        ctx.wait(ask.into_actor(self).map(move |res, act, ctx| match res {
            Ok(answers) => {
                let ended = futures::stream::once(async { None });
                let answers = answers.map(Some).chain(ended);
                let answers = answers.map(move |d| SnapshotAnswer(request, d));
                let stream = ctx.add_stream(answers);
                if let Some((_, old)) = act.answers.replace((request, stream)) {
                    ctx.cancel_future(old);
                }
            }
            Err(e) => {
                let error = e.to_string();
                act.feed(ctx, Input::AskFailed { request, error });
            }
        }));
    }

    fn close_snapshot(&mut self, ctx: &mut Context<Self>, request: u64) {
        if self.answers.as_ref().is_some_and(|(r, _)| *r == request) {
            if let Some((_, h)) = self.answers.take() {
                ctx.cancel_future(h);
            }
        }
    }

    fn install(&mut self, ctx: &mut Context<Self>, request: u64, snapshot: Option<Snapshot>) {
        let store = self.store.clone();
        let install = blocking(move || {
            if let Some(snap) = snapshot {
                // A new slave serves from memory while sled catches up;
                // a flush (a drain's) waits for it.
                store.install_early(snap)?;
            }
            Ok((store.applied_seq(), store.lineage()))
        });
        ctx.wait(install.into_actor(self).map(move |res, act, ctx| {
            let result = res.map_err(|e| e.to_string());
            act.feed(ctx, Input::Installed { request, result });
        }));
    }

    /// Applies a run on the blocking pool; reads go on being served.
    fn apply(&mut self, ctx: &mut Context<Self>, writes: Vec<SyncMessage>, lineage: Lineage) {
        let store = self.store.clone();
        let apply = blocking(move || apply_run(&store, &writes, &lineage));
        ctx.spawn(apply.into_actor(self).map(|res, act, ctx| {
            let (seq, error) = match res {
                Ok(seq) => (seq, None),
                Err(e) => (act.store.applied_seq(), Some(e.to_string())),
            };
            act.feed(ctx, Input::Applied { seq, error });
        }));
    }

    /// Runs reads (point lookups here, scans on the blocking pool), then
    /// replies (one message for the reads of a batch served together) and
    /// acknowledges each batch answered whole.
    fn serve(&mut self, ctx: &mut Context<Self>, tokens: Vec<Token>) {
        let (store, broker, stamp) = (self.store.clone(), self.broker.clone(), self.core.stamp());
        let (mut groups, reads) = self.answering(tokens.into_iter().map(|t| (t, ())).collect());
        // Who each answer goes to, should the reads fail as a whole.
        let asked: Vec<(usize, u64)> = reads.iter().map(|(g, a, ())| (*g, a.id)).collect();
        // Point lookups take microseconds: done here, they save two thread
        // hops. Anything that scans goes to the blocking pool.
        let inline = reads
            .iter()
            .all(|(_, a, ())| matches!(a.read.op, ReadOp::Get { .. }));
        let read_all = move || {
            let seq = store.applied_seq();
            let results = reads
                .into_iter()
                .map(|(_, a, ())| {
                    let result = store.read(&a.read.op);
                    result.map(|result| ReadReply { seq, result })
                })
                .collect::<Vec<_>>();
            Ok(results)
        };
        let run = async move {
            let results: Result<Vec<Result<ReadReply>>> = if inline {
                read_all()
            } else {
                blocking(read_all).await
            };
            let results = match results {
                Ok(r) => r,
                Err(e) => asked.iter().map(|_| Err(e.clone())).collect(),
            };
            for ((g, id), r) in asked.into_iter().zip(results) {
                groups[g].reads.push((id, r));
            }
            publish_answers(broker, stamp, groups).await;
        };
        ctx.spawn(run.into_actor(self));
    }

    /// Answers reads that waited too long "unavailable", so that the
    /// orchestrator tries again.
    fn unavailable(&mut self, reads: Vec<(Token, String)>) {
        let (mut groups, asked) = self.answering(reads);
        for (g, a, why) in asked {
            groups[g].reads.push((a.id, Err(Error::Unavailable(why))));
        }
        actix::spawn(publish_answers(
            self.broker.clone(),
            self.core.stamp(),
            groups,
        ));
    }

    fn publish_fence(&mut self, ctx: &mut Context<Self>, nonce: u64) {
        let fence = SyncItem::Fence {
            worker: self.id,
            nonce,
        };
        let msg = Message::new(wire::encode(self.core.stamp(), &fence));
        // To its own queue only (behind every sync already in it): through
        // the fanout, every promotion's fence would take a place in every
        // capped queue, and enough of them could push out the last syncs
        // a paused slave holds, leaving it no later seq to see its gap by.
        let (broker, queue) = (self.broker.clone(), broker::sync_queue(self.id));
        let publish = async move { broker.publish(&queue, msg).await };
        ctx.spawn(publish.into_actor(self).map(move |res, act, ctx| {
            if let Err(e) = res {
                let error = e.to_string();
                act.feed(ctx, Input::FenceFailed { nonce, error });
            }
        }));
    }

    fn flush(&mut self, ctx: &mut Context<Self>, nonce: u64) {
        let store = self.store.clone();
        let flush = blocking(move || {
            store.flush()?;
            Ok(store.applied_seq())
        });
        ctx.spawn(flush.into_actor(self).map(move |res, act, ctx| {
            let result = res.map_err(|e| e.to_string());
            act.feed(ctx, Input::Flushed { nonce, result });
        }));
    }

    fn drain_done(&mut self, nonce: u64, result: std::result::Result<u64, String>) {
        if self.drain.as_ref().is_some_and(|(n, _)| *n == nonce) {
            if let Some((_, done)) = self.drain.take() {
                let _ = done.send(result.map_err(Error::Unavailable));
            }
        }
    }
}

async fn settle_one(d: Delivery, requeue: bool) -> Result<()> {
    if requeue {
        d.nack(true).await
    } else {
        d.ack().await
    }
}

/// Publishes each group of answers as one reply (or, when they are
/// large, as a few: split as a snapshot is, so that each fits the
/// broker's limit on a message as every read alone would), then settles
/// the batches answered whole. A reply that cannot be published is not
/// retried: the orchestrator asks again within its deadline.
async fn publish_answers(broker: Arc<dyn Broker>, stamp: wire::Stamp, groups: Vec<Answers>) {
    let replies = groups.into_iter().map(|g| {
        let broker = broker.clone();
        async move {
            if !g.reads.is_empty() {
                let (queue, id) = (g.to.queue.as_deref(), g.to.correlation_id);
                let sized = g.reads.into_iter().map(|a| {
                    let size = wire::encoded_len(&a);
                    (a, size)
                });
                for reads in wire::chunk_parts(sized) {
                    let reply = Reply::Reads(reads);
                    let _ = reply_to_queue(broker.as_ref(), stamp, queue, id, &reply).await;
                }
            }
            if let Some((d, requeue)) = g.done {
                let _ = settle_one(d, requeue).await;
            }
        }
    });
    futures::future::join_all(replies).await;
}

/// Applies consecutive writes as sled batches of at most [`APPLY_GROUP`],
/// each with `lineage`; answers the applied seq.
fn apply_run(store: &Store, writes: &[SyncMessage], lineage: &Lineage) -> Result<u64> {
    let mut group = store.group();
    group.set_lineage(lineage.clone());
    for m in writes {
        match &m.entry {
            Entry::Write(op) => group.apply(m.seq, m.request_id, op).map(|_| ())?,
            Entry::Refused(e) => group.refuse(m.seq, m.request_id, e)?,
            // The core never hands one over: a restore is taken as a
            // snapshot. Failing makes the replica resync all the same.
            Entry::Restored { .. } => {
                return Err(Error::Storage(format!(
                    "seq {} is a restore: only a snapshot installs it",
                    m.seq
                )))
            }
        }
        if group.len() >= APPLY_GROUP {
            group.commit()?;
            group = store.group();
            group.set_lineage(lineage.clone());
        }
    }
    group.commit()
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
