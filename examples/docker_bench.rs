//! Measures the cluster with its workers in Docker containers: the image
//! (size, build time), a container's start, and with ROWS rows in the
//! database: `docker kill` of a slave to its replacement serving reads, a
//! scale-up decision to the new slaves serving reads, and ROUNDS times
//! `docker kill` of the master under writes to the first acknowledged
//! write issued after it.
//!
//! `scripts/bench-docker` runs it (it builds the static binary, starts the
//! services); by hand, with a static `dbaas` beside it:
//! `docker_bench AMQP_URL ZK_HOSTS [ROUNDS] [ROWS]`

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::query_parameters::KillContainerOptionsBuilder;
use dbaas::actors::scaler::{ScaleNow, ScalePolicy};
use dbaas::actors::watcher::GetCluster;
use dbaas::broker::amqp::AmqpBroker;
use dbaas::broker::Broker;
use dbaas::model::{Consistency, ReadOp, Row, Value, WriteOp};
use dbaas::runtime::{docker, CoordTarget, DockerRuntime, WorkerSpec};
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

/// The highest applied seq in the cluster view.
async fn head(c: &Cluster) -> u64 {
    let v = c.watcher.send(GetCluster).await.unwrap();
    v.workers.iter().map(|w| w.applied).max().unwrap_or(0)
}

/// Whether `n` slaves serve reads holding at least `seq`, as each worker
/// says of itself (the watcher's view follows progress about once a
/// second, too coarse for these times).
async fn serving(c: &Cluster, n: usize, seq: u64) -> bool {
    let mut serving = 0;
    for w in c.runtime.list() {
        if c.runtime
            .status(w.id)
            .await
            .is_ok_and(|s| !s.master && s.ready && s.applied_seq >= seq)
        {
            serving += 1;
        }
    }
    serving >= n
}

async fn kill_container(d: &bollard::Docker, c: &Cluster, pid: u64) {
    let id = c.runtime.list().iter().find(|w| w.pid == pid).unwrap().id;
    let name = DockerRuntime::container_name(c.cluster, id);
    let kill = KillContainerOptionsBuilder::default()
        .signal("SIGKILL")
        .build();
    d.kill_container(&name, Some(kill)).await.unwrap();
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().collect();
    let (url, zk) = match (args.get(1), args.get(2)) {
        (Some(u), Some(z)) => (u.clone(), z.clone()),
        _ => return Err("usage: docker_bench AMQP_URL ZK_HOSTS [ROUNDS] [ROWS]".into()),
    };
    let rounds: usize = args.get(3).and_then(|r| r.parse().ok()).unwrap_or(10);
    let rows: u64 = args.get(4).and_then(|r| r.parse().ok()).unwrap_or(100_000);
    let exe = std::env::current_exe()?
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("dbaas"))
        .ok_or("no binary beside the example")?;
    let dir = std::env::temp_dir().join(format!("dbaas-docker-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let data = dir.clone();
    actix::System::new().block_on(async move {
        let dir = data;
        let d = docker::connect().await?;
        let t = Instant::now();
        docker::ensure_image(&d, IMAGE, &exe).await?;
        let built = t.elapsed();
        let size = d.inspect_image(IMAGE).await.ok().and_then(|i| i.size);
        println!("| image | |\n|---|---:|");
        println!(
            "| size | {:.1} MB |",
            size.unwrap_or(0) as f64 / 1_000_000.0
        );
        println!("| build (or found current) | {:.1} s |", built.as_secs_f64());
        let zk = CoordTarget {
            hosts: zk,
            root: format!("/bench{}", std::process::id()),
            session_timeout: Duration::from_millis(600),
        };
        let broker: Arc<dyn Broker> = Arc::new(AmqpBroker::connect(&url).await?);
        let workers = dbaas::system::workers_dir(&dir)?;
        let rt = DockerRuntime::new(d.clone(), IMAGE, &url, &workers, zk.clone())?;
        let mut c =
            Cluster::start_with(&dir, 1, broker, Arc::new(rt), Coordination::ZooKeeper(zk))
                .await?;
        // A container's start: created, started, listening (new store).
        let mut starts = Vec::new();
        for id in 100..103 {
            let t = Instant::now();
            c.runtime.start(WorkerSpec { id, cluster: c.cluster }).await?;
            starts.push(t.elapsed());
            c.runtime.retire(id).await?;
        }
        println!(
            "| container start to listening (3 runs, median) | {:.0} ms |",
            ms(percentile(starts, 0.5))
        );
        // ROWS rows, in batches of 500.
        let t = Instant::now();
        let batches: Vec<_> = (0..rows.div_ceil(500))
            .map(|b| {
                let ops = (b * 500..((b + 1) * 500).min(rows))
                    .map(|i| user(&format!("r{i}")))
                    .collect();
                WriteOp::Batch { ops }
            })
            .collect();
        let queue = Arc::new(Mutex::new(batches));
        let loaders: Vec<_> = (0..4)
            .map(|_| {
                let (orch, queue) = (c.orchestrator.clone(), queue.clone());
                actix::spawn(async move {
                    loop {
                        let Some(op) = queue.lock().unwrap().pop() else { return };
                        orch.write(op).await.expect("a batch is written");
                    }
                })
            })
            .collect();
        for l in loaders {
            let _ = l.await;
        }
        eprintln!("{rows} rows loaded in {:.1} s", t.elapsed().as_secs_f64());
        let seq = head(&c).await;
        wait_until(Duration::from_secs(120), || serving(&c, 1, seq)).await;

        println!("\n| with {rows} rows | ms |\n|---|---:|");
        // `docker kill` of the slave: its replacement (the same worker over
        // its own store) serving reads.
        let v = c.watcher.send(GetCluster).await.unwrap();
        let slave = v.workers.iter().find(|w| Some(w.pid) != v.master).unwrap().pid;
        let t = Instant::now();
        kill_container(&d, &c, slave).await;
        let replaced = wait_until(Duration::from_secs(120), || async {
            let v = c.watcher.send(GetCluster).await.unwrap();
            v.workers
                .iter()
                .any(|w| w.pid != slave && Some(w.pid) != v.master && w.state == "serving" && w.applied >= seq)
        })
        .await;
        let replaced = replaced.map(|_| t.elapsed());
        println!(
            "| docker kill of a slave to its replacement serving reads | {} |",
            replaced.map_or("-".into(), |d| format!("{:.0}", ms(d)))
        );
        // A scale-up decision (45 reads: 3 slaves) to both new slaves
        // (fresh stores: a snapshot of every row) serving reads.
        c.start_scaler(ScalePolicy {
            window: Duration::from_secs(100_000),
            ..ScalePolicy::default()
        });
        for i in 0..45 {
            let op = ReadOp::Get {
                table: "users".into(),
                key: Value::from(format!("r{i}")),
                columns: None,
            };
            c.orchestrator.read(op, Consistency::Eventual).await?;
        }
        let scaler = c.scaler.clone().unwrap();
        let t = Instant::now();
        let decision = scaler.send(ScaleNow).await.unwrap()?;
        let started = t.elapsed();
        let up = wait_until(Duration::from_secs(300), || serving(&c, 3, seq)).await;
        println!(
            "| scale-up decision ({} to {} slaves) to the containers started | {:.0} |",
            decision.from,
            decision.to,
            ms(started)
        );
        println!(
            "| scale-up decision to every new slave serving reads | {} |",
            up.map_or("-".into(), |d| format!("{:.0}", ms(d + started)))
        );

        // ROUNDS times `docker kill` of the master under writes.
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
        let mut firsts = Vec::new();
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
            eprintln!("master kill round {}: first ack {f:?}", round + 1);
            firsts.extend(f);
            // The next round once the cluster is whole again.
            wait_until(Duration::from_secs(120), || async {
                let v = c.watcher.send(GetCluster).await.unwrap();
                v.epoch > epoch
                    && v.workers.len() == 4
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
                "\n| docker kill of the master ({} rounds, 4 writers) | p50 ms | p99 ms | max ms |\n|---|---:|---:|---:|",
                firsts.len()
            );
            let max = firsts.iter().copied().max().unwrap_or_default();
            println!(
                "| first acknowledged write | {:.0} | {:.0} | {:.0} |",
                ms(percentile(firsts.clone(), 0.5)),
                ms(percentile(firsts, 0.99)),
                ms(max)
            );
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
