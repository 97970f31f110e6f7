//! The gateway in front of the RideShare services, routing by path as the
//! original AWS load balancer did: paths starting with `/api/v1/users` go to
//! the users service, everything else to the rides service.
//!
//! Method, path, query, headers (minus hop-by-hop ones) and body are
//! forwarded unchanged, and the upstream's status, headers and body are
//! copied back. Bodies are buffered under the body cap (413 above it).
//! The gateway answers `/healthz` itself.
//!
//! Each service may have several instances (`--users URL[,URL...]`): the
//! gateway keeps to the one that answered last and moves to the next when
//! it cannot connect to it or loses the answer on the way, each instance
//! once. That is safe for every method: a request that may write (not
//! `GET` or `HEAD`) goes with an `Idempotency-Key` (the client's, else
//! one the gateway makes), under which the services write, so a request
//! carried out by an instance whose answer was lost writes nothing again
//! elsewhere. When none answers it is a 502.

use std::net::TcpListener;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};

use super::common::{self, Body, BodyLimit};
use super::instances::Instances;

/// Worker threads of the gateway.
pub const WORKERS: usize = 2;

/// How long an upstream may take to answer; the services answer well
/// before this (their DB client gives up after 30 s).
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the gateway sends requests.
#[derive(Clone, Debug)]
pub struct Upstreams {
    pub users: Instances<String>,
    pub rides: Instances<String>,
    http: reqwest::Client,
}

impl Upstreams {
    /// The services at `users_url` and `rides_url`, each one base URL or
    /// several separated by commas.
    pub fn new(users_url: &str, rides_url: &str) -> Self {
        let http = reqwest::Client::builder()
            .timeout(UPSTREAM_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(256)
            .pool_idle_timeout(crate::model::HTTP_IDLE_TIMEOUT)
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(2))
            .build()
            .expect("a plain HTTP client builds");
        Upstreams {
            users: Instances::new(users_url, str::to_owned),
            rides: Instances::new(rides_url, str::to_owned),
            http,
        }
    }

    /// The service that owns `path`.
    pub fn route(&self, path: &str) -> &Instances<String> {
        if path.starts_with("/api/v1/users") {
            &self.users
        } else {
            &self.rides
        }
    }
}

/// The gateway on `listener`, in front of the users and rides services.
pub fn server(
    listener: TcpListener,
    users_url: &str,
    rides_url: &str,
    body_limit: usize,
) -> std::io::Result<Server> {
    let upstreams = Upstreams::new(users_url, rides_url);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(upstreams.clone()))
            .app_data(BodyLimit(body_limit))
            .configure(configure)
    })
    .workers(WORKERS)
    .disable_signals()
    .listen(listener)?
    .run();
    Ok(server)
}

/// Registers `/healthz` and forwards everything else; the app must carry
/// [`Upstreams`] as `web::Data` (and may carry a `BodyLimit`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(common::resource("/healthz").route(web::get().to(common::healthz)))
        .default_service(web::to(forward));
}

/// Headers that belong to one connection, not to the message (RFC 9110
/// 7.6.1), and the framing ones the next hop recomputes.
fn is_hop_by_hop(name: &str) -> bool {
    const HOP: [&str; 12] = [
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        // Recomputed: the body's length and the upstream's own authority.
        "content-length",
        "host",
        // Already answered: the gateway has read the whole body.
        "expect",
    ];
    HOP.contains(&name)
}

/// The headers of a message worth forwarding, as (name, value) bytes:
/// hop-by-hop ones and those its `Connection` header names are left out.
/// Works on both `http` crate versions (actix's and reqwest's).
fn end_to_end<'a>(headers: Vec<(&'a str, &'a [u8])>) -> Vec<(&'a str, &'a [u8])> {
    let named: Vec<String> = headers
        .iter()
        .filter(|(n, _)| *n == "connection")
        .filter_map(|(_, v)| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    headers
        .into_iter()
        .filter(|(n, _)| !is_hop_by_hop(n) && !named.iter().any(|d| d == n))
        .collect()
}

fn bad_gateway(msg: impl std::fmt::Display) -> HttpResponse {
    common::error_response(StatusCode::BAD_GATEWAY, msg)
}

async fn forward(req: HttpRequest, body: Body, upstreams: web::Data<Upstreams>) -> HttpResponse {
    let path_and_query = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let Ok(method) = reqwest::Method::from_bytes(req.method().as_str().as_bytes()) else {
        return common::bad_request("unsupported method");
    };
    let service = upstreams.route(req.path());
    let headers: Vec<(&str, &[u8])> = req
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_bytes()))
        .collect();
    let headers = end_to_end(headers);
    // A request that may write is named, so that sending it again (to
    // another instance) writes once.
    let reads_only = method == reqwest::Method::GET || method == reqwest::Method::HEAD;
    let named = headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case(super::orchestrator::IDEMPOTENCY_KEY));
    let key = (!reads_only && !named).then(|| format!("{:032x}", fastrand::u128(..)));
    let mut unreachable = String::from("no upstream configured");
    let mut answered = None;
    for (at, base) in service.in_turn() {
        let url = format!("{base}{path_and_query}");
        let mut upstream = upstreams
            .http
            .request(method.clone(), &url)
            .body(body.0.clone());
        for (name, value) in &headers {
            upstream = upstream.header(*name, *value);
        }
        if let Some(key) = &key {
            upstream = upstream.header(super::orchestrator::IDEMPOTENCY_KEY, key.as_str());
        }
        match upstream.send().await {
            Ok(resp) => {
                service.answered(at);
                answered = Some(resp);
                break;
            }
            // Not reached, or its answer lost: the next may take it (the
            // request is named, or it only reads).
            Err(e) => unreachable = format!("upstream failed: {e}"),
        }
    }
    let Some(resp) = answered else {
        return bad_gateway(unreachable);
    };
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut answer = HttpResponse::build(status);
    let headers = resp.headers().iter();
    for (name, value) in end_to_end(headers.map(|(n, v)| (n.as_str(), v.as_bytes())).collect()) {
        answer.append_header((name, value));
    }
    match resp.bytes().await {
        Ok(bytes) => answer.body(bytes),
        Err(e) => bad_gateway(format!("upstream answer broken off: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_paths_go_to_users_and_everything_else_to_rides() {
        let u = Upstreams::new("http://users/", "http://rides,http://rides2/");
        for (path, want) in [
            ("/api/v1/users", "http://users"),
            ("/api/v1/users/alice", "http://users"),
            ("/api/v1/usersx", "http://users"),
            ("/api/v1/rides", "http://rides"),
            ("/api/v1/_count", "http://rides"),
            ("/api/v1/db/clear", "http://rides"),
            ("/api/v1/user", "http://rides"),
            ("/", "http://rides"),
        ] {
            let first = u.route(path).in_turn().next().map(|(_, b)| b.as_str());
            assert_eq!(first, Some(want), "{path}");
        }
    }

    #[test]
    fn hop_by_hop_headers_are_not_forwarded() {
        let headers = vec![
            ("connection", &b"keep-alive, X-Secret"[..]),
            ("x-secret", b"1"),
            ("keep-alive", b"timeout=5"),
            ("transfer-encoding", b"chunked"),
            ("host", b"gateway"),
            ("content-length", b"3"),
            ("expect", b"100-continue"),
            ("content-type", b"application/json"),
            ("location", b"/api/v1/rides/1"),
            ("x-request-id", b"7"),
        ];
        let names: Vec<&str> = end_to_end(headers).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["content-type", "location", "x-request-id"]);
    }
}
