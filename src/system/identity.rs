//! The cluster's identity: made with its first data directory, kept there
//! and in the coordinator's root.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::actors::worker::Connector;
use crate::coord::election::{orchestrator_path, CLUSTER, MASTER, ORCHESTRATORS, SUCCESSION};
use crate::coord::{CoordError, Coordinator, NodeKind};
use crate::core::backoff::RECONNECT;
use crate::error::{Error, Result};

/// The file in the data directory that holds the cluster's identity.
const IDENTITY_FILE: &str = "cluster-id";

/// Opens the session an orchestrator starts with and learns the
/// cluster's identity through it ([`identity`]). While the coordinator
/// is unavailable (a ZooKeeper that misses a ping on a loaded machine, an
/// ensemble electing its leader) it tries again, on a new session, with
/// the backoff of every reconnect, until `within` has passed: a passing
/// outage delays a start, it does not end it. Any other error ends it at
/// once.
pub(super) async fn identify(
    connect: &Connector,
    data_dir: &Path,
    within: Duration,
) -> Result<(Arc<dyn Coordinator>, u64)> {
    let deadline = Instant::now() + within;
    let mut wait = RECONNECT.first_wait();
    loop {
        let attempt = match connect().await {
            Ok(coord) => match identity(coord.as_ref(), data_dir).await {
                Ok(id) => return Ok((coord, id)),
                Err(e) => {
                    // Its registration goes with it (or with its expiry).
                    coord.close().await;
                    e
                }
            },
            Err(e) => e.into(),
        };
        if !attempt.is_retryable() || Instant::now() + wait > deadline {
            return Err(attempt);
        }
        tracing::warn!(error = %attempt, "coordinator unavailable at start; trying again");
        tokio::time::sleep(wait).await;
        wait = RECONNECT.next_wait(wait);
    }
}

/// The cluster's identity: the data directory's (a new one for a new
/// directory), which the coordinator's root must hold too. A root that
/// holds another cluster's is refused, unless the directory is new: then
/// it joins the cluster if orchestrators serve it now (one more
/// orchestrator needs no data of its own), and otherwise a new cluster
/// takes the root over (and its `/master` goes).
///
/// The session `coord` is registered under `/orchestrators` first (a node
/// without a record, which views skip), and should stay open until the
/// orchestrator has registered for good: another orchestrator starting
/// meanwhile then finds this one serving, and joins its cluster rather
/// than taking the root over.
pub(super) async fn identity(coord: &dyn Coordinator, data_dir: &Path) -> Result<u64> {
    coord.ensure(ORCHESTRATORS).await?;
    let mine = orchestrator_path(coord.session_id());
    match coord.create(&mine, b"", NodeKind::Ephemeral).await {
        Ok(()) | Err(CoordError::NodeExists) => {}
        Err(e) => return Err(e.into()),
    }
    let file = data_dir.join(IDENTITY_FILE);
    let ours = match std::fs::read_to_string(&file) {
        Ok(text) => Some(parse_identity(text.trim())?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    let theirs = coord.get(CLUSTER).await?;
    let theirs = theirs.map(|n| String::from_utf8_lossy(&n.data).into_owned());
    // Nothing here yet: an orchestrator started at the same moment may
    // make the cluster first, and then this one joins it.
    let first = ours.is_none() && theirs.is_none();
    let fresh = ours.is_none();
    let id = match (ours, theirs) {
        (Some(id), Some(t)) if parse_identity(&t).ok() == Some(id) => return Ok(id),
        (Some(id), Some(t)) => {
            return Err(Error::bad(format!(
                "the coordinator's root belongs to cluster {t}, this data directory to {id:016x}"
            )))
        }
        (Some(id), None) => id,
        // Orchestrators serve it now: this one joins them.
        (None, Some(t)) if serving(coord).await? => {
            let id = parse_identity(&t)?;
            std::fs::write(&file, format!("{id:016x}\n"))?;
            return Ok(id);
        }
        (None, _) => {
            // Kept in the directory only once the root holds it (below):
            // an attempt cut off before that leaves the directory new.
            let id = fastrand::u64(1..);
            // A new cluster: what an earlier one's watchers kept is not
            // its history.
            for path in [MASTER, SUCCESSION] {
                match coord.delete(path, None).await {
                    Ok(()) | Err(CoordError::NoNode) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            id
        }
    };
    let text = format!("{id:016x}");
    match coord
        .create(CLUSTER, text.as_bytes(), NodeKind::Persistent)
        .await
    {
        Err(CoordError::NodeExists) if first => {
            let made = coord.get(CLUSTER).await?.map(|n| n.data);
            let made = made.ok_or_else(|| Error::Unavailable("/cluster went meanwhile".into()))?;
            let id = parse_identity(String::from_utf8_lossy(&made).trim())?;
            std::fs::write(&file, format!("{id:016x}\n"))?;
            return Ok(id);
        }
        Err(CoordError::NodeExists) => {
            coord.set(CLUSTER, text.as_bytes(), None).await?;
        }
        other => other?,
    }
    if fresh {
        std::fs::write(&file, format!("{id:016x}\n"))?;
    }
    Ok(id)
}

/// Whether another orchestrator is registered (its session alive).
async fn serving(coord: &dyn Coordinator) -> Result<bool> {
    let mine = orchestrator_path(coord.session_id());
    match coord.children(ORCHESTRATORS).await {
        Ok(children) => Ok(children
            .iter()
            .any(|c| format!("{ORCHESTRATORS}/{c}") != mine)),
        Err(CoordError::NoNode) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn parse_identity(text: &str) -> Result<u64> {
    u64::from_str_radix(text, 16)
        .ok()
        .filter(|&id| id != 0)
        .ok_or_else(|| Error::bad(format!("{text:?} is not a cluster identity")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coord::inproc::InProcServer;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[actix::test]
    async fn one_identity_per_data_directory_and_root() {
        let server = InProcServer::new();
        let coord = server.connect("/a").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let id = identity(&coord, dir.path()).await.unwrap();
        assert_ne!(id, 0);
        assert_eq!(identity(&coord, dir.path()).await.unwrap(), id);
        // The same directory on a fresh root: the root takes it.
        let other = server.connect("/b").unwrap();
        assert_eq!(identity(&other, dir.path()).await.unwrap(), id);
        // A new directory on a used root: a new cluster takes it over.
        let fresh = tempfile::tempdir().unwrap();
        let id2 = identity(&coord, fresh.path()).await.unwrap();
        assert_ne!(id2, id);
        // The first directory on that root now: refused.
        assert!(identity(&coord, dir.path()).await.is_err());
        assert!(parse_identity("0").is_err() && parse_identity("zz").is_err());
    }

    #[actix::test]
    async fn a_new_directory_joins_a_cluster_orchestrators_serve() {
        let server = InProcServer::new();
        let coord = server.connect("/a").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let id = identity(&coord, dir.path()).await.unwrap();
        // Another orchestrator's session, registered.
        let other = server.connect("/a").unwrap();
        let fresh = tempfile::tempdir().unwrap();
        assert_eq!(identity(&other, fresh.path()).await.unwrap(), id);
        // Kept in its file: the same cluster next time, served or not.
        coord.close().await;
        assert_eq!(identity(&other, fresh.path()).await.unwrap(), id);
    }

    /// Sessions of `server` under `/a`, the first `cut` of them cut off
    /// as soon as they open (a ZooKeeper that stops answering one's
    /// pings on a loaded machine: seen in CI as an orchestrator that
    /// exited at start, "no response from connection in 240ms").
    /// Also how many sessions it has opened.
    fn cutting(server: &InProcServer, cut: usize) -> (Connector, Arc<AtomicUsize>) {
        let (server, made) = (server.clone(), Arc::new(AtomicUsize::new(0)));
        let count = made.clone();
        let connect: Connector = Arc::new(move || {
            let s = server.connect("/a");
            if let Ok(s) = &s {
                if made.fetch_add(1, Ordering::SeqCst) < cut {
                    server.disconnect(s.session_id());
                }
            }
            Box::pin(async move { s.map(|s| Arc::new(s) as Arc<dyn Coordinator>) })
        });
        (connect, count)
    }

    #[actix::test]
    async fn a_start_outlasts_a_coordinator_that_cuts_its_first_sessions_off() {
        let server = InProcServer::new();
        let dir = tempfile::tempdir().unwrap();
        let within = Duration::from_secs(30);
        let (connect, opened) = cutting(&server, 3);
        let (coord, id) = identify(&connect, dir.path(), within).await.unwrap();
        assert_eq!(opened.load(Ordering::SeqCst), 4);
        assert_ne!(id, 0);
        // The root and the directory agree, and only the live session is
        // registered.
        assert_eq!(identity(coord.as_ref(), dir.path()).await.unwrap(), id);
        let probe = server.connect("/a").unwrap();
        let cluster = probe.get(CLUSTER).await.unwrap().unwrap().data;
        assert_eq!(String::from_utf8_lossy(&cluster), format!("{id:016x}"));
        let live = probe.children(ORCHESTRATORS).await.unwrap();
        let mine = orchestrator_path(coord.session_id());
        assert_eq!(live.len(), 1, "{live:?}");
        assert!(mine.ends_with(&live[0]), "{live:?}");
    }

    #[actix::test]
    async fn a_start_cut_off_for_good_fails_and_leaves_the_directory_new() {
        let server = InProcServer::new();
        let dir = tempfile::tempdir().unwrap();
        let within = Duration::from_millis(300);
        let e = identify(&cutting(&server, usize::MAX).0, dir.path(), within)
            .await
            .err()
            .expect("no start without a coordinator");
        assert!(e.is_retryable(), "{e}");
        assert!(!dir.path().join(IDENTITY_FILE).exists());
    }

    #[actix::test]
    async fn a_refusal_ends_a_start_at_once() {
        let server = InProcServer::new();
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let coord = server.connect("/a").unwrap();
        identity(&coord, a.path()).await.unwrap();
        coord.close().await;
        identity(&server.connect("/a").unwrap(), b.path())
            .await
            .unwrap();
        // `a` on a root that belongs to `b`'s cluster now.
        let (connect, opened) = cutting(&server, 0);
        let e = identify(&connect, a.path(), Duration::from_secs(60))
            .await
            .err()
            .expect("refused");
        assert!(!e.is_retryable(), "{e}");
        assert_eq!(opened.load(Ordering::SeqCst), 1, "tried again");
    }

    #[actix::test]
    async fn orchestrators_started_at_once_on_a_fresh_root_agree() {
        let server = InProcServer::new();
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let coords: Vec<_> = (0..3).map(|_| server.connect("/a").unwrap()).collect();
        let ids =
            futures::future::join_all(coords.iter().zip(&dirs).map(|(c, d)| identity(c, d.path())))
                .await;
        let ids: Vec<u64> = ids.into_iter().map(Result::unwrap).collect();
        assert!(ids.iter().all(|&i| i == ids[0]), "{ids:?}");
    }
}
