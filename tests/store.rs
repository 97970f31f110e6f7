//! The worker store: every write and read op, atomicity, request-id replay,
//! snapshots, and recovery after a real crash (an aborted child process).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use dbaas::error::Error;
use dbaas::model::wire::Snapshot;
use dbaas::model::{CmpOp, Cond, Order, ReadOp, Row, Schema, Value, WriteOp, WriteResult};
use dbaas::store::{RecordLimits, Store, REMEMBERED_WRITES};

fn schema() -> Arc<Schema> {
    Arc::new(Schema::rideshare())
}

fn row(pairs: &[(&str, Value)]) -> Row {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn user(name: &str) -> Row {
    row(&[("username", name.into()), ("password", "pw".into())])
}

fn texts(items: &[&str]) -> Value {
    Value::List(items.iter().map(|s| Value::from(*s)).collect())
}

/// A ride without its key, for `insert_auto`.
fn ride(by: &str, ts: i64, src: i64, users: &[&str]) -> Row {
    row(&[
        ("created_by", by.into()),
        ("timestamp", ts.into()),
        ("source", src.into()),
        ("destination", 99.into()),
        ("users", texts(users)),
    ])
}

fn insert(table: &str, row: Row) -> WriteOp {
    WriteOp::Insert {
        table: table.into(),
        row,
    }
}

fn auto(row: Row) -> WriteOp {
    WriteOp::InsertAuto {
        table: "rides".into(),
        row,
    }
}

fn update(key: Option<Value>, filter: Option<Vec<Cond>>, set: Row, add: Row, rm: Row) -> WriteOp {
    WriteOp::Update {
        table: "rides".into(),
        key,
        filter,
        set,
        add,
        remove: rm,
    }
}

fn delete(table: &str, key: Option<Value>, filter: Option<Vec<Cond>>) -> WriteOp {
    WriteOp::Delete {
        table: table.into(),
        key,
        filter,
    }
}

fn clear(table: Option<&str>) -> WriteOp {
    WriteOp::Clear {
        table: table.map(Into::into),
    }
}

fn get(table: &str, key: impl Into<Value>) -> ReadOp {
    ReadOp::Get {
        table: table.into(),
        key: key.into(),
        columns: None,
    }
}

fn select(filter: Vec<Cond>) -> ReadOp {
    ReadOp::Select {
        table: "rides".into(),
        filter,
        columns: None,
        order_by: None,
        limit: None,
    }
}

/// A store plus the next seq to apply; request ids are 1000 + seq.
struct Db {
    store: Store,
}

impl Db {
    fn new() -> Db {
        Db {
            store: Store::temporary(schema()).unwrap(),
        }
    }

    fn try_write(&self, op: WriteOp) -> Result<WriteResult, Error> {
        let seq = self.store.applied_seq() + 1;
        self.store.apply(seq, 1000 + u128::from(seq), &op)
    }

    fn write(&self, op: WriteOp) -> WriteResult {
        self.try_write(op).unwrap()
    }

    fn rows(&self, op: ReadOp) -> Vec<Row> {
        self.store.read(&op).unwrap().into_rows()
    }

    fn count(&self, table: &str, filter: Vec<Cond>) -> u64 {
        let op = ReadOp::Count {
            table: table.into(),
            filter,
        };
        self.store.read(&op).unwrap().count()
    }

    fn ride_keys(&self, op: ReadOp) -> Vec<i64> {
        let rows = self.rows(op);
        rows.iter()
            .map(|r| r["ride_id"].as_int().unwrap())
            .collect()
    }

    fn next_auto_key(&self) -> Value {
        match self.write(auto(ride("x", 0, 0, &[]))) {
            WriteResult::Inserted { key } => key,
            other => panic!("{other:?}"),
        }
    }
}

fn inserted(key: impl Into<Value>) -> WriteResult {
    WriteResult::Inserted { key: key.into() }
}

#[test]
fn insert_get_and_duplicate_key_conflict() {
    let db = Db::new();
    assert_eq!(db.store.applied_seq(), 0);
    assert_eq!(db.write(insert("users", user("ann"))), inserted("ann"));
    assert_eq!(db.rows(get("users", "ann")), vec![user("ann")]);
    assert!(db.rows(get("users", "bob")).is_empty());
    let err = db.try_write(insert("users", user("ann"))).unwrap_err();
    assert!(
        matches!(&err, Error::Conflict(m) if m.starts_with("duplicate key")),
        "{err}"
    );
    assert_eq!(db.store.applied_seq(), 1);
    let projected = ReadOp::Get {
        table: "users".into(),
        key: "ann".into(),
        columns: Some(vec!["password".into()]),
    };
    assert_eq!(db.rows(projected), vec![row(&[("password", "pw".into())])]);
}

#[test]
fn auto_keys_start_at_one_are_never_reused_and_restart_after_clear() {
    let db = Db::new();
    assert_eq!(db.write(auto(ride("a", 1, 1, &[]))), inserted(1));
    assert_eq!(db.write(auto(ride("a", 2, 1, &[]))), inserted(2));
    let mut full = ride("a", 1, 1, &[]);
    full.insert("ride_id".into(), 1.into());
    assert_eq!(db.rows(get("rides", 1)), vec![full]);
    db.write(delete("rides", Some(2.into()), None));
    assert_eq!(db.next_auto_key(), Value::Int(3));
    // An explicit insert takes key 4: the counter skips it.
    let mut explicit = ride("b", 1, 1, &[]);
    explicit.insert("ride_id".into(), 4.into());
    db.write(insert("rides", explicit));
    assert_eq!(db.next_auto_key(), Value::Int(5));
    assert_eq!(db.write(clear(Some("rides"))), WriteResult::Cleared);
    assert_eq!(db.count("rides", vec![]), 0);
    assert_eq!(db.next_auto_key(), Value::Int(1));
    db.write(clear(None));
    assert_eq!(db.next_auto_key(), Value::Int(1));
}

#[test]
fn clear_of_one_table_keeps_the_others() {
    let db = Db::new();
    db.write(insert("users", user("ann")));
    db.write(auto(ride("a", 1, 1, &[])));
    db.write(clear(Some("users")));
    assert_eq!(db.count("users", vec![]), 0);
    assert_eq!(db.count("rides", vec![]), 1);
    assert_eq!(db.next_auto_key(), Value::Int(2));
    db.write(insert("users", user("bob")));
    db.write(clear(None));
    assert_eq!(db.count("users", vec![]) + db.count("rides", vec![]), 0);
}

#[test]
fn update_set_add_remove() {
    let db = Db::new();
    db.write(auto(ride("a", 1, 1, &["x"])));
    db.write(auto(ride("a", 2, 2, &[])));
    let add = row(&[("users", "y".into())]);
    let upd = update(Some(1.into()), None, Row::new(), add.clone(), Row::new());
    assert_eq!(db.write(upd.clone()), WriteResult::Updated { matched: 1 });
    // Adding again changes nothing but still matches.
    assert_eq!(db.write(upd), WriteResult::Updated { matched: 1 });
    assert_eq!(db.rows(get("rides", 1))[0]["users"], texts(&["x", "y"]));
    let set = row(&[("source", 7.into()), ("users", texts(&["y", "z", "y"]))]);
    db.write(update(Some(1.into()), None, set, Row::new(), Row::new()));
    let rm = row(&[("users", "y".into())]);
    db.write(update(Some(1.into()), None, Row::new(), Row::new(), rm));
    let got = &db.rows(get("rides", 1))[0];
    assert_eq!((&got["source"], &got["users"]), (&7.into(), &texts(&["z"])));
    let all = Some(vec![Cond::new("timestamp", CmpOp::Ge, 1)]);
    let upd = update(
        None,
        all,
        row(&[("destination", 5.into())]),
        add,
        Row::new(),
    );
    assert_eq!(db.write(upd), WriteResult::Updated { matched: 2 });
    assert_eq!(
        db.count("rides", vec![Cond::new("destination", CmpOp::Eq, 5)]),
        2
    );
    let missing = update(
        Some(9.into()),
        None,
        row(&[("source", 1.into())]),
        Row::new(),
        Row::new(),
    );
    assert_eq!(db.write(missing), WriteResult::Updated { matched: 0 });
}

#[test]
fn delete_by_key_and_where() {
    let db = Db::new();
    for ts in 1..=5 {
        db.write(auto(ride("a", ts, ts % 2, &[])));
    }
    assert_eq!(
        db.write(delete("rides", Some(1.into()), None)),
        WriteResult::Deleted { count: 1 }
    );
    assert_eq!(
        db.write(delete("rides", Some(1.into()), None)),
        WriteResult::Deleted { count: 0 }
    );
    let odd = Some(vec![Cond::new("source", CmpOp::Eq, 1)]);
    assert_eq!(
        db.write(delete("rides", None, odd)),
        WriteResult::Deleted { count: 2 }
    );
    assert_eq!(db.ride_keys(select(vec![])), vec![2, 4]);
}

#[test]
fn failing_batch_changes_nothing() {
    let db = Db::new();
    db.write(insert("users", user("ann")));
    db.write(auto(ride("ann", 1, 1, &[])));
    let (seq, sum) = (db.store.applied_seq(), db.store.checksum().unwrap());
    let batch = WriteOp::Batch {
        ops: vec![
            insert("users", user("bob")),
            auto(ride("bob", 2, 2, &[])),
            insert("users", user("ann")),
            delete("rides", Some(1.into()), None),
        ],
    };
    assert!(matches!(db.try_write(batch), Err(Error::Conflict(_))));
    assert_eq!(db.store.applied_seq(), seq);
    assert_eq!(db.store.checksum().unwrap(), sum);
    assert!(db.rows(get("users", "bob")).is_empty());
    assert!(db.store.replay(1000 + u128::from(seq + 1)).is_none());
    // The failed batch's auto insert did not consume a key.
    assert_eq!(db.next_auto_key(), Value::Int(2));
}

#[test]
fn batch_ops_see_the_effects_of_earlier_ones() {
    let db = Db::new();
    db.write(auto(ride("old", 1, 1, &[])));
    let batch = WriteOp::Batch {
        ops: vec![
            clear(None),
            insert("users", user("ann")),
            auto(ride("ann", 5, 1, &[])),
            auto(ride("ann", 6, 1, &[])),
            update(
                Some(2.into()),
                None,
                Row::new(),
                row(&[("users", "ann".into())]),
                Row::new(),
            ),
            delete(
                "rides",
                None,
                Some(vec![Cond::new("timestamp", CmpOp::Eq, 5)]),
            ),
            delete("users", Some("ann".into()), None),
        ],
    };
    let want = WriteResult::Batch(vec![
        WriteResult::Cleared,
        inserted("ann"),
        inserted(1),
        inserted(2),
        WriteResult::Updated { matched: 1 },
        WriteResult::Deleted { count: 1 },
        WriteResult::Deleted { count: 1 },
    ]);
    assert_eq!(db.write(batch), want);
    assert_eq!(db.ride_keys(select(vec![])), vec![2]);
    assert_eq!(db.rows(get("rides", 2))[0]["users"], texts(&["ann"]));
    assert_eq!(db.count("users", vec![]), 0);
    assert_eq!(db.store.applied_seq(), 2);
}

fn require(table: &str, key: impl Into<Value>, exists: bool) -> WriteOp {
    WriteOp::Require {
        table: table.into(),
        key: key.into(),
        exists,
    }
}

fn batch(ops: Vec<WriteOp>) -> WriteOp {
    WriteOp::Batch { ops }
}

/// The message of a failed precondition, or a panic naming what came.
fn precondition(r: Result<WriteResult, Error>) -> String {
    match r {
        Err(Error::Precondition(m)) => m,
        other => panic!("expected a failed precondition, got {other:?}"),
    }
}

#[test]
fn require_checks_that_a_key_exists_or_not() {
    let db = Db::new();
    db.write(insert("users", user("ann")));
    db.write(auto(ride("ann", 1, 1, &[])));
    let ok = batch(vec![
        require("users", "ann", true),
        require("users", "bob", false),
        require("rides", 1, true),
        require("rides", 2, false),
        auto(ride("ann", 2, 1, &[])),
    ]);
    let want = WriteResult::Batch(vec![
        WriteResult::Checked,
        WriteResult::Checked,
        WriteResult::Checked,
        WriteResult::Checked,
        inserted(2),
    ]);
    assert_eq!(db.write(ok), want);
    assert_eq!(db.store.applied_seq(), 3);

    let missing = batch(vec![
        require("users", "bob", true),
        auto(ride("bob", 3, 1, &[])),
    ]);
    let msg = precondition(db.try_write(missing));
    assert_eq!(msg, r#"precondition failed: users "bob" does not exist"#);
    let present = batch(vec![
        require("rides", 2, false),
        insert("users", user("bob")),
    ]);
    let msg = precondition(db.try_write(present));
    assert_eq!(msg, "precondition failed: rides 2 exists");
    // Keys of another table do not count.
    let elsewhere = batch(vec![require("rides", 7, true)]);
    precondition(db.try_write(elsewhere));
}

#[test]
fn require_sees_the_earlier_ops_of_its_batch() {
    let db = Db::new();
    db.write(insert("users", user("ann")));
    let after_insert = batch(vec![
        insert("users", user("bob")),
        require("users", "bob", true),
        auto(ride("bob", 1, 1, &[])),
    ]);
    assert!(db.try_write(after_insert).is_ok());
    let after_delete = batch(vec![
        delete("users", Some("ann".into()), None),
        require("users", "ann", false),
        insert("users", user("ann")),
        require("users", "ann", true),
        delete("users", Some("ann".into()), None),
        require("users", "ann", true),
    ]);
    let msg = precondition(db.try_write(after_delete));
    assert!(msg.contains(r#"users "ann" does not exist"#), "{msg}");
    // The failed batch's first delete did not happen either.
    assert_eq!(db.rows(get("users", "ann")), vec![user("ann")]);
}

#[test]
fn a_failed_precondition_writes_nothing_and_uses_no_seq() {
    let db = Db::new();
    db.write(insert("users", user("ann")));
    db.write(auto(ride("ann", 1, 1, &[])));
    let (seq, sum) = (db.store.applied_seq(), db.store.checksum().unwrap());
    let doomed = batch(vec![
        insert("users", user("bob")),
        auto(ride("bob", 2, 2, &[])),
        update(
            Some(1.into()),
            None,
            Row::new(),
            row(&[("users", "bob".into())]),
            Row::new(),
        ),
        require("users", "ghost", true),
        delete("rides", Some(1.into()), None),
    ]);
    precondition(db.try_write(doomed));
    assert_eq!(db.store.applied_seq(), seq);
    assert_eq!(db.store.checksum().unwrap(), sum);
    assert!(db.store.replay(1000 + u128::from(seq + 1)).is_none());
    assert!(db.rows(get("users", "bob")).is_empty());
    assert_eq!(db.rows(get("rides", 1))[0]["users"], texts(&[]));
    // Nor did its auto insert use up a key.
    assert_eq!(db.next_auto_key(), Value::Int(2));
}

#[test]
fn require_outside_a_batch_is_refused_and_writes_nothing() {
    let db = Db::new();
    db.write(insert("users", user("ann")));
    let err = db.try_write(require("users", "ann", true)).unwrap_err();
    assert!(matches!(err, Error::BadRequest(_)), "{err:?}");
    assert_eq!(db.store.applied_seq(), 1);
}

#[test]
fn require_in_a_group_sees_the_earlier_writes_of_the_group() {
    let store = Store::temporary(schema()).unwrap();
    let mut group = store.group();
    group.apply(1, 1, &insert("users", user("ann"))).unwrap();
    let join_ann = batch(vec![
        require("users", "ann", true),
        auto(ride("ann", 1, 1, &[])),
    ]);
    assert!(group.apply(2, 2, &join_ann).is_ok());
    group
        .apply(3, 3, &delete("users", Some("ann".into()), None))
        .unwrap();
    // Deleted by an earlier write of the same group, not yet committed.
    let again = batch(vec![
        require("users", "ann", true),
        auto(ride("ann", 2, 1, &[])),
    ]);
    precondition(group.apply(4, 4, &again));
    assert!(group.replay(4).is_none());
    assert_eq!(group.next_seq(), 4, "the failed write used no seq");
    let fresh = batch(vec![
        require("users", "ann", false),
        insert("users", user("ann")),
    ]);
    assert!(group.apply(4, 5, &fresh).is_ok());
    assert_eq!(group.commit().unwrap(), 4);
    assert_eq!(store.read(&get("rides", 1)).unwrap().count(), 1);
    assert_eq!(store.read(&get("rides", 2)).unwrap().count(), 0);
    assert_eq!(store.read(&get("users", "ann")).unwrap().count(), 1);
    assert_eq!(store.replay(5).unwrap().seq, 4);
}

#[test]
fn select_orders_stably_then_limits_then_projects() {
    let db = Db::new();
    for (ts, src) in [(3, 1), (1, 2), (3, 3), (2, 4), (3, 5)] {
        db.write(auto(ride("a", ts, src, &[])));
    }
    let ordered = |desc, limit, columns| ReadOp::Select {
        table: "rides".into(),
        filter: vec![Cond::new("source", CmpOp::Ne, 4)],
        columns,
        order_by: Some(Order {
            column: "timestamp".into(),
            desc,
        }),
        limit,
    };
    assert_eq!(db.ride_keys(ordered(false, None, None)), vec![2, 1, 3, 5]);
    assert_eq!(db.ride_keys(ordered(true, None, None)), vec![1, 3, 5, 2]);
    assert_eq!(db.ride_keys(ordered(true, Some(2), None)), vec![1, 3]);
    let cols = Some(vec!["ride_id".into(), "source".into()]);
    let got = db.rows(ordered(true, Some(2), cols));
    let want = vec![
        row(&[("ride_id", 1.into()), ("source", 1.into())]),
        row(&[("ride_id", 3.into()), ("source", 3.into())]),
    ];
    assert_eq!(got, want);
    assert!(db.rows(ordered(false, Some(0), None)).is_empty());
    let first_two = ReadOp::Select {
        table: "rides".into(),
        filter: vec![],
        columns: None,
        order_by: None,
        limit: Some(2),
    };
    assert_eq!(db.ride_keys(first_two), vec![1, 2]);
}

#[test]
fn conditions_of_every_operator_and_contains() {
    let db = Db::new();
    for ts in 1..=5 {
        let users: &[&str] = if ts % 2 == 0 {
            &["even"]
        } else {
            &["odd", "x"]
        };
        db.write(auto(ride(&format!("u{ts}"), ts, 0, users)));
    }
    let keys = |col: &str, op, v: Value| db.ride_keys(select(vec![Cond::new(col, op, v)]));
    assert_eq!(keys("timestamp", CmpOp::Eq, 3.into()), vec![3]);
    assert_eq!(keys("timestamp", CmpOp::Ne, 3.into()), vec![1, 2, 4, 5]);
    assert_eq!(keys("timestamp", CmpOp::Lt, 3.into()), vec![1, 2]);
    assert_eq!(keys("timestamp", CmpOp::Le, 3.into()), vec![1, 2, 3]);
    assert_eq!(keys("timestamp", CmpOp::Gt, 3.into()), vec![4, 5]);
    assert_eq!(keys("timestamp", CmpOp::Ge, 3.into()), vec![3, 4, 5]);
    assert_eq!(keys("created_by", CmpOp::Gt, "u3".into()), vec![4, 5]);
    assert_eq!(keys("users", CmpOp::Contains, "odd".into()), vec![1, 3, 5]);
    assert_eq!(
        keys("users", CmpOp::Contains, "nobody".into()),
        Vec::<i64>::new()
    );
    assert_eq!(keys("users", CmpOp::Eq, texts(&["even"])), vec![2, 4]);
    assert_eq!(keys("users", CmpOp::Ne, texts(&["even"])), vec![1, 3, 5]);
    // A value of another type compares with nothing.
    assert_eq!(keys("timestamp", CmpOp::Ne, "3".into()), Vec::<i64>::new());
    let both = vec![
        Cond::new("timestamp", CmpOp::Gt, 1),
        Cond::new("users", CmpOp::Contains, "x"),
    ];
    assert_eq!(db.ride_keys(select(both.clone())), vec![3, 5]);
    assert_eq!(db.count("rides", both), 2);
    assert_eq!(db.count("rides", vec![]), 5);
}

#[test]
fn unknown_tables_are_errors_not_panics() {
    let db = Db::new();
    assert!(matches!(
        db.try_write(clear(Some("nope"))),
        Err(Error::BadRequest(_))
    ));
    assert!(db.store.read(&get("nope", 1)).is_err());
    assert!(db.store.read(&get("rides", Value::Null)).is_err());
    assert_eq!(db.store.applied_seq(), 0);
}

#[test]
fn replay_returns_the_recorded_reply() {
    let db = Db::new();
    db.store
        .apply(1, 42, &insert("users", user("ann")))
        .unwrap();
    db.store
        .apply(2, 43, &auto(ride("ann", 1, 1, &[])))
        .unwrap();
    let reply = db.store.replay(43).unwrap();
    assert_eq!((reply.seq, reply.result), (2, inserted(1)));
    assert_eq!(db.store.replay(42).unwrap().result, inserted("ann"));
    assert!(db.store.replay(44).is_none());
}

#[test]
fn a_group_equals_its_writes_one_by_one() {
    let grouped = Store::temporary(schema()).unwrap();
    let single = Store::temporary(schema()).unwrap();
    let mut group = grouped.group();
    for i in 0..300 {
        let seq = group.next_seq();
        let op = scripted(i);
        let a = group
            .apply(seq, u128::from(i), &op)
            .map_err(|e| e.to_string());
        let b = single
            .apply(seq, u128::from(i), &op)
            .map_err(|e| e.to_string());
        assert_eq!(a, b, "write {i}");
        if i % 97 == 0 {
            group.commit().unwrap();
            group = grouped.group();
        }
    }
    // Nothing of the open group is visible before it is committed.
    assert!(grouped.applied_seq() < single.applied_seq());
    assert_eq!(group.commit().unwrap(), single.applied_seq());
    assert_eq!(untimed(&grouped), untimed(&single));
}

#[test]
fn a_failed_write_in_a_group_leaves_the_others_and_its_seq() {
    let store = Store::temporary(schema()).unwrap();
    let mut group = store.group();
    group.apply(1, 1, &insert("users", user("ann"))).unwrap();
    let dup = WriteOp::Batch {
        ops: vec![
            insert("users", user("bob")),
            auto(ride("ann", 1, 1, &[])),
            insert("users", user("ann")),
        ],
    };
    assert!(matches!(group.apply(2, 2, &dup), Err(Error::Conflict(_))));
    assert!(group.replay(2).is_none());
    assert!(matches!(
        group.apply(3, 3, &insert("users", user("cat"))),
        Err(Error::Storage(_))
    ));
    group.apply(2, 3, &auto(ride("ann", 1, 1, &[]))).unwrap();
    assert_eq!(group.replay(1).unwrap().seq, 1);
    assert_eq!(group.replay(3).unwrap().result, inserted(1));
    assert_eq!(group.commit().unwrap(), 2);
    assert_eq!(store.read(&get("users", "bob")).unwrap().count(), 0);
    assert_eq!(store.read(&get("rides", 1)).unwrap().count(), 1);
    assert_eq!(store.replay(3).unwrap().seq, 2);
}

#[test]
fn a_dropped_group_writes_nothing() {
    let store = Store::temporary(schema()).unwrap();
    store.apply(1, 1, &insert("users", user("ann"))).unwrap();
    let before = store.snapshot().unwrap();
    {
        let mut group = store.group();
        group.apply(2, 2, &insert("users", user("bob"))).unwrap();
        assert_eq!(group.len(), 1);
    }
    assert_eq!(store.snapshot().unwrap(), before);
    store.apply(2, 3, &insert("users", user("cat"))).unwrap();
    assert!(store.replay(2).is_none());
}

#[test]
fn seq_gaps_and_repeats_are_refused() {
    let db = Db::new();
    let op = insert("users", user("ann"));
    assert!(matches!(db.store.apply(0, 1, &op), Err(Error::Storage(_))));
    assert!(matches!(db.store.apply(2, 1, &op), Err(Error::Storage(_))));
    db.store.apply(1, 1, &op).unwrap();
    assert!(matches!(db.store.apply(1, 2, &op), Err(Error::Storage(_))));
    assert!(matches!(db.store.apply(3, 2, &op), Err(Error::Storage(_))));
    assert_eq!(db.store.applied_seq(), 1);
}

#[test]
fn only_the_latest_request_ids_are_remembered() {
    let db = Db::new();
    // The count bound of the defaults, scaled down (a million writes take
    // long); the window's default is far away.
    let count = 1_000;
    db.store.set_record_limits(RecordLimits {
        count,
        ..RecordLimits::default()
    });
    assert_eq!(RecordLimits::default().count, REMEMBERED_WRITES);
    let op = clear(Some("users"));
    for seq in 1..=count + 2 {
        db.store.apply(seq, u128::from(seq), &op).unwrap();
    }
    assert!(db.store.replay(1).is_none());
    assert!(db.store.replay(2).is_none());
    assert_eq!(db.store.replay(3).unwrap().seq, 3);
    let records = db.store.snapshot().unwrap().entries;
    let count_of = |p: u8| records.iter().filter(|(k, _)| k[0] == p).count() as u64;
    assert_eq!((count_of(b'r'), count_of(b'q')), (count, count));
}

#[test]
fn epoch_persists_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), schema()).unwrap();
        assert_eq!(store.epoch(), 0);
        store.begin_epoch(7).unwrap();
        store.apply(1, 1, &insert("users", user("ann"))).unwrap();
        store.flush().unwrap();
    }
    let store = Store::open(dir.path(), schema()).unwrap();
    assert_eq!((store.epoch(), store.applied_seq()), (7, 1));
    assert_eq!(store.read(&get("users", "ann")).unwrap().count(), 1);
}

#[test]
fn snapshot_round_trip() {
    let src = Db::new();
    src.store.begin_epoch(3).unwrap();
    src.write(insert("users", user("ann")));
    for ts in 1..=4 {
        src.write(auto(ride("ann", ts, 1, &["ann"])));
    }
    src.write(delete("rides", Some(4.into()), None));
    let dst = Db::new();
    for name in ["zed", "old"] {
        dst.write(insert("users", user(name)));
    }
    dst.write(auto(ride("old", 9, 9, &[])));
    let snap = src.store.snapshot().unwrap();
    assert_eq!(snap.seq, 6);
    dst.store.install(&snap).unwrap();
    assert_eq!(dst.store.checksum().unwrap(), src.store.checksum().unwrap());
    assert_eq!(dst.store.applied_seq(), 6);
    assert_eq!(dst.store.epoch(), 3);
    assert!(dst.rows(get("users", "zed")).is_empty());
    assert_eq!(dst.store.replay(1006).unwrap().seq, 6);
    assert_eq!(dst.store.snapshot().unwrap(), snap);
    assert_eq!(dst.next_auto_key(), Value::Int(5));
    assert_eq!(src.next_auto_key(), Value::Int(5));
    assert_eq!(dst.store.checksum().unwrap(), src.store.checksum().unwrap());
}

#[test]
fn install_refuses_foreign_snapshots() {
    let db = Db::new();
    db.write(insert("users", user("ann")));
    let foreign = Snapshot {
        seq: 1,
        entries: vec![(b"zzz".to_vec(), vec![1])],
    };
    assert!(db.store.install(&foreign).is_err());
    let lying = Snapshot {
        seq: 5,
        entries: vec![(b"ms".to_vec(), 4u64.to_be_bytes().to_vec())],
    };
    assert!(db.store.install(&lying).is_err());
    assert_eq!(db.rows(get("users", "ann")).len(), 1);
    db.store.install(&Snapshot::default()).unwrap();
    assert_eq!(
        (db.store.applied_seq(), db.store.checksum().unwrap()),
        (0, Db::new().store.checksum().unwrap())
    );
}

#[test]
fn checksum_tells_rows_apart() {
    let (a, b) = (Db::new(), Db::new());
    assert_eq!(a.store.checksum().unwrap(), b.store.checksum().unwrap());
    a.write(insert("users", user("ann")));
    assert_ne!(a.store.checksum().unwrap(), b.store.checksum().unwrap());
    b.write(insert("users", user("ann")));
    assert_eq!(a.store.checksum().unwrap(), b.store.checksum().unwrap());
    a.write(update(
        None,
        Some(vec![]),
        row(&[("source", 1.into())]),
        Row::new(),
        Row::new(),
    ));
    assert_eq!(a.store.checksum().unwrap(), b.store.checksum().unwrap());
}

// ---- crash recovery: a child process writes, then aborts ----

const CRASH_DIR: &str = "DBAAS_STORE_CRASH_DIR";
const WRITES: u64 = 2000;

/// The `i`th (from 0) of a deterministic mix of writes that all succeed.
fn scripted(i: u64) -> WriteOp {
    let n = i as i64;
    match i % 4 {
        0 => insert("users", user(&format!("u{i}"))),
        1 => auto(ride(&format!("u{}", i - 1), n, n % 7, &[])),
        2 => {
            let add = row(&[("users", Value::from(format!("u{i}")))]);
            update(Some((n / 4 + 1).into()), None, Row::new(), add, Row::new())
        }
        _ => WriteOp::Batch {
            ops: vec![
                insert("users", user(&format!("b{i}"))),
                delete("users", Some(format!("u{}", i - 3).into()), None),
                auto(ride("b", n, n % 5, &["b"])),
                update(
                    None,
                    Some(vec![Cond::new("source", CmpOp::Eq, n % 7)]),
                    row(&[("destination", n.into())]),
                    Row::new(),
                    Row::new(),
                ),
            ],
        },
    }
}

fn apply_scripted(store: &Store, count: u64) {
    for i in 0..count {
        store.apply(i + 1, u128::from(i + 1), &scripted(i)).unwrap();
    }
}

/// In the child: apply the script to the store in `dir` in groups of
/// `group` writes (1: each write alone), then crash.
fn crash_writer(dir: &Path, flush: bool, group: u64) -> ! {
    let store = Store::open(dir, schema()).unwrap();
    for chunk in (0..WRITES).collect::<Vec<_>>().chunks(group as usize) {
        let mut g = store.group();
        for &i in chunk {
            g.apply(i + 1, u128::from(i + 1), &scripted(i)).unwrap();
        }
        g.commit().unwrap();
        let done = chunk[chunk.len() - 1] + 1;
        if done % 250 == 0 {
            println!("progress {done}");
        }
    }
    if flush {
        store.flush().unwrap();
        println!("FLUSH DONE");
    }
    std::process::abort();
}

/// Runs test `name` again in a child that acts as the writer, and returns
/// the store it left behind after its crash.
fn crash_child(name: &str, flush: bool) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CRASH_DIR, dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "the child did not crash: {stdout}");
    assert!(stdout.contains(&format!("progress {WRITES}")), "{stdout}");
    assert_eq!(stdout.contains("FLUSH DONE"), flush, "{stdout}");
    let store = Store::open(dir.path(), schema()).unwrap();
    (dir, store)
}

/// The recovered store equals a fresh one given the first `applied_seq`
/// writes: data, meta and request records alike.
fn assert_consistent_prefix(store: &Store) -> u64 {
    let k = store.applied_seq();
    assert!(k <= WRITES);
    let fresh = Store::temporary(schema()).unwrap();
    apply_scripted(&fresh, k);
    assert_eq!(store.checksum().unwrap(), fresh.checksum().unwrap());
    assert_eq!(untimed(store), untimed(&fresh));
    k
}

#[test]
fn unflushed_crash_leaves_a_consistent_prefix() {
    if let Some(dir) = std::env::var_os(CRASH_DIR) {
        crash_writer(Path::new(&dir), false, 1);
    }
    let (_dir, store) = crash_child("unflushed_crash_leaves_a_consistent_prefix", false);
    let k = assert_consistent_prefix(&store);
    eprintln!("recovered {k} of {WRITES} unflushed writes");
}

#[test]
fn unflushed_crash_keeps_whole_groups() {
    if let Some(dir) = std::env::var_os(CRASH_DIR) {
        crash_writer(Path::new(&dir), false, 50);
    }
    let (_dir, store) = crash_child("unflushed_crash_keeps_whole_groups", false);
    let k = assert_consistent_prefix(&store);
    assert_eq!(k % 50, 0, "a group was cut: {k} writes survived");
    eprintln!("recovered {k} of {WRITES} unflushed writes, in groups of 50");
}

#[test]
fn flushed_crash_loses_nothing() {
    if let Some(dir) = std::env::var_os(CRASH_DIR) {
        crash_writer(Path::new(&dir), true, 16);
    }
    let (_dir, store) = crash_child("flushed_crash_loses_nothing", true);
    assert_eq!(assert_consistent_prefix(&store), WRITES);
}

/// A store's snapshot without the times its request records were made
/// (two stores given the same writes at other times differ only there).
fn untimed(store: &Store) -> dbaas::model::wire::Snapshot {
    let mut snap = store.snapshot().unwrap();
    for (k, v) in &mut snap.entries {
        if k[0] == b'q' {
            v.truncate(16);
        }
    }
    snap
}

/// Applies `op` as `seq`, request `id`, with its record made at `now_ms`.
fn apply_at(store: &Store, now_ms: u64, seq: u64, id: u128, op: &WriteOp) {
    let mut group = store.group_at(now_ms);
    group.apply(seq, id, op).unwrap();
    group.commit().unwrap();
}

#[test]
fn request_records_are_forgotten_by_age() {
    let db = Db::new();
    db.store.set_record_limits(RecordLimits {
        window_ms: 1_000,
        count: 1_000,
    });
    let op = clear(Some("users"));
    for seq in 1..=6 {
        apply_at(&db.store, 100 + seq, seq, u128::from(seq), &op);
    }
    assert_eq!(db.store.request_records().unwrap(), 6);
    assert_eq!(db.store.forgotten_through_ms(), 0);
    // Within the window: all kept.
    apply_at(&db.store, 1_100, 7, 7, &op);
    assert_eq!(db.store.request_records().unwrap(), 7);
    // Past it: the oldest go, a few per write, the young ones stay.
    apply_at(&db.store, 1_105, 8, 8, &op);
    assert!(db.store.replay(1).is_none());
    assert!(db.store.replay(4).is_none());
    assert_eq!(db.store.replay(5).unwrap().seq, 5);
    assert_eq!(db.store.forgotten_through_ms(), 104);
    apply_at(&db.store, 5_000, 9, 9, &op);
    // Everything older than the window, up to the write just recorded.
    assert_eq!(db.store.request_records().unwrap(), 1);
    assert_eq!(db.store.replay(9).unwrap().seq, 9);
    assert_eq!(db.store.forgotten_through_ms(), 1_105);
}

#[test]
fn request_records_are_bounded_in_count_too() {
    let db = Db::new();
    db.store.set_record_limits(RecordLimits {
        window_ms: u64::MAX,
        count: 3,
    });
    let op = clear(Some("users"));
    for seq in 1..=10 {
        apply_at(&db.store, 1_000 + seq, seq, u128::from(seq), &op);
    }
    assert_eq!(db.store.request_records().unwrap(), 3);
    assert!(db.store.replay(7).is_none());
    assert_eq!(db.store.replay(8).unwrap().seq, 8);
    assert_eq!(db.store.forgotten_through_ms(), 1_007);
}

/// Within one group (one read of the oldest record serves its writes),
/// the bounds hold write by write, across a write that fails.
#[test]
fn request_records_are_bounded_within_one_group() {
    let db = Db::new();
    db.store.set_record_limits(RecordLimits {
        window_ms: u64::MAX,
        count: 3,
    });
    let op = clear(Some("users"));
    let mut group = db.store.group_at(1_000);
    for seq in 1..=10 {
        group.apply(seq, u128::from(seq), &op).unwrap();
        let refused = WriteOp::Require {
            table: "users".into(),
            key: Value::Text("nobody".into()),
            exists: true,
        };
        assert!(group
            .apply(seq + 1, 1_000 + u128::from(seq), &refused)
            .is_err());
    }
    group.commit().unwrap();
    assert_eq!(db.store.request_records().unwrap(), 3);
    assert!(db.store.replay(7).is_none());
    for seq in 8..=10 {
        assert_eq!(db.store.replay(u128::from(seq)).unwrap().seq, seq);
    }
}

/// A request whose record may have been forgotten is stale: the master
/// refuses it rather than apply it a second time.
#[test]
fn a_request_older_than_what_was_forgotten_is_stale() {
    let db = Db::new();
    db.store.set_record_limits(RecordLimits {
        window_ms: 10_000,
        count: 2,
    });
    let op = clear(Some("users"));
    for seq in 1..=3 {
        apply_at(&db.store, 1_000 * seq, seq, u128::from(seq), &op);
    }
    // Record 1 (made at 1000) is forgotten by count.
    assert!(db.store.replay(1).is_none());
    let group = db.store.group_at(5_000);
    // Request 1 again, sent before its record was made: refused.
    assert!(group.stale(900));
    assert!(group.stale(1_000));
    // Sent after the newest forgotten record was made: could not have one.
    assert!(!group.stale(1_001));
    assert!(!group.stale(5_000));
    drop(group);
    // Sent longer ago than the window: refused whatever was forgotten.
    let later = db.store.group_at(20_000);
    assert!(later.stale(9_999));
    assert!(!later.stale(10_001));
}

#[test]
fn the_record_horizon_survives_reopen_and_travels_with_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let op = clear(Some("users"));
    let snap = {
        let store = Store::open(dir.path(), schema()).unwrap();
        store.set_record_limits(RecordLimits {
            window_ms: 10,
            count: 100,
        });
        apply_at(&store, 100, 1, 1, &op);
        apply_at(&store, 200, 2, 2, &op);
        assert_eq!(store.forgotten_through_ms(), 100);
        store.flush().unwrap();
        store.snapshot().unwrap()
    };
    let store = Store::open(dir.path(), schema()).unwrap();
    assert_eq!(store.forgotten_through_ms(), 100);
    let other = Store::temporary(schema()).unwrap();
    other.install(&snap).unwrap();
    assert_eq!(other.forgotten_through_ms(), 100);
    assert!(other.group_at(300).stale(100));
}

// ---- the maintained row counts ----

/// The count the store keeps, and the rows a scan finds: they must agree.
fn assert_counts_exact(store: &Store) {
    for table in ["users", "rides"] {
        let kept = store
            .read(&ReadOp::Count {
                table: table.into(),
                filter: Vec::new(),
            })
            .unwrap()
            .count();
        let scanned = store
            .read(&ReadOp::Select {
                table: table.into(),
                filter: Vec::new(),
                columns: None,
                order_by: None,
                limit: None,
            })
            .unwrap()
            .count();
        assert_eq!(kept, scanned, "count of {table}");
    }
}

#[test]
fn the_row_count_stays_exact_through_every_write() {
    let db = Db::new();
    assert_counts_exact(&db.store);
    for name in ["ann", "bob", "cy"] {
        db.write(insert("users", user(name)));
    }
    for ts in 1..=6 {
        db.write(auto(ride("ann", ts, ts % 3, &[])));
    }
    db.write(insert("rides", {
        let mut r = ride("bob", 50, 1, &[]);
        r.insert("ride_id".into(), 100.into());
        r
    }));
    assert_eq!(db.count("rides", vec![]), 7);
    assert_counts_exact(&db.store);
    // A duplicate key and a refused batch change nothing.
    assert!(db.try_write(insert("users", user("ann"))).is_err());
    let refused = batch(vec![
        auto(ride("bob", 9, 1, &[])),
        delete("rides", Some(1.into()), None),
        require("users", "nobody", true),
    ]);
    assert!(db.try_write(refused).is_err());
    assert_eq!(db.count("rides", vec![]), 7);
    // Updates keep it; deletes by key, by a missing key, by conditions.
    db.write(update(
        Some(2.into()),
        None,
        row(&[("source", 2.into())]),
        Row::new(),
        Row::new(),
    ));
    db.write(delete("rides", Some(1.into()), None));
    db.write(delete("rides", Some(1.into()), None));
    db.write(delete(
        "rides",
        None,
        Some(vec![Cond::new("source", CmpOp::Eq, 0)]),
    ));
    assert_counts_exact(&db.store);
    // A batch that inserts and deletes the same rows.
    db.write(batch(vec![
        auto(ride("cy", 70, 2, &[])),
        auto(ride("cy", 71, 2, &[])),
        delete(
            "rides",
            None,
            Some(vec![Cond::new("created_by", CmpOp::Eq, "cy")]),
        ),
        insert("users", user("dee")),
    ]));
    assert_counts_exact(&db.store);
    assert_eq!(db.count("users", vec![]), 4);
    // A group with a failing write in the middle.
    let mut group = db.store.group();
    let next = db.store.applied_seq() + 1;
    group
        .apply(next, 1, &auto(ride("dee", 80, 1, &[])))
        .unwrap();
    assert!(group
        .apply(next + 1, 2, &insert("users", user("dee")))
        .is_err());
    group
        .apply(next + 1, 3, &insert("users", user("eve")))
        .unwrap();
    group.commit().unwrap();
    assert_counts_exact(&db.store);
    assert_eq!(db.count("users", vec![]), 5);
    db.write(clear(Some("rides")));
    assert_eq!(db.count("rides", vec![]), 0);
    assert_eq!(db.count("users", vec![]), 5);
    db.write(auto(ride("ann", 5, 1, &[])));
    db.write(clear(None));
    assert_counts_exact(&db.store);
    assert_eq!(db.count("users", vec![]), 0);
    db.write(insert("users", user("fay")));
    assert_eq!(db.count("users", vec![]), 1);
}

/// Opens the sled tree of a store directory directly (the store may still
/// be held a moment by sled's flusher after it was dropped).
fn raw(dir: &Path) -> sled::Db {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match sled::open(dir) {
            Ok(db) => return db,
            Err(e) if std::time::Instant::now() < deadline => {
                assert!(e.to_string().contains("lock"), "{e}");
                std::thread::yield_now();
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn counts_survive_reopen_and_an_old_layout_store_gets_them_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), schema()).unwrap();
        store.apply(1, 1, &insert("users", user("ann"))).unwrap();
        for seq in 2..=11 {
            store
                .apply(seq, seq.into(), &auto(ride("ann", seq as i64, 1, &[])))
                .unwrap();
        }
        store.flush().unwrap();
    }
    {
        let store = Store::open(dir.path(), schema()).unwrap();
        assert_eq!(store.read(&count_of("rides")).unwrap().count(), 10);
        assert_counts_exact(&store);
    }
    // Make it a store of the previous layout: no counts, and index
    // entries that repeat the row's tree key as their value.
    {
        let db = raw(dir.path());
        for k in db.scan_prefix(b"mn").keys() {
            db.remove(k.unwrap()).unwrap();
        }
        db.remove(b"ma").unwrap();
        let mut old_entries = Vec::new();
        for entry in db.scan_prefix(b"x") {
            let (k, _) = entry.unwrap();
            old_entries.push(k.to_vec());
        }
        for k in old_entries {
            db.remove(&k).unwrap();
            // Some entry of the old layout; the open must replace it.
            let mut old = k.clone();
            old.extend_from_slice(b"drides\0");
            db.insert(old, b"drides\0".to_vec()).unwrap();
        }
        db.insert(
            b"mi",
            &b"rides(source,destination,timestamp);rides(created_by);"[..],
        )
        .unwrap();
        db.flush().unwrap();
    }
    let store = Store::open(dir.path(), schema()).unwrap();
    assert_eq!(store.read(&count_of("rides")).unwrap().count(), 10);
    assert_counts_exact(&store);
    assert_eq!(store.index_entries().unwrap(), 20);
    let by = vec![Cond::new("created_by", CmpOp::Eq, "ann")];
    assert_eq!(store.read(&select(by.clone())).unwrap().count(), 10);
    assert_eq!(
        store
            .read(&ReadOp::Count {
                table: "rides".into(),
                filter: by
            })
            .unwrap()
            .count(),
        10
    );
    // A later write keeps the rebuilt count.
    store
        .apply(12, 12, &delete("rides", Some(3.into()), None))
        .unwrap();
    assert_eq!(store.read(&count_of("rides")).unwrap().count(), 9);
}

#[test]
fn counts_written_at_another_seq_are_rebuilt_on_open() {
    // What an earlier version leaves when it writes to a store with
    // counts: rows and applied seq move on, the counts do not.
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), schema()).unwrap();
        store.apply(1, 1, &insert("users", user("ann"))).unwrap();
        store.apply(2, 2, &insert("users", user("bob"))).unwrap();
        store.flush().unwrap();
    }
    {
        let db = raw(dir.path());
        db.insert(b"mnusers", &7u64.to_be_bytes()[..]).unwrap();
        db.insert(b"ms", &3u64.to_be_bytes()[..]).unwrap();
        db.flush().unwrap();
    }
    let store = Store::open(dir.path(), schema()).unwrap();
    assert_eq!(store.read(&count_of("users")).unwrap().count(), 2);
}

fn count_of(table: &str) -> ReadOp {
    ReadOp::Count {
        table: table.into(),
        filter: Vec::new(),
    }
}

#[test]
fn a_snapshot_carries_no_counts_and_the_installer_counts_its_rows() {
    let src = Db::new();
    src.write(insert("users", user("ann")));
    for ts in 1..=5 {
        src.write(auto(ride("ann", ts, 1, &[])));
    }
    let snap = src.store.snapshot().unwrap();
    assert!(snap
        .entries
        .iter()
        .all(|(k, _)| !k.starts_with(b"mn") && k != b"ma"));
    let dst = Db::new();
    for name in ["x", "y", "z"] {
        dst.write(insert("users", user(name)));
    }
    dst.store.install(&snap).unwrap();
    assert_counts_exact(&dst.store);
    assert_eq!(dst.count("rides", vec![]), 5);
    assert_eq!(dst.count("users", vec![]), 1);
    // Counts a snapshot should not hold (a newer version's, a forged
    // one's) are ignored: the installer counts for itself.
    let mut forged = snap.clone();
    forged
        .entries
        .push((b"mnrides".to_vec(), 99u64.to_be_bytes().to_vec()));
    forged
        .entries
        .push((b"ma".to_vec(), 0u64.to_be_bytes().to_vec()));
    let other = Db::new();
    other.store.install(&forged).unwrap();
    assert_eq!(other.count("rides", vec![]), 5);
    // The installed store goes on counting from there.
    other.write(auto(ride("ann", 9, 1, &[])));
    assert_eq!(other.count("rides", vec![]), 6);
    assert_counts_exact(&other.store);
}

#[test]
fn counts_and_ranges_an_index_covers_equal_a_scan_of_the_rows() {
    let indexed = Db::new();
    let plain = Db {
        store: Store::temporary(Arc::new(Schema::rideshare().without_indexes())).unwrap(),
    };
    let mut rng = fastrand::Rng::with_seed(5);
    for db in [&indexed, &plain] {
        db.write(insert("users", user("a\0b")));
    }
    for _ in 0..300 {
        let by = ["a\0b", "ann", "ann\0", "bo", ""][rng.usize(0..5)];
        let mut r = ride(by, rng.i64(-3..30), rng.i64(1..5), &[]);
        r.insert("destination".into(), rng.i64(1..4).into());
        if rng.u8(0..10) == 0 {
            // Rows without an indexed column index it as null.
            r.remove("timestamp");
        }
        for db in [&indexed, &plain] {
            db.write(auto(r.clone()));
        }
    }
    let conds = |rng: &mut fastrand::Rng| -> Vec<Cond> {
        let mut f = vec![Cond::new("source", CmpOp::Eq, rng.i64(0..5))];
        if rng.bool() {
            f.push(Cond::new("destination", CmpOp::Eq, rng.i64(1..4)));
        }
        let ops = [
            CmpOp::Gt,
            CmpOp::Ge,
            CmpOp::Lt,
            CmpOp::Le,
            CmpOp::Ne,
            CmpOp::Eq,
        ];
        for _ in 0..rng.usize(0..3) {
            let value = match rng.u8(0..4) {
                0 => Value::from("text"),
                1 => Value::Null,
                _ => Value::Int(rng.i64(-5..35)),
            };
            f.push(Cond::new("timestamp", ops[rng.usize(0..ops.len())], value));
        }
        if rng.u8(0..4) == 0 {
            // Not in the index: the rows are read.
            f.push(Cond::new("users", CmpOp::Contains, "ann"));
        }
        f
    };
    for _ in 0..300 {
        let filter = if rng.u8(0..4) == 0 {
            let by = ["a\0b", "ann", "ann\0", "bo", "", "zz"][rng.usize(0..6)];
            vec![Cond::new("created_by", CmpOp::Eq, by)]
        } else {
            conds(&mut rng)
        };
        assert_eq!(
            indexed.count("rides", filter.clone()),
            plain.count("rides", filter.clone()),
            "{filter:?}"
        );
        assert_eq!(
            indexed.count("rides", filter.clone()),
            indexed.store.read(&select(filter.clone())).unwrap().count(),
            "{filter:?}"
        );
        // The rows an index range finds are those a scan finds.
        assert_eq!(
            indexed.rows(select(filter.clone())),
            plain.rows(select(filter.clone())),
            "{filter:?}"
        );
    }
}

fn eq(column: &str, value: impl Into<Value>) -> Cond {
    Cond {
        column: column.into(),
        op: CmpOp::Eq,
        value: value.into(),
    }
}

/// A restore replaces every row and auto-key counter with the backup's,
/// under the next seq, rebuilding indexes and counts; the request records
/// stay the store's own, and the restore's answer is recorded too.
#[test]
fn a_restore_replaces_rows_and_counters_and_keeps_the_request_records() {
    let from = Db::new();
    from.write(insert("users", user("ann")));
    from.write(auto(ride("ann", 10, 3, &["ann"])));
    from.write(auto(ride("ann", 20, 4, &[])));
    let entries = dbaas::store::backup_entries(from.store.snapshot().unwrap().entries);
    let to = Db::new();
    to.write(insert("users", user("bob")));
    for ts in 0..5 {
        to.write(auto(ride("bob", ts, 4, &[])));
    }
    let seq = to.store.applied_seq() + 1;
    let mut group = to.store.group();
    let result = group.restore(seq, 77, &entries).unwrap();
    assert_eq!(result, WriteResult::Restored { rows: 3 });
    assert_eq!(group.commit().unwrap(), seq);
    assert_eq!(to.store.checksum().unwrap(), from.store.checksum().unwrap());
    assert!(to.rows(get("users", "bob")).is_empty());
    assert_eq!(to.count("rides", vec![]), 2);
    assert_eq!(to.ride_keys(select(vec![eq("source", 4)])), vec![2]);
    assert_eq!(
        to.ride_keys(select(vec![eq("created_by", "bob")])),
        Vec::<i64>::new()
    );
    assert_eq!(
        to.store.index_entries().unwrap(),
        from.store.index_entries().unwrap()
    );
    // Auto keys go on from the backup's counter.
    assert_eq!(to.next_auto_key(), Value::Int(3));
    // Bob's insert (seq 1) is still answered from its record, and so is
    // the restore.
    assert_eq!(to.store.replay(1001).map(|r| r.seq), Some(1));
    assert_eq!(to.store.replay(77).map(|r| r.seq), Some(seq));
}

/// Entries that do not fit the schema are refused (400) and the group is
/// as it was.
#[test]
fn a_restore_that_does_not_fit_the_schema_changes_nothing() {
    let to = Db::new();
    to.write(insert("users", user("bob")));
    let before = to.store.checksum().unwrap();
    let good_row = |key: &[u8]| (key.to_vec(), Vec::new());
    let bad: Vec<Vec<(Vec<u8>, Vec<u8>)>> = vec![
        vec![(b"dcars\0tx".to_vec(), vec![0])],
        vec![good_row(b"dusers\0tann")],
        vec![(b"ms".to_vec(), 9u64.to_be_bytes().to_vec())],
        vec![(b"mcusers".to_vec(), vec![1, 2])],
    ];
    for entries in bad {
        let mut group = to.store.group();
        let seq = group.next_seq();
        let e = group.restore(seq, 5, &entries).unwrap_err();
        assert_eq!(e.status(), 400, "{entries:?}: {e}");
        assert_eq!(group.next_seq(), seq);
        group.commit().unwrap();
    }
    assert_eq!(to.store.checksum().unwrap(), before);
    assert_eq!(to.store.applied_seq(), 1);
    assert!(to.store.replay(5).is_none());
}

/// A blank store installs a snapshot in parts (memory bounded whatever
/// its size), a store holding anything in one batch: both end the same
/// as the source, indexes, counts and request records included.
#[test]
fn a_blank_store_installs_a_large_snapshot_in_parts_to_the_same_end() {
    let src = Db::new();
    src.store.begin_epoch(2).unwrap();
    src.write(insert("users", user("ann")));
    // Rows and records enough for several parts.
    let mut group = src.store.group();
    for ts in 1..=1_500 {
        let seq = group.next_seq();
        group
            .apply(
                seq,
                1000 + u128::from(seq),
                &auto(ride("ann", ts, ts % 7, &[])),
            )
            .unwrap();
    }
    group.commit().unwrap();
    let snap = src.store.snapshot().unwrap();
    // Parts are of 256 entries.
    assert!(snap.entries.len() > 8 * 256, "{}", snap.entries.len());
    let blank = Db::new();
    let holding = Db::new();
    holding.write(insert("users", user("zed")));
    for dst in [&blank, &holding] {
        dst.store.install(&snap).unwrap();
        assert_eq!(dst.store.checksum().unwrap(), src.store.checksum().unwrap());
        assert_eq!(dst.store.snapshot().unwrap(), snap);
        assert_eq!((dst.store.applied_seq(), dst.store.epoch()), (1_501, 2));
        assert_counts_exact(&dst.store);
        assert_eq!(dst.count("rides", vec![]), 1_500);
        // The index on (source, destination, timestamp) answers.
        let by_route = vec![
            Cond::new("source", CmpOp::Eq, 3),
            Cond::new("destination", CmpOp::Eq, 99),
        ];
        assert_eq!(
            dst.count("rides", by_route.clone()),
            src.count("rides", by_route)
        );
        assert_eq!(dst.store.replay(1000 + 1_200).unwrap().seq, 1_200);
        assert_eq!(dst.next_auto_key(), Value::Int(1_501));
    }
}
