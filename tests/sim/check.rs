//! The checker: what must hold at the end of every run, Jepsen-style,
//! over the history the world kept.

use dbaas::coord::election::ReportedRole;

use super::world::{invalid, Role, World};

/// Steps the world may take, once faults stop, to have a master leading,
/// every write answered and every worker caught up.
pub const SETTLE_WITHIN: u64 = 5_000;
/// Steps the world may take after that to serve every strong read a
/// client still asks (one may wait an attempt out on a slave that was
/// paused, then a gap's repair).
pub const READS_WITHIN: u64 = 15_000;

/// Runs the world without faults until it is quiet, then checks it.
pub fn settle(w: &mut World) -> Result<(), String> {
    w.calm = true;
    let from = w.now;
    while !quiet(w) {
        if w.now - from > SETTLE_WITHIN {
            if std::env::var("DBAAS_SIM_DEBUG").is_ok() {
                eprintln!("{:#?}", w.watcher);
            }
            return Err(format!(
                "liveness: not settled {SETTLE_WITHIN} ms after the faults stopped \
                 (leader: {:?}, /master: {:?}, the watcher's view: {:?}, writes waiting: {}, workers: {:?})",
                w.leader().map(|l| l.id),
                w.master,
                w.watcher
                    .view()
                    .values()
                    .map(|r| (r.id, r.pid, r.role, r.ready))
                    .collect::<Vec<_>>(),
                w.write_q.len(),
                w.workers
                    .values()
                    .map(|x| (x.id, x.alive, x.role, x.ready(w.now), x.store.applied.len()))
                    .collect::<Vec<_>>()
            ));
        }
        w.step();
    }
    // Every strong read a client still asks is served, and the world is
    // quiet again (the steps this takes may carry out what the watcher
    // decided before).
    let from = w.now;
    while !(w.reads_state.outstanding.is_empty() && quiet(w)) {
        if w.now - from > READS_WITHIN {
            return Err(format!(
                "liveness: strong reads {:?} not served, or the world not quiet again, \
                 {READS_WITHIN} ms after it settled",
                w.reads_state.outstanding.keys().collect::<Vec<_>>()
            ));
        }
        w.step();
    }
    check(w)
}

/// A master leads, every write is answered, every worker is alive, ready
/// and as far as the master.
fn quiet(w: &World) -> bool {
    let Some(leader) = w.leader() else {
        return false;
    };
    let head = leader.store.applied.len();
    w.write_q.is_empty()
        && w.publishes.is_empty()
        && w.leading.values().all(|l| l.groups.is_empty())
        && w.workers.values().filter(|x| !x.retired).all(|x| {
            x.alive
                && (x.id == leader.id
                    || (x.role == Role::Slave
                        && x.core.reported() == ReportedRole::Slave
                        && x.ready(w.now)
                        && x.store.applied.len() == head))
        })
}

/// The promises, on the settled world.
pub fn check(w: &World) -> Result<(), String> {
    if let Some(why) = w.broken.first() {
        return Err(why.clone());
    }
    let leader = w.leader().ok_or("no leader")?;
    let history = &leader.store.applied;
    for (i, r) in history.iter().enumerate() {
        if r.seq != i as u64 + 1 {
            return Err(format!("one order: seq {} at position {}", r.seq, i + 1));
        }
    }
    let mut writes: Vec<u64> = history.iter().map(|r| r.write).collect();
    writes.sort_unstable();
    if let Some(twice) = writes.windows(2).find(|p| p[0] == p[1]) {
        return Err(format!("exactly once: write {} applied twice", twice[0]));
    }
    // A refused write never applies, and a write that breaks the schema
    // is never acknowledged as applied.
    if let Some(r) = history.iter().find(|r| invalid(r.write) != r.refused) {
        return Err(format!(
            "a refused write applied: write {} at seq {} (refused: {})",
            r.write, r.seq, r.refused
        ));
    }
    if let Some(bad) = w.acked.iter().find(|&&a| invalid(a)) {
        return Err(format!(
            "write {bad} breaks the schema, yet was acknowledged"
        ));
    }
    let lost: Vec<u64> = w
        .acked
        .iter()
        .filter(|a| writes.binary_search(a).is_err())
        .copied()
        .collect();
    if !lost.is_empty() {
        return Err(format!("acknowledged writes lost: {lost:?}"));
    }
    for x in w.workers.values().filter(|x| !x.retired) {
        let n = x.store.applied.len().min(history.len());
        if x.store.applied[..n] != history[..n] {
            return Err(format!("replicas disagree: worker {} and the master", x.id));
        }
    }
    Ok(())
}
