//! Seeding the rows of the `read` workload through `db/write` batches that
//! stay under the server's caps, replacing rows an earlier run left.

use std::fmt::Write as _;

use super::{snippet, PASSWORD};
use crate::error::{Error, Result};
use crate::http1::{Conn, Method};

/// A seeding batch stays under this many bytes (the server's default body
/// cap is 64 KiB; a 413 halves the batch anyway).
const SEED_BATCH_BYTES: usize = 56 * 1024;

/// At most this many operations go in one batch (the DB API's limit).
const SEED_BATCH_OPS: u64 = 1000;

/// The key of the `i`th seeded row.
fn seeded_key(i: u64) -> String {
    format!("lg-{i}")
}

/// The ops of a seeding batch for rows `from..to`: inserts, or with
/// `replace` a delete before each insert (rows an earlier run left).
fn seed_batch(from: u64, to: u64, replace: bool) -> String {
    let mut body = String::with_capacity((to - from) as usize * 160 + 32);
    body.push_str(r#"{"op":"batch","ops":["#);
    for i in from..to {
        if i > from {
            body.push(',');
        }
        let key = seeded_key(i);
        if replace {
            let _ = write!(body, r#"{{"op":"delete","table":"users","key":"{key}"}},"#);
        }
        // 16 hex digits of the index and 24 fixed ones: 40 in all.
        let _ = write!(
            body,
            r#"{{"op":"insert","table":"users","row":{{"username":"{key}","password":"{i:016x}{}"}}}}"#,
            &PASSWORD[16..]
        );
    }
    body.push_str("]}");
    body
}

/// Seeds rows `lg-0` .. `lg-<keys-1>` of `users` through `db/write`
/// batches. Rows an earlier run left are replaced (a batch answered 409 is
/// sent again as delete-and-insert pairs).
pub(crate) async fn seed(conn: &mut Conn, keys: u64) -> Result<()> {
    let write = conn.origin().path("/api/v1/db/write");
    let per_row = seed_batch(keys - 1, keys, false).len() as u64;
    let rows = (SEED_BATCH_BYTES as u64 / per_row).clamp(1, SEED_BATCH_OPS);
    // (from, to, replace), popped from the end: lowest rows first.
    let mut work: Vec<(u64, u64, bool)> = (0..keys)
        .step_by(rows as usize)
        .map(|from| (from, (from + rows).min(keys), false))
        .collect();
    work.reverse();
    while let Some((from, to, replace)) = work.pop() {
        let body = seed_batch(from, to, replace);
        let answer = conn
            .send(Method::Post, &write, Some(body.as_bytes()))
            .await
            .map_err(|e| Error::Unavailable(format!("seeding: {e}")))?;
        let status = answer.status;
        let half = |replace| {
            let mid = from + (to - from) / 2;
            [(mid, to, replace), (from, mid, replace)]
        };
        match status {
            200 => {}
            // Replacing needs two ops a row: halve to stay under the caps.
            409 if !replace => work.extend(half(true)),
            413 if to - from > 1 => work.extend(half(replace)),
            _ => {
                return Err(Error::Unavailable(format!(
                    "seeding rows {from}..{to}: {write} answered {status}: {}",
                    snippet(answer.body)
                )))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::get_body;
    use super::*;
    use dbaas::model::{validate_read, validate_write, ReadOp, Schema, WriteOp};

    #[test]
    fn bodies_are_valid_db_requests() {
        let schema = Schema::rideshare();
        let mut b = String::new();
        get_body(&mut b, 42);
        let op: ReadOp = serde_json::from_str(&b).unwrap();
        validate_read(&schema, &op).unwrap();
        for replace in [false, true] {
            let op: WriteOp = serde_json::from_str(&seed_batch(7, 10, replace)).unwrap();
            validate_write(&schema, &op).unwrap();
            let WriteOp::Batch { ops } = op else {
                panic!("a batch")
            };
            assert_eq!(ops.len(), if replace { 6 } else { 3 });
        }
        let body = seed_batch(u64::MAX - 1, u64::MAX, false);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let pw = v["ops"][0]["row"]["password"].as_str().unwrap();
        assert_eq!(pw.len(), 40);
        assert!(pw.bytes().all(|c| c.is_ascii_hexdigit()));
    }
}
