//! The Orchestrator actor: RPC over the queues. Reads go to `readQ` carrying
//! the last acknowledged sequence number (strong reads), writes go to
//! `writeQ` carrying a request id and the epoch; replies come back on
//! `responseQ` and are matched by correlation id. [`OrchestratorHandle`]
//! retries what may be retried within a deadline.
//!
//! Every message is stamped with the cluster and epoch. A reply of another
//! cluster, or one that matches no pending request (left in the durable
//! `responseQ` by an earlier run, or late after its attempt gave up),
//! changes nothing. A write answered under an epoch older than the one the
//! orchestrator follows came from a deposed master: it is retried, and the
//! current master answers it (from its record, if it has the write).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};

use super::messages::{DbRead, DbWrite, GetStats, OrchestratorStats, SetEpoch, Shutdown};
use super::scaler::ReadCounter;
use super::{next_retry, FIRST_RETRY};
use crate::broker::{self, Broker, Delivery, Message, READ_Q, RESPONSE_Q, WRITE_Q};
use crate::error::{Error, Result};
use crate::model::wire::{self, MasterRequest, ReadRequest, Reply, Stamp, WriteRequest};
use crate::model::{Consistency, ReadOp, ReadReply, WriteOp, WriteReply};

/// How long one attempt waits for its reply.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request is retried before the client gets a 503, unless
/// configured otherwise ([`OrchestratorHandle::with_deadline`]).
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(15);

/// Sends reads and writes over the broker and matches the replies.
pub struct Orchestrator {
    broker: Arc<dyn Broker>,
    cluster: u64,
    /// Who waits for each correlation id (and whether it is a write); an
    /// attempt that gives up drops its receiver.
    pending: HashMap<u64, (oneshot::Sender<Reply>, bool)>,
    next_id: u64,
    stats: OrchestratorStats,
    /// The newest epoch whose master has answered a write.
    answering: u64,
    /// The last reply of each batch, to acknowledge with those before it,
    /// in order (RabbitMQ closes a channel that acks a tag twice).
    acks: mpsc::UnboundedSender<Delivery>,
    acks_rx: Option<mpsc::UnboundedReceiver<Delivery>>,
}

impl Orchestrator {
    /// The orchestrator of `cluster`, following `epoch`.
    pub fn new(broker: Arc<dyn Broker>, cluster: u64, epoch: u64) -> Self {
        let (acks, acks_rx) = mpsc::unbounded_channel();
        Orchestrator {
            acks,
            acks_rx: Some(acks_rx),
            broker,
            cluster,
            pending: HashMap::new(),
            // Not from 0: a reply left in the durable `responseQ` by an
            // earlier run must not match a request of this one.
            next_id: fastrand::u64(..u64::MAX / 2),
            answering: 0,
            stats: OrchestratorStats {
                epoch,
                ..OrchestratorStats::default()
            },
        }
    }

    fn stamp(&self) -> Stamp {
        Stamp {
            cluster: self.cluster,
            epoch: self.stats.epoch,
        }
    }

    /// Registers a request; the future publishes it and awaits the reply.
    fn call(&mut self, queue: &'static str, body: Vec<u8>) -> impl Future<Output = Result<Reply>> {
        self.next_id += 1;
        let id = self.next_id;
        let (tx, rx) = oneshot::channel();
        self.pending.insert(id, (tx, queue == WRITE_Q));
        let broker = self.broker.clone();
        let msg = Message {
            body,
            correlation_id: Some(id),
            reply_to: Some(RESPONSE_Q.to_owned()),
        };
        async move {
            // The reply may come before the broker confirms the request (a
            // worker answers what it got): either ends the wait, and only a
            // refused publish is an error. Durability is the master's
            // business: it answers after its flush and confirmed syncs.
            let reply = tokio::time::timeout(ATTEMPT_TIMEOUT, rx);
            tokio::pin!(reply);
            tokio::select! {
                r = &mut reply => return answer(r, queue),
                published = broker.publish(queue, msg) => published?,
            }
            answer(reply.await, queue)
        }
    }

    fn on_reply(&mut self, d: &Delivery) {
        let (stamp, mut reply): (Stamp, Reply) = match wire::decode(&d.message.body) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "undecodable reply dropped");
                return;
            }
        };
        if stamp.cluster != self.cluster {
            tracing::warn!(
                cluster = stamp.cluster,
                "a reply of another cluster dropped"
            );
            return;
        }
        if reply == Reply::Leading {
            self.new_master(stamp.epoch);
            return;
        }
        let Some(id) = d.message.correlation_id else {
            tracing::warn!("reply without correlation id dropped");
            return;
        };
        // Only the answer to a request still waiting counts.
        let Some((tx, _)) = self.pending.remove(&id) else {
            return;
        };
        let current = self.stats.epoch;
        match &reply {
            Reply::Write(_) if stamp.epoch < current => {
                reply = Reply::Write(Err(Error::Fenced {
                    got: stamp.epoch,
                    current,
                }));
            }
            Reply::Write(Ok(w)) => {
                self.stats.last_acked_seq = self.stats.last_acked_seq.max(w.seq);
                self.stats.writes += 1;
                self.new_master(stamp.epoch);
            }
            // The master moved on to a newer epoch: carry it from now on.
            Reply::Write(Err(Error::Fenced { current, .. })) => {
                let current = *current;
                self.advance_epoch(current);
            }
            _ => {}
        }
        let _ = tx.send(reply);
    }

    /// Consumes `responseQ`; retried with backoff while the broker is away.
    fn subscribe(&mut self, ctx: &mut Context<Self>, wait: Duration) {
        let broker = self.broker.clone();
        let subscribe = async move {
            broker::declare_topology(broker.as_ref()).await?;
            broker.consume(RESPONSE_Q, 1000).await
        };
        ctx.wait(
            subscribe
                .into_actor(self)
                .map(move |res, _act, ctx| match res {
                    Ok(consumer) => {
                        ctx.add_stream(consumer.ready_chunks(256));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot consume responseQ; retrying");
                        let next = next_retry(wait);
                        ctx.run_later(wait, move |act, ctx| act.subscribe(ctx, next));
                    }
                }),
        );
    }

    /// Follows a newer epoch, however it was heard of (the watcher, or a
    /// reply of its master): the writes waiting on the old master (gone,
    /// or deposed and paused with them) are sent again at once, under the
    /// new epoch and their own request ids, rather than after their
    /// attempt times out.
    fn advance_epoch(&mut self, epoch: u64) {
        if epoch > self.stats.epoch {
            self.stats.epoch = epoch;
            self.resend_writes();
        }
    }

    /// The writes waiting now fail over to their retry, which sends them
    /// again at once (same request ids: answered once however often sent).
    fn resend_writes(&mut self) {
        self.pending.retain(|_, (_, write)| !*write);
    }

    /// A master of `epoch` consumes `writeQ` (it said so, or answered a
    /// write). The first time: writes sent before it did went to whoever
    /// consumed then (a deposed master, perhaps paused with them): they
    /// are sent again at once.
    fn new_master(&mut self, epoch: u64) {
        if epoch > self.answering {
            self.answering = epoch;
            self.stats.epoch = self.stats.epoch.max(epoch);
            self.resend_writes();
        }
    }

    fn expire(&mut self) {
        self.pending.retain(|_, (tx, _)| !tx.is_closed());
    }
}

impl Actor for Orchestrator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(mut acks) = self.acks_rx.take() {
            ctx.spawn(
                async move {
                    while let Some(d) = acks.recv().await {
                        let _ = d.ack_through().await;
                    }
                }
                .into_actor(self),
            );
        }
        self.subscribe(ctx, FIRST_RETRY);
        ctx.run_interval(Duration::from_secs(1), |act, _| act.expire());
    }
}

impl StreamHandler<Vec<Delivery>> for Orchestrator {
    fn handle(&mut self, mut batch: Vec<Delivery>, _ctx: &mut Context<Self>) {
        for d in &batch {
            self.on_reply(d);
        }
        // Every reply is handled as it arrives: one ack settles them all.
        if let Some(last) = batch.pop() {
            let _ = self.acks.send(last);
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        // The broker went away: what waits for a reply will not get one on
        // this consumer; fail it now so that it is retried at once.
        tracing::warn!(
            in_flight = self.pending.len(),
            "responseQ consumer ended; resubscribing"
        );
        self.pending.clear();
        self.subscribe(ctx, FIRST_RETRY);
    }
}

impl Handler<DbRead> for Orchestrator {
    type Result = ResponseFuture<Result<ReadReply>>;

    fn handle(&mut self, msg: DbRead, _ctx: &mut Context<Self>) -> Self::Result {
        self.stats.reads += 1;
        let min_seq = match msg.consistency {
            Consistency::Strong => self.stats.last_acked_seq,
            Consistency::Eventual => 0,
        };
        let body = wire::encode(
            self.stamp(),
            &ReadRequest {
                min_seq,
                op: msg.op,
            },
        );
        let reply = self.call(READ_Q, body);
        Box::pin(async move {
            match reply.await? {
                Reply::Read(r) => r,
                other => Err(unexpected(&other)),
            }
        })
    }
}

impl Handler<DbWrite> for Orchestrator {
    type Result = ResponseFuture<Result<WriteReply>>;

    fn handle(&mut self, msg: DbWrite, _ctx: &mut Context<Self>) -> Self::Result {
        let req = MasterRequest::Write(WriteRequest {
            request_id: msg.request_id,
            epoch: self.stats.epoch,
            op: msg.op,
        });
        let reply = self.call(WRITE_Q, wire::encode(self.stamp(), &req));
        Box::pin(async move {
            match reply.await? {
                Reply::Write(r) => r,
                other => Err(unexpected(&other)),
            }
        })
    }
}

type Waited = std::result::Result<
    std::result::Result<Reply, oneshot::error::RecvError>,
    tokio::time::error::Elapsed,
>;

/// The reply an attempt waited for, or why there is none.
fn answer(r: Waited, queue: &str) -> Result<Reply> {
    match r {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(_)) | Err(_) => Err(Error::Unavailable(format!(
            "no reply from {queue} within {ATTEMPT_TIMEOUT:?}"
        ))),
    }
}

fn unexpected(reply: &Reply) -> Error {
    Error::Storage(format!("unexpected reply kind: {reply:?}"))
}

impl Handler<SetEpoch> for Orchestrator {
    type Result = ();

    /// A new master (see [`Orchestrator::advance_epoch`]); it answers what
    /// the old one had applied from its record.
    fn handle(&mut self, SetEpoch(epoch): SetEpoch, _ctx: &mut Context<Self>) {
        self.advance_epoch(epoch);
    }
}

impl Handler<GetStats> for Orchestrator {
    type Result = MessageResult<GetStats>;

    fn handle(&mut self, _: GetStats, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(OrchestratorStats {
            in_flight: self.pending.len(),
            ..self.stats
        })
    }
}

impl Handler<Shutdown> for Orchestrator {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// What the HTTP layer holds: sends to the Orchestrator and retries what
/// may be retried (no worker answered, a failover under way) until the
/// request's deadline.
#[derive(Clone)]
pub struct OrchestratorHandle {
    addr: Addr<Orchestrator>,
    deadline: Duration,
    reads: ReadCounter,
}

impl OrchestratorHandle {
    pub fn new(addr: Addr<Orchestrator>) -> Self {
        OrchestratorHandle {
            addr,
            deadline: REQUEST_DEADLINE,
            reads: ReadCounter::default(),
        }
    }

    /// Retries each request until `deadline` (a failover under way, no
    /// worker answering) before it fails with 503.
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    pub fn addr(&self) -> &Addr<Orchestrator> {
        &self.addr
    }

    /// The count of reads through this handle and its clones (each
    /// request once, however often it is retried), for the Scaler.
    pub fn reads(&self) -> ReadCounter {
        self.reads.clone()
    }

    pub async fn read(&self, op: ReadOp, consistency: Consistency) -> Result<ReadReply> {
        self.reads.add();
        retry(self.deadline, || {
            self.addr.send(DbRead {
                op: op.clone(),
                consistency,
            })
        })
        .await
    }

    pub async fn write(&self, op: WriteOp) -> Result<WriteReply> {
        let request_id = fastrand::u128(..);
        retry(self.deadline, || {
            self.addr.send(DbWrite {
                request_id,
                op: op.clone(),
            })
        })
        .await
    }

    pub async fn stats(&self) -> Result<OrchestratorStats> {
        self.addr.send(GetStats).await.map_err(mailbox)
    }
}

fn mailbox(e: MailboxError) -> Error {
    Error::Unavailable(format!("orchestrator actor: {e}"))
}

async fn retry<T, F, Fut>(within: Duration, mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<Result<T>, MailboxError>>,
{
    let deadline = Instant::now() + within;
    let mut backoff = Duration::from_millis(5);
    loop {
        let result = attempt().await.map_err(mailbox).and_then(|r| r);
        match result {
            Err(e) if e.is_retryable() && Instant::now() + backoff < deadline => {
                tracing::debug!(error = %e, "retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
            other => return other,
        }
    }
}
