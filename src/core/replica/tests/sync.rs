//! Sync writes: in sequence order, one run at a time, duplicates and
//! other clusters' or deposed masters' writes dropped.

use super::*;

#[test]
fn writes_apply_in_sequence_order_one_run_at_a_time() {
    let l = lineage(&[(1, 0)]);
    let mut r = Replica::caught_up(0, l.clone());
    let (later, fx) = r.sync(batch(&l, 1, 3..=4));
    assert_eq!(run(&fx), None, "a gap: seqs 1 and 2 first");
    let (first, fx) = r.sync(batch(&l, 1, 1..=2));
    assert_eq!(run(&fx), Some((1, 4)), "one run of both");
    let (next, fx) = r.sync(batch(&l, 1, 5..=5));
    assert_eq!(run(&fx), None, "one run at a time");
    let fx = r.applied(4);
    assert_eq!(acked(&fx), vec![first, later]);
    assert_eq!(run(&fx), Some((5, 5)));
    assert_eq!(acked(&r.applied(5)), vec![next]);
    assert_eq!(r.core.status(r.now).applied, 5);
}

#[test]
fn overlapping_batches_make_one_run_of_consecutive_writes() {
    let l = lineage(&[(1, 0)]);
    let mut r = Replica::caught_up(2, l.clone());
    // The first starts below what is applied; the second overlaps it.
    let (_, fx) = r.syncs(vec![batch(&l, 1, 1..=4), batch(&l, 1, 3..=6)]);
    let Some(Effect::Apply { writes, lineage }) =
        fx.iter().find(|e| matches!(e, Effect::Apply { .. }))
    else {
        panic!("no run in {fx:?}");
    };
    let seqs: Vec<u64> = writes.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, vec![3, 4, 5, 6]);
    assert_eq!(*lineage, l);
}

#[test]
fn duplicates_other_clusters_and_deposed_masters_writes_are_dropped() {
    let l = lineage(&[(1, 0), (2, 10)]);
    let mut r = Replica::caught_up(10, l.clone());
    let (dup, fx) = r.sync(batch(&l, 1, 9..=10));
    assert_eq!((acked(&fx), run(&fx)), (vec![dup], None));
    // Epoch 1 wrote nothing past 10 in this history.
    let (deposed, fx) = r.sync(batch(&lineage(&[(1, 0)]), 1, 11..=12));
    assert_eq!((acked(&fx), run(&fx)), (vec![deposed], None));
    assert!(logged(&fx, Level::Warn, "deposed master (1)"));
    let token = r.token();
    let item = Ok((
        Stamp {
            cluster: 9,
            epoch: 2,
        },
        batch(&l, 2, 11..=11),
    ));
    let fx = r.on(Input::Syncs(vec![Delivered { token, item }]));
    assert_eq!((acked(&fx), run(&fx)), (vec![token], None));
    assert!(logged(&fx, Level::Warn, "another cluster (1)"));
    // A batch admitted up to a write it refuses keeps only that prefix.
    let mixed = SyncItem::Writes(SyncBatch {
        lineage: l.clone(),
        writes: vec![write(11, 2), write(12, 1)],
    });
    assert_eq!(run(&r.sync(mixed).1), Some((11, 11)));
}

#[test]
fn a_longer_batch_from_the_same_seq_replaces_a_shorter_one() {
    let l = lineage(&[(1, 0)]);
    let mut r = Replica::caught_up(0, l.clone());
    let (shorter, _) = r.sync(batch(&l, 1, 3..=4));
    let (longer, fx) = r.sync(batch(&l, 1, 3..=6));
    assert_eq!(acked(&fx), vec![shorter]);
    // The shorter one again is a duplicate now.
    let (again, fx) = r.sync(batch(&l, 1, 3..=4));
    assert_eq!(acked(&fx), vec![again]);
    let (first, fx) = r.sync(batch(&l, 1, 1..=2));
    assert_eq!(run(&fx), Some((1, 6)));
    assert_eq!(acked(&r.applied(6)), vec![first, longer]);
}

#[test]
fn a_run_that_fails_to_apply_makes_it_resync() {
    let l = lineage(&[(1, 0)]);
    let mut r = Replica::caught_up(0, l.clone());
    let (token, _) = r.sync(batch(&l, 1, 1..=3));
    let fx = r.on(Input::Applied {
        seq: 1,
        error: Some("disk full".into()),
    });
    assert_eq!(acked(&fx), vec![token], "the snapshot holds them");
    assert_eq!(asked(&fx).map(|a| a.1), Some(u64::MAX));
    assert!(logged(&fx, Level::Error, "disk full"));
    assert_eq!(
        reads_switched(&fx),
        vec![&Effect::StopConsuming(Consumer::Reads)]
    );
    assert!(!r.ready());
    assert_eq!(r.core.status(r.now).applied, 1);
}

#[test]
fn a_gap_held_past_gap_unready_is_not_ready_and_past_gap_wait_takes_a_snapshot() {
    let l = lineage(&[(1, 0)]);
    let mut r = Replica::caught_up(0, l.clone());
    r.sync(batch(&l, 1, 3..=3));
    let fx = r.wait(TICK); // the gap clock starts
    assert_eq!(asked(&fx), None);
    r.wait(GAP_UNREADY_MS - 1);
    assert!(r.ready());
    r.wait(1);
    assert!(!r.ready(), "held at a gap for {GAP_UNREADY_MS} ms");
    let fx = r.wait(GAP_WAIT_MS - GAP_UNREADY_MS - 1);
    assert_eq!(asked(&fx), None);
    let fx = r.wait(1);
    assert_eq!(asked(&fx).map(|a| a.1), Some(0), "the state past seq 0");
    assert!(logged(&fx, Level::Warn, "no progress"));
    // Reads go on meanwhile: what it holds is a consistent prefix.
    assert!(reads_switched(&fx).is_empty());
    let (read, fx) = r.read(0);
    assert_eq!(served(&fx), vec![read]);
}

#[test]
fn reads_that_wait_for_a_seq_that_never_comes_take_a_snapshot() {
    let mut r = Replica::caught_up(0, lineage(&[(1, 0)]));
    r.read(4);
    r.wait(TICK); // the gap clock starts
                  // Each read gives up after READ_WAIT_MS, but another one waits.
    for _ in 0..2 {
        r.wait(1_000);
        r.read(4);
    }
    let fx = r.wait(GAP_WAIT_MS - 2_000 - 1);
    assert_eq!(asked(&fx), None);
    assert_eq!(asked(&r.wait(1)).map(|a| a.1), Some(0));
}

/// A slave cut off longer than its sync queue's idle expiry finds the
/// queue declared afresh, empty, when it subscribes again: the writes
/// published meanwhile are gone. It asks the master whether it is current
/// and stands for no history until the answer is in: here, a snapshot
/// holding what it missed.
#[test]
fn a_sync_queue_subscribed_again_is_checked_against_the_master() {
    let l = lineage(&[(1, 0)]);
    let mut r = Replica::caught_up(10, l.clone());
    let fx = r.on(Input::ConsumerEnded(Consumer::Sync));
    assert!(fx.contains(&Effect::Consume(Consumer::Sync)), "{fx:?}");
    let fx = r.on(Input::Consuming(Consumer::Sync));
    let (request, have) = asked(&fx).expect("asks whether it is current");
    assert_eq!(have, 10);
    assert!(!r.ready(), "stands in no election meanwhile");
    // Reads go on: what it holds is a consistent prefix.
    let (read, fx) = r.read(10);
    assert_eq!(served(&fx), vec![read]);
    // 11..=14 were published while the queue was gone.
    let (_, fx) = r.answer(request, stamp(1), snapshot_at(14));
    assert!(installs(&fx), "{fx:?}");
    r.on(Input::Installed {
        request,
        result: Ok((14, l.clone())),
    });
    assert!(r.ready());
    assert_eq!(r.core.status(r.now).applied, 14);
    // The writes after it apply as usual.
    let (_, fx) = r.sync(batch(&l, 1, 15..=15));
    assert_eq!(run(&fx), Some((15, 15)));
}

/// Told it is current, it is ready again at once.
#[test]
fn a_sync_queue_subscribed_again_and_current_is_ready_again() {
    let l = lineage(&[(1, 0)]);
    let mut r = Replica::caught_up(10, l.clone());
    r.on(Input::ConsumerEnded(Consumer::Sync));
    let fx = r.on(Input::Consuming(Consumer::Sync));
    let (request, _) = asked(&fx).expect("asks whether it is current");
    r.answer(request, stamp(1), Reply::Snapshot(Ok(None)));
    r.on(Input::Installed {
        request,
        result: Ok((10, l)),
    });
    assert!(r.ready());
}
