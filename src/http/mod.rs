//! The HTTP faces of the system: the orchestrator's DB API, the RideShare
//! users and rides services, and the gateway in front of them.

pub mod admin;
pub mod backup;
pub mod common;
pub mod dbclient;
pub mod gateway;
pub mod instances;
pub mod orchestrator;
pub mod rides;
pub mod service;
pub mod users;
