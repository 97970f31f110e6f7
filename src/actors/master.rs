//! The MasterWorker actor: the only writer. It takes what `writeQ` holds in
//! groups, applies each write in order under the next sequence number,
//! flushes sled once per group, publishes the writes to `syncQ`, and only
//! then replies and acknowledges (promise 1). Snapshot requests come through
//! `writeQ` too, so a snapshot is taken exactly between two writes.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures::StreamExt;

use super::messages::{GetStatus, Shutdown, WorkerStatus};
use super::{blocking, reply_to};
use super::{next_retry, FIRST_RETRY};
use crate::broker::{self, Broker, Delivery, Message, SYNC_X, WRITE_Q};
use crate::error::{Error, Result};
use crate::model::wire::{
    self, MasterRequest, Reply, Snapshot, SyncBatch, SyncMessage, WriteRequest,
};
use crate::model::{validate_write, WriteReply};
use crate::store::{Store, WriteGroup};

/// Most writes taken from `writeQ` into one group commit.
const GROUP: usize = 256;
/// Unacknowledged writes the master may hold.
const PREFETCH: u16 = 512;

/// The master worker over its own store.
pub struct MasterWorker {
    id: u64,
    store: Store,
    broker: Arc<dyn Broker>,
    epoch: u64,
}

/// What applying one request from `writeQ` came to.
enum Outcome {
    /// Applied now (or earlier: a redelivered request) as this write.
    Applied(SyncMessage, WriteReply),
    /// Refused; nothing changed.
    Refused(Error),
    Snapshot(Result<Option<Snapshot>>),
    /// Not a message of ours: dropped with a log line.
    Garbage,
}

impl MasterWorker {
    pub fn new(id: u64, store: Store, broker: Arc<dyn Broker>, epoch: u64) -> Self {
        MasterWorker {
            id,
            store,
            broker,
            epoch,
        }
    }
}

impl MasterWorker {
    /// Consumes `writeQ`; retried with backoff while the broker is away.
    fn subscribe(&mut self, ctx: &mut Context<Self>, wait: Duration) {
        let broker = self.broker.clone();
        let subscribe = async move {
            broker::declare_topology(broker.as_ref()).await?;
            broker.consume(WRITE_Q, PREFETCH).await
        };
        ctx.wait(subscribe.into_actor(self).map(move |res, act, ctx| match res {
            Ok(consumer) => {
                ctx.add_stream(consumer.ready_chunks(GROUP));
            }
            Err(e) => {
                tracing::warn!(worker = act.id, error = %e, "cannot consume writeQ; retrying");
                let next = next_retry(wait);
                ctx.run_later(wait, move |act, ctx| act.subscribe(ctx, next));
            }
        }));
    }
}

impl Actor for MasterWorker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        tracing::info!(worker = self.id, epoch = self.epoch, "master starting");
        let (store, epoch) = (self.store.clone(), self.epoch);
        ctx.wait(
            blocking(move || store.set_epoch(epoch))
                .into_actor(self)
                .map(|res, act, ctx| match res {
                    Ok(()) => act.subscribe(ctx, FIRST_RETRY),
                    Err(e) => {
                        tracing::error!(worker = act.id, error = %e, "cannot record the epoch");
                        ctx.stop();
                    }
                }),
        );
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        if let Err(e) = self.store.flush() {
            tracing::error!(worker = self.id, error = %e, "flush on stop failed");
        }
        tracing::info!(worker = self.id, "master stopped");
    }
}

impl StreamHandler<Vec<Delivery>> for MasterWorker {
    fn handle(&mut self, batch: Vec<Delivery>, ctx: &mut Context<Self>) {
        let (store, broker, epoch) = (self.store.clone(), self.broker.clone(), self.epoch);
        let requests = decode_all(&batch);
        let (size, started) = (batch.len(), std::time::Instant::now());
        // Applying waits (`wait`): one group at a time, in `writeQ` order.
        // Syncing and replying runs on a task of its own, not in the actor
        // (whose spawned futures stand still while it waits): while the
        // broker confirms one group's syncs, the next group is applied and
        // flushed. Each group is still answered only after its own syncs
        // are confirmed.
        let apply = blocking(move || apply_all(&store, epoch, requests));
        ctx.wait(apply.into_actor(self).map(move |applied, _act, _ctx| {
            let applied_in = started.elapsed();
            let finish = async move {
                match applied {
                    Ok(outcomes) => {
                        finish_group(broker.as_ref(), batch, outcomes).await;
                        let total = started.elapsed();
                        tracing::debug!(size, ?applied_in, ?total, "group committed");
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "group commit failed; requeueing the group");
                        for d in batch {
                            let _ = d.nack(true).await;
                        }
                    }
                }
            };
            actix::spawn(finish);
        }));
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        tracing::warn!(worker = self.id, "writeQ consumer ended; resubscribing");
        self.subscribe(ctx, FIRST_RETRY);
    }
}

/// The requests of a group; what does not decode is dropped later.
fn decode_all(batch: &[Delivery]) -> Vec<Option<MasterRequest>> {
    batch
        .iter()
        .map(|d| match wire::decode(&d.message.body) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(error = %e, "bad message on writeQ dropped");
                None
            }
        })
        .collect()
}

/// The blocking part: every request in order, the writes between two
/// snapshot requests as one sled batch, then one flush.
fn apply_all(
    store: &Store,
    epoch: u64,
    requests: Vec<Option<MasterRequest>>,
) -> Result<Vec<Outcome>> {
    let mut outcomes = Vec::with_capacity(requests.len());
    let mut group = store.group();
    // Replayed writes count too: an earlier group may have applied them
    // and then failed to flush.
    let mut answered = false;
    for req in requests {
        let outcome = match req {
            None => Outcome::Garbage,
            Some(MasterRequest::Write(w)) => {
                let o = apply_write(&mut group, epoch, w)?;
                answered |= matches!(o, Outcome::Applied(..));
                o
            }
            Some(MasterRequest::Snapshot { have_seq }) => {
                // The snapshot lands between the writes before it and after.
                group.commit()?;
                store.flush()?;
                let snapshot = if have_seq == store.applied_seq() {
                    Ok(None)
                } else {
                    store.snapshot().map(Some)
                };
                group = store.group();
                Outcome::Snapshot(snapshot)
            }
        };
        outcomes.push(outcome);
    }
    group.commit()?;
    if answered {
        store.flush()?;
    }
    Ok(outcomes)
}

/// One write: fenced, replayed, refused or applied. Only a storage failure
/// is an error of the group.
fn apply_write(group: &mut WriteGroup, epoch: u64, w: WriteRequest) -> Result<Outcome> {
    if w.epoch != epoch {
        return Ok(Outcome::Refused(Error::Fenced {
            got: w.epoch,
            current: epoch,
        }));
    }
    let sync = |reply: &WriteReply, w: WriteRequest| SyncMessage {
        seq: reply.seq,
        epoch,
        request_id: w.request_id,
        op: w.op,
    };
    if let Some(reply) = group.replay(w.request_id) {
        return Ok(Outcome::Applied(sync(&reply, w), reply));
    }
    if let Err(e) = validate_write(group.schema(), &w.op) {
        return Ok(Outcome::Refused(e));
    }
    let seq = group.next_seq();
    match group.apply(seq, w.request_id, &w.op) {
        Ok(result) => {
            let reply = WriteReply { seq, result };
            Ok(Outcome::Applied(sync(&reply, w), reply))
        }
        Err(e @ Error::Storage(_)) => Err(e),
        Err(e) => Ok(Outcome::Refused(e)),
    }
}

/// Publishes the syncs (all confirmed), then replies and acknowledges.
async fn finish_group(broker: &dyn Broker, batch: Vec<Delivery>, outcomes: Vec<Outcome>) {
    let (runs, run_of) = sync_runs(&outcomes);
    let publish = runs.iter().map(|run| async move {
        let msg = Message::new(wire::encode(run));
        broker.publish_fanout(SYNC_X, msg).await.is_ok()
    });
    let published: Vec<bool> = futures::future::join_all(publish).await;
    let confirmed = run_of.iter().map(|run| run.is_none_or(|r| published[r]));
    // Replies go out together: one at a time, each would wait for its own
    // publisher confirm.
    let settle = batch
        .into_iter()
        .zip(outcomes)
        .zip(confirmed)
        .map(|((d, outcome), synced)| settle(broker, d, outcome, synced));
    futures::future::join_all(settle).await;
}

/// The group's applied writes as runs of consecutive sequence numbers (one
/// sync message each), and which run each outcome went into.
fn sync_runs(outcomes: &[Outcome]) -> (Vec<SyncBatch>, Vec<Option<usize>>) {
    let mut applied: Vec<(usize, &SyncMessage)> = outcomes
        .iter()
        .enumerate()
        .filter_map(|(i, o)| match o {
            Outcome::Applied(sync, _) => Some((i, sync)),
            _ => None,
        })
        .collect();
    applied.sort_by_key(|(_, s)| s.seq);
    let mut runs: Vec<SyncBatch> = Vec::new();
    let mut run_of = vec![None; outcomes.len()];
    for (i, sync) in applied {
        let last = runs.last().and_then(|r| r.last()).map(|m| m.seq);
        if last == Some(sync.seq) {
            // The same write twice in one group (a retry answered from the
            // record): one sync message carries it once.
            run_of[i] = Some(runs.len() - 1);
            continue;
        }
        let follows = last.is_some_and(|l| l.checked_add(1) == Some(sync.seq));
        if !follows {
            runs.push(Vec::new());
        }
        if let Some(run) = runs.last_mut() {
            run.push(sync.clone());
        }
        run_of[i] = Some(runs.len() - 1);
    }
    (runs, run_of)
}

/// Replies to one request of a group and acknowledges it; or requeues it
/// (its sync was not confirmed: it is replayed, and synced again, later).
async fn settle(broker: &dyn Broker, d: Delivery, outcome: Outcome, synced: bool) {
    if !synced {
        let _ = d.nack(true).await;
        return;
    }
    let replies = match outcome {
        Outcome::Applied(_, r) => vec![Reply::Write(Ok(r))],
        Outcome::Refused(e) => vec![Reply::Write(Err(e))],
        Outcome::Snapshot(Ok(Some(snap))) => snap
            .into_parts()
            .into_iter()
            .map(Reply::SnapshotPart)
            .collect(),
        Outcome::Snapshot(s) => vec![Reply::Snapshot(s)],
        Outcome::Garbage => {
            let _ = d.nack(false).await;
            return;
        }
    };
    // A snapshot's parts go one after the other: each can be megabytes.
    for reply in &replies {
        if let Err(e) = reply_to(broker, &d, reply).await {
            tracing::warn!(error = %e, "reply failed; requeueing");
            let _ = d.nack(true).await;
            return;
        }
    }
    let _ = d.ack().await;
}

impl Handler<GetStatus> for MasterWorker {
    type Result = MessageResult<GetStatus>;

    fn handle(&mut self, _: GetStatus, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(WorkerStatus {
            id: self.id,
            master: true,
            applied_seq: self.store.applied_seq(),
            ready: true,
            reads_served: 0,
        })
    }
}

impl Handler<Shutdown> for MasterWorker {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        // Applying runs under `wait`, so no group is half applied when this
        // runs; groups being answered finish on their own tasks, and what
        // they have not acknowledged by the exit is delivered again.
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::WriteResult;

    fn applied(seq: u64) -> Outcome {
        let sync = SyncMessage {
            seq,
            epoch: 1,
            request_id: u128::from(seq),
            op: crate::model::WriteOp::Clear { table: None },
        };
        let reply = WriteReply {
            seq,
            result: WriteResult::Cleared,
        };
        Outcome::Applied(sync, reply)
    }

    fn seqs(runs: &[SyncBatch]) -> Vec<Vec<u64>> {
        runs.iter()
            .map(|r| r.iter().map(|m| m.seq).collect())
            .collect()
    }

    #[test]
    fn sync_runs_are_consecutive_and_carry_each_write_once() {
        let outcomes = vec![
            applied(5),
            applied(6),
            applied(5), // a retry of the first, answered from the record
            Outcome::Garbage,
            applied(2), // a retry of a write of an earlier group
            applied(7),
        ];
        let (runs, run_of) = sync_runs(&outcomes);
        assert_eq!(seqs(&runs), vec![vec![2], vec![5, 6, 7]]);
        assert_eq!(
            run_of,
            vec![Some(1), Some(1), Some(1), None, Some(0), Some(1)]
        );
    }
}
