//! Measures failover with worker processes over RabbitMQ and ZooKeeper:
//! under a steady stream of writes, the master is killed (a death the
//! system sees: the crash API's SIGKILL) or paused with SIGSTOP (a death
//! only the session's expiry reveals), again and again. For each round it
//! reports the time from the fault to the first acknowledged write issued
//! after it (only the new master can acknowledge that one) and to the
//! replacement slave serving reads with every write there was at the
//! fault, and counts client-visible errors. A paused master is taken for
//! hung after `HUNG_AFTER` (5 s) and started again over its own store: that
//! is its replacement.
//!
//! `scripts/bench-failover` runs it (it starts the services); by hand:
//! `cargo run --release --example failover -- AMQP_URL ZK_HOSTS [ROUNDS] [kill|stop|both]`

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dbaas::actors::watcher::{CrashMaster, GetCluster};
use dbaas::broker::amqp::AmqpBroker;
use dbaas::broker::Broker;
use dbaas::model::{Row, Value, WriteOp};
use dbaas::runtime::{CoordTarget, ProcessRuntime};
use dbaas::system::{Cluster, Coordination};

const WRITERS: u64 = 8;
const SESSION: Duration = Duration::from_millis(600);

/// When each write was issued and acknowledged, and errors.
#[derive(Default)]
struct Log {
    acks: Mutex<Vec<(Instant, Instant)>>,
    errors: AtomicU64,
}

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

/// The first acknowledgement of a write issued at or after `t0`.
fn first_ack_after(log: &Log, t0: Instant) -> Option<Duration> {
    let acks = log.acks.lock().unwrap();
    acks.iter()
        .filter(|(issued, _)| *issued >= t0)
        .map(|(_, acked)| *acked - t0)
        .min()
}

async fn wait_until<F, Fut>(within: Duration, mut f: F) -> Option<Instant>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if f().await {
            return Some(Instant::now());
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// One round: the fault, then the new master's first acknowledgement and
/// the replacement caught up.
async fn round(c: &Cluster, log: &Log, pause: bool) -> (Option<Duration>, Option<Duration>) {
    let before = c.watcher.send(GetCluster).await.unwrap();
    let (old, epoch) = (before.master.unwrap(), before.epoch);
    let leader = before.workers.iter().find(|w| w.pid == old);
    let (old_id, head) = leader.map_or((0, 0), |w| (w.id, w.applied));
    let t0 = Instant::now();
    tracing::info!(pid = old, pause, "fault");
    if pause {
        libc_signal(old, 19); // SIGSTOP
    } else {
        c.watcher.send(CrashMaster).await.unwrap().unwrap();
    }
    let acked = wait_until(Duration::from_secs(30), || async {
        first_ack_after(log, t0).is_some()
    })
    .await
    .and_then(|_| first_ack_after(log, t0));
    // The replacement (the dead worker again, over its own store, or a
    // new one) serves reads and holds everything there was at the fault.
    let known: Vec<u64> = before.workers.iter().map(|w| w.pid).collect();
    let caught_up = wait_until(Duration::from_secs(60), || async {
        let v = c.watcher.send(GetCluster).await.unwrap();
        v.epoch > epoch
            && v.workers.iter().any(|w| {
                (w.id == old_id || !known.contains(&w.pid))
                    && w.pid != old
                    && w.state == "serving"
                    && w.applied >= head
            })
    })
    .await
    .map(|t| t - t0);
    if pause && c.runtime.list().iter().any(|w| w.pid == old) {
        // Still paused (not yet taken for hung): it comes back and follows.
        libc_signal(old, 18); // SIGCONT
    }
    (acked, caught_up)
}

fn libc_signal(pid: u64, sig: i32) {
    let _ = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

fn report(name: &str, rounds: &[(Option<Duration>, Option<Duration>)]) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let acked: Vec<Duration> = rounds.iter().filter_map(|r| r.0).collect();
    let caught: Vec<Duration> = rounds.iter().filter_map(|r| r.1).collect();
    println!("| {name} | rounds | p50 ms | p99 ms | max ms |");
    println!("|---|---:|---:|---:|---:|");
    for (what, v) in [
        ("first acknowledged write", acked),
        ("replacement caught up", caught),
    ] {
        if v.is_empty() {
            println!("| {what} | 0 | - | - | - |");
            continue;
        }
        let max = v.iter().copied().max().unwrap_or_default();
        println!(
            "| {what} | {} | {:.0} | {:.0} | {:.0} |",
            v.len(),
            ms(percentile(v.clone(), 0.5)),
            ms(percentile(v, 0.99)),
            ms(max)
        );
    }
    for (i, r) in rounds.iter().enumerate() {
        eprintln!("{name} round {}: {:?}", i + 1, r);
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().collect();
    let (url, zk) = match (args.get(1), args.get(2)) {
        (Some(u), Some(z)) => (u.clone(), z.clone()),
        _ => return Err("usage: failover AMQP_URL ZK_HOSTS [ROUNDS] [kill|stop|both]".into()),
    };
    let rounds: usize = args.get(3).and_then(|r| r.parse().ok()).unwrap_or(20);
    let mode = args.get(4).cloned().unwrap_or_else(|| "both".into());
    let exe = std::env::current_exe()?
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("dbaas"))
        .ok_or("no binary beside the example")?;
    let dir = std::env::temp_dir().join(format!("dbaas-failover-{}", std::process::id()));
    let data = dir.clone();
    actix::System::new().block_on(async move {
        let dir = data;
        let zk = CoordTarget {
            hosts: zk,
            root: format!("/bench{}", std::process::id()),
            session_timeout: SESSION,
        };
        let broker: Arc<dyn Broker> = Arc::new(AmqpBroker::connect(&url).await?);
        let workers = dbaas::system::workers_dir(&dir)?;
        let rt = Arc::new(ProcessRuntime::new(&exe, &url, &workers, zk.clone()));
        let c = Cluster::start_with(&dir, 2, broker, rt, Coordination::ZooKeeper(zk)).await?;
        let log = Arc::new(Log::default());
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (orch, log, stop) = (c.orchestrator.clone(), log.clone(), stop.clone());
                actix::spawn(async move {
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let issued = Instant::now();
                        match orch.write(user(&format!("f{w}-{i}"))).await {
                            Ok(_) => log.acks.lock().unwrap().push((issued, Instant::now())),
                            Err(_) => {
                                log.errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        i += 1;
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(1)).await;
        for (name, pause) in [("crash/master (SIGKILL)", false), ("SIGSTOP", true)] {
            if (pause && mode == "kill") || (!pause && mode == "stop") {
                continue;
            }
            let mut results = Vec::new();
            for _ in 0..rounds {
                results.push(round(&c, &log, pause).await);
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            report(name, &results);
        }
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            let _ = w.await;
        }
        let acked = log.acks.lock().unwrap().len();
        println!(
            "\nwrites acknowledged: {acked}; client-visible errors: {}",
            log.errors.load(Ordering::Relaxed)
        );
        c.stop().await;
        Ok::<_, dbaas::error::Error>(())
    })?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
