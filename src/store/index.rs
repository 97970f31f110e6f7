//! Secondary indexes: entries `x` + table + 0x00 + index number + the
//! indexed values (an order-preserving, self-delimiting encoding) + the
//! row's encoded key (its tree key without the table's prefix), with an
//! empty value: the key alone names the row. They are written in the same
//! batch as the row, so they are exactly as durable and as atomic. (An
//! earlier layout repeated the whole tree key in the entry and again as
//! its value, and sorted nulls after integers; such a store's entries are
//! rebuilt when it is opened, since the definitions recorded beside them
//! carry the layout's version.)
//!
//! A read plans over them ([`plan`]): the index whose leading columns are
//! fixed by the most `=` conditions wins, and a range condition on the next
//! column narrows the scan further. The conditions are checked again on
//! every row found, so a plan only has to find a superset. A count whose
//! conditions all name indexed columns reads the entries alone
//! ([`count`]): the values are in their keys.

use std::ops::Bound;

use crate::error::{Error, Result};
use crate::model::{CmpOp, Cond, Row, Schema, TableSchema, Value};

use super::cond;
use super::keys::{self, decode_row, INDEX, INDEX_DEFS};
use super::tx::{successor, Tx};

/// The layout of the entries, recorded with their definitions: a store
/// whose entries follow another layout rebuilds them when opened.
const LAYOUT: &str = "v2:";

/// Every index entry of `table` starts with this.
pub(super) fn table_prefix(table: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(table.len() + 2);
    k.push(INDEX);
    k.extend_from_slice(table.as_bytes());
    k.push(0);
    k
}

fn index_prefix(table: &str, n: usize) -> Vec<u8> {
    let mut k = table_prefix(table);
    // Tables have few indexes; the schema builder is the only source.
    k.push(u8::try_from(n).unwrap_or(u8::MAX));
    k
}

/// The tag of a null (or missing) value: below every other tag, since a
/// null compares below every value. (The first layout tagged it `n`,
/// between integers and text, and a range over such an index missed the
/// nulls an upper bound matches.)
const NULL: u8 = 0x01;

/// Appends `v` so that byte order is value order within a type, a null
/// comes before everything, and no encoding is a prefix of another (text
/// is escaped and terminated).
fn encode(out: &mut Vec<u8>, v: Option<&Value>) {
    match v {
        None | Some(Value::Null) | Some(Value::List(_)) => out.push(NULL),
        Some(Value::Bool(b)) => out.extend_from_slice(&[b'b', u8::from(*b)]),
        Some(Value::Int(i)) => {
            out.push(b'i');
            out.extend_from_slice(&((*i as u64) ^ (1 << 63)).to_be_bytes());
        }
        Some(Value::Text(s)) => {
            out.push(b't');
            for &b in s.as_bytes() {
                out.push(b);
                if b == 0 {
                    out.push(0xff);
                }
            }
            out.extend_from_slice(&[0, 1]);
        }
    }
}

/// Reads back one value [`encode`] wrote at the start of `bytes`, and
/// what follows it. (A missing column and a `Null` both read as `Null`, as
/// a condition sees them.)
fn decode(bytes: &[u8]) -> Result<(Value, &[u8])> {
    let bad = || Error::Storage("corrupt index entry on disk".into());
    let (&tag, rest) = bytes.split_first().ok_or_else(bad)?;
    match tag {
        NULL => Ok((Value::Null, rest)),
        b'b' => {
            let (&b, rest) = rest.split_first().ok_or_else(bad)?;
            Ok((Value::Bool(b != 0), rest))
        }
        b'i' => {
            let (int, rest) = rest.split_first_chunk::<8>().ok_or_else(bad)?;
            Ok((
                Value::Int((u64::from_be_bytes(*int) ^ (1 << 63)) as i64),
                rest,
            ))
        }
        b't' => {
            let mut text = Vec::new();
            let mut i = 0;
            loop {
                match (rest.get(i), rest.get(i + 1)) {
                    (Some(0), Some(1)) => break,
                    (Some(0), Some(0xff)) => text.push(0),
                    (Some(&b), _) if b != 0 => {
                        text.push(b);
                        i += 1;
                        continue;
                    }
                    _ => return Err(bad()),
                }
                i += 2;
            }
            let text = String::from_utf8(text).map_err(|_| bad())?;
            Ok((Value::Text(text), &rest[i + 2..]))
        }
        _ => Err(bad()),
    }
}

/// The encoded row key of a row of `t` (its tree key without the table's
/// prefix), as index entries end with it.
fn key_suffix<'k>(t: &TableSchema, row_key: &'k [u8]) -> &'k [u8] {
    row_key
        .get(keys::table_prefix(&t.name).len()..)
        .unwrap_or_default()
}

/// The index entries of `row` (stored under tree key `row_key`).
pub(super) fn entries(t: &TableSchema, row: &Row, row_key: &[u8]) -> Vec<Vec<u8>> {
    let suffix = key_suffix(t, row_key);
    t.indexes
        .iter()
        .enumerate()
        .map(|(n, cols)| {
            let mut k = index_prefix(&t.name, n);
            for c in cols {
                encode(&mut k, row.get(c));
            }
            k.extend_from_slice(suffix);
            k
        })
        .collect()
}

/// Writes a row and keeps its index entries in step (`old`: what the row
/// held before, if anything).
pub(super) fn put_row(
    tx: &mut Tx,
    t: &TableSchema,
    row_key: Vec<u8>,
    old: Option<&Row>,
    row: &Row,
    bytes: Vec<u8>,
) {
    let fresh = entries(t, row, &row_key);
    if let Some(old) = old {
        for stale in entries(t, old, &row_key) {
            if !fresh.contains(&stale) {
                tx.remove(stale);
            }
        }
    }
    for e in fresh {
        tx.put(e, Vec::new());
    }
    tx.put(row_key, bytes);
}

/// Removes a row and its index entries.
pub(super) fn remove_row(tx: &mut Tx, t: &TableSchema, row_key: Vec<u8>, old: &Row) {
    for e in entries(t, old, &row_key) {
        tx.remove(e);
    }
    tx.remove(row_key);
}

/// A range of one index to scan instead of the table.
pub(super) struct Plan {
    /// Which index of the table.
    pub index: usize,
    pub lo: Vec<u8>,
    pub hi: Bound<Vec<u8>>,
}

/// The best index range for `filter`, if any index applies.
pub(super) fn plan(t: &TableSchema, filter: &[Cond]) -> Option<Plan> {
    let eq = |col: &str| {
        filter
            .iter()
            .find(|c| c.column == col && c.op == CmpOp::Eq)
            .map(|c| &c.value)
    };
    let mut best: Option<(usize, Plan)> = None;
    for (n, cols) in t.indexes.iter().enumerate() {
        let mut prefix = index_prefix(&t.name, n);
        let fixed = cols
            .iter()
            .map_while(|c| eq(c))
            .inspect(|v| encode(&mut prefix, Some(v)))
            .count();
        if fixed == 0 || best.as_ref().is_some_and(|(f, _)| *f >= fixed) {
            continue;
        }
        let plan = match cols.get(fixed) {
            Some(next) => narrow(n, &prefix, next, filter),
            None => Plan {
                index: n,
                hi: successor(&prefix),
                lo: prefix,
            },
        };
        best = Some((fixed, plan));
    }
    best.map(|(_, p)| p)
}

/// Bounds the scan under `prefix` by the range conditions on `col`.
fn narrow(index: usize, prefix: &[u8], col: &str, filter: &[Cond]) -> Plan {
    let mut plan = Plan {
        index,
        lo: prefix.to_vec(),
        hi: successor(prefix),
    };
    // A list encodes as a null, which compares below every value: a bound
    // by it would leave out rows it matches.
    let bounds = |v: &Value| !matches!(v, Value::List(_));
    for c in filter
        .iter()
        .filter(|c| c.column == col && bounds(&c.value))
    {
        let mut at = prefix.to_vec();
        encode(&mut at, Some(&c.value));
        let after = successor(&at);
        match c.op {
            CmpOp::Gt => raise(&mut plan.lo, after),
            CmpOp::Ge => raise(&mut plan.lo, Bound::Included(at)),
            CmpOp::Lt => lower(&mut plan.hi, Bound::Excluded(at)),
            CmpOp::Le => lower(&mut plan.hi, after),
            _ => {}
        }
    }
    plan
}

fn raise(lo: &mut Vec<u8>, to: Bound<Vec<u8>>) {
    if let Bound::Included(k) | Bound::Excluded(k) = to {
        if k > *lo {
            *lo = k;
        }
    }
}

fn lower(hi: &mut Bound<Vec<u8>>, to: Bound<Vec<u8>>) {
    let tighter = match (&*hi, &to) {
        (Bound::Excluded(h), Bound::Excluded(k)) => k < h,
        (Bound::Unbounded, _) => true,
        _ => false,
    };
    if tighter {
        *hi = to;
    }
}

/// Calls `f` with the indexed values and the row's tree key of every
/// entry in the plan's range, in index order; stops when `f` says false.
fn entries_in(
    tx: &Tx,
    t: &TableSchema,
    plan: &Plan,
    mut f: impl FnMut(&[Value], &[u8]) -> Result<bool>,
) -> Result<()> {
    let cols = t.indexes.get(plan.index).map_or(0, Vec::len);
    let skip = index_prefix(&t.name, plan.index).len();
    let mut row_key = keys::table_prefix(&t.name);
    let table_len = row_key.len();
    let mut values = Vec::with_capacity(cols);
    tx.scan_range(&plan.lo, plan.hi.as_ref().map(Vec::as_slice), |k, _| {
        values.clear();
        let mut rest = k.get(skip..).unwrap_or_default();
        for _ in 0..cols {
            let (v, after) = decode(rest)?;
            values.push(v);
            rest = after;
        }
        row_key.truncate(table_len);
        row_key.extend_from_slice(rest);
        f(&values, &row_key)
    })
}

/// Calls `f` with the tree key of every row in the plan's range.
pub(super) fn scan(
    tx: &Tx,
    t: &TableSchema,
    plan: &Plan,
    mut f: impl FnMut(&[u8]) -> Result<bool>,
) -> Result<()> {
    entries_in(tx, t, plan, |_, row_key| f(row_key))
}

/// How many rows of `t` match `filter`, from the entries of the plan's
/// index alone, if every condition names a column of that index (`None`
/// otherwise: the rows must be read).
pub(super) fn count(tx: &Tx, t: &TableSchema, plan: &Plan, filter: &[Cond]) -> Result<Option<u64>> {
    let Some(cols) = t.indexes.get(plan.index) else {
        return Ok(None);
    };
    let mut at = Vec::with_capacity(filter.len());
    for c in filter {
        match cols.iter().position(|col| *col == c.column) {
            Some(i) => at.push(i),
            None => return Ok(None),
        }
    }
    let mut n = 0u64;
    entries_in(tx, t, plan, |values, _| {
        if filter
            .iter()
            .zip(&at)
            .all(|(c, &i)| cond::matches(&values[i], c))
        {
            n += 1;
        }
        Ok(true)
    })?;
    Ok(Some(n))
}

/// What the schema's indexes are, as stored beside their entries.
pub(super) fn definitions(schema: &Schema) -> Vec<u8> {
    let mut defs = String::from(LAYOUT);
    for t in schema.tables() {
        for cols in &t.indexes {
            defs.push_str(&format!("{}({});", t.name, cols.join(",")));
        }
    }
    defs.into_bytes()
}

/// Rebuilds every index entry when the schema's indexes differ from those
/// the entries were built for (a store made before an index was added).
pub(super) fn ensure(tree: &sled::Tree, schema: &Schema) -> Result<()> {
    if tree.get(INDEX_DEFS)?.as_deref() == Some(definitions(schema).as_slice()) {
        return Ok(());
    }
    let mut tx = Tx::new(tree);
    rebuild(&mut tx, schema)?;
    tree.apply_batch(tx.into_batch())?;
    tree.flush()?;
    Ok(())
}

/// Whether `key` belongs to the indexes (entries or their definitions).
pub(super) fn is_index_key(key: &[u8]) -> bool {
    key.first() == Some(&INDEX) || key == INDEX_DEFS
}

/// Replaces every index entry in `tx` by those of the rows `tx` holds, and
/// records the definitions they follow.
pub(super) fn rebuild(tx: &mut Tx, schema: &Schema) -> Result<()> {
    for k in tx.keys(&[INDEX])? {
        tx.remove(k);
    }
    for t in schema.tables() {
        let mut rows = Vec::new();
        tx.scan(&keys::table_prefix(&t.name), |k, v| {
            rows.push((k.to_vec(), decode_row(v)?));
            Ok(true)
        })?;
        for (row_key, row) in rows {
            for e in entries(t, &row, &row_key) {
                tx.put(e, Vec::new());
            }
        }
    }
    tx.put(INDEX_DEFS.to_vec(), definitions(schema));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        encode(&mut out, Some(v));
        out
    }

    #[test]
    fn encodings_keep_order_and_are_prefix_free() {
        let ints = [i64::MIN, -5, 0, 7, i64::MAX].map(Value::Int);
        assert!(ints.windows(2).all(|w| enc(&w[0]) < enc(&w[1])));
        let texts = ["", "\0", "a", "a\0", "a\0b", "ab", "b"].map(Value::from);
        assert!(
            texts.windows(2).all(|w| enc(&w[0]) < enc(&w[1])),
            "{texts:?}"
        );
        for a in &texts {
            for b in &texts {
                if a != b {
                    assert!(!enc(b).starts_with(&enc(a)), "{a:?} prefixes {b:?}");
                }
            }
        }
    }

    #[test]
    fn successor_bounds_every_extension() {
        assert_eq!(successor(b"ab"), Bound::Excluded(b"ac".to_vec()));
        assert_eq!(successor(&[1, 0xff]), Bound::Excluded(vec![2]));
        assert_eq!(successor(&[0xff, 0xff]), Bound::Unbounded);
    }
}
