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
//! - the master runs the production pipeline ([`dbaas::core::pipeline`]):
//!   groups of writes applied and flushed, their syncs published (the
//!   broker may refuse one, or route it and fail its confirm), answered
//!   only past every earlier seq; a write is held until answered, goes
//!   back to `writeQ` otherwise, and is answered from the record if it
//!   was applied (see `roles.rs`);
//! - the coordinator holds `/master` and each live, unpaused worker's
//!   registration; a paused worker's session ends after `session_ms`;
//!   the watcher hears views and `/master` a little late, and what it
//!   decides (elect by [`ballot`], start, kill, wake up later) is carried
//!   out here, see `watch.rs`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use dbaas::coord::election::{MasterRecord, WorkerReport};
use dbaas::core::election::Succession;
use dbaas::core::replica::{Input as ReplicaInput, ReplicaCore};
use dbaas::core::role::{Effect as RoleEffect, Input as RoleInput, Phase, RoleCore};
use dbaas::core::watcher::{Input, WatcherCore};
use dbaas::model::wire::SyncItem;
use dbaas::model::Lineage;

use super::queue::Queue;

/// The cluster's identity on every message.
pub const CLUSTER: u64 = 0xd8a5;

/// One replicated write: its sequence number, the epoch that wrote it,
/// and the client's request id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rec {
    pub seq: u64,
    pub epoch: u64,
    pub write: u64,
    /// Refused (a write that breaks the schema): logged under its seq and
    /// replicated as a refusal; it changes no data.
    pub refused: bool,
    /// A restore (see [`restore`]).
    pub restored: bool,
}

/// Whether a client's write breaks the schema (the master refuses it):
/// one write in eleven.
pub fn invalid(write: u64) -> bool {
    write % 11 == 5
}

/// Whether a client's write is a restore, in a world with restores (one
/// in thirteen of the valid writes): logged under its seq like a write,
/// its sync carries no rows, and a replica passes it only by a snapshot
/// past it, never by applying it. What it replaces is not modelled; where
/// it stands in the history is.
pub fn restore(write: u64) -> bool {
    write % 13 == 7 && !invalid(write)
}

/// What a kill leaves of a store: a prefix of what it holds (the writes
/// flushed), or, after an install not yet flushed, what it held before.
#[derive(Clone, Debug)]
enum Durable {
    Prefix(usize, Lineage),
    Whole(Vec<Rec>, Lineage),
}

/// A worker's own store: its writes and its lineage.
#[derive(Clone, Debug)]
pub struct Store {
    pub applied: Vec<Rec>,
    pub lineage: Lineage,
    durable: Durable,
    /// An early install (`Store::install_early`) is written to sled until
    /// then: sled's own flusher cannot make any of it durable before; a
    /// flush asked for waits for it (here: it ends then).
    persisting_until: Option<u64>,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            applied: Vec::new(),
            lineage: Lineage::default(),
            durable: Durable::Prefix(0, Lineage::default()),
            persisting_until: None,
        }
    }
}

impl Store {
    /// A flush asked for: it returns once everything applied is durable.
    pub fn flush(&mut self) {
        self.persisting_until = None;
        self.durable = Durable::Prefix(self.applied.len(), self.lineage.clone());
    }

    /// sled's own flusher at `now`: nothing of an early install still
    /// being written.
    pub fn background_flush(&mut self, now: u64) {
        if self.persisting_until.is_none_or(|t| now >= t) {
            self.flush();
        }
    }

    /// Whether an early install's writing ends at `now` (it flushes).
    pub fn persisted_at(&self, now: u64) -> bool {
        self.persisting_until.is_some_and(|t| now >= t)
    }

    /// Whether this store is blank (what may install early).
    pub fn is_blank(&self) -> bool {
        self.applied.is_empty()
    }

    /// Installs early: what `applied` holds serves now and becomes
    /// durable at `until` (or at a flush asked for before).
    pub fn install_early(&mut self, applied: Vec<Rec>, lineage: Lineage, until: u64) {
        self.install(applied, lineage);
        self.persisting_until = Some(until);
    }

    fn crash(&mut self) {
        match std::mem::replace(&mut self.durable, Durable::Prefix(0, Lineage::default())) {
            Durable::Prefix(n, lineage) => {
                self.applied.truncate(n);
                self.lineage = lineage;
            }
            Durable::Whole(applied, lineage) => {
                self.applied = applied;
                self.lineage = lineage;
            }
        }
        self.flush();
    }

    /// Replaces everything (a snapshot), not flushed yet.
    pub fn install(&mut self, applied: Vec<Rec>, lineage: Lineage) {
        if let Durable::Prefix(n, l) = &self.durable {
            self.durable = Durable::Whole(self.applied[..*n].to_vec(), l.clone());
        }
        self.applied = applied;
        self.lineage = lineage;
    }

    pub fn next(&self) -> u64 {
        self.applied.len() as u64 + 1
    }
}

/// What a worker's role actors are doing (the decisions are the
/// production [`RoleCore`]'s and [`ReplicaCore`]'s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Slave,
    /// Its replica drains up to the fence with this nonce.
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
#[derive(Debug)]
pub struct Worker {
    pub id: u64,
    pub pid: u64,
    pub alive: bool,
    pub store: Store,
    pub role: Role,
    pub core: RoleCore,
    /// The slave's decisions, while it is a slave.
    pub replica: Option<ReplicaCore>,
    /// Its replica consumes its sync queue.
    pub consuming: bool,
    /// What finished for its replica since its last turn.
    pub replica_inbox: Vec<ReplicaInput>,
    /// Its node is in the coordinator (its session lives).
    pub registered: bool,
    /// A master's lease: granted when it leads in its session, gone with
    /// the session; without it a master takes no write and is not ready.
    pub leased: bool,
    /// Paused (SIGSTOP) until then: it takes no turn.
    pub paused_until: Option<u64>,
    pub paused_at: u64,
    /// Stopped for good by the Scaler (its store went with it).
    pub retired: bool,
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
            replica: None,
            consuming: false,
            replica_inbox: Vec::new(),
            registered: false,
            leased: false,
            paused_until: None,
            paused_at: 0,
            retired: false,
        }
    }

    /// Whether its replica is caught up.
    pub fn ready(&self, now: u64) -> bool {
        self.replica.as_ref().is_some_and(|r| r.status(now).ready)
    }

    pub fn report(&self, now: u64) -> WorkerReport {
        let (applied, last_epoch, epoch, ready) = match &self.replica {
            Some(r) => {
                let s = r.status(now);
                (s.applied, s.last_epoch, s.epoch, s.ready)
            }
            None => {
                let head = self.store.applied.len() as u64;
                let l = &self.store.lineage;
                (head, l.owner(head), l.epoch(), self.leased)
            }
        };
        WorkerReport {
            id: self.id,
            pid: self.pid,
            role: self.core.reported(),
            applied,
            last_epoch,
            epoch,
            ready,
            session: self.pid,
        }
    }
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
    /// How long a start takes.
    pub respawn_after: (u64, u64),
    /// A paused worker's session ends after this long.
    pub session_ms: u64,
    /// How late the watcher hears of a change, at most.
    pub watch_lag: u64,
    /// How long a worker whose session ended may take to come back.
    pub hung_after: u64,
    /// A bug planted in the master's pipeline.
    pub pipeline_mutation: Option<dbaas::core::pipeline::Mutation>,
    /// A bug planted in the orchestrator: started again, it takes the
    /// head to be 0.
    pub zero_head: bool,
    /// A bug planted in the orchestrator: a strong read's answer is
    /// handed over once its head is known, whatever seq the slave read
    /// at.
    pub early_answers: bool,
    /// A bug planted in the next leading orchestrator: its watcher starts
    /// without the succession the ones before it kept (as every watcher
    /// did before `/succession`).
    pub forget_succession: bool,
    /// A bug planted in every replica.
    pub replica_mutation: Option<dbaas::core::replica::Mutation>,
    /// The orchestrator's windows: read and write batches unanswered.
    pub windows: (usize, usize),
    /// Whether the orchestrator's strong reads wait for a head asked
    /// after they began (read-index).
    pub read_index: bool,
    /// Whether a strong read must see every write a master answered
    /// before it began, told to a client or not (as it must when other
    /// orchestrators, whose clients were told, share the cluster), beside
    /// every write its own orchestrator acknowledged.
    pub reads_see_every_answer: bool,
    /// How many writes a master's log keeps (for catch-ups).
    pub log_writes: usize,
    /// Whether some writes are restores (see [`restore`]).
    pub restores: bool,
    /// Whether a master's answer to a snapshot request may be lost while
    /// the faults last (its reply not published, or its reply queue gone:
    /// the master takes the request off `writeQ` all the same).
    pub lose_answers: bool,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            slaves: 2,
            queue_cap: 64,
            flush_chance: 0.05,
            refuse_chance: 0.0,
            respawn_after: (1, 40),
            session_ms: 30,
            watch_lag: 3,
            hung_after: 100,
            pipeline_mutation: None,
            zero_head: false,
            early_answers: false,
            forget_succession: false,
            replica_mutation: None,
            windows: (
                dbaas::core::orchestrator::READ_WINDOW,
                dbaas::core::orchestrator::WRITE_WINDOW,
            ),
            log_writes: 64,
            restores: false,
            lose_answers: false,
            read_index: false,
            reads_see_every_answer: false,
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
    pub queues: BTreeMap<u64, Queue>,
    /// `writeQ`'s messages: each a batch of entries (writes, by their
    /// number, or an ask for the head).
    pub write_q: VecDeque<Vec<u64>>,
    /// Each master's pipeline (a deposed one keeps its own until it
    /// stops), and the syncs on their way to the broker.
    pub leading: BTreeMap<u64, super::roles::Leading>,
    pub publishes: Vec<super::roles::Publish>,
    /// Fences on their way to the queues, and when they arrive.
    /// (When, to whose queue only.)
    pub fences: Vec<(u64, u64, SyncItem)>,
    /// Snapshot requests waiting in `writeQ`: worker, pid, request, the
    /// seq it has and the epoch of it.
    pub snapshot_asks: Vec<(u64, u64, u64, u64, u64)>,
    /// The faults have stopped (the checker settles the world).
    pub calm: bool,
    /// The lineage each snapshot answer carries (its store's).
    pub snapshot_lineages: BTreeMap<(u64, u64), Lineage>,
    pub answers: u64,
    /// Role timers: when, which worker, which process of it.
    wakes: Vec<(u64, u64, u64)>,
    /// `/master` and its version.
    pub master: Option<MasterRecord>,
    pub version: i32,
    pub watcher: WatcherCore,
    /// The coordinator is away until then.
    pub coord_down_until: Option<u64>,
    /// Inputs on their way to the watcher, and when they arrive.
    pub inbox: Vec<(u64, Input)>,
    /// Starts under way: when they finish, the worker, the tries left,
    /// and the leadership that asked (its result goes to that one's
    /// watcher only).
    pub starts: Vec<(u64, u64, u32, u64)>,
    /// How many times another orchestrator took the lead.
    pub leadership: u64,
    /// The workers whose start the leading watcher's core asked for and
    /// that has not finished (an earlier leader's may still be under way:
    /// the runtime refuses one of the two).
    pub starts_asked: BTreeSet<u64>,
    /// The Scaler, when a run has one; what it is owed; its starts.
    pub scaler: Option<dbaas::core::scaler::ScalerCore>,
    pub scaler_inbox: Vec<dbaas::core::scaler::Input>,
    pub scaler_starts: Vec<(u64, u64)>,
    /// Client reads so far (the Scaler counts them).
    pub reads: u64,
    next_pid: u64,
    pub(super) next_write: u64,
    /// The attempt each write waits on in the running orchestrator.
    pub write_attempts: BTreeMap<u64, u64>,
    /// Every write the master answered as applied: its client was told,
    /// unless the orchestrator that sent it restarted first (none may be
    /// lost all the same).
    pub acked: BTreeSet<u64>,
    /// Restores the master answered (not yet acknowledged to a client).
    pub restores_answered: BTreeSet<u64>,
    /// Every write the master answered as refused.
    pub refused: BTreeSet<u64>,
    /// Which worker's writes were acknowledged in each epoch (one at
    /// most: promise 5).
    pub answered_in: BTreeMap<u64, u64>,
    /// Promises broken as they happened (checked at the end).
    pub broken: Vec<String>,
    /// The orchestrator, the writes whose clients it told their answer,
    /// in order (refusals too: a replica holds them as refusals; not an
    /// answer that reached no client), and the strong reads under way.
    pub orch: super::orch::Orch,
    pub acked_log: Vec<u64>,
    /// Every write a master answered as applied, in order (what another
    /// orchestrator's clients may have been told).
    pub answered_log: Vec<u64>,
    pub next_read: u64,
    pub reads_state: super::orch::Reads,
    /// The election rule a watcher core starts with (a planted bug, in
    /// tests of the checker): a new leading orchestrator's too.
    pub rule: Succession,
    /// What `/succession` holds: kept before each election and after
    /// each step of the watcher.
    pub kept: dbaas::core::election::SuccessionRecord,
    pub trace: Vec<Event>,
}

impl World {
    /// A cluster that has just started: every worker a slave over an
    /// empty store, the first election to come.
    pub fn new(seed: u64, setup: Setup, succession: Succession) -> World {
        let mut w = World {
            rng: fastrand::Rng::with_seed(seed),
            now: 0,
            workers: BTreeMap::new(),
            queues: BTreeMap::new(),
            write_q: VecDeque::new(),
            leading: BTreeMap::new(),
            publishes: Vec::new(),
            fences: Vec::new(),
            snapshot_asks: Vec::new(),
            calm: false,
            snapshot_lineages: BTreeMap::new(),
            answers: 0,
            wakes: Vec::new(),
            master: None,
            version: 0,
            coord_down_until: None,
            watcher: WatcherCore::new(setup.slaves + 1, 0).with_succession(succession.clone()),
            inbox: Vec::new(),
            starts: Vec::new(),
            leadership: 0,
            starts_asked: BTreeSet::new(),
            scaler: None,
            scaler_inbox: Vec::new(),
            scaler_starts: Vec::new(),
            reads: 0,
            next_pid: 100,
            next_write: 1,
            write_attempts: BTreeMap::new(),
            acked: BTreeSet::new(),
            restores_answered: BTreeSet::new(),
            refused: BTreeSet::new(),
            answered_in: BTreeMap::new(),
            broken: Vec::new(),
            orch: super::orch::orchestrator(0, seed, 0, &setup),
            acked_log: Vec::new(),
            answered_log: Vec::new(),
            next_read: 0,
            reads_state: super::orch::Reads::default(),
            rule: succession,
            kept: Default::default(),
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
            w.workers.insert(id, worker);
            w.start_replica(id);
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

    /// A client sends a new write, through the orchestrator (past its
    /// gate: see `orch.rs`).
    pub fn client_write(&mut self) {
        let id = self.next_write;
        self.next_write += 1;
        self.reads_state.gated.push_back(id);
        self.pump_gate();
    }

    /// Whether client write `write` is a restore.
    pub fn is_restore(&self, write: u64) -> bool {
        self.setup.restores && restore(write)
    }

    /// The worker `/master` names, if it is alive.
    pub fn named(&self) -> Option<&Worker> {
        let m = self.master?;
        self.workers.values().find(|w| w.alive && w.pid == m.pid)
    }

    /// Every live worker that does not lead (promotees included).
    pub fn slaves(&self) -> Vec<u64> {
        self.workers
            .values()
            .filter(|x| x.alive && !matches!(x.role, Role::Master { .. }))
            .map(|x| x.id)
            .collect()
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

    /// Kills worker `id` and loses its disk (the machine is gone): it
    /// starts again, if it does, over an empty store. Promise 1 does not
    /// cover what only that disk held; whatever was acknowledged is held
    /// elsewhere as well (a slave's store or its durable sync queue).
    pub fn lose(&mut self, id: u64) {
        self.kill(id);
        if let Some(w) = self.workers.get_mut(&id) {
            w.store = Store::default();
            self.log(format!("worker {id}'s disk is lost"));
        }
    }

    /// Worker `id` dies; answers its pid if it was alive.
    pub(super) fn die(&mut self, id: u64) -> Option<u64> {
        let w = self.workers.get_mut(&id).filter(|w| w.alive)?;
        w.alive = false;
        w.registered = false;
        w.paused_until = None;
        w.store.crash();
        w.replica = None;
        w.consuming = false;
        w.replica_inbox.clear();
        let (pid, role) = (w.pid, w.role);
        if let Some(q) = self.queues.get_mut(&id) {
            q.consumer_died();
        }
        // What its groups held goes back to writeQ with its consumer.
        self.end_leading(id);
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
            .partition(|(at, _, _)| *at <= now);
        self.fences = later;
        let cap = self.setup.queue_cap;
        for (_, id, fence) in due {
            if let Some(q) = self.queues.get_mut(&id) {
                q.push(fence, cap);
            }
        }
        let away = self.coordinator_away();
        self.sessions(away);
        self.deliver_publishes();
        self.orch_tick();
        self.finish_starts();
        self.scaler_deliver();
        self.scale();
        self.wake_roles();
        if !away {
            self.deliver();
        }
        let ids: Vec<u64> = self.workers.keys().copied().collect();
        for id in ids {
            let w = &self.workers[&id];
            if !w.alive || w.paused_until.is_some() {
                continue;
            }
            let now = self.now;
            if self.rng.f64() < self.setup.flush_chance || w.store.persisted_at(now) {
                self.worker(id).store.background_flush(now);
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
                Role::Promoting { .. } | Role::Slave => self.replicate(id),
            }
        }
    }

    /// A worker acts on what `/master` says, by the production rule.
    fn follow_master(&mut self, id: u64) {
        let w = &self.workers[&id];
        // A master back with a new session that `/master` still names
        // claims its place again (a compare-and-set), and with it a lease.
        let named = |e| self.master.is_some_and(|m| m.pid == w.pid && m.epoch == e);
        let up = self.coord_down_until.is_none();
        if up && w.core.leading().is_some_and(named) && w.registered && !w.leased {
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
                let fence = self.rng.u64(..);
                let heir = self.workers[&id].core.elected_as_heir();
                self.set_role(id, Role::Promoting { epoch, fence });
                let drain = ReplicaInput::Drain { nonce: fence, heir };
                self.replica_step(id, drain);
            }
            RoleEffect::Resume => {
                self.set_role(id, Role::Slave);
                self.replica_step(id, ReplicaInput::Resume);
            }
            RoleEffect::StopSlave => {
                // Drained: its sync queue goes with it.
                self.replica_step(id, ReplicaInput::Shutdown);
                self.worker(id).replica = None;
                self.queues.remove(&id);
                self.set_role(id, Role::Idle);
                return Some(RoleInput::Stopped);
            }
            RoleEffect::StopMaster => {
                self.end_leading(id);
                self.set_role(id, Role::Idle);
                return Some(RoleInput::Stopped);
            }
            RoleEffect::StartMaster { epoch } => {
                let w = self.worker(id);
                let head = w.store.applied.len() as u64;
                w.store.lineage.begin(epoch, head);
                self.set_role(id, Role::Master { epoch });
                self.begin_leading(id, epoch);
            }
            RoleEffect::StartSlave => {
                self.set_role(id, Role::Slave);
                self.start_replica(id);
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
    }
}

impl World {
    /// A replica's drain ended: the role machine hears how.
    pub(super) fn drain_done(&mut self, id: u64, nonce: u64, ok: bool) {
        if matches!(self.workers[&id].role, Role::Promoting { fence, .. } if fence == nonce) {
            self.role_step(id, RoleInput::Drained(ok));
        }
    }
}
