//! The Orchestrator actor: RPC over the queues. Reads go to `readQ` carrying
//! the last acknowledged sequence number (strong reads), writes go to
//! `writeQ` carrying a request id and the epoch, both in batches (many
//! requests to a message, as the core decides); replies come back on the
//! orchestrator's own reply queue (`responseQ.<tag>`, named in each request's
//! `reply_to`), one for a batch (or for part of one), and each answer in
//! it is matched by its correlation id. [`OrchestratorHandle`]
//! retries what may be retried within a deadline. What each arrival means
//! is decided by [`OrchestratorCore`]; this actor turns arrivals into its
//! inputs and carries out its effects.
//!
//! Several orchestrators may serve one cluster at once: each consumes its
//! own reply queue (so none takes another's replies), declared by itself
//! and deleted by the broker once it has gone unused for a while
//! ([`broker::REPLY_QUEUE_KIND`]); it binds the queue to the `leading`
//! exchange, where a new master announces itself to all of them. A queue
//! gone while the orchestrator was cut off from the broker is declared and
//! bound again when it subscribes again; what waited fails over to its
//! retry as the consumer ends.
//!
//! A strong read carries how far the history is acknowledged. With
//! read-index on (the default; [`Orchestrator::with_read_index`]) each
//! one's answer waits for a head the master answered to an ask sent after
//! it began, and counts only if read at or past it, so that it sees what
//! every orchestrator acknowledged (see [`crate::core::orchestrator`],
//! "Checked reads"); off (one orchestrator alone), only a fresh
//! orchestrator asks the master (`MasterRequest::Head`), once, as soon as
//! it consumes its queue, and strong reads' answers wait for that answer.
//!
//! Every message is stamped with the cluster and epoch. A reply of another
//! cluster, or one that matches no pending request (late after its attempt
//! gave up), changes nothing. A write answered under an epoch older than
//! the one the orchestrator follows came from a deposed master: it is
//! retried, and the current master answers it (from its record, if it has
//! the write).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};

use super::messages::{DbRead, DbWrite, GetStats, OrchestratorStats, SetEpoch, Shutdown};
use super::{next_retry, FIRST_RETRY};
use crate::broker::{self, Broker, Delivery, Message, LEADING_X, READ_Q, WRITE_Q};
use crate::core::orchestrator::{Effect, OrchestratorCore, Outgoing};
use crate::error::{Error, Result};
use crate::model::wire::{
    self, BatchedRead, BatchedWrite, MasterRequest, ReadBatch, ReadRequest, Reply, Stamp,
    WriteRequest,
};
use crate::model::{ReadOp, ReadReply, WriteReply};

mod backup;
mod handle;
pub mod traffic;

pub use backup::BACKUP_DEADLINE;
pub use handle::{OrchestratorHandle, REQUEST_RETRY};

/// How long a request is retried before the client gets a 503, unless
/// configured otherwise ([`OrchestratorHandle::with_deadline`]).
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(15);
/// How often attempts past their deadline are failed.
const TICK: Duration = Duration::from_millis(100);

/// Who waits for an attempt's answer.
type Waiter = oneshot::Sender<Result<Reply>>;

/// Sends reads and writes over the broker and matches the replies; what
/// to do is decided by [`OrchestratorCore`], carried out here.
pub struct Orchestrator {
    broker: Arc<dyn Broker>,
    core: OrchestratorCore<Waiter, ReadOp, WriteRequest>,
    /// The core's clock starts here.
    started: Instant,
    /// Its own reply queue, named in every request's `reply_to`.
    reply_queue: String,
    /// The last reply of each batch, to acknowledge with those before it,
    /// in order (RabbitMQ closes a channel that acks a tag twice).
    acks: mpsc::UnboundedSender<Delivery>,
    acks_rx: Option<mpsc::UnboundedReceiver<Delivery>>,
}

/// A publish the broker refused: its attempt fails.
#[derive(Message)]
#[rtype(result = "()")]
struct Unsent {
    id: u64,
    why: String,
}

/// The name of the orchestrator's own reply queue.
#[derive(Message)]
#[rtype(result = "String")]
pub(super) struct GetReplyQueue;

impl Orchestrator {
    /// The orchestrator of `cluster`, following `epoch`, with read-index
    /// on (see [`Orchestrator::with_read_index`]).
    pub fn new(broker: Arc<dyn Broker>, cluster: u64, epoch: u64) -> Self {
        let (acks, acks_rx) = mpsc::unbounded_channel();
        // Ids not from 0: a late reply to an earlier run (published to a
        // reply queue this one reuses by chance) must not match a request
        // of this one.
        let seed = fastrand::u64(..u64::MAX / 2);
        Orchestrator {
            reply_queue: broker::reply_queue(fastrand::u64(..)),
            acks,
            acks_rx: Some(acks_rx),
            broker,
            core: OrchestratorCore::new(cluster, epoch, seed)
                .with_windows(
                    from_env("DBAAS_READ_WINDOW", crate::core::orchestrator::READ_WINDOW),
                    from_env(
                        "DBAAS_WRITE_WINDOW",
                        crate::core::orchestrator::WRITE_WINDOW,
                    ),
                )
                .with_fills(
                    from_env("DBAAS_READ_FILL", crate::core::orchestrator::READ_FILL),
                    from_env("DBAAS_WRITE_FILL", crate::core::orchestrator::WRITE_FILL),
                )
                .weighing_writes(wire::encoded_len::<WriteRequest>)
                .with_read_index(true),
            started: Instant::now(),
        }
    }

    /// The same orchestrator with read-index on or off. On, a strong read's
    /// answer waits for the master's head asked after it began (one ask
    /// serves every read that began meanwhile), and sees every write acknowledged
    /// before it by any orchestrator of the cluster: needed when several
    /// serve it. Off, it sees what this orchestrator acknowledged and what
    /// the master had when this one started: enough for an orchestrator
    /// alone, and a round trip to the master cheaper.
    pub fn with_read_index(mut self, on: bool) -> Self {
        self.core = self.core.with_read_index(on);
        self
    }

    /// Milliseconds since the actor was made: the core's time.
    fn now(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Publishes a request; a refused publish fails its attempt.
    fn send(
        &self,
        ctx: &Context<Self>,
        queue: &'static str,
        id: u64,
        body: Vec<u8>,
        transient: bool,
    ) -> impl Future<Output = ()> + 'static {
        let (broker, addr) = (self.broker.clone(), ctx.address());
        let msg = Message {
            body,
            correlation_id: Some(id),
            reply_to: Some(self.reply_queue.clone()),
        };
        async move {
            // An ask for the head is asked again when unanswered: the
            // broker need not write it down.
            let sent = if transient {
                broker.publish_transient(queue, msg).await
            } else {
                broker.publish(queue, msg).await
            };
            if let Err(e) = sent {
                addr.do_send(Unsent {
                    id,
                    why: format!("{queue}: {e}"),
                });
            }
        }
    }

    /// Carries out what the core decided.
    fn carry_out(&mut self, ctx: &Context<Self>) {
        let mut sends = Vec::new();
        for fx in self.core.effects() {
            match fx {
                Effect::Deliver { waiter, reply } => {
                    // Who gave up waiting dropped its receiver.
                    let _ = waiter.send(reply);
                }
                Effect::SendReads {
                    batch,
                    stamp,
                    reads,
                } => sends.push((READ_Q, batch, read_body(stamp, reads), false)),
                Effect::SendWrites {
                    batch,
                    stamp,
                    writes,
                } => sends.push((WRITE_Q, batch, write_body(stamp, writes), false)),
                Effect::AskHead { id, stamp } => {
                    let ask = wire::encode(stamp, &MasterRequest::Head);
                    sends.push((WRITE_Q, id, ask, true));
                }
            }
        }
        for (queue, id, body, transient) in sends {
            actix::spawn(self.send(ctx, queue, id, body, transient));
        }
    }

    fn on_reply(&mut self, d: &Delivery) {
        let (stamp, reply): (Stamp, Reply) = match wire::decode(&d.message.body) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "undecodable reply dropped");
                return;
            }
        };
        let id = d.message.correlation_id;
        if stamp.cluster != self.core.stamp().cluster {
            let cluster = stamp.cluster;
            tracing::warn!(cluster, "a reply of another cluster dropped");
        } else if id.is_none() && !matches!(reply, Reply::Leading) {
            tracing::warn!("reply without correlation id dropped");
        }
        let now = self.now();
        match reply {
            Reply::Reads(answers) => {
                for (id, r) in answers {
                    self.core.reply(stamp, Reply::Read(r), Some(id), now);
                }
            }
            Reply::Writes(answers) => {
                for (id, r) in answers {
                    self.core.reply(stamp, Reply::Write(r), Some(id), now);
                }
            }
            reply => self.core.reply(stamp, reply, id, now),
        }
    }

    /// Declares its reply queue (again: the broker may have deleted it
    /// while this orchestrator was cut off), binds it to the `leading`
    /// exchange and consumes it; retried with backoff while the broker is
    /// away.
    fn subscribe(&mut self, ctx: &mut Context<Self>, wait: Duration) {
        let broker = self.broker.clone();
        let queue = self.reply_queue.clone();
        let subscribe = async move {
            broker::declare_topology(broker.as_ref()).await?;
            broker
                .declare_queue(&queue, broker::REPLY_QUEUE_KIND)
                .await?;
            broker.bind(&queue, LEADING_X).await?;
            broker.consume(&queue, 1000).await
        };
        ctx.wait(
            subscribe
                .into_actor(self)
                .map(move |res, act, ctx| match res {
                    Ok(consumer) => {
                        ctx.add_stream(consumer.ready_chunks(256));
                        // How far the history is acknowledged, before
                        // the first strong read needs it.
                        let now = act.now();
                        act.core.start(now);
                        act.carry_out(ctx);
                    }
                    Err(e) => {
                        let queue = &act.reply_queue;
                        tracing::warn!(error = %e, queue, "cannot consume the reply queue; retrying");
                        let next = next_retry(wait);
                        ctx.run_later(wait, move |act, ctx| act.subscribe(ctx, next));
                    }
                }),
        );
    }
}

/// A window or fill from the environment (for measuring), or the default.
fn from_env(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A batch of reads as it goes on `readQ`.
fn read_body(stamp: Stamp, reads: Vec<Outgoing<ReadOp>>) -> Vec<u8> {
    let reads = reads
        .into_iter()
        .map(|out| BatchedRead {
            id: out.id,
            read: ReadRequest {
                min_seq: out.min_seq,
                op: out.op,
            },
        })
        .collect();
    wire::encode(stamp, &ReadBatch { reads })
}

/// A batch of writes as it goes on `writeQ`, each carrying the epoch it
/// was sent under.
fn write_body(stamp: Stamp, writes: Vec<(u64, WriteRequest)>) -> Vec<u8> {
    let writes = writes
        .into_iter()
        .map(|(id, write)| BatchedWrite {
            id,
            write: WriteRequest {
                epoch: stamp.epoch,
                ..write
            },
        })
        .collect();
    wire::encode(stamp, &MasterRequest::Writes(writes))
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
        ctx.run_interval(TICK, |act, ctx| {
            let now = act.now();
            act.core.tick(now);
            act.carry_out(ctx);
        });
    }
}

impl StreamHandler<Vec<Delivery>> for Orchestrator {
    fn handle(&mut self, mut batch: Vec<Delivery>, ctx: &mut Context<Self>) {
        for d in &batch {
            self.on_reply(d);
        }
        self.carry_out(ctx);
        // Every reply is handled as it arrives: one ack settles them all.
        if let Some(last) = batch.pop() {
            let _ = self.acks.send(last);
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        // The broker went away: what waits for a reply will not get one on
        // this consumer; fail it now so that it is retried at once.
        tracing::warn!(
            in_flight = self.core.stats().in_flight,
            queue = self.reply_queue,
            "reply queue consumer ended; resubscribing"
        );
        let now = self.now();
        self.core.consumer_ended(now);
        self.carry_out(ctx);
        self.subscribe(ctx, FIRST_RETRY);
    }
}

impl Handler<Unsent> for Orchestrator {
    type Result = ();

    fn handle(&mut self, msg: Unsent, ctx: &mut Context<Self>) {
        let now = self.now();
        self.core.unsent(msg.id, &msg.why, now);
        self.carry_out(ctx);
    }
}

impl Handler<DbRead> for Orchestrator {
    type Result = ResponseFuture<Result<ReadReply>>;

    fn handle(&mut self, msg: DbRead, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        let now = self.now();
        // It goes with the next batch the core sends (at once if it may).
        self.core.read(msg.consistency, tx, msg.op, now);
        self.carry_out(ctx);
        Box::pin(async move {
            match received(rx.await)? {
                Reply::Read(r) => r,
                other => Err(unexpected(&other)),
            }
        })
    }
}

impl Handler<DbWrite> for Orchestrator {
    type Result = ResponseFuture<Result<WriteReply>>;

    fn handle(&mut self, msg: DbWrite, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        let now = self.now();
        // The epoch is the one its batch goes under.
        let req = WriteRequest {
            request_id: msg.request_id,
            epoch: 0,
            op: msg.op,
            sent_ms: msg.sent_ms,
        };
        self.core.write(tx, req, now);
        self.carry_out(ctx);
        // Durability is the master's business: it answers after its flush
        // and confirmed syncs.
        Box::pin(async move {
            match received(rx.await)? {
                Reply::Write(r) => r,
                other => Err(unexpected(&other)),
            }
        })
    }
}

fn received(r: std::result::Result<Result<Reply>, oneshot::error::RecvError>) -> Result<Reply> {
    r.unwrap_or_else(|_| Err(Error::Unavailable("the orchestrator stopped".into())))
}

fn unexpected(reply: &Reply) -> Error {
    Error::Storage(format!("unexpected reply kind: {reply:?}"))
}

impl Handler<SetEpoch> for Orchestrator {
    type Result = ();

    /// A new master: the writes waiting on the old one go again at once;
    /// it answers what the old one had applied from its record.
    fn handle(&mut self, SetEpoch(epoch): SetEpoch, ctx: &mut Context<Self>) {
        let now = self.now();
        self.core.set_epoch(epoch, now);
        self.carry_out(ctx);
    }
}

impl Handler<GetReplyQueue> for Orchestrator {
    type Result = String;

    fn handle(&mut self, _: GetReplyQueue, _ctx: &mut Context<Self>) -> String {
        self.reply_queue.clone()
    }
}

impl Handler<GetStats> for Orchestrator {
    type Result = MessageResult<GetStats>;

    fn handle(&mut self, _: GetStats, _ctx: &mut Context<Self>) -> Self::Result {
        let c = self.core.stats();
        let (read_batches, write_batches) = self.core.batches_in_flight();
        MessageResult(OrchestratorStats {
            reads: c.reads,
            writes: c.writes,
            last_acked_seq: c.last_acked_seq,
            epoch: c.epoch,
            in_flight: c.in_flight,
            read_batches,
            write_batches,
            read_batches_sent: c.read_batches_sent,
            reads_sent: c.reads_sent,
            write_batches_sent: c.write_batches_sent,
            writes_sent: c.writes_sent,
            head_asks: c.head_asks,
            reads_beside_ask: c.reads_beside_ask,
            reads_again: c.reads_again,
        })
    }
}

impl Handler<Shutdown> for Orchestrator {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    /// `writeQ` keeps a message as long as the orchestrator may wait for
    /// its answer, no longer.
    #[test]
    fn write_queue_ttl_is_the_request_deadline() {
        let deadline = super::REQUEST_DEADLINE.as_millis();
        assert_eq!(u128::from(crate::broker::WRITE_Q_TTL_MS), deadline);
    }
}
