//! The actor-level suite over the in-process broker.

mod suite;

use std::sync::Arc;

use dbaas::broker::inproc::InProcBroker;
use suite::actors;

fn broker() -> Arc<InProcBroker> {
    Arc::new(InProcBroker::new())
}

macro_rules! inproc {
    ($($name:ident),* $(,)?) => {$(
        #[actix::test]
        async fn $name() {
            actors::$name(broker()).await;
        }
    )*};
}

inproc!(
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
