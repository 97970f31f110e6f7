//! The behaviour every broker implementation must share, as one suite of
//! checks run against each (the in-process twin in unit tests, RabbitMQ in
//! the integration tests). Each check uses its own uniquely named queues.

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
    prefetch_bounds_unacked(b).await;
    unacked_redelivered_when_consumer_leaves(b).await;
    nack_requeues_or_drops(b).await;
    ack_through_settles_the_earlier_ones(b).await;
    fanout_copies_to_every_bound_queue(b).await;
    reply_fields_travel(b).await;
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
