//! The rides service: strict parameters and bodies, and the batches it
//! writes.

use super::*;

#[test]
fn search_parameters_are_strict() {
    for (q, want) in [
        ("source=1&destination=2", Ok((1, 2))),
        ("destination=2&source=198", Ok((198, 2))),
        ("source=01&destination=2&other=x", Ok((1, 2))),
        ("source=%31&destination=2", Ok((1, 2))),
        ("source=1", Err("destination")),
        ("destination=1", Err("source")),
        ("", Err("source")),
        ("source=&destination=2", Err("source")),
        ("source=0&destination=2", Err("source")),
        ("source=199&destination=2", Err("source")),
        ("source=-1&destination=2", Err("source")),
        ("source=+1&destination=2", Err("source")),
        ("source=1.0&destination=2", Err("source")),
        ("source=a&destination=2", Err("source")),
        ("source=99999999999999999999&destination=2", Err("source")),
        ("source=1&destination=2&source=3", Err("repeated")),
    ] {
        match (search_areas(q), want) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "{q}"),
            (Err(msg), Err(word)) => assert!(msg.contains(word), "{q}: {msg}"),
            (got, want) => panic!("{q}: got {got:?}, want {want:?}"),
        }
    }
}

fn ride(source: i64, destination: i64, ts: &str) -> NewRide {
    NewRide {
        created_by: "a".into(),
        timestamp: ts.into(),
        source,
        destination,
    }
}

#[test]
fn new_rides_are_checked() {
    let ts = "01-01-2030:00-00-00";
    assert!(check_ride(&ride(1, 2, ts)).is_ok());
    assert!(check_ride(&ride(198, 1, "01-01-2000:00-00-00")).is_ok());
    for bad in [
        ride(0, 2, ts),
        ride(1, 199, ts),
        ride(-5, 2, ts),
        ride(3, 3, ts),
        ride(1, 2, "31-02-2030:00-00-00"),
        ride(1, 2, "2030-01-01"),
    ] {
        assert!(check_ride(&bad).is_err());
    }
}

#[test]
fn creating_and_joining_are_valid_conditional_batches() {
    use crate::model::{validate_write, Schema};
    let schema = Schema::rideshare();
    let new = ride(1, 2, "01-01-2030:00-00-00");
    for op in [create_ride_op(new, 1), join_op(7, "a'; --".into())] {
        validate_write(&schema, &op).unwrap_or_else(|e| panic!("{op:?}: {e}"));
        let WriteOp::Batch { ops } = op else {
            panic!("not a batch: {op:?}")
        };
        assert!(
            matches!(&ops[0], WriteOp::Require { table, exists: true, .. } if table == "users"),
            "{ops:?}"
        );
    }
}

#[test]
fn the_created_id_is_read_from_the_batch_result() {
    let inserted = |key| WriteResult::Inserted { key };
    let batch = |r| WriteResult::Batch(vec![WriteResult::Checked, r]);
    assert_eq!(created_id(&batch(inserted(Value::Int(3)))), Some(3));
    for other in [
        batch(inserted(Value::from("3"))),
        batch(WriteResult::Cleared),
        inserted(Value::Int(3)),
        WriteResult::Batch(Vec::new()),
    ] {
        assert_eq!(created_id(&other), None, "{other:?}");
    }
}

#[test]
fn bodies_are_strict_json() {
    let ok = r#"{"created_by":"a","timestamp":"t","source":1,"destination":2}"#;
    assert!(serde_json::from_str::<NewRide>(ok).is_ok());
    for bad in [
        r#"{"created_by":"a","timestamp":"t","source":"1","destination":2}"#,
        r#"{"created_by":"a","timestamp":"t","source":1.0,"destination":2}"#,
        r#"{"created_by":"a","timestamp":"t","source":true,"destination":2}"#,
        r#"{"created_by":"a","timestamp":"t","source":1e0,"destination":2}"#,
        r#"{"created_by":"a","timestamp":"t","source":99999999999999999999,"destination":2}"#,
        r#"{"created_by":"a","timestamp":"t","source":1}"#,
        r#"{"created_by":"a","timestamp":"t","source":1,"destination":2,"x":1}"#,
        r#"{"created_by":null,"timestamp":"t","source":1,"destination":2}"#,
        r#"[]"#,
    ] {
        assert!(serde_json::from_str::<NewRide>(bad).is_err(), "{bad}");
    }
}
