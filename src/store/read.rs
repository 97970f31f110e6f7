//! Reads: a point lookup for `get`, an index range or a scan of one
//! table's prefix for `select`, a maintained aggregate or index entries
//! for `count`.

use crate::error::Result;
use crate::model::{Cond, Order, ReadOp, ReadResult, Row, Schema, TableSchema};

use super::cond::{column, total_cmp};
use super::keys::{decode_row, row_key};
use super::tx::Tx;
use super::write::{rows_by, table};
use super::{aggregate, index};

pub(super) fn read(tx: &Tx, schema: &Schema, op: &ReadOp) -> Result<ReadResult> {
    match op {
        ReadOp::Get {
            table: t,
            key,
            columns,
        } => {
            let k = row_key(&table(schema, t)?.name, key)?;
            let rows = match tx.get(&k)? {
                Some(bytes) => vec![decode_row(&bytes)?],
                None => Vec::new(),
            };
            Ok(ReadResult::Rows(project(rows, columns.as_deref())))
        }
        ReadOp::Select {
            table: t,
            filter,
            columns,
            order_by,
            limit,
        } => {
            let rows = select(tx, table(schema, t)?, filter, order_by.as_ref(), *limit)?;
            Ok(ReadResult::Rows(project(rows, columns.as_deref())))
        }
        ReadOp::Count { table: t, filter } => {
            count(tx, table(schema, t)?, filter).map(ReadResult::Count)
        }
    }
}

/// Filter, then order, then limit. Without an order the scan (in key
/// order) stops as soon as it has `limit` rows.
fn select(
    tx: &Tx,
    t: &TableSchema,
    filter: &[Cond],
    order: Option<&Order>,
    limit: Option<u64>,
) -> Result<Vec<Row>> {
    let limit = limit.map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
    if limit == 0 {
        return Ok(Vec::new());
    }
    // Stop early only where the scan order is the answer's order: key
    // order (no index), without an order asked for.
    let plan = super::index::plan(t, filter);
    let in_key_order = plan.is_none();
    let early = if in_key_order && order.is_none() {
        limit
    } else {
        usize::MAX
    };
    let mut rows = Vec::new();
    rows_by(tx, t, filter, plan.as_ref(), |k, row| {
        rows.push((k.to_vec(), row));
        Ok(rows.len() < early)
    })?;
    if let Some(o) = order {
        // Equal rows keep primary-key order, also when descending (only
        // the comparison is reversed), whichever index found them.
        rows.sort_by(|(ka, a), (kb, b)| {
            let ord = total_cmp(column(a, &o.column), column(b, &o.column));
            let ord = if o.desc { ord.reverse() } else { ord };
            ord.then_with(|| ka.cmp(kb))
        });
    } else if !in_key_order {
        // Without an order, rows come in primary-key order.
        rows.sort_by(|(ka, _), (kb, _)| ka.cmp(kb));
    }
    rows.truncate(limit);
    Ok(rows.into_iter().map(|(_, row)| row).collect())
}

/// A count: without conditions, the table's maintained row count; with
/// conditions an index covers, from the index entries alone; else from
/// the rows the best plan finds.
fn count(tx: &Tx, t: &TableSchema, filter: &[Cond]) -> Result<u64> {
    if filter.is_empty() {
        return aggregate::count(tx, &t.name);
    }
    let plan = index::plan(t, filter);
    if let Some(plan) = &plan {
        if let Some(n) = index::count(tx, t, plan, filter)? {
            return Ok(n);
        }
    }
    let mut n = 0u64;
    rows_by(tx, t, filter, plan.as_ref(), |_, _| {
        n += 1;
        Ok(true)
    })?;
    Ok(n)
}

/// Keeps only `columns` of each row (all of them when `None`).
fn project(rows: Vec<Row>, columns: Option<&[String]>) -> Vec<Row> {
    let Some(columns) = columns else {
        return rows;
    };
    rows.into_iter()
        .map(|mut row| {
            row.retain(|name, _| columns.contains(name));
            row
        })
        .collect()
}
