//! Assembling the whole system: the embedded cluster (broker, workers,
//! orchestrator) and `dbaas up` (the cluster plus every HTTP listener).
//!
//! - [`Cluster`] (here): starting the workers, the orchestrator and the
//!   election watcher over one broker and one coordinator, and stopping
//!   them;
//! - `backends`: what the cluster runs on (broker, worker runtime,
//!   coordinator);
//! - `identity`: the cluster's identity, kept in its data directory;
//! - `up`: [`start_cluster`], the one way `dbaas up` and
//!   `dbaas orchestrator` start theirs, and [`run_up`].

mod backends;
mod identity;
mod up;

pub use backends::{
    backends, embedded_runtime, workers_dir, Coordination, Workers, EMBEDDED_SESSION,
};
use identity::identity;
pub(crate) use up::{bind, url};
pub use up::{run_up, start_cluster, ClusterConfig};

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::actors::scaler::{ScalePolicy, Scaler, StopScaling};
use crate::actors::watcher::{ElectionWatcher, GetCluster, StopWatching};
use crate::actors::{Orchestrator, OrchestratorHandle};
use crate::broker::Broker;
use crate::error::{Error, Result};
use crate::model::Schema;
use crate::runtime::{self, WorkerRuntime, WorkerSpec};

/// How many times a worker is tried at startup.
const START_TRIES: u32 = 3;
/// How long starting workers may take before `up` gives up.
const START_DEADLINE: Duration = Duration::from_secs(60);

/// A running cluster: workers, the orchestrator and the election watcher
/// over one broker and one coordinator.
pub struct Cluster {
    pub broker: Arc<dyn Broker>,
    pub runtime: Arc<dyn WorkerRuntime>,
    pub orchestrator: OrchestratorHandle,
    pub watcher: Addr<ElectionWatcher>,
    pub coordination: Coordination,
    pub schema: Arc<Schema>,
    /// The cluster's identity: made with its first data directory, kept in
    /// its file there, in the coordinator and in every worker's store,
    /// carried by every message.
    pub cluster: u64,
    /// Scales the slaves with the read load, once started.
    pub scaler: Option<Addr<Scaler>>,
}

/// The ids of the workers an earlier run left under `dir` (their
/// directories' names: their stores are the workers' own business).
fn worker_ids(dir: &Path) -> Result<Vec<u64>> {
    let mut ids: Vec<u64> = std::fs::read_dir(dir)?
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

impl Cluster {
    /// The embedded cluster: workers as in-process actors, coordinated
    /// in-process.
    pub async fn start(data_dir: &Path, slaves: usize, broker: Arc<dyn Broker>) -> Result<Cluster> {
        let coordination = Coordination::embedded();
        let runtime = embedded_runtime(&broker, data_dir, &coordination, None)?;
        Self::start_with(data_dir, slaves, broker, runtime, coordination).await
    }

    /// Starts the orchestrator, the election watcher and `slaves + 1`
    /// workers through `runtime` (re-using what `data_dir` holds), and
    /// returns once a master leads and every slave is caught up.
    pub async fn start_with(
        data_dir: &Path,
        slaves: usize,
        broker: Arc<dyn Broker>,
        runtime: Arc<dyn WorkerRuntime>,
        coordination: Coordination,
    ) -> Result<Cluster> {
        let schema = Arc::new(Schema::rideshare());
        let dir = workers_dir(data_dir)?;
        let connect = coordination.connector();
        let coord = connect().await?;
        let id = identity(coord.as_ref(), data_dir).await?;
        coord.close().await;
        // Workers an earlier orchestrator left running (containers) are
        // taken on, not started again.
        let adopted: Vec<u64> = runtime.adopt(id).await?.iter().map(|w| w.id).collect();
        let ids = plan(&worker_ids(&dir)?, slaves);
        let orch_broker = broker.clone();
        let addr = Orchestrator::start_in_arbiter(&Arbiter::new().handle(), move |_| {
            Orchestrator::new(orch_broker, id, 0)
        });
        let (rt, orch, expect) = (runtime.clone(), addr.clone(), ids.len());
        let watcher = ElectionWatcher::start_in_arbiter(&Arbiter::new().handle(), move |_| {
            ElectionWatcher::new(id, connect, rt, orch.recipient(), expect)
        });
        tracing::info!(
            cluster = format!("{id:016x}"),
            workers = expect,
            "cluster starting"
        );
        for wid in ids.into_iter().filter(|w| !adopted.contains(w)) {
            let spec = WorkerSpec {
                id: wid,
                cluster: id,
            };
            // The watcher may have started it already: hearing from
            // `/master` that the last run's master is gone, it starts that
            // worker over its store (the election waits for that store).
            let running = |rt: &dyn WorkerRuntime| rt.list().iter().any(|w| w.id == wid);
            // A start may fail for a moment (a store its killed process
            // held, a container name being freed): tried again, bounded.
            let mut tries = 0;
            while !running(runtime.as_ref()) {
                let Err(e) = runtime.start(spec).await else {
                    break;
                };
                if running(runtime.as_ref()) {
                    tracing::info!(worker = wid, "worker started by the watcher meanwhile");
                    break;
                }
                tries += 1;
                if tries == START_TRIES {
                    return Err(e);
                }
                tracing::warn!(worker = wid, error = %e, "worker did not start; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        let cluster = Cluster {
            broker,
            runtime,
            orchestrator: OrchestratorHandle::new(addr),
            watcher,
            coordination,
            schema,
            cluster: id,
            scaler: None,
        };
        cluster.wait_ready(START_DEADLINE).await?;
        Ok(cluster)
    }

    /// The epoch the elected master leads.
    pub async fn epoch(&self) -> u64 {
        self.watcher.send(GetCluster).await.map_or(0, |v| v.epoch)
    }

    /// Waits until a master leads and every worker is ready, as the
    /// workers say and as the watcher sees it (what an election goes by).
    pub async fn wait_ready(&self, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let view = self.watcher.send(GetCluster).await.ok();
            let running = self.runtime.list();
            let mut ready = view.as_ref().is_some_and(|v| {
                v.master.is_some()
                    && v.workers.iter().any(|w| Some(w.pid) == v.master)
                    && running.iter().all(|r| {
                        v.workers
                            .iter()
                            .any(|w| w.pid == r.pid && matches!(w.state, "leading" | "serving"))
                    })
            });
            for w in &running {
                ready &= self.runtime.status(w.id).await.is_ok_and(|s| s.ready);
            }
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Unavailable(
                    "workers did not become ready in time".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Starts the Scaler: from now on the number of slaves follows the
    /// reads through this cluster's orchestrator handle.
    pub fn start_scaler(&mut self, policy: ScalePolicy) {
        let (id, reads) = (self.cluster, self.orchestrator.reads());
        let (rt, watcher) = (self.runtime.clone(), self.watcher.clone());
        let addr = Scaler::start_in_arbiter(&Arbiter::new().handle(), move |_| {
            Scaler::new(id, policy, reads, rt, watcher)
        });
        self.scaler = Some(addr);
    }

    /// Stops scaling and watching (no elections or replacements from now
    /// on), then the workers cleanly (slaves first), then the orchestrator.
    pub async fn stop(&self) {
        if let Some(scaler) = &self.scaler {
            let _ = scaler.send(StopScaling).await;
        }
        let _ = self.watcher.send(StopWatching).await;
        // A replacement being started goes too: wait until it runs.
        let deadline = Instant::now() + START_DEADLINE;
        while Instant::now() < deadline {
            match self.watcher.send(GetCluster).await {
                Ok(v) if v.starting > 0 => tokio::time::sleep(Duration::from_millis(10)).await,
                _ => break,
            }
        }
        runtime::stop_all(self.runtime.as_ref()).await;
        self.orchestrator
            .addr()
            .do_send(crate::actors::messages::Shutdown);
    }
}

#[cfg(test)]
mod scaler_tests;

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
