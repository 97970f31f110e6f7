//! A restore on the master: its parts kept as they come (acknowledged
//! with no answer), and, with the last, the whole backup applied under
//! the next seq like a write (fenced, refused as stale, or answered again
//! from the record as a write is). The answer goes out once its sync is
//! confirmed; the sync says only "restored at this seq" and every replica
//! takes a snapshot past it (see `core::replica`).

use std::collections::BTreeMap;

use super::Outcome;
use crate::error::{Error, Result};
use crate::model::backup::Entries;
use crate::model::wire::{Entry, RestorePart, SyncMessage};
use crate::model::{Lineage, WriteReply, WriteResult};
use crate::store::WriteGroup;

/// The parts of the restore being received (one at a time: a part of
/// another restore drops those of the one before).
#[derive(Debug, Default)]
pub(super) struct Staged {
    request_id: u128,
    parts: u32,
    got: BTreeMap<u32, Entries>,
}

/// What one part came to.
pub(super) enum Step {
    /// More parts to come: acknowledged, not answered.
    Kept,
    /// Answered now (refused or fenced), without a seq.
    Refused(Error),
    /// Every part came: the restore, whole.
    Whole(RestorePart),
}

impl Staged {
    /// Keeps `part`; the whole restore once its last part has come. The
    /// last part finding others missing (the earlier ones went to a
    /// master that is gone) answers "send it again", and drops what was
    /// kept.
    pub(super) fn add(&mut self, part: RestorePart) -> Step {
        if part.parts == 0 || part.part >= part.parts {
            let why = format!("restore part {} of {}", part.part, part.parts);
            return Step::Refused(Error::bad(why));
        }
        if self.request_id != part.request_id || self.parts != part.parts {
            *self = Staged {
                request_id: part.request_id,
                parts: part.parts,
                got: BTreeMap::new(),
            };
        }
        let last = part.part + 1 == part.parts;
        let head = RestorePart {
            entries: Vec::new(),
            ..part
        };
        self.got.insert(part.part, part.entries);
        if self.got.len() < self.parts as usize {
            if last {
                let why = format!(
                    "restore parts missing ({} of {} here): send it again",
                    self.got.len(),
                    self.parts
                );
                // Sent again, it comes whole from its first part: what is
                // kept here would make it whole before its last part, and
                // that last part would then ask for it again.
                *self = Staged::default();
                return Step::Refused(Error::Unavailable(why));
            }
            return Step::Kept;
        }
        let got = std::mem::take(&mut *self).got;
        Step::Whole(RestorePart {
            entries: got.into_values().flatten().collect(),
            ..head
        })
    }
}

/// The whole restore `r`: answered again from the record, fenced, refused
/// as stale or bad, or applied under the next seq (only a storage failure
/// is an error of the group).
pub(super) fn apply(
    group: &mut WriteGroup,
    epoch: u64,
    lineage: &Lineage,
    r: RestorePart,
) -> Result<Outcome> {
    let logged = |seq: u64, epoch: u64, rows: u64| SyncMessage {
        seq,
        epoch,
        request_id: r.request_id,
        entry: Entry::Restored { rows },
    };
    if let Some(rec) = group.answer(r.request_id) {
        let seq = rec.seq;
        let rows = match &rec.answer {
            Ok(WriteResult::Restored { rows }) => *rows,
            _ => 0,
        };
        return Ok(Outcome::Logged(
            logged(seq, lineage.owner(seq), rows),
            rec.into_reply(),
        ));
    }
    let what = || format!("restore {:x}", r.request_id);
    if let Some(refused) = super::apply::fenced(group, epoch, r.sent_ms, r.epoch, what) {
        return Ok(refused);
    }
    let seq = group.next_seq();
    match group.restore(seq, r.request_id, &r.entries) {
        Ok(result) => {
            let rows = match result {
                WriteResult::Restored { rows } => rows,
                _ => 0,
            };
            let reply = Ok(WriteReply { seq, result });
            Ok(Outcome::Logged(logged(seq, epoch, rows), reply))
        }
        Err(e @ Error::Storage(_)) => Err(e),
        // A backup that does not fit this schema changes nothing and takes
        // no seq: sent again, it is refused again.
        Err(e) => Ok(Outcome::Fenced(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(part: u32, parts: u32) -> RestorePart {
        RestorePart {
            request_id: 7,
            epoch: 1,
            sent_ms: 0,
            part,
            parts,
            entries: vec![(vec![b'd', part as u8], vec![part as u8])],
        }
    }

    fn whole(step: Step) -> Option<Entries> {
        match step {
            Step::Whole(r) => Some(r.entries),
            _ => None,
        }
    }

    /// A restore sent again after a failover: the last part of the first
    /// sending reached this master alone (the earlier ones went to the
    /// master that died) and was answered "send it again". The parts sent
    /// again are then whole with their own last part, not before it, and
    /// that last part is not answered "send it again" for a restore that
    /// was just applied.
    #[test]
    fn a_restore_sent_again_is_whole_with_its_last_part_only() {
        let mut staged = Staged::default();
        assert!(matches!(
            staged.add(part(2, 3)),
            Step::Refused(Error::Unavailable(_))
        ));
        assert!(matches!(staged.add(part(0, 3)), Step::Kept));
        assert!(
            matches!(staged.add(part(1, 3)), Step::Kept),
            "whole before its last part came"
        );
        let entries = whole(staged.add(part(2, 3))).expect("whole with its last part");
        assert_eq!(entries.len(), 3);
    }
}
