//! A broker that injects faults at chosen moments, around any other: for
//! tests that need a publish to fail between two others, a message the
//! broker "confirms" but loses, or an acknowledgement that never arrives
//! (the worker died between applying and acknowledging). It also lets a
//! test watch every publish, to check an ordering as it happens, refuse
//! subscriptions, and end every consumer's stream at once (as a client
//! does when it replaces a connection in doubt).
//!
//! Rules are closures a test sets and may change while the system runs;
//! without rules it passes everything through.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::StreamExt;

use super::{Acker, Broker, Consumer, Delivery, Message, QueueKind};
use crate::error::{Error, Result};

/// What to do with one publish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    Pass,
    /// Refused: the publisher sees an error, nothing is delivered.
    Fail,
    /// "Confirmed", but never delivered (a broker that lost it).
    Lose,
}

/// How a delivery is being settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settle {
    Ack,
    AckThrough,
    Nack { requeue: bool },
}

type PublishRule = Box<dyn FnMut(&str, &Message) -> Fault + Send>;
type PublishedHook = Box<dyn FnMut(&str, &Message, bool) + Send>;
type SettleRule = Box<dyn FnMut(&str, &Message, Settle) -> bool + Send>;
type ConsumeRule = Box<dyn FnMut(&str) -> bool + Send>;

#[derive(Default)]
struct Rules {
    publish: Option<PublishRule>,
    published: Option<PublishedHook>,
    settle: Option<SettleRule>,
    consume: Option<ConsumeRule>,
    /// Queues whose messages given back (a nack with requeue) are dropped
    /// instead, as when they expire there before anyone takes them again.
    drop_requeued: Vec<String>,
    dangling: Option<Dangling>,
}

/// A queue whose delete is cut short, leaving its binding to an exchange
/// behind without it (RabbitMQ, when a node dies during the delete):
/// every publish to that exchange is refused until the queue is declared
/// again and deleted.
struct Dangling {
    queue: String,
    exchange: String,
    stage: DangleStage,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum DangleStage {
    /// The next delete of the queue is cut short.
    Armed,
    /// Its binding is left without it.
    Left,
    /// Declared again: the next delete takes both away.
    Declared,
}

/// Wraps a broker; clones share the rules.
#[derive(Clone)]
pub struct FaultyBroker {
    inner: Arc<dyn Broker>,
    rules: Arc<Mutex<Rules>>,
    /// Bumped to end every consumer's stream.
    ended: Arc<tokio::sync::watch::Sender<u64>>,
}

impl FaultyBroker {
    pub fn new(inner: Arc<dyn Broker>) -> Self {
        FaultyBroker {
            inner,
            rules: Arc::default(),
            ended: Arc::new(tokio::sync::watch::Sender::new(0)),
        }
    }

    fn rules(&self) -> std::sync::MutexGuard<'_, Rules> {
        self.rules.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Decides each publish by target (queue or exchange) and message.
    pub fn on_publish(&self, rule: impl FnMut(&str, &Message) -> Fault + Send + 'static) {
        self.rules().publish = Some(Box::new(rule));
    }

    /// Called after each publish that reached the broker with whether it
    /// was confirmed (not for `Fail` or `Lose`).
    pub fn after_publish(&self, hook: impl FnMut(&str, &Message, bool) + Send + 'static) {
        self.rules().published = Some(Box::new(hook));
    }

    /// Decides whether a settlement reaches the broker (false: it is
    /// swallowed, and the delivery stays unacknowledged until its consumer
    /// goes away, as if its worker died first).
    pub fn on_settle(&self, rule: impl FnMut(&str, &Message, Settle) -> bool + Send + 'static) {
        self.rules().settle = Some(Box::new(rule));
    }

    /// Decides each subscription by queue (false: refused, the subscriber
    /// sees an error).
    pub fn on_consume(&self, rule: impl FnMut(&str) -> bool + Send + 'static) {
        self.rules().consume = Some(Box::new(rule));
    }

    /// Drops what is given back to `queue` (a nack with requeue) instead
    /// of requeueing it: it expired before anyone took it again.
    pub fn drop_requeued(&self, queue: &str) {
        self.rules().drop_requeued.push(queue.to_owned());
    }

    /// The next delete of `queue` is cut short: the queue goes, its
    /// delete fails, and its binding to `exchange` stays behind, so that
    /// every publish to `exchange` is refused until `queue` is declared
    /// again and deleted (as RabbitMQ does when a node dies during the
    /// delete).
    pub fn dangle_on_delete(&self, queue: &str, exchange: &str) {
        self.rules().dangling = Some(Dangling {
            queue: queue.to_owned(),
            exchange: exchange.to_owned(),
            stage: DangleStage::Armed,
        });
    }

    /// Whether the cut delete armed by [`Self::dangle_on_delete`] has
    /// happened and its binding is gone since.
    pub fn dangle_spent(&self) -> bool {
        self.rules().dangling.is_none()
    }

    /// Ends the stream of every consumer there is now; what they held goes
    /// back to its queue, as when their connection is closed.
    pub fn end_consumers(&self) {
        self.ended.send_modify(|n| *n += 1);
    }

    /// Removes every rule.
    pub fn clear(&self) {
        *self.rules() = Rules::default();
    }

    async fn send(&self, target: &str, msg: Message, fanout: bool) -> Result<()> {
        let fault = {
            let mut rules = self.rules();
            let left = rules
                .dangling
                .as_ref()
                .is_some_and(|d| fanout && d.exchange == target && d.stage != DangleStage::Armed);
            if left {
                Fault::Fail
            } else {
                rules
                    .publish
                    .as_mut()
                    .map_or(Fault::Pass, |rule| rule(target, &msg))
            }
        };
        match fault {
            Fault::Fail => return Err(Error::Unavailable("injected: publish refused".into())),
            Fault::Lose => return Ok(()),
            Fault::Pass => {}
        }
        let seen = self.rules().published.is_some().then(|| msg.clone());
        let res = if fanout {
            self.inner.publish_fanout(target, msg).await
        } else {
            self.inner.publish(target, msg).await
        };
        if let (Some(msg), Some(hook)) = (seen, self.rules().published.as_mut()) {
            hook(target, &msg, res.is_ok());
        }
        res
    }
}

/// Settles through the inner delivery unless the rule swallows it.
struct FaultyAcker {
    queue: String,
    message: Message,
    inner: Mutex<Option<Delivery>>,
    rules: Arc<Mutex<Rules>>,
}

impl FaultyAcker {
    /// The inner delivery, if this settlement is to reach the broker.
    fn pass(&self, how: Settle) -> Option<Delivery> {
        let passes = {
            let mut rules = self.rules.lock().unwrap_or_else(|p| p.into_inner());
            match rules.settle.as_mut() {
                Some(rule) => rule(&self.queue, &self.message, how),
                None => true,
            }
        };
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if passes {
            inner.take()
        } else {
            None
        }
    }
}

#[async_trait]
impl Acker for FaultyAcker {
    async fn ack(&self) -> Result<()> {
        match self.pass(Settle::Ack) {
            Some(d) => d.ack().await,
            None => Ok(()),
        }
    }

    async fn ack_through(&self) -> Result<()> {
        match self.pass(Settle::AckThrough) {
            Some(d) => d.ack_through().await,
            None => Ok(()),
        }
    }

    async fn nack(&self, requeue: bool) -> Result<()> {
        let dropped = requeue && {
            let rules = self.rules.lock().unwrap_or_else(|p| p.into_inner());
            rules.drop_requeued.contains(&self.queue)
        };
        match self.pass(Settle::Nack { requeue }) {
            Some(d) if dropped => d.ack().await,
            Some(d) => d.nack(requeue).await,
            None => Ok(()),
        }
    }
}

#[async_trait]
impl Broker for FaultyBroker {
    async fn declare_queue(&self, name: &str, kind: QueueKind) -> Result<()> {
        self.inner.declare_queue(name, kind).await?;
        if let Some(d) = self.rules().dangling.as_mut() {
            if d.queue == name && d.stage == DangleStage::Left {
                d.stage = DangleStage::Declared;
            }
        }
        Ok(())
    }

    async fn declare_fanout(&self, exchange: &str) -> Result<()> {
        self.inner.declare_fanout(exchange).await
    }

    async fn bind(&self, queue: &str, exchange: &str) -> Result<()> {
        self.inner.bind(queue, exchange).await
    }

    async fn delete_queue(&self, name: &str) -> Result<()> {
        let stage = self
            .rules()
            .dangling
            .as_ref()
            .filter(|d| d.queue == name)
            .map(|d| d.stage);
        self.inner.delete_queue(name).await?;
        let mut rules = self.rules();
        match stage {
            Some(DangleStage::Armed) => {
                if let Some(d) = rules.dangling.as_mut() {
                    d.stage = DangleStage::Left;
                }
                Err(Error::Unavailable(
                    "injected: the delete was cut short".into(),
                ))
            }
            Some(DangleStage::Declared) => {
                rules.dangling = None;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    async fn depth(&self, queue: &str) -> Result<Option<u64>> {
        self.inner.depth(queue).await
    }

    async fn publish(&self, queue: &str, msg: Message) -> Result<()> {
        self.send(queue, msg, false).await
    }

    async fn publish_fanout(&self, exchange: &str, msg: Message) -> Result<()> {
        self.send(exchange, msg, true).await
    }

    async fn consume_ranked(&self, queue: &str, prefetch: u16, priority: i32) -> Result<Consumer> {
        let refused = match self.rules().consume.as_mut() {
            Some(rule) => !rule(queue),
            None => false,
        };
        if refused {
            return Err(Error::Unavailable("injected: consume refused".into()));
        }
        let mut ended = self.ended.subscribe();
        ended.mark_unchanged();
        let inner = self.inner.consume_ranked(queue, prefetch, priority).await?;
        let (queue, rules) = (queue.to_owned(), self.rules.clone());
        let end = async move {
            let _ = ended.changed().await;
        };
        Ok(Box::pin(inner.take_until(end).map(move |d| {
            let acker = FaultyAcker {
                queue: queue.clone(),
                message: d.message.clone(),
                rules: rules.clone(),
                inner: Mutex::new(None),
            };
            let (message, redelivered) = (d.message.clone(), d.redelivered);
            *acker.inner.lock().unwrap_or_else(|p| p.into_inner()) = Some(d);
            Delivery::new(message, redelivered, Box::new(acker))
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::inproc::InProcBroker;

    #[tokio::test]
    async fn passes_through_and_injects() {
        let b = FaultyBroker::new(Arc::new(InProcBroker::new()));
        b.declare_queue("q", QueueKind::Durable).await.unwrap();
        let mut n = 0;
        b.on_publish(move |_, _| {
            n += 1;
            match n {
                2 => Fault::Fail,
                3 => Fault::Lose,
                _ => Fault::Pass,
            }
        });
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        b.after_publish(move |q, m, ok| s.lock().unwrap().push((q.to_owned(), m.body[0], ok)));
        for i in 1..=4u8 {
            let res = b.publish("q", Message::new(vec![i])).await;
            assert_eq!(res.is_ok(), i != 2, "publish {i}");
        }
        assert_eq!(
            *seen.lock().unwrap(),
            [("q".to_owned(), 1, true), ("q".to_owned(), 4, true)]
        );
        // The first delivery's ack is swallowed: it comes back to the next
        // consumer once this one is gone.
        b.on_settle(|_, m, _| m.body[0] != 1);
        let mut c = b.consume("q", 10).await.unwrap();
        for want in [1, 4] {
            let d = c.next().await.unwrap();
            assert_eq!(d.message.body, [want]);
            d.ack().await.unwrap();
        }
        drop(c);
        b.clear();
        let mut c = b.consume("q", 10).await.unwrap();
        let d = c.next().await.unwrap();
        assert_eq!((d.message.body.clone(), d.redelivered), (vec![1], true));
    }

    #[tokio::test]
    async fn refuses_subscriptions_and_ends_consumers() {
        let b = FaultyBroker::new(Arc::new(InProcBroker::new()));
        b.declare_queue("q", QueueKind::Durable).await.unwrap();
        b.on_consume(|q| q != "q");
        assert!(b.consume("q", 10).await.is_err());
        b.clear();
        let mut c = b.consume("q", 10).await.unwrap();
        b.publish("q", Message::new(vec![1])).await.unwrap();
        let d = c.next().await.unwrap();
        // Held, not acknowledged: back to the queue when its consumer ends.
        b.end_consumers();
        assert!(c.next().await.is_none(), "the stream ended");
        drop((d, c));
        let mut again = b.consume("q", 10).await.unwrap();
        let d = again.next().await.unwrap();
        assert_eq!((d.message.body.clone(), d.redelivered), (vec![1], true));
    }
}
