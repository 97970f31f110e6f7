//! What the backup and restore tests share: the endpoints, a user insert
//! and the users read back.

use std::collections::BTreeSet;

use serde_json::json;

use super::{Http, Resp};

pub const PASSWORD: &str = "3d725109c7e7c0bfb9d709836735b56d943d263f";
pub const BACKUP: &str = "/api/v1/db/backup";
pub const RESTORE: &str = "/api/v1/db/restore";

/// Sends the insert of user `name`; the answer.
pub async fn write_user(db: &Http, name: &str) -> Resp {
    let row = json!({"username": name, "password": PASSWORD});
    db.json(
        "POST",
        "/api/v1/db/write",
        json!({"op": "insert", "table": "users", "row": row}),
    )
    .await
}

/// Inserts user `name`; its seq if acknowledged.
pub async fn insert(db: &Http, name: &str) -> Option<u64> {
    let r = write_user(db, name).await;
    (r.status == 200).then(|| r.json()["seq"].as_u64().expect("a seq"))
}

/// Every username, read at `consistency`.
pub async fn users(db: &Http, consistency: &str) -> BTreeSet<String> {
    let r = db
        .json(
            "POST",
            &format!("/api/v1/db/read?consistency={consistency}"),
            json!({"op": "select", "table": "users"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|row| row["username"].as_str().expect("a username").to_owned())
        .collect()
}
