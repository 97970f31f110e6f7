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
use identity::identify;
pub(crate) use up::{bind, url};
pub use up::{run_up, start_cluster, ClusterConfig};

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::actors::scaler::{ScalePolicy, Scaler, StopScaling};
use crate::actors::watcher::{
    ClusterView, CountOthers, ElectionWatcher, GetCluster, GetStanding, Me, Resign, StopWatching,
};
use crate::actors::{lease::Lease, scaler::ReadCounter};
use crate::actors::{Orchestrator, OrchestratorHandle};
use crate::broker::Broker;
use crate::error::{Error, Result};
use crate::model::Schema;
use crate::runtime::{self, WorkerRuntime};

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
    /// Valid while this orchestrator leads.
    lease: Arc<Lease>,
    /// The other orchestrators' client reads.
    others_reads: ReadCounter,
}

impl Cluster {
    /// The embedded cluster: workers as in-process actors, coordinated
    /// in-process.
    pub async fn start(data_dir: &Path, slaves: usize, broker: Arc<dyn Broker>) -> Result<Cluster> {
        let coordination = Coordination::embedded();
        let runtime = embedded_runtime(&broker, data_dir, &coordination, None)?;
        Self::start_with(data_dir, slaves, broker, runtime, coordination).await
    }

    /// [`Cluster::start_as`] an orchestrator without a DB API of its own.
    pub async fn start_with(
        data_dir: &Path,
        slaves: usize,
        broker: Arc<dyn Broker>,
        runtime: Arc<dyn WorkerRuntime>,
        coordination: Coordination,
    ) -> Result<Cluster> {
        Self::start_as(
            data_dir,
            slaves,
            broker,
            runtime,
            coordination,
            String::new(),
        )
        .await
    }

    /// Starts one orchestrator of the cluster (its DB API at `addr`) and
    /// its election watcher. If no other orchestrator leads, this one
    /// does: it brings up `slaves + 1` workers through `runtime`
    /// (re-using what `data_dir` holds). Returns once a master leads and,
    /// where this one leads, every slave is caught up.
    pub async fn start_as(
        data_dir: &Path,
        slaves: usize,
        broker: Arc<dyn Broker>,
        runtime: Arc<dyn WorkerRuntime>,
        coordination: Coordination,
        addr: String,
    ) -> Result<Cluster> {
        let schema = Arc::new(Schema::rideshare());
        workers_dir(data_dir)?;
        let connect = coordination.connector();
        // Its session stays open (registered) until this orchestrator
        // has registered for good (see `identity`).
        let (coord, id) = identify(&connect, data_dir, START_DEADLINE).await?;
        let orch_broker = broker.clone();
        // Other orchestrators may acknowledge writes only where they can
        // join (ZooKeeper): only there must a strong read learn the
        // master's head first. The embedded cluster has one orchestrator.
        // `DBAAS_READ_INDEX=0` turns it off (for measuring what it costs:
        // a strong read may then miss another orchestrator's writes).
        let read_index = matches!(coordination, Coordination::ZooKeeper(_))
            && std::env::var("DBAAS_READ_INDEX").map_or(true, |v| v != "0");
        let orch = Orchestrator::start_in_arbiter(&Arbiter::new().handle(), move |_| {
            Orchestrator::new(orch_broker, id, 0).with_read_index(read_index)
        });
        let handle = OrchestratorHandle::new(orch.clone());
        let (lease, others_reads) = (Arc::new(Lease::new()), ReadCounter::default());
        let me = Me {
            addr,
            reads: handle.reads(),
            others: others_reads.clone(),
            lease: lease.clone(),
            slaves,
        };
        let rt = runtime.clone();
        let watcher = ElectionWatcher::start_in_arbiter(&Arbiter::new().handle(), move |_| {
            ElectionWatcher::new(id, connect, rt, orch.recipient(), me)
        });
        tracing::info!(cluster = format!("{id:016x}"), slaves, "cluster starting");
        let cluster = Cluster {
            broker,
            runtime,
            orchestrator: handle,
            watcher,
            coordination,
            schema,
            cluster: id,
            scaler: None,
            lease,
            others_reads,
        };
        let ready = cluster.wait_ready(START_DEADLINE).await;
        coord.close().await;
        ready.map(|()| cluster)
    }

    /// The epoch the elected master leads.
    pub async fn epoch(&self) -> u64 {
        self.watcher.send(GetCluster).await.map_or(0, |v| v.epoch)
    }

    /// Waits until a master leads and, if this orchestrator leads, every
    /// worker is ready, as the workers say and as the watcher sees it
    /// (what an election goes by).
    pub async fn wait_ready(&self, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let standing = self.watcher.send(GetStanding).await.ok();
            if let Some(e) = standing.as_ref().and_then(|s| s.error.clone()) {
                return Err(Error::Unavailable(e));
            }
            let leading = standing.as_ref().is_some_and(|s| s.leading);
            let acting = standing.as_ref().is_some_and(|s| s.acting);
            let view = self.watcher.send(GetCluster).await.ok();
            let running = self.runtime.list();
            let leads = |v: &ClusterView| {
                v.workers
                    .iter()
                    .any(|w| Some(w.pid) == v.master && w.state == "leading")
            };
            let mut ready = view.as_ref().is_some_and(|v| {
                v.master.is_some()
                    && v.workers.iter().any(|w| Some(w.pid) == v.master)
                    && (acting || !leading && leads(v))
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
                let states: Vec<String> = view
                    .iter()
                    .flat_map(|v| &v.workers)
                    .map(|w| format!("{}/{}:{}", w.id, w.pid, w.state))
                    .collect();
                let ids: Vec<u64> = running.iter().map(|r| r.id).collect();
                return Err(Error::Unavailable(format!(
                    "workers did not become ready in time (leading {leading}, acting {acting}, \
                     master {:?}, the watcher's view {states:?}, running {ids:?})",
                    view.as_ref().and_then(|v| v.master)
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Starts the Scaler: from now on, while this orchestrator leads, the
    /// number of slaves follows the reads through every orchestrator.
    pub fn start_scaler(&mut self, policy: ScalePolicy) {
        let (id, reads) = (self.cluster, self.orchestrator.reads());
        let (rt, watcher) = (self.runtime.clone(), self.watcher.clone());
        let (lease, others) = (self.lease.clone(), self.others_reads.clone());
        let addr = Scaler::start_in_arbiter(&Arbiter::new().handle(), move |_| {
            Scaler::new(id, policy, (reads, others), lease, rt, watcher)
        });
        self.scaler = Some(addr);
    }

    /// Stops scaling and watching (no elections or replacements from now
    /// on), then the workers cleanly (slaves first), then the orchestrator.
    /// Workers that outlive an orchestrator (containers) are left to the
    /// others when there are others: only the last one stops them.
    pub async fn stop(&self) {
        let mut others = self.watcher.send(CountOthers).await.unwrap_or(0);
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
        let outlive = self.runtime.outlives_orchestrator();
        if outlive && others > 0 {
            // One killed a moment ago stays registered until its session
            // expires: wait that long before leaving the workers to the
            // others, or nobody would stop them (found by the swarm attack:
            // the other SIGKILLed, this one stopped at once).
            let until = Instant::now()
                + self.coordination.session_timeout() * 2
                + Duration::from_millis(500);
            while others > 0 && Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(50)).await;
                others = self.watcher.send(CountOthers).await.unwrap_or(others);
            }
        }
        if outlive && others == 0 {
            // The last one stops every worker of the cluster, those it
            // had not taken on yet too (it may not have led).
            if let Err(e) = self.runtime.adopt(self.cluster).await {
                tracing::warn!(error = %e, "cannot take the workers on to stop them");
            }
        }
        if others == 0 || !outlive {
            runtime::stop_all(self.runtime.as_ref()).await;
        }
        let _ = self.watcher.send(Resign).await;
        self.orchestrator
            .addr()
            .do_send(crate::actors::messages::Shutdown);
    }
}

#[cfg(test)]
mod scaler_tests;
