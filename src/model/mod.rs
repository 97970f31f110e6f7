//! The DB API's data model: values, rows, schemas, operations, the queue
//! messages that carry them, and the validation that guards storage.

pub mod backup;
pub mod fnv;
mod lineage;
mod ops;
pub mod schema;
mod status;
mod validate;
mod value;
pub mod wire;

/// How long the project's HTTP clients keep an idle connection for the
/// next request: under the 5 s for which its servers (actix's default)
/// keep one open. A client that kept it longer could send a request on a
/// connection the server is closing at that moment, and a request already
/// written to it fails instead of being retried.
pub const HTTP_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(4);

pub use lineage::{Follow, Lineage};
pub use ops::{
    CmpOp, Cond, Consistency, Order, ReadOp, ReadReply, ReadResult, WriteOp, WriteReply,
    WriteResult,
};
pub use schema::{ColumnType, Scalar, Schema, TableSchema};
pub use status::WorkerStatus;
pub use validate::{check_identifier, validate_read, validate_write, MAX_BATCH};
pub use value::{Row, Value};
