//! What every HTTP service shares: JSON bodies read under a size cap with
//! clear 400/413 errors, error bodies `{"error": ...}`, and the mapping of
//! the crate's [`Error`] to a status.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::Error;

/// Default cap on request bodies (64 KiB).
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

/// An error body with its status.
pub fn error_response(status: StatusCode, msg: impl std::fmt::Display) -> HttpResponse {
    HttpResponse::build(status).json(serde_json::json!({ "error": msg.to_string() }))
}

/// 400 with a message.
pub fn bad_request(msg: impl std::fmt::Display) -> HttpResponse {
    error_response(StatusCode::BAD_REQUEST, msg)
}

/// The answer for a crate error, by its own status.
pub fn from_error(e: &Error) -> HttpResponse {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    error_response(status, e)
}

/// 200 with a JSON body.
pub fn ok_json<T: Serialize>(body: &T) -> HttpResponse {
    HttpResponse::Ok().json(body)
}

/// 405 with `{}`, for a known route and a method it does not support.
pub async fn method_not_allowed() -> HttpResponse {
    HttpResponse::MethodNotAllowed().json(serde_json::json!({}))
}

/// A route that answers 405 `{}` to the methods it has no handler for.
pub fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

/// The answer to a request the crate's [`Error`] may have failed: 200 with
/// the JSON value, else the error's own status.
pub fn reply<T: Serialize>(result: Result<T, Error>) -> HttpResponse {
    match result {
        Ok(v) => ok_json(&v),
        Err(e) => from_error(&e),
    }
}

/// 404 with an error body, for unknown routes.
pub async fn not_found(req: HttpRequest) -> HttpResponse {
    error_response(
        StatusCode::NOT_FOUND,
        format!("no route for {} {}", req.method(), req.path()),
    )
}

/// `{"status": "ok"}` for health checks.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// Parses a JSON body strictly (the target type decides about unknown
/// fields); the error is a 400 with what is wrong.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    if body.is_empty() {
        return Err(Error::bad("missing JSON body"));
    }
    serde_json::from_slice(body).map_err(|e| Error::bad(format!("invalid body: {e}")))
}

/// The body cap of an app (default [`DEFAULT_BODY_LIMIT`]), as app data.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimit(pub usize);

/// A request body read under the app's [`BodyLimit`]: a bigger one is
/// answered 413 with an error body, before it is read whole.
pub struct Body(pub web::Bytes);

impl actix_web::FromRequest for Body {
    type Error = actix_web::Error;
    type Future = futures::future::LocalBoxFuture<'static, Result<Body, actix_web::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut actix_web::dev::Payload) -> Self::Future {
        use futures::StreamExt;
        let limit = req
            .app_data::<BodyLimit>()
            .map_or(DEFAULT_BODY_LIMIT, |l| l.0);
        let mut payload = payload.take();
        let too_large = move || {
            let resp = error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body exceeds {limit} bytes"),
            );
            actix_web::error::InternalError::from_response("body", resp).into()
        };
        let declared = req
            .headers()
            .get(actix_web::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        Box::pin(async move {
            if declared.is_some_and(|n| n > limit as u64) {
                return Err(too_large());
            }
            let mut buf = web::BytesMut::new();
            while let Some(chunk) = payload.next().await {
                let chunk = chunk.map_err(|e| {
                    let resp = bad_request(format!("unreadable body: {e}"));
                    actix_web::Error::from(actix_web::error::InternalError::from_response(
                        "body", resp,
                    ))
                })?;
                if buf.len() + chunk.len() > limit {
                    return Err(too_large());
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(Body(buf.freeze()))
        })
    }
}
