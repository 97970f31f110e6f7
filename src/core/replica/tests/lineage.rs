//! Following a newer lineage: a replica that holds, or is applying,
//! writes the new history disowns resyncs and serves nothing meanwhile.

use super::*;

/// What came of a scenario.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Asked for a whole snapshot, reads stopped.
    Resynced,
    /// Went on; the seq it reports applied, and whether it serves.
    Kept { applied: u64, ready: bool },
}

/// Applied up to 10 under epoch 1, a run of 11..=20 (epoch 1's) being
/// applied, it hears of epoch 2 begun after `base`; then the run ends.
fn hears_epoch_2_while_applying(base: u64, mutation: Option<Mutation>) -> Outcome {
    let one = lineage(&[(1, 0)]);
    let mut r = Replica::caught_up(10, one.clone());
    if let Some(m) = mutation {
        r = r.mutated(m);
    }
    let (_, fx) = r.sync(batch(&one, 1, 11..=20));
    assert_eq!(run(&fx), Some((11, 20)));
    let two = lineage(&[(1, 0), (2, base)]);
    let (_, mut fx) = r.sync(batch(&two, 2, base + 1..=base + 1));
    fx.extend(r.applied(20));
    match asked(&fx) {
        Some((_, u64::MAX)) => {
            assert_eq!(
                reads_switched(&fx),
                vec![&Effect::StopConsuming(Consumer::Reads)]
            );
            assert!(!r.ready());
            Outcome::Resynced
        }
        _ => Outcome::Kept {
            applied: r.core.status(r.now).applied,
            ready: r.ready(),
        },
    }
}

#[test]
fn a_new_lineage_is_judged_against_the_run_being_applied() {
    let kept = |applied| Outcome::Kept {
        applied,
        ready: true,
    };
    let table = [
        // Epoch 2 began after everything: nothing of the run is disowned.
        (20, kept(20)),
        (25, kept(20)),
        // Epoch 2 began inside the run: 16..=20 are a deposed master's.
        (15, Outcome::Resynced),
        (19, Outcome::Resynced),
        // Before the applied seq: the old rule saw this one too.
        (5, Outcome::Resynced),
    ];
    for (base, want) in table {
        let got = hears_epoch_2_while_applying(base, None);
        assert_eq!(got, want, "epoch 2 after seq {base}");
    }
}

/// The rule before the fix (judged against the applied seq alone) keeps
/// the fork: the scenario above tells the two apart.
#[test]
fn the_old_rule_keeps_a_fork_in_the_run_being_applied() {
    let old = Some(Mutation::JudgeAgainstApplied);
    assert_eq!(
        hears_epoch_2_while_applying(15, old),
        Outcome::Kept {
            applied: 20,
            ready: true
        }
    );
    assert_eq!(hears_epoch_2_while_applying(5, old), Outcome::Resynced);
}

#[test]
fn a_newer_lineage_that_disowns_applied_writes_makes_it_resync_serving_no_reads() {
    let one = lineage(&[(1, 0)]);
    let mut r = Replica::caught_up(20, one);
    let (parked, _) = r.read(30);
    let two = lineage(&[(1, 0), (2, 15)]);
    let (token, fx) = r.sync(batch(&two, 2, 21..=22));
    assert!(logged(&fx, Level::Error, "resyncing"));
    assert_eq!(requeued(&fx), vec![parked]);
    let (request, have) = asked(&fx).expect("a resync");
    assert_eq!(have, u64::MAX, "never told it is current");
    // Reads that were on their way go back for the others.
    let (late, fx) = r.read(0);
    assert_eq!(requeued(&fx), vec![late]);
    assert_eq!(run(&fx), None, "nothing applied on a diverged store");
    assert!(!r.ready());
    let fx = r.answer(request, stamp(2), snapshot_at(22)).1;
    assert!(installs(&fx));
    let fx = r.on(Input::Installed {
        request,
        result: Ok((22, two.clone())),
    });
    assert_eq!(acked(&fx), vec![token], "held by the snapshot");
    assert_eq!(reads_switched(&fx), vec![&Effect::Consume(Consumer::Reads)]);
    assert!(r.ready());
    assert_eq!(r.core.status(r.now).last_epoch, 2);
}

#[test]
fn a_newer_lineage_that_agrees_is_adopted_and_drops_pending_deposed_writes() {
    let one = lineage(&[(1, 0)]);
    let mut r = Replica::caught_up(10, one.clone());
    let (deposed, _) = r.sync(batch(&one, 1, 13..=14));
    let two = lineage(&[(1, 0), (2, 12)]);
    let (kept, fx) = r.sync(batch(&two, 2, 13..=13));
    assert_eq!(acked(&fx), vec![deposed]);
    assert_eq!(asked(&fx), None);
    assert_eq!(r.core.status(r.now).epoch, 2);
    let (_, fx) = r.sync(batch(&two, 1, 11..=12));
    assert_eq!(run(&fx), Some((11, 13)));
    assert!(acked(&r.applied(13)).contains(&kept));
}

/// A history of `elections` epochs, each begun 10 seqs after the last:
/// longer than a lineage keeps, so truncated.
fn elected(elections: u64) -> Lineage {
    let mut l = Lineage::default();
    for e in 1..=elections {
        assert!(l.begin(e, (e - 1) * 10));
    }
    l
}

/// A replica that missed more elections than a lineage keeps cannot judge
/// its writes against the truncated one it hears: it takes a snapshot.
#[test]
fn a_replica_below_the_lineage_floor_resyncs() {
    let sender = elected(100);
    assert!(sender.truncated());
    let mut r = Replica::caught_up(5, lineage(&[(1, 0)]));
    let last = sender.epoch();
    let (_, fx) = r.sync(batch(&sender, last, 991..=991));
    assert_eq!(asked(&fx).map(|a| a.1), Some(u64::MAX), "{fx:?}");
    assert!(!r.ready());
}

/// One above the floor, in the history, follows the newer epochs and goes
/// on applying: truncation costs no snapshot.
#[test]
fn a_replica_above_the_lineage_floor_follows_on() {
    let sender = elected(100);
    let mut r = Replica::caught_up(895, elected(90));
    let (_, fx) = r.sync(batch(&sender, 100, 896..=896));
    assert_eq!(asked(&fx), None, "{fx:?}");
    assert!(r.ready());
    assert_eq!(r.core.lineage, sender);
}
