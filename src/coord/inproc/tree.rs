//! The tree's operations: sessions, nodes and watches, each one step
//! under the server's lock.

use super::*;

impl Tree {
    pub(super) fn open_session(&mut self) -> (u64, watch::Receiver<SessionState>) {
        self.next_session += 1;
        let id = self.next_session;
        let (state, rx) = watch::channel(SessionState::Connected);
        let held = Vec::new();
        self.sessions.insert(id, Session { state, held });
        (id, rx)
    }

    /// Whether `session` may act now. One that expired while cut off
    /// cannot reach the coordinator to hear it: it is still unreachable.
    pub(super) fn check_session(&self, session: u64) -> CoordResult<()> {
        if self.limbo.contains_key(&session) {
            return Err(CoordError::Unavailable(
                "disconnected from the coordinator".into(),
            ));
        }
        match self.sessions.get(&session).map(|s| *s.state.borrow()) {
            Some(SessionState::Connected) => Ok(()),
            Some(SessionState::Disconnected) => Err(CoordError::Unavailable(
                "disconnected from the coordinator".into(),
            )),
            _ => Err(CoordError::SessionEnded),
        }
    }

    pub(super) fn end_session(&mut self, id: u64, end: SessionState) -> bool {
        let Some(session) = self.sessions.remove(&id) else {
            return false;
        };
        let mut fires = session.held;
        for armed in [&mut self.data_watches, &mut self.child_watches] {
            for list in armed.values_mut() {
                fires.extend(
                    extract(list, |w| w.session == id)
                        .into_iter()
                        .map(|w| w.fire),
                );
            }
            armed.retain(|_, list| !list.is_empty());
        }
        let unaware = *session.state.borrow() == SessionState::Disconnected;
        if unaware && end == SessionState::Expired {
            let limbo = Limbo {
                state: session.state,
                fires,
            };
            self.limbo.insert(id, limbo);
        } else {
            session.state.send_replace(end);
            for fire in fires {
                let _ = fire.send(WatchEvent::SessionEnded);
            }
        }
        let owned: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.owner == Some(id))
            .map(|(p, _)| p.clone())
            .collect();
        for path in owned {
            self.remove(&path);
        }
        true
    }

    pub(super) fn exists(&self, path: &str) -> bool {
        self.nodes.contains_key(path)
    }

    pub(super) fn node(&self, path: &str) -> CoordResult<&Node> {
        self.nodes.get(path).ok_or(CoordError::NoNode)
    }

    pub(super) fn read(&self, path: &str) -> Option<NodeData> {
        let node = self.nodes.get(path)?;
        Some(NodeData {
            data: node.data.clone(),
            version: node.version,
        })
    }

    /// The names of a node's children, sorted (the map is).
    pub(super) fn children(&self, path: &str) -> CoordResult<Vec<String>> {
        if !self.exists(path) {
            return Err(CoordError::NoNode);
        }
        let prefix = if path == "/" {
            "/".to_owned()
        } else {
            format!("{path}/")
        };
        Ok(self
            .nodes
            .range(prefix.clone()..)
            .map(|(p, _)| p)
            .take_while(|p| p.starts_with(&prefix))
            .filter_map(|p| p.get(prefix.len()..))
            .filter(|name| !name.is_empty() && !name.contains('/'))
            .map(str::to_owned)
            .collect())
    }

    pub(super) fn create(
        &mut self,
        path: &str,
        data: &[u8],
        owner: Option<u64>,
    ) -> CoordResult<()> {
        if self.exists(path) {
            return Err(CoordError::NodeExists);
        }
        let parent = parent(path);
        if !self.exists(parent) {
            return Err(CoordError::NoNode);
        }
        if self.nodes.get(parent).is_some_and(|n| n.owner.is_some()) {
            return Err(CoordError::Unavailable(
                "ephemeral nodes cannot have children".into(),
            ));
        }
        let node = Node {
            data: data.to_vec(),
            version: 0,
            owner,
        };
        self.nodes.insert(path.to_owned(), node);
        self.fire_data(path);
        self.fire_children(parent);
        Ok(())
    }

    /// Creates `path` and its missing parents, persistent.
    pub(super) fn make_path(&mut self, path: &str) -> CoordResult<()> {
        let mut end = 0;
        while end < path.len() {
            end = path[end + 1..]
                .find('/')
                .map_or(path.len(), |i| end + 1 + i);
            match self.create(&path[..end], &[], None) {
                Ok(()) | Err(CoordError::NodeExists) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    pub(super) fn set(
        &mut self,
        path: &str,
        data: &[u8],
        version: Option<i32>,
    ) -> CoordResult<i32> {
        let node = self.nodes.get_mut(path).ok_or(CoordError::NoNode)?;
        if version.is_some_and(|v| v != node.version) {
            return Err(CoordError::BadVersion);
        }
        node.data = data.to_vec();
        node.version = node.version.wrapping_add(1);
        let new = node.version;
        self.fire_data(path);
        Ok(new)
    }

    pub(super) fn delete(&mut self, path: &str, version: Option<i32>) -> CoordResult<()> {
        if path == "/" {
            return Err(CoordError::Unavailable("the root cannot be deleted".into()));
        }
        let node = self.node(path)?;
        if version.is_some_and(|v| v != node.version) {
            return Err(CoordError::BadVersion);
        }
        if !self.children(path)?.is_empty() {
            return Err(CoordError::NotEmpty);
        }
        self.remove(path);
        Ok(())
    }

    /// Removes a node known to exist without children.
    pub(super) fn remove(&mut self, path: &str) {
        self.nodes.remove(path);
        self.fire_data(path);
        self.fire_children(path);
        self.fire_children(parent(path));
    }

    pub(super) fn watch_data(&mut self, session: u64, path: &str) -> Watch {
        arm(&mut self.data_watches, session, path)
    }

    pub(super) fn watch_children(&mut self, session: u64, path: &str) -> Watch {
        arm(&mut self.child_watches, session, path)
    }

    pub(super) fn fire_data(&mut self, path: &str) {
        let armed = self.data_watches.remove(path).unwrap_or_default();
        self.fire(armed);
    }

    pub(super) fn fire_children(&mut self, path: &str) {
        let armed = self.child_watches.remove(path).unwrap_or_default();
        self.fire(armed);
    }

    /// Fires watches, holding those of disconnected sessions.
    pub(super) fn fire(&mut self, armed: Vec<Armed>) {
        for w in armed {
            match self.sessions.get_mut(&w.session) {
                Some(s) if *s.state.borrow() == SessionState::Disconnected => s.held.push(w.fire),
                Some(_) => {
                    let _ = w.fire.send(WatchEvent::Changed);
                }
                None => {
                    let _ = w.fire.send(WatchEvent::SessionEnded);
                }
            }
        }
    }
}

/// Arms a watch on `path`, forgetting the ones on it nobody awaits.
fn arm(watches: &mut HashMap<String, Vec<Armed>>, session: u64, path: &str) -> Watch {
    let (fire, fired) = oneshot::channel();
    let list = watches.entry(path.to_owned()).or_default();
    list.retain(|w| !w.fire.is_closed());
    list.push(Armed { session, fire });
    Box::pin(async move { fired.await.unwrap_or(WatchEvent::SessionEnded) })
}

/// Removes and returns the elements that match.
fn extract<T>(list: &mut Vec<T>, matches: impl Fn(&T) -> bool) -> Vec<T> {
    let (out, keep) = std::mem::take(list).into_iter().partition(matches);
    *list = keep;
    out
}

/// The parent of a full path (`/` for a top-level node).
fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}
