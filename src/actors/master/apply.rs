//! The master's blocking part: decoding a group's requests and applying
//! them to the store in order (answered again from the record, refused,
//! fenced, or applied under the next seq), then one flush.

use std::sync::Mutex;

use super::restore::{self, Staged, Step};
use super::Outcome;
use crate::broker::Delivery;
use crate::core::catchup::{self, Answer, Served, SyncLog};
use crate::error::{Error, Result};
use crate::model::wire::{self, Entry, MasterRequest, Stamp, SyncMessage, WriteRequest};
use crate::model::{validate_write, Lineage, WriteReply};
use crate::store::{Store, WriteGroup};

/// Whose request it is: the delivery (its place in the group) and, for a
/// write of a batch, the id its answer carries.
pub(super) type Owner = (usize, Option<u64>);

/// The requests of a group, a batch of writes opened into its writes, in
/// order, each with its owner; what does not decode, or comes from another
/// cluster, is dropped later.
pub(super) fn decode_all(
    batch: &[Delivery],
    stamp: Stamp,
) -> (Vec<Owner>, Vec<Option<MasterRequest>>) {
    let mut foreign = 0;
    let (mut owners, mut requests) = (Vec::new(), Vec::new());
    for (i, d) in batch.iter().enumerate() {
        match wire::decode::<MasterRequest>(&d.message.body) {
            Ok((s, MasterRequest::Writes(writes)))
                if s.cluster == stamp.cluster && !writes.is_empty() =>
            {
                for w in writes {
                    owners.push((i, Some(w.id)));
                    requests.push(Some(MasterRequest::Write(w.write)));
                }
                continue;
            }
            Ok((s, r)) if s.cluster == stamp.cluster => {
                owners.push((i, None));
                let empty = matches!(r, MasterRequest::Writes(_));
                requests.push((!empty).then_some(r));
                continue;
            }
            Ok(_) => foreign += 1,
            Err(e) => tracing::warn!(error = %e, "bad message on writeQ dropped"),
        }
        owners.push((i, None));
        requests.push(None);
    }
    if foreign > 0 {
        tracing::warn!(foreign, "messages of another cluster on writeQ dropped");
    }
    (owners, requests)
}

/// The blocking part: every request in order, the writes between two
/// snapshot requests as one sled batch, then one flush. What is committed
/// goes into `log` (for catch-ups) as it is committed.
pub(super) fn apply_all(
    store: &Store,
    stamp: Stamp,
    (log, restores): (&Mutex<SyncLog>, &Mutex<Staged>),
    requests: Vec<Option<MasterRequest>>,
) -> Result<Vec<Outcome>> {
    let mut outcomes = Vec::with_capacity(requests.len());
    let mut group = store.group();
    let lineage = store.lineage();
    // Replayed writes count too: an earlier group may have applied them
    // and then failed to flush.
    let mut answered = false;
    let mut logged = 0;
    for req in requests {
        let outcome = match req {
            None => Outcome::Dropped,
            Some(MasterRequest::Write(w)) => {
                let o = apply_write(&mut group, stamp.epoch, &lineage, w)?;
                answered |= matches!(o, Outcome::Logged(..));
                o
            }
            Some(MasterRequest::Snapshot {
                have_seq,
                have_epoch,
            }) => {
                // The snapshot lands between the writes before it and after.
                group.commit()?;
                logged = log_outcomes(log, &outcomes, logged);
                store.flush()?;
                let answer = answer_snapshot(store, &lineage, log, have_seq, have_epoch);
                group = store.group();
                Outcome::Snapshot(answer)
            }
            Some(MasterRequest::Backup) => {
                // Like a snapshot's, but always the whole store.
                group.commit()?;
                logged = log_outcomes(log, &outcomes, logged);
                store.flush()?;
                let snapshot = store.snapshot();
                if let Ok(s) = &snapshot {
                    tracing::info!(seq = s.seq, "backup taken");
                }
                group = store.group();
                Outcome::Snapshot(snapshot.map(Served::Snapshot))
            }
            Some(MasterRequest::Restore(part)) => {
                let step = lock(restores).add(part);
                match step {
                    Step::Kept => Outcome::Dropped,
                    Step::Refused(e) => Outcome::Fenced(e),
                    Step::Whole(r) => {
                        let o = restore::apply(&mut group, stamp.epoch, &lineage, r)?;
                        if let Outcome::Logged(sync, _) = &o {
                            answered = true;
                            restarted_log(log, sync.seq);
                        }
                        o
                    }
                }
            }
            Some(MasterRequest::Head) => Outcome::Head(group.next_seq().saturating_sub(1)),
            // Opened into its writes by `decode_all`.
            Some(MasterRequest::Writes(_)) => Outcome::Dropped,
        };
        outcomes.push(outcome);
    }
    group.commit()?;
    log_outcomes(log, &outcomes, logged);
    if answered {
        store.flush()?;
    }
    Ok(outcomes)
}

/// The log after a restore at `seq`: it starts again past it, so that no
/// catch-up replays writes of before the restore on top of its rows (a
/// replica behind it takes a snapshot).
fn restarted_log(log: &Mutex<SyncLog>, seq: u64) {
    let mut log = lock(log);
    if log.next() <= seq.saturating_add(1) {
        *log = SyncLog::new(seq.saturating_add(1), catchup::LIMITS);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Logs the writes of `outcomes[from..]` (committed); answers how far the
/// outcomes are logged.
fn log_outcomes(log: &Mutex<SyncLog>, outcomes: &[Outcome], from: usize) -> usize {
    let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
    for outcome in outcomes.get(from..).unwrap_or_default() {
        if let Outcome::Logged(sync, _) = outcome {
            log.push(sync.clone());
        }
    }
    outcomes.len()
}

/// What a snapshot request is answered with, between two writes: current,
/// the writes the asker missed (from the log), or the whole store (see
/// [`catchup::decide`]).
fn answer_snapshot(
    store: &Store,
    lineage: &Lineage,
    log: &Mutex<SyncLog>,
    have_seq: u64,
    have_epoch: u64,
) -> Result<Served> {
    let applied = store.applied_seq();
    let log = log.lock().unwrap_or_else(|p| p.into_inner());
    let parts = match catchup::decide(have_seq, have_epoch, applied, lineage, &log) {
        Answer::Current => return Ok(Served::Current),
        Answer::CatchUp { from, through } => catchup::parts(&log, lineage, from, through),
        Answer::Snapshot => Vec::new(),
    };
    // Never empty for a catch-up (the log covers its range); an empty
    // answer would leave the asker waiting, so a snapshot would go instead.
    if let (Some(first), Some(last)) = (parts.first(), parts.last()) {
        let (from, through) = (first.batch.span().0, last.through);
        tracing::info!(from, through, parts = parts.len(), "catch-up from the log");
        return Ok(Served::CatchUp(parts));
    }
    drop(log);
    tracing::info!(have_seq, applied, "snapshot taken");
    store.snapshot().map(Served::Snapshot)
}

/// A new request (`what`, sent at `sent_ms` under `sent_epoch`) this
/// master must not apply: one sent too long ago (it may have been applied
/// already, its record since forgotten: refused, neither applied nor
/// logged; the orchestrator gave up on it long ago, see `store` on how
/// long records are kept), or one sent under a newer epoch (a newer
/// master exists, and this one must take no new write; one sent under an
/// older epoch, before its sender heard of this master, is this master's
/// to apply).
pub(super) fn fenced(
    group: &WriteGroup,
    epoch: u64,
    sent_ms: u64,
    sent_epoch: u64,
    what: impl FnOnce() -> String,
) -> Option<Outcome> {
    if group.stale(sent_ms) {
        return Some(Outcome::Fenced(Error::Precondition(format!(
            "{} was sent too long ago to apply safely: it may have been applied already",
            what()
        ))));
    }
    (sent_epoch > epoch).then_some(Outcome::Fenced(Error::Fenced {
        got: sent_epoch,
        current: epoch,
    }))
}

/// One write: answered again, fenced, refused or applied. Refusals are
/// logged under a seq like writes, so that the answer is the same from any
/// replica later. Only a storage failure is an error of the group.
fn apply_write(
    group: &mut WriteGroup,
    epoch: u64,
    lineage: &Lineage,
    w: WriteRequest,
) -> Result<Outcome> {
    let logged = |seq: u64, epoch: u64, entry: Entry, reply| {
        let sync = SyncMessage {
            seq,
            epoch,
            request_id: w.request_id,
            entry,
        };
        Outcome::Logged(sync, reply)
    };
    if let Some(rec) = group.answer(w.request_id) {
        let entry = match &rec.answer {
            Ok(_) => Entry::Write(w.op),
            Err(e) => Entry::Refused(e.clone()),
        };
        let seq = rec.seq;
        return Ok(logged(seq, lineage.owner(seq), entry, rec.into_reply()));
    }
    let what = || format!("request {:x}", w.request_id);
    if let Some(refused) = fenced(group, epoch, w.sent_ms, w.epoch, what) {
        return Ok(refused);
    }
    let seq = group.next_seq();
    let result = match validate_write(group.schema(), &w.op) {
        Ok(()) => group.apply(seq, w.request_id, &w.op),
        Err(e) => Err(e),
    };
    match result {
        Ok(result) => Ok(logged(
            seq,
            epoch,
            Entry::Write(w.op),
            Ok(WriteReply { seq, result }),
        )),
        Err(e @ Error::Storage(_)) => Err(e),
        Err(e) => {
            group.refuse(seq, w.request_id, &e)?;
            Ok(logged(seq, epoch, Entry::Refused(e.clone()), Err(e)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::catchup::Answer;
    use crate::model::WriteOp;

    fn write(seq: u64) -> SyncMessage {
        SyncMessage {
            seq,
            epoch: 1,
            request_id: u128::from(seq),
            entry: Entry::Write(WriteOp::Clear { table: None }),
        }
    }

    #[test]
    fn no_catch_up_reaches_across_a_restore() {
        let mut lineage = Lineage::default();
        assert!(lineage.begin(1, 0));
        let log = Mutex::new(SyncLog::new(1, catchup::LIMITS));
        (1..=5).for_each(|s| lock(&log).push(write(s)));
        restarted_log(&log, 6);
        // The restore itself, logged after it, changes nothing.
        lock(&log).push(write(6));
        let decide = |have, applied| catchup::decide(have, 1, applied, &lineage, &lock(&log));
        assert_eq!(decide(3, 6), Answer::Snapshot, "behind the restore");
        (7..=8).for_each(|s| lock(&log).push(write(s)));
        assert_eq!(decide(5, 8), Answer::Snapshot, "just before it");
        assert_eq!(
            decide(6, 8),
            Answer::CatchUp {
                from: 7,
                through: 8
            }
        );
    }
}
