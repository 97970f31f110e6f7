//! Assembling the whole system: the embedded cluster (broker, workers,
//! orchestrator) and `dbaas up` (the cluster plus every HTTP listener).

use std::future::Future;
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::actors::election::{choose_master, Candidate};
use crate::actors::{blocking, Orchestrator, OrchestratorHandle};
use crate::broker::amqp::AmqpBroker;
use crate::broker::inproc::InProcBroker;
use crate::broker::Broker;
use crate::config::UpConfig;
use crate::error::{Error, Result};
use crate::http::{self, orchestrator::OrchestratorState};
use crate::model::Schema;
use crate::runtime::{self, InProcessRuntime, ProcessRuntime, Role, WorkerRuntime, WorkerSpec};
use crate::store::Store;

/// How long starting workers may take before `up` gives up.
const START_DEADLINE: Duration = Duration::from_secs(60);

/// A running cluster: workers and the orchestrator over one broker.
pub struct Cluster {
    pub broker: Arc<dyn Broker>,
    pub runtime: Arc<dyn WorkerRuntime>,
    pub orchestrator: OrchestratorHandle,
    pub schema: Arc<Schema>,
    /// The cluster's identity: made with its first data directory, kept in
    /// every worker's store, carried by every message.
    pub cluster: u64,
    pub epoch: u64,
}

/// A worker found on disk from an earlier run.
struct Found {
    id: u64,
    applied_seq: u64,
    epoch: u64,
    cluster: Option<u64>,
}

/// The workers an earlier run left under `dir`.
async fn discover(dir: &Path, schema: &Arc<Schema>) -> Result<Vec<Found>> {
    let mut found = Vec::new();
    let entries = std::fs::read_dir(dir)?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(id) = name
            .to_str()
            .and_then(|n| n.strip_prefix("worker-"))
            .and_then(|n| n.parse().ok())
        else {
            continue;
        };
        let (path, schema) = (entry.path(), schema.clone());
        let (applied_seq, epoch, cluster) = blocking(move || {
            let store = Store::open(&path, schema)?;
            Ok((store.applied_seq(), store.epoch(), store.cluster()))
        })
        .await?;
        found.push(Found {
            id,
            applied_seq,
            epoch,
            cluster,
        });
    }
    Ok(found)
}

/// The cluster the workers found belong to, or a new one for a new data
/// directory (or stores older than cluster identities). Stores of two
/// clusters in one directory are refused: one would overwrite the other.
fn cluster_id(found: &[Found]) -> Result<u64> {
    let mut ids: Vec<u64> = found.iter().filter_map(|f| f.cluster).collect();
    ids.sort_unstable();
    ids.dedup();
    match ids[..] {
        [] => Ok(fastrand::u64(1..)),
        [id] => Ok(id),
        _ => Err(Error::Storage(format!(
            "the data directory holds workers of {} clusters",
            ids.len()
        ))),
    }
}

/// Which workers to start: the most advanced one found leads.
fn plan(found: &[Found], slaves: usize, cluster: u64) -> (Vec<WorkerSpec>, u64) {
    let epoch = found.iter().map(|f| f.epoch).max().unwrap_or(0) + 1;
    let candidates: Vec<Candidate> = found
        .iter()
        .map(|f| Candidate {
            id: f.id,
            pid: f.id,
            applied_seq: f.applied_seq,
        })
        .collect();
    let master = choose_master(&candidates).map_or(1, |c| c.id);
    let mut specs = vec![WorkerSpec {
        id: master,
        role: Role::Master,
        epoch,
        cluster,
    }];
    let mut ids: Vec<u64> = found
        .iter()
        .map(|f| f.id)
        .filter(|&id| id != master)
        .collect();
    ids.sort_unstable();
    let mut next = found
        .iter()
        .map(|f| f.id)
        .chain([master])
        .max()
        .unwrap_or(1)
        + 1;
    while ids.len() < slaves {
        ids.push(next);
        next += 1;
    }
    specs.extend(ids.into_iter().map(|id| WorkerSpec {
        id,
        role: Role::Slave,
        epoch,
        cluster,
    }));
    (specs, epoch)
}

impl Cluster {
    /// The embedded cluster: workers as in-process actors.
    pub async fn start(data_dir: &Path, slaves: usize, broker: Arc<dyn Broker>) -> Result<Cluster> {
        let dir = workers_dir(data_dir)?;
        let schema = Arc::new(Schema::rideshare());
        let runtime = Arc::new(InProcessRuntime::new(broker.clone(), schema, &dir));
        Self::start_with(data_dir, slaves, broker, runtime).await
    }

    /// Starts the workers through `runtime` (re-using what `data_dir`
    /// holds) and the orchestrator, and returns once every slave is caught
    /// up.
    pub async fn start_with(
        data_dir: &Path,
        slaves: usize,
        broker: Arc<dyn Broker>,
        runtime: Arc<dyn WorkerRuntime>,
    ) -> Result<Cluster> {
        let schema = Arc::new(Schema::rideshare());
        let dir = workers_dir(data_dir)?;
        let found = discover(&dir, &schema).await?;
        let id = cluster_id(&found)?;
        let (specs, epoch) = plan(&found, slaves, id);
        for spec in &specs {
            runtime.start(*spec).await?;
        }
        let orch_broker = broker.clone();
        let addr = Orchestrator::start_in_arbiter(&Arbiter::new().handle(), move |_| {
            Orchestrator::new(orch_broker, id, epoch)
        });
        tracing::info!(cluster = format!("{id:016x}"), epoch, "cluster starting");
        let cluster = Cluster {
            broker,
            runtime,
            orchestrator: OrchestratorHandle::new(addr),
            schema,
            cluster: id,
            epoch,
        };
        cluster.wait_ready(START_DEADLINE).await?;
        Ok(cluster)
    }

    /// Waits until every worker reports ready.
    pub async fn wait_ready(&self, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let mut ready = true;
            for w in self.runtime.list() {
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

    /// Stops the workers cleanly (slaves first) and the orchestrator.
    pub async fn stop(&self) {
        runtime::stop_all(self.runtime.as_ref()).await;
        self.orchestrator
            .addr()
            .do_send(crate::actors::messages::Shutdown);
    }
}

/// The directory the workers' databases live in, created if need be.
pub fn workers_dir(data_dir: &Path) -> Result<std::path::PathBuf> {
    let dir = data_dir.join("workers");
    std::fs::create_dir_all(&dir).map_err(|e| Error::Storage(format!("{}: {e}", dir.display())))?;
    Ok(dir)
}

/// The broker and worker runtime `up` and `orchestrator` run on: RabbitMQ
/// with child-process workers when a URL is given, else the embedded ones.
/// Each slave's sync queue is capped at `sync_cap` messages.
pub async fn backends(
    amqp: Option<&str>,
    data_dir: &Path,
    sync_cap: u32,
) -> Result<(Arc<dyn Broker>, Arc<dyn WorkerRuntime>)> {
    let dir = workers_dir(data_dir)?;
    Ok(match amqp {
        Some(url) => {
            let broker: Arc<dyn Broker> = Arc::new(AmqpBroker::connect(url).await?);
            let exe = std::env::current_exe()?;
            let rt = ProcessRuntime::new(&exe, url, &dir).with_sync_cap(sync_cap);
            (broker, Arc::new(rt))
        }
        None => {
            let broker: Arc<dyn Broker> = Arc::new(InProcBroker::new());
            let schema = Arc::new(Schema::rideshare());
            let rt = InProcessRuntime::new(broker.clone(), schema, &dir).with_sync_cap(sync_cap);
            (broker, Arc::new(rt))
        }
    })
}

pub(crate) fn bind(addr: std::net::SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).map_err(|e| Error::bad(format!("cannot listen on {addr}: {e}")))
}

pub(crate) fn url(l: &TcpListener) -> Result<String> {
    let addr = l.local_addr()?;
    Ok(format!("http://{addr}"))
}

/// `dbaas up`: the whole system in this process until `shutdown` resolves,
/// then a clean stop (servers drain, workers flush).
pub async fn run_up(cfg: UpConfig, shutdown: impl Future<Output = ()>) -> Result<()> {
    let listeners = [
        cfg.orchestrator_addr,
        cfg.users_addr,
        cfg.rides_addr,
        cfg.gateway_addr,
    ]
    .map(bind);
    let [orch_l, users_l, rides_l, gateway_l] = listeners;
    let (orch_l, users_l, rides_l, gateway_l) = (orch_l?, users_l?, rides_l?, gateway_l?);
    let (broker, runtime) =
        backends(cfg.amqp.as_deref(), &cfg.data_dir, cfg.sync_queue_cap).await?;
    let cluster = Cluster::start_with(&cfg.data_dir, cfg.slaves, broker, runtime).await?;
    let (orch_url, users_url, rides_url, gateway_url) = (
        url(&orch_l)?,
        url(&users_l)?,
        url(&rides_l)?,
        url(&gateway_l)?,
    );
    let state = OrchestratorState {
        handle: cluster.orchestrator.clone(),
        schema: cluster.schema.clone(),
        runtime: cluster.runtime.clone(),
    };
    let servers = [
        http::gateway::server(gateway_l, &users_url, &rides_url, cfg.body_limit)?,
        http::users::server(users_l, &orch_url, cfg.body_limit)?,
        http::rides::server(rides_l, &orch_url, cfg.body_limit)?,
        http::orchestrator::server(orch_l, state, cfg.body_limit, 2)?,
    ];
    let handles: Vec<_> = servers.iter().map(|s| s.handle()).collect();
    for s in servers {
        actix::spawn(s);
    }
    println!("listening: gateway {gateway_url}");
    println!("listening: users {users_url}");
    println!("listening: rides {rides_url}");
    println!("listening: orchestrator {orch_url}");
    println!("data: {}", cfg.data_dir.display());
    println!("ready");
    tracing::info!(epoch = cluster.epoch, "system up");
    shutdown.await;
    tracing::info!("shutting down");
    for h in handles {
        h.stop(true).await;
    }
    cluster.stop().await;
    tracing::info!("stopped cleanly");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(id: u64, applied_seq: u64, epoch: u64) -> Found {
        Found {
            id,
            applied_seq,
            epoch,
            cluster: Some(7),
        }
    }

    #[test]
    fn one_cluster_per_data_directory() {
        assert_eq!(cluster_id(&[f(1, 0, 1), f(2, 0, 1)]).unwrap(), 7);
        let fresh = cluster_id(&[]).unwrap();
        assert_ne!(fresh, 0);
        let old = Found {
            cluster: None,
            ..f(3, 0, 1)
        };
        assert_ne!(
            cluster_id(&[old]).unwrap(),
            0,
            "stores of old versions join a new one"
        );
        let other = Found {
            cluster: Some(8),
            ..f(3, 0, 1)
        };
        assert!(cluster_id(&[f(1, 0, 1), other]).is_err());
    }

    #[test]
    fn fresh_start_makes_master_one_and_slaves_after() {
        let (specs, epoch) = plan(&[], 2, 7);
        assert!(specs.iter().all(|s| s.cluster == 7));
        assert_eq!(epoch, 1);
        let roles: Vec<_> = specs.iter().map(|s| (s.id, s.role)).collect();
        assert_eq!(
            roles,
            [(1, Role::Master), (2, Role::Slave), (3, Role::Slave)]
        );
    }

    #[test]
    fn restart_promotes_the_most_advanced_and_bumps_the_epoch() {
        let (specs, epoch) = plan(&[f(1, 5, 3), f(2, 9, 2)], 1, 7);
        assert_eq!(epoch, 4);
        let roles: Vec<_> = specs.iter().map(|s| (s.id, s.role)).collect();
        assert_eq!(roles, [(2, Role::Master), (1, Role::Slave)]);
    }
}
