//! The client the RideShare services use to reach the DBaaS orchestrator:
//! `db/read`, `db/write` and `db/clear` over HTTP, nothing else.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::model::{Consistency, ReadOp, ReadReply, WriteOp, WriteReply};

/// An HTTP client of the orchestrator API. Cheap to clone: the clones
/// share one pool of kept-alive connections (up to 256 idle), so every
/// worker thread of a service reuses the same connections.
#[derive(Clone, Debug)]
pub struct DbClient {
    http: reqwest::Client,
    read_url: String,
    read_eventual_url: String,
    write_url: String,
    clear_url: String,
}

#[derive(serde::Deserialize)]
struct ErrorBody {
    error: String,
}

impl DbClient {
    /// A client of the orchestrator at `base` (e.g. `http://127.0.0.1:8090`).
    pub fn new(base: &str) -> Self {
        let base = base.trim_end_matches('/');
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(256)
            .pool_idle_timeout(crate::model::HTTP_IDLE_TIMEOUT)
            .tcp_nodelay(true)
            .build()
            .expect("a plain HTTP client builds");
        DbClient {
            http,
            read_url: format!("{base}/api/v1/db/read"),
            read_eventual_url: format!("{base}/api/v1/db/read?consistency=eventual"),
            write_url: format!("{base}/api/v1/db/write"),
            clear_url: format!("{base}/api/v1/db/clear"),
        }
    }

    /// Reads, seeing every write acknowledged before.
    pub async fn read(&self, op: &ReadOp) -> Result<ReadReply> {
        self.read_with(op, Consistency::Strong).await
    }

    /// Reads at the given consistency level.
    pub async fn read_with(&self, op: &ReadOp, level: Consistency) -> Result<ReadReply> {
        let url = match level {
            Consistency::Strong => &self.read_url,
            Consistency::Eventual => &self.read_eventual_url,
        };
        self.post(url, Some(op)).await
    }

    /// Writes; answers once the master has made the write durable.
    pub async fn write(&self, op: &WriteOp) -> Result<WriteReply> {
        self.post(&self.write_url, Some(op)).await
    }

    /// Empties the whole database.
    pub async fn clear(&self) -> Result<()> {
        self.post::<serde_json::Value, ()>(&self.clear_url, None)
            .await
            .map(|_| ())
    }

    async fn post<R: serde::de::DeserializeOwned, B: serde::Serialize>(
        &self,
        url: &str,
        body: Option<&B>,
    ) -> Result<R> {
        let mut req = self.http.post(url);
        if let Some(token) = super::admin::token() {
            // Only `db/clear` needs it; the same deployment's token.
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| Error::Unavailable(format!("orchestrator unreachable: {e}")))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| Error::Unavailable(format!("orchestrator reply cut: {e}")))?;
        if status == 200 {
            return serde_json::from_slice(&bytes)
                .map_err(|e| Error::Storage(format!("orchestrator reply unreadable: {e}")));
        }
        let msg = serde_json::from_slice::<ErrorBody>(&bytes)
            .map(|b| b.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
        // The inverse of `Error::status` for what a client can act on.
        Err(match status {
            400 => Error::BadRequest(msg),
            409 => Error::Conflict(msg),
            412 => Error::Precondition(msg),
            // The services build DB requests from what their clients sent,
            // often repeating it (a key and a row naming the same user), so
            // a request under the services' cap can exceed the DBaaS's:
            // too much client data, not a failure of the DBaaS.
            413 => Error::BadRequest(format!("too large for the DBaaS: {msg}")),
            503 => Error::Unavailable(msg),
            _ => Error::Storage(format!("orchestrator answered {status}: {msg}")),
        })
    }
}
