//! `amqp-echo`: the raw AMQP request/reply limit of this machine, measured
//! with the same client library and the same settings as the system's own
//! RabbitMQ broker (`src/broker/amqp.rs`), so that `db/read` through the
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
//! acknowledged with one `multiple` ack from a task of its own. Each virtual user publishes a request
//! and waits for its reply (and for the broker's confirm of the request only
//! while the reply has not come, as the orchestrator does), then checks that
//! the reply is its own body.
//!
//! With `--echo-persistent` the request queue is durable and the requests
//! persistent, as `writeQ` and its messages are: the broker then confirms a
//! request only once it has written it to disk. That is the raw limit a
//! durable, acknowledged write has to live within (before the master's own
//! work and the `syncQ` fanout).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use tokio::sync::oneshot;

use super::report::Failure;
use super::ErrorLog;
use crate::error::{Error, Result};

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

/// A slave's prefetch on `readQ` (`READ_PREFETCH` in `src/actors/slave.rs`).
pub const SLAVE_PREFETCH: u16 = 32;
/// As many echo servers as `dbaas up --slaves 2` has slaves.
pub const DEFAULT_SERVERS: usize = 2;
/// About the size of a `db/read` request on the wire.
pub const DEFAULT_BYTES: usize = 60;

/// How to set up the echo.
#[derive(Clone, Debug)]
pub(super) struct EchoConfig {
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
    pub(super) fn describe(&self) -> String {
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
pub(super) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***{}", &url[..s], &url[at..]),
        _ => url.to_owned(),
    }
}

/// A request body of exactly `bytes` bytes (at least 24), unique per task
/// and request so that a reply matched to the wrong caller shows.
pub(super) fn body(bytes: usize, task: usize, n: u64) -> Vec<u8> {
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

type Waiting = Arc<Mutex<HashMap<u64, oneshot::Sender<Vec<u8>>>>>;

/// The client side: what the virtual users share.
pub(super) struct EchoClient {
    publisher: Publisher,
    /// Delivery mode of the requests: 1 transient, 2 persistent.
    mode: u8,
    request_q: String,
    reply_q: String,
    waiting: Waiting,
    next_id: AtomicU64,
    timeout: Duration,
    bytes: usize,
}

impl EchoClient {
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    fn forget(&self, id: u64) {
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }

    /// One request and its reply. As the orchestrator does, the wait ends
    /// with the reply even if the broker's confirm of the request has not
    /// come yet; a refused publish is an error.
    pub(super) async fn call(&self, body: &[u8], log: &ErrorLog) -> Result<(), Failure> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        let props = BasicProperties::default()
            .with_delivery_mode(self.mode)
            .with_correlation_id(id.to_string().into())
            .with_reply_to(self.reply_q.as_str().into());
        let reply = tokio::time::timeout(self.timeout, rx);
        tokio::pin!(reply);
        tokio::select! {
            r = &mut reply => return self.check(id, r, body, log),
            published = self.publisher.send(&self.request_q, body, props) => {
                if let Err(e) = published {
                    self.forget(id);
                    log.note(|| format!("publish: {e}"));
                    return Err(Failure::Transport);
                }
            }
        }
        self.check(id, reply.await, body, log)
    }

    /// Whether the wait for request `id` ended with its own body.
    fn check(
        &self,
        id: u64,
        waited: std::result::Result<
            std::result::Result<Vec<u8>, oneshot::error::RecvError>,
            tokio::time::error::Elapsed,
        >,
        body: &[u8],
        log: &ErrorLog,
    ) -> Result<(), Failure> {
        match waited {
            Ok(Ok(reply)) if reply == body => Ok(()),
            Ok(Ok(reply)) => {
                log.note(|| {
                    format!(
                        "reply {:?} to request {:?}",
                        String::from_utf8_lossy(&reply),
                        String::from_utf8_lossy(body)
                    )
                });
                Err(Failure::Reply)
            }
            Ok(Err(_)) => {
                log.note(|| "the reply consumer ended (connection lost?)".to_owned());
                Err(Failure::Transport)
            }
            Err(_) => {
                self.forget(id);
                log.note(|| format!("no reply within {:?}", self.timeout));
                Err(Failure::Transport)
            }
        }
    }
}

/// Hands each reply to its caller; acknowledges each batch with one
/// `multiple` ack of its last reply, in order, from a task of its own, as the
/// orchestrator does.
async fn dispatch(consumer: lapin::Consumer, waiting: Waiting) {
    let (acks, mut to_ack) = tokio::sync::mpsc::unbounded_channel::<lapin::Acker>();
    tokio::spawn(async move {
        while let Some(a) = to_ack.recv().await {
            let _ = a.ack(BasicAckOptions { multiple: true }).await;
        }
    });
    let mut batches = consumer.ready_chunks(REPLY_BATCH);
    while let Some(batch) = batches.next().await {
        let mut last = None;
        let mut ended = false;
        {
            let mut waiting = waiting.lock().unwrap_or_else(|p| p.into_inner());
            for d in batch {
                let Ok(d) = d else {
                    ended = true;
                    break;
                };
                let id = d
                    .properties
                    .correlation_id()
                    .as_ref()
                    .and_then(|c| c.as_str().parse::<u64>().ok());
                if let Some(tx) = id.and_then(|id| waiting.remove(&id)) {
                    let _ = tx.send(d.data);
                }
                last = Some(d.acker);
            }
        }
        if let Some(a) = last {
            let _ = acks.send(a);
        }
        if ended {
            break;
        }
    }
    // Whoever still waits learns at once that no reply will come.
    waiting.lock().unwrap_or_else(|p| p.into_inner()).clear();
}

/// Sends one request's body back where it asked, then settles the request.
async fn echo_one(publisher: &Publisher, d: Delivery) {
    let Some(to) = d.properties.reply_to().clone() else {
        let _ = d.acker.ack(BasicAckOptions::default()).await;
        return;
    };
    let mut props = BasicProperties::default().with_delivery_mode(1);
    if let Some(id) = d.properties.correlation_id().clone() {
        props = props.with_correlation_id(id);
    }
    match publisher.send(to.as_str(), &d.data, props).await {
        Ok(()) => {
            let _ = d.acker.ack(BasicAckOptions::default()).await;
        }
        Err(_) => {
            let opts = BasicNackOptions {
                requeue: true,
                multiple: false,
            };
            let _ = d.acker.nack(opts).await;
        }
    }
}

/// One echo server: its own thread, runtime and connection.
struct Server {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn start_server(
    i: usize,
    cfg: &EchoConfig,
    request_q: &str,
) -> Result<(Server, oneshot::Receiver<Result<()>>)> {
    let (ready_tx, ready_rx) = oneshot::channel();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (url, prefetch, queue) = (cfg.url.clone(), cfg.prefetch, request_q.to_owned());
    let thread = std::thread::Builder::new()
        .name(format!("echo-server-{i}"))
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(unavailable("echo server runtime", e)));
                    return;
                }
            };
            rt.block_on(serve(url, queue, prefetch, ready_tx, stop_rx));
        })
        .map_err(|e| Error::Storage(format!("cannot start an echo server thread: {e}")))?;
    Ok((
        Server {
            stop: Some(stop_tx),
            thread: Some(thread),
        },
        ready_rx,
    ))
}

async fn serve(
    url: String,
    queue: String,
    prefetch: u16,
    ready: oneshot::Sender<Result<()>>,
    stop: oneshot::Receiver<()>,
) {
    let setup = async {
        let props = ConnectionProperties::default()
            .with_connection_name("dbaas-loadgen-echo-server".into());
        let conn = Connection::connect(&url, props).await?;
        let publisher = Arc::new(Publisher::open(&conn).await?);
        let ch = conn.create_channel().await?;
        ch.basic_qos(prefetch.max(1), BasicQosOptions::default())
            .await?;
        let consumer = ch
            .basic_consume(
                queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        lapin::Result::Ok((conn, publisher, consumer))
    };
    let (conn, publisher, consumer) = match setup.await {
        Ok(x) => x,
        Err(e) => {
            let _ = ready.send(Err(unavailable("echo server", e)));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    let run = async {
        let mut batches = consumer.ready_chunks(REQUEST_BATCH);
        while let Some(batch) = batches.next().await {
            let publisher = publisher.clone();
            tokio::spawn(async move {
                let echoes = batch
                    .into_iter()
                    .filter_map(|d| d.ok())
                    .map(|d| echo_one(&publisher, d));
                futures::future::join_all(echoes).await;
            });
        }
    };
    tokio::select! {
        _ = run => {}
        _ = stop => {}
    }
    let _ = conn.close(200, "done".into()).await;
}

/// The echo servers and the client, set up and running.
pub(super) struct Echo {
    pub client: Arc<EchoClient>,
    conn: Connection,
    servers: Vec<Server>,
    dispatcher: Option<tokio::task::JoinHandle<()>>,
}

/// Declares the queues, starts the echo servers and connects the client.
pub(super) async fn start(cfg: &EchoConfig, prefix: &str) -> Result<Echo> {
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
    pub(super) async fn stop(&mut self) {
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
