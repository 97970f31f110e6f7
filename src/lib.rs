//! # dbaas
//!
//! A fault-tolerant database as a service and the RideShare application on
//! it, in one crate and one binary.
//!
//! ## Topology
//!
//! ```text
//! clients ─HTTP─> gateway ─> users service ─┐
//!                         └> rides service ─┴─HTTP db/read, db/write─> orchestrator
//! orchestrator ─readQ (work queue, round robin)─> slave workers ─reply─> the orchestrator's own responseQ.<tag>
//! orchestrator ─writeQ─> master worker ─syncQ (fanout)─> every slave's own queue
//!                        master worker ─leading (fanout)─> every orchestrator's reply queue
//! ```
//!
//! - [`http`]: the gateway routes `/api/v1/users*` to the users service and
//!   everything else to the rides service; the services validate RideShare
//!   requests and speak to the orchestrator only through `db/read` and
//!   `db/write` ([`http::dbclient::DbClient`]). The orchestrator's HTTP API
//!   validates every DB request against the [`model::Schema`] before it
//!   goes anywhere.
//! - [`actors`]: the Orchestrator, MasterWorker and SlaveWorker actors and
//!   what each crash does (see its module doc).
//! - [`broker`]: the queues behind a small trait; [`broker::inproc`] is the
//!   in-process twin used by `dbaas up` and the actor tests,
//!   [`broker::amqp`] is RabbitMQ through lapin.
//! - [`store`]: each worker's own sled database; every write is one atomic
//!   sled batch holding its effect, its sequence number and its request id.
//! - [`runtime`]: how workers are started and stopped (in-process actors,
//!   child processes running `dbaas worker`, or Docker containers of an
//!   image `FROM scratch` through bollard).
//! - [`coord`]: the coordinator (ZooKeeper, or its in-process twin), and
//!   the election's records; [`core`]: every decision, pure.
//! - [`system`]: `dbaas up` and the [`system::Cluster`]; [`node`]: each
//!   part as a process of its own; [`cli`]: commands that talk to a
//!   running system as a client (`dbaas backup`, `dbaas restore`).
//!
//! ## What the promises rest on
//!
//! - *Acknowledged writes are never lost*: the master replies only after
//!   sled's flush and the broker's confirm of the sync message, and only
//!   once the syncs of every earlier seq are confirmed too, so no
//!   acknowledged write stands past a gap ([`actors::MasterWorker`]).
//!   Every wait on the broker is bounded; a publish that fails or times
//!   out is taken as not confirmed, and the write goes back to `writeQ`.
//! - *Exactly once, one order*: one master consumes `writeQ` serially and
//!   numbers what it answers; [`store::Store::apply`] refuses any sequence
//!   number but the next. Refusals take a seq too (writing nothing), so
//!   every answer, refusals included, is recorded against its request id
//!   on every replica, and a redelivered request gets its first answer.
//! - *One cluster, one history*: every message carries its cluster's id
//!   (made with its first data directory, kept in every store) and the
//!   sender's epoch ([`model::wire::Stamp`]); a message of another
//!   cluster, left on a reused broker, is dropped. A [`model::Lineage`]
//!   says which epoch wrote which seqs: a deposed master's writes are
//!   never applied, a replica that holds some resyncs, and epochs never go
//!   down. A reply that matches no waiting request changes nothing.
//! - *Reads see acknowledged writes*: the orchestrator stamps each read with
//!   the highest sequence number it has acknowledged; a slave serves it only
//!   at or past that number ([`actors::SlaveWorker`]). A slave that waits
//!   for a write without progress (a lost sync, a capped queue that dropped
//!   messages while it was away) takes a snapshot, so no wait is forever.
//! - *Catch-up without a gap*: a slave binds its sync queue before asking
//!   for a snapshot, and the snapshot request travels through `writeQ`, so
//!   it is taken exactly between two writes.
//! - *Nothing grows or loops without bound*: a slave's sync queue keeps at
//!   most [`actors::SYNC_QUEUE_CAP`] messages (configurable) and is
//!   deleted when the slave is stopped on purpose; a request whose reply
//!   cannot be delivered is not retried by the worker (its asker asks
//!   again, within its own deadline).
//! - *Bad input never reaches storage*: [`model::validate_write`] and
//!   [`model::validate_read`] check names against a whitelist pattern and
//!   values against column types; the wire format is versioned and
//!   undecodable messages are dropped with a log line.
//! - *Backup and restore*: a backup is the master's store at one seq,
//!   taken between two writes like a snapshot ([`model::backup`] is the
//!   file); a restore, checked whole first, is one step of the history
//!   under the master's next seq, acknowledged like a write. Its sync
//!   carries no rows: each slave serves its old rows until a snapshot past
//!   the restore replaces its store at once, and stands in no election
//!   meanwhile; the master's log starts again past it, so no catch-up
//!   replays earlier writes over it. Request records are kept across it.
//! - *Conditional writes*: a batch may `require` that keys exist (or not);
//!   the master checks them in the same step as the writes, so a ride
//!   never names a user deleted meanwhile.
//!
//! - *Failover is fast and safe*: workers register with the coordinator
//!   ([`coord`]); the [`actors::watcher::ElectionWatcher`] elects the
//!   caught-up worker with the newest history when the master dies (at once
//!   for a death the system sees, at the session's expiry otherwise), with
//!   a compare-and-set on `/master`, and starts a replacement. The elected
//!   slave drains what the old master sent, up to a fence of its own, and
//!   leads in place under a new epoch; a master takes writes only under a
//!   lease shorter than its session ([`actors::lease`]), so a deposed one
//!   stops before its successor starts.
//! - *Crashed slaves are replaced; scaled-down slaves are not*: a stop on
//!   purpose is announced through the runtime before the worker lets go
//!   of its session, so the watcher never takes it for a death; the
//!   [`actors::scaler::Scaler`] follows the original rule
//!   ([`core::scaler::target_slaves`]) within a bounded maximum (16 by
//!   default) and step (4 a decision), starting new slaves a few at a
//!   time, counting each client read once.
//! - *One orchestrator acts*: any number serve the DB API; the one whose
//!   session holds `/leader` runs the ElectionWatcher's and the Scaler's
//!   decisions, under a lease that runs out before its session can
//!   expire ([`core::lead`]); a strong read through any of them is
//!   answered only if read at or past a head the master gave after it
//!   began (read-index).
//! - *Every decision is deterministic*: the election rule, the
//!   ElectionWatcher, the orchestrators' leadership, a worker's role, a
//!   slave's replica and the Scaler are pure functions and state machines in [`core`] (no I/O, no
//!   clock); the actors carry out what they decide, and the seeded
//!   simulator of the test suite runs the same machines under faults.
//!   If no caught-up slave is left when a master dies, the election waits
//!   for the stores of every master lost since one last led (see
//!   [`core::election::Succession`]).
//!
//! ## Not promised
//!
//! The embedded broker and coordinator keep nothing across a restart of
//! the process (the workers' databases do). Reads are not linearizable
//! against writes in flight. A slave that lagged more than its capped
//! queue holds cannot be elected over a caught-up one; if only such
//! slaves are left when the master dies, the master's own store is started
//! again and elected. With the process runtime the workers are children
//! of the leading orchestrator: its death restarts them (over their
//! stores), and one paused past its session holds them until it resumes.
//! A backup and a restore are held whole in memory on the
//! orchestrator and the master (as a snapshot is on a slave), a restore
//! up to 1 GiB; the parts of a restore the orchestrator gave up on stay in
//! the master's memory until the next restore.

pub mod actors;
pub mod broker;
pub mod cli;
pub mod config;
pub mod coord;
pub mod core;
pub mod error;
pub mod http;
pub mod model;
pub mod node;
pub mod rideshare;
pub mod runtime;
pub mod store;
pub mod system;

/// Logs to stderr through `tracing`, at `info` unless `RUST_LOG` says
/// otherwise: what every binary of the project does first.
pub fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
