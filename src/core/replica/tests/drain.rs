//! The drain of an elected replica: everything up to its own fence, then
//! a flush; a gap or a diverged store fails it.

use super::*;

fn fence(worker: u64, nonce: u64) -> SyncItem {
    SyncItem::Fence { worker, nonce }
}

fn drain_done(fx: &[Effect]) -> Option<Result<u64, String>> {
    fx.iter().find_map(|e| match e {
        Effect::DrainDone { result, .. } => Some(result.clone()),
        _ => None,
    })
}

#[test]
fn a_drain_applies_everything_up_to_its_fence_then_flushes() {
    let l = lineage(&[(1, 0)]);
    let mut r = Replica::caught_up(0, l.clone());
    let (parked, _) = r.read(9);
    let fx = r.on(Input::Drain {
        nonce: 42,
        heir: false,
    });
    assert!(fx.contains(&Effect::PublishFence { nonce: 42 }));
    assert_eq!(requeued(&fx), vec![parked]);
    assert_eq!(
        reads_switched(&fx),
        vec![&Effect::StopConsuming(Consumer::Reads)]
    );
    // Another replica's fence, or an earlier drain's, is not this one's.
    let (_, fx) = r.syncs(vec![
        batch(&l, 1, 1..=2),
        fence(ID + 1, 42),
        fence(ID, 41),
        batch(&l, 1, 3..=3),
    ]);
    assert_eq!(run(&fx), Some((1, 3)));
    let (token, fx) = r.sync(fence(ID, 42));
    assert_eq!(acked(&fx), vec![token]);
    let fx = r.applied(3);
    assert!(fx.contains(&Effect::Flush { nonce: 42 }), "{fx:?}");
    let fx = r.on(Input::Flushed {
        nonce: 42,
        result: Ok(3),
    });
    assert_eq!(drain_done(&fx), Some(Ok(3)));
    let (read, fx) = r.read(0);
    assert_eq!(requeued(&fx), vec![read], "no reads served after a drain");
}

#[test]
fn a_drain_fails_on_a_gap_left_at_its_fence_and_resume_serves_again() {
    let l = lineage(&[(1, 0)]);
    let mut r = Replica::caught_up(0, l.clone());
    r.on(Input::Drain {
        nonce: 1,
        heir: false,
    });
    let (_, fx) = r.syncs(vec![batch(&l, 1, 3..=4), fence(ID, 1)]);
    let Some(Err(why)) = drain_done(&fx) else {
        panic!("no failure in {fx:?}");
    };
    assert!(why.contains("a gap after seq 0"), "{why}");
    let fx = r.on(Input::Resume);
    assert_eq!(reads_switched(&fx), vec![&Effect::Consume(Consumer::Reads)]);
}

#[test]
fn a_drain_applies_even_before_a_first_snapshot() {
    let l = lineage(&[(1, 0)]);
    let mut r = Replica::new(0, l.clone());
    r.on(Input::Start);
    r.on(Input::Consuming(Consumer::Sync));
    r.on(Input::Drain {
        nonce: 5,
        heir: false,
    });
    let (_, fx) = r.syncs(vec![batch(&l, 1, 1..=2), fence(ID, 5)]);
    assert_eq!(run(&fx), Some((1, 2)));
    assert!(r.applied(2).contains(&Effect::Flush { nonce: 5 }));
    let fx = r.on(Input::Flushed {
        nonce: 5,
        result: Ok(2),
    });
    assert_eq!(drain_done(&fx), Some(Ok(2)));
}

#[test]
fn a_fence_that_cannot_be_published_or_a_flush_that_fails_fails_the_drain() {
    let mut r = Replica::caught_up(0, lineage(&[(1, 0)]));
    r.on(Input::Drain {
        nonce: 8,
        heir: false,
    });
    let error = "broker away".to_string();
    let fx = r.on(Input::FenceFailed { nonce: 8, error });
    assert!(matches!(drain_done(&fx), Some(Err(why)) if why.contains("broker away")));
    r.on(Input::Resume);
    r.on(Input::Drain {
        nonce: 9,
        heir: false,
    });
    let fx = r.sync(fence(ID, 9)).1;
    assert!(fx.contains(&Effect::Flush { nonce: 9 }));
    let fx = r.on(Input::Flushed {
        nonce: 9,
        result: Err("io".into()),
    });
    assert_eq!(drain_done(&fx), Some(Err("io".into())));
}

#[test]
fn a_diverged_replica_does_not_drain() {
    let mut r = Replica::caught_up(20, lineage(&[(1, 0)]));
    r.on(Input::Drain {
        nonce: 3,
        heir: false,
    });
    let two = lineage(&[(1, 0), (2, 15)]);
    let (_, fx) = r.syncs(vec![batch(&two, 2, 21..=21), fence(ID, 3)]);
    let Some(Err(why)) = drain_done(&fx) else {
        panic!("no failure in {fx:?}");
    };
    assert!(why.contains("diverged"), "{why}");
}

/// A replica back from a new coordinator session is not trusted until a
/// master says it is current: elected as a ready slave, its drain fails;
/// elected as an heir (nobody caught up, its store vouched for by the
/// election), it leads, since no master is left to say so.
#[test]
fn a_replica_not_confirmed_current_drains_only_as_an_heir() {
    for heir in [false, true] {
        let l = lineage(&[(1, 0)]);
        let mut r = Replica::caught_up(0, l.clone());
        r.on(Input::Rejoined);
        assert!(!r.core.status(0).ready, "not ready while unconfirmed");
        r.on(Input::Drain { nonce: 7, heir });
        let (_, fx) = r.sync(fence(ID, 7));
        let fx = if heir {
            r.on(Input::Flushed {
                nonce: 7,
                result: Ok(0),
            })
        } else {
            fx
        };
        match (heir, drain_done(&fx)) {
            (false, Some(Err(why))) => assert!(why.contains("not yet told"), "{why}"),
            (true, Some(Ok(0))) => {}
            (_, got) => panic!("heir {heir}: {got:?} in {fx:?}"),
        }
    }
}
