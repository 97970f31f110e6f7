//! How the watcher's state moves on each input.

use std::collections::BTreeMap;

use super::{
    Effect, Fate, Input, Running, Timer, WatcherCore, ELECTION_RETRY_MS, FORGET_BURIED_MS,
    GRACE_MS, PROMOTION_MS, REMEMBERED, RESPAWN_TRIES, RESPAWN_WAIT_MS, STARTUP_WAIT_MS,
};
use crate::coord::election::{MasterRecord, ReportedRole, WorkerReport};

/// A stand-in report for a master named before the view shows it.
fn provisional(m: MasterRecord) -> WorkerReport {
    WorkerReport {
        id: m.id,
        pid: m.pid,
        role: ReportedRole::Promoting,
        applied: 0,
        last_epoch: 0,
        epoch: m.epoch,
        ready: false,
        session: 0,
    }
}

/// The effects of one input, gathered.
type Fx = Vec<Effect>;

fn event(fx: &mut Fx, kind: &'static str, detail: String) {
    fx.push(Effect::Event { kind, detail });
}

impl WatcherCore {
    /// Moves on `input` at `now`, with the workers the runtime lists.
    pub fn on(&mut self, input: Input, now: u64, running: &[Running]) -> Vec<Effect> {
        let mut fx = Fx::new();
        match input {
            Input::Connected => {
                if self.coord_seen {
                    // Opened again: a coordinator outage may just have
                    // ended, and the workers are registering again.
                    self.grace_until = now + GRACE_MS;
                }
                self.coord_seen = true;
                self.connected = true;
            }
            Input::Disconnected => self.connected = false,
            Input::View(view) => self.on_view(view, now, running, &mut fx),
            Input::Master(record) => {
                if let Some((m, _)) = record {
                    fx.push(Effect::SetEpoch(m.epoch));
                }
                self.learn_master(record);
                self.check_master(now, &mut fx);
            }
            Input::Exited {
                id,
                pid,
                expected,
                gone,
            } => self.on_exit(id, pid, expected, gone, now, running, &mut fx),
            Input::Crashed { pid } => self.on_gone(pid, true, now, running, &mut fx),
            Input::Elected(res) => self.on_elected(res, now, &mut fx),
            Input::Woke(Timer::CheckMaster) => self.check_master(now, &mut fx),
            Input::Woke(Timer::CheckHung { pid }) => self.check_hung(pid, now, running, &mut fx),
            Input::Woke(Timer::CheckPromotion { pid, epoch }) => {
                self.check_promotion(pid, epoch, now, running, &mut fx)
            }
            Input::Started { id, result, tries } => {
                self.on_started(id, result, tries, running, &mut fx)
            }
            Input::HungKilled { id, pid } => {
                if !self.stopped {
                    // An elected worker killed for not taking its
                    // election: dead now, so another is elected.
                    if self.master_pid() == Some(pid) {
                        self.succession.master_lost(id);
                        self.elect(Some(pid), &mut fx);
                    }
                    self.respawn(Some(id), pid, running, &mut fx);
                }
            }
            Input::Stop => self.stopped = true,
        }
        fx
    }

    fn on_view(
        &mut self,
        view: BTreeMap<u64, WorkerReport>,
        now: u64,
        running: &[Running],
        fx: &mut Fx,
    ) {
        let gone: Vec<u64> = self
            .view
            .keys()
            .filter(|pid| !view.contains_key(pid))
            .copied()
            .collect();
        for r in view.values() {
            let fate = self.fate(r.pid);
            if let Some(Fate::Hung { .. }) = fate {
                event(
                    fx,
                    "back",
                    format!("worker pid {} is back and follows", r.pid),
                );
            }
            // A pid registered again (a reused pid, a worker back with a
            // new session) may die again; one leaving stays leaving.
            if fate != Some(Fate::Leaving) {
                self.known.insert(r.pid, (r.id, Fate::Live));
            }
            self.last_id = self.last_id.max(r.id);
        }
        self.view = view;
        // A master that leads (drained, takes writes) ends what a death
        // left open.
        if let Some(id) = self.leads() {
            self.succession.master_leads(id);
        }
        for pid in gone {
            self.on_gone(pid, false, now, running, fx);
        }
        self.check_master(now, fx);
        self.forget_the_long_gone(now, running);
    }

    /// A worker's node went (`seen`: the runtime saw it exit).
    fn on_gone(&mut self, pid: u64, seen: bool, now: u64, running: &[Running], fx: &mut Fx) {
        let fate = self.fate(pid);
        if fate == Some(Fate::Leaving) {
            self.view.remove(&pid); // stopped on purpose: its exit follows
            return;
        }
        let handled = matches!(fate, Some(Fate::Buried { .. } | Fate::Hung { .. }));
        if self.stopped || handled {
            return;
        }
        let id = self.id_of(pid);
        self.view.remove(&pid);
        self.known
            .insert(pid, (id.unwrap_or(0), Fate::Buried { at: now }));
        let was_master = self.master_pid() == Some(pid);
        if let Some(id) = id.filter(|_| was_master) {
            self.succession.master_lost(id);
        } else if let Some(id) = id {
            self.succession.worker_lost(id);
        }
        let how = if seen { "exited" } else { "lost its session" };
        event(fx, "death", format!("worker pid {pid} {how}"));
        if seen {
            fx.push(Effect::DeleteNode { pid });
        }
        if was_master {
            self.master_lost(pid, seen, now, fx);
        }
        // Its session ended but its process runs on: no second worker
        // for it; it comes back, or it is killed and started again.
        let alive = id.filter(|&id| !seen && running.contains(&Running { id, pid }));
        if let Some(id) = alive {
            let until = now + self.hung_after;
            self.known.insert(pid, (id, Fate::Hung { until }));
            fx.push(Effect::Wake {
                timer: Timer::CheckHung { pid },
                after_ms: self.hung_after,
            });
            return;
        }
        self.respawn(id, pid, running, fx);
    }

    /// The master is dead (`seen`) or lost its session: elect another,
    /// after the grace that follows the watcher's own reconnection.
    fn master_lost(&mut self, pid: u64, seen: bool, now: u64, fx: &mut Fx) {
        let wait = self.grace_until.saturating_sub(now);
        if !seen && wait > 0 {
            fx.push(Effect::Wake {
                timer: Timer::CheckMaster,
                after_ms: wait,
            });
            return;
        }
        self.elect(Some(pid), fx);
    }

    /// A worker whose session ended and that did not come back in time
    /// is hung: killed through the runtime and started again.
    fn check_hung(&mut self, pid: u64, now: u64, running: &[Running], fx: &mut Fx) {
        let Some(&(id, Fate::Hung { .. })) = self.known.get(&pid) else {
            return; // back, or exited and replaced
        };
        self.known.insert(pid, (id, Fate::Buried { at: now }));
        if self.stopped {
            return;
        }
        if !running.contains(&Running { id, pid }) {
            self.respawn(Some(id), pid, running, fx);
            return;
        }
        let detail = format!("worker {id} (pid {pid}) did not come back; killing it");
        event(fx, "hung", detail);
        fx.push(Effect::Kill { id, pid });
    }

    /// A worker elected for `epoch` that still reports itself a slave of
    /// an older one [`PROMOTION_MS`] later is not running (paused, stuck
    /// within its session): taken for hung, its node deleted (so that no
    /// view or election counts it again) and killed through the runtime;
    /// once the kill is done, the election runs again without it. It is
    /// never elected over before it is killed: resumed, it could lead.
    fn check_promotion(
        &mut self,
        pid: u64,
        epoch: u64,
        now: u64,
        running: &[Running],
        fx: &mut Fx,
    ) {
        let Some((m, _)) = self.master else {
            return;
        };
        let named = m.pid == pid && m.epoch == epoch;
        let idle = self
            .view
            .get(&pid)
            .is_some_and(|r| r.role == ReportedRole::Slave && r.epoch < epoch);
        let ours = running.contains(&Running { id: m.id, pid });
        if self.stopped || !named || !idle || !ours || self.fate(pid) != Some(Fate::Live) {
            return;
        }
        self.known.insert(pid, (m.id, Fate::Hung { until: now }));
        self.view.remove(&pid);
        let detail = format!(
            "worker {} (pid {pid}) elected for epoch {epoch} did not take it within {PROMOTION_MS} ms; killing it",
            m.id
        );
        event(fx, "hung", detail);
        fx.push(Effect::DeleteNode { pid });
        fx.push(Effect::Kill { id: m.id, pid });
    }

    /// Starts a replacement: the dead worker again over its own store, or
    /// a worker with a new id if that one runs; nothing if it runs again
    /// already under another pid, or is being started (one death seen
    /// twice: its exit, then a view that still held its node and then
    /// did not; two processes over one store otherwise).
    fn respawn(&mut self, dead: Option<u64>, dead_pid: u64, running: &[Running], fx: &mut Fx) {
        let runs = |id: u64| running.iter().any(|w| w.id == id);
        if let Some(id) = dead {
            if self.starting.contains(&id) {
                // The process being started may be the one that died:
                // judged when the start is told done.
                self.died_starting.entry(id).or_default().insert(dead_pid);
                return;
            }
            if running.iter().any(|w| w.id == id && w.pid != dead_pid) {
                return;
            }
        }
        let id = match dead.filter(|&id| !runs(id)) {
            Some(id) => id,
            None => self.reserve_id(running),
        };
        self.start(id, RESPAWN_TRIES, 0, fx);
    }

    fn start(&mut self, id: u64, tries: u32, after_ms: u64, fx: &mut Fx) {
        if !self.starting.insert(id) {
            return; // under way already
        }
        fx.push(Effect::Start {
            id,
            tries,
            after_ms,
        });
    }

    fn on_started(
        &mut self,
        id: u64,
        result: Result<u64, String>,
        tries: u32,
        running: &[Running],
        fx: &mut Fx,
    ) {
        self.starting.remove(&id);
        let died = self.died_starting.remove(&id).unwrap_or_default();
        match result {
            Ok(pid) if died.contains(&pid) => {
                event(
                    fx,
                    "respawn",
                    format!("worker {id} started, pid {pid}, and died before that was told"),
                );
                if !self.stopped {
                    self.respawn(Some(id), pid, running, fx);
                }
            }
            Ok(pid) => event(fx, "respawn", format!("worker {id} started, pid {pid}")),
            Err(e) => {
                event(fx, "respawn", format!("worker {id} did not start: {e}"));
                if tries > 1 && !self.stopped {
                    self.start(id, tries - 1, RESPAWN_WAIT_MS, fx);
                }
            }
        }
    }

    /// Elects when there is no live master (or it declined): once every
    /// expected worker has registered, or the startup wait is over.
    fn check_master(&mut self, now: u64, fx: &mut Fx) {
        if let Some(pid) = self
            .master_report()
            .filter(|m| m.role == ReportedRole::Declined)
            .map(|m| m.pid)
        {
            event(fx, "decline", format!("worker pid {pid} cannot lead"));
            self.elect(Some(pid), fx);
            return;
        }
        if self.master_report().is_some() || self.view.is_empty() {
            return;
        }
        // Named but not registered: elected over only once its death was
        // handled (a master alive is never elected over: its lease runs).
        let dead = self.master_pid().map(|pid| self.fate(pid));
        if matches!(dead, Some(Some(Fate::Live | Fate::Leaving))) {
            return;
        }
        // Right after the watcher's own reconnection, a master's missing
        // node may just not be back yet.
        let grace = self.grace_until.saturating_sub(now);
        if grace > 0 && self.master.is_some() {
            fx.push(Effect::Wake {
                timer: Timer::CheckMaster,
                after_ms: grace,
            });
            return;
        }
        // Only the first election waits for every worker to register.
        let waiting =
            self.master.is_none() && now.saturating_sub(self.started_at) < STARTUP_WAIT_MS;
        if !(self.view.len() < self.expect && waiting) {
            self.elect(self.master_pid(), fx);
        }
    }

    /// Runs the election, never choosing `dead`.
    fn elect(&mut self, dead: Option<u64>, fx: &mut Fx) {
        if self.electing || self.stopped || !self.connected {
            return;
        }
        self.electing = true;
        fx.push(Effect::Elect {
            dead,
            succession: self.succession.clone(),
            known: self.master.map(|(_, version)| version),
            leaving: self.leaving(),
        });
    }

    fn on_elected(
        &mut self,
        res: Result<((MasterRecord, i32), bool), String>,
        now: u64,
        fx: &mut Fx,
    ) {
        self.electing = false;
        match res {
            Ok((record, wrote)) => {
                self.learn_master(Some(record));
                if wrote {
                    let (m, _) = record;
                    let detail = format!("worker {} (pid {}) leads epoch {}", m.id, m.pid, m.epoch);
                    event(fx, "election", detail);
                    fx.push(Effect::SetEpoch(m.epoch));
                    fx.push(Effect::Wake {
                        timer: Timer::CheckPromotion {
                            pid: m.pid,
                            epoch: m.epoch,
                        },
                        after_ms: PROMOTION_MS,
                    });
                }
                // Dead already (its exit came first): elect again.
                self.check_master(now, fx);
            }
            Err(e) => {
                fx.push(Effect::Warn(format!("election failed ({e}); trying again")));
                fx.push(Effect::Wake {
                    timer: Timer::CheckMaster,
                    after_ms: ELECTION_RETRY_MS,
                });
            }
        }
    }

    /// A worker stopped on purpose is not replaced; if it led, the
    /// election runs at once (a planned handover). A crash is a death.
    #[allow(clippy::too_many_arguments)]
    fn on_exit(
        &mut self,
        id: u64,
        pid: u64,
        expected: bool,
        gone: bool,
        now: u64,
        running: &[Running],
        fx: &mut Fx,
    ) {
        if !expected {
            if let Some(Fate::Hung { .. }) = self.fate(pid) {
                // Its session had ended already; now its process did too.
                self.known.insert(pid, (id, Fate::Buried { at: now }));
                if !self.stopped {
                    self.respawn(Some(id), pid, running, fx);
                }
                return;
            }
            self.known.entry(pid).or_insert((id, Fate::Live));
            self.on_gone(pid, true, now, running, fx);
            return;
        }
        if self.stopped {
            return;
        }
        if !gone {
            self.known.insert(pid, (id, Fate::Leaving));
            event(fx, "stop", format!("worker pid {pid} stopping on purpose"));
            return;
        }
        self.known.insert(pid, (id, Fate::Buried { at: now }));
        self.view.remove(&pid);
        if self.master_pid() == Some(pid) {
            self.elect(Some(pid), fx);
        }
    }

    /// What `/master` says now. A master whose death was handled before
    /// the watcher knew it led (its election's outcome, or the watch on
    /// `/master`, came after its exit) may have led and acknowledged
    /// writes meanwhile: its store joins the succession.
    /// A master the watcher's view does not show yet (elected from a
    /// fresher read) stands in it until a view without it: then it is a
    /// death like any other, never taken for one before.
    /// A record of an older epoch than the one known is a stale read (a
    /// watch's read that began before a later election ended): ignored.
    fn learn_master(&mut self, record: Option<(MasterRecord, i32)>) {
        let older =
            |(new, _): (MasterRecord, i32)| self.master.is_some_and(|(m, _)| new.epoch < m.epoch);
        if record.is_some_and(older) {
            return;
        }
        self.master = record;
        let Some((m, _)) = record else {
            return;
        };
        match self.fate(m.pid) {
            Some(Fate::Buried { .. } | Fate::Hung { .. }) => self.succession.master_lost(m.id),
            Some(Fate::Leaving) => {}
            Some(Fate::Live) | None if !self.view.contains_key(&m.pid) => {
                self.known.insert(m.pid, (m.id, Fate::Live));
                self.view.insert(m.pid, provisional(m));
            }
            Some(Fate::Live) | None => {}
        }
    }

    /// Bounds what is remembered of pids (see [`FORGET_BURIED_MS`]): a
    /// worker buried that long ago is forgotten, unless it is registered
    /// or running again, or `/master` names it. Past [`REMEMBERED`] pids,
    /// only those registered, running, named by `/master`, hung or leaving
    /// stay.
    fn forget_the_long_gone(&mut self, now: u64, running: &[Running]) {
        let crowded = self.known.len() > REMEMBERED;
        let master = self.master_pid();
        let view = &self.view;
        self.known.retain(|&pid, (_, fate)| {
            let present = view.contains_key(&pid)
                || running.iter().any(|w| w.pid == pid)
                || master == Some(pid);
            match *fate {
                _ if present => true,
                Fate::Hung { .. } | Fate::Leaving => true,
                Fate::Live => !crowded,
                Fate::Buried { at } => !crowded && now.saturating_sub(at) < FORGET_BURIED_MS,
            }
        });
    }
}
