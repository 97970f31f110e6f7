//! The core's inputs and outputs: what the driver tells it of the
//! cluster, what happened, what to do, and the decision as it is shown.

use serde::Serialize;

use super::ScalePolicy;

/// One worker the runtime runs, as the watcher sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    pub pid: u64,
    pub state: MemberState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberState {
    /// Runs but is not registered: still starting, or hung.
    Unregistered,
    Leading,
    Serving,
    CatchingUp,
    /// Promoting or declined.
    Other,
}

/// What the cluster looks like now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterSnapshot {
    /// The pid of the master that leads now, if one does.
    pub master: Option<u64>,
    /// Every worker the runtime runs, the master too.
    pub workers: Vec<Member>,
    /// The ids of the replacements the watcher is starting. One may run
    /// already (and be among `workers`) before the watcher hears its
    /// start is done: it counts once.
    pub starting: Vec<u64>,
}

impl ClusterSnapshot {
    /// Replacements being started that do not run yet.
    pub fn starting_not_running(&self) -> usize {
        let runs = |id: &u64| self.workers.iter().any(|w| w.id == *id);
        self.starting.iter().filter(|id| !runs(id)).count()
    }
}

/// What happened, for the core to act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// Time passes; `reads` is the count since the driver began (it only
    /// grows).
    Tick {
        reads: u64,
    },
    /// Decide now on the reads counted so far; the answer names `ticket`.
    DecideNow {
        reads: u64,
        ticket: u64,
    },
    /// The answer to [`Effect::Observe`].
    Cluster(ClusterSnapshot),
    /// [`Effect::Observe`] found no answer.
    NoCluster(String),
    Started {
        id: u64,
    },
    /// A start failed (`id` when one had been reserved).
    StartFailed {
        id: Option<u64>,
        error: String,
    },
    /// A slave was stopped for good (`error` if its stop went wrong).
    Retired {
        id: u64,
        error: Option<String>,
    },
    /// The watcher did not agree to the slave's stop (it leads now, or an
    /// election runs).
    RetireRefused {
        id: u64,
    },
    Stop,
}

/// What the driver is to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Look at the cluster and answer [`Input::Cluster`].
    Observe,
    /// A decision was made: log it and show it as an event now.
    Announce(ScaleDecision),
    /// A window ended with no decision (`detail` says why).
    NoDecision { detail: String },
    /// Start one slave under a new id; answer [`Input::Started`] or
    /// [`Input::StartFailed`].
    StartSlave,
    /// Stop this slave for good once the watcher agrees; answer
    /// [`Input::Retired`] or [`Input::RetireRefused`].
    Retire { id: u64, pid: u64 },
    /// A decision was carried out as far as it goes (`outcome` says how).
    Finished(ScaleDecision),
    /// The answer to the [`Input::DecideNow`] of these tickets.
    Answer {
        tickets: Vec<u64>,
        result: Result<ScaleDecision, String>,
    },
    /// Nothing is under way any more and nothing will be: the driver may
    /// end.
    Stopped,
}

/// One decision, as the cluster view shows it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ScaleDecision {
    /// When it was made, in the driver's clock (Unix milliseconds).
    pub at: u64,
    pub reads: u64,
    /// Slaves before, and the number decided (within min and max).
    pub from: usize,
    pub to: usize,
    /// Slaves the reads call for before the bounds.
    pub wanted: u64,
    /// Slaves this decision goes to: `to`, or nearer by at most max step.
    pub step_to: usize,
    /// Workers started and stopped for it so far.
    pub started: Vec<u64>,
    pub stopped: Vec<u64>,
    /// Carried out as far as it goes.
    pub done: bool,
    pub reason: String,
    /// Once done, what came of it (none when nothing was to be done).
    pub outcome: Option<String>,
}

/// What the cluster view shows of the Scaler.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ScalerView {
    pub policy: ScalePolicy,
    /// Reads counted in the window under way.
    pub reads: u64,
    /// Seconds until the window under way ends (none before its first
    /// read).
    pub next_decision_in: Option<f64>,
    /// The decision under way, else the last one.
    pub last: Option<ScaleDecision>,
}
