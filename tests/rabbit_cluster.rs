//! RabbitMQ as a cluster of three nodes on this host (`scripts/services
//! rabbit-cluster-*`, started by `scripts/test`, which sets
//! `DBAAS_TEST_AMQP_CLUSTER` to their URLs), with quorum queues: the broker
//! semantics hold over it, a client moves to the next node when its node
//! dies, and the system under a steady mixed load (writes, eventual and
//! strong reads) loses nothing when the node holding its queues' leaders
//! is SIGKILLed. A test binary of its
//! own; its tests take turns, since they kill nodes of the one cluster.

mod suite;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dbaas::broker::amqp::{AmqpBroker, QueueType};
use dbaas::broker::{conformance, Broker, Message, QueueKind, WRITE_Q};
use dbaas::model::{Consistency, ReadResult};
use futures::StreamExt;
use suite::clusters::rabbits::{self, all_up, fresh_vhost, kill, launch, leader};
use suite::{eventually, fresh_zk, master_id, process_cluster_at, Load, ZK_SESSION};

/// One test at a time kills nodes.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const DEADLINE: Duration = Duration::from_secs(60);

#[actix::test]
async fn quorum_queues_keep_the_broker_semantics() {
    let Some(urls) = rabbits::urls() else { return };
    let _turn = SERIAL.lock().await;
    all_up().await;
    let (_, list) = fresh_vhost(&urls);
    let b = AmqpBroker::connect(&list)
        .await
        .expect("the cluster answers");
    assert_eq!(b.queue_type(), QueueType::Quorum, "the default for a list");
    conformance::run_all_quorum(&b).await;
    // The orchestrator's writes go to the newly elected master first
    // (`Broker::consume_ranked`): the conformance check of priorities
    // uses a transient (classic) queue; `writeQ` is a quorum queue here.
    let q = "priority.quorum";
    b.declare_queue(q, QueueKind::Durable).await.unwrap();
    let mut low = b.consume_ranked(q, 10, 1).await.unwrap();
    let mut high = b.consume_ranked(q, 10, 5).await.unwrap();
    for i in 0..3 {
        b.publish(q, Message::new(vec![i])).await.unwrap();
    }
    for i in 0..3 {
        let d = tokio::time::timeout(Duration::from_secs(10), high.next())
            .await
            .expect("a delivery to the higher consumer")
            .unwrap();
        assert_eq!(d.message.body, [i]);
        d.ack().await.unwrap();
    }
    let none = tokio::time::timeout(Duration::from_millis(200), low.next()).await;
    assert!(none.is_err(), "the lower consumer got a message");
}

/// Publishes numbered messages one after another, each until it is
/// confirmed (a failed publish is made again: the consumer deduplicates);
/// the numbers confirmed.
fn publisher(b: Arc<AmqpBroker>, q: &'static str, stop: Arc<AtomicBool>) -> PublisherTask {
    let confirmed = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(AtomicU64::new(0));
    let (c, e) = (confirmed.clone(), errors.clone());
    let task = actix::spawn(async move {
        let mut n: u64 = 0;
        while !stop.load(Ordering::Relaxed) {
            let body = n.to_be_bytes().to_vec();
            match b.publish(q, Message::new(body)).await {
                Ok(()) => {
                    c.lock().unwrap().push(n);
                    n += 1;
                }
                Err(err) => {
                    assert!(
                        matches!(err, dbaas::error::Error::Unavailable(_)),
                        "a publish failed so: {err}"
                    );
                    e.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    });
    PublisherTask {
        confirmed,
        errors,
        task,
    }
}

struct PublisherTask {
    confirmed: Arc<Mutex<Vec<u64>>>,
    errors: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl PublisherTask {
    fn count(&self) -> usize {
        self.confirmed.lock().unwrap().len()
    }
}

/// Consumes `q` until stopped, subscribing again whenever its stream ends
/// (its node died); every body received, and how often it subscribed.
fn consumer(b: Arc<AmqpBroker>, q: &'static str, stop: Arc<AtomicBool>) -> ConsumerTask {
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let s = seen.clone();
    let task = actix::spawn(async move {
        let mut subscriptions = 0;
        while !stop.load(Ordering::Relaxed) {
            let Ok(mut c) = b.consume(q, 50).await else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            subscriptions += 1;
            loop {
                let next = tokio::time::timeout(Duration::from_millis(200), c.next()).await;
                match next {
                    Ok(Some(d)) => {
                        let n = u64::from_be_bytes(d.message.body[..8].try_into().unwrap());
                        s.lock().unwrap().insert(n);
                        // A failed ack redelivers it: a duplicate, borne.
                        let _ = d.ack().await;
                    }
                    Ok(None) => break,
                    Err(_) if stop.load(Ordering::Relaxed) => break,
                    Err(_) => {}
                }
            }
        }
        subscriptions
    });
    ConsumerTask { seen, task }
}

struct ConsumerTask {
    seen: Arc<Mutex<BTreeSet<u64>>>,
    task: tokio::task::JoinHandle<u32>,
}

#[actix::test]
async fn a_client_moves_to_the_next_node_when_its_node_dies_and_loses_no_confirmed_message() {
    let Some(urls) = rabbits::urls() else { return };
    let _turn = SERIAL.lock().await;
    all_up().await;
    let (vhost, list) = fresh_vhost(&urls);
    const Q: &str = "moves";
    let pb = Arc::new(AmqpBroker::connect(&list).await.unwrap());
    let cb = Arc::new(AmqpBroker::connect(&list).await.unwrap());
    pb.declare_queue(Q, QueueKind::Durable).await.unwrap();
    // Both clients and the queue's leader (declared from it: client-local)
    // on the first node.
    assert_eq!((pb.node(), cb.node()), (Some(0), Some(0)));
    // A node that does not answer is passed over at once.
    let dead_first = format!("amqp://guest:guest@127.0.0.1:1/{vhost},{list}");
    let passed = AmqpBroker::connect(&dead_first).await.unwrap();
    assert_eq!(passed.node(), Some(1));
    assert_eq!(passed.depth(Q).await.unwrap(), Some(0));
    drop(passed);
    assert_eq!(leader(&vhost, Q).await, 1);
    let stop = Arc::new(AtomicBool::new(false));
    let p = publisher(pb.clone(), Q, stop.clone());
    let c = consumer(cb.clone(), Q, stop.clone());
    eventually("publishes under way", DEADLINE, || async {
        p.count() > 200
    })
    .await;
    // SIGKILLed with publishes between publish and confirm (the publisher
    // never waits between two).
    kill(1).await;
    let at_kill = p.count();
    eventually("publishes confirmed again", DEADLINE, || async {
        p.count() > at_kill + 200
    })
    .await;
    assert_ne!(pb.node(), Some(0), "the publisher moved to another node");
    launch(1).await;
    // The queue's leader moved off the dead node; the node back, the
    // leader's node dies too.
    let second = leader(&vhost, Q).await;
    assert_ne!(second, 1);
    let before = p.count();
    kill(second).await;
    eventually(
        "publishes confirmed after the second kill",
        DEADLINE,
        || async { p.count() > before + 200 },
    )
    .await;
    launch(second).await;
    let (confirmed, errors, subscriptions) =
        every_confirmed_message_arrives(cb, Q, stop, p, c).await;
    eprintln!(
        "{confirmed} messages confirmed, {errors} publishes failed and made again, \
         the consumer subscribed {subscriptions} times"
    );
    assert!(
        subscriptions >= 2,
        "the consumer lost its node once at least"
    );
}

/// Stops `p` and `c`, then consumes `q` until every message `p` had
/// confirmed has been seen (at least once); how many were confirmed, how
/// many publishes failed, and how often `c` subscribed.
async fn every_confirmed_message_arrives(
    b: Arc<AmqpBroker>,
    q: &'static str,
    stop: Arc<AtomicBool>,
    p: PublisherTask,
    c: ConsumerTask,
) -> (usize, u64, u32) {
    stop.store(true, Ordering::Relaxed);
    p.task.await.unwrap();
    let confirmed = p.confirmed.lock().unwrap().clone();
    let want: BTreeSet<u64> = confirmed.iter().copied().collect();
    let stop_c = Arc::new(AtomicBool::new(false));
    let drain = consumer(b, q, stop_c.clone());
    let (seen, all) = (c.seen.clone(), drain.seen.clone());
    eventually("every confirmed message consumed", DEADLINE, || {
        let (seen, all, want) = (seen.clone(), all.clone(), &want);
        async move {
            let got: BTreeSet<u64> = seen
                .lock()
                .unwrap()
                .union(&all.lock().unwrap())
                .copied()
                .collect();
            want.is_subset(&got)
        }
    })
    .await;
    stop_c.store(true, Ordering::Relaxed);
    let subscriptions = c.task.await.unwrap();
    drain.task.await.unwrap();
    (
        confirmed.len(),
        p.errors.load(Ordering::Relaxed),
        subscriptions,
    )
}

/// The queue's leader alone dies, on a node no client is connected to:
/// publishes in flight to it are sent again to the new leader by the
/// broker, or nacked (then the publisher takes a new connection: a
/// channel that saw a nack may go on nacking); either way the publisher
/// carries on, and every confirmed message arrives.
#[actix::test]
async fn a_publisher_whose_queue_leader_dies_on_another_node_publishes_again() {
    let Some(urls) = rabbits::urls() else { return };
    let _turn = SERIAL.lock().await;
    all_up().await;
    let (vhost, list) = fresh_vhost(&urls);
    const Q: &str = "leaderdies";
    // Declared from the third node: its leader is there (client-local).
    let nodes: Vec<&str> = list.split(',').collect();
    let third_first = [nodes[2], nodes[0], nodes[1]].join(",");
    let declarer = AmqpBroker::connect(&third_first).await.unwrap();
    declarer.declare_queue(Q, QueueKind::Durable).await.unwrap();
    drop(declarer);
    assert_eq!(leader(&vhost, Q).await, 3);
    let pb = Arc::new(AmqpBroker::connect(&list).await.unwrap());
    let cb = Arc::new(AmqpBroker::connect(&list).await.unwrap());
    assert_eq!((pb.node(), cb.node()), (Some(0), Some(0)));
    let stop = Arc::new(AtomicBool::new(false));
    let p = publisher(pb.clone(), Q, stop.clone());
    let c = consumer(cb.clone(), Q, stop.clone());
    eventually("publishes under way", DEADLINE, || async {
        p.count() > 200
    })
    .await;
    kill(3).await;
    let at_kill = p.count();
    eventually("publishes confirmed again", DEADLINE, || async {
        p.count() > at_kill + 200
    })
    .await;
    assert_ne!(leader(&vhost, Q).await, 3);
    launch(3).await;
    let (confirmed, errors, subscriptions) =
        every_confirmed_message_arrives(cb, Q, stop, p, c).await;
    eprintln!(
        "{confirmed} messages confirmed, {errors} publishes failed and made again, \
         the consumer subscribed {subscriptions} times"
    );
}

#[actix::test]
async fn killing_the_rabbitmq_node_of_the_queue_leaders_under_load_loses_nothing() {
    let Some(urls) = rabbits::urls() else { return };
    let _turn = SERIAL.lock().await;
    all_up().await;
    let (vhost, list) = fresh_vhost(&urls);
    let Some(zk) = fresh_zk(ZK_SESSION) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let c = process_cluster_at(dir.path(), 2, &list, &zk, None).await;
    master_id(&c).await;
    // Writes (each acknowledged, none failing) and eventual reads (each
    // answered): a client may wait longer across the kill, within the
    // orchestrator's request deadline, but sees no error.
    let load = Arc::new(Load::start(&c, 4).with_readers(&c, 2));
    // And strong reads, each answered, never counting fewer users than
    // were acknowledged before it was asked.
    let stop_strong = Arc::new(AtomicBool::new(false));
    let strong = {
        let (orch, load, stop) = (c.orchestrator.clone(), load.clone(), stop_strong.clone());
        actix::spawn(async move {
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let floor = load.acked();
                let r = orch
                    .read(suite::count_users(), Consistency::Strong)
                    .await
                    .expect("every strong read answered");
                let ReadResult::Count(n) = r.result else {
                    panic!("not a count: {r:?}");
                };
                assert!(
                    n >= floor,
                    "a strong read counted {n} < {floor} acknowledged"
                );
                reads += 1;
            }
            reads
        })
    };
    load.more(50).await;
    let mut killed = Vec::new();
    for _ in 0..2 {
        // The node holding `writeQ`'s leader (the first time also every
        // client's connection: all connect to the first node first).
        let victim = leader(&vhost, WRITE_Q).await;
        kill(victim).await;
        killed.push(victim);
        load.more(50).await;
        load.more_reads(50).await;
        launch(victim).await;
        load.more(50).await;
    }
    stop_strong.store(true, Ordering::Relaxed);
    let strong_reads = strong.await.expect("the strong reader finished");
    eprintln!("killed nodes {killed:?}, each holding writeQ's leader; {strong_reads} strong reads");
    let Ok(load) = Arc::try_unwrap(load) else {
        panic!("the load is shared still");
    };
    let acked = load.stop().await;
    suite::nothing_lost_and_alike(c, dir.path(), acked).await;
}
