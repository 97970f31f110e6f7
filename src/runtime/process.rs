//! Workers as local child processes: `dbaas worker ...` started from this
//! binary, each with its own sled database under the data directory and a
//! small control listener on loopback (status). A worker's pid is
//! its OS pid.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{broadcast, watch};

use super::{Exit, StartingSet, WorkerInfo, WorkerRuntime, WorkerSpec, EXITS};
use crate::error::{Error, Result};
use crate::model::WorkerStatus;

/// How long a worker may take to come up, and to stop cleanly.
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Where the workers find the coordinator.
#[derive(Clone, Debug)]
pub struct CoordTarget {
    /// ZooKeeper's `host:port[,host:port...]`.
    pub hosts: String,
    /// The cluster's root path there.
    pub root: String,
    pub session_timeout: Duration,
}

struct Running {
    info: WorkerInfo,
    control: String,
    /// Set before a stop on purpose, so its exit is expected.
    stopping: Arc<AtomicBool>,
    /// Becomes true once the process has exited (and was reaped).
    exited: watch::Receiver<bool>,
}

/// Starts workers as child processes of this one.
pub struct ProcessRuntime {
    exe: PathBuf,
    amqp_url: String,
    data_dir: PathBuf,
    coord: CoordTarget,
    sync_cap: u32,
    http: reqwest::Client,
    workers: Arc<Mutex<BTreeMap<u64, Running>>>,
    /// Workers being started: not listed until they say where their
    /// control API is, and not to be started twice meanwhile (two
    /// processes over one store).
    starting: StartingSet,
    exits: broadcast::Sender<Exit>,
}

fn io(e: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!("worker process: {e}"))
}

impl ProcessRuntime {
    /// Workers of the binary `exe`, on the broker at `amqp_url` and the
    /// coordinator `coord`, keeping their databases under `data_dir`.
    pub fn new(exe: &Path, amqp_url: &str, data_dir: &Path, coord: CoordTarget) -> Self {
        ProcessRuntime {
            exe: exe.to_owned(),
            amqp_url: amqp_url.to_owned(),
            data_dir: data_dir.to_owned(),
            coord,
            sync_cap: crate::broker::SYNC_QUEUE_CAP,
            http: super::control_client(),
            workers: Arc::default(),
            starting: StartingSet::default(),
            exits: broadcast::channel(EXITS).0,
        }
    }

    /// Caps each slave's sync queue at `messages`.
    pub fn with_sync_cap(mut self, messages: u32) -> Self {
        self.sync_cap = messages;
        self
    }

    fn workers(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Running>> {
        self.workers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn control(&self, id: u64) -> Result<String> {
        self.workers()
            .get(&id)
            .map(|w| w.control.clone())
            .ok_or_else(|| Error::bad(format!("no worker {id}")))
    }

    fn command(&self, spec: WorkerSpec) -> Command {
        let mut cmd = Command::new(&self.exe);
        let args = super::worker_args(
            spec,
            self.sync_cap,
            &self.amqp_url,
            &self.coord,
            &self.data_dir,
        );
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        // A worker must not outlive its parent (killed or crashed): it
        // would go on consuming queues nobody watches.
        // SAFETY: prctl is async-signal-safe and touches no memory here.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        cmd
    }

    /// Reaps the child when it exits, forgets it, and tells who listens.
    fn reap(
        &self,
        mut child: Child,
        info: WorkerInfo,
        stopping: Arc<AtomicBool>,
    ) -> watch::Receiver<bool> {
        let (done, exited) = watch::channel(false);
        let (workers, exits) = (self.workers.clone(), self.exits.clone());
        tokio::spawn(async move {
            let status = child.wait().await;
            let expected = stopping.load(Ordering::Acquire);
            tracing::info!(
                worker = info.id,
                pid = info.pid,
                ?status,
                expected,
                "worker exited"
            );
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
        exited
    }

    /// Sends `signal` to worker `id` and waits (bounded) for it to exit.
    async fn signal_and_wait(
        &self,
        id: u64,
        signal: i32,
        expected: bool,
        within: Duration,
    ) -> Result<bool> {
        let (pid, mut exited) = {
            let workers = self.workers();
            let w = workers
                .get(&id)
                .ok_or_else(|| Error::bad(format!("no worker {id}")))?;
            w.stopping.store(expected, Ordering::Release);
            (w.info.pid, w.exited.clone())
        };
        send_signal(pid, signal);
        // A paused process (SIGSTOP) acts on nothing but SIGKILL until it
        // runs again: let it, so that a stop's SIGTERM is heard now.
        send_signal(pid, libc::SIGCONT);
        let gone = tokio::time::timeout(within, exited.wait_for(|&e| e)).await;
        Ok(matches!(gone, Ok(Ok(_))))
    }
}

/// Reads the child's stdout until it says where its control listener is;
/// the rest of its output is passed on as log lines.
async fn control_url(child: &mut Child, id: u64) -> Result<String> {
    let stdout = child.stdout.take().ok_or_else(|| io("no stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    let find = async {
        while let Some(line) = lines.next_line().await.map_err(io)? {
            if let Some(url) = super::control_line(&line) {
                return Ok(url);
            }
        }
        Err(io(format!("worker {id} exited before it listened")))
    };
    let url = tokio::time::timeout(START_TIMEOUT, find)
        .await
        .map_err(|_| io(format!("worker {id} did not start in time")))??;
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::debug!(worker = id, "{line}");
        }
    });
    Ok(url)
}

fn send_signal(pid: u64, signal: i32) {
    // SAFETY: kill(2) has no memory effects; a stale pid at worst fails
    // (the child is reaped only by our own waiter, so its pid is not
    // reused while it is listed).
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

#[async_trait]
impl WorkerRuntime for ProcessRuntime {
    async fn start(&self, spec: WorkerSpec) -> Result<WorkerInfo> {
        let runs = self.workers().contains_key(&spec.id);
        let _starting = self.starting.hold(spec.id, runs)?;
        let mut child = self.command(spec).spawn().map_err(io)?;
        let pid = child.id().ok_or_else(|| io("exited at once"))?;
        let control = control_url(&mut child, spec.id).await?;
        let info = WorkerInfo {
            id: spec.id,
            pid: u64::from(pid),
        };
        let stopping = Arc::new(AtomicBool::new(false));
        // Listed before its waiter runs, so an early exit finds it.
        let (tx, exited) = watch::channel(false);
        self.workers().insert(
            spec.id,
            Running {
                info,
                control,
                stopping: stopping.clone(),
                exited,
            },
        );
        let reaped = self.reap(child, info, stopping);
        if let Some(w) = self.workers().get_mut(&spec.id) {
            w.exited = reaped;
        }
        drop(tx);
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
        if self
            .signal_and_wait(id, libc::SIGTERM, true, STOP_TIMEOUT)
            .await?
        {
            return Ok(());
        }
        self.signal_and_wait(id, libc::SIGKILL, true, STOP_TIMEOUT)
            .await?;
        Err(io(format!("worker {id} did not stop in time; killed")))
    }

    async fn kill(&self, id: u64) -> Result<()> {
        if self
            .signal_and_wait(id, libc::SIGKILL, false, STOP_TIMEOUT)
            .await?
        {
            Ok(())
        } else {
            Err(io(format!("worker {id} did not exit after SIGKILL")))
        }
    }

    async fn status(&self, id: u64) -> Result<WorkerStatus> {
        super::control_status(&self.http, &self.control(id)?).await
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
}
