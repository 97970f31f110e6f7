//! The effects of write ops, computed on a transaction overlay.

use crate::error::{Error, Result};
use crate::model::{Cond, Row, Schema, TableSchema, Value, WriteOp, WriteResult};

use super::cond::matches_all;
use super::keys::{self, counter_key, decode_row, decode_u64, encode_row, row_key, table_prefix};
use super::tx::Tx;
use super::{aggregate, index};

#[cfg(test)]
thread_local! {
    /// Tests: the next op applied on this thread panics.
    pub(super) static PANIC_NEXT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Calls `f` on every row of `t` matching `filter` (with its tree key), in
/// the order of the index the filter can use, else in key order; stops
/// when `f` says false.
pub(super) fn rows_where(
    tx: &Tx,
    t: &TableSchema,
    filter: &[Cond],
    f: impl FnMut(&[u8], Row) -> Result<bool>,
) -> Result<()> {
    rows_by(tx, t, filter, index::plan(t, filter).as_ref(), f)
}

/// [`rows_where`] with the index plan already made (`None`: a key-order
/// scan of the table).
pub(super) fn rows_by(
    tx: &Tx,
    t: &TableSchema,
    filter: &[Cond],
    plan: Option<&index::Plan>,
    mut f: impl FnMut(&[u8], Row) -> Result<bool>,
) -> Result<()> {
    let mut check = |k: &[u8], v: &[u8]| {
        let row = decode_row(v)?;
        if matches_all(&row, filter) {
            f(k, row)
        } else {
            Ok(true)
        }
    };
    match plan {
        Some(plan) => index::scan(tx, t, plan, |row_key| match tx.get(row_key)? {
            Some(v) => check(row_key, &v),
            // An entry without its row cannot be written by this store.
            None => Ok(true),
        }),
        None => tx.scan(&table_prefix(&t.name), check),
    }
}

/// Which rows an update or delete targets.
enum Target<'a> {
    Key(&'a Value),
    Where(&'a [Cond]),
}

/// The changes of an update, applied in this order: set, add, remove.
struct Changes<'a> {
    set: &'a Row,
    add: &'a Row,
    remove: &'a Row,
}

pub(super) fn table<'s>(schema: &'s Schema, name: &str) -> Result<&'s TableSchema> {
    schema
        .table(name)
        .ok_or_else(|| Error::bad(format!("unknown table {name:?}")))
}

/// Applies `op` to `tx`; on error the caller undoes what it changed in
/// `tx` (or drops `tx`), so that nothing of it is written.
pub(super) fn apply_op(tx: &mut Tx, schema: &Schema, op: &WriteOp) -> Result<WriteResult> {
    #[cfg(test)]
    if PANIC_NEXT.with(|p| p.replace(false)) {
        panic!("a planted panic");
    }
    match op {
        WriteOp::Insert { table: t, row } => insert(tx, table(schema, t)?, row),
        WriteOp::InsertAuto { table: t, row } => insert_auto(tx, table(schema, t)?, row),
        WriteOp::Update {
            table: t,
            key,
            filter,
            set,
            add,
            remove,
        } => {
            let changes = Changes { set, add, remove };
            update(tx, table(schema, t)?, target(key, filter)?, &changes)
        }
        WriteOp::Delete {
            table: t,
            key,
            filter,
        } => delete(tx, table(schema, t)?, target(key, filter)?),
        WriteOp::Clear { table: t } => clear(tx, schema, t.as_deref()),
        WriteOp::Batch { ops } => ops
            .iter()
            .map(|op| apply_in_batch(tx, schema, op))
            .collect::<Result<Vec<_>>>()
            .map(WriteResult::Batch),
        // Validation refuses it too; alone it would use up a seq for nothing.
        WriteOp::Require { .. } => Err(Error::bad("require is only allowed inside a batch")),
    }
}

/// Applies one op of a batch: a `require` is checked here, on the batch's
/// view so far; any other op is applied as on its own.
fn apply_in_batch(tx: &mut Tx, schema: &Schema, op: &WriteOp) -> Result<WriteResult> {
    match op {
        WriteOp::Require {
            table: t,
            key,
            exists,
        } => require(tx, table(schema, t)?, key, *exists),
        op => apply_op(tx, schema, op),
    }
}

/// A precondition: the row with `key` exists in `t` (or, if not `exists`,
/// does not). It reads the overlay, so it sees the batch's earlier ops and
/// the group's earlier writes, exactly what the batch's writes see.
fn require(tx: &Tx, t: &TableSchema, key: &Value, exists: bool) -> Result<WriteResult> {
    let found = tx.contains(&row_key(&t.name, key)?)?;
    match (found, exists) {
        (true, true) | (false, false) => Ok(WriteResult::Checked),
        (false, true) => Err(Error::Precondition(format!(
            "precondition failed: {} {} does not exist",
            t.name,
            show(key)
        ))),
        (true, false) => Err(Error::Precondition(format!(
            "precondition failed: {} {} exists",
            t.name,
            show(key)
        ))),
    }
}

fn target<'a>(key: &'a Option<Value>, filter: &'a Option<Vec<Cond>>) -> Result<Target<'a>> {
    match (key, filter) {
        (Some(k), None) => Ok(Target::Key(k)),
        (None, Some(conds)) => Ok(Target::Where(conds)),
        _ => Err(Error::bad("give exactly one of \"key\" and \"where\"")),
    }
}

fn show(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| format!("{v:?}"))
}

fn insert(tx: &mut Tx, t: &TableSchema, row: &Row) -> Result<WriteResult> {
    let key = row
        .get(&t.key)
        .ok_or_else(|| Error::bad(format!("row lacks key column {:?}", t.key)))?;
    let k = row_key(&t.name, key)?;
    if tx.contains(&k)? {
        return Err(Error::Conflict(format!(
            "duplicate key {} in table {:?}",
            show(key),
            t.name
        )));
    }
    index::put_row(tx, t, k, None, row, encode_row(row)?);
    aggregate::adjust(tx, &t.name, 1)?;
    Ok(WriteResult::Inserted { key: key.clone() })
}

/// Assigns counter+1. Keys taken by explicit inserts are skipped, so an
/// auto insert never fails on a duplicate key and never reuses a key.
fn insert_auto(tx: &mut Tx, t: &TableSchema, row: &Row) -> Result<WriteResult> {
    if t.key_type() != crate::model::ColumnType::Int {
        return Err(Error::bad(format!(
            "table {:?} has no integer key to assign",
            t.name
        )));
    }
    let ck = counter_key(&t.name);
    let mut next = match tx.get(&ck)? {
        Some(b) => decode_u64(&b)?,
        None => 0,
    };
    let (key, k) = loop {
        next = next
            .checked_add(1)
            .filter(|n| i64::try_from(*n).is_ok())
            .ok_or_else(|| Error::Conflict(format!("table {:?} ran out of keys", t.name)))?;
        let key = Value::Int(next as i64);
        let k = row_key(&t.name, &key)?;
        if !tx.contains(&k)? {
            break (key, k);
        }
    };
    let mut row = row.clone();
    row.insert(t.key.clone(), key.clone());
    let bytes = encode_row(&row)?;
    index::put_row(tx, t, k, None, &row, bytes);
    aggregate::adjust(tx, &t.name, 1)?;
    tx.put(ck, next.to_be_bytes().to_vec());
    Ok(WriteResult::Inserted { key })
}

/// The (tree key, row) pairs a target selects, in key order.
fn targeted(tx: &Tx, t: &TableSchema, target: &Target) -> Result<Vec<(Vec<u8>, Row)>> {
    match target {
        Target::Key(key) => {
            let k = row_key(&t.name, key)?;
            match tx.get(&k)? {
                Some(bytes) => Ok(vec![(k, decode_row(&bytes)?)]),
                None => Ok(Vec::new()),
            }
        }
        Target::Where(conds) => {
            let mut found = Vec::new();
            rows_where(tx, t, conds, |k, row| {
                found.push((k.to_vec(), row));
                Ok(true)
            })?;
            Ok(found)
        }
    }
}

fn update(tx: &mut Tx, t: &TableSchema, target: Target, c: &Changes) -> Result<WriteResult> {
    let rows = targeted(tx, t, &target)?;
    let matched = rows.len() as u64;
    for (k, old) in rows {
        let mut row = old.clone();
        change(t, &mut row, c)?;
        // Unchanged rows still count as matched but cost no write.
        if row != old {
            let bytes = encode_row(&row)?;
            index::put_row(tx, t, k, Some(&old), &row, bytes);
        }
    }
    Ok(WriteResult::Updated { matched })
}

fn change(t: &TableSchema, row: &mut Row, c: &Changes) -> Result<()> {
    for (col, v) in c.set {
        // The row's tree key derives from the key column: it must not move.
        if *col == t.key && row.get(col) != Some(v) {
            return Err(Error::bad(format!("key column {col:?} cannot be updated")));
        }
        row.insert(col.clone(), v.clone());
    }
    for (col, v) in c.add {
        let slot = row.entry(col.clone()).or_insert(Value::Null);
        if *slot == Value::Null {
            *slot = Value::List(Vec::new());
        }
        let list = as_list_mut(slot, col)?;
        if !list.contains(v) {
            list.push(v.clone());
        }
    }
    for (col, v) in c.remove {
        match row.get_mut(col) {
            None | Some(Value::Null) => {}
            Some(slot) => as_list_mut(slot, col)?.retain(|x| x != v),
        }
    }
    Ok(())
}

fn as_list_mut<'v>(slot: &'v mut Value, col: &str) -> Result<&'v mut Vec<Value>> {
    let type_name = slot.type_name();
    match slot {
        Value::List(l) => Ok(l),
        _ => Err(Error::bad(format!(
            "add and remove need a list column; {col:?} is {type_name}"
        ))),
    }
}

fn delete(tx: &mut Tx, t: &TableSchema, target: Target) -> Result<WriteResult> {
    let rows = targeted(tx, t, &target)?;
    let count = rows.len() as u64;
    for (k, row) in rows {
        index::remove_row(tx, t, k, &row);
    }
    if count > 0 {
        aggregate::adjust(tx, &t.name, -i64::try_from(count).unwrap_or(i64::MAX))?;
    }
    Ok(WriteResult::Deleted { count })
}

/// Removes the rows, the auto-key counters and the row counts of one
/// table or of all.
fn clear(tx: &mut Tx, schema: &Schema, name: Option<&str>) -> Result<WriteResult> {
    let (rows, indexes, counters) = match name {
        Some(name) => {
            let t = table(schema, name)?;
            (
                table_prefix(&t.name),
                index::table_prefix(&t.name),
                counter_key(&t.name),
            )
        }
        None => (vec![keys::DATA], vec![keys::INDEX], keys::COUNTER.to_vec()),
    };
    // Exact keys for one table (`users` must not catch `users2`).
    match name {
        Some(name) => tx.remove(aggregate::count_key(name)),
        None => {
            for k in tx.keys(aggregate::COUNT)? {
                tx.remove(k);
            }
        }
    }
    // A single table's counter key is exact, but scanning it as a prefix
    // would also catch `users2` when clearing `users`; so look it up.
    let mut doomed = tx.keys(&rows)?;
    doomed.extend(tx.keys(&indexes)?);
    match name {
        Some(_) => doomed.extend(tx.contains(&counters)?.then_some(counters)),
        None => doomed.extend(tx.keys(&counters)?),
    }
    for k in doomed {
        tx.remove(k);
    }
    Ok(WriteResult::Cleared)
}
