//! Scenarios of the watcher's state machine: inputs in, effects out.

use std::collections::BTreeMap;

use super::*;

fn report(id: u64, role: ReportedRole, ready: bool) -> WorkerReport {
    WorkerReport {
        id,
        pid: 100 + id,
        role,
        applied: 10,
        last_epoch: 1,
        epoch: 1,
        ready,
        session: id,
    }
}

fn view(reports: &[WorkerReport]) -> Input {
    Input::View(
        reports
            .iter()
            .map(|r| (r.pid, *r))
            .collect::<BTreeMap<_, _>>(),
    )
}

fn running(ids: &[u64]) -> Vec<Running> {
    ids.iter()
        .map(|&id| Running { id, pid: 100 + id })
        .collect()
}

fn record(id: u64, epoch: u64) -> Option<(MasterRecord, i32)> {
    Some((
        MasterRecord {
            pid: 100 + id,
            id,
            epoch,
            heir: false,
        },
        epoch as i32,
    ))
}

/// A watcher that sees worker 1 leading epoch 1 and slaves 2 and 3.
fn steady() -> (WatcherCore, Vec<Running>) {
    let mut w = WatcherCore::new(3, 0);
    let rt = running(&[1, 2, 3]);
    w.on(Input::Connected, 0, &rt);
    w.on(Input::Master(record(1, 1)), 0, &rt);
    let fx = w.on(view(&steady_reports()), 0, &rt);
    assert!(
        !fx.iter().any(|e| matches!(e, Effect::Elect { .. })),
        "{fx:?}"
    );
    (w, rt)
}

fn steady_reports() -> Vec<WorkerReport> {
    vec![
        report(1, ReportedRole::Master, true),
        report(2, ReportedRole::Slave, true),
        report(3, ReportedRole::Slave, true),
    ]
}

fn elections(fx: &[Effect]) -> Vec<(Option<u64>, Vec<u64>)> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Elect {
                dead, succession, ..
            } => Some((*dead, succession.heirs().iter().copied().collect())),
            _ => None,
        })
        .collect()
}

fn starts(fx: &[Effect]) -> Vec<u64> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Start { id, .. } => Some(*id),
            _ => None,
        })
        .collect()
}

#[test]
fn a_seen_master_death_deletes_its_node_elects_at_once_and_starts_it_again() {
    let (mut w, _) = steady();
    let rt = running(&[2, 3]);
    let fx = w.on(Input::Crashed { pid: 101 }, 10, &rt);
    assert!(fx.contains(&Effect::DeleteNode { pid: 101 }), "{fx:?}");
    assert_eq!(elections(&fx), vec![(Some(101), vec![1])]);
    assert_eq!(starts(&fx), vec![1]);
    // The exit the runtime reports next is the same death.
    let again = w.on(
        Input::Exited {
            id: 1,
            pid: 101,
            expected: false,
            gone: true,
        },
        11,
        &rt,
    );
    assert!(again.is_empty(), "{again:?}");
}

#[test]
fn a_promotee_lost_before_it_led_joins_the_succession() {
    let (mut w, _) = steady();
    let rt = running(&[2, 3]);
    w.on(Input::Crashed { pid: 101 }, 10, &rt);
    w.on(Input::Elected(Ok((record(2, 2).unwrap(), true))), 11, &rt);
    let fx = w.on(Input::Crashed { pid: 102 }, 12, &running(&[3]));
    assert_eq!(elections(&fx), vec![(Some(102), vec![1, 2])]);
    // Once a master leads, the succession is closed.
    w.on(Input::Elected(Ok((record(3, 3).unwrap(), true))), 13, &rt);
    let mut leading = report(3, ReportedRole::Master, true);
    leading.epoch = 3;
    w.on(view(&[leading]), 14, &running(&[3]));
    w.on(Input::Crashed { pid: 103 }, 15, &running(&[]));
    let fx = w.on(Input::Elected(Err("nobody".into())), 16, &running(&[]));
    assert!(fx.iter().any(|e| matches!(e, Effect::Wake { .. })));
    let fx = w.on(Input::Woke(Timer::CheckMaster), 17, &running(&[]));
    assert!(elections(&fx).is_empty(), "no worker registered: {fx:?}");
}

#[test]
fn a_worker_whose_session_ended_while_it_runs_is_given_time_then_killed() {
    let (mut w, rt) = steady();
    let mut reports = steady_reports();
    reports.remove(2); // worker 3's node went; its process runs
    let fx = w.on(view(&reports), 10, &rt);
    assert_eq!(
        w.fate(103),
        Some(Fate::Hung {
            until: 10 + HUNG_AFTER_MS
        })
    );
    assert!(starts(&fx).is_empty(), "no second worker: {fx:?}");
    let fx = w.on(Input::Woke(Timer::CheckHung { pid: 103 }), 5_010, &rt);
    assert!(fx.contains(&Effect::Kill { id: 3, pid: 103 }), "{fx:?}");
    let fx = w.on(
        Input::HungKilled { id: 3, pid: 103 },
        5_020,
        &running(&[1, 2]),
    );
    assert_eq!(starts(&fx), vec![3]);
}

#[test]
fn a_hung_worker_that_comes_back_is_left_alone() {
    let (mut w, rt) = steady();
    let mut reports = steady_reports();
    reports.remove(2);
    w.on(view(&reports), 10, &rt);
    let fx = w.on(view(&steady_reports()), 20, &rt);
    assert!(fx
        .iter()
        .any(|e| matches!(e, Effect::Event { kind: "back", .. })));
    let fx = w.on(Input::Woke(Timer::CheckHung { pid: 103 }), 5_010, &rt);
    assert!(fx.is_empty(), "{fx:?}");
}

#[test]
fn a_worker_stopped_on_purpose_is_neither_mourned_nor_replaced() {
    let (mut w, rt) = steady();
    assert!(w.retiring(103));
    let stopping = Input::Exited {
        id: 3,
        pid: 103,
        expected: true,
        gone: false,
    };
    w.on(stopping, 10, &rt);
    let mut reports = steady_reports();
    reports.remove(2);
    let fx = w.on(view(&reports), 11, &rt);
    assert!(fx.is_empty(), "{fx:?}");
    let gone = Input::Exited {
        id: 3,
        pid: 103,
        expected: true,
        gone: true,
    };
    assert!(w.on(gone, 12, &running(&[1, 2])).is_empty());
    // The master is never retired.
    assert!(!w.retiring(101));
}

#[test]
fn after_the_watchers_own_reconnection_a_missing_master_gets_its_grace() {
    let (mut w, rt) = steady();
    w.on(Input::Disconnected, 10, &rt);
    w.on(Input::Connected, 20, &rt);
    let fx = w.on(view(&steady_reports()[1..]), 30, &rt);
    assert!(elections(&fx).is_empty(), "{fx:?}");
    assert!(fx.contains(&Effect::Wake {
        timer: Timer::CheckMaster,
        after_ms: GRACE_MS - 10
    }));
    // Back in time, it keeps its place.
    let fx = w.on(view(&steady_reports()), 40, &rt);
    assert!(elections(&fx).is_empty(), "{fx:?}");
}

#[test]
fn startup_waits_for_every_expected_worker_or_the_startup_wait() {
    let mut w = WatcherCore::new(3, 0);
    let rt = running(&[1, 2, 3]);
    w.on(Input::Connected, 0, &rt);
    let two = [
        report(1, ReportedRole::Slave, false),
        report(2, ReportedRole::Slave, false),
    ];
    assert!(elections(&w.on(view(&two), 10, &rt)).is_empty());
    let late = w.on(view(&two), STARTUP_WAIT_MS, &rt);
    assert_eq!(elections(&late), vec![(None, vec![])]);
}

#[test]
fn a_master_that_declined_is_elected_over_and_one_election_runs_at_a_time() {
    let (mut w, rt) = steady();
    let mut reports = steady_reports();
    reports[0].role = ReportedRole::Declined;
    let fx = w.on(view(&reports), 10, &rt);
    // The last master seen leading stays an heir.
    assert_eq!(elections(&fx), vec![(Some(101), vec![1])]);
    assert!(!w.retiring(103), "no retirement during an election");
    let fx = w.on(view(&reports), 20, &rt);
    assert!(elections(&fx).is_empty(), "{fx:?}");
}

#[test]
fn a_failed_start_is_tried_again_a_bounded_number_of_times() {
    let (mut w, rt) = steady();
    let mut tries = RESPAWN_TRIES;
    let mut fx = w.on(Input::Crashed { pid: 103 }, 10, &running(&[1, 2]));
    let mut attempts = 0;
    while let Some(Effect::Start { id, tries: t, .. }) = fx
        .iter()
        .find(|e| matches!(e, Effect::Start { .. }))
        .cloned()
    {
        attempts += 1;
        tries = t;
        let failed = Input::Started {
            id,
            result: Err("no".into()),
            tries: t,
        };
        fx = w.on(failed, 20, &rt);
    }
    assert_eq!((attempts, tries), (RESPAWN_TRIES, 1));
    assert_eq!(w.starting(), 0);
}

/// Found by the simulator (seed 834): the elected worker led, acknowledged
/// a write and died before the watcher heard its election's outcome; the
/// death did not count as a master's, and only the older master's store
/// stood for the history.
#[test]
fn a_master_that_died_before_the_watcher_heard_of_its_election_joins_the_succession() {
    let (mut w, _) = steady();
    w.on(Input::Crashed { pid: 101 }, 10, &running(&[2, 3]));
    // Worker 2 is elected, leads and dies; the exit comes first.
    w.on(Input::Crashed { pid: 102 }, 12, &running(&[3]));
    let fx = w.on(
        Input::Elected(Ok((record(2, 2).unwrap(), true))),
        13,
        &running(&[3]),
    );
    assert_eq!(elections(&fx), vec![(Some(102), vec![1, 2])], "{fx:?}");
}

/// Found by the simulator (seed 2942): an election picks from a fresher
/// read of `/workers` than the watcher's own view; the watcher took the
/// new master, not in its view yet, for dead and elected over it while it
/// led (a live master's lease runs on: two could take writes).
#[test]
fn a_master_elected_from_a_fresher_view_is_not_elected_over_while_alive() {
    let (mut w, _) = steady();
    let rt = running(&[2, 3, 4]);
    w.on(Input::Crashed { pid: 101 }, 10, &rt);
    let fx = w.on(Input::Elected(Ok((record(4, 2).unwrap(), true))), 11, &rt);
    assert!(elections(&fx).is_empty(), "{fx:?}");
    let fx = w.on(Input::Woke(Timer::CheckMaster), 12, &rt);
    assert!(elections(&fx).is_empty(), "{fx:?}");
    // A view without it: a death like any other.
    let fx = w.on(view(&steady_reports()[1..]), 13, &running(&[2, 3]));
    assert_eq!(elections(&fx), vec![(Some(104), vec![1, 4])], "{fx:?}");
}

/// Found by the simulator (seed 1472): the watch's read of `/master` that
/// began before an election ended came back after it, and put the older
/// master back in the watcher's mind; the newer one declined, and no
/// election came again (the older one was registered and well).
#[test]
fn a_stale_read_of_master_does_not_undo_a_newer_election() {
    let (mut w, rt) = steady();
    w.on(Input::Elected(Ok((record(2, 3).unwrap(), true))), 10, &rt);
    w.on(Input::Master(record(1, 2)), 11, &rt);
    assert_eq!(w.master().map(|m| m.epoch), Some(3));
    let mut reports = steady_reports();
    reports[0].role = ReportedRole::Slave;
    reports[1].role = ReportedRole::Declined;
    let fx = w.on(view(&reports), 12, &rt);
    assert_eq!(elections(&fx), vec![(Some(102), vec![1])], "{fx:?}");
}

#[test]
fn a_worker_buried_long_ago_is_forgotten() {
    let (mut w, _) = steady();
    let rt = running(&[1, 2]);
    w.on(Input::Crashed { pid: 103 }, 10, &rt);
    assert_eq!(w.fate(103), Some(Fate::Buried { at: 10 }));
    let reports = &steady_reports()[..2];
    w.on(view(reports), 20, &rt);
    // Recently buried: remembered (a late exit is the same death).
    w.on(view(reports), 10 + FORGET_BURIED_MS - 1, &rt);
    assert_eq!(w.fate(103), Some(Fate::Buried { at: 10 }));
    w.on(view(reports), 10 + FORGET_BURIED_MS, &rt);
    assert_eq!(w.fate(103), None);
    // The others are all still known.
    assert_eq!(w.fate(101), Some(Fate::Live));
    assert_eq!(w.fate(102), Some(Fate::Live));
}

/// Forgetting buried pids leaves the succession whole: the masters lost
/// since the last one seen leading are still heard in the next election.
#[test]
fn forgetting_the_buried_keeps_the_succession() {
    let (mut w, _) = steady();
    let rt = running(&[2, 3]);
    w.on(Input::Crashed { pid: 101 }, 10, &rt);
    w.on(Input::Elected(Ok((record(2, 2).unwrap(), true))), 11, &rt);
    // Worker 2 does not lead yet; long after, the dead master's pid goes.
    let later = 11 + FORGET_BURIED_MS;
    let mut promoting = report(2, ReportedRole::Promoting, false);
    promoting.epoch = 2;
    let slave = report(3, ReportedRole::Slave, true);
    w.on(view(&[promoting, slave]), later, &rt);
    assert_eq!(w.fate(101), None);
    let fx = w.on(Input::Crashed { pid: 102 }, later + 1, &running(&[3]));
    assert_eq!(elections(&fx), vec![(Some(102), vec![1, 2])]);
}

/// A dead pid that `/master` still names stays known however long ago it
/// died: the record is judged against its fate.
#[test]
fn the_pid_master_names_is_never_forgotten() {
    let (mut w, _) = steady();
    let rt = running(&[2, 3]);
    w.on(Input::Crashed { pid: 101 }, 10, &rt);
    let reports = &steady_reports()[1..];
    w.on(view(reports), 10 + 2 * FORGET_BURIED_MS, &rt);
    assert_eq!(w.fate(101), Some(Fate::Buried { at: 10 }));
}

/// An elected worker that still reports itself a slave of the older epoch
/// when its time to take the election is up (paused within its session)
/// is deleted and killed, and only once the kill is done is another
/// elected; one that says it is promoting is left to drain.
#[test]
fn an_elected_worker_that_never_takes_its_election_is_killed_then_replaced() {
    let (mut w, _) = steady();
    let rt = running(&[2, 3]);
    w.on(Input::Crashed { pid: 101 }, 10, &rt);
    let fx = w.on(Input::Elected(Ok((record(2, 2).unwrap(), true))), 11, &rt);
    let check = Timer::CheckPromotion { pid: 102, epoch: 2 };
    assert!(fx.contains(&Effect::Wake {
        timer: check,
        after_ms: PROMOTION_MS
    }));
    // Had it said it was promoting, the check would leave it be.
    let left = promoting_then_checked(&mut w.clone(), &rt);
    assert!(left.is_empty(), "{left:?}");
    // Worker 2 never does.
    let fx = w.on(Input::Woke(check), 11 + PROMOTION_MS, &rt);
    assert!(fx.contains(&Effect::DeleteNode { pid: 102 }), "{fx:?}");
    assert!(fx.contains(&Effect::Kill { id: 2, pid: 102 }), "{fx:?}");
    assert!(
        elections(&fx).is_empty(),
        "never elected over before the kill: {fx:?}"
    );
    let fx = w.on(
        Input::HungKilled { id: 2, pid: 102 },
        12 + PROMOTION_MS,
        &running(&[3]),
    );
    let elected = elections(&fx);
    assert_eq!(elected.len(), 1, "{fx:?}");
    assert_eq!(elected[0].0, Some(102));
}

/// What the promotion check does once worker 2, elected for epoch 2,
/// reports itself promoting: its kill and node deletion, if any.
fn promoting_then_checked(w: &mut WatcherCore, rt: &[Running]) -> Vec<Effect> {
    let mut promoting = report(2, ReportedRole::Promoting, false);
    promoting.epoch = 2;
    w.on(
        view(&[promoting, report(3, ReportedRole::Slave, true)]),
        12,
        rt,
    );
    w.on(
        Input::Woke(Timer::CheckPromotion { pid: 102, epoch: 2 }),
        11 + PROMOTION_MS,
        rt,
    )
    .into_iter()
    .filter(|e| matches!(e, Effect::Kill { .. } | Effect::DeleteNode { .. }))
    .collect()
}
