//! The deterministic core: every decision the cluster takes, as pure
//! functions and state machines.
//!
//! Nothing here does I/O, reads a clock or spawns a task: time comes in as
//! an argument, and a decision comes out as data (effects) that the actors
//! in [`crate::actors`] carry out. The same code runs in production and in
//! the seeded simulator of the test suite (`tests/sim`), which drives it
//! against simulated brokers, coordinators and processes on a virtual
//! clock. No actix, tokio, lapin, sled or clap is used below this module.
//!
//! - [`backoff`]: the one retry rule (a doubling wait).
//! - [`catchup`]: the master's log of recent writes, and whether a
//!   replica that asks is current, caught up from the log, or given a
//!   snapshot.
//! - [`election`]: who may lead and who leads after a master is lost.
//! - [`lead`]: which orchestrator acts (holds `/leader` under a lease,
//!   its workers up), and when it steps down.
//! - [`pipeline`]: when the master may answer a group of writes
//!   (every earlier seq's sync confirmed, the lease held).
//! - [`role`]: a worker's role (follow, drain, lead, follow again) and
//!   how it changes with `/master`.
//! - [`watcher`]: what becomes of each worker, when to elect, what to
//!   start and kill (the ElectionWatcher's state machine).
//! - [`orchestrator`]: what a reply means, when an attempt has waited
//!   too long, and what a strong read waits for (the Orchestrator's
//!   state machine).
//! - [`scaler`]: how many slaves a window's reads call for, and how fast
//!   to get there.
//! - [`replica`]: what a slave applies, when it serves a read, when it
//!   takes a snapshot, and how it drains when elected.

pub mod backoff;
pub mod catchup;
pub mod election;
pub mod lead;
pub mod orchestrator;
pub mod pipeline;
pub mod replica;
pub mod role;
pub mod scaler;
pub mod watcher;
