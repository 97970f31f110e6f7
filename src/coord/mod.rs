//! The coordinator seam: who is alive and who leads, behind one small
//! trait with two implementations: ZooKeeper through zookeeper-client
//! ([`zk::ZkCoordinator`]) for real runs, and an in-process twin with the
//! same semantics ([`inproc::InProcCoordinator`]) for the embedded default
//! and the actor-level tests. One conformance suite ([`conformance`])
//! holds both to the same behaviour.
//!
//! A [`Coordinator`] is one *session*. Semantics both keep (ZooKeeper's):
//! - nodes form a tree of `/`-separated paths under the coordinator's
//!   root (several clusters can share one ZooKeeper under their own
//!   roots); a node has data and a version that every `set` bumps;
//! - a node is created only under an existing parent; creating one that
//!   exists fails with [`CoordError::NodeExists`];
//! - `set` and `delete` with `Some(version)` succeed only if the node still
//!   has that version ([`CoordError::BadVersion`]): compare-and-set;
//! - an *ephemeral* node belongs to the session that created it and
//!   vanishes when that session ends (closed, or expired because the
//!   coordinator stopped hearing from it); any session may delete it
//!   sooner;
//! - a watch fires once, on the next change of what it watches (a node's
//!   creation, data change or deletion; a change of a node's children),
//!   or when the session ends; it is set atomically with the read it
//!   comes with, so no change between the read and the watch is missed;
//! - a session reports its state ([`SessionState`]): while disconnected
//!   it may come back (the same session, its ephemeral nodes kept) until
//!   the coordinator expires it; expired and closed are final.
//!
//! The election rule lives beside the seam ([`election`]).

pub mod conformance;
pub mod election;
pub mod inproc;
pub mod zk;

use std::future::Future;
use std::pin::Pin;

use async_trait::async_trait;
use tokio::sync::watch;

/// The state of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    Connected,
    /// Not in touch with the coordinator now; the session may still be
    /// alive there, or may expire meanwhile.
    Disconnected,
    /// Final: the coordinator ended the session (its ephemerals are gone,
    /// or going).
    Expired,
    /// Final: closed on purpose.
    Closed,
}

impl SessionState {
    pub fn is_final(self) -> bool {
        matches!(self, SessionState::Expired | SessionState::Closed)
    }
}

/// What can go wrong with a coordinator call.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CoordError {
    #[error("no such node")]
    NoNode,
    #[error("the node exists")]
    NodeExists,
    #[error("the node has another version")]
    BadVersion,
    #[error("the node has children")]
    NotEmpty,
    /// The session is over (expired or closed): nothing more can be done
    /// with it; a new one must be opened.
    #[error("the coordinator session ended")]
    SessionEnded,
    /// Not reachable now (or the call timed out); retrying may work.
    #[error("coordinator unavailable: {0}")]
    Unavailable(String),
}

impl From<CoordError> for crate::error::Error {
    fn from(e: CoordError) -> Self {
        crate::error::Error::Unavailable(format!("coordinator: {e}"))
    }
}

/// The coordinator's result type.
pub type CoordResult<T> = std::result::Result<T, CoordError>;

/// A node's data and version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeData {
    pub data: Vec<u8>,
    pub version: i32,
}

/// Why a watch fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchEvent {
    /// What it watched changed (created, changed, deleted; children
    /// added or removed): read again.
    Changed,
    /// The session ended: the watch will not fire again.
    SessionEnded,
}

/// A one-shot watch: resolves once.
pub type Watch = Pin<Box<dyn Future<Output = WatchEvent> + Send>>;

/// How a node is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    Persistent,
    /// Belongs to this session; gone when the session ends.
    Ephemeral,
}

/// One session with the coordinator. Paths are absolute within the
/// coordinator's root (`/master` is `<root>/master`).
#[async_trait]
pub trait Coordinator: Send + Sync + 'static {
    /// This session's id (unique among live sessions).
    fn session_id(&self) -> u64;
    /// The session's state, as it changes.
    fn state(&self) -> watch::Receiver<SessionState>;
    /// The session timeout the coordinator granted (it may differ from the
    /// one asked for): it expires a session no sooner than this after the
    /// last request it got from it.
    fn session_timeout(&self) -> std::time::Duration;
    /// Creates a node whose parent exists.
    async fn create(&self, path: &str, data: &[u8], kind: NodeKind) -> CoordResult<()>;
    /// Creates a persistent node and any missing parents; an existing
    /// node is fine (`mkdir -p`).
    async fn ensure(&self, path: &str) -> CoordResult<()>;
    /// A node's data and version; `None` if it does not exist.
    async fn get(&self, path: &str) -> CoordResult<Option<NodeData>>;
    /// Replaces a node's data, if it has `version` (when given); returns
    /// the new version.
    async fn set(&self, path: &str, data: &[u8], version: Option<i32>) -> CoordResult<i32>;
    /// Deletes a node without children, if it has `version` (when given).
    async fn delete(&self, path: &str, version: Option<i32>) -> CoordResult<()>;
    /// The names of a node's children, sorted.
    async fn children(&self, path: &str) -> CoordResult<Vec<String>>;
    /// [`Coordinator::get`], and a watch on the node's creation, data
    /// change or deletion (the node need not exist).
    async fn watch_data(&self, path: &str) -> CoordResult<(Option<NodeData>, Watch)>;
    /// [`Coordinator::children`], and a watch on the node's children
    /// (and its deletion).
    async fn watch_children(&self, path: &str) -> CoordResult<(Vec<String>, Watch)>;
    /// Ends the session now: its ephemeral nodes vanish at once, its
    /// pending watches resolve with [`WatchEvent::SessionEnded`], its state
    /// becomes [`SessionState::Closed`] (an expired session stays
    /// expired) and every later call fails with
    /// [`CoordError::SessionEnded`]. Idempotent. Dropping the last handle
    /// of a session closes it too, on a best-effort basis.
    async fn close(&self);
}

/// Checks a path the way ZooKeeper does: absolute, no empty, `.` or `..`
/// segment, no trailing `/` (but `/` itself, the root), no control
/// characters. A bad path is the caller's mistake, but [`CoordError`] has
/// no variant for it, so it is reported as [`CoordError::Unavailable`]
/// with the reason.
pub(crate) fn check_path(path: &str) -> CoordResult<()> {
    let bad = |why: &str| Err(CoordError::Unavailable(format!("bad path {path:?}: {why}")));
    let Some(rest) = path.strip_prefix('/') else {
        return bad("not absolute");
    };
    if rest.is_empty() {
        return Ok(());
    }
    let unnamed = |s: &str| s.is_empty() || s == "." || s == "..";
    if rest.split('/').any(unnamed) {
        return bad("empty, `.` or `..` segment, or a trailing `/`");
    }
    if rest.chars().any(unsupported_char) {
        return bad("unsupported character");
    }
    Ok(())
}

/// The characters ZooKeeper refuses in a path.
fn unsupported_char(c: char) -> bool {
    matches!(u32::from(c), 0..=0x1f | 0x7f..=0x9f | 0xd800..=0xf8ff | 0xfff0..=0xffff)
}
