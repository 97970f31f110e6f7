//! Catch-ups: the writes a replica missed, from the master's log, applied
//! as syncs are, then served as after a snapshot; redelivered parts, a
//! deposed master's answer, a master gone between parts, an answer to an
//! earlier request.

use super::*;
use crate::model::wire::CatchUpPart;

/// A replica over a store at `applied`, started and bound, its first
/// snapshot request out.
fn asking(applied: u64, l: &Lineage) -> (Replica, u64) {
    let mut r = Replica::new(applied, l.clone());
    r.on(Input::Start);
    let fx = r.on(Input::Consuming(Consumer::Sync));
    let (request, have) = asked(&fx).expect("asked once bound");
    assert_eq!(have, applied);
    (r, request)
}

/// Part `part` of `parts` of a catch-up to `through` under `sender`.
fn part(
    sender: &Lineage,
    epoch: u64,
    seqs: std::ops::RangeInclusive<u64>,
    through: u64,
    (part, parts): (u32, u32),
) -> Reply {
    Reply::CatchUpPart(CatchUpPart {
        through,
        part,
        parts,
        batch: SyncBatch {
            lineage: sender.clone(),
            writes: seqs.map(|s| write(s, epoch)).collect(),
        },
    })
}

#[test]
fn a_restarted_replica_applies_the_writes_it_missed_then_what_queued_then_serves() {
    let l = lineage(&[(1, 0)]);
    let (mut r, request) = asking(5, &l);
    // Written after the request: queued on the sync queue meanwhile.
    let (queued, _) = r.sync(batch(&l, 1, 11..=12));
    let (t0, fx) = r.answer(request, stamp(1), part(&l, 1, 6..=8, 10, (0, 2)));
    assert_eq!(acked(&fx), vec![t0], "acknowledged as it comes");
    assert_eq!(run(&fx), None, "nothing applied before the whole answer");
    // Redelivered: changes nothing.
    let (t1, fx) = r.answer(request, stamp(1), part(&l, 1, 6..=8, 10, (0, 2)));
    assert_eq!((acked(&fx), run(&fx)), (vec![t1], None));
    let (t2, fx) = r.answer(request, stamp(1), part(&l, 1, 9..=10, 10, (1, 2)));
    assert_eq!(acked(&fx), vec![t2]);
    assert!(fx.contains(&Effect::CloseSnapshot { request }));
    assert_eq!(run(&fx), Some((6, 12)), "{fx:?}");
    assert!(!installs(&fx) && !r.ready());
    let fx = r.applied(12);
    assert_eq!(acked(&fx), vec![queued]);
    assert!(fx.contains(&Effect::Consume(Consumer::Reads)), "{fx:?}");
    assert!(logged(&fx, Level::Info, "caught up to seq 10"));
    r.on(Input::Consuming(Consumer::Reads));
    assert!(r.ready());
    let (read, fx) = r.read(12);
    assert_eq!(served(&fx), vec![read]);
}

#[test]
fn a_deposed_masters_catch_up_is_refused_and_asked_again_later() {
    let l = lineage(&[(1, 0), (2, 5)]);
    let (mut r, request) = asking(5, &l);
    let (token, fx) = r.answer(request, stamp(1), part(&l, 1, 6..=7, 7, (0, 1)));
    assert_eq!(acked(&fx), vec![token]);
    assert!(logged(&fx, Level::Warn, "refused"));
    assert_eq!(run(&fx), None);
    assert!(asked(&r.wait(REFUSED_RETRY_MS)).is_some());
    assert!(!r.ready());
}

#[test]
fn an_answer_to_an_earlier_request_is_dropped() {
    let l = lineage(&[(1, 0)]);
    let (mut r, first) = asking(5, &l);
    let (second, _) = asked(&r.on(Input::SnapshotLost { request: first })).unwrap();
    let (stray, fx) = r.answer(first, stamp(1), part(&l, 1, 6..=7, 7, (0, 1)));
    assert_eq!((acked(&fx), run(&fx)), (vec![stray], None));
    let fx = r.answer(second, stamp(1), part(&l, 1, 6..=9, 9, (0, 1))).1;
    assert_eq!(run(&fx), Some((6, 9)));
    r.applied(9);
    assert!(r.ready());
}

#[test]
fn a_master_gone_between_parts_is_answered_for_by_the_next() {
    let l = lineage(&[(1, 0)]);
    let (mut r, request) = asking(5, &l);
    r.answer(request, stamp(1), part(&l, 1, 6..=8, 10, (0, 2)));
    // The request went back to writeQ with the master; its successor
    // (epoch 2, base 10) answers it again, split otherwise and longer.
    let next = lineage(&[(1, 0), (2, 10)]);
    r.answer(request, stamp(2), part(&next, 1, 6..=10, 12, (0, 2)));
    let fx = r
        .answer(request, stamp(2), part(&next, 2, 11..=12, 12, (1, 2)))
        .1;
    assert_eq!(run(&fx), Some((6, 12)), "{fx:?}");
    r.applied(12);
    assert!(r.ready());
    assert_eq!(r.core.status(r.now).epoch, 2);
}

#[test]
fn a_catch_up_the_newer_history_disowns_is_asked_for_again() {
    // Epoch 2 began at 7: epoch 1's writes past 7 are not the history.
    let newer = lineage(&[(1, 0), (2, 7)]);
    let (mut r, request) = asking(5, &newer);
    let old = lineage(&[(1, 0)]);
    let fx = r
        .answer(request, stamp(2), part(&old, 1, 6..=9, 9, (0, 1)))
        .1;
    // 6..=7 are admitted; 8 is not: the catch-up cannot end.
    assert_eq!(run(&fx), Some((6, 7)), "{fx:?}");
    let fx = r.applied(7);
    let (_, have) = asked(&fx).expect("asked again");
    assert_eq!(have, 7);
    assert!(!r.ready());
}

#[test]
fn a_catch_up_that_disowns_an_applied_write_makes_the_replica_resync() {
    // This store holds 1..=6 of epoch 1; the master's epoch 2 began at 4.
    let (mut r, request) = asking(6, &lineage(&[(1, 0)]));
    let theirs = lineage(&[(1, 0), (2, 4)]);
    let fx = r
        .answer(request, stamp(2), part(&theirs, 2, 5..=8, 8, (0, 1)))
        .1;
    assert!(logged(&fx, Level::Error, "diverged"), "{fx:?}");
    assert_eq!(asked(&fx).map(|a| a.1), Some(u64::MAX));
    assert_eq!(run(&fx), None);
}

#[test]
fn a_bad_part_is_dropped_and_the_request_asked_again() {
    let l = lineage(&[(1, 0)]);
    let (mut r, request) = asking(5, &l);
    let (token, fx) = r.answer(request, stamp(1), part(&l, 1, 6..=9, 8, (0, 1)));
    assert_eq!((acked(&fx), run(&fx)), (vec![token], None));
    assert!(logged(&fx, Level::Warn, "past its end"));
    assert!(asked(&r.wait(REFUSED_RETRY_MS)).is_some());
}

#[test]
fn a_caught_up_replica_asking_whether_it_is_current_applies_a_catch_up_and_confirms() {
    let l = lineage(&[(1, 0)]);
    let mut r = Replica::caught_up(5, l.clone());
    let fx = r.on(Input::Rejoined);
    let (request, have) = asked(&fx).expect("asks whether it is current");
    assert_eq!(have, 5);
    assert!(!r.ready(), "not until the master answers");
    let fx = r.answer(request, stamp(1), part(&l, 1, 6..=7, 7, (0, 1))).1;
    assert_eq!(run(&fx), Some((6, 7)));
    assert!(!r.ready());
    r.applied(7);
    assert!(r.ready());
}
