//! Commands an operator runs against a running cluster.

pub mod status;
