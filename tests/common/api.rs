//! RideShare calls the contract tests repeat: each asserts its own success
//! answer, so a test reads as a script of what happens.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{json, Value as Json};

use super::{Http, Resp, Urls};

/// A valid password: 40 hex digits, mixed case.
pub const PASSWORD: &str = "3d725109c7e7c0bfb9d709836735B56D943D263F";
/// A time every test run sees as upcoming.
pub const FUTURE: &str = "01-01-2099:00-00-00";
/// A time every test run sees as past.
pub const PAST: &str = "01-01-2001:00-00-00";
/// The body cap `dbaas up` and the in-process stack use by default.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Clients for each address of a system.
pub struct Api {
    /// Everything goes through the gateway, as the original clients did.
    pub gw: Http,
    /// The users service's own address (`_count`, `db/clear`).
    pub users: Http,
    /// The rides service's own address.
    pub rides: Http,
}

impl Api {
    pub fn new(urls: &Urls) -> Api {
        Api {
            gw: Http::new(&urls.gateway),
            users: Http::new(&urls.users),
            rides: Http::new(&urls.rides),
        }
    }

    pub async fn add_user(&self, name: &str) {
        let body = json!({ "username": name, "password": PASSWORD });
        let r = self.gw.json("PUT", "/api/v1/users", body).await;
        r.assert_json(201, json!({}));
    }

    /// The user list (empty on 204).
    pub async fn user_list(&self) -> Vec<String> {
        let r = self.gw.get("/api/v1/users").await;
        if r.status == 204 {
            r.assert_no_content();
            return Vec::new();
        }
        assert_eq!(r.status, 200, "{}", r.text());
        serde_json::from_value(r.json()).expect("a list of names")
    }

    /// Creates a ride and answers its id, read from the `Location` header.
    pub async fn add_ride(&self, by: &str, at: &str, source: i64, destination: i64) -> i64 {
        let r = self
            .post_ride(json!({
                "created_by": by, "timestamp": at, "source": source, "destination": destination
            }))
            .await;
        r.assert_json(201, json!({}));
        let location = r.header("location").expect("a Location header");
        let id = location
            .strip_prefix("/api/v1/rides/")
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("bad Location {location:?}"));
        assert!(id >= 1, "ride ids start at 1");
        id
    }

    pub async fn post_ride(&self, body: Json) -> Resp {
        self.gw.json("POST", "/api/v1/rides", body).await
    }

    pub async fn join(&self, id: i64, name: &str) -> Resp {
        let path = format!("/api/v1/rides/{id}");
        self.gw
            .json("POST", &path, json!({ "username": name }))
            .await
    }

    /// `GET /api/v1/rides/count`.
    pub async fn ride_count(&self) -> u64 {
        let r = self.gw.get("/api/v1/rides/count").await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()[0].as_u64().expect("[n]")
    }

    /// The details of a ride that exists.
    pub async fn ride(&self, id: i64) -> Json {
        let r = self.gw.get(&format!("/api/v1/rides/{id}")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }

    /// A service's request counter.
    pub async fn count(service: &Http) -> u64 {
        let r = service.get("/api/v1/_count").await;
        assert_eq!(r.status, 200, "{}", r.text());
        let body = r.json();
        assert_eq!(body.as_array().map(Vec::len), Some(1), "{body}");
        body[0].as_u64().expect("[n]")
    }
}

/// Percent-encodes a path segment (everything but unreserved characters).
pub fn encode_segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Sends a chunked body of `size` bytes (no `Content-Length`) over a raw
/// connection and answers the status code. The server may answer and close
/// before reading it all, so write errors are expected and ignored.
pub fn chunked_status(base: &str, method: &str, path: &str, size: usize) -> u16 {
    let addr = base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("a timeout");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    let _ = stream.write_all(head.as_bytes());
    let chunk = vec![b' '; 8192];
    let mut sent = 0;
    while sent < size {
        let n = chunk.len().min(size - sent);
        let framed = [format!("{n:x}\r\n").as_bytes(), &chunk[..n], b"\r\n"].concat();
        if stream.write_all(&framed).is_err() {
            break;
        }
        sent += n;
    }
    let _ = stream.write_all(b"0\r\n\r\n");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    // Read what arrives; a reset after the status line is fine.
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&answer);
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok());
    status.unwrap_or_else(|| panic!("no status line in {text:?}"))
}
