//! The simulated world: workers over their own stores, durable sync
//! queues, `writeQ`, a coordinator's `/master`, and the ElectionWatcher's
//! decisions, all on one virtual clock (a step is a millisecond). One
//! seeded random source decides every choice, so a seed replays a run
//! exactly.
//!
//! The election decisions are the production ones
//! ([`dbaas::core::election`]); the workers, the broker and the
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
//! - the watcher sees the deaths it causes at once, starts the dead worker
//!   again over its own store a little later, and elects by
//!   [`ballot`] whenever no live worker is named in `/master`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use dbaas::coord::election::{MasterRecord, ReportedRole, WorkerReport};
use dbaas::core::election::{ballot, role_change, Ballot, RoleChange, Succession};

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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Slave,
    Promoting { epoch: u64, fence: u64 },
    Master { epoch: u64 },
    Declined { epoch: u64 },
}

/// A worker, alive or dead (its store stays).
#[derive(Clone, Debug)]
pub struct Worker {
    pub id: u64,
    pub pid: u64,
    pub alive: bool,
    pub store: Store,
    pub role: Role,
    /// Caught up: a snapshot installed since it started.
    pub ready: bool,
    /// Syncs taken from the queue past a gap, not acknowledged.
    pub held: BTreeMap<u64, Rec>,
    pub gap_since: Option<u64>,
    /// When it is started again after a death.
    respawn_at: Option<u64>,
}

impl Worker {
    pub fn gapped(&self) -> bool {
        !self.held.is_empty()
    }

    fn report(&self) -> WorkerReport {
        let role = match self.role {
            Role::Slave => ReportedRole::Slave,
            Role::Promoting { .. } => ReportedRole::Promoting,
            Role::Master { .. } => ReportedRole::Master,
            Role::Declined { .. } => ReportedRole::Declined,
        };
        let last_epoch = self.store.applied.last().map_or(0, |r| r.epoch);
        WorkerReport {
            id: self.id,
            pid: self.pid,
            role,
            applied: self.store.applied.len() as u64,
            last_epoch,
            epoch: last_epoch,
            ready: matches!(self.role, Role::Master { .. }) || (self.ready && !self.gapped()),
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
    /// Steps before a dead worker is started again.
    pub respawn_after: (u64, u64),
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
    pub master: Option<MasterRecord>,
    pub succession: Succession,
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
            master: None,
            succession,
            next_pid: 100,
            next_write: 1,
            acked: BTreeSet::new(),
            trace: Vec::new(),
            setup,
        };
        for id in 1..=w.setup.slaves as u64 + 1 {
            let pid = w.pid();
            let role = if id == 1 {
                Role::Master { epoch: 1 }
            } else {
                Role::Slave
            };
            let worker = Worker {
                id,
                pid,
                alive: true,
                store: Store::default(),
                role,
                ready: true,
                held: BTreeMap::new(),
                gap_since: None,
                respawn_at: None,
            };
            if id != 1 {
                w.queues.insert(id, VecDeque::new());
            }
            w.workers.insert(id, worker);
        }
        w.master = Some(MasterRecord {
            pid: w.workers[&1].pid,
            id: 1,
            epoch: 1,
        });
        w
    }

    fn pid(&mut self) -> u64 {
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

    /// Kills worker `id` as the runtime would (a death the watcher sees).
    pub fn kill(&mut self, id: u64) {
        let (lo, hi) = self.setup.respawn_after;
        let delay = self.rng.u64(lo..=hi);
        let now = self.now;
        let Some(w) = self.workers.get_mut(&id).filter(|w| w.alive) else {
            return;
        };
        w.alive = false;
        w.store.crash();
        w.respawn_at = Some(now + delay);
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
        if self.master.is_some_and(|m| m.pid == pid) {
            self.succession.master_lost(id);
            self.elect(Some(pid));
        }
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
        self.respawn();
        self.watch();
        let ids: Vec<u64> = self.workers.keys().copied().collect();
        for id in ids {
            if !self.workers[&id].alive {
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
            let leased = |e| self.master.is_some_and(|m| m.pid == pid && m.epoch == e);
            match self.workers[&id].role {
                Role::Master { epoch } if leased(epoch) => self.lead(id, epoch),
                Role::Master { .. } => {}
                Role::Promoting { epoch, fence } => self.drain(id, epoch, fence),
                Role::Slave | Role::Declined { .. } => self.replicate(id),
            }
        }
    }

    fn respawn(&mut self) {
        let due: Vec<u64> = self
            .workers
            .values()
            .filter(|w| !w.alive && w.respawn_at.is_some_and(|t| t <= self.now))
            .map(|w| w.id)
            .collect();
        for id in due {
            let pid = self.pid();
            let w = self.workers.get_mut(&id).expect("listed");
            w.alive = true;
            w.pid = pid;
            w.role = Role::Slave;
            w.ready = false;
            w.gap_since = None;
            w.respawn_at = None;
            self.queues.entry(id).or_default();
            self.log(format!("worker {id} started again, pid {pid}"));
        }
    }

    /// The watcher: a master that leads closes the succession; with no
    /// live worker named (or the named one declined), it elects.
    fn watch(&mut self) {
        let named = self.named().map(|w| (w.pid, w.role));
        match named {
            Some((_, Role::Master { .. })) => self.succession.master_leads(),
            Some((pid, Role::Declined { .. })) => self.elect(Some(pid)),
            Some(_) => {}
            None => self.elect(self.master.map(|m| m.pid)),
        }
    }

    fn elect(&mut self, dead: Option<u64>) {
        let view: BTreeMap<u64, WorkerReport> = self
            .workers
            .values()
            .filter(|w| w.alive)
            .map(|w| (w.pid, w.report()))
            .collect();
        let none = BTreeSet::new();
        match ballot(
            &view,
            self.master.as_ref(),
            false,
            dead,
            &self.succession,
            &none,
        ) {
            Ballot::Elect(m) => {
                self.master = Some(m);
                self.log(format!(
                    "elected worker {} (pid {}) for epoch {}",
                    m.id, m.pid, m.epoch
                ));
            }
            Ballot::Keep | Ballot::Wait(_) => {}
        }
    }

    /// A worker acts on what `/master` says (the production rule).
    fn follow_master(&mut self, id: u64) {
        let w = &self.workers[&id];
        let leading = match w.role {
            Role::Master { epoch } => Some(epoch),
            _ => None,
        };
        let declined = matches!(w.role, Role::Declined { epoch } if self.master.is_some_and(|m| m.epoch == epoch));
        if let (Role::Declined { epoch }, Some(m)) = (w.role, self.master) {
            if m.epoch != epoch {
                self.set_role(id, Role::Slave); // another election since
                return;
            }
        }
        match role_change(w.pid, leading, self.master.as_ref()) {
            RoleChange::Lead { epoch }
                if !declined && !matches!(w.role, Role::Promoting { .. }) =>
            {
                // The fence reaches the queues after a broker round trip.
                let fence = self.rng.u64(..);
                let at = self.now + self.rng.u64(1..=20);
                self.fences.push((at, fence));
                self.set_role(id, Role::Promoting { epoch, fence });
            }
            RoleChange::Follow => {
                // Deposed: what it holds past the new history goes, by a
                // snapshot.
                self.set_role(id, Role::Slave);
                self.workers.get_mut(&id).expect("listed").ready = false;
            }
            _ => {}
        }
    }

    pub(super) fn set_role(&mut self, id: u64, role: Role) {
        self.log(format!("worker {id} becomes {role:?}"));
        let w = self.workers.get_mut(&id).expect("listed");
        w.role = role;
        if let Role::Master { .. } = role {
            // It consumes no sync queue now.
            self.queues.remove(&id);
        } else if matches!(role, Role::Slave) {
            self.queues.entry(id).or_default();
        }
    }
}
