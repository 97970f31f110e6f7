//! The RideShare users service: `PUT/GET /api/v1/users`,
//! `DELETE /api/v1/users/{username}`, plus the shared `_count`, `db/clear`
//! and `/healthz` (see `RIDESHARE_API.md`).
//!
//! Users live in the DBaaS table `users` {username (key), password}. The
//! service counts every request under `/api/v1/users`.

use std::net::TcpListener;

use actix_web::dev::Server;
use actix_web::web;
use serde::Deserialize;

use super::common::{self, Body};
use super::service::{self, Answer, ServiceState, State};
use crate::error::Error;
use crate::model::{CmpOp, Cond, Order, ReadOp, Row, Value, WriteOp, WriteResult};

/// The prefix of the routes this service counts.
pub const COUNTED_PREFIX: &str = "/api/v1/users";

/// The users service on `listener`, reaching the DBaaS at
/// `orchestrator_url`, refusing bodies over `body_limit` bytes.
pub fn server(
    listener: TcpListener,
    orchestrator_url: &str,
    body_limit: usize,
) -> std::io::Result<Server> {
    let state = ServiceState::new(orchestrator_url);
    service::serve(listener, state, body_limit, COUNTED_PREFIX, configure)
}

/// Registers the service's routes; the app must carry a [`ServiceState`]
/// as `web::Data` (and may carry a `BodyLimit`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        common::resource("/api/v1/users")
            .route(web::put().to(add_user))
            .route(web::get().to(list_users)),
    )
    .service(common::resource("/api/v1/users/{username}").route(web::delete().to(remove_user)));
    service::configure_common(cfg);
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    username: String,
    password: String,
}

/// A password is a SHA-1 digest: exactly 40 hex digits, any case.
fn is_password(p: &str) -> bool {
    p.len() == 40 && p.bytes().all(|b| b.is_ascii_hexdigit())
}

async fn add_user(state: State, body: Body) -> Answer {
    let user: NewUser = service::parse(&body)?;
    if user.username.is_empty() {
        return Err(service::bad("username is empty"));
    }
    if !is_password(&user.password) {
        return Err(service::bad("password must be exactly 40 hex digits"));
    }
    let row = Row::from([
        ("username".to_owned(), Value::from(user.username)),
        ("password".to_owned(), Value::from(user.password)),
    ]);
    let op = WriteOp::Insert {
        table: "users".into(),
        row,
    };
    match state.db.write(&op).await {
        Ok(_) => Ok(service::created()),
        Err(Error::Conflict(_)) => Err(service::bad("username is taken")),
        Err(e) => Err(service::db_error(e)),
    }
}

async fn list_users(state: State) -> Answer {
    let op = ReadOp::Select {
        table: "users".into(),
        filter: Vec::new(),
        columns: Some(vec!["username".into()]),
        order_by: Some(Order {
            column: "username".into(),
            desc: false,
        }),
        limit: None,
    };
    let rows = state.db.read(&op).await.map_err(service::db_error)?;
    let rows = rows.result.into_rows();
    let names: Vec<&str> = rows
        .iter()
        .filter_map(|r| r.get("username").and_then(Value::as_text))
        .collect();
    if names.is_empty() {
        Ok(service::no_content())
    } else {
        Ok(common::ok_json(&names))
    }
}

/// Deletes the user, the rides they created and their seats in other
/// rides, in one atomic batch; the first result tells whether they existed.
fn delete_user_op(username: &str) -> WriteOp {
    WriteOp::Batch {
        ops: vec![
            WriteOp::Delete {
                table: "users".into(),
                key: Some(Value::from(username)),
                filter: None,
            },
            WriteOp::Delete {
                table: "rides".into(),
                key: None,
                filter: Some(vec![Cond::new("created_by", CmpOp::Eq, username)]),
            },
            WriteOp::Update {
                table: "rides".into(),
                key: None,
                filter: Some(vec![Cond::new("users", CmpOp::Contains, username)]),
                set: Row::new(),
                add: Row::new(),
                remove: Row::from([("users".to_owned(), Value::from(username))]),
            },
        ],
    }
}

async fn remove_user(state: State, username: web::Path<String>) -> Answer {
    let op = delete_user_op(&username);
    let reply = state.db.write(&op).await.map_err(service::db_error)?;
    match reply.result {
        WriteResult::Batch(results)
            if matches!(results.first(), Some(WriteResult::Deleted { count: 0 })) =>
        {
            Err(service::bad("no such user"))
        }
        _ => Ok(service::empty_ok()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{validate_write, Schema};

    #[test]
    fn passwords_are_40_hex_digits_in_any_case() {
        let digits = "0123456789abcdef0123456789ABCDEF01234567";
        for (p, ok) in [
            (digits, true),
            (&digits[..39], false),
            (&format!("{digits}0")[..], false),
            ("g123456789abcdef0123456789abcdef01234567", false),
            ("", false),
            ("é123456789abcdef0123456789abcdef0123456", false),
        ] {
            assert_eq!(is_password(p), ok, "{p:?}");
        }
    }

    #[test]
    fn deleting_a_user_is_one_valid_batch() {
        let op = delete_user_op("a'; DROP TABLE users;--");
        validate_write(&Schema::rideshare(), &op).unwrap();
        let WriteOp::Batch { ops } = op else {
            panic!("not a batch")
        };
        assert_eq!(ops.len(), 3);
    }
}
