//! Maintained aggregates: each table's row count, kept in the same batch
//! as the rows, so that counting a table is one lookup.
//!
//! `mn` + table holds the table's row count (u64 BE; absent: 0). `ma`
//! holds the applied seq the counts are exact at: every batch that writes
//! the applied seq writes it too. A store whose `ma` differs from its
//! applied seq (one of an earlier version, which kept no counts, or one a
//! earlier version wrote to since) gets its counts rebuilt from the rows
//! when it is opened. Snapshots leave the counts out, like the indexes:
//! the installing store counts its rows itself.

use crate::error::Result;
use crate::model::Schema;

use super::keys::{self, decode_u64, APPLIED_SEQ};
use super::tx::Tx;

/// `mn` + table: the table's row count.
pub(super) const COUNT: &[u8] = b"mn";
/// The applied seq the counts are exact at.
pub(super) const COUNTED_AT: &[u8] = b"ma";

pub(super) fn count_key(table: &str) -> Vec<u8> {
    [COUNT, table.as_bytes()].concat()
}

/// Whether `key` belongs to the aggregates (a snapshot leaves them out).
pub(super) fn is_aggregate_key(key: &[u8]) -> bool {
    key.starts_with(COUNT) || key == COUNTED_AT
}

/// The row count of `table` as `tx` sees it.
pub(super) fn count(tx: &Tx, table: &str) -> Result<u64> {
    match tx.get(&count_key(table))? {
        Some(bytes) => decode_u64(&bytes),
        None => Ok(0),
    }
}

/// Adds `delta` rows to the count of `table` (never below 0).
pub(super) fn adjust(tx: &mut Tx, table: &str, delta: i64) -> Result<()> {
    let n = count(tx, table)?;
    let n = if delta < 0 {
        n.saturating_sub(delta.unsigned_abs())
    } else {
        n.saturating_add(delta.unsigned_abs())
    };
    tx.put(count_key(table), n.to_be_bytes().to_vec());
    Ok(())
}

/// The entry that says the counts are exact at applied seq `seq`.
pub(super) fn counted_at(seq: u64) -> (Vec<u8>, Vec<u8>) {
    (COUNTED_AT.to_vec(), seq.to_be_bytes().to_vec())
}

/// Counts every table's rows in `tx` afresh (as exact at `seq`).
pub(super) fn rebuild(tx: &mut Tx, schema: &Schema, seq: u64) -> Result<()> {
    for k in tx.keys(COUNT)? {
        tx.remove(k);
    }
    for t in schema.tables() {
        let mut n = 0u64;
        tx.scan(&keys::table_prefix(&t.name), |_, _| {
            n += 1;
            Ok(true)
        })?;
        if n > 0 {
            tx.put(count_key(&t.name), n.to_be_bytes().to_vec());
        }
    }
    let (k, v) = counted_at(seq);
    tx.put(k, v);
    Ok(())
}

/// Rebuilds the counts of a store whose counts are not known exact at
/// its applied seq (see the module docs).
pub(super) fn ensure(tree: &sled::Tree, schema: &Schema) -> Result<()> {
    let applied = tree.get(APPLIED_SEQ)?;
    let at = tree.get(COUNTED_AT)?;
    let applied_bytes = applied.as_deref().unwrap_or(&[0; 8]);
    if at.as_deref() == Some(applied_bytes) {
        return Ok(());
    }
    let seq = decode_u64(applied_bytes)?;
    let mut tx = Tx::new(tree);
    rebuild(&mut tx, schema, seq)?;
    tree.apply_batch(tx.into_batch())?;
    tree.flush()?;
    Ok(())
}
