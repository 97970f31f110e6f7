//! The RideShare rides service: create, search, show, join and delete
//! rides, count them, plus the shared `_count`, `db/clear` and `/healthz`
//! (see `RIDESHARE_API.md`).
//!
//! Rides live in the DBaaS table `rides` {ride_id (auto key), created_by,
//! timestamp (Unix seconds), source, destination, users}. The service
//! counts every request under `/api/v1/rides`.
//!
//! No ride names a user who does not exist. Creating a ride and joining one
//! are conditional writes: one batch `[require the user exists, the write]`,
//! which the master checks and applies in one step, so a user deleted after
//! the service's own lookup fails the write (400) instead of being named by
//! it. Deleting a user removes their rides and seats in one batch too. The
//! lookup before the write stays: the contract makes the creator check a
//! point lookup, and it keeps the order of the answers (user 400 before
//! ride 204) without a write.

use std::net::TcpListener;
use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::dev::Server;
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use super::common::{self, Body};
use super::service::{self, Answer, ServiceState, State};
use crate::error::Error;
use crate::model::{CmpOp, Cond, Order, ReadOp, Row, Value, WriteOp, WriteResult};
use crate::rideshare::{areas, timestamp};

/// The prefix of the routes this service counts.
pub const COUNTED_PREFIX: &str = "/api/v1/rides";

/// The rides service on `listener`, reaching the DBaaS at
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
        common::resource("/api/v1/rides")
            .route(web::post().to(create_ride))
            .route(web::get().to(upcoming_rides)),
    )
    // Before `{rideId}`, which would otherwise take "count" as an id.
    .service(common::resource("/api/v1/rides/count").route(web::get().to(count_rides)))
    .service(
        common::resource("/api/v1/rides/{rideId}")
            .route(web::get().to(show_ride))
            .route(web::post().to(join_ride))
            .route(web::delete().to(delete_ride)),
    );
    service::configure_common(cfg);
}

const TABLE: &str = "rides";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewRide {
    created_by: String,
    timestamp: String,
    source: i64,
    destination: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Join {
    username: String,
}

/// An entry of the upcoming-rides list.
#[derive(Serialize)]
struct Upcoming {
    #[serde(rename = "rideId")]
    ride_id: i64,
    username: String,
    timestamp: String,
}

/// The details of one ride.
#[derive(Serialize)]
struct Details {
    #[serde(rename = "rideId")]
    ride_id: i64,
    created_by: String,
    users: Vec<String>,
    timestamp: String,
    source: i64,
    destination: i64,
}

/// Checks a new ride's fields; answers its timestamp in Unix seconds.
fn check_ride(ride: &NewRide) -> Result<i64, String> {
    for (name, area) in [("source", ride.source), ("destination", ride.destination)] {
        if !areas::is_area(area) {
            return Err(format!(
                "{name} {area} is not an area (1..={})",
                areas::count()
            ));
        }
    }
    if ride.source == ride.destination {
        return Err("source and destination are the same area".into());
    }
    timestamp::parse(&ride.timestamp).map_err(|e| e.to_string())
}

fn new_ride_row(ride: NewRide, secs: i64) -> Row {
    Row::from([
        ("created_by".to_owned(), Value::from(ride.created_by)),
        ("timestamp".to_owned(), Value::Int(secs)),
        ("source".to_owned(), Value::Int(ride.source)),
        ("destination".to_owned(), Value::Int(ride.destination)),
        ("users".to_owned(), Value::List(Vec::new())),
    ])
}

/// Whether a user exists: a point lookup by key.
async fn user_exists(state: &State, username: &str) -> Answer<bool> {
    let op = ReadOp::Get {
        table: "users".into(),
        key: Value::from(username),
        columns: Some(vec!["username".into()]),
    };
    let reply = state.db.read(&op).await.map_err(service::db_error)?;
    Ok(reply.result.count() > 0)
}

/// The ride with `id` (only `columns`, if given), if it exists.
async fn get_ride(state: &State, id: i64, columns: Option<&[&str]>) -> Answer<Option<Row>> {
    let op = ReadOp::Get {
        table: TABLE.into(),
        key: Value::Int(id),
        columns: columns.map(|c| c.iter().map(|&c| c.to_owned()).collect()),
    };
    let reply = state.db.read(&op).await.map_err(service::db_error)?;
    Ok(reply.result.into_rows().into_iter().next())
}

/// The write of a new ride (`secs`: its timestamp): its insert, on
/// condition that its creator exists when it is applied.
fn create_ride_op(ride: NewRide, secs: i64) -> WriteOp {
    let creator = require_user(ride.created_by.as_str());
    WriteOp::Batch {
        ops: vec![
            creator,
            WriteOp::InsertAuto {
                table: TABLE.into(),
                row: new_ride_row(ride, secs),
            },
        ],
    }
}

/// The precondition that `username` exists, as the first op of a batch.
fn require_user(username: impl Into<Value>) -> WriteOp {
    WriteOp::Require {
        table: "users".into(),
        key: username.into(),
        exists: true,
    }
}

/// The id a ride's insert got, from the result of [`create_ride_op`].
fn created_id(result: &WriteResult) -> Option<i64> {
    let WriteResult::Batch(results) = result else {
        return None;
    };
    match results.as_slice() {
        [WriteResult::Checked, WriteResult::Inserted {
            key: Value::Int(id),
        }] => Some(*id),
        _ => None,
    }
}

async fn create_ride(state: State, body: Body) -> Answer {
    let ride: NewRide = service::parse(&body)?;
    let secs = check_ride(&ride).map_err(service::bad)?;
    if !user_exists(&state, &ride.created_by).await? {
        return Err(service::bad("creator does not exist"));
    }
    let reply = match state.db.write(&create_ride_op(ride, secs)).await {
        Ok(reply) => reply,
        // Deleted since the lookup.
        Err(Error::Precondition(_)) => return Err(service::bad("creator does not exist")),
        Err(e) => return Err(service::db_error(e)),
    };
    match created_id(&reply.result) {
        Some(id) => Ok(HttpResponse::Created()
            .insert_header((header::LOCATION, format!("/api/v1/rides/{id}")))
            .json(serde_json::json!({}))),
        None => Err(internal(format!(
            "unexpected insert result {:?}",
            reply.result
        ))),
    }
}

/// A 500 for what the DBaaS answered but should not have.
fn internal(msg: String) -> actix_web::Error {
    service::refuse(common::error_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        msg,
    ))
}

/// The `source` and `destination` of a search: both present once, decimal
/// digits only, naming areas. Other parameters are ignored.
fn search_areas(query: &str) -> Result<(i64, i64), String> {
    let pairs = web::Query::<Vec<(String, String)>>::from_query(query)
        .map_err(|e| format!("unreadable query string: {e}"))?
        .into_inner();
    let area = |name: &str| -> Result<i64, String> {
        let mut values = pairs.iter().filter(|(k, _)| k == name).map(|(_, v)| v);
        let value = match (values.next(), values.next()) {
            (Some(v), None) => v,
            (None, _) => return Err(format!("query parameter {name} is missing")),
            (Some(_), Some(_)) => return Err(format!("query parameter {name} is repeated")),
        };
        service::parse_unsigned(value)
            .filter(|&n| areas::is_area(n))
            .ok_or_else(|| {
                format!(
                    "{name} {:?} is not an area number (1..={})",
                    value.chars().take(40).collect::<String>(),
                    areas::count()
                )
            })
    };
    Ok((area("source")?, area("destination")?))
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

async fn upcoming_rides(state: State, req: HttpRequest) -> Answer {
    let (source, destination) = search_areas(req.query_string()).map_err(service::bad)?;
    let op = ReadOp::Select {
        table: TABLE.into(),
        filter: vec![
            Cond::new("source", CmpOp::Eq, source),
            Cond::new("destination", CmpOp::Eq, destination),
            Cond::new("timestamp", CmpOp::Gt, now_secs()),
        ],
        columns: Some(vec![
            "ride_id".into(),
            "created_by".into(),
            "timestamp".into(),
        ]),
        order_by: Some(Order {
            column: "timestamp".into(),
            desc: false,
        }),
        limit: None,
    };
    let reply = state.db.read(&op).await.map_err(service::db_error)?;
    let rows = reply.result.into_rows();
    let rides: Vec<Upcoming> = rows.iter().filter_map(upcoming).collect();
    if rides.is_empty() {
        Ok(service::no_content())
    } else {
        Ok(common::ok_json(&rides))
    }
}

fn int(row: &Row, column: &str) -> Option<i64> {
    row.get(column).and_then(Value::as_int)
}

fn text(row: &Row, column: &str) -> Option<String> {
    row.get(column).and_then(Value::as_text).map(str::to_owned)
}

fn upcoming(row: &Row) -> Option<Upcoming> {
    Some(Upcoming {
        ride_id: int(row, "ride_id")?,
        username: text(row, "created_by")?,
        timestamp: timestamp::format(int(row, "timestamp")?)?,
    })
}

fn details(row: &Row) -> Option<Details> {
    let users = row.get("users").and_then(Value::as_list)?;
    Some(Details {
        ride_id: int(row, "ride_id")?,
        created_by: text(row, "created_by")?,
        users: users
            .iter()
            .filter_map(|u| u.as_text().map(str::to_owned))
            .collect(),
        timestamp: timestamp::format(int(row, "timestamp")?)?,
        source: int(row, "source")?,
        destination: int(row, "destination")?,
    })
}

/// The `{rideId}` of the path: an unsigned decimal integer fitting `i64`.
fn ride_id(path: &str) -> Answer<i64> {
    service::parse_unsigned(path).ok_or_else(|| {
        service::bad(format!(
            "ride id {:?} is not an unsigned integer",
            path.chars().take(40).collect::<String>()
        ))
    })
}

async fn show_ride(state: State, path: web::Path<String>) -> Answer {
    let id = ride_id(&path)?;
    match get_ride(&state, id, None).await? {
        Some(row) => match details(&row) {
            Some(d) => Ok(common::ok_json(&d)),
            None => Err(internal(format!("ride {id} is stored malformed"))),
        },
        None => Ok(service::no_content()),
    }
}

/// Checks the body and the user first (400), then the ride (204).
async fn join_ride(state: State, path: web::Path<String>, body: Body) -> Answer {
    let id = ride_id(&path)?;
    let join: Join = service::parse(&body)?;
    // Both lookups at once; their answers still count in that order.
    let (user, ride) = futures::join!(
        user_exists(&state, &join.username),
        get_ride(&state, id, Some(&["created_by"]))
    );
    if !user? {
        return Err(service::bad("no such user"));
    }
    let Some(ride) = ride? else {
        return Ok(service::no_content());
    };
    if text(&ride, "created_by").as_deref() == Some(join.username.as_str()) {
        return Err(service::bad("the creator cannot join their own ride"));
    }
    let reply = match state.db.write(&join_op(id, join.username)).await {
        Ok(reply) => reply,
        // Deleted since the lookup: the user check comes first, as above.
        Err(Error::Precondition(_)) => return Err(service::bad("no such user")),
        Err(e) => return Err(service::db_error(e)),
    };
    match reply.result {
        // Deleted since it was read.
        WriteResult::Batch(results)
            if matches!(results.last(), Some(WriteResult::Updated { matched: 0 })) =>
        {
            Ok(service::no_content())
        }
        _ => Ok(service::empty_ok()),
    }
}

/// The write of a join: adds `username` to the riders of ride `id`, on
/// condition that the user exists when it is applied.
fn join_op(id: i64, username: String) -> WriteOp {
    WriteOp::Batch {
        ops: vec![
            require_user(username.as_str()),
            WriteOp::Update {
                table: TABLE.into(),
                key: Some(Value::Int(id)),
                filter: None,
                set: Row::new(),
                add: Row::from([("users".to_owned(), Value::from(username))]),
                remove: Row::new(),
            },
        ],
    }
}

async fn delete_ride(state: State, path: web::Path<String>) -> Answer {
    let op = WriteOp::Delete {
        table: TABLE.into(),
        key: Some(Value::Int(ride_id(&path)?)),
        filter: None,
    };
    let reply = state.db.write(&op).await.map_err(service::db_error)?;
    match reply.result {
        WriteResult::Deleted { count: 0 } => Err(service::bad("no such ride")),
        _ => Ok(service::empty_ok()),
    }
}

async fn count_rides(state: State) -> Answer {
    let op = ReadOp::Count {
        table: TABLE.into(),
        filter: Vec::new(),
    };
    let reply = state.db.read(&op).await.map_err(service::db_error)?;
    Ok(common::ok_json(&[reply.result.count()]))
}

#[cfg(test)]
mod tests;
