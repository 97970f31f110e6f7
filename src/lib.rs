pub mod actors;
pub mod broker;
pub mod error;
pub mod http;
pub mod model;
pub mod rideshare;
pub mod runtime;
pub mod store;
