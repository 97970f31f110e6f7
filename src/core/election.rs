//! Who leads: the election rule, who may stand, the stores that must be
//! heard before anyone else leads, and what a worker does when `/master`
//! changes. Pure functions over the records of [`crate::coord::election`].
//!
//! Safety rests on one fact: a worker that is caught up (a ready slave,
//! which drains its sync queue up to a fence of its own before it leads)
//! ends up with every acknowledged write; so does the store of a master
//! that led (it flushed each write before acknowledging it). A worker
//! that was only *elected* holds no such promise until it has drained and
//! flushed: a slave acknowledges syncs to the broker before sled flushes
//! them, so killed mid-promotion it comes back with less than it reported,
//! and those syncs are gone from its queue. [`Succession`] therefore
//! remembers the last master seen leading and every master lost since,
//! and when nobody is caught up the election waits for all of their
//! stores and picks the newest history among them.

use std::collections::{BTreeMap, BTreeSet};

use crate::coord::election::{MasterRecord, ReportedRole, WorkerReport};

/// A worker that could lead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub id: u64,
    pub pid: u64,
    pub applied_seq: u64,
    /// The epoch of its last write: a replica whose last write comes from
    /// a newer epoch holds more of the history, even with fewer writes (the
    /// others' extra writes are a deposed master's).
    pub last_epoch: u64,
}

impl From<&WorkerReport> for Candidate {
    fn from(r: &WorkerReport) -> Self {
        Candidate {
            id: r.id,
            pid: r.pid,
            applied_seq: r.applied,
            last_epoch: r.last_epoch,
        }
    }
}

/// The new master: the candidate with the newest history (the epoch of
/// its last write, then the highest applied sequence number: Raft's
/// "up to date" rule; with one history, simply the highest applied seq),
/// ties broken by the lowest pid (the original's rule), then the lowest id.
pub fn choose_master(candidates: &[Candidate]) -> Option<Candidate> {
    candidates.iter().copied().max_by_key(|c| {
        (
            c.last_epoch,
            c.applied_seq,
            std::cmp::Reverse((c.pid, c.id)),
        )
    })
}

/// The epoch a new master takes: past every epoch anyone has seen.
pub fn next_epoch(current: Option<&MasterRecord>, reports: &[WorkerReport]) -> u64 {
    let seen = reports.iter().map(|r| r.epoch).max().unwrap_or(0);
    current.map_or(0, |m| m.epoch).max(seen) + 1
}

/// What a worker does when `/master` changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleChange {
    Stay,
    /// Lead under this epoch (a slave drains first).
    Lead {
        epoch: u64,
    },
    /// Someone else leads now: stop taking writes at once, follow.
    Follow,
}

/// Worker `pid`, leading under `leading` (if it leads), sees `master`.
pub fn role_change(pid: u64, leading: Option<u64>, master: Option<&MasterRecord>) -> RoleChange {
    match (master, leading) {
        (Some(m), None) if m.pid == pid => RoleChange::Lead { epoch: m.epoch },
        (Some(m), Some(e)) if m.pid == pid && m.epoch > e => RoleChange::Lead { epoch: m.epoch },
        (Some(m), Some(_)) if m.pid != pid => RoleChange::Follow,
        (None, Some(_)) => RoleChange::Follow,
        _ => RoleChange::Stay,
    }
}

/// A deliberately wrong rule, for checking that the simulator's checker
/// catches what it should (never set in production).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutation {
    /// Remember only the last master lost (the rule before
    /// [`Succession`]): a promotee killed before it led is then the only
    /// store that may lead, with less than the old master acknowledged
    /// (and, as then, no replica with a newer history stands beside it).
    OnlyLastMaster,
}

/// The stores that may hold acknowledged writes nobody caught up holds:
/// the last master seen leading's, and those of the masters lost since
/// (by worker id: a store outlives its process, and a worker is started
/// again over it under the same id).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Succession {
    heirs: BTreeSet<u64>,
    /// Every other worker lost since a master last led: heard too when an
    /// heir's store turns out lost (see [`eligible`]).
    lost: BTreeSet<u64>,
    mutation: Option<Mutation>,
}

/// What a [`Succession`] knows, as kept in the coordinator (`/succession`)
/// so that a watcher that starts afresh (another orchestrator took the
/// lead, or this one started again) knows which stores must be heard: a
/// fresh one would otherwise take the cluster for a new one and elect any
/// worker, over stores that hold acknowledged writes.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SuccessionRecord {
    pub heirs: BTreeSet<u64>,
    pub lost: BTreeSet<u64>,
}

impl Succession {
    /// What it knows, to keep.
    pub fn record(&self) -> SuccessionRecord {
        SuccessionRecord {
            heirs: self.heirs.clone(),
            lost: self.lost.clone(),
        }
    }

    /// Takes on what a record says besides what it knows (more heirs only
    /// make an election wait for more stores; a master that leads clears
    /// them).
    pub fn inherit(&mut self, record: &SuccessionRecord) {
        self.heirs.extend(&record.heirs);
        self.lost
            .extend(record.lost.iter().filter(|id| !self.heirs.contains(id)));
    }

    /// With a planted bug (tests of the checker only).
    pub fn mutated(mutation: Mutation) -> Self {
        Succession {
            mutation: Some(mutation),
            ..Succession::default()
        }
    }

    /// The master (elected or leading), worker `id`, was lost.
    pub fn master_lost(&mut self, id: u64) {
        if self.mutation == Some(Mutation::OnlyLastMaster) {
            self.heirs.clear();
        }
        self.heirs.insert(id);
    }

    /// Master `id` leads (drained, flushed, takes writes): its store holds
    /// every acknowledged write, and stays an heir until another leads
    /// (deposed alive, it may hold writes a promotee killed mid-drain
    /// never got: a slave acknowledges syncs before sled flushes them).
    ///
    /// The workers lost meanwhile are forgotten only when a new master
    /// begins to lead (it drained every acknowledged write they held),
    /// not each time the same one is seen leading: those lost while it
    /// leads may hold what only they and it hold (a restore one of them
    /// installed), should its store be lost later.
    pub fn master_leads(&mut self, id: u64) {
        let same = self.heirs.len() == 1 && self.heirs.contains(&id);
        self.heirs.clear();
        self.heirs.insert(id);
        if !same {
            self.lost.clear();
        }
    }

    /// Worker `id`, not the master, died (not stopped on purpose). Its
    /// store matters only if an heir's store is lost: it may then be the
    /// only one holding what was acknowledged (a restore it installed).
    pub fn worker_lost(&mut self, id: u64) {
        if !self.heirs.contains(&id) {
            self.lost.insert(id);
        }
    }

    /// The workers whose stores must be heard when nobody is caught up.
    pub fn heirs(&self) -> &BTreeSet<u64> {
        &self.heirs
    }
}

/// Who may lead, of the registered workers but `dead`, or why nobody may
/// yet; and whether they stand as heirs (nobody caught up: their stores
/// vouch for the history, not their readiness). The caught-up ones if any (a ready slave drains before it leads);
/// else, after a master was lost, the stores of [`Succession::heirs`],
/// once every one of them is registered again (the newest history among
/// them wins; one that declined is asked again under a new epoch rather
/// than leaving no way forward); at startup, with no master lost, any
/// (each holds what its store holds).
pub fn eligible(
    reports: &[WorkerReport],
    succession: &Succession,
    dead: Option<u64>,
) -> Result<(Vec<Candidate>, bool), String> {
    // A worker that declined is alive (it said so), even when the
    // election runs because it declined.
    let live: Vec<&WorkerReport> = reports
        .iter()
        .filter(|r| Some(r.pid) != dead || r.role == ReportedRole::Declined)
        .collect();
    let willing = live.iter().filter(|r| r.role != ReportedRole::Declined);
    let ready: Vec<Candidate> = willing
        .clone()
        .filter(|r| r.ready)
        .map(|r| Candidate::from(*r))
        .collect();
    let heirs = succession.heirs();
    if !ready.is_empty() || heirs.is_empty() {
        let any = willing.map(|r| Candidate::from(*r));
        return Ok((
            if ready.is_empty() {
                any.collect()
            } else {
                ready
            },
            false,
        ));
    }
    if let Some(missing) = heirs.iter().find(|id| !live.iter().any(|r| r.id == **id)) {
        return Err(format!(
            "nobody is caught up; waiting for the store of worker {missing}"
        ));
    }
    let theirs = |r: &&&WorkerReport| heirs.contains(&r.id);
    let mut standing: Vec<Candidate> = willing
        .clone()
        .filter(theirs)
        .map(|r| Candidate::from(*r))
        .collect();
    if !standing.is_empty() {
        // An heir's store holds everything any replica applied (a master
        // flushes each write before it publishes it), unless it was lost
        // (the worker started again over an empty or older disk): then a
        // replica with a newer history stands too, rather than that store
        // leading and the replicas' history being thrown away.
        // A store lost with an heir's may leave what was acknowledged on
        // one replica alone (a restore is acknowledged once one has
        // installed it): every worker lost meanwhile is heard as well.
        let planted = succession.mutation == Some(Mutation::OnlyLastMaster);
        if let Some(best) = choose_master(&standing).filter(|_| !planted) {
            let newer: Vec<Candidate> = willing
                .filter(|r| !heirs.contains(&r.id))
                .map(|r| Candidate::from(*r))
                .filter(|c| (c.last_epoch, c.applied_seq) > (best.last_epoch, best.applied_seq))
                .collect();
            if !newer.is_empty() {
                let away = succession
                    .lost
                    .iter()
                    .find(|id| !live.iter().any(|r| r.id == **id));
                if let Some(away) = away {
                    return Err(format!(
                        "an heir's store came back older than a replica's (lost); \
                         waiting for the store of worker {away}"
                    ));
                }
            }
            standing.extend(newer);
        }
        return Ok((standing, true));
    }
    let declined = live.iter().filter(theirs).map(|r| Candidate::from(*r));
    Ok((declined.collect(), true))
}

/// What one round of an election does, given what it read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ballot {
    /// `/master` names a live worker: it stays.
    Keep,
    /// Write this record (by compare-and-set on what was read).
    Elect(MasterRecord),
    /// Nobody may lead yet.
    Wait(String),
}

/// One round of an election, never choosing `dead` nor a worker being
/// stopped on purpose (`leaving`). `view` holds the registered workers by
/// pid; `current` is what `/master` says, and `changed` whether it changed
/// since the watcher last knew it. A record that changed and names a
/// registered worker stays: it was elected meanwhile, or it is the master
/// itself, back and claiming its place (its lease is valid: electing over
/// it would make two masters).
pub fn ballot(
    view: &BTreeMap<u64, WorkerReport>,
    current: Option<&MasterRecord>,
    changed: bool,
    dead: Option<u64>,
    succession: &Succession,
    leaving: &BTreeSet<u64>,
) -> Ballot {
    if let Some(m) = current {
        if view.contains_key(&m.pid) && (changed || Some(m.pid) != dead) {
            return Ballot::Keep;
        }
    }
    let reports: Vec<WorkerReport> = view.values().copied().collect();
    let staying: Vec<WorkerReport> = reports
        .iter()
        .filter(|r| !leaving.contains(&r.pid))
        .copied()
        .collect();
    let (candidates, heir) = match eligible(&staying, succession, dead) {
        Ok(c) => c,
        Err(why) => return Ballot::Wait(why),
    };
    match choose_master(&candidates) {
        Some(best) => Ballot::Elect(MasterRecord {
            pid: best.pid,
            id: best.id,
            epoch: next_epoch(current, &reports),
            heir,
        }),
        None => Ballot::Wait("no worker may lead".into()),
    }
}

#[cfg(test)]
mod tests;
