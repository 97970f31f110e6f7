//! Evaluating `where` conditions and ordering rows.

use std::cmp::Ordering;

use crate::model::{CmpOp, Cond, Row, Value};

const NULL: Value = Value::Null;

/// A row's value of `column`; a missing column reads as `Null`.
pub(super) fn column<'r>(row: &'r Row, column: &str) -> &'r Value {
    row.get(column).unwrap_or(&NULL)
}

/// Whether `row` satisfies every condition (AND; none => true).
pub(super) fn matches_all(row: &Row, conds: &[Cond]) -> bool {
    conds.iter().all(|c| matches(column(row, &c.column), c))
}

/// One condition. Incomparable values (different types) fail every
/// operator, so a mistyped condition selects nothing rather than anything.
pub(super) fn matches(v: &Value, c: &Cond) -> bool {
    let ord = v.compare(&c.value);
    match c.op {
        CmpOp::Eq => ord == Some(Ordering::Equal),
        CmpOp::Ne => match (v, &c.value) {
            // Lists are incomparable unless equal, so test equality itself.
            (Value::List(a), Value::List(b)) => a != b,
            _ => matches!(ord, Some(o) if o != Ordering::Equal),
        },
        CmpOp::Lt => ord == Some(Ordering::Less),
        CmpOp::Le => matches!(ord, Some(Ordering::Less | Ordering::Equal)),
        CmpOp::Gt => ord == Some(Ordering::Greater),
        CmpOp::Ge => matches!(ord, Some(Ordering::Greater | Ordering::Equal)),
        CmpOp::Contains => v.as_list().is_some_and(|l| l.contains(&c.value)),
    }
}

/// A total order over values for sorting. It agrees with `Value::compare`
/// wherever that is defined, and ranks types (Null first) elsewhere: a sort
/// comparator must be total, or `sort_by` may panic.
pub(super) fn total_cmp(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Int(x), Value::Int(y)) => x.cmp(y),
        (Value::Text(x), Value::Text(y)) => x.cmp(y),
        (Value::List(x), Value::List(y)) => x.len().cmp(&y.len()).then_with(|| {
            x.iter()
                .zip(y)
                .map(|(p, q)| total_cmp(p, q))
                .find(|o| o.is_ne())
                .unwrap_or(Ordering::Equal)
        }),
        _ => rank(a).cmp(&rank(b)),
    }
}

fn rank(v: &Value) -> u8 {
    match v {
        Value::Null => 0,
        Value::Bool(_) => 1,
        Value::Int(_) => 2,
        Value::Text(_) => 3,
        Value::List(_) => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> Row {
        [
            ("n".to_string(), Value::Int(5)),
            ("s".to_string(), Value::from("m")),
            ("l".to_string(), Value::List(vec![Value::from("a")])),
        ]
        .into_iter()
        .collect()
    }

    fn check(col: &str, op: CmpOp, v: impl Into<Value>) -> bool {
        matches_all(&row(), &[Cond::new(col, op, v)])
    }

    #[test]
    fn every_operator() {
        use CmpOp::*;
        assert!(check("n", Eq, 5) && !check("n", Eq, 4));
        assert!(check("n", Ne, 4) && !check("n", Ne, 5));
        assert!(check("n", Lt, 6) && !check("n", Lt, 5));
        assert!(check("n", Le, 5) && !check("n", Le, 4));
        assert!(check("n", Gt, 4) && !check("n", Gt, 5));
        assert!(check("n", Ge, 5) && !check("n", Ge, 6));
        assert!(check("s", Lt, "z") && check("s", Gt, "a"));
        assert!(check("l", Contains, "a") && !check("l", Contains, "b"));
        assert!(!check("n", Contains, 5));
    }

    #[test]
    fn incomparable_fails_and_lists_compare_by_equality() {
        assert!(!check("n", CmpOp::Eq, "5"));
        assert!(!check("n", CmpOp::Ne, "5"));
        let same = Value::List(vec![Value::from("a")]);
        let other = Value::List(vec![Value::from("b")]);
        assert!(check("l", CmpOp::Eq, same.clone()) && !check("l", CmpOp::Ne, same));
        assert!(check("l", CmpOp::Ne, other.clone()) && !check("l", CmpOp::Eq, other));
    }

    #[test]
    fn total_order_puts_null_first() {
        let mut vs = [Value::from("a"), Value::Int(2), Value::Null, Value::Int(1)];
        vs.sort_by(total_cmp);
        assert_eq!(
            vs,
            [Value::Null, Value::Int(1), Value::Int(2), Value::from("a")]
        );
    }
}
