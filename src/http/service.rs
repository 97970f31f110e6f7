//! What the two RideShare services share: their state (a DBaaS client and a
//! request counter), the `_count`, `db/clear` and `/healthz` routes, the
//! mapping of DB errors to answers, strict path and query numbers, and the
//! HTTP server around an app.
//!
//! The services keep no data of their own; everything goes through
//! [`DbClient`]. A request with an `Idempotency-Key` header (a UUID)
//! writes under keys derived from it, so that sending it again writes
//! nothing twice (see `dbclient`); a malformed key is a 400. The only
//! state a service process holds is its request counter, which is per
//! instance by design (as in the original).

use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actix_web::dev::{Server, Service};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};

use super::common::{self, BodyLimit};
use super::dbclient::{self, DbClient};
use crate::error::Error;
use futures::future::LocalBoxFuture;

/// Worker threads per service; the services are thin and I/O bound.
pub const WORKERS: usize = 2;

/// A lock-free count of the requests a service received on its own routes.
#[derive(Debug, Default)]
pub struct RequestCounter(AtomicU64);

impl RequestCounter {
    pub fn increment(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    pub fn reset(&self) {
        self.0.store(0, Ordering::Relaxed);
    }
}

/// The app data of a RideShare service: shared by all its workers.
#[derive(Clone, Debug)]
pub struct ServiceState {
    pub db: DbClient,
    pub counter: Arc<RequestCounter>,
}

impl ServiceState {
    pub fn new(orchestrator_url: &str) -> Self {
        ServiceState {
            db: DbClient::new(orchestrator_url),
            counter: Arc::default(),
        }
    }
}

/// The handlers' view of the state.
pub type State = web::Data<ServiceState>;

/// Runs a service: `configure` registers its routes, every request whose
/// path starts with `counted_prefix` is counted (whatever its answer).
pub fn serve(
    listener: TcpListener,
    state: ServiceState,
    body_limit: usize,
    counted_prefix: &'static str,
    configure: fn(&mut web::ServiceConfig),
) -> std::io::Result<Server> {
    super::admin::warn_if_open(counted_prefix, listener.local_addr().ok());
    let server = HttpServer::new(move || {
        let counter = Arc::clone(&state.counter);
        App::new()
            .app_data(web::Data::new(state.clone()))
            .app_data(BodyLimit(body_limit))
            .wrap_fn(move |req, srv| {
                if req.path().starts_with(counted_prefix) {
                    counter.increment();
                }
                let key = super::orchestrator::request_key(req.headers());
                let served: LocalBoxFuture<_> = match key {
                    Ok(None) => Box::pin(srv.call(req)),
                    Ok(Some(key)) => Box::pin(dbclient::with_request_key(key, srv.call(req))),
                    Err(e) => {
                        let refused = req.into_response(common::from_error(&e));
                        Box::pin(std::future::ready(Ok(refused)))
                    }
                };
                served
            })
            .configure(configure)
    })
    .workers(WORKERS)
    .disable_signals()
    .listen(listener)?
    .run();
    Ok(server)
}

/// Registers `_count`, `db/clear`, `/healthz` and the 404 for unknown
/// routes: the part of `configure` both services have in common.
pub fn configure_common(cfg: &mut web::ServiceConfig) {
    cfg.service(
        common::resource("/api/v1/_count")
            .route(web::get().to(get_count))
            .route(web::delete().to(reset_count)),
    )
    .service(common::resource("/api/v1/db/clear").route(web::post().to(clear)))
    .service(common::resource("/healthz").route(web::get().to(common::healthz)))
    .default_service(web::to(common::not_found));
}

async fn get_count(state: State) -> HttpResponse {
    common::ok_json(&[state.counter.get()])
}

async fn reset_count(state: State) -> HttpResponse {
    state.counter.reset();
    empty_ok()
}

async fn clear(state: State, req: HttpRequest) -> Answer {
    if let Some(refused) = super::admin::refusal(&req) {
        return Ok(refused);
    }
    state.db.clear().await.map_err(db_error)?;
    Ok(empty_ok())
}

/// 200 `{}`.
pub fn empty_ok() -> HttpResponse {
    common::ok_json(&serde_json::json!({}))
}

/// 201 `{}`.
pub fn created() -> HttpResponse {
    HttpResponse::Created().json(serde_json::json!({}))
}

/// 204 without a body.
pub fn no_content() -> HttpResponse {
    HttpResponse::NoContent().finish()
}

/// What a handler answers: a response, or an early answer carried as an
/// error so that `?` can end the handler with it.
pub type Answer<T = HttpResponse> = actix_web::Result<T>;

/// Ends a handler with a ready answer (usually an `{"error"}` body).
pub fn refuse(resp: HttpResponse) -> actix_web::Error {
    actix_web::error::InternalError::from_response("refused", resp).into()
}

/// 400 `{"error": msg}`, as an early answer.
pub fn bad(msg: impl std::fmt::Display) -> actix_web::Error {
    refuse(common::bad_request(msg))
}

/// Parses a JSON body strictly, or ends the handler with a 400.
pub fn parse<T: serde::de::DeserializeOwned>(body: &common::Body) -> Answer<T> {
    common::parse_json(&body.0).map_err(|e| refuse(common::from_error(&e)))
}

/// The answer to a DB error the handler has no more specific answer for:
/// the error's own status, by the one table ([`Error::status`]). Where the
/// RideShare contract wants another code for an error (a taken username is
/// 400, not 409), the handler matches that error itself, before this.
pub fn db_error(e: Error) -> actix_web::Error {
    refuse(common::from_error(&e))
}

/// An unsigned decimal number that fits `i64`: ASCII digits only, no sign,
/// no spaces, at least one digit.
pub fn parse_unsigned(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsigned_numbers_are_digits_only_and_fit_i64() {
        for (s, n) in [
            ("0", Some(0)),
            ("1", Some(1)),
            ("007", Some(7)),
            ("9223372036854775807", Some(i64::MAX)),
            ("9223372036854775808", None),
            ("99999999999999999999999", None),
            ("", None),
            ("-1", None),
            ("+1", None),
            (" 1", None),
            ("1 ", None),
            ("1.0", None),
            ("1e3", None),
            ("0x10", None),
            ("١", None),
            ("1١", None),
        ] {
            assert_eq!(parse_unsigned(s), n, "{s:?}");
        }
    }

    #[test]
    fn db_errors_are_answered_by_the_one_table() {
        let m = || "m".to_owned();
        for e in [
            Error::BadRequest(m()),
            Error::Conflict(m()),
            Error::Precondition(m()),
            Error::Unavailable(m()),
            Error::Fenced { got: 1, current: 2 },
            Error::Storage(m()),
            Error::BadMessage(m()),
        ] {
            let status = e.status();
            let resp = db_error(e).error_response();
            assert_eq!(resp.status().as_u16(), status);
        }
    }

    #[test]
    fn the_counter_counts_and_resets() {
        let c = RequestCounter::default();
        c.increment();
        c.increment();
        assert_eq!(c.get(), 2);
        c.reset();
        assert_eq!(c.get(), 0);
    }
}
