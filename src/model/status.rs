//! A worker's status: shared by the workers that report it and the
//! runtimes that ask for it.

/// What a worker is and how far it got (what `GetStatus` answers, and
/// what a worker's control listener says of it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WorkerStatus {
    pub id: u64,
    pub master: bool,
    pub applied_seq: u64,
    /// A slave is ready once caught up; a master while it takes writes
    /// (its lease is valid).
    pub ready: bool,
    /// Reads this worker has answered.
    pub reads_served: u64,
    /// The newest epoch it follows (a master: the one it leads).
    pub epoch: u64,
    /// The epoch that wrote its last applied write.
    pub last_epoch: u64,
}
