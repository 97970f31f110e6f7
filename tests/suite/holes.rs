//! The replication holes suite: scenarios where a promise used to break
//! (a reused broker, replayed refusals, stuck snapshots, failed or lost
//! syncs, deposed masters, stale replies), over whichever broker a test
//! file passes.

use std::sync::Arc;
use std::time::Duration;

use dbaas::actors::watcher::GetCluster;
use dbaas::broker::faults::FaultyBroker;
use dbaas::broker::{Broker, Message, QueueKind, LEADING_X, SYNC_X, WRITE_Q};
use dbaas::model::wire::{
    self, Entry, MasterRequest, Reply, Stamp, SyncBatch, SyncItem, SyncMessage,
};
use dbaas::model::{Lineage, ReadResult, Value, WriteOp};
use dbaas::system::Cluster;
use futures::StreamExt;

use super::actors::{cluster, count_users, get_user, read, stamp, user, write_request, DEADLINE};
use super::{all_applied, eventually, master_id, running, store, stores};

/// A fault-injecting broker around `b`, and the same as a trait object.
fn faulty(b: Arc<dyn Broker>) -> (FaultyBroker, Arc<dyn Broker>) {
    let fb = FaultyBroker::new(b);
    (fb.clone(), Arc::new(fb))
}

/// The request id of a write request on `writeQ`, if it is one.
fn request_id(msg: &Message) -> Option<u128> {
    match wire::decode::<MasterRequest>(&msg.body) {
        Ok((_, MasterRequest::Write(w))) => Some(w.request_id),
        _ => None,
    }
}

/// Consumes `queue` (declared here) for the answers a test asks for.
async fn answers(c: &Cluster, queue: &str) -> dbaas::broker::Consumer {
    c.broker
        .declare_queue(queue, QueueKind::Transient)
        .await
        .unwrap();
    c.broker.consume(queue, 10).await.unwrap()
}

/// The next write answer on `answers`.
async fn next_write_answer(
    answers: &mut dbaas::broker::Consumer,
) -> dbaas::error::Result<dbaas::model::WriteReply> {
    let d = tokio::time::timeout(DEADLINE, answers.next())
        .await
        .expect("an answer in time")
        .expect("the consumer lives");
    let (_, Reply::Write(w)) = wire::decode(&d.message.body).unwrap() else {
        panic!("not a write answer");
    };
    d.ack().await.unwrap();
    w
}

pub async fn messages_of_an_earlier_cluster_on_the_same_broker_are_ignored(b: Arc<dyn Broker>) {
    let old_dir = tempfile::tempdir().unwrap();
    let old = cluster(&old_dir, 1, b.clone()).await;
    // Nothing replaces what dies from now on: the old cluster just stops.
    old.watcher
        .send(dbaas::actors::watcher::StopWatching)
        .await
        .unwrap();
    let m = master_id(&old).await;
    let s = if m == 1 { 2 } else { 1 };
    for i in 0..20 {
        old.orchestrator
            .write(user(&format!("old{i}")))
            .await
            .unwrap();
    }
    // The slave dies; the syncs of seqs 21..50 stay in its queue.
    old.runtime.kill(s).await.unwrap();
    for i in 20..50 {
        old.orchestrator
            .write(user(&format!("old{i}")))
            .await
            .unwrap();
    }
    // The master dies too; writes nobody answers stay in writeQ.
    let old_stamp = stamp(&old).await;
    let old_replies = old.orchestrator.reply_queue().await.unwrap();
    old.runtime.kill(m).await.unwrap();
    for i in 0..5 {
        let req = MasterRequest::Write(dbaas::model::wire::WriteRequest {
            request_id: 9000 + i,
            epoch: old_stamp.epoch,
            op: user(&format!("unanswered{i}")),
            sent_ms: dbaas::store::wall_clock_ms(),
        });
        let req = wire::encode(old_stamp, &req);
        let msg = Message {
            body: req,
            correlation_id: Some(fastrand::u64(..)),
            reply_to: Some(old_replies.clone()),
        };
        b.publish(WRITE_Q, msg).await.unwrap();
    }
    old.orchestrator
        .addr()
        .do_send(dbaas::actors::messages::Shutdown);
    let old_id = old.cluster;
    drop(old);

    // A new data directory: a new cluster, with the same worker ids and
    // epoch, on the same broker.
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(&dir, 1, b.clone()).await;
    assert_ne!(c.cluster, old_id);
    assert_eq!(c.epoch().await, 1);
    // A reply and an announcement of the old cluster reach the new
    // orchestrator's own queue (a late reply to a queue name drawn again;
    // an old master announcing itself, of a higher epoch).
    let stale = Reply::Write(Ok(dbaas::model::WriteReply {
        seq: 1_000,
        result: dbaas::model::WriteResult::Cleared,
    }));
    let stale = Message::reply(wire::encode(old_stamp, &stale), Some(fastrand::u64(..)));
    let replies = c.orchestrator.reply_queue().await.unwrap();
    b.publish(&replies, stale).await.unwrap();
    let old_leader = Stamp {
        epoch: 9,
        ..old_stamp
    };
    let leading = Message::reply(wire::encode(old_leader, &Reply::Leading), None);
    b.publish_fanout(LEADING_X, leading).await.unwrap();
    for i in 0..60 {
        let w = c
            .orchestrator
            .write(user(&format!("new{i}")))
            .await
            .unwrap();
        assert_eq!(w.seq, i + 1);
    }
    assert_eq!(read(&c, count_users()).await, ReadResult::Count(60));
    assert!(read(&c, get_user("old30")).await.into_rows().is_empty());
    let stats = c.orchestrator.stats().await.unwrap();
    assert_eq!(stats.last_acked_seq, 60, "a stale reply moved nothing");
    assert_eq!(stats.epoch, 1, "an old cluster's master is not followed");
    let (m, slaves) = super::roles(&c).await;
    c.stop().await;
    let all = stores(dir.path(), &[1, 2]);
    assert_eq!(all[0], all[1], "both workers hold the same rows");
    assert_eq!(all[0].0, 60);
    assert_eq!(m.into_iter().chain(slaves).count(), 2);
    let slave = store(dir.path(), 2);
    let rows = slave.read(&count_users()).unwrap();
    assert_eq!(rows, ReadResult::Count(60));
}

pub async fn a_refused_write_is_never_applied_later(b: Arc<dyn Broker>) {
    let dir = tempfile::tempdir().unwrap();
    let (fb, b) = faulty(b);
    let c = cluster(&dir, 1, b.clone()).await;
    c.orchestrator.write(user("x")).await.unwrap();
    let mut answers = answers(&c, "test.refusals").await;
    // The master answers request 777 (a duplicate key: refused) but dies
    // before its acknowledgement reaches the broker.
    fb.on_settle(|q, m, _| !(q == WRITE_Q && request_id(m) == Some(777)));
    let ask = Message {
        body: write_request(&c, 777, user("x")).await,
        correlation_id: Some(1),
        reply_to: Some("test.refusals".into()),
    };
    c.broker.publish(WRITE_Q, ask.clone()).await.unwrap();
    let first = next_write_answer(&mut answers).await;
    assert!(
        matches!(first, Err(dbaas::error::Error::Conflict(_))),
        "{first:?}"
    );
    // The key is deleted in a later group; then the master dies.
    c.orchestrator
        .write(WriteOp::Delete {
            table: "users".into(),
            key: Some(Value::from("x")),
            filter: None,
        })
        .await
        .unwrap();
    // The master dies: the slave (once the watcher knows it caught up) is
    // elected, and the request comes back to it. It gets its first answer
    // again, from the replicated record.
    eventually(
        "the watcher to know the slave caught up",
        DEADLINE,
        || async {
            let view = c.watcher.send(GetCluster).await.unwrap();
            view.workers.iter().any(|w| w.state == "serving")
        },
    )
    .await;
    let old = master_id(&c).await;
    c.runtime.kill(old).await.unwrap();
    fb.clear();
    let again = next_write_answer(&mut answers).await;
    assert_eq!(again, first, "the redelivered request got its first answer");
    assert_ne!(master_id(&c).await, old);
    assert!(read(&c, get_user("x")).await.into_rows().is_empty());
    drop(answers);
    let ids = running(&c);
    c.stop().await;
    let all = stores(dir.path(), &ids);
    assert!(all.iter().all(|s| *s == all[0]), "{all:?}");
    let answer = store(dir.path(), ids[0]).answer(777).expect("recorded");
    assert!(matches!(
        answer.answer,
        Err(dbaas::error::Error::Conflict(_))
    ));
}

pub async fn an_orphaned_snapshot_request_is_answered_once(b: Arc<dyn Broker>) {
    let dir = tempfile::tempdir().unwrap();
    let (fb, b) = faulty(b);
    let c = cluster(&dir, 1, b.clone()).await;
    let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let s = sent.clone();
    fb.after_publish(move |q, _, _| {
        if q == "snapshot.gone" {
            s.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    // A slave asked for a snapshot and went away with its reply queue.
    let ask = MasterRequest::Snapshot {
        have_seq: 0,
        have_epoch: 0,
    };
    let ask = Message {
        body: wire::encode(stamp(&c).await, &ask),
        correlation_id: Some(3),
        reply_to: Some("snapshot.gone".into()),
    };
    c.broker.publish(WRITE_Q, ask).await.unwrap();
    // Writes after it are taken in later groups: had the request gone back
    // to writeQ, it would have been answered again by now.
    for i in 0..5 {
        c.orchestrator.write(user(&format!("u{i}"))).await.unwrap();
    }
    assert_eq!(sent.load(std::sync::atomic::Ordering::SeqCst), 1);
    c.stop().await;
}

/// Checks, as replies are published, that no write is acknowledged before
/// the sync of every seq up to its own was confirmed. Violations are
/// collected, not panicked on (the hook runs inside a worker).
fn check_no_reply_overtakes_a_sync(fb: &FaultyBroker) -> Arc<std::sync::Mutex<Vec<String>>> {
    let violations = Arc::new(std::sync::Mutex::new(Vec::new()));
    let confirmed = std::sync::Mutex::new(std::collections::BTreeSet::new());
    let v = violations.clone();
    fb.after_publish(move |target, msg, ok| {
        let mut confirmed = confirmed.lock().unwrap();
        if target == SYNC_X && ok {
            if let Ok((_, SyncItem::Writes(batch))) = wire::decode_sync(&msg.body) {
                confirmed.extend(batch.writes.iter().map(|w| w.seq));
            }
        }
        if let Ok((_, Reply::Write(Ok(w)))) = wire::decode::<Reply>(&msg.body) {
            if let Some(missing) = (1..=w.seq).find(|s| !confirmed.contains(s)) {
                v.lock().unwrap().push(format!(
                    "seq {} acknowledged before {missing} synced",
                    w.seq
                ));
            }
        }
    });
    violations
}

pub async fn a_failed_sync_publish_lets_no_later_write_be_acknowledged_first(b: Arc<dyn Broker>) {
    let dir = tempfile::tempdir().unwrap();
    let (fb, b) = faulty(b);
    let c = cluster(&dir, 1, b.clone()).await;
    let violations = check_no_reply_overtakes_a_sync(&fb);
    // Refuse a few syncs while many writers keep groups in flight.
    let mut n = 0;
    fb.on_publish(move |target, _| {
        if target != SYNC_X {
            return dbaas::broker::faults::Fault::Pass;
        }
        n += 1;
        if [3, 4, 9, 15, 16, 17, 30].contains(&n) {
            dbaas::broker::faults::Fault::Fail
        } else {
            dbaas::broker::faults::Fault::Pass
        }
    });
    let writers: Vec<_> = (0..16)
        .map(|w| {
            let orch = c.orchestrator.clone();
            actix::spawn(async move {
                for i in 0..20 {
                    orch.write(user(&format!("w{w}-{i}"))).await.unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.await.expect("every write acknowledged");
    }
    assert_eq!(read(&c, count_users()).await, ReadResult::Count(320));
    let seq = c.orchestrator.stats().await.unwrap().last_acked_seq;
    all_applied(&c, seq, DEADLINE).await;
    assert_eq!(*violations.lock().unwrap(), Vec::<String>::new());
    c.stop().await;
    let all = stores(dir.path(), &[1, 2]);
    assert_eq!(all[0], all[1]);
}

pub async fn a_lost_sync_is_repaired_by_a_snapshot(b: Arc<dyn Broker>) {
    let dir = tempfile::tempdir().unwrap();
    let (fb, b) = faulty(b);
    let c = cluster(&dir, 1, b.clone()).await;
    // The broker confirms the second sync, then loses it: the slave sees
    // seq 3 come after 1, and nothing fills the gap.
    let mut n = 0;
    fb.on_publish(move |target, _| {
        n += u32::from(target == SYNC_X);
        if target == SYNC_X && n == 2 {
            dbaas::broker::faults::Fault::Lose
        } else {
            dbaas::broker::faults::Fault::Pass
        }
    });
    for i in 0..10 {
        c.orchestrator.write(user(&format!("u{i}"))).await.unwrap();
    }
    // Strong: the slave must get past the gap to answer.
    assert_eq!(read(&c, count_users()).await, ReadResult::Count(10));
    c.stop().await;
    let all = stores(dir.path(), &[1, 2]);
    assert_eq!(all[0], all[1]);
}

pub async fn a_deposed_masters_syncs_are_not_applied(b: Arc<dyn Broker>) {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(&dir, 1, b.clone()).await;
    for i in 0..5 {
        c.orchestrator.write(user(&format!("u{i}"))).await.unwrap();
    }
    c.stop().await;
    drop(c);
    // The restart begins epoch 2 after seq 5.
    let c = cluster(&dir, 1, b.clone()).await;
    assert_eq!(c.epoch().await, 2);
    c.orchestrator.write(user("u5")).await.unwrap();
    // Epoch 1's master, deposed, publishes seq 7: past epoch 2's base, so
    // not in the history; and a message of another cluster.
    let old = Stamp {
        cluster: c.cluster,
        epoch: 1,
    };
    let mut lineage = Lineage::default();
    lineage.begin(1, 0);
    let orphan = |seq, name: &str, stamp| {
        let batch = SyncBatch {
            lineage: lineage.clone(),
            writes: vec![SyncMessage {
                seq,
                epoch: 1,
                request_id: 5000 + u128::from(seq),
                entry: Entry::Write(user(name)),
            }],
        };
        Message::new(wire::encode(stamp, &SyncItem::Writes(batch)))
    };
    let foreign = Stamp {
        cluster: c.cluster ^ 1,
        epoch: 9,
    };
    for msg in [orphan(7, "ghost", old), orphan(7, "alien", foreign)] {
        c.broker.publish_fanout(SYNC_X, msg).await.unwrap();
    }
    let w = c.orchestrator.write(user("u6")).await.unwrap();
    assert_eq!(w.seq, 7);
    assert_eq!(read(&c, count_users()).await, ReadResult::Count(7));
    for ghost in ["ghost", "alien"] {
        assert!(read(&c, get_user(ghost)).await.into_rows().is_empty());
    }
    c.stop().await;
    let all = stores(dir.path(), &[1, 2]);
    assert_eq!(all[0], all[1]);
    assert_eq!(store(dir.path(), 2).epoch(), 2);
}

pub async fn a_reply_that_matches_no_request_changes_nothing(b: Arc<dyn Broker>) {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(&dir, 1, b.clone()).await;
    c.orchestrator.write(user("a")).await.unwrap();
    let replies = [
        Reply::Write(Ok(dbaas::model::WriteReply {
            seq: 1_000_000,
            result: dbaas::model::WriteResult::Cleared,
        })),
        Reply::Write(Err(dbaas::error::Error::Fenced {
            got: 1,
            current: 99,
        })),
    ];
    let queue = c.orchestrator.reply_queue().await.unwrap();
    for r in &replies {
        let msg = Message::reply(wire::encode(stamp(&c).await, r), Some(fastrand::u64(..)));
        c.broker.publish(&queue, msg).await.unwrap();
    }
    // This write's reply comes after them on the orchestrator's queue.
    let w = c.orchestrator.write(user("b")).await.unwrap();
    let stats = c.orchestrator.stats().await.unwrap();
    assert_eq!(
        (stats.last_acked_seq, stats.epoch),
        (w.seq, c.epoch().await)
    );
    assert_eq!(read(&c, count_users()).await, ReadResult::Count(2));
    c.stop().await;
}

/// The master's `writeQ` consumer ends (its connection was replaced) and
/// the broker refuses its next subscriptions for a while. It tries again
/// one attempt at a time, with backoff, and ends with one consumer: each
/// failed attempt used to leave a retry behind while the lease's check
/// (every 10 ms) started another, and once the broker took them again
/// every retry subscribed (25,000 attempts in 15 s against a RabbitMQ
/// cluster whose queues' node had died, and a master with many
/// consumers). Writes are acknowledged again, each applied once.
pub async fn a_master_refused_its_subscription_for_a_while_ends_with_one_consumer(
    b: Arc<dyn Broker>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    const REFUSED: usize = 5;
    let dir = tempfile::tempdir().unwrap();
    let (fb, b) = faulty(b);
    let c = cluster(&dir, 1, b).await;
    c.orchestrator.write(user("before")).await.unwrap();
    let (attempts, granted) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (a, g) = (attempts.clone(), granted.clone());
    fb.on_consume(move |queue| {
        if queue != WRITE_Q {
            return true;
        }
        let refused = a.fetch_add(1, Ordering::SeqCst) < REFUSED;
        if !refused {
            g.fetch_add(1, Ordering::SeqCst);
        }
        !refused
    });
    fb.end_consumers();
    c.orchestrator.write(user("after")).await.unwrap();
    assert!(attempts.load(Ordering::SeqCst) > REFUSED);
    // A retry left behind would subscribe within the longest backoff (2 s):
    // watch for one a while longer, writing meanwhile.
    let watch = Duration::from_millis(2_500);
    let since = tokio::time::Instant::now();
    let mut n: u64 = 0;
    while since.elapsed() < watch {
        c.orchestrator.write(user(&format!("w{n}"))).await.unwrap();
        n += 1;
        assert_eq!(
            granted.load(Ordering::SeqCst),
            1,
            "the master subscribed more than once ({} attempts)",
            attempts.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    fb.clear();
    all_applied(&c, 2 + n, DEADLINE).await;
    assert_eq!(read(&c, count_users()).await, ReadResult::Count(2 + n));
    c.stop().await;
}

/// A delete over an index range whose start is past its end
/// (`timestamp > 10` and `timestamp < 5` for one pair of areas), batched
/// after an insert: it deletes nothing, the write is answered, the master
/// goes on, and a strong select over the same range on a slave answers
/// no rows. (Such a range panicked in the store as soon as the master's
/// group held a write before it.)
pub async fn a_delete_over_an_empty_index_range_after_a_write_is_answered(b: Arc<dyn Broker>) {
    use dbaas::model::{CmpOp, Cond, Consistency, ReadOp};
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(&dir, 1, b).await;
    let cond = |column: &str, op, v: i64| Cond {
        column: column.into(),
        op,
        value: Value::Int(v),
    };
    let inverted = vec![
        cond("source", CmpOp::Eq, 1),
        cond("destination", CmpOp::Eq, 2),
        cond("timestamp", CmpOp::Gt, 10),
        cond("timestamp", CmpOp::Lt, 5),
    ];
    let delete = WriteOp::Delete {
        table: "rides".into(),
        key: None,
        filter: Some(inverted.clone()),
    };
    c.orchestrator
        .write(WriteOp::Batch {
            ops: vec![user("before"), delete],
        })
        .await
        .unwrap();
    c.orchestrator.write(user("after")).await.unwrap();
    let count = c
        .orchestrator
        .read(count_users(), Consistency::Strong)
        .await
        .unwrap();
    assert_eq!(count.result, ReadResult::Count(2));
    let select = ReadOp::Select {
        table: "rides".into(),
        filter: inverted,
        columns: None,
        order_by: None,
        limit: None,
    };
    let rides = c
        .orchestrator
        .read(select, Consistency::Strong)
        .await
        .unwrap();
    assert_eq!(rides.result, ReadResult::Rows(Vec::new()));
    c.stop().await;
}
