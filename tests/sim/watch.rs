//! The watcher's world: the simulated coordinator (registrations and
//! `/master`), the runtime (starts, kills, what runs), and the driver
//! that feeds the production [`WatcherCore`] and carries out its
//! effects, each a little late when a real driver would be.

use std::collections::{BTreeMap, BTreeSet};

use dbaas::coord::election::{MasterRecord, WorkerReport};
use dbaas::core::election::{ballot, Ballot, Succession};
use dbaas::core::watcher::{Effect, Input, Running};

use super::world::{Role, World};

impl World {
    /// What the runtime lists: every worker process alive (paused too).
    pub fn running(&self) -> Vec<Running> {
        self.workers
            .values()
            .filter(|w| w.alive)
            .map(|w| Running {
                id: w.id,
                pid: w.pid,
            })
            .collect()
    }

    /// The registered workers' reports, by pid.
    pub fn view(&self) -> BTreeMap<u64, WorkerReport> {
        self.workers
            .values()
            .filter(|w| w.alive && w.registered)
            .map(|w| (w.pid, w.report(self.now)))
            .collect()
    }

    /// Sends the watcher `input`, arriving up to `lag` ms later.
    pub(super) fn tell(&mut self, input: Input, lag: u64) {
        let at = self.now + self.rng.u64(0..=lag);
        self.inbox.push((at, input));
    }

    /// Delivers what is due to the watcher, and now and then a fresh
    /// view (its watches fire, and it reads the reports every second).
    pub(super) fn deliver(&mut self) {
        let now = self.now;
        if self.rng.u8(0..4) == 0 {
            let view = self.view();
            self.inbox.push((now, Input::View(view)));
        }
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.inbox)
            .into_iter()
            .partition(|(at, _)| *at <= now);
        self.inbox = later;
        for (_, input) in due {
            let running = self.running();
            let effects = self.watcher.on(input, now, &running);
            self.carry_out(effects);
            self.kept = self.watcher.succession();
        }
    }

    pub(super) fn carry_out(&mut self, effects: Vec<Effect>) {
        let lag = self.setup.watch_lag;
        for effect in effects {
            match effect {
                Effect::Elect {
                    dead,
                    succession,
                    known,
                    leaving,
                } => {
                    self.kept = succession.record();
                    let outcome = self.election(dead, &succession, known, &leaving);
                    self.tell(Input::Elected(outcome), lag);
                }
                Effect::Start {
                    id,
                    tries,
                    after_ms,
                } => {
                    // A runtime need not refuse a second start of a worker
                    // while the first is under way (the process runtime
                    // did not: two processes over one store).
                    if !self.starts_asked.insert(id) {
                        self.broken
                            .push(format!("two starts of worker {id} under way at once"));
                    }
                    let (lo, hi) = self.setup.respawn_after;
                    let at = self.now + after_ms + self.rng.u64(lo..=hi);
                    self.starts.push((at, id, tries, self.leadership));
                }
                Effect::Kill { id, pid } => {
                    if self
                        .workers
                        .get(&id)
                        .is_some_and(|w| w.alive && w.pid == pid)
                    {
                        self.die(id);
                        // The runtime sees the process exit too, before
                        // or after the kill is told done.
                        let exit = Input::Exited {
                            id,
                            pid,
                            expected: false,
                            gone: true,
                        };
                        self.tell(exit, lag);
                    }
                    self.tell(Input::HungKilled { id, pid }, lag);
                }
                Effect::Wake { timer, after_ms } => {
                    let at = self.now + after_ms;
                    self.inbox.push((at, Input::Woke(timer)));
                }
                Effect::Event { kind, detail } => self.log(format!("watcher {kind}: {detail}")),
                Effect::Warn(what) => self.log(format!("watcher: {what}")),
                Effect::DeleteNode { .. } | Effect::SetEpoch(_) => {}
            }
        }
    }

    /// One election against the coordinator: a ballot on what it holds
    /// now, written at once (one watcher: the compare-and-set holds).
    fn election(
        &mut self,
        dead: Option<u64>,
        succession: &Succession,
        known: Option<i32>,
        leaving: &BTreeSet<u64>,
    ) -> Result<((MasterRecord, i32), bool), String> {
        let view = self.view();
        let changed = known.is_some_and(|k| k != self.version);
        match ballot(
            &view,
            self.master.as_ref(),
            changed,
            dead,
            succession,
            leaving,
        ) {
            Ballot::Keep => {
                let m = self.master.ok_or("no master")?;
                Ok(((m, self.version), false))
            }
            Ballot::Elect(m) => {
                self.master = Some(m);
                self.version += 1;
                let among: Vec<String> = view
                    .values()
                    .map(|r| {
                        format!(
                            "{}:{:?}/{}/{}@{}",
                            r.id, r.role, r.ready, r.applied, r.last_epoch
                        )
                    })
                    .collect();
                self.log(format!(
                    "elected worker {} (pid {}) for epoch {} (dead {dead:?}, heirs {:?}, among {})",
                    m.id,
                    m.pid,
                    m.epoch,
                    succession.heirs(),
                    among.join(" ")
                ));
                let lag = self.setup.watch_lag;
                self.tell(Input::Master(Some((m, self.version))), lag);
                Ok(((m, self.version), true))
            }
            Ballot::Wait(why) => Err(why),
        }
    }

    /// Starts that are done: the worker runs again over its own store,
    /// registers, and begins as a slave that needs a snapshot.
    pub(super) fn finish_starts(&mut self) {
        let now = self.now;
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.starts)
            .into_iter()
            .partition(|&(at, _, _, _)| at <= now);
        self.starts = later;
        for (_, id, tries, asked_by) in due {
            // An earlier leader's start finishes for nobody: its watcher
            // is gone (the new one finds the worker in its views).
            let told = tries > 0 && asked_by == self.leadership;
            if told {
                self.starts_asked.remove(&id);
            }
            let runs = self.workers.get(&id).is_some_and(|w| w.alive);
            let result = if runs {
                Err(format!("worker {id} runs already"))
            } else {
                Ok(self.revive(id))
            };
            // (Told a moment later: the worker may run, and be seen to,
            // before its watcher hears its start is done.)
            if told {
                let lag = self.setup.watch_lag;
                self.tell(Input::Started { id, result, tries }, lag);
            }
        }
    }

    pub(super) fn revive(&mut self, id: u64) -> u64 {
        let pid = self.pid();
        let w = self
            .workers
            .entry(id)
            .or_insert_with(|| super::world::Worker::new(id));
        w.alive = true;
        w.registered = true;
        w.pid = pid;
        w.role = Role::Slave;
        w.core = dbaas::core::role::RoleCore::new(pid);
        self.log(format!("worker {id} started, pid {pid}"));
        self.start_replica(id);
        pid
    }

    /// A paused worker's session ends after `session_ms`; one resumed
    /// registers again (a new session). While the coordinator is `away`
    /// no session expires, and one that did is not made again (the
    /// worker, resumed, stays out of turn until the coordinator is back).
    pub(super) fn sessions(&mut self, away: bool) {
        let (now, session) = (self.now, self.setup.session_ms);
        let mut events = Vec::new();
        let mut rejoined = Vec::new();
        for w in self.workers.values_mut().filter(|w| w.alive) {
            match w.paused_until {
                Some(until) if until <= now && (w.registered || !away) => {
                    w.paused_until = None;
                    if !w.registered {
                        w.registered = true;
                        rejoined.push(w.id);
                        events.push(format!("worker {} resumed, registers again", w.id));
                    }
                }
                Some(_) if !away && w.registered && now >= w.paused_at + session => {
                    // The lease is shorter than the session: gone first.
                    w.registered = false;
                    w.leased = false;
                    events.push(format!("worker {}'s session expired", w.id));
                }
                _ => {}
            }
        }
        for e in events {
            self.log(e);
        }
        // A new session: the worker's replica hears it before its first
        // report (the driver tells it before it registers).
        for id in rejoined {
            self.replica_step(id, dbaas::core::replica::Input::Rejoined);
        }
    }
}
