//! Starting a configured cluster (`dbaas up`, `dbaas orchestrator`) and
//! `dbaas up`'s listeners.

use std::future::Future;
use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;

use super::{backends, Cluster, Workers};
use crate::actors::scaler::ScalePolicy;
use crate::config::UpConfig;
use crate::error::{Error, Result};
use crate::http::{self, orchestrator::OrchestratorState};
use crate::runtime::CoordTarget;

/// (Made here: the HTTP API knows nothing of the cluster that assembles it.)
impl OrchestratorState {
    /// What the handlers need of a running cluster.
    pub fn of(cluster: &Cluster) -> Self {
        OrchestratorState {
            handle: cluster.orchestrator.clone(),
            schema: cluster.schema.clone(),
            runtime: cluster.runtime.clone(),
            watcher: cluster.watcher.clone(),
            scaler: cluster.scaler.clone(),
            broker: cluster.broker.clone(),
            probes: Default::default(),
        }
    }
}

pub(crate) fn bind(addr: std::net::SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).map_err(|e| Error::bad(format!("cannot listen on {addr}: {e}")))
}

pub(crate) fn url(l: &TcpListener) -> Result<String> {
    let addr = l.local_addr()?;
    Ok(format!("http://{addr}"))
}

/// What a cluster is started with, whichever command starts it.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// RabbitMQ, with `zk`; neither: everything in this process.
    pub amqp: Option<String>,
    pub zk: Option<CoordTarget>,
    pub data_dir: PathBuf,
    pub slaves: usize,
    pub sync_queue_cap: u32,
    pub workers: Workers,
    pub request_deadline: Duration,
    pub hung_after: Duration,
    /// The Scaler's policy, if one runs.
    pub scale: Option<ScalePolicy>,
    /// This orchestrator's DB API base URL, as the others list it.
    pub addr: String,
}

impl ClusterConfig {
    /// The cluster of `dbaas up`.
    pub fn of_up(cfg: &UpConfig) -> Self {
        ClusterConfig {
            amqp: cfg.amqp.clone(),
            zk: cfg.zk_target(),
            data_dir: cfg.data_dir.clone(),
            slaves: cfg.slaves,
            sync_queue_cap: cfg.sync_queue_cap,
            workers: Workers::of(cfg.runtime, &cfg.image),
            request_deadline: cfg.request_deadline,
            hung_after: cfg.hung_after,
            scale: cfg.scale,
            addr: String::new(),
        }
    }
}

/// Starts the cluster `cfg` says: its backends, its workers, its deadlines
/// and its Scaler. `dbaas up` and `dbaas orchestrator` start theirs here.
pub async fn start_cluster(cfg: ClusterConfig) -> Result<Cluster> {
    let (broker, runtime, coordination) = backends(
        cfg.amqp.as_deref(),
        cfg.zk.as_ref(),
        &cfg.data_dir,
        cfg.sync_queue_cap,
        cfg.workers,
    )
    .await?;
    let mut cluster = Cluster::start_as(
        &cfg.data_dir,
        cfg.slaves,
        broker,
        runtime,
        coordination,
        cfg.addr,
    )
    .await?;
    cluster.orchestrator = cluster.orchestrator.with_deadline(cfg.request_deadline);
    cluster
        .watcher
        .do_send(crate::actors::watcher::SetHungAfter(cfg.hung_after));
    if let Some(policy) = cfg.scale {
        cluster.start_scaler(policy);
    }
    Ok(cluster)
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
    let (orch_url, users_url, rides_url, gateway_url) = (
        url(&orch_l)?,
        url(&users_l)?,
        url(&rides_l)?,
        url(&gateway_l)?,
    );
    let cluster = start_cluster(ClusterConfig {
        addr: orch_url.clone(),
        ..ClusterConfig::of_up(&cfg)
    })
    .await?;
    let state = OrchestratorState::of(&cluster);
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
    tracing::info!(epoch = cluster.epoch().await, "system up");
    shutdown.await;
    tracing::info!("shutting down");
    for h in handles {
        h.stop(true).await;
    }
    cluster.stop().await;
    tracing::info!("stopped cleanly");
    Ok(())
}
