//! The in-process twin of RabbitMQ: queues, a fanout exchange, prefetch,
//! round robin, acknowledgements and redelivery, capped queues, all behind
//! one mutex. Nothing survives the process; everything else behaves as the
//! broker does, down to its quieter rules: a message published to a missing
//! queue is dropped without an error, a requeued delivery goes back to the
//! head of its queue (where a capped queue drops first), and a queue is not
//! declared again with another kind unless the new one is capped (or
//! bounded, over an empty unused queue). Time (a bounded queue's message
//! TTL, an own queue's idle expiry) is tokio's clock, so a test that
//! pauses it moves it by hand; expiries are applied whenever the broker is
//! next used, which no one can tell from the broker doing it on time.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio::time::{Duration, Instant};

use super::{Acker, Broker, Consumer, Delivery, Message, QueueKind};
use crate::error::{Error, Result};

/// A broker living in this process. Clones share the same queues.
#[derive(Clone, Default)]
pub struct InProcBroker {
    inner: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    queues: HashMap<String, Queue>,
    exchanges: HashMap<String, Vec<String>>,
    next_tag: u64,
    next_consumer: u64,
}

/// A message in a queue, and when it expires (a bounded queue's).
type Held = (Message, Option<Instant>);

struct Queue {
    kind: QueueKind,
    /// Ready messages, whether redelivered, and when they expire.
    ready: VecDeque<(Message, bool, Option<Instant>)>,
    consumers: Vec<Slot>,
    next: usize,
    /// Delivered, not yet settled: tag to (consumer, message).
    unacked: HashMap<u64, (u64, Held)>,
    /// Since when it has had no consumer (declaring it counts as a use).
    idle_since: Instant,
}

struct Slot {
    id: u64,
    priority: i32,
    prefetch: usize,
    held: usize,
    tx: mpsc::UnboundedSender<Delivery>,
}

impl Queue {
    fn new(kind: QueueKind) -> Self {
        Queue {
            kind,
            ready: VecDeque::new(),
            consumers: Vec::new(),
            next: 0,
            unacked: HashMap::new(),
            idle_since: Instant::now(),
        }
    }

    /// A message published to the queue; refused (false) by a full
    /// bounded queue, as RabbitMQ's `reject-publish` nacks it.
    fn enqueue(&mut self, msg: Message) -> bool {
        self.expire();
        let expiry = match self.kind {
            QueueKind::Bounded { max, ttl_ms } => {
                if self.ready.len() >= usize::try_from(max).unwrap_or(usize::MAX) {
                    return false;
                }
                Some(Instant::now() + Duration::from_millis(ttl_ms.into()))
            }
            _ => None,
        };
        self.ready.push_back((msg, false, expiry));
        self.trim();
        true
    }

    /// Deliveries given back, in their order, to the head of the queue,
    /// each with its first expiry.
    fn requeue(&mut self, msgs: impl DoubleEndedIterator<Item = Held>) {
        for (msg, expiry) in msgs.rev() {
            self.ready.push_front((msg, true, expiry));
        }
        self.trim();
    }

    /// Drops the oldest ready messages over a capped queue's bound, as
    /// RabbitMQ's `drop-head` does; unacknowledged ones do not count. (A
    /// bounded queue refuses publishes instead; a requeue may take it
    /// past its bound, as on RabbitMQ.)
    fn trim(&mut self) {
        let cap = match self.kind {
            QueueKind::Capped(max) | QueueKind::Own { max, .. } => max,
            _ => return,
        };
        let cap = usize::try_from(cap).unwrap_or(usize::MAX);
        while self.ready.len() > cap {
            self.ready.pop_front();
        }
    }

    /// Drops the expired messages at the head, as RabbitMQ does (a
    /// requeued message, back at the head, keeps its first expiry).
    fn expire(&mut self) {
        let now = Instant::now();
        while self
            .ready
            .front()
            .is_some_and(|(_, _, at)| at.is_some_and(|at| at <= now))
        {
            self.ready.pop_front();
        }
    }

    /// Whether an own queue has been unused for its idle time.
    fn expired(&self, now: Instant) -> bool {
        match self.kind {
            QueueKind::Own { idle_ms, .. } => {
                self.consumers.is_empty()
                    && self.idle_since + Duration::from_millis(idle_ms.into()) <= now
            }
            _ => false,
        }
    }

    /// Whether it holds nothing and has no consumer.
    fn idle(&self) -> bool {
        self.ready.is_empty() && self.unacked.is_empty() && self.consumers.is_empty()
    }
}

/// Deletes the own queues unused for their idle time, as RabbitMQ's
/// `x-expires` does; called before anything looks at the queues.
fn reap(st: &mut State) {
    let now = Instant::now();
    let gone: Vec<String> = st
        .queues
        .iter()
        .filter(|(_, q)| q.expired(now))
        .map(|(name, _)| name.clone())
        .collect();
    for name in gone {
        remove_queue(st, &name);
    }
}

/// Removes a queue and its bindings. Its consumers' streams end (their
/// senders go with it), as RabbitMQ cancels them.
fn remove_queue(st: &mut State, name: &str) {
    st.queues.remove(name);
    for bound in st.exchanges.values_mut() {
        bound.retain(|b| b != name);
    }
}

impl InProcBroker {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a queue half-changed in
        // a way that matters more than stopping would, so go on.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn settle(&self, queue: &str, tag: u64, requeue: bool) {
        let mut st = self.state();
        let Some(q) = st.queues.get_mut(queue) else {
            return;
        };
        let Some((consumer, held)) = q.unacked.remove(&tag) else {
            return; // already settled, or requeued when its consumer left
        };
        if let Some(slot) = q.consumers.iter_mut().find(|s| s.id == consumer) {
            slot.held -= 1;
        }
        if requeue {
            q.requeue(std::iter::once(held));
        }
        let mut out = Outbox::new();
        dispatch(self, &mut st, queue, &mut out);
        drop(st);
        deliver(out);
    }

    /// Acknowledges `tag` and every earlier tag its consumer holds.
    fn settle_through(&self, queue: &str, tag: u64) {
        let mut st = self.state();
        let Some(q) = st.queues.get_mut(queue) else {
            return;
        };
        let Some(&(consumer, _)) = q.unacked.get(&tag) else {
            return;
        };
        let before = q.unacked.len();
        q.unacked.retain(|t, (c, _)| *c != consumer || *t > tag);
        let settled = before - q.unacked.len();
        if let Some(slot) = q.consumers.iter_mut().find(|s| s.id == consumer) {
            slot.held -= settled;
        }
        let mut out = Outbox::new();
        dispatch(self, &mut st, queue, &mut out);
        drop(st);
        deliver(out);
    }

    fn cancel(&self, queue: &str, consumer: u64) {
        let mut st = self.state();
        let Some(q) = st.queues.get_mut(queue) else {
            return;
        };
        // Not there: its queue was deleted (and maybe declared again, which
        // its leaving must not touch).
        let Some(at) = q.consumers.iter().position(|s| s.id == consumer) else {
            return;
        };
        q.consumers.remove(at);
        let mut tags: Vec<u64> = q
            .unacked
            .iter()
            .filter(|(_, (c, _))| *c == consumer)
            .map(|(tag, _)| *tag)
            .collect();
        tags.sort_unstable();
        let back: Vec<Held> = tags
            .iter()
            .filter_map(|tag| q.unacked.remove(tag).map(|(_, m)| m))
            .collect();
        q.requeue(back.into_iter());
        if q.consumers.is_empty() {
            q.idle_since = Instant::now();
        }
        if q.kind == QueueKind::Transient && q.consumers.is_empty() {
            remove_queue(&mut st, queue);
            return;
        }
        let mut out = Outbox::new();
        dispatch(self, &mut st, queue, &mut out);
        drop(st);
        deliver(out);
    }
}

/// Deliveries chosen under the lock, sent after it is released (sending
/// wakes the consumer's thread, which should not wait for the lock).
type Outbox = Vec<(mpsc::UnboundedSender<Delivery>, Delivery)>;

/// Sends what `dispatch` chose. A consumer that went away meanwhile is
/// cancelled by its own drop, which requeues what it held, these included.
fn deliver(outbox: Outbox) {
    for (tx, d) in outbox {
        let _ = tx.send(d);
    }
}

/// Hands ready messages to consumers with room, round robin.
fn dispatch(broker: &InProcBroker, st: &mut State, queue: &str, out: &mut Outbox) {
    let State {
        queues, next_tag, ..
    } = st;
    let Some(q) = queues.get_mut(queue) else {
        return;
    };
    q.expire();
    while !q.ready.is_empty() && !q.consumers.is_empty() {
        let n = q.consumers.len();
        let has_room = |s: &Slot| s.held < s.prefetch;
        let Some(top) = q
            .consumers
            .iter()
            .filter(|s| has_room(s))
            .map(|s| s.priority)
            .max()
        else {
            return;
        };
        let Some(pick) = (0..n)
            .map(|i| (q.next + i) % n)
            .find(|&i| has_room(&q.consumers[i]) && q.consumers[i].priority == top)
        else {
            return;
        };
        q.next = (pick + 1) % n;
        let (msg, redelivered, expiry) = q.ready.pop_front().expect("not empty");
        *next_tag += 1;
        let tag = *next_tag;
        let acker = InProcAcker {
            broker: broker.clone(),
            queue: queue.to_owned(),
            tag,
        };
        let slot = &mut q.consumers[pick];
        slot.held += 1;
        let delivery = Delivery::new(msg.clone(), redelivered, Box::new(acker));
        out.push((slot.tx.clone(), delivery));
        q.unacked.insert(tag, (slot.id, (msg, expiry)));
    }
}

struct InProcAcker {
    broker: InProcBroker,
    queue: String,
    tag: u64,
}

#[async_trait]
impl Acker for InProcAcker {
    async fn ack(&self) -> Result<()> {
        self.broker.settle(&self.queue, self.tag, false);
        Ok(())
    }

    async fn ack_through(&self) -> Result<()> {
        self.broker.settle_through(&self.queue, self.tag);
        Ok(())
    }

    async fn nack(&self, requeue: bool) -> Result<()> {
        self.broker.settle(&self.queue, self.tag, requeue);
        Ok(())
    }
}

/// Cancels its consumer when dropped.
struct CancelOnDrop {
    broker: InProcBroker,
    queue: String,
    id: u64,
    rx: mpsc::UnboundedReceiver<Delivery>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.rx.close();
        self.broker.cancel(&self.queue, self.id);
    }
}

fn no_queue(name: &str) -> Error {
    Error::Unavailable(format!("no queue {name:?}"))
}

fn refused(queue: &str) -> Error {
    Error::Unavailable(format!(
        "broker refused the message: queue {queue:?} is full"
    ))
}

fn no_exchange(name: &str) -> Error {
    Error::Unavailable(format!("no exchange {name:?}"))
}

#[async_trait]
impl Broker for InProcBroker {
    async fn declare_queue(&self, name: &str, kind: QueueKind) -> Result<()> {
        let mut st = self.state();
        reap(&mut st);
        match st.queues.get_mut(name) {
            Some(q) if q.kind == kind => {
                q.idle_since = Instant::now();
                return Ok(());
            }
            // RabbitMQ refuses other arguments (PRECONDITION_FAILED); a
            // capped queue replaces the old one instead, and a bounded one
            // an idle one (see `QueueKind`).
            Some(_) if kind.replaces() => remove_queue(&mut st, name),
            Some(q) if matches!(kind, QueueKind::Bounded { .. }) => {
                if !q.idle() {
                    tracing::warn!(
                        queue = name,
                        ?kind,
                        had = ?q.kind,
                        "the queue exists with other arguments and is in use or holds \
                         messages: kept as it is"
                    );
                    return Ok(());
                }
                remove_queue(&mut st, name);
            }
            Some(q) => {
                return Err(Error::Unavailable(format!(
                    "queue {name:?} exists as {:?}, not {kind:?}",
                    q.kind
                )));
            }
            None => {}
        }
        st.queues.insert(name.to_owned(), Queue::new(kind));
        Ok(())
    }

    async fn declare_fanout(&self, exchange: &str) -> Result<()> {
        self.state()
            .exchanges
            .entry(exchange.to_owned())
            .or_default();
        Ok(())
    }

    async fn bind(&self, queue: &str, exchange: &str) -> Result<()> {
        let mut st = self.state();
        reap(&mut st);
        if !st.queues.contains_key(queue) {
            return Err(no_queue(queue));
        }
        let bound = st
            .exchanges
            .get_mut(exchange)
            .ok_or_else(|| no_exchange(exchange))?;
        if !bound.iter().any(|b| b == queue) {
            bound.push(queue.to_owned());
        }
        Ok(())
    }

    async fn delete_queue(&self, name: &str) -> Result<()> {
        remove_queue(&mut self.state(), name);
        Ok(())
    }

    async fn depth(&self, queue: &str) -> Result<Option<u64>> {
        let mut st = self.state();
        reap(&mut st);
        Ok(st.queues.get(queue).map(|q| q.ready.len() as u64))
    }

    async fn publish(&self, queue: &str, msg: Message) -> Result<()> {
        let mut st = self.state();
        reap(&mut st);
        // No such queue: RabbitMQ's default exchange routes the message
        // nowhere and confirms it, so it is gone, and that is no error.
        let Some(q) = st.queues.get_mut(queue) else {
            return Ok(());
        };
        if !q.enqueue(msg) {
            return Err(refused(queue));
        }
        let mut out = Outbox::new();
        dispatch(self, &mut st, queue, &mut out);
        drop(st);
        deliver(out);
        Ok(())
    }

    async fn publish_fanout(&self, exchange: &str, msg: Message) -> Result<()> {
        let mut st = self.state();
        reap(&mut st);
        let bound = st
            .exchanges
            .get(exchange)
            .ok_or_else(|| no_exchange(exchange))?
            .clone();
        let mut out = Outbox::new();
        // A queue that refuses it makes the publish fail (RabbitMQ nacks
        // it), the other queues having it.
        let mut refusal = Ok(());
        for queue in bound {
            if let Some(q) = st.queues.get_mut(&queue) {
                if !q.enqueue(msg.clone()) {
                    refusal = Err(refused(&queue));
                }
                dispatch(self, &mut st, &queue, &mut out);
            }
        }
        drop(st);
        deliver(out);
        refusal
    }

    async fn consume_ranked(&self, queue: &str, prefetch: u16, priority: i32) -> Result<Consumer> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut st = self.state();
        reap(&mut st);
        st.next_consumer += 1;
        let id = st.next_consumer;
        st.queues
            .get_mut(queue)
            .ok_or_else(|| no_queue(queue))?
            .consumers
            .push(Slot {
                id,
                priority,
                prefetch: usize::from(prefetch.max(1)),
                held: 0,
                tx,
            });
        let mut out = Outbox::new();
        dispatch(self, &mut st, queue, &mut out);
        drop(st);
        deliver(out);
        let guard = CancelOnDrop {
            broker: self.clone(),
            queue: queue.to_owned(),
            id,
            rx,
        };
        Ok(Box::pin(futures::stream::unfold(
            guard,
            |mut g| async move {
                let d = g.rx.recv().await?;
                Some((d, g))
            },
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::conformance;

    #[actix::test]
    async fn keeps_the_broker_semantics() {
        conformance::run_all(&InProcBroker::new()).await;
    }
}
