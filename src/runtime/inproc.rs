//! Workers in this process, each on a thread of its own and over its own
//! sled database under `<data dir>/worker-<id>`, each with a coordinator
//! session of its own. A worker's pid is a number of its own, new at each
//! start, as a process's would be. What a worker is comes from the
//! [`Launcher`] given (the actors': `actors::worker::launcher`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::future::BoxFuture;
use tokio::sync::broadcast;

use super::{Exit, WorkerInfo, WorkerRuntime, WorkerSpec, EXITS};
use crate::broker::SYNC_QUEUE_CAP;
use crate::error::{Error, Result};
use crate::model::WorkerStatus;

/// The first pid given to an in-process worker (apart from small ids).
const FIRST_PID: u64 = 1001;
/// How long a clean stop may take before the worker is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A worker started in this process, as the runtime sees it.
pub trait LocalWorker: Send + Sync + 'static {
    /// Asks it to settle what it holds, flush and stop; done once it has
    /// been told (or is gone).
    fn shutdown(&self) -> BoxFuture<'static, ()>;
    /// Whether it still runs.
    fn running(&self) -> bool;
    /// How far it got, or why it did not answer.
    fn status(&self) -> BoxFuture<'static, std::result::Result<WorkerStatus, String>>;
    /// Ends the thread it runs on, whatever it is doing.
    fn abort(&self);
}

/// A worker for the in-process runtime to start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalSpec {
    pub spec: WorkerSpec,
    /// Its pid: a number of its own, new at each start.
    pub pid: u64,
    /// Most messages its sync queue keeps while it is away.
    pub sync_cap: u32,
    /// Its own store's directory.
    pub dir: PathBuf,
    /// How long to wait for its store to be let go of (by the same worker
    /// being stopped).
    pub open_wait: Duration,
}

/// Starts a worker on a thread of its own, over its own store.
pub type Launcher =
    Arc<dyn Fn(LocalSpec) -> BoxFuture<'static, Result<Box<dyn LocalWorker>>> + Send + Sync>;

struct Running {
    info: WorkerInfo,
    worker: Arc<dyn LocalWorker>,
}

/// Starts workers as in-process actors.
pub struct InProcessRuntime {
    data_dir: PathBuf,
    sync_cap: u32,
    launch: Launcher,
    workers: Mutex<BTreeMap<u64, Running>>,
    exits: broadcast::Sender<Exit>,
    /// The pid of the next worker started: each start its own, as a
    /// process's would be.
    next_pid: std::sync::atomic::AtomicU64,
}

impl InProcessRuntime {
    /// Workers keeping their stores under `data_dir`, each started by
    /// `launch`.
    pub fn new(data_dir: &Path, launch: Launcher) -> Self {
        InProcessRuntime {
            data_dir: data_dir.to_owned(),
            sync_cap: SYNC_QUEUE_CAP,
            launch,
            workers: Mutex::new(BTreeMap::new()),
            exits: broadcast::channel(EXITS).0,
            next_pid: std::sync::atomic::AtomicU64::new(FIRST_PID),
        }
    }

    /// Caps each slave's sync queue at `messages` (see [`SYNC_QUEUE_CAP`]).
    pub fn with_sync_cap(mut self, messages: u32) -> Self {
        self.sync_cap = messages;
        self
    }

    fn workers(&self) -> MutexGuard<'_, BTreeMap<u64, Running>> {
        self.workers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take(&self, id: u64) -> Result<Running> {
        self.workers()
            .remove(&id)
            .ok_or_else(|| Error::bad(format!("no worker {id}")))
    }

    fn exited(&self, info: WorkerInfo, expected: bool, gone: bool) {
        let _ = self.exits.send(Exit {
            id: info.id,
            pid: info.pid,
            expected,
            gone,
        });
    }
}

/// Waits until a worker has stopped, or the deadline passes.
async fn stopped(worker: &dyn LocalWorker, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while worker.running() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}

#[async_trait]
impl WorkerRuntime for InProcessRuntime {
    async fn start(&self, spec: WorkerSpec) -> Result<WorkerInfo> {
        if self.workers().contains_key(&spec.id) {
            return Err(Error::bad(format!("worker {} runs already", spec.id)));
        }
        let pid = self
            .next_pid
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let local = LocalSpec {
            spec,
            pid,
            sync_cap: self.sync_cap,
            dir: super::worker_dir(&self.data_dir, spec.id),
            open_wait: STOP_TIMEOUT,
        };
        let worker = Arc::from((self.launch)(local).await?);
        let info = WorkerInfo { id: spec.id, pid };
        self.workers().insert(spec.id, Running { info, worker });
        Ok(info)
    }

    async fn stop(&self, id: u64) -> Result<()> {
        let w = self.take(id)?;
        self.exited(w.info, true, false);
        // Bounded too: a worker that does not answer is killed below.
        if tokio::time::timeout(STOP_TIMEOUT, w.worker.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(worker = id, "did not answer its stop in time");
        }
        if !stopped(w.worker.as_ref(), STOP_TIMEOUT).await {
            tracing::warn!(worker = id, "did not stop in time; killed");
        }
        w.worker.abort();
        self.exited(w.info, true, true);
        Ok(())
    }

    async fn kill(&self, id: u64) -> Result<()> {
        let w = self.take(id)?;
        w.worker.abort();
        // Gone once its actor is: nothing it does after this counts.
        if !stopped(w.worker.as_ref(), STOP_TIMEOUT).await {
            tracing::warn!(worker = id, "still running after a kill");
        }
        self.exited(w.info, false, true);
        Ok(())
    }

    async fn status(&self, id: u64) -> Result<WorkerStatus> {
        let worker = self
            .workers()
            .get(&id)
            .map(|w| w.worker.clone())
            .ok_or_else(|| Error::bad(format!("no worker {id}")))?;
        worker
            .status()
            .await
            .map_err(|e| Error::Unavailable(format!("worker {id}: {e}")))
    }

    fn list(&self) -> Vec<WorkerInfo> {
        self.workers().values().map(|w| w.info).collect()
    }

    fn exits(&self) -> broadcast::Receiver<Exit> {
        self.exits.subscribe()
    }

    fn workers_dir(&self) -> &Path {
        &self.data_dir
    }
}
