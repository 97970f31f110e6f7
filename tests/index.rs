//! Secondary indexes change how rows are found, never which: the same
//! writes applied to a store with the RideShare indexes and to one without
//! any answer every read alike.

use std::sync::Arc;

use dbaas::model::{CmpOp, Cond, Order, ReadOp, Row, Schema, Value, WriteOp};
use dbaas::store::Store;

fn ride(rng: &mut fastrand::Rng) -> WriteOp {
    let row: Row = [
        (
            "created_by".to_owned(),
            Value::from(format!("u{}", rng.u8(0..6))),
        ),
        ("timestamp".to_owned(), Value::Int(rng.i64(-3..40))),
        ("source".to_owned(), Value::Int(rng.i64(1..4))),
        ("destination".to_owned(), Value::Int(rng.i64(1..4))),
        ("users".to_owned(), Value::List(vec![])),
    ]
    .into();
    WriteOp::InsertAuto {
        table: "rides".into(),
        row,
    }
}

fn cond(rng: &mut fastrand::Rng) -> Cond {
    match rng.u8(0..6) {
        0 => Cond::new("source", CmpOp::Eq, rng.i64(1..4)),
        1 => Cond::new("destination", CmpOp::Eq, rng.i64(1..4)),
        2 => Cond::new("created_by", CmpOp::Eq, format!("u{}", rng.u8(0..6))),
        3 => {
            let op = [CmpOp::Gt, CmpOp::Ge, CmpOp::Lt, CmpOp::Le, CmpOp::Ne][rng.usize(0..5)];
            Cond::new("timestamp", op, rng.i64(-5..45))
        }
        4 => Cond::new("users", CmpOp::Contains, format!("u{}", rng.u8(0..6))),
        _ => Cond::new("ride_id", CmpOp::Gt, rng.i64(0..50)),
    }
}

fn change(rng: &mut fastrand::Rng) -> WriteOp {
    let filter = Some((0..rng.usize(1..3)).map(|_| cond(rng)).collect());
    match rng.u8(0..3) {
        0 => WriteOp::Delete {
            table: "rides".into(),
            key: None,
            filter,
        },
        1 => WriteOp::Update {
            table: "rides".into(),
            key: None,
            filter,
            set: [("timestamp".to_owned(), Value::Int(rng.i64(-3..40)))].into(),
            add: Row::new(),
            remove: Row::new(),
        },
        _ => WriteOp::Update {
            table: "rides".into(),
            key: Some(Value::Int(rng.i64(1..80))),
            filter: None,
            set: [("source".to_owned(), Value::Int(rng.i64(1..4)))].into(),
            add: [(
                "users".to_owned(),
                Value::from(format!("u{}", rng.u8(0..6))),
            )]
            .into(),
            remove: Row::new(),
        },
    }
}

fn query(rng: &mut fastrand::Rng) -> ReadOp {
    let filter: Vec<Cond> = (0..rng.usize(0..4)).map(|_| cond(rng)).collect();
    if rng.bool() {
        return ReadOp::Count {
            table: "rides".into(),
            filter,
        };
    }
    let order_by = rng.bool().then(|| Order {
        column: ["timestamp", "source", "created_by"][rng.usize(0..3)].into(),
        desc: rng.bool(),
    });
    ReadOp::Select {
        table: "rides".into(),
        filter,
        columns: None,
        order_by,
        limit: rng.bool().then(|| rng.u64(0..10)),
    }
}

#[test]
fn indexed_and_unindexed_stores_answer_alike() {
    let mut rng = fastrand::Rng::with_seed(7);
    let indexed = Store::temporary(Arc::new(Schema::rideshare())).unwrap();
    let plain = Store::temporary(Arc::new(Schema::rideshare().without_indexes())).unwrap();
    let mut seq = 0;
    for round in 0..40 {
        let mut ops: Vec<WriteOp> = (0..10).map(|_| ride(&mut rng)).collect();
        ops.extend((0..3).map(|_| change(&mut rng)));
        if round % 7 == 6 {
            // A batch: later ops must see the index entries of earlier ones.
            ops = vec![WriteOp::Batch { ops }];
        }
        for op in ops {
            seq += 1;
            let a = indexed.apply(seq, seq as u128, &op).unwrap();
            let b = plain.apply(seq, seq as u128, &op).unwrap();
            assert_eq!(a, b, "write {op:?}");
        }
        for _ in 0..25 {
            let q = query(&mut rng);
            assert_eq!(
                indexed.read(&q).unwrap(),
                plain.read(&q).unwrap(),
                "read {q:?}"
            );
        }
    }
    assert_eq!(indexed.checksum().unwrap(), plain.checksum().unwrap());
}

#[test]
fn a_store_made_without_indexes_gets_them_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = fastrand::Rng::with_seed(11);
    {
        let plain =
            Store::open(dir.path(), Arc::new(Schema::rideshare().without_indexes())).unwrap();
        for seq in 1..=60 {
            plain.apply(seq, seq as u128, &ride(&mut rng)).unwrap();
        }
        plain.flush().unwrap();
    }
    let indexed = Store::open(dir.path(), Arc::new(Schema::rideshare())).unwrap();
    let scan = Store::open(
        &dir.path().join("copy"),
        Arc::new(Schema::rideshare().without_indexes()),
    )
    .unwrap();
    scan.install(&indexed.snapshot().unwrap()).unwrap();
    for _ in 0..100 {
        let q = query(&mut rng);
        assert_eq!(
            indexed.read(&q).unwrap(),
            scan.read(&q).unwrap(),
            "read {q:?}"
        );
    }
}

#[test]
fn clearing_drops_the_index_entries_too() {
    let store = Store::temporary(Arc::new(Schema::rideshare())).unwrap();
    let mut rng = fastrand::Rng::with_seed(3);
    for seq in 1..=20 {
        store.apply(seq, seq as u128, &ride(&mut rng)).unwrap();
    }
    store
        .apply(
            21,
            21,
            &WriteOp::Clear {
                table: Some("rides".into()),
            },
        )
        .unwrap();
    let q = ReadOp::Count {
        table: "rides".into(),
        filter: vec![Cond::new("source", CmpOp::Eq, 1)],
    };
    assert_eq!(store.read(&q).unwrap().count(), 0);
    assert_eq!(
        store.index_entries().unwrap(),
        0,
        "index entries left behind"
    );
}

#[test]
fn snapshots_leave_the_indexes_out_and_installing_rebuilds_them() {
    let schema = Arc::new(Schema::rideshare());
    let source = Store::temporary(schema.clone()).unwrap();
    let mut rng = fastrand::Rng::with_seed(5);
    for seq in 1..=80 {
        source.apply(seq, seq as u128, &ride(&mut rng)).unwrap();
    }
    let snap = source.snapshot().unwrap();
    assert!(
        snap.entries.iter().all(|(k, _)| k[0] != b'x' && k != b"mi"),
        "index entries in the snapshot"
    );
    // Over a store that holds other rows and their index entries.
    let copy = Store::temporary(schema).unwrap();
    for seq in 1..=30 {
        copy.apply(seq, seq as u128, &ride(&mut rng)).unwrap();
    }
    copy.install(&snap).unwrap();
    assert!(source.index_entries().unwrap() > 0);
    assert_eq!(
        copy.index_entries().unwrap(),
        source.index_entries().unwrap()
    );
    assert_eq!(copy.snapshot().unwrap(), snap);
    for _ in 0..100 {
        let q = query(&mut rng);
        assert_eq!(
            copy.read(&q).unwrap(),
            source.read(&q).unwrap(),
            "read {q:?}"
        );
    }
}
