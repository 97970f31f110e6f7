//! Measures the cluster with its workers as Docker Swarm services (the
//! engine a swarm manager; a single-node swarm will do): a service's start
//! to its worker listening, and ROUNDS times `docker kill` of the master's
//! task container under writes to the first acknowledged write issued
//! after it.
//!
//! `scripts/bench-swarm` runs it (it builds the static binary, starts the
//! services, makes the engine a swarm manager if need be); by hand, with a
//! static `dbaas` beside it: `swarm_bench AMQP_URL ZK_HOSTS [ROUNDS]`

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::query_parameters::{KillContainerOptionsBuilder, ListContainersOptionsBuilder};
use dbaas::actors::watcher::GetCluster;
use dbaas::broker::amqp::AmqpBroker;
use dbaas::broker::Broker;
use dbaas::model::{Row, Value, WriteOp};
use dbaas::runtime::{docker, CoordTarget, SwarmRuntime, WorkerSpec};
use dbaas::system::{Cluster, Coordination};

const IMAGE: &str = "dbaas:bench";
const WRITERS: u64 = 4;

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

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

async fn wait_until<F, Fut>(within: Duration, mut f: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t0 = Instant::now();
    while t0.elapsed() < within {
        if f().await {
            return Some(t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

/// `docker kill` of the task container of the worker whose pid is `pid`.
async fn kill_container(d: &bollard::Docker, c: &Cluster, pid: u64) {
    let id = c.runtime.list().iter().find(|w| w.pid == pid).unwrap().id;
    let filters = HashMap::from([(
        "label".to_owned(),
        vec![
            format!("dbaas.cluster={:016x}", c.cluster),
            format!("dbaas.worker={id}"),
        ],
    )]);
    let options = ListContainersOptionsBuilder::default()
        .filters(&filters)
        .build();
    let running = d.list_containers(Some(options)).await.unwrap();
    let container = running[0].id.clone().unwrap();
    let kill = KillContainerOptionsBuilder::default()
        .signal("SIGKILL")
        .build();
    d.kill_container(&container, Some(kill)).await.unwrap();
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().collect();
    let (url, zk) = match (args.get(1), args.get(2)) {
        (Some(u), Some(z)) => (u.clone(), z.clone()),
        _ => return Err("usage: swarm_bench AMQP_URL ZK_HOSTS [ROUNDS]".into()),
    };
    let rounds: usize = args.get(3).and_then(|r| r.parse().ok()).unwrap_or(10);
    let exe = std::env::current_exe()?
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("dbaas"))
        .ok_or("no binary beside the example")?;
    let dir = std::env::temp_dir().join(format!("dbaas-swarm-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let data = dir.clone();
    actix::System::new().block_on(async move {
        let dir = data;
        let d = docker::connect().await?;
        docker::ensure_image(&d, IMAGE, &exe).await?;
        let zk = CoordTarget {
            hosts: zk,
            root: format!("/bench{}", std::process::id()),
            session_timeout: Duration::from_millis(600),
        };
        let broker: Arc<dyn Broker> = Arc::new(AmqpBroker::connect(&url).await?);
        let workers = dbaas::system::workers_dir(&dir)?;
        let rt = SwarmRuntime::new(d.clone(), IMAGE, &url, &workers, zk.clone()).await?;
        let c = Cluster::start_with(&dir, 2, broker, Arc::new(rt), Coordination::ZooKeeper(zk))
            .await?;
        // A service's start: created, its task running, listening.
        let mut starts = Vec::new();
        for id in 100..103 {
            let t = Instant::now();
            c.runtime.start(WorkerSpec { id, cluster: c.cluster }).await?;
            starts.push(t.elapsed());
            c.runtime.retire(id).await?;
        }
        println!("| | ms |\n|---|---:|");
        println!(
            "| service created to its worker listening (3 runs, median) | {:.0} |",
            ms(percentile(starts, 0.5))
        );

        // ROUNDS times `docker kill` of the master's container under writes.
        let acks: Arc<Mutex<Vec<(Instant, Instant)>>> = Arc::default();
        let errors = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (orch, acks, errors, stop) =
                    (c.orchestrator.clone(), acks.clone(), errors.clone(), stop.clone());
                actix::spawn(async move {
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let issued = Instant::now();
                        match orch.write(user(&format!("k{w}-{i}"))).await {
                            Ok(_) => acks.lock().unwrap().push((issued, Instant::now())),
                            Err(_) => {
                                errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        i += 1;
                    }
                })
            })
            .collect();
        let (mut firsts, mut longest) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            let v = c.watcher.send(GetCluster).await.unwrap();
            let (old, epoch) = (v.master.unwrap(), v.epoch);
            // From the kill asked, counting only writes issued once the
            // engine has signalled the container (before that, the old
            // master may still answer).
            let t0 = Instant::now();
            kill_container(&d, &c, old).await;
            let killed = Instant::now();
            let first = || {
                acks.lock()
                    .unwrap()
                    .iter()
                    .filter(|(issued, _)| *issued >= killed)
                    .map(|(_, acked)| *acked - t0)
                    .min()
            };
            wait_until(Duration::from_secs(30), || async { first().is_some() }).await;
            let f = first();
            // The longest a write in flight at the kill waited.
            let waited = acks
                .lock()
                .unwrap()
                .iter()
                .filter(|(issued, acked)| *issued <= killed && *acked >= t0)
                .map(|(issued, acked)| *acked - *issued)
                .max();
            eprintln!("master kill round {}: first ack {f:?}, longest write {waited:?}", round + 1);
            firsts.extend(f);
            longest.extend(waited);
            // The next round once the cluster is whole again.
            wait_until(Duration::from_secs(120), || async {
                let v = c.watcher.send(GetCluster).await.unwrap();
                v.epoch > epoch
                    && v.workers.len() == 3
                    && v.workers
                        .iter()
                        .all(|w| w.state == "serving" || w.state == "leading")
            })
            .await;
        }
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            let _ = w.await;
        }
        if !firsts.is_empty() {
            println!(
                "\n| docker kill of the master's task container ({} rounds, {WRITERS} writers) | p50 ms | p99 ms | max ms |\n|---|---:|---:|---:|",
                firsts.len()
            );
            for (what, v) in [
                ("first acknowledged write issued after the kill", firsts),
                ("longest wait of a write in flight at the kill", longest),
            ] {
                let max = v.iter().copied().max().unwrap_or_default();
                println!(
                    "| {what} | {:.0} | {:.0} | {:.0} |",
                    ms(percentile(v.clone(), 0.5)),
                    ms(percentile(v, 0.99)),
                    ms(max)
                );
            }
        }
        println!(
            "\nwrites acknowledged during the kills: {}; client-visible errors: {}",
            acks.lock().unwrap().len(),
            errors.load(Ordering::Relaxed)
        );
        c.stop().await;
        Ok::<_, dbaas::error::Error>(())
    })?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
