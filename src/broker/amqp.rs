//! RabbitMQ through lapin: the broker seam over a real AMQP 0-9-1 broker.
//!
//! One connection per process, a small pool of publishing channels in
//! confirm mode (so `publish` returns once the broker has the message, and
//! for persistent messages once it has written them), and one channel per
//! consumer (prefetch is per channel). Messages to `writeQ` and to fanout
//! exchanges (`syncQ`) are persistent; reads and replies are not: a read
//! lost with a broker restart is retried by the orchestrator.
//!
//! When the connection breaks, every call fails with
//! [`Error::Unavailable`] and the next call reconnects; consumers' streams
//! end, and their actors subscribe again. A connection to a node that
//! hangs does not break by itself: heartbeats ([`HEARTBEAT`]) break it,
//! and a connection put in doubt (below) ends its consumers at once. A
//! publishing channel the broker closes (it does over a publish to a
//! missing exchange) is replaced alone.
//!
//! Given several nodes of a cluster ([`AmqpTarget`]), a client connects to
//! one; when it loses that node, the next call connects to the next node
//! in the list, and so on round the list, waiting (with backoff) only once
//! every node has failed in a row. With quorum queues, a publish the
//! broker nacks (a quorum queue whose leader was lost answers so, and the
//! channel that saw it goes on nacking) puts its connection in doubt: the
//! next call opens a new one, on the next node.
//!
//! Durable queues are of the target's [`QueueType`]: quorum queues on a
//! cluster survive the loss of a minority of its nodes; transient ones
//! (`QueueKind::Transient`: a reply queue for one exchange of messages)
//! are classic, on the node their client is connected to, since quorum
//! queues cannot be transient, and one that goes with its node goes with
//! its client's connection too, which declares a new one.
//!
//! No call waits on the broker without bound. A publisher confirm is waited
//! for [`CONFIRM_TIMEOUT`]; a connection attempt to a node of a cluster
//! [`FIRST_CONNECT_TIMEOUT`] in the first round of its list; everything
//! else (connecting otherwise, opening a channel,
//! declaring, binding, deleting, sending a publish, consuming, setting the
//! prefetch, settling a delivery) [`OP_TIMEOUT`]; then the call fails with
//! [`Error::Unavailable`]. A publish that fails so may still reach the
//! broker: its caller takes it as not confirmed and publishes it again,
//! which is safe (consumers bear duplicates as they bear redeliveries). A
//! timeout puts its connection in doubt, and the next call opens a new one
//! and closes the old, as after a broken connection; unless the broker has
//! said it blocks the connection (a memory or disk alarm): it will unblock
//! it, and a new connection would be blocked at its first publish too.
//! While it is blocked, publishes fail at once (lapin sends nothing then).
//!
//! lapin's tasks (the connection's internal calls, heartbeats, closing the
//! channels of dropped consumers) run on a runtime of this module, one per
//! process, rather than on the runtime of whichever task connected: an
//! actix arbiter, which stops with its actors. So the connection does not
//! die with a killed in-process worker, and a consumer dropped on a runtime
//! that is stopping still has its channel closed, and its unacknowledged
//! deliveries requeued, at once.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ExchangeKind};

use super::{Acker, Broker, Consumer, Delivery, Message, QueueKind, WRITE_Q};
use crate::core::backoff::{Backoff, RECONNECT};
use crate::error::{Error, Result};

mod connection;
pub mod target;

use connection::{connect, Live};
pub use target::{AmqpTarget, QueueType};

/// Publishing channels per connection.
const PUBLISH_CHANNELS: usize = 4;
/// The waits between two connection attempts.
const BACKOFF: Backoff = RECONNECT;
/// How long a call waits for the broker, for anything but a publisher
/// confirm: ample for a broker under load, and short enough that the
/// caller's retry comes well within its own deadlines.
pub const OP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection attempt waits, in the first round of a cluster's
/// list after a success: a node that hangs (paused, its host frozen)
/// accepts the TCP connection and never answers the handshake, which a
/// node that works answers in milliseconds. So a fresh process (a worker
/// just started, perhaps elected and given two seconds to lead) whose
/// first node hangs is on the next within a second, not ten. After a
/// whole round failed, attempts wait [`OP_TIMEOUT`] (a broker so loaded
/// that no handshake is answered within a second is still reached).
pub const FIRST_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a publish waits for its confirm. A persistent message's confirm
/// waits for a disk write, and RabbitMQ withholds confirms without bound
/// while a memory or disk alarm blocks publishers. Shorter than
/// [`OP_TIMEOUT`]: a client's write waits on it, and a publish that fails
/// is simply made again.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);
/// The heartbeat interval asked of the broker (a URL's `?heartbeat=N`
/// overrides it). A connection that hears nothing for two intervals is
/// dropped by lapin: that is how a consumer learns that its node hangs
/// (paused, or its host frozen), where nothing else would tell it; the
/// broker's default (60 s) would leave it waiting two minutes.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// The reply code of a normal close.
const REPLY_SUCCESS: u16 = 200;

fn unavailable(e: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!("broker: {e}"))
}

fn timed_out(what: &str, limit: Duration) -> Error {
    Error::Unavailable(format!(
        "broker: no answer to {what} within {}s",
        limit.as_secs()
    ))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether the broker refused a declaration because the queue exists with
/// other arguments, or a conditional delete because the queue is in use or
/// not empty (`PRECONDITION_FAILED`, which also closes the channel).
fn inequivalent(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(amqp) if amqp.get_id() == 406)
}

/// Whether the broker refused a declaration because the queue there is of
/// the other queue type (an earlier run's): RabbitMQ names the argument
/// it found inequivalent, `x-queue-type`, first of all.
fn other_type(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(amqp)
        if amqp.get_id() == 406 && amqp.get_message().as_str().contains("'x-queue-type'"))
}

/// What a declaration came to.
#[derive(PartialEq)]
enum Declared {
    Done,
    /// The queue exists with other arguments; of the other queue type?
    Refused {
        other_type: bool,
    },
}

/// The broker's answer to a passive declare of a queue that is not there.
fn not_found(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(amqp) if amqp.get_id() == 404)
}

/// A queue's declaration: its flags and arguments. Every durable queue is
/// of `queue_type` (quorum queues take every argument used here in
/// RabbitMQ 3.10 and later: `x-max-length` with either overflow,
/// `x-expires`, `x-message-ttl`). A classic queue is declared without
/// `x-queue-type`, as before there was a choice, so that the queues a
/// broker keeps from then are declared again as they are.
fn queue_arguments(kind: QueueKind, queue_type: QueueType) -> (QueueDeclareOptions, FieldTable) {
    let (opts, mut args) = kind_arguments(kind);
    if opts.durable && queue_type == QueueType::Quorum {
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString(queue_type.as_str().into()),
        );
    }
    (opts, args)
}

fn kind_arguments(kind: QueueKind) -> (QueueDeclareOptions, FieldTable) {
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    match kind {
        QueueKind::Durable => (durable, FieldTable::default()),
        QueueKind::Transient => (
            QueueDeclareOptions {
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        ),
        QueueKind::Capped(max) => (durable, capped(max, "drop-head")),
        QueueKind::Own { max, idle_ms } => {
            let mut args = capped(max, "drop-head");
            args.insert("x-expires".into(), AMQPValue::LongLongInt(idle_ms.into()));
            (durable, args)
        }
        QueueKind::Bounded { max, ttl_ms } => {
            let mut args = capped(max, "reject-publish");
            args.insert(
                "x-message-ttl".into(),
                AMQPValue::LongLongInt(ttl_ms.into()),
            );
            (durable, args)
        }
    }
}

/// The arguments of a queue of at most `max` ready messages.
fn capped(max: u32, overflow: &str) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongLongInt(max.into()));
    args.insert("x-overflow".into(), AMQPValue::LongString(overflow.into()));
    args
}

fn properties(msg: &Message, persistent: bool) -> BasicProperties {
    let mut props = BasicProperties::default().with_delivery_mode(if persistent { 2 } else { 1 });
    if let Some(id) = msg.correlation_id {
        props = props.with_correlation_id(id.to_string().into());
    }
    if let Some(to) = &msg.reply_to {
        props = props.with_reply_to(to.as_str().into());
    }
    props
}

/// A RabbitMQ connection that reconnects by itself, to the next node of
/// its target when it loses one.
pub struct AmqpBroker {
    target: AmqpTarget,
    live: Mutex<Option<Arc<Live>>>,
    connecting: tokio::sync::Mutex<Attempts>,
}

/// When the next connection attempt may be made, the wait after it, and
/// which node it goes to.
struct Attempts {
    next_try: Instant,
    wait: Duration,
    /// The index of the URL to try next.
    node: usize,
    /// Attempts failed in a row: one round of the list fails before the
    /// backoff waits.
    failed: usize,
}

impl AmqpBroker {
    /// A broker at `target` (`URL[,URL...]`, see [`AmqpTarget`]); connects
    /// on first use. Fails only on a malformed list.
    pub fn new(target: &str) -> Result<Self> {
        Ok(Self::at(target.parse()?))
    }

    /// A broker at `target`; connects on first use.
    pub fn at(target: AmqpTarget) -> Self {
        AmqpBroker {
            target,
            live: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(Attempts {
                next_try: Instant::now(),
                wait: BACKOFF.first_wait(),
                node: 0,
                failed: 0,
            }),
        }
    }

    /// Connects now, to fail early on a wrong address (when no node of
    /// the list answers).
    pub async fn connect(target: &str) -> Result<Self> {
        let b = Self::new(target)?;
        let nodes = b.target.urls.len();
        let mut last = None;
        for _ in 0..nodes {
            match b.live().await {
                Ok(_) => return Ok(b),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| unavailable("no node")))
    }

    /// The queue type of the durable queues declared here.
    pub fn queue_type(&self) -> QueueType {
        self.target.queue_type
    }

    /// The index of the node of the connection up now, if any.
    pub fn node(&self) -> Option<usize> {
        self.current().map(|l| l.node)
    }

    fn current(&self) -> Option<Arc<Live>> {
        lock(&self.live).as_ref().filter(|l| l.usable()).cloned()
    }

    async fn live(&self) -> Result<Arc<Live>> {
        if let Some(l) = self.current() {
            return Ok(l);
        }
        // Another task may be connecting; its attempt is bounded, but a
        // queue of them behind it would not be.
        let mut backoff = tokio::time::timeout(OP_TIMEOUT, self.connecting.lock())
            .await
            .map_err(|_| timed_out("connecting (another task is)", OP_TIMEOUT))?;
        if let Some(l) = self.current() {
            return Ok(l); // another task reconnected meanwhile
        }
        if let Some(old) = lock(&self.live).as_ref() {
            tracing::debug!(
                connected = old.conn.status().connected(),
                in_doubt = old.in_doubt.load(std::sync::atomic::Ordering::Relaxed),
                closing = old.conn.status().closing(),
                closed = old.conn.status().closed(),
                errored = old.conn.status().errored(),
                "replacing the connection"
            );
        }
        let nodes = self.target.urls.len();
        // The node of a connection lost is tried last, once: it has just
        // failed (killed, cut off, or its queues' leaders lost).
        let lost = lock(&self.live)
            .as_ref()
            .filter(|l| !l.moved_on.swap(true, std::sync::atomic::Ordering::Relaxed))
            .map(|l| l.node);
        if let Some(lost) = lost {
            if backoff.node == lost {
                backoff.node = (lost + 1) % nodes;
            }
        }
        tokio::time::sleep_until(backoff.next_try.into()).await;
        let node = backoff.node;
        let url = &self.target.urls[node];
        let limit = if nodes > 1 && backoff.failed < nodes {
            FIRST_CONNECT_TIMEOUT
        } else {
            OP_TIMEOUT
        };
        match connect(url, limit).await {
            Ok(conn) => {
                backoff.wait = BACKOFF.first_wait();
                backoff.failed = 0;
                let l = Arc::new(Live::new(conn, node));
                if let Some(old) = lock(&self.live).replace(l.clone()) {
                    old.retire();
                }
                tracing::info!(url = %redact(url), "connected to the broker");
                Ok(l)
            }
            Err(e) => {
                if nodes > 1 {
                    tracing::warn!(url = %redact(url), error = %e, "could not connect to this node");
                } else {
                    tracing::debug!(url = %redact(url), error = %e, "could not connect to the broker");
                }
                backoff.node = (node + 1) % nodes;
                backoff.failed += 1;
                // Every node in turn at once; then wait before the next
                // round.
                if backoff.failed % nodes == 0 {
                    backoff.next_try = Instant::now() + backoff.wait;
                    backoff.wait = BACKOFF.next_wait(backoff.wait);
                }
                Err(e)
            }
        }
    }

    /// Runs `f` on a fresh channel (a refused declaration closes its
    /// channel), bounded; the channel closes when dropped.
    async fn with_channel<T, F, Fut>(&self, what: &str, f: F) -> Result<T>
    where
        F: FnOnce(Channel) -> Fut,
        Fut: Future<Output = lapin::Result<T>>,
    {
        let live = self.live().await?;
        let ch = live.open_channel().await?;
        live.bounded(what, OP_TIMEOUT, f(ch)).await
    }

    /// Declares a queue; refused when it exists with other arguments.
    async fn declare(&self, name: &str, kind: QueueKind) -> Result<Declared> {
        let (opts, args) = queue_arguments(kind, self.target.queue_type);
        self.with_channel("queue.declare", |ch| async move {
            match ch.queue_declare(name.into(), opts, args).await {
                Ok(_) => Ok(Declared::Done),
                Err(e) if inequivalent(&e) => Ok(Declared::Refused {
                    other_type: other_type(&e),
                }),
                Err(e) => Err(e),
            }
        })
        .await
    }

    /// Deletes a queue only if it holds no message and has no consumer;
    /// false if it does. A classic queue is deleted so in one step (the
    /// broker checks both, `if-unused` and `if-empty`); a quorum queue
    /// refuses that (RabbitMQ answers `NOT_IMPLEMENTED`, closing the
    /// connection), so its counts are read first (a passive declaration),
    /// then it is deleted, and a message published between the look and
    /// the delete goes with the queue, as one published between the delete
    /// and the declaration after it does (see `QueueKind::Bounded`).
    /// `classic` says whether the queue there is a classic one: of this
    /// client's type unless its declaration was refused for the type (an
    /// earlier run's).
    async fn delete_if_idle(&self, name: &str, classic: bool) -> Result<bool> {
        if classic {
            let opts = QueueDeleteOptions {
                if_unused: true,
                if_empty: true,
                ..QueueDeleteOptions::default()
            };
            return self
                .with_channel("queue.delete", |ch| async move {
                    match ch.queue_delete(name.into(), opts).await {
                        Ok(_) => Ok(true),
                        Err(e) if inequivalent(&e) => Ok(false),
                        Err(e) => Err(e),
                    }
                })
                .await;
        }
        let opts = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let idle = self
            .with_channel("queue.declare passive", |ch| async move {
                match ch
                    .queue_declare(name.into(), opts, FieldTable::default())
                    .await
                {
                    Ok(q) => Ok(q.message_count() == 0 && q.consumer_count() == 0),
                    // Gone meanwhile: nothing to delete.
                    Err(e) if not_found(&e) => Ok(true),
                    Err(e) => Err(e),
                }
            })
            .await?;
        if idle {
            self.delete_queue(name).await?;
        }
        Ok(idle)
    }

    async fn send(&self, exchange: &str, key: &str, msg: Message, persistent: bool) -> Result<()> {
        let live = self.live().await?;
        if live.conn.status().blocked() {
            return Err(Error::Unavailable(
                "broker: it blocks publishers (a resource alarm)".into(),
            ));
        }
        let ch = live.publisher().await?;
        let props = properties(&msg, persistent);
        let opts = BasicPublishOptions::default();
        let sending = ch.basic_publish(exchange.into(), key.into(), opts, &msg.body, props);
        let confirm = live.bounded("a publish", OP_TIMEOUT, sending).await?;
        let confirmation = live
            .bounded("a publisher confirm", CONFIRM_TIMEOUT, confirm)
            .await?;
        if confirmation.is_nack() {
            // After the loss of a quorum queue's leader, the channel that
            // saw it may go on nacking: a new connection (see the module
            // docs). A quorum queue full (`reject-publish`) nacks too, and
            // costs a new connection as well: it happens only while nobody
            // consumes `writeQ`. Classic queues nack only when full, and
            // keep their connection.
            if self.target.queue_type == QueueType::Quorum {
                live.doubt();
                tracing::info!(
                    exchange,
                    key,
                    "a publish was refused; the connection is replaced"
                );
            }
            return Err(Error::Unavailable("broker refused the message".into()));
        }
        Ok(())
    }
}

/// The URL without its password, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***{}", &url[..s], &url[at..]),
        _ => url.to_owned(),
    }
}

struct LapinAcker {
    acker: lapin::Acker,
    /// The connection the delivery came on: a settlement that times out
    /// puts it in doubt.
    live: Arc<Live>,
}

impl LapinAcker {
    async fn settle(
        &self,
        what: &str,
        op: impl Future<Output = lapin::Result<bool>>,
    ) -> Result<()> {
        self.live.bounded(what, OP_TIMEOUT, op).await.map(|_| ())
    }
}

#[async_trait]
impl Acker for LapinAcker {
    async fn ack(&self) -> Result<()> {
        let opts = BasicAckOptions::default();
        self.settle("an ack", self.acker.ack(opts)).await
    }

    async fn ack_through(&self) -> Result<()> {
        let opts = BasicAckOptions { multiple: true };
        self.settle("an ack", self.acker.ack(opts)).await
    }

    async fn nack(&self, requeue: bool) -> Result<()> {
        let opts = BasicNackOptions {
            requeue,
            multiple: false,
        };
        self.settle("a nack", self.acker.nack(opts)).await
    }
}

fn delivery(d: lapin::message::Delivery, live: &Arc<Live>) -> Delivery {
    let props = &d.properties;
    let message = Message {
        correlation_id: props
            .correlation_id()
            .as_ref()
            .and_then(|c| c.as_str().parse().ok()),
        reply_to: props.reply_to().as_ref().map(|r| r.as_str().to_owned()),
        body: d.data,
    };
    let acker = LapinAcker {
        acker: d.acker,
        live: live.clone(),
    };
    Delivery::new(message, d.redelivered, Box::new(acker))
}

/// A consumer and its channel, together the last handles of that channel:
/// dropping them makes lapin cancel the consumer and close the channel, so
/// that the broker requeues what the consumer held. lapin does that through
/// the connection's task on the I/O runtime, whichever runtime drops them
/// (one that is stopping would not run a close spawned on it, and the task
/// would hold the channel open).
struct Subscription {
    _channel: Channel,
    inner: lapin::Consumer,
    live: Arc<Live>,
    /// Resolves when the connection is put in doubt: the stream ends then.
    doubted: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
}

#[async_trait]
impl Broker for AmqpBroker {
    async fn declare_queue(&self, name: &str, kind: QueueKind) -> Result<()> {
        let Declared::Refused { other_type } = self.declare(name, kind).await? else {
            return Ok(());
        };
        // The queue there is a classic one if this client declares classic
        // queues and the broker refused it for other arguments than the type.
        let classic = (self.target.queue_type == QueueType::Classic) != other_type;
        if matches!(kind, QueueKind::Bounded { .. }) {
            // See `QueueKind::Bounded`: only an empty, unused queue goes.
            if !self.delete_if_idle(name, classic).await? {
                tracing::warn!(
                    queue = name,
                    ?kind,
                    "the queue exists with other arguments and is in use or holds \
                     messages: kept as it is, without cap or expiry, until a later \
                     declaration finds it empty and unused"
                );
                return Ok(());
            }
            tracing::info!(
                queue = name,
                ?kind,
                "declaring an empty queue again with its cap"
            );
        } else if kind.replaces() {
            // See `QueueKind::Capped`: its caller accepts losing the content.
            tracing::info!(queue = name, ?kind, "declaring a queue again with its cap");
            self.delete_queue(name).await?;
        } else if kind == QueueKind::Durable
            && other_type
            && self.delete_if_idle(name, classic).await?
        {
            // See `QueueKind::Durable`: an earlier run's, of the other type.
            tracing::info!(
                queue = name,
                ?kind,
                "declaring an empty, unused queue of the other type again"
            );
        } else {
            return Err(Error::Unavailable(format!(
                "broker: queue {name:?} exists with other arguments than {kind:?}"
            )));
        }
        if self.declare(name, kind).await? == Declared::Done {
            Ok(())
        } else {
            Err(Error::Unavailable(format!(
                "broker: queue {name:?} was declared otherwise again meanwhile"
            )))
        }
    }

    async fn declare_fanout(&self, exchange: &str) -> Result<()> {
        let opts = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        self.with_channel("exchange.declare", |ch| async move {
            ch.exchange_declare(
                exchange.into(),
                ExchangeKind::Fanout,
                opts,
                FieldTable::default(),
            )
            .await
        })
        .await
    }

    async fn bind(&self, queue: &str, exchange: &str) -> Result<()> {
        self.with_channel("queue.bind", |ch| async move {
            ch.queue_bind(
                queue.into(),
                exchange.into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
        })
        .await
    }

    async fn delete_queue(&self, name: &str) -> Result<()> {
        self.with_channel("queue.delete", |ch| async move {
            ch.queue_delete(name.into(), QueueDeleteOptions::default())
                .await
                .map(|messages| tracing::debug!(queue = name, messages, "queue deleted"))
        })
        .await
    }

    async fn depth(&self, queue: &str) -> Result<Option<u64>> {
        // A passive declare answers the count, or closes its channel when
        // there is no such queue: a channel of its own, then.
        let opts = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        self.with_channel("queue.declare passive", |ch| async move {
            match ch
                .queue_declare(queue.into(), opts, FieldTable::default())
                .await
            {
                Ok(q) => Ok(Some(u64::from(q.message_count()))),
                Err(e) if not_found(&e) => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await
    }

    async fn publish(&self, queue: &str, msg: Message) -> Result<()> {
        self.send("", queue, msg, queue == WRITE_Q).await
    }

    async fn publish_transient(&self, queue: &str, msg: Message) -> Result<()> {
        self.send("", queue, msg, false).await
    }

    async fn publish_fanout(&self, exchange: &str, msg: Message) -> Result<()> {
        self.send(exchange, "", msg, true).await
    }

    async fn consume_ranked(&self, queue: &str, prefetch: u16, priority: i32) -> Result<Consumer> {
        let live = self.live().await?;
        let channel = live.open_channel().await?;
        let qos = channel.basic_qos(prefetch.max(1), BasicQosOptions::default());
        live.bounded("basic.qos", OP_TIMEOUT, qos).await?;
        let mut args = FieldTable::default();
        if priority != 0 {
            args.insert("x-priority".into(), AMQPValue::LongInt(priority));
        }
        let consuming = channel.basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            args,
        );
        let inner = live.bounded("basic.consume", OP_TIMEOUT, consuming).await?;
        let sub = Subscription {
            _channel: channel,
            inner,
            doubted: Box::pin(live.doubted()),
            live,
        };
        Ok(Box::pin(futures::stream::unfold(
            sub,
            |mut sub| async move {
                let next = tokio::select! {
                    biased;
                    () = &mut sub.doubted => {
                        tracing::info!("consumer ended: its connection is in doubt");
                        return None;
                    }
                    next = sub.inner.next() => next,
                };
                match next? {
                    Ok(d) => Some((delivery(d, &sub.live), sub)),
                    Err(e) => {
                        tracing::warn!(error = %e, "consumer ended");
                        None
                    }
                }
            },
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::{queue_arguments, redact, AMQPValue, QueueKind, QueueType};

    #[test]
    fn durable_queues_are_of_the_queue_type_transient_ones_classic() {
        let queue_type = |kind, t| {
            let (_, args) = queue_arguments(kind, t);
            args.inner().get("x-queue-type").cloned()
        };
        let quorum = Some(AMQPValue::LongString("quorum".into()));
        let own = QueueKind::Own {
            max: 10,
            idle_ms: 100,
        };
        for kind in [QueueKind::Durable, QueueKind::Capped(3), own] {
            assert_eq!(queue_type(kind, QueueType::Quorum), quorum);
            assert_eq!(queue_type(kind, QueueType::Classic), None);
        }
        assert_eq!(queue_type(QueueKind::Transient, QueueType::Quorum), None);
    }

    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(
            redact("amqp://u:secret@h:5672/%2f"),
            "amqp://***@h:5672/%2f"
        );
        assert_eq!(redact("amqp://h:5672"), "amqp://h:5672");
    }
}
