//! Strict validation of requests against the schema. A request that passes
//! can be applied by any worker without a type or name error; one that fails
//! never leaves the orchestrator.

use super::schema::{ColumnType, Schema, TableSchema};
use super::{CmpOp, Cond, ReadOp, Row, Value, WriteOp};
use crate::error::{Error, Result};

/// Most operations one batch may carry.
pub const MAX_BATCH: usize = 1000;

/// Identifiers (tables, columns) must match `[A-Za-z_][A-Za-z0-9_]{0,63}`.
pub fn check_identifier(kind: &str, name: &str) -> Result<()> {
    let mut chars = name.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 64;
    if ok {
        Ok(())
    } else {
        Err(Error::bad(format!(
            "bad {kind} name {:?}: must match [A-Za-z_][A-Za-z0-9_]{{0,63}}",
            truncate(name)
        )))
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

fn table<'a>(schema: &'a Schema, name: &str) -> Result<&'a TableSchema> {
    check_identifier("table", name)?;
    schema
        .table(name)
        .ok_or_else(|| Error::bad(format!("unknown table {name:?}")))
}

fn column(t: &TableSchema, name: &str) -> Result<ColumnType> {
    check_identifier("column", name)?;
    t.columns
        .get(name)
        .copied()
        .ok_or_else(|| Error::bad(format!("unknown column {name:?} in table {:?}", t.name)))
}

fn check_value(t: &TableSchema, col: &str, ty: ColumnType, v: &Value) -> Result<()> {
    if ty.admits(v) {
        Ok(())
    } else {
        Err(Error::bad(format!(
            "column {:?}.{col:?} is {}, got {}",
            t.name,
            ty.name(),
            v.type_name()
        )))
    }
}

fn check_key(t: &TableSchema, key: &Value) -> Result<()> {
    check_value(t, &t.key, t.key_type(), key)
}

/// A full row: every column present with its type, nothing else; for
/// `auto`, the key column must be absent (the master assigns it).
fn check_row(t: &TableSchema, row: &Row, auto: bool) -> Result<()> {
    if auto && !t.auto_key {
        return Err(Error::bad(format!(
            "table {:?} has no auto-assigned key",
            t.name
        )));
    }
    for (name, v) in row {
        let ty = column(t, name)?;
        if auto && *name == t.key {
            return Err(Error::bad(format!(
                "key column {name:?} is assigned by the database"
            )));
        }
        check_value(t, name, ty, v)?;
    }
    for name in t.columns.keys() {
        let assigned = auto && *name == t.key;
        if !row.contains_key(name) && !assigned {
            return Err(Error::bad(format!(
                "missing column {name:?} of table {:?}",
                t.name
            )));
        }
    }
    Ok(())
}

fn check_conds(t: &TableSchema, conds: &[Cond]) -> Result<()> {
    for c in conds {
        let ty = column(t, &c.column)?;
        match (c.op, ty.element()) {
            (CmpOp::Contains, Some(elem)) if elem.admits(&c.value) => {}
            (CmpOp::Contains, _) => {
                return Err(Error::bad(format!(
                    "contains needs a list column and a value of its element type ({:?})",
                    c.column
                )))
            }
            (_, Some(_)) if !matches!(c.op, CmpOp::Eq | CmpOp::Ne) => {
                return Err(Error::bad(format!(
                    "list column {:?} supports only =, != and contains",
                    c.column
                )))
            }
            _ => check_value(t, &c.column, ty, &c.value)?,
        }
    }
    Ok(())
}

fn check_target(t: &TableSchema, key: &Option<Value>, filter: &Option<Vec<Cond>>) -> Result<()> {
    match (key, filter) {
        (Some(k), None) => check_key(t, k),
        (None, Some(conds)) => check_conds(t, conds),
        _ => Err(Error::bad("give exactly one of \"key\" and \"where\"")),
    }
}

fn check_changes(t: &TableSchema, set: &Row, add: &Row, remove: &Row) -> Result<()> {
    if set.is_empty() && add.is_empty() && remove.is_empty() {
        return Err(Error::bad(
            "update changes nothing: give set, add or remove",
        ));
    }
    for (name, v) in set {
        let ty = column(t, name)?;
        if *name == t.key {
            return Err(Error::bad(format!("key column {name:?} cannot be updated")));
        }
        check_value(t, name, ty, v)?;
    }
    for (name, v) in add.iter().chain(remove) {
        let ty = column(t, name)?;
        match ty.element() {
            Some(elem) if elem.admits(v) => {}
            Some(_) => {
                return Err(Error::bad(format!(
                    "column {name:?} holds {}, got {}",
                    ty.name(),
                    v.type_name()
                )))
            }
            None => {
                return Err(Error::bad(format!(
                    "add and remove need a list column; {name:?} is {}",
                    ty.name()
                )))
            }
        }
    }
    Ok(())
}

fn check_columns(t: &TableSchema, columns: &Option<Vec<String>>) -> Result<()> {
    for c in columns.iter().flatten() {
        column(t, c)?;
    }
    Ok(())
}

/// Checks a write against the schema.
pub fn validate_write(schema: &Schema, op: &WriteOp) -> Result<()> {
    match op {
        WriteOp::Insert { table: name, row } => check_row(table(schema, name)?, row, false),
        WriteOp::InsertAuto { table: name, row } => check_row(table(schema, name)?, row, true),
        WriteOp::Update {
            table: name,
            key,
            filter,
            set,
            add,
            remove,
        } => {
            let t = table(schema, name)?;
            check_target(t, key, filter)?;
            check_changes(t, set, add, remove)
        }
        WriteOp::Delete {
            table: name,
            key,
            filter,
        } => check_target(table(schema, name)?, key, filter),
        WriteOp::Clear { table: name } => match name {
            Some(name) => table(schema, name).map(|_| ()),
            None => Ok(()),
        },
        WriteOp::Batch { ops } => check_batch(schema, ops),
        // Alone it would be a write that writes nothing and still takes a
        // sequence number: a read is the way to ask.
        WriteOp::Require { .. } => Err(Error::bad(
            "require is a precondition of a batch: use it inside \"ops\"",
        )),
    }
}

fn check_batch(schema: &Schema, ops: &[WriteOp]) -> Result<()> {
    if ops.len() > MAX_BATCH {
        return Err(Error::bad(format!(
            "a batch holds at most {MAX_BATCH} operations"
        )));
    }
    for op in ops {
        match op {
            WriteOp::Batch { .. } => return Err(Error::bad("batches do not nest")),
            WriteOp::Require {
                table: name,
                key,
                exists: _,
            } => check_key(table(schema, name)?, key)?,
            _ => validate_write(schema, op)?,
        }
    }
    Ok(())
}

/// Checks a read against the schema.
pub fn validate_read(schema: &Schema, op: &ReadOp) -> Result<()> {
    match op {
        ReadOp::Get {
            table: name,
            key,
            columns,
        } => {
            let t = table(schema, name)?;
            check_key(t, key)?;
            check_columns(t, columns)
        }
        ReadOp::Select {
            table: name,
            filter,
            columns,
            order_by,
            limit: _,
        } => {
            let t = table(schema, name)?;
            check_conds(t, filter)?;
            check_columns(t, columns)?;
            if let Some(o) = order_by {
                column(t, &o.column)?;
            }
            Ok(())
        }
        ReadOp::Count {
            table: name,
            filter,
        } => check_conds(table(schema, name)?, filter),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(json: &str) -> Result<()> {
        let op: WriteOp = serde_json::from_str(json).map_err(|e| Error::bad(e.to_string()))?;
        validate_write(&Schema::rideshare(), &op)
    }

    fn read(json: &str) -> Result<()> {
        let op: ReadOp = serde_json::from_str(json).map_err(|e| Error::bad(e.to_string()))?;
        validate_read(&Schema::rideshare(), &op)
    }

    #[test]
    fn identifiers_follow_the_whitelist() {
        let max = format!("a{}", "9".repeat(63));
        for ok in ["a", "_", "Users", "ride_id", "_x1", max.as_str()] {
            assert!(check_identifier("column", ok).is_ok(), "{ok:?}");
        }
        let long = format!("{max}x");
        for bad in [
            "",
            "1st",
            "a b",
            "a-b",
            "naïve",
            "users;drop",
            "a.b",
            long.as_str(),
        ] {
            let e = check_identifier("column", bad).unwrap_err();
            assert!(matches!(e, Error::BadRequest(_)), "{bad:?}: {e:?}");
        }
    }

    #[test]
    fn good_requests_pass() {
        for ok in [
            r#"{"op":"insert","table":"users","row":{"username":"a","password":"b"}}"#,
            r#"{"op":"insert_auto","table":"rides","row":{"created_by":"a","timestamp":1,"source":1,"destination":2,"users":[]}}"#,
            r#"{"op":"update","table":"rides","key":1,"add":{"users":"bob"}}"#,
            r#"{"op":"update","table":"rides","where":[{"column":"users","op":"contains","value":"bob"}],"remove":{"users":"bob"}}"#,
            r#"{"op":"delete","table":"users","key":"a"}"#,
            r#"{"op":"delete","table":"rides","where":[{"column":"created_by","op":"=","value":"a"}]}"#,
            r#"{"op":"clear"}"#,
            r#"{"op":"batch","ops":[{"op":"clear","table":"rides"}]}"#,
        ] {
            write(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for ok in [
            r#"{"op":"get","table":"users","key":"a"}"#,
            r#"{"op":"select","table":"rides","where":[{"column":"timestamp","op":">","value":5}],"order_by":{"column":"timestamp"},"limit":3,"columns":["ride_id"]}"#,
            r#"{"op":"count","table":"rides"}"#,
        ] {
            read(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn bad_requests_are_refused() {
        for bad in [
            r#"{"op":"insert","table":"nope","row":{}}"#,
            r#"{"op":"insert","table":"users; drop","row":{}}"#,
            r#"{"op":"insert","table":"users","row":{"username":"a"}}"#,
            r#"{"op":"insert","table":"users","row":{"username":"a","password":1}}"#,
            r#"{"op":"insert","table":"users","row":{"username":"a","password":"b","x":1}}"#,
            r#"{"op":"insert","table":"users","row":{"username":"a","password":"b"},"extra":1}"#,
            r#"{"op":"insert_auto","table":"users","row":{"password":"b"}}"#,
            r#"{"op":"insert_auto","table":"rides","row":{"ride_id":1,"created_by":"a","timestamp":1,"source":1,"destination":2,"users":[]}}"#,
            r#"{"op":"update","table":"rides","key":"1","add":{"users":"bob"}}"#,
            r#"{"op":"update","table":"rides","key":1}"#,
            r#"{"op":"update","table":"rides","key":1,"set":{"ride_id":2}}"#,
            r#"{"op":"update","table":"rides","key":1,"add":{"source":2}}"#,
            r#"{"op":"update","table":"rides","key":1,"where":[],"set":{"source":2}}"#,
            r#"{"op":"delete","table":"users"}"#,
            r#"{"op":"batch","ops":[{"op":"batch","ops":[]}]}"#,
            r#"{"op":"frobnicate"}"#,
            r#"{"op":"require","table":"users","key":"a"}"#,
        ] {
            assert!(write(bad).is_err(), "{bad}");
        }
        for bad in [
            r#"{"op":"get","table":"users","key":1}"#,
            r#"{"op":"select","table":"rides","where":[{"column":"users","op":">","value":"a"}]}"#,
            r#"{"op":"select","table":"rides","where":[{"column":"source","op":"contains","value":1}]}"#,
            r#"{"op":"select","table":"rides","order_by":{"column":"nope"}}"#,
            r#"{"op":"count","table":"rides","where":[{"column":"source","op":"~","value":1}]}"#,
        ] {
            assert!(read(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn require_is_checked_inside_batches() {
        for ok in [
            r#"{"op":"batch","ops":[{"op":"require","table":"users","key":"a"}]}"#,
            r#"{"op":"batch","ops":[{"op":"require","table":"users","key":"a","exists":true},{"op":"insert_auto","table":"rides","row":{"created_by":"a","timestamp":1,"source":1,"destination":2,"users":[]}}]}"#,
            r#"{"op":"batch","ops":[{"op":"require","table":"users","key":"a","exists":false},{"op":"insert","table":"users","row":{"username":"a","password":"b"}}]}"#,
            r#"{"op":"batch","ops":[{"op":"insert","table":"users","row":{"username":"a","password":"b"}},{"op":"require","table":"rides","key":7}]}"#,
        ] {
            write(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        let op: WriteOp =
            serde_json::from_str(r#"{"op":"require","table":"users","key":"a"}"#).unwrap();
        let defaulted = WriteOp::Require {
            table: "users".into(),
            key: "a".into(),
            exists: true,
        };
        assert_eq!(op, defaulted, "exists defaults to true");
        for (bad, why) in [
            (r#"{"op":"require","table":"users","key":"a"}"#, "inside"),
            (
                r#"{"op":"require","table":"users","key":"a","exists":false}"#,
                "inside",
            ),
            (
                r#"{"op":"batch","ops":[{"op":"require","table":"nope","key":"a"}]}"#,
                "unknown table",
            ),
            (
                r#"{"op":"batch","ops":[{"op":"require","table":"users; drop","key":"a"}]}"#,
                "bad table name",
            ),
            (
                r#"{"op":"batch","ops":[{"op":"require","table":"users","key":1}]}"#,
                "is text",
            ),
            (
                r#"{"op":"batch","ops":[{"op":"require","table":"rides","key":"1"}]}"#,
                "is int",
            ),
            (
                r#"{"op":"batch","ops":[{"op":"require","table":"users"}]}"#,
                "key",
            ),
            (
                r#"{"op":"batch","ops":[{"op":"require","table":"users","key":"a","exists":"yes"}]}"#,
                "invalid type",
            ),
            (
                r#"{"op":"batch","ops":[{"op":"require","table":"users","key":"a","where":[]}]}"#,
                "unknown field",
            ),
            (
                r#"{"op":"batch","ops":[{"op":"batch","ops":[{"op":"require","table":"users","key":"a"}]}]}"#,
                "nest",
            ),
        ] {
            let e = write(bad).unwrap_err();
            assert!(
                matches!(&e, Error::BadRequest(m) if m.contains(why)),
                "{bad}: {e:?}"
            );
        }
        let many = vec![r#"{"op":"require","table":"users","key":"a"}"#; MAX_BATCH + 1];
        let big = format!(r#"{{"op":"batch","ops":[{}]}}"#, many.join(","));
        assert!(write(&big).is_err(), "MAX_BATCH holds for require too");
    }
}
