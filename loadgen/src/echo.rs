//! `amqp-echo`: the raw AMQP request/reply limit of this machine, measured
//! with the same client library and the same settings as the system's own
//! RabbitMQ broker (`src/broker/amqp.rs` of the `dbaas` crate), so that `db/read` through the
//! orchestrator can be held against it.
//!
//! It declares a request queue and a reply queue of its own (not durable,
//! removed when their last consumer goes, unique names) and starts
//! `--echo-servers` echo servers, each on a thread and a lapin connection of
//! its own, like the slaves (each a process with one actor thread). An echo
//! server does what a slave does with a read, minus the storage: it consumes
//! the request queue with a prefetch (a slave's is 32), takes what has
//! arrived in batches (as a slave does, up to 64), publishes each body back
//! to the message's `reply_to` with its correlation id, not persistent, on
//! one of four publishing channels in confirm mode, waits for the confirm,
//! and only then acknowledges the request.
//!
//! The client side does what the orchestrator does: one connection, four
//! publishing channels in confirm mode, requests not persistent and carrying
//! a correlation id and `reply_to`; every reply comes back on the one reply
//! queue (consumed with the orchestrator's prefetch of 1000, in batches of up
//! to 256), is matched to its caller by correlation id, and each batch is
//! acknowledged with one `multiple` ack from a task of its own. Each virtual
//! user publishes a request and waits for its reply (and for the broker's
//! confirm of the request only while the reply has not come, as the
//! orchestrator does), then checks that the reply is its own body.
//!
//! With `--echo-persistent` the request queue is durable and the requests
//! persistent, as `writeQ` and its messages are: the broker then confirms a
//! request only once it has written it to disk. That is the raw limit a
//! durable, acknowledged write has to live within (before the master's own
//! work and the `syncQ` fanout).
//!
//! This module holds the setup, the settings and the publishing channels
//! both sides use; the client side is in [`client`], the echo servers in
//! [`server`].

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

use crate::error::{Error, Result};
use client::dispatch;
use server::{start_server, Server};

mod client;
mod server;

pub(crate) use client::EchoClient;

/// Publishing channels per connection, as the broker keeps.
const PUBLISH_CHANNELS: usize = 4;
/// The reply queue's prefetch: the orchestrator's on `responseQ`.
const REPLY_PREFETCH: u16 = 1000;
/// Replies taken at once, as the orchestrator takes them from `responseQ`.
const REPLY_BATCH: usize = 256;
/// Requests an echo server takes at once, as a slave takes reads.
const REQUEST_BATCH: usize = 64;
/// How long the echo servers may take to connect and subscribe.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A slave's prefetch on `readQ` (`READ_PREFETCH` in the `dbaas` crate's
/// `src/actors/slave.rs`).
pub const SLAVE_PREFETCH: u16 = 32;
/// As many echo servers as `dbaas up --slaves 2` has slaves.
pub const DEFAULT_SERVERS: usize = 2;
/// About the size of a `db/read` request on the wire.
pub const DEFAULT_BYTES: usize = 60;

/// How to set up the echo.
#[derive(Clone, Debug)]
pub(crate) struct EchoConfig {
    pub url: String,
    pub servers: usize,
    pub prefetch: u16,
    pub bytes: usize,
    /// Requests persistent, to a durable queue (as `writeQ`).
    pub persistent: bool,
    pub timeout: Duration,
}

impl EchoConfig {
    /// One line on what was measured, for the report.
    pub(crate) fn describe(&self) -> String {
        format!(
            "{} echo servers (a thread and a connection each, prefetch {}, replies confirmed \
             before the ack), {}-byte {} requests, {PUBLISH_CHANNELS} confirm-mode publishing \
             channels per connection, replies on one queue (prefetch {REPLY_PREFETCH})",
            self.servers,
            self.prefetch,
            self.bytes,
            if self.persistent {
                "persistent (durable queue)"
            } else {
                "transient"
            }
        )
    }
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!("amqp-echo: {what}: {e}"))
}

/// The URL without its password, for the report.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***{}", &url[..s], &url[at..]),
        _ => url.to_owned(),
    }
}

/// A request body of exactly `bytes` bytes (at least 24), unique per task
/// and request so that a reply matched to the wrong caller shows.
pub(crate) fn body(bytes: usize, task: usize, n: u64) -> Vec<u8> {
    let mut s = String::with_capacity(bytes.max(40));
    let _ = write!(s, "echo t{task} n{n} ");
    while s.len() < bytes {
        s.push('.');
    }
    s.into_bytes()
}

/// Publishing channels in confirm mode, used in turn (as the broker does).
struct Publisher {
    channels: Vec<Channel>,
    next: AtomicUsize,
}

impl Publisher {
    async fn open(conn: &Connection) -> lapin::Result<Publisher> {
        let mut channels = Vec::with_capacity(PUBLISH_CHANNELS);
        for _ in 0..PUBLISH_CHANNELS {
            let ch = conn.create_channel().await?;
            ch.confirm_select(ConfirmSelectOptions::default()).await?;
            channels.push(ch);
        }
        Ok(Publisher {
            channels,
            next: AtomicUsize::new(0),
        })
    }

    /// Publishes to `queue` through the default exchange; returns once the
    /// broker confirmed it.
    async fn send(
        &self,
        queue: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> std::result::Result<(), String> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.channels.len();
        let confirm = self.channels[i]
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                body,
                props,
            )
            .await
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        if confirm.is_nack() {
            return Err("the broker refused the message".into());
        }
        Ok(())
    }
}

/// The echo servers and the client, set up and running.
pub(crate) struct Echo {
    pub(crate) client: Arc<EchoClient>,
    conn: Connection,
    servers: Vec<Server>,
    dispatcher: Option<tokio::task::JoinHandle<()>>,
}

/// Declares the queues, starts the echo servers and connects the client.
pub(crate) async fn start(cfg: &EchoConfig, prefix: &str) -> Result<Echo> {
    let request_q = format!("loadgen-echo-{prefix}-requests");
    let reply_q = format!("loadgen-echo-{prefix}-replies");
    let props =
        ConnectionProperties::default().with_connection_name("dbaas-loadgen-echo-client".into());
    let conn = Connection::connect(&cfg.url, props)
        .await
        .map_err(|e| unavailable(&format!("cannot connect to {}", redact(&cfg.url)), e))?;
    let declare = async {
        let ch = conn.create_channel().await?;
        for (q, durable) in [(&request_q, cfg.persistent), (&reply_q, false)] {
            let opts = QueueDeclareOptions {
                durable,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            };
            ch.queue_declare(q.as_str().into(), opts, FieldTable::default())
                .await?;
        }
        ch.close(200, "declared".into()).await
    };
    declare
        .await
        .map_err(|e| unavailable("declaring the queues", e))?;

    let mut servers = Vec::with_capacity(cfg.servers);
    let mut ready = Vec::with_capacity(cfg.servers);
    for i in 0..cfg.servers {
        let (server, r) = start_server(i, cfg, &request_q)?;
        servers.push(server);
        ready.push(r);
    }
    let mut echo = Echo {
        client: Arc::new(EchoClient {
            publisher: Publisher::open(&conn)
                .await
                .map_err(|e| unavailable("publishing channels", e))?,
            mode: if cfg.persistent { 2 } else { 1 },
            request_q,
            reply_q: reply_q.clone(),
            waiting: Arc::default(),
            next_id: AtomicU64::new(0),
            timeout: cfg.timeout,
            bytes: cfg.bytes,
        }),
        conn,
        servers,
        dispatcher: None,
    };
    for r in ready {
        let started = match tokio::time::timeout(START_TIMEOUT, r).await {
            Ok(Ok(res)) => res,
            Ok(Err(_)) => Err(unavailable("echo server", "its thread ended")),
            Err(_) => Err(unavailable("echo server", "not subscribed in time")),
        };
        if let Err(e) = started {
            echo.stop().await;
            return Err(e);
        }
    }
    let consumer = async {
        let ch = echo.conn.create_channel().await?;
        ch.basic_qos(REPLY_PREFETCH, BasicQosOptions::default())
            .await?;
        ch.basic_consume(
            reply_q.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
    };
    match consumer.await {
        Ok(c) => {
            echo.dispatcher = Some(tokio::spawn(dispatch(c, echo.client.waiting.clone())));
            Ok(echo)
        }
        Err(e) => {
            echo.stop().await;
            Err(unavailable("consuming the reply queue", e))
        }
    }
}

impl Echo {
    /// Closes the client's connection and stops the echo servers; the queues
    /// go with their consumers.
    pub(crate) async fn stop(&mut self) {
        let _ = self.conn.close(200, "done".into()).await;
        if let Some(d) = self.dispatcher.take() {
            d.abort();
        }
        for s in &mut self.servers {
            if let Some(stop) = s.stop.take() {
                let _ = stop.send(());
            }
        }
        for s in &mut self.servers {
            if let Some(t) = s.thread.take() {
                let _ = tokio::task::spawn_blocking(move || t.join()).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_have_the_asked_size_and_differ() {
        let a = body(60, 3, 7);
        let b = body(60, 3, 8);
        assert_eq!(a.len(), 60);
        assert_ne!(a, b);
        assert!(a.starts_with(b"echo t3 n7 ."));
        // Too small a size still keeps the body unique.
        let c = body(4, 12, 123_456);
        assert!(c.len() > 4 && c.starts_with(b"echo t12 n123456"));
    }

    #[test]
    fn urls_lose_their_password() {
        assert_eq!(redact("amqp://u:pw@h:5672/v"), "amqp://***@h:5672/v");
        assert_eq!(redact("amqp://h:5672"), "amqp://h:5672");
    }
}
