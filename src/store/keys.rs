//! The byte layout of the store: key prefixes, order-preserving key
//! encoding, and the (bincode) encodings of values kept in the tree.

use super::Recorded;
use crate::error::{Error, Result};
use crate::model::{Lineage, Row, Value, WriteResult};

/// Rows: `d` + table + 0x00 + encoded key. Table names are identifiers
/// (never contain 0x00), so the 0x00 keeps `users` from prefixing `users2`.
pub(super) const DATA: u8 = b'd';
/// Meta entries: applied seq, epoch, auto-key counters.
pub(super) const META: u8 = b'm';
/// Request-id records: `r` + id (16 bytes BE) -> bincode((seq, answer)).
pub(super) const REQUEST: u8 = b'r';
/// Request-id index: `q` + seq (8 bytes BE) -> id, to forget old records.
pub(super) const REQUEST_SEQ: u8 = b'q';
/// Secondary index entries (see `index.rs`).
pub(super) const INDEX: u8 = b'x';
/// The index definitions the index entries were built for.
pub(super) const INDEX_DEFS: &[u8] = b"mi";

pub(super) const APPLIED_SEQ: &[u8] = b"ms";
pub(super) const EPOCH: &[u8] = b"me";
pub(super) const LINEAGE: &[u8] = b"ml";
pub(super) const CLUSTER: &[u8] = b"mk";
/// When the newest request record forgotten was made (u64 BE, ms of the
/// wall clock): see `super::RECORD_WINDOW_MS`.
pub(super) const FORGOTTEN: &[u8] = b"mh";
/// The seq of the last restore (u64 BE): a snapshot holding one is
/// installed on disk before it is served (see `memory.rs`).
pub(super) const RESTORED: &[u8] = b"mr";
/// `mc` + table -> the last auto key handed out (u64 BE).
pub(super) const COUNTER: &[u8] = b"mc";
/// Present while a blank store installs a snapshot in parts (the seq
/// it installs, u64 BE): a store opened with it was cut off mid-install
/// and is made blank again (see `Store::install`).
pub(super) const INSTALLING: &[u8] = b"mj";

const TAG_BOOL: u8 = b'b';
const TAG_INT: u8 = b'i';
const TAG_TEXT: u8 = b't';

/// Whether `key` is one the store itself could have written; guards
/// `install` against foreign snapshots.
pub(super) fn is_known(key: &[u8]) -> bool {
    matches!(
        key.first(),
        Some(&(DATA | META | REQUEST | REQUEST_SEQ | INDEX))
    )
}

/// The prefix of every row of `table`.
pub(super) fn table_prefix(table: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(table.len() + 2);
    k.push(DATA);
    k.extend_from_slice(table.as_bytes());
    k.push(0);
    k
}

/// The tree key of the row of `table` whose key column holds `key`.
pub(super) fn row_key(table: &str, key: &Value) -> Result<Vec<u8>> {
    let mut k = table_prefix(table);
    encode_key_value(&mut k, key)?;
    Ok(k)
}

/// Appends `key` so that byte order equals value order within a type:
/// flipping the sign bit of a big-endian i64 makes negatives sort first.
fn encode_key_value(out: &mut Vec<u8>, key: &Value) -> Result<()> {
    match key {
        Value::Int(i) => {
            out.push(TAG_INT);
            out.extend_from_slice(&((*i as u64) ^ (1 << 63)).to_be_bytes());
        }
        Value::Text(s) => {
            out.push(TAG_TEXT);
            out.extend_from_slice(s.as_bytes());
        }
        Value::Bool(b) => out.extend_from_slice(&[TAG_BOOL, u8::from(*b)]),
        Value::Null | Value::List(_) => {
            return Err(Error::bad(format!(
                "a {} cannot be a primary key",
                key.type_name()
            )))
        }
    }
    Ok(())
}

pub(super) fn counter_key(table: &str) -> Vec<u8> {
    [COUNTER, table.as_bytes()].concat()
}

pub(super) fn request_key(id: u128) -> Vec<u8> {
    let mut k = vec![REQUEST];
    k.extend_from_slice(&id.to_be_bytes());
    k
}

pub(super) fn request_seq_key(seq: u64) -> Vec<u8> {
    let mut k = vec![REQUEST_SEQ];
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The request-id index entry of one answer: the id, and when its record
/// was made (ms).
pub(super) fn encode_index(id: u128, made_ms: u64) -> Vec<u8> {
    let mut v = id.to_be_bytes().to_vec();
    v.extend_from_slice(&made_ms.to_be_bytes());
    v
}

/// The id and the time of an index entry; an entry of an earlier version
/// holds the id alone, and counts as made at time 0 (so as old as can be).
pub(super) fn decode_index(bytes: &[u8]) -> Result<(u128, u64)> {
    match bytes.len() {
        16 => Ok((decode_u128(bytes)?, 0)),
        24 => Ok((decode_u128(&bytes[..16])?, decode_u64(&bytes[16..])?)),
        n => Err(corrupt("request index", format!("{n} bytes"))),
    }
}

pub(super) fn decode_u64(bytes: &[u8]) -> Result<u64> {
    let arr: [u8; 8] = bytes
        .try_into()
        .map_err(|_| corrupt("u64", format!("{} bytes", bytes.len())))?;
    Ok(u64::from_be_bytes(arr))
}

pub(super) fn decode_u128(bytes: &[u8]) -> Result<u128> {
    let arr: [u8; 16] = bytes
        .try_into()
        .map_err(|_| corrupt("request id", format!("{} bytes", bytes.len())))?;
    Ok(u128::from_be_bytes(arr))
}

/// Rows come from backups too: a length read off a crafted one claims at
/// most this much memory, rather than any amount (and a panic or abort).
fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<{ crate::model::backup::DECODE_LIMIT }>()
}

pub(super) fn encode_row(row: &Row) -> Result<Vec<u8>> {
    Ok(bincode::encode_to_vec(row, config())?)
}

/// Decodes a stored row. A failure means the disk content is damaged, so it
/// is a storage error (not the `BadMessage` bincode errors map to).
pub(super) fn decode_row(bytes: &[u8]) -> Result<Row> {
    decode_exact(bytes, "row")
}

/// The record of answer `seq`, without cloning the result.
pub(super) fn encode_record(
    seq: u64,
    answer: std::result::Result<&WriteResult, &Error>,
) -> Result<Vec<u8>> {
    Ok(bincode::encode_to_vec((seq, answer), config())?)
}

pub(super) fn decode_record(bytes: &[u8]) -> Result<Recorded> {
    let (seq, answer) = decode_exact(bytes, "request record")?;
    Ok(Recorded { seq, answer })
}

pub(super) fn encode_lineage(lineage: &Lineage) -> Result<Vec<u8>> {
    Ok(bincode::encode_to_vec(lineage, config())?)
}

pub(super) fn decode_lineage(bytes: &[u8]) -> Result<Lineage> {
    decode_exact(bytes, "lineage")
}

fn decode_exact<T: bincode::Decode<()>>(bytes: &[u8], what: &str) -> Result<T> {
    let (v, used) = bincode::decode_from_slice(bytes, config()).map_err(|e| corrupt(what, e))?;
    if used != bytes.len() {
        return Err(corrupt(what, "trailing bytes"));
    }
    Ok(v)
}

fn corrupt(what: &str, detail: impl std::fmt::Display) -> Error {
    Error::Storage(format!("corrupt {what} on disk: {detail}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int_keys_sort_like_integers() {
        let ints = [i64::MIN, -1000, -1, 0, 1, 2, 255, 256, i64::MAX];
        let keys: Vec<_> = ints
            .iter()
            .map(|i| row_key("t", &Value::Int(*i)).unwrap())
            .collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn text_keys_sort_like_strings_and_tables_do_not_overlap() {
        let a = row_key("t", &Value::from("a")).unwrap();
        let ab = row_key("t", &Value::from("ab")).unwrap();
        let b = row_key("t", &Value::from("b")).unwrap();
        assert!(a < ab && ab < b);
        let other = row_key("t2", &Value::from("a")).unwrap();
        assert!(!other.starts_with(&table_prefix("t")));
        assert!(a.starts_with(&table_prefix("t")));
    }

    #[test]
    fn lists_and_nulls_are_not_keys() {
        assert!(row_key("t", &Value::Null).is_err());
        assert!(row_key("t", &Value::List(vec![])).is_err());
    }

    #[test]
    fn rows_round_trip_and_garbage_is_a_storage_error() {
        let row: Row = [("a".to_string(), Value::Int(1))].into_iter().collect();
        assert_eq!(decode_row(&encode_row(&row).unwrap()).unwrap(), row);
        assert!(matches!(decode_row(&[0xff; 3]), Err(Error::Storage(_))));
        assert!(decode_u64(&[1, 2]).is_err());
    }
}
