//! The Scaler over any broker and runtime: the number of slaves follows
//! the reads, and no read fails while slaves come and go.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dbaas::actors::scaler::{GetScaler, ScaleNow, ScalePolicy};
use dbaas::actors::watcher::{CrashMaster, CrashSlave, GetCluster};
use dbaas::actors::OrchestratorHandle;
use dbaas::broker::{Broker, SYNC_X};
use dbaas::model::Consistency;
use dbaas::system::Cluster;

use super::actors::{cluster, faulty_cluster_of_five, get_user};
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

/// Waits for a decision of the Scaler whose reason starts with `reads`
/// and says `what`.
async fn decided(c: &Cluster, reads: &str, what: &str) {
    eventually(
        &format!("a decision: {reads}: {what}"),
        DEADLINE,
        || async {
            let view = c.watcher.send(GetCluster).await.unwrap();
            view.events.iter().any(|e| {
                e.kind == "scale" && e.detail.starts_with(reads) && e.detail.contains(what)
            })
        },
    )
    .await;
}

pub fn policy(window: Duration) -> ScalePolicy {
    ScalePolicy {
        window,
        reads_per_slave: 20,
        min_slaves: 1,
        max_slaves: Some(4),
        max_step: Some(4),
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

/// A slave retired by the Scaler whose delete of its sync queue is cut
/// short (a RabbitMQ node dying during it can leave the queue gone and its
/// binding to `syncQ` behind: every sync is refused then, and no write is
/// acknowledged again): it declares the queue again and deletes it before
/// it stops, and writes go on.
pub async fn a_slave_retired_with_its_queue_delete_cut_short_does_not_stop_writes(
    b: Arc<dyn Broker>,
) {
    let dir = tempfile::tempdir().unwrap();
    let (fb, mut c) = faulty_cluster_of_five(&dir, b).await;
    c.start_scaler(policy(Duration::from_secs(3600)));
    let scaler = c.scaler.clone().unwrap();
    client_reads(&c, 45).await;
    let up = scaler.send(ScaleNow).await.unwrap().unwrap();
    assert_eq!((up.from, up.to), (1, 3));
    slaves_ready(&c, 3).await;
    // The highest pid goes first.
    let master = c.watcher.send(GetCluster).await.unwrap().master.unwrap();
    let retired = c
        .runtime
        .list()
        .into_iter()
        .filter(|w| w.pid != master)
        .max_by_key(|w| w.pid)
        .unwrap();
    fb.dangle_on_delete(&dbaas::broker::sync_queue(retired.id), SYNC_X);
    let down = scaler.send(ScaleNow).await.unwrap().unwrap();
    assert_eq!((down.from, down.to), (3, 1));
    slaves_ready(&c, 1).await;
    assert!(
        c.runtime.list().iter().all(|w| w.id != retired.id),
        "the slave is retired"
    );
    assert!(fb.dangle_spent(), "the binding left behind is gone");
    let w = c.orchestrator.write(user("after")).await;
    assert!(w.is_ok(), "a write after the slave's retirement: {w:?}");
    c.stop().await;
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
    // (A decision is now announced as it is made, "start 2", before its
    // slaves run; "started [..]" follows once they do.)
    client_reads(&c, 45).await;
    decided(&c, "45 reads", "3 slave(s); start 2").await;
    // The next window has no client read: 1 slave again (maybe before
    // the two new ones serve: a window is short here).
    decided(&c, "0 reads", "1 slave(s); stop").await;
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

/// Writers that count acknowledged and failed writes.
struct Writers {
    acked: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    fn start(c: &Cluster, n: u64) -> Writers {
        let (acked, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..n)
            .map(|w| {
                let (o, a, f, s) = (
                    c.orchestrator.clone(),
                    acked.clone(),
                    failed.clone(),
                    stop.clone(),
                );
                actix::spawn(async move {
                    let mut i = 0;
                    while !s.load(Ordering::Relaxed) {
                        match o.write(user(&format!("w{w}-{i}"))).await {
                            Ok(_) => a.fetch_add(1, Ordering::Relaxed),
                            Err(e) => {
                                eprintln!("write failed: {e}");
                                f.fetch_add(1, Ordering::Relaxed)
                            }
                        };
                        i += 1;
                    }
                })
            })
            .collect();
        Writers {
            acked,
            failed,
            stop,
            tasks,
        }
    }

    async fn more(&self, n: u64) {
        let t = self.acked.load(Ordering::Relaxed) + n;
        eventually("more writes", DEADLINE, || async {
            self.acked.load(Ordering::Relaxed) >= t
        })
        .await;
    }

    async fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        (
            self.acked.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// Waits until no replacement is being started, a master leads and every
/// worker runs and serves or leads; answers (master pid, slave ids).
async fn settled(c: &Cluster) -> (u64, Vec<u64>) {
    eventually("the cluster to settle", DEADLINE, || async {
        let v = c.watcher.send(GetCluster).await.unwrap();
        v.starting == 0
            && v.master.is_some()
            && v.workers.len() == c.runtime.list().len()
            && v.workers
                .iter()
                .all(|w| w.state == "serving" || w.state == "leading")
    })
    .await;
    let v = c.watcher.send(GetCluster).await.unwrap();
    let m = v.master.unwrap();
    let mut slaves: Vec<u64> = c
        .runtime
        .list()
        .iter()
        .filter(|w| w.pid != m)
        .map(|w| w.id)
        .collect();
    slaves.sort_unstable();
    (m, slaves)
}

fn events(v: &dbaas::actors::watcher::ClusterView) -> String {
    v.events
        .iter()
        .map(|e| format!("  {} {}\n", e.kind, e.detail))
        .collect()
}

pub async fn a_scale_decision_counts_the_replacement_being_started(b: Arc<dyn Broker>) {
    // Down: 3 slaves, one crashes, 1 asked at once: 1 runs at the end.
    let dir = tempfile::tempdir().unwrap();
    let mut c = cluster(&dir, 3, b.clone()).await;
    c.start_scaler(policy(Duration::from_secs(3600)));
    let scaler = c.scaler.clone().unwrap();
    c.watcher.send(CrashSlave).await.unwrap().unwrap();
    let d = scaler.send(ScaleNow).await.unwrap().unwrap();
    assert_eq!((d.from, d.to), (3, 1));
    let (_, slaves) = settled(&c).await;
    let v = c.watcher.send(GetCluster).await.unwrap();
    assert_eq!(slaves.len(), 1, "{slaves:?}\n{}", events(&v));
    c.stop().await;
    // Up: 1 slave, it crashes, 3 asked at once: 3 run at the end.
    let dir = tempfile::tempdir().unwrap();
    let mut c = cluster(&dir, 1, b).await;
    c.start_scaler(policy(Duration::from_secs(3600)));
    let scaler = c.scaler.clone().unwrap();
    client_reads(&c, 45).await;
    c.watcher.send(CrashSlave).await.unwrap().unwrap();
    let d = scaler.send(ScaleNow).await.unwrap().unwrap();
    assert_eq!((d.from, d.to), (1, 3));
    let (_, slaves) = settled(&c).await;
    let v = c.watcher.send(GetCluster).await.unwrap();
    assert_eq!(slaves.len(), 3, "{slaves:?}\n{}", events(&v));
    c.stop().await;
}

pub async fn a_master_elected_during_a_scale_down_is_not_stopped(b: Arc<dyn Broker>) {
    let dir = tempfile::tempdir().unwrap();
    scale_down_racing_a_failover(cluster(&dir, 3, b).await).await;
}

/// 3 slaves under reads and writes; a decision for 1 slave, and the master
/// killed once its first stop is under way: the Scaler never stops the
/// new master, nothing fails, nothing is lost.
pub async fn scale_down_racing_a_failover(mut c: Cluster) {
    c.start_scaler(policy(Duration::from_secs(3600)));
    let scaler = c.scaler.clone().unwrap();
    let writers = Writers::start(&c, 4);
    let readers = Readers::start(&c, 2);
    writers.more(50).await;
    let decision = actix::spawn({
        let s = scaler.clone();
        async move { s.send(ScaleNow).await.unwrap() }
    });
    eventually("a stop under way", DEADLINE, || async {
        let v = c.watcher.send(GetCluster).await.unwrap();
        v.events.iter().any(|e| e.kind == "stop")
    })
    .await;
    c.watcher.send(CrashMaster).await.unwrap().unwrap();
    let d = decision
        .await
        .unwrap()
        .expect("the decision is carried out");
    writers.more(50).await;
    let (master, _) = settled(&c).await;
    let (acked, wfailed) = writers.stop().await;
    let (_, rfailed) = readers.stop().await;
    let v = c.watcher.send(GetCluster).await.unwrap();
    let log = events(&v);
    // Only the kill made an election after the first one.
    let elections = v.events.iter().filter(|e| e.kind == "election").count();
    assert_eq!(elections, 2, "{log}");
    let master_id = v.workers.iter().find(|w| w.pid == master).map(|w| w.id);
    assert!(!d.stopped.iter().any(|&id| Some(id) == master_id), "{log}");
    let count = c
        .orchestrator
        .read(count_users(), Consistency::Strong)
        .await
        .unwrap();
    assert_eq!(
        count.result,
        dbaas::model::ReadResult::Count(acked),
        "{log}"
    );
    assert_eq!((wfailed, rfailed), (0, 0), "{log}");
    c.stop().await;
}

pub async fn reads_are_counted_once_through_a_slave_crash(b: Arc<dyn Broker>) {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cluster(&dir, 2, b).await;
    c.start_scaler(policy(Duration::from_secs(3600)));
    let scaler = c.scaler.clone().unwrap();
    let reads = actix::spawn({
        let o = c.orchestrator.clone();
        async move {
            let all = (0..200).map(|_| {
                let o = o.clone();
                async move { o.read(count_users(), Consistency::Strong).await }
            });
            futures::future::join_all(all).await
        }
    });
    c.watcher.send(CrashSlave).await.unwrap().unwrap();
    let failed = reads.await.unwrap().iter().filter(|r| r.is_err()).count();
    assert_eq!(failed, 0);
    // Crash calls and retries are not counted.
    assert_eq!(scaler.send(GetScaler).await.unwrap().reads, 200);
    c.stop().await;
}

pub async fn a_stop_right_after_a_crash_leaves_no_worker(b: Arc<dyn Broker>) {
    let dir = tempfile::tempdir().unwrap();
    stop_right_after_a_crash(cluster(&dir, 2, b).await).await;
}

/// A slave crash, then at once a clean stop: the replacement under way
/// does not outlive the cluster.
pub async fn stop_right_after_a_crash(c: Cluster) {
    c.watcher.send(CrashSlave).await.unwrap().unwrap();
    c.stop().await;
    let left: Vec<u64> = c.runtime.list().iter().map(|w| w.id).collect();
    assert!(left.is_empty(), "workers running after the stop: {left:?}");
}
