//! Test helpers: the real system started as a child process (`dbaas up`),
//! the same RideShare stack in-process over the embedded DBaaS, and a small
//! HTTP client that keeps whatever the server answered.
//!
//! Nothing here sleeps to synchronise: startup is awaited by reading the
//! child's `ready` line under a deadline.

#![allow(dead_code)] // each test binary uses a different part

pub mod api;
pub mod backup;
pub mod inproc;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value as Json;

/// How long `up` may take to print `ready`.
/// Longer than the system's own start deadline (60 s), so that a start
/// that fails says why before this gives up on it.
const STARTUP_DEADLINE: Duration = Duration::from_secs(75);

/// The addresses of a running RideShare system.
#[derive(Clone, Debug)]
pub struct Urls {
    pub gateway: String,
    pub users: String,
    pub rides: String,
    pub orchestrator: String,
}

/// `dbaas up` on port-0 addresses and its own data dir; killed on drop.
pub struct System {
    child: Child,
    pub urls: Urls,
    dir: tempfile::TempDir,
}

impl System {
    /// Starts `dbaas up` and waits for its `ready` line.
    pub fn start() -> System {
        Self::start_with(&[])
    }

    /// Starts `dbaas up` with more flags (e.g. `--amqp URL`).
    pub fn start_with(extra: &[&str]) -> System {
        let dir = tempfile::tempdir().expect("a temp dir");
        let log = std::fs::File::create(dir.path().join("up.log")).expect("a log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_dbaas"))
            .args(["up", "--gateway-addr", "127.0.0.1:0"])
            .args(["--users-addr", "127.0.0.1:0"])
            .args(["--rides-addr", "127.0.0.1:0"])
            .args(["--orchestrator-addr", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("dbaas up starts");
        let lines = read_lines(child.stdout.take().expect("piped stdout"));
        let mut system = System {
            child,
            urls: Urls {
                gateway: String::new(),
                users: String::new(),
                rides: String::new(),
                orchestrator: String::new(),
            },
            dir,
        };
        system.await_ready(lines);
        system
    }

    /// Reads `listening: <name> <url>` lines until `ready`.
    fn await_ready(&mut self, lines: mpsc::Receiver<String>) {
        let deadline = Instant::now() + STARTUP_DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match lines.recv_timeout(left) {
                Ok(line) => line,
                Err(e) => panic!("`dbaas up` not ready ({e}); log:\n{}", self.log()),
            };
            let line = line.trim();
            if line == "ready" {
                break;
            }
            let Some(rest) = line.strip_prefix("listening: ") else {
                continue;
            };
            let Some((name, url)) = rest.split_once(' ') else {
                continue;
            };
            let slot = match name {
                "gateway" => &mut self.urls.gateway,
                "users" => &mut self.urls.users,
                "rides" => &mut self.urls.rides,
                "orchestrator" => &mut self.urls.orchestrator,
                _ => continue,
            };
            *slot = url.trim().trim_end_matches('/').to_owned();
        }
        let u = &self.urls;
        for (name, url) in [
            ("gateway", &u.gateway),
            ("users", &u.users),
            ("rides", &u.rides),
        ] {
            assert!(
                !url.is_empty(),
                "`dbaas up` did not say where {name} listens"
            );
        }
    }

    /// Where it keeps its data.
    /// The pid of `dbaas up` (the orchestrator and the services run in it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn data_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    /// Stops it with SIGTERM and waits (polling, up to `within`) for its
    /// exit status; kills it if it does not exit in time.
    pub fn stop(mut self, within: Duration) -> std::process::ExitStatus {
        // SAFETY: kill(2) on our own child, which is not reaped yet.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("the child's status") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "`dbaas up` did not stop; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the child wrote on stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("up.log")).unwrap_or_default()
    }
}

impl Drop for System {
    /// SIGTERM first, so that it takes its workers down with it (worker
    /// containers would outlive a SIGKILL); SIGKILL if it does not exit.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            // SAFETY: kill(2) on our own child, which is not reaped yet.
            unsafe {
                libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Forwards the child's stdout lines to a channel, and keeps draining it
/// after `ready` so that the child never blocks on a full pipe.
fn read_lines(stdout: std::process::ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    rx
}

/// What a server answered.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    /// The body as JSON; panics (naming the body) when it is not JSON.
    pub fn json(&self) -> Json {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not JSON ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the status and that the body is `{"error": "<non-empty>"}`.
    #[track_caller]
    pub fn assert_error(&self, status: u16) {
        assert_eq!(self.status, status, "body {:?}", self.text());
        let body = self.json();
        let msg = body.get("error").and_then(Json::as_str);
        assert!(
            msg.is_some_and(|m| !m.is_empty()),
            "expected {{\"error\": ...}}, got {body}"
        );
    }

    /// Asserts the status and the exact JSON body.
    #[track_caller]
    pub fn assert_json(&self, status: u16, body: Json) {
        assert_eq!(self.status, status, "body {:?}", self.text());
        assert_eq!(self.json(), body);
    }

    /// Asserts 204 with an empty body.
    #[track_caller]
    pub fn assert_no_content(&self) {
        assert_eq!(self.status, 204, "body {:?}", self.text());
        assert!(self.body.is_empty(), "204 with a body: {:?}", self.text());
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// An HTTP client bound to one base URL.
#[derive(Clone)]
pub struct Http {
    base: String,
    client: reqwest::Client,
}

impl Http {
    pub fn new(base: &str) -> Http {
        // Idle connections let go after 4 s, under the servers' 5 s
        // keep-alive: one kept longer may be taken for a request at the
        // moment the server closes it, and that request fails with an
        // incomplete message (seen once after a test idled on slow
        // broker commands).
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .pool_idle_timeout(Duration::from_secs(4))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("an HTTP client");
        Http {
            base: base.trim_end_matches('/').to_owned(),
            client,
        }
    }

    /// Sends `method path` with an optional raw body (sent as JSON).
    pub async fn send(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> Resp {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            req = req.header("content-type", "application/json").body(body);
        }
        let resp = req.send().await.expect("the server answers");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.expect("a whole body").to_vec();
        Resp {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send("GET", path, None).await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.send("DELETE", path, None).await
    }

    /// Sends a JSON value.
    pub async fn json(&self, method: &str, path: &str, body: Json) -> Resp {
        self.send(method, path, Some(body.to_string().into_bytes()))
            .await
    }

    /// Sends a raw body, exactly as given.
    pub async fn raw(&self, method: &str, path: &str, body: &str) -> Resp {
        self.send(method, path, Some(body.as_bytes().to_vec()))
            .await
    }
}

/// A port on 127.0.0.1 where nothing listens (bound, then released).
pub fn closed_port_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let port = listener.local_addr().expect("an address").port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}
