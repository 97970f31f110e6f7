//! Who leads, and what a worker does about it: pure decisions, kept apart
//! from the actors that act on them, and the records they read from the
//! coordinator.
//!
//! - `/workers/<pid>` (ephemeral, one per worker): a [`WorkerReport`],
//!   kept fresh by the worker.
//! - `/master`: a [`MasterRecord`], written by the election watcher with a
//!   compare-and-set on its version, so two elections cannot both win.

use serde::{Deserialize, Serialize};

/// Where the workers register.
pub const WORKERS: &str = "/workers";
/// Who leads, and the epoch.
pub const MASTER: &str = "/master";
/// The cluster's identity.
pub const CLUSTER: &str = "/cluster";

/// The path of worker `pid`'s node.
pub fn worker_path(pid: u64) -> String {
    format!("{WORKERS}/{pid}")
}

/// What `/master` holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterRecord {
    pub pid: u64,
    pub id: u64,
    pub epoch: u64,
}

/// A worker's role, as it reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportedRole {
    Slave,
    /// Elected, draining what the old master sent before it takes writes.
    Promoting,
    Master,
    /// Elected, but cannot lead (it lacks writes it should have): the
    /// watcher elects another.
    Declined,
}

/// What a worker's node holds: who it is and how far it got.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerReport {
    pub id: u64,
    pub pid: u64,
    pub role: ReportedRole,
    /// The last sequence number it applied.
    pub applied: u64,
    /// The epoch that wrote that last write (its lineage's owner of it).
    pub last_epoch: u64,
    /// The newest epoch it has heard of.
    pub epoch: u64,
    /// A slave serves reads once caught up; a master always is.
    pub ready: bool,
    /// Its coordinator session.
    #[serde(default)]
    pub session: u64,
}

/// Decodes a node's JSON; `None` for what is not one (logged by callers).
pub fn decode<T: serde::de::DeserializeOwned>(data: &[u8]) -> Option<T> {
    serde_json::from_slice(data).ok()
}

/// Encodes a record as JSON.
pub fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    // Plain structs of numbers and enums always serialize.
    serde_json::to_vec(record).unwrap_or_default()
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: u64, pid: u64, applied_seq: u64) -> Candidate {
        Candidate {
            id,
            pid,
            applied_seq,
            last_epoch: 1,
        }
    }

    #[test]
    fn the_most_advanced_leads_ties_to_the_lowest_pid() {
        let cases: &[(&[Candidate], Option<u64>)] = &[
            (&[], None),
            (&[c(1, 10, 0)], Some(1)),
            (&[c(1, 10, 5), c(2, 5, 7)], Some(2)),
            (&[c(1, 10, 7), c(2, 5, 7)], Some(2)),
            (&[c(3, 5, 7), c(2, 5, 7)], Some(2)),
            (&[c(1, 1, 3), c(2, 2, 9), c(3, 3, 9)], Some(2)),
        ];
        for (cands, want) in cases {
            assert_eq!(choose_master(cands).map(|c| c.id), *want, "{cands:?}");
        }
        // A deposed master's extra writes do not win over the newer epoch.
        let orphaned = Candidate {
            last_epoch: 1,
            ..c(1, 1, 120)
        };
        let current = Candidate {
            last_epoch: 2,
            ..c(2, 2, 110)
        };
        assert_eq!(choose_master(&[orphaned, current]).map(|c| c.id), Some(2));
    }

    fn report(epoch: u64) -> WorkerReport {
        WorkerReport {
            id: 1,
            pid: 1,
            role: ReportedRole::Slave,
            applied: 0,
            last_epoch: 0,
            epoch,
            ready: true,
            session: 0,
        }
    }

    #[test]
    fn new_epochs_pass_every_epoch_seen() {
        let m = MasterRecord {
            pid: 1,
            id: 1,
            epoch: 4,
        };
        assert_eq!(next_epoch(None, &[]), 1);
        assert_eq!(next_epoch(Some(&m), &[report(2)]), 5);
        assert_eq!(next_epoch(Some(&m), &[report(7), report(3)]), 8);
        assert_eq!(next_epoch(None, &[report(3)]), 4);
    }

    #[test]
    fn workers_lead_or_follow_what_master_says() {
        let m = |pid, epoch| MasterRecord {
            pid,
            id: pid,
            epoch,
        };
        let table = [
            (7, None, Some(m(7, 3)), RoleChange::Lead { epoch: 3 }),
            (7, None, Some(m(8, 3)), RoleChange::Stay),
            (7, None, None, RoleChange::Stay),
            (7, Some(3), Some(m(7, 3)), RoleChange::Stay),
            (7, Some(3), Some(m(7, 4)), RoleChange::Lead { epoch: 4 }),
            (7, Some(3), Some(m(8, 4)), RoleChange::Follow),
            (7, Some(3), Some(m(8, 3)), RoleChange::Follow),
            (7, Some(3), None, RoleChange::Follow),
        ];
        for (pid, leading, master, want) in table {
            assert_eq!(
                role_change(pid, leading, master.as_ref()),
                want,
                "{master:?}"
            );
        }
    }

    #[test]
    fn records_round_trip_and_garbage_is_none() {
        let m = MasterRecord {
            pid: 1,
            id: 2,
            epoch: 3,
        };
        assert_eq!(decode::<MasterRecord>(&encode(&m)), Some(m));
        assert_eq!(decode::<MasterRecord>(b"{\"pid\":1}"), None);
        assert_eq!(decode::<WorkerReport>(b"\xff"), None);
    }
}
