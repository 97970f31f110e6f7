//! Assembling the whole system: the embedded cluster (broker, workers,
//! orchestrator) and `dbaas up` (the cluster plus every HTTP listener).

use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::actors::scaler::{ScalePolicy, Scaler, StopScaling};
use crate::actors::watcher::{ElectionWatcher, GetCluster, StopWatching};
use crate::actors::worker::Connector;
use crate::actors::{Orchestrator, OrchestratorHandle};
use crate::broker::amqp::AmqpBroker;
use crate::broker::inproc::InProcBroker;
use crate::broker::Broker;
use crate::config::UpConfig;
use crate::coord::election::{CLUSTER, MASTER};
use crate::coord::inproc::InProcServer;
use crate::coord::zk::ZkCoordinator;
use crate::coord::{CoordError, Coordinator, NodeKind};
use crate::error::{Error, Result};
use crate::http::{self, orchestrator::OrchestratorState};
use crate::model::Schema;
use crate::runtime::{
    self, CoordTarget, DockerRuntime, InProcessRuntime, ProcessRuntime, WorkerRuntime, WorkerSpec,
};

/// How many times a worker is tried at startup.
const START_TRIES: u32 = 3;
/// How long starting workers may take before `up` gives up.
const START_DEADLINE: Duration = Duration::from_secs(60);
/// The session timeout of the in-process coordinator (its sessions end
/// only when closed or expired on purpose; the lease is a part of this).
pub const EMBEDDED_SESSION: Duration = Duration::from_secs(2);
/// The file in the data directory that holds the cluster's identity.
const IDENTITY_FILE: &str = "cluster-id";

/// Where the coordinator is: in this process, or ZooKeeper.
#[derive(Clone)]
pub enum Coordination {
    Embedded(InProcServer),
    ZooKeeper(CoordTarget),
}

impl Coordination {
    /// A fresh in-process coordinator.
    pub fn embedded() -> Self {
        Coordination::Embedded(InProcServer::new())
    }

    /// Opens sessions on this coordinator.
    pub fn connector(&self) -> Connector {
        match self.clone() {
            Coordination::Embedded(server) => Arc::new(move || {
                let session = server.connect("/dbaas");
                Box::pin(async move { session.map(|s| Arc::new(s) as Arc<dyn Coordinator>) })
            }),
            Coordination::ZooKeeper(t) => Arc::new(move || {
                let t = t.clone();
                Box::pin(async move {
                    let zk = ZkCoordinator::connect(&t.hosts, &t.root, t.session_timeout).await?;
                    Ok(Arc::new(zk) as Arc<dyn Coordinator>)
                })
            }),
        }
    }

    pub fn session_timeout(&self) -> Duration {
        match self {
            Coordination::Embedded(_) => EMBEDDED_SESSION,
            Coordination::ZooKeeper(t) => t.session_timeout,
        }
    }
}

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

/// The cluster's identity: the data directory's (a new one for a new
/// directory), which the coordinator's root must hold too. A root that
/// holds another cluster's is refused, unless the directory is new: a new
/// cluster then takes the root over (and its `/master` goes).
async fn identity(coord: &dyn Coordinator, data_dir: &Path) -> Result<u64> {
    let file = data_dir.join(IDENTITY_FILE);
    let ours = match std::fs::read_to_string(&file) {
        Ok(text) => Some(parse_identity(text.trim())?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    let theirs = coord.get(CLUSTER).await?;
    let theirs = theirs.map(|n| String::from_utf8_lossy(&n.data).into_owned());
    let id = match (ours, theirs) {
        (Some(id), Some(t)) if parse_identity(&t).ok() == Some(id) => return Ok(id),
        (Some(id), Some(t)) => {
            return Err(Error::bad(format!(
                "the coordinator's root belongs to cluster {t}, this data directory to {id:016x}"
            )))
        }
        (Some(id), None) => id,
        (None, _) => {
            let id = fastrand::u64(1..);
            std::fs::write(&file, format!("{id:016x}\n"))?;
            match coord.delete(MASTER, None).await {
                Ok(()) | Err(CoordError::NoNode) => {}
                Err(e) => return Err(e.into()),
            }
            id
        }
    };
    let text = format!("{id:016x}");
    match coord
        .create(CLUSTER, text.as_bytes(), NodeKind::Persistent)
        .await
    {
        Err(CoordError::NodeExists) => {
            coord.set(CLUSTER, text.as_bytes(), None).await?;
        }
        other => other?,
    }
    Ok(id)
}

fn parse_identity(text: &str) -> Result<u64> {
    u64::from_str_radix(text, 16)
        .ok()
        .filter(|&id| id != 0)
        .ok_or_else(|| Error::bad(format!("{text:?} is not a cluster identity")))
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
            // A start may fail for a moment (a store its killed process
            // held, a container name being freed): tried again, bounded.
            let mut tries = 0;
            while let Err(e) = runtime.start(spec).await {
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
        }
    }
}

/// The directory the workers' databases live in, created if need be.
pub fn workers_dir(data_dir: &Path) -> Result<PathBuf> {
    let dir = data_dir.join("workers");
    std::fs::create_dir_all(&dir).map_err(|e| Error::Storage(format!("{}: {e}", dir.display())))?;
    Ok(dir)
}

/// In-process workers on `broker`, coordinated by `coordination`.
pub fn embedded_runtime(
    broker: &Arc<dyn Broker>,
    data_dir: &Path,
    coordination: &Coordination,
    sync_cap: Option<u32>,
) -> Result<Arc<dyn WorkerRuntime>> {
    let dir = workers_dir(data_dir)?;
    let schema = Arc::new(Schema::rideshare());
    let launch = crate::actors::worker::launcher(
        schema,
        broker.clone(),
        coordination.connector(),
        coordination.session_timeout(),
    );
    let mut rt = InProcessRuntime::new(&dir, launch);
    if let Some(cap) = sync_cap {
        rt = rt.with_sync_cap(cap);
    }
    Ok(Arc::new(rt))
}

/// Where the workers run when they are not in this process.
#[derive(Clone, Debug)]
pub enum Workers {
    /// Child processes of this one.
    Processes,
    /// Docker containers from this image.
    Containers { image: String },
}

impl Workers {
    /// The workers of a runtime setting (`--runtime`, `--image`).
    pub fn of(kind: crate::config::RuntimeKind, image: &str) -> Self {
        match kind {
            crate::config::RuntimeKind::Process => Workers::Processes,
            crate::config::RuntimeKind::Docker => Workers::Containers {
                image: image.to_owned(),
            },
        }
    }
}

/// The broker, worker runtime and coordinator `up` and `orchestrator` run
/// on: RabbitMQ with worker processes or containers coordinated by
/// ZooKeeper when both are given, else everything in this process. Each
/// slave's sync queue is capped at `sync_cap` messages.
pub async fn backends(
    amqp: Option<&str>,
    zk: Option<&CoordTarget>,
    data_dir: &Path,
    sync_cap: u32,
    workers: Workers,
) -> Result<(Arc<dyn Broker>, Arc<dyn WorkerRuntime>, Coordination)> {
    let dir = workers_dir(data_dir)?;
    match (amqp, zk) {
        (Some(url), Some(zk)) => {
            let broker: Arc<dyn Broker> = Arc::new(AmqpBroker::connect(url).await?);
            let rt: Arc<dyn WorkerRuntime> = match workers {
                Workers::Processes => {
                    let exe = std::env::current_exe()?;
                    let rt = ProcessRuntime::new(&exe, url, &dir, zk.clone());
                    Arc::new(rt.with_sync_cap(sync_cap))
                }
                Workers::Containers { image } => {
                    let docker = runtime::docker::connect().await?;
                    worker_image(&docker, &image).await?;
                    let rt = DockerRuntime::new(docker, &image, url, &dir, zk.clone())?;
                    Arc::new(rt.with_sync_cap(sync_cap))
                }
            };
            Ok((broker, rt, Coordination::ZooKeeper(zk.clone())))
        }
        (Some(_), None) => Err(Error::bad(
            "worker processes need a coordinator: give --zk HOST:PORT (or DBAAS_ZK) with --amqp",
        )),
        (None, Some(_)) => Err(Error::bad(
            "a coordinator needs worker processes on a broker: give --amqp with --zk",
        )),
        (None, None) => {
            let broker: Arc<dyn Broker> = Arc::new(InProcBroker::new());
            let coordination = Coordination::embedded();
            let rt = embedded_runtime(&broker, data_dir, &coordination, Some(sync_cap))?;
            Ok((broker, rt, coordination))
        }
    }
}

/// Makes sure the worker image is there and holds this build: made from
/// this binary when it is static, else by `docker/build` (which builds a
/// static one) when run from the project's directory.
async fn worker_image(docker: &bollard::Docker, image: &str) -> Result<()> {
    let exe = std::env::current_exe()?;
    if runtime::docker::is_static(&exe)? {
        return runtime::docker::ensure_image(docker, image, &exe).await;
    }
    let script = Path::new("docker/build");
    if !script.exists() {
        return Err(Error::bad(format!(
            "{} is not a static binary and there is no docker/build here to make the image {image}; run docker/build in the project's directory",
            exe.display()
        )));
    }
    tracing::info!(image, "building the worker image with docker/build");
    let status = tokio::process::Command::new(script)
        .arg(image)
        .status()
        .await?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::Unavailable(format!("docker/build failed: {status}")))
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
    let mut cluster =
        Cluster::start_with(&cfg.data_dir, cfg.slaves, broker, runtime, coordination).await?;
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
    let cluster = start_cluster(ClusterConfig::of_up(&cfg)).await?;
    let (orch_url, users_url, rides_url, gateway_url) = (
        url(&orch_l)?,
        url(&users_l)?,
        url(&rides_l)?,
        url(&gateway_l)?,
    );
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

    #[actix::test]
    async fn one_identity_per_data_directory_and_root() {
        let server = InProcServer::new();
        let coord = server.connect("/a").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let id = identity(&coord, dir.path()).await.unwrap();
        assert_ne!(id, 0);
        assert_eq!(identity(&coord, dir.path()).await.unwrap(), id);
        // The same directory on a fresh root: the root takes it.
        let other = server.connect("/b").unwrap();
        assert_eq!(identity(&other, dir.path()).await.unwrap(), id);
        // A new directory on a used root: a new cluster takes it over.
        let fresh = tempfile::tempdir().unwrap();
        let id2 = identity(&coord, fresh.path()).await.unwrap();
        assert_ne!(id2, id);
        // The first directory on that root now: refused.
        assert!(identity(&coord, dir.path()).await.is_err());
        assert!(parse_identity("0").is_err() && parse_identity("zz").is_err());
    }
}
