//! The broker conformance checks and the actor-level suite against a real
//! RabbitMQ (started by `scripts/services`; see `scripts/test`). Each test
//! has a virtual host of its own.

mod suite;

use dbaas::broker::conformance;
use futures::StreamExt;
use suite::{actors, amqp_broker};

#[actix::test]
async fn rabbitmq_keeps_the_broker_semantics() {
    let Some(b) = amqp_broker().await else { return };
    conformance::run_all(b.as_ref()).await;
}

macro_rules! amqp {
    ($($name:ident),* $(,)?) => {$(
        #[actix::test]
        async fn $name() {
            let Some(b) = amqp_broker().await else { return };
            actors::$name(b).await;
        }
    )*};
}

actors::every_script!(amqp);

/// A broker left by an earlier version holds `writeQ` without a cap or
/// TTL, and RabbitMQ refuses to declare it again with them. Empty and
/// unused, it is replaced; holding a message, it is kept as it is, and
/// the topology is declared all the same.
#[actix::test]
async fn the_topology_copes_with_an_old_write_queue() {
    use dbaas::broker::{self, QueueKind, WRITE_Q};
    for holding in [false, true] {
        let Some(b) = amqp_broker().await else { return };
        b.declare_queue(WRITE_Q, QueueKind::Durable).await.unwrap();
        if holding {
            b.publish(WRITE_Q, broker::Message::new(vec![1]))
                .await
                .unwrap();
        }
        broker::declare_topology(b.as_ref()).await.unwrap();
        // The old kind is refused only once the queue has new arguments.
        let old_kind = b.declare_queue(WRITE_Q, QueueKind::Durable).await;
        assert_eq!(old_kind.is_ok(), holding, "holding a message: {holding}");
        if holding {
            let mut c = b.consume(WRITE_Q, 1).await.unwrap();
            let d = tokio::time::timeout(std::time::Duration::from_secs(10), c.next())
                .await
                .expect("the message is still there")
                .unwrap();
            assert_eq!(d.message.body, vec![1]);
            d.ack().await.unwrap();
        }
    }
}

/// A slave's sync queue of an earlier version (capped, without expiry) is
/// declared again with its expiry (its content goes: the slave takes a
/// snapshot after declaring it).
#[actix::test]
async fn an_old_sync_queue_is_declared_again_with_its_expiry() {
    use dbaas::broker::{self, QueueKind};
    let Some(b) = amqp_broker().await else { return };
    let q = broker::sync_queue(7);
    b.declare_queue(&q, QueueKind::Capped(10)).await.unwrap();
    let own = QueueKind::Own {
        max: 10,
        idle_ms: broker::SYNC_QUEUE_IDLE_MS,
    };
    b.declare_queue(&q, own).await.unwrap();
    assert!(b.declare_queue(&q, QueueKind::Durable).await.is_err());
    b.declare_queue(&q, own).await.unwrap();
}
