//! What a backup holds of a store, and the checks a restore passes before
//! it reaches one: only rows and auto-key counters travel (indexes and
//! counts are rebuilt; meta and request records are the restoring
//! cluster's own), and every row must fit the schema as it stands.

use super::keys::{self, decode_row, decode_u64};
use crate::error::{Error, Result};
use crate::model::backup::Entries;
use crate::model::Schema;

/// The entries of a snapshot a backup keeps: rows and auto-key counters.
pub fn backup_entries(entries: Entries) -> Entries {
    entries
        .into_iter()
        .filter(|(k, _)| is_backed_up(k))
        .collect()
}

/// Whether a store entry is one a backup carries.
pub(super) fn is_backed_up(key: &[u8]) -> bool {
    key.first() == Some(&keys::DATA) || key.starts_with(keys::COUNTER)
}

/// Rows per table of `entries`, every table of the schema named (tables
/// in name order); refuses (400) an entry that is neither a row nor a
/// counter, a row of a table the schema lacks, one that does not decode,
/// does not sit under its own key or breaks a column's type.
pub fn check_backup(schema: &Schema, entries: &[(Vec<u8>, Vec<u8>)]) -> Result<Vec<(String, u64)>> {
    let mut counts: std::collections::BTreeMap<String, u64> =
        schema.tables().map(|t| (t.name.clone(), 0)).collect();
    for (k, v) in entries {
        if k.starts_with(keys::COUNTER) {
            let table = String::from_utf8_lossy(&k[keys::COUNTER.len()..]);
            if schema.table(&table).is_none() || decode_u64(v).is_err() {
                return Err(Error::bad(format!("a bad auto-key counter for {table:?}")));
            }
            continue;
        }
        let table = check_row(schema, k, v)?;
        *counts.entry(table).or_default() += 1;
    }
    Ok(counts.into_iter().collect())
}

/// The table of a row entry that fits the schema.
fn check_row(schema: &Schema, k: &[u8], v: &[u8]) -> Result<String> {
    let bad = |why: &str| Error::bad(format!("the backup holds {why}"));
    if k.first() != Some(&keys::DATA) {
        return Err(bad("an entry that is neither a row nor a counter"));
    }
    let end = k
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| bad("a row without a table"))?;
    let name = std::str::from_utf8(&k[1..end]).map_err(|_| bad("a bad table name"))?;
    let table = schema
        .table(name)
        .ok_or_else(|| bad(&format!("rows of a table this schema lacks ({name:?})")))?;
    let row = decode_row(v).map_err(|_| bad(&format!("a row of {name} that does not decode")))?;
    let key = row
        .get(&table.key)
        .ok_or_else(|| bad(&format!("a row of {name} without its key")))?;
    if keys::row_key(name, key).ok().as_deref() != Some(k) {
        return Err(bad(&format!("a row of {name} under another key")));
    }
    for (column, value) in &row {
        let fits = table.columns.get(column).is_some_and(|t| t.admits(value));
        if !fits {
            return Err(bad(&format!(
                "a row of {name} whose {column:?} breaks the schema"
            )));
        }
    }
    Ok(name.to_owned())
}
