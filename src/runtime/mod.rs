//! The worker runtime seam: how workers are started and stopped. Three
//! implementations share it: in-process actors (the embedded default, here),
//! local child processes and Docker containers. A worker's "pid" is its
//! process id; in-process workers use their numeric id.

mod inproc;
mod process;

pub use inproc::InProcessRuntime;
pub use process::{CoordTarget, ProcessRuntime};

use std::path::{Path, PathBuf};

use async_trait::async_trait;

use crate::actors::messages::WorkerStatus;
use crate::error::Result;

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
}

/// How many exits a slow listener may fall behind by.
pub(crate) const EXITS: usize = 256;

/// Where worker `id` keeps its database under a data directory.
pub fn worker_dir(data_dir: &Path, id: u64) -> PathBuf {
    data_dir.join(format!("worker-{id}"))
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
