//! The behaviour every broker implementation must share, as one suite of
//! checks run against each (the in-process twin in unit tests, RabbitMQ in
//! the integration tests). Each check uses its own uniquely named queues.
//! The suite runs inside an actix system (`#[actix::test]`): one check
//! drops a consumer with the arbiter it lives on.

use std::time::Duration;

use futures::StreamExt;

use super::{Broker, Consumer, Delivery, Message, QueueKind};

const WAIT: Duration = Duration::from_secs(10);

fn unique(prefix: &str) -> String {
    format!("conformance.{prefix}.{}", fastrand::u64(..))
}

async fn next(c: &mut Consumer) -> Delivery {
    tokio::time::timeout(WAIT, c.next())
        .await
        .expect("a delivery within the deadline")
        .expect("the consumer is open")
}

async fn nothing_within(c: &mut Consumer, d: Duration) -> bool {
    tokio::time::timeout(d, c.next()).await.is_err()
}

fn msg(i: u8) -> Message {
    Message::new(vec![i])
}

/// Runs every check.
pub async fn run_all(b: &dyn Broker) {
    round_robin_over_consumers(b).await;
    higher_priority_consumers_first(b).await;
    prefetch_bounds_unacked(b).await;
    unacked_redelivered_when_consumer_leaves(b).await;
    nack_requeues_or_drops(b).await;
    ack_through_settles_the_earlier_ones(b).await;
    fanout_copies_to_every_bound_queue(b).await;
    reply_fields_travel(b).await;
    publish_to_a_missing_queue_is_dropped(b).await;
    publish_to_a_missing_exchange_fails(b).await;
    capped_queue_keeps_the_newest(b).await;
    capped_queue_counts_ready_messages_only(b).await;
    capped_declaration_replaces_another_kind(b).await;
    bounded_queue_refuses_publishes_over_its_cap(b).await;
    bounded_queue_drops_messages_past_their_ttl(b).await;
    bounded_declaration_replaces_only_an_idle_queue(b).await;
    unused_own_queue_expires(b).await;
    consumer_dropped_with_its_arbiter_gives_back(b).await;
    consumer_dropped_on_an_idle_runtime_gives_back(b).await;
    depth_counts_ready_messages(b).await;
}

/// Runs every check that RabbitMQ's quorum queues pass too (every durable
/// queue is one when the broker is a cluster): all of [`run_all`] but
/// three about caps, which quorum queues keep less exactly, with the
/// quorum versions of those three. The system relies on neither difference: a
/// bounded queue's cap (`writeQ`'s) is reached only while no master
/// consumes, and a sync queue one message over its cap is harmless.
pub async fn run_all_quorum(b: &dyn Broker) {
    round_robin_over_consumers(b).await;
    higher_priority_consumers_first(b).await;
    prefetch_bounds_unacked(b).await;
    unacked_redelivered_when_consumer_leaves(b).await;
    nack_requeues_or_drops(b).await;
    ack_through_settles_the_earlier_ones(b).await;
    fanout_copies_to_every_bound_queue(b).await;
    reply_fields_travel(b).await;
    publish_to_a_missing_queue_is_dropped(b).await;
    publish_to_a_missing_exchange_fails(b).await;
    capped_queue_keeps_the_newest(b).await;
    quorum_capped_queue_keeps_a_requeued_delivery(b).await;
    capped_declaration_replaces_another_kind(b).await;
    quorum_bounded_queue_refuses_publishes_past_its_cap(b).await;
    bounded_queue_drops_messages_past_their_ttl(b).await;
    quorum_bounded_declaration_replaces_only_an_idle_queue(b).await;
    unused_own_queue_expires(b).await;
    consumer_dropped_with_its_arbiter_gives_back(b).await;
    consumer_dropped_on_an_idle_runtime_gives_back(b).await;
    depth_counts_ready_messages(b).await;
}

/// Takes `n` deliveries, acknowledging each, and checks that no more come;
/// their first body bytes.
async fn take_exactly(c: &mut Consumer, n: usize) -> Vec<u8> {
    let mut got = Vec::with_capacity(n);
    for _ in 0..n {
        let d = next(c).await;
        got.push(d.message.body[0]);
        d.ack().await.unwrap();
    }
    assert!(
        nothing_within(c, Duration::from_millis(200)).await,
        "no more than {got:?}"
    );
    got
}

/// Two consumers share a queue's messages alternately.
pub async fn round_robin_over_consumers(b: &dyn Broker) {
    let q = unique("rr");
    b.declare_queue(&q, QueueKind::Transient).await.unwrap();
    let mut c1 = b.consume(&q, 10).await.unwrap();
    let mut c2 = b.consume(&q, 10).await.unwrap();
    for i in 0..4 {
        b.publish(&q, msg(i)).await.unwrap();
    }
    let (mut got1, mut got2) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        let d = next(&mut c1).await;
        got1.push(d.message.body[0]);
        d.ack().await.unwrap();
        let d = next(&mut c2).await;
        got2.push(d.message.body[0]);
        d.ack().await.unwrap();
    }
    assert_eq!(got1.len(), 2);
    assert_eq!(got2.len(), 2);
    b.delete_queue(&q).await.unwrap();
}

/// Messages go to the consumer of the highest priority while it has
/// room, and to a lower one only when it is full.
pub async fn higher_priority_consumers_first(b: &dyn Broker) {
    let q = unique("priority");
    b.declare_queue(&q, QueueKind::Transient).await.unwrap();
    let mut low = b.consume_ranked(&q, 10, 1).await.unwrap();
    let mut high = b.consume_ranked(&q, 3, 5).await.unwrap();
    for i in 0..3 {
        b.publish(&q, msg(i)).await.unwrap();
    }
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(next(&mut high).await);
    }
    assert!(nothing_within(&mut low, Duration::from_millis(200)).await);
    // The high one is full: the next goes to the low one.
    b.publish(&q, msg(3)).await.unwrap();
    assert_eq!(next(&mut low).await.message.body, [3]);
    drop(held);
    drop((low, high));
    b.delete_queue(&q).await.unwrap();
}

/// A consumer never holds more than its prefetch unacknowledged.
pub async fn prefetch_bounds_unacked(b: &dyn Broker) {
    let q = unique("prefetch");
    b.declare_queue(&q, QueueKind::Transient).await.unwrap();
    let mut c = b.consume(&q, 2).await.unwrap();
    for i in 0..3 {
        b.publish(&q, msg(i)).await.unwrap();
    }
    let d1 = next(&mut c).await;
    let _d2 = next(&mut c).await;
    assert!(nothing_within(&mut c, Duration::from_millis(200)).await);
    d1.ack().await.unwrap();
    assert_eq!(next(&mut c).await.message.body, vec![2]);
    drop(c);
    b.delete_queue(&q).await.unwrap();
}

/// A queue's depth counts what waits for a consumer, not what a consumer
/// holds; a missing queue has none, and asking leaves the broker usable.
pub async fn depth_counts_ready_messages(b: &dyn Broker) {
    let q = unique("depth");
    assert_eq!(b.depth(&q).await.unwrap(), None);
    b.declare_queue(&q, QueueKind::Transient).await.unwrap();
    assert_eq!(b.depth(&q).await.unwrap(), Some(0));
    for i in 0..3 {
        b.publish(&q, msg(i)).await.unwrap();
    }
    assert_eq!(b.depth(&q).await.unwrap(), Some(3));
    let mut c = b.consume(&q, 1).await.unwrap();
    let d = next(&mut c).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while b.depth(&q).await.unwrap() != Some(2) {
        assert!(std::time::Instant::now() < deadline, "depth never 2");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    d.ack().await.unwrap();
    drop(c);
    b.delete_queue(&q).await.unwrap();
    assert_eq!(b.depth(&q).await.unwrap(), None);
}

/// What a consumer held unacknowledged goes to another when it leaves.
pub async fn unacked_redelivered_when_consumer_leaves(b: &dyn Broker) {
    let q = unique("redeliver");
    b.declare_queue(&q, QueueKind::Durable).await.unwrap();
    let mut c1 = b.consume(&q, 5).await.unwrap();
    b.publish(&q, msg(7)).await.unwrap();
    let held = next(&mut c1).await;
    assert!(!held.redelivered);
    drop(held);
    drop(c1);
    let mut c2 = b.consume(&q, 5).await.unwrap();
    let again = next(&mut c2).await;
    assert_eq!(again.message.body, vec![7]);
    assert!(again.redelivered);
    again.ack().await.unwrap();
    drop(c2);
    b.delete_queue(&q).await.unwrap();
}

/// `nack(true)` delivers again; `nack(false)` drops.
pub async fn nack_requeues_or_drops(b: &dyn Broker) {
    let q = unique("nack");
    b.declare_queue(&q, QueueKind::Transient).await.unwrap();
    let mut c = b.consume(&q, 5).await.unwrap();
    b.publish(&q, msg(1)).await.unwrap();
    next(&mut c).await.nack(true).await.unwrap();
    let again = next(&mut c).await;
    assert!(again.redelivered);
    again.nack(false).await.unwrap();
    assert!(nothing_within(&mut c, Duration::from_millis(200)).await);
    drop(c);
    b.delete_queue(&q).await.unwrap();
}

/// `ack_through` settles a delivery and those before it, not those after.
pub async fn ack_through_settles_the_earlier_ones(b: &dyn Broker) {
    let q = unique("through");
    b.declare_queue(&q, QueueKind::Durable).await.unwrap();
    let mut c1 = b.consume(&q, 10).await.unwrap();
    for i in 0..4 {
        b.publish(&q, msg(i)).await.unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(next(&mut c1).await);
    }
    let after = got.pop().expect("four deliveries");
    let through = got.pop().expect("three deliveries");
    assert_eq!(through.message.body, vec![2]);
    through.ack_through().await.unwrap();
    drop(got); // settled by the ack above
    drop(after); // not settled: comes back
    drop(c1);
    let mut c2 = b.consume(&q, 10).await.unwrap();
    let again = next(&mut c2).await;
    assert_eq!(
        (again.message.body.clone(), again.redelivered),
        (vec![3], true)
    );
    assert!(nothing_within(&mut c2, Duration::from_millis(200)).await);
    again.ack().await.unwrap();
    drop(c2);
    b.delete_queue(&q).await.unwrap();
}

/// Every queue bound to a fanout exchange gets its own copy.
pub async fn fanout_copies_to_every_bound_queue(b: &dyn Broker) {
    let x = unique("fanout");
    let (q1, q2) = (unique("f1"), unique("f2"));
    b.declare_fanout(&x).await.unwrap();
    for q in [&q1, &q2] {
        b.declare_queue(q, QueueKind::Transient).await.unwrap();
        b.bind(q, &x).await.unwrap();
    }
    let mut c1 = b.consume(&q1, 5).await.unwrap();
    let mut c2 = b.consume(&q2, 5).await.unwrap();
    b.publish_fanout(&x, msg(3)).await.unwrap();
    assert_eq!(next(&mut c1).await.message.body, vec![3]);
    assert_eq!(next(&mut c2).await.message.body, vec![3]);
    for q in [&q1, &q2] {
        b.delete_queue(q).await.unwrap();
    }
}

/// Correlation ids and reply-to addresses reach the consumer.
pub async fn reply_fields_travel(b: &dyn Broker) {
    let q = unique("fields");
    b.declare_queue(&q, QueueKind::Transient).await.unwrap();
    let mut c = b.consume(&q, 5).await.unwrap();
    let sent = Message {
        body: vec![1, 2, 3],
        correlation_id: Some(42),
        reply_to: Some("somewhere".into()),
    };
    b.publish(&q, sent.clone()).await.unwrap();
    let d = next(&mut c).await;
    assert_eq!(d.message, sent);
    d.ack().await.unwrap();
    drop(c);
    b.delete_queue(&q).await.unwrap();
}

/// A message published to a queue that does not exist is dropped without an
/// error, and declaring the queue afterwards does not bring it.
pub async fn publish_to_a_missing_queue_is_dropped(b: &dyn Broker) {
    let q = unique("missing");
    b.publish(&q, msg(1)).await.unwrap();
    b.declare_queue(&q, QueueKind::Durable).await.unwrap();
    let mut c = b.consume(&q, 5).await.unwrap();
    assert!(nothing_within(&mut c, Duration::from_millis(200)).await);
    drop(c);
    b.delete_queue(&q).await.unwrap();
}

/// Publishing to a fanout exchange that does not exist fails, and leaves
/// publishing in order: the publishes after it all go through.
pub async fn publish_to_a_missing_exchange_fails(b: &dyn Broker) {
    let x = unique("nox");
    assert!(b.publish_fanout(&x, msg(1)).await.is_err());
    let q = unique("afternox");
    b.declare_queue(&q, QueueKind::Transient).await.unwrap();
    let mut c = b.consume(&q, 10).await.unwrap();
    for i in 0..8 {
        b.publish(&q, msg(i)).await.unwrap();
    }
    assert_eq!(take_exactly(&mut c, 8).await, (0..8).collect::<Vec<_>>());
    drop(c);
    b.delete_queue(&q).await.unwrap();
}

/// A capped queue keeps the newest messages, in order, whether they come
/// straight or through a fanout exchange it is bound to.
pub async fn capped_queue_keeps_the_newest(b: &dyn Broker) {
    let (q, via) = (unique("capped"), unique("cappedvia"));
    let x = unique("cappedx");
    b.declare_fanout(&x).await.unwrap();
    for q in [&q, &via] {
        b.declare_queue(q, QueueKind::Capped(3)).await.unwrap();
    }
    b.bind(&via, &x).await.unwrap();
    for i in 0..5 {
        b.publish(&q, msg(i)).await.unwrap();
        b.publish_fanout(&x, msg(i)).await.unwrap();
    }
    for q in [&q, &via] {
        let mut c = b.consume(q, 10).await.unwrap();
        assert_eq!(take_exactly(&mut c, 3).await, vec![2, 3, 4]);
        drop(c);
        b.delete_queue(q).await.unwrap();
    }
}

/// Deliveries not yet acknowledged do not count towards a queue's cap; one
/// requeued onto a full queue goes to its head, and so is dropped first.
pub async fn capped_queue_counts_ready_messages_only(b: &dyn Broker) {
    let q = unique("cappedready");
    b.declare_queue(&q, QueueKind::Capped(2)).await.unwrap();
    let mut c = b.consume(&q, 1).await.unwrap();
    b.publish(&q, msg(0)).await.unwrap();
    let held = next(&mut c).await;
    for i in 1..3 {
        b.publish(&q, msg(i)).await.unwrap();
    }
    // Back to a queue already holding its cap. The same consumer takes
    // what is left: with a prefetch of one, nothing comes to it before the
    // broker has dealt with the requeue.
    held.nack(true).await.unwrap();
    assert_eq!(take_exactly(&mut c, 2).await, vec![1, 2]);
    drop(c);
    b.delete_queue(&q).await.unwrap();
}

/// A delivery requeued onto a full capped quorum queue is kept (a
/// requeue is not a publish, and only a publish drops the oldest): the
/// queue holds one more than its cap. (RabbitMQ 3.10 gives a nacked one
/// back behind the ready ones; nothing here relies on the order of
/// requeued deliveries: reads and write requests are independent, and
/// sync messages are put in order by their seq.)
pub async fn quorum_capped_queue_keeps_a_requeued_delivery(b: &dyn Broker) {
    let q = unique("qcappedready");
    b.declare_queue(&q, QueueKind::Capped(2)).await.unwrap();
    let mut c = b.consume(&q, 1).await.unwrap();
    b.publish(&q, msg(0)).await.unwrap();
    let held = next(&mut c).await;
    for i in 1..3 {
        b.publish(&q, msg(i)).await.unwrap();
    }
    held.nack(true).await.unwrap();
    let mut got = take_exactly(&mut c, 3).await;
    got.sort_unstable();
    assert_eq!(got, vec![0, 1, 2]);
    drop(c);
    b.delete_queue(&q).await.unwrap();
}

/// Declaring a capped queue over one of another kind replaces it (its
/// content goes) and caps it; declaring it again with the same cap keeps it;
/// declaring another kind over a capped queue fails.
pub async fn capped_declaration_replaces_another_kind(b: &dyn Broker) {
    let q = unique("recapped");
    b.declare_queue(&q, QueueKind::Durable).await.unwrap();
    b.publish(&q, msg(9)).await.unwrap();
    b.declare_queue(&q, QueueKind::Capped(2)).await.unwrap();
    for i in 0..3 {
        b.publish(&q, msg(i)).await.unwrap();
    }
    b.declare_queue(&q, QueueKind::Capped(2)).await.unwrap();
    assert!(b.declare_queue(&q, QueueKind::Durable).await.is_err());
    let mut c = b.consume(&q, 10).await.unwrap();
    assert_eq!(take_exactly(&mut c, 2).await, vec![1, 2]);
    drop(c);
    b.delete_queue(&q).await.unwrap();
}

/// A bounded queue refuses a publish over its cap (the publisher sees it
/// fail, and tries again later); what it holds stays.
pub async fn bounded_queue_refuses_publishes_over_its_cap(b: &dyn Broker) {
    let q = unique("bounded");
    let kind = QueueKind::Bounded {
        max: 2,
        ttl_ms: 600_000,
    };
    b.declare_queue(&q, kind).await.unwrap();
    for i in 0..2 {
        b.publish(&q, msg(i)).await.unwrap();
    }
    assert!(b.publish(&q, msg(2)).await.is_err());
    let mut c = b.consume(&q, 10).await.unwrap();
    assert_eq!(take_exactly(&mut c, 2).await, vec![0, 1]);
    // Room again: taken.
    b.publish(&q, msg(3)).await.unwrap();
    assert_eq!(take_exactly(&mut c, 1).await, vec![3]);
    drop(c);
    b.delete_queue(&q).await.unwrap();
}

/// A bounded quorum queue refuses publishes too, but only once it holds
/// more than its cap: it learns it is full after taking the message that
/// fills it, so a publish or a few past the cap are taken. What it took
/// stays, in order.
pub async fn quorum_bounded_queue_refuses_publishes_past_its_cap(b: &dyn Broker) {
    let q = unique("qbounded");
    let kind = QueueKind::Bounded {
        max: 2,
        ttl_ms: 600_000,
    };
    b.declare_queue(&q, kind).await.unwrap();
    let mut taken = 0u8;
    while b.publish(&q, msg(taken)).await.is_ok() {
        taken += 1;
        assert!(taken < 10, "a cap of 2 took {taken} messages");
    }
    assert!(taken >= 2, "refused within its cap: {taken}");
    let mut c = b.consume(&q, 10).await.unwrap();
    let want: Vec<u8> = (0..taken).collect();
    assert_eq!(take_exactly(&mut c, taken.into()).await, want);
    // Room again: taken.
    b.publish(&q, msg(20)).await.unwrap();
    assert_eq!(take_exactly(&mut c, 1).await, vec![20]);
    drop(c);
    b.delete_queue(&q).await.unwrap();
}

/// A message that waited in a bounded queue longer than its TTL is
/// dropped; being delivered and requeued does not give it a new one.
pub async fn bounded_queue_drops_messages_past_their_ttl(b: &dyn Broker) {
    let q = unique("ttl");
    let kind = QueueKind::Bounded {
        max: 10,
        ttl_ms: 300,
    };
    b.declare_queue(&q, kind).await.unwrap();
    b.publish(&q, msg(7)).await.unwrap();
    // Polls, within the deadline, until the message is gone: each look
    // takes it and puts it back.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        assert!(tokio::time::Instant::now() < deadline, "never expired");
        let mut c = b.consume(&q, 1).await.unwrap();
        match tokio::time::timeout(Duration::from_millis(100), c.next()).await {
            Ok(Some(d)) => d.nack(true).await.unwrap(),
            _ => break,
        }
    }
    // A consumer waiting gets a fresh message.
    let mut c = b.consume(&q, 1).await.unwrap();
    b.publish(&q, msg(8)).await.unwrap();
    assert_eq!(take_exactly(&mut c, 1).await, vec![8]);
    drop(c);
    b.delete_queue(&q).await.unwrap();
}

/// Declaring a bounded queue over one of other arguments (an earlier
/// run's) replaces it when it is empty and unused, and otherwise keeps it
/// as it is, without failing.
pub async fn bounded_declaration_replaces_only_an_idle_queue(b: &dyn Broker) {
    bounded_declaration(b, true).await;
}

/// [`bounded_declaration_replaces_only_an_idle_queue`] with a quorum
/// queue's cap, which refuses publishes a little past it (see
/// [`quorum_bounded_queue_refuses_publishes_past_its_cap`]).
pub async fn quorum_bounded_declaration_replaces_only_an_idle_queue(b: &dyn Broker) {
    bounded_declaration(b, false).await;
}

async fn bounded_declaration(b: &dyn Broker, exact_cap: bool) {
    let kind = QueueKind::Bounded {
        max: 1,
        ttl_ms: 600_000,
    };
    let idle = unique("oldidle");
    b.declare_queue(&idle, QueueKind::Durable).await.unwrap();
    b.declare_queue(&idle, kind).await.unwrap();
    b.publish(&idle, msg(0)).await.unwrap();
    if exact_cap {
        assert!(b.publish(&idle, msg(1)).await.is_err(), "capped now");
    } else {
        let mut taken = 1;
        while b.publish(&idle, msg(taken)).await.is_ok() {
            taken += 1;
            assert!(taken < 10, "a cap of 1 took {taken} messages");
        }
    }
    b.declare_queue(&idle, kind).await.unwrap();
    b.delete_queue(&idle).await.unwrap();

    let busy = unique("oldbusy");
    b.declare_queue(&busy, QueueKind::Durable).await.unwrap();
    b.publish(&busy, msg(0)).await.unwrap();
    b.declare_queue(&busy, kind).await.unwrap();
    // Kept: its message is there, and it has no cap.
    b.publish(&busy, msg(1)).await.unwrap();
    let mut c = b.consume(&busy, 10).await.unwrap();
    assert_eq!(take_exactly(&mut c, 2).await, vec![0, 1]);
    // In use (a consumer), though empty: kept too.
    b.declare_queue(&busy, kind).await.unwrap();
    b.publish(&busy, msg(2)).await.unwrap();
    b.publish(&busy, msg(3)).await.unwrap();
    assert_eq!(take_exactly(&mut c, 2).await, vec![2, 3]);
    drop(c);
    b.delete_queue(&busy).await.unwrap();
}

/// An own queue with no consumer for its idle time is deleted, bindings
/// and content; declared again, it comes back empty.
pub async fn unused_own_queue_expires(b: &dyn Broker) {
    let (q, x) = (unique("own"), unique("ownx"));
    let kind = QueueKind::Own {
        max: 10,
        idle_ms: 200,
    };
    b.declare_fanout(&x).await.unwrap();
    b.declare_queue(&q, kind).await.unwrap();
    b.bind(&q, &x).await.unwrap();
    b.publish_fanout(&x, msg(1)).await.unwrap();
    // Polls until it is gone: consuming a queue that is not there fails.
    // Each look uses the queue, so they are further apart than its idle
    // time.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        assert!(tokio::time::Instant::now() < deadline, "never expired");
        tokio::time::sleep(Duration::from_millis(500)).await;
        match b.consume(&q, 1).await {
            Ok(c) => drop(c),
            Err(_) => break,
        }
    }
    b.declare_queue(&q, kind).await.unwrap();
    b.bind(&q, &x).await.unwrap();
    let mut c = b.consume(&q, 10).await.unwrap();
    b.publish_fanout(&x, msg(2)).await.unwrap();
    assert_eq!(take_exactly(&mut c, 1).await, vec![2]);
    drop(c);
    b.delete_queue(&q).await.unwrap();
}

/// A consumer dropped with the arbiter it lived on (an in-process worker
/// killed) gives back what it held.
pub async fn consumer_dropped_with_its_arbiter_gives_back(b: &dyn Broker) {
    let q = unique("arbiter");
    b.declare_queue(&q, QueueKind::Durable).await.unwrap();
    let mut c1 = b.consume(&q, 5).await.unwrap();
    b.publish(&q, msg(4)).await.unwrap();
    let held = next(&mut c1).await;
    let arbiter = actix::Arbiter::new();
    let (holding, held_there) = tokio::sync::oneshot::channel();
    arbiter.spawn(async move {
        let _kept = (c1, held);
        let _ = holding.send(());
        std::future::pending::<()>().await;
    });
    held_there.await.expect("the arbiter runs");
    arbiter.stop();
    given_back(b, &q, 4).await;
}

/// A consumer dropped inside a runtime that is never driven again (a worker
/// stopping mid-way) gives back what it held: its close does not depend on
/// that runtime.
pub async fn consumer_dropped_on_an_idle_runtime_gives_back(b: &dyn Broker) {
    let q = unique("idle");
    b.declare_queue(&q, QueueKind::Durable).await.unwrap();
    let mut c1 = b.consume(&q, 5).await.unwrap();
    b.publish(&q, msg(5)).await.unwrap();
    let held = next(&mut c1).await;
    let (dropped, dropped_there) = tokio::sync::oneshot::channel();
    let (release, released) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(async move { drop((c1, held)) });
        let _ = dropped.send(());
        // Kept, not driven, until the check is over.
        let _ = released.recv();
    });
    dropped_there.await.expect("the thread runs");
    given_back(b, &q, 5).await;
    drop(release);
}

/// Another consumer of `q` gets `body` again, redelivered; then `q` goes.
async fn given_back(b: &dyn Broker, q: &str, body: u8) {
    let mut c2 = b.consume(q, 5).await.unwrap();
    let again = next(&mut c2).await;
    assert_eq!(
        (again.message.body.clone(), again.redelivered),
        (vec![body], true)
    );
    again.ack().await.unwrap();
    drop(c2);
    b.delete_queue(q).await.unwrap();
}
