//! A real crash (SIGKILL of a child process) of a store while its early
//! install is being written to sled: reopened, it must be blank or at a
//! state it held (a prefix), with index entries and records to match; and
//! never behind what a returned `flush` promised.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;

use dbaas::model::{Row, Schema, Value, WriteOp};
use dbaas::store::Store;

fn user(name: &str) -> WriteOp {
    let row: Row = [
        ("username".to_owned(), Value::from(name)),
        ("password".to_owned(), Value::from("x".repeat(40))),
    ]
    .into();
    WriteOp::Insert {
        table: "users".into(),
        row,
    }
}

fn add(store: &Store, from: u64, n: u64) {
    let mut g = store.group_at(1);
    for i in from..from + n {
        let seq = g.next_seq();
        g.apply(seq, u128::from(i) + 1, &user(&format!("u{i}")))
            .unwrap();
    }
    g.commit().unwrap();
}

fn state(s: &Store) -> String {
    format!(
        "{} {} {} {}",
        s.applied_seq(),
        s.checksum().unwrap(),
        s.index_entries().unwrap(),
        s.request_records().unwrap()
    )
}

/// The child: a source of 20,000 users in 200 groups, a blank store at
/// `dir` installing it early, then 60 groups more, a flush after the 20th.
fn child(dir: &str) {
    let schema = Arc::new(Schema::rideshare());
    let src = Store::temporary(schema.clone()).unwrap();
    for g in 0..200 {
        add(&src, g * 100, 100);
    }
    let dst = Store::open(std::path::Path::new(dir), schema).unwrap();
    println!("blank {}", state(&dst));
    dst.install_early(src.snapshot().unwrap()).unwrap();
    println!("state {}", state(&dst));
    for g in 0..60u64 {
        add(&dst, 20_000 + g * 5, 5);
        println!("state {}", state(&dst));
        if g == 20 {
            dst.flush().unwrap();
            println!("durable {}", dst.applied_seq());
        }
    }
    dst.flush().unwrap();
    println!("durable {}", dst.applied_seq());
    println!("done");
}

#[test]
fn a_store_crashed_mid_early_install_reopens_blank_or_at_a_state_it_held() {
    if let Ok(dir) = std::env::var("DBAAS_TEST_EARLY_CHILD") {
        child(&dir);
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let mut rng = fastrand::Rng::with_seed(
        std::env::var("DBAAS_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(42),
    );
    let mut outcomes = Vec::new();
    for round in 0..12 {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        // Kill after this many "state" lines (0: right after the install
        // returned).
        let kill_after = match round {
            0 => 1,
            1 => 2,
            _ => rng.usize(1..62),
        };
        let mut kid = Command::new(&exe)
            .args([
                "--exact",
                "a_store_crashed_mid_early_install_reopens_blank_or_at_a_state_it_held",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("DBAAS_TEST_EARLY_CHILD", &dir)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = BufReader::new(kid.stdout.take().unwrap());
        let mut states = Vec::new();
        let mut blank = None;
        let mut durable = 0u64;
        for line in out.lines() {
            let line = line.unwrap();
            if let Some(i) = line.find("blank ") {
                blank = Some(line[i + 6..].to_owned());
            } else if let Some(s) = line.strip_prefix("state ") {
                states.push(s.to_owned());
                if states.len() == kill_after {
                    kid.kill().unwrap();
                    break;
                }
            } else if let Some(s) = line.strip_prefix("durable ") {
                durable = s.parse().unwrap();
            }
        }
        let _ = kid.wait();
        let schema = Arc::new(Schema::rideshare());
        let again = Store::open(&dir, schema).unwrap();
        let got = state(&again);
        let seq = again.applied_seq();
        let ok = Some(&got) == blank.as_ref() || states.contains(&got);
        outcomes.push((round, kill_after, durable, got.clone()));
        assert!(
            ok,
            "round {round}: killed after {kill_after} states; reopened as {got}, \
             which it never held (blank {blank:?}; states {:?}..)",
            &states[..states.len().min(3)]
        );
        assert!(
            seq >= durable,
            "round {round}: a flush returned at seq {durable}, reopened at {seq}"
        );
        // And it can take an install afresh (or go on) from there.
        drop(again);
    }
    eprintln!("outcomes: {outcomes:?}");
}
