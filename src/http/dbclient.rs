//! The client the RideShare services use to reach the DBaaS orchestrator:
//! `db/read`, `db/write` and `db/clear` over HTTP, nothing else.
//!
//! It may know several orchestrators. It keeps to the one that last
//! answered; when that one cannot be reached or answers 5xx, it tries the
//! next, each once per request. A write is named by an idempotency key
//! (the orchestrator's `Idempotency-Key` header) that every try of it
//! carries, so a write whose answer was lost with an orchestrator is
//! applied once however many orchestrators it reaches. A service request
//! that came with an `Idempotency-Key` (the gateway gives every request
//! that may write one) names its writes after it ([`with_request_key`]),
//! so that the request sent again, to this instance or another, writes
//! once.

use std::cell::Cell;
use std::time::Duration;

use super::instances::Instances;
use crate::error::{Error, Result};
use crate::model::{Consistency, ReadOp, ReadReply, WriteOp, WriteReply};

/// The URLs of one orchestrator.
#[derive(Clone, Debug)]
struct Orchestrator {
    read_url: String,
    read_eventual_url: String,
    write_url: String,
    clear_url: String,
}

/// An HTTP client of the orchestrator API. Cheap to clone: the clones
/// share one pool of kept-alive connections (up to 256 idle), so every
/// worker thread of a service reuses the same connections, and which
/// orchestrator answered last.
#[derive(Clone, Debug)]
pub struct DbClient {
    http: reqwest::Client,
    orchestrators: Instances<Orchestrator>,
}

#[derive(serde::Deserialize)]
struct ErrorBody {
    error: String,
}

tokio::task_local! {
    /// The idempotency key of the request being served, and how many
    /// writes serving it has made so far.
    static REQUEST_KEY: (u128, Cell<u128>);
}

/// Runs `serve` (the serving of one request that came with idempotency
/// key `key`) so that its writes are named by keys derived from it: the
/// first write `key`, the next `key + 1`, and so on. The same request sent
/// again with the same key makes the same writes under the same keys, so
/// each is applied once: a handler's writes must follow from the request
/// alone (not from the clock, say), as every RideShare handler's do.
pub async fn with_request_key<F: std::future::Future>(key: u128, serve: F) -> F::Output {
    REQUEST_KEY.scope((key, Cell::new(0)), serve).await
}

/// The key of the next write: derived from the request's, or new.
fn write_key() -> u128 {
    REQUEST_KEY
        .try_with(|(key, made)| {
            let n = made.get();
            made.set(n.wrapping_add(1));
            key.wrapping_add(n)
        })
        .unwrap_or_else(|_| fastrand::u128(..))
}

impl DbClient {
    /// A client of the orchestrators at `urls`, one base URL or several
    /// separated by commas (e.g. `http://127.0.0.1:8090,http://127.0.0.1:8091`).
    pub fn new(urls: &str) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(2))
            .pool_max_idle_per_host(256)
            .pool_idle_timeout(crate::model::HTTP_IDLE_TIMEOUT)
            .tcp_nodelay(true)
            .build()
            .expect("a plain HTTP client builds");
        let orchestrators = Instances::new(urls, |base| Orchestrator {
            read_url: format!("{base}/api/v1/db/read"),
            read_eventual_url: format!("{base}/api/v1/db/read?consistency=eventual"),
            write_url: format!("{base}/api/v1/db/write"),
            clear_url: format!("{base}/api/v1/db/clear"),
        });
        DbClient {
            http,
            orchestrators,
        }
    }

    /// Reads, seeing every write acknowledged before.
    pub async fn read(&self, op: &ReadOp) -> Result<ReadReply> {
        self.read_with(op, Consistency::Strong).await
    }

    /// Reads at the given consistency level.
    pub async fn read_with(&self, op: &ReadOp, level: Consistency) -> Result<ReadReply> {
        self.post(
            |o| match level {
                Consistency::Strong => &o.read_url,
                Consistency::Eventual => &o.read_eventual_url,
            },
            Some(op),
            None,
        )
        .await
    }

    /// Writes; answers once the master has made the write durable. Every
    /// try carries the same idempotency key: derived from the key of the
    /// request being served, if it came with one ([`with_request_key`]),
    /// else a new one.
    pub async fn write(&self, op: &WriteOp) -> Result<WriteReply> {
        let key = write_key();
        self.post(|o| &o.write_url, Some(op), Some(key)).await
    }

    /// Empties the whole database.
    pub async fn clear(&self) -> Result<()> {
        self.post::<serde_json::Value, ()>(|o| &o.clear_url, None, None)
            .await
            .map(|_| ())
    }

    /// Sends to the orchestrator that answered last, then to each other
    /// once while they cannot be reached or answer 5xx.
    async fn post<R: serde::de::DeserializeOwned, B: serde::Serialize>(
        &self,
        url: impl Fn(&Orchestrator) -> &String,
        body: Option<&B>,
        key: Option<u128>,
    ) -> Result<R> {
        let mut last = Error::Unavailable("no orchestrator URL given".into());
        for (at, orchestrator) in self.orchestrators.in_turn() {
            let answer = match self.try_one(url(orchestrator), body, key).await {
                Err(Tried::Elsewhere(e)) => {
                    last = e;
                    continue;
                }
                Ok(r) => Ok(r),
                Err(Tried::Answered(e)) => Err(e),
            };
            self.orchestrators.answered(at);
            return answer;
        }
        Err(last)
    }

    async fn try_one<R: serde::de::DeserializeOwned, B: serde::Serialize>(
        &self,
        url: &str,
        body: Option<&B>,
        key: Option<u128>,
    ) -> std::result::Result<R, Tried> {
        let mut req = self.http.post(url);
        if let Some(token) = super::admin::token() {
            // Only `db/clear` needs it; the same deployment's token.
            req = req.bearer_auth(token);
        }
        if let Some(key) = key {
            req = req.header(super::orchestrator::IDEMPOTENCY_KEY, format!("{key:032x}"));
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.map_err(|e| {
            Tried::Elsewhere(Error::Unavailable(format!(
                "orchestrator {url} unreachable: {e}"
            )))
        })?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| {
            Tried::Elsewhere(Error::Unavailable(format!(
                "orchestrator {url} reply cut: {e}"
            )))
        })?;
        if status == 200 {
            return serde_json::from_slice(&bytes).map_err(|e| {
                Tried::Answered(Error::Storage(format!(
                    "orchestrator reply unreadable: {e}"
                )))
            });
        }
        let msg = serde_json::from_slice::<ErrorBody>(&bytes)
            .map(|b| b.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
        // The inverse of `Error::status` for what a client can act on.
        Err(match status {
            400 => Tried::Answered(Error::BadRequest(msg)),
            409 => Tried::Answered(Error::Conflict(msg)),
            412 => Tried::Answered(Error::Precondition(msg)),
            // The services build DB requests from what their clients sent,
            // often repeating it (a key and a row naming the same user), so
            // a request under the services' cap can exceed the DBaaS's:
            // too much client data, not a failure of the DBaaS.
            413 => Tried::Answered(Error::BadRequest(format!("too large for the DBaaS: {msg}"))),
            503 => Tried::Elsewhere(Error::Unavailable(msg)),
            500..=599 => Tried::Elsewhere(Error::Storage(format!(
                "orchestrator answered {status}: {msg}"
            ))),
            _ => Tried::Answered(Error::Storage(format!(
                "orchestrator answered {status}: {msg}"
            ))),
        })
    }
}

/// How one try ended, if not with an answer.
enum Tried {
    /// The orchestrator answered; its answer stands.
    Answered(Error),
    /// It could not be reached or failed: another may do.
    Elsewhere(Error),
}
