//! The broker conformance checks and the actor-level suite against a real
//! RabbitMQ (started by `scripts/services`; see `scripts/test`). Each test
//! has a virtual host of its own.

mod suite;

use dbaas::broker::conformance;
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
