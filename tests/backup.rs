//! Backup and restore against the real system (`dbaas up`, embedded, and
//! over RabbitMQ and ZooKeeper when the services are configured): a backup
//! taken under write load restores into an empty cluster with exactly
//! the rows acknowledged up to its seq; every slave serves the restored
//! rows, and reads during a restore see the old rows or the new, never a
//! mix; files that are garbage, cut short, damaged, of another format or
//! of another schema are refused with a 400 saying why, and change
//! nothing; the admin token guards both endpoints, and the `dbaas backup`
//! and `dbaas restore` commands send it.

mod common;
mod suite;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Http, System};
use dbaas::model::backup::{self, BackupHeader};
use serde_json::json;

use common::backup::{insert, users, BACKUP, PASSWORD, RESTORE};

/// A `dbaas up` of its own: embedded, or over the test RabbitMQ and
/// ZooKeeper (None when they are not configured).
fn start(amqp: bool, extra: &[&str]) -> Option<System> {
    if !amqp {
        return Some(System::start_with(extra));
    }
    let base = suite::amqp_url()?;
    let zk = suite::fresh_zk(suite::ZK_SESSION)?;
    let (_, url) = suite::fresh_vhost(&base);
    let mut args = vec!["--amqp", &url, "--zk", &zk.hosts, "--zk-root", &zk.root];
    args.extend_from_slice(extra);
    Some(System::start_with(&args))
}

/// Polls `done` until it holds, failing after `within`.
async fn until(within: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writers inserting users until stopped; every acknowledged one with
/// its seq.
struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(u64, String)>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(db: &Http, writers: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..writers)
            .map(|w| {
                let (db, stop, acked) = (db.clone(), stop.clone(), acked.clone());
                tokio::spawn(async move {
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let name = format!("w{w}-{n}");
                        n += 1;
                        if let Some(seq) = insert(&db, &name).await {
                            acked.lock().unwrap().push((seq, name));
                        }
                    }
                })
            })
            .collect();
        Load { stop, acked, tasks }
    }

    fn count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    async fn stop(self) -> Vec<(u64, String)> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("a writer");
        }
        Arc::try_unwrap(self.acked).unwrap().into_inner().unwrap()
    }
}

async fn backup_under_load_restores_exactly_what_was_acknowledged(amqp: bool) {
    let Some(a) = start(amqp, &[]) else { return };
    let db = Http::new(&a.urls.orchestrator);
    let load = Load::start(&db, 4);
    until(Duration::from_secs(30), "writes before the backup", || {
        load.count() >= 100
    })
    .await;
    let r = db.get(BACKUP).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let taken = load.count();
    until(Duration::from_secs(30), "writes after the backup", || {
        load.count() >= taken + 100
    })
    .await;
    let acked = load.stop().await;
    let (head, _) = backup::decode(&r.body).expect("a whole backup");
    assert_eq!(
        r.header("x-dbaas-backup-seq"),
        Some(head.seq.to_string().as_str())
    );
    let expected: BTreeSet<String> = acked
        .iter()
        .filter(|(seq, _)| *seq <= head.seq)
        .map(|(_, name)| name.clone())
        .collect();
    assert!(
        expected.len() >= 100,
        "{} rows before seq {}",
        expected.len(),
        head.seq
    );
    assert!(
        acked.iter().any(|(seq, _)| *seq > head.seq),
        "writes went on past the backup"
    );
    assert_eq!(
        head.tables,
        vec![("rides".into(), 0), ("users".into(), expected.len() as u64)]
    );
    assert_ne!(head.cluster, 0);

    // Into an empty cluster of two slaves: every strong read, whichever
    // slave serves it, sees exactly those rows.
    let Some(b) = start(amqp, &["--slaves", "2"]) else {
        return;
    };
    let db_b = Http::new(&b.urls.orchestrator);
    assert!(users(&db_b, "strong").await.is_empty());
    let r = db_b.send("POST", RESTORE, Some(r.body.clone())).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let answer = r.json();
    assert_eq!(answer["result"]["restored"]["rows"], json!(expected.len()));
    assert_eq!(answer["backup"]["seq"], json!(head.seq));
    for _ in 0..8 {
        assert_eq!(users(&db_b, "strong").await, expected);
    }
    // The restored cluster goes on from there: its keys are taken.
    let first = expected.iter().next().expect("a row");
    let dup =
        json!({"op": "insert", "table": "users", "row": {"username": first, "password": PASSWORD}});
    assert_eq!(db_b.json("POST", "/api/v1/db/write", dup).await.status, 409);
    let seq = insert(&db_b, "after-restore")
        .await
        .expect("a write after the restore");
    assert!(seq > answer["seq"].as_u64().expect("a seq"));
}

#[tokio::test]
async fn a_backup_under_write_load_restores_exactly_the_acknowledged_rows() {
    backup_under_load_restores_exactly_what_was_acknowledged(false).await;
}

#[tokio::test]
async fn a_backup_under_write_load_restores_exactly_the_acknowledged_rows_over_rabbitmq() {
    backup_under_load_restores_exactly_what_was_acknowledged(true).await;
}

/// While a restore replaces 300 rows by 200 others, eventual reads on
/// two slaves see one set or the other, never a mix.
#[tokio::test]
async fn reads_during_a_restore_see_the_old_rows_or_the_new() {
    let a = System::start();
    let db_a = Http::new(&a.urls.orchestrator);
    for i in 0..200 {
        insert(&db_a, &format!("new{i}")).await.expect("a write");
    }
    let file = db_a.get(BACKUP).await;
    assert_eq!(file.status, 200);
    let b = System::start_with(&["--slaves", "2"]);
    let db = Http::new(&b.urls.orchestrator);
    for i in 0..300 {
        insert(&db, &format!("old{i}")).await.expect("a write");
    }
    let old = users(&db, "strong").await;
    let new: BTreeSet<String> = (0..200).map(|i| format!("new{i}")).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (db, stop, old, new) = (db.clone(), stop.clone(), old.clone(), new.clone());
            tokio::spawn(async move {
                let mut seen = (0, 0);
                while !stop.load(Ordering::Relaxed) {
                    let got = users(&db, "eventual").await;
                    assert!(got == old || got == new, "a mix of {} rows", got.len());
                    if got == old {
                        seen.0 += 1
                    } else {
                        seen.1 += 1
                    }
                }
                seen
            })
        })
        .collect();
    let r = db.send("POST", RESTORE, Some(file.body.clone())).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Until every slave has the new rows (eventual reads go round robin).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut in_a_row = 0;
    while in_a_row < 10 {
        assert!(Instant::now() < deadline, "the slaves did not all resync");
        in_a_row = if users(&db, "eventual").await == new {
            in_a_row + 1
        } else {
            0
        };
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = (0, 0);
    for r in readers {
        let seen = r.await.expect("a reader");
        total = (total.0 + seen.0, total.1 + seen.1);
    }
    assert!(total.0 + total.1 > 0, "the readers read");
    assert_eq!(users(&db, "strong").await, new);
}

#[tokio::test]
async fn bad_backups_are_refused_with_a_reason_and_change_nothing() {
    let system = System::start();
    let db = Http::new(&system.urls.orchestrator);
    for name in ["keep1", "keep2"] {
        insert(&db, name).await.expect("a write");
    }
    let good = db.get(BACKUP).await;
    assert_eq!(good.status, 200);
    insert(&db, "keep3").await.expect("a write");
    let before = users(&db, "strong").await;
    let bytes = good.body;
    let mut flipped = bytes.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x10;
    let mut other_format = bytes.clone();
    other_format[9] = 2;
    // Whole and well formed, but of a table this schema lacks.
    let foreign_table = backup::encode_whole(
        &BackupHeader {
            seq: 1,
            entries: 1,
            parts: 1,
            tables: vec![("cars".into(), 1)],
            ..Default::default()
        },
        &[vec![(b"dcars\0tx".to_vec(), vec![0])]],
    );
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", Vec::new(), "not a dbaas backup"),
        ("garbage", b"hello, world".to_vec(), "not a dbaas backup"),
        ("json", br#"{"rows":[]}"#.to_vec(), "not a dbaas backup"),
        ("truncated", bytes[..bytes.len() - 7].to_vec(), "checksum"),
        ("half", bytes[..bytes.len() / 2].to_vec(), "checksum"),
        ("damaged", flipped, "checksum"),
        ("another format", other_format, "format 2"),
        ("another schema", foreign_table, "lacks"),
    ];
    for (what, body, says) in cases {
        let r = db.send("POST", RESTORE, Some(body)).await;
        r.assert_error(400);
        let msg = r.json()["error"].as_str().unwrap_or_default().to_owned();
        assert!(msg.contains(says), "{what}: {msg}");
        assert_eq!(users(&db, "strong").await, before, "{what} changed nothing");
    }
    // The good one still restores (a restore of this very cluster's
    // backup takes it back to before keep3).
    let r = db.send("POST", RESTORE, Some(bytes)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let back: BTreeSet<String> = ["keep1", "keep2"].map(String::from).into();
    assert_eq!(users(&db, "strong").await, back);
}

/// Runs the `dbaas` binary with `args` (and `env`) to its end.
async fn dbaas(args: Vec<String>, env: Vec<(&'static str, String)>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_dbaas"))
            .args(args)
            .env_remove("DBAAS_ADMIN_TOKEN")
            .envs(env)
            .output()
            .expect("dbaas runs")
    })
    .await
    .expect("a finished command")
}

#[tokio::test]
async fn the_admin_token_guards_backup_and_restore_and_the_commands_send_it() {
    let system = System::start_with(&["--admin-token", "s3cret"]);
    let url = system.urls.orchestrator.clone();
    let db = Http::new(&url);
    insert(&db, "kept").await.expect("a write");
    let client = reqwest::Client::new();
    for auth in [None, Some("Bearer wrong"), Some("s3cret")] {
        let with = |req: reqwest::RequestBuilder| match auth {
            Some(a) => req.header("authorization", a),
            None => req,
        };
        let r = with(client.get(format!("{url}{BACKUP}")))
            .send()
            .await
            .expect("an answer");
        assert_eq!(r.status().as_u16(), 401, "backup with {auth:?}");
        let r = with(client.post(format!("{url}{RESTORE}")).body("x"))
            .send()
            .await
            .expect("an answer");
        assert_eq!(r.status().as_u16(), 401, "restore with {auth:?}");
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let file = dir.path().join("kept.backup");
    let args = |cmd: &str| {
        vec![
            cmd.to_owned(),
            file.display().to_string(),
            "--orchestrator".into(),
            url.clone(),
        ]
    };
    let out = dbaas(args("backup"), vec![]).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{out:?}"
    );
    assert!(!file.exists(), "nothing written without the token");
    let token = vec![("DBAAS_ADMIN_TOKEN", "s3cret".to_owned())];
    let out = dbaas(args("backup"), token.clone()).await;
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 rows"),
        "{out:?}"
    );
    insert(&db, "later").await.expect("a write");
    let out = dbaas(args("restore"), vec![]).await;
    assert!(!out.status.success());
    let out = dbaas(args("restore"), token).await;
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("restored 1 rows"),
        "{out:?}"
    );
    let kept: BTreeSet<String> = ["kept".to_owned()].into();
    assert_eq!(users(&db, "strong").await, kept);
}

/// A restore acknowledged is never lost: the master killed right after
/// its answer (its slaves may not have taken the snapshot past it yet),
/// the next master serves the restored rows and goes on from its seq.
#[tokio::test]
async fn a_restore_survives_the_master_killed_right_after_it() {
    let a = System::start();
    let db_a = Http::new(&a.urls.orchestrator);
    for i in 0..50 {
        insert(&db_a, &format!("new{i}")).await.expect("a write");
    }
    let file = db_a.get(BACKUP).await;
    assert_eq!(file.status, 200);
    let b = System::start_with(&["--slaves", "2"]);
    let db = Http::new(&b.urls.orchestrator);
    for i in 0..10 {
        insert(&db, &format!("old{i}")).await.expect("a write");
    }
    let r = db.send("POST", RESTORE, Some(file.body)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let restored = r.json()["seq"].as_u64().expect("a seq");
    let crash = db.send("POST", "/api/v1/crash/master", None).await;
    assert_eq!(crash.status, 200, "{}", crash.text());
    let new: BTreeSet<String> = (0..50).map(|i| format!("new{i}")).collect();
    assert_eq!(users(&db, "strong").await, new);
    let seq = insert(&db, "after")
        .await
        .expect("a write after the failover");
    assert!(seq > restored, "{seq} after the restore's {restored}");
}
