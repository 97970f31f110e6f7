//! The RideShare application's own rules, free of HTTP and of the database:
//! which areas exist and how timestamps are written.
//!
//! The HTTP services in `crate::http::{users, rides}` check requests with
//! these pure functions before they reach the DBaaS.

pub mod areas;
pub mod timestamp;
