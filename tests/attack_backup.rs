//! Attacks on backup and restore and on the operator's view, against the
//! real system (`dbaas up`, embedded, and with every worker a process of
//! its own over RabbitMQ and ZooKeeper when the services are configured):
//! files that are well formed on the outside (magic, format, checksum)
//! but lie inside, an empty cluster's backup, concurrent restores, writes
//! after a restore and a failover right after them, a slave paused
//! (SIGSTOP) through a backup and a restore, the cluster view, /metrics
//! and `dbaas status` with a worker paused, and the admin token on every
//! guarded endpoint while the dashboard stays readable.

mod common;
mod suite;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Http, System};
use dbaas::model::backup::{self, BackupHeader, Writer, TRAILER};

use common::backup::{insert, users, write_user, BACKUP, RESTORE};

/// A `dbaas up` of its own over the test RabbitMQ and ZooKeeper, workers
/// as processes (None when the services are not configured).
fn start_processes(extra: &[&str]) -> Option<System> {
    start_processes_with_session(suite::ZK_SESSION, extra)
}

/// As [`start_processes`], with coordinator sessions of `session` (a
/// worker paused for less than that stays a member).
fn start_processes_with_session(session: Duration, extra: &[&str]) -> Option<System> {
    let base = suite::amqp_url()?;
    let zk = suite::fresh_zk(session)?;
    let (_, url) = suite::fresh_vhost(&base);
    let ms = session.as_millis().to_string();
    let mut args = vec!["--amqp", &url, "--zk", &zk.hosts, "--zk-root", &zk.root];
    args.extend_from_slice(&["--session-timeout-ms", &ms]);
    args.extend_from_slice(extra);
    Some(System::start_with(&args))
}

/// Polls until `times` eventual reads in a row (round robin over every
/// slave) see exactly `want`, failing after `within`.
async fn every_replica_holds(db: &Http, want: &BTreeSet<String>, times: usize, within: Duration) {
    let deadline = Instant::now() + within;
    let mut in_a_row = 0;
    let mut last = BTreeSet::new();
    while in_a_row < times {
        assert!(
            Instant::now() < deadline,
            "the replicas did not all come to the {} rows wanted; last read {} rows, \
             missing {:?}, extra {:?}",
            want.len(),
            last.len(),
            want.difference(&last).take(5).collect::<Vec<_>>(),
            last.difference(want).take(5).collect::<Vec<_>>(),
        );
        last = users(db, "eventual").await;
        in_a_row = if &last == want { in_a_row + 1 } else { 0 };
    }
}

/// Names `prefix0..prefix{n-1}`, inserted one after the other.
async fn fill(db: &Http, prefix: &str, n: usize) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for i in 0..n {
        let name = format!("{prefix}{i}");
        let r = write_user(db, &name).await;
        assert_eq!(r.status, 200, "writing {name}: {}", r.text());
        names.insert(name);
    }
    names
}

/// A backup file whose magic, format and checksum are right, whose header
/// is a real one, and whose one part is `part` (raw bytes, framed).
fn well_wrapped(part: &[u8]) -> Vec<u8> {
    let mut w = Writer::default();
    let mut out = w.header(&BackupHeader {
        seq: 1,
        entries: 1,
        parts: 1,
        tables: vec![("users".into(), 1)],
        ..Default::default()
    });
    out.extend_from_slice(&(part.len() as u32).to_be_bytes());
    out.extend_from_slice(part);
    out.extend_from_slice(TRAILER);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// The varint bincode writes for a length of `n` (standard config).
fn varint(n: u64) -> Vec<u8> {
    let mut v = vec![253];
    v.extend_from_slice(&n.to_le_bytes());
    v
}

/// A checksum says nothing of intent: a file that is whole and well
/// wrapped but whose part claims more entries than any memory holds is
/// refused like any other bad file, and the orchestrator (here, the whole
/// embedded system) stays up and unchanged.
#[tokio::test]
async fn a_well_wrapped_backup_claiming_huge_lengths_is_refused_and_nothing_falls_over() {
    let system = System::start();
    let db = Http::new(&system.urls.orchestrator);
    let before = fill(&db, "keep", 3).await;
    // Entries: a Vec of 2^58 pairs (past what a Vec may hold), of 2^33
    // pairs (more than the machine's memory), one pair whose key claims
    // 2^40 bytes.
    let mut key_too_long = varint(1);
    key_too_long.extend(varint(1 << 40));
    // One whole entry, a row of users whose first column's name claims
    // 2^40 bytes.
    let key = b"dusers\0tx";
    let mut value = vec![1];
    value.extend(varint(1 << 40));
    let mut row_too_long = vec![1, key.len() as u8];
    row_too_long.extend_from_slice(key);
    row_too_long.push(value.len() as u8);
    row_too_long.extend(value);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("2^58 entries", varint(1 << 58)),
        ("2^33 entries", varint(1 << 33)),
        ("a key of 2^40 bytes", key_too_long),
        ("a column name of 2^40 bytes", row_too_long),
    ];
    for (what, part) in cases {
        let file = well_wrapped(&part);
        let r = db.send("POST", RESTORE, Some(file.clone())).await;
        assert_eq!(r.status, 400, "{what}: {} {}", r.status, r.text());
        assert_eq!(users(&db, "strong").await, before, "{what} changed nothing");
    }
    let log = system.log();
    assert!(!log.contains("panicked"), "a panic:\n{log}");
}

/// An empty cluster's backup is a backup too: restored over rows, it
/// leaves no row, on the master and on every slave.
#[tokio::test]
async fn an_empty_clusters_backup_restores_to_no_rows_everywhere() {
    let empty = System::start();
    let file = Http::new(&empty.urls.orchestrator).get(BACKUP).await;
    assert_eq!(file.status, 200, "{}", file.text());
    let (head, _) = backup::decode(&file.body).expect("a whole backup");
    assert_eq!(head.rows(), 0);
    let b = System::start_with(&["--slaves", "2"]);
    let db = Http::new(&b.urls.orchestrator);
    fill(&db, "old", 20).await;
    let r = db.send("POST", RESTORE, Some(file.body)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let none = BTreeSet::new();
    assert_eq!(users(&db, "strong").await, none);
    every_replica_holds(&db, &none, 8, Duration::from_secs(30)).await;
    let later = fill(&db, "new", 3).await;
    assert_eq!(users(&db, "strong").await, later);
}

/// Two restores sent at once: both answered, one after the other; the
/// database is then exactly one of the two backups, on every replica, and
/// the later restore's seq is the higher.
#[tokio::test]
async fn concurrent_restores_leave_exactly_one_backup_everywhere() {
    let a = System::start();
    let db_a = Http::new(&a.urls.orchestrator);
    let rows_a = fill(&db_a, "a", 30).await;
    let file_a = db_a.get(BACKUP).await;
    assert_eq!(file_a.status, 200);
    let clear = db_a.send("POST", "/api/v1/db/clear", None).await;
    assert_eq!(clear.status, 200, "{}", clear.text());
    let rows_b = fill(&db_a, "b", 5).await;
    let file_b = db_a.get(BACKUP).await;
    assert_eq!(file_b.status, 200);
    let c = System::start_with(&["--slaves", "2"]);
    let db = Http::new(&c.urls.orchestrator);
    fill(&db, "old", 10).await;
    let (ra, rb) = tokio::join!(
        db.send("POST", RESTORE, Some(file_a.body.clone())),
        db.send("POST", RESTORE, Some(file_b.body.clone())),
    );
    assert_eq!(ra.status, 200, "{}", ra.text());
    assert_eq!(rb.status, 200, "{}", rb.text());
    let (sa, sb) = (
        ra.json()["seq"].as_u64().expect("a seq"),
        rb.json()["seq"].as_u64().expect("a seq"),
    );
    assert_ne!(sa, sb);
    let last = if sa > sb { &rows_a } else { &rows_b };
    assert_eq!(&users(&db, "strong").await, last);
    every_replica_holds(&db, last, 8, Duration::from_secs(30)).await;
}

/// Writes acknowledged after a restore survive the master killed right
/// after them, and no replica replays the rows the restore replaced.
#[tokio::test]
async fn writes_after_a_restore_survive_a_failover_right_after_them() {
    let a = System::start();
    let db_a = Http::new(&a.urls.orchestrator);
    let restored = fill(&db_a, "new", 40).await;
    let file = db_a.get(BACKUP).await;
    assert_eq!(file.status, 200);
    let b = System::start_with(&["--slaves", "2"]);
    let db = Http::new(&b.urls.orchestrator);
    fill(&db, "old", 40).await;
    let r = db.send("POST", RESTORE, Some(file.body)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let mut want = restored;
    want.extend(fill(&db, "after", 20).await);
    let crash = db.send("POST", "/api/v1/crash/master", None).await;
    assert_eq!(crash.status, 200, "{}", crash.text());
    assert_eq!(users(&db, "strong").await, want);
    want.extend(fill(&db, "later", 5).await);
    every_replica_holds(&db, &want, 8, Duration::from_secs(60)).await;
    let log = b.log();
    assert!(!log.contains("panicked"), "a panic:\n{log}");
}

/// The same restore sent twice (a client that did not see the first
/// answer): the second takes the database back to the backup again, no
/// more; every replica agrees.
#[tokio::test]
async fn a_restore_sent_twice_leaves_the_backup_once() {
    let a = System::start();
    let db_a = Http::new(&a.urls.orchestrator);
    let restored = fill(&db_a, "new", 20).await;
    let file = db_a.get(BACKUP).await;
    let b = System::start_with(&["--slaves", "2"]);
    let db = Http::new(&b.urls.orchestrator);
    fill(&db, "old", 20).await;
    for _ in 0..2 {
        let r = db.send("POST", RESTORE, Some(file.body.clone())).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(users(&db, "strong").await, restored);
    every_replica_holds(&db, &restored, 8, Duration::from_secs(30)).await;
}

async fn status_of(url: &str, auth: Option<&str>, method: &str, path: &str) -> u16 {
    let client = reqwest::Client::new();
    let mut req = client.request(method.parse().expect("a method"), format!("{url}{path}"));
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    req.send().await.expect("an answer").status().as_u16()
}

/// With an admin token, every guarded endpoint refuses a missing, wrong
/// or malformed token (401) and takes the right one; the dashboard, the
/// cluster view and /metrics stay readable without it.
#[tokio::test]
async fn the_admin_token_guards_every_destructive_endpoint_and_the_view_stays_open() {
    let system = System::start_with(&["--admin-token", "s3cret"]);
    let url = system.urls.orchestrator.clone();
    let db = Http::new(&url);
    insert(&db, "kept").await.expect("a write");
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("s3cret"),
        Some("bearer s3cret"),
        Some("Bearer s3cre"),
        Some("Bearer s3cretx"),
    ] {
        for (method, path) in [
            ("GET", BACKUP),
            ("POST", RESTORE),
            ("POST", "/api/v1/crash/master"),
            ("POST", "/api/v1/crash/slave"),
            ("POST", "/api/v1/db/clear"),
        ] {
            assert_eq!(
                status_of(&url, auth, method, path).await,
                401,
                "{method} {path} with {auth:?}"
            );
        }
    }
    let kept: BTreeSet<String> = ["kept".to_owned()].into();
    assert_eq!(users(&db, "strong").await, kept, "nothing was cleared");
    for path in ["/", "/api/v1/cluster", "/metrics", "/healthz"] {
        assert_eq!(status_of(&url, None, "GET", path).await, 200, "{path}");
        // Readable by anyone, so never carrying the token.
        let page = db.get(path).await.text();
        assert!(!page.contains("s3cret"), "{path} shows the token");
    }
    let right = Some("Bearer s3cret");
    assert_eq!(status_of(&url, right, "GET", BACKUP).await, 200);
    assert_eq!(
        status_of(&url, right, "POST", "/api/v1/db/clear").await,
        200
    );
    assert!(users(&db, "strong").await.is_empty());
}

/// The pid of every worker of `role` in the cluster view.
async fn pids(db: &Http, role: &str) -> Vec<u64> {
    let r = db.get("/api/v1/cluster").await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .filter(|w| w["role"] == role)
        .map(|w| w["pid"].as_u64().expect("a pid"))
        .collect()
}

fn signal(pid: u64, sig: libc::c_int) {
    // SAFETY: kill(2) on a worker of the system this test started.
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig})");
}

/// Resumes a paused worker when dropped (a failed assertion included).
struct Paused(u64);

impl Drop for Paused {
    fn drop(&mut self) {
        // SAFETY: as in `signal`.
        unsafe { libc::kill(self.0 as libc::pid_t, libc::SIGCONT) };
    }
}

/// Asks `path` with a client that gives up after 10 s: an answer, not a
/// hang behind a paused worker.
async fn answers(url: &str, path: &str) -> (u16, String) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a client");
    let r = client
        .get(format!("{url}{path}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{path} did not answer: {e}"));
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

/// With worker processes over RabbitMQ: a slave paused (SIGSTOP) through
/// a backup under load and through a restore. The backup restores exactly
/// the rows acknowledged up to its seq; the cluster view, /metrics and
/// `dbaas status` answer while the slave is paused; once resumed, the
/// slave holds exactly the restored rows plus the writes after them.
#[tokio::test]
async fn a_paused_slave_through_a_backup_and_a_restore_comes_back_to_exactly_the_restored_state() {
    let Some(a) = start_processes(&["--slaves", "2"]) else {
        return;
    };
    let db = Http::new(&a.urls.orchestrator);
    let url = a.urls.orchestrator.clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    while pids(&db, "slave").await.len() < 2 {
        assert!(Instant::now() < deadline, "two slaves");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = fill(&db, "pre", 30).await;
    let slave = pids(&db, "slave").await[0];
    signal(slave, libc::SIGSTOP);
    let paused = Paused(slave);
    // Writes and a backup while it is paused.
    let mut acked = Vec::new();
    for i in 0..20 {
        let name = format!("mid{i}");
        acked.push((insert(&db, &name).await.expect("a write"), name));
    }
    let file = db.get(BACKUP).await;
    assert_eq!(file.status, 200, "{}", file.text());
    let (head, _) = backup::decode(&file.body).expect("a whole backup");
    let mut in_backup = before.clone();
    in_backup.extend(
        acked
            .iter()
            .filter(|(s, _)| *s <= head.seq)
            .map(|(_, n)| n.clone()),
    );
    for i in 0..10 {
        insert(&db, &format!("post{i}")).await.expect("a write");
    }
    // The operator's view with a worker paused.
    for path in ["/api/v1/cluster", "/metrics", "/"] {
        let (status, body) = answers(&url, path).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let out = tokio::task::spawn_blocking({
        let url = url.clone();
        move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_dbaas"))
                .args(["status", "--json", "--orchestrator", &url])
                .output()
                .expect("dbaas status runs")
        }
    })
    .await
    .expect("status");
    assert!(out.status.success(), "{out:?}");
    // The restore while it is still paused.
    let r = db.send("POST", RESTORE, Some(file.body.clone())).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(users(&db, "strong").await, in_backup);
    let mut want = in_backup;
    want.extend(fill(&db, "after", 10).await);
    drop(paused);
    every_replica_holds(&db, &want, 12, Duration::from_secs(60)).await;
    let log = a.log();
    assert!(!log.contains("panicked"), "a panic:\n{log}");
}

/// With worker processes: the master killed (crash/master) while a
/// backup is asked under write load; the backup that comes restores
/// exactly the rows acknowledged up to its seq.
#[tokio::test]
async fn a_backup_through_a_failover_holds_exactly_the_acknowledged_rows_to_its_seq() {
    let Some(a) = start_processes(&["--slaves", "2"]) else {
        return;
    };
    let db = Http::new(&a.urls.orchestrator);
    let mut acked: Vec<(u64, String)> = Vec::new();
    for i in 0..50 {
        let name = format!("pre{i}");
        acked.push((insert(&db, &name).await.expect("a write"), name));
    }
    let (file, crash, more) = tokio::join!(
        db.get(BACKUP),
        db.send("POST", "/api/v1/crash/master", None),
        async {
            let mut more = Vec::new();
            for i in 0..30 {
                let name = format!("during{i}");
                if let Some(seq) = insert(&db, &name).await {
                    more.push((seq, name));
                }
            }
            more
        }
    );
    assert_eq!(crash.status, 200, "{}", crash.text());
    assert_eq!(file.status, 200, "{}", file.text());
    acked.extend(more);
    let (head, _) = backup::decode(&file.body).expect("a whole backup");
    let want: BTreeSet<String> = acked
        .iter()
        .filter(|(s, _)| *s <= head.seq)
        .map(|(_, n)| n.clone())
        .collect();
    let b = System::start();
    let db_b = Http::new(&b.urls.orchestrator);
    let r = db_b.send("POST", RESTORE, Some(file.body)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = users(&db_b, "strong").await;
    assert!(
        want.is_subset(&got),
        "acknowledged rows up to seq {} missing: {:?}",
        head.seq,
        want.difference(&got).take(5).collect::<Vec<_>>()
    );
    let acked_names: BTreeSet<String> = acked.iter().map(|(_, n)| n.clone()).collect();
    for extra in got.difference(&want) {
        // A write applied but unanswered (the master died first) may be
        // in the backup; an acknowledged one past its seq may not.
        assert!(
            !acked_names.contains(extra),
            "{extra} acknowledged past seq {} yet in the backup",
            head.seq
        );
    }
}

/// A write a writer sent: its seq if acknowledged (None: its outcome is
/// unknown), its name, and when its answer came (a ticket of `clock`,
/// shared with whatever else the test orders answers against).
type Written = (Option<u64>, String, u64);

/// Writers inserting fresh users until stopped; every write with its
/// outcome and the ticket of its answer.
fn writers(
    db: &Http,
    n: usize,
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
    clock: &std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> Vec<tokio::task::JoinHandle<Vec<Written>>> {
    (0..n)
        .map(|w| {
            let (db, stop, clock) = (db.clone(), stop.clone(), clock.clone());
            tokio::spawn(async move {
                let mut sent = Vec::new();
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let name = format!("w{w}-{i}");
                    i += 1;
                    let seq = insert(&db, &name).await;
                    let ticket = clock.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    sent.push((seq, name, ticket));
                }
                sent
            })
        })
        .collect()
}

/// Every write the writers sent, once they end.
async fn written(tasks: Vec<tokio::task::JoinHandle<Vec<Written>>>) -> Vec<Written> {
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("a writer"));
    }
    all
}

/// A restore under concurrent writes is one step in the history: every
/// write acknowledged before its seq is gone, every one after it is kept,
/// on the master and on every slave.
async fn restore_under_writes_is_one_step(system: Option<System>) {
    let Some(b) = system else { return };
    let a = System::start();
    let db_a = Http::new(&a.urls.orchestrator);
    let restored = fill(&db_a, "new", 50).await;
    let file = db_a.get(BACKUP).await;
    assert_eq!(file.status, 200);
    let db = Http::new(&b.urls.orchestrator);
    fill(&db, "old", 20).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tasks = writers(&db, 3, &stop, &Default::default());
    // Some writes before the restore, some after it.
    let r = db.send("POST", RESTORE, Some(file.body)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let at = r.json()["seq"].as_u64().expect("a seq");
    let more = fill(&db, "after", 20).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked: Vec<(u64, String)> = written(tasks)
        .await
        .into_iter()
        .filter_map(|(seq, name, _)| Some((seq?, name)))
        .collect();
    let mut want = restored;
    want.extend(more);
    want.extend(
        acked
            .iter()
            .filter(|(s, _)| *s > at)
            .map(|(_, n)| n.clone()),
    );
    let got = users(&db, "strong").await;
    assert_eq!(
        got,
        want,
        "restored at {at}; missing {:?}, extra {:?}",
        want.difference(&got).take(5).collect::<Vec<_>>(),
        got.difference(&want).take(5).collect::<Vec<_>>()
    );
    every_replica_holds(&db, &want, 8, Duration::from_secs(60)).await;
    let log = b.log();
    assert!(!log.contains("panicked"), "a panic:\n{log}");
}

#[tokio::test]
async fn a_restore_under_concurrent_writes_is_one_step_in_the_history() {
    restore_under_writes_is_one_step(Some(System::start_with(&["--slaves", "2"]))).await;
}

#[tokio::test]
async fn a_restore_under_concurrent_writes_is_one_step_in_the_history_with_worker_processes() {
    restore_under_writes_is_one_step(start_processes(&["--slaves", "2"])).await;
}

/// Polls the cluster view until it has a master and `slaves` slaves.
async fn settled(db: &Http, slaves: usize) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (m, s) = (pids(db, "master").await, pids(db, "slave").await);
        if m.len() == 1 && s.len() >= slaves {
            return m[0];
        }
        assert!(Instant::now() < deadline, "no master and {slaves} slaves");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The master paused, a restore sent to it, the master killed before it
/// could take the parts: the restore is answered truthfully (200 only if
/// it happened) and holds everywhere or nowhere.
#[tokio::test]
async fn a_restore_sent_to_a_master_killed_before_it_takes_the_parts_happens_everywhere_or_nowhere()
{
    let Some(b) = start_processes(&["--slaves", "2"]) else {
        return;
    };
    let a = System::start();
    let db_a = Http::new(&a.urls.orchestrator);
    let restored = fill(&db_a, "new", 30).await;
    let file = db_a.get(BACKUP).await;
    let db = Http::new(&b.urls.orchestrator);
    let master = settled(&db, 2).await;
    let old = fill(&db, "old", 20).await;
    signal(master, libc::SIGSTOP);
    let restore = tokio::spawn({
        let db = db.clone();
        async move { db.send("POST", RESTORE, Some(file.body)).await }
    });
    // The parts on their way to (or waiting for) the paused master.
    let probe = db.get("/api/v1/cluster").await;
    assert_eq!(probe.status, 200, "the view with the master paused");
    signal(master, libc::SIGKILL);
    let r = restore.await.expect("the restore's answer");
    let want = if r.status == 200 { restored } else { old };
    assert_eq!(users(&db, "strong").await, want, "answered {}", r.status);
    every_replica_holds(&db, &want, 8, Duration::from_secs(60)).await;
    let log = b.log();
    assert!(!log.contains("panicked"), "a panic:\n{log}");
}

/// A slave paused through a restore and the writes after it, then the
/// master killed: the other slave leads; the paused one, resumed, comes
/// to exactly the restored rows and the later writes, never the rows the
/// restore replaced.
#[tokio::test]
async fn a_slave_paused_through_a_restore_and_a_failover_comes_back_to_the_restored_state() {
    let Some(b) = start_processes(&["--slaves", "2"]) else {
        return;
    };
    let a = System::start();
    let db_a = Http::new(&a.urls.orchestrator);
    let mut want = fill(&db_a, "new", 30).await;
    let file = db_a.get(BACKUP).await;
    let db = Http::new(&b.urls.orchestrator);
    settled(&db, 2).await;
    fill(&db, "old", 20).await;
    let slave = pids(&db, "slave").await[0];
    signal(slave, libc::SIGSTOP);
    let paused = Paused(slave);
    let r = db.send("POST", RESTORE, Some(file.body)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    want.extend(fill(&db, "after", 10).await);
    let crash = db.send("POST", "/api/v1/crash/master", None).await;
    assert_eq!(crash.status, 200, "{}", crash.text());
    assert_eq!(users(&db, "strong").await, want);
    drop(paused);
    want.extend(fill(&db, "later", 5).await);
    every_replica_holds(&db, &want, 12, Duration::from_secs(90)).await;
    let log = b.log();
    assert!(!log.contains("panicked"), "a panic:\n{log}");
}

/// `n` users named `prefix<i>`, inserted by 16 writers at once.
async fn fill_fast(db: &Http, prefix: &str, n: usize) -> BTreeSet<String> {
    let tasks: Vec<_> = (0..16)
        .map(|w| {
            let (db, prefix) = (db.clone(), prefix.to_owned());
            tokio::spawn(async move {
                let mut names = Vec::new();
                for i in (w..n).step_by(16) {
                    let name = format!("{prefix}{i}");
                    insert(&db, &name).await.expect("a write");
                    names.push(name);
                }
                names
            })
        })
        .collect();
    let mut all = BTreeSet::new();
    for t in tasks {
        all.extend(t.await.expect("a writer"));
    }
    all
}

/// A restore of several parts with the master killed as it is sent, then
/// a slave killed and started afresh: the answer is truthful, and every
/// replica, the fresh one included, holds exactly the restored rows and
/// the writes after them.
#[tokio::test]
async fn a_restore_of_many_parts_through_a_master_kill_and_a_fresh_slave() {
    let Some(b) = start_processes(&["--slaves", "2"]) else {
        return;
    };
    let a = System::start();
    let db_a = Http::new(&a.urls.orchestrator);
    let restored = fill_fast(&db_a, "new", 9000).await;
    let file = db_a.get(BACKUP).await;
    let (head, _) = backup::decode(&file.body).expect("a whole backup");
    assert!(head.parts >= 3, "{} parts", head.parts);
    let db = Http::new(&b.urls.orchestrator);
    settled(&db, 2).await;
    let old = fill(&db, "old", 20).await;
    let restore = tokio::spawn({
        let db = db.clone();
        async move { db.send("POST", RESTORE, Some(file.body)).await }
    });
    let crash = db.send("POST", "/api/v1/crash/master", None).await;
    assert_eq!(crash.status, 200, "{}", crash.text());
    let r = restore.await.expect("the restore's answer");
    let mut want = if r.status == 200 { restored } else { old };
    assert_eq!(users(&db, "strong").await, want, "answered {}", r.status);
    want.extend(fill(&db, "after", 10).await);
    settled(&db, 2).await;
    let crash = db.send("POST", "/api/v1/crash/slave", None).await;
    assert_eq!(crash.status, 200, "{}", crash.text());
    settled(&db, 2).await;
    want.extend(fill(&db, "later", 5).await);
    every_replica_holds(&db, &want, 12, Duration::from_secs(90)).await;
    let log = b.log();
    assert!(!log.contains("panicked"), "a panic:\n{log}");
}

/// A restore that says it is larger than any restore may be (2 GiB) is
/// refused with 413 from its headers, before its body: the server neither
/// waits for nor holds a gigabyte to say no. (The body is never sent, so
/// a server that waits for it never answers; the read gives up after a
/// minute only to fail the test.)
#[tokio::test]
async fn a_restore_declaring_a_huge_body_is_refused_before_it_is_sent() {
    use std::io::{Read, Write};
    let system = System::start();
    let db = Http::new(&system.urls.orchestrator);
    let before = fill(&db, "keep", 2).await;
    let addr = system
        .urls
        .orchestrator
        .trim_start_matches("http://")
        .to_owned();
    let answer = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(&addr).expect("a connection");
        s.set_read_timeout(Some(Duration::from_secs(60)))
            .expect("a timeout");
        s.write_all(
            b"POST /api/v1/db/restore HTTP/1.1\r\nHost: dbaas\r\n\
              Content-Length: 2147483648\r\n\r\nDBAASBK\0",
        )
        .expect("the request's head");
        let mut got = vec![0; 512];
        let n = s.read(&mut got).unwrap_or(0);
        String::from_utf8_lossy(&got[..n]).into_owned()
    })
    .await
    .expect("an answer");
    assert!(answer.starts_with("HTTP/1.1 413"), "answered {answer:?}");
    assert_eq!(users(&db, "strong").await, before);
}

/// The master paused (SIGSTOP) and left paused: a backup and a restore
/// asked meanwhile are answered by the master elected in its place, and
/// the backup holds every acknowledged row.
#[tokio::test]
async fn a_backup_and_a_restore_with_the_master_paused_are_answered_by_the_next_master() {
    let Some(b) = start_processes(&["--slaves", "2"]) else {
        return;
    };
    let a = System::start();
    let db_a = Http::new(&a.urls.orchestrator);
    let restored = fill(&db_a, "new", 30).await;
    let file = db_a.get(BACKUP).await;
    let db = Http::new(&b.urls.orchestrator);
    let master = settled(&db, 2).await;
    let old = fill(&db, "old", 20).await;
    signal(master, libc::SIGSTOP);
    let _paused = Paused(master);
    let backup = db.get(BACKUP).await;
    assert_eq!(backup.status, 200, "{}", backup.text());
    let (head, _) = backup::decode(&backup.body).expect("a whole backup");
    assert_eq!(head.rows(), old.len() as u64);
    let r = db.send("POST", RESTORE, Some(file.body)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(users(&db, "strong").await, restored);
}

/// `dbaas status` with `args`, to its end.
async fn status_command(url: &str, args: &[&str]) -> std::process::Output {
    let mut all = vec!["status".to_owned(), "--orchestrator".into(), url.to_owned()];
    all.extend(args.iter().map(|a| a.to_string()));
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_dbaas"))
            .args(all)
            .output()
            .expect("dbaas status runs")
    })
    .await
    .expect("status")
}

/// Under write load with one slave paused: the cluster view, /metrics, the
/// dashboard and `dbaas status` keep answering, while the paused slave is
/// listed and after it is replaced.
#[tokio::test]
async fn the_operators_view_answers_under_load_with_a_slave_paused() {
    let Some(b) = start_processes(&["--slaves", "2"]) else {
        return;
    };
    let db = Http::new(&b.urls.orchestrator);
    let url = b.urls.orchestrator.clone();
    settled(&db, 2).await;
    let slave = pids(&db, "slave").await[0];
    signal(slave, libc::SIGSTOP);
    let _paused = Paused(slave);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tasks = writers(&db, 3, &stop, &Default::default());
    // Listed while its session lasts (the figure of the last round it
    // answered, at most half a second old), then dropped and replaced;
    // the view answers all along.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = answers(&url, "/api/v1/cluster").await;
        assert_eq!(status, 200, "{body}");
        let view: serde_json::Value = serde_json::from_str(&body).expect("json");
        let listed = view["workers"]
            .as_array()
            .expect("workers")
            .iter()
            .find(|w| w["pid"] == slave)
            .cloned();
        match listed {
            Some(w) if w.get("reads_served").is_some() => {}
            _ => break,
        }
        assert!(Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for _ in 0..5 {
        let (status, body) = answers(&url, "/api/v1/cluster").await;
        assert_eq!(status, 200, "{body}");
        let (status, metrics) = answers(&url, "/metrics").await;
        assert_eq!(status, 200, "{metrics}");
        assert!(metrics.contains("dbaas_worker_applied_seq{"), "{metrics}");
        let (status, page) = answers(&url, "/").await;
        assert_eq!(status, 200, "{page}");
        let out = status_command(&url, &["--json"]).await;
        assert!(out.status.success(), "{out:?}");
        let out = status_command(&url, &[]).await;
        assert!(out.status.success(), "{out:?}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = written(tasks).await;
    assert!(acked.iter().any(|w| w.0.is_some()), "writes went on");
}

/// With sessions long enough that a paused slave stays a member (it is
/// not replaced): paused through writes, a backup, a restore and writes
/// after it, then resumed, the same slave process comes to exactly the
/// restored rows and the later writes, never the rows the restore
/// replaced nor the writes before it.
#[tokio::test]
async fn a_slave_paused_within_its_session_through_a_restore_resumes_into_the_restored_state() {
    let Some(b) = start_processes_with_session(Duration::from_secs(30), &["--slaves", "2"]) else {
        return;
    };
    let a = System::start();
    let db_a = Http::new(&a.urls.orchestrator);
    let mut want = fill(&db_a, "new", 30).await;
    let file = db_a.get(BACKUP).await;
    let db = Http::new(&b.urls.orchestrator);
    settled(&db, 2).await;
    fill(&db, "old", 20).await;
    let slave = pids(&db, "slave").await[0];
    signal(slave, libc::SIGSTOP);
    let paused = Paused(slave);
    fill(&db, "gone", 20).await;
    let backup = db.get(BACKUP).await;
    assert_eq!(backup.status, 200, "{}", backup.text());
    let r = db.send("POST", RESTORE, Some(file.body)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    want.extend(fill(&db, "after", 10).await);
    assert_eq!(users(&db, "strong").await, want);
    drop(paused);
    // Strong reads, whichever slave serves them (the resumed one still
    // holds the old rows until its snapshot), see the restore and after.
    for _ in 0..12 {
        assert_eq!(users(&db, "strong").await, want);
    }
    want.extend(fill(&db, "later", 5).await);
    every_replica_holds(&db, &want, 12, Duration::from_secs(60)).await;
    assert!(
        pids(&db, "slave").await.contains(&slave),
        "the paused slave is still one"
    );
    let log = b.log();
    assert!(!log.contains("panicked"), "a panic:\n{log}");
}

/// With long sessions: a slave paused through a restore and writes after
/// it, the master killed meanwhile, the slave resumed. The other slave
/// leads with the restore; the resumed one comes to exactly the restored
/// rows and every write after them (it never replays the old master's
/// writes before the restore over them), and a failover right after
/// loses nothing.
#[tokio::test]
async fn a_slave_paused_through_a_restore_and_a_master_kill_resumes_into_the_restored_state() {
    let Some(b) = start_processes_with_session(Duration::from_secs(30), &["--slaves", "2"]) else {
        return;
    };
    let a = System::start();
    let db_a = Http::new(&a.urls.orchestrator);
    let mut want = fill(&db_a, "new", 30).await;
    let file = db_a.get(BACKUP).await;
    let db = Http::new(&b.urls.orchestrator);
    settled(&db, 2).await;
    fill(&db, "old", 20).await;
    let slave = pids(&db, "slave").await[0];
    signal(slave, libc::SIGSTOP);
    let paused = Paused(slave);
    fill(&db, "gone", 20).await;
    let r = db.send("POST", RESTORE, Some(file.body)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    want.extend(fill(&db, "after", 10).await);
    let crash = db.send("POST", "/api/v1/crash/master", None).await;
    assert_eq!(crash.status, 200, "{}", crash.text());
    want.extend(fill(&db, "next", 10).await);
    assert_eq!(users(&db, "strong").await, want);
    drop(paused);
    want.extend(fill(&db, "later", 5).await);
    every_replica_holds(&db, &want, 12, Duration::from_secs(60)).await;
    let crash = db.send("POST", "/api/v1/crash/master", None).await;
    assert_eq!(crash.status, 200, "{}", crash.text());
    want.extend(fill(&db, "last", 5).await);
    assert_eq!(users(&db, "strong").await, want);
    every_replica_holds(&db, &want, 12, Duration::from_secs(60)).await;
    let log = b.log();
    assert!(!log.contains("panicked"), "a panic:\n{log}");
}

/// With worker processes: a restore of 9000 rows answered, and the master
/// killed at once, before its slaves could take their snapshot past it
/// (the restored rows are on the dead master alone, the slaves hold only
/// "restored here"). The answer was 200, so the restore must hold: the
/// next master serves the restored rows, and writes go on after it.
#[tokio::test]
async fn a_large_restore_survives_the_master_killed_the_moment_it_answers() {
    let Some(b) = start_processes(&["--slaves", "2"]) else {
        return;
    };
    let a = System::start();
    let db_a = Http::new(&a.urls.orchestrator);
    let mut want = fill_fast(&db_a, "new", 9000).await;
    let file = db_a.get(BACKUP).await;
    let db = Http::new(&b.urls.orchestrator);
    let master = settled(&db, 2).await;
    fill(&db, "old", 20).await;
    let r = db.send("POST", RESTORE, Some(file.body)).await;
    signal(master, libc::SIGKILL);
    assert_eq!(r.status, 200, "{}", r.text());
    let got = users(&db, "strong").await;
    assert_eq!(
        got.len(),
        want.len(),
        "the restored rows after the failover"
    );
    assert_eq!(got, want);
    want.extend(fill(&db, "after", 5).await);
    every_replica_holds(&db, &want, 8, Duration::from_secs(60)).await;
    let log = b.log();
    assert!(!log.contains("panicked"), "a panic:\n{log}");
}

/// The RideShare data travels whole: users, rides with their riders and
/// the rides' key counter. Restored into another cluster, every ride reads
/// back the same through the gateway, the counts agree, and the next ride
/// takes a key past every restored one (even past rides deleted before
/// the backup), never one of theirs.
#[tokio::test]
async fn the_rideshare_data_restores_whole_with_its_key_counter() {
    use common::api::Api;
    const FUTURE: &str = "01-01-2099:00-00-12";
    let a = System::start();
    let api_a = Api::new(&a.urls);
    for name in ["alice", "bob", "carol"] {
        api_a.add_user(name).await;
    }
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(api_a.add_ride("alice", FUTURE, i + 1, i + 2).await);
    }
    for &id in &ids[..3] {
        assert_eq!(api_a.join(id, "bob").await.status, 200);
    }
    // The last ride deleted: its key is used, and must stay so.
    let gone = *ids.last().expect("a ride");
    let r = api_a.gw.delete(&format!("/api/v1/rides/{gone}")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    ids.pop();
    let mut rides = Vec::new();
    for &id in &ids {
        rides.push(api_a.ride(id).await);
    }
    let file = Http::new(&a.urls.orchestrator).get(BACKUP).await;
    assert_eq!(file.status, 200);

    let b = System::start_with(&["--slaves", "2"]);
    let api_b = Api::new(&b.urls);
    api_b.add_user("dave").await;
    api_b.add_ride("dave", FUTURE, 9, 8).await;
    let db_b = Http::new(&b.urls.orchestrator);
    let r = db_b.send("POST", RESTORE, Some(file.body)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let mut names = api_b.user_list().await;
    names.sort();
    assert_eq!(names, ["alice", "bob", "carol"]);
    assert_eq!(api_b.ride_count().await, ids.len() as u64);
    for (&id, ride) in ids.iter().zip(&rides) {
        assert_eq!(&api_b.ride(id).await, ride, "ride {id}");
    }
    // The indexes came with the rows: searches by area find the restored
    // rides, and nothing of the rides the restore replaced.
    for (source, destination) in [(1, 2), (2, 3), (6, 7), (9, 8)] {
        let path = format!("/api/v1/rides?source={source}&destination={destination}");
        let (ra, rb) = (api_a.gw.get(&path).await, api_b.gw.get(&path).await);
        assert_eq!(rb.status, ra.status, "{path}: {}", rb.text());
        assert_eq!(rb.text(), ra.text(), "{path}");
    }
    let next = api_b.add_ride("carol", FUTURE, 1, 2).await;
    assert!(next > gone, "ride {next} reuses a key (last used {gone})");
    let r = api_b.gw.get("/api/v1/rides?source=1&destination=2").await;
    assert_eq!(r.json().as_array().map(Vec::len), Some(2), "{}", r.text());
}

/// The usernames a backup file holds, restored into a throwaway cluster.
async fn rows_of(file: &[u8]) -> BTreeSet<String> {
    let scratch = System::start();
    let db = Http::new(&scratch.urls.orchestrator);
    let r = db.send("POST", RESTORE, Some(file.to_vec())).await;
    assert_eq!(r.status, 200, "{}", r.text());
    users(&db, "strong").await
}

/// Backups asked while restores (of two different backups, in turn) are
/// applied under writes: each backup is exactly one of the two states
/// plus writes, never part of one restore and part of the other, and its
/// seq says which (at or past a restore's seq, that restore's rows).
#[tokio::test]
async fn backups_racing_restores_hold_one_state_or_the_other() {
    let a = System::start();
    let db_a = Http::new(&a.urls.orchestrator);
    let rows_a = fill(&db_a, "a", 40).await;
    let file_a = db_a.get(BACKUP).await;
    let clear = db_a.send("POST", "/api/v1/db/clear", None).await;
    assert_eq!(clear.status, 200, "{}", clear.text());
    let rows_b = fill(&db_a, "b", 25).await;
    let file_b = db_a.get(BACKUP).await;
    let c = System::start_with(&["--slaves", "2"]);
    let db = Http::new(&c.urls.orchestrator);
    let mut taken = Vec::new();
    for round in 0..6 {
        let file = if round % 2 == 0 { &file_a } else { &file_b };
        let (r, backup) = tokio::join!(
            db.send("POST", RESTORE, Some(file.body.clone())),
            db.get(BACKUP)
        );
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(backup.status, 200, "{}", backup.text());
        let at = r.json()["seq"].as_u64().expect("a seq");
        taken.push((round, at, backup.body));
    }
    for (round, at, body) in taken {
        let (head, _) = backup::decode(&body).expect("a whole backup");
        let got = rows_of(&body).await;
        let this = if round % 2 == 0 { &rows_a } else { &rows_b };
        if head.seq >= at {
            assert_eq!(
                &got, this,
                "round {round}: backup at {} past {at}",
                head.seq
            );
        } else {
            assert_ne!(
                &got, this,
                "round {round}: backup at {} before {at}",
                head.seq
            );
            assert!(
                got.is_empty() || got == rows_a || got == rows_b,
                "round {round}: a mix of {} rows",
                got.len()
            );
        }
    }
}

/// Runs `dbaas` with `args` to its end (no admin token from outside).
async fn dbaas_command(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_dbaas"))
            .args(args)
            .env_remove("DBAAS_ADMIN_TOKEN")
            .output()
            .expect("dbaas runs")
    })
    .await
    .expect("a finished command")
}

/// `dbaas backup` and `dbaas restore` given what cannot work (a file that
/// is not there, a directory, a file that is not a backup, a folder that
/// does not exist, an orchestrator that does not listen) fail with a
/// message and change nothing; no panic, and no file left behind.
#[tokio::test]
async fn the_backup_and_restore_commands_fail_cleanly() {
    let system = System::start();
    let url = system.urls.orchestrator.clone();
    let db = Http::new(&url);
    let before = fill(&db, "keep", 2).await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let junk = dir.path().join("junk.backup");
    std::fs::write(&junk, b"not a backup at all").expect("a file");
    let missing_dir = dir.path().join("no/such/dir/x.backup");
    let d = |p: &std::path::Path| p.display().to_string();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "restore".into(),
                d(&dir.path().join("absent")),
                "--orchestrator".into(),
                url.clone(),
            ],
            "absent",
        ),
        (
            vec![
                "restore".into(),
                d(dir.path()),
                "--orchestrator".into(),
                url.clone(),
            ],
            "directory",
        ),
        (
            vec![
                "restore".into(),
                d(&junk),
                "--orchestrator".into(),
                url.clone(),
            ],
            "not a dbaas backup",
        ),
        (
            vec![
                "backup".into(),
                d(&missing_dir),
                "--orchestrator".into(),
                url.clone(),
            ],
            "no/such/dir",
        ),
        (
            vec![
                "backup".into(),
                d(&dir.path().join("y.backup")),
                "--orchestrator".into(),
                common::closed_port_url(),
            ],
            "y.backup",
        ),
    ];
    for (args, what) in cases {
        let out = dbaas_command(args.clone()).await;
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(!err.trim().is_empty(), "{args:?} said nothing ({what})");
    }
    assert!(!dir.path().join("y.backup").exists());
    assert!(!dir.path().join("y.backup.partial").exists());
    assert_eq!(users(&db, "strong").await, before);
}

/// With sessions long enough that paused workers stay members: the
/// master and a slave both paused, the cluster view (polled by several
/// clients at once), /metrics, the dashboard and `dbaas status` still
/// answer, listing both paused workers.
#[tokio::test]
async fn the_operators_view_answers_with_the_master_and_a_slave_paused_in_their_sessions() {
    let Some(b) = start_processes_with_session(Duration::from_secs(30), &["--slaves", "2"]) else {
        return;
    };
    let db = Http::new(&b.urls.orchestrator);
    let url = b.urls.orchestrator.clone();
    let master = settled(&db, 2).await;
    fill(&db, "x", 5).await;
    let slave = pids(&db, "slave").await[0];
    signal(master, libc::SIGSTOP);
    let _m = Paused(master);
    signal(slave, libc::SIGSTOP);
    let _s = Paused(slave);
    let pollers: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                for _ in 0..10 {
                    let (status, body) = answers(&url, "/api/v1/cluster").await;
                    assert_eq!(status, 200, "{body}");
                }
            })
        })
        .collect();
    for p in pollers {
        p.await.expect("a poller");
    }
    let (status, body) = answers(&url, "/api/v1/cluster").await;
    assert_eq!(status, 200, "{body}");
    for pid in [master, slave] {
        assert!(body.contains(&format!("\"pid\":{pid}")), "{pid} in {body}");
    }
    // A paused worker's reads served are asked again within the second
    // and not answered: the view drops the figure rather than show one
    // it no longer has.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = answers(&url, "/api/v1/cluster").await;
        assert_eq!(status, 200, "{body}");
        let view: serde_json::Value = serde_json::from_str(&body).expect("json");
        let stale: Vec<_> = view["workers"]
            .as_array()
            .expect("workers")
            .iter()
            .filter(|w| w["pid"] == master || w["pid"] == slave)
            .filter(|w| w.get("reads_served").is_some())
            .cloned()
            .collect();
        if stale.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "figures of paused workers: {stale:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, metrics) = answers(&url, "/metrics").await;
    assert_eq!(status, 200, "{metrics}");
    for pid in [master, slave] {
        assert!(
            metrics.contains(&format!("pid=\"{pid}\"")),
            "{pid} in {metrics}"
        );
    }
    let (status, _) = answers(&url, "/").await;
    assert_eq!(status, 200);
    let out = status_command(&url, &[]).await;
    assert!(out.status.success(), "{out:?}");
    let table = String::from_utf8_lossy(&out.stdout);
    for pid in [master, slave] {
        assert!(table.contains(&pid.to_string()), "{pid} in {table}");
    }
}

/// With long sessions: both slaves paused, a restore. The master applies
/// it, but it is answered only once a replica holds it: here once the
/// paused slaves' sessions end and the workers started in their place
/// have installed it. Then the master killed and the slaves resumed: the
/// next master serves the restored rows and writes go on after them.
#[tokio::test]
async fn a_restore_with_every_slave_paused_is_answered_once_a_replacement_holds_it() {
    let Some(b) = start_processes_with_session(Duration::from_secs(30), &["--slaves", "2"]) else {
        return;
    };
    let a = System::start();
    let db_a = Http::new(&a.urls.orchestrator);
    let mut want = fill(&db_a, "new", 30).await;
    let file = db_a.get(BACKUP).await;
    let db = Http::new(&b.urls.orchestrator);
    let master = settled(&db, 2).await;
    fill(&db, "old", 20).await;
    let slaves = pids(&db, "slave").await;
    let paused: Vec<Paused> = slaves
        .iter()
        .map(|&s| {
            signal(s, libc::SIGSTOP);
            Paused(s)
        })
        .collect();
    let r = db.send("POST", RESTORE, Some(file.body)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    want.extend(fill(&db, "after", 5).await);
    signal(master, libc::SIGKILL);
    drop(paused);
    let got = users(&db, "strong").await;
    assert_eq!(
        got,
        want,
        "missing {:?}, extra {:?}",
        want.difference(&got).take(5).collect::<Vec<_>>(),
        got.difference(&want).take(5).collect::<Vec<_>>()
    );
    want.extend(fill(&db, "later", 5).await);
    every_replica_holds(&db, &want, 8, Duration::from_secs(60)).await;
}

/// Prints the end of the system's log when the test fails.
struct LogOnFailure<'a>(&'a System);

impl Drop for LogOnFailure<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.0.log();
            let lines: Vec<&str> = log.lines().collect();
            let from = lines.len().saturating_sub(80);
            eprintln!("--- the log's end ---\n{}", lines[from..].join("\n"));
        }
    }
}

/// The broker connections of process `pid`, by the names RabbitMQ gives
/// them (`ss` finds its local ports; `rabbitmqctl` the connections of
/// those ports).
fn broker_connections(pid: u64) -> Vec<String> {
    let ss = std::process::Command::new("ss")
        .args(["-tnpH", "state", "established", "( dport = :5672 )"])
        .output()
        .expect("ss runs");
    let ss = String::from_utf8_lossy(&ss.stdout);
    let ports: Vec<String> = ss
        .lines()
        .filter(|l| l.contains(&format!("pid={pid},")))
        .filter_map(|l| l.split_whitespace().nth(2))
        .filter_map(|local| local.rsplit(':').next().map(str::to_owned))
        .collect();
    suite::rabbitmqctl(&["list_connections", "-q", "pid", "peer_port"])
        .lines()
        .filter_map(|l| {
            let (name, port) = l.rsplit_once('\t')?;
            ports
                .contains(&port.trim().to_owned())
                .then(|| name.to_owned())
        })
        .collect()
}

/// A slave cut off from the broker (its connections closed) while a
/// restore and writes around it go by: it comes back through its
/// catch-up path, which must give it a snapshot past the restore rather
/// than replay the writes before it, and it holds exactly the restored
/// rows and every write after them.
#[tokio::test]
async fn a_slave_cut_off_from_the_broker_through_a_restore_catches_up_to_the_restored_state() {
    let Some(b) = start_processes_with_session(Duration::from_secs(30), &["--slaves", "2"]) else {
        return;
    };
    let _log = LogOnFailure(&b);
    let a = System::start();
    let db_a = Http::new(&a.urls.orchestrator);
    let mut want = fill(&db_a, "new", 30).await;
    let file = db_a.get(BACKUP).await;
    let db = Http::new(&b.urls.orchestrator);
    settled(&db, 2).await;
    fill(&db, "old", 20).await;
    let slave = pids(&db, "slave").await[0];
    let connections = broker_connections(slave);
    assert!(!connections.is_empty(), "the slave's connections");
    // Paused while its connections are closed, so that it misses what
    // goes by until it notices and connects again.
    signal(slave, libc::SIGSTOP);
    let paused = Paused(slave);
    for name in &connections {
        suite::rabbitmqctl(&["close_connection", name, "attack"]);
    }
    // rabbitmqctl may take longer than the server keeps an idle
    // connection: the client lets its idle connections go sooner, so the
    // same client goes on (none is taken for a request as it closes).
    fill(&db, "gone", 20).await;
    let r = db.send("POST", RESTORE, Some(file.body)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    want.extend(fill(&db, "after", 10).await);
    drop(paused);
    want.extend(fill(&db, "later", 5).await);
    every_replica_holds(&db, &want, 12, Duration::from_secs(60)).await;
    let log = b.log();
    assert!(!log.contains("panicked"), "a panic:\n{log}");
}

/// A good backup whose upload stops short (the client closes its side
/// before the length it declared): nothing is restored, whatever the
/// server could still answer, and the orchestrator goes on serving.
#[tokio::test]
async fn a_restore_whose_upload_stops_short_changes_nothing() {
    use std::io::{Read, Write};
    let a = System::start();
    let db_a = Http::new(&a.urls.orchestrator);
    fill(&db_a, "new", 30).await;
    let file = db_a.get(BACKUP).await;
    assert_eq!(file.status, 200);
    let b = System::start_with(&["--slaves", "2"]);
    let db = Http::new(&b.urls.orchestrator);
    let before = fill(&db, "keep", 5).await;
    let addr = b.urls.orchestrator.trim_start_matches("http://").to_owned();
    let body = file.body.clone();
    let answer = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(&addr).expect("a connection");
        s.set_read_timeout(Some(Duration::from_secs(60)))
            .expect("a timeout");
        let head = format!(
            "POST /api/v1/db/restore HTTP/1.1\r\nHost: dbaas\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).expect("the head");
        s.write_all(&body[..body.len() - 10])
            .expect("most of the body");
        s.shutdown(std::net::Shutdown::Write).expect("a half close");
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        String::from_utf8_lossy(&got).into_owned()
    })
    .await
    .expect("an answer");
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
        "answered {answer:?}"
    );
    assert_eq!(users(&db, "strong").await, before);
    every_replica_holds(&db, &before, 6, Duration::from_secs(30)).await;
    let log = b.log();
    assert!(!log.contains("panicked"), "a panic:\n{log}");
}

/// Good and bad restores sent at once: every bad one is refused with
/// 400, the good one is applied, and the database is exactly its backup
/// on every replica.
#[tokio::test]
async fn bad_restores_beside_a_good_one_are_refused_and_leave_it_whole() {
    let a = System::start();
    let db_a = Http::new(&a.urls.orchestrator);
    let restored = fill(&db_a, "new", 30).await;
    let good = db_a.get(BACKUP).await.body;
    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x01;
    let mut other_format = good.clone();
    other_format[9] = 7;
    let b = System::start_with(&["--slaves", "2"]);
    let db = Http::new(&b.urls.orchestrator);
    fill(&db, "old", 10).await;
    let bad = [
        flipped,
        other_format,
        good[..good.len() - 1].to_vec(),
        Vec::new(),
        well_wrapped(&varint(1 << 58)),
    ];
    let sends = bad
        .iter()
        .map(|body| db.send("POST", RESTORE, Some(body.clone())))
        .chain(std::iter::once(db.send(
            "POST",
            RESTORE,
            Some(good.clone()),
        )));
    let answers = futures::future::join_all(sends).await;
    let (last, refused) = answers.split_last().expect("answers");
    assert_eq!(last.status, 200, "{}", last.text());
    for r in refused {
        r.assert_error(400);
    }
    assert_eq!(users(&db, "strong").await, restored);
    every_replica_holds(&db, &restored, 8, Duration::from_secs(30)).await;
}

/// A restore streamed without a declared length (chunked) past the
/// largest a restore may be: refused with 413 once the limit is passed,
/// nothing changed, and the orchestrator serves on.
#[tokio::test]
async fn a_chunked_restore_past_the_limit_is_refused_and_changes_nothing() {
    use std::io::{Read, Write};
    let system = System::start();
    let db = Http::new(&system.urls.orchestrator);
    let before = fill(&db, "keep", 2).await;
    let addr = system
        .urls
        .orchestrator
        .trim_start_matches("http://")
        .to_owned();
    let answer = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(&addr).expect("a connection");
        s.set_read_timeout(Some(Duration::from_secs(120)))
            .expect("a timeout");
        s.write_all(
            b"POST /api/v1/db/restore HTTP/1.1\r\nHost: dbaas\r\n\
              Transfer-Encoding: chunked\r\n\r\n",
        )
        .expect("the head");
        let chunk = vec![b'x'; 1 << 20];
        let limit = dbaas::http::backup::MAX_RESTORE_BYTES;
        for _ in 0..(limit >> 20) + 2 {
            let mut piece = format!("{:x}\r\n", chunk.len()).into_bytes();
            piece.extend_from_slice(&chunk);
            piece.extend_from_slice(b"\r\n");
            if s.write_all(&piece).is_err() {
                break; // refused and closed under the upload
            }
        }
        let _ = s.write_all(b"0\r\n\r\n");
        let mut got = vec![0; 512];
        let n = s.read(&mut got).unwrap_or(0);
        String::from_utf8_lossy(&got[..n]).into_owned()
    })
    .await
    .expect("an answer");
    assert!(answer.starts_with("HTTP/1.1 413"), "answered {answer:?}");
    assert_eq!(users(&db, "strong").await, before);
}

/// The applied seq of the worker with `pid` in the cluster view.
async fn applied_of(db: &Http, pid: u64) -> Option<u64> {
    let r = db.get("/api/v1/cluster").await;
    r.json()["workers"]
        .as_array()?
        .iter()
        .find(|w| w["pid"] == pid)
        .and_then(|w| w["applied"].as_u64())
}

/// The worker id of `pid` in the cluster view.
async fn id_of(db: &Http, pid: u64) -> u64 {
    let r = db.get("/api/v1/cluster").await;
    r.json()["workers"]
        .as_array()
        .and_then(|ws| ws.iter().find(|w| w["pid"] == pid))
        .and_then(|w| w["id"].as_u64())
        .unwrap_or_else(|| panic!("worker {pid} in the view: {}", r.text()))
}

/// Every slave paused, a restore: the master applies it, but it is not
/// acknowledged while no replica has installed it (its sync carries no
/// rows; the master's store alone holds it). One slave resumed installs
/// it and the restore is answered; then the master is lost with its disk
/// (its store deleted, the process killed): the restore and the writes
/// acknowledged after it hold on the replica that leads.
#[tokio::test]
async fn a_restore_is_acknowledged_only_once_a_replica_holds_it_and_survives_the_masters_disk() {
    let Some(mut w) = a_restore_awaiting_a_replica(&Arc::default()).await else {
        return;
    };
    let db = w.db.clone();
    assert!(
        !w.restore.is_finished(),
        "a restore was answered while only the master's store held it"
    );
    drop(w.paused.remove(0));
    let (r, _) = (&mut w.restore).await.expect("the restore's answer");
    assert_eq!(r.status, 200, "{}", r.text());
    let mut want = w.restored.clone();
    want.extend(fill(&db, "after", 10).await);
    lose_the_disk(&w.b, &db, w.master).await;
    drop(w.paused);
    assert_eq!(users(&db, "strong").await, want);
    want.extend(fill(&db, "later", 5).await);
    every_replica_holds(&db, &want, 12, Duration::from_secs(90)).await;
    let log = w.b.log();
    assert!(!log.contains("panicked"), "a panic:\n{log}");
}

/// A cluster of worker processes with two slaves and 20 rows of its own,
/// a restore of 30 other rows sent to it while every slave is paused, and
/// the master having applied it (so it waits for a replica).
struct AwaitingRestore {
    b: System,
    db: Http,
    master: u64,
    /// The rows the restore brings.
    restored: BTreeSet<String>,
    /// Every slave, paused until dropped.
    paused: Vec<Paused>,
    /// The restore's answer, and the ticket of `clock` it came at.
    restore: tokio::task::JoinHandle<(common::Resp, u64)>,
}

/// See [`AwaitingRestore`]; None when the services are not configured.
async fn a_restore_awaiting_a_replica(clock: &Arc<AtomicU64>) -> Option<AwaitingRestore> {
    let b = start_processes(&["--slaves", "2"])?;
    let (restored, file) = a_backup_of("new", 30).await;
    let db = Http::new(&b.urls.orchestrator);
    let master = settled(&db, 2).await;
    fill(&db, "old", 20).await;
    let before = applied_of(&db, master).await.expect("the master's seq");
    let slaves = pids(&db, "slave").await;
    for &s in &slaves {
        signal(s, libc::SIGSTOP);
    }
    let paused: Vec<Paused> = slaves.iter().map(|&s| Paused(s)).collect();
    let restore = restoring(&db, file, clock);
    let deadline = Instant::now() + Duration::from_secs(30);
    while applied_of(&db, master).await.unwrap_or(0) <= before {
        assert!(
            Instant::now() < deadline,
            "the master did not apply the restore"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Some(AwaitingRestore {
        b,
        db,
        master,
        restored,
        paused,
        restore,
    })
}

/// The disk of worker `pid` lost: its store deleted while it is stopped,
/// then the process killed (it starts again over an empty store).
async fn lose_the_disk(system: &System, db: &Http, pid: u64) {
    let id = id_of(db, pid).await;
    signal(pid, libc::SIGSTOP);
    let store = dbaas::runtime::worker_dir(&system.data_dir().join("workers"), id);
    std::fs::remove_dir_all(&store).unwrap_or_else(|e| panic!("{}: {e}", store.display()));
    signal(pid, libc::SIGKILL);
}

/// Every slave paused, a restore: the master applies it and it waits for
/// a replica to install it; writers start then, and one slave is resumed.
/// No write is acknowledged before the restore is, each one acknowledged
/// is ordered after it, and all of them survive the master lost with its
/// disk (a write whose outcome is unknown is there or not, nothing else).
#[tokio::test]
async fn writes_sent_while_a_restore_awaits_a_replica_are_acknowledged_after_it_and_survive_the_masters_disk(
) {
    let clock = Arc::new(AtomicU64::new(0));
    let Some(w) = a_restore_awaiting_a_replica(&clock).await else {
        return;
    };
    let _log = LogOnFailure(&w.b);
    let (b, db, master, want, mut paused, restore) = (
        &w.b,
        w.db.clone(),
        w.master,
        w.restored.clone(),
        w.paused,
        w.restore,
    );
    assert!(
        !restore.is_finished(),
        "a restore was answered while only the master's store held it"
    );
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = writers(&db, 4, &stop, &clock);
    drop(paused.remove(0));
    let (r, restored) = restore.await.expect("the restore's answer");
    assert_eq!(r.status, 200, "{}", r.text());
    let at = r.json()["seq"].as_u64().expect("a seq");
    let mut more = fill(&db, "after", 10).await;
    stop.store(true, SeqCst);
    let sent = written(tasks).await;
    assert!(
        sent.iter().all(|(seq, _, _)| seq.is_none_or(|s| s > at)),
        "a write sent after the restore at {at} was applied, acknowledged before it: {:?}",
        sent.iter()
            .filter(|w| w.0.is_some_and(|s| s <= at))
            .take(5)
            .collect::<Vec<_>>()
    );
    more.extend(acknowledged_after(&sent, at, restored));
    lose_the_disk(b, &db, master).await;
    drop(paused);
    they_hold(&db, want, more, &sent, at).await;
    let log = b.log();
    assert!(!log.contains("panicked"), "a panic:\n{log}");
}

/// The rows of `n` users `prefix0..`, written on a system of their own,
/// and its backup.
async fn a_backup_of(prefix: &str, n: usize) -> (BTreeSet<String>, common::Resp) {
    let a = System::start();
    let db_a = Http::new(&a.urls.orchestrator);
    let rows = fill(&db_a, prefix, n).await;
    let file = db_a.get(BACKUP).await;
    assert_eq!(file.status, 200, "{}", file.text());
    (rows, file)
}

/// `file` restored on `db`, its answer with the ticket of `clock` it came
/// at.
fn restoring(
    db: &Http,
    file: common::Resp,
    clock: &Arc<AtomicU64>,
) -> tokio::task::JoinHandle<(common::Resp, u64)> {
    let (db, clock) = (db.clone(), clock.clone());
    tokio::spawn(async move {
        let r = db.send("POST", RESTORE, Some(file.body)).await;
        (r, clock.fetch_add(1, SeqCst))
    })
}

/// The writes acknowledged after a restore at `at`, answered at ticket
/// `restored`, checked: each one ordered after the restore was answered
/// after it (none is acknowledged past a restore the master's store
/// alone may hold).
fn acknowledged_after(sent: &[Written], at: u64, restored: u64) -> Vec<String> {
    let early: Vec<_> = sent
        .iter()
        .filter(|(seq, _, answered)| seq.is_some_and(|s| s > at) && *answered < restored)
        .collect();
    assert!(
        early.is_empty(),
        "{} writes ordered after the restore at {at} acknowledged before it was: {:?}",
        early.len(),
        early.iter().take(5).collect::<Vec<_>>()
    );
    sent.iter()
        .filter(|(seq, _, _)| seq.is_some_and(|s| s > at))
        .map(|(_, name, _)| name.clone())
        .collect()
}

/// A strong read holds the `restored` rows and every one of `more`
/// (written after the restore at `at`), and of the writes `sent` nothing
/// else than those whose outcome is unknown; then every replica comes to
/// the same, writes after it included.
async fn they_hold(
    db: &Http,
    restored: BTreeSet<String>,
    more: BTreeSet<String>,
    sent: &[Written],
    at: u64,
) {
    let mut want = restored;
    want.extend(more);
    let unknown: BTreeSet<String> = sent
        .iter()
        .filter(|w| w.0.is_none())
        .map(|w| w.1.clone())
        .collect();
    let got = users(db, "strong").await;
    let extra: Vec<_> = got
        .difference(&want)
        .filter(|n| !unknown.contains(*n))
        .take(5)
        .collect();
    assert!(
        want.is_subset(&got) && extra.is_empty(),
        "restored at {at}; missing {:?}, extra {extra:?}",
        want.difference(&got).take(5).collect::<Vec<_>>(),
    );
    want.extend(got.intersection(&unknown).cloned().collect::<Vec<_>>());
    want.extend(fill(db, "later", 5).await);
    every_replica_holds(db, &want, 12, Duration::from_secs(90)).await;
}

/// The virtual host of the broker connection `name` (as
/// [`broker_connections`] names it).
fn vhost_of(name: &str) -> String {
    let listed = suite::rabbitmqctl(&["list_connections", "-q", "pid", "vhost"]);
    listed
        .lines()
        .find_map(|l| {
            let (n, v) = l.rsplit_once('\t')?;
            (n.trim() == name).then(|| v.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("the connection {name} in {listed}"))
}

/// The messages ready in `queue` of `vhost`.
fn ready_in(vhost: &str, queue: &str) -> u64 {
    suite::rabbitmqctl(&[
        "list_queues",
        "-q",
        "--no-table-headers",
        "-p",
        vhost,
        "name",
        "messages",
    ])
    .lines()
    .find_map(|l| {
        let (n, m) = l.split_once('\t')?;
        (n == queue).then(|| m.trim().parse().ok())?
    })
    .unwrap_or(0)
}

/// The master and every slave paused, a restore sent: its parts wait in
/// the write queue, and the restore holds the orchestrator's gate alone.
/// Writers start (they wait at the gate); the orchestrator's broker
/// connections are closed, so that the master's answer cannot reach it
/// and it sends the restore again. Then the master resumes (it applies
/// the restore, and answers the second sending as the first) and one
/// slave: no write ordered after the restore is acknowledged before it
/// (meanwhile only the master's store holds it), and everything
/// acknowledged survives the master lost with its disk.
#[tokio::test]
async fn writes_never_pass_a_restore_sent_again_after_the_orchestrator_lost_its_broker() {
    let Some(b) = start_processes_with_session(Duration::from_secs(30), &["--slaves", "2"]) else {
        return;
    };
    let _log = LogOnFailure(&b);
    let (want, file) = a_backup_of("new", 30).await;
    let db = Http::new(&b.urls.orchestrator);
    let master = settled(&db, 2).await;
    fill(&db, "old", 20).await;
    let connections = broker_connections(u64::from(b.pid()));
    assert!(!connections.is_empty(), "the orchestrator's connections");
    let vhost = vhost_of(&connections[0]);
    let slaves = pids(&db, "slave").await;
    let mut paused: Vec<Paused> = slaves
        .iter()
        .chain([&master])
        .map(|&s| {
            signal(s, libc::SIGSTOP);
            Paused(s)
        })
        .collect();
    let clock = Arc::new(AtomicU64::new(0));
    let restore = restoring(&db, file, &clock);
    let deadline = Instant::now() + Duration::from_secs(20);
    while ready_in(&vhost, dbaas::broker::WRITE_Q) == 0 {
        assert!(Instant::now() < deadline, "the restore was not sent");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = writers(&db, 4, &stop, &clock);
    for name in &connections {
        suite::rabbitmqctl(&["close_connection", name, "attack"]);
    }
    // The master resumes once the orchestrator has seen its answers end
    // (the restore is sent again; the master's first answer is lost).
    let deadline = Instant::now() + Duration::from_secs(20);
    while !b.log().contains("restore: the answers ended") {
        assert!(
            Instant::now() < deadline,
            "the orchestrator did not see its answers end"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(paused.pop()); // the master
    drop(paused.remove(0));
    let (r, restored) = restore.await.expect("the restore's answer");
    assert_eq!(r.status, 200, "{}", r.text());
    let at = r.json()["seq"].as_u64().expect("a seq");
    let mut more = fill(&db, "after", 10).await;
    stop.store(true, SeqCst);
    let sent = written(tasks).await;
    more.extend(acknowledged_after(&sent, at, restored));
    lose_the_disk(&b, &db, master).await;
    drop(paused);
    they_hold(&db, want, more, &sent, at).await;
    let log = b.log();
    assert!(!log.contains("panicked"), "a panic:\n{log}");
}

/// Every slave paused through a restore; one resumed installs it, and
/// the restore is acknowledged, then `writes` writes after it. Then that
/// slave is killed once it has applied them all (it starts again over its
/// store), the master is lost with its disk and the other slave (which
/// never installed the restore) resumed: the store that leads holds the
/// restore and every write after it.
async fn the_installer_killed_and_the_masters_disk_lost(writes: usize) {
    let Some(w) = a_restore_awaiting_a_replica(&Arc::default()).await else {
        return;
    };
    let _log = LogOnFailure(&w.b);
    let (b, db, master, restored, mut paused, restore) = (
        &w.b,
        w.db.clone(),
        w.master,
        w.restored.clone(),
        w.paused,
        w.restore,
    );
    let installing = paused.remove(0).0;
    let (r, _) = restore.await.expect("the restore's answer");
    assert_eq!(r.status, 200, "{}", r.text());
    let at = r.json()["seq"].as_u64().expect("a seq");
    let after = fill(&db, "after", writes).await;
    let top = applied_of(&db, master).await.expect("the master's seq");
    let deadline = Instant::now() + Duration::from_secs(30);
    while applied_of(&db, installing).await.unwrap_or(0) < top {
        assert!(Instant::now() < deadline, "the slave did not apply {top}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    signal(installing, libc::SIGKILL);
    lose_the_disk(b, &db, master).await;
    drop(paused);
    they_hold(&db, restored, after, &[], at).await;
    let log = b.log();
    assert!(!log.contains("panicked"), "a panic:\n{log}");
}

/// Failed at times: while the installer started again, the other slave,
/// newer than the lost master's empty store, was elected for its store
/// (nobody caught up) without waiting for the installer's, and led
/// without the acknowledged restore. The election now waits, once an
/// heir's store comes back older than a replica's, for every worker lost
/// meanwhile (`scenario_the_installer_killed_as_the_master_loses_its_disk_is_heard_first`).
#[tokio::test]
async fn the_slave_that_installed_a_restore_killed_right_after_it_and_the_masters_disk_lost_keep_it(
) {
    the_installer_killed_and_the_masters_disk_lost(0).await;
}

/// Fails: a slave acknowledges a sync to the broker before its store is
/// flushed, so the last writes it applied are gone when it is killed;
/// with the master's disk lost as well, no store holds them. (Losing a
/// disk is beyond the promises, which keep the stores of killed workers;
/// only a restore's install is flushed.)
#[tokio::test]
#[ignore = "an acknowledged write is lost: the slave's applied writes are not flushed before their syncs are acknowledged"]
async fn writes_after_a_restore_survive_its_installer_killed_and_the_masters_disk_lost() {
    the_installer_killed_and_the_masters_disk_lost(10).await;
}
