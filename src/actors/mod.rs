//! The actors of the DBaaS and how they talk.
//!
//! ```text
//! HTTP db/read  ─> Orchestrator ─readQ (round robin)─> SlaveWorker ─┐
//! HTTP db/write ─> Orchestrator ─writeQ─> MasterWorker              │
//!                       ^           MasterWorker ─syncQ (fanout)─> every SlaveWorker
//!                       └──────────── responseQ <────────────────────┘
//! ```
//!
//! - **Orchestrator** publishes a read with the highest sequence number it
//!   has acknowledged (strong reads) and a write with a request id and the
//!   current epoch, and matches replies from `responseQ` by correlation id.
//!   [`OrchestratorHandle`] retries retryable failures within a deadline.
//! - **MasterWorker** consumes `writeQ` in groups: applies each write under
//!   the next sequence number (atomically with the request id it answers),
//!   commits the group as one sled batch and flushes once, publishes the
//!   group's writes to `syncQ` (one message per run of consecutive seqs)
//!   and waits for the broker to take them, and only then replies and
//!   acknowledges. A redelivered write (same request id) is answered from
//!   the record, not applied again. A write of another epoch is fenced.
//! - **SlaveWorker** binds its own queue to `syncQ`, asks the master for a
//!   snapshot through `writeQ` (so it lands between two writes; it comes
//!   back in parts of at most 4 MiB), installs it, applies later syncs in
//!   sequence order, many as one sled batch (duplicates dropped, gaps
//!   waited for), and consumes `readQ` only once caught up. A read waits up
//!   to two seconds for the sequence number it needs, then is answered
//!   "unavailable" so the orchestrator retries.
//!
//! What happens on each crash:
//! - a slave: what it held unacknowledged (reads, syncs) is redelivered to
//!   the other consumers or to its replacement; its sync queue keeps
//!   filling until it returns.
//! - the master: unacknowledged writes stay in `writeQ`; the next master
//!   answers those it had already applied from its request-id record (the
//!   record travels in every sync message) and applies the rest.
//! - the orchestrator: in-flight requests fail back to clients; nothing
//!   acknowledged is lost.
//! - the broker: every consumer's stream ends; each actor subscribes again
//!   with backoff (the broker client reconnects on the next call). What was
//!   unacknowledged is redelivered (writes and syncs are persistent, reads
//!   and replies are not: the orchestrator fails its waiting requests at
//!   once and retries them within their deadline).
//!
//! Not promised: reads are not linearizable against writes in flight (a
//! read sees every write acknowledged before it was received, maybe more).
//!
//! Sled work that may take long (writes, flushes, scans, snapshots) runs
//! on tokio's blocking pool ([`blocking`]); a slave serves a batch of point
//! lookups on its actor thread, where a cached `get` costs less than the
//! hop to the pool and back.

pub mod election;
pub mod messages;

mod master;
mod orchestrator;
mod slave;

pub use master::MasterWorker;
pub use orchestrator::{Orchestrator, OrchestratorHandle};
pub use slave::SlaveWorker;

use std::time::Duration;

use crate::broker::{Broker, Delivery, Message};
use crate::error::{Error, Result};
use crate::model::wire::{self, Reply};

/// The first wait before subscribing again after the broker went away.
pub(crate) const FIRST_RETRY: Duration = Duration::from_millis(50);

/// The wait after `wait`: doubled, at most two seconds.
pub(crate) fn next_retry(wait: Duration) -> Duration {
    (wait * 2).min(Duration::from_secs(2))
}

/// Runs blocking storage work on the blocking pool.
pub async fn blocking<T, F>(f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Storage(format!("storage task failed: {e}")))?
}

/// Publishes `reply` to where `request` asked, with its correlation id.
pub async fn reply_to(broker: &dyn Broker, request: &Delivery, reply: &Reply) -> Result<()> {
    let Some(queue) = request.message.reply_to.as_deref() else {
        return Ok(()); // nobody waits for it
    };
    let msg = Message::reply(wire::encode(reply), request.message.correlation_id);
    broker.publish(queue, msg).await
}
