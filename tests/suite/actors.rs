//! The actor-level suite: the orchestrator, master and slaves as they run
//! in `dbaas up`, without HTTP, over whichever broker a test file passes.

use std::sync::Arc;
use std::time::Duration;

use dbaas::broker::{Broker, Consumer, Message, QueueKind, READ_Q, SYNC_X, WRITE_Q};
use dbaas::model::wire::{
    self, BatchedRead, Entry, MasterRequest, ReadBatch, ReadRequest, Reply, Stamp, SyncBatch,
    SyncItem, SyncMessage, WriteRequest,
};
use dbaas::model::{Consistency, Lineage, ReadOp, ReadResult, Value, WriteOp};
use dbaas::runtime::WorkerSpec;
use dbaas::system::Cluster;

use super::batches::batched;
use futures::StreamExt;

#[allow(unused_imports)]
pub use super::attack_early::*;
#[allow(unused_imports)]
pub use super::batches::*;
#[allow(unused_imports)]
pub use super::catchup::*;
#[allow(unused_imports)]
pub use super::failover::*;
#[allow(unused_imports)]
pub use super::holes::*;
#[allow(unused_imports)]
pub use super::restarts::*;
#[allow(unused_imports)]
pub use super::scaler::*;
pub use super::{count_users, user};
use super::{eventually, master_id, roles, running, store, stores};

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
            a_restarted_slave_catches_up_from_the_log_not_a_snapshot,
            a_snapshot_part_lost_after_its_confirm_is_asked_for_again,
            a_new_slave_elected_before_its_store_is_on_disk_leads_only_once_it_is,
            a_duplicate_sync_message_is_ignored,
            a_read_for_a_sequence_number_not_yet_applied_waits_then_answers,
            a_redelivered_write_is_applied_once,
            a_write_retried_within_one_group_is_synced_once,
            garbage_on_the_queues_is_dropped_and_work_goes_on,
            restart_on_the_same_data_keeps_everything,
            messages_of_an_earlier_cluster_on_the_same_broker_are_ignored,
            a_refused_write_is_never_applied_later,
            a_delete_over_an_empty_index_range_after_a_write_is_answered,
            an_orphaned_snapshot_request_is_answered_once,
            a_failed_sync_publish_lets_no_later_write_be_acknowledged_first,
            a_lost_sync_is_repaired_by_a_snapshot,
            a_deposed_masters_syncs_are_not_applied,
            a_reply_that_matches_no_request_changes_nothing,
            a_master_refused_its_subscription_for_a_while_ends_with_one_consumer,
            a_restarted_orchestrator_serves_strong_reads_past_every_acknowledged_write,
            a_strong_read_sees_what_another_orchestrator_acknowledged,
            a_killed_master_is_replaced_by_election_and_no_acknowledged_write_is_lost,
            crash_master_and_crash_slave_kill_and_workers_are_replaced,
            a_master_whose_session_expired_is_deposed_and_takes_no_write,
            a_master_cut_off_from_the_coordinator_pauses_and_carries_on,
            a_master_whose_lease_lapsed_sends_again_what_went_back_and_never_returned,
            a_sync_queue_left_bound_by_a_cut_delete_does_not_stop_writes,
            a_killed_slave_is_replaced_and_the_replacement_catches_up,
            a_master_that_claimed_its_place_again_is_not_elected_over_while_it_may_lead,
            a_fault_storm_with_master_kills_loses_and_duplicates_nothing,
            the_scaler_sets_the_slaves_from_the_reads_and_no_read_fails,
            the_scaler_decides_at_the_end_of_each_window,
            a_scale_decision_counts_the_replacement_being_started,
            a_master_elected_during_a_scale_down_is_not_stopped,
            a_slave_retired_with_its_queue_delete_cut_short_does_not_stop_writes,
            reads_are_counted_once_through_a_slave_crash,
            a_stop_right_after_a_crash_leaves_no_worker,
            a_request_older_than_the_records_is_refused_not_applied,
            a_batch_of_reads_answers_each_read_when_it_may,
            a_batch_of_writes_with_a_refusal_answers_each_write,
            concurrent_clients_each_get_their_own_answer,
            a_burst_of_large_writes_and_reads_stays_within_the_message_limit,
            a_group_of_large_write_batches_is_synced_within_the_message_limit,
            a_batch_half_served_by_a_slave_that_is_elected_is_answered_whole,
            a_batch_of_writes_redelivered_after_a_failover_is_answered_from_the_record,
            a_batch_applied_but_never_confirmed_is_applied_once_by_the_next_master,
            a_strong_read_batched_behind_a_lost_sync_never_sees_less,
            attack_early_kill_new_slave_mid_write_and_respawn,
            attack_early_new_slave_only_survivor_three_times,
            attack_early_elected_new_slave_killed_before_its_store_is_written,
            attack_early_restore_while_new_slave_installs,
            attack_early_new_slave_right_after_a_restore,
            attack_early_two_new_slaves_at_once,
            attack_early_strong_reads_on_a_held_new_slave_under_load,
            attack_early_graceful_stop_while_held,
            attack_early_graceful_stop_released_during_stop,
            attack_early_odd_reads_served_from_the_image,
            attack_early_stop_is_bounded_while_the_writing_never_ends,
        );
    };
}
#[allow(unused_imports)]
pub(crate) use every_script;

pub(super) const DEADLINE: Duration = Duration::from_secs(20);

/// What the cluster's own workers stamp their messages with.
pub(super) async fn stamp(c: &Cluster) -> Stamp {
    Stamp {
        cluster: c.cluster,
        epoch: c.epoch().await,
    }
}

/// Worker `id` of the cluster, as the runtime starts it.
pub(super) fn spec(c: &Cluster, id: u64) -> WorkerSpec {
    WorkerSpec {
        id,
        cluster: c.cluster,
    }
}

/// A write request as the orchestrator sends it.
pub(super) async fn write_request(c: &Cluster, request_id: u128, op: WriteOp) -> Vec<u8> {
    let stamp = stamp(c).await;
    let req = MasterRequest::Write(WriteRequest {
        request_id,
        epoch: stamp.epoch,
        op,
        sent_ms: dbaas::store::wall_clock_ms(),
    });
    wire::encode(stamp, &req)
}

/// Sends `body` on `writeQ` with replies to the test's own queue, and
/// answers the reply.
pub(super) async fn ask_master(
    c: &Cluster,
    body: Vec<u8>,
    replies: &str,
    answers: &mut Consumer,
) -> Reply {
    let msg = Message {
        body,
        correlation_id: Some(1),
        reply_to: Some(replies.into()),
    };
    c.broker.publish(WRITE_Q, msg).await.unwrap();
    let d = tokio::time::timeout(DEADLINE, answers.next())
        .await
        .unwrap()
        .unwrap();
    let (_, reply): (Stamp, Reply) = wire::decode(&d.message.body).unwrap();
    d.ack().await.unwrap();
    reply
}

/// A queue of the test's own for replies, and its consumer.
pub(super) async fn reply_queue(c: &Cluster, name: &str) -> Consumer {
    c.broker
        .declare_queue(name, QueueKind::Transient)
        .await
        .unwrap();
    c.broker.consume(name, 10).await.unwrap()
}

pub(super) async fn cluster(dir: &tempfile::TempDir, slaves: usize, b: Arc<dyn Broker>) -> Cluster {
    super::logs();
    Cluster::start(dir.path(), slaves, b)
        .await
        .expect("cluster starts")
}

/// One slave over a fault-injecting broker around `b`, with users `u0` to
/// `u4` written and applied everywhere; the broker, to set faults on.
pub(super) async fn faulty_cluster_of_five(
    dir: &tempfile::TempDir,
    b: Arc<dyn Broker>,
) -> (dbaas::broker::faults::FaultyBroker, Cluster) {
    let fb = dbaas::broker::faults::FaultyBroker::new(b);
    let c = cluster(dir, 1, Arc::new(fb.clone())).await;
    for i in 0..5 {
        c.orchestrator.write(user(&format!("u{i}"))).await.unwrap();
    }
    super::all_applied(&c, 5, DEADLINE).await;
    (fb, c)
}

pub(super) fn get_user(name: &str) -> ReadOp {
    ReadOp::Get {
        table: "users".into(),
        key: Value::from(name),
        columns: None,
    }
}

pub(super) async fn read(c: &Cluster, op: ReadOp) -> ReadResult {
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
    for id in roles(&c).await.1 {
        served.push(c.runtime.status(id).await.unwrap().reads_served);
    }
    assert_eq!(served.iter().sum::<u64>(), 100);
    assert!(served.iter().all(|&n| n >= 45), "uneven: {served:?}");
    c.stop().await;
}

/// A cluster (a master, a slave) over 6,000 users written in six
/// writes, stopped and started again: its master's log of recent writes
/// begins empty, so a new slave cannot be caught up from it and takes a
/// snapshot, which travels in several parts.
pub(super) async fn restarted_over_6000_users(
    dir: &tempfile::TempDir,
    b: Arc<dyn Broker>,
) -> Cluster {
    let c = cluster(dir, 1, b.clone()).await;
    for chunk in 0..6 {
        let ops = (0..1000)
            .map(|i| user(&format!("bulk{chunk}-{i}")))
            .collect();
        c.orchestrator.write(WriteOp::Batch { ops }).await.unwrap();
    }
    c.stop().await;
    drop(c);
    cluster(dir, 1, b).await
}

pub async fn a_late_slave_catches_up_by_snapshot_and_sync_without_a_gap(b: Arc<dyn Broker>) {
    let dir = tempfile::tempdir().unwrap();
    let answers = Arc::new(super::catchup::Answers::new(b, 9));
    let c = restarted_over_6000_users(&dir, answers.clone()).await;
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
    c.runtime.start(spec(&c, 9)).await.unwrap();
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
    let kinds = answers.take();
    assert!(kinds.contains(&"snapshot"), "{kinds:?}");
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
    let dup = sync_of(&c, 1, "ghost").await;
    c.broker.publish_fanout(SYNC_X, dup).await.unwrap();
    c.orchestrator.write(user("next")).await.unwrap();
    assert_eq!(read(&c, count_users()).await, ReadResult::Count(2));
    assert!(read(&c, get_user("ghost")).await.into_rows().is_empty());
    c.stop().await;
    let all = stores(dir.path(), &[1, 2]);
    assert_eq!(all[0], all[1]);
}

/// A sync message of `c`'s master for one insert of `name` at `seq`.
async fn sync_of(c: &Cluster, seq: u64, name: &str) -> Message {
    let stamp = stamp(c).await;
    let mut lineage = Lineage::default();
    lineage.begin(stamp.epoch, 0);
    let batch = SyncBatch {
        lineage,
        writes: vec![SyncMessage {
            seq,
            epoch: stamp.epoch,
            request_id: 77,
            entry: Entry::Write(user(name)),
        }],
    };
    Message::new(wire::encode(stamp, &SyncItem::Writes(batch)))
}

pub async fn a_read_for_a_sequence_number_not_yet_applied_waits_then_answers(b: Arc<dyn Broker>) {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(&dir, 1, b.clone()).await;
    let replies = "test.replies";
    let mut answers = reply_queue(&c, replies).await;
    send_reads(&c, replies, vec![(1, 1, get_user("later"))]).await;
    // Seq 1 is this write: the read above can only see it by waiting.
    c.orchestrator.write(user("later")).await.unwrap();
    let got = read_answers(&mut answers).await;
    let [(1, Ok(reply))] = &got[..] else {
        panic!("not the read's answer: {got:?}");
    };
    assert!(reply.seq >= 1);
    assert_eq!(reply.result.clone().into_rows().len(), 1);
    drop(answers);
    c.stop().await;
}

/// Publishes reads (id, min seq, op) as one batch on `readQ`, replies to
/// `replies`.
async fn send_reads(c: &Cluster, replies: &str, reads: Vec<(u64, u64, ReadOp)>) {
    let reads = reads
        .into_iter()
        .map(|(id, min_seq, op)| BatchedRead {
            id,
            read: ReadRequest { min_seq, op },
        })
        .collect();
    let msg = Message {
        body: wire::encode(stamp(c).await, &ReadBatch { reads }),
        correlation_id: Some(1),
        reply_to: Some(replies.into()),
    };
    c.broker.publish(READ_Q, msg).await.unwrap();
}

/// The answers of the next reply to a batch of reads.
async fn read_answers(
    answers: &mut Consumer,
) -> Vec<(u64, dbaas::error::Result<dbaas::model::ReadReply>)> {
    let d = tokio::time::timeout(DEADLINE, answers.next())
        .await
        .unwrap()
        .unwrap();
    let (_, reply): (Stamp, Reply) = wire::decode(&d.message.body).unwrap();
    d.ack().await.unwrap();
    let Reply::Reads(mut got) = reply else {
        panic!("not answers to reads: {reply:?}");
    };
    got.sort_by_key(|(id, _)| *id);
    got
}

/// One batch holds a strong read for a seq not applied yet and eventual
/// reads: the eventual ones are answered at once, each by its id; the
/// strong one once its seq is applied, on its own.
pub async fn a_batch_of_reads_answers_each_read_when_it_may(b: Arc<dyn Broker>) {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(&dir, 1, b.clone()).await;
    let first = c.orchestrator.write(user("here")).await.unwrap();
    // The one slave has applied it (a write is acknowledged once its sync
    // is out, maybe before a slave applies it): a strong read saw it.
    assert_eq!(read(&c, get_user("here")).await.into_rows().len(), 1);
    let replies = "test.batch.replies";
    let mut answers = reply_queue(&c, replies).await;
    let next = first.seq + 1;
    let reads = vec![
        (10, next, get_user("later")),
        (11, 0, get_user("here")),
        (12, first.seq, count_users()),
        (13, 0, get_user("nobody")),
    ];
    send_reads(&c, replies, reads).await;
    let got = read_answers(&mut answers).await;
    let ids: Vec<u64> = got.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, vec![11, 12, 13], "the ones that need not wait");
    let rows = |r: &dbaas::error::Result<dbaas::model::ReadReply>| {
        r.as_ref()
            .expect("answered")
            .result
            .clone()
            .into_rows()
            .len()
    };
    assert_eq!(rows(&got[0].1), 1);
    assert_eq!(
        got[1].1.as_ref().expect("counted").result,
        ReadResult::Count(1)
    );
    assert_eq!(rows(&got[2].1), 0);
    // The write the strong read waits for.
    c.orchestrator.write(user("later")).await.unwrap();
    let got = read_answers(&mut answers).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, 10);
    let reply = got[0].1.as_ref().expect("answered");
    assert!(reply.seq >= next);
    assert_eq!(reply.result.clone().into_rows().len(), 1);
    drop(answers);
    c.stop().await;
}

/// One batch of writes with a refusal in the middle: one reply answers
/// each write by its id; the refused one takes a seq and changes nothing;
/// the batch sent again (a redelivery) gets the same answers.
pub async fn a_batch_of_writes_with_a_refusal_answers_each_write(b: Arc<dyn Broker>) {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(&dir, 1, b.clone()).await;
    c.orchestrator.write(user("taken")).await.unwrap();
    let replies = "test.batch.writes";
    let mut answers = reply_queue(&c, replies).await;
    let stamp = stamp(&c).await;
    let write = |id: u64, request_id: u128, name: &str| batched(stamp, id, request_id, name);
    let batch = MasterRequest::Writes(vec![
        write(20, 900, "b"),
        write(21, 901, "taken"),
        write(22, 902, "c"),
    ]);
    let body = wire::encode(stamp, &batch);
    let mut first = None;
    for _ in 0..2 {
        let Reply::Writes(got) = ask_master(&c, body.clone(), replies, &mut answers).await else {
            panic!("not answers to writes");
        };
        let ids: Vec<u64> = got.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, vec![20, 21, 22]);
        let seqs: Vec<u64> = got
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok().map(|w| w.seq))
            .collect();
        assert_eq!(seqs.len(), 2, "{got:?}");
        assert!(got[1].1.is_err(), "a duplicate key is refused: {got:?}");
        assert_eq!(seqs[1], seqs[0] + 2, "the refusal takes the seq between");
        match &first {
            None => first = Some(got),
            Some(f) => assert_eq!(f, &got, "the same answers again"),
        }
    }
    assert_eq!(read(&c, count_users()).await, ReadResult::Count(3));
    for name in ["b", "c", "taken"] {
        assert_eq!(read(&c, get_user(name)).await.into_rows().len(), 1);
    }
    drop(answers);
    c.stop().await;
}

/// Many clients at once through the orchestrator, which batches their
/// requests: every write gets its own answer (refusals among them), every
/// read its own row, strong reads seeing the writes acknowledged before.
pub async fn concurrent_clients_each_get_their_own_answer(b: Arc<dyn Broker>) {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(&dir, 2, b.clone()).await;
    let names: Vec<String> = (0..60).map(|i| format!("client{i}")).collect();
    c.orchestrator.write(user("client0")).await.unwrap();
    let writes = names.iter().map(|n| {
        let o = c.orchestrator.clone();
        let n = n.clone();
        async move { (n.clone(), o.write(user(&n)).await) }
    });
    let answers = futures::future::join_all(writes).await;
    let mut seqs = Vec::new();
    for (name, answer) in &answers {
        match (name.as_str(), answer) {
            ("client0", Err(e)) => assert!(!e.is_retryable(), "{e}"),
            (_, Ok(w)) => seqs.push(w.seq),
            (n, Err(e)) => panic!("write of {n} failed: {e}"),
        }
    }
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), names.len() - 1, "a seq each");
    let reads = names.iter().enumerate().map(|(i, n)| {
        let o = c.orchestrator.clone();
        let n = n.clone();
        let consistency = if i % 2 == 0 {
            Consistency::Strong
        } else {
            Consistency::Eventual
        };
        async move {
            (
                n.clone(),
                consistency,
                o.read(get_user(&n), consistency).await,
            )
        }
    });
    for (name, consistency, got) in futures::future::join_all(reads).await {
        let rows = got.expect("read answered").result.into_rows();
        if consistency == Consistency::Strong {
            assert_eq!(rows.len(), 1, "{name} seen by a strong read");
        }
        for row in rows {
            assert_eq!(row.get("username"), Some(&Value::from(name.as_str())));
        }
    }
    c.stop().await;
}

pub async fn a_write_retried_within_one_group_is_synced_once(b: Arc<dyn Broker>) {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(&dir, 1, b.clone()).await;
    c.orchestrator.write(user("first")).await.unwrap();
    // The master's lease runs out while it cannot reach the coordinator:
    // it takes no writes. A write, another, and the first again (a
    // retry) queue up; it takes them as one group when it is back.
    let session = master_session(&c).await;
    let server = embedded(&c);
    server.disconnect(session);
    let m = master_id(&c).await;
    eventually("the master to stop taking writes", DEADLINE, || async {
        !taking_writes(&c, m).await
    })
    .await;
    for (request_id, name) in [(500, "a"), (501, "b"), (500, "a")] {
        let req = write_request(&c, request_id, user(name)).await;
        c.broker.publish(WRITE_Q, Message::new(req)).await.unwrap();
    }
    server.reconnect(session);
    // A strong read after the next write needs the slave past all of them.
    c.orchestrator.write(user("last")).await.unwrap();
    assert_eq!(read(&c, count_users()).await, ReadResult::Count(4));
    let ids = running(&c);
    c.stop().await;
    let all = stores(dir.path(), &ids);
    assert_eq!(all[0], all[1]);
    assert_eq!(all[0].0, 4);
}

pub async fn a_redelivered_write_is_applied_once(b: Arc<dyn Broker>) {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(&dir, 1, b.clone()).await;
    let replies = "test.write-replies";
    let mut answers = reply_queue(&c, replies).await;
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
    )
    .await;
    let mut seqs = Vec::new();
    for _ in 0..2 {
        let Reply::Write(Ok(w)) = ask_master(&c, req.clone(), replies, &mut answers).await else {
            panic!("not a write answer");
        };
        seqs.push(w.seq);
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

/// The in-process coordinator of an embedded cluster.
pub(super) fn embedded(c: &Cluster) -> dbaas::coord::inproc::InProcServer {
    match &c.coordination {
        dbaas::system::Coordination::Embedded(server) => server.clone(),
        dbaas::system::Coordination::ZooKeeper(_) => panic!("not an embedded cluster"),
    }
}

/// The coordinator session of the master (once one leads).
pub(super) async fn master_session(c: &Cluster) -> u64 {
    let m = master_id(c).await;
    let view = c
        .watcher
        .send(dbaas::actors::watcher::GetCluster)
        .await
        .unwrap();
    view.workers
        .iter()
        .find(|w| w.id == m && w.session != 0)
        .map(|w| w.session)
        .expect("the master reports its session")
}

/// Whether worker `id` leads and takes writes now (its lease is valid).
pub(super) async fn taking_writes(c: &Cluster, id: u64) -> bool {
    c.runtime
        .status(id)
        .await
        .is_ok_and(|s| s.master && s.ready)
}

/// A request sent longer ago than the master remembers request ids may
/// have been applied already, its record forgotten since: it is refused,
/// with a clear error, and changes nothing.
pub async fn a_request_older_than_the_records_is_refused_not_applied(b: Arc<dyn Broker>) {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(&dir, 1, b.clone()).await;
    let replies = "test.stale-replies";
    let mut answers = reply_queue(&c, replies).await;
    let stamp = stamp(&c).await;
    let req = MasterRequest::Write(WriteRequest {
        request_id: 777,
        epoch: stamp.epoch,
        op: user("ancient"),
        sent_ms: 1,
    });
    let reply = ask_master(&c, wire::encode(stamp, &req), replies, &mut answers).await;
    assert!(
        matches!(
            reply,
            Reply::Write(Err(dbaas::error::Error::Precondition(_)))
        ),
        "{reply:?}"
    );
    // A write after it takes seq 1: the old one took no seq.
    let w = c.orchestrator.write(user("now")).await.unwrap();
    assert_eq!(w.seq, 1);
    assert_eq!(read(&c, count_users()).await, ReadResult::Count(1));
    drop(answers);
    c.stop().await;
}
