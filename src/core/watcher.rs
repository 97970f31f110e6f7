//! The ElectionWatcher's decisions: what becomes of each worker, when to
//! elect, what to start and kill. A state machine: [`WatcherCore::on`]
//! takes an [`Input`] (a view of the registered workers, what `/master`
//! says, an exit the runtime saw, an election's outcome, a timer) with the
//! time and the workers the runtime lists, and answers the [`Effect`]s to
//! carry out; it reads no clock and does no I/O.
//!
//! Each worker (by pid) has one [`Fate`]: live, leaving (stopped on
//! purpose: its node going is no death), hung (its session ended while
//! its process runs on: it has [`HUNG_AFTER_MS`] to come back before it is
//! killed and started again over its own store), or buried (its death was
//! handled; forgotten [`FORGET_BURIED_MS`] later). A death seen by the runtime is acted on at once (its node is
//! deleted, the election runs); a session that ends is the fallback, and
//! right after the watcher's own session reopened, a master's missing
//! node is given [`GRACE_MS`] to come back (after a coordinator outage
//! every worker registers again, and the master claims its place).

use std::collections::{BTreeMap, BTreeSet};

use super::election::Succession;
use crate::coord::election::{MasterRecord, ReportedRole, WorkerReport};

/// How long a master's node may be missing right after the watcher's
/// session (re)opened before that counts as a death.
pub const GRACE_MS: u64 = 2_000;
/// How long a worker whose session ended while its process runs on may
/// take to come back before it is taken for hung.
pub const HUNG_AFTER_MS: u64 = 5_000;
/// How many times a replacement is tried, and how long apart.
pub const RESPAWN_TRIES: u32 = 10;
pub const RESPAWN_WAIT_MS: u64 = 1_000;
/// How long startup waits for every worker to register before electing
/// among those that did.
pub const STARTUP_WAIT_MS: u64 = 15_000;
/// How long an elected worker may take to take its election (report
/// itself promoting, or leading) before it is taken for hung: paused or
/// stuck within its session, it would hold the cluster without a master
/// until that session ends. A worker that says it is promoting is left to
/// drain however long that takes.
pub const PROMOTION_MS: u64 = 2_000;
/// How soon a failed election is tried again.
pub const ELECTION_RETRY_MS: u64 = 50;
/// How long a buried worker's pid is remembered. A dead worker's pid
/// matters while something about its death may still come: its node
/// (until its session expires, seconds), the runtime's exit, `/master`
/// naming it (an election's outcome read late). Five minutes is far past
/// all of them; then it is forgotten, so that the map of pids does not
/// grow with every death over a long run. The succession (the masters
/// lost since the last one seen leading) is kept apart, by worker id, and
/// is not touched: it stays until a master leads. A pid that comes back
/// (registered, or reused by the OS) is known afresh, as live.
pub const FORGET_BURIED_MS: u64 = 5 * 60 * 1000;
/// More pids than this, and the buried ones go at once, however recent
/// (a safety net for a storm of deaths).
const REMEMBERED: usize = 1024;

/// A worker process as the runtime lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Running {
    pub id: u64,
    pub pid: u64,
}

/// What became of a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    Live,
    /// Being stopped on purpose: not replaced, never elected.
    Leaving,
    /// Its session ended while its process runs on; judged at `until`.
    Hung {
        until: u64,
    },
    /// Its death was handled, at `at`.
    Buried {
        at: u64,
    },
}

/// A timer the watcher sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    CheckMaster,
    CheckHung {
        pid: u64,
    },
    /// Whether worker `pid`, elected for `epoch`, took its election.
    CheckPromotion {
        pid: u64,
        epoch: u64,
    },
}

/// What happens to the watcher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// A coordinator session opened.
    Connected,
    /// The session ended (another is being opened).
    Disconnected,
    /// The registered workers' reports, by pid.
    View(BTreeMap<u64, WorkerReport>),
    /// What `/master` says, and its version.
    Master(Option<(MasterRecord, i32)>),
    /// The runtime saw worker `pid` exit, or begin to stop on purpose.
    Exited {
        id: u64,
        pid: u64,
        expected: bool,
        gone: bool,
    },
    /// The crash API killed `pid`.
    Crashed {
        pid: u64,
    },
    /// An election's outcome: the record, and whether this one wrote it.
    Elected(Result<((MasterRecord, i32), bool), String>),
    Woke(Timer),
    /// A start finished: the pid, or why not.
    Started {
        id: u64,
        result: Result<u64, String>,
        tries: u32,
    },
    /// A hung worker was killed (or the kill failed).
    HungKilled {
        id: u64,
        pid: u64,
    },
    /// The cluster is shutting down: no more elections or replacements.
    Stop,
}

/// What the watcher's driver carries out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Run an election (read the reports and `/master` afresh, decide a
    /// ballot with these, write by compare-and-set) and report back.
    Elect {
        dead: Option<u64>,
        succession: Succession,
        known: Option<i32>,
        leaving: BTreeSet<u64>,
    },
    /// Delete a dead worker's node (its session may live on a while).
    DeleteNode {
        pid: u64,
    },
    /// Start worker `id` after a wait; report back with `tries` left.
    Start {
        id: u64,
        tries: u32,
        after_ms: u64,
    },
    /// Kill a hung worker through the runtime; report back.
    Kill {
        id: u64,
        pid: u64,
    },
    Wake {
        timer: Timer,
        after_ms: u64,
    },
    /// Tell the orchestrator a newer epoch leads.
    SetEpoch(u64),
    /// An event for the cluster view and the log.
    Event {
        kind: &'static str,
        detail: String,
    },
    /// Worth a warning in the log only.
    Warn(String),
}

/// The watcher's state.
#[derive(Clone, Debug)]
pub struct WatcherCore {
    view: BTreeMap<u64, WorkerReport>,
    master: Option<(MasterRecord, i32)>,
    /// Every worker known, by pid: its id and fate.
    known: BTreeMap<u64, (u64, Fate)>,
    succession: Succession,
    last_id: u64,
    grace_until: u64,
    connected: bool,
    coord_seen: bool,
    expect: usize,
    started_at: u64,
    electing: bool,
    stopped: bool,
    /// The workers whose replacement is being started, by id.
    starting: BTreeSet<u64>,
    /// Deaths seen while their worker was being started, by id: the
    /// pids. One of the process the start made (it ran, and died, before
    /// the watcher heard its start was done) is handled once it hears.
    died_starting: BTreeMap<u64, BTreeSet<u64>>,
    hung_after: u64,
}

mod transitions;

impl WatcherCore {
    /// A watcher started at `now`, waiting for `expect` workers before
    /// its first election (or [`STARTUP_WAIT_MS`]).
    pub fn new(expect: usize, now: u64) -> Self {
        WatcherCore {
            view: BTreeMap::new(),
            master: None,
            known: BTreeMap::new(),
            succession: Succession::default(),
            last_id: 0,
            grace_until: now,
            connected: false,
            coord_seen: false,
            expect,
            started_at: now,
            electing: false,
            stopped: false,
            starting: BTreeSet::new(),
            died_starting: BTreeMap::new(),
            hung_after: HUNG_AFTER_MS,
        }
    }

    /// With a planted bug in the election rule (tests of the checker).
    pub fn with_succession(mut self, succession: Succession) -> Self {
        self.succession = succession;
        self
    }

    /// What its succession knows, to keep in the coordinator.
    pub fn succession(&self) -> crate::core::election::SuccessionRecord {
        self.succession.record()
    }

    /// Takes on the succession a watcher before it kept: which stores
    /// must be heard before anyone is elected over them.
    pub fn inherit(&mut self, record: &crate::core::election::SuccessionRecord) {
        self.succession.inherit(record);
    }

    /// The cluster is shutting down.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    pub fn set_hung_after(&mut self, ms: u64) {
        self.hung_after = ms;
    }

    /// The registered workers' reports, by pid.
    pub fn view(&self) -> &BTreeMap<u64, WorkerReport> {
        &self.view
    }

    /// What `/master` said last.
    pub fn master(&self) -> Option<MasterRecord> {
        self.master.map(|(m, _)| m)
    }

    /// The master, if it is registered.
    pub fn live_master(&self) -> Option<MasterRecord> {
        self.master().filter(|m| self.view.contains_key(&m.pid))
    }

    /// Replacements being started.
    pub fn starting(&self) -> usize {
        self.starting.len()
    }

    /// The ids of the workers being started.
    pub fn starting_ids(&self) -> Vec<u64> {
        self.starting.iter().copied().collect()
    }

    /// What became of worker `pid`, if it is known.
    pub fn fate(&self, pid: u64) -> Option<Fate> {
        self.known.get(&pid).map(|&(_, f)| f)
    }

    /// The Scaler would stop `pid`: true, and from now on it is never
    /// elected, unless it leads or an election is under way.
    pub fn retiring(&mut self, pid: u64) -> bool {
        let leads = self.master.is_none_or(|(m, _)| m.pid == pid);
        if self.electing || leads || self.stopped {
            return false;
        }
        let id = self.id_of(pid).unwrap_or(0);
        self.known.insert(pid, (id, Fate::Leaving));
        true
    }

    /// An id no worker has had: above every one known or running.
    pub fn reserve_id(&mut self, running: &[Running]) -> u64 {
        let top = running.iter().map(|w| w.id).max().unwrap_or(0);
        self.last_id = self.last_id.max(top) + 1;
        self.last_id
    }

    fn id_of(&self, pid: u64) -> Option<u64> {
        self.view
            .get(&pid)
            .map(|r| r.id)
            .or_else(|| self.known.get(&pid).map(|&(id, _)| id))
    }

    fn master_pid(&self) -> Option<u64> {
        self.master.map(|(m, _)| m.pid)
    }

    fn leaving(&self) -> BTreeSet<u64> {
        self.known
            .iter()
            .filter(|(_, (_, f))| *f == Fate::Leaving)
            .map(|(&pid, _)| pid)
            .collect()
    }

    /// The master's report, if it is registered.
    fn master_report(&self) -> Option<&WorkerReport> {
        self.master_pid().and_then(|pid| self.view.get(&pid))
    }

    /// The master's id, if it leads (drained, takes writes).
    fn leads(&self) -> Option<u64> {
        self.master_report()
            .filter(|r| r.role == ReportedRole::Master && r.ready)
            .map(|r| r.id)
    }
}

#[cfg(test)]
mod tests;
