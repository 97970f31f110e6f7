//! Attacks on batching: requests packed many to a message, answered many
//! to a reply, synced many to a message, over whichever broker a test
//! file passes.

use std::sync::Arc;

use dbaas::broker::faults::{Fault, FaultyBroker};
use dbaas::broker::Broker;
use dbaas::model::{Consistency, ReadOp, ReadResult, Row, Value, WriteOp};

use super::actors::{cluster, count_users, read};
use super::{all_applied, stores};

/// The largest message the broker takes here: RabbitMQ refuses a message
/// over its `max_message_size` (16 MiB by default since 4.0); twice the
/// size the project splits snapshots to so that they fit it.
const MESSAGE_LIMIT: usize = 2 * dbaas::model::wire::SNAPSHOT_PART_BYTES;
/// A write's row size: within the default HTTP body limit (64 KiB).
const ROW: usize = 60 << 10;
/// Clients at once: their rows together are over the limit.
const CLIENTS: usize = 200;
/// Rows a read answers: about 3 MiB.
const PAGE: u64 = 50;
/// Readers at once.
const READERS: usize = 16;

/// A new user `name` whose row is about [`ROW`] bytes.
fn large_user(name: &str) -> WriteOp {
    let row: Row = [
        ("username".to_owned(), Value::from(name)),
        ("password".to_owned(), Value::from("x".repeat(ROW))),
    ]
    .into();
    WriteOp::Insert {
        table: "users".into(),
        row,
    }
}

/// A broker around `b` that refuses what is over [`MESSAGE_LIMIT`].
fn limited(b: Arc<dyn Broker>) -> Arc<dyn Broker> {
    let fb = FaultyBroker::new(b);
    fb.on_publish(|_, msg| {
        if msg.body.len() > MESSAGE_LIMIT {
            Fault::Fail
        } else {
            Pass
        }
    });
    Arc::new(fb)
}

use Fault::Pass;

/// Many clients write large rows at once, each well within the broker's
/// message limit: the orchestrator's batches of writes, the master's
/// syncs and the slaves' replies to batches of reads must each stay
/// within it too, or the batch is refused whole, and again each time its
/// requests are retried together.
pub async fn a_burst_of_large_writes_and_reads_stays_within_the_message_limit(b: Arc<dyn Broker>) {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(&dir, 1, limited(b)).await;
    let names: Vec<String> = (0..CLIENTS).map(|i| format!("large{i}")).collect();
    let writes = names.iter().map(|n| {
        let o = c.orchestrator.clone();
        let n = n.clone();
        async move { (n.clone(), o.write(large_user(&n)).await) }
    });
    for (name, answer) in futures::future::join_all(writes).await {
        if let Err(e) = answer {
            panic!("the write of {name} failed: {e}");
        }
    }
    assert_eq!(
        read(&c, count_users()).await,
        ReadResult::Count(CLIENTS as u64)
    );
    // Reads each well within the limit too (a page of rows), together
    // far over it.
    let page = ReadOp::Select {
        table: "users".into(),
        filter: vec![],
        columns: None,
        order_by: None,
        limit: Some(PAGE),
    };
    let reads = (0..READERS).map(|i| {
        let (o, page) = (c.orchestrator.clone(), page.clone());
        async move { (i, o.read(page, Consistency::Strong).await) }
    });
    for (i, got) in futures::future::join_all(reads).await {
        let rows = match got {
            Ok(r) => r.result.into_rows(),
            Err(e) => panic!("read {i} failed: {e}"),
        };
        assert_eq!(rows.len() as u64, PAGE, "read {i}");
    }
    let seq = c.orchestrator.stats().await.unwrap().last_acked_seq;
    all_applied(&c, seq, super::actors::DEADLINE).await;
    c.stop().await;
    let all = stores(dir.path(), &[1, 2]);
    assert_eq!(all[0], all[1]);
}
