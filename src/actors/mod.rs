//! The actors of the DBaaS and how they talk.
//!
//! ```text
//! HTTP db/read  ─> Orchestrator ─readQ (round robin)─> SlaveWorker ─┐
//! HTTP db/write ─> Orchestrator ─writeQ─> MasterWorker              │
//!                       ^           MasterWorker ─syncQ (fanout)─> every SlaveWorker
//!                       └──── responseQ.<tag> (its own) <────────────────┘
//!                                   MasterWorker ─leading (fanout)─> every Orchestrator's responseQ.<tag>
//! ElectionWatcher ─/workers, /master (coordinator)─ every Worker (its role: a MasterWorker or a SlaveWorker)
//! ```
//!
//! - **Orchestrator** publishes a read with the highest sequence number it
//!   has acknowledged (strong reads) and a write with a request id and the
//!   current epoch, every message stamped with the cluster and epoch, and
//!   matches replies from its own reply queue by correlation id: a reply
//!   of another cluster, or one no request waits for, changes nothing.
//!   Several may serve one cluster: each consumes its own queue, hears of
//!   a new master on the `leading` exchange, and (read-index) hands over
//!   a strong read's answer only if the slave read at or past a head the
//!   master answered after the read began.
//!   [`OrchestratorHandle`] retries retryable failures within a deadline.
//! - **MasterWorker** consumes `writeQ` in groups: answers each write under
//!   the next sequence number (atomically with the request id it answers;
//!   a refusal too, writing nothing), commits the group as one sled batch
//!   and flushes once, publishes the group's answers to `syncQ` (one
//!   message per run of consecutive seqs, with its lineage), waits for the
//!   broker to take them and for every earlier seq's sync to be confirmed,
//!   and only then replies and acknowledges. A redelivered request is
//!   answered from the record, not applied again. A write of another epoch
//!   is fenced; a message of another cluster is dropped.
//! - **SlaveWorker** binds its own capped queue to `syncQ`, asks the master
//!   for a snapshot through `writeQ` (so it lands between two writes; it
//!   comes back in parts of at most 4 MiB), installs it, applies later
//!   syncs in sequence order, many as one sled batch (duplicates, other
//!   clusters' and deposed masters' writes dropped, gaps waited for, then
//!   repaired by a snapshot), and consumes `readQ` only once caught up.
//!   When the master's bounded log still holds every write the slave
//!   lacks, the answer is just those writes (a catch-up), applied as
//!   syncs are, instead of a snapshot. A
//!   read waits up to two seconds for the sequence number it needs, then
//!   is answered "unavailable" so the orchestrator retries.
//! - **Worker** ([`worker`]) holds a worker's coordinator session and runs
//!   its role over its one store: registers `/workers/<pid>` with a report
//!   kept fresh, follows `/master`, drains and leads when elected, follows
//!   when deposed, and keeps the master's [`lease`].
//! - **ElectionWatcher** ([`watcher`]) watches `/workers` and `/master`,
//!   elects (compare-and-set on `/master`), starts replacements, tells the
//!   Orchestrator each new epoch (which resends writes pending on the old
//!   master at once), and serves the crash and cluster APIs.
//! - **Scaler** ([`scaler`]) counts client reads and, every window, starts
//!   or stops slaves through the worker runtime to match the read load.
//!
//! SlaveWorker, Worker, ElectionWatcher and Scaler decide nothing
//! themselves: each drives a state machine of [`crate::core`]
//! (`ReplicaCore`, `RoleCore`, `WatcherCore` and `LeadCore`, `ScalerCore`), feeding it
//! what arrives and carrying out the effects it answers; the seeded
//! simulator of the test suite drives the same machines.
//!
//! What happens on each crash:
//! - a slave: what it held unacknowledged (reads, syncs) is redelivered to
//!   the other consumers or to its replacement; its sync queue keeps the
//!   newest [`SYNC_QUEUE_CAP`] messages until it returns, and it catches
//!   up by snapshot. A slave stopped on purpose deletes its queue.
//! - the master: the watcher elects a caught-up slave at once (a death it
//!   sees) or when the master's session expires (a death nobody saw), and
//!   starts the dead worker again over its own store as a slave. The new
//!   master drains its sync queue up to its own fence (everything the old
//!   master had confirmed is then applied), begins a new epoch after it,
//!   and consumes `writeQ` above any deposed master (consumer priority).
//!   Unacknowledged writes stay in `writeQ`; the new master answers those
//!   the old one had answered (applied or refused) from its record (the
//!   record travels in every sync message) and applies the rest.
//! - a master paused or cut off: its lease runs out before its session can
//!   expire, so it takes no write once a successor may be elected; back, it
//!   finds itself deposed (or, after a coordinator outage, still named: it
//!   claims `/master` again by compare-and-set) and follows.
//! - between a publish and its confirm: the write is not acknowledged; it
//!   goes back to `writeQ` and its sync is published again (slaves drop
//!   the duplicate). Later groups wait, bounded, for its seq before they
//!   answer.
//! - an orchestrator: in-flight requests fail back to its clients, which
//!   move on to another (a write under the same request id, so it
//!   applies once); nothing acknowledged is lost. The leading one's death
//!   or pause: its lease runs out before its session can expire, and
//!   another takes `/leader` once it has, adopts the workers (or, with
//!   child processes, starts them again over their stores) and acts.
//! - the broker: every consumer's stream ends; each actor subscribes again
//!   with backoff (the broker client reconnects on the next call). What was
//!   unacknowledged is redelivered (writes and syncs are persistent, reads
//!   and replies are not: the orchestrator fails its waiting requests at
//!   once and retries them within their deadline).
//! - a new cluster on a broker an old one used: the old cluster's syncs,
//!   writes and replies are dropped by the stamp check.
//!
//! Not promised: reads are not linearizable against writes in flight (a
//! read sees every write acknowledged before it was received, maybe more).
//!
//! Sled work that may take long (writes, flushes, scans, snapshots) runs
//! on tokio's blocking pool ([`blocking`]); a slave serves a batch of point
//! lookups on its actor thread, where a cached `get` costs less than the
//! hop to the pool and back.

pub mod messages;

pub mod counter;
pub mod lease;
pub mod scaler;
pub mod watcher;
pub mod worker;

mod master;
mod orchestrator;
mod slave;

/// The cap of a slave's sync queue, by default.
pub use crate::broker::SYNC_QUEUE_CAP;
pub use master::MasterWorker;
pub use orchestrator::traffic;
pub use orchestrator::{
    Orchestrator, OrchestratorHandle, BACKUP_DEADLINE, REQUEST_DEADLINE, REQUEST_RETRY,
};
pub use slave::{SlaveWorker, GAP_WAIT};

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::broker::{Broker, Delivery, Message, QueueKind};
use crate::error::{Error, Result};
use crate::model::wire::{self, Reply, Stamp};

/// The first wait before subscribing again after the broker went away.
pub(crate) const FIRST_RETRY: Duration =
    Duration::from_millis(crate::core::backoff::RECONNECT.first);

/// The wait after `wait` ([`crate::core::backoff::RECONNECT`]).
pub(crate) fn next_retry(wait: Duration) -> Duration {
    crate::core::backoff::RECONNECT.next_wait(wait)
}

/// Deletes worker `worker`'s `queue` for good ([`broker::declare_and_delete`]),
/// trying again with backoff until it is done.
pub(crate) async fn remove_queue(
    broker: Arc<dyn Broker>,
    queue: String,
    kind: QueueKind,
    worker: u64,
) {
    let mut wait = FIRST_RETRY;
    while let Err(e) = crate::broker::declare_and_delete(broker.as_ref(), &queue, kind).await {
        tracing::warn!(worker, queue, error = %e, "cannot delete the queue yet; retrying");
        tokio::time::sleep(wait).await;
        wait = next_retry(wait);
    }
}

/// Now, in Unix milliseconds (the cluster view's clock).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
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

/// Publishes `reply`, stamped, to where `request` asked, with its
/// correlation id.
pub async fn reply_to(
    broker: &dyn Broker,
    stamp: Stamp,
    request: &Delivery,
    reply: &Reply,
) -> Result<()> {
    let m = &request.message;
    reply_to_queue(
        broker,
        stamp,
        m.reply_to.as_deref(),
        m.correlation_id,
        reply,
    )
    .await
}

/// Publishes `reply`, stamped, to `queue` (if any: else nobody waits for
/// it) under `correlation_id`.
pub async fn reply_to_queue(
    broker: &dyn Broker,
    stamp: Stamp,
    queue: Option<&str>,
    correlation_id: Option<u64>,
    reply: &Reply,
) -> Result<()> {
    let Some(queue) = queue else {
        return Ok(()); // nobody waits for it
    };
    let msg = Message::reply(wire::encode(stamp, reply), correlation_id);
    broker.publish(queue, msg).await
}
