//! Failover with real worker processes, RabbitMQ and ZooKeeper: the master
//! SIGKILLed again and again under writes, a master paused until its
//! session expires, a slave killed while reads go on. Each test has a
//! virtual host and a ZooKeeper root of its own.

mod suite;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dbaas::actors::watcher::GetCluster;
use dbaas::model::{Consistency, ReadOp, ReadResult, Row, Value, WriteOp};
use dbaas::system::Cluster;
use suite::{eventually, master_id, process_cluster, roles, running, signal, stores};

const DEADLINE: Duration = Duration::from_secs(60);

fn user(name: &str) -> WriteOp {
    let row: Row = [
        ("username".to_owned(), Value::from(name)),
        ("password".to_owned(), Value::from("x".repeat(40))),
    ]
    .into();
    WriteOp::Insert {
        table: "users".into(),
        row,
    }
}

fn count_users() -> ReadOp {
    ReadOp::Count {
        table: "users".into(),
        filter: vec![],
    }
}

/// Writers that keep writing until stopped; every write acknowledged.
struct Load {
    acked: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<u64>>,
}

impl Load {
    fn start(c: &Cluster, writers: u64) -> Load {
        let acked = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..writers)
            .map(|w| {
                let (orch, acked, stop) = (c.orchestrator.clone(), acked.clone(), stop.clone());
                actix::spawn(async move {
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        orch.write(user(&format!("w{w}-{i}")))
                            .await
                            .expect("every write acknowledged");
                        acked.fetch_add(1, Ordering::Relaxed);
                        i += 1;
                    }
                    i
                })
            })
            .collect();
        Load { acked, stop, tasks }
    }

    async fn more(&self, n: u64) {
        let target = self.acked.load(Ordering::Relaxed) + n;
        let acked = self.acked.clone();
        eventually("writes to be acknowledged", DEADLINE, || {
            let acked = acked.clone();
            async move { acked.load(Ordering::Relaxed) >= target }
        })
        .await;
    }

    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = 0;
        for t in self.tasks {
            total += t.await.expect("a writer failed");
        }
        total
    }
}

/// Waits until a master other than `old` leads under a newer epoch, `n`
/// workers are registered again (the replacement among them) and
/// `processes` run.
async fn failed_over(c: &Cluster, old: u64, epoch: u64, n: usize, processes: usize) {
    eventually("a new master and a replacement", DEADLINE, || async {
        let view = c.watcher.send(GetCluster).await.unwrap();
        let m = view
            .master
            .and_then(|pid| view.workers.iter().find(|w| w.pid == pid));
        m.is_some_and(|m| m.id != old && m.state == "leading")
            && view.epoch > epoch
            && view.workers.len() == n
            && running(c).len() == processes
    })
    .await;
}

/// Every acknowledged write present exactly once, on every worker alike.
async fn check_all(c: Cluster, dir: &tempfile::TempDir, acked: u64) {
    let count = c
        .orchestrator
        .read(count_users(), Consistency::Strong)
        .await
        .expect("strong reads work");
    assert_eq!(count.result, ReadResult::Count(acked));
    suite::all_applied(&c, count.seq, DEADLINE).await;
    let ids = running(&c);
    c.stop().await;
    let all = stores(dir.path(), &ids);
    assert!(all.iter().all(|s| *s == all[0]), "workers differ: {all:?}");
}

#[actix::test]
async fn the_master_sigkilled_ten_times_under_writes_fails_over_every_time() {
    let dir = tempfile::tempdir().unwrap();
    let Some((c, _)) = process_cluster(dir.path(), 2).await else {
        return;
    };
    let load = Load::start(&c, 8);
    for _ in 0..10 {
        load.more(40).await;
        let (old, epoch) = (master_id(&c).await, c.epoch().await);
        c.runtime.kill(old).await.unwrap();
        failed_over(&c, old, epoch, 3, 3).await;
    }
    load.more(40).await;
    let acked = load.stop().await;
    check_all(c, &dir, acked).await;
}

#[actix::test]
async fn a_paused_master_is_deposed_and_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let Some((c, _)) = process_cluster(dir.path(), 2).await else {
        return;
    };
    let load = Load::start(&c, 4);
    load.more(40).await;
    let (old, epoch) = (master_id(&c).await, c.epoch().await);
    let pid = c.runtime.list().iter().find(|w| w.id == old).unwrap().pid;
    // Paused: nobody sees it die; its session expires, another is elected
    // (a replacement joins too: four workers while it sleeps).
    signal(pid, libc::SIGSTOP);
    failed_over(&c, old, epoch, 3, 4).await;
    load.more(40).await;
    // Back: it finds itself deposed and follows; what it still held is
    // redelivered to the new master or answered from the new history.
    signal(pid, libc::SIGCONT);
    eventually("the deposed master to follow", DEADLINE, || async {
        c.runtime
            .status(old)
            .await
            .is_ok_and(|s| !s.master && s.ready)
    })
    .await;
    load.more(40).await;
    let (m, _) = roles(&c).await;
    assert_ne!(m, Some(old));
    let acked = load.stop().await;
    check_all(c, &dir, acked).await;
}

#[actix::test]
async fn a_slave_killed_under_reads_is_replaced_and_catches_up_without_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let Some((c, _)) = process_cluster(dir.path(), 2).await else {
        return;
    };
    let load = Load::start(&c, 4);
    let reading = Arc::new(AtomicBool::new(true));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (orch, reading) = (c.orchestrator.clone(), reading.clone());
            actix::spawn(async move {
                while reading.load(Ordering::Relaxed) {
                    let r = orch.read(count_users(), Consistency::Strong).await;
                    r.expect("no read fails");
                }
            })
        })
        .collect();
    load.more(40).await;
    let (_, slaves) = roles(&c).await;
    c.runtime.kill(slaves[0]).await.unwrap();
    load.more(80).await;
    eventually("the replacement to serve", DEADLINE, || async {
        let view = c.watcher.send(GetCluster).await.unwrap();
        view.workers.len() == 3 && view.workers.iter().all(|w| w.state != "catching up")
    })
    .await;
    load.more(40).await;
    reading.store(false, Ordering::Relaxed);
    for r in readers {
        r.await.expect("a reader failed");
    }
    let acked = load.stop().await;
    check_all(c, &dir, acked).await;
}
