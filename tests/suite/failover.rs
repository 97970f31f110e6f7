//! The failover suite: elections, deaths seen and unseen, deposed masters
//! and replacements, with the in-process coordinator, over whichever
//! broker a test file passes.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dbaas::actors::watcher::{CrashMaster, CrashSlave, GetCluster};
use dbaas::broker::faults::{Fault, FaultyBroker};
use dbaas::broker::{Broker, Message, QueueKind, SYNC_X, WRITE_Q};
use dbaas::model::wire::{self, MasterRequest, Reply, Stamp, WriteRequest};
use dbaas::model::{Consistency, ReadResult, WriteResult};
use dbaas::system::Cluster;
use futures::StreamExt;

use super::actors::{
    cluster, count_users, embedded, faulty_cluster_of_five, get_user, master_session, read,
    taking_writes, user, DEADLINE,
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
        // A master under a newer epoch: another worker, or the dead one's
        // own store started again when no replacement had caught up yet
        // (the only store then sure to hold every acknowledged write).
        eventually("a new master", DEADLINE, || async {
            c.epoch().await > epoch && roles(&c).await.0.is_some()
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
    // The master is cut off (it lives on): its lease runs out, then the
    // coordinator expires its session, and another worker is elected.
    let server = embedded(&c);
    let session = master_session(&c).await;
    server.disconnect(session);
    eventually("the master to stop taking writes", DEADLINE, || async {
        !taking_writes(&c, old).await
    })
    .await;
    server.expire(session);
    eventually("another master", DEADLINE, || async {
        c.epoch().await > epoch && master_id(&c).await != old
    })
    .await;
    writers.wait_for(20).await;
    // Back in touch, it hears its session expired, finds another named and
    // follows, taking no write.
    server.reconnect(session);
    eventually("the old master to follow", DEADLINE, || async {
        c.runtime
            .status(old)
            .await
            .is_ok_and(|s| !s.master && s.ready)
    })
    .await;
    writers.wait_for(20).await;
    let acked = writers.stop().await;
    check_all(c, &dir, acked).await;
}

/// The coordinator session of the election watcher: the live one no
/// worker reports.
async fn watcher_session(c: &Cluster) -> u64 {
    let server = embedded(c);
    let deadline = Instant::now() + DEADLINE;
    loop {
        let view = c.watcher.send(GetCluster).await.unwrap();
        let workers: BTreeSet<u64> = view.workers.iter().map(|w| w.session).collect();
        if !workers.contains(&0) && workers.len() == running(c).len() {
            let others: Vec<u64> = server
                .sessions()
                .into_iter()
                .map(|(id, _)| id)
                .filter(|id| !workers.contains(id))
                .collect();
            if others.len() == 1 {
                return others[0];
            }
        }
        assert!(Instant::now() < deadline, "no watcher session found");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Promise 5, no two masters: the master's session expires while the
/// watcher is cut off; the master opens a new session, finds itself still
/// named and claims `/master` again, which extends its lease. Then it is
/// cut off again and the watcher comes back. The watcher must not elect
/// over it while its session lives (its lease may be valid); once the
/// session expires, another is elected, and writes its sender stamped
/// before the election are answered by the new master only, none lost.
pub async fn a_master_that_claimed_its_place_again_is_not_elected_over_while_it_may_lead(
    b: Arc<dyn Broker>,
) {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(&dir, 1, b.clone()).await;
    c.orchestrator.write(user("before")).await.unwrap();
    let server = embedded(&c);
    let (old, epoch) = (master_id(&c).await, c.epoch().await);
    let other = *roles(&c).await.1.first().expect("a slave");
    let old_session = master_session(&c).await;
    let watcher = watcher_session(&c).await;
    server.disconnect(watcher);
    let before: BTreeSet<u64> = server.sessions().into_iter().map(|(id, _)| id).collect();
    assert!(server.expire(old_session));
    let deadline = Instant::now() + DEADLINE;
    let new_session = loop {
        let new: Vec<u64> = server
            .sessions()
            .into_iter()
            .map(|(id, _)| id)
            .filter(|id| !before.contains(id))
            .collect();
        if let Some(&s) = new.first() {
            if taking_writes(&c, old).await {
                break s;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the master did not claim its place again"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    // Cut off again; the watcher is back. While the master's session
    // lives, nobody else leads, and once its lease runs out nobody takes
    // writes: both are what keeps two masters apart.
    server.disconnect(new_session);
    server.reconnect(watcher);
    eventually("the master's lease to run out", DEADLINE, || async {
        !taking_writes(&c, old).await
    })
    .await;
    assert!(
        !taking_writes(&c, other).await,
        "elected over a live session"
    );
    assert_eq!(c.epoch().await, epoch);
    // Writes stamped with the old epoch, sent before anyone hears of an
    // election; then the session expires and another is elected.
    let replies = "test.two-masters";
    b.declare_queue(replies, QueueKind::Transient)
        .await
        .unwrap();
    let mut answers = b.consume(replies, 100).await.unwrap();
    let old_stamp = Stamp {
        cluster: c.cluster,
        epoch,
    };
    const N: u64 = 20;
    for i in 0..N {
        let req = MasterRequest::Write(WriteRequest {
            request_id: 90_000 + u128::from(i),
            epoch,
            op: user(&format!("straggler{i}")),
            sent_ms: dbaas::store::wall_clock_ms(),
        });
        let msg = Message {
            body: wire::encode(old_stamp, &req),
            correlation_id: Some(i),
            reply_to: Some(replies.into()),
        };
        b.publish(WRITE_Q, msg).await.unwrap();
    }
    server.expire(new_session);
    let mut by_old = Vec::new();
    for _ in 0..N {
        let d = tokio::time::timeout(DEADLINE, answers.next())
            .await
            .expect("an answer in time")
            .expect("the consumer lives");
        let (stamp, reply): (Stamp, Reply) = wire::decode(&d.message.body).unwrap();
        let id = d.message.correlation_id;
        d.ack().await.unwrap();
        assert!(matches!(reply, Reply::Write(Ok(_))), "{reply:?}");
        if stamp.epoch == epoch {
            by_old.push(id);
        }
    }
    drop(answers);
    assert_eq!(
        by_old,
        Vec::<Option<u64>>::new(),
        "answered by the deposed master"
    );
    assert_eq!(master_id(&c).await, other);
    server.reconnect(new_session);
    let last = c.orchestrator.write(user("after")).await.unwrap();
    all_applied(&c, last.seq, DEADLINE).await;
    for i in 0..N {
        let name = format!("straggler{i}");
        assert_eq!(
            read(&c, get_user(&name)).await.into_rows().len(),
            1,
            "{name}"
        );
    }
    let ids = running(&c);
    c.stop().await;
    let all = stores(dir.path(), &ids);
    assert!(all.iter().all(|s| *s == all[0]), "workers differ: {all:?}");
}

/// Cuts master `m` off from the coordinator (its lease lapses) and waits
/// until it takes no writes; reconnect the session with the server.
async fn cut_off(c: &Cluster, m: u64) -> (dbaas::coord::inproc::InProcServer, u64) {
    let session = master_session(c).await;
    let server = embedded(c);
    server.disconnect(session);
    eventually("the master to stop taking writes", DEADLINE, || async {
        !taking_writes(c, m).await
    })
    .await;
    (server, session)
}

pub async fn a_master_cut_off_from_the_coordinator_pauses_and_carries_on(b: Arc<dyn Broker>) {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(&dir, 1, b).await;
    let writers = Writers::start(&c, "p", 4);
    writers.wait_for(20).await;
    let (m, epoch) = (master_id(&c).await, c.epoch().await);
    let (server, session) = cut_off(&c, m).await;
    // Eventual reads go on meanwhile. A strong one waits for a master
    // that may answer the head (read-index: no other may have taken
    // writes meanwhile), and is served once this one is back.
    c.orchestrator
        .read(count_users(), Consistency::Eventual)
        .await
        .expect("an eventual read needs no master");
    let strong = c.orchestrator.clone();
    let strong = actix::spawn(async move { strong.read(count_users(), Consistency::Strong).await });
    server.reconnect(session);
    strong
        .await
        .unwrap()
        .expect("a strong read, once the master is back");
    writers.wait_for(20).await;
    assert_eq!(master_id(&c).await, m, "no needless election");
    assert_eq!(c.epoch().await, epoch);
    let acked = writers.stop().await;
    check_all(c, &dir, acked).await;
}

/// Found by CI against a RabbitMQ cluster whose nodes were all killed at
/// once: the master's group went back to `writeQ` (its syncs had failed)
/// when its lease lapsed, and never came back (`writeQ` let it expire);
/// the master took its lease again and every later group waited behind
/// the gap, for good. It sends the gap's syncs again from its log: writes
/// are acknowledged again, and the slave gets every seq.
pub async fn a_master_whose_lease_lapsed_sends_again_what_went_back_and_never_returned(
    b: Arc<dyn Broker>,
) {
    let dir = tempfile::tempdir().unwrap();
    let (fb, c) = faulty_cluster_of_five(&dir, b).await;
    let m = master_id(&c).await;
    // Every sync is refused from now on; what goes back to writeQ is gone.
    fb.on_publish(|target, _| {
        if target == SYNC_X {
            Fault::Fail
        } else {
            Fault::Pass
        }
    });
    fb.drop_requeued(WRITE_Q);
    let orch = c.orchestrator.clone();
    let abandoned = actix::spawn(async move { orch.write(user("gap")).await });
    eventually("the master to apply the write", DEADLINE, || async {
        c.runtime.status(m).await.is_ok_and(|s| s.applied_seq >= 6)
    })
    .await;
    // Its client's retries are lost too, until it gives up.
    fb.on_publish(|target, _| match target {
        SYNC_X => Fault::Fail,
        WRITE_Q => Fault::Lose,
        _ => Fault::Pass,
    });
    // The lease lapses with the group out, and comes back.
    let (server, session) = cut_off(&c, m).await;
    let gave_up = abandoned.await.unwrap();
    assert!(gave_up.is_err(), "nothing could answer it: {gave_up:?}");
    fb.on_publish(|_, _| Fault::Pass);
    server.reconnect(session);
    let after = c.orchestrator.write(user("after")).await;
    assert!(after.is_ok(), "a write after the lapse: {after:?}");
    assert_eq!(master_id(&c).await, m, "no election");
    fb.clear();
    let seq = c.orchestrator.stats().await.unwrap().last_acked_seq;
    all_applied(&c, seq, DEADLINE).await;
    let ids: Vec<u64> = c.runtime.list().into_iter().map(|w| w.id).collect();
    c.stop().await;
    let all = stores(dir.path(), &ids);
    assert!(all.iter().all(|s| *s == all[0]), "workers differ");
}

/// Found against a RabbitMQ cluster (a master and the node of `writeQ`'s
/// leader killed together): the promoted slave's delete of its own sync
/// queue was cut short by the node's death, which left the queue's
/// binding to the sync exchange behind without it, and RabbitMQ refused
/// every sync from then on: no write was acknowledged again. The new
/// master makes sure its old queue is gone (declared again, then
/// deleted), and writes are acknowledged. (A slave stopped to lead no
/// longer deletes the queue: the delete cut here is the master's own.)
pub async fn a_sync_queue_left_bound_by_a_cut_delete_does_not_stop_writes(b: Arc<dyn Broker>) {
    let dir = tempfile::tempdir().unwrap();
    let (fb, c) = faulty_cluster_of_five(&dir, b).await;
    let (_, slaves) = roles(&c).await;
    let heir = slaves[0];
    fb.dangle_on_delete(&dbaas::broker::sync_queue(heir), SYNC_X);
    c.watcher.send(CrashMaster).await.unwrap().unwrap();
    eventually("the slave to lead", DEADLINE, || async {
        roles(&c).await.0 == Some(heir)
    })
    .await;
    let w = c.orchestrator.write(user("after")).await;
    assert!(w.is_ok(), "a write after the failover: {w:?}");
    // (The master removes its old queue in the background: the cut may
    // come after that write.)
    eventually("the binding left behind gone", DEADLINE, || async {
        fb.dangle_spent()
    })
    .await;
    let w = c.orchestrator.write(user("after the cut")).await;
    assert!(w.is_ok(), "a write after the cut delete: {w:?}");
    all_applied(&c, w.unwrap().seq, DEADLINE).await;
    let ids: Vec<u64> = c.runtime.list().into_iter().map(|w| w.id).collect();
    c.stop().await;
    let all = stores(dir.path(), &ids);
    assert!(all.iter().all(|s| *s == all[0]), "workers differ");
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

/// A storm of broker faults under a steady stream of writes and three
/// master kills: sync publishes refused, writeQ acknowledgements swallowed
/// (redelivered to the next master), every reply watched. Every
/// acknowledged write must be there exactly once, on every worker alike,
/// and no write may be acknowledged before the sync of every earlier seq
/// was confirmed by the broker.
pub async fn a_fault_storm_with_master_kills_loses_and_duplicates_nothing(b: Arc<dyn Broker>) {
    let dir = tempfile::tempdir().unwrap();
    let fb = FaultyBroker::new(b);
    let c = cluster(&dir, 2, Arc::new(fb.clone())).await;
    let mut rng = fastrand::Rng::with_seed(7);
    let mut rng2 = fastrand::Rng::with_seed(11);
    fb.on_publish(move |target, _| {
        if target == SYNC_X && rng.u32(..100) < 5 {
            Fault::Fail
        } else {
            Fault::Pass
        }
    });
    fb.on_settle(move |q, _, how| {
        !(q == WRITE_Q && how == dbaas::broker::faults::Settle::Ack && rng2.u32(..100) < 10)
    });
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let names = Arc::new(Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..6)
        .map(|w| {
            let (orch, acked, stop, names) = (
                c.orchestrator.clone(),
                acked.clone(),
                stop.clone(),
                names.clone(),
            );
            actix::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let name = format!("storm{w}-{i}");
                    let r = orch.write(user(&name)).await.expect("acknowledged");
                    assert!(
                        matches!(r.result, WriteResult::Inserted { .. }),
                        "{name}: {r:?}"
                    );
                    names.lock().unwrap().push(name);
                    acked.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    for _ in 0..3 {
        let target = acked.load(Ordering::Relaxed) + 40;
        eventually("writes to go on", DEADLINE, || async {
            acked.load(Ordering::Relaxed) >= target
        })
        .await;
        let (old, epoch) = (master_id(&c).await, c.epoch().await);
        c.runtime.kill(old).await.unwrap();
        // A master under a newer epoch: another worker, or the dead one's
        // own store started again when no replacement had caught up yet
        // (the only store then sure to hold every acknowledged write).
        eventually("a new master", DEADLINE, || async {
            c.epoch().await > epoch && roles(&c).await.0.is_some()
        })
        .await;
        eventually("three workers again", DEADLINE, || async {
            let v = c.watcher.send(GetCluster).await.unwrap();
            v.workers.len() == 3 && v.master.is_some() && running(&c).len() == 3
        })
        .await;
    }
    let target = acked.load(Ordering::Relaxed) + 40;
    eventually("writes to go on", DEADLINE, || async {
        acked.load(Ordering::Relaxed) >= target
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.expect("a writer failed");
    }
    fb.clear();
    let total = acked.load(Ordering::Relaxed);
    assert_eq!(read(&c, count_users()).await, ReadResult::Count(total));
    let sample: Vec<String> = names.lock().unwrap().iter().step_by(7).cloned().collect();
    for name in &sample {
        assert_eq!(
            read(&c, get_user(name)).await.into_rows().len(),
            1,
            "{name}"
        );
    }
    let seq = c.orchestrator.stats().await.unwrap().last_acked_seq;
    all_applied(&c, seq, DEADLINE).await;
    let ids = running(&c);
    c.stop().await;
    let all = stores(dir.path(), &ids);
    assert!(all.iter().all(|s| *s == all[0]), "workers differ: {all:?}");
}
