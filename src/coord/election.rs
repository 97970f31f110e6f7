//! The records the election reads from and writes to the coordinator
//! (the decisions on them are in [`crate::core::election`]).
//!
//! - `/workers/<pid>` (ephemeral, one per worker): a [`WorkerReport`],
//!   kept fresh by the worker.
//! - `/master`: a [`MasterRecord`], written by the election watcher with a
//!   compare-and-set on its version, so two elections cannot both win.
//! - `/orchestrators/<session>` (ephemeral, one per orchestrator): an
//!   [`OrchestratorRecord`], kept fresh by its orchestrator.
//! - `/leader` (ephemeral): the [`OrchestratorRecord`] of the orchestrator
//!   whose watcher and Scaler act (elect, start and stop workers); the
//!   others only follow.

use serde::{Deserialize, Serialize};

/// Where the workers register.
pub const WORKERS: &str = "/workers";
/// Who leads, and the epoch.
pub const MASTER: &str = "/master";
/// The cluster's identity.
pub const CLUSTER: &str = "/cluster";
/// Where the orchestrators register.
pub const ORCHESTRATORS: &str = "/orchestrators";
/// The leading orchestrator.
pub const LEADER: &str = "/leader";
/// Which stores must be heard before anyone is elected (what the leading
/// watcher's succession knows: `core::election::SuccessionRecord`).
pub const SUCCESSION: &str = "/succession";

/// The path of the node of the orchestrator whose session is `session`.
pub fn orchestrator_path(session: u64) -> String {
    format!("{ORCHESTRATORS}/{session:016x}")
}

/// What an orchestrator's node (and `/leader`) holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrchestratorRecord {
    /// Its process id.
    pub pid: u64,
    /// Its DB API's base URL.
    pub addr: String,
    /// Its coordinator session (what its ephemeral nodes belong to).
    pub session: u64,
    /// The client reads it has served since it started (the leading
    /// one's Scaler adds up everyone's).
    #[serde(default)]
    pub reads: u64,
}

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
    /// Elected while nobody was caught up, as the newest history among
    /// the stores that hold every acknowledged write (see
    /// `core::election::Succession`): it leads on its store alone, without
    /// a master's word that it missed nothing (there is no master to ask).
    #[serde(default)]
    pub heir: bool,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_garbage_is_none() {
        let m = MasterRecord {
            pid: 1,
            id: 2,
            epoch: 3,
            heir: false,
        };
        assert_eq!(decode::<MasterRecord>(&encode(&m)), Some(m));
        assert_eq!(decode::<MasterRecord>(b"{\"pid\":1}"), None);
        assert_eq!(decode::<WorkerReport>(b"\xff"), None);
    }
}
