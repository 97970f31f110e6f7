//! The DB API's data model: values, rows, schemas, operations, the queue
//! messages that carry them, and the validation that guards storage.

pub mod backup;
mod lineage;
mod ops;
pub mod schema;
mod status;
mod validate;
mod value;
pub mod wire;

pub use lineage::{Follow, Lineage};
pub use ops::{
    CmpOp, Cond, Consistency, Order, ReadOp, ReadReply, ReadResult, WriteOp, WriteReply,
    WriteResult,
};
pub use schema::{ColumnType, Scalar, Schema, TableSchema};
pub use status::WorkerStatus;
pub use validate::{check_identifier, validate_read, validate_write, MAX_BATCH};
pub use value::{Row, Value};
