//! Attacks on batching: requests packed many to a message, answered many
//! to a reply, synced many to a message, over whichever broker a test
//! file passes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use dbaas::broker::faults::{Fault, FaultyBroker};
use dbaas::broker::{Broker, Message, READ_Q, SYNC_X, WRITE_Q};
use dbaas::model::wire::{
    self, BatchedRead, BatchedWrite, MasterRequest, ReadBatch, ReadRequest, Reply, Stamp, SyncItem,
    SyncMessage, WriteRequest,
};
use dbaas::model::{Consistency, ReadOp, ReadResult, Row, Value, WriteOp};
use futures::StreamExt;

use super::actors::{
    cluster, count_users, embedded, get_user, master_session, read, reply_queue, stamp,
    taking_writes, user, DEADLINE,
};
use super::{all_applied, eventually, master_id, roles, stores};

/// The largest message the broker takes here: RabbitMQ refuses a message
/// over its `max_message_size` (16 MiB by default since 4.0); twice the
/// size the project splits snapshots to so that they fit it.
const MESSAGE_LIMIT: usize = 2 * dbaas::model::wire::SNAPSHOT_PART_BYTES;
/// A write's row size: within the default HTTP body limit (64 KiB).
const ROW: usize = 60 << 10;
/// Clients at once: their rows together are over the limit.
const CLIENTS: usize = 200;
/// Rows a read answers: about 3 MiB.
const PAGE: u64 = 50;
/// Readers at once.
const READERS: usize = 16;

/// A new user `name` whose row is about [`ROW`] bytes.
fn large_user(name: &str) -> WriteOp {
    let row: Row = [
        ("username".to_owned(), Value::from(name)),
        ("password".to_owned(), Value::from("x".repeat(ROW))),
    ]
    .into();
    WriteOp::Insert {
        table: "users".into(),
        row,
    }
}

/// A broker around `b` that refuses what is over [`MESSAGE_LIMIT`].
fn limited(b: Arc<dyn Broker>) -> Arc<dyn Broker> {
    limited_counting(b).0
}

/// [`limited`], and how many messages to `writeQ` it refused.
fn limited_counting(b: Arc<dyn Broker>) -> (Arc<dyn Broker>, Arc<AtomicUsize>) {
    let refused = Arc::new(AtomicUsize::new(0));
    let fb = FaultyBroker::new(b);
    let count = refused.clone();
    fb.on_publish(move |queue, msg| {
        if msg.body.len() > MESSAGE_LIMIT {
            if queue == WRITE_Q {
                count.fetch_add(1, Ordering::SeqCst);
            }
            Fault::Fail
        } else {
            Pass
        }
    });
    (Arc::new(fb), refused)
}

use Fault::Pass;

/// Many clients write large rows at once, each well within the broker's
/// message limit: the orchestrator's batches of writes, the master's
/// syncs and the slaves' replies to batches of reads must each stay
/// within it too, or the batch is refused whole, and again each time its
/// requests are retried together.
pub async fn a_burst_of_large_writes_and_reads_stays_within_the_message_limit(b: Arc<dyn Broker>) {
    let dir = tempfile::tempdir().unwrap();
    let (b, refused) = limited_counting(b);
    let c = cluster(&dir, 1, b).await;
    let names: Vec<String> = (0..CLIENTS).map(|i| format!("large{i}")).collect();
    let writes = names.iter().map(|n| {
        let o = c.orchestrator.clone();
        let n = n.clone();
        async move { (n.clone(), o.write(large_user(&n)).await) }
    });
    for (name, answer) in futures::future::join_all(writes).await {
        if let Err(e) = answer {
            panic!("the write of {name} failed: {e}");
        }
    }
    // Not through retries: no batch of writes was ever over the limit.
    assert_eq!(
        refused.load(Ordering::SeqCst),
        0,
        "batches of writes refused for their size"
    );
    assert_eq!(
        read(&c, count_users()).await,
        ReadResult::Count(CLIENTS as u64)
    );
    // Reads each well within the limit too (a page of rows), together
    // far over it.
    let page = ReadOp::Select {
        table: "users".into(),
        filter: vec![],
        columns: None,
        order_by: None,
        limit: Some(PAGE),
    };
    let reads = (0..READERS).map(|i| {
        let (o, page) = (c.orchestrator.clone(), page.clone());
        async move { (i, o.read(page, Consistency::Strong).await) }
    });
    for (i, got) in futures::future::join_all(reads).await {
        let rows = match got {
            Ok(r) => r.result.into_rows(),
            Err(e) => panic!("read {i} failed: {e}"),
        };
        assert_eq!(rows.len() as u64, PAGE, "read {i}");
    }
    let seq = c.orchestrator.stats().await.unwrap().last_acked_seq;
    all_applied(&c, seq, DEADLINE).await;
    c.stop().await;
    let all = stores(dir.path(), &[1, 2]);
    assert_eq!(all[0], all[1]);
}

/// Batches of large writes wait on `writeQ` while the master cannot take
/// them (its lease ran out), each well within the broker's message limit,
/// together over it; back, the master takes them as one group. Its syncs
/// must fit the limit too: a sync refused is published again, refused
/// again, and no write of the group (nor any after it) is ever answered.
pub async fn a_group_of_large_write_batches_is_synced_within_the_message_limit(b: Arc<dyn Broker>) {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(&dir, 1, limited(b)).await;
    c.orchestrator.write(large_user("first")).await.unwrap();
    let session = master_session(&c).await;
    let server = embedded(&c);
    server.disconnect(session);
    let m = master_id(&c).await;
    eventually("the master to stop taking writes", DEADLINE, || async {
        !taking_writes(&c, m).await
    })
    .await;
    let replies = "test.large.writes";
    let mut answers = reply_queue(&c, replies).await;
    let stamp = stamp(&c).await;
    const BATCHES: u64 = 4;
    const EACH: u64 = 40;
    for batch in 0..BATCHES {
        let writes = (0..EACH)
            .map(|i| {
                let n = batch * EACH + i;
                BatchedWrite {
                    id: n,
                    write: WriteRequest {
                        request_id: u128::from(7000 + n),
                        epoch: stamp.epoch,
                        op: large_user(&format!("grouped{n}")),
                        sent_ms: dbaas::store::wall_clock_ms(),
                    },
                }
            })
            .collect();
        let body = wire::encode(stamp, &MasterRequest::Writes(writes));
        assert!(body.len() < MESSAGE_LIMIT, "each batch fits");
        let msg = Message {
            body,
            correlation_id: Some(batch),
            reply_to: Some(replies.into()),
        };
        c.broker.publish(WRITE_Q, msg).await.unwrap();
    }
    server.reconnect(session);
    let mut answered = std::collections::BTreeSet::new();
    while (answered.len() as u64) < BATCHES * EACH {
        let Ok(Some(d)) = tokio::time::timeout(DEADLINE, answers.next()).await else {
            panic!(
                "{} of {} writes answered in time",
                answered.len(),
                BATCHES * EACH
            );
        };
        let (_, reply): (Stamp, Reply) = wire::decode(&d.message.body).unwrap();
        d.ack().await.unwrap();
        let Reply::Writes(got) = reply else {
            panic!("not answers to writes: {reply:?}");
        };
        for (id, r) in got {
            assert!(r.is_ok(), "write {id}: {r:?}");
            answered.insert(id);
        }
    }
    c.orchestrator.write(large_user("last")).await.unwrap();
    let all = BATCHES * EACH + 2;
    assert_eq!(read(&c, count_users()).await, ReadResult::Count(all));
    drop(answers);
    let seq = c.orchestrator.stats().await.unwrap().last_acked_seq;
    all_applied(&c, seq, DEADLINE).await;
    c.stop().await;
    let stores = stores(dir.path(), &[1, 2]);
    assert_eq!(stores[0], stores[1]);
}

/// A batch of reads half served when its slave loses its role: the one
/// slave answers the eventual read at once and holds the strong one,
/// waiting for a seq nobody has written yet; the master is killed and
/// that slave is elected (it drains, giving the batch back whole). The
/// batch goes to the replacement: the eventual read is answered again
/// (the orchestrator takes the first), and the strong one only once its
/// seq is applied, never with less; every answer names a read of the
/// batch.
pub async fn a_batch_half_served_by_a_slave_that_is_elected_is_answered_whole(b: Arc<dyn Broker>) {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(&dir, 1, b).await;
    let first = c.orchestrator.write(user("before")).await.unwrap();
    assert_eq!(read(&c, get_user("before")).await.into_rows().len(), 1);
    let replies = "test.half.served";
    let mut answers = reply_queue(&c, replies).await;
    let need = first.seq + 1;
    let batch = ReadBatch {
        reads: vec![
            BatchedRead {
                id: 10,
                read: ReadRequest {
                    min_seq: need,
                    op: get_user("after"),
                },
            },
            BatchedRead {
                id: 11,
                read: ReadRequest {
                    min_seq: 0,
                    op: get_user("before"),
                },
            },
        ],
    };
    let msg = Message {
        body: wire::encode(stamp(&c).await, &batch),
        correlation_id: Some(1),
        reply_to: Some(replies.into()),
    };
    c.broker.publish(READ_Q, msg).await.unwrap();
    // The eventual read is answered at once, alone.
    let got = next_reads(&mut answers).await;
    assert_eq!(got.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [11]);
    let (old, epoch) = (master_id(&c).await, c.epoch().await);
    c.runtime.kill(old).await.unwrap();
    eventually("a new master", DEADLINE, || async {
        c.epoch().await > epoch && roles(&c).await.0.is_some()
    })
    .await;
    let after = c.orchestrator.write(user("after")).await.unwrap();
    assert!(after.seq >= need, "{after:?}");
    // Until the strong read is answered: whatever else comes is an
    // answer to the eventual one again.
    loop {
        let got = next_reads(&mut answers).await;
        let mut strong = None;
        for (id, r) in got {
            match id {
                10 => strong = Some(r),
                11 => {
                    let r = r.expect("the eventual read answered");
                    assert_eq!(r.result.into_rows().len(), 1);
                }
                other => panic!("an answer to no read of the batch: {other}"),
            }
        }
        if let Some(r) = strong {
            let r = match r {
                Ok(r) => r,
                Err(e) => panic!("the strong read failed: {e}"),
            };
            assert!(r.seq >= need, "served at {} below {need}", r.seq);
            assert_eq!(r.result.into_rows().len(), 1, "the write it waited for");
            break;
        }
    }
    drop(answers);
    c.stop().await;
}

/// The next reply on `answers`, acknowledged.
async fn next_reply(answers: &mut dbaas::broker::Consumer) -> Reply {
    let Ok(Some(d)) = tokio::time::timeout(DEADLINE, answers.next()).await else {
        panic!("no answer in time");
    };
    let (_, reply): (Stamp, Reply) = wire::decode(&d.message.body).unwrap();
    d.ack().await.unwrap();
    reply
}

/// The answers of the next reply to reads on `answers`.
async fn next_reads(
    answers: &mut dbaas::broker::Consumer,
) -> Vec<(u64, dbaas::error::Result<dbaas::model::ReadReply>)> {
    match next_reply(answers).await {
        Reply::Reads(got) => got,
        reply => panic!("not answers to reads: {reply:?}"),
    }
}

/// A batch of writes applied, synced and answered by a master that dies
/// before its acknowledgement reaches the broker (a refusal in the middle
/// of it): redelivered to the master elected next, each write is answered
/// again from the record, with its seq, and the refused one stays
/// refused, though the row that made it fail was deleted meanwhile: not
/// applied later, and not poisoning the others.
pub async fn a_batch_of_writes_redelivered_after_a_failover_is_answered_from_the_record(
    b: Arc<dyn Broker>,
) {
    let dir = tempfile::tempdir().unwrap();
    let fb = FaultyBroker::new(b);
    let c = cluster(&dir, 2, Arc::new(fb.clone())).await;
    c.orchestrator.write(user("taken")).await.unwrap();
    let replies = "test.batch.failover";
    let mut answers = reply_queue(&c, replies).await;
    // The master's acknowledgement of the test's batch never reaches
    // the broker, as if it died first.
    fb.on_settle(move |queue, msg, _| {
        queue != WRITE_Q || msg.reply_to.as_deref() != Some("test.batch.failover")
    });
    let stamp = stamp(&c).await;
    let write = |id: u64, request_id: u128, name: &str| batched(stamp, id, request_id, name);
    let batch = MasterRequest::Writes(vec![
        write(30, 950, "b"),
        write(31, 951, "taken"),
        write(32, 952, "c"),
    ]);
    let msg = Message {
        body: wire::encode(stamp, &batch),
        correlation_id: Some(3),
        reply_to: Some(replies.into()),
    };
    c.broker.publish(WRITE_Q, msg).await.unwrap();
    let first = next_writes(&mut answers).await;
    assert_eq!(
        first.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        [30, 31, 32]
    );
    assert!(
        first[0].1.is_ok() && first[1].1.is_err() && first[2].1.is_ok(),
        "{first:?}"
    );
    // The row the refusal was about goes: the write would now apply.
    let delete = WriteOp::Delete {
        table: "users".into(),
        key: Some(Value::from("taken")),
        filter: None,
    };
    c.orchestrator.write(delete).await.unwrap();
    let (old, epoch) = (master_id(&c).await, c.epoch().await);
    c.runtime.kill(old).await.unwrap();
    eventually("a new master", DEADLINE, || async {
        c.epoch().await > epoch && roles(&c).await.0.is_some()
    })
    .await;
    let again = next_writes(&mut answers).await;
    assert_eq!(again, first, "the same answers from the new master");
    fb.clear();
    c.orchestrator.write(user("last")).await.unwrap();
    assert_eq!(read(&c, count_users()).await, ReadResult::Count(3));
    assert!(read(&c, get_user("taken")).await.into_rows().is_empty());
    let seq = c.orchestrator.stats().await.unwrap().last_acked_seq;
    all_applied(&c, seq, DEADLINE).await;
    drop(answers);
    let ids = super::running(&c);
    c.stop().await;
    let all = stores(dir.path(), &ids);
    assert!(all.windows(2).all(|w| w[0] == w[1]), "{all:?}");
}

/// The answers of the next reply to writes on `answers`.
async fn next_writes(
    answers: &mut dbaas::broker::Consumer,
) -> Vec<(u64, dbaas::error::Result<dbaas::model::WriteReply>)> {
    match next_reply(answers).await {
        Reply::Writes(got) => got,
        reply => panic!("not answers to writes: {reply:?}"),
    }
}

/// A write of batch `id` under `stamp`'s epoch: the insert of user
/// `name`, as request `request_id`.
pub(crate) fn batched(stamp: Stamp, id: u64, request_id: u128, name: &str) -> BatchedWrite {
    BatchedWrite {
        id,
        write: WriteRequest {
            request_id,
            epoch: stamp.epoch,
            op: user(name),
            sent_ms: dbaas::store::wall_clock_ms(),
        },
    }
}

/// A batch of writes applied and flushed by a master whose syncs of it
/// are never confirmed (refused, again and again: the moment between
/// publish and confirm, held open), a refusal in the middle of it; the
/// master is killed before it answers. The next master applies the
/// batch afresh (it never had those writes) and answers each write once;
/// the dead master's store, started again, holds writes the history does
/// not, and must come to agree with the others, each write once.
pub async fn a_batch_applied_but_never_confirmed_is_applied_once_by_the_next_master(
    b: Arc<dyn Broker>,
) {
    let dir = tempfile::tempdir().unwrap();
    let fb = FaultyBroker::new(b);
    let c = cluster(&dir, 2, Arc::new(fb.clone())).await;
    c.orchestrator.write(user("taken")).await.unwrap();
    let first_master = master_id(&c).await;
    let replies = "test.never.confirmed";
    let mut answers = reply_queue(&c, replies).await;
    // The first master's syncs of the batch only.
    let first_epoch = c.epoch().await;
    let ours = |m: &SyncMessage| (960..=962).contains(&m.request_id);
    fb.on_publish(move |target, msg| {
        let Ok((sent, SyncItem::Writes(batch))) = wire::decode_sync(&msg.body) else {
            return Pass;
        };
        if target == SYNC_X && sent.epoch == first_epoch && batch.writes.iter().any(ours) {
            Fault::Fail
        } else {
            Pass
        }
    });
    let stamp = stamp(&c).await;
    let write = |id: u64, request_id: u128, name: &str| batched(stamp, id, request_id, name);
    let batch = MasterRequest::Writes(vec![
        write(40, 960, "b"),
        write(41, 961, "taken"),
        write(42, 962, "c"),
    ]);
    let msg = Message {
        body: wire::encode(stamp, &batch),
        correlation_id: Some(4),
        reply_to: Some(replies.into()),
    };
    c.broker.publish(WRITE_Q, msg).await.unwrap();
    // Applied and flushed by the master, never synced.
    eventually("the master to apply the batch", DEADLINE, || async {
        c.runtime
            .status(first_master)
            .await
            .is_ok_and(|s| s.applied_seq >= 4)
    })
    .await;
    let epoch = c.epoch().await;
    c.runtime.kill(first_master).await.unwrap();
    eventually("a new master", DEADLINE, || async {
        c.epoch().await > epoch && roles(&c).await.0.is_some()
    })
    .await;
    let got = next_writes(&mut answers).await;
    assert_eq!(
        got.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        [40, 41, 42]
    );
    assert!(
        got[0].1.is_ok() && got[1].1.is_err() && got[2].1.is_ok(),
        "{got:?}"
    );
    fb.clear();
    // The dead master's store comes back as a slave: the watcher starts
    // it again (waited for below).
    c.orchestrator.write(user("last")).await.unwrap();
    assert_eq!(read(&c, count_users()).await, ReadResult::Count(4));
    let seq = c.orchestrator.stats().await.unwrap().last_acked_seq;
    let what = "the old master's store to serve at the head";
    super::serves_from(&c, first_master, seq, what).await;
    all_applied(&c, seq, DEADLINE).await;
    drop(answers);
    let mut ids = super::running(&c);
    if !ids.contains(&first_master) {
        ids.push(first_master);
    }
    c.stop().await;
    let all = stores(dir.path(), &ids);
    assert!(all.windows(2).all(|w| w[0] == w[1]), "{ids:?}: {all:?}");
}

/// A batch of reads, one eventual and one strong, reaches the one slave
/// while it lacks a write the strong read needs (the broker confirmed its
/// sync, then lost it): the eventual read is answered at once; the strong
/// one is never answered with less than it needs (it is answered once
/// the slave has repaired its gap, or "unavailable" after its bounded
/// wait, for the orchestrator to ask again), and nothing waits past the
/// request's deadline.
pub async fn a_strong_read_batched_behind_a_lost_sync_never_sees_less(b: Arc<dyn Broker>) {
    let dir = tempfile::tempdir().unwrap();
    let fb = FaultyBroker::new(b);
    let c = cluster(&dir, 1, Arc::new(fb.clone())).await;
    c.orchestrator.write(user("u0")).await.unwrap();
    assert_eq!(read(&c, get_user("u0")).await.into_rows().len(), 1);
    let mut n = 0;
    fb.on_publish(move |target, _| {
        n += u32::from(target == SYNC_X);
        if target == SYNC_X && n == 1 {
            Fault::Lose
        } else {
            Pass
        }
    });
    let lost = c.orchestrator.write(user("u1")).await.unwrap();
    let replies = "test.lost.sync";
    let mut answers = reply_queue(&c, replies).await;
    let batch = ReadBatch {
        reads: vec![
            BatchedRead {
                id: 50,
                read: ReadRequest {
                    min_seq: lost.seq,
                    op: get_user("u1"),
                },
            },
            BatchedRead {
                id: 51,
                read: ReadRequest {
                    min_seq: 0,
                    op: get_user("u0"),
                },
            },
        ],
    };
    let msg = Message {
        body: wire::encode(stamp(&c).await, &batch),
        correlation_id: Some(5),
        reply_to: Some(replies.into()),
    };
    c.broker.publish(READ_Q, msg).await.unwrap();
    let got = next_reads(&mut answers).await;
    assert_eq!(got.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [51]);
    let got = next_reads(&mut answers).await;
    let [(50, strong)] = &got[..] else {
        panic!("not the strong read's answer: {got:?}");
    };
    match strong {
        Ok(r) => {
            assert!(r.seq >= lost.seq, "served at {} below {}", r.seq, lost.seq);
            assert_eq!(r.result.clone().into_rows().len(), 1);
        }
        Err(e) => assert!(e.is_retryable(), "{e}"),
    }
    // Through the orchestrator, within the request's deadline.
    assert_eq!(read(&c, get_user("u1")).await.into_rows().len(), 1);
    drop(answers);
    c.stop().await;
    let all = stores(dir.path(), &[1, 2]);
    assert_eq!(all[0], all[1]);
}
