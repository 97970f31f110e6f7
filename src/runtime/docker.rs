//! Workers as Docker containers, through bollard: one container per
//! worker, from an image `FROM scratch` that holds only the static `dbaas`
//! binary ([`ensure_image`] builds it from this very binary when it is
//! missing or stale; no registry is needed).
//!
//! Networking: every worker container shares the host's network and pid
//! namespaces (`--network host --pid host`). The `--amqp` and `--zk`
//! addresses the user gives, as seen from the host (127.0.0.1 included),
//! then work unchanged inside the containers; each worker's control
//! listener binds 127.0.0.1 on a port of its own, reachable from the
//! orchestrator on the host; and a worker's pid, which it registers in the
//! coordinator, is its container's `State.Pid`, the pid the crash APIs
//! answer. Each worker keeps its store on a bind mount of the host's
//! workers directory, at the same path inside.
//!
//! Every container carries labels (`dbaas.cluster`, `dbaas.role`,
//! `dbaas.worker`) and a name of its cluster and id, so an orchestrator
//! that starts again adopts the workers it finds running ([`adopt`]) and
//! removes the containers of its cluster that exited.
//!
//! [`adopt`]: super::WorkerRuntime::adopt

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, KillContainerOptionsBuilder, ListContainersOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;
use tokio::sync::{broadcast, watch};

mod image;

pub use image::{ensure_image, is_static};

use super::{CoordTarget, Exit, StartingSet, WorkerInfo, WorkerRuntime, WorkerSpec, EXITS};
use crate::error::{Error, Result};
use crate::model::WorkerStatus;

/// How long a worker may take to come up, and to stop cleanly.
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Labels of every worker container.
pub const CLUSTER_LABEL: &str = "dbaas.cluster";
pub const ROLE_LABEL: &str = "dbaas.role";
pub const WORKER_LABEL: &str = "dbaas.worker";

fn docker_err(e: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!("docker: {e}"))
}

/// Connects to the local Docker engine (`DOCKER_HOST` or its socket),
/// speaking the engine's API version.
pub async fn connect() -> Result<Docker> {
    let docker = Docker::connect_with_local_defaults().map_err(docker_err)?;
    docker.negotiate_version().await.map_err(docker_err)
}

struct Running {
    info: WorkerInfo,
    container: String,
    control: String,
    /// Set before a stop on purpose, so its exit is expected.
    stopping: Arc<AtomicBool>,
    /// Becomes true once the container has exited.
    exited: watch::Receiver<bool>,
}

/// Starts workers as Docker containers.
pub struct DockerRuntime {
    docker: Docker,
    image: String,
    amqp_url: String,
    data_dir: PathBuf,
    coord: CoordTarget,
    sync_cap: u32,
    http: reqwest::Client,
    workers: Arc<Mutex<BTreeMap<u64, Running>>>,
    /// Workers being started (see [`StartingSet`]).
    starting: StartingSet,
    exits: broadcast::Sender<Exit>,
}

impl DockerRuntime {
    /// Workers from `image` on the engine `docker`, on the broker at
    /// `amqp_url` and the coordinator `coord`, keeping their databases
    /// under `data_dir` (bound into each container at the same path).
    pub fn new(
        docker: Docker,
        image: &str,
        amqp_url: &str,
        data_dir: &Path,
        coord: CoordTarget,
    ) -> Result<Self> {
        let data_dir = std::fs::canonicalize(data_dir)?;
        Ok(DockerRuntime {
            docker,
            image: image.to_owned(),
            amqp_url: amqp_url.to_owned(),
            data_dir,
            coord,
            sync_cap: crate::broker::SYNC_QUEUE_CAP,
            http: super::control_client(),
            workers: Arc::default(),
            starting: StartingSet::default(),
            exits: broadcast::channel(EXITS).0,
        })
    }

    /// Caps each slave's sync queue at `messages`.
    pub fn with_sync_cap(mut self, messages: u32) -> Self {
        self.sync_cap = messages;
        self
    }

    fn workers(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Running>> {
        self.workers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The container name of worker `id` of `cluster`.
    pub fn container_name(cluster: u64, id: u64) -> String {
        format!("dbaas-{cluster:016x}-worker-{id}")
    }

    fn create_body(&self, spec: WorkerSpec) -> ContainerCreateBody {
        let dir = self.data_dir.display().to_string();
        let cmd = super::worker_args(
            spec,
            self.sync_cap,
            &self.amqp_url,
            &self.coord,
            &self.data_dir,
        );
        let labels = HashMap::from([
            (CLUSTER_LABEL.to_owned(), format!("{:016x}", spec.cluster)),
            (ROLE_LABEL.to_owned(), "worker".to_owned()),
            (WORKER_LABEL.to_owned(), spec.id.to_string()),
        ]);
        ContainerCreateBody {
            image: Some(self.image.clone()),
            cmd: Some(cmd),
            labels: Some(labels),
            // `RUST_LOG` passes on, so a worker logs as its orchestrator.
            env: std::env::var("RUST_LOG")
                .ok()
                .map(|v| vec![format!("RUST_LOG={v}")]),
            host_config: Some(HostConfig {
                network_mode: Some("host".into()),
                pid_mode: Some("host".into()),
                binds: Some(vec![format!("{dir}:{dir}")]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Reads the container's output until it says where its control
    /// listener is; the rest is passed on as log lines.
    async fn control_url(&self, container: &str, id: u64) -> Result<String> {
        let options = LogsOptionsBuilder::default()
            .follow(true)
            .stdout(true)
            .stderr(true)
            .build();
        let mut logs = self.docker.logs(container, Some(options));
        let find = async {
            let (mut pending, mut last) = (String::new(), String::new());
            while let Some(chunk) = logs.next().await {
                let chunk = chunk.map_err(docker_err)?;
                pending.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
                while let Some(end) = pending.find('\n') {
                    let line: String = pending.drain(..=end).collect();
                    if let Some(url) = super::control_line(&line) {
                        return Ok(url);
                    }
                    last = line;
                }
            }
            Err(docker_err(format!(
                "worker {id} exited before it listened: {}",
                last.trim()
            )))
        };
        let url = tokio::time::timeout(START_TIMEOUT, find)
            .await
            .map_err(|_| docker_err(format!("worker {id} did not start in time")))??;
        tokio::spawn(async move {
            while let Some(Ok(chunk)) = logs.next().await {
                for line in String::from_utf8_lossy(&chunk.into_bytes()).lines() {
                    tracing::debug!(worker = id, "{line}");
                }
            }
        });
        Ok(url)
    }

    /// Lists and remembers a running container (`container` names it,
    /// `container_id` is the engine's id of this one), and waits for its
    /// exit.
    fn track(&self, info: WorkerInfo, container: String, container_id: String, control: String) {
        let stopping = Arc::new(AtomicBool::new(false));
        let (done, exited) = watch::channel(false);
        self.workers().insert(
            info.id,
            Running {
                info,
                container: container.clone(),
                control,
                stopping: stopping.clone(),
                exited,
            },
        );
        let (docker, workers, exits) = (
            self.docker.clone(),
            self.workers.clone(),
            self.exits.clone(),
        );
        tokio::spawn(async move {
            // The stream ends (or fails: a non-zero exit code is an error
            // to bollard) once the container has stopped.
            // By id: a later container of the same name is not this one.
            let mut wait = docker.wait_container(&container_id, None);
            let status = wait.next().await;
            let expected = stopping.load(Ordering::Acquire);
            tracing::info!(
                worker = info.id,
                pid = info.pid,
                ?status,
                expected,
                "worker exited"
            );
            let remove = RemoveContainerOptionsBuilder::default().force(true).build();
            let _ = docker.remove_container(&container_id, Some(remove)).await;
            workers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&info.id);
            let _ = exits.send(Exit {
                id: info.id,
                pid: info.pid,
                expected,
                gone: true,
            });
            let _ = done.send(true);
        });
    }

    /// Asks the engine to signal worker `id`'s container (or stop it) and
    /// waits, bounded, for its exit.
    async fn end(&self, id: u64, expected: bool, kill: bool) -> Result<bool> {
        let (container, mut exited) = {
            let workers = self.workers();
            let w = workers
                .get(&id)
                .ok_or_else(|| Error::bad(format!("no worker {id}")))?;
            w.stopping.store(expected, Ordering::Release);
            (w.container.clone(), w.exited.clone())
        };
        // A paused container (`docker pause`) is thawed first: frozen, it
        // could not act on a stop's SIGTERM (a deposed master's lease has
        // run out by then).
        let _ = self.docker.unpause_container(&container).await;
        let asked = if kill {
            let options = KillContainerOptionsBuilder::default()
                .signal("SIGKILL")
                .build();
            self.docker.kill_container(&container, Some(options)).await
        } else {
            let secs = i32::try_from(STOP_TIMEOUT.as_secs()).unwrap_or(i32::MAX);
            let options = StopContainerOptionsBuilder::default().t(secs).build();
            self.docker.stop_container(&container, Some(options)).await
        };
        if let Err(e) = asked {
            tracing::warn!(worker = id, error = %e, "docker did not signal the worker");
        }
        let within = STOP_TIMEOUT + Duration::from_secs(5);
        let gone = tokio::time::timeout(within, exited.wait_for(|&e| e)).await;
        Ok(matches!(gone, Ok(Ok(_))))
    }

    /// The pid of a container's process (`State.Pid`), if it runs.
    async fn pid(&self, container: &str) -> Result<Option<u64>> {
        let inspect = self
            .docker
            .inspect_container(container, None)
            .await
            .map_err(docker_err)?;
        Ok(inspect
            .state
            .and_then(|s| s.pid)
            .and_then(|p| u64::try_from(p).ok())
            .filter(|&p| p > 0))
    }

    /// The containers of `cluster` the engine knows, running or not.
    async fn containers(&self, cluster: u64) -> Result<Vec<bollard::models::ContainerSummary>> {
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![format!("{CLUSTER_LABEL}={cluster:016x}")],
        )]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        self.docker
            .list_containers(Some(options))
            .await
            .map_err(docker_err)
    }
}

#[async_trait]
impl WorkerRuntime for DockerRuntime {
    async fn start(&self, spec: WorkerSpec) -> Result<WorkerInfo> {
        let runs = self.workers().contains_key(&spec.id);
        let _starting = self.starting.hold(spec.id, runs)?;
        let name = Self::container_name(spec.cluster, spec.id);
        // A container of that name left behind (exited) goes first; its
        // removal may be under way already (the name stays taken until it
        // is done): try again, bounded.
        let deadline = std::time::Instant::now() + START_TIMEOUT;
        let created = loop {
            let remove = RemoveContainerOptionsBuilder::default().force(true).build();
            let _ = self.docker.remove_container(&name, Some(remove)).await;
            let options = CreateContainerOptionsBuilder::default().name(&name).build();
            match self
                .docker
                .create_container(Some(options), self.create_body(spec))
                .await
            {
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 409, ..
                }) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => break other.map_err(docker_err)?,
            }
        };
        self.docker
            .start_container(&name, None)
            .await
            .map_err(docker_err)?;
        let control = match self.control_url(&name, spec.id).await {
            Ok(url) => url,
            Err(e) => {
                let remove = RemoveContainerOptionsBuilder::default().force(true).build();
                let _ = self.docker.remove_container(&name, Some(remove)).await;
                return Err(e);
            }
        };
        let pid = self
            .pid(&name)
            .await?
            .ok_or_else(|| docker_err(format!("worker {} has no pid", spec.id)))?;
        let info = WorkerInfo { id: spec.id, pid };
        self.track(info, name, created.id, control);
        Ok(info)
    }

    async fn stop(&self, id: u64) -> Result<()> {
        let pid = self.workers().get(&id).map(|w| w.info.pid);
        if let Some(pid) = pid {
            let _ = self.exits.send(Exit {
                id,
                pid,
                expected: true,
                gone: false,
            });
        }
        if self.end(id, true, false).await? {
            Ok(())
        } else {
            Err(docker_err(format!("worker {id} did not stop in time")))
        }
    }

    async fn kill(&self, id: u64) -> Result<()> {
        if self.end(id, false, true).await? {
            Ok(())
        } else {
            Err(docker_err(format!(
                "worker {id} did not exit after SIGKILL"
            )))
        }
    }

    async fn status(&self, id: u64) -> Result<WorkerStatus> {
        let control = self
            .workers()
            .get(&id)
            .map(|w| w.control.clone())
            .ok_or_else(|| Error::bad(format!("no worker {id}")))?;
        super::control_status(&self.http, &control).await
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

    fn outlives_orchestrator(&self) -> bool {
        true
    }

    /// Adopts the running worker containers of `cluster` (an orchestrator
    /// started again finds its workers), and removes those that exited.
    async fn adopt(&self, cluster: u64) -> Result<Vec<WorkerInfo>> {
        let mut adopted = Vec::new();
        for c in self.containers(cluster).await? {
            let Some(name) = c
                .names
                .as_ref()
                .and_then(|n| n.first())
                .map(|n| n.trim_start_matches('/').to_owned())
            else {
                continue;
            };
            let id = c
                .labels
                .as_ref()
                .and_then(|l| l.get(WORKER_LABEL))
                .and_then(|v| v.parse::<u64>().ok());
            let running = c.state == Some(bollard::models::ContainerSummaryStateEnum::RUNNING);
            let known = id.is_some_and(|id| self.workers().contains_key(&id));
            let (Some(id), true, false) = (id, running, known) else {
                if !known {
                    tracing::info!(container = name, "removing a worker container that exited");
                    let remove = RemoveContainerOptionsBuilder::default().force(true).build();
                    let _ = self.docker.remove_container(&name, Some(remove)).await;
                }
                continue;
            };
            let Some(pid) = self.pid(&name).await? else {
                continue;
            };
            let control = self.control_url(&name, id).await?;
            let info = WorkerInfo { id, pid };
            tracing::info!(
                worker = id,
                pid,
                container = name,
                "adopted a running worker"
            );
            let container_id = c.id.clone().unwrap_or_else(|| name.clone());
            self.track(info, name, container_id, control);
            adopted.push(info);
        }
        Ok(adopted)
    }
}
