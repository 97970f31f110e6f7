//! Windows and scale-ups: when a decision is made, how far it goes, and
//! how fast new slaves are started.

use super::*;

#[test]
fn a_window_starts_at_its_first_read_and_decides_at_its_end() {
    let mut core = ScalerCore::new(ScalePolicy::default());
    assert!(core.on(Input::Tick { reads: 0 }, 0).is_empty());
    assert_eq!(core.view(0, 5).next_decision_in, None);
    assert!(core.on(Input::Tick { reads: 3 }, 1_000).is_empty());
    assert_eq!(core.view(3, 61_000).next_decision_in, Some(60.0));
    assert!(core.on(Input::Tick { reads: 45 }, 120_999).is_empty());
    assert_eq!(
        core.on(Input::Tick { reads: 45 }, 121_000),
        vec![Effect::Observe]
    );
    let fx = core.on(Input::Cluster(cluster(1)), 121_050);
    let d = announced(&fx).unwrap();
    assert_eq!((d.reads, d.from, d.to, d.step_to), (45, 1, 3, 3));
    assert!(d
        .reason
        .starts_with("45 reads in 120 s at 20 a slave: 3 slave(s); start 2"));
    assert_eq!(starts(&fx), 2);
    // The next window followed at once, counting from zero.
    assert_eq!(core.view(50, 121_100).reads, 5);
    assert_eq!(core.view(50, 181_000).next_decision_in, Some(60.0));
}

/// The reported burst: 74,000 reads in one window on the default policy.
/// The model starts each slave unregistered, has it catch up for two looks
/// and serve after; no more than two ever catch up at once.
#[test]
fn a_burst_on_the_default_policy_decides_16_and_starts_at_most_4() {
    let mut core = ScalerCore::new(ScalePolicy::default());
    let mut model = cluster(1);
    let mut age: Vec<(u64, u32)> = Vec::new();
    let (mut now, mut next_id, mut started) = (WINDOW, 10, 0);
    let mut fx = window(&mut core, 74_000);
    let mut decision = None;
    for _ in 0..200 {
        for e in std::mem::take(&mut fx) {
            match e {
                Effect::Observe => fx.extend(core.on(Input::Cluster(model.clone()), now)),
                Effect::StartSlave => {
                    started += 1;
                    model
                        .workers
                        .push(member(next_id, MemberState::Unregistered));
                    age.push((next_id, 0));
                    fx.extend(core.on(Input::Started { id: next_id }, now));
                    next_id += 1;
                }
                Effect::Announce(d) => decision = Some(d),
                Effect::Retire { .. } => panic!("a scale-up stops nothing"),
                _ => {}
            }
        }
        let catching = model
            .workers
            .iter()
            .filter(|w| matches!(w.state, MemberState::Unregistered | MemberState::CatchingUp))
            .count();
        assert!(catching <= CATCHING_UP_AT_ONCE, "{catching} catching up");
        for (id, looks) in &mut age {
            *looks += 1;
            let state = match looks {
                1 | 2 => MemberState::CatchingUp,
                _ => MemberState::Serving,
            };
            if let Some(w) = model.workers.iter_mut().find(|w| w.id == *id) {
                w.state = state;
            }
        }
        now += 100;
        fx.extend(core.on(Input::Tick { reads: 74_000 }, now));
    }
    let d = decision.unwrap();
    assert_eq!((d.wanted, d.to, d.step_to), (3_700, 16, 5));
    assert!(d.reason.contains("capped by max slaves; 3700 called for"));
    assert!(d.reason.contains("at most 4 a decision (max step)"));
    assert_eq!(started, 4);
    let last = core.view(74_000, now).last.unwrap();
    assert!(last.done);
    assert_eq!(last.started, vec![10, 11, 12, 13]);
}

#[test]
fn the_original_rule_is_unbounded_only_when_asked_for() {
    /// max slaves, max step; to, step to, started now.
    type Row = (Option<usize>, Option<usize>, usize, usize, usize);
    let table: &[Row] = &[
        (Some(16), Some(4), 16, 5, 2),
        (None, Some(4), 3_700, 5, 2),
        (None, None, 3_700, 3_700, 2),
        (Some(16), None, 16, 16, 2),
        (Some(2), Some(4), 2, 2, 1),
    ];
    for &(max_slaves, max_step, to, step_to, now) in table {
        let policy = ScalePolicy {
            max_slaves,
            max_step,
            ..ScalePolicy::default()
        };
        let mut core = ScalerCore::new(policy);
        window(&mut core, 74_000);
        let fx = core.on(Input::Cluster(cluster(1)), WINDOW);
        let d = announced(&fx).unwrap();
        assert_eq!((d.to, d.step_to), (to, step_to), "{policy:?}");
        assert_eq!(starts(&fx), now, "{policy:?}");
    }
}

/// Slaves that do not catch up hold the next starts back, and the decision
/// gives them up after its patience; a failed start frees its room.
#[test]
fn starts_wait_for_slaves_catching_up_within_patience() {
    let mut core = ScalerCore::new(ScalePolicy::default());
    core.on(
        Input::DecideNow {
            reads: 200,
            ticket: 1,
        },
        0,
    );
    let mut view = cluster(1);
    view.workers.push(member(9, MemberState::CatchingUp));
    view.starting = vec![7];
    let fx = core.on(Input::Cluster(view.clone()), 0);
    assert_eq!(starts(&fx), 0);
    view.starting.clear();
    let fx = core.on(Input::Tick { reads: 200 }, 100);
    assert_eq!(fx, vec![Effect::Observe]);
    assert_eq!(starts(&core.on(Input::Cluster(view.clone()), 100)), 1);
    let fx = core.on(
        Input::StartFailed {
            id: Some(10),
            error: "no room".into(),
        },
        200,
    );
    assert_eq!(fx, vec![Effect::Observe]);
    assert_eq!(starts(&core.on(Input::Cluster(view.clone()), 200)), 1);
    core.on(Input::Started { id: 11 }, 300);
    view.workers.push(member(11, MemberState::Unregistered));
    core.on(Input::Tick { reads: 200 }, 400);
    assert_eq!(starts(&core.on(Input::Cluster(view.clone()), 400)), 0);
    let fx = core.on(Input::Tick { reads: 200 }, 300 + CATCH_UP_PATIENCE_MS);
    let d = answer(&fx).unwrap().as_ref().unwrap();
    assert_eq!(d.started, vec![11]);
    let outcome = d.outcome.clone().unwrap();
    assert!(
        outcome.contains("worker 10 did not start (no room)"),
        "{outcome}"
    );
    assert!(outcome.contains("2 not started: slaves still catching up after 60 s"));
}

/// A newer decision ends the one under way: what it had not begun is
/// dropped, and the newer waits for what is under way.
#[test]
fn a_newer_decision_supersedes_the_one_under_way() {
    let mut core = ScalerCore::new(ScalePolicy::default());
    window(&mut core, 74_000);
    let mut view = cluster(1);
    assert_eq!(starts(&core.on(Input::Cluster(view.clone()), WINDOW)), 2);
    let fx = core.on(
        Input::DecideNow {
            reads: 74_000,
            ticket: 1,
        },
        WINDOW,
    );
    assert!(fx.is_empty(), "two starts under way: {fx:?}");
    view.workers.push(member(10, MemberState::CatchingUp));
    assert_eq!(core.on(Input::Started { id: 10 }, WINDOW), vec![]);
    let fx = core.on(Input::Started { id: 11 }, WINDOW);
    let Some(Effect::Finished(old)) = fx.first() else {
        panic!("{fx:?}")
    };
    assert!(old
        .outcome
        .as_deref()
        .unwrap()
        .contains("2 not started: a newer decision came"));
    assert!(fx.contains(&Effect::Observe));
    view.workers.push(member(11, MemberState::CatchingUp));
    let fx = core.on(Input::Cluster(view), WINDOW);
    let d = announced(&fx).unwrap();
    // 74,000 reads before the window's end and none since it.
    assert_eq!((d.reads, d.from, d.to, d.step_to), (0, 3, 1, 1));
}
