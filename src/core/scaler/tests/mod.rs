//! Table tests of the Scaler's state machine, on a virtual clock, with a
//! small model of the cluster that carries out its effects.

mod down;
mod up;

use super::*;

const MASTER: u64 = 100;
const WINDOW: u64 = 120_000;

/// A worker of the model: id, pid, state.
fn member(id: u64, state: MemberState) -> Member {
    Member {
        id,
        pid: 100 + id,
        state,
    }
}

/// A cluster of a leading master (id 0) and `slaves` serving slaves.
fn cluster(slaves: u64) -> ClusterSnapshot {
    let mut workers = vec![member(0, MemberState::Leading)];
    workers.extend((1..=slaves).map(|id| member(id, MemberState::Serving)));
    ClusterSnapshot {
        master: Some(MASTER),
        workers,
        starting: Vec::new(),
    }
}

fn starts(fx: &[Effect]) -> usize {
    fx.iter().filter(|e| **e == Effect::StartSlave).count()
}

fn announced(fx: &[Effect]) -> Option<&ScaleDecision> {
    fx.iter().find_map(|e| match e {
        Effect::Announce(d) => Some(d),
        _ => None,
    })
}

fn answer(fx: &[Effect]) -> Option<&Result<ScaleDecision, String>> {
    fx.iter().find_map(|e| match e {
        Effect::Answer { result, .. } => Some(result),
        _ => None,
    })
}

/// A window of `reads` on `policy` that ends: its first read at 0, the
/// ticks up to its end; answers the effects of the last tick.
fn window(core: &mut ScalerCore, reads: u64) -> Vec<Effect> {
    assert!(core.on(Input::Tick { reads }, 0).is_empty());
    assert!(core.on(Input::Tick { reads }, WINDOW - 1).is_empty());
    core.on(Input::Tick { reads }, WINDOW)
}
