//! Workers as local child processes: `dbaas worker ...` started from this
//! binary, each with its own sled database under the data directory and a
//! small control listener on loopback (status, promote). A worker's pid is
//! its OS pid.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::{Role, WorkerInfo, WorkerRuntime, WorkerSpec};
use crate::actors::messages::WorkerStatus;
use crate::error::{Error, Result};

/// How long a worker may take to come up, and to stop cleanly.
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

struct Running {
    info: WorkerInfo,
    child: Child,
    control: String,
}

/// Starts workers as child processes of this one.
pub struct ProcessRuntime {
    exe: PathBuf,
    amqp_url: String,
    data_dir: PathBuf,
    sync_cap: u32,
    http: reqwest::Client,
    workers: Mutex<BTreeMap<u64, Running>>,
}

fn io(e: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!("worker process: {e}"))
}

impl ProcessRuntime {
    /// Workers of the binary `exe`, on the broker at `amqp_url`, keeping
    /// their databases under `data_dir`.
    pub fn new(exe: &Path, amqp_url: &str, data_dir: &Path) -> Self {
        ProcessRuntime {
            exe: exe.to_owned(),
            amqp_url: amqp_url.to_owned(),
            data_dir: data_dir.to_owned(),
            sync_cap: crate::actors::SYNC_QUEUE_CAP,
            http: reqwest::Client::new(),
            workers: Mutex::new(BTreeMap::new()),
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

    fn take(&self, id: u64) -> Result<Running> {
        self.workers()
            .remove(&id)
            .ok_or_else(|| Error::bad(format!("no worker {id}")))
    }

    fn command(&self, spec: WorkerSpec) -> Command {
        let role = match spec.role {
            Role::Master => "master",
            Role::Slave => "slave",
        };
        let mut cmd = Command::new(&self.exe);
        cmd.arg("worker")
            .args(["--id", &spec.id.to_string()])
            .args(["--role", role])
            .args(["--epoch", &spec.epoch.to_string()])
            .args(["--cluster", &format!("{:016x}", spec.cluster)])
            .args(["--sync-queue-cap", &self.sync_cap.to_string()])
            .args(["--amqp", &self.amqp_url])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--control-addr", "127.0.0.1:0"])
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
}

/// Reads the child's stdout until it says where its control listener is;
/// the rest of its output is passed on as log lines.
async fn control_url(child: &mut Child, id: u64) -> Result<String> {
    let stdout = child.stdout.take().ok_or_else(|| io("no stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    let find = async {
        while let Some(line) = lines.next_line().await.map_err(io)? {
            if let Some(url) = line.strip_prefix("listening: control ") {
                return Ok(url.trim().to_owned());
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

/// Sends SIGTERM.
fn terminate(pid: u32) {
    // SAFETY: kill(2) has no memory effects; a stale pid at worst fails.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
}

#[async_trait]
impl WorkerRuntime for ProcessRuntime {
    async fn start(&self, spec: WorkerSpec) -> Result<WorkerInfo> {
        if self.workers().contains_key(&spec.id) {
            return Err(Error::bad(format!("worker {} runs already", spec.id)));
        }
        let mut child = self.command(spec).spawn().map_err(io)?;
        let pid = child.id().ok_or_else(|| io("exited at once"))?;
        let control = control_url(&mut child, spec.id).await?;
        let info = WorkerInfo {
            id: spec.id,
            pid: u64::from(pid),
            role: spec.role,
        };
        self.workers().insert(
            spec.id,
            Running {
                info,
                child,
                control,
            },
        );
        Ok(info)
    }

    async fn stop(&self, id: u64) -> Result<()> {
        let mut w = self.take(id)?;
        terminate(w.info.pid as u32);
        match tokio::time::timeout(STOP_TIMEOUT, w.child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => Err(io(format!("worker {id} exited with {status}"))),
            Ok(Err(e)) => Err(io(e)),
            Err(_) => {
                let _ = w.child.kill().await;
                Err(io(format!("worker {id} did not stop in time; killed")))
            }
        }
    }

    async fn kill(&self, id: u64) -> Result<()> {
        let mut w = self.take(id)?;
        w.child.kill().await.map_err(io)
    }

    async fn promote(&self, id: u64, epoch: u64) -> Result<()> {
        let url = format!("{}/promote?epoch={epoch}", self.control(id)?);
        let resp = self.http.post(url).send().await.map_err(io)?;
        if !resp.status().is_success() {
            return Err(io(format!("promote answered {}", resp.status())));
        }
        if let Some(w) = self.workers().get_mut(&id) {
            w.info.role = Role::Master;
        }
        Ok(())
    }

    async fn status(&self, id: u64) -> Result<WorkerStatus> {
        let url = format!("{}/status", self.control(id)?);
        let resp = self.http.get(url).send().await.map_err(io)?;
        resp.json().await.map_err(io)
    }

    fn list(&self) -> Vec<WorkerInfo> {
        let mut workers = self.workers();
        // Forget workers that exited on their own.
        workers.retain(|_, w| matches!(w.child.try_wait(), Ok(None)));
        workers.values().map(|w| w.info).collect()
    }
}
