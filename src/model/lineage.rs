//! A cluster's history of masters: which epoch wrote which sequence numbers.
//!
//! Every master begins its epoch after the last write it holds (its
//! *base*): epoch `e` with base `b` owns the seqs after `b`, until a later
//! epoch begins. A write `(seq, epoch)` belongs to the history only if the
//! history's owner of `seq` is that epoch; anything else was written by a
//! deposed master past the point where its successor took over, and must
//! never be applied. This is the check that makes "a message of an older
//! epoch is dropped" safe under redelivery: an older epoch's write that the
//! new master had adopted (at or below its base) is still admitted.
//!
//! Every sync message carries its sender's lineage. A replica that hears
//! of a newer epoch adopts the sender's lineage; if the two disagree on the
//! owner of any seq it has applied, it holds writes the new history does
//! not (a deposed master's): it has diverged and must take a snapshot.
//!
//! # Bounded
//!
//! A lineage keeps the newest [`KEPT_EPOCHS`] epochs only (one entry per
//! election would otherwise grow without end, in the store and in every
//! sync batch). The older entries are replaced by one marker, `(0, 0)`,
//! first: the history is *truncated*, and the owners of the seqs up to its
//! *floor* (the lowest base kept) are forgotten. The rule then:
//! - a lineage is only judged above the floor (the higher floor of the two
//!   compared): the owners there are checked as before. What lies below is
//!   taken as shared, which is sound because a replica only ever holds a
//!   lineage after judging its writes against it (or beginning it as
//!   master): two lineages that give the seq after the floor the same
//!   (kept) owner descend from the same judged history below it;
//! - a replica whose applied seq is at or below that floor cannot be judged
//!   at all (it missed [`KEPT_EPOCHS`] elections): it is taken as diverged
//!   and takes a snapshot;
//! - no write at or below the floor is admitted (its owner is unknown).

use bincode::{Decode, Encode};

/// How many epochs a lineage keeps (see the module docs): 32 elections
/// is far more than a replica can miss and still be worth catching up
/// write by write, and 32 pairs are a few hundred bytes per sync batch.
pub const KEPT_EPOCHS: usize = 32;

/// The entry that stands, first, for the epochs a truncated lineage
/// forgot. No master begins epoch 0.
const FORGOTTEN: (u64, u64) = (0, 0);

/// The epochs a history went through, oldest first, each with its base.
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode)]
pub struct Lineage {
    epochs: Vec<(u64, u64)>,
}

/// What hearing from a sender with another lineage came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Follow {
    /// The sender's newest epoch is not newer: this lineage stands.
    Kept,
    /// Adopted the sender's newer lineage; every applied write is in it.
    Adopted,
    /// Adopted it, but some applied write is not in it: resync.
    Diverged,
}

impl Lineage {
    /// The newest epoch (0 for an empty history).
    pub fn epoch(&self) -> u64 {
        self.epochs.last().map_or(0, |e| e.0)
    }

    /// The base of `epoch`, if known.
    pub fn base_of(&self, epoch: u64) -> Option<u64> {
        self.epochs.iter().find(|e| e.0 == epoch).map(|e| e.1)
    }

    /// The base of the newest epoch (0 for an empty history).
    pub fn base(&self) -> u64 {
        self.epochs.last().map_or(0, |e| e.1)
    }

    /// The epoch that wrote `seq` in this history (0: none known).
    pub fn owner(&self, seq: u64) -> u64 {
        self.epochs
            .iter()
            .rev()
            .find(|&&(_, base)| base < seq)
            .map_or(0, |e| e.0)
    }

    /// Whether a write of `epoch` at `seq` belongs to this history.
    pub fn admits(&self, epoch: u64, seq: u64) -> bool {
        epoch != 0 && self.owner(seq) == epoch
    }

    /// Whether older epochs were forgotten (see the module docs).
    pub fn truncated(&self) -> bool {
        self.epochs.first() == Some(&FORGOTTEN)
    }

    /// The seqs up to this one have no known owner: 0 unless truncated,
    /// else the lowest base kept.
    pub fn floor(&self) -> u64 {
        if !self.truncated() {
            return 0;
        }
        self.kept().iter().map(|e| e.1).min().unwrap_or(0)
    }

    /// The epochs kept, without the marker of the forgotten ones.
    fn kept(&self) -> &[(u64, u64)] {
        let skip = usize::from(self.truncated());
        &self.epochs[skip..]
    }

    /// Forgets all but the newest [`KEPT_EPOCHS`] epochs.
    fn trim(&mut self) {
        let kept = self.kept().len();
        if kept <= KEPT_EPOCHS {
            return;
        }
        let keep = self.epochs.split_off(self.epochs.len() - KEPT_EPOCHS);
        self.epochs = std::iter::once(FORGOTTEN).chain(keep).collect();
    }

    /// How many entries it holds (the marker included).
    pub fn len(&self) -> usize {
        self.epochs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.epochs.is_empty()
    }

    /// A master begins `epoch` after the writes up to `applied`. Refused
    /// (false) when the epoch is older than the newest; beginning the
    /// newest again (a restart) keeps its base.
    pub fn begin(&mut self, epoch: u64, applied: u64) -> bool {
        match epoch.cmp(&self.epoch()) {
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Equal if !self.epochs.is_empty() => true,
            _ => {
                self.epochs.push((epoch, applied));
                self.trim();
                true
            }
        }
    }

    /// Whether both lineages give every seq up to `through` the same
    /// owner. Owners only change just past a base, so checking seq 1 and
    /// the seq after each base of either is enough. Above the higher floor
    /// only, when either is truncated; and never when `through` is at or
    /// below it: what lies there cannot be judged (see the module docs).
    pub fn agrees(&self, other: &Lineage, through: u64) -> bool {
        let floor = self.floor().max(other.floor());
        if through > 0 && through <= floor {
            return false;
        }
        let after_bases = self
            .epochs
            .iter()
            .chain(&other.epochs)
            .map(|&(_, base)| base.saturating_add(1));
        std::iter::once(1)
            .chain(after_bases)
            .chain(std::iter::once(floor.saturating_add(1)))
            .filter(|&seq| seq > floor && seq <= through)
            .all(|seq| self.owner(seq) == other.owner(seq))
    }

    /// A replica that has applied up to `applied` hears from a sender
    /// following `sender`: a newer lineage is adopted.
    pub fn follow(&mut self, sender: &Lineage, applied: u64) -> Follow {
        if sender.epoch() <= self.epoch() {
            return Follow::Kept;
        }
        let agrees = self.agrees(sender, applied);
        *self = sender.clone();
        self.trim();
        if agrees {
            Follow::Adopted
        } else {
            Follow::Diverged
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lineage(epochs: &[(u64, u64)]) -> Lineage {
        Lineage {
            epochs: epochs.to_vec(),
        }
    }

    #[test]
    fn owners_follow_the_bases() {
        let l = lineage(&[(1, 0), (2, 100), (4, 150)]);
        for (seq, owner) in [(1, 1), (100, 1), (101, 2), (150, 2), (151, 4), (9999, 4)] {
            assert_eq!(l.owner(seq), owner, "seq {seq}");
        }
        assert_eq!(Lineage::default().owner(5), 0);
        // A later epoch that began lower supersedes what it did not have.
        let lower = lineage(&[(1, 0), (2, 100), (3, 50)]);
        assert_eq!(lower.owner(60), 3);
        assert_eq!(lower.owner(120), 3);
        assert_eq!(lower.owner(50), 1);
    }

    #[test]
    fn admits_only_the_owner() {
        let l = lineage(&[(1, 0), (2, 100)]);
        let cases = [
            (1, 60, true),   // adopted by epoch 2: still epoch 1's
            (1, 101, false), // a deposed master's write past the base
            (2, 101, true),
            (2, 99, false), // epoch 2 never wrote below its base
            (3, 101, false),
            (0, 1, false),
        ];
        for (epoch, seq, want) in cases {
            assert_eq!(l.admits(epoch, seq), want, "epoch {epoch} seq {seq}");
        }
        // An epoch this history passed over owns nothing.
        let skipped = lineage(&[(1, 0), (3, 50)]);
        assert!(!skipped.admits(2, 40));
        assert!(!skipped.admits(2, 60));
    }

    #[test]
    fn masters_begin_epochs_that_never_go_down() {
        let mut l = Lineage::default();
        assert!(l.begin(1, 0));
        assert!(l.begin(1, 30)); // a restart keeps the base
        assert_eq!(l.base_of(1), Some(0));
        assert!(l.begin(3, 40));
        assert_eq!((l.epoch(), l.base()), (3, 40));
        assert!(!l.begin(2, 50));
        assert_eq!(l.epoch(), 3);
    }

    #[test]
    fn replicas_adopt_newer_lineages_and_detect_divergence() {
        type Epochs = &'static [(u64, u64)];
        let one: Epochs = &[(1, 0)];
        let table: &[(Epochs, Epochs, u64, Follow)] = &[
            (one, one, 70, Follow::Kept),
            (&[(1, 0), (2, 100)], one, 70, Follow::Kept),
            (one, &[(1, 0), (2, 100)], 70, Follow::Adopted),
            (one, &[(1, 0), (2, 100)], 100, Follow::Adopted),
            // Applied 101 under epoch 1: a deposed master's write.
            (one, &[(1, 0), (2, 100)], 101, Follow::Diverged),
            // The replica followed epoch 2 from 100; epoch 3 never heard of
            // it and kept epoch 1's writes up to 120.
            (
                &[(1, 0), (2, 100)],
                &[(1, 0), (3, 120)],
                110,
                Follow::Diverged,
            ),
            (
                &[(1, 0), (2, 100)],
                &[(1, 0), (3, 120)],
                100,
                Follow::Adopted,
            ),
            (
                &[(1, 0), (2, 100)],
                &[(1, 0), (2, 100), (3, 150)],
                150,
                Follow::Adopted,
            ),
            (&[], one, 0, Follow::Adopted),
            (&[], &[(4, 9)], 9, Follow::Adopted),
        ];
        for (mine, sender, applied, want) in table {
            let mut l = lineage(mine);
            let got = l.follow(&lineage(sender), *applied);
            assert_eq!(got, *want, "{mine:?} hears {sender:?} at {applied}");
            if got != Follow::Kept {
                assert_eq!(l, lineage(sender));
            }
        }
    }

    /// A history of `elections` epochs, each begun 10 seqs after the last.
    fn elected(elections: u64) -> Lineage {
        let mut l = Lineage::default();
        for e in 1..=elections {
            assert!(l.begin(e, (e - 1) * 10));
        }
        l
    }

    #[test]
    fn a_lineage_keeps_the_newest_epochs_only() {
        let short = elected(KEPT_EPOCHS as u64);
        assert!(!short.truncated());
        assert_eq!(short.floor(), 0);
        let l = elected(1000);
        assert!(l.truncated());
        assert_eq!(l.len(), KEPT_EPOCHS + 1);
        assert_eq!(l.epoch(), 1000);
        // The oldest kept: epoch 969, begun after seq 9680.
        let oldest = 1000 - KEPT_EPOCHS as u64 + 1;
        assert_eq!(l.floor(), (oldest - 1) * 10);
        assert_eq!(l.owner(l.floor() + 1), oldest);
        assert_eq!(l.owner(l.floor()), 0);
        assert!(!l.admits(oldest - 1, l.floor()));
        assert!(!l.admits(0, 1));
        assert!(l.admits(oldest, l.floor() + 1));
        // Stays bounded when followed, and when begun again.
        let mut follower = elected(3);
        assert_eq!(follower.follow(&elected(2000), 20), Follow::Diverged);
        assert_eq!(follower.len(), KEPT_EPOCHS + 1);
        let mut long = l.clone();
        long.begin(1001, 10_000);
        assert_eq!(long.len(), KEPT_EPOCHS + 1);
    }

    #[test]
    fn a_truncated_lineage_is_judged_above_its_floor() {
        let sender = elected(100); // floor 680
        let floor = sender.floor();
        // A replica that followed epoch 90 (begun after 890), at 895:
        // above the floor, in the history.
        let mut r = elected(90);
        assert_eq!(r.follow(&sender, 895), Follow::Adopted);
        // The same lineage, truncated to where it was then, too.
        let mut r = elected(90);
        assert!(r.truncated());
        assert_eq!(r.follow(&sender, 899), Follow::Adopted);
        // Applied past epoch 90's successor's base under epoch 90: a fork,
        // seen above the floor.
        let mut r = elected(90);
        assert_eq!(r.follow(&sender, 901), Follow::Diverged);
        // At or below the floor nothing can be judged: a snapshot.
        let mut r = elected(60);
        assert_eq!(r.follow(&sender, floor), Follow::Diverged);
        let mut r = elected(60);
        assert_eq!(r.follow(&sender, floor - 100), Follow::Diverged);
        // Nothing applied: nothing to judge.
        let mut r = Lineage::default();
        assert_eq!(r.follow(&sender, 0), Follow::Adopted);
    }
}
