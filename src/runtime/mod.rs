//! The worker runtime seam: how workers are started and stopped. Four
//! implementations share it: in-process actors (the embedded default, here),
//! local child processes, Docker containers ([`docker`]) and Docker Swarm
//! services ([`swarm`]). A worker's "pid" is its process id (a container's
//! `State.Pid`); in-process workers and Swarm tasks use numbers of their
//! own.

pub mod docker;
mod inproc;
mod process;
pub mod swarm;

pub use docker::DockerRuntime;
pub use inproc::{InProcessRuntime, Launcher, LocalSpec, LocalWorker};
pub use process::{CoordTarget, ProcessRuntime};
pub use swarm::SwarmRuntime;

use std::path::{Path, PathBuf};

use async_trait::async_trait;

use crate::error::Result;
use crate::model::WorkerStatus;

/// A worker to start. Every worker starts alike; the election (through
/// the coordinator) decides which one leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkerSpec {
    pub id: u64,
    /// The cluster it belongs to; its store must be of that cluster (or
    /// new, and then joins it).
    pub cluster: u64,
}

/// A running worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct WorkerInfo {
    pub id: u64,
    pub pid: u64,
}

/// A worker that exited: stopped on purpose (`expected`), or killed or
/// crashed (a death the system saw, acted on at once). A stop on purpose
/// is announced first (`gone` false), before the worker lets go of its
/// coordinator session, so that its node going is not taken for a death.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exit {
    pub id: u64,
    pub pid: u64,
    pub expected: bool,
    /// It has exited (false: it is being stopped on purpose).
    pub gone: bool,
}

/// Starts, stops and lists workers.
#[async_trait]
pub trait WorkerRuntime: Send + Sync + 'static {
    /// Starts a worker and returns once it runs.
    async fn start(&self, spec: WorkerSpec) -> Result<WorkerInfo>;
    /// Stops a worker cleanly: it settles what it holds and flushes.
    async fn stop(&self, id: u64) -> Result<()>;
    /// Kills a worker abruptly, as a crash would (SIGKILL).
    async fn kill(&self, id: u64) -> Result<()>;
    /// How far a worker got.
    async fn status(&self, id: u64) -> Result<WorkerStatus>;
    /// The running workers, by id.
    fn list(&self) -> Vec<WorkerInfo>;
    /// Every exit from now on, as it is seen.
    fn exits(&self) -> tokio::sync::broadcast::Receiver<Exit>;
    /// The directory the workers' databases are kept under.
    fn workers_dir(&self) -> &Path;
    /// Stops worker `id` on purpose for good (the Scaler's scale-down): it
    /// settles what it holds, then its database goes, so that a restart of
    /// the cluster does not bring it back.
    async fn retire(&self, id: u64) -> Result<()> {
        self.stop(id).await?;
        let dir = worker_dir(self.workers_dir(), id);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
    /// Whether its workers outlive the orchestrator that started them
    /// (containers), so that another can take them on; a child process
    /// dies with its parent.
    fn outlives_orchestrator(&self) -> bool {
        false
    }
    /// Takes on the workers of `cluster` an earlier run left running, and
    /// answers them (only a runtime whose workers outlive it has any).
    async fn adopt(&self, _cluster: u64) -> Result<Vec<WorkerInfo>> {
        Ok(Vec::new())
    }
}

/// How long a worker's control listener may take to answer (a paused or
/// hung worker accepts the connection and never answers).
pub(crate) const CONTROL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The HTTP client of the workers' control listeners, every call bounded.
pub(crate) fn control_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(CONTROL_TIMEOUT)
        .pool_idle_timeout(crate::model::HTTP_IDLE_TIMEOUT)
        .build()
        .unwrap_or_default()
}

/// What a worker's control listener says of it (`GET <control>/status`).
pub(crate) async fn control_status(http: &reqwest::Client, control: &str) -> Result<WorkerStatus> {
    let unavailable =
        |e: reqwest::Error| crate::error::Error::Unavailable(format!("worker control: {e}"));
    let resp = http
        .get(format!("{control}/status"))
        .send()
        .await
        .map_err(unavailable)?;
    resp.json().await.map_err(unavailable)
}

/// The arguments of `dbaas worker` for `spec`, whatever starts it.
pub(crate) fn worker_args(
    spec: WorkerSpec,
    sync_cap: u32,
    amqp_url: &str,
    coord: &CoordTarget,
    data_dir: &Path,
) -> Vec<String> {
    [
        "worker",
        "--id",
        &spec.id.to_string(),
        "--cluster",
        &format!("{:016x}", spec.cluster),
        "--sync-queue-cap",
        &sync_cap.to_string(),
        "--amqp",
        amqp_url,
        "--zk",
        &coord.hosts,
        "--zk-root",
        &coord.root,
        "--session-timeout-ms",
        &coord.session_timeout.as_millis().to_string(),
        "--data-dir",
        &data_dir.display().to_string(),
        "--control-addr",
        "127.0.0.1:0",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// The control URL in a worker's `listening: control <url>` line.
pub(crate) fn control_line(line: &str) -> Option<String> {
    line.trim()
        .strip_prefix("listening: control ")
        .map(|url| url.trim().to_owned())
}

/// How many exits a slow listener may fall behind by.
pub(crate) const EXITS: usize = 256;

/// Where worker `id` keeps its database under a data directory.
pub fn worker_dir(data_dir: &Path, id: u64) -> PathBuf {
    data_dir.join(format!("worker-{id}"))
}

/// How many times a worker is tried when the workers are brought up.
const START_TRIES: u32 = 3;

/// The ids of the workers an earlier run left under `dir` (their
/// directories' names: their stores are the workers' own business).
fn worker_ids(dir: &Path) -> Result<Vec<u64>> {
    let entries = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        other => other?,
    };
    let mut ids: Vec<u64> = entries
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("worker-"))
                .and_then(|n| n.parse().ok())
        })
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

/// `slaves + 1` worker ids: those found first, then new ones after.
fn plan(found: &[u64], slaves: usize) -> Vec<u64> {
    let mut ids = found.to_vec();
    let mut next = found.iter().max().copied().unwrap_or(0) + 1;
    while ids.len() < slaves + 1 {
        ids.push(next);
        next += 1;
    }
    ids
}

/// Brings the workers of `cluster` up, as the leading orchestrator does
/// when it begins to lead: takes on those running (containers another
/// orchestrator started), and starts the others over the stores found
/// under the runtime's directory, and new ones up to `slaves + 1`.
/// Answers how many workers there are.
///
/// `history`: the cluster has had a master. Then a directory holding no
/// worker's store, with no worker running, is the wrong one (an
/// orchestrator of the process runtime that does not share the others'
/// data directory): starting empty workers there would elect one of them
/// over the history, so it is refused.
pub async fn ensure_workers(
    rt: &dyn WorkerRuntime,
    cluster: u64,
    slaves: usize,
    history: bool,
) -> Result<usize> {
    let adopted: Vec<u64> = rt.adopt(cluster).await?.iter().map(|w| w.id).collect();
    let mut found = worker_ids(rt.workers_dir())?;
    if found.is_empty() && adopted.is_empty() && rt.list().is_empty() && history {
        return Err(crate::error::Error::bad(format!(
            "{} holds none of the cluster's workers, and none runs: every orchestrator \
             of a cluster must use the same data directory",
            rt.workers_dir().display()
        )));
    }
    found.extend(adopted);
    found.sort_unstable();
    found.dedup();
    let ids = plan(&found, slaves);
    let runs = |id: u64| rt.list().iter().any(|w| w.id == id);
    for &id in &ids {
        let spec = WorkerSpec { id, cluster };
        // A start may fail for a moment (a store its killed process
        // held, a container name being freed): tried again, bounded.
        let mut tries = 0;
        while !runs(id) {
            let Err(e) = rt.start(spec).await else {
                break;
            };
            tries += 1;
            if tries == START_TRIES {
                return Err(e);
            }
            tracing::warn!(worker = id, error = %e, "worker did not start; trying again");
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    }
    Ok(ids.len())
}

/// Stops every worker, slaves first, so the master settles last.
pub async fn stop_all(rt: &dyn WorkerRuntime) {
    let mut workers = Vec::new();
    for w in rt.list() {
        let master = rt.status(w.id).await.is_ok_and(|s| s.master);
        workers.push((master, w.id));
    }
    workers.sort_unstable();
    for (_, id) in workers {
        if let Err(e) = rt.stop(id).await {
            tracing::warn!(worker = id, error = %e, "stop failed");
        }
    }
}

/// The workers being started by one runtime: not listed until they have
/// started, and not to be started twice meanwhile (two processes over one
/// store; a second start of a container or service would remove the
/// first's).
#[derive(Clone, Debug, Default)]
pub(crate) struct StartingSet(std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<u64>>>);

impl StartingSet {
    /// Holds worker `id` as being started until the answer is dropped;
    /// refused if it runs already (`runs`) or is being started.
    pub(crate) fn hold(&self, id: u64, runs: bool) -> Result<Starting> {
        let mut ids = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if runs || !ids.insert(id) {
            return Err(crate::error::Error::bad(format!(
                "worker {id} runs already"
            )));
        }
        Ok(Starting {
            set: self.clone(),
            id,
        })
    }
}

/// A worker's id held as being started, until dropped.
pub(crate) struct Starting {
    set: StartingSet,
    id: u64,
}

impl Drop for Starting {
    fn drop(&mut self) {
        let mut ids = self.set.0.lock().unwrap_or_else(|p| p.into_inner());
        ids.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_found_are_kept_and_new_ones_follow() {
        assert_eq!(plan(&[], 2), [1, 2, 3]);
        assert_eq!(plan(&[2, 5], 2), [2, 5, 6]);
        assert_eq!(plan(&[1, 2, 3, 4], 1), [1, 2, 3, 4]);
    }
}
