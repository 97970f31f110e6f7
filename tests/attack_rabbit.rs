//! Attacks on the system over a RabbitMQ cluster of three nodes with
//! quorum queues (`scripts/services rabbit-cluster-*`; `scripts/test` sets
//! `DBAAS_TEST_AMQP_CLUSTER` to their URLs): nodes SIGKILLed or paused at
//! the worst moments under steady writes and reads, two of three down (no
//! quorum), every node restarted in turn or all at once, queues of another
//! type left on the virtual host by an earlier run, and a node lost while
//! the master fails over or a slave catches up. After each: every
//! acknowledged write is there, once; the replicas agree; no worker died
//! that the test did not kill; and a master leads a settled cluster again.
//!
//! A test binary of its own; its tests take turns on the one cluster, and
//! each leaves every node running.

mod suite;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dbaas::actors::scaler::{ScaleNow, ScalePolicy};
use dbaas::actors::watcher::GetCluster;
use dbaas::broker::amqp::AmqpBroker;
use dbaas::broker::{self, Broker, Message, READ_Q, WRITE_Q};
use dbaas::error::Error;
use dbaas::model::{Consistency, ReadOp, ReadResult, Value, WriteResult};
use dbaas::system::Cluster;
use suite::clusters::rabbits::{self, all_up, ctl, fresh_vhost, kill, launch, leader, queue_types};
use suite::{
    all_applied, eventually, fresh_zk, master_id, process_cluster_at, roles, running, services,
    stores, user, Load, ZK_SESSION,
};

/// One test at a time kills nodes.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const DEADLINE: Duration = Duration::from_secs(60);
/// How long the cluster may take to lead and serve again once the broker
/// has a quorum again.
const SETTLE: Duration = Duration::from_secs(90);

/// Starts the nodes together (after all were down, each waits for the
/// others at boot), and waits until each runs in the cluster.
async fn launch_together(nodes: &[usize]) {
    let starts: Vec<_> = nodes.iter().map(|&n| launch(n)).collect();
    futures::future::join_all(starts).await;
}

/// Node `node` paused (SIGSTOP) until dropped (SIGCONT): its clients'
/// connections hang rather than break.
struct Paused(u64);

impl Paused {
    fn node(node: usize) -> Paused {
        let pid: u64 = services(&["rabbit-cluster-pid", &node.to_string()])
            .parse()
            .expect("a pid");
        suite::signal(pid, libc::SIGSTOP);
        Paused(pid)
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        suite::signal(self.0, libc::SIGCONT);
    }
}

/// A cluster of worker processes (a master and `slaves`) on the virtual
/// host of `list`, with a ZooKeeper root of its own.
async fn start(dir: &Path, slaves: usize, list: &str) -> Option<Cluster> {
    let zk = fresh_zk(ZK_SESSION)?;
    let c = process_cluster_at(dir, slaves, list, &zk, None).await;
    master_id(&c).await;
    Some(c)
}

/// Waits until a master leads `workers` running workers, none being
/// started, and the orchestrator's writes and strong reads are served.
async fn settled(c: &Cluster, workers: usize) {
    eventually("a settled cluster", SETTLE, || async {
        let v = c.watcher.send(GetCluster).await.unwrap();
        v.master.is_some()
            && v.starting == 0
            && v.workers.len() == workers
            && running(c).len() == workers
            && roles(c).await.0.is_some()
    })
    .await;
    c.orchestrator
        .write(user(&format!("settled-{}", fastrand::u64(..))))
        .await
        .expect("a write after the faults");
    c.orchestrator
        .read(suite::count_users(), Consistency::Strong)
        .await
        .expect("a strong read after the faults");
}

/// No worker died or hung that the test did not kill: the watcher saw no
/// death, and no election past the first.
async fn no_worker_died(c: &Cluster) {
    let v = c.watcher.send(GetCluster).await.unwrap();
    for kind in ["death", "hung"] {
        assert_eq!(
            v.totals.get(kind),
            None,
            "the watcher saw a worker's {kind}: {:?}",
            v.events
        );
    }
}

/// A strong reader: every read it gets answered counts at least the
/// writes acknowledged before it asked. Reads may fail (with 503) only if
/// `may_fail`.
struct StrongReads {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(u64, u64)>,
}

impl StrongReads {
    fn start(c: &Cluster, acked: impl Fn() -> u64 + 'static, may_fail: bool) -> StrongReads {
        let stop = Arc::new(AtomicBool::new(false));
        let (orch, s) = (c.orchestrator.clone(), stop.clone());
        let task = actix::spawn(async move {
            let (mut served, mut failed) = (0, 0);
            while !s.load(Ordering::Relaxed) {
                let floor = acked();
                match orch.read(suite::count_users(), Consistency::Strong).await {
                    Ok(r) => {
                        let ReadResult::Count(n) = r.result else {
                            panic!("not a count: {r:?}");
                        };
                        assert!(
                            n >= floor,
                            "a strong read counted {n} < {floor} acknowledged"
                        );
                        served += 1;
                    }
                    Err(Error::Unavailable(e)) if may_fail => {
                        assert!(!e.is_empty());
                        failed += 1;
                    }
                    Err(e) => panic!("a strong read failed so: {e}"),
                }
            }
            (served, failed)
        });
        StrongReads { stop, task }
    }

    /// Stops it; how many reads were served and how many failed.
    async fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("the strong reader held")
    }
}

/// Writers of users that may see writes fail (503: the outcome unknown),
/// and keep writing; what was acknowledged, and what failed.
struct Attempts {
    acked: Arc<Mutex<Vec<String>>>,
    failed: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Attempts {
    fn start(c: &Cluster, writers: u64) -> Attempts {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..writers)
            .map(|w| {
                let orch = c.orchestrator.clone();
                let (acked, failed, stop) = (acked.clone(), failed.clone(), stop.clone());
                actix::spawn(async move {
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let name = format!("a{w}-{i}");
                        i += 1;
                        match orch.write(user(&name)).await {
                            Ok(r) => {
                                assert!(
                                    matches!(r.result, WriteResult::Inserted { .. }),
                                    "{name}: {r:?}"
                                );
                                acked.lock().unwrap().push(name);
                            }
                            Err(Error::Unavailable(e)) => {
                                assert!(!e.is_empty());
                                failed.lock().unwrap().push(name);
                            }
                            Err(e) => panic!("write {name} failed so: {e}"),
                        }
                    }
                })
            })
            .collect();
        Attempts {
            acked,
            failed,
            stop,
            tasks,
        }
    }

    fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    fn failed(&self) -> usize {
        self.failed.lock().unwrap().len()
    }

    fn counter(&self) -> impl Fn() -> u64 + 'static {
        let acked = self.acked.clone();
        move || acked.lock().unwrap().len() as u64
    }

    async fn more_acked(&self, n: usize) {
        let target = self.acked() + n;
        eventually("writes to be acknowledged", SETTLE, || async {
            self.acked() >= target
        })
        .await;
    }

    async fn more_failed(&self, n: usize) {
        let target = self.failed() + n;
        eventually("writes to fail", SETTLE, || async {
            self.failed() >= target
        })
        .await;
    }

    /// Stops them; the names acknowledged and those that failed.
    async fn stop(self) -> (BTreeSet<String>, BTreeSet<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("a writer held");
        }
        let acked = self.acked.lock().unwrap().iter().cloned().collect();
        let failed = self.failed.lock().unwrap().iter().cloned().collect();
        (acked, failed)
    }
}

/// Every acknowledged user there (once: the key is unique), nothing but
/// what was written (a failed write may or may not have been applied),
/// every worker has applied it all, and, once stopped, every worker's
/// store alike.
async fn acknowledged_there_and_alike(
    c: Cluster,
    dir: &Path,
    acked: &BTreeSet<String>,
    failed: &BTreeSet<String>,
) {
    let all = ReadOp::Select {
        table: "users".into(),
        filter: vec![],
        columns: Some(vec!["username".into()]),
        order_by: None,
        limit: None,
    };
    let r = c
        .orchestrator
        .read(all, Consistency::Strong)
        .await
        .expect("a strong read of every user");
    let seq = r.seq;
    let names: BTreeSet<String> = r
        .result
        .into_rows()
        .into_iter()
        .filter_map(|row| match row.get("username") {
            Some(Value::Text(n)) => Some(n.clone()),
            _ => None,
        })
        .filter(|n| !n.starts_with("settled-"))
        .collect();
    let lost: Vec<_> = acked.difference(&names).collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    let invented: Vec<_> = names
        .iter()
        .filter(|n| !acked.contains(*n) && !failed.contains(*n))
        .collect();
    assert!(invented.is_empty(), "users nobody wrote: {invented:?}");
    all_applied(&c, seq, DEADLINE).await;
    let ids = running(&c);
    c.stop().await;
    let all = stores(dir, &ids);
    assert!(all.iter().all(|s| *s == all[0]), "workers differ: {all:?}");
    let late = names.len() - acked.len();
    eprintln!(
        "{} acknowledged, {} failed ({late} of them applied after all)",
        acked.len(),
        failed.len()
    );
}

/// The leader of every kind of queue the system uses in turn (`writeQ`,
/// `readQ`, a slave's own sync queue, the orchestrator's reply queue), its
/// node SIGKILLed under writes, eventual and strong reads, with publishes
/// always between publish and confirm; brought back before the next.
#[actix::test]
async fn the_node_of_each_queues_leader_killed_in_turn_under_load_loses_nothing() {
    let Some(urls) = rabbits::urls() else { return };
    let _turn = SERIAL.lock().await;
    all_up().await;
    let (vhost, list) = fresh_vhost(&urls);
    let dir = tempfile::tempdir().unwrap();
    let Some(c) = start(dir.path(), 2, &list).await else {
        return;
    };
    let load = Arc::new(Load::start(&c, 4).with_readers(&c, 2));
    let strong = {
        let load = load.clone();
        StrongReads::start(&c, move || load.acked(), false)
    };
    load.more(50).await;
    let slave = roles(&c).await.1[0];
    let replies = c.orchestrator.reply_queue().await.unwrap();
    let sync = broker::sync_queue(slave);
    let mut killed = Vec::new();
    for queue in [WRITE_Q, READ_Q, sync.as_str(), replies.as_str(), WRITE_Q] {
        let victim = leader(&vhost, queue).await;
        kill(victim).await;
        killed.push((queue.to_owned(), victim));
        load.more(50).await;
        load.more_reads(50).await;
        launch(victim).await;
        load.more(50).await;
    }
    let (served, _) = strong.stop().await;
    eprintln!("killed (queue, node): {killed:?}; {served} strong reads");
    settled(&c, 3).await;
    no_worker_died(&c).await;
    let Ok(load) = Arc::try_unwrap(load) else {
        panic!("the load is shared still");
    };
    let acked = load.stop().await;
    // The write `settled` made.
    suite::nothing_lost_and_alike(c, dir.path(), acked + 1).await;
}

/// A run under writes: a fresh virtual host, a master and two slaves on
/// it, four writers and a strong reader, 50 writes acknowledged.
struct UnderWrites {
    vhost: String,
    dir: tempfile::TempDir,
    c: Cluster,
    w: Attempts,
    strong: StrongReads,
}

impl UnderWrites {
    async fn start(urls: &str) -> Option<UnderWrites> {
        all_up().await;
        let (vhost, list) = fresh_vhost(urls);
        let dir = tempfile::tempdir().unwrap();
        let c = start(dir.path(), 2, &list).await?;
        let w = Attempts::start(&c, 4);
        let strong = StrongReads::start(&c, w.counter(), true);
        w.more_acked(50).await;
        Some(UnderWrites {
            vhost,
            dir,
            c,
            w,
            strong,
        })
    }

    /// Stops the reads; once every node runs again and `workers` workers
    /// have settled, every acknowledged write is there, and the stores
    /// are alike.
    async fn check(self, workers: usize) {
        let (served, failed_reads) = self.strong.stop().await;
        eprintln!("{served} strong reads served, {failed_reads} failed");
        all_up().await;
        settled(&self.c, workers).await;
        let (acked, failed) = self.w.stop().await;
        acknowledged_there_and_alike(self.c, self.dir.path(), &acked, &failed).await;
    }
}

/// A node paused (SIGSTOP): the connections to it hang instead of
/// breaking, and a queue leader on it is neither dead nor answering.
/// First the node every client connected to (the first of the list), then
/// the node holding `writeQ`'s leader; each is resumed only once writes
/// are acknowledged again without it.
#[actix::test]
async fn a_paused_node_holds_up_writes_and_reads_only_for_a_while() {
    let Some(urls) = rabbits::urls() else { return };
    let _turn = SERIAL.lock().await;
    let Some(run) = UnderWrites::start(&urls).await else {
        return;
    };
    let w = &run.w;
    for round in 0..2 {
        // The node paused last, counted gone by the others meanwhile,
        // is restarted by autoheal once back, and joins again.
        all_up().await;
        let node = if round == 0 {
            1
        } else {
            leader(&run.vhost, WRITE_Q).await
        };
        let paused = Paused::node(node);
        let failed = w.failed();
        let at = Instant::now();
        w.more_acked(50).await;
        let took = at.elapsed();
        drop(paused);
        w.more_acked(50).await;
        eprintln!(
            "round {round}: node {node} paused; 50 writes acknowledged in {took:?}, \
             {} failed meanwhile",
            w.failed() - failed
        );
    }
    no_worker_died(&run.c).await;
    run.check(3).await;
}

/// The node of `writeQ`'s leader paused for 3 s, shorter than the net
/// tick (nobody counts it gone: no partition), three times under writes
/// and strong reads: writes wait while it hangs and go on once it is back.
#[actix::test]
async fn a_node_paused_briefly_again_and_again_loses_nothing() {
    let Some(urls) = rabbits::urls() else { return };
    let _turn = SERIAL.lock().await;
    let Some(run) = UnderWrites::start(&urls).await else {
        return;
    };
    for _ in 0..3 {
        let paused = Paused::node(leader(&run.vhost, WRITE_Q).await);
        // The fault's length, not a wait for anything.
        tokio::time::sleep(Duration::from_secs(3)).await;
        drop(paused);
        run.w.more_acked(20).await;
    }
    run.check(3).await;
}

/// The master SIGKILLed while node 1 hangs: the node every process tries
/// first, so each worker started again meets it in its first handshake,
/// which a hung node accepts and never answers. (Seen: the worker whose
/// store had to lead was started again and elected every two seconds,
/// and killed each time for not taking the lead in time, still waiting
/// for node 1; no master until the node came back.) A master must lead
/// and writes go on while the node still hangs.
#[actix::test]
async fn the_master_killed_while_the_first_node_hangs_is_replaced() {
    let Some(urls) = rabbits::urls() else { return };
    let _turn = SERIAL.lock().await;
    let Some(run) = UnderWrites::start(&urls).await else {
        return;
    };
    let c = &run.c;
    let (master, epoch) = (master_id(c).await, c.epoch().await);
    let paused = Paused::node(1);
    c.runtime.kill(master).await.unwrap();
    eventually("a master while node 1 hangs", DEADLINE, || async {
        c.epoch().await > epoch && roles(c).await.0.is_some()
    })
    .await;
    run.w.more_acked(20).await;
    drop(paused);
    run.check(3).await;
}

/// Bindings of a virtual host whose queue is gone.
fn dangling_bindings(vhost: &str) -> Vec<String> {
    let list = ["--no-table-headers", "-q"];
    let queues: BTreeSet<String> = ctl(
        1,
        &[&["list_queues", "-p", vhost][..], &list, &["name"]].concat(),
    )
    .lines()
    .map(|l| l.trim().to_owned())
    .collect();
    let fields = ["source_name", "destination_name", "destination_kind"];
    ctl(
        1,
        &[&["list_bindings", "-p", vhost][..], &list, &fields].concat(),
    )
    .lines()
    .filter(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() == 3 && f[2] == "queue" && !queues.contains(f[1])
    })
    .map(str::to_owned)
    .collect()
}

/// The Scaler retires a slave while the node leading its sync queue
/// hangs: the slave's delete hangs too, and it stops after its bounded
/// tries. Once the node is back, no binding is left without its queue
/// (which would make the broker refuse every sync), and writes go on.
#[actix::test]
async fn a_slave_retired_while_its_sync_queues_node_hangs_leaves_no_binding_behind() {
    let Some(urls) = rabbits::urls() else { return };
    let _turn = SERIAL.lock().await;
    let Some(mut run) = UnderWrites::start(&urls).await else {
        return;
    };
    // (However many strong reads were made, the decision is one slave.)
    run.c.start_scaler(ScalePolicy {
        reads_per_slave: 1_000_000,
        ..suite::scaler::policy(Duration::from_secs(3600))
    });
    let (c, scaler) = (&run.c, run.c.scaler.clone().unwrap());
    // The highest pid goes first.
    let master = master_id(c).await;
    let retired = c
        .runtime
        .list()
        .into_iter()
        .filter(|x| x.id != master)
        .max_by_key(|x| x.pid)
        .unwrap();
    let paused = Paused::node(leader(&run.vhost, &broker::sync_queue(retired.id)).await);
    let down = scaler.send(ScaleNow).await.unwrap().unwrap();
    assert_eq!((down.from, down.to), (2, 1));
    eventually("the slave retired", DEADLINE, || async {
        c.runtime.list().iter().all(|x| x.id != retired.id)
    })
    .await;
    drop(paused);
    all_up().await;
    run.w.more_acked(50).await;
    // (rabbitmqctl takes a second or two: off the runtime's thread.)
    let vhost = run.vhost.clone();
    let dangling = tokio::task::spawn_blocking(move || dangling_bindings(&vhost))
        .await
        .unwrap();
    assert!(
        dangling.is_empty(),
        "bindings without their queue: {dangling:?}"
    );
    run.check(2).await;
}

/// Two nodes of three SIGKILLed: the quorum queues have no quorum. No
/// write is acknowledged meanwhile (each fails with 503, its outcome
/// unknown), strong reads fail or count every acknowledged write; both
/// back, writes are acknowledged again, the cluster settles and every
/// acknowledged write is there.
#[actix::test]
async fn two_nodes_of_three_down_acknowledge_nothing_and_everything_recovers() {
    let Some(urls) = rabbits::urls() else { return };
    let _turn = SERIAL.lock().await;
    all_up().await;
    let (vhost, list) = fresh_vhost(&urls);
    let dir = tempfile::tempdir().unwrap();
    let Some(c) = start(dir.path(), 2, &list).await else {
        return;
    };
    let w = Attempts::start(&c, 4);
    let strong = StrongReads::start(&c, w.counter(), true);
    w.more_acked(50).await;
    // writeQ's leader's node and one more.
    let first = leader(&vhost, WRITE_Q).await;
    let second = first % 3 + 1;
    kill(first).await;
    kill(second).await;
    // What was under way when they died is settled one way or the other
    // by the request deadline; after that, nothing more is acknowledged.
    w.more_failed(4).await;
    let acked_then = w.acked();
    w.more_failed(8).await;
    assert_eq!(
        w.acked(),
        acked_then,
        "writes acknowledged without a quorum of the broker"
    );
    // (A node started waits until it sees the whole cluster running:
    // both come back together.)
    launch_together(&[second, first]).await;
    w.more_acked(50).await;
    let (served, failed_reads) = strong.stop().await;
    eprintln!("{served} strong reads served, {failed_reads} failed");
    settled(&c, 3).await;
    let (acked, failed) = w.stop().await;
    acknowledged_there_and_alike(c, dir.path(), &acked, &failed).await;
}

/// Every node restarted in turn (SIGKILL, then started on its data) under
/// writes, eventual and strong reads: one node down at a time, so no
/// client sees an error.
#[actix::test]
async fn a_rolling_restart_of_every_node_under_load_loses_nothing() {
    let Some(urls) = rabbits::urls() else { return };
    let _turn = SERIAL.lock().await;
    all_up().await;
    let (_, list) = fresh_vhost(&urls);
    let dir = tempfile::tempdir().unwrap();
    let Some(c) = start(dir.path(), 2, &list).await else {
        return;
    };
    let load = Arc::new(Load::start(&c, 4).with_readers(&c, 2));
    let strong = {
        let load = load.clone();
        StrongReads::start(&c, move || load.acked(), false)
    };
    load.more(50).await;
    for node in [1, 2, 3, 1] {
        kill(node).await;
        load.more(50).await;
        load.more_reads(20).await;
        launch(node).await;
        load.more(50).await;
    }
    let (served, _) = strong.stop().await;
    eprintln!("{served} strong reads");
    settled(&c, 3).await;
    no_worker_died(&c).await;
    let Ok(load) = Arc::try_unwrap(load) else {
        panic!("the load is shared still");
    };
    let acked = load.stop().await;
    suite::nothing_lost_and_alike(c, dir.path(), acked + 1).await;
}

/// Every node SIGKILLed at once under writes and started again together:
/// writes fail meanwhile (503), and once the broker is back the cluster
/// settles with every acknowledged write (the quorum queues kept what
/// they had confirmed on disk).
#[actix::test]
async fn every_node_killed_at_once_and_started_again_loses_nothing() {
    let Some(urls) = rabbits::urls() else { return };
    let _turn = SERIAL.lock().await;
    all_up().await;
    let (_, list) = fresh_vhost(&urls);
    let dir = tempfile::tempdir().unwrap();
    let Some(c) = start(dir.path(), 2, &list).await else {
        return;
    };
    let w = Attempts::start(&c, 4);
    let strong = StrongReads::start(&c, w.counter(), true);
    w.more_acked(100).await;
    futures::future::join_all([kill(1), kill(2), kill(3)]).await;
    w.more_failed(4).await;
    launch_together(&[1, 2, 3]).await;
    w.more_acked(100).await;
    let (served, failed_reads) = strong.stop().await;
    eprintln!("{served} strong reads served, {failed_reads} failed");
    settled(&c, 3).await;
    let (acked, failed) = w.stop().await;
    acknowledged_there_and_alike(c, dir.path(), &acked, &failed).await;
}

/// The master worker SIGKILLed together with the node holding `writeQ`'s
/// leader, under writes and strong reads: the election and the queue's
/// failover at once.
#[actix::test]
async fn the_master_and_the_node_of_write_qs_leader_killed_together_lose_nothing() {
    let Some(urls) = rabbits::urls() else { return };
    let _turn = SERIAL.lock().await;
    all_up().await;
    let (vhost, list) = fresh_vhost(&urls);
    let dir = tempfile::tempdir().unwrap();
    let Some(c) = start(dir.path(), 2, &list).await else {
        return;
    };
    let load = Arc::new(Load::start(&c, 4));
    let strong = {
        let load = load.clone();
        StrongReads::start(&c, move || load.acked(), false)
    };
    load.more(50).await;
    for _ in 0..2 {
        let (master, epoch) = (master_id(&c).await, c.epoch().await);
        let node = leader(&vhost, WRITE_Q).await;
        let (killed, ()) = futures::future::join(c.runtime.kill(master), kill(node)).await;
        killed.unwrap();
        eventually("a new master", DEADLINE, || async {
            c.epoch().await > epoch && roles(&c).await.0.is_some()
        })
        .await;
        load.more(50).await;
        launch(node).await;
        settled(&c, 3).await;
        load.more(50).await;
    }
    let (served, _) = strong.stop().await;
    eprintln!("{served} strong reads");
    let Ok(load) = Arc::try_unwrap(load) else {
        panic!("the load is shared still");
    };
    let acked = load.stop().await;
    // The writes `settled` made.
    suite::nothing_lost_and_alike(c, dir.path(), acked + 2).await;
}

/// A slave SIGKILLed under writes, and the node holding its sync queue's
/// leader (or `writeQ`'s, through which it asks for its snapshot) killed
/// as soon as it is started again, while it catches up.
#[actix::test]
async fn a_node_killed_while_a_replacement_slave_catches_up_loses_nothing() {
    let Some(urls) = rabbits::urls() else { return };
    let _turn = SERIAL.lock().await;
    all_up().await;
    let (vhost, list) = fresh_vhost(&urls);
    let dir = tempfile::tempdir().unwrap();
    let Some(c) = start(dir.path(), 2, &list).await else {
        return;
    };
    let load = Arc::new(Load::start(&c, 4).with_readers(&c, 2));
    load.more(200).await;
    for round in 0..2 {
        let slave = roles(&c).await.1[0];
        let pid = |id| {
            c.runtime
                .list()
                .into_iter()
                .find(|w| w.id == id)
                .map(|w| w.pid)
        };
        let old = pid(slave);
        c.runtime.kill(slave).await.unwrap();
        // Started again under its id: it takes a snapshot through
        // `writeQ` and catches up from its own sync queue.
        eventually("the slave started again", DEADLINE, || async {
            pid(slave).is_some_and(|p| Some(p) != old)
        })
        .await;
        let queue = if round == 0 {
            broker::sync_queue(slave)
        } else {
            WRITE_Q.to_owned()
        };
        let node = leader(&vhost, &queue).await;
        kill(node).await;
        load.more(50).await;
        launch(node).await;
        settled(&c, 3).await;
        load.more(50).await;
    }
    let Ok(load) = Arc::try_unwrap(load) else {
        panic!("the load is shared still");
    };
    let acked = load.stop().await;
    suite::nothing_lost_and_alike(c, dir.path(), acked + 2).await;
}

/// The queues of an earlier run of the system on the virtual host, of
/// the other queue type (`queue-type=` on the list) and with a message
/// left in `writeQ`; the system started now with `now` queues serves.
async fn queues_of_another_type_left(before: &str, now: &str) {
    let Some(urls) = rabbits::urls() else { return };
    let _turn = SERIAL.lock().await;
    all_up().await;
    let (vhost, list) = fresh_vhost(&urls);
    let earlier = AmqpBroker::connect(&format!("{list},queue-type={before}"))
        .await
        .unwrap();
    broker::declare_topology(&earlier).await.unwrap();
    earlier
        .publish(WRITE_Q, Message::new(b"left by an earlier run".to_vec()))
        .await
        .unwrap();
    drop(earlier);
    assert_eq!(
        queue_types(&vhost).get(READ_Q).map(String::as_str),
        Some(before)
    );
    let dir = tempfile::tempdir().unwrap();
    let Some(zk) = fresh_zk(ZK_SESSION) else {
        return;
    };
    let list = format!("{list},queue-type={now}");
    let c = process_cluster_at(dir.path(), 1, &list, &zk, None).await;
    master_id(&c).await;
    let w = Attempts::start(&c, 2);
    w.more_acked(50).await;
    settled(&c, 2).await;
    no_worker_died(&c).await;
    let types = queue_types(&vhost);
    eprintln!("{before} queues left, {now} now: {types:?}");
    assert_eq!(types.get(READ_Q).map(String::as_str), Some(now));
    let (acked, failed) = w.stop().await;
    assert!(failed.is_empty(), "writes failed: {failed:?}");
    acknowledged_there_and_alike(c, dir.path(), &acked, &failed).await;
}

#[actix::test]
async fn classic_queues_left_by_an_earlier_run_do_not_stop_a_quorum_system() {
    queues_of_another_type_left("classic", "quorum").await;
}

#[actix::test]
async fn quorum_queues_left_by_an_earlier_run_do_not_stop_a_classic_system() {
    queues_of_another_type_left("quorum", "classic").await;
}
