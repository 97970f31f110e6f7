//! The actor-level suite: the orchestrator, master and slaves as they run
//! in `dbaas up`, without HTTP, over whichever broker a test file passes.

use std::sync::Arc;
use std::time::Duration;

use dbaas::broker::faults::FaultyBroker;
use dbaas::broker::{Broker, Message, QueueKind, READ_Q, SYNC_X, WRITE_Q};
use dbaas::model::wire::{
    self, Entry, MasterRequest, ReadRequest, Reply, Stamp, SyncBatch, SyncMessage, WriteRequest,
};
use dbaas::model::{Consistency, Lineage, ReadOp, ReadResult, Row, Value, WriteOp};
use dbaas::runtime::{Role, WorkerSpec};
use dbaas::system::Cluster;
use futures::StreamExt;

use super::{eventually, store, stores};

/// Calls `$each!` with every script of this suite, so that each broker's
/// test file runs the same list. (Unused where the suite module is
/// included only for its helpers.)
#[allow(unused_macros)]
macro_rules! every_script {
    ($each:ident) => {
        $each!(
            a_write_is_seen_by_the_next_read,
            reads_spread_round_robin_over_two_slaves,
            a_late_slave_catches_up_by_snapshot_and_sync_without_a_gap,
            a_duplicate_sync_message_is_ignored,
            a_read_for_a_sequence_number_not_yet_applied_waits_then_answers,
            a_redelivered_write_is_applied_once,
            a_write_retried_within_one_group_is_synced_once,
            garbage_on_the_queues_is_dropped_and_work_goes_on,
            restart_on_the_same_data_keeps_everything,
            messages_of_an_earlier_cluster_on_the_same_broker_are_ignored,
            a_refused_write_is_never_applied_later,
            an_orphaned_snapshot_request_is_answered_once,
            a_failed_sync_publish_lets_no_later_write_be_acknowledged_first,
            a_lost_sync_is_repaired_by_a_snapshot,
            a_deposed_masters_syncs_are_not_applied,
            a_reply_that_matches_no_request_changes_nothing,
        );
    };
}
#[allow(unused_imports)]
pub(crate) use every_script;

const DEADLINE: Duration = Duration::from_secs(20);

/// What the cluster's own workers stamp their messages with.
fn stamp(c: &Cluster) -> Stamp {
    Stamp {
        cluster: c.cluster,
        epoch: c.epoch,
    }
}

/// Worker `id` of the cluster, as the runtime starts it.
fn spec(c: &Cluster, id: u64, role: Role) -> WorkerSpec {
    WorkerSpec {
        id,
        role,
        epoch: c.epoch,
        cluster: c.cluster,
    }
}

/// A write request as the orchestrator sends it.
fn write_request(c: &Cluster, request_id: u128, op: WriteOp) -> Vec<u8> {
    let req = MasterRequest::Write(WriteRequest {
        request_id,
        epoch: c.epoch,
        op,
    });
    wire::encode(stamp(c), &req)
}

async fn cluster(dir: &tempfile::TempDir, slaves: usize, b: Arc<dyn Broker>) -> Cluster {
    Cluster::start(dir.path(), slaves, b)
        .await
        .expect("cluster starts")
}

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

fn get_user(name: &str) -> ReadOp {
    ReadOp::Get {
        table: "users".into(),
        key: Value::from(name),
        columns: None,
    }
}

fn count_users() -> ReadOp {
    ReadOp::Count {
        table: "users".into(),
        filter: vec![],
    }
}

async fn read(c: &Cluster, op: ReadOp) -> ReadResult {
    c.orchestrator
        .read(op, Consistency::Strong)
        .await
        .expect("read succeeds")
        .result
}

pub async fn a_write_is_seen_by_the_next_read(b: Arc<dyn Broker>) {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(&dir, 1, b.clone()).await;
    for i in 0..20 {
        let name = format!("u{i}");
        let w = c.orchestrator.write(user(&name)).await.unwrap();
        assert_eq!(w.seq, i + 1);
        let rows = read(&c, get_user(&name)).await.into_rows();
        assert_eq!(rows.len(), 1, "read after write of {name}");
    }
    c.stop().await;
}

pub async fn reads_spread_round_robin_over_two_slaves(b: Arc<dyn Broker>) {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(&dir, 2, b.clone()).await;
    c.orchestrator.write(user("a")).await.unwrap();
    for _ in 0..100 {
        read(&c, get_user("a")).await;
    }
    let mut served = Vec::new();
    for w in c.runtime.list() {
        if w.role == Role::Slave {
            served.push(c.runtime.status(w.id).await.unwrap().reads_served);
        }
    }
    assert_eq!(served.iter().sum::<u64>(), 100);
    assert!(served.iter().all(|&n| n >= 45), "uneven: {served:?}");
    c.stop().await;
}

pub async fn a_late_slave_catches_up_by_snapshot_and_sync_without_a_gap(b: Arc<dyn Broker>) {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(&dir, 1, b.clone()).await;
    // Enough rows that the snapshot travels in several parts.
    for chunk in 0..6 {
        let ops = (0..1000)
            .map(|i| user(&format!("bulk{chunk}-{i}")))
            .collect();
        c.orchestrator.write(WriteOp::Batch { ops }).await.unwrap();
    }
    for i in 0..294 {
        c.orchestrator
            .write(user(&format!("before{i}")))
            .await
            .unwrap();
    }
    // Writes keep coming while the new slave starts.
    let orch = c.orchestrator.clone();
    let writer = actix::spawn(async move {
        for i in 0..300 {
            orch.write(user(&format!("during{i}"))).await.unwrap();
        }
    });
    c.runtime.start(spec(&c, 9, Role::Slave)).await.unwrap();
    writer.await.unwrap();
    let rt = c.runtime.clone();
    eventually(
        "every worker, the late slave too, to apply all 600 writes",
        DEADLINE,
        || {
            let rt = rt.clone();
            async move {
                for id in [1, 2, 9] {
                    if !rt
                        .status(id)
                        .await
                        .is_ok_and(|s| s.ready && s.applied_seq == 600)
                    {
                        return false;
                    }
                }
                true
            }
        },
    )
    .await;
    c.stop().await;
    let all = stores(dir.path(), &[1, 2, 9]);
    assert!(all.iter().all(|s| *s == all[0]), "stores differ: {all:?}");
    assert_eq!(all[0].0, 600);
    let snapshot = store(dir.path(), 9).snapshot().unwrap();
    assert!(
        snapshot.into_parts().len() > 1,
        "the snapshot fits one part"
    );
}

pub async fn a_duplicate_sync_message_is_ignored(b: Arc<dyn Broker>) {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(&dir, 1, b.clone()).await;
    c.orchestrator.write(user("real")).await.unwrap();
    // A second message with seq 1, as a redelivery after a master crash
    // could bring (here with other content, to see it is not applied).
    let dup = sync_of(&c, 1, "ghost");
    c.broker.publish_fanout(SYNC_X, dup).await.unwrap();
    c.orchestrator.write(user("next")).await.unwrap();
    assert_eq!(read(&c, count_users()).await, ReadResult::Count(2));
    assert!(read(&c, get_user("ghost")).await.into_rows().is_empty());
    c.stop().await;
    let all = stores(dir.path(), &[1, 2]);
    assert_eq!(all[0], all[1]);
}

/// A sync message of `c`'s master for one insert of `name` at `seq`.
fn sync_of(c: &Cluster, seq: u64, name: &str) -> Message {
    let mut lineage = Lineage::default();
    lineage.begin(c.epoch, 0);
    let batch = SyncBatch {
        lineage,
        writes: vec![SyncMessage {
            seq,
            epoch: c.epoch,
            request_id: 77,
            entry: Entry::Write(user(name)),
        }],
    };
    Message::new(wire::encode(stamp(c), &batch))
}

pub async fn a_read_for_a_sequence_number_not_yet_applied_waits_then_answers(b: Arc<dyn Broker>) {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(&dir, 1, b.clone()).await;
    let replies = "test.replies";
    c.broker
        .declare_queue(replies, QueueKind::Transient)
        .await
        .unwrap();
    let mut answers = c.broker.consume(replies, 10).await.unwrap();
    let ask = ReadRequest {
        min_seq: 1,
        op: get_user("later"),
    };
    c.broker
        .publish(
            READ_Q,
            Message {
                body: wire::encode(stamp(&c), &ask),
                correlation_id: Some(1),
                reply_to: Some(replies.into()),
            },
        )
        .await
        .unwrap();
    // Seq 1 is this write: the read above can only see it by waiting.
    c.orchestrator.write(user("later")).await.unwrap();
    let d = tokio::time::timeout(DEADLINE, answers.next())
        .await
        .unwrap()
        .unwrap();
    let (_, Reply::Read(Ok(reply))) = wire::decode(&d.message.body).unwrap() else {
        panic!("not a read answer");
    };
    assert!(reply.seq >= 1);
    assert_eq!(reply.result.into_rows().len(), 1);
    d.ack().await.unwrap();
    drop(answers);
    c.stop().await;
}

pub async fn a_write_retried_within_one_group_is_synced_once(b: Arc<dyn Broker>) {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(&dir, 1, b.clone()).await;
    c.orchestrator.write(user("first")).await.unwrap();
    // With the master away, a write, another, and the first again (a
    // retry) queue up; the master takes them as one group when it is back.
    c.runtime.stop(1).await.unwrap();
    for (request_id, name) in [(500, "a"), (501, "b"), (500, "a")] {
        let req = write_request(&c, request_id, user(name));
        c.broker.publish(WRITE_Q, Message::new(req)).await.unwrap();
    }
    c.runtime.start(spec(&c, 1, Role::Master)).await.unwrap();
    // A strong read after the next write needs the slave past all of them.
    c.orchestrator.write(user("last")).await.unwrap();
    assert_eq!(read(&c, count_users()).await, ReadResult::Count(4));
    c.stop().await;
    let all = stores(dir.path(), &[1, 2]);
    assert_eq!(all[0], all[1]);
    assert_eq!(all[0].0, 4);
}

pub async fn a_redelivered_write_is_applied_once(b: Arc<dyn Broker>) {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(&dir, 1, b.clone()).await;
    let replies = "test.write-replies";
    c.broker
        .declare_queue(replies, QueueKind::Transient)
        .await
        .unwrap();
    let mut answers = c.broker.consume(replies, 10).await.unwrap();
    let req = write_request(
        &c,
        4242,
        WriteOp::InsertAuto {
            table: "rides".into(),
            row: [
                ("created_by".to_owned(), Value::from("a")),
                ("timestamp".to_owned(), Value::Int(1)),
                ("source".to_owned(), Value::Int(1)),
                ("destination".to_owned(), Value::Int(2)),
                ("users".to_owned(), Value::List(vec![])),
            ]
            .into(),
        },
    );
    let mut seqs = Vec::new();
    for _ in 0..2 {
        let msg = Message {
            body: req.clone(),
            correlation_id: Some(1),
            reply_to: Some(replies.into()),
        };
        c.broker.publish(WRITE_Q, msg).await.unwrap();
        let d = tokio::time::timeout(DEADLINE, answers.next())
            .await
            .unwrap()
            .unwrap();
        let (_, Reply::Write(Ok(w))) = wire::decode(&d.message.body).unwrap() else {
            panic!("not a write answer");
        };
        seqs.push(w.seq);
        d.ack().await.unwrap();
    }
    assert_eq!(seqs[0], seqs[1]);
    // The replies came to this test, not to the orchestrator, so its reads
    // cannot ask for that seq: wait until the slave has it.
    let (rt, seq) = (c.runtime.clone(), seqs[0]);
    eventually("the slave to apply the write", DEADLINE, || {
        let rt = rt.clone();
        async move { rt.status(2).await.is_ok_and(|s| s.applied_seq >= seq) }
    })
    .await;
    let rides = ReadOp::Count {
        table: "rides".into(),
        filter: vec![],
    };
    assert_eq!(read(&c, rides).await, ReadResult::Count(1));
    drop(answers);
    c.stop().await;
}

pub async fn garbage_on_the_queues_is_dropped_and_work_goes_on(b: Arc<dyn Broker>) {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(&dir, 1, b.clone()).await;
    for body in [
        vec![],
        vec![0xff; 10],
        vec![wire::VERSION, 1, 2, 3],
        vec![9, 0],
    ] {
        for q in [READ_Q, WRITE_Q] {
            c.broker
                .publish(q, Message::new(body.clone()))
                .await
                .unwrap();
        }
        c.broker
            .publish_fanout(SYNC_X, Message::new(body.clone()))
            .await
            .unwrap();
    }
    c.orchestrator.write(user("after")).await.unwrap();
    assert_eq!(read(&c, get_user("after")).await.into_rows().len(), 1);
    c.stop().await;
}

pub async fn restart_on_the_same_data_keeps_everything(b: Arc<dyn Broker>) {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(&dir, 1, b.clone()).await;
    for i in 0..50 {
        c.orchestrator.write(user(&format!("k{i}"))).await.unwrap();
    }
    c.stop().await;
    drop(c);
    let c = cluster(&dir, 1, b.clone()).await;
    assert_eq!(read(&c, count_users()).await, ReadResult::Count(50));
    let w = c.orchestrator.write(user("after-restart")).await.unwrap();
    assert_eq!(w.seq, 51);
    c.stop().await;
}

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

/// Every worker of the cluster has applied at least `seq`.
async fn all_applied(c: &Cluster, seq: u64) {
    let rt = c.runtime.clone();
    eventually("every worker to apply it", DEADLINE, || {
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

pub async fn messages_of_an_earlier_cluster_on_the_same_broker_are_ignored(b: Arc<dyn Broker>) {
    let old_dir = tempfile::tempdir().unwrap();
    let old = cluster(&old_dir, 1, b.clone()).await;
    for i in 0..20 {
        old.orchestrator
            .write(user(&format!("old{i}")))
            .await
            .unwrap();
    }
    // The slave dies; the syncs of seqs 21..50 stay in its queue.
    old.runtime.kill(2).await.unwrap();
    for i in 20..50 {
        old.orchestrator
            .write(user(&format!("old{i}")))
            .await
            .unwrap();
    }
    // The master dies too; writes nobody answers stay in writeQ, and a
    // reply nobody took stays in responseQ.
    old.runtime.kill(1).await.unwrap();
    for i in 0..5 {
        let req = write_request(&old, 9000 + i, user(&format!("unanswered{i}")));
        let msg = Message {
            body: req,
            correlation_id: Some(fastrand::u64(..)),
            reply_to: Some(dbaas::broker::RESPONSE_Q.into()),
        };
        b.publish(WRITE_Q, msg).await.unwrap();
    }
    let stale = Reply::Write(Ok(dbaas::model::WriteReply {
        seq: 1_000,
        result: dbaas::model::WriteResult::Cleared,
    }));
    let stale = Message::reply(wire::encode(stamp(&old), &stale), Some(fastrand::u64(..)));
    b.publish(dbaas::broker::RESPONSE_Q, stale).await.unwrap();
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
    assert_eq!(c.epoch, 1);
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
    c.stop().await;
    let all = stores(dir.path(), &[1, 2]);
    assert_eq!(all[0], all[1], "both workers hold the same rows");
    assert_eq!(all[0].0, 60);
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
        body: write_request(&c, 777, user("x")),
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
    c.runtime.kill(1).await.unwrap();
    fb.clear();
    c.runtime.start(spec(&c, 1, Role::Master)).await.unwrap();
    // The request comes back: it gets its first answer again.
    let again = next_write_answer(&mut answers).await;
    assert_eq!(again, first, "the redelivered request got its first answer");
    assert!(read(&c, get_user("x")).await.into_rows().is_empty());
    drop(answers);
    c.stop().await;
    let all = stores(dir.path(), &[1, 2]);
    assert_eq!(all[0], all[1]);
    // The refusal replicated: any replica would answer it the same.
    let answer = store(dir.path(), 2).answer(777).expect("recorded");
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
        body: wire::encode(stamp(&c), &ask),
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
            if let Ok((_, batch)) = wire::decode_sync(&msg.body) {
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
    all_applied(&c, seq).await;
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
    assert_eq!(c.epoch, 2);
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
        Message::new(wire::encode(stamp, &batch))
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
    for r in &replies {
        let msg = Message::reply(wire::encode(stamp(&c), r), Some(fastrand::u64(..)));
        c.broker
            .publish(dbaas::broker::RESPONSE_Q, msg)
            .await
            .unwrap();
    }
    // This write's reply comes after them on responseQ.
    let w = c.orchestrator.write(user("b")).await.unwrap();
    let stats = c.orchestrator.stats().await.unwrap();
    assert_eq!((stats.last_acked_seq, stats.epoch), (w.seq, c.epoch));
    assert_eq!(read(&c, count_users()).await, ReadResult::Count(2));
    c.stop().await;
}
