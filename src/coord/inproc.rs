//! The in-process coordinator: ZooKeeper's semantics (see the module doc
//! of [`crate::coord`]) over one tree behind one mutex, for the embedded
//! default and for tests that must make sessions expire or disconnect on
//! cue.
//!
//! An [`InProcServer`] stands for the ZooKeeper ensemble; each
//! [`InProcServer::connect`] opens a session ([`InProcCoordinator`]) whose
//! paths live under its root, as a chroot does. Every operation, and the
//! watch it sets, is one step under the lock, so a watch set with a read
//! misses nothing after the read.
//!
//! Nothing here loses contact on its own: the test hooks
//! [`InProcServer::expire`], [`InProcServer::disconnect`] and
//! [`InProcServer::reconnect`] stand for what a network and a session
//! timeout would do. A disconnected session keeps its ephemerals; its
//! calls fail at once with [`CoordError::Unavailable`] (ZooKeeper's client
//! would queue them until it reconnects: failing fast is simpler and
//! callers must retry either way), and its watches that fire meanwhile are
//! held until it reconnects (ZooKeeper delivers them on reconnection too).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use tokio::sync::{oneshot, watch};

use super::{
    check_path, CoordError, CoordResult, Coordinator, NodeData, NodeKind, SessionState, Watch,
    WatchEvent,
};

/// The shared coordinator: one tree and its sessions. Cheap to clone; the
/// clones are the same server.
#[derive(Clone, Default)]
pub struct InProcServer {
    tree: Arc<Mutex<Tree>>,
}

/// One session on an [`InProcServer`]. Dropping it closes the session.
pub struct InProcCoordinator {
    server: InProcServer,
    id: u64,
    root: String,
    state: watch::Receiver<SessionState>,
}

struct Tree {
    /// By full path.
    nodes: BTreeMap<String, Node>,
    sessions: HashMap<u64, Session>,
    next_session: u64,
    data_watches: HashMap<String, Vec<Armed>>,
    child_watches: HashMap<String, Vec<Armed>>,
    /// Sessions that expired while disconnected: their clients learn it
    /// (state and watches) only when they reconnect, as ZooKeeper's do.
    limbo: HashMap<u64, Limbo>,
}

/// What an expired session's client has not been told yet.
struct Limbo {
    state: watch::Sender<SessionState>,
    fires: Vec<oneshot::Sender<WatchEvent>>,
}

impl Default for Tree {
    /// The server's root, `/`, is always there.
    fn default() -> Self {
        let root = Node {
            data: Vec::new(),
            version: 0,
            owner: None,
        };
        Tree {
            nodes: BTreeMap::from([("/".to_owned(), root)]),
            sessions: HashMap::new(),
            next_session: 0,
            data_watches: HashMap::new(),
            child_watches: HashMap::new(),
            limbo: HashMap::new(),
        }
    }
}

struct Node {
    data: Vec<u8>,
    version: i32,
    /// The session an ephemeral node belongs to.
    owner: Option<u64>,
}

/// A live session (ended ones are removed).
struct Session {
    state: watch::Sender<SessionState>,
    /// Watches that fired while the session was disconnected.
    held: Vec<oneshot::Sender<WatchEvent>>,
}

/// A watch waiting for its change.
struct Armed {
    session: u64,
    fire: oneshot::Sender<WatchEvent>,
}

mod tree;

impl InProcServer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Opens a session whose paths live under `root` (created, with its
    /// parents, if missing).
    pub fn connect(&self, root: &str) -> CoordResult<InProcCoordinator> {
        check_path(root)?;
        let mut tree = self.lock();
        tree.make_path(root)?;
        let (id, state) = tree.open_session();
        Ok(InProcCoordinator {
            server: self.clone(),
            id,
            root: root.to_owned(),
            state,
        })
    }

    /// The live sessions and their states, by id.
    pub fn sessions(&self) -> Vec<(u64, SessionState)> {
        let tree = self.lock();
        let mut all: Vec<_> = tree
            .sessions
            .iter()
            .map(|(id, s)| (*id, *s.state.borrow()))
            .collect();
        all.sort_unstable_by_key(|(id, _)| *id);
        all
    }

    /// Ends a session as ZooKeeper does when it stops hearing from it: its
    /// ephemerals go, its watches resolve, its state is `Expired` (a
    /// disconnected session's client learns that only when it reconnects).
    /// False if it was not live.
    pub fn expire(&self, session_id: u64) -> bool {
        self.lock().end_session(session_id, SessionState::Expired)
    }

    /// Cuts a session off (see the module doc). False if it was not live.
    pub fn disconnect(&self, session_id: u64) -> bool {
        let mut tree = self.lock();
        let Some(s) = tree.sessions.get_mut(&session_id) else {
            return false;
        };
        s.state.send_replace(SessionState::Disconnected);
        true
    }

    /// Brings a disconnected session back, and delivers the watches that
    /// fired meanwhile; a session that expired meanwhile learns it now.
    /// False if it was neither.
    pub fn reconnect(&self, session_id: u64) -> bool {
        let mut tree = self.lock();
        if let Some(limbo) = tree.limbo.remove(&session_id) {
            limbo.state.send_replace(SessionState::Expired);
            for fire in limbo.fires {
                let _ = fire.send(WatchEvent::SessionEnded);
            }
            return true;
        }
        let Some(s) = tree.sessions.get_mut(&session_id) else {
            return false;
        };
        s.state.send_replace(SessionState::Connected);
        for fire in s.held.drain(..) {
            let _ = fire.send(WatchEvent::Changed);
        }
        true
    }

    /// The tree; a panic elsewhere while holding it leaves it consistent
    /// (every step checks before it changes anything), so poisoning is
    /// ignored.
    fn lock(&self) -> MutexGuard<'_, Tree> {
        self.tree.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl InProcCoordinator {
    /// The full path of a session path, after checking it.
    fn full(&self, path: &str) -> CoordResult<String> {
        check_path(path)?;
        Ok(match (self.root.as_str(), path) {
            (_, "/") => self.root.clone(),
            ("/", _) => path.to_owned(),
            (root, _) => format!("{root}{path}"),
        })
    }

    /// Runs one step on the tree, as this session, on `path` made full.
    fn step<T>(
        &self,
        path: &str,
        f: impl FnOnce(&mut Tree, &str) -> CoordResult<T>,
    ) -> CoordResult<T> {
        let mut tree = self.server.lock();
        tree.check_session(self.id)?;
        let full = self.full(path)?;
        f(&mut tree, &full)
    }
}

#[async_trait]
impl Coordinator for InProcCoordinator {
    fn session_id(&self) -> u64 {
        self.id
    }

    fn state(&self) -> watch::Receiver<SessionState> {
        self.state.clone()
    }

    /// The twin expires sessions only when told to; callers' own timeout
    /// stands (see [`crate::system::EMBEDDED_SESSION`]).
    fn session_timeout(&self) -> std::time::Duration {
        std::time::Duration::MAX
    }

    async fn create(&self, path: &str, data: &[u8], kind: NodeKind) -> CoordResult<()> {
        let owner = (kind == NodeKind::Ephemeral).then_some(self.id);
        self.step(path, |t, p| t.create(p, data, owner))
    }

    async fn ensure(&self, path: &str) -> CoordResult<()> {
        let root = &self.root;
        self.step(path, |t, p| {
            // Within the root only, as under ZooKeeper's chroot.
            if t.exists(root) {
                t.make_path(p)
            } else {
                Err(CoordError::NoNode)
            }
        })
    }

    async fn get(&self, path: &str) -> CoordResult<Option<NodeData>> {
        self.step(path, |t, p| Ok(t.read(p)))
    }

    async fn set(&self, path: &str, data: &[u8], version: Option<i32>) -> CoordResult<i32> {
        self.step(path, |t, p| t.set(p, data, version))
    }

    async fn delete(&self, path: &str, version: Option<i32>) -> CoordResult<()> {
        self.step(path, |t, p| t.delete(p, version))
    }

    async fn children(&self, path: &str) -> CoordResult<Vec<String>> {
        self.step(path, |t, p| t.children(p))
    }

    async fn watch_data(&self, path: &str) -> CoordResult<(Option<NodeData>, Watch)> {
        self.step(path, |t, p| Ok((t.read(p), t.watch_data(self.id, p))))
    }

    async fn watch_children(&self, path: &str) -> CoordResult<(Vec<String>, Watch)> {
        self.step(path, |t, p| {
            let children = t.children(p)?;
            Ok((children, t.watch_children(self.id, p)))
        })
    }

    async fn close(&self) {
        self.server
            .lock()
            .end_session(self.id, SessionState::Closed);
    }
}

impl Drop for InProcCoordinator {
    fn drop(&mut self) {
        self.server
            .lock()
            .end_session(self.id, SessionState::Closed);
    }
}

#[cfg(test)]
mod tests;
