//! Failover with real worker processes, RabbitMQ and ZooKeeper: the master
//! SIGKILLed again and again under writes, a master paused until its
//! session expires, a slave killed while reads go on, slaves started and
//! stopped by the Scaler. Each test has a
//! virtual host and a ZooKeeper root of its own.

mod suite;

use suite::{count_users, user, Load};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dbaas::actors::watcher::{GetCluster, SetHungAfter};
use dbaas::model::{Consistency, ReadResult};
use dbaas::system::Cluster;
use suite::{
    amqp_url, eventually, fresh_vhost, fresh_zk, master_id, process_cluster, process_cluster_at,
    roles, running, signal, stores,
};

const DEADLINE: Duration = Duration::from_secs(60);

/// Waits until a master leads under a newer epoch (another worker, or
/// the dead one's own store started again when no replacement had caught
/// up yet), `n` workers are registered again (the replacement among them)
/// and `processes` run.
async fn failed_over(c: &Cluster, epoch: u64, n: usize, processes: usize) {
    eventually("a new master and a replacement", DEADLINE, || async {
        let view = c.watcher.send(GetCluster).await.unwrap();
        let m = view
            .master
            .and_then(|pid| view.workers.iter().find(|w| w.pid == pid));
        m.is_some_and(|m| m.state == "leading")
            && view.epoch > epoch
            && view.workers.len() == n
            && running(c).len() == processes
    })
    .await;
}

/// How many users there are, read strongly.
async fn strong_count(c: &Cluster) -> dbaas::model::ReadReply {
    c.orchestrator
        .read(count_users(), Consistency::Strong)
        .await
        .expect("strong reads work")
}

/// Every acknowledged write present exactly once, on every worker alike.
async fn check_all(c: Cluster, dir: &tempfile::TempDir, acked: u64) {
    let count = strong_count(&c).await;
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
        failed_over(&c, epoch, 3, 3).await;
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
    // Not taken for hung while this test holds it paused.
    c.watcher.send(SetHungAfter(DEADLINE * 5)).await.unwrap();
    // Paused: nobody sees it die; its session expires, another is elected
    // (no second worker for it: two registered, three processes).
    signal(pid, libc::SIGSTOP);
    failed_over(&c, epoch, 2, 3).await;
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

/// A master paused for good: another is elected at its session's expiry,
/// and once it has not come back in time it is taken for hung, killed
/// and started again over its own store (no second worker for it); it
/// catches up as a slave and nothing acknowledged is lost.
#[actix::test]
async fn a_hung_master_is_killed_and_started_again_over_its_store() {
    let dir = tempfile::tempdir().unwrap();
    let Some((c, _)) = process_cluster(dir.path(), 2).await else {
        return;
    };
    c.watcher
        .send(SetHungAfter(Duration::from_secs(1)))
        .await
        .unwrap();
    let load = Load::start(&c, 4);
    load.more(40).await;
    let (old, epoch) = (master_id(&c).await, c.epoch().await);
    let pid = c.runtime.list().iter().find(|w| w.id == old).unwrap().pid;
    signal(pid, libc::SIGSTOP);
    eventually("the hung worker started again", DEADLINE, || async {
        let view = c.watcher.send(GetCluster).await.unwrap();
        let again = c.runtime.list().iter().any(|w| w.id == old && w.pid != pid);
        again
            && view.epoch > epoch
            && view.events.iter().any(|e| e.kind == "hung")
            && view.workers.len() == 3
            && running(&c).len() == 3
            && view
                .workers
                .iter()
                .all(|w| w.state == "serving" || w.state == "leading")
    })
    .await;
    load.more(40).await;
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

/// Ready (not delivered) messages in `queue`: what a cap counts.
fn ready(vhost: &str, queue: &str) -> u64 {
    suite::queue_column(vhost, "messages_ready")
        .get(queue)
        .copied()
        .unwrap_or(0)
}

/// Every sync queue of `vhost` and how many consumers it has.
fn queue_consumers(vhost: &str) -> Vec<(String, u64)> {
    suite::queue_column(vhost, "consumers")
        .into_iter()
        .filter(|(name, _)| name.starts_with("sync."))
        .collect()
}

/// The double failure: the master killed, then every slave (the elected
/// one among them, before it has led) killed 0-30 ms later, again and
/// again under writes. Each comes back over its own store; a slave
/// acknowledges syncs before sled flushes them, so the promotee comes
/// back with less than the old master acknowledged, and must not lead
/// over the old master's store: no acknowledged write is lost.
#[actix::test]
async fn the_master_then_every_slave_killed_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let Some((c, _)) = process_cluster(dir.path(), 2).await else {
        return;
    };
    let load = Load::start(&c, 8);
    let mut rng = fastrand::Rng::with_seed(14);
    for _ in 0..4 {
        load.more(40).await;
        let (old, epoch) = (master_id(&c).await, c.epoch().await);
        c.runtime.kill(old).await.unwrap();
        // The fault's moment, drawn: the promotion under way, or not yet.
        tokio::time::sleep(Duration::from_millis(rng.u64(0..30))).await;
        for id in running(&c).into_iter().filter(|&id| id != old) {
            let _ = c.runtime.kill(id).await;
        }
        eventually("a master again, and every worker", DEADLINE, || async {
            let view = c.watcher.send(GetCluster).await.unwrap();
            let leads = view
                .master
                .and_then(|pid| view.workers.iter().find(|w| w.pid == pid))
                .is_some_and(|m| m.state == "leading");
            leads && view.epoch > epoch && view.workers.len() == 3 && running(&c).len() == 3
        })
        .await;
    }
    load.more(40).await;
    let acked = load.stop().await;
    check_all(c, &dir, acked).await;
}

fn pid_of(c: &Cluster, id: u64) -> u64 {
    c.runtime
        .list()
        .iter()
        .find(|w| w.id == id)
        .expect("running")
        .pid
}

/// Promise 1 ("killing the master ... loses no acknowledged write") with
/// the one slave briefly paused (well inside its session timeout) while
/// writes go on: its capped sync queue drops the oldest confirmed syncs
/// (drop-head). The master is killed as the slave resumes. The slave must
/// not lead without the writes its queue dropped: it declines (a gap), and
/// the dead master's own store, started again, is elected instead.
#[actix::test]
async fn a_slave_whose_capped_queue_dropped_acknowledged_syncs_does_not_lead_without_them() {
    const CAP: u32 = 5;
    let Some(base) = amqp_url() else { return };
    let (vhost, url) = fresh_vhost(&base);
    // Sessions long enough that the pause is no death.
    let Some(zk) = fresh_zk(Duration::from_secs(60)) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let c = process_cluster_at(dir.path(), 1, &url, &zk, Some(CAP)).await;
    // The slave is paused for as long as the writes take: not hung.
    c.watcher.send(SetHungAfter(DEADLINE * 5)).await.unwrap();
    for i in 0..3 {
        c.orchestrator.write(user(&format!("a{i}"))).await.unwrap();
    }
    suite::all_applied(&c, 3, DEADLINE).await;
    let (m, slaves) = roles(&c).await;
    let (m, s) = (m.expect("a master"), slaves[0]);
    signal(pid_of(&c, s), libc::SIGSTOP);
    // RabbitMQ pushes up to the slave's prefetch (4096) to the paused
    // process; only what is left ready counts against the cap. Write until
    // the queue holds its cap of ready messages, then as much again: the
    // oldest ready syncs are dropped.
    let queue = format!("sync.{s}");
    let mut acked = 3;
    let mut full_at = None;
    while full_at.is_none_or(|f| acked < f + 2 * u64::from(CAP)) {
        // Two writers one write at a time: about one sync message a write.
        let writers: Vec<_> = (0..2)
            .map(|w| {
                let orch = c.orchestrator.clone();
                let base = acked;
                async move {
                    for i in 0..250 {
                        orch.write(user(&format!("b{base}-{w}-{i}"))).await.unwrap();
                    }
                }
            })
            .collect();
        futures::future::join_all(writers).await;
        acked += 500;
        if full_at.is_none() && ready(&vhost, &queue) >= u64::from(CAP) {
            full_at = Some(acked);
        }
    }
    signal(pid_of(&c, s), libc::SIGCONT);
    c.runtime.kill(m).await.unwrap();
    eventually("a master to lead", DEADLINE, || async {
        roles(&c).await.0.is_some()
    })
    .await;
    // Every acknowledged write is still there. Eventual reads first (a
    // strong read would only wait, were any lost): one may be served by the
    // slave that was paused, still behind, so they are polled until they
    // see every write; lost writes would never be seen.
    let seen = std::cell::Cell::new(None);
    let deadline = std::time::Instant::now() + DEADLINE;
    while seen.get() != Some(acked) {
        if let Ok(r) = c
            .orchestrator
            .read(count_users(), Consistency::Eventual)
            .await
        {
            if let ReadResult::Count(n) = r.result {
                seen.set(Some(n));
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "acknowledged writes lost: {:?} of {acked} seen",
            seen.get()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let strong = c
        .orchestrator
        .read(count_users(), Consistency::Strong)
        .await
        .unwrap();
    assert_eq!(strong.result, ReadResult::Count(acked));
    // One consumer a sync queue: a failed promotion leaves no second
    // slave actor consuming beside the first (which swallowed fences).
    for (queue, consumers) in queue_consumers(&vhost) {
        assert!(
            consumers <= 1,
            "{queue} has {consumers} consumers after a failed promotion"
        );
    }
    let seq = c.orchestrator.stats().await.unwrap().last_acked_seq;
    suite::all_applied(&c, seq, DEADLINE).await;
    let ids = running(&c);
    c.stop().await;
    let all = stores(dir.path(), &ids);
    assert!(all.iter().all(|s| *s == all[0]), "workers differ: {all:?}");
}

/// The lease follows the session timeout ZooKeeper granted, which it
/// clamps to its bounds (`maxSessionTimeout`): asked for more, the session
/// is shorter, and so must the lease be.
#[actix::test]
async fn the_lease_follows_the_session_timeout_the_server_granted() {
    use dbaas::coord::Coordinator;
    let Some(zk) = fresh_zk(Duration::from_secs(200)) else {
        return;
    };
    let coord = dbaas::coord::zk::ZkCoordinator::connect(&zk.hosts, &zk.root, zk.session_timeout)
        .await
        .expect("ZooKeeper is reachable");
    let granted = coord.session_timeout();
    assert!(granted < zk.session_timeout, "granted {granted:?}");
    let lease = dbaas::actors::lease::lease_span(granted.min(zk.session_timeout));
    assert!(
        lease < granted,
        "lease {lease:?} outlives the session {granted:?}"
    );
    coord.close().await;
}

/// The Scaler with worker processes: 45 reads in a 2 s window start two
/// more `dbaas worker` processes, which catch up before they serve; the
/// idle window after it stops them again on purpose (none replaced), and
/// no read fails meanwhile.
#[actix::test]
async fn the_scaler_starts_and_stops_worker_processes_with_the_reads() {
    let dir = tempfile::tempdir().unwrap();
    let Some((c, _)) = process_cluster(dir.path(), 1).await else {
        return;
    };
    suite::scaler::scales_every_window(c).await;
}

/// The same, decided on request: the highest pids go.
#[actix::test]
async fn the_scaler_stops_the_highest_pid_worker_processes() {
    let dir = tempfile::tempdir().unwrap();
    let Some((c, _)) = process_cluster(dir.path(), 1).await else {
        return;
    };
    suite::scaler::scales_when_asked(c).await;
}

/// A clean stop while a slave is paused (not yet taken for hung): the stop
/// neither waits for the paused worker's answer nor leaves it behind.
#[actix::test]
async fn a_clean_stop_while_a_worker_is_paused_stops_it_too() {
    let dir = tempfile::tempdir().unwrap();
    let Some((c, _)) = process_cluster(dir.path(), 2).await else {
        return;
    };
    c.watcher.send(SetHungAfter(DEADLINE * 5)).await.unwrap();
    for i in 0..10 {
        c.orchestrator.write(user(&format!("u{i}"))).await.unwrap();
    }
    let (_, slaves) = roles(&c).await;
    let pid = pid_of(&c, slaves[0]);
    signal(pid, libc::SIGSTOP);
    eventually("its session to end", DEADLINE, || async {
        let v = c.watcher.send(GetCluster).await.unwrap();
        v.workers.iter().all(|w| w.pid != pid)
    })
    .await;
    let stop = tokio::time::timeout(DEADLINE, c.stop()).await;
    assert!(stop.is_ok(), "the stop did not end");
    assert!(c.runtime.list().is_empty(), "{:?}", c.runtime.list());
}

/// Scaling down while a slave is hung stops the hung one first, so that
/// a serving slave stays.
#[actix::test]
async fn a_scale_down_stops_a_hung_slave_first() {
    let dir = tempfile::tempdir().unwrap();
    let Some((mut c, _)) = process_cluster(dir.path(), 2).await else {
        return;
    };
    c.watcher.send(SetHungAfter(DEADLINE * 5)).await.unwrap();
    c.start_scaler(suite::scaler::policy(Duration::from_secs(3600)));
    let scaler = c.scaler.clone().unwrap();
    for i in 0..5 {
        c.orchestrator.write(user(&format!("u{i}"))).await.unwrap();
    }
    // The lowest pid slave hangs: the highest would have gone anyway.
    let m = master_id(&c).await;
    let hung = c
        .runtime
        .list()
        .into_iter()
        .filter(|w| w.id != m)
        .min_by_key(|w| w.pid)
        .unwrap();
    signal(hung.pid, libc::SIGSTOP);
    eventually("its session to end", DEADLINE, || async {
        let v = c.watcher.send(GetCluster).await.unwrap();
        v.workers.iter().all(|w| w.pid != hung.pid)
    })
    .await;
    let readers = suite::scaler::Readers::start(&c, 2);
    let down = scaler
        .send(dbaas::actors::scaler::ScaleNow)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (down.from, down.to, down.stopped.clone()),
        (2, 1, vec![hung.id])
    );
    suite::scaler::slaves_ready(&c, 1).await;
    let (served, failed) = readers.stop().await;
    assert!(served > 0);
    assert_eq!(failed, 0);
    c.stop().await;
}

/// A cluster stopped cleanly once its master is its last worker starts
/// again over its data. The watcher hears from `/master` that the old
/// master is gone and starts that worker over its store itself, while the
/// cluster's start goes through every worker too: the second start of the
/// same worker must not fail the whole start (it did, with "worker 3 runs
/// already", every time).
#[actix::test]
async fn a_cluster_whose_master_is_its_last_worker_starts_again_over_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let Some(url) = amqp_url() else {
        return;
    };
    let (_vhost, url) = fresh_vhost(&url);
    let Some(zk) = fresh_zk(suite::ZK_SESSION) else {
        return;
    };
    let c = process_cluster_at(dir.path(), 2, &url, &zk, None).await;
    let mut acked = 0;
    for round in 0..10 {
        for i in 0..5 {
            let name = format!("before-restart-{round}-{i}");
            c.orchestrator.write(suite::user(&name)).await.unwrap();
            acked += 1;
        }
        if master_id(&c).await == 3 {
            break;
        }
        let (old, epoch) = (master_id(&c).await, c.epoch().await);
        c.runtime.kill(old).await.unwrap();
        failed_over(&c, epoch, 3, 3).await;
    }
    assert_eq!(master_id(&c).await, 3, "the master never moved to worker 3");
    c.stop().await;
    let c = process_cluster_at(dir.path(), 2, &url, &zk, None).await;
    assert_eq!(strong_count(&c).await.result, ReadResult::Count(acked));
    c.stop().await;
}
