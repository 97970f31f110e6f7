//! The broker seam: the queues and exchanges of the system and the few
//! primitives they need, behind one small trait with two implementations:
//! an in-process twin ([`inproc::InProcBroker`], the embedded default and
//! the actor tests' broker) and RabbitMQ.
//!
//! Semantics both keep (the RabbitMQ ones):
//! - a queue delivers each message to one consumer, round robin over the
//!   consumers that have room under their prefetch, those of the highest
//!   priority first;
//! - a delivery stays unacknowledged until `ack`; when its consumer goes
//!   away (cancelled, connection lost, process killed) it is delivered again
//!   with `redelivered` set, at the front of the queue;
//! - `nack(requeue)` puts it back or drops it; `ack_through` acknowledges a
//!   delivery and every earlier unsettled one of its consumer at once;
//! - a fanout exchange copies each message to every queue bound to it;
//! - `publish` returns once the broker has taken the message (a publisher
//!   confirm on RabbitMQ);
//! - a message published to a queue that does not exist is dropped, and the
//!   publish succeeds (RabbitMQ's default exchange routes it nowhere and
//!   confirms it); declaring the queue later does not bring it back. A
//!   publish to a fanout exchange that does not exist fails;
//! - a [`QueueKind::Capped`] (or [`QueueKind::Own`]) queue drops its oldest
//!   ready messages when it overflows; an [`QueueKind::Own`] queue is
//!   deleted by the broker once unused for a while;
//! - a [`QueueKind::Bounded`] queue refuses a publish over its cap (the
//!   publish fails) and drops a message that waited longer than its TTL
//!   (a requeued one keeps its first expiry);
//! - no call waits on the broker without bound: one that gets no answer in
//!   time fails with [`Error::Unavailable`](crate::error::Error), and a
//!   publish that fails so may still have reached the broker (callers
//!   publish it again, so consumers must bear duplicates, as they must
//!   bear redeliveries anyway).

pub mod amqp;
pub mod conformance;
pub mod faults;
pub mod inproc;

use std::pin::Pin;

use async_trait::async_trait;
use futures::Stream;

use crate::error::Result;

/// Reads from the orchestrator; every slave consumes it (work queue).
pub const READ_Q: &str = "readQ";
/// Writes (and snapshot requests) for the master.
pub const WRITE_Q: &str = "writeQ";
/// The fanout exchange the master publishes applied writes to.
pub const SYNC_X: &str = "syncQ";
/// The replies' queue, the original's name: one per orchestrator now,
/// `responseQ.<tag>` ([`reply_queue`]), since several serve at once.
pub const RESPONSE_Q: &str = "responseQ";
/// The fanout exchange a master announces itself on (`Reply::Leading`):
/// every orchestrator binds its own reply queue to it, so each hears of
/// the new master and sends its waiting writes again at once.
pub const LEADING_X: &str = "leading";
/// Ready messages an orchestrator's reply queue keeps (the oldest go
/// first): far above a live orchestrator's in-flight replies; reached
/// only while nobody consumes it, when the replies are of no use anyway.
pub const REPLY_QUEUE_CAP: u32 = 10_000;
/// How long an orchestrator's reply queue may stay without a consumer
/// before the broker deletes it (`x-expires`): a stopped or killed
/// orchestrator's queue would otherwise stay, bound to [`LEADING_X`], for
/// ever. One cut off from the broker longer finds it gone and declares it
/// again; what it waited for then fails over to its retry.
pub const REPLY_QUEUE_IDLE_MS: u32 = 60_000;
/// How an orchestrator's reply queue is declared: deleted by the broker
/// once unused, and durable until then, so that a broker restart does not
/// take it from under a consumer that reconnects at once. (A transient,
/// auto-deleted queue would go with its consumer's connection at once,
/// but RabbitMQ deprecates non-exclusive transient queues.) On a RabbitMQ
/// cluster it is a quorum queue, as every durable queue is there: it must
/// survive its node's death, since a durable classic queue on a dead node
/// can be neither consumed nor declared again until the node returns, and
/// its orchestrator would get no answer to anything meanwhile. (A
/// transient classic one would go with its node and could be declared
/// again elsewhere, for half a read's broker CPU: BENCHMARKS.md.)
pub const REPLY_QUEUE_KIND: QueueKind = QueueKind::Own {
    max: REPLY_QUEUE_CAP,
    idle_ms: REPLY_QUEUE_IDLE_MS,
};
/// Messages a slave's sync queue keeps while nobody consumes it (the
/// oldest go first; the slave then finds a gap and takes a snapshot).
/// On a RabbitMQ cluster a slave's sync queue is a quorum queue: what it
/// holds could be made up by a snapshot, but a durable classic queue on a
/// dead node could not be consumed nor declared again until the node
/// returned, and its slave would apply nothing meanwhile.
pub const SYNC_QUEUE_CAP: u32 = 10_000;

/// A message as published.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    pub body: Vec<u8>,
    /// Matches a reply to its request.
    pub correlation_id: Option<u64>,
    /// Where the reply goes.
    pub reply_to: Option<String>,
}

impl Message {
    pub fn new(body: Vec<u8>) -> Self {
        Message {
            body,
            ..Message::default()
        }
    }

    pub fn reply(body: Vec<u8>, correlation_id: Option<u64>) -> Self {
        Message {
            body,
            correlation_id,
            reply_to: None,
        }
    }
}

/// How many messages `writeQ` holds at most: a publish over it is refused
/// (`x-overflow: reject-publish`), an error the orchestrator retries within
/// its deadline like any failed publish. Far above what a master keeps
/// waiting in normal work; reached only when no master consumes.
pub const WRITE_Q_MAX: u32 = 50_000;
/// How long a message waits in `writeQ` at most (`x-message-ttl`): the
/// orchestrator's request deadline (`REQUEST_DEADLINE`, 15 s), after which
/// it has given up on the request; a slave asks for a snapshot again
/// sooner. So with no master, retries and snapshot requests do not pile
/// up, and a write request never lives long (see `store`'s request
/// records). A requeued message keeps its first expiry.
pub const WRITE_Q_TTL_MS: u32 = 15_000;
/// How long a slave's own sync queue may stay unused (no consumer) before
/// the broker deletes it (`x-expires`): a SIGKILLed slave's queue would
/// otherwise stay bound to `syncQ`, collecting every write, for ever. A
/// slave that comes back later declares it afresh (empty) and, as at
/// every start, takes a snapshot before it serves; a slave that lost its
/// connection that long finds the gap at the next write's seq, or at the
/// check it makes when it subscribes again.
pub const SYNC_QUEUE_IDLE_MS: u32 = 60_000;

/// How a queue is declared.
///
/// Over RabbitMQ, every durable kind (all but [`QueueKind::Transient`])
/// is of the broker's queue type: classic on one node, quorum (replicated)
/// on a cluster; see `amqp::QueueType`. Quorum queues keep a cap a
/// little less exactly: see `conformance::run_all_quorum`.
///
/// Declaring a queue that exists with another kind fails (RabbitMQ answers
/// `PRECONDITION_FAILED`), except for [`QueueKind::Capped`] and
/// [`QueueKind::Own`], which replace it, [`QueueKind::Bounded`], which
/// replaces it only if it is empty and unused (else keeps it as it is,
/// with a warning), and, over RabbitMQ, [`QueueKind::Durable`] over a
/// queue of the other queue type, which it replaces only if it is empty
/// and unused (else fails). A broker keeps queues of an earlier run,
/// declared with the arguments of their time, or of the other queue type
/// (an earlier run with classic queues, this one with quorum queues, or
/// the reverse): this is how they are brought to the current ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueKind {
    /// Survives broker restarts; messages are persistent. Declared over
    /// a queue of the other queue type (an earlier run's `readQ`, say):
    /// if that queue holds nothing and has no consumer, it is deleted and
    /// declared afresh; otherwise, or over other arguments, the
    /// declaration fails.
    Durable,
    /// Removed when its last consumer goes away.
    Transient,
    /// Durable, holding at most this many ready messages: when one more
    /// arrives, the oldest ready ones are dropped (RabbitMQ's `x-max-length`
    /// with the default `x-overflow: drop-head`). Deliveries not yet
    /// acknowledged do not count, but one requeued onto a full queue goes to
    /// its head and is dropped first. For a slave's own sync queue, bound to
    /// the sync exchange: a dead slave's queue must not grow without bound.
    ///
    /// Declaring a capped queue over an existing queue of another kind or
    /// cap deletes that queue, its content and its bindings, and declares it
    /// afresh: the caller (a slave about to take a snapshot, which makes
    /// what queued before redundant) accepts the loss, and binds after
    /// declaring.
    Capped(u32),
    /// [`QueueKind::Capped`] at `max`, and deleted by the broker once it
    /// has had no consumer for `idle_ms` (RabbitMQ's `x-expires`): a
    /// slave's own sync queue ([`SYNC_QUEUE_IDLE_MS`]). Declared over a
    /// queue of other arguments as a capped queue is.
    Own { max: u32, idle_ms: u32 },
    /// Durable, refusing a publish that would hold more than `max` ready
    /// messages (`x-max-length` with `x-overflow: reject-publish`), and
    /// dropping a message ready for longer than `ttl_ms`
    /// (`x-message-ttl`): `writeQ`.
    ///
    /// Declared over an existing queue of other arguments (one of an
    /// earlier version): if that queue holds nothing and has no consumer,
    /// it is deleted and declared afresh; otherwise it is kept as it is,
    /// without cap or TTL, and the declaration succeeds with a warning (a
    /// later declaration, at the next start, tries again). Messages
    /// published in between the delete and the declaration are dropped,
    /// which a publisher bears as a publish that failed.
    Bounded { max: u32, ttl_ms: u32 },
}

impl QueueKind {
    /// Replaces a queue of other arguments, whatever it holds.
    pub fn replaces(self) -> bool {
        matches!(self, QueueKind::Capped(_) | QueueKind::Own { .. })
    }
}

/// How `writeQ` is declared.
pub const WRITE_Q_KIND: QueueKind = QueueKind::Bounded {
    max: WRITE_Q_MAX,
    ttl_ms: WRITE_Q_TTL_MS,
};

/// Settles one delivery.
#[async_trait]
pub trait Acker: Send + Sync {
    async fn ack(&self) -> Result<()>;
    /// Acknowledges this delivery and every earlier unsettled delivery of
    /// the same consumer (AMQP's `multiple`).
    async fn ack_through(&self) -> Result<()>;
    async fn nack(&self, requeue: bool) -> Result<()>;
}

/// A message handed to a consumer; settle it with [`Delivery::ack`] or
/// [`Delivery::nack`].
pub struct Delivery {
    pub message: Message,
    pub redelivered: bool,
    acker: Box<dyn Acker>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("message", &self.message)
            .field("redelivered", &self.redelivered)
            .finish()
    }
}

impl Delivery {
    pub fn new(message: Message, redelivered: bool, acker: Box<dyn Acker>) -> Self {
        Delivery {
            message,
            redelivered,
            acker,
        }
    }

    pub async fn ack(self) -> Result<()> {
        self.acker.ack().await
    }

    /// Acknowledges this delivery and every delivery its consumer received
    /// before it that is not settled yet, in one step. Those earlier
    /// deliveries must then not be settled again (dropping them is fine).
    pub async fn ack_through(self) -> Result<()> {
        self.acker.ack_through().await
    }

    pub async fn nack(self, requeue: bool) -> Result<()> {
        self.acker.nack(requeue).await
    }
}

/// The deliveries of one consumer; dropping it cancels the consumer and
/// requeues what it had not acknowledged.
pub type Consumer = Pin<Box<dyn Stream<Item = Delivery> + Send>>;

/// A connection to a broker.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Declares a queue (idempotent for the same kind; see [`QueueKind`]
    /// for another).
    async fn declare_queue(&self, name: &str, kind: QueueKind) -> Result<()>;
    /// Declares a fanout exchange (idempotent).
    async fn declare_fanout(&self, exchange: &str) -> Result<()>;
    /// Binds a queue to a fanout exchange (idempotent).
    async fn bind(&self, queue: &str, exchange: &str) -> Result<()>;
    /// Deletes a queue and what it holds.
    async fn delete_queue(&self, name: &str) -> Result<()>;
    /// Publishes to a queue; returns once the broker has it (or has dropped
    /// it, when there is no such queue).
    async fn publish(&self, queue: &str, msg: Message) -> Result<()>;
    /// Like [`Broker::publish`], but the message need not survive a
    /// broker restart even on a durable queue (RabbitMQ then need not
    /// write it before confirming it): for what its sender asks again
    /// when unanswered, such as an ask for the head on `writeQ`.
    async fn publish_transient(&self, queue: &str, msg: Message) -> Result<()> {
        self.publish(queue, msg).await
    }
    /// Publishes to a fanout exchange; returns once the broker has it.
    async fn publish_fanout(&self, exchange: &str, msg: Message) -> Result<()>;
    /// Starts a consumer with at most `prefetch` unacknowledged deliveries.
    async fn consume(&self, queue: &str, prefetch: u16) -> Result<Consumer> {
        self.consume_ranked(queue, prefetch, 0).await
    }
    /// Starts a consumer of `priority`: a queue hands its messages to the
    /// consumers of the highest priority that have room, round robin among
    /// them, and to lower ones only while those are full (RabbitMQ's
    /// `x-priority`). A newly elected master consumes `writeQ` above a
    /// deposed one that still holds its consumer (paused, say), so writes
    /// go to the new one.
    async fn consume_ranked(&self, queue: &str, prefetch: u16, priority: i32) -> Result<Consumer>;
    /// How many messages a queue holds ready for its consumers (not those
    /// handed out and unacknowledged); none when there is no such queue.
    async fn depth(&self, queue: &str) -> Result<Option<u64>>;
}

/// Declares the fixed topology: `readQ`, `writeQ` (bounded: see
/// [`WRITE_Q_KIND`]), and the `syncQ` and `leading` exchanges (each
/// orchestrator declares its own `responseQ.<tag>`).
pub async fn declare_topology(broker: &dyn Broker) -> Result<()> {
    broker.declare_queue(READ_Q, QueueKind::Durable).await?;
    broker.declare_queue(WRITE_Q, WRITE_Q_KIND).await?;
    broker.declare_fanout(SYNC_X).await?;
    broker.declare_fanout(LEADING_X).await
}

/// Deletes a queue bound to an exchange for good: declares it (as `kind`)
/// first, then deletes it. A delete cut short by a node's death can leave
/// the queue gone and its binding behind, and RabbitMQ then refuses every
/// publish to the exchange (to `syncQ`: every write stalls); declared
/// again, the binding has its queue back, and the delete takes both. A
/// delete that fails after the declaration leaves a queue with no
/// consumer, which an own queue's expiry removes.
pub async fn declare_and_delete(broker: &dyn Broker, queue: &str, kind: QueueKind) -> Result<()> {
    broker.declare_queue(queue, kind).await?;
    broker.delete_queue(queue).await
}

/// The name of a slave's own sync queue.
pub fn sync_queue(worker_id: u64) -> String {
    format!("sync.{worker_id}")
}

/// How a slave's own sync queue is declared, keeping at most `cap`
/// messages: the same wherever it is declared (subscribing, or before a
/// delete), or the broker refuses the declaration for other arguments.
pub fn sync_queue_kind(cap: u32) -> QueueKind {
    QueueKind::Own {
        max: cap,
        idle_ms: SYNC_QUEUE_IDLE_MS,
    }
}

/// The name of an orchestrator's own reply queue, from a tag it draws at
/// random (so that two orchestrators, or two runs of one, never share
/// one): `responseQ.<tag>`, the original's `responseQ` made one per
/// orchestrator, since several serve at once and each must get the
/// replies to its own requests.
pub fn reply_queue(tag: u64) -> String {
    format!("{RESPONSE_Q}.{tag:016x}")
}
