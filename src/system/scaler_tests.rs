//! The Scaler driven end to end over in-process workers: a burst of reads
//! on the default policy, and a stop while slaves are being started.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{embedded_runtime, Cluster, Coordination};
use crate::actors::scaler::{GetScaler, ScaleNow, ScalePolicy, StopScaling};
use crate::actors::watcher::GetCluster;
use crate::broker::inproc::InProcBroker;
use crate::broker::Broker;
use crate::error::Result;
use crate::model::WorkerStatus;
use crate::runtime::{Exit, WorkerInfo, WorkerRuntime, WorkerSpec};

const DEADLINE: Duration = Duration::from_secs(30);

/// A runtime whose starts wait while `hold` says so (the cluster's own
/// starts run before it does).
struct Gated {
    inner: Arc<dyn WorkerRuntime>,
    hold: tokio::sync::watch::Receiver<bool>,
}

#[async_trait]
impl WorkerRuntime for Gated {
    async fn start(&self, spec: WorkerSpec) -> Result<WorkerInfo> {
        let mut hold = self.hold.clone();
        let _ = hold.wait_for(|held| !held).await;
        self.inner.start(spec).await
    }
    async fn stop(&self, id: u64) -> Result<()> {
        self.inner.stop(id).await
    }
    async fn kill(&self, id: u64) -> Result<()> {
        self.inner.kill(id).await
    }
    async fn status(&self, id: u64) -> Result<WorkerStatus> {
        self.inner.status(id).await
    }
    fn list(&self) -> Vec<WorkerInfo> {
        self.inner.list()
    }
    fn exits(&self) -> tokio::sync::broadcast::Receiver<Exit> {
        self.inner.exits()
    }
    fn workers_dir(&self) -> &Path {
        self.inner.workers_dir()
    }
}

/// A cluster of a master and one slave, and its runtime's gate.
async fn cluster(dir: &Path) -> (Cluster, tokio::sync::watch::Sender<bool>) {
    let broker: Arc<dyn Broker> = Arc::new(InProcBroker::new());
    let coordination = Coordination::embedded();
    let inner = embedded_runtime(&broker, dir, &coordination, None).unwrap();
    let (hold, held) = tokio::sync::watch::channel(false);
    let runtime = Arc::new(Gated { inner, hold: held });
    let c = Cluster::start_with(dir, 1, broker, runtime, coordination)
        .await
        .unwrap();
    (c, hold)
}

/// Polls `f` until it holds, failing after [`DEADLINE`].
async fn eventually<F: std::future::Future<Output = bool>>(what: &str, mut f: impl FnMut() -> F) {
    let deadline = Instant::now() + DEADLINE;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Decisions only when asked: a window far longer than a test.
fn asked_only() -> ScalePolicy {
    ScalePolicy {
        window: Duration::from_secs(3600),
        ..ScalePolicy::default()
    }
}

fn burst(c: &Cluster) {
    let reads = c.orchestrator.reads();
    for _ in 0..74_000 {
        reads.add();
    }
}

#[actix::test]
async fn a_burst_on_the_default_policy_starts_at_most_a_step() {
    let dir = tempfile::tempdir().unwrap();
    let (mut c, _) = cluster(dir.path()).await;
    c.start_scaler(asked_only());
    let scaler = c.scaler.clone().unwrap();
    burst(&c);
    let d = scaler.send(ScaleNow).await.unwrap().unwrap();
    assert_eq!((d.reads, d.from, d.to, d.step_to), (74_000, 1, 16, 5));
    assert_eq!(d.started.len(), 4, "{d:?}");
    assert!(d.reason.contains("capped by max slaves"), "{}", d.reason);
    assert!(d.reason.contains("max step"), "{}", d.reason);
    assert_eq!(scaler.send(GetScaler).await.unwrap().last, Some(d));
    let events = c.watcher.send(GetCluster).await.unwrap().events;
    let kinds: Vec<&str> = events.iter().map(|e| e.kind).collect();
    assert!(
        kinds.contains(&"scale") && kinds.contains(&"scaled"),
        "{kinds:?}"
    );
    c.stop().await;
    assert!(c.runtime.list().is_empty());
}

#[actix::test]
async fn a_decision_shows_at_once_and_a_stop_abandons_the_starts_not_begun() {
    let dir = tempfile::tempdir().unwrap();
    let (mut c, hold) = cluster(dir.path()).await;
    c.start_scaler(asked_only());
    let scaler = c.scaler.clone().unwrap();
    burst(&c);
    hold.send_replace(true);
    let asked = actix::spawn(scaler.send(ScaleNow));
    // Visible while its first starts are held.
    eventually("the decision shown", || async {
        let last = scaler.send(GetScaler).await.unwrap().last;
        last.is_some_and(|d| d.to == 16 && !d.done && d.started.is_empty())
    })
    .await;
    let events = c.watcher.send(GetCluster).await.unwrap().events;
    assert!(events.iter().any(|e| e.kind == "scale"), "{events:?}");
    let stopped = actix::spawn(scaler.send(StopScaling));
    // Who asked is answered at once; the stop waits for the two starts
    // under way, not for the two not begun.
    let answer = asked.await.unwrap().unwrap();
    assert!(answer.is_err(), "{answer:?}");
    hold.send_replace(false);
    stopped.await.unwrap().unwrap();
    // The two started are stopped by the cluster's stop.
    assert_eq!(c.runtime.list().len(), 4);
    c.stop().await;
    assert!(c.runtime.list().is_empty());
}
