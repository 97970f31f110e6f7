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
//! [`Error::Unavailable`] and the next call reconnects (with backoff);
//! consumers' streams end, and their actors subscribe again.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

use super::{Acker, Broker, Consumer, Delivery, Message, QueueKind, WRITE_Q};
use crate::error::{Error, Result};

/// Publishing channels per connection.
const PUBLISH_CHANNELS: usize = 4;
/// The shortest and longest wait between two connection attempts.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(2));

fn unavailable(e: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!("broker: {e}"))
}

struct Live {
    conn: Connection,
    publish: Vec<Channel>,
    next: AtomicUsize,
}

impl Live {
    fn usable(&self) -> bool {
        self.conn.status().connected() && self.publish.iter().all(|c| c.status().connected())
    }

    fn channel(&self) -> &Channel {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.publish.len();
        &self.publish[i]
    }
}

/// A RabbitMQ connection that reconnects by itself.
pub struct AmqpBroker {
    url: String,
    live: Mutex<Option<Arc<Live>>>,
    connecting: tokio::sync::Mutex<Backoff>,
}

struct Backoff {
    next_try: Instant,
    wait: Duration,
}

impl AmqpBroker {
    /// A broker at `url` (`amqp://user:pass@host:port/vhost`); connects on
    /// first use.
    pub fn new(url: &str) -> Self {
        AmqpBroker {
            url: url.to_owned(),
            live: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(Backoff {
                next_try: Instant::now(),
                wait: BACKOFF.0,
            }),
        }
    }

    /// Connects now, to fail early on a wrong address.
    pub async fn connect(url: &str) -> Result<Self> {
        let b = Self::new(url);
        b.live().await?;
        Ok(b)
    }

    fn current(&self) -> Option<Arc<Live>> {
        let g = self.live.lock().unwrap_or_else(|p| p.into_inner());
        g.as_ref().filter(|l| l.usable()).cloned()
    }

    async fn live(&self) -> Result<Arc<Live>> {
        if let Some(l) = self.current() {
            return Ok(l);
        }
        let mut backoff = self.connecting.lock().await;
        if let Some(l) = self.current() {
            return Ok(l); // another task reconnected meanwhile
        }
        tokio::time::sleep_until(backoff.next_try.into()).await;
        match self.open().await {
            Ok(l) => {
                backoff.wait = BACKOFF.0;
                *self.live.lock().unwrap_or_else(|p| p.into_inner()) = Some(l.clone());
                tracing::info!(url = %redact(&self.url), "connected to the broker");
                Ok(l)
            }
            Err(e) => {
                backoff.next_try = Instant::now() + backoff.wait;
                backoff.wait = (backoff.wait * 2).min(BACKOFF.1);
                Err(e)
            }
        }
    }

    async fn open(&self) -> Result<Arc<Live>> {
        let props = ConnectionProperties::default().with_connection_name("dbaas".into());
        let conn = Connection::connect(&self.url, props)
            .await
            .map_err(unavailable)?;
        let mut publish = Vec::with_capacity(PUBLISH_CHANNELS);
        for _ in 0..PUBLISH_CHANNELS {
            let ch = conn.create_channel().await.map_err(unavailable)?;
            ch.confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(unavailable)?;
            publish.push(ch);
        }
        Ok(Arc::new(Live {
            conn,
            publish,
            next: AtomicUsize::new(0),
        }))
    }

    /// A fresh channel for a declaration (a refused one closes its channel).
    async fn with_channel<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: FnOnce(Channel) -> Fut,
        Fut: std::future::Future<Output = lapin::Result<T>>,
    {
        let live = self.live().await?;
        let ch = live.conn.create_channel().await.map_err(unavailable)?;
        let out = f(ch.clone()).await.map_err(unavailable);
        let _ = ch.close(200, "done".into()).await;
        out
    }

    async fn send(&self, exchange: &str, key: &str, msg: Message, persistent: bool) -> Result<()> {
        let live = self.live().await?;
        let mut props =
            BasicProperties::default().with_delivery_mode(if persistent { 2 } else { 1 });
        if let Some(id) = msg.correlation_id {
            props = props.with_correlation_id(id.to_string().into());
        }
        if let Some(to) = msg.reply_to {
            props = props.with_reply_to(to.into());
        }
        let confirm = live
            .channel()
            .basic_publish(
                exchange.into(),
                key.into(),
                BasicPublishOptions::default(),
                &msg.body,
                props,
            )
            .await
            .map_err(unavailable)?
            .await
            .map_err(unavailable)?;
        if confirm.is_nack() {
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

struct LapinAcker(lapin::Acker);

#[async_trait]
impl Acker for LapinAcker {
    async fn ack(&self) -> Result<()> {
        self.0
            .ack(BasicAckOptions::default())
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    async fn ack_through(&self) -> Result<()> {
        self.0
            .ack(BasicAckOptions { multiple: true })
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    async fn nack(&self, requeue: bool) -> Result<()> {
        let opts = BasicNackOptions {
            requeue,
            multiple: false,
        };
        self.0.nack(opts).await.map(|_| ()).map_err(unavailable)
    }
}

fn delivery(d: lapin::message::Delivery) -> Delivery {
    let props = &d.properties;
    let message = Message {
        correlation_id: props
            .correlation_id()
            .as_ref()
            .and_then(|c| c.as_str().parse().ok()),
        reply_to: props.reply_to().as_ref().map(|r| r.as_str().to_owned()),
        body: d.data,
    };
    Delivery::new(message, d.redelivered, Box::new(LapinAcker(d.acker)))
}

/// Closes its consumer's channel when dropped, so the broker requeues what
/// the consumer held.
struct CloseOnDrop {
    channel: Channel,
    inner: lapin::Consumer,
}

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        let ch = self.channel.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = ch.close(200, "consumer dropped".into()).await;
            });
        }
    }
}

#[async_trait]
impl Broker for AmqpBroker {
    async fn declare_queue(&self, name: &str, kind: QueueKind) -> Result<()> {
        let opts = match kind {
            QueueKind::Durable => QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            QueueKind::Transient => QueueDeclareOptions {
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
        };
        self.with_channel(|ch| async move {
            ch.queue_declare(name.into(), opts, FieldTable::default())
                .await
                .map(|_| ())
        })
        .await
    }

    async fn declare_fanout(&self, exchange: &str) -> Result<()> {
        let opts = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        self.with_channel(|ch| async move {
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
        self.with_channel(|ch| async move {
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
        self.with_channel(|ch| async move {
            ch.queue_delete(name.into(), QueueDeleteOptions::default())
                .await
                .map(|_| ())
        })
        .await
    }

    async fn publish(&self, queue: &str, msg: Message) -> Result<()> {
        self.send("", queue, msg, queue == WRITE_Q).await
    }

    async fn publish_fanout(&self, exchange: &str, msg: Message) -> Result<()> {
        self.send(exchange, "", msg, true).await
    }

    async fn consume(&self, queue: &str, prefetch: u16) -> Result<Consumer> {
        let live = self.live().await?;
        let channel = live.conn.create_channel().await.map_err(unavailable)?;
        channel
            .basic_qos(prefetch.max(1), BasicQosOptions::default())
            .await
            .map_err(unavailable)?;
        let inner = channel
            .basic_consume(
                queue.into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(unavailable)?;
        let guard = CloseOnDrop { channel, inner };
        Ok(Box::pin(futures::stream::unfold(
            guard,
            |mut g| async move {
                match g.inner.next().await? {
                    Ok(d) => Some((delivery(d), g)),
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
    use super::redact;

    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(
            redact("amqp://u:secret@h:5672/%2f"),
            "amqp://***@h:5672/%2f"
        );
        assert_eq!(redact("amqp://h:5672"), "amqp://h:5672");
    }
}
