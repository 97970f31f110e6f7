//! Catch-up from the master's log: the recent writes a master keeps, and
//! what it answers a replica that asks for the state past its own seq.
//!
//! A master keeps the sync messages it logged, in seq order, bounded by
//! count and bytes ([`Limits`]); a new master starts it empty at its own
//! first seq. A replica asks with the seq it holds and the epoch that
//! wrote it ([`crate::model::wire::MasterRequest::Snapshot`]). Its history
//! is a prefix of the master's when the master's lineage gives that seq
//! the same owner (one master per epoch, and a master holds everything
//! below the writes it makes: the rule the "current" answer has always
//! used). Then:
//! - at the master's seq: "current", no data;
//! - behind it, every missing write still in the log: just those writes,
//!   in parts ([`CatchUpPart`]), which the replica applies like syncs;
//! - otherwise (another history, a lineage truncated below the seq, a gap
//!   the log no longer covers): the whole store, as a snapshot.
//!
//! Either data answer is sent only once the syncs up to its last seq are
//! confirmed, as a snapshot always was (a deposed master's answer would
//! otherwise hand a replica writes the history lacks).

use std::collections::VecDeque;

use crate::model::wire::{self, chunk_parts, CatchUpPart, Reply, Snapshot, SyncBatch, SyncMessage};
use crate::model::Lineage;

/// How much a log keeps: the newest writes within both bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub writes: usize,
    pub bytes: usize,
}

/// The master's bounds: 100,000 writes (ten times a sync queue's default
/// cap, so a slave whose queue overflowed still catches up from the log)
/// or 64 MiB of encoded writes, whichever is reached first.
pub const LIMITS: Limits = Limits {
    writes: 100_000,
    bytes: 64 << 20,
};

/// The newest logged writes, consecutive, each with its encoded size.
#[derive(Clone, Debug)]
pub struct SyncLog {
    /// The seq of the first write kept (or of the next, when empty).
    first: u64,
    writes: VecDeque<(SyncMessage, usize)>,
    bytes: usize,
    limits: Limits,
}

impl SyncLog {
    /// An empty log whose first write will be `first`.
    pub fn new(first: u64, limits: Limits) -> Self {
        SyncLog {
            first,
            writes: VecDeque::new(),
            bytes: 0,
            limits,
        }
    }

    /// The seq the next write logged must have.
    pub fn next(&self) -> u64 {
        self.first.saturating_add(self.writes.len() as u64)
    }

    /// The seq of the oldest write kept (the next, when empty).
    pub fn first(&self) -> u64 {
        self.first
    }

    pub fn len(&self) -> usize {
        self.writes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// Encoded bytes of the writes kept.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Logs `m`. A write below the next seq is one logged before (answered
    /// again from the record) and changes nothing; one past it means the
    /// writes between never reached the log (a group that failed after
    /// its commit): the log starts again at `m`, so what it holds stays
    /// consecutive.
    pub fn push(&mut self, m: SyncMessage) {
        let next = self.next();
        if m.seq < next {
            return;
        }
        if m.seq > next {
            self.writes.clear();
            self.bytes = 0;
            self.first = m.seq;
        }
        let size = wire::encoded_len(&m);
        self.bytes += size;
        self.writes.push_back((m, size));
        while self.writes.len() > self.limits.writes || self.bytes > self.limits.bytes {
            let Some((_, size)) = self.writes.pop_front() else {
                break;
            };
            self.bytes -= size;
            self.first += 1;
        }
    }

    /// Whether every seq from `from` through `through` is kept.
    pub fn covers(&self, from: u64, through: u64) -> bool {
        from >= self.first && through < self.next() && from <= through
    }

    /// The writes from `from` through `through` (those kept), each with
    /// its size.
    fn range(&self, from: u64, through: u64) -> impl Iterator<Item = &(SyncMessage, usize)> {
        let skip = usize::try_from(from.saturating_sub(self.first)).unwrap_or(usize::MAX);
        let take = usize::try_from(
            through
                .saturating_add(1)
                .saturating_sub(from.max(self.first)),
        )
        .unwrap_or(usize::MAX);
        self.writes.iter().skip(skip).take(take)
    }
}

/// What a request for the state past `have_seq` is answered with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The asker holds everything the master does.
    Current,
    /// The writes from `from` through `through`, from the log.
    CatchUp { from: u64, through: u64 },
    /// The whole store.
    Snapshot,
}

/// The longest history a blank replica (`have_seq` 0) is caught up with
/// from the log; past it (in writes or bytes) it is sent a snapshot.
pub const BLANK_CATCH_UP_MAX: Limits = Limits {
    writes: 1_024,
    bytes: 256 << 10,
};

/// The answer to a replica holding up to `have_seq`, written by
/// `have_epoch`, from a master at `applied` of `lineage` with `log`.
pub fn decide(
    have_seq: u64,
    have_epoch: u64,
    applied: u64,
    lineage: &Lineage,
    log: &SyncLog,
) -> Answer {
    let same_owner = lineage.owner(have_seq) == have_epoch;
    if have_seq == applied && same_owner {
        return Answer::Current;
    }
    // Owner 0 past seq 0 is a seq below a truncated lineage's floor: its
    // writer is unknown on both sides, so nothing says the histories agree.
    let known = have_seq == 0 || have_epoch != 0;
    let from = have_seq.saturating_add(1);
    // A blank replica takes a long history faster as a snapshot: it
    // serves one from memory at once (`Store::install_early`), where each
    // write replayed costs it its own effects on disk. (Its history, when
    // covered, is the whole log.)
    let short = have_seq > 0
        || (applied <= BLANK_CATCH_UP_MAX.writes as u64 && log.bytes() <= BLANK_CATCH_UP_MAX.bytes);
    if have_seq < applied && same_owner && known && short && log.covers(from, applied) {
        return Answer::CatchUp {
            from,
            through: applied,
        };
    }
    Answer::Snapshot
}

/// The writes from `from` through `through` as catch-up parts (split as a
/// snapshot is: [`chunk_parts`]), each with `lineage`. Empty unless the log
/// covers them.
pub fn parts(log: &SyncLog, lineage: &Lineage, from: u64, through: u64) -> Vec<CatchUpPart> {
    if !log.covers(from, through) {
        return Vec::new();
    }
    let chunks = chunk_parts(log.range(from, through).map(|(m, size)| (m.clone(), *size)));
    let parts = u32::try_from(chunks.len()).unwrap_or(u32::MAX);
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, writes)| CatchUpPart {
            through,
            part: u32::try_from(i).unwrap_or(u32::MAX),
            parts,
            batch: SyncBatch {
                lineage: lineage.clone(),
                writes,
            },
        })
        .collect()
}

/// What the master sends for one request, once it may.
#[derive(Clone, Debug, PartialEq)]
pub enum Served {
    Current,
    Snapshot(Snapshot),
    CatchUp(Vec<CatchUpPart>),
}

impl Served {
    /// The seq whose sync (and every earlier one's) must be confirmed
    /// before it is sent, if any.
    pub fn needs(&self) -> Option<u64> {
        match self {
            Served::Current => None,
            Served::Snapshot(s) => Some(s.seq),
            Served::CatchUp(parts) => parts.first().map(|p| p.through),
        }
    }

    /// The replies it travels in, in order.
    pub fn into_replies(self) -> Vec<Reply> {
        match self {
            Served::Current => vec![Reply::Snapshot(Ok(None))],
            Served::Snapshot(s) => s
                .into_parts()
                .into_iter()
                .map(Reply::SnapshotPart)
                .collect(),
            Served::CatchUp(parts) => parts.into_iter().map(Reply::CatchUpPart).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::wire::{Entry, SNAPSHOT_PART_ENTRIES};
    use crate::model::WriteOp;

    fn m(seq: u64, epoch: u64) -> SyncMessage {
        SyncMessage {
            seq,
            epoch,
            request_id: u128::from(seq),
            entry: Entry::Write(WriteOp::Clear { table: None }),
        }
    }

    fn log_of(first: u64, last: u64, epoch: u64, limits: Limits) -> SyncLog {
        let mut log = SyncLog::new(first, limits);
        for seq in first..=last {
            log.push(m(seq, epoch));
        }
        log
    }

    /// Epoch 1 wrote 1..=10, epoch 3 (base 10) writes on.
    fn lineage() -> Lineage {
        let mut l = Lineage::default();
        l.begin(1, 0);
        l.begin(3, 10);
        l
    }

    const BIG: Limits = Limits {
        writes: 1000,
        bytes: 1 << 20,
    };

    #[test]
    fn a_log_keeps_the_newest_writes_within_both_bounds() {
        let log = log_of(
            1,
            50,
            1,
            Limits {
                writes: 10,
                bytes: 1 << 20,
            },
        );
        assert_eq!((log.first(), log.next(), log.len()), (41, 51, 10));
        assert!(log.covers(41, 50) && !log.covers(40, 50) && !log.covers(41, 51));
        let size = wire::encoded_len(&m(1, 1));
        let log = log_of(
            1,
            50,
            1,
            Limits {
                writes: 1000,
                bytes: size * 5,
            },
        );
        assert_eq!((log.first(), log.len(), log.bytes()), (46, 5, size * 5));
    }

    #[test]
    fn a_log_ignores_writes_logged_before_and_restarts_past_a_hole() {
        let mut log = log_of(5, 9, 1, BIG);
        log.push(m(7, 1));
        assert_eq!((log.first(), log.next()), (5, 10));
        log.push(m(12, 1));
        assert_eq!((log.first(), log.next(), log.len()), (12, 13, 1));
        assert!(!log.covers(10, 12));
    }

    #[test]
    fn the_answer_follows_the_history_and_what_the_log_covers() {
        let l = lineage();
        let log = log_of(11, 30, 3, BIG);
        let table = [
            // (have_seq, have_epoch, answer)
            (30, 3, Answer::Current),
            (
                20,
                3,
                Answer::CatchUp {
                    from: 21,
                    through: 30,
                },
            ),
            (
                10,
                1,
                Answer::CatchUp {
                    from: 11,
                    through: 30,
                },
            ),
            // Seq 10 was epoch 1's: a replica that says epoch 2 wrote it
            // holds another history.
            (10, 2, Answer::Snapshot),
            (20, 2, Answer::Snapshot),
            (30, 2, Answer::Snapshot),
            // Before the log's first write.
            (9, 1, Answer::Snapshot),
            (0, 0, Answer::Snapshot),
            // Ahead of the master (a resync asks past everything).
            (31, 3, Answer::Snapshot),
            (u64::MAX, 3, Answer::Snapshot),
        ];
        for (have_seq, have_epoch, want) in table {
            let got = decide(have_seq, have_epoch, 30, &l, &log);
            assert_eq!(got, want, "have {have_seq} of epoch {have_epoch}");
        }
        // A new cluster's first replica, every write in the log.
        let mut one = Lineage::default();
        one.begin(1, 0);
        let log = log_of(1, 5, 1, BIG);
        let want = Answer::CatchUp {
            from: 1,
            through: 5,
        };
        assert_eq!(decide(0, 0, 5, &one, &log), want);
        // A log that lags the store (a failed group) covers nothing past it.
        let log = log_of(1, 4, 1, BIG);
        assert_eq!(decide(2, 1, 5, &one, &log), Answer::Snapshot);
    }

    #[test]
    fn a_blank_replica_takes_a_long_history_as_a_snapshot() {
        let mut one = Lineage::default();
        one.begin(1, 0);
        let n = BLANK_CATCH_UP_MAX.writes as u64 + 1;
        let limits = Limits {
            writes: 10 * n as usize,
            bytes: 1 << 30,
        };
        let log = log_of(1, n, 1, limits);
        assert!(log.covers(1, n));
        assert_eq!(decide(0, 0, n, &one, &log), Answer::Snapshot);
        let want = Answer::CatchUp {
            from: 1,
            through: n - 1,
        };
        assert_eq!(
            decide(0, 0, n - 1, &one, &log_of(1, n - 1, 1, limits)),
            want
        );
        // A replica that holds some of it is caught up, however long.
        let want = Answer::CatchUp {
            from: 2,
            through: n,
        };
        assert_eq!(decide(1, 1, n, &one, &log), want);
        // Few writes, but large ones (batches of many rows).
        let mut log = SyncLog::new(1, limits);
        let big = WriteOp::Batch {
            ops: vec![WriteOp::Clear { table: None }; 4_000],
        };
        for seq in 1..=100 {
            log.push(SyncMessage {
                entry: Entry::Write(big.clone()),
                ..m(seq, 1)
            });
        }
        assert!(log.covers(1, 100) && log.bytes() > BLANK_CATCH_UP_MAX.bytes);
        assert_eq!(decide(0, 0, 100, &one, &log), Answer::Snapshot);
    }

    #[test]
    fn seqs_below_a_truncated_lineage_are_never_caught_up() {
        let mut l = Lineage::default();
        for e in 1..=40 {
            l.begin(e, e * 10);
        }
        assert!(l.truncated());
        let floor = l.floor();
        let log = log_of(1, 500, 40, BIG);
        assert_eq!(l.owner(floor), 0);
        assert_eq!(decide(floor, 0, 500, &l, &log), Answer::Snapshot);
        let above = floor + 1;
        let want = Answer::CatchUp {
            from: above + 1,
            through: 500,
        };
        assert_eq!(decide(above, l.owner(above), 500, &l, &log), want);
    }

    #[test]
    fn parts_hold_every_write_once_in_order_within_their_bounds() {
        let n = SNAPSHOT_PART_ENTRIES as u64 * 2 + 7;
        let log = log_of(
            1,
            n,
            1,
            Limits {
                writes: 1 << 20,
                bytes: 1 << 30,
            },
        );
        let l = lineage();
        let parts = parts(&log, &l, 3, n);
        assert_eq!(parts.len(), 3);
        let mut seqs = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            p.check().unwrap();
            assert_eq!((p.part, p.parts, p.through), (i as u32, 3, n));
            assert_eq!(p.batch.lineage, l);
            assert!(p.batch.writes.len() <= SNAPSHOT_PART_ENTRIES);
            seqs.extend(p.batch.writes.iter().map(|m| m.seq));
        }
        assert_eq!(seqs, (3..=n).collect::<Vec<_>>());
        assert!(super::parts(&log, &l, 0, n).is_empty(), "seq 0 is not kept");
        let stamp = wire::Stamp::default();
        let again =
            wire::decode::<Reply>(&wire::encode(stamp, &Reply::CatchUpPart(parts[1].clone())));
        assert_eq!(again.unwrap().1, Reply::CatchUpPart(parts[1].clone()));
        let served = Served::CatchUp(parts);
        assert_eq!(served.needs(), Some(n));
        assert_eq!(served.into_replies().len(), 3);
    }

    #[test]
    fn bad_parts_are_refused() {
        let good = parts(&log_of(1, 3, 1, BIG), &lineage(), 1, 3).remove(0);
        good.check().unwrap();
        let mut out_of_count = good.clone();
        out_of_count.part = 1;
        let mut gap = good.clone();
        gap.batch.writes.remove(1);
        let mut empty = good.clone();
        empty.batch.writes.clear();
        let mut past = good.clone();
        past.through = 2;
        for bad in [out_of_count, gap, empty, past] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
    }
}
