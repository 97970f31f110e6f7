//! Guarded admin endpoints. With an admin token set (`--admin-token`, or
//! `DBAAS_ADMIN_TOKEN`), the endpoints that destroy, kill or copy out the
//! whole database (`crash/*`, `db/clear`, `db/backup` and `db/restore` on
//! the orchestrator, `db/clear` on the users and rides
//! services, and through the gateway) answer 401 unless the request
//! carries `Authorization: Bearer <token>`; the token is compared in
//! constant time. Without one they stay open, as the original was, and a
//! server that listens beyond loopback says so when it starts.
//!
//! The token is the deployment's, one per process: every part reads the
//! same setting, and the users and rides services send it on when they
//! clear the database through the orchestrator.

use std::net::SocketAddr;
use std::sync::OnceLock;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};

static TOKEN: OnceLock<Option<String>> = OnceLock::new();

/// Sets the token (from `--admin-token`) before any request is served;
/// `None` leaves the environment's `DBAAS_ADMIN_TOKEN` to decide. A second
/// call changes nothing.
pub fn set_token(token: Option<String>) {
    let token = token.or_else(|| std::env::var("DBAAS_ADMIN_TOKEN").ok());
    let _ = TOKEN.set(token.filter(|t| !t.is_empty()));
}

/// The admin token, if one is set.
pub fn token() -> Option<&'static str> {
    TOKEN
        .get_or_init(|| {
            std::env::var("DBAAS_ADMIN_TOKEN")
                .ok()
                .filter(|t| !t.is_empty())
        })
        .as_deref()
}

/// The 401 to answer when a token is set and the request does not carry
/// it; `None` lets the request through.
pub fn refusal(req: &HttpRequest) -> Option<HttpResponse> {
    let authorization = req.headers().get(header::AUTHORIZATION);
    refusal_of(token(), authorization.map(|v| v.as_bytes()))
}

/// The rule of [`refusal`], over the token and the `Authorization` value.
fn refusal_of(token: Option<&str>, authorization: Option<&[u8]>) -> Option<HttpResponse> {
    let token = token?;
    let presented = authorization.and_then(|v| v.strip_prefix(b"Bearer "));
    if presented.is_some_and(|p| same(p, token.as_bytes())) {
        return None;
    }
    Some(
        HttpResponse::Unauthorized()
            .insert_header((header::WWW_AUTHENTICATE, "Bearer"))
            .json(serde_json::json!({
                "error": "this endpoint needs the admin token: Authorization: Bearer <token>"
            })),
    )
}

/// Byte strings compared in time that depends only on their lengths.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Warns at start when a server with admin endpoints listens beyond
/// loopback and no token guards them.
pub fn warn_if_open(what: &str, addr: Option<SocketAddr>) {
    if token().is_none() && addr.is_some_and(|a| !a.ip().is_loopback()) {
        tracing::warn!(
            server = what,
            addr = ?addr,
            "admin endpoints (crash/*, db/clear, db/backup, db/restore) are open to anyone who can reach this address: set --admin-token or DBAAS_ADMIN_TOKEN"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_token_everything_is_let_through() {
        assert!(refusal_of(None, None).is_none());
        assert!(refusal_of(None, Some(b"Bearer whatever")).is_none());
    }

    #[test]
    fn with_a_token_only_the_right_bearer_passes() {
        let t = Some("s3cret");
        assert!(refusal_of(t, Some(b"Bearer s3cret")).is_none());
        for wrong in [
            None,
            Some(&b""[..]),
            Some(b"s3cret"),
            Some(b"Bearer s3cre"),
            Some(b"Bearer s3cret "),
            Some(b"Bearer S3CRET"),
            Some(b"Basic s3cret"),
            Some(b"bearer s3cret"),
        ] {
            let refused = refusal_of(t, wrong).expect("refused");
            assert_eq!(refused.status().as_u16(), 401, "{wrong:?}");
        }
    }

    #[test]
    fn comparison_needs_equal_lengths_and_bytes() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
        assert!(same(b"", b""));
    }
}
