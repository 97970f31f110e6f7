//! Commands of the `dbaas` binary that talk to a running system as its
//! clients and operators do, over HTTP: `status`, `backup`, `restore`.

pub mod backup;
pub mod status;
