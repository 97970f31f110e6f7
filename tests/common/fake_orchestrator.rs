//! An in-memory stand-in for the orchestrator's `db/read`, `db/write` and
//! `db/clear`, with the semantics the RideShare services rely on: schema
//! validation, duplicate keys as 409, auto keys from 1 (reset by a full
//! clear), updates with set/add/remove, atomic batches, ordered selects.
//!
//! It lets the services run in-process without the real DBaaS; the
//! contract itself is held against `dbaas up`.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Mutex;

use actix_web::{web, HttpResponse};
use dbaas::error::{Error, Result};
use dbaas::http::common::{self, Body};
use dbaas::model::{
    validate_read, validate_write, CmpOp, Cond, ReadOp, ReadReply, ReadResult, Row, Schema, Value,
    WriteOp, WriteReply, WriteResult,
};

/// The whole database: tables of rows by key, and the next auto keys.
#[derive(Clone, Default)]
struct Db {
    tables: BTreeMap<String, BTreeMap<Key, Row>>,
    next_auto: BTreeMap<String, i64>,
    seq: u64,
}

/// A row key, ordered as the DB orders keys.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Int(i64),
    Text(String),
}

impl Key {
    fn of(v: &Value) -> Result<Key> {
        match v {
            Value::Int(i) => Ok(Key::Int(*i)),
            Value::Text(t) => Ok(Key::Text(t.clone())),
            other => Err(Error::bad(format!("bad key {other:?}"))),
        }
    }
}

/// The fake's state, as actix app data.
pub struct FakeDb {
    schema: Schema,
    db: Mutex<Db>,
}

impl Default for FakeDb {
    fn default() -> Self {
        FakeDb {
            schema: Schema::rideshare(),
            db: Mutex::default(),
        }
    }
}

/// The orchestrator's DB routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/db/write", web::post().to(write))
        .route("/api/v1/db/read", web::post().to(read))
        .route("/api/v1/db/clear", web::post().to(clear));
}

fn answer<T: serde::Serialize>(r: Result<T>) -> HttpResponse {
    match r {
        Ok(body) => common::ok_json(&body),
        Err(e) => common::from_error(&e),
    }
}

async fn write(fake: web::Data<FakeDb>, body: Body) -> HttpResponse {
    let op: WriteOp = match common::parse_json(&body.0) {
        Ok(op) => op,
        Err(e) => return common::from_error(&e),
    };
    answer(validate_write(&fake.schema, &op).and_then(|()| {
        let mut db = fake.db.lock().unwrap();
        // Apply to a copy: a failed batch leaves nothing behind.
        let mut next = db.clone();
        let result = next.apply(&fake.schema, &op)?;
        next.seq += 1;
        *db = next;
        Ok(WriteReply {
            seq: db.seq,
            result,
        })
    }))
}

async fn read(fake: web::Data<FakeDb>, body: Body) -> HttpResponse {
    let op: ReadOp = match common::parse_json(&body.0) {
        Ok(op) => op,
        Err(e) => return common::from_error(&e),
    };
    answer(validate_read(&fake.schema, &op).and_then(|()| {
        let db = fake.db.lock().unwrap();
        Ok(ReadReply {
            seq: db.seq,
            result: db.read(&op)?,
        })
    }))
}

async fn clear(fake: web::Data<FakeDb>) -> HttpResponse {
    let mut db = fake.db.lock().unwrap();
    let seq = db.seq + 1;
    *db = Db {
        seq,
        ..Db::default()
    };
    common::ok_json(&serde_json::json!({}))
}

fn holds(row: &Row, c: &Cond) -> bool {
    let Some(v) = row.get(&c.column) else {
        return false;
    };
    let ord = v.compare(&c.value);
    match c.op {
        CmpOp::Eq => v == &c.value,
        CmpOp::Ne => v != &c.value,
        CmpOp::Lt => ord == Some(Ordering::Less),
        CmpOp::Le => matches!(ord, Some(Ordering::Less | Ordering::Equal)),
        CmpOp::Gt => ord == Some(Ordering::Greater),
        CmpOp::Ge => matches!(ord, Some(Ordering::Greater | Ordering::Equal)),
        CmpOp::Contains => v.as_list().is_some_and(|l| l.contains(&c.value)),
    }
}

fn change(row: &mut Row, set: &Row, add: &Row, remove: &Row) {
    for (k, v) in set {
        row.insert(k.clone(), v.clone());
    }
    for (k, v) in add {
        if let Some(Value::List(items)) = row.get_mut(k) {
            if !items.contains(v) {
                items.push(v.clone());
            }
        }
    }
    for (k, v) in remove {
        if let Some(Value::List(items)) = row.get_mut(k) {
            items.retain(|i| i != v);
        }
    }
}

impl Db {
    fn table(&mut self, name: &str) -> &mut BTreeMap<Key, Row> {
        self.tables.entry(name.to_owned()).or_default()
    }

    /// The keys a write targets: `key`, or every row matching `where`.
    fn targets(
        &mut self,
        table: &str,
        key: &Option<Value>,
        filter: &Option<Vec<Cond>>,
    ) -> Vec<Key> {
        let rows = self.table(table);
        match (key, filter) {
            (Some(k), _) => Key::of(k)
                .ok()
                .filter(|k| rows.contains_key(k))
                .into_iter()
                .collect(),
            (None, Some(conds)) => rows
                .iter()
                .filter(|(_, r)| conds.iter().all(|c| holds(r, c)))
                .map(|(k, _)| k.clone())
                .collect(),
            (None, None) => Vec::new(),
        }
    }

    fn apply(&mut self, schema: &Schema, op: &WriteOp) -> Result<WriteResult> {
        match op {
            WriteOp::Insert { table, row } => {
                let t = schema.table(table).expect("validated");
                let key = row[&t.key].clone();
                let rows = self.table(table);
                let k = Key::of(&key)?;
                if rows.contains_key(&k) {
                    return Err(Error::Conflict(format!("duplicate key {key:?}")));
                }
                rows.insert(k, row.clone());
                Ok(WriteResult::Inserted { key })
            }
            WriteOp::InsertAuto { table, row } => {
                let t = schema.table(table).expect("validated");
                let next = self.next_auto.entry(table.clone()).or_insert(1);
                let id = *next;
                *next += 1;
                let mut row = row.clone();
                row.insert(t.key.clone(), Value::Int(id));
                self.table(table).insert(Key::Int(id), row);
                Ok(WriteResult::Inserted {
                    key: Value::Int(id),
                })
            }
            WriteOp::Update {
                table,
                key,
                filter,
                set,
                add,
                remove,
            } => {
                let keys = self.targets(table, key, filter);
                let rows = self.table(table);
                for k in &keys {
                    change(rows.get_mut(k).expect("targeted"), set, add, remove);
                }
                Ok(WriteResult::Updated {
                    matched: keys.len() as u64,
                })
            }
            WriteOp::Delete { table, key, filter } => {
                let keys = self.targets(table, key, filter);
                let rows = self.table(table);
                for k in &keys {
                    rows.remove(k);
                }
                Ok(WriteResult::Deleted {
                    count: keys.len() as u64,
                })
            }
            WriteOp::Clear { table: Some(table) } => {
                self.table(table).clear();
                Ok(WriteResult::Cleared)
            }
            WriteOp::Clear { table: None } => {
                let seq = self.seq;
                *self = Db {
                    seq,
                    ..Db::default()
                };
                Ok(WriteResult::Cleared)
            }
            WriteOp::Batch { ops } => ops
                .iter()
                .map(|op| self.apply(schema, op))
                .collect::<Result<_>>()
                .map(WriteResult::Batch),
        }
    }

    fn read(&self, op: &ReadOp) -> Result<ReadResult> {
        let empty = BTreeMap::new();
        let rows = |table: &str| self.tables.get(table).unwrap_or(&empty);
        match op {
            ReadOp::Get {
                table,
                key,
                columns,
            } => {
                let row = rows(table).get(&Key::of(key)?);
                Ok(ReadResult::Rows(
                    row.map(|r| project(r, columns)).into_iter().collect(),
                ))
            }
            ReadOp::Select {
                table,
                filter,
                columns,
                order_by,
                limit,
            } => {
                let mut found: Vec<&Row> = rows(table)
                    .values()
                    .filter(|r| filter.iter().all(|c| holds(r, c)))
                    .collect();
                if let Some(o) = order_by {
                    found.sort_by(|a, b| {
                        let ord = a[&o.column]
                            .compare(&b[&o.column])
                            .unwrap_or(Ordering::Equal);
                        if o.desc {
                            ord.reverse()
                        } else {
                            ord
                        }
                    });
                }
                let limit = limit.map_or(usize::MAX, |l| l as usize);
                Ok(ReadResult::Rows(
                    found
                        .into_iter()
                        .take(limit)
                        .map(|r| project(r, columns))
                        .collect(),
                ))
            }
            ReadOp::Count { table, filter } => Ok(ReadResult::Count(
                rows(table)
                    .values()
                    .filter(|r| filter.iter().all(|c| holds(r, c)))
                    .count() as u64,
            )),
        }
    }
}

fn project(row: &Row, columns: &Option<Vec<String>>) -> Row {
    match columns {
        Some(cols) => row
            .iter()
            .filter(|(k, _)| cols.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        None => row.clone(),
    }
}
