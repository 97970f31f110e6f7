//! The watcher's round trips to the coordinator: reading the workers'
//! reports, running one election, following a path's changes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use actix::prelude::*;

use super::ElectionWatcher;
use crate::actors::FIRST_RETRY;
use crate::coord::election::{
    self, orchestrator_path, MasterRecord, OrchestratorRecord, WorkerReport, LEADER, MASTER,
    ORCHESTRATORS, SUCCESSION, WORKERS,
};
use crate::coord::{CoordError, Coordinator, NodeKind, WatchEvent};
use crate::core::election::{ballot, Ballot, Succession, SuccessionRecord};
use crate::error::{Error, Result};

/// How many times an election reads and writes `/master` again when it
/// changed meanwhile.
const ELECTION_TRIES: usize = 5;

/// Reads `/workers` and every report in it.
pub(super) async fn read_view(coord: Arc<dyn Coordinator>) -> Result<BTreeMap<u64, WorkerReport>> {
    let mut view = BTreeMap::new();
    for child in coord.children(WORKERS).await? {
        let Some(node) = coord.get(&format!("{WORKERS}/{child}")).await? else {
            continue; // gone meanwhile
        };
        match election::decode::<WorkerReport>(&node.data) {
            Some(r) => {
                view.insert(r.pid, r);
            }
            None => tracing::warn!(child, "unreadable worker report"),
        }
    }
    Ok(view)
}

/// One election: reads the reports and `/master`, decides a [`ballot`],
/// and writes `/master` by compare-and-set on the version it read. If
/// `/master` changed since the watcher last knew it (`known`), what it
/// names may stay (see [`ballot`]). Answers the record and whether this
/// election wrote it.
pub(super) async fn run_election(
    coord: Arc<dyn Coordinator>,
    dead: Option<u64>,
    succession: Succession,
    known: Option<i32>,
    leaving: BTreeSet<u64>,
) -> Result<((MasterRecord, i32), bool)> {
    // Kept before anyone is elected on it: a watcher that starts afresh
    // must know which stores to hear.
    keep_succession(coord.clone(), &succession.record()).await?;
    let mut known = known;
    for _ in 0..ELECTION_TRIES {
        let view = read_view(coord.clone()).await?;
        let current = coord.get(MASTER).await?;
        let version = current.as_ref().map(|n| n.version);
        let record = current
            .as_ref()
            .and_then(|n| election::decode::<MasterRecord>(&n.data));
        let changed = known.is_some_and(|k| Some(k) != version);
        let elected = match ballot(&view, record.as_ref(), changed, dead, &succession, &leaving) {
            Ballot::Keep => {
                let kept = record
                    .zip(version)
                    .ok_or_else(|| Error::Unavailable("/master went during the election".into()))?;
                return Ok((kept, false));
            }
            Ballot::Elect(elected) => elected,
            Ballot::Wait(why) => return Err(Error::Unavailable(why)),
        };
        let data = election::encode(&elected);
        let written = match version {
            Some(v) => coord.set(MASTER, &data, Some(v)).await,
            None => coord
                .create(MASTER, &data, NodeKind::Persistent)
                .await
                .map(|()| 0),
        };
        match written {
            Ok(version) => return Ok(((elected, version), true)),
            // Someone wrote it meanwhile: look again at what it says.
            Err(CoordError::BadVersion | CoordError::NodeExists) => known = version,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Unavailable(
        "/master kept changing during the election".into(),
    ))
}

/// Writes what the succession knows to `/succession`.
pub(super) async fn keep_succession(
    coord: Arc<dyn Coordinator>,
    record: &SuccessionRecord,
) -> Result<()> {
    let data = election::encode(record);
    match coord.set(SUCCESSION, &data, None).await {
        Err(CoordError::NoNode) => {}
        other => return other.map(drop).map_err(Into::into),
    }
    match coord.create(SUCCESSION, &data, NodeKind::Persistent).await {
        Err(CoordError::NodeExists) => coord
            .set(SUCCESSION, &data, None)
            .await
            .map(drop)
            .map_err(Into::into),
        other => other.map_err(Into::into),
    }
}

/// What `/succession` says (nothing kept yet: empty).
pub(super) async fn read_succession(coord: Arc<dyn Coordinator>) -> Result<SuccessionRecord> {
    let node = coord.get(SUCCESSION).await?;
    Ok(node
        .and_then(|n| election::decode(&n.data))
        .unwrap_or_default())
}

/// A path changed (`children`: its children) or the session ended.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Changed {
    pub path: &'static str,
    pub session_ended: bool,
    /// The session the watch was set in (a late word of an ended session
    /// must not end the one opened since).
    pub session: u64,
}

/// Registers this orchestrator (its ephemeral node), or brings its
/// record up to date.
pub(super) async fn register(coord: Arc<dyn Coordinator>, me: OrchestratorRecord) -> Result<()> {
    let path = orchestrator_path(coord.session_id());
    let data = election::encode(&me);
    match coord.set(&path, &data, None).await {
        Err(CoordError::NoNode) => {}
        other => return other.map(drop).map_err(Into::into),
    }
    coord.ensure(ORCHESTRATORS).await?;
    match coord.create(&path, &data, NodeKind::Ephemeral).await {
        Err(CoordError::NodeExists) => Ok(()),
        other => other.map_err(Into::into),
    }
}

/// Takes `/leader` if nobody holds it; answers who holds it then.
pub(super) async fn contend(
    coord: Arc<dyn Coordinator>,
    me: OrchestratorRecord,
) -> Result<Option<OrchestratorRecord>> {
    let data = election::encode(&me);
    match coord.create(LEADER, &data, NodeKind::Ephemeral).await {
        Ok(()) => Ok(Some(me)),
        Err(CoordError::NodeExists) => leader(coord).await,
        Err(e) => Err(e.into()),
    }
}

/// Who holds `/leader`.
pub(super) async fn leader(coord: Arc<dyn Coordinator>) -> Result<Option<OrchestratorRecord>> {
    let node = coord.get(LEADER).await?;
    Ok(node.and_then(|n| election::decode::<OrchestratorRecord>(&n.data)))
}

/// Every registered orchestrator, and the session that leads.
pub(super) async fn read_orchestrators(
    coord: Arc<dyn Coordinator>,
) -> Result<(Vec<OrchestratorRecord>, Option<u64>)> {
    let mut all = Vec::new();
    let children = match coord.children(ORCHESTRATORS).await {
        Err(CoordError::NoNode) => Vec::new(),
        other => other?,
    };
    for child in children {
        let node = coord.get(&format!("{ORCHESTRATORS}/{child}")).await?;
        if let Some(r) = node.and_then(|n| election::decode::<OrchestratorRecord>(&n.data)) {
            all.push(r);
        }
    }
    let leader = coord.get(LEADER).await?;
    let leader = leader
        .and_then(|n| election::decode::<OrchestratorRecord>(&n.data))
        .map(|l| l.session);
    Ok((all, leader))
}

/// Tells the watcher each change of `path` (or of its children) until
/// the session ends.
pub(super) async fn follow(
    coord: Arc<dyn Coordinator>,
    path: &'static str,
    children: bool,
    watcher: Addr<ElectionWatcher>,
) {
    let _ = coord.ensure(WORKERS).await;
    let _ = coord.ensure(ORCHESTRATORS).await;
    let session = coord.session_id();
    loop {
        let watched = if children {
            coord.watch_children(path).await.map(|(_, w)| w)
        } else {
            coord.watch_data(path).await.map(|(_, w)| w)
        };
        match watched {
            Ok(watch) => {
                watcher.do_send(Changed {
                    path,
                    session_ended: false,
                    session,
                });
                if watch.await == WatchEvent::SessionEnded {
                    break;
                }
            }
            Err(CoordError::SessionEnded) => break,
            Err(_) => tokio::time::sleep(FIRST_RETRY).await,
        }
    }
    watcher.do_send(Changed {
        path,
        session_ended: true,
        session,
    });
}
