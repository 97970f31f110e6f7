//! Every message the actors exchange, one line of doc each.

use actix::Message;

use crate::error::Result;
pub use crate::model::WorkerStatus;
use crate::model::{Consistency, ReadOp, ReadReply, WriteOp, WriteReply};

/// Orchestrator: run a read on a slave through `readQ`.
#[derive(Message, Debug)]
#[rtype(result = "Result<ReadReply>")]
pub struct DbRead {
    pub op: ReadOp,
    pub consistency: Consistency,
}

/// Orchestrator: run a write on the master through `writeQ`.
#[derive(Message, Debug)]
#[rtype(result = "Result<WriteReply>")]
pub struct DbWrite {
    /// The same id on every retry, so the master applies it once.
    pub request_id: u128,
    pub op: WriteOp,
    /// When the request was first sent (wall-clock ms), the same on every
    /// retry.
    pub sent_ms: u64,
}

/// Orchestrator: a newer epoch leads (the election watcher saw it).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct SetEpoch(pub u64);

/// Orchestrator: counters for metrics and the Scaler.
#[derive(Message, Debug)]
#[rtype(result = "OrchestratorStats")]
pub struct GetStats;

/// What [`GetStats`] answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct OrchestratorStats {
    /// Reads since start.
    pub reads: u64,
    /// Writes acknowledged since start.
    pub writes: u64,
    /// The highest sequence number acknowledged to a client.
    pub last_acked_seq: u64,
    pub epoch: u64,
    /// Requests waiting for a reply now.
    pub in_flight: usize,
    /// Batches of reads and of writes sent and not yet answered.
    pub read_batches: usize,
    pub write_batches: usize,
    /// Batches sent since start, and the requests in them, by kind.
    pub read_batches_sent: u64,
    pub reads_sent: u64,
    pub write_batches_sent: u64,
    pub writes_sent: u64,
    /// Asks for the master's head (read-index), strong reads sent beside
    /// their ask, and those sent again because read below the head.
    pub head_asks: u64,
    pub reads_beside_ask: u64,
    pub reads_again: u64,
}

/// Worker: what it is and how far it got.
#[derive(Message, Debug)]
#[rtype(result = "WorkerStatus")]
pub struct GetStatus;

/// Worker: stop consuming, settle what is held, flush, and stop.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Shutdown;

/// Slave, elected: drain what the old master sent (up to a fence of its
/// own on `syncQ`), stop serving reads, and answer the seq reached.
#[derive(Message, Debug)]
#[rtype(result = "Result<u64>")]
pub struct Drain {
    /// Elected as an heir (`MasterRecord::heir`).
    pub heir: bool,
}

/// Slave, drained: stop, for its worker leads on its store now. As
/// [`Shutdown`], but its sync queue stays for the master it becomes to
/// remove, in the background: the switch does not wait on the broker.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Promoted;

/// Slave: its worker opened a new coordinator session (see
/// `core::replica::Input::Rejoined`).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Rejoined;

/// Slave, after a drain that failed: forget the drain and serve again.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Resume;
