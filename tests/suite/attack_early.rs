//! Attacks on early installs (`Store::install_early`): a new slave that
//! serves from memory while its store is written to sled.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use dbaas::broker::faults::{Fault, FaultyBroker};
use dbaas::broker::Broker;
use dbaas::model::wire;
use dbaas::model::{CmpOp, Cond, Consistency, Order, ReadOp, ReadResult, Row, Value, WriteOp};
use dbaas::system::Cluster;

use super::actors::{restarted_over_6000_users, spec, DEADLINE};
use super::{all_applied, count_users, eventually, master_id, roles, running, stores, user, Load};

fn hold(dir: &tempfile::TempDir, id: u64) -> impl Drop {
    dbaas::store::hold_persisting_in(&dbaas::runtime::worker_dir(&dir.path().join("workers"), id))
}

/// Worker `id` ready (serving) at `seq` or past it.
async fn ready_at(c: &Cluster, id: u64, seq: u64) {
    super::serves_from(c, id, seq, &format!("worker {id} to serve at {seq}")).await;
}

/// A backup taken now, as a restore's parts; then `n` writes after it.
async fn backup_then_writes(c: &Cluster, n: u64) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
    let taken = c.orchestrator.backup().await.expect("a backup");
    let entries = dbaas::store::backup_entries(taken.snapshot.entries);
    let parts = entries.chunks(500).map(|p| p.to_vec()).collect();
    for i in 0..n {
        c.orchestrator
            .write(user(&format!("pre{i}")))
            .await
            .unwrap();
    }
    parts
}

/// Leaves `keep` the only workers that can be elected: every other slave
/// stopped on purpose (not replaced, and never elected meanwhile), then
/// the master killed. (Killing them all at once lets the watcher elect
/// another slave before its own kill lands; an elect killed before it
/// led then makes the election wait for its store, as it must.)
pub async fn only_left(c: &Cluster, keep: &[u64]) {
    let (master, slaves) = roles(c).await;
    for id in slaves.into_iter().filter(|id| !keep.contains(id)) {
        c.runtime.stop(id).await.unwrap();
    }
    if let Some(m) = master.filter(|m| !keep.contains(m)) {
        c.runtime.kill(m).await.unwrap();
    }
}

/// Records every worker that published a fence of its own (drains as the
/// master elect).
fn fences(fb: &FaultyBroker) -> Arc<Mutex<BTreeSet<u64>>> {
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let s = seen.clone();
    fb.on_publish(move |_, msg| {
        if let Ok((_, wire::SyncItem::Fence { worker, .. })) = wire::decode_sync(&msg.body) {
            s.lock().unwrap().insert(worker);
        }
        Fault::Pass
    });
    seen
}

async fn strong_count(c: &Cluster) -> (u64, u64) {
    let r = c
        .orchestrator
        .read(count_users(), Consistency::Strong)
        .await
        .expect("a strong count");
    match r.result {
        ReadResult::Count(n) => (n, r.seq),
        other => panic!("a count answered {other:?}"),
    }
}

/// Every acknowledged write there once; a master leads; every running
/// worker applied it; stores on disk alike after the stop.
async fn end_check(c: Cluster, dir: &tempfile::TempDir, want: u64) {
    let m = master_id(&c).await;
    let (n, seq) = strong_count(&c).await;
    assert_eq!(n, want, "strong count of users (master {m})");
    all_applied(&c, seq, DEADLINE).await;
    let ids = running(&c);
    c.stop().await;
    let all = stores(dir.path(), &ids);
    assert!(
        all.iter().all(|s| *s == all[0]),
        "stores differ: {ids:?} {all:?}"
    );
    assert!(
        all[0].0 >= seq,
        "stores behind the count's seq {seq}: {all:?}"
    );
}

/// A new slave killed while its install is held in memory (and again
/// just as its writing is let go, mid-write), respawned over its store
/// each time, under writes; it must come back and catch up.
pub async fn attack_early_kill_new_slave_mid_write_and_respawn(b: Arc<dyn Broker>) {
    let dir = tempfile::tempdir().unwrap();
    let c = restarted_over_6000_users(&dir, b).await;
    let load = Load::start(&c, 4);
    load.more(10).await;
    let mut held = Some(hold(&dir, 9));
    c.runtime.start(spec(&c, 9)).await.unwrap();
    for round in 0..4 {
        ready_at(&c, 9, 7).await;
        load.more(30).await;
        if round % 2 == 0 {
            c.runtime.kill(9).await.unwrap();
            drop(held.take());
        } else {
            // Let the writing go and cut it wherever it is.
            drop(held.take());
            c.runtime.kill(9).await.unwrap();
        }
        // Respawned by the watcher over its own store (so the killed
        // one's writing let go of it).
        eventually("worker 9 respawned", DEADLINE, || async {
            running(&c).contains(&9)
        })
        .await;
        // Its install, if early and not written yet, is held from its
        // next step.
        held = Some(hold(&dir, 9));
    }
    drop(held);
    load.more(30).await;
    let acked = load.stop().await;
    end_check(c, &dir, 6000 + acked).await;
}

/// Three rounds: a new slave, held in memory, is the only one caught up
/// when every other worker is killed under writes; it leads once let go.
pub async fn attack_early_new_slave_only_survivor_three_times(b: Arc<dyn Broker>) {
    let dir = tempfile::tempdir().unwrap();
    let fb = FaultyBroker::new(b);
    let c = restarted_over_6000_users(&dir, Arc::new(fb.clone())).await;
    let fenced = fences(&fb);
    let load = Load::start(&c, 4);
    load.more(10).await;
    for new in [9, 10, 11] {
        let held = hold(&dir, new);
        c.runtime.start(spec(&c, new)).await.unwrap();
        ready_at(&c, new, 7).await;
        load.more(20).await;
        let (master, slaves) = roles(&c).await;
        for id in master.into_iter().chain(slaves).filter(|&id| id != new) {
            c.runtime.kill(id).await.unwrap();
        }
        // Either it drains as the master elect, or (an election won by
        // another before the kills landed, then lost) the old stores lead.
        let f = fenced.clone();
        let cc = &c;
        eventually(
            &format!("worker {new} to drain, or another to lead"),
            DEADLINE,
            || {
                let f = f.clone();
                async move {
                    f.lock().unwrap().contains(&new) || roles(cc).await.0.is_some_and(|m| m != new)
                }
            },
        )
        .await;
        drop(held);
        master_id(&c).await;
        load.more(20).await;
    }
    let acked = load.stop().await;
    end_check(c, &dir, 6000 + acked).await;
}

/// The new slave, held, is elected and drains; killed before its store
/// is on disk (then let go): the old master's store must lead again with
/// every acknowledged write.
pub async fn attack_early_elected_new_slave_killed_before_its_store_is_written(b: Arc<dyn Broker>) {
    let dir = tempfile::tempdir().unwrap();
    let fb = FaultyBroker::new(b);
    let c = restarted_over_6000_users(&dir, Arc::new(fb.clone())).await;
    let fenced = fences(&fb);
    let held = hold(&dir, 9);
    c.runtime.start(spec(&c, 9)).await.unwrap();
    ready_at(&c, 9, 6).await;
    let load = Load::start(&c, 4);
    load.more(40).await;
    only_left(&c, &[9]).await;
    // Or, with 9 not yet seen caught up, the old master's store leads.
    let f = fenced.clone();
    let cc = &c;
    eventually("worker 9 to drain, or another to lead", DEADLINE, || {
        let f = f.clone();
        async move { f.lock().unwrap().contains(&9) || roles(cc).await.0.is_some_and(|m| m != 9) }
    })
    .await;
    if fenced.lock().unwrap().contains(&9) {
        c.runtime.kill(9).await.unwrap();
    }
    drop(held);
    load.more(40).await;
    let acked = load.stop().await;
    end_check(c, &dir, 6000 + acked).await;
}

/// A restore while a new slave's install is held in memory, with the
/// other slave stopped so that only the new one can install it.
pub async fn attack_early_restore_while_new_slave_installs(b: Arc<dyn Broker>) {
    let dir = tempfile::tempdir().unwrap();
    let c = restarted_over_6000_users(&dir, b).await;
    let parts = backup_then_writes(&c, 100).await;
    let (master, slaves) = roles(&c).await;
    let held = hold(&dir, 9);
    c.runtime.start(spec(&c, 9)).await.unwrap();
    ready_at(&c, 9, 7).await;
    for id in slaves {
        c.runtime.stop(id).await.unwrap();
    }
    let load = Load::start(&c, 2);
    load.more(20).await;
    let acked_before = load.stop().await;
    assert_eq!(strong_count(&c).await.0, 6100 + acked_before);
    let orch = c.orchestrator.clone();
    let restore = actix::spawn(async move { orch.restore(parts, count_users()).await });
    drop(held);
    restore.await.unwrap().expect("the restore");
    assert_eq!(strong_count(&c).await.0, 6000);
    let load = Load::start(&c, 4);
    load.more(30).await;
    // And the master lost: the new slave's store must hold the restore.
    c.runtime.kill(master.unwrap()).await.unwrap();
    load.more(30).await;
    let acked = load.stop().await;
    end_check(c, &dir, 6000 + acked).await;
}

/// A new slave joins right after a restore (its snapshot holds it) and
/// every other worker is then killed.
pub async fn attack_early_new_slave_right_after_a_restore(b: Arc<dyn Broker>) {
    let dir = tempfile::tempdir().unwrap();
    let c = restarted_over_6000_users(&dir, b).await;
    let parts = backup_then_writes(&c, 50).await;
    c.orchestrator
        .restore(parts, count_users())
        .await
        .expect("restore");
    let held = hold(&dir, 9);
    c.runtime.start(spec(&c, 9)).await.unwrap();
    let load = Load::start(&c, 4);
    ready_at(&c, 9, 8).await;
    load.more(20).await;
    let (master, slaves) = roles(&c).await;
    for id in master.into_iter().chain(slaves).filter(|&id| id != 9) {
        c.runtime.kill(id).await.unwrap();
    }
    drop(held);
    load.more(20).await;
    let acked = load.stop().await;
    end_check(c, &dir, 6000 + acked).await;
}

/// Two new slaves at once, both held; master and old slave killed; the
/// one elected killed again once it leads.
pub async fn attack_early_two_new_slaves_at_once(b: Arc<dyn Broker>) {
    let dir = tempfile::tempdir().unwrap();
    let fb = FaultyBroker::new(b);
    let c = restarted_over_6000_users(&dir, Arc::new(fb.clone())).await;
    let fenced = fences(&fb);
    let (h9, h10) = (hold(&dir, 9), hold(&dir, 10));
    c.runtime.start(spec(&c, 9)).await.unwrap();
    c.runtime.start(spec(&c, 10)).await.unwrap();
    ready_at(&c, 9, 6).await;
    ready_at(&c, 10, 6).await;
    let load = Load::start(&c, 4);
    load.more(30).await;
    only_left(&c, &[9, 10]).await;
    let f = fenced.clone();
    let cc = &c;
    eventually("9 or 10 to drain, or another to lead", DEADLINE, || {
        let f = f.clone();
        async move {
            let drained = {
                let f = f.lock().unwrap();
                f.contains(&9) || f.contains(&10)
            };
            drained || roles(cc).await.0.is_some_and(|m| m != 9 && m != 10)
        }
    })
    .await;
    // The elected one is killed mid-promotion, its store not on disk;
    // the other new slave's writing is let go. (Neither elected, both
    // not yet seen caught up: the old master's store leads.)
    let fenced = fenced.lock().unwrap().clone();
    let elected = [9, 10].into_iter().find(|id| fenced.contains(id));
    let (mine, other) = if elected == Some(9) {
        (h9, h10)
    } else {
        (h10, h9)
    };
    drop(other);
    if let Some(elected) = elected {
        c.runtime.kill(elected).await.unwrap();
    }
    drop(mine);
    load.more(20).await;
    let leader = master_id(&c).await;
    load.more(20).await;
    c.runtime.kill(leader).await.unwrap();
    load.more(30).await;
    let acked = load.stop().await;
    end_check(c, &dir, 6000 + acked).await;
}

/// A new slave held in memory takes every strong read (the other slave
/// stopped) under a long write load: each read sees every write
/// acknowledged before it; nothing stalls.
pub async fn attack_early_strong_reads_on_a_held_new_slave_under_load(b: Arc<dyn Broker>) {
    let dir = tempfile::tempdir().unwrap();
    let c = restarted_over_6000_users(&dir, b).await;
    let held = hold(&dir, 9);
    c.runtime.start(spec(&c, 9)).await.unwrap();
    ready_at(&c, 9, 6).await;
    let (_, slaves) = roles(&c).await;
    for id in slaves.into_iter().filter(|&id| id != 9) {
        c.runtime.stop(id).await.unwrap();
    }
    let load = Load::start(&c, 6);
    let acked = Arc::new(AtomicU64::new(0));
    for _ in 0..300 {
        let a = load.acked();
        let (n, _) = strong_count(&c).await;
        assert!(
            n >= 6000 + a,
            "a strong read saw {n} users, {a} acknowledged before it"
        );
        acked.store(a, Ordering::Relaxed);
    }
    load.more(1000).await;
    drop(held);
    for _ in 0..50 {
        let a = load.acked();
        let (n, _) = strong_count(&c).await;
        assert!(
            n >= 6000 + a,
            "after release: {n} users, {a} acknowledged before"
        );
    }
    let acked = load.stop().await;
    end_check(c, &dir, 6000 + acked).await;
}

/// A graceful stop of the cluster while the new slave's writing is held,
/// let go once the stop is at the new slave (`at_worker`) or as soon as
/// the stop began: every store alike, at the last seq. Answers the data
/// directory and how many writes were acknowledged.
async fn graceful_stop_while_held(b: Arc<dyn Broker>, at_worker: bool) -> (tempfile::TempDir, u64) {
    let dir = tempfile::tempdir().unwrap();
    let c = restarted_over_6000_users(&dir, b).await;
    let held = hold(&dir, 9);
    c.runtime.start(spec(&c, 9)).await.unwrap();
    ready_at(&c, 9, 6).await;
    let load = Load::start(&c, 4);
    load.more(50).await;
    let acked = load.stop().await;
    let (n, seq) = strong_count(&c).await;
    assert_eq!(n, 6000 + acked);
    all_applied(&c, seq, DEADLINE).await;
    let ids = running(&c);
    let c = Arc::new(c);
    let c2 = c.clone();
    let stop = actix::spawn(async move { c2.stop().await });
    if at_worker {
        eventually("the stop to reach worker 9", DEADLINE, || async {
            !running(&c).contains(&9)
        })
        .await;
    }
    drop(held);
    stop.await.unwrap();
    let all = stores(dir.path(), &ids);
    assert!(
        all.iter().all(|s| *s == all[0]),
        "stores differ: {ids:?} {all:?}"
    );
    assert_eq!(all[0].0, seq);
    (dir, acked)
}

/// [`graceful_stop_while_held`], let go once the stop is at the new
/// slave; a cluster started again over the stores serves all of it.
pub async fn attack_early_graceful_stop_while_held(b: Arc<dyn Broker>) {
    let (dir, acked) = graceful_stop_while_held(b, true).await;
    let c = super::actors::cluster(
        &dir,
        1,
        Arc::new(dbaas::broker::inproc::InProcBroker::new()),
    )
    .await;
    let (n, _) = strong_count(&c).await;
    assert_eq!(n, 6000 + acked);
    c.stop().await;
}

/// The same, with the writing let go while the stop runs.
pub async fn attack_early_graceful_stop_released_during_stop(b: Arc<dyn Broker>) {
    graceful_stop_while_held(b, false).await;
}

fn ride(by: &str, t: i64, s: i64, d: i64) -> WriteOp {
    let row: Row = [
        ("created_by".to_owned(), Value::from(by)),
        ("timestamp".to_owned(), Value::Int(t)),
        ("source".to_owned(), Value::Int(s)),
        ("destination".to_owned(), Value::Int(d)),
        (
            "users".to_owned(),
            Value::List(vec![Value::from(by), Value::from("x")]),
        ),
    ]
    .into();
    WriteOp::InsertAuto {
        table: "rides".into(),
        row,
    }
}

fn odd_reads() -> Vec<ReadOp> {
    let c = |col: &str, op, v: Value| Cond {
        column: col.into(),
        op,
        value: v,
    };
    let sel = |filter: Vec<Cond>, order_by: Option<Order>, limit: Option<u64>| ReadOp::Select {
        table: "rides".into(),
        filter,
        columns: None,
        order_by,
        limit,
    };
    let idx = |t1: i64, o1, t2: i64, o2| {
        vec![
            c("source", CmpOp::Eq, Value::Int(1)),
            c("destination", CmpOp::Eq, Value::Int(2)),
            c("timestamp", o1, Value::Int(t1)),
            c("timestamp", o2, Value::Int(t2)),
        ]
    };
    vec![
        sel(idx(10, CmpOp::Gt, 5, CmpOp::Lt), None, None),
        sel(idx(10, CmpOp::Ge, 10, CmpOp::Lt), None, None),
        sel(idx(10, CmpOp::Gt, 10, CmpOp::Le), None, None),
        sel(idx(10, CmpOp::Ge, 10, CmpOp::Le), None, None),
        sel(idx(i64::MAX, CmpOp::Gt, i64::MIN, CmpOp::Lt), None, None),
        sel(idx(i64::MIN, CmpOp::Ge, i64::MAX, CmpOp::Le), None, Some(3)),
        sel(
            vec![
                c("source", CmpOp::Eq, Value::Int(1)),
                c("destination", CmpOp::Ne, Value::Int(2)),
            ],
            None,
            None,
        ),
        sel(
            vec![
                c("created_by", CmpOp::Gt, Value::from("u5")),
                c("created_by", CmpOp::Lt, Value::from("u2")),
            ],
            None,
            None,
        ),
        sel(
            vec![c("created_by", CmpOp::Eq, Value::from("u3"))],
            Some(Order {
                column: "timestamp".into(),
                desc: true,
            }),
            Some(0),
        ),
        sel(
            vec![c("users", CmpOp::Contains, Value::from("x"))],
            Some(Order {
                column: "ride_id".into(),
                desc: true,
            }),
            Some(7),
        ),
        sel(
            vec![c("timestamp", CmpOp::Lt, Value::Int(i64::MIN))],
            None,
            None,
        ),
        ReadOp::Count {
            table: "rides".into(),
            filter: idx(20, CmpOp::Ge, 3, CmpOp::Le),
        },
        ReadOp::Count {
            table: "users".into(),
            filter: vec![
                c("username", CmpOp::Gt, Value::from("w")),
                c("username", CmpOp::Lt, Value::from("a")),
            ],
        },
        ReadOp::Get {
            table: "users".into(),
            key: Value::from("nobody"),
            columns: None,
        },
    ]
}

/// Odd reads (inverted ranges, empty limits, list filters) served by a
/// new slave from its image: answered as its store on disk answers them
/// afterwards, nothing crashes.
pub async fn attack_early_odd_reads_served_from_the_image(b: Arc<dyn Broker>) {
    let dir = tempfile::tempdir().unwrap();
    let c = restarted_over_6000_users(&dir, b).await;
    for i in 0..60 {
        c.orchestrator
            .write(ride(&format!("u{}", i % 7), i % 25, i % 3, i % 4))
            .await
            .unwrap();
    }
    let held = hold(&dir, 9);
    c.runtime.start(spec(&c, 9)).await.unwrap();
    ready_at(&c, 9, 66).await;
    let (master, slaves) = roles(&c).await;
    for id in slaves.into_iter().filter(|&id| id != 9) {
        c.runtime.stop(id).await.unwrap();
    }
    let mut early = Vec::new();
    for op in odd_reads() {
        let r = c.orchestrator.read(op.clone(), Consistency::Strong).await;
        early.push(r.map(|r| r.result).map_err(|e| e.to_string()));
    }
    assert!(early.iter().all(|r| r.is_ok()), "{early:?}");
    drop(held);
    // Still serving afterwards (nothing crashed).
    let (n, _) = strong_count(&c).await;
    assert_eq!(n, 6000);
    c.stop().await;
    let s = super::store(dir.path(), 9);
    let m = super::store(dir.path(), master.unwrap());
    for (op, got) in odd_reads().iter().zip(&early) {
        let on_disk = s.read(op).map_err(|e| e.to_string());
        let master = m.read(op).map_err(|e| e.to_string());
        assert_eq!(
            &on_disk, got,
            "{op:?}: the image answered otherwise than the disk"
        );
        assert_eq!(
            &master, got,
            "{op:?}: the image answered otherwise than the master"
        );
    }
}

/// A stop of the cluster while the new slave's writing never ends (held
/// throughout): the runtime's stop says a clean stop may take
/// `STOP_TIMEOUT` (10 s) before the worker is killed, so the cluster's
/// stop must end within a bound, whatever the store does.
pub async fn attack_early_stop_is_bounded_while_the_writing_never_ends(b: Arc<dyn Broker>) {
    let dir = tempfile::tempdir().unwrap();
    let c = restarted_over_6000_users(&dir, b).await;
    let _held = hold(&dir, 9);
    c.runtime.start(spec(&c, 9)).await.unwrap();
    ready_at(&c, 9, 6).await;
    let c = Arc::new(c);
    let c2 = c.clone();
    let done = Arc::new(AtomicU64::new(0));
    let d = done.clone();
    actix::spawn(async move {
        c2.stop().await;
        d.store(1, Ordering::SeqCst);
    });
    eventually(
        "the cluster's stop to end (10 s per worker at most, then killed)",
        std::time::Duration::from_secs(45),
        || async { done.load(Ordering::SeqCst) == 1 },
    )
    .await;
}
