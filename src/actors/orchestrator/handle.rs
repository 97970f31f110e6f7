//! What the HTTP layer holds: [`OrchestratorHandle`] sends to the
//! Orchestrator actor and retries what may be retried, stepping its wait
//! with [`Backoff`].

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::RwLock;

use actix::prelude::*;

use super::traffic::{Kind, Traffic};
use super::{GetReplyQueue, Orchestrator, REQUEST_DEADLINE};
use crate::actors::messages::{DbRead, DbWrite, GetStats, OrchestratorStats};
use crate::actors::scaler::ReadCounter;
use crate::core::backoff::Backoff;
use crate::error::{Error, Result};
use crate::model::{Consistency, ReadOp, ReadReply, WriteOp, WriteReply};

/// The wait between two tries of a request, doubling.
pub const REQUEST_RETRY: Backoff = Backoff::new(5, 500);

/// What the HTTP layer holds: sends to the Orchestrator and retries what
/// may be retried (no worker answered, a failover under way) until the
/// request's deadline.
#[derive(Clone)]
pub struct OrchestratorHandle {
    addr: Addr<Orchestrator>,
    deadline: Duration,
    reads: ReadCounter,
    traffic: Traffic,
    /// Writes hold it shared from their first try to their answer; a
    /// restore holds it alone from its last part until a replica has
    /// installed it (see [`OrchestratorHandle::restore`]), so that no
    /// write is acknowledged past a restore that the master's store alone
    /// holds.
    pub(super) gate: Arc<RwLock<()>>,
}

impl OrchestratorHandle {
    pub fn new(addr: Addr<Orchestrator>) -> Self {
        OrchestratorHandle {
            addr,
            deadline: REQUEST_DEADLINE,
            reads: ReadCounter::default(),
            traffic: Traffic::default(),
            gate: Arc::default(),
        }
    }

    /// Retries each request until `deadline` (a failover under way, no
    /// worker answering) before it fails with 503.
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    pub fn addr(&self) -> &Addr<Orchestrator> {
        &self.addr
    }

    /// The count of reads through this handle and its clones (each
    /// request once, however often it is retried), for the Scaler.
    pub fn reads(&self) -> ReadCounter {
        self.reads.clone()
    }

    /// What clients saw through this handle and its clones over the last
    /// minute.
    pub fn traffic(&self) -> &Traffic {
        &self.traffic
    }

    pub async fn read(&self, op: ReadOp, consistency: Consistency) -> Result<ReadReply> {
        self.reads.add();
        let began = Instant::now();
        let out = retry(self.deadline, || {
            self.addr.send(DbRead {
                op: op.clone(),
                consistency,
            })
        })
        .await;
        self.count(Kind::Read, began, &out);
        out
    }

    pub async fn write(&self, op: WriteOp) -> Result<WriteReply> {
        self.write_keyed(op, None).await
    }

    /// A write the client named with `key` (its idempotency key), if it
    /// did: the key and the write's fingerprint make the request id, so
    /// the same write sent again under the same key, through any
    /// orchestrator, is applied once and answered as the first time, for
    /// as long as the store keeps request records (ten minutes; see
    /// `store`). Another write under the same key is another request.
    pub async fn write_keyed(&self, op: WriteOp, key: Option<u128>) -> Result<WriteReply> {
        let request_id = match key {
            Some(key) => key ^ crate::model::wire::fingerprint(&op),
            None => fastrand::u128(..),
        };
        let sent_ms = crate::store::wall_clock_ms();
        let began = Instant::now();
        // Free unless a restore holds it or waits for it: taken without a
        // timer then (writes are the hot path).
        let _shared = match self.gate.try_read() {
            Ok(shared) => shared,
            Err(_) => match tokio::time::timeout(self.deadline, self.gate.read()).await {
                Ok(shared) => shared,
                Err(_) => {
                    let out = Err(Error::Unavailable(
                        "a restore is being installed; writes wait for it".into(),
                    ));
                    self.count(Kind::Write, began, &out);
                    return out;
                }
            },
        };
        let out = retry(self.deadline.saturating_sub(began.elapsed()), || {
            self.addr.send(DbWrite {
                request_id,
                op: op.clone(),
                sent_ms,
            })
        })
        .await;
        self.count(Kind::Write, began, &out);
        out
    }

    /// Counts a request in the traffic; a refusal the client earned (a
    /// conflict, a bad request, a failed precondition) is an answer, not
    /// an error of the service.
    fn count<T>(&self, kind: Kind, began: Instant, out: &Result<T>) {
        let us = u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX);
        let ok = out.as_ref().err().is_none_or(|e| e.status() < 500);
        self.traffic.record(kind, us, ok);
    }

    pub async fn stats(&self) -> Result<OrchestratorStats> {
        self.addr.send(GetStats).await.map_err(mailbox)
    }

    /// The name of the orchestrator's own reply queue (`responseQ.<tag>`):
    /// the one queue of the cluster view that is this orchestrator's.
    pub async fn reply_queue(&self) -> Result<String> {
        self.addr.send(GetReplyQueue).await.map_err(mailbox)
    }
}

fn mailbox(e: MailboxError) -> Error {
    Error::Unavailable(format!("orchestrator actor: {e}"))
}

pub(super) async fn retry<T, F, Fut>(within: Duration, mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<Result<T>, MailboxError>>,
{
    let deadline = Instant::now() + within;
    let mut wait = REQUEST_RETRY.first_wait();
    loop {
        let result = attempt().await.map_err(mailbox).and_then(|r| r);
        match result {
            Err(e) if e.is_retryable() && Instant::now() + wait < deadline => {
                tracing::debug!(error = %e, "retrying");
                tokio::time::sleep(wait).await;
                wait = REQUEST_RETRY.next_wait(wait);
            }
            other => return other,
        }
    }
}
