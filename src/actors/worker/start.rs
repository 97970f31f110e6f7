//! Starting a Worker over its own store: a worker opens its store itself,
//! whatever runs it; and the Worker as the in-process runtime starts it,
//! on an arbiter of its own.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures::future::BoxFuture;

use super::{Connector, Worker, WorkerConfig};
use crate::actors::blocking;
use crate::actors::messages::{GetStatus, Shutdown};
use crate::broker::Broker;
use crate::error::Result;
use crate::model::{Schema, WorkerStatus};
use crate::runtime::{Launcher, LocalSpec, LocalWorker};
use crate::store::Store;

/// Where a worker's own store is.
pub struct StoreAt {
    pub dir: PathBuf,
    pub schema: Arc<Schema>,
    /// How long to wait for an earlier holder (the same worker, being
    /// stopped) to let it go; `None`: the store's own wait.
    pub wait: Option<Duration>,
}

impl Worker {
    /// A worker over its own store at `at`, which it opens and makes of
    /// `cfg.cluster` (a new store joins it; one of another is refused).
    pub async fn open(
        cfg: WorkerConfig,
        at: StoreAt,
        broker: Arc<dyn Broker>,
        connect: Connector,
    ) -> Result<Self> {
        let store = open_store(at, cfg.cluster).await?;
        Ok(Worker::new(cfg, store, broker, connect))
    }
}

/// Opens the store at `at` and makes it of `cluster`.
async fn open_store(at: StoreAt, cluster: u64) -> Result<Store> {
    blocking(move || {
        let store = match at.wait {
            Some(wait) => Store::open_when_free(&at.dir, at.schema, wait)?,
            None => Store::open(&at.dir, at.schema)?,
        };
        store.join_cluster(cluster)?;
        Ok(store)
    })
    .await
}

/// A Worker on an arbiter of its own.
struct OnArbiter {
    addr: Addr<Worker>,
    arbiter: ArbiterHandle,
}

impl LocalWorker for OnArbiter {
    fn shutdown(&self) -> BoxFuture<'static, ()> {
        let asked = self.addr.send(Shutdown);
        Box::pin(async move {
            let _ = asked.await;
        })
    }

    fn running(&self) -> bool {
        self.addr.connected()
    }

    fn status(&self) -> BoxFuture<'static, std::result::Result<WorkerStatus, String>> {
        let asked = self.addr.send(GetStatus);
        Box::pin(async move { asked.await.map_err(|e| e.to_string()) })
    }

    fn abort(&self) {
        self.arbiter.stop();
    }
}

/// Starts Workers of `schema` on `broker`, each opening a coordinator
/// session with `connect` (whose sessions time out after
/// `session_timeout`).
pub fn launcher(
    schema: Arc<Schema>,
    broker: Arc<dyn Broker>,
    connect: Connector,
    session_timeout: Duration,
) -> Launcher {
    Arc::new(move |local: LocalSpec| {
        let cfg = WorkerConfig {
            id: local.spec.id,
            pid: local.pid,
            cluster: local.spec.cluster,
            sync_cap: local.sync_cap,
            session_timeout,
        };
        let at = StoreAt {
            dir: local.dir,
            schema: schema.clone(),
            wait: Some(local.open_wait),
        };
        let (broker, connect) = (broker.clone(), connect.clone());
        Box::pin(async move {
            let store = open_store(at, cfg.cluster).await?;
            let arbiter = Arbiter::new().handle();
            let addr = Worker::start_in_arbiter(&arbiter, move |_| {
                Worker::new(cfg, store, broker, connect)
            });
            Ok(Box::new(OnArbiter { addr, arbiter }) as Box<dyn LocalWorker>)
        })
    })
}
