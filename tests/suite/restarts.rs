//! Parts started again while the cluster runs: what they know of the
//! history, over whichever broker a test file passes.

use std::sync::{Arc, Mutex};

use actix::{Actor, Arbiter};
use dbaas::actors::messages::Shutdown;
use dbaas::actors::{Orchestrator, OrchestratorHandle};
use dbaas::broker::faults::{Fault, FaultyBroker};
use dbaas::broker::{Broker, Message, LEADING_X, SYNC_X};
use dbaas::model::wire::{self, Reply, Stamp};
use dbaas::model::{Consistency, ReadResult};

use super::actors::{cluster, faulty_cluster_of_five, DEADLINE};
use super::{count_users, eventually, user};

/// An orchestrator started again does not know how far the history is
/// acknowledged (the acknowledgements were its predecessor's). A strong
/// read through it must still see every acknowledged write, even on a
/// slave that has not applied the last one yet.
pub async fn a_restarted_orchestrator_serves_strong_reads_past_every_acknowledged_write(
    b: Arc<dyn Broker>,
) {
    let dir = tempfile::tempdir().unwrap();
    let (fb, c) = faulty_cluster_of_five(&dir, b).await;
    // The sync of the next write is held back: the broker confirms it (so
    // the write is acknowledged), the slave does not get it yet.
    let held: Arc<Mutex<Vec<Message>>> = Arc::default();
    let h = held.clone();
    fb.on_publish(move |target, msg| {
        if target == SYNC_X {
            h.lock().unwrap().push(msg.clone());
            Fault::Lose
        } else {
            Fault::Pass
        }
    });
    let last = c.orchestrator.write(user("last")).await.unwrap();
    assert_eq!(last.seq, 6);
    fb.clear();

    // The orchestrator is stopped and another started, on the same broker.
    let old = c.orchestrator.addr().clone();
    old.send(Shutdown).await.unwrap();
    eventually("the old orchestrator to stop", DEADLINE, || {
        let connected = old.connected();
        async move { !connected }
    })
    .await;
    let (broker, id, epoch) = (c.broker.clone(), c.cluster, c.epoch().await);
    let addr = Orchestrator::start_in_arbiter(&Arbiter::new().handle(), move |_| {
        Orchestrator::new(broker, id, epoch)
    });
    let orch = OrchestratorHandle::new(addr);
    let reader = orch.clone();
    let read = actix::spawn(async move { reader.read(count_users(), Consistency::Strong).await });
    // Once the read is answered, or the new orchestrator knows how far the
    // history is acknowledged, the held sync reaches the slave.
    eventually("the read, or the head learned", DEADLINE, || {
        let (done, orch) = (read.is_finished(), orch.clone());
        async move { done || orch.stats().await.is_ok_and(|s| s.last_acked_seq >= 6) }
    })
    .await;
    let held: Vec<Message> = std::mem::take(&mut *held.lock().unwrap());
    assert_eq!(held.len(), 1, "one sync held back");
    for msg in held {
        c.broker.publish_fanout(SYNC_X, msg).await.unwrap();
    }
    let got = read.await.unwrap().expect("the read succeeds");
    assert_eq!(
        got.result,
        ReadResult::Count(6),
        "a strong read missed an acknowledged write"
    );
    assert!(got.seq >= 6, "served at seq {}", got.seq);
    orch.addr().do_send(Shutdown);
    c.stop().await;
}

/// Two orchestrators serve one cluster, each on its own reply queue. A
/// strong read through one sees a write the other acknowledged before
/// the read began, even on a slave that has not applied it yet and
/// though the reader knew an older head (it asks the master again:
/// read-index); a master's announcement reaches both.
pub async fn a_strong_read_sees_what_another_orchestrator_acknowledged(b: Arc<dyn Broker>) {
    let dir = tempfile::tempdir().unwrap();
    let fb = FaultyBroker::new(b);
    let c = cluster(&dir, 1, Arc::new(fb.clone())).await;
    let (broker, id, epoch) = (c.broker.clone(), c.cluster, c.epoch().await);
    let addr = Orchestrator::start_in_arbiter(&Arbiter::new().handle(), move |_| {
        Orchestrator::new(broker, id, epoch)
    });
    let other = OrchestratorHandle::new(addr);
    let (mine, theirs) = (
        c.orchestrator.reply_queue().await.unwrap(),
        other.reply_queue().await.unwrap(),
    );
    assert_ne!(mine, theirs, "each has its own reply queue");
    for i in 0..5 {
        c.orchestrator.write(user(&format!("u{i}"))).await.unwrap();
    }
    let seen = other
        .read(count_users(), Consistency::Strong)
        .await
        .unwrap();
    assert_eq!(seen.result, ReadResult::Count(5));
    // The sync of the next write is held back: acknowledged through the
    // first orchestrator, not at the slave yet.
    let held: Arc<Mutex<Vec<Message>>> = Arc::default();
    let h = held.clone();
    fb.on_publish(move |target, msg| {
        if target == SYNC_X {
            h.lock().unwrap().push(msg.clone());
            Fault::Lose
        } else {
            Fault::Pass
        }
    });
    let last = c.orchestrator.write(user("last")).await.unwrap();
    assert_eq!(last.seq, 6);
    fb.clear();
    let reader = other.clone();
    let read = actix::spawn(async move { reader.read(count_users(), Consistency::Strong).await });
    eventually("the reader to learn the head", DEADLINE, || {
        let other = other.clone();
        async move { other.stats().await.is_ok_and(|s| s.last_acked_seq >= 6) }
    })
    .await;
    assert!(!read.is_finished(), "served before the slave had seq 6");
    let held: Vec<Message> = std::mem::take(&mut *held.lock().unwrap());
    for msg in held {
        c.broker.publish_fanout(SYNC_X, msg).await.unwrap();
    }
    let got = read.await.unwrap().expect("the read succeeds");
    assert_eq!(got.result, ReadResult::Count(6), "missed another's write");
    // A master announcing itself is heard by both.
    let next = Stamp {
        cluster: id,
        epoch: epoch + 1,
    };
    let leading = Message::reply(wire::encode(next, &Reply::Leading), None);
    c.broker.publish_fanout(LEADING_X, leading).await.unwrap();
    for orch in [&c.orchestrator, &other] {
        eventually("both to follow the new epoch", DEADLINE, || {
            let orch = orch.clone();
            async move { orch.stats().await.is_ok_and(|s| s.epoch == epoch + 1) }
        })
        .await;
    }
    other.addr().do_send(Shutdown);
    c.stop().await;
}
