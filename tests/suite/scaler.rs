//! The Scaler over any broker and runtime: the number of slaves follows
//! the reads, and no read fails while slaves come and go.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dbaas::actors::scaler::{GetScaler, ScaleNow, ScalePolicy};
use dbaas::actors::watcher::GetCluster;
use dbaas::actors::OrchestratorHandle;
use dbaas::broker::Broker;
use dbaas::model::Consistency;
use dbaas::system::Cluster;

use super::actors::{cluster, get_user};
use super::{count_users, eventually, user};

const DEADLINE: Duration = Duration::from_secs(30);

/// Reads without pause until stopped, through a handle of its own (its
/// reads are not counted for the Scaler); counts those that failed.
pub struct Readers {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Readers {
    pub fn start(c: &Cluster, n: usize) -> Readers {
        let handle = OrchestratorHandle::new(c.orchestrator.addr().clone());
        let stop = Arc::new(AtomicBool::new(false));
        let (done, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let tasks = (0..n)
            .map(|_| {
                let (h, stop, done, failed) = (
                    handle.clone(),
                    Arc::clone(&stop),
                    Arc::clone(&done),
                    Arc::clone(&failed),
                );
                actix::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        match h.read(count_users(), Consistency::Strong).await {
                            Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                            Err(e) => {
                                eprintln!("read failed: {e}");
                                failed.fetch_add(1, Ordering::Relaxed)
                            }
                        };
                    }
                })
            })
            .collect();
        Readers {
            stop,
            done,
            failed,
            tasks,
        }
    }

    /// Stops reading; answers (served, failed).
    pub async fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        (
            self.done.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// `n` client reads through the cluster's own (counted) handle, at once.
pub async fn client_reads(c: &Cluster, n: usize) {
    let reads = (0..n).map(|i| {
        let h = c.orchestrator.clone();
        async move {
            h.read(get_user(&format!("u{i}")), Consistency::Eventual)
                .await
        }
    });
    for r in futures::future::join_all(reads).await {
        r.expect("a client read is served");
    }
}

/// Waits until `slaves` slaves and a master run and every one is ready
/// (a new slave has caught up), as the watcher sees it.
pub async fn slaves_ready(c: &Cluster, slaves: usize) {
    eventually(&format!("{slaves} slaves serving"), DEADLINE, || async {
        let view = c.watcher.send(GetCluster).await.unwrap();
        c.runtime.list().len() == slaves + 1
            && view.workers.len() == slaves + 1
            && view
                .workers
                .iter()
                .all(|w| w.state == "serving" || w.state == "leading")
    })
    .await;
}

pub fn policy(window: Duration) -> ScalePolicy {
    ScalePolicy {
        window,
        reads_per_slave: 20,
        min_slaves: 1,
        max_slaves: Some(4),
    }
}

pub async fn the_scaler_sets_the_slaves_from_the_reads_and_no_read_fails(b: Arc<dyn Broker>) {
    let dir = tempfile::tempdir().unwrap();
    scales_when_asked(cluster(&dir, 1, b).await).await;
}

pub async fn the_scaler_decides_at_the_end_of_each_window(b: Arc<dyn Broker>) {
    let dir = tempfile::tempdir().unwrap();
    scales_every_window(cluster(&dir, 1, b).await).await;
}

/// Over a cluster of one slave: 45 reads, a decision, 3 slaves; no read,
/// a decision, 1 slave (the highest pids stopped, none replaced).
pub async fn scales_when_asked(mut c: Cluster) {
    // Decisions only when asked (a window far longer than the test).
    c.start_scaler(policy(Duration::from_secs(3600)));
    let scaler = c.scaler.clone().unwrap();
    for i in 0..5 {
        c.orchestrator.write(user(&format!("u{i}"))).await.unwrap();
    }
    let readers = Readers::start(&c, 2);
    client_reads(&c, 45).await;
    assert_eq!(scaler.send(GetScaler).await.unwrap().reads, 45);
    let up = scaler.send(ScaleNow).await.unwrap().unwrap();
    assert_eq!((up.reads, up.from, up.to, up.started.len()), (45, 1, 3, 2));
    slaves_ready(&c, 3).await;
    let before: Vec<u64> = c.runtime.list().iter().map(|w| w.pid).collect();
    // An idle window: back to one slave, the highest pids stopped on
    // purpose, none of them replaced.
    let down = scaler.send(ScaleNow).await.unwrap().unwrap();
    assert_eq!((down.reads, down.from, down.to), (0, 3, 1));
    slaves_ready(&c, 1).await;
    let view = c.watcher.send(GetCluster).await.unwrap();
    let master = view.master.unwrap();
    let mut slaves: Vec<u64> = before.into_iter().filter(|&p| p != master).collect();
    slaves.sort_unstable();
    let kept: Vec<u64> = c
        .runtime
        .list()
        .iter()
        .map(|w| w.pid)
        .filter(|&p| p != master)
        .collect();
    assert_eq!(kept, slaves[..1], "the highest pids go");
    assert!(
        !view.events.iter().any(|e| e.kind == "death"),
        "{:?}",
        view.events
    );
    assert_eq!(view.events.iter().filter(|e| e.kind == "scale").count(), 2);
    let shown = scaler.send(GetScaler).await.unwrap().last.unwrap();
    assert_eq!(shown, down);
    // The writes are all still there, read through the remaining slave.
    let (served, failed) = readers.stop().await;
    assert!(served > 0);
    assert_eq!(failed, 0, "reads failed while slaves came and went");
    client_reads(&c, 5).await;
    c.stop().await;
    assert!(c.runtime.list().is_empty());
}

/// Over a cluster of one slave, with a 2 s window: 45 reads give 3
/// slaves at the window's end, the idle window after it 1.
pub async fn scales_every_window(mut c: Cluster) {
    c.start_scaler(policy(Duration::from_secs(2)));
    let scaler = c.scaler.clone().unwrap();
    // No read yet: no window runs.
    assert!(scaler
        .send(GetScaler)
        .await
        .unwrap()
        .next_decision_in
        .is_none());
    let readers = Readers::start(&c, 1);
    // 45 reads start the window (all within it): 3 slaves at its end.
    client_reads(&c, 45).await;
    slaves_ready(&c, 3).await;
    // The next window has no client read: 1 slave again.
    slaves_ready(&c, 1).await;
    let (_, failed) = readers.stop().await;
    assert_eq!(failed, 0, "reads failed while slaves came and went");
    let view = c.watcher.send(GetCluster).await.unwrap();
    assert!(
        !view.events.iter().any(|e| e.kind == "death"),
        "{:?}",
        view.events
    );
    c.stop().await;
}
