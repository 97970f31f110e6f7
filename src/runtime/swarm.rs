//! Workers as Docker Swarm services, through bollard's service API: one
//! service of one replica per worker, from the same image `FROM scratch`
//! as the Docker runtime's, so that workers run across the nodes of a
//! swarm. The engine this runtime talks to must be a manager of the swarm.
//!
//! Networking: every worker task is attached to the swarm's `host`
//! network, as the Docker runtime's containers share the host's. The
//! `--amqp` and `--zk` addresses the user gives then work unchanged in
//! the tasks (on several nodes they must be addresses every node
//! reaches), and so do the workers' control listeners: one on the
//! manager's own node binds 127.0.0.1, one on another node binds every
//! address and is reached at that node's address. An overlay network
//! would not serve: a process on a host (an orchestrator not in a
//! container) cannot reach the addresses of tasks on an overlay.
//!
//! Identity: a task runs in a pid namespace of its own, where every worker
//! is process 1, so each worker is given the number it is known by
//! (`dbaas worker --pid`): the millisecond it was started at (unix time),
//! unique among the workers of a cluster. Every service carries labels
//! (`dbaas.cluster`, `dbaas.role`, `dbaas.worker`, `dbaas.pid`), and so
//! does each task's container, so that an orchestrator that leads later
//! adopts the services it finds running ([`adopt`]) and removes those whose
//! task ended.
//!
//! Restarts: a service's restart policy is `none`. The orchestrator's
//! watcher replaces a worker that died, over its store; were Swarm to
//! restart the task as well, two workers of the same id would race for one
//! store, and the death would not be seen as an exit.
//!
//! Placement: each service is pinned to a node (`node.id==…`) chosen by
//! this runtime, the node holding the fewest workers of the cluster
//! (Swarm's own spreading works within a service, not across the services
//! of a cluster), so that no two workers of a cluster share a node while
//! there are nodes enough; a worker started again goes back to the node it
//! ran on, where its store is. Each worker keeps its store on a bind mount
//! of the workers directory, at the same path on every node.
//!
//! The image is named by its id (`sha256:…`), so that no node tries to
//! pull it from a registry: every node must hold it (`docker save` and
//! `docker load` carry it, id and all).
//!
//! [`adopt`]: super::WorkerRuntime::adopt

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bollard::models::{
    Mount, MountType, NetworkAttachmentConfig, NodeSpecAvailabilityEnum, NodeState, ServiceSpec,
    ServiceSpecMode, ServiceSpecModeReplicated, SystemInfo, TaskSpec, TaskSpecContainerSpec,
    TaskSpecPlacement, TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum, TaskState,
};
use bollard::query_parameters::{
    KillContainerOptionsBuilder, ListNodesOptionsBuilder, ListServicesOptionsBuilder,
    ListTasksOptionsBuilder, LogsOptionsBuilder,
};
use bollard::Docker;
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::sync::{broadcast, watch};

use super::docker::{CLUSTER_LABEL, ROLE_LABEL, WORKER_LABEL};
use super::{CoordTarget, Exit, StartingSet, WorkerInfo, WorkerRuntime, WorkerSpec, EXITS};
use crate::error::{Error, Result};
use crate::model::WorkerStatus;

/// How long a worker may take to come up, and to stop cleanly.
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// How often the state of a task on another node is looked at.
const POLL: Duration = Duration::from_millis(250);
/// The label of a worker service that holds its pid.
pub const PID_LABEL: &str = "dbaas.pid";

fn swarm_err(e: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!("docker swarm: {e}"))
}

/// This node's id when the engine is a manager of a swarm, else a clear
/// error saying what to do.
pub fn manager_node(info: &SystemInfo) -> Result<String> {
    let swarm = info.swarm.as_ref();
    let manager = swarm.and_then(|s| s.control_available).unwrap_or(false);
    let node = swarm.and_then(|s| s.node_id.clone()).unwrap_or_default();
    if !manager || node.is_empty() {
        let state = swarm
            .and_then(|s| s.local_node_state)
            .map_or("unknown".to_owned(), |s| s.to_string());
        return Err(Error::bad(format!(
            "--runtime swarm needs a Docker engine that is a swarm manager, and this one is not \
             (swarm state: {}): run `docker swarm init` on it, or point DOCKER_HOST at a manager",
            if state.is_empty() { "none" } else { &state }
        )));
    }
    Ok(node)
}

/// A task that has ended (or will never run).
fn ended(state: Option<TaskState>) -> bool {
    matches!(
        state,
        Some(
            TaskState::COMPLETE
                | TaskState::SHUTDOWN
                | TaskState::FAILED
                | TaskState::REJECTED
                | TaskState::REMOVE
                | TaskState::ORPHANED
        )
    )
}

/// The node for a worker among the `ready` ones, given the nodes the
/// cluster's other workers are pinned to: the one holding fewest of them,
/// then its `home` (where it ran, its store there), then `local` (the
/// manager's), then by id.
fn choose_node(
    ready: &[String],
    pinned: &[String],
    home: Option<&str>,
    local: &str,
) -> Option<String> {
    ready
        .iter()
        .min_by_key(|n| {
            let count = pinned.iter().filter(|p| p == n).count();
            (
                count,
                Some(n.as_str()) != home,
                n.as_str() != local,
                n.as_str(),
            )
        })
        .cloned()
}

struct Running {
    info: WorkerInfo,
    /// The service's id.
    service: String,
    /// Its task's container, and whether it is on this node.
    container: String,
    local: bool,
    control: String,
    /// Set before a stop on purpose, so its exit is expected.
    stopping: Arc<AtomicBool>,
    /// Becomes true once the task has ended.
    exited: watch::Receiver<bool>,
}

/// Where a worker's task runs.
struct Placed {
    task: String,
    node: String,
    container: String,
}

/// Starts workers as Swarm services.
pub struct SwarmRuntime {
    docker: Docker,
    /// The image's id, so that no node pulls it.
    image: String,
    amqp_url: String,
    data_dir: PathBuf,
    coord: CoordTarget,
    sync_cap: u32,
    http: reqwest::Client,
    /// The manager's own node.
    node: String,
    workers: Arc<Mutex<BTreeMap<u64, Running>>>,
    /// Workers being started: not listed until their task runs and says
    /// where its control API is, and not to be started twice meanwhile
    /// (a second start would remove the first's service of the same name).
    starting: StartingSet,
    /// The node each worker last ran on (where its store is).
    homes: Mutex<HashMap<u64, String>>,
    last_pid: Mutex<u64>,
    exits: broadcast::Sender<Exit>,
}

impl SwarmRuntime {
    /// Workers from `image` (a tag or an id the engine holds) as services
    /// of the swarm the engine `docker` manages, on the broker at
    /// `amqp_url` and the coordinator `coord`, keeping their databases
    /// under `data_dir` (bound into each task at the same path).
    pub async fn new(
        docker: Docker,
        image: &str,
        amqp_url: &str,
        data_dir: &Path,
        coord: CoordTarget,
    ) -> Result<Self> {
        let info = docker.info().await.map_err(swarm_err)?;
        let node = manager_node(&info)?;
        let image = docker
            .inspect_image(image)
            .await
            .map_err(|e| Error::bad(format!("the worker image {image}: {e}")))?
            .id
            .ok_or_else(|| Error::bad(format!("the worker image {image} has no id")))?;
        let data_dir = std::fs::canonicalize(data_dir)?;
        Ok(SwarmRuntime {
            docker,
            image,
            amqp_url: amqp_url.to_owned(),
            data_dir,
            coord,
            sync_cap: crate::broker::SYNC_QUEUE_CAP,
            http: super::control_client(),
            node,
            workers: Arc::default(),
            starting: StartingSet::default(),
            homes: Mutex::default(),
            last_pid: Mutex::new(0),
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

    /// The service name of worker `id` of `cluster`.
    pub fn service_name(cluster: u64, id: u64) -> String {
        format!("dbaas-{cluster:016x}-worker-{id}")
    }

    /// A pid for a new worker: the current unix millisecond, above any
    /// given before.
    fn next_pid(&self) -> u64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let mut last = self.last_pid.lock().unwrap_or_else(|p| p.into_inner());
        *last = now.max(*last + 1);
        *last
    }

    fn labels(spec: WorkerSpec, pid: u64) -> HashMap<String, String> {
        HashMap::from([
            (CLUSTER_LABEL.to_owned(), format!("{:016x}", spec.cluster)),
            (ROLE_LABEL.to_owned(), "worker".to_owned()),
            (WORKER_LABEL.to_owned(), spec.id.to_string()),
            (PID_LABEL.to_owned(), pid.to_string()),
        ])
    }

    fn service_spec(&self, spec: WorkerSpec, pid: u64, node: &str) -> ServiceSpec {
        let dir = self.data_dir.display().to_string();
        let mut args = super::worker_args(
            spec,
            self.sync_cap,
            &self.amqp_url,
            &self.coord,
            &self.data_dir,
        );
        // A worker on another node is reached at that node's address.
        if node != self.node {
            if let Some(at) = args.iter().position(|a| a == "--control-addr") {
                args[at + 1] = "0.0.0.0:0".to_owned();
            }
        }
        args.extend(["--pid".to_owned(), pid.to_string()]);
        let labels = Self::labels(spec, pid);
        let nanos = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        ServiceSpec {
            name: Some(Self::service_name(spec.cluster, spec.id)),
            labels: Some(labels.clone()),
            mode: Some(ServiceSpecMode {
                replicated: Some(ServiceSpecModeReplicated { replicas: Some(1) }),
                ..Default::default()
            }),
            task_template: Some(TaskSpec {
                container_spec: Some(TaskSpecContainerSpec {
                    image: Some(self.image.clone()),
                    args: Some(args),
                    labels: Some(labels),
                    // `RUST_LOG` passes on, so a worker logs as its
                    // orchestrator.
                    env: std::env::var("RUST_LOG")
                        .ok()
                        .map(|v| vec![format!("RUST_LOG={v}")]),
                    mounts: Some(vec![Mount {
                        typ: Some(MountType::BIND),
                        source: Some(dir.clone()),
                        target: Some(dir),
                        ..Default::default()
                    }]),
                    stop_signal: Some("SIGTERM".to_owned()),
                    stop_grace_period: Some(nanos(STOP_TIMEOUT)),
                    ..Default::default()
                }),
                restart_policy: Some(TaskSpecRestartPolicy {
                    condition: Some(TaskSpecRestartPolicyConditionEnum::NONE),
                    ..Default::default()
                }),
                placement: Some(TaskSpecPlacement {
                    constraints: Some(vec![format!("node.id=={node}")]),
                    ..Default::default()
                }),
                networks: Some(vec![NetworkAttachmentConfig {
                    target: Some("host".to_owned()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The services of `cluster` the swarm has.
    async fn services(&self, cluster: u64) -> Result<Vec<bollard::models::Service>> {
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![format!("{CLUSTER_LABEL}={cluster:016x}")],
        )]);
        let options = ListServicesOptionsBuilder::default()
            .filters(&filters)
            .build();
        self.docker
            .list_services(Some(options))
            .await
            .map_err(swarm_err)
    }

    /// The tasks of service `service`, newest first.
    async fn tasks(&self, service: &str) -> Result<Vec<bollard::models::Task>> {
        let filters = HashMap::from([("service".to_owned(), vec![service.to_owned()])]);
        let options = ListTasksOptionsBuilder::default().filters(&filters).build();
        let mut tasks = self
            .docker
            .list_tasks(Some(options))
            .await
            .map_err(swarm_err)?;
        tasks.sort_by(|a, b| b.created_at.cmp(&a.created_at));
        Ok(tasks)
    }

    /// The node worker `spec` is to run on: the ready node holding the
    /// fewest workers of its cluster, the one it last ran on first, then
    /// this one.
    async fn place(&self, spec: WorkerSpec) -> Result<String> {
        let nodes = self
            .docker
            .list_nodes(None::<bollard::query_parameters::ListNodesOptions>)
            .await
            .map_err(swarm_err)?;
        let ready: Vec<String> = nodes
            .into_iter()
            .filter(|n| {
                n.status.as_ref().and_then(|s| s.state) == Some(NodeState::READY)
                    && n.spec.as_ref().and_then(|s| s.availability)
                        == Some(NodeSpecAvailabilityEnum::ACTIVE)
            })
            .filter_map(|n| n.id)
            .collect();
        let mut pinned = Vec::new();
        for s in self.services(spec.cluster).await? {
            let worker = s
                .spec
                .as_ref()
                .and_then(|s| s.labels.as_ref())
                .and_then(|l| l.get(WORKER_LABEL))
                .and_then(|v| v.parse::<u64>().ok());
            if worker == Some(spec.id) {
                continue;
            }
            let constraints = s
                .spec
                .and_then(|s| s.task_template)
                .and_then(|t| t.placement)
                .and_then(|p| p.constraints)
                .unwrap_or_default();
            pinned.extend(
                constraints
                    .iter()
                    .filter_map(|c| c.strip_prefix("node.id=="))
                    .map(str::to_owned),
            );
        }
        let home = self
            .homes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&spec.id)
            .cloned();
        choose_node(&ready, &pinned, home.as_deref(), &self.node)
            .ok_or_else(|| swarm_err("the swarm has no node ready to run a worker"))
    }

    /// The address a node is reached at.
    async fn node_addr(&self, node: &str) -> Result<String> {
        let filters = HashMap::from([("id".to_owned(), vec![node.to_owned()])]);
        let options = ListNodesOptionsBuilder::default().filters(&filters).build();
        self.docker
            .list_nodes(Some(options))
            .await
            .map_err(swarm_err)?
            .into_iter()
            .find_map(|n| n.status.and_then(|s| s.addr))
            .ok_or_else(|| swarm_err(format!("node {node} has no address")))
    }

    /// Waits for the task of service `service` to run, bounded.
    async fn running_task(&self, service: &str, id: u64) -> Result<Placed> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            for t in self.tasks(service).await? {
                let status = t.status.clone().unwrap_or_default();
                let container = status
                    .container_status
                    .as_ref()
                    .and_then(|c| c.container_id.clone())
                    .filter(|c| !c.is_empty());
                match (status.state, container, t.id, t.node_id) {
                    (Some(TaskState::RUNNING), Some(container), Some(task), Some(node)) => {
                        return Ok(Placed {
                            task,
                            node,
                            container,
                        });
                    }
                    (state, ..) if ended(state) => {
                        let why = status.err.or(status.message).unwrap_or_default();
                        return Err(swarm_err(format!(
                            "worker {id}'s task ended before it ran: {why}"
                        )));
                    }
                    _ => {}
                }
            }
            if Instant::now() > deadline {
                return Err(swarm_err(format!("worker {id}'s task did not run in time")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Reads the task's output until it says where its control listener
    /// is; the rest is passed on as log lines.
    async fn control_url(&self, placed: &Placed, id: u64) -> Result<String> {
        let options = LogsOptionsBuilder::default()
            .follow(true)
            .stdout(true)
            .stderr(true)
            .build();
        let local = placed.node == self.node;
        let mut logs: BoxStream<'static, _> = if local {
            self.docker.logs(&placed.container, Some(options)).boxed()
        } else {
            self.docker.task_logs(&placed.task, Some(options)).boxed()
        };
        let find = async {
            let (mut pending, mut last) = (String::new(), String::new());
            while let Some(chunk) = logs.next().await {
                let chunk = chunk.map_err(swarm_err)?;
                pending.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
                while let Some(end) = pending.find('\n') {
                    let line: String = pending.drain(..=end).collect();
                    if let Some(url) = super::control_line(&line) {
                        return Ok(url);
                    }
                    last = line;
                }
            }
            Err(swarm_err(format!(
                "worker {id} exited before it listened: {}",
                last.trim()
            )))
        };
        let url = tokio::time::timeout(START_TIMEOUT, find)
            .await
            .map_err(|_| swarm_err(format!("worker {id} did not start in time")))??;
        tokio::spawn(async move {
            while let Some(Ok(chunk)) = logs.next().await {
                for line in String::from_utf8_lossy(&chunk.into_bytes()).lines() {
                    tracing::debug!(worker = id, "{line}");
                }
            }
        });
        if local {
            return Ok(url);
        }
        let port = url
            .rsplit(':')
            .next()
            .filter(|p| p.parse::<u16>().is_ok())
            .ok_or_else(|| swarm_err(format!("worker {id}: no port in {url}")))?;
        let addr = self.node_addr(&placed.node).await?;
        Ok(format!("http://{addr}:{port}"))
    }

    /// Lists and remembers a running worker, and waits for its task's end:
    /// then its service goes.
    fn track(&self, info: WorkerInfo, service: String, placed: Placed, control: String) {
        let stopping = Arc::new(AtomicBool::new(false));
        let (done, exited) = watch::channel(false);
        let local = placed.node == self.node;
        self.homes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(info.id, placed.node.clone());
        self.workers().insert(
            info.id,
            Running {
                info,
                service: service.clone(),
                container: placed.container.clone(),
                local,
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
            if local {
                // The stream ends (or fails: a non-zero exit code is an
                // error to bollard) once the container has stopped.
                let mut wait = docker.wait_container(&placed.container, None);
                let _ = wait.next().await;
            } else {
                loop {
                    match docker.inspect_task(&placed.task).await {
                        Ok(t) if !ended(t.status.as_ref().and_then(|s| s.state)) => {}
                        Err(bollard::errors::Error::DockerResponseServerError {
                            status_code,
                            ..
                        }) if status_code != 404 => {}
                        _ => break,
                    }
                    tokio::time::sleep(POLL).await;
                }
            }
            let expected = stopping.load(Ordering::Acquire);
            tracing::info!(worker = info.id, pid = info.pid, expected, "worker exited");
            // By id: a later service of the same name is not this one.
            let _ = docker.delete_service(&service).await;
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

    /// Ends worker `id`'s task: SIGKILL to its container when it is on
    /// this node and `kill`, else its service's removal (SIGTERM, then
    /// SIGKILL after the grace period); waits, bounded, for its end.
    async fn end(&self, id: u64, expected: bool, kill: bool) -> Result<bool> {
        let (service, container, local, mut exited) = {
            let workers = self.workers();
            let w = workers
                .get(&id)
                .ok_or_else(|| Error::bad(format!("no worker {id}")))?;
            w.stopping.store(expected, Ordering::Release);
            (
                w.service.clone(),
                w.container.clone(),
                w.local,
                w.exited.clone(),
            )
        };
        if local {
            // A paused container is thawed first: frozen, it could not
            // act on a stop's SIGTERM.
            let _ = self.docker.unpause_container(&container).await;
        }
        let asked = if kill && local {
            let options = KillContainerOptionsBuilder::default()
                .signal("SIGKILL")
                .build();
            self.docker.kill_container(&container, Some(options)).await
        } else {
            self.docker.delete_service(&service).await
        };
        if let Err(e) = asked {
            tracing::warn!(worker = id, error = %e, "docker did not end the worker");
        }
        let within = STOP_TIMEOUT + Duration::from_secs(5);
        let gone = tokio::time::timeout(within, exited.wait_for(|&e| e)).await;
        Ok(matches!(gone, Ok(Ok(_))))
    }

    /// Removes the service named `name`, if there is one.
    async fn remove_leftover(&self, name: &str) -> Result<()> {
        match self.docker.delete_service(name).await {
            Ok(()) => {
                tracing::info!(service = name, "removed a worker service left behind");
                Ok(())
            }
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(swarm_err(e)),
        }
    }
}

#[async_trait]
impl WorkerRuntime for SwarmRuntime {
    async fn start(&self, spec: WorkerSpec) -> Result<WorkerInfo> {
        let runs = self.workers().contains_key(&spec.id);
        let _starting = self.starting.hold(spec.id, runs)?;
        let name = Self::service_name(spec.cluster, spec.id);
        // A service of that name left behind (its task ended) goes first.
        self.remove_leftover(&name).await?;
        let node = self.place(spec).await?;
        let pid = self.next_pid();
        let created = self
            .docker
            .create_service(self.service_spec(spec, pid, &node), None)
            .await
            .map_err(swarm_err)?;
        let service = created.id.unwrap_or_else(|| name.clone());
        let up = async {
            let placed = self.running_task(&service, spec.id).await?;
            let control = self.control_url(&placed, spec.id).await?;
            Ok::<_, Error>((placed, control))
        };
        let (placed, control) = match up.await {
            Ok(up) => up,
            Err(e) => {
                let _ = self.docker.delete_service(&service).await;
                return Err(e);
            }
        };
        tracing::info!(
            worker = spec.id,
            pid,
            node = placed.node,
            "worker service runs"
        );
        let info = WorkerInfo { id: spec.id, pid };
        self.track(info, service, placed, control);
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
            Err(swarm_err(format!("worker {id} did not stop in time")))
        }
    }

    async fn kill(&self, id: u64) -> Result<()> {
        if self.end(id, false, true).await? {
            Ok(())
        } else {
            Err(swarm_err(format!("worker {id} did not exit when killed")))
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

    /// Adopts the worker services of `cluster` whose task runs, and
    /// removes those whose task ended.
    async fn adopt(&self, cluster: u64) -> Result<Vec<WorkerInfo>> {
        let mut adopted = Vec::new();
        for s in self.services(cluster).await? {
            let Some(service) = s.id.clone() else {
                continue;
            };
            let labels = s
                .spec
                .as_ref()
                .and_then(|s| s.labels.clone())
                .unwrap_or_default();
            let label = |k: &str| labels.get(k).and_then(|v| v.parse::<u64>().ok());
            let (id, pid) = (label(WORKER_LABEL), label(PID_LABEL));
            if id.is_some_and(|id| self.workers().contains_key(&id)) {
                continue;
            }
            let task = self.tasks(&service).await?.into_iter().find(|t| {
                let status = t.status.as_ref();
                status.and_then(|s| s.state) == Some(TaskState::RUNNING)
                    && status
                        .and_then(|s| s.container_status.as_ref())
                        .and_then(|c| c.container_id.as_ref())
                        .is_some()
            });
            let (Some(id), Some(pid), Some(task)) = (id, pid, task) else {
                tracing::info!(service, "removing a worker service whose task ended");
                let _ = self.docker.delete_service(&service).await;
                continue;
            };
            let placed = Placed {
                task: task.id.unwrap_or_default(),
                node: task.node_id.unwrap_or_default(),
                container: task
                    .status
                    .and_then(|s| s.container_status)
                    .and_then(|c| c.container_id)
                    .unwrap_or_default(),
            };
            let control = self.control_url(&placed, id).await?;
            let info = WorkerInfo { id, pid };
            tracing::info!(worker = id, pid, service, "adopted a running worker");
            self.track(info, service, placed, control);
            adopted.push(info);
        }
        Ok(adopted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{LocalNodeState, SwarmInfo};

    #[test]
    fn workers_spread_over_the_nodes_and_go_home_when_they_can() {
        let nodes = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let ready = nodes(&["a", "b", "c"]);
        // The manager's node first, then one worker a node.
        assert_eq!(choose_node(&ready, &[], None, "b").as_deref(), Some("b"));
        let on = nodes(&["b"]);
        assert_eq!(choose_node(&ready, &on, None, "b").as_deref(), Some("a"));
        let on = nodes(&["b", "a"]);
        assert_eq!(choose_node(&ready, &on, None, "b").as_deref(), Some("c"));
        // More workers than nodes: the least loaded.
        let on = nodes(&["b", "a", "c", "b"]);
        assert_eq!(choose_node(&ready, &on, None, "b").as_deref(), Some("a"));
        // Home, where its store is, while it holds no more than another.
        let on = nodes(&["b"]);
        assert_eq!(
            choose_node(&ready, &on, Some("c"), "b").as_deref(),
            Some("c")
        );
        let on = nodes(&["c"]);
        assert_eq!(
            choose_node(&ready, &on, Some("c"), "b").as_deref(),
            Some("b")
        );
        // A home that is not ready is no choice; no node ready, none.
        assert_eq!(
            choose_node(&ready, &[], Some("z"), "b").as_deref(),
            Some("b")
        );
        assert_eq!(choose_node(&[], &[], None, "b"), None);
    }

    #[test]
    fn an_engine_that_is_no_swarm_manager_is_refused_with_what_to_do() {
        let none = SystemInfo::default();
        let e = manager_node(&none).unwrap_err().to_string();
        assert!(e.contains("docker swarm init"), "{e}");
        let inactive = SystemInfo {
            swarm: Some(SwarmInfo {
                local_node_state: Some(LocalNodeState::INACTIVE),
                ..Default::default()
            }),
            ..Default::default()
        };
        let e = manager_node(&inactive).unwrap_err().to_string();
        assert!(e.contains("inactive") && e.contains("not"), "{e}");
        let worker = SystemInfo {
            swarm: Some(SwarmInfo {
                local_node_state: Some(LocalNodeState::ACTIVE),
                node_id: Some("n1".into()),
                control_available: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(manager_node(&worker).is_err());
        let manager = SystemInfo {
            swarm: Some(SwarmInfo {
                local_node_state: Some(LocalNodeState::ACTIVE),
                node_id: Some("n1".into()),
                control_available: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(manager_node(&manager).unwrap(), "n1");
    }
}
