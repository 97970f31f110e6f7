//! The worker runtime seam: how workers are started and stopped. Three
//! implementations share it: in-process actors (the embedded default, here),
//! local child processes and Docker containers. A worker's "pid" is its
//! process id; in-process workers use their numeric id.

mod inproc;
mod process;

pub use inproc::InProcessRuntime;
pub use process::ProcessRuntime;

use std::path::{Path, PathBuf};

use async_trait::async_trait;

use crate::actors::messages::WorkerStatus;
use crate::error::Result;

/// What a worker starts as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Master,
    Slave,
}

/// A worker to start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkerSpec {
    pub id: u64,
    pub role: Role,
    /// The epoch a master writes under.
    pub epoch: u64,
    /// The cluster it belongs to; its store must be of that cluster (or
    /// new, and then joins it).
    pub cluster: u64,
}

/// A running worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct WorkerInfo {
    pub id: u64,
    pub pid: u64,
    pub role: Role,
}

/// Starts, stops and lists workers.
#[async_trait]
pub trait WorkerRuntime: Send + Sync + 'static {
    /// Starts a worker and returns once it runs.
    async fn start(&self, spec: WorkerSpec) -> Result<WorkerInfo>;
    /// Stops a worker cleanly: it settles what it holds and flushes.
    async fn stop(&self, id: u64) -> Result<()>;
    /// Kills a worker abruptly, as a crash would.
    async fn kill(&self, id: u64) -> Result<()>;
    /// Turns a slave into the master in place, with a new epoch.
    async fn promote(&self, id: u64, epoch: u64) -> Result<()>;
    /// How far a worker got.
    async fn status(&self, id: u64) -> Result<WorkerStatus>;
    /// The running workers, by id.
    fn list(&self) -> Vec<WorkerInfo>;
}

/// Where worker `id` keeps its database under a data directory.
pub fn worker_dir(data_dir: &Path, id: u64) -> PathBuf {
    data_dir.join(format!("worker-{id}"))
}

/// Stops every worker, slaves first, so the master settles last.
pub async fn stop_all(rt: &dyn WorkerRuntime) {
    let mut workers = rt.list();
    workers.sort_by_key(|w| (w.role == Role::Master, w.id));
    for w in workers {
        if let Err(e) = rt.stop(w.id).await {
            tracing::warn!(worker = w.id, error = %e, "stop failed");
        }
    }
}
