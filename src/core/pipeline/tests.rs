use super::*;

#[test]
fn the_prefix_grows_only_without_gaps() {
    let mut c = Confirmed::starting_at(10);
    assert_eq!(c.confirm(13, 15), 10);
    assert_eq!(c.confirm(20, 20), 10);
    assert_eq!(c.confirm(5, 9), 10, "below the prefix: nothing changes");
    assert_eq!(c.confirm(11, 12), 15);
    assert_eq!(c.confirm(16, 19), 20);
    assert_eq!(c.confirm(18, 25), 25, "overlapping runs merge");
    assert_eq!(c.through(), 25);
    // The same run twice, and a run inside another.
    assert_eq!(c.confirm(30, 40), 25);
    assert_eq!(c.confirm(30, 35), 25);
    assert_eq!(c.confirm(26, 29), 40);
}

#[test]
fn a_group_is_answered_once_its_runs_are_confirmed() {
    let mut p = Pipeline::new(0);
    let (g, fx) = p.applied(0, true, &[(1, 3), (5, 5)], 0);
    assert_eq!(
        fx,
        vec![
            Effect::Publish { group: g, run: 0 },
            Effect::Publish { group: g, run: 1 }
        ]
    );
    assert!(p.published(1, true, g, 1, true).is_empty());
    // Seq 4 belongs to another group (a retry answered from the record):
    // this one waits for it.
    assert!(p.published(2, true, g, 0, true).is_empty());
    let (h, fx) = p.applied(3, true, &[(4, 4)], 0);
    assert_eq!(fx, vec![Effect::Publish { group: h, run: 0 }]);
    let fx = p.published(4, true, h, 0, true);
    assert_eq!(fx, vec![Effect::Answer(g), Effect::Answer(h)]);
    assert_eq!(p.synced(), 5);
    assert_eq!(p.in_flight(), 0);
}

#[test]
fn no_answer_overtakes_an_earlier_sync() {
    let mut p = Pipeline::new(0);
    let (first, _) = p.applied(0, true, &[(1, 2)], 0);
    let (second, _) = p.applied(1, true, &[(3, 4)], 0);
    // The later group's sync is confirmed first: it is not answered.
    assert!(p.published(2, true, second, 0, true).is_empty());
    // The earlier one's publish fails: its group sends it again after a
    // wait, and the later group waits for it.
    assert!(p.published(3, true, first, 0, false).is_empty());
    let again = 3 + RETRY.first;
    assert!(p.tick(again - 1, true).is_empty());
    assert_eq!(
        p.tick(again, true),
        vec![Effect::Publish {
            group: first,
            run: 0
        }]
    );
    // Failing again, it waits twice as long.
    assert!(p.published(again, true, first, 0, false).is_empty());
    assert!(p.tick(again + 2 * RETRY.first - 1, true).is_empty());
    assert_eq!(p.tick(again + 2 * RETRY.first, true).len(), 1);
    assert_eq!(
        p.published(again + 50, true, first, 0, true),
        vec![Effect::Answer(first), Effect::Answer(second)]
    );
}

#[test]
fn a_group_past_a_gap_nobody_fills_goes_back_in_time() {
    // Seq 1 was applied by a group of an earlier master of this epoch
    // (answered from the record here); nothing of this pipeline sends it.
    let mut p = Pipeline::new(0);
    let (g, _) = p.applied(0, true, &[(2, 2)], 0);
    assert!(p.published(1, true, g, 0, true).is_empty());
    assert!(p.tick(PREFIX_WAIT_MS, true).is_empty());
    assert_eq!(p.tick(1 + PREFIX_WAIT_MS, true), vec![Effect::Requeue(g)]);
}

#[test]
fn without_the_lease_a_failed_publish_is_not_sent_again() {
    let mut p = Pipeline::new(0);
    let (a, _) = p.applied(0, true, &[(1, 1)], 0);
    let (b, _) = p.applied(0, true, &[(2, 2)], 0);
    assert_eq!(p.published(1, false, a, 0, false), vec![Effect::Requeue(a)]);
    assert_eq!(p.tick(2, false), vec![Effect::Requeue(b)]);
    assert_eq!(p.in_flight(), 0);
}

#[test]
fn a_snapshot_or_head_waits_for_the_writes_before_it() {
    let mut p = Pipeline::new(10);
    let (w, _) = p.applied(0, true, &[(11, 12)], 0);
    // A group with no write of its own, whose snapshot is at seq 12.
    let (s, fx) = p.applied(1, true, &[], 12);
    assert!(fx.is_empty());
    let fx = p.published(2, true, w, 0, true);
    assert_eq!(fx, vec![Effect::Answer(w), Effect::Answer(s)]);
    // One at what is already confirmed is answered at once.
    let (h, fx) = p.applied(3, true, &[], 12);
    assert_eq!(fx, vec![Effect::Answer(h)]);
}

#[test]
fn without_a_lease_nothing_is_published_or_answered() {
    let mut p = Pipeline::new(0);
    let (g, fx) = p.applied(0, false, &[(1, 1)], 0);
    assert_eq!(fx, vec![Effect::Requeue(g)]);
    assert_eq!(p.in_flight(), 0);
    // The lease runs out between the publish and its confirm.
    let (g, _) = p.applied(1, true, &[(1, 1)], 0);
    assert_eq!(p.published(2, false, g, 0, true), vec![Effect::Requeue(g)]);
}

/// A head promises every write acknowledged so far: a master whose lease
/// ran out (paused, deposed meanwhile) does not answer one, however its
/// group stands, and it goes back to `writeQ` for whoever leads.
#[test]
fn a_head_is_answered_only_under_the_lease() {
    let mut p = Pipeline::new(5);
    // At what is confirmed: answered with the lease, not without.
    let (h, fx) = p.applied(0, false, &[], 5);
    assert_eq!(fx, vec![Effect::Requeue(h)]);
    // Waiting for an earlier write's sync, the lease runs out meanwhile.
    let (w, _) = p.applied(1, true, &[(6, 6)], 0);
    let (h, fx) = p.applied(2, true, &[], 6);
    assert!(fx.is_empty());
    assert_eq!(
        p.published(3, false, w, 0, true),
        vec![Effect::Requeue(w), Effect::Requeue(h)]
    );
    // Or the master's tick finds it run out first.
    let (w, _) = p.applied(4, true, &[(7, 7)], 0);
    let (h, _) = p.applied(5, true, &[], 7);
    assert_eq!(
        p.tick(6, false),
        vec![Effect::Requeue(w), Effect::Requeue(h)]
    );
}

#[test]
fn a_stop_requeues_every_group_and_late_confirms_are_ignored() {
    let mut p = Pipeline::new(0);
    let (a, _) = p.applied(0, true, &[(1, 1)], 0);
    let (b, _) = p.applied(0, true, &[(2, 2)], 0);
    assert_eq!(p.stop(), vec![Effect::Requeue(a), Effect::Requeue(b)]);
    assert!(p.published(1, true, a, 0, true).is_empty());
    assert!(p.published(1, true, a, 7, true).is_empty());
    assert!(p.tick(u64::MAX, true).is_empty());
}

#[test]
fn sync_runs_are_consecutive_and_carry_each_write_once() {
    let seqs = [
        Some(5),
        Some(6),
        Some(5), // a retry of the first, answered from the record
        None,
        Some(2), // a retry of a write of an earlier group
        Some(7),
    ];
    let (runs, run_of) = sync_runs(&seqs);
    assert_eq!(runs, vec![(2, 2), (5, 7)]);
    assert_eq!(
        run_of,
        vec![Some(1), Some(1), Some(1), None, Some(0), Some(1)]
    );
}

/// Found under load against a RabbitMQ cluster whose nodes were all
/// killed and started again: the master's session expired meanwhile, its
/// groups went back (their syncs had failed), and it claimed its place
/// again. Their clients had given up and `writeQ` let them expire, so
/// nothing filled the gap: every later group waited for it and went
/// back, for good, and no catch-up went out.
#[test]
fn after_a_lapse_the_prefix_starts_again_at_the_store() {
    let mut p = Pipeline::new(10);
    let (lost, _) = p.applied(0, true, &[(11, 12)], 0);
    assert!(p.published(1, true, lost, 0, false).is_empty());
    // The lease runs out: the group goes back, and never returns.
    assert_eq!(p.tick(2, false), vec![Effect::Requeue(lost)]);
    // The lease holds again; the store holds 12.
    p.resume(12);
    let (g, _) = p.applied(3, true, &[(13, 13)], 0);
    assert_eq!(p.published(4, true, g, 0, true), vec![Effect::Answer(g)]);
    assert_eq!(p.synced(), 13);
    // Without a lapse, resuming changes nothing: a gap a group owns waits
    // for that group.
    let (h, _) = p.applied(5, true, &[(14, 14)], 0);
    let (k, _) = p.applied(6, true, &[(15, 15)], 0);
    p.resume(15);
    assert!(p.published(7, true, k, 0, true).is_empty());
    assert_eq!(
        p.published(8, true, h, 0, true),
        vec![Effect::Answer(h), Effect::Answer(k)]
    );
}

/// What a resumed pipeline had confirmed past its gap still counts.
#[test]
fn resuming_keeps_the_runs_confirmed_past_the_store() {
    let mut p = Pipeline::new(0);
    let (a, _) = p.applied(0, true, &[(1, 1)], 0);
    let (b, _) = p.applied(1, true, &[(2, 3)], 0);
    assert!(p.published(2, true, b, 0, true).is_empty());
    assert!(p.published(3, true, a, 0, false).is_empty());
    p.tick(4, false);
    // The store holds 1 only on this model's count; 2-3 were confirmed.
    p.resume(1);
    assert_eq!(p.synced(), 3);
}

/// The gap a lapse left is handed to the driver once, to send again as a
/// group of its own; its confirm lets the later groups through.
#[test]
fn after_a_lapse_the_gap_goes_out_again_as_a_group() {
    let mut p = Pipeline::new(10);
    assert_eq!(p.gap_after_lapse(10), None, "no lapse, no gap");
    let (lost, _) = p.applied(0, true, &[(11, 12)], 0);
    assert!(p.published(1, true, lost, 0, false).is_empty());
    assert_eq!(p.tick(2, false), vec![Effect::Requeue(lost)]);
    assert_eq!(p.gap_after_lapse(12), Some((11, 12)));
    assert_eq!(p.gap_after_lapse(12), None, "handed out once");
    let (refill, fx) = p.applied(3, true, &[(11, 12)], 0);
    assert_eq!(
        fx,
        vec![Effect::Publish {
            group: refill,
            run: 0
        }]
    );
    let (g, _) = p.applied(4, true, &[(13, 13)], 0);
    assert!(
        p.published(5, true, g, 0, true).is_empty(),
        "behind the gap"
    );
    assert_eq!(
        p.published(6, true, refill, 0, true),
        vec![Effect::Answer(refill), Effect::Answer(g)]
    );
    assert_eq!(p.synced(), 13);
}

/// When the driver cannot send the gap again, it counts it as sent: the
/// lapse flag is already spent by then, and that must not matter.
#[test]
fn a_gap_handed_out_can_be_counted_as_sent() {
    let mut p = Pipeline::new(10);
    let (lost, _) = p.applied(0, true, &[(11, 12)], 0);
    assert!(p.published(1, true, lost, 0, false).is_empty());
    p.tick(2, false);
    assert_eq!(p.gap_after_lapse(12), Some((11, 12)));
    p.count_sent(12);
    assert_eq!(p.synced(), 12);
}
