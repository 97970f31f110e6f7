//! Catch-up from the master's log, over a real broker: a slave stopped
//! while writes were made comes back over its store and is given just the
//! writes it missed, never a snapshot.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use dbaas::broker::faults::{Fault, FaultyBroker};
use dbaas::broker::{Broker, Consumer, Message, QueueKind};
use dbaas::error::Result;
use dbaas::model::wire::{self, Reply};
use dbaas::system::Cluster;

use super::actors::{cluster, restarted_over_6000_users, spec, DEADLINE};
use super::{count_users, eventually, running, stores, user, Load};

/// A broker that remembers what kind of answer each snapshot request of
/// one worker got (the replies published to its reply queues).
pub struct Answers {
    inner: Arc<dyn Broker>,
    /// The reply queues' prefix: `snapshot.<id>.`.
    prefix: String,
    seen: Mutex<Vec<&'static str>>,
}

impl Answers {
    pub fn new(inner: Arc<dyn Broker>, worker: u64) -> Self {
        Answers {
            inner,
            prefix: format!("snapshot.{worker}."),
            seen: Mutex::new(Vec::new()),
        }
    }

    /// The kinds of answer published since the last call.
    pub fn take(&self) -> Vec<&'static str> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

/// What kind of answer to a snapshot request `msg` is.
fn answer_kind(msg: &Message) -> &'static str {
    match wire::decode::<Reply>(&msg.body) {
        Ok((_, Reply::CatchUpPart(_))) => "catch-up",
        Ok((_, Reply::SnapshotPart(_))) => "snapshot",
        Ok((_, Reply::Snapshot(Ok(None)))) => "current",
        _ => "other",
    }
}

/// Waits until worker `id` serves reads, having applied exactly `seq`.
async fn serves_at(c: &Cluster, id: u64, seq: u64) {
    let rt = c.runtime.clone();
    eventually(
        &format!("worker {id} to serve at seq {seq}"),
        DEADLINE,
        || {
            let rt = rt.clone();
            async move {
                rt.status(id)
                    .await
                    .is_ok_and(|s| s.ready && s.applied_seq == seq)
            }
        },
    )
    .await;
}

#[async_trait]
impl Broker for Answers {
    async fn declare_queue(&self, name: &str, kind: QueueKind) -> Result<()> {
        self.inner.declare_queue(name, kind).await
    }
    async fn declare_fanout(&self, exchange: &str) -> Result<()> {
        self.inner.declare_fanout(exchange).await
    }
    async fn bind(&self, queue: &str, exchange: &str) -> Result<()> {
        self.inner.bind(queue, exchange).await
    }
    async fn delete_queue(&self, name: &str) -> Result<()> {
        self.inner.delete_queue(name).await
    }
    async fn publish(&self, queue: &str, msg: Message) -> Result<()> {
        if queue.starts_with(&self.prefix) {
            self.seen.lock().unwrap().push(answer_kind(&msg));
        }
        self.inner.publish(queue, msg).await
    }
    async fn publish_fanout(&self, exchange: &str, msg: Message) -> Result<()> {
        self.inner.publish_fanout(exchange, msg).await
    }
    async fn consume_ranked(&self, queue: &str, prefetch: u16, priority: i32) -> Result<Consumer> {
        self.inner.consume_ranked(queue, prefetch, priority).await
    }
    async fn depth(&self, queue: &str) -> Result<Option<u64>> {
        self.inner.depth(queue).await
    }
}

pub async fn a_restarted_slave_catches_up_from_the_log_not_a_snapshot(b: Arc<dyn Broker>) {
    let dir = tempfile::tempdir().unwrap();
    let answers = Arc::new(Answers::new(b, 9));
    let c = cluster(&dir, 1, answers.clone()).await;
    for i in 0..20 {
        c.orchestrator.write(user(&format!("a{i}"))).await.unwrap();
    }
    c.runtime.start(spec(&c, 9)).await.unwrap();
    serves_at(&c, 9, 20).await;
    // Stopped, its sync queue deleted with it: what is written now reaches
    // it only through the master.
    c.runtime.stop(9).await.unwrap();
    answers.take();
    for i in 0..300 {
        c.orchestrator.write(user(&format!("b{i}"))).await.unwrap();
    }
    // The watcher may have started it again already, over its store.
    if !c.runtime.list().iter().any(|w| w.id == 9) {
        c.runtime.start(spec(&c, 9)).await.unwrap();
    }
    serves_at(&c, 9, 320).await;
    let kinds = answers.take();
    assert!(kinds.contains(&"catch-up"), "{kinds:?}");
    assert!(
        !kinds.contains(&"snapshot"),
        "a snapshot was taken: {kinds:?}"
    );
    c.stop().await;
    let all = stores(dir.path(), &[1, 2, 9]);
    assert!(all.iter().all(|s| *s == all[0]), "stores differ: {all:?}");
    assert_eq!(all[0].0, 320);
}

/// A brand-new slave's snapshot travels in several parts, and the broker
/// "confirms" one part in the middle, then loses it (as a node lost after
/// its confirm would): the slave, holding the parts before the gap and
/// waiting for the rest, asks again once the answer stops coming, and
/// serves with every write, writes made meanwhile too. (The simulator's
/// `lose_answers` covers the same over its own broker.)
pub async fn a_snapshot_part_lost_after_its_confirm_is_asked_for_again(b: Arc<dyn Broker>) {
    let dir = tempfile::tempdir().unwrap();
    let fb = FaultyBroker::new(b);
    let c = restarted_over_6000_users(&dir, Arc::new(fb.clone())).await;
    let answers = Arc::new(Mutex::new(Vec::new()));
    let seen = answers.clone();
    fb.on_publish(move |target, msg| {
        if !target.starts_with("snapshot.9.") {
            return Fault::Pass;
        }
        let mut seen = seen.lock().unwrap();
        seen.push(answer_kind(msg));
        // The second part of the first answer.
        if seen.len() == 2 {
            Fault::Lose
        } else {
            Fault::Pass
        }
    });
    let orch = c.orchestrator.clone();
    let writer = actix::spawn(async move {
        for i in 0..50 {
            orch.write(user(&format!("during{i}"))).await.unwrap();
        }
    });
    c.runtime.start(spec(&c, 9)).await.unwrap();
    writer.await.unwrap();
    serves_at(&c, 9, 56).await;
    let answers = answers.lock().unwrap().clone();
    let parts = answers.iter().filter(|k| **k == "snapshot").count();
    // The first answer's parts, the lost one among them, then at least
    // the parts of a second answer.
    assert!(parts >= 4, "{answers:?}");
    c.stop().await;
    let all = stores(dir.path(), &[1, 2, 9]);
    assert!(all.iter().all(|s| *s == all[0]), "stores differ: {all:?}");
    assert_eq!(all[0].0, 56);
}

/// A brand-new slave serves its snapshot from memory while its store is
/// written to disk (`Store::install_early`). Held there, under writes,
/// the other slave is stopped and the master killed: the new slave, the
/// one left, is elected, and its drain (the fence it publishes to
/// itself) comes while nothing of its store is on disk. It must lead
/// only once the store is written and flushed: killed as soon as it
/// leads, it comes back over its store, and no acknowledged write is
/// lost.
pub async fn a_new_slave_elected_before_its_store_is_on_disk_leads_only_once_it_is(
    b: Arc<dyn Broker>,
) {
    let dir = tempfile::tempdir().unwrap();
    let fb = FaultyBroker::new(b);
    let c = restarted_over_6000_users(&dir, Arc::new(fb.clone())).await;
    let workers = dir.path().join("workers");
    let held = dbaas::store::hold_persisting_in(&dbaas::runtime::worker_dir(&workers, 9));
    let fenced = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = fenced.clone();
    fb.on_publish(move |_, msg| {
        if let Ok((_, wire::SyncItem::Fence { worker: 9, .. })) = wire::decode_sync(&msg.body) {
            seen.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        Fault::Pass
    });
    c.runtime.start(spec(&c, 9)).await.unwrap();
    serves_at(&c, 9, 6).await;
    let load = Load::start(&c, 4);
    load.more(20).await;
    super::attack_early::only_left(&c, &[9]).await;
    // Mostly worker 9 drains as the master elect. Under load its progress
    // may reach the watcher late, so that it is not seen caught up: the
    // election then rightly waits for the killed master's store, which
    // leads again (nothing is lost either way, checked below).
    let cc = &c;
    eventually("worker 9 to drain, or another to lead", DEADLINE, || {
        let fenced = fenced.clone();
        async move {
            fenced.load(std::sync::atomic::Ordering::SeqCst)
                || super::roles(cc).await.0.is_some_and(|m| m != 9)
        }
    })
    .await;
    let elected = fenced.load(std::sync::atomic::Ordering::SeqCst);
    drop(held);
    if elected {
        let rt = c.runtime.clone();
        eventually("worker 9 to lead", DEADLINE, || {
            let rt = rt.clone();
            async move { rt.status(9).await.is_ok_and(|s| s.master && s.ready) }
        })
        .await;
        load.more(20).await;
        c.runtime.kill(9).await.unwrap();
    }
    load.more(20).await;
    let acked = load.stop().await;
    let count = c
        .orchestrator
        .read(count_users(), dbaas::model::Consistency::Strong)
        .await
        .unwrap();
    assert_eq!(count.result, dbaas::model::ReadResult::Count(6000 + acked));
    super::all_applied(&c, count.seq, DEADLINE).await;
    let ids = running(&c);
    c.stop().await;
    let all = stores(dir.path(), &ids);
    assert!(all.iter().all(|s| *s == all[0]), "workers differ: {all:?}");
}
