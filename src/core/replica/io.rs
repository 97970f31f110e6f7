//! The replica core's inputs and outputs: what the driver saw happen, and
//! what the core asks it to do.
//!
//! A broker delivery never enters the core: the driver keeps it and hands
//! in a [`Token`] for it; every delivery the core is given comes back to
//! the driver exactly once, in an [`Effect::Ack`], an
//! [`Effect::Requeue`], an [`Effect::Serve`] or an [`Effect::Unavailable`]
//! (but for the syncs still pending when the replica shuts down: its queue
//! is deleted with them).

use crate::model::wire::{Reply, Snapshot, Stamp, SyncItem, SyncMessage};
use crate::model::Lineage;

/// The driver's name for a delivery it holds.
pub type Token = u64;

/// What came on a queue: its token, and the stamp and message decoded
/// (or why it did not decode).
#[derive(Clone, Debug, PartialEq)]
pub struct Delivered<T> {
    pub token: Token,
    pub item: Result<(Stamp, T), String>,
}

/// The queues a replica consumes for as long as it wants to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consumer {
    /// Its own capped queue, bound to `syncQ` (declared and bound first).
    Sync,
    /// `readQ`, shared with the other slaves.
    Reads,
}

/// What happened, for the core to act on.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// The replica starts.
    Start,
    /// Its worker opened a new coordinator session (the last one was lost:
    /// cut off or paused). Whatever it missed meanwhile (its sync queue may
    /// have expired and come back empty) shows nowhere yet: a caught-up
    /// replica asks the master whether it is current and stands in no
    /// election until it knows, as after subscribing again.
    Rejoined,
    /// A consumer asked for with [`Effect::Consume`] runs.
    Consuming(Consumer),
    /// A consumer could not be started (the broker is away).
    ConsumeFailed { consumer: Consumer, error: String },
    /// A consumer's stream ended (the broker went away).
    ConsumerEnded(Consumer),
    /// A group of deliveries from the sync queue, in queue order.
    Syncs(Vec<Delivered<SyncItem>>),
    /// A group of reads from `readQ`, each with the seq it needs.
    Reads(Vec<Delivered<u64>>),
    /// [`Effect::AskSnapshot`] could not be sent.
    AskFailed { request: u64, error: String },
    /// An answer (or part of one) to snapshot request `request`.
    SnapshotAnswer {
        request: u64,
        answer: Delivered<Reply>,
    },
    /// The answers to `request` ended before a whole snapshot came.
    SnapshotLost { request: u64 },
    /// The run of [`Effect::Apply`] is done: the store's applied seq now,
    /// and why it stopped short, if it did.
    Applied { seq: u64, error: Option<String> },
    /// [`Effect::Install`] is done: the store's applied seq and lineage,
    /// or why it failed.
    Installed {
        request: u64,
        result: Result<(u64, Lineage), String>,
    },
    /// The fence of drain `nonce` could not be published.
    FenceFailed { nonce: u64, error: String },
    /// [`Effect::Flush`] is done: the store's applied seq, flushed.
    Flushed {
        nonce: u64,
        result: Result<u64, String>,
    },
    /// Time passes.
    Tick,
    /// Elected: drain what the old master sent, up to a fence carrying
    /// `nonce` (the driver's pick, so that no other fence passes for it).
    Drain {
        nonce: u64,
        /// Elected as an heir: it leads on its store, without a master's
        /// word that it is current.
        heir: bool,
    },
    /// The drain failed or was given up: go on as a slave.
    Resume,
    /// Stop consuming for good; what is held goes back.
    Shutdown,
}

/// How much a log line matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

/// What the driver is to do, in the order given.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    Log(Level, String),
    /// Start consuming; answer [`Input::Consuming`] or
    /// [`Input::ConsumeFailed`], and [`Input::ConsumerEnded`] when its
    /// stream ends.
    Consume(Consumer),
    /// Stop consuming (what it delivers no longer comes; nothing held is
    /// touched).
    StopConsuming(Consumer),
    Ack(Vec<Token>),
    /// Give these deliveries back to their queue, for another consumer.
    Requeue(Vec<Token>),
    /// Apply these writes (consecutive seqs, the first right after the
    /// store's applied seq) with this lineage; answer [`Input::Applied`].
    Apply {
        writes: Vec<SyncMessage>,
        lineage: Lineage,
    },
    /// Ask the master, through `writeQ`, for the state past `have_seq`
    /// (written by `have_epoch`); its answers come as
    /// [`Input::SnapshotAnswer`] of `request`.
    AskSnapshot {
        request: u64,
        have_seq: u64,
        have_epoch: u64,
    },
    /// Stop consuming the answers to `request`.
    CloseSnapshot {
        request: u64,
    },
    /// Install this snapshot (`None`: the master said this replica is
    /// current); answer [`Input::Installed`].
    Install {
        request: u64,
        snapshot: Option<Snapshot>,
    },
    /// Run these reads on the store, reply, acknowledge.
    Serve(Vec<Token>),
    /// Reply "unavailable" (with the reason) to these reads, acknowledge.
    Unavailable(Vec<(Token, String)>),
    /// Publish a fence of this replica with `nonce` to its own sync queue
    /// (behind every sync in it); answer [`Input::FenceFailed`] if it
    /// cannot be.
    PublishFence {
        nonce: u64,
    },
    /// Flush the store; answer [`Input::Flushed`].
    Flush {
        nonce: u64,
    },
    /// Drain `nonce` ended: the seq reached, flushed, or why it failed.
    DrainDone {
        nonce: u64,
        result: Result<u64, String>,
    },
}

/// What the replica reports of itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    pub applied: u64,
    /// Caught up, and not held at a gap for long.
    pub ready: bool,
    pub reads_served: u64,
    /// The newest epoch it follows.
    pub epoch: u64,
    /// The epoch that wrote its last applied write.
    pub last_epoch: u64,
}
