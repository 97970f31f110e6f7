//! Catch-ups: a master that still logs every write a replica missed
//! answers its snapshot request with just those writes, in parts
//! ([`crate::core::catchup`]). Each part is acknowledged as it comes (the
//! answers are consumed one at a time) and its writes are kept as a
//! sync's are: judged by the sender's lineage, admitted or dropped,
//! duplicates dropped. Once every part came, the writes are applied in
//! seq order with what queued after them, and the replica goes on exactly
//! as after a snapshot installed: it serves once the store reaches the
//! catch-up's end. A catch-up that cannot end (a write it lacks, dropped
//! by a newer lineage) is asked for again.

use std::collections::{BTreeMap, BTreeSet};

use super::snapshot::Snap;
use super::{Level, ReplicaCore, Token, FIRST_RETRY_MS, REFUSED_RETRY_MS};
use crate::model::wire::CatchUpPart;

/// The catch-up parts received for the request out, by the seq their
/// catch-up reaches (a request answered twice, by two masters, may bring
/// two).
#[derive(Debug, Default)]
pub(super) struct CatchUpParts {
    got: BTreeMap<u64, (u32, BTreeSet<u32>)>,
}

impl CatchUpParts {
    /// Counts `part`; true once every part of its catch-up came.
    fn add(&mut self, part: &CatchUpPart) -> bool {
        let (parts, got) = self
            .got
            .entry(part.through)
            .or_insert_with(|| (part.parts, BTreeSet::new()));
        if *parts != part.parts {
            // Split otherwise: count this split's parts from here.
            *parts = part.parts;
            got.clear();
        }
        got.insert(part.part);
        got.len() == *parts as usize
    }
}

impl ReplicaCore {
    /// A part of a catch-up answering `request` (the request out).
    pub(super) fn catch_up_part(&mut self, request: u64, token: Token, part: CatchUpPart) {
        self.ack(vec![token]);
        if let Err(e) = part.check() {
            let Some(have_seq) = self.asked_for(request) else {
                return;
            };
            self.log(Level::Warn, format!("{e}; asking again"));
            let at = self.now.saturating_add(REFUSED_RETRY_MS);
            return self.retry_at(at, have_seq, FIRST_RETRY_MS);
        }
        let whole = match &mut self.snapshot {
            Snap::Asked { catch_up, .. } => catch_up.add(&part),
            _ => false,
        };
        let through = part.through;
        // May find this replica diverged, and ask for a snapshot instead.
        self.caught_up_writes(part.batch);
        if whole && self.asked_for(request).is_some() {
            self.close_snapshot();
            self.snapshot = Snap::CatchingUp { through };
            let applied = self.applied;
            let msg = format!("catching up from seq {applied} to {through} from the master's log");
            self.log(Level::Info, msg);
        }
    }

    /// Ends a catch-up whose writes are all applied: the replica serves
    /// (as after a snapshot installed). One whose next write is not at
    /// hand (no run could start) is asked for again.
    pub(super) fn end_catch_up(&mut self) {
        let Snap::CatchingUp { through } = self.snapshot else {
            return;
        };
        let applied = self.applied;
        if applied >= through {
            self.snapshot = Snap::Idle;
            self.behind_since = None;
            self.confirming = false;
            self.ready = true;
            let msg = format!("caught up to seq {through} from the master's log");
            self.log(Level::Info, msg);
        } else if self.applying.is_none() && !self.closing {
            let msg = format!("catch-up to seq {through} stopped at {applied}; asking again");
            self.log(Level::Warn, msg);
            self.ask(applied, FIRST_RETRY_MS);
        }
    }
}
