//! The DBaaS over a real RabbitMQ with every worker a process of its own
//! (`dbaas worker`), killed with SIGKILL at awkward moments. Each test has
//! a virtual host of its own.

mod suite;

use suite::{count_users, user};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dbaas::actors::watcher::{Resign, StopWatching};
use dbaas::broker::{Message, WRITE_Q};
use dbaas::model::wire::{self, MasterRequest, Stamp, WriteRequest};
use dbaas::model::{Consistency, ReadOp, ReadResult, Row, Value, WriteOp, WriteResult};
use dbaas::runtime::WorkerSpec;
use dbaas::system::Cluster;
use suite::{
    amqp_url, eventually, fresh_vhost, fresh_zk, master_id, process_cluster, process_cluster_at,
    queue_depths, rabbitmqctl, roles, running, signal, store, stores, ZK_SESSION,
};

const DEADLINE: Duration = Duration::from_secs(60);

fn ride(n: i64) -> WriteOp {
    let row: Row = [
        ("created_by".to_owned(), Value::from(format!("user{n}"))),
        ("timestamp".to_owned(), Value::Int(n)),
        ("source".to_owned(), Value::Int(1)),
        ("destination".to_owned(), Value::Int(2)),
        ("users".to_owned(), Value::List(vec![])),
    ]
    .into();
    WriteOp::InsertAuto {
        table: "rides".into(),
        row,
    }
}

fn count_rides() -> ReadOp {
    ReadOp::Count {
        table: "rides".into(),
        filter: vec![],
    }
}

async fn slave_ids(c: &Cluster) -> Vec<u64> {
    roles(c).await.1
}

async fn all_applied(c: &Cluster, seq: u64) {
    suite::all_applied(c, seq, DEADLINE).await;
}

#[actix::test]
async fn rabbitmqctl_shows_the_queues_while_the_system_runs() {
    let dir = tempfile::tempdir().unwrap();
    let Some((c, vhost)) = process_cluster(dir.path(), 1).await else {
        return;
    };
    let queues = rabbitmqctl(&["list_queues", "-p", &vhost, "name"]);
    let replies = c.orchestrator.reply_queue().await.unwrap();
    assert!(replies.starts_with("responseQ."), "{replies}");
    for q in ["readQ", "writeQ", replies.as_str()] {
        assert!(
            queues.lines().any(|l| l.trim() == q),
            "{q} missing: {queues}"
        );
    }
    let exchanges = rabbitmqctl(&["list_exchanges", "-p", &vhost, "name", "type"]);
    for x in ["syncQ", "leading"] {
        assert!(
            exchanges
                .lines()
                .any(|l| l.split_whitespace().eq([x, "fanout"])),
            "{x} fanout missing: {exchanges}"
        );
    }
    c.stop().await;
}

#[actix::test]
async fn reads_spread_round_robin_over_three_slave_processes() {
    let dir = tempfile::tempdir().unwrap();
    let Some((c, _)) = process_cluster(dir.path(), 3).await else {
        return;
    };
    c.orchestrator.write(ride(1)).await.unwrap();
    for _ in 0..90 {
        let r = c
            .orchestrator
            .read(count_rides(), Consistency::Strong)
            .await;
        assert_eq!(r.unwrap().result, ReadResult::Count(1));
    }
    let mut served = Vec::new();
    for id in slave_ids(&c).await {
        served.push(c.runtime.status(id).await.unwrap().reads_served);
    }
    assert_eq!(served.len(), 3);
    assert_eq!(served.iter().sum::<u64>(), 90);
    assert!(served.iter().all(|&n| n >= 20), "uneven: {served:?}");
    c.stop().await;
}

#[actix::test]
async fn a_slave_killed_while_holding_reads_loses_no_read() {
    let dir = tempfile::tempdir().unwrap();
    let Some((c, _)) = process_cluster(dir.path(), 2).await else {
        return;
    };
    c.orchestrator.write(ride(1)).await.unwrap();
    let done = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..16)
        .map(|_| {
            let (orch, done) = (c.orchestrator.clone(), done.clone());
            actix::spawn(async move {
                for _ in 0..150 {
                    let r = orch.read(count_rides(), Consistency::Strong).await;
                    assert_eq!(r.expect("no read fails").result, ReadResult::Count(1));
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let d = done.clone();
    eventually("reads under way", DEADLINE, || {
        let d = d.clone();
        async move { d.load(Ordering::Relaxed) > 300 }
    })
    .await;
    let victim = slave_ids(&c).await[0];
    c.runtime.kill(victim).await.unwrap();
    for r in readers {
        r.await.expect("every reader got every answer");
    }
    assert_eq!(done.load(Ordering::Relaxed), 16 * 150);
    c.stop().await;
}

#[actix::test]
async fn a_master_killed_mid_stream_loses_no_acknowledged_write_and_applies_none_twice() {
    let dir = tempfile::tempdir().unwrap();
    let Some((c, _)) = process_cluster(dir.path(), 2).await else {
        return;
    };
    let acked = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let (orch, acked) = (c.orchestrator.clone(), acked.clone());
            actix::spawn(async move {
                let mut keys = Vec::new();
                for i in 0..100 {
                    let reply = orch
                        .write(ride(w * 1000 + i))
                        .await
                        .expect("write acknowledged");
                    let WriteResult::Inserted { key } = reply.result else {
                        panic!("not an insert: {reply:?}");
                    };
                    keys.push(key);
                    acked.fetch_add(1, Ordering::Relaxed);
                }
                keys
            })
        })
        .collect();
    let a = acked.clone();
    eventually("writes under way", DEADLINE, || {
        let a = a.clone();
        async move { a.load(Ordering::Relaxed) > 200 }
    })
    .await;
    // No restart by hand: a slave is elected, and a replacement started.
    let m = master_id(&c).await;
    c.runtime.kill(m).await.unwrap();
    let mut keys = Vec::new();
    for w in writers {
        keys.extend(w.await.expect("every write acknowledged"));
    }
    keys.sort_by_key(|k| k.as_int());
    keys.dedup();
    assert_eq!(keys.len(), 800, "every acknowledged write has its own row");
    let count = c
        .orchestrator
        .read(count_rides(), Consistency::Strong)
        .await
        .unwrap();
    assert_eq!(count.result, ReadResult::Count(800), "none applied twice");
    all_applied(&c, count.seq).await;
    assert_ne!(master_id(&c).await, m);
    let ids = running(&c);
    c.stop().await;
    let all = stores(dir.path(), &ids);
    assert!(all.iter().all(|s| *s == all[0]), "workers differ: {all:?}");
}

fn pid(c: &Cluster, id: u64) -> u64 {
    let list = c.runtime.list();
    list.iter().find(|w| w.id == id).expect("running").pid
}

/// Writes `n` users named `<prefix><i>` from 8 writers; each acknowledged.
async fn write_users(c: &Cluster, prefix: &str, n: u64) {
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let (orch, prefix) = (c.orchestrator.clone(), prefix.to_owned());
            actix::spawn(async move {
                for i in (w..n).step_by(8) {
                    orch.write(user(&format!("{prefix}{i}"))).await.unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.await.expect("every write acknowledged");
    }
}

#[actix::test]
async fn a_new_cluster_on_a_used_virtual_host_keeps_only_its_own_rows() {
    let Some(base) = amqp_url() else { return };
    let (vhost, url) = fresh_vhost(&base);
    let Some(zk) = fresh_zk(ZK_SESSION) else {
        return;
    };
    let old_dir = tempfile::tempdir().unwrap();
    let old = process_cluster_at(old_dir.path(), 2, &url, &zk, None).await;
    write_users(&old, "old", 100).await;
    // Nothing is replaced or elected from now on: the old cluster just
    // stops, in pieces.
    old.watcher.send(StopWatching).await.unwrap();
    // Both slaves lag: what the master syncs now waits in their queues.
    let (m, slaves) = roles(&old).await;
    let m = m.expect("a master");
    for id in slaves {
        signal(pid(&old, id), libc::SIGSTOP);
    }
    write_users(&old, "old-lagging", 200).await;
    // The orchestrator goes: replies to what is sent now stay in its
    // reply queue (until the broker deletes it, unused). Then the master
    // stops taking writeQ: writes stay there.
    let replies = old.orchestrator.reply_queue().await.unwrap();
    old.orchestrator
        .addr()
        .do_send(dbaas::actors::messages::Shutdown);
    let stamp = Stamp {
        cluster: old.cluster,
        epoch: old.epoch().await,
    };
    let broker = old.broker.clone();
    let publish = |i: u128| {
        let req = MasterRequest::Write(WriteRequest {
            request_id: 70_000 + i,
            epoch: stamp.epoch,
            op: user(&format!("orphan{i}")),
            sent_ms: dbaas::store::wall_clock_ms(),
        });
        let msg = Message {
            body: wire::encode(stamp, &req),
            correlation_id: Some(fastrand::u64(..)),
            reply_to: Some(replies.clone()),
        };
        let broker = broker.clone();
        async move { broker.publish(WRITE_Q, msg).await.unwrap() }
    };
    for i in 0..20 {
        publish(i).await;
    }
    eventually("replies left in the old reply queue", DEADLINE, || async {
        queue_depths(&vhost).get(&replies).copied().unwrap_or(0) >= 20
    })
    .await;
    signal(pid(&old, m), libc::SIGSTOP);
    for i in 20..40 {
        publish(i).await;
    }
    for w in old.runtime.list() {
        old.runtime.kill(w.id).await.unwrap();
    }
    let left = queue_depths(&vhost);
    assert!(left["writeQ"] >= 20 && left[&replies] >= 20, "{left:?}");
    assert!(left["sync.2"] >= 1 && left["sync.3"] >= 1, "{left:?}");
    let old_id = old.cluster;
    // Its coordinator session ends, as the process's would: a fresh data
    // directory joins a cluster only while orchestrators serve it.
    old.watcher.send(Resign).await.unwrap();
    drop(old);

    // A fresh data directory on the same virtual host and ZooKeeper root:
    // the same worker ids, seqs from 1 again.
    let dir = tempfile::tempdir().unwrap();
    let c = process_cluster_at(dir.path(), 2, &url, &zk, None).await;
    assert_ne!(c.cluster, old_id);
    write_users(&c, "new", 300).await;
    let count = c
        .orchestrator
        .read(count_users(), Consistency::Strong)
        .await
        .expect("strong reads work");
    assert_eq!(count.result, ReadResult::Count(300));
    let w = c
        .orchestrator
        .write(user("last"))
        .await
        .expect("writes work");
    assert_eq!(w.seq, 301);
    all_applied(&c, 301).await;
    c.stop().await;
    let all = stores(dir.path(), &[1, 2, 3]);
    assert!(all.iter().all(|s| *s == all[0]), "workers differ: {all:?}");
    for id in [1, 2, 3] {
        let rows = store(dir.path(), id).read(&count_users()).unwrap();
        assert_eq!(rows, ReadResult::Count(301), "worker {id}");
    }
}

#[actix::test]
async fn a_dead_slaves_sync_queue_stays_within_its_cap_and_it_catches_up() {
    const CAP: u64 = 100;
    let Some(base) = amqp_url() else { return };
    let (vhost, url) = fresh_vhost(&base);
    let Some(zk) = fresh_zk(ZK_SESSION) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let c = process_cluster_at(dir.path(), 2, &url, &zk, Some(CAP as u32)).await;
    // Nobody declares the slave gone (no replacement deletes its queue):
    // the queue is left to fill while it is away.
    c.watcher.send(StopWatching).await.unwrap();
    let dead = slave_ids(&c).await[1];
    c.runtime.kill(dead).await.unwrap();
    // 50,000 rows, in batches of 10 from 16 writers.
    let writers: Vec<_> = (0..16u64)
        .map(|w| {
            let orch = c.orchestrator.clone();
            actix::spawn(async move {
                for b in (w..5_000).step_by(16) {
                    let ops = (0..10).map(|i| user(&format!("r{b}-{i}"))).collect();
                    orch.write(WriteOp::Batch { ops }).await.unwrap();
                }
            })
        })
        .collect();
    let queue = format!("sync.{dead}");
    let mut deepest = 0;
    for w in writers {
        deepest = deepest.max(queue_depths(&vhost).get(&queue).copied().unwrap_or(0));
        w.await.expect("every write acknowledged");
    }
    // (A queue busy enough not to answer `list_queues` in time is left
    // out of its listing: asked again until it answers.)
    let mut depth = None;
    eventually("the sync queue listed", Duration::from_secs(30), || {
        depth = queue_depths(&vhost).get(&queue).copied();
        std::future::ready(depth.is_some())
    })
    .await;
    let depth = depth.expect("listed");
    assert!(
        depth <= CAP && deepest <= CAP,
        "{depth} and {deepest} over {CAP}"
    );
    // It comes back and catches up past what its queue dropped.
    let spec = WorkerSpec {
        id: dead,
        cluster: c.cluster,
    };
    c.runtime.start(spec).await.unwrap();
    let last = c.orchestrator.write(user("after")).await.unwrap();
    all_applied(&c, last.seq).await;
    let count = c
        .orchestrator
        .read(count_users(), Consistency::Strong)
        .await
        .unwrap();
    assert_eq!(count.result, ReadResult::Count(50_001));
    let ids = running(&c);
    c.stop().await;
    let all = stores(dir.path(), &ids);
    assert!(all.iter().all(|s| *s == all[0]), "workers differ: {all:?}");
}

#[actix::test]
async fn a_slave_stopped_on_purpose_takes_its_sync_queue_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let Some((c, vhost)) = process_cluster(dir.path(), 2).await else {
        return;
    };
    let gone = slave_ids(&c).await[1];
    c.runtime.stop(gone).await.unwrap();
    c.orchestrator.write(user("a")).await.unwrap();
    let queues = queue_depths(&vhost);
    assert!(!queues.contains_key(&format!("sync.{gone}")), "{queues:?}");
    assert!(queues.contains_key(&format!("sync.{}", slave_ids(&c).await[0])));
    c.stop().await;
}

/// Two starts of one worker at once (a replacement asked twice for one
/// death, say): the second is refused while the first waits for the new
/// process to say where its control API is, so one process runs over the
/// worker's store, not two. The runtime listed a worker only once it had
/// started, so both once went ahead (seen under load as worker 1 started
/// three times).
#[actix::test]
async fn two_starts_of_one_worker_at_once_start_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let Some((c, _vhost)) = process_cluster(dir.path(), 1).await else {
        return;
    };
    let spec = WorkerSpec {
        id: 9,
        cluster: c.cluster,
    };
    let (a, b) = futures::join!(c.runtime.start(spec), c.runtime.start(spec));
    let started: Vec<u64> = [&a, &b]
        .iter()
        .filter_map(|r| r.as_ref().ok().map(|w| w.pid))
        .collect();
    assert_eq!(started.len(), 1, "{a:?} {b:?}");
    let refused = [a, b]
        .into_iter()
        .find_map(Result::err)
        .expect("one refused");
    assert!(refused.to_string().contains("runs already"), "{refused}");
    let nines = c.runtime.list().iter().filter(|w| w.id == 9).count();
    assert_eq!(nines, 1);
    c.stop().await;
}
