//! Commands of the `dbaas` binary that talk to a running system as its
//! clients and operators do, over HTTP: `status`, `backup`, `restore`.

pub mod backup;
pub mod status;

/// Where the orchestrator listens unless told otherwise.
pub const DEFAULT_ORCHESTRATOR: &str = "http://127.0.0.1:8090";
