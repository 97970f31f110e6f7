//! The simulated Scaler: a driver around the production [`ScalerCore`],
//! as `actors::scaler` is. Clients' reads are counted; every 100 ms the
//! core hears the count; it looks at the cluster through the watcher,
//! starts slaves under ids the watcher hands out and retires slaves the
//! watcher agrees to (a stop on purpose: announced, its queue and its
//! store go with it, never replaced).

use std::time::Duration;

use dbaas::core::scaler::{
    ClusterSnapshot, Effect, Input, Member, MemberState, ScalePolicy, ScalerCore,
};
use dbaas::core::watcher::Input as WatcherInput;

use super::world::{Role, Store, World};

/// How often the driver looks for a window's end.
const POLL_MS: u64 = 100;

/// A policy quick enough for short runs.
pub fn policy() -> ScalePolicy {
    ScalePolicy {
        window: Duration::from_millis(300),
        reads_per_slave: 20,
        min_slaves: 1,
        max_slaves: Some(4),
        max_step: Some(2),
    }
}

impl World {
    /// The Scaler's turn.
    pub(super) fn scale(&mut self) {
        if self.now.is_multiple_of(POLL_MS) {
            let reads = self.reads;
            self.scaler_step(Input::Tick { reads });
        }
    }

    pub(super) fn scaler_step(&mut self, input: Input) {
        let now = self.now;
        let Some(scaler) = self.scaler.as_mut() else {
            return;
        };
        let effects = scaler.on(input, now);
        for effect in effects {
            self.scaler_effect(effect);
        }
    }

    fn scaler_effect(&mut self, effect: Effect) {
        match effect {
            Effect::Observe => {
                let snapshot = self.cluster_snapshot();
                self.scaler_inbox.push(Input::Cluster(snapshot));
            }
            Effect::Announce(d) => self.log(format!(
                "scaler decides from {} to {}: {}",
                d.from, d.to, d.reason
            )),
            Effect::NoDecision { detail } => self.log(format!("scaler: {detail}")),
            Effect::StartSlave => {
                let running = self.running();
                let id = self.watcher.reserve_id(&running);
                let (lo, hi) = self.setup.respawn_after;
                let at = self.now + self.rng.u64(lo..=hi);
                self.scaler_starts.push((at, id));
            }
            Effect::Retire { id, pid } => self.retire(id, pid),
            Effect::Finished(d) => {
                let outcome = d.outcome.unwrap_or_default();
                self.log(format!("scaler done: {outcome}"));
            }
            Effect::Answer { .. } | Effect::Stopped => {}
        }
    }

    /// What the Scaler sees: the master that leads, every worker running
    /// and its state in the watcher's view.
    fn cluster_snapshot(&self) -> ClusterSnapshot {
        let view = self.watcher.view();
        let master = self.watcher.master().map(|m| m.pid).filter(|pid| {
            view.get(pid)
                .is_some_and(|r| r.role == dbaas::coord::election::ReportedRole::Master)
        });
        let workers = self
            .running()
            .into_iter()
            .map(|r| {
                let state = match view.get(&r.pid) {
                    None => MemberState::Unregistered,
                    Some(_) if Some(r.pid) == master => MemberState::Leading,
                    Some(rep) if rep.ready => MemberState::Serving,
                    Some(rep) if rep.role == dbaas::coord::election::ReportedRole::Slave => {
                        MemberState::CatchingUp
                    }
                    Some(_) => MemberState::Other,
                };
                Member {
                    id: r.id,
                    pid: r.pid,
                    state,
                }
            })
            .collect();
        ClusterSnapshot {
            master,
            workers,
            starting: self.watcher.starting_ids(),
        }
    }

    /// Stops worker `id` on purpose for good, once the watcher agrees.
    fn retire(&mut self, id: u64, pid: u64) {
        let alive = self
            .workers
            .get(&id)
            .is_some_and(|w| w.alive && w.pid == pid);
        if !alive || !self.watcher.retiring(pid) {
            self.scaler_inbox.push(Input::RetireRefused { id });
            return;
        }
        let stopping = WatcherInput::Exited {
            id,
            pid,
            expected: true,
            gone: false,
        };
        self.tell(stopping, 0);
        self.die(id);
        let w = self.worker(id);
        w.retired = true;
        w.store = Store::default();
        w.role = Role::Idle;
        self.queues.remove(&id);
        let gone = WatcherInput::Exited {
            id,
            pid,
            expected: true,
            gone: true,
        };
        self.tell(gone, 0);
        self.log(format!("scaler retired worker {id}"));
        self.scaler_inbox.push(Input::Retired { id, error: None });
    }

    /// Scaler starts that are done, and what the core is owed.
    pub(super) fn scaler_deliver(&mut self) {
        let now = self.now;
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.scaler_starts)
            .into_iter()
            .partition(|&(at, _)| at <= now);
        self.scaler_starts = later;
        for (_, id) in due {
            let runs = self.workers.get(&id).is_some_and(|w| w.alive);
            if runs {
                let error = format!("worker {id} runs already");
                self.scaler_inbox.push(Input::StartFailed {
                    id: Some(id),
                    error,
                });
            } else {
                self.revive(id);
                self.scaler_inbox.push(Input::Started { id });
            }
        }
        for input in std::mem::take(&mut self.scaler_inbox) {
            self.scaler_step(input);
        }
    }

    /// Asks the Scaler for a decision now, on the reads counted so far.
    pub fn decide_now(&mut self) {
        let reads = self.reads;
        self.scaler_step(Input::DecideNow { reads, ticket: 1 });
        // Its look at the cluster, at once.
        for input in std::mem::take(&mut self.scaler_inbox) {
            self.scaler_step(input);
        }
    }

    /// A worker that runs while the watcher still counts it as being
    /// started (its start is done; the watcher has not heard yet).
    pub fn started_unheard(&self) -> Option<u64> {
        let starting = self.watcher.starting_ids();
        let running = self.running();
        running
            .iter()
            .map(|r| r.id)
            .find(|id| starting.contains(id))
    }

    /// Starts the Scaler with `policy` (off until then).
    pub fn with_scaler(&mut self, policy: ScalePolicy) {
        self.scaler = Some(ScalerCore::new(policy));
    }
}
