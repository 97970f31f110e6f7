//! A worker's role and how it changes: the decisions of the Worker actor
//! as a state machine. [`RoleCore::on`] takes what `/master` says, how a
//! drain or a stop went, a lease check's answer, a timer, and answers the
//! [`Effect`]s on the worker's role actors (drain the slave, stop it,
//! start a master, ...). No I/O, no clock.
//!
//! - Following: a slave (catching up or serving: the replica knows).
//! - Named in `/master` for an epoch: it drains what the old master sent
//!   (a fence of its own on `syncQ`, everything before it applied and
//!   flushed), its slave stops, and it leads under the new epoch. A drain
//!   that fails leaves the slave the slave it was (never a second one
//!   beside it); it tries again [`LEAD_TRIES`] times, [`LEAD_RETRY_MS`]
//!   apart, then declines, and the watcher elects another.
//! - Leading: named again under a newer epoch, it starts again under it
//!   (nothing to drain); someone else named, it stops taking writes at
//!   once (the lease is revoked) and follows as a slave.
//! - While a role is being switched, what `/master` says is kept and
//!   decided on once the switch is done.

use super::election::{role_change, RoleChange};
use crate::coord::election::{MasterRecord, ReportedRole};

/// How many times an elected worker tries to lead before it declines.
pub const LEAD_TRIES: u32 = 3;
/// How long apart.
pub const LEAD_RETRY_MS: u64 = 200;

/// Where a worker's role stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Following,
    /// Elected for `epoch`: its slave drains.
    Promoting {
        epoch: u64,
    },
    /// The old role is stopping; then it leads `epoch` (or follows).
    Switching {
        lead: Option<u64>,
    },
    Leading {
        epoch: u64,
    },
    Stopping,
}

/// What happens to the worker's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// What `/master` says now.
    Master(Option<MasterRecord>),
    /// The slave's drain finished (false: it failed or timed out).
    Drained(bool),
    /// The old role's actor has stopped.
    Stopped,
    /// A lease check found `/master` naming another (or nobody).
    NotMine(Option<MasterRecord>),
    /// The retry timer fired.
    Woke,
    /// The worker is shutting down.
    Shutdown,
}

/// What the Worker actor carries out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Ask the slave to drain up to a fence of its own (bounded).
    Drain,
    /// The drain failed: the slave goes on serving as it was.
    Resume,
    /// Stop the slave (drained: the master it becomes removes its sync
    /// queue).
    StopSlave,
    /// Stop the master (it settles what it holds).
    StopMaster,
    /// Start leading under `epoch`, with a fresh lease claimed in this
    /// session.
    StartMaster {
        epoch: u64,
    },
    StartSlave,
    /// No more writes here, at once.
    RevokeLease,
    /// Wake up after a while (to try to lead again).
    Wake {
        after_ms: u64,
    },
    /// The report changed: write it.
    Report,
}

/// A worker's role.
#[derive(Clone, Debug)]
pub struct RoleCore {
    pid: u64,
    phase: Phase,
    /// The epoch it was elected for but could not lead.
    declined: Option<u64>,
    failures: u32,
    /// What `/master` said last.
    seen: Option<MasterRecord>,
}

impl RoleCore {
    /// Worker `pid`, starting as a slave.
    pub fn new(pid: u64) -> Self {
        RoleCore {
            pid,
            phase: Phase::Following,
            declined: None,
            failures: 0,
            seen: None,
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The epoch it leads under, if it leads.
    pub fn leading(&self) -> Option<u64> {
        match self.phase {
            Phase::Leading { epoch } => Some(epoch),
            _ => None,
        }
    }

    /// Whether `/master` names this worker as an heir (see
    /// [`MasterRecord::heir`]): its drain need not wait for a master's
    /// word that it is current.
    pub fn elected_as_heir(&self) -> bool {
        self.seen.is_some_and(|m| m.pid == self.pid && m.heir)
    }

    /// The role its report shows.
    pub fn reported(&self) -> ReportedRole {
        match self.phase {
            Phase::Following if self.declined.is_some() => ReportedRole::Declined,
            Phase::Following | Phase::Stopping => ReportedRole::Slave,
            Phase::Leading { .. } => ReportedRole::Master,
            Phase::Promoting { .. } | Phase::Switching { .. } => ReportedRole::Promoting,
        }
    }

    pub fn on(&mut self, input: Input) -> Vec<Effect> {
        if self.phase == Phase::Stopping {
            return Vec::new();
        }
        match input {
            Input::Master(record) | Input::NotMine(record) => {
                self.seen = record;
                self.overtaken().unwrap_or_else(|| self.decide())
            }
            Input::Woke => self.decide(),
            Input::Drained(ok) => self.drained(ok),
            Input::Stopped => self.stopped(),
            Input::Shutdown => {
                self.phase = Phase::Stopping;
                vec![Effect::RevokeLease]
            }
        }
    }

    /// A drain for an epoch `/master` no longer names this worker for (a
    /// newer election chose another) is given up at once: the slave goes
    /// on (its fence may never come: its capped queue may have dropped it).
    fn overtaken(&mut self) -> Option<Vec<Effect>> {
        let Phase::Promoting { epoch } = self.phase else {
            return None;
        };
        let mine = self
            .seen
            .is_some_and(|m| m.pid == self.pid && m.epoch == epoch);
        if mine {
            return None;
        }
        self.phase = Phase::Following;
        let mut fx = vec![Effect::Resume, Effect::Report];
        fx.extend(self.decide());
        Some(fx)
    }

    /// Acts on what `/master` said last, unless a switch is under way.
    fn decide(&mut self) -> Vec<Effect> {
        if !matches!(self.phase, Phase::Following | Phase::Leading { .. }) {
            return Vec::new(); // decided again once the switch is done
        }
        let record = self.seen;
        if record.is_none_or(|m| Some(m.epoch) != self.declined) {
            self.declined = None;
        }
        match role_change(self.pid, self.leading(), record.as_ref()) {
            RoleChange::Stay => Vec::new(),
            RoleChange::Lead { epoch } if self.declined == Some(epoch) => Vec::new(),
            RoleChange::Lead { epoch } if self.leading().is_some() => {
                self.phase = Phase::Switching { lead: Some(epoch) };
                vec![Effect::RevokeLease, Effect::StopMaster]
            }
            RoleChange::Lead { epoch } => {
                self.phase = Phase::Promoting { epoch };
                vec![Effect::Drain, Effect::Report]
            }
            RoleChange::Follow => {
                self.phase = Phase::Switching { lead: None };
                vec![Effect::RevokeLease, Effect::StopMaster]
            }
        }
    }

    fn drained(&mut self, ok: bool) -> Vec<Effect> {
        let Phase::Promoting { epoch } = self.phase else {
            return Vec::new();
        };
        if ok {
            self.failures = 0;
            self.phase = Phase::Switching { lead: Some(epoch) };
            return vec![Effect::StopSlave];
        }
        self.phase = Phase::Following;
        self.failures += 1;
        if self.failures < LEAD_TRIES {
            return vec![
                Effect::Resume,
                Effect::Wake {
                    after_ms: LEAD_RETRY_MS,
                },
                Effect::Report,
            ];
        }
        // Declined: the watcher sees it and elects another.
        self.declined = Some(epoch);
        self.failures = 0;
        vec![Effect::Resume, Effect::Report]
    }

    fn stopped(&mut self) -> Vec<Effect> {
        let Phase::Switching { lead } = self.phase else {
            return Vec::new();
        };
        let mut fx = match lead {
            Some(epoch) => {
                self.phase = Phase::Leading { epoch };
                vec![Effect::RevokeLease, Effect::StartMaster { epoch }]
            }
            None => {
                self.phase = Phase::Following;
                vec![Effect::StartSlave]
            }
        };
        fx.push(Effect::Report);
        // What `/master` said meanwhile is decided on now.
        fx.extend(self.decide());
        fx
    }
}

#[cfg(test)]
mod tests;
