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
//! orchestrator ─readQ (work queue, round robin)─> slave workers ─reply─> responseQ ─> orchestrator
//! orchestrator ─writeQ─> master worker ─syncQ (fanout)─> every slave's own queue
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
//!   or child processes running `dbaas worker`).
//! - [`system`]: `dbaas up` and the [`system::Cluster`]; [`node`]: each
//!   part as a process of its own.
//!
//! ## What the promises rest on
//!
//! - *Acknowledged writes are never lost*: the master replies only after
//!   sled's flush and the broker's acceptance of the sync message
//!   ([`actors::MasterWorker`]).
//! - *Exactly once, one order*: one master consumes `writeQ` serially and
//!   numbers writes; [`store::Store::apply`] refuses any sequence number but
//!   the next; request ids are recorded with the write and travel in sync
//!   messages, so a redelivered write is answered, not applied again.
//! - *Reads see acknowledged writes*: the orchestrator stamps each read with
//!   the highest sequence number it has acknowledged; a slave serves it only
//!   at or past that number ([`actors::SlaveWorker`]).
//! - *Catch-up without a gap*: a slave binds its sync queue before asking
//!   for a snapshot, and the snapshot request travels through `writeQ`, so
//!   it is taken exactly between two writes.
//! - *Bad input never reaches storage*: [`model::validate_write`] and
//!   [`model::validate_read`] check names against a whitelist pattern and
//!   values against column types; the wire format is versioned and
//!   undecodable messages are dropped with a log line.
//!
//! ## Not promised (yet)
//!
//! The embedded broker keeps nothing across a restart of the process (the
//! workers' databases do). Master failover and worker respawn need a
//! coordinator, which is not part of the system yet: a crashed master is
//! replaced only by starting it again, and until then writes are retried and
//! then answered 503.

pub mod actors;
pub mod broker;
pub mod config;
pub mod error;
pub mod http;
pub mod loadgen;
pub mod model;
pub mod node;
pub mod rideshare;
pub mod runtime;
pub mod store;
pub mod system;
