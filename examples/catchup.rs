//! How fast a slave serves again: a brand new one over a database of
//! `ROWS` rows (a snapshot), and one stopped while `MISSED` writes were
//! made and started again over its store (a catch-up from the master's
//! log), and a brand new one while the log still holds every write
//! (a snapshot all the same past `BLANK_CATCH_UP_MAX`). Embedded, over the in-process broker; then where a snapshot's
//! time goes (taking it, encoding its parts, decoding them, installing)
//! and what a catch-up's parts cost, on the master's store.
//!
//! `cargo run --release --example catchup -- [ROWS] [MISSED]` (100,000
//! and 10,000 by default)

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dbaas::broker::inproc::InProcBroker;
use dbaas::core::catchup::{self, SyncLog};
use dbaas::model::wire::{self, Entry, Reply, SnapshotParts, Stamp, SyncMessage};
use dbaas::model::{Lineage, Row, Schema, Value, WriteOp};
use dbaas::runtime::WorkerSpec;
use dbaas::store::Store;
use dbaas::system::Cluster;

const NEW: u64 = 9;
const YOUNG: u64 = 8;
const WRITERS: usize = 64;

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

fn arg(i: usize, default: u64) -> u64 {
    std::env::args()
        .nth(i)
        .and_then(|v| v.replace(['_', ','], "").parse().ok())
        .unwrap_or(default)
}

/// Polls worker `id` until it serves at `seq` or later; answers how long
/// that took from `t0`.
async fn serving(c: &Cluster, id: u64, seq: u64, t0: Instant) -> Duration {
    loop {
        if c.runtime
            .status(id)
            .await
            .is_ok_and(|s| s.ready && s.applied_seq >= seq)
        {
            return t0.elapsed();
        }
        if t0.elapsed() > Duration::from_secs(120) {
            panic!("worker {id} did not serve at seq {seq} within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn load(c: &Cluster, rows: u64) -> u64 {
    let mut head = 0;
    for chunk in 0..rows.div_ceil(1000) {
        let ops = (chunk * 1000..((chunk + 1) * 1000).min(rows))
            .map(|i| user(&format!("row{i:07}")))
            .collect();
        head = c
            .orchestrator
            .write(WriteOp::Batch { ops })
            .await
            .unwrap()
            .seq;
    }
    head
}

/// `n` single writes from [`WRITERS`] clients; the last seq.
async fn writes(c: &Cluster, n: u64) -> u64 {
    let tasks: Vec<_> = (0..WRITERS as u64)
        .map(|w| {
            let orch = c.orchestrator.clone();
            actix::spawn(async move {
                let mut last = 0;
                for i in (w..n).step_by(WRITERS) {
                    last = orch.write(user(&format!("late{i:07}"))).await.unwrap().seq;
                }
                last
            })
        })
        .collect();
    let mut head = 0;
    for t in tasks {
        head = head.max(t.await.unwrap());
    }
    head
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let (rows, missed) = (arg(1, 100_000), arg(2, 10_000));
    let dir = std::env::temp_dir().join(format!("dbaas-catchup-{}", std::process::id()));
    actix::System::new().block_on(async {
        let c = Cluster::start(&dir, 1, Arc::new(InProcBroker::new()))
            .await
            .unwrap();
        let t = Instant::now();
        let head = load(&c, rows).await;
        println!("loaded {rows} rows in {} (seq {head})", ms(t.elapsed()));
        // Every write is still in the master's log, but a brand new slave
        // is sent a snapshot past `BLANK_CATCH_UP_MAX` (a catch-up
        // below it).
        let young = WorkerSpec {
            id: YOUNG,
            cluster: c.cluster,
        };
        let t0 = Instant::now();
        c.runtime.start(young).await.unwrap();
        let took = serving(&c, YOUNG, head, t0).await;
        println!(
            "brand new slave, {rows} rows, every write in the master's log: serving in {}",
            ms(took)
        );
        c.runtime.stop(YOUNG).await.unwrap();
        // A master's log starts with its epoch: at this size it still
        // holds every write, so a brand new slave would be caught up from
        // it. Started again, the master begins with an empty log: a new
        // slave then takes a snapshot, as on any cluster older than its log.
        c.stop().await;
        drop(c);
        let c = Cluster::start(&dir, 1, Arc::new(InProcBroker::new()))
            .await
            .unwrap();
        let spec = WorkerSpec {
            id: NEW,
            cluster: c.cluster,
        };
        let t0 = Instant::now();
        c.runtime.start(spec).await.unwrap();
        let new = serving(&c, NEW, head, t0).await;
        println!(
            "brand new slave, {rows} rows, snapshot: serving in {}",
            ms(new)
        );

        c.runtime.stop(NEW).await.unwrap();
        let t = Instant::now();
        let head = writes(&c, missed).await;
        let rate = missed as f64 / t.elapsed().as_secs_f64();
        println!("{missed} writes while it was stopped ({rate:.0}/s, seq {head})");
        let restarted_by_watcher = c.runtime.list().iter().any(|w| w.id == NEW);
        let t0 = Instant::now();
        if !restarted_by_watcher {
            c.runtime.start(spec).await.unwrap();
        }
        let again = serving(&c, NEW, head, t0).await;
        println!(
            "restarted slave, {missed} writes missed: serving in {}{}",
            ms(again),
            if restarted_by_watcher {
                " (the watcher had started it)"
            } else {
                ""
            }
        );
        c.stop().await;
    });
    breakdown(&dir, missed);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Where a snapshot's and a catch-up's time goes, on worker `id`'s store.
fn breakdown(dir: &Path, missed: u64) {
    let schema = Arc::new(Schema::rideshare());
    let path = dbaas::runtime::worker_dir(&dir.join("workers"), NEW);
    let store = Store::open(&path, schema.clone()).unwrap();
    let stamp = Stamp::default();
    let t = Instant::now();
    let snap = store.snapshot().unwrap();
    let taken = t.elapsed();
    let (seq, n) = (snap.seq, snap.entries.len());
    let t = Instant::now();
    let parts: Vec<Vec<u8>> = snap
        .into_parts()
        .into_iter()
        .map(|p| wire::encode(stamp, &Reply::SnapshotPart(p)))
        .collect();
    let encoded = t.elapsed();
    let bytes: usize = parts.iter().map(Vec::len).sum();
    let t = Instant::now();
    let mut got = SnapshotParts::default();
    let mut whole = None;
    for p in &parts {
        if let (_, Reply::SnapshotPart(part)) = wire::decode::<Reply>(p).unwrap() {
            whole = got.add(part).unwrap().or(whole);
        }
    }
    let decoded = t.elapsed();
    let fresh = std::env::temp_dir().join(format!("dbaas-catchup-fresh-{}", std::process::id()));
    let whole = whole.unwrap();
    let other = Store::open(&fresh, schema.clone()).unwrap();
    let t = Instant::now();
    other.install(&whole).unwrap();
    let installed = t.elapsed();
    drop(other);
    let _ = std::fs::remove_dir_all(&fresh);
    // Early, as a new slave installs: serving from memory at once, on
    // disk (flushed) later.
    let other = Store::open(&fresh, schema).unwrap();
    let t = Instant::now();
    other.install_early(whole).unwrap();
    let early = t.elapsed();
    other.flush().unwrap();
    let written = t.elapsed();
    drop(other);
    let _ = std::fs::remove_dir_all(&fresh);
    println!(
        "snapshot at seq {seq}: {n} entries, {} parts, {:.1} MB; taken {}, parts encoded {}, decoded {}, \
         installed {}; installed early: serving in {}, on disk in {}",
        parts.len(),
        bytes as f64 / 1e6,
        ms(taken),
        ms(encoded),
        ms(decoded),
        ms(installed),
        ms(early),
        ms(written)
    );
    // A catch-up of `missed` single inserts, as the master's log holds them.
    let mut log = SyncLog::new(1, catchup::LIMITS);
    for seq in 1..=missed {
        log.push(SyncMessage {
            seq,
            epoch: 1,
            request_id: u128::from(seq),
            entry: Entry::Write(user(&format!("late{seq:07}"))),
        });
    }
    let mut lineage = Lineage::default();
    lineage.begin(1, 0);
    let t = Instant::now();
    let parts: Vec<Vec<u8>> = catchup::parts(&log, &lineage, 1, missed)
        .into_iter()
        .map(|p| wire::encode(stamp, &Reply::CatchUpPart(p)))
        .collect();
    let encoded = t.elapsed();
    let bytes: usize = parts.iter().map(Vec::len).sum();
    let t = Instant::now();
    for p in &parts {
        wire::decode::<Reply>(p).unwrap();
    }
    println!(
        "catch-up of {missed} writes: {} parts, {:.1} MB, log {:.1} MB; parts made and encoded {}, decoded {}",
        parts.len(),
        bytes as f64 / 1e6,
        log.bytes() as f64 / 1e6,
        ms(encoded),
        ms(t.elapsed())
    );
}
