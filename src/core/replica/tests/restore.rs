//! A restore in the sync stream: what comes before it applies, the
//! replica serves its old state and stands in no election until a
//! snapshot past the restore replaces its store, and what comes after
//! applies on top of that snapshot, never what came before.

use super::*;

fn restored(seq: u64, epoch: u64) -> SyncMessage {
    SyncMessage {
        seq,
        epoch,
        request_id: 900 + u128::from(seq),
        entry: Entry::Restored { rows: 3 },
    }
}

/// Writes `before`, a restore at `at`, writes through `last`: one batch.
fn with_restore(
    l: &Lineage,
    before: std::ops::RangeInclusive<u64>,
    at: u64,
    last: u64,
) -> SyncItem {
    let writes = before
        .map(|s| write(s, 1))
        .chain(std::iter::once(restored(at, 1)))
        .chain((at + 1..=last).map(|s| write(s, 1)))
        .collect();
    SyncItem::Writes(SyncBatch {
        lineage: l.clone(),
        writes,
    })
}

#[test]
fn a_restore_waits_for_a_snapshot_while_the_old_state_is_served() {
    let l = lineage(&[(1, 0)]);
    let mut r = Replica::caught_up(0, l.clone());
    let (token, fx) = r.sync(with_restore(&l, 1..=2, 3, 5));
    assert_eq!(
        run(&fx),
        Some((1, 2)),
        "what comes before the restore applies"
    );
    assert_eq!(asked(&fx), None, "not while a run is in flight");
    let fx = r.applied(2);
    assert!(acked(&fx).is_empty(), "the batch waits with its restore");
    let (request, have) = asked(&fx).expect("a snapshot asked for past the restore");
    assert_eq!(have, 2);
    assert!(logged(&fx, Level::Info, "a restore at seq 3"));
    assert!(!r.ready(), "it cannot stand for a history with the restore");
    // The old state is still served; a read that needs the restore waits.
    let (old, fx) = r.read(2);
    assert_eq!(served(&fx), vec![old]);
    let (new, fx) = r.read(3);
    assert!(served(&fx).is_empty());
    // Nothing more is asked for, nor applied, meanwhile.
    let (_, fx) = r.sync(batch(&l, 1, 6..=6));
    assert_eq!((run(&fx), asked(&fx)), (None, None));
    let (_, fx) = r.answer(request, stamp(1), snapshot_at(4));
    assert!(installs(&fx));
    let fx = r.on(Input::Installed {
        request,
        result: Ok((4, l.clone())),
    });
    assert_eq!(served(&fx), vec![new]);
    assert_eq!(run(&fx), Some((5, 6)), "only what follows the snapshot");
    let fx = r.applied(6);
    assert!(acked(&fx).contains(&token));
    assert!(r.ready());
    assert_eq!(r.core.status(r.now).applied, 6);
}

#[test]
fn a_restore_alone_in_its_batch_is_never_applied_as_a_write() {
    let l = lineage(&[(1, 0)]);
    let mut r = Replica::caught_up(4, l.clone());
    let item = SyncItem::Writes(SyncBatch {
        lineage: l.clone(),
        writes: vec![restored(5, 1)],
    });
    let (token, fx) = r.sync(item);
    assert_eq!(run(&fx), None);
    let (request, have) = asked(&fx).expect("asked at once");
    assert_eq!(have, 4);
    // A master that answers "current" (it is not past the restore) is
    // asked again, a little later, not in a loop.
    r.answer(request, stamp(1), Reply::Snapshot(Ok(None)));
    let fx = r.on(Input::Installed {
        request,
        result: Ok((4, l.clone())),
    });
    assert_eq!(asked(&fx), None);
    let fx = r.wait(REFUSED_RETRY_MS + TICK);
    let (request, _) = asked(&fx).expect("asked again");
    r.answer(request, stamp(1), snapshot_at(5));
    let fx = r.on(Input::Installed {
        request,
        result: Ok((5, l)),
    });
    assert_eq!(acked(&fx), vec![token]);
    assert!(r.ready());
}

#[test]
fn a_drain_with_a_restore_it_has_not_installed_fails() {
    let l = lineage(&[(1, 0)]);
    let mut r = Replica::caught_up(0, l.clone());
    r.on(Input::Drain {
        nonce: 8,
        heir: false,
    });
    let (_, fx) = r.syncs(vec![
        with_restore(&l, 1..=1, 2, 2),
        SyncItem::Fence {
            worker: ID,
            nonce: 8,
        },
    ]);
    assert_eq!(run(&fx), Some((1, 1)));
    let fx = r.applied(1);
    let failed = fx.iter().any(|e| {
        matches!(e, Effect::DrainDone { result: Err(why), .. } if why.contains("restore at seq 2"))
    });
    assert!(failed, "{fx:?}");
    assert_eq!(asked(&fx), None, "a draining replica takes no snapshot");
}

/// Elected for its store (nobody caught up, the store that applied the
/// restore lost), a drain reaching a restore it never installed leads
/// without it and without what came after it (none of it was
/// acknowledged: a restore is, once a replica has installed it, and
/// writes wait for it), rather than decline for ever.
#[test]
fn an_heir_drain_at_a_restore_nobody_installed_leads_without_it() {
    let l = lineage(&[(1, 0)]);
    let mut r = Replica::caught_up(0, l.clone());
    r.on(Input::Drain {
        nonce: 8,
        heir: true,
    });
    let (tokens, fx) = r.syncs(vec![
        with_restore(&l, 1..=1, 2, 3),
        SyncItem::Fence {
            worker: ID,
            nonce: 8,
        },
    ]);
    assert_eq!(run(&fx), Some((1, 1)));
    let fx = r.applied(1);
    assert!(
        fx.iter().any(|e| matches!(e, Effect::Flush { nonce: 8 })),
        "{fx:?}"
    );
    assert!(
        !fx.iter().any(|e| matches!(e, Effect::DrainDone { .. })),
        "{fx:?}"
    );
    assert!(
        acked(&fx).contains(&tokens[0]),
        "the held writes are let go: {fx:?}"
    );
}
