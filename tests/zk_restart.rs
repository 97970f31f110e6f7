//! ZooKeeper itself stopped and started again under load, with real worker
//! processes and RabbitMQ: reads go on, writes wait (the master's lease
//! runs out: no two masters) and then go on, nothing acknowledged is lost,
//! and nobody is elected needlessly. A test binary of its own: it stops
//! the ZooKeeper every other test uses.

mod suite;

use suite::{count_users, user};

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dbaas::model::{Consistency, ReadResult};
use suite::{eventually, master_id, process_cluster, running, stores};

const DEADLINE: Duration = Duration::from_secs(60);

fn services(what: &str) {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = std::process::Command::new(format!("{root}/scripts/services"))
        .arg(what)
        .output()
        .expect("scripts/services runs");
    assert!(
        out.status.success(),
        "services {what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[actix::test]
async fn zookeeper_restarted_under_load_loses_nothing_and_elects_no_one() {
    let dir = tempfile::tempdir().unwrap();
    let Some((c, _)) = process_cluster(dir.path(), 2).await else {
        return;
    };
    let (master, epoch) = (master_id(&c).await, c.epoch().await);
    let acked = Arc::new(AtomicU64::new(0));
    let reads = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (orch, acked, stop) = (c.orchestrator.clone(), acked.clone(), stop.clone());
            actix::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    orch.write(user(&format!("z{w}-{i}")))
                        .await
                        .expect("every write acknowledged");
                    acked.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (orch, reads, stop) = (c.orchestrator.clone(), reads.clone(), stop.clone());
            actix::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    orch.read(count_users(), Consistency::Eventual)
                        .await
                        .expect("no read fails");
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let progress = |counter: Arc<AtomicU64>, more: u64| {
        let target = counter.load(Ordering::Relaxed) + more;
        async move {
            eventually("progress", DEADLINE, || {
                let counter = counter.clone();
                async move { counter.load(Ordering::Relaxed) >= target }
            })
            .await
        }
    };
    progress(acked.clone(), 50).await;
    services("zk-stop");
    // Reads are served while ZooKeeper is away.
    progress(reads.clone(), 50).await;
    services("zk-start");
    progress(acked.clone(), 100).await;
    stop.store(true, Ordering::Relaxed);
    for t in writers.into_iter().chain(readers) {
        t.await.expect("a client failed");
    }
    assert_eq!(master_id(&c).await, master, "no needless election");
    assert_eq!(c.epoch().await, epoch);
    let count = c
        .orchestrator
        .read(count_users(), Consistency::Strong)
        .await
        .unwrap();
    assert_eq!(
        count.result,
        ReadResult::Count(acked.load(Ordering::Relaxed))
    );
    suite::all_applied(&c, count.seq, DEADLINE).await;
    let ids = running(&c);
    c.stop().await;
    let all = stores(dir.path(), &ids);
    assert!(all.iter().all(|s| *s == all[0]), "workers differ: {all:?}");
}
