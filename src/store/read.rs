//! Reads: a point lookup for `get`, a scan of one table's prefix for
//! `select` and `count`.

use crate::error::Result;
use crate::model::{Cond, Order, ReadOp, ReadResult, Row, Schema};

use super::cond::{column, matches_all, total_cmp};
use super::keys::{decode_row, row_key, table_prefix};
use super::tx::Tx;
use super::write::table;

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
            let prefix = table_prefix(&table(schema, t)?.name);
            let rows = select(tx, &prefix, filter, order_by.as_ref(), *limit)?;
            Ok(ReadResult::Rows(project(rows, columns.as_deref())))
        }
        ReadOp::Count { table: t, filter } => {
            let prefix = table_prefix(&table(schema, t)?.name);
            count(tx, &prefix, filter).map(ReadResult::Count)
        }
    }
}

/// Filter, then order, then limit. Without an order the scan (in key
/// order) stops as soon as it has `limit` rows.
fn select(
    tx: &Tx,
    prefix: &[u8],
    filter: &[Cond],
    order: Option<&Order>,
    limit: Option<u64>,
) -> Result<Vec<Row>> {
    let limit = limit.map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
    if limit == 0 {
        return Ok(Vec::new());
    }
    let early = if order.is_none() { limit } else { usize::MAX };
    let mut rows = Vec::new();
    tx.scan(prefix, |_, v| {
        let row = decode_row(v)?;
        if matches_all(&row, filter) {
            rows.push(row);
        }
        Ok(rows.len() < early)
    })?;
    if let Some(o) = order {
        // A stable sort keeps equal rows in key (scan) order, also when
        // descending, since only the comparison is reversed.
        rows.sort_by(|a, b| {
            let ord = total_cmp(column(a, &o.column), column(b, &o.column));
            if o.desc {
                ord.reverse()
            } else {
                ord
            }
        });
    }
    rows.truncate(limit);
    Ok(rows)
}

fn count(tx: &Tx, prefix: &[u8], filter: &[Cond]) -> Result<u64> {
    let mut n = 0u64;
    tx.scan(prefix, |_, v| {
        // Without conditions there is no need to decode the rows.
        if filter.is_empty() || matches_all(&decode_row(v)?, filter) {
            n += 1;
        }
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
