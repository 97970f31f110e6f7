//! The DBaaS over a real RabbitMQ with every worker a process of its own
//! (`dbaas worker`), killed with SIGKILL at awkward moments. Each test has
//! a virtual host of its own.

mod suite;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dbaas::model::{Consistency, ReadOp, ReadResult, Row, Value, WriteOp, WriteResult};
use dbaas::runtime::{Role, WorkerSpec};
use dbaas::system::Cluster;
use suite::{eventually, process_cluster, rabbitmqctl, stores};

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

fn slave_ids(c: &Cluster) -> Vec<u64> {
    let list = c.runtime.list();
    list.iter()
        .filter(|w| w.role == Role::Slave)
        .map(|w| w.id)
        .collect()
}

fn master(c: &Cluster) -> u64 {
    let list = c.runtime.list();
    list.iter()
        .find(|w| w.role == Role::Master)
        .expect("a master")
        .id
}

/// Waits until every worker has applied `seq`.
async fn all_applied(c: &Cluster, seq: u64) {
    let rt = c.runtime.clone();
    eventually("every worker to catch up", DEADLINE, || {
        let rt = rt.clone();
        async move {
            for w in rt.list() {
                if !rt.status(w.id).await.is_ok_and(|s| s.applied_seq >= seq) {
                    return false;
                }
            }
            true
        }
    })
    .await;
}

#[actix::test]
async fn rabbitmqctl_shows_the_four_queues_while_the_system_runs() {
    let dir = tempfile::tempdir().unwrap();
    let Some((c, vhost)) = process_cluster(dir.path(), 1).await else {
        return;
    };
    let queues = rabbitmqctl(&["list_queues", "-p", &vhost, "name"]);
    for q in ["readQ", "writeQ", "responseQ"] {
        assert!(
            queues.lines().any(|l| l.trim() == q),
            "{q} missing: {queues}"
        );
    }
    let exchanges = rabbitmqctl(&["list_exchanges", "-p", &vhost, "name", "type"]);
    assert!(
        exchanges
            .lines()
            .any(|l| l.split_whitespace().eq(["syncQ", "fanout"])),
        "syncQ fanout missing: {exchanges}"
    );
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
    for id in slave_ids(&c) {
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
    let victim = slave_ids(&c)[0];
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
    let m = master(&c);
    c.runtime.kill(m).await.unwrap();
    c.runtime
        .start(WorkerSpec {
            id: m,
            role: Role::Master,
            epoch: c.epoch,
        })
        .await
        .unwrap();
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
    let mut ids: Vec<u64> = c.runtime.list().iter().map(|w| w.id).collect();
    ids.sort_unstable();
    c.stop().await;
    let all = stores(dir.path(), &ids);
    assert!(all.iter().all(|s| *s == all[0]), "workers differ: {all:?}");
}
