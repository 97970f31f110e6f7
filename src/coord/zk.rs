//! The coordinator over ZooKeeper, through zookeeper-client: one
//! [`ZkCoordinator`] is one ZooKeeper session, chrooted at its root.
//!
//! What the client does for us, and what we add:
//! - it reconnects by itself after a connection loss, keeping the session
//!   (and its ephemerals and watches) if it comes back within the session
//!   timeout; calls made meanwhile are queued. Every call here is bounded
//!   ([`ZkCoordinator::call_timeout`]): one the server does not answer in
//!   time fails with [`CoordError::Unavailable`];
//! - it declares the session expired by itself 1.4 session timeouts after
//!   it last heard from the server, even while the server is unreachable.
//!   Then the server may not have expired it yet (a standalone server that
//!   restarts gives every session a fresh timeout): `Expired` here does not
//!   mean that the ephemerals are gone yet;
//! - closing is dropping the last clone of the client: its session task
//!   then sends CloseSession. [`Coordinator::close`] waits (bounded) for
//!   that to be done, so that the ephemerals vanish at once rather than a
//!   session timeout later.
//!
//! **Runtime**: the client's session task is spawned on the tokio runtime
//! that awaits [`ZkCoordinator::connect`], and dies with it (the client then
//! still reports itself connected, and every call fails). Connect on a
//! long-lived runtime, such as an actix System's, never on a short-lived
//! `block_on` or an arbiter that may stop.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use tokio::sync::watch;
use zookeeper_client as zk;

use super::{
    check_path, CoordError, CoordResult, Coordinator, NodeData, NodeKind, SessionState, Watch,
    WatchEvent,
};

static PERSISTENT: zk::CreateOptions<'static> =
    zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
static EPHEMERAL: zk::CreateOptions<'static> =
    zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());

/// The least a call may wait for its answer: short sessions (a few hundred
/// ms, for fast failover) must not make calls give up during a busy moment
/// that does not end the session.
const MIN_CALL_WAIT: Duration = Duration::from_secs(2);

/// How long [`Coordinator::close`] waits for the session to be closed.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// One ZooKeeper session; paths are under its root.
pub struct ZkCoordinator {
    /// `None` once closed: calls then fail at once.
    client: Mutex<Option<zk::Client>>,
    session_id: u64,
    state: Arc<watch::Sender<SessionState>>,
    call_timeout: Duration,
    /// The session timeout the server granted.
    granted: Duration,
}

impl ZkCoordinator {
    /// Opens a session with the ZooKeeper at `hosts` (`host:port[,...]`),
    /// asking for `session_timeout` (the server clamps it to its bounds),
    /// and makes `root` (absolute, e.g. `/dbaas/main`) with its parents if
    /// missing. Fails with [`CoordError::Unavailable`] if no server
    /// answers within about the session timeout. Must be awaited on a
    /// long-lived tokio runtime (see the module doc).
    pub async fn connect(
        hosts: &str,
        root: &str,
        session_timeout: Duration,
    ) -> CoordResult<ZkCoordinator> {
        check_path(root)?;
        let connecting = zk::Client::connector()
            .with_session_timeout(session_timeout)
            .connect(hosts);
        // The client gives up by itself after the session timeout; this
        // bound is only a guard.
        let guard = session_timeout.saturating_mul(2) + MIN_CALL_WAIT;
        let client = bounded(guard, connecting).await?;
        let call_timeout = client.session_timeout().max(MIN_CALL_WAIT);
        if root != "/" {
            bounded(call_timeout, client.mkdir(root, &PERSISTENT)).await?;
        }
        let client = client
            .chroot(root)
            .map_err(|_| CoordError::Unavailable(format!("bad root {root:?}")))?;
        Ok(Self::start(client, call_timeout))
    }

    /// How long a call waits for its answer: the negotiated session
    /// timeout, and at least 2 s.
    pub fn call_timeout(&self) -> Duration {
        self.call_timeout
    }

    fn start(client: zk::Client, call_timeout: Duration) -> ZkCoordinator {
        let states = client.state_watcher();
        let state = Arc::new(watch::channel(session_state(client.state())).0);
        tokio::spawn(follow(states, state.clone()));
        ZkCoordinator {
            session_id: client.session_id().0 as u64,
            granted: client.session_timeout(),
            client: Mutex::new(Some(client)),
            state,
            call_timeout,
        }
    }

    /// A handle on the session for one call, unless it was closed. A call
    /// holds it to its end, so a close waits for calls in flight.
    fn client(&self) -> CoordResult<zk::Client> {
        let client = self.client.lock().unwrap_or_else(|e| e.into_inner());
        client.clone().ok_or(CoordError::SessionEnded)
    }

    fn take_client(&self) -> Option<zk::Client> {
        self.client.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    async fn call<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, zk::Error>>,
    ) -> CoordResult<T> {
        bounded(self.call_timeout, f).await
    }
}

/// Waits for a ZooKeeper answer at most `within`.
async fn bounded<T>(
    within: Duration,
    f: impl std::future::Future<Output = Result<T, zk::Error>>,
) -> CoordResult<T> {
    match tokio::time::timeout(within, f).await {
        Ok(answer) => answer.map_err(coord_error),
        Err(_) => Err(CoordError::Unavailable(format!(
            "no answer from ZooKeeper within {within:?}"
        ))),
    }
}

fn coord_error(e: zk::Error) -> CoordError {
    match e {
        zk::Error::NoNode => CoordError::NoNode,
        zk::Error::NodeExists => CoordError::NodeExists,
        zk::Error::BadVersion => CoordError::BadVersion,
        zk::Error::NotEmpty => CoordError::NotEmpty,
        zk::Error::SessionExpired | zk::Error::ClientClosed | zk::Error::AuthFailed => {
            CoordError::SessionEnded
        }
        other => CoordError::Unavailable(format!("ZooKeeper: {other}")),
    }
}

/// Ours for the client's; a failed authentication ends the session as an
/// expiry does.
fn session_state(s: zk::SessionState) -> SessionState {
    match s {
        zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly => {
            SessionState::Connected
        }
        zk::SessionState::Disconnected => SessionState::Disconnected,
        zk::SessionState::Expired | zk::SessionState::AuthFailed => SessionState::Expired,
        zk::SessionState::Closed => SessionState::Closed,
    }
}

/// Follows the client's session state into ours, until it is final.
async fn follow(mut states: zk::StateWatcher, state: Arc<watch::Sender<SessionState>>) {
    loop {
        // After a final state `changed()` would pend forever: stop first.
        let now = session_state(states.peek_state());
        publish(&state, now);
        if now.is_final() {
            return;
        }
        states.changed().await;
    }
}

/// Sets the state, unless it is final already (a closed session does not
/// become expired later, nor the other way round).
fn publish(state: &watch::Sender<SessionState>, new: SessionState) {
    state.send_if_modified(|s| {
        let changes = !s.is_final() && *s != new;
        if changes {
            *s = new;
        }
        changes
    });
}

/// Ours for the client's one-shot watcher. Only final session events reach
/// it. Should its session task die with its runtime, the watcher panics;
/// that is taken as the end of the session.
fn watch_of(w: zk::OneshotWatcher) -> Watch {
    Box::pin(async move {
        match AssertUnwindSafe(w.changed()).catch_unwind().await {
            Ok(event) if event.event_type != zk::EventType::Session => WatchEvent::Changed,
            _ => WatchEvent::SessionEnded,
        }
    })
}

fn node_data((data, stat): (Vec<u8>, zk::Stat)) -> NodeData {
    NodeData {
        data,
        version: stat.version,
    }
}

fn sorted(mut names: Vec<String>) -> Vec<String> {
    names.sort_unstable();
    names
}

/// `None` for a node that is not there.
fn or_none<T>(r: CoordResult<T>) -> CoordResult<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(CoordError::NoNode) => Ok(None),
        Err(e) => Err(e),
    }
}

#[async_trait]
impl Coordinator for ZkCoordinator {
    fn session_id(&self) -> u64 {
        self.session_id
    }

    fn state(&self) -> watch::Receiver<SessionState> {
        self.state.subscribe()
    }

    fn session_timeout(&self) -> Duration {
        self.granted
    }

    async fn create(&self, path: &str, data: &[u8], kind: NodeKind) -> CoordResult<()> {
        let c = self.client()?;
        check_path(path)?;
        if path == "/" {
            // The root: the client refuses to create it, it exists.
            return Err(CoordError::NodeExists);
        }
        let options = match kind {
            NodeKind::Persistent => &PERSISTENT,
            NodeKind::Ephemeral => &EPHEMERAL,
        };
        self.call(c.create(path, data, options)).await.map(drop)
    }

    async fn ensure(&self, path: &str) -> CoordResult<()> {
        let c = self.client()?;
        check_path(path)?;
        if path == "/" {
            let root = self.call(c.check_stat("/")).await?;
            return root.map(drop).ok_or(CoordError::NoNode);
        }
        self.call(c.mkdir(path, &PERSISTENT)).await
    }

    async fn get(&self, path: &str) -> CoordResult<Option<NodeData>> {
        let c = self.client()?;
        check_path(path)?;
        or_none(self.call(c.get_data(path)).await.map(node_data))
    }

    async fn set(&self, path: &str, data: &[u8], version: Option<i32>) -> CoordResult<i32> {
        let c = self.client()?;
        check_path(path)?;
        let stat = self.call(c.set_data(path, data, version)).await?;
        Ok(stat.version)
    }

    async fn delete(&self, path: &str, version: Option<i32>) -> CoordResult<()> {
        let c = self.client()?;
        check_path(path)?;
        self.call(c.delete(path, version)).await
    }

    async fn children(&self, path: &str) -> CoordResult<Vec<String>> {
        let c = self.client()?;
        check_path(path)?;
        self.call(c.list_children(path)).await.map(sorted)
    }

    /// An exists watch (it fires on creation too) and the read, sent
    /// together: the server answers them in order, so the watch is set
    /// before the read and nothing after the read is missed. A change in
    /// between fires the watch for what the read already shows, which
    /// costs the caller one more read and loses nothing.
    async fn watch_data(&self, path: &str) -> CoordResult<(Option<NodeData>, Watch)> {
        let c = self.client()?;
        check_path(path)?;
        let both = async {
            let (watched, read) = futures::join!(c.check_and_watch_stat(path), c.get_data(path));
            let (_, watcher) = watched?;
            let data = match read {
                Ok(read) => Some(node_data(read)),
                Err(zk::Error::NoNode) => None,
                Err(e) => return Err(e),
            };
            Ok((data, watch_of(watcher)))
        };
        self.call(both).await
    }

    async fn watch_children(&self, path: &str) -> CoordResult<(Vec<String>, Watch)> {
        let c = self.client()?;
        check_path(path)?;
        let (names, watcher) = self.call(c.list_and_watch_children(path)).await?;
        Ok((sorted(names), watch_of(watcher)))
    }

    async fn close(&self) {
        let Some(client) = self.take_client() else {
            // Closed already, or closing: wait as the first close does.
            let mut state = self.state.subscribe();
            let _ = tokio::time::timeout(CLOSE_WAIT, state.wait_for(|s| s.is_final())).await;
            return;
        };
        let mut states = client.state_watcher();
        drop(client);
        let closed = async {
            while !states.peek_state().is_terminated() {
                states.changed().await;
            }
        };
        // Not closed in time (a call in flight holds the client, or the
        // server is out of reach): the session ends by itself later.
        let _ = tokio::time::timeout(CLOSE_WAIT, closed).await;
        publish(&self.state, SessionState::Closed);
    }
}
