//! Workers as actors in this process, each on its own arbiter (thread) and
//! over its own sled database under `<data dir>/worker-<id>`, each with a
//! coordinator session of its own. A worker's pid is a number of its own,
//! new at each start, as a process's would be.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use actix::prelude::*;
use async_trait::async_trait;
use tokio::sync::broadcast;

use super::{Exit, WorkerInfo, WorkerRuntime, WorkerSpec, EXITS};
use crate::actors::messages::{GetStatus, Shutdown, WorkerStatus};
use crate::actors::worker::{Connector, Worker, WorkerConfig};
use crate::actors::{blocking, SYNC_QUEUE_CAP};
use crate::broker::Broker;
use crate::error::{Error, Result};
use crate::model::Schema;
use crate::store::Store;

/// The first pid given to an in-process worker (apart from small ids).
const FIRST_PID: u64 = 1001;
/// How long a clean stop may take before the worker is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

struct Running {
    info: WorkerInfo,
    addr: Addr<Worker>,
    arbiter: ArbiterHandle,
}

/// Starts workers as in-process actors.
pub struct InProcessRuntime {
    broker: Arc<dyn Broker>,
    schema: Arc<Schema>,
    data_dir: PathBuf,
    sync_cap: u32,
    connect: Connector,
    session_timeout: Duration,
    workers: Mutex<BTreeMap<u64, Running>>,
    exits: broadcast::Sender<Exit>,
    /// The pid of the next worker started: each start its own, as a
    /// process's would be.
    next_pid: std::sync::atomic::AtomicU64,
}

impl InProcessRuntime {
    /// Workers on `broker`, keeping their stores under `data_dir`, each
    /// opening a coordinator session with `connect` (whose sessions time
    /// out after `session_timeout`).
    pub fn new(
        broker: Arc<dyn Broker>,
        schema: Arc<Schema>,
        data_dir: &Path,
        connect: Connector,
        session_timeout: Duration,
    ) -> Self {
        InProcessRuntime {
            broker,
            schema,
            data_dir: data_dir.to_owned(),
            sync_cap: SYNC_QUEUE_CAP,
            connect,
            session_timeout,
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

/// Waits until an actor has stopped, or the deadline passes.
async fn stopped(addr: &Addr<Worker>, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while addr.connected() {
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
        let dir = super::worker_dir(&self.data_dir, spec.id);
        let schema = self.schema.clone();
        let store = blocking(move || {
            let store = Store::open_when_free(&dir, schema, STOP_TIMEOUT)?;
            store.join_cluster(spec.cluster)?;
            Ok(store)
        })
        .await?;
        let arbiter = Arbiter::new().handle();
        let pid = self
            .next_pid
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let cfg = WorkerConfig {
            id: spec.id,
            pid,
            cluster: spec.cluster,
            sync_cap: self.sync_cap,
            session_timeout: self.session_timeout,
        };
        let (broker, connect) = (self.broker.clone(), self.connect.clone());
        let addr =
            Worker::start_in_arbiter(&arbiter, move |_| Worker::new(cfg, store, broker, connect));
        let info = WorkerInfo { id: spec.id, pid };
        self.workers().insert(
            spec.id,
            Running {
                info,
                addr,
                arbiter,
            },
        );
        Ok(info)
    }

    async fn stop(&self, id: u64) -> Result<()> {
        let w = self.take(id)?;
        self.exited(w.info, true, false);
        let _ = w.addr.send(Shutdown).await;
        if !stopped(&w.addr, STOP_TIMEOUT).await {
            tracing::warn!(worker = id, "did not stop in time; killed");
        }
        w.arbiter.stop();
        self.exited(w.info, true, true);
        Ok(())
    }

    async fn kill(&self, id: u64) -> Result<()> {
        let w = self.take(id)?;
        w.arbiter.stop();
        // Gone once its actor is: nothing it does after this counts.
        if !stopped(&w.addr, STOP_TIMEOUT).await {
            tracing::warn!(worker = id, "still running after a kill");
        }
        self.exited(w.info, false, true);
        Ok(())
    }

    async fn status(&self, id: u64) -> Result<WorkerStatus> {
        let addr = self
            .workers()
            .get(&id)
            .map(|w| w.addr.clone())
            .ok_or_else(|| Error::bad(format!("no worker {id}")))?;
        addr.send(GetStatus)
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
