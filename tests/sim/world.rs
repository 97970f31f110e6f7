//! The simulated world: workers over their own stores, durable sync
//! queues, `writeQ`, a coordinator's `/master`, and the ElectionWatcher's
//! decisions, all on one virtual clock (a step is a millisecond). One
//! seeded random source decides every choice, so a seed replays a run
//! exactly.
//!
//! The ElectionWatcher is the production state machine
//! ([`dbaas::core::watcher`], with the election rule of
//! [`dbaas::core::election`]); the workers, the broker and the
//! coordinator are models of what the drivers do:
//! - a store has what was applied and what was flushed; a kill keeps only
//!   the flushed part (sled's flusher runs now and then, the master
//!   flushes before it publishes, a drain flushes before it leads);
//! - a slave acknowledges a sync once applied, before it is flushed (as
//!   production does), and holds one that comes past a gap unacknowledged;
//!   a consumer's death puts what it held back at the head of its queue;
//! - a sync queue is durable, bound to the fanout while its worker is
//!   away, and capped (the oldest go);
//! - the master handles one write at a time: apply and flush, publish the
//!   sync (which the broker may refuse), answer; a write stays in `writeQ`
//!   until answered, and is answered from the record if it was applied;
//! - the coordinator holds `/master` and each live, unpaused worker's
//!   registration; a paused worker's session ends after `session_ms`;
//!   the watcher hears views and `/master` a little late, and what it
//!   decides (elect by [`ballot`], start, kill, wake up later) is carried
//!   out here, see `watch.rs`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use dbaas::coord::election::{MasterRecord, WorkerReport};
use dbaas::core::election::Succession;
use dbaas::core::role::{Effect as RoleEffect, Input as RoleInput, Phase, RoleCore};
use dbaas::core::watcher::{Input, WatcherCore};

/// One replicated write: its sequence number, the epoch that wrote it,
/// and the client's request id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rec {
    pub seq: u64,
    pub epoch: u64,
    pub write: u64,
}

/// What sits in a sync queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QMsg {
    Sync(Rec),
    Fence(u64),
}

/// A worker's own store.
#[derive(Clone, Debug, Default)]
pub struct Store {
    pub applied: Vec<Rec>,
    durable: usize,
}

impl Store {
    pub fn flush(&mut self) {
        self.durable = self.applied.len();
    }

    fn crash(&mut self) {
        self.applied.truncate(self.durable);
    }

    pub fn next(&self) -> u64 {
        self.applied.len() as u64 + 1
    }
}

/// What a worker's role actors are doing (the decisions are the
/// production [`RoleCore`]'s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Slave,
    Promoting {
        epoch: u64,
        fence: u64,
    },
    Master {
        epoch: u64,
    },
    /// One role stopped, the next not yet started.
    Idle,
}

/// A worker, alive or dead (its store stays).
#[derive(Clone, Debug)]
pub struct Worker {
    pub id: u64,
    pub pid: u64,
    pub alive: bool,
    pub store: Store,
    pub role: Role,
    pub core: RoleCore,
    /// Caught up: a snapshot installed since it started.
    pub ready: bool,
    /// Syncs taken from the queue past a gap, not acknowledged.
    pub held: BTreeMap<u64, Rec>,
    pub gap_since: Option<u64>,
    /// Its node is in the coordinator (its session lives).
    pub registered: bool,
    /// A master's lease: granted when it leads in its session, gone with
    /// the session; without it a master takes no write and is not ready.
    pub leased: bool,
    /// Paused (SIGSTOP) until then: it takes no turn.
    pub paused_until: Option<u64>,
    pub paused_at: u64,
}

impl Worker {
    /// A worker that has never run, over an empty store.
    pub fn new(id: u64) -> Worker {
        Worker {
            id,
            pid: 0,
            alive: false,
            store: Store::default(),
            role: Role::Slave,
            core: RoleCore::new(0),
            ready: false,
            held: BTreeMap::new(),
            gap_since: None,
            registered: false,
            leased: false,
            paused_until: None,
            paused_at: 0,
        }
    }

    pub fn gapped(&self) -> bool {
        !self.held.is_empty()
    }

    pub fn report(&self) -> WorkerReport {
        let role = self.core.reported();
        let last_epoch = self.store.applied.last().map_or(0, |r| r.epoch);
        WorkerReport {
            id: self.id,
            pid: self.pid,
            role,
            applied: self.store.applied.len() as u64,
            last_epoch,
            epoch: last_epoch,
            ready: match self.role {
                Role::Master { .. } => self.leased,
                _ => self.ready && !self.gapped(),
            },
            session: self.pid,
        }
    }
}

/// The master's one write in hand, and how far it got.
#[derive(Clone, Copy, Debug)]
pub struct InHand {
    pub worker: u64,
    pub rec: Rec,
    pub published: bool,
}

/// How the world is set up and how hard the nemesis pushes.
#[derive(Clone, Debug)]
pub struct Setup {
    pub slaves: usize,
    pub queue_cap: usize,
    /// Chance per step that a live worker's store is flushed by sled.
    pub flush_chance: f64,
    /// Chance that the broker refuses a sync publish.
    pub refuse_chance: f64,
    /// Steps a slave waits at a gap before it takes a snapshot.
    pub gap_wait: u64,
    /// How long a start takes.
    pub respawn_after: (u64, u64),
    /// A paused worker's session ends after this long.
    pub session_ms: u64,
    /// How late the watcher hears of a change, at most.
    pub watch_lag: u64,
    /// How long a worker whose session ended may take to come back.
    pub hung_after: u64,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            slaves: 2,
            queue_cap: 64,
            flush_chance: 0.05,
            refuse_chance: 0.0,
            gap_wait: 30,
            respawn_after: (1, 40),
            session_ms: 30,
            watch_lag: 3,
            hung_after: 100,
        }
    }
}

/// Something that happened, for the trace a failing run prints.
#[derive(Clone, Debug)]
pub struct Event {
    pub at: u64,
    pub what: String,
}

/// The whole simulated cluster.
pub struct World {
    pub rng: fastrand::Rng,
    pub setup: Setup,
    pub now: u64,
    pub workers: BTreeMap<u64, Worker>,
    pub queues: BTreeMap<u64, VecDeque<QMsg>>,
    pub write_q: VecDeque<u64>,
    pub in_hand: Option<InHand>,
    /// Fences on their way to the queues, and when they arrive.
    fences: Vec<(u64, u64)>,
    /// Role timers: when, which worker, which process of it.
    wakes: Vec<(u64, u64, u64)>,
    /// `/master` and its version.
    pub master: Option<MasterRecord>,
    pub version: i32,
    pub watcher: WatcherCore,
    /// Inputs on their way to the watcher, and when they arrive.
    pub inbox: Vec<(u64, Input)>,
    /// Starts under way: when they finish, the worker, the tries left.
    pub starts: Vec<(u64, u64, u32)>,
    next_pid: u64,
    next_write: u64,
    /// Every write a client was told succeeded.
    pub acked: BTreeSet<u64>,
    pub trace: Vec<Event>,
}

impl World {
    /// A cluster that has just started: worker 1 leads epoch 1, the
    /// others are caught-up slaves.
    pub fn new(seed: u64, setup: Setup, succession: Succession) -> World {
        let mut w = World {
            rng: fastrand::Rng::with_seed(seed),
            now: 0,
            workers: BTreeMap::new(),
            queues: BTreeMap::new(),
            write_q: VecDeque::new(),
            in_hand: None,
            fences: Vec::new(),
            wakes: Vec::new(),
            master: None,
            version: 0,
            watcher: WatcherCore::new(setup.slaves + 1, 0).with_succession(succession),
            inbox: Vec::new(),
            starts: Vec::new(),
            next_pid: 100,
            next_write: 1,
            acked: BTreeSet::new(),
            trace: Vec::new(),
            setup,
        };
        // Every worker starts alike, as a slave; the watcher elects the
        // first master once all have registered.
        for id in 1..=w.setup.slaves as u64 + 1 {
            let pid = w.pid();
            let worker = Worker {
                pid,
                alive: true,
                registered: true,
                core: RoleCore::new(pid),
                ..Worker::new(id)
            };
            w.queues.insert(id, VecDeque::new());
            w.workers.insert(id, worker);
        }
        w.watcher.set_hung_after(w.setup.hung_after);
        let running = w.running();
        let record = w.master.map(|m| (m, w.version));
        let view = w.view();
        for input in [Input::Connected, Input::Master(record), Input::View(view)] {
            let effects = w.watcher.on(input, 0, &running);
            w.carry_out(effects);
        }
        w
    }

    pub(super) fn pid(&mut self) -> u64 {
        self.next_pid += 1;
        self.next_pid
    }

    pub fn log(&mut self, what: String) {
        self.trace.push(Event { at: self.now, what });
    }

    /// A client sends a new write.
    pub fn client_write(&mut self) {
        let id = self.next_write;
        self.next_write += 1;
        self.write_q.push_back(id);
    }

    /// The worker `/master` names, if it is alive.
    pub fn named(&self) -> Option<&Worker> {
        let m = self.master?;
        self.workers.values().find(|w| w.alive && w.pid == m.pid)
    }

    /// The worker that leads (takes writes), if any.
    pub fn leader(&self) -> Option<&Worker> {
        self.named()
            .filter(|w| matches!(w.role, Role::Master { .. }))
    }

    /// Kills worker `id` (SIGKILL): what sled had not flushed is lost,
    /// what it held unacknowledged goes back to its queue. The runtime
    /// sees the exit: the watcher hears it at once.
    pub fn kill(&mut self, id: u64) {
        let Some(pid) = self.die(id) else {
            return;
        };
        let exit = Input::Exited {
            id,
            pid,
            expected: false,
            gone: true,
        };
        self.tell(exit, 0);
    }

    /// Worker `id` dies; answers its pid if it was alive.
    pub(super) fn die(&mut self, id: u64) -> Option<u64> {
        let w = self.workers.get_mut(&id).filter(|w| w.alive)?;
        w.alive = false;
        w.registered = false;
        w.paused_until = None;
        w.store.crash();
        let held: Vec<QMsg> = std::mem::take(&mut w.held)
            .into_values()
            .map(QMsg::Sync)
            .collect();
        let (pid, role) = (w.pid, w.role);
        if let Some(q) = self.queues.get_mut(&id) {
            for m in held.into_iter().rev() {
                q.push_front(m);
            }
        }
        if self.in_hand.is_some_and(|h| h.worker == id) {
            self.in_hand = None;
        }
        self.log(format!("kill worker {id} (pid {pid}, {role:?})"));
        Some(pid)
    }

    /// Pauses worker `id` for `ms` (SIGSTOP, then SIGCONT).
    pub fn pause(&mut self, id: u64, ms: u64) {
        let now = self.now;
        let Some(w) = self.workers.get_mut(&id).filter(|w| w.alive) else {
            return;
        };
        w.paused_until = Some(now + ms);
        w.paused_at = now;
        self.log(format!("pause worker {id} for {ms} ms"));
    }

    /// One millisecond passes: every live part takes a turn.
    pub fn step(&mut self) {
        self.now += 1;
        let now = self.now;
        let (due, later) = std::mem::take(&mut self.fences)
            .into_iter()
            .partition(|&(at, _)| at <= now);
        self.fences = later;
        for (_, fence) in due {
            self.publish(QMsg::Fence(fence));
        }
        self.sessions();
        self.finish_starts();
        self.wake_roles();
        self.deliver();
        let ids: Vec<u64> = self.workers.keys().copied().collect();
        for id in ids {
            let w = &self.workers[&id];
            if !w.alive || w.paused_until.is_some() {
                continue;
            }
            if self.rng.f64() < self.setup.flush_chance {
                if let Some(w) = self.workers.get_mut(&id) {
                    w.store.flush();
                }
            }
            self.follow_master(id);
            let pid = self.workers[&id].pid;
            // A master takes writes only under its lease: while `/master`
            // names it for its epoch.
            let named = |e| self.master.is_some_and(|m| m.pid == pid && m.epoch == e);
            let leased = self.workers[&id].leased;
            match self.workers[&id].role {
                Role::Master { epoch } if named(epoch) && leased => self.lead(id, epoch),
                Role::Master { .. } | Role::Idle => {}
                Role::Promoting { fence, .. } => self.drain(id, fence),
                Role::Slave => self.replicate(id),
            }
        }
    }

    /// A worker acts on what `/master` says, by the production rule.
    fn follow_master(&mut self, id: u64) {
        let w = &self.workers[&id];
        // A master back with a new session that `/master` still names
        // claims its place again (a compare-and-set), and with it a lease.
        let named = |e| self.master.is_some_and(|m| m.pid == w.pid && m.epoch == e);
        if w.core.leading().is_some_and(named) && w.registered && !w.leased {
            self.workers.get_mut(&id).expect("listed").leased = true;
            self.log(format!("worker {id} claims /master again"));
        }
        let master = self.master;
        self.role_step(id, RoleInput::Master(master));
    }

    /// Feeds worker `id`'s role machine and carries out its effects.
    pub(super) fn role_step(&mut self, id: u64, input: RoleInput) {
        let mut inputs = vec![input];
        while let Some(input) = inputs.pop() {
            let effects = self.workers.get_mut(&id).expect("listed").core.on(input);
            for effect in effects {
                if let Some(next) = self.role_effect(id, effect) {
                    inputs.push(next);
                }
            }
        }
    }

    /// Carries out one effect; answers the input it leads to at once.
    fn role_effect(&mut self, id: u64, effect: RoleEffect) -> Option<RoleInput> {
        match effect {
            RoleEffect::Drain => {
                let Phase::Promoting { epoch } = self.workers[&id].core.phase() else {
                    return None;
                };
                // The fence reaches the queues after a broker round trip.
                let fence = self.rng.u64(..);
                let at = self.now + self.rng.u64(1..=20);
                self.fences.push((at, fence));
                self.set_role(id, Role::Promoting { epoch, fence });
            }
            RoleEffect::Resume => self.set_role(id, Role::Slave),
            RoleEffect::StopSlave | RoleEffect::StopMaster => {
                self.set_role(id, Role::Idle);
                return Some(RoleInput::Stopped);
            }
            RoleEffect::StartMaster { epoch } => self.set_role(id, Role::Master { epoch }),
            RoleEffect::StartSlave => {
                // A deposed master's store may hold writes past the new
                // history: a snapshot first.
                self.set_role(id, Role::Slave);
                self.workers.get_mut(&id).expect("listed").ready = false;
            }
            RoleEffect::RevokeLease => self.workers.get_mut(&id).expect("listed").leased = false,
            RoleEffect::Wake { after_ms } => {
                let pid = self.workers[&id].pid;
                self.wakes.push((self.now + after_ms, id, pid));
            }
            RoleEffect::Report => {}
        }
        None
    }

    /// Role timers that are due.
    fn wake_roles(&mut self) {
        let now = self.now;
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.wakes)
            .into_iter()
            .partition(|&(at, _, _)| at <= now);
        self.wakes = later;
        for (_, id, pid) in due {
            let w = &self.workers[&id];
            if w.alive && w.pid == pid {
                self.role_step(id, RoleInput::Woke);
            }
        }
    }

    pub(super) fn set_role(&mut self, id: u64, role: Role) {
        self.log(format!("worker {id} becomes {role:?}"));
        let w = self.workers.get_mut(&id).expect("listed");
        w.role = role;
        w.leased = matches!(role, Role::Master { .. });
        match role {
            // A slave stopped after its drain deletes its sync queue.
            Role::Idle if self.workers[&id].core.leading().is_none() => {
                self.queues.remove(&id);
            }
            Role::Slave => {
                self.queues.entry(id).or_default();
            }
            _ => {}
        }
    }
}
