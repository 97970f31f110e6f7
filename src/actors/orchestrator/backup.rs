//! Backups and restores, through the master on `writeQ` like everything
//! that changes or reads the whole history. Each asks on a private reply
//! queue of its own (as a slave asks for a snapshot), so the parts of one
//! answer do not mix with the request pipeline's replies; the
//! orchestrator actor lends its broker and its stamp, and learns a
//! restore's seq as acknowledged, so that strong reads after it wait for
//! it.
//!
//! A backup is the master's whole store at its seq, sent once every write
//! up to it is confirmed on `syncQ`. A restore goes in parts under one
//! request id; the master applies it with the last part, under its next
//! seq, and answers once that sync is confirmed. Sent again (a failover,
//! parts lost), it is answered from the master's record, never applied
//! twice.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures::StreamExt;
use tokio::sync::{OwnedRwLockWriteGuard, RwLock};

use super::{Orchestrator, OrchestratorHandle};
use crate::actors::messages::{DbRead, SetEpoch};
use crate::broker::{Broker, Consumer, Message, QueueKind, WRITE_Q};
use crate::core::backoff::Backoff;
use crate::error::{Error, Result};
use crate::model::backup::Entries;
use crate::model::wire::{self, MasterRequest, Reply, RestorePart, Snapshot, SnapshotParts, Stamp};
use crate::model::{Consistency, ReadOp, WriteReply};

/// How long a backup or a restore is tried, failovers included, before
/// it fails with 503: longer than a request's deadline, a whole database
/// travelling.
pub const BACKUP_DEADLINE: Duration = Duration::from_secs(120);
/// The wait between two tries, doubling.
const RETRY: Backoff = Backoff::new(50, 2_000);

/// One restore at a time from this orchestrator: the master keeps the
/// parts of one restore, and two sent at once would each drop the other's.
static RESTORING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The broker and the stamp requests go under now.
#[derive(Message)]
#[rtype(result = "(Arc<dyn Broker>, Stamp)")]
struct GetLink;

/// A seq acknowledged outside the request pipeline (a restore's).
#[derive(Message)]
#[rtype(result = "()")]
struct Acknowledged(u64);

impl Handler<GetLink> for Orchestrator {
    type Result = MessageResult<GetLink>;

    fn handle(&mut self, _: GetLink, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult((self.broker.clone(), self.core.stamp()))
    }
}

impl Handler<Acknowledged> for Orchestrator {
    type Result = ();

    fn handle(&mut self, Acknowledged(seq): Acknowledged, ctx: &mut Context<Self>) {
        let now = self.now();
        self.core.acknowledged(seq, now);
        self.carry_out(ctx);
    }
}

/// A backup as the master answered it: its stamp (cluster and epoch) and
/// the store at its seq.
#[derive(Debug)]
pub struct Taken {
    pub stamp: Stamp,
    pub snapshot: Snapshot,
}

impl OrchestratorHandle {
    /// The master's whole store at its current seq, tried again through
    /// failovers until [`BACKUP_DEADLINE`].
    pub async fn backup(&self) -> Result<Taken> {
        self.again(|broker, stamp, within| async move {
            ask_backup(broker.as_ref(), stamp, within).await
        })
        .await
    }

    /// Restores `parts` (checked entries of a backup) through the master,
    /// as one step under its next seq; sent again under the same request
    /// id through failovers until [`BACKUP_DEADLINE`]. Answers the
    /// master's reply (the restore's seq, and the rows restored) once a
    /// replica has installed it, which `probe` (a strong read) shows.
    ///
    /// The sync of a restore carries no rows: until a replica has taken a
    /// snapshot past it, the master's store alone holds it. So it is not
    /// acknowledged before (a strong read carries its seq, and is served
    /// only by a replica that has applied that far), and writes wait
    /// meanwhile (they hold [`OrchestratorHandle::gate`] shared; the
    /// restore holds it alone from its last part on): none is
    /// acknowledged past a restore that one store alone holds, which
    /// would leave replicas unable to apply it were that store lost.
    pub async fn restore(&self, parts: Vec<Entries>, probe: ReadOp) -> Result<WriteReply> {
        let began = Instant::now();
        let _one = RESTORING.lock().await;
        let request_id = fastrand::u128(..);
        let sent_ms = crate::store::wall_clock_ms();
        let parts = Arc::new(parts);
        // Once taken, the gate is held through every try that follows (a
        // try that failed may have been applied, its answer lost).
        let alone = Arc::new(Alone::new(self.gate.clone()));
        let reply = self
            .again(|broker, stamp, within| {
                let parts = parts.clone();
                let alone = alone.clone();
                async move {
                    let head = RestorePart {
                        request_id,
                        epoch: stamp.epoch,
                        sent_ms,
                        part: 0,
                        parts: 0,
                        entries: Vec::new(),
                    };
                    send_restore(broker.as_ref(), stamp, head, &parts, within, &alone).await
                }
            })
            .await?;
        let _ = self.addr().send(Acknowledged(reply.seq)).await;
        let left = BACKUP_DEADLINE.saturating_sub(began.elapsed());
        let confirmed = super::handle::retry(left, || {
            self.addr().send(DbRead {
                op: probe.clone(),
                consistency: Consistency::Strong,
            })
        })
        .await;
        match confirmed {
            Ok(_) => Ok(reply),
            Err(e) => Err(Error::Unavailable(format!(
                "the master applied the restore at seq {}, but no replica has installed it yet \
                 ({e}); until one has, it may be lost with the master's store",
                reply.seq
            ))),
        }
    }

    /// Runs `attempt` with the broker, the stamp of now and the time left,
    /// again while it fails retryably and time is left; a fenced answer
    /// moves the orchestrator to the newer epoch first.
    async fn again<T, F, Fut>(&self, mut attempt: F) -> Result<T>
    where
        F: FnMut(Arc<dyn Broker>, Stamp, Duration) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let deadline = Instant::now() + BACKUP_DEADLINE;
        let mut wait = RETRY.first_wait();
        loop {
            let (broker, stamp) = self
                .addr()
                .send(GetLink)
                .await
                .map_err(|e| Error::Unavailable(format!("orchestrator actor: {e}")))?;
            let left = deadline.saturating_duration_since(Instant::now());
            match attempt(broker, stamp, left).await {
                Err(e) if e.is_retryable() && Instant::now() + wait < deadline => {
                    tracing::info!(error = %e, "backup or restore tried again");
                    if let Error::Fenced { current, .. } = e {
                        let _ = self.addr().send(SetEpoch(current)).await;
                    }
                    tokio::time::sleep(wait).await;
                    wait = RETRY.next_wait(wait);
                }
                other => return other,
            }
        }
    }
}

/// A private reply queue, consumed.
async fn reply_queue(broker: &dyn Broker, what: &str) -> Result<(String, Consumer)> {
    let queue = format!("{what}.{:x}", fastrand::u64(..));
    broker.declare_queue(&queue, QueueKind::Transient).await?;
    let answers = broker.consume(&queue, 16).await?;
    Ok((queue, answers))
}

/// The next reply of this cluster from a master not older than `stamp`'s
/// epoch, within `until`.
async fn next_reply(
    answers: &mut Consumer,
    stamp: Stamp,
    until: Instant,
    what: &str,
) -> Result<(Stamp, Reply)> {
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let d = match tokio::time::timeout(left, answers.next()).await {
            Ok(Some(d)) => d,
            Ok(None) => return Err(Error::Unavailable(format!("{what}: the answers ended"))),
            Err(_) => return Err(Error::Unavailable(format!("{what}: no answer in time"))),
        };
        let decoded = wire::decode::<Reply>(&d.message.body);
        let _ = d.ack().await;
        match decoded {
            Ok((s, reply)) if s.cluster == stamp.cluster && s.epoch >= stamp.epoch => {
                return Ok((s, reply))
            }
            Ok(_) => {
                tracing::warn!("{what}: an answer of another cluster or a deposed master dropped")
            }
            Err(e) => tracing::warn!(error = %e, "{what}: a bad answer dropped"),
        }
    }
}

async fn ask_backup(broker: &dyn Broker, stamp: Stamp, within: Duration) -> Result<Taken> {
    let until = Instant::now() + within;
    let (queue, mut answers) = reply_queue(broker, "backup").await?;
    let ask = Message {
        body: wire::encode(stamp, &MasterRequest::Backup),
        correlation_id: Some(0),
        reply_to: Some(queue),
    };
    broker.publish(WRITE_Q, ask).await?;
    let mut parts = SnapshotParts::default();
    loop {
        let (s, reply) = next_reply(&mut answers, stamp, until, "backup").await?;
        let whole = match reply {
            Reply::SnapshotPart(p) => parts.add(p)?,
            Reply::Snapshot(Ok(s)) => s,
            Reply::Snapshot(Err(e)) => return Err(e),
            _ => continue,
        };
        if let Some(snapshot) = whole {
            return Ok(Taken { stamp: s, snapshot });
        }
    }
}

/// The writes' gate, taken alone by a restore once, then held until the
/// restore is over.
struct Alone {
    gate: Arc<RwLock<()>>,
    held: tokio::sync::Mutex<Option<OwnedRwLockWriteGuard<()>>>,
}

impl Alone {
    fn new(gate: Arc<RwLock<()>>) -> Self {
        Alone {
            gate,
            held: tokio::sync::Mutex::new(None),
        }
    }

    /// Takes the gate alone (waiting for the writes under way, until
    /// `until`), unless it is held already.
    async fn take(&self, until: Instant) -> Result<()> {
        let mut held = self.held.lock().await;
        if held.is_none() {
            let left = until.saturating_duration_since(Instant::now());
            let guard = tokio::time::timeout(left, self.gate.clone().write_owned())
                .await
                .map_err(|_| Error::Unavailable("restore: writes under way did not end".into()))?;
            *held = Some(guard);
        }
        Ok(())
    }
}

/// Sends the parts of a restore, the last once the writes' gate is held
/// alone (the master applies the restore with it); answers the master's
/// reply.
async fn send_restore(
    broker: &dyn Broker,
    stamp: Stamp,
    head: RestorePart,
    parts: &[Entries],
    within: Duration,
    alone: &Alone,
) -> Result<WriteReply> {
    let until = Instant::now() + within;
    let (queue, mut answers) = reply_queue(broker, "restore").await?;
    let count =
        u32::try_from(parts.len().max(1)).map_err(|_| Error::bad("a backup of too many parts"))?;
    let empty = [Vec::new()];
    let parts = if parts.is_empty() { &empty[..] } else { parts };
    for (i, entries) in parts.iter().enumerate() {
        if i + 1 == parts.len() {
            alone.take(until).await?;
        }
        let part = RestorePart {
            part: i as u32,
            parts: count,
            entries: entries.clone(),
            ..head.clone()
        };
        let msg = Message {
            body: wire::encode(stamp, &MasterRequest::Restore(part)),
            correlation_id: Some(i as u64),
            reply_to: Some(queue.clone()),
        };
        broker.publish(WRITE_Q, msg).await?;
    }
    loop {
        match next_reply(&mut answers, stamp, until, "restore").await? {
            (_, Reply::Write(answer)) => return answer,
            _ => continue,
        }
    }
}
