//! What a cluster runs on: its broker, its worker runtime and its
//! coordinator.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::actors::worker::Connector;
use crate::broker::amqp::AmqpBroker;
use crate::broker::inproc::InProcBroker;
use crate::broker::Broker;
use crate::coord::inproc::InProcServer;
use crate::coord::zk::ZkCoordinator;
use crate::coord::Coordinator;
use crate::error::{Error, Result};
use crate::model::Schema;
use crate::runtime::{
    self, CoordTarget, DockerRuntime, InProcessRuntime, ProcessRuntime, SwarmRuntime, WorkerRuntime,
};

/// The session timeout of the in-process coordinator (its sessions end
/// only when closed or expired on purpose; the lease is a part of this).
pub const EMBEDDED_SESSION: Duration = Duration::from_secs(2);

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
    /// Services of the Docker Swarm the engine manages, from this image.
    Services { image: String },
}

impl Workers {
    /// The workers of a runtime setting (`--runtime`, `--image`).
    pub fn of(kind: crate::config::RuntimeKind, image: &str) -> Self {
        match kind {
            crate::config::RuntimeKind::Process => Workers::Processes,
            crate::config::RuntimeKind::Docker => Workers::Containers {
                image: image.to_owned(),
            },
            crate::config::RuntimeKind::Swarm => Workers::Services {
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
                Workers::Services { image } => {
                    let docker = runtime::docker::connect().await?;
                    // Refused before any image is built when the engine
                    // manages no swarm.
                    runtime::swarm::manager_node(
                        &docker
                            .info()
                            .await
                            .map_err(|e| Error::Unavailable(format!("docker: {e}")))?,
                    )?;
                    worker_image(&docker, &image).await?;
                    let rt = SwarmRuntime::new(docker, &image, url, &dir, zk.clone()).await?;
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
