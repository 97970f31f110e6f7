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

amqp!(
    a_write_is_seen_by_the_next_read,
    reads_spread_round_robin_over_two_slaves,
    a_late_slave_catches_up_by_snapshot_and_sync_without_a_gap,
    a_duplicate_sync_message_is_ignored,
    a_read_for_a_sequence_number_not_yet_applied_waits_then_answers,
    a_redelivered_write_is_applied_once,
    a_write_retried_within_one_group_is_synced_once,
    garbage_on_the_queues_is_dropped_and_work_goes_on,
    restart_on_the_same_data_keeps_everything,
);
