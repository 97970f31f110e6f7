//! The failover suite: elections, deaths seen and unseen, deposed masters
//! and replacements, with the in-process coordinator, over whichever
//! broker a test file passes.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use dbaas::actors::watcher::{CrashMaster, CrashSlave, GetCluster};
use dbaas::broker::Broker;
use dbaas::model::{ReadResult, WriteResult};
use dbaas::system::Cluster;

use super::actors::{
    cluster, count_users, embedded, master_session, read, taking_writes, user, DEADLINE,
};
use super::{all_applied, eventually, master_id, roles, running, stores};

/// Writers that keep writing users until stopped; every write must be
/// acknowledged.
pub(super) struct Writers {
    pub acked: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<u64>>,
}

impl Writers {
    /// Starts `n` writers of users `<prefix><writer>-<i>`.
    pub fn start(c: &Cluster, prefix: &str, n: u64) -> Writers {
        let acked = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..n)
            .map(|w| {
                let (orch, acked, stop) = (c.orchestrator.clone(), acked.clone(), stop.clone());
                let prefix = format!("{prefix}{w}-");
                actix::spawn(async move {
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let reply = orch
                            .write(user(&format!("{prefix}{i}")))
                            .await
                            .expect("every write acknowledged");
                        assert!(matches!(reply.result, WriteResult::Inserted { .. }));
                        acked.fetch_add(1, Ordering::Relaxed);
                        i += 1;
                    }
                    i
                })
            })
            .collect();
        Writers { acked, stop, tasks }
    }

    /// Waits until `more` writes past now were acknowledged.
    pub async fn wait_for(&self, more: u64) {
        let target = self.acked.load(Ordering::Relaxed) + more;
        let acked = self.acked.clone();
        eventually("writes to be acknowledged", DEADLINE, || {
            let acked = acked.clone();
            async move { acked.load(Ordering::Relaxed) >= target }
        })
        .await;
    }

    /// Stops them; the number of acknowledged writes.
    pub async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = 0;
        for t in self.tasks {
            total += t.await.expect("a writer failed");
        }
        total
    }
}

/// After the writes: every acknowledged write is there exactly once, on
/// every worker alike.
async fn check_all(c: Cluster, dir: &tempfile::TempDir, acked: u64) {
    assert_eq!(read(&c, count_users()).await, ReadResult::Count(acked));
    let seq = c.orchestrator.stats().await.unwrap().last_acked_seq;
    all_applied(&c, seq, DEADLINE).await;
    let ids = running(&c);
    c.stop().await;
    let all = stores(dir.path(), &ids);
    assert!(all.iter().all(|s| *s == all[0]), "workers differ: {all:?}");
}

/// Waits until the cluster has `n` workers again, a master among them.
async fn workers_again(c: &Cluster, n: usize) {
    eventually("a replacement to start and register", DEADLINE, || async {
        let view = c.watcher.send(GetCluster).await.unwrap();
        view.workers.len() == n && view.master.is_some() && running(c).len() == n
    })
    .await;
}

pub async fn a_killed_master_is_replaced_by_election_and_no_acknowledged_write_is_lost(
    b: Arc<dyn Broker>,
) {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(&dir, 2, b).await;
    let writers = Writers::start(&c, "w", 8);
    for round in 0..3 {
        writers.wait_for(50).await;
        let (old, epoch) = (master_id(&c).await, c.epoch().await);
        c.runtime.kill(old).await.unwrap();
        eventually("a new master", DEADLINE, || async {
            master_id(&c).await != old && c.epoch().await > epoch
        })
        .await;
        workers_again(&c, 3).await;
        let view = c.watcher.send(GetCluster).await.unwrap();
        assert!(
            view.events.iter().any(|e| e.kind == "election"),
            "round {round}: {:?}",
            view.events
        );
    }
    writers.wait_for(50).await;
    let acked = writers.stop().await;
    check_all(c, &dir, acked).await;
}

pub async fn crash_master_and_crash_slave_kill_and_workers_are_replaced(b: Arc<dyn Broker>) {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(&dir, 2, b).await;
    let writers = Writers::start(&c, "c", 4);
    writers.wait_for(20).await;
    let before: Vec<u64> = c.runtime.list().iter().map(|w| w.pid).collect();
    let highest_slave = {
        let (m, slaves) = roles(&c).await;
        let m = m.expect("a master");
        let pid = |id| c.runtime.list().iter().find(|w| w.id == id).unwrap().pid;
        assert!(!slaves.contains(&m));
        slaves.iter().map(|&id| pid(id)).max().unwrap()
    };
    let killed = c.watcher.send(CrashSlave).await.unwrap().unwrap();
    assert_eq!(killed, highest_slave);
    workers_again(&c, 3).await;
    let master_pid = c.watcher.send(GetCluster).await.unwrap().master.unwrap();
    let killed = c.watcher.send(CrashMaster).await.unwrap().unwrap();
    assert_eq!(killed, master_pid);
    workers_again(&c, 3).await;
    let after: Vec<u64> = c.runtime.list().iter().map(|w| w.pid).collect();
    assert!(!after.contains(&master_pid) && !after.contains(&highest_slave));
    assert_eq!(before.len(), after.len());
    writers.wait_for(20).await;
    let acked = writers.stop().await;
    check_all(c, &dir, acked).await;
}

pub async fn a_master_whose_session_expired_is_deposed_and_takes_no_write(b: Arc<dyn Broker>) {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(&dir, 1, b).await;
    let writers = Writers::start(&c, "d", 4);
    writers.wait_for(20).await;
    let (old, epoch) = (master_id(&c).await, c.epoch().await);
    // The coordinator stops hearing from the master (its process lives
    // on): its session expires, and another worker is elected.
    embedded(&c).expire(master_session(&c).await);
    eventually("another master", DEADLINE, || async {
        c.epoch().await > epoch && master_id(&c).await != old
    })
    .await;
    assert!(
        !taking_writes(&c, old).await,
        "the deposed master takes writes"
    );
    writers.wait_for(20).await;
    let acked = writers.stop().await;
    check_all(c, &dir, acked).await;
}

pub async fn a_master_cut_off_from_the_coordinator_pauses_and_carries_on(b: Arc<dyn Broker>) {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(&dir, 1, b).await;
    let writers = Writers::start(&c, "p", 4);
    writers.wait_for(20).await;
    let (m, epoch) = (master_id(&c).await, c.epoch().await);
    let session = master_session(&c).await;
    let server = embedded(&c);
    server.disconnect(session);
    eventually("the master to stop taking writes", DEADLINE, || async {
        !taking_writes(&c, m).await
    })
    .await;
    // Reads go on meanwhile.
    read(&c, count_users()).await;
    server.reconnect(session);
    writers.wait_for(20).await;
    assert_eq!(master_id(&c).await, m, "no needless election");
    assert_eq!(c.epoch().await, epoch);
    let acked = writers.stop().await;
    check_all(c, &dir, acked).await;
}

pub async fn a_killed_slave_is_replaced_and_the_replacement_catches_up(b: Arc<dyn Broker>) {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(&dir, 2, b).await;
    let writers = Writers::start(&c, "s", 4);
    writers.wait_for(30).await;
    let (_, slaves) = roles(&c).await;
    c.runtime.kill(slaves[0]).await.unwrap();
    writers.wait_for(30).await;
    workers_again(&c, 3).await;
    writers.wait_for(30).await;
    let acked = writers.stop().await;
    check_all(c, &dir, acked).await;
}
