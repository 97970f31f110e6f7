//! The broker stopped and started again (`rabbitmqctl stop_app` /
//! `start_app`) under a steady mixed load. A test binary of its own: cargo
//! runs test binaries one after another, so no other test sees the outage.

mod suite;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dbaas::error::Error;
use dbaas::model::{Consistency, ReadOp, ReadResult, Row, Value, WriteOp, WriteResult};
use suite::{eventually, process_cluster, rabbitmqctl_off};

const DEADLINE: Duration = Duration::from_secs(60);
/// How long the broker stays down.
const OUTAGE: Duration = Duration::from_secs(2);

fn ride(n: i64) -> WriteOp {
    let row: Row = [
        ("created_by".to_owned(), Value::from("loader")),
        ("timestamp".to_owned(), Value::Int(n)),
        ("source".to_owned(), Value::Int(3)),
        ("destination".to_owned(), Value::Int(4)),
        ("users".to_owned(), Value::List(vec![])),
    ]
    .into();
    WriteOp::InsertAuto {
        table: "rides".into(),
        row,
    }
}

fn all_ride_ids() -> ReadOp {
    ReadOp::Select {
        table: "rides".into(),
        filter: vec![],
        columns: Some(vec!["ride_id".into()]),
        order_by: None,
        limit: None,
    }
}

/// Only "unavailable" may reach a client while the broker is away.
fn tolerated(e: &Error) -> bool {
    matches!(e, Error::Unavailable(_))
}

#[actix::test]
async fn the_system_recovers_from_a_broker_restart_and_keeps_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let Some((c, _)) = process_cluster(dir.path(), 2).await else {
        return;
    };
    let stop = Arc::new(AtomicBool::new(false));
    let acked_count = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (orch, stop, acked_count) =
                (c.orchestrator.clone(), stop.clone(), acked_count.clone());
            actix::spawn(async move {
                let mut acked = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    match orch.write(ride(w * 1_000_000 + i)).await {
                        Ok(r) => {
                            let WriteResult::Inserted { key } = r.result else {
                                panic!("wrong answer to an insert: {r:?}");
                            };
                            acked.push(key.as_int().expect("an int key"));
                            acked_count.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => assert!(tolerated(&e), "a writer saw {e}"),
                    }
                }
                acked
            })
        })
        .collect();
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (orch, stop, acked_count) =
                (c.orchestrator.clone(), stop.clone(), acked_count.clone());
            actix::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let floor = acked_count.load(Ordering::Relaxed);
                    let count = ReadOp::Count {
                        table: "rides".into(),
                        filter: vec![],
                    };
                    match orch.read(count, Consistency::Strong).await {
                        // Never fewer rows than writes acknowledged before.
                        Ok(r) => assert!(
                            r.result.count() >= floor,
                            "read {} < {floor}",
                            r.result.count()
                        ),
                        Err(e) => assert!(tolerated(&e), "a reader saw {e}"),
                    }
                }
            })
        })
        .collect();
    let a = acked_count.clone();
    eventually("load under way", DEADLINE, || {
        let a = a.clone();
        async move { a.load(Ordering::Relaxed) > 100 }
    })
    .await;
    rabbitmqctl_off(&["stop_app"]).await;
    tokio::time::sleep(OUTAGE).await;
    rabbitmqctl_off(&["start_app"]).await;
    let before = acked_count.load(Ordering::Relaxed);
    eventually(
        "writes acknowledged again after the restart",
        DEADLINE,
        || {
            let a = acked_count.clone();
            async move { a.load(Ordering::Relaxed) > before + 100 }
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = BTreeSet::new();
    for w in writers {
        acked.extend(w.await.expect("writer finished"));
    }
    for r in readers {
        r.await.expect("reader finished");
    }
    let rows = c
        .orchestrator
        .read(all_ride_ids(), Consistency::Strong)
        .await
        .expect("reads work after the restart");
    let present: BTreeSet<i64> = match rows.result {
        ReadResult::Rows(rows) => rows.iter().filter_map(|r| r["ride_id"].as_int()).collect(),
        other => panic!("not rows: {other:?}"),
    };
    let lost: Vec<_> = acked.difference(&present).collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    c.stop().await;
}
