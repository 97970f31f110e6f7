//! The connection: opened on the I/O runtime of this module, bounded, with
//! its pool of publishing channels, and closed in the background when it
//! is replaced.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::OnceLock;

use lapin::options::ConfirmSelectOptions;
use lapin::uri::AMQPUri;
use lapin::ConnectionProperties;
use tokio::sync::watch;

use super::*;

/// The runtime lapin's tasks run on (see the module docs), started on first
/// use and kept for the life of the process.
pub(super) fn io_runtime() -> Result<&'static tokio::runtime::Runtime> {
    static RUNTIME: OnceLock<std::result::Result<tokio::runtime::Runtime, String>> =
        OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("dbaas-amqp")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| unavailable(format!("no runtime for the connection: {e}")))
}

/// Connects to `url`, bounded; the connection's tasks run on the I/O
/// runtime (lapin binds them to the runtime it connects from). Unless the
/// URL asks for another (`?heartbeat=N`), heartbeats are [`HEARTBEAT`]
/// apart.
pub(super) async fn connect(url: &str, limit: Duration) -> Result<Connection> {
    let props = ConnectionProperties::default().with_connection_name("dbaas".into());
    let mut uri: AMQPUri = url.parse().map_err(unavailable)?;
    uri.query
        .heartbeat
        .get_or_insert(HEARTBEAT.as_secs() as u16);
    let mut task = io_runtime()?.spawn(async move { Connection::connect_uri(uri, props).await });
    match tokio::time::timeout(limit, &mut task).await {
        Ok(Ok(connected)) => connected.map_err(unavailable),
        Ok(Err(e)) => Err(unavailable(e)),
        Err(_) => {
            task.abort();
            Err(timed_out("connecting", limit))
        }
    }
}

pub(super) struct Live {
    pub(super) conn: Connection,
    /// Publishing channels in confirm mode, opened on first use and again
    /// when the broker has closed one.
    pub(super) publish: [Mutex<Option<Channel>>; PUBLISH_CHANNELS],
    pub(super) next: AtomicUsize,
    /// A wait on this connection timed out while the broker had not said it
    /// blocks it: it may be dead without lapin knowing yet.
    pub(super) in_doubt: AtomicBool,
    /// Turns true when the connection is put in doubt: its consumers end
    /// then, rather than when its close is answered, which a hung node
    /// never does. (`in_doubt` says the same, as a plain atomic load for
    /// every call's `usable` check; `doubt` sets both.)
    doubted: watch::Sender<bool>,
    /// The index of its node in the target's list.
    pub(super) node: usize,
    /// Lost, it has made the next connection attempt go to the next node.
    pub(super) moved_on: AtomicBool,
}

impl Live {
    pub(super) fn new(conn: Connection, node: usize) -> Self {
        Live {
            conn,
            node,
            moved_on: AtomicBool::new(false),
            publish: Default::default(),
            next: AtomicUsize::new(0),
            in_doubt: AtomicBool::new(false),
            doubted: watch::channel(false).0,
        }
    }

    /// Puts the connection in doubt: the next call opens another, and its
    /// consumers end now, so that their actors subscribe on that other.
    pub(super) fn doubt(&self) {
        self.in_doubt.store(true, Ordering::Relaxed);
        self.doubted.send_replace(true);
    }

    /// Resolves once the connection is in doubt.
    pub(super) fn doubted(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.doubted.subscribe();
        async move {
            // (An error: the connection is gone, and its consumers with it.)
            let _ = rx.wait_for(|d| *d).await;
        }
    }

    pub(super) fn usable(&self) -> bool {
        self.conn.status().connected() && !self.in_doubt.load(Ordering::Relaxed)
    }

    /// Waits at most `limit` for `op`, named `what` in the error.
    pub(super) async fn bounded<T>(
        &self,
        what: &str,
        limit: Duration,
        op: impl Future<Output = lapin::Result<T>>,
    ) -> Result<T> {
        match tokio::time::timeout(limit, op).await {
            Ok(done) => done.map_err(unavailable),
            Err(_) => {
                let blocked = self.conn.status().blocked();
                if !blocked {
                    self.doubt();
                }
                tracing::warn!(what, blocked, "the broker did not answer in time");
                Err(timed_out(what, limit))
            }
        }
    }

    pub(super) async fn open_channel(&self) -> Result<Channel> {
        self.bounded("opening a channel", OP_TIMEOUT, self.conn.create_channel())
            .await
    }

    /// A publishing channel, round robin.
    pub(super) async fn publisher(&self) -> Result<Channel> {
        let slot = &self.publish[self.next.fetch_add(1, Ordering::Relaxed) % PUBLISH_CHANNELS];
        if let Some(ch) = lock(slot).as_ref().filter(|c| c.status().connected()) {
            return Ok(ch.clone());
        }
        let ch = self.open_channel().await?;
        let confirms = ch.confirm_select(ConfirmSelectOptions::default());
        self.bounded("confirm.select", OP_TIMEOUT, confirms).await?;
        // Two tasks may open one for the same slot at once; the channel
        // left out closes when its last user drops it.
        *lock(slot) = Some(ch.clone());
        Ok(ch)
    }

    /// Closes a connection replaced while it is still up (it was in doubt),
    /// in the background: its consumers' streams end, and their actors
    /// subscribe again on the new one.
    pub(super) fn retire(self: Arc<Self>) {
        if !self.conn.status().connected() {
            return;
        }
        if let Ok(rt) = io_runtime() {
            rt.spawn(async move {
                let close = self.conn.close(REPLY_SUCCESS, "in doubt".into());
                let _ = tokio::time::timeout(OP_TIMEOUT, close).await;
            });
        }
    }
}
