//! Snapshots: only the latest request's answer, never a deposed master's,
//! installed only while no run is in flight; what it holds is settled.

use super::*;

/// A replica started and bound, its first snapshot asked for.
fn asking(applied: u64, l: &Lineage) -> (Replica, u64) {
    let mut r = Replica::new(applied, l.clone());
    r.on(Input::Start);
    let fx = r.on(Input::Consuming(Consumer::Sync));
    (r, asked(&fx).expect("asked once bound").0)
}

#[test]
fn an_answer_of_an_older_epoch_or_another_cluster_is_refused_and_asked_again_later() {
    let l = lineage(&[(1, 0), (2, 5)]);
    let (mut r, request) = asking(5, &l);
    let (token, fx) = r.answer(request, stamp(1), snapshot_at(9));
    assert_eq!(acked(&fx), vec![token]);
    assert!(fx.contains(&Effect::CloseSnapshot { request }));
    assert!(!installs(&fx));
    assert!(logged(&fx, Level::Warn, "refused"));
    assert_eq!(asked(&r.wait(REFUSED_RETRY_MS - 1)), None);
    let (again, have) = asked(&r.wait(1)).expect("asked again");
    assert_eq!((again > request, have), (true, 5));
    let other = Stamp {
        cluster: 9,
        epoch: 2,
    };
    assert!(!installs(&r.answer(again, other, snapshot_at(9)).1));
    assert!(!r.ready());
}

#[test]
fn only_the_latest_requests_answer_is_installed() {
    let l = lineage(&[(1, 0)]);
    let (mut r, first) = asking(0, &l);
    let fx = r.on(Input::SnapshotLost { request: first });
    let (second, have) = asked(&fx).expect("asked again");
    assert_eq!(have, 0);
    let (stray, fx) = r.answer(first, stamp(1), snapshot_at(3));
    assert_eq!((acked(&fx), installs(&fx)), (vec![stray], false));
    assert!(installs(&r.answer(second, stamp(1), snapshot_at(4)).1));
    // Once whole, a late ending of its answers changes nothing.
    assert!(r.on(Input::SnapshotLost { request: second }).is_empty());
}

#[test]
fn a_snapshot_in_parts_is_installed_once_whole() {
    let (mut r, request) = asking(0, &lineage(&[(1, 0)]));
    let snap = Snapshot {
        seq: 8,
        entries: vec![
            (b"a".to_vec(), b"1".to_vec()),
            (b"b".to_vec(), b"2".to_vec()),
        ],
    };
    let part = |i: usize| {
        Reply::SnapshotPart(crate::model::wire::SnapshotPart {
            seq: 8,
            part: i as u32,
            parts: 2,
            entries: vec![snap.entries[i].clone()],
        })
    };
    let (one, fx) = r.answer(request, stamp(1), part(1));
    assert_eq!((acked(&fx), installs(&fx)), (vec![one], false));
    let (_, fx) = r.answer(request, stamp(1), part(0));
    let want = Effect::Install {
        request,
        snapshot: Some(snap),
    };
    assert!(fx.contains(&want), "{fx:?}");
}

#[test]
fn an_answer_waits_for_the_run_in_flight_and_no_run_starts_until_it_is_in() {
    let one = lineage(&[(1, 0)]);
    let mut r = Replica::caught_up(10, one.clone());
    r.sync(batch(&one, 1, 11..=20));
    let two = lineage(&[(1, 0), (2, 15)]);
    let (settled, fx) = r.sync(batch(&two, 2, 16..=21));
    let request = asked(&fx).expect("a resync").0;
    let fx = r.answer(request, stamp(2), snapshot_at(21)).1;
    assert!(!installs(&fx), "not over a run being applied");
    let (later, _) = r.sync(batch(&two, 2, 22..=22));
    let fx = r.applied(20);
    assert!(installs(&fx));
    assert_eq!(run(&fx), None);
    let fx = r.on(Input::Installed {
        request,
        result: Ok((21, two)),
    });
    assert!(acked(&fx).contains(&settled), "held by the snapshot");
    assert_eq!(run(&fx), Some((22, 22)));
    assert!(acked(&r.applied(22)).contains(&later));
    assert!(r.ready());
}

#[test]
fn a_snapshot_asked_for_while_one_is_installed_is_asked_once_it_is_in() {
    let one = lineage(&[(1, 0)]);
    let (mut r, request) = asking(0, &one);
    assert!(installs(&r.answer(request, stamp(1), snapshot_at(20)).1));
    // Epoch 2 began at 15: the snapshot being installed holds 16..=20 of
    // a deposed master.
    let two = lineage(&[(1, 0), (2, 15)]);
    let (_, fx) = r.sync(batch(&two, 2, 16..=16));
    assert_eq!(asked(&fx), None, "not over an install");
    let fx = r.on(Input::Installed {
        request,
        result: Ok((20, one)),
    });
    assert_eq!(asked(&fx).map(|a| a.1), Some(u64::MAX));
    assert!(!r.ready());
    assert!(reads_switched(&fx).is_empty());
}

#[test]
fn a_bad_answer_or_a_failed_install_makes_it_resync() {
    let l = lineage(&[(1, 0)]);
    let (mut r, request) = asking(0, &l);
    let bad = Reply::Snapshot(Err(crate::error::Error::Storage("torn".into())));
    let fx = r.answer(request, stamp(1), bad).1;
    let (request, have) = asked(&fx).expect("asked again");
    assert_eq!(have, u64::MAX);
    assert!(logged(&fx, Level::Error, "torn"));
    let fx = r.answer(request, stamp(1), Reply::Leading).1;
    let (request, _) = asked(&fx).expect("not a snapshot: asked again");
    r.answer(request, stamp(1), snapshot_at(3));
    let fx = r.on(Input::Installed {
        request,
        result: Err("no space".into()),
    });
    assert_eq!(asked(&fx).map(|a| a.1), Some(u64::MAX));
    assert!(!r.ready());
}

#[test]
fn what_the_snapshot_holds_is_settled_and_the_rest_waits() {
    let l = lineage(&[(1, 0)]);
    let (mut r, request) = asking(0, &l);
    let (held, _) = r.sync(batch(&l, 1, 3..=4));
    let (after, _) = r.sync(batch(&l, 1, 6..=7));
    r.answer(request, stamp(1), snapshot_at(5));
    let fx = r.on(Input::Installed {
        request,
        result: Ok((5, l)),
    });
    assert_eq!(acked(&fx), vec![held]);
    assert_eq!(run(&fx), Some((6, 7)));
    assert!(acked(&r.applied(7)).contains(&after));
}

#[test]
fn a_snapshot_request_that_cannot_be_sent_is_sent_again_with_backoff() {
    let (mut r, request) = asking(0, &lineage(&[(1, 0)]));
    let error = "broker away".to_string();
    let fx = r.on(Input::AskFailed { request, error });
    assert!(logged(&fx, Level::Warn, "broker away"));
    assert_eq!(asked(&r.wait(FIRST_RETRY_MS - 1)), None);
    let (again, have) = asked(&r.wait(1)).expect("asked again");
    assert_eq!((again > request, have), (true, 0));
    let error = "still away".to_string();
    r.on(Input::AskFailed {
        request: again,
        error,
    });
    assert_eq!(asked(&r.wait(2 * FIRST_RETRY_MS - 1)), None);
    assert!(asked(&r.wait(1)).is_some());
}
