//! Table schemas: what tables exist, their primary keys and typed columns.
//!
//! Every request is checked against the schema before it is sent to a
//! worker, so nothing malformed ever reaches storage.

use std::collections::BTreeMap;

use super::Value;

/// The type of a column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnType {
    Int,
    Text,
    Bool,
    /// A list whose elements all have the given scalar type.
    List(Scalar),
}

/// Element types of list columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scalar {
    Int,
    Text,
}

impl ColumnType {
    /// Whether `v` is a valid value of this column type (`Null` never is).
    pub fn admits(&self, v: &Value) -> bool {
        match (self, v) {
            (ColumnType::Int, Value::Int(_))
            | (ColumnType::Text, Value::Text(_))
            | (ColumnType::Bool, Value::Bool(_)) => true,
            (ColumnType::List(s), Value::List(items)) => items.iter().all(|i| s.admits(i)),
            _ => false,
        }
    }

    /// The element type of a list column.
    pub fn element(&self) -> Option<Scalar> {
        match self {
            ColumnType::List(s) => Some(*s),
            _ => None,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            ColumnType::Int => "int",
            ColumnType::Text => "text",
            ColumnType::Bool => "bool",
            ColumnType::List(Scalar::Int) => "list of int",
            ColumnType::List(Scalar::Text) => "list of text",
        }
    }
}

impl Scalar {
    pub fn admits(&self, v: &Value) -> bool {
        matches!(
            (self, v),
            (Scalar::Int, Value::Int(_)) | (Scalar::Text, Value::Text(_))
        )
    }
}

/// One table: its key column, whether keys are assigned by the master, and
/// its columns (the key column included).
#[derive(Clone, Debug)]
pub struct TableSchema {
    pub name: String,
    pub key: String,
    pub auto_key: bool,
    pub columns: BTreeMap<String, ColumnType>,
    /// Secondary indexes, each an ordered list of scalar columns. A read
    /// whose conditions fix a leading run of an index's columns by `=` (and
    /// maybe bound the next one) scans that index instead of the table.
    pub indexes: Vec<Vec<String>>,
}

impl TableSchema {
    pub fn key_type(&self) -> ColumnType {
        self.columns[&self.key]
    }
}

/// All tables of a database.
#[derive(Clone, Debug, Default)]
pub struct Schema {
    tables: BTreeMap<String, TableSchema>,
}

impl Schema {
    pub fn table(&self, name: &str) -> Option<&TableSchema> {
        self.tables.get(name)
    }

    pub fn tables(&self) -> impl Iterator<Item = &TableSchema> {
        self.tables.values()
    }

    /// Adds a table; `columns` must include the key column.
    pub fn with_table(
        mut self,
        name: &str,
        key: &str,
        auto_key: bool,
        columns: &[(&str, ColumnType)],
    ) -> Self {
        let columns: BTreeMap<_, _> = columns.iter().map(|(n, t)| (n.to_string(), *t)).collect();
        assert!(columns.contains_key(key), "key column must be a column");
        self.tables.insert(
            name.to_owned(),
            TableSchema {
                name: name.to_owned(),
                key: key.to_owned(),
                auto_key,
                columns,
                indexes: Vec::new(),
            },
        );
        self
    }

    /// Adds a secondary index over scalar `columns` of `table`.
    pub fn with_index(mut self, table: &str, columns: &[&str]) -> Self {
        let t = self.tables.get_mut(table).expect("index of a known table");
        for c in columns {
            let ty = t.columns.get(*c).expect("index of a known column");
            assert!(ty.element().is_none(), "list columns are not indexed");
        }
        t.indexes
            .push(columns.iter().map(|c| c.to_string()).collect());
        self
    }

    /// The same tables without their indexes (what a read must return is
    /// the same either way; tests compare the two).
    pub fn without_indexes(mut self) -> Self {
        for t in self.tables.values_mut() {
            t.indexes.clear();
        }
        self
    }

    /// The RideShare application's schema. Timestamps are seconds since the
    /// Unix epoch (UTC), so that they order and compare as integers.
    pub fn rideshare() -> Self {
        Schema::default()
            .with_table(
                "users",
                "username",
                false,
                &[
                    ("username", ColumnType::Text),
                    ("password", ColumnType::Text),
                ],
            )
            .with_table(
                "rides",
                "ride_id",
                true,
                &[
                    ("ride_id", ColumnType::Int),
                    ("created_by", ColumnType::Text),
                    ("timestamp", ColumnType::Int),
                    ("source", ColumnType::Int),
                    ("destination", ColumnType::Int),
                    ("users", ColumnType::List(Scalar::Text)),
                ],
            )
            // Upcoming rides between two areas, and a creator's rides.
            .with_index("rides", &["source", "destination", "timestamp"])
            .with_index("rides", &["created_by"])
    }
}
