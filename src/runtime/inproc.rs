//! Workers as actors in this process, each on its own arbiter (thread) and
//! over its own sled database under `<data dir>/worker-<id>`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use actix::prelude::*;
use async_trait::async_trait;

use super::{Role, WorkerInfo, WorkerRuntime, WorkerSpec};
use crate::actors::messages::{GetStatus, Promote, Shutdown, WorkerStatus};
use crate::actors::{blocking, MasterWorker, SlaveWorker, SYNC_QUEUE_CAP};
use crate::broker::Broker;
use crate::error::{Error, Result};
use crate::model::wire::Stamp;
use crate::model::Schema;
use crate::store::Store;

/// How long a clean stop may take before the worker is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
enum WorkerAddr {
    Master(Addr<MasterWorker>),
    Slave(Addr<SlaveWorker>),
}

struct Running {
    info: WorkerInfo,
    addr: WorkerAddr,
    arbiter: ArbiterHandle,
}

/// Starts workers as in-process actors.
pub struct InProcessRuntime {
    broker: Arc<dyn Broker>,
    schema: Arc<Schema>,
    data_dir: PathBuf,
    sync_cap: u32,
    workers: Mutex<BTreeMap<u64, Running>>,
}

impl InProcessRuntime {
    pub fn new(broker: Arc<dyn Broker>, schema: Arc<Schema>, data_dir: &Path) -> Self {
        InProcessRuntime {
            broker,
            schema,
            data_dir: data_dir.to_owned(),
            sync_cap: SYNC_QUEUE_CAP,
            workers: Mutex::new(BTreeMap::new()),
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
}

/// Waits until an actor has stopped, or the deadline passes.
async fn stopped(connected: impl Fn() -> bool, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while connected() {
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
        let (broker, cap) = (self.broker.clone(), self.sync_cap);
        let stamp = Stamp {
            cluster: spec.cluster,
            epoch: spec.epoch,
        };
        let addr = match spec.role {
            Role::Master => {
                WorkerAddr::Master(MasterWorker::start_in_arbiter(&arbiter, move |_| {
                    MasterWorker::new(spec.id, store, broker, stamp)
                }))
            }
            Role::Slave => WorkerAddr::Slave(SlaveWorker::start_in_arbiter(&arbiter, move |_| {
                SlaveWorker::new(spec.id, store, broker, cap)
            })),
        };
        let info = WorkerInfo {
            id: spec.id,
            pid: spec.id,
            role: spec.role,
        };
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
        let done = match &w.addr {
            WorkerAddr::Master(a) => {
                let _ = a.send(Shutdown).await;
                stopped(|| a.connected(), STOP_TIMEOUT).await
            }
            WorkerAddr::Slave(a) => {
                let _ = a.send(Shutdown).await;
                stopped(|| a.connected(), STOP_TIMEOUT).await
            }
        };
        if !done {
            tracing::warn!(worker = id, "did not stop in time; killed");
        }
        w.arbiter.stop();
        Ok(())
    }

    async fn kill(&self, id: u64) -> Result<()> {
        let w = self.take(id)?;
        w.arbiter.stop();
        // Gone once its actor is: nothing it does after this counts.
        let gone = match &w.addr {
            WorkerAddr::Master(a) => stopped(|| a.connected(), STOP_TIMEOUT).await,
            WorkerAddr::Slave(a) => stopped(|| a.connected(), STOP_TIMEOUT).await,
        };
        if !gone {
            tracing::warn!(worker = id, "still running after a kill");
        }
        Ok(())
    }

    async fn promote(&self, id: u64, epoch: u64) -> Result<()> {
        let slave = match self.workers().get(&id).map(|w| w.addr.clone()) {
            Some(WorkerAddr::Slave(a)) => a,
            Some(WorkerAddr::Master(_)) => return Ok(()),
            None => return Err(Error::bad(format!("no worker {id}"))),
        };
        let master = slave
            .send(Promote { epoch })
            .await
            .map_err(|e| Error::Unavailable(e.to_string()))??;
        if let Some(w) = self.workers().get_mut(&id) {
            w.addr = WorkerAddr::Master(master);
            w.info.role = Role::Master;
        }
        Ok(())
    }

    async fn status(&self, id: u64) -> Result<WorkerStatus> {
        let addr = self
            .workers()
            .get(&id)
            .map(|w| w.addr.clone())
            .ok_or_else(|| Error::bad(format!("no worker {id}")))?;
        let status = match addr {
            WorkerAddr::Master(a) => a.send(GetStatus).await,
            WorkerAddr::Slave(a) => a.send(GetStatus).await,
        };
        status.map_err(|e| Error::Unavailable(format!("worker {id}: {e}")))
    }

    fn list(&self) -> Vec<WorkerInfo> {
        self.workers().values().map(|w| w.info).collect()
    }
}
