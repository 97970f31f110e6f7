//! The operations of the DB API: writes, reads and their results.
//!
//! The same types are the JSON body of `db/write` and `db/read` and, encoded
//! with bincode, the payload of the queue messages. See `docs/openapi.yaml`.
//! Being bincode-encoded, the enums only ever grow at the end: a variant's
//! index is its tag on the wire and in the masters' request records.
//!
//! # Conditional writes
//!
//! A batch may carry preconditions: `require` ops, each saying that a key
//! exists in a table (or, with `"exists": false`, that it does not). The
//! master checks each at its place in the batch, in the same step as the
//! writes, on the batch's own view (the ops before it in the batch, and the
//! writes applied before the batch, count). One that does not hold fails
//! the whole batch: nothing of it is written, and the answer is
//! [`Error::Precondition`](crate::error::Error::Precondition), HTTP 412. So
//! a service can check and write in one step, e.g.
//! `[require users/alice, insert_auto ride by alice]`.

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

use super::{Row, Value};

/// A comparison operator of a condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub enum CmpOp {
    #[serde(rename = "=")]
    Eq,
    #[serde(rename = "!=")]
    Ne,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    /// The list column contains the value.
    #[serde(rename = "contains")]
    Contains,
}

/// `column op value`; all conditions of a request must hold (AND).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Encode, Decode)]
#[serde(deny_unknown_fields)]
pub struct Cond {
    pub column: String,
    pub op: CmpOp,
    pub value: Value,
}

impl Cond {
    pub fn new(column: &str, op: CmpOp, value: impl Into<Value>) -> Self {
        Cond {
            column: column.to_owned(),
            op,
            value: value.into(),
        }
    }
}

/// Ordering of a select.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Encode, Decode)]
#[serde(deny_unknown_fields)]
pub struct Order {
    pub column: String,
    #[serde(default)]
    pub desc: bool,
}

/// A write. Rows and keys are checked against the schema first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Encode, Decode)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum WriteOp {
    /// Inserts a row that carries its key; fails on a duplicate key.
    Insert { table: String, row: Row },
    /// Inserts a row whose key the master assigns (1, 2, ... never reused
    /// until the table is cleared); the result carries the key.
    InsertAuto { table: String, row: Row },
    /// Changes the row with `key`, or every row matching `where`: `set`
    /// replaces columns, `add` appends a value to a list column unless it
    /// is already there, `remove` removes every occurrence of a value.
    Update {
        table: String,
        #[serde(default)]
        key: Option<Value>,
        #[serde(default, rename = "where")]
        filter: Option<Vec<Cond>>,
        #[serde(default)]
        set: Row,
        #[serde(default)]
        add: Row,
        #[serde(default)]
        remove: Row,
    },
    /// Deletes the row with `key`, or every row matching `where`.
    Delete {
        table: String,
        #[serde(default)]
        key: Option<Value>,
        #[serde(default, rename = "where")]
        filter: Option<Vec<Cond>>,
    },
    /// Empties one table, or (without `table`) the whole database, resetting
    /// the auto-assigned keys.
    Clear {
        #[serde(default)]
        table: Option<String>,
    },
    /// Several writes applied atomically, in order: all or none.
    Batch { ops: Vec<WriteOp> },
    /// A precondition, only inside a batch: the row with `key` exists in
    /// `table` (or, with `exists: false`, does not) at this point of the
    /// batch. Writes nothing; if it does not hold, the batch fails.
    Require {
        table: String,
        key: Value,
        #[serde(default = "yes")]
        exists: bool,
    },
}

/// `require` checks that the key exists unless told otherwise.
fn yes() -> bool {
    true
}

/// A read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Encode, Decode)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum ReadOp {
    /// The row with `key` (zero or one rows).
    Get {
        table: String,
        key: Value,
        #[serde(default)]
        columns: Option<Vec<String>>,
    },
    /// Rows matching every condition, optionally ordered, limited and
    /// projected to `columns`.
    Select {
        table: String,
        #[serde(default, rename = "where")]
        filter: Vec<Cond>,
        #[serde(default)]
        columns: Option<Vec<String>>,
        #[serde(default)]
        order_by: Option<Order>,
        #[serde(default)]
        limit: Option<u64>,
    },
    /// How many rows match every condition.
    Count {
        table: String,
        #[serde(default, rename = "where")]
        filter: Vec<Cond>,
    },
}

/// What a write did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "snake_case")]
pub enum WriteResult {
    Inserted {
        key: Value,
    },
    Updated {
        matched: u64,
    },
    Deleted {
        count: u64,
    },
    Cleared,
    Batch(Vec<WriteResult>),
    /// A `require` of a batch held.
    Checked,
    /// A backup replaced every table's rows (a restore; see
    /// `wire::RestorePart`): how many rows it installed.
    Restored {
        rows: u64,
    },
}

/// What a read found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "snake_case")]
pub enum ReadResult {
    Rows(Vec<Row>),
    Count(u64),
}

impl ReadResult {
    /// The rows of a get or select (empty for a count).
    pub fn into_rows(self) -> Vec<Row> {
        match self {
            ReadResult::Rows(rows) => rows,
            ReadResult::Count(_) => Vec::new(),
        }
    }

    /// The count of a count read (the number of rows for the others).
    pub fn count(&self) -> u64 {
        match self {
            ReadResult::Rows(rows) => rows.len() as u64,
            ReadResult::Count(n) => *n,
        }
    }
}

/// How fresh a read must be.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Consistency {
    /// Sees every write acknowledged before the read was received.
    #[default]
    Strong,
    /// Served by any slave, however far behind.
    Eventual,
}

/// The answer to `db/write`: the sequence number the master gave the write
/// and what it did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Encode, Decode)]
pub struct WriteReply {
    pub seq: u64,
    pub result: WriteResult,
}

/// The answer to `db/read`: the result and the sequence number of the state
/// it was read from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Encode, Decode)]
pub struct ReadReply {
    pub seq: u64,
    #[serde(flatten)]
    pub result: ReadResult,
}
