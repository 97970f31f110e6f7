//! The MasterWorker actor: the only writer. It takes what `writeQ` holds in
//! groups, applies each write in order under the next sequence number,
//! flushes sled once per group, publishes the writes to `syncQ`, and only
//! then replies and acknowledges (promise 1). Snapshot requests come through
//! `writeQ` too, so a snapshot is taken exactly between two writes; one
//! that the master's log of recent writes covers is answered with just the
//! writes the asker lacks (see [`crate::core::catchup`]). So do backups
//! (always the whole store) and restores, in parts, applied with their
//! last part under the next seq like a write (see `restore`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use futures::StreamExt;

mod apply;
mod groups;
mod restore;

use self::apply::{apply_all, decode_all, Owner};
use self::groups::{Groups, Step};
use super::lease::Lease;
use super::messages::{GetStatus, Shutdown, WorkerStatus};
use super::{blocking, reply_to};
use super::{next_retry, FIRST_RETRY};
use crate::broker::{self, Broker, Delivery, Message, LEADING_X, SYNC_X, WRITE_Q};
use crate::core::catchup::{self, Served, SyncLog};
use crate::core::pipeline::{sync_runs, GroupId};
use crate::error::{Error, Result};
use crate::model::wire::MasterRequest;
use crate::model::wire::{self, Reply, Stamp, SyncBatch, SyncItem, SyncMessage};
use crate::model::{Lineage, WriteReply};
use crate::store::Store;
use tokio::sync::mpsc;

/// Most writes taken from `writeQ` into one group commit.
const GROUP: usize = 256;
/// Unacknowledged writes the master may hold.
const PREFETCH: u16 = 512;
/// How often the master looks at its lease while idle (every group looks
/// too, before it applies and before it answers).
const LEASE_CHECK: Duration = Duration::from_millis(10);

/// The master worker over its own store.
pub struct MasterWorker {
    id: u64,
    store: Store,
    broker: Arc<dyn Broker>,
    /// The cluster and the epoch this master writes under.
    stamp: Stamp,
    /// The history this master continues (set once its epoch is begun);
    /// every sync message carries it.
    lineage: Lineage,
    /// When each group may be answered (set with the epoch).
    groups: Arc<Groups>,
    /// The writes logged since this master began (the newest, bounded):
    /// what a replica that missed a few is caught up from.
    log: Arc<Mutex<SyncLog>>,
    /// The parts of a restore received so far.
    restores: Arc<Mutex<restore::Staged>>,
    /// Writes are taken only while it is valid (see [`Lease`]).
    lease: Arc<Lease>,
    /// The `writeQ` consumer, while there is one.
    consumer: Option<SpawnHandle>,
    subscribing: bool,
    /// The cap its sync queue had while it was a slave (the queue is
    /// declared as it was before it is deleted).
    sync_cap: u32,
}

/// What applying one request from `writeQ` came to.
enum Outcome {
    /// Logged now (or earlier: a redelivered request) under a seq: applied
    /// or refused, and replicated either way.
    Logged(SyncMessage, Result<WriteReply>),
    /// Sent under a newer epoch: this master is deposed; the sender retries.
    Fenced(Error),
    /// The answer to a snapshot request: current, a catch-up or a snapshot.
    Snapshot(Result<Served>),
    /// How far the history reaches here (see [`MasterRequest::Head`]).
    Head(u64),
    /// Not a message of this cluster, or not one at all: dropped with a
    /// log line. (A part of a restore kept until its last comes is
    /// acknowledged so too, unanswered.)
    Dropped,
}

impl MasterWorker {
    /// A master of `stamp`'s cluster and epoch, taking writes while
    /// `lease` is valid.
    pub fn new(
        id: u64,
        store: Store,
        broker: Arc<dyn Broker>,
        stamp: Stamp,
        lease: Arc<Lease>,
    ) -> Self {
        MasterWorker {
            id,
            store,
            broker,
            stamp,
            lineage: Lineage::default(),
            groups: Arc::new(Groups::new(0, lease.clone())),
            log: Arc::new(Mutex::new(SyncLog::new(1, catchup::LIMITS))),
            restores: Arc::default(),
            lease,
            consumer: None,
            subscribing: false,
            sync_cap: broker::SYNC_QUEUE_CAP,
        }
    }

    /// The cap its sync queue had while it was a slave (by default
    /// [`broker::SYNC_QUEUE_CAP`]): declared with another, the queue
    /// would be deleted and declared again before it is deleted.
    pub fn with_sync_cap(mut self, messages: u32) -> Self {
        self.sync_cap = messages;
        self
    }

    /// Consumes `writeQ`; retried with backoff while the broker is away.
    fn subscribe(&mut self, ctx: &mut Context<Self>, wait: Duration) {
        let broker = self.broker.clone();
        // Above any deposed master still holding a consumer (paused, cut
        // off): the newest epoch gets the writes.
        let priority = i32::try_from(self.stamp.epoch).unwrap_or(i32::MAX);
        let subscribe = async move {
            broker::declare_topology(broker.as_ref()).await?;
            broker.consume_ranked(WRITE_Q, PREFETCH, priority).await
        };
        self.subscribing = true;
        ctx.wait(subscribe.into_actor(self).map(move |res, act, ctx| match res {
            Ok(consumer) => {
                act.subscribing = false;
                act.refill_gap();
                act.consumer = Some(ctx.add_stream(consumer.ready_chunks(GROUP)));
                act.announce();
            }
            Err(e) => {
                tracing::warn!(worker = act.id, error = %e, "cannot consume writeQ; retrying");
                // The retry is the one attempt under way: `subscribing`
                // stays set until it runs, so that the lease's checks
                // (every 10 ms) start no other meanwhile, and it subscribes
                // only if nothing else has (and the lease still holds).
                let next = next_retry(wait);
                ctx.run_later(wait, move |act, ctx| {
                    act.subscribing = false;
                    if act.consumer.is_none() && act.lease.valid() {
                        act.subscribe(ctx, next);
                    }
                });
            }
        }));
    }

    /// Tells every orchestrator (on the `leading` exchange, which each
    /// binds its reply queue to) that this master consumes `writeQ` now,
    /// so that writes they sent before to a deposed master go again (best
    /// effort: its first answer to each says the same).
    fn announce(&self) {
        let (broker, stamp) = (self.broker.clone(), self.stamp);
        actix::spawn(async move {
            let msg = Message::reply(wire::encode(stamp, &Reply::Leading), None);
            let _ = broker.publish_fanout(LEADING_X, msg).await;
        });
    }

    /// After a lapse of the lease, the syncs of the groups that went back
    /// to `writeQ` (which may never come back) go out again from the log,
    /// as a group of their own, so that no later group waits behind them
    /// for good (see [`crate::core::pipeline`]); before any new write.
    fn refill_gap(&mut self) {
        let applied = self.store.applied_seq();
        let Some((from, through)) = self.groups.gap_after_lapse(applied) else {
            return;
        };
        let parts = {
            let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
            catchup::parts(&log, &self.lineage, from, through)
        };
        if parts.is_empty() {
            tracing::warn!(
                worker = self.id,
                from,
                through,
                "the log no longer holds the syncs of groups that went back; counting them as sent"
            );
            self.groups.count_sent(applied);
            return;
        }
        tracing::info!(
            worker = self.id,
            from,
            through,
            parts = parts.len(),
            "sending again the syncs of groups that went back"
        );
        let runs: Vec<(u64, u64)> = parts.iter().map(|p| p.batch.span()).collect();
        let items: Vec<SyncItem> = parts
            .into_iter()
            .map(|p| SyncItem::Writes(p.batch))
            .collect();
        let (group, steps) = self.groups.applied(&runs, 0);
        let (broker, stamp, groups) = (self.broker.clone(), self.stamp, self.groups.clone());
        actix::spawn(async move {
            publish_group(broker.as_ref(), &groups, stamp, group, steps, &items).await;
        });
    }

    /// Its sync queue from when it was a slave, gone for sure, in the
    /// background (the slave stopped to lead leaves it, so that the switch
    /// does not wait on the broker). Declared before it is deleted: a
    /// delete cut short by the death of a RabbitMQ node can leave the
    /// queue's binding to the sync exchange behind without the queue, and
    /// RabbitMQ then refuses every sync published there, for good (seen:
    /// no write acknowledged again). Retried until both are done.
    fn remove_own_sync_queue(&mut self, ctx: &mut Context<Self>) {
        let (broker, id) = (self.broker.clone(), self.id);
        let queue = broker::sync_queue(id);
        let kind = broker::sync_queue_kind(self.sync_cap);
        ctx.spawn(super::remove_queue(broker, queue, kind, id).into_actor(self));
    }

    /// Follows the lease: no consumer while it is not valid (what the
    /// consumer held goes back to `writeQ`), one again once it is.
    fn follow_lease(&mut self, ctx: &mut Context<Self>) {
        match (self.lease.valid(), self.consumer.is_some()) {
            (false, true) => {
                tracing::warn!(worker = self.id, "lease ran out; taking no writes");
                if let Some(h) = self.consumer.take() {
                    ctx.cancel_future(h);
                }
            }
            (true, false) if !self.subscribing => {
                tracing::info!(worker = self.id, "lease valid; taking writes");
                self.subscribe(ctx, FIRST_RETRY);
            }
            _ => {}
        }
    }
}

impl Actor for MasterWorker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        tracing::info!(
            worker = self.id,
            epoch = self.stamp.epoch,
            "master starting"
        );
        let (store, epoch) = (self.store.clone(), self.stamp.epoch);
        let begin = blocking(move || {
            store.begin_epoch(epoch)?;
            Ok((store.lineage(), store.applied_seq()))
        });
        ctx.wait(begin.into_actor(self).map(|res, act, ctx| match res {
            Ok((lineage, applied)) => {
                act.lineage = lineage;
                act.groups = Arc::new(Groups::new(applied, act.lease.clone()));
                let first = applied.saturating_add(1);
                act.log = Arc::new(Mutex::new(SyncLog::new(first, catchup::LIMITS)));
                act.remove_own_sync_queue(ctx);
                act.follow_lease(ctx);
                ctx.run_interval(LEASE_CHECK, |act, ctx| {
                    act.groups.tick();
                    act.follow_lease(ctx);
                });
            }
            Err(e) => {
                tracing::error!(worker = act.id, error = %e, "cannot begin the epoch");
                ctx.stop();
            }
        }));
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        // Groups still waiting go back to writeQ for whoever leads.
        self.groups.stop();
        if let Err(e) = self.store.flush() {
            tracing::error!(worker = self.id, error = %e, "flush on stop failed");
        }
        tracing::info!(worker = self.id, "master stopped");
    }
}

impl StreamHandler<Vec<Delivery>> for MasterWorker {
    fn handle(&mut self, batch: Vec<Delivery>, ctx: &mut Context<Self>) {
        if !self.lease.valid() {
            actix::spawn(futures::future::join_all(
                batch.into_iter().map(|d| d.nack(true)),
            ));
            self.follow_lease(ctx);
            return;
        }
        let (store, broker, stamp, lineage, groups, log) = (
            self.store.clone(),
            self.broker.clone(),
            self.stamp,
            self.lineage.clone(),
            self.groups.clone(),
            self.log.clone(),
        );
        let restores = self.restores.clone();
        let (owners, requests) = decode_all(&batch, stamp);
        let (size, started) = (batch.len(), std::time::Instant::now());
        // Applying waits (`wait`): one group at a time, in `writeQ` order.
        // Syncing and replying runs on a task of its own, not in the actor
        // (whose spawned futures stand still while it waits): while the
        // broker confirms one group's syncs, the next group is applied and
        // flushed. A group is answered only once its own syncs and every
        // earlier seq's are confirmed, so no answer overtakes a sync.
        // Asks for the head alone (what strong reads send under
        // read-index) change nothing: answered without the hop to the
        // blocking pool. No group is being applied meanwhile (the actor
        // waits for each), so the store's applied seq is the head.
        let asks_only = requests
            .iter()
            .all(|r| matches!(r, None | Some(MasterRequest::Head)));
        let apply = async move {
            if !asks_only {
                return blocking(move || apply_all(&store, stamp, (&log, &restores), requests))
                    .await;
            }
            let head = store.applied_seq();
            let asked = |r: Option<MasterRequest>| match r {
                Some(_) => Outcome::Head(head),
                None => Outcome::Dropped,
            };
            Ok(requests.into_iter().map(asked).collect())
        };
        ctx.wait(apply.into_actor(self).map(move |applied, _act, _ctx| {
            let applied_in = started.elapsed();
            let finish = async move {
                let ok = match applied {
                    Ok(outcomes) => {
                        let sender = Sender {
                            stamp,
                            lineage: &lineage,
                            groups: &groups,
                        };
                        finish_group(broker.as_ref(), sender, batch, owners, outcomes).await
                    }
                    Err(e) => {
                        // Part of it may be committed (before a snapshot
                        // request): it is answered again from the record.
                        tracing::error!(error = %e, "group commit failed; requeueing the group");
                        let requeue = batch.into_iter().map(|d| d.nack(true));
                        futures::future::join_all(requeue).await;
                        false
                    }
                };
                let total = started.elapsed();
                tracing::debug!(size, ?applied_in, ?total, ok, "group settled");
            };
            actix::spawn(finish);
        }));
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        tracing::warn!(worker = self.id, "writeQ consumer ended; resubscribing");
        self.consumer = None;
        self.follow_lease(ctx);
    }
}

/// What a group's syncs are sent as, and the pipeline that decides when
/// it is answered.
struct Sender<'a> {
    stamp: Stamp,
    lineage: &'a Lineage,
    groups: &'a Groups,
}

/// Publishes the group's syncs and, as the pipeline decides (every seq up
/// to the group's last confirmed, the lease held; see
/// [`crate::core::pipeline`]), replies and acknowledges, or puts the group
/// back on `writeQ`. Answers whether the group was answered.
async fn finish_group(
    broker: &dyn Broker,
    sender: Sender<'_>,
    batch: Vec<Delivery>,
    owners: Vec<Owner>,
    outcomes: Vec<Outcome>,
) -> bool {
    let seqs: Vec<Option<u64>> = outcomes
        .iter()
        .map(|o| match o {
            Outcome::Logged(sync, _) => Some(sync.seq),
            _ => None,
        })
        .collect();
    let (runs, run_of) = sync_runs(&seqs);
    let mut messages: Vec<Vec<SyncMessage>> = vec![Vec::new(); runs.len()];
    for (outcome, run) in outcomes.iter().zip(&run_of) {
        if let (Outcome::Logged(sync, _), Some(run)) = (outcome, run) {
            messages[*run].push(sync.clone());
        }
    }
    let Runs {
        runs,
        messages,
        run_of,
    } = split_runs(messages, run_of, &outcomes);
    // A snapshot or a catch-up holds every write up to its seq, and a head
    // promises them: either goes out only once their syncs are confirmed
    // (a deposed master's snapshot would hand a slave writes the history
    // lacks).
    let needs = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Snapshot(Ok(s)) => s.needs(),
            Outcome::Head(seq) => Some(*seq),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    let (group, steps) = sender.groups.applied(&runs, needs);
    let items: Vec<SyncItem> = messages
        .into_iter()
        .map(|writes| {
            SyncItem::Writes(SyncBatch {
                lineage: sender.lineage.clone(),
                writes,
            })
        })
        .collect();
    let synced = publish_group(broker, sender.groups, sender.stamp, group, steps, &items).await;
    // Each delivery's requests: with their ids, what they came to, and
    // whether they may be answered now.
    let mut per: Vec<Vec<(Option<u64>, Outcome, bool)>> =
        std::iter::repeat_with(Vec::new).take(batch.len()).collect();
    for (((d, id), outcome), run) in owners.into_iter().zip(outcomes).zip(run_of) {
        let answer = synced
            || (run.is_none() && !matches!(outcome, Outcome::Snapshot(_) | Outcome::Head(_)));
        if let Some(p) = per.get_mut(d) {
            p.push((id, outcome, answer));
        }
    }
    // Replies go out together: one at a time, each would wait for its own
    // publisher confirm.
    let settle = batch
        .into_iter()
        .zip(per)
        .map(|(d, requests)| settle(broker, sender.stamp, d, requests));
    futures::future::join_all(settle).await;
    synced
}

/// Publishes `group`'s runs (`items`, one sync message each) to `syncQ`,
/// and again when one fails, as the pipeline says, until it answers the
/// group (true) or puts it back (false). Each attempt encodes its run: no
/// copy of a message is kept for a retry that seldom comes.
async fn publish_group(
    broker: &dyn Broker,
    groups: &Groups,
    stamp: Stamp,
    group: GroupId,
    mut steps: mpsc::UnboundedReceiver<Step>,
    items: &[SyncItem],
) -> bool {
    let publish = |run: usize| {
        let msg = items
            .get(run)
            .map(|item| Message::new(wire::encode(stamp, item)));
        async move {
            let ok = match msg {
                Some(msg) => broker.publish_fanout(SYNC_X, msg).await.is_ok(),
                None => false,
            };
            groups.published(group, run, ok);
        }
    };
    let mut out = futures::stream::FuturesUnordered::new();
    loop {
        tokio::select! {
            step = steps.recv() => match step {
                Some(Step::Publish(run)) => out.push(publish(run)),
                Some(Step::Answer) => return true,
                Some(Step::Requeue) | None => return false,
            },
            Some(()) = out.next(), if !out.is_empty() => {}
        }
    }
}

/// A group's sync messages: the seqs each holds, its writes, and the
/// message each request's sync went in.
struct Runs {
    runs: Vec<(u64, u64)>,
    messages: Vec<Vec<SyncMessage>>,
    run_of: Vec<Option<usize>>,
}

/// Splits runs whose syncs together are large into runs of consecutive
/// seqs whose messages are at most a snapshot part's size (each write
/// fits alone: a group of many batches must fit the broker's limit on a
/// message as each batch does), each run's writes in seq order, once
/// each. Answers the runs, their writes, and the run of each request.
fn split_runs(
    messages: Vec<Vec<SyncMessage>>,
    run_of: Vec<Option<usize>>,
    outcomes: &[Outcome],
) -> Runs {
    let (mut runs, mut split) = (Vec::new(), Vec::new());
    // For each run given, the last seq of each of its parts and the part.
    let mut parts_of: Vec<Vec<(u64, usize)>> = Vec::with_capacity(messages.len());
    for mut writes in messages {
        writes.sort_by_key(|m| m.seq);
        writes.dedup_by_key(|m| m.seq);
        let sized = writes.into_iter().map(|m| {
            let size = wire::encoded_len(&m);
            (m, size)
        });
        let mut parts = Vec::new();
        for part in wire::chunk_parts(sized) {
            let (Some(first), Some(last)) = (part.first(), part.last()) else {
                continue;
            };
            parts.push((last.seq, runs.len()));
            runs.push((first.seq, last.seq));
            split.push(part);
        }
        parts_of.push(parts);
    }
    let run_of = outcomes
        .iter()
        .zip(run_of)
        .map(|(outcome, run)| {
            let (Outcome::Logged(sync, _), Some(run)) = (outcome, run) else {
                return None;
            };
            parts_of
                .get(run)?
                .iter()
                .find(|(last, _)| sync.seq <= *last)
                .map(|(_, part)| *part)
        })
        .collect();
    Runs {
        runs,
        messages: split,
        run_of,
    }
}

/// Replies to a batch of writes with one message, each answer by its id,
/// and acknowledges it; or requeues it whole if any write of it may not
/// be answered yet (those answered before are answered again from the
/// record).
async fn settle(
    broker: &dyn Broker,
    stamp: Stamp,
    d: Delivery,
    requests: Vec<(Option<u64>, Outcome, bool)>,
) {
    if !requests.iter().all(|(_, _, answer)| *answer) {
        let _ = d.nack(true).await;
        return;
    }
    let batched = requests.iter().any(|(id, _, _)| id.is_some());
    if !batched {
        for (_, outcome, _) in requests {
            settle_one(broker, stamp, &d, outcome).await;
        }
        let _ = d.ack().await;
        return;
    }
    let answers = requests
        .into_iter()
        .filter_map(|(id, outcome, _)| {
            let answer = match outcome {
                Outcome::Logged(_, r) => r,
                Outcome::Fenced(e) => Err(e),
                _ => return None,
            };
            Some((id?, answer))
        })
        .collect();
    if let Err(e) = reply_to(broker, stamp, &d, &Reply::Writes(answers)).await {
        tracing::warn!(error = %e, "reply failed; the asker will ask again");
    }
    let _ = d.ack().await;
}

/// Replies to a request sent alone (its sync, and every earlier one,
/// confirmed). A reply that cannot be published is not retried here: the
/// asker asks again (the orchestrator within its deadline, a slave for
/// its snapshot), so nothing loops.
async fn settle_one(broker: &dyn Broker, stamp: Stamp, d: &Delivery, outcome: Outcome) {
    let replies = match outcome {
        Outcome::Logged(_, r) => vec![Reply::Write(r)],
        Outcome::Fenced(e) => vec![Reply::Write(Err(e))],
        Outcome::Snapshot(Ok(served)) => served.into_replies(),
        Outcome::Snapshot(Err(e)) => vec![Reply::Snapshot(Err(e))],
        Outcome::Head(seq) => vec![Reply::Head(seq)],
        Outcome::Dropped => return,
    };
    // A snapshot's (or a catch-up's) parts go one after the other: each
    // can be megabytes.
    for reply in &replies {
        if let Err(e) = reply_to(broker, stamp, d, reply).await {
            tracing::warn!(error = %e, "reply failed; the asker will ask again");
            break;
        }
    }
}

impl Handler<GetStatus> for MasterWorker {
    type Result = MessageResult<GetStatus>;

    fn handle(&mut self, _: GetStatus, _ctx: &mut Context<Self>) -> Self::Result {
        let applied_seq = self.store.applied_seq();
        MessageResult(WorkerStatus {
            id: self.id,
            master: true,
            applied_seq,
            // Ready to take writes: its lease is valid and it consumes.
            ready: self.lease.valid() && self.consumer.is_some(),
            reads_served: 0,
            epoch: self.stamp.epoch,
            last_epoch: self.store.lineage().owner(applied_seq),
        })
    }
}

impl Handler<Shutdown> for MasterWorker {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        // Applying runs under `wait`, so no group is half applied when this
        // runs; groups not answered yet go back to writeQ when the actor
        // stops (the pipeline's stop), and what is still unacknowledged at
        // the exit is delivered again.
        ctx.stop();
    }
}
