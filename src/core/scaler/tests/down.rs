//! Scale-downs, decisions that go no further, stops, and any input.

use super::*;
use std::time::Duration;

/// Ten slaves, an idle window: six kept, four stopped one at a time, the
/// highest pids first, each after a fresh look.
#[test]
fn a_scale_down_stops_at_most_a_step_highest_pids_first() {
    let mut core = ScalerCore::new(ScalePolicy::default());
    let mut model = cluster(10);
    let fx = core.on(
        Input::DecideNow {
            reads: 0,
            ticket: 7,
        },
        0,
    );
    assert_eq!(fx, vec![Effect::Observe]);
    let mut fx = core.on(Input::Cluster(model.clone()), 0);
    let d = announced(&fx).unwrap().clone();
    assert_eq!((d.from, d.to, d.step_to), (10, 1, 6));
    let mut stopped = Vec::new();
    while let Some((id, pid)) = fx.iter().find_map(|e| match e {
        Effect::Retire { id, pid } => Some((*id, *pid)),
        _ => None,
    }) {
        assert_ne!(pid, MASTER);
        stopped.push(id);
        model.workers.retain(|w| w.id != id);
        fx = core.on(Input::Retired { id, error: None }, 0);
        if fx.contains(&Effect::Observe) {
            fx = core.on(Input::Cluster(model.clone()), 0);
        }
    }
    assert_eq!(stopped, vec![10, 9, 8, 7]);
    let d = answer(&fx).unwrap().as_ref().unwrap();
    assert_eq!((d.stopped.clone(), d.done), (vec![10, 9, 8, 7], true));
    assert_eq!(d.outcome.as_deref(), Some("stopped [10, 9, 8, 7]"));
}

#[test]
fn a_hung_slave_goes_first_and_the_master_never() {
    let table: &[(&[Member], Option<u64>)] = &[
        (
            &[
                member(0, MemberState::Leading),
                member(1, MemberState::Unregistered),
                member(2, MemberState::Serving),
            ],
            Some(1),
        ),
        (
            &[
                member(0, MemberState::Leading),
                member(1, MemberState::Serving),
                member(2, MemberState::CatchingUp),
            ],
            Some(2),
        ),
        (&[member(0, MemberState::Leading)], None),
        (
            &[
                member(0, MemberState::Leading),
                member(5, MemberState::Other),
            ],
            None,
        ),
    ];
    for (workers, want) in table {
        let view = ClusterSnapshot {
            master: Some(MASTER),
            workers: workers.to_vec(),
            starting: Vec::new(),
        };
        assert_eq!(surplus_slave(&view).map(|w| w.id), *want, "{workers:?}");
    }
}

#[test]
fn no_decision_while_no_master_leads() {
    let mut core = ScalerCore::new(ScalePolicy::default());
    core.on(
        Input::DecideNow {
            reads: 45,
            ticket: 1,
        },
        0,
    );
    let leaderless = ClusterSnapshot {
        master: None,
        ..cluster(1)
    };
    let fx = core.on(Input::Cluster(leaderless), 0);
    assert_eq!(announced(&fx), None);
    assert_eq!(starts(&fx), 0);
    assert!(fx.contains(&Effect::NoDecision {
        detail: "45 reads: no change (no master leads now)".into()
    }));
    assert_eq!(answer(&fx), Some(&Err("no master leads now".into())));
    assert_eq!(core.view(45, 0).last, None);
}

/// A master lost during a scale-up: no more starts; during a scale-down:
/// no more stops, and a stop the watcher refuses ends the stops.
#[test]
fn a_plan_goes_no_further_without_a_master_or_the_watchers_agreement() {
    let mut core = ScalerCore::new(ScalePolicy::default());
    core.on(
        Input::DecideNow {
            reads: 200,
            ticket: 1,
        },
        0,
    );
    let fx = core.on(Input::Cluster(cluster(1)), 0);
    assert_eq!(starts(&fx), 2);
    core.on(Input::Started { id: 10 }, 0);
    core.on(Input::Started { id: 11 }, 0);
    let leaderless = ClusterSnapshot {
        master: None,
        ..cluster(1)
    };
    let fx = core.on(Input::Cluster(leaderless), 0);
    let d = answer(&fx).unwrap().as_ref().unwrap();
    assert_eq!(d.started, vec![10, 11]);
    assert!(d
        .outcome
        .as_deref()
        .unwrap()
        .contains("2 not started: no master leads now"));

    let mut core = ScalerCore::new(ScalePolicy::default());
    core.on(
        Input::DecideNow {
            reads: 0,
            ticket: 1,
        },
        0,
    );
    let fx = core.on(Input::Cluster(cluster(3)), 0);
    assert!(fx.contains(&Effect::Retire { id: 3, pid: 103 }));
    let fx = core.on(Input::RetireRefused { id: 3 }, 0);
    let d = answer(&fx).unwrap().as_ref().unwrap();
    assert!(d.stopped.is_empty());
    assert!(d
        .outcome
        .as_deref()
        .unwrap()
        .contains("2 not stopped: the watcher kept worker 3"));
}

#[test]
fn a_stop_while_starting_abandons_what_has_not_begun() {
    let mut core = ScalerCore::new(ScalePolicy::default());
    core.on(
        Input::DecideNow {
            reads: 74_000,
            ticket: 3,
        },
        WINDOW,
    );
    assert_eq!(starts(&core.on(Input::Cluster(cluster(1)), WINDOW)), 2);
    let fx = core.on(Input::Stop, WINDOW + 1);
    assert_eq!(answer(&fx), Some(&Err("the scaler stopped".into())));
    assert!(!fx.contains(&Effect::Stopped), "two starts are under way");
    assert!(core
        .on(Input::Tick { reads: 80_000 }, WINDOW * 3)
        .is_empty());
    assert!(core.on(Input::Started { id: 10 }, WINDOW * 3).is_empty());
    let fx = core.on(Input::Started { id: 11 }, WINDOW * 3);
    assert_eq!(starts(&fx), 0);
    assert_eq!(fx.last(), Some(&Effect::Stopped));
    let last = core.view(0, 0).last.unwrap();
    assert_eq!(last.started, vec![10, 11]);
    assert!(last
        .outcome
        .unwrap()
        .contains("2 not started: the scaler stopped"));
    // Stopped: asked decisions are refused, a second stop answered again.
    let fx = core.on(
        Input::DecideNow {
            reads: 1,
            ticket: 4,
        },
        0,
    );
    assert_eq!(answer(&fx), Some(&Err("the scaler stopped".into())));
    assert_eq!(core.on(Input::Stop, 0), vec![Effect::Stopped]);
    // With nothing under way, a stop is at once.
    let mut idle = ScalerCore::new(ScalePolicy::default());
    assert_eq!(idle.on(Input::Stop, 0), vec![Effect::Stopped]);
}

#[test]
fn any_input_in_any_state_is_taken_without_a_panic() {
    let inputs = [
        Input::Tick { reads: u64::MAX },
        Input::Tick { reads: 0 },
        Input::DecideNow {
            reads: 5,
            ticket: 0,
        },
        Input::Cluster(ClusterSnapshot::default()),
        Input::Cluster(cluster(3)),
        Input::NoCluster("gone".into()),
        Input::Started { id: 1 },
        Input::StartFailed {
            id: None,
            error: String::new(),
        },
        Input::Retired {
            id: 2,
            error: Some("x".into()),
        },
        Input::RetireRefused { id: 2 },
    ];
    let policy = ScalePolicy {
        window: Duration::from_millis(1),
        max_slaves: None,
        max_step: None,
        ..ScalePolicy::default()
    };
    let mut core = ScalerCore::new(policy);
    for (i, input) in inputs.iter().cycle().take(500).enumerate() {
        core.on(input.clone(), (i as u64).wrapping_mul(7919) % 5_000);
    }
    core.on(Input::Stop, u64::MAX);
    assert!(core.on(Input::Tick { reads: 9 }, u64::MAX).is_empty());
}
