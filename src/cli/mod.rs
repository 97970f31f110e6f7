//! Commands of the `dbaas` binary that talk to a running system as its
//! clients do, over HTTP.

pub mod backup;
