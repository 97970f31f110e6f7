//! Measures the death of the leading orchestrator, with two `dbaas
//! orchestrator` processes over RabbitMQ and ZooKeeper (process runtime,
//! one shared data directory), the users and rides services given both,
//! and a gateway in front. Under a steady stream of RideShare writes
//! (new users) through the gateway, the leading orchestrator is SIGKILLed
//! (its worker processes die with it; the other orchestrator takes the
//! lead and starts them again over their stores), then started again as
//! a follower on the same address, round after round. For each round it
//! reports the time from the kill to the first acknowledged write issued
//! after it, the longest any write took around the kill, the time until
//! the other leads a cluster of serving workers, and client-visible
//! errors.
//!
//! `scripts/bench-orchestrators` runs it (it starts the services); by
//! hand, after `cargo build --release --bins --examples`:
//! `target/release/examples/orchestrator_failover AMQP_URL ZK_HOSTS [ROUNDS] [process|docker]`

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};

const WRITERS: u64 = 8;
const SESSION_MS: &str = "600";
const PASSWORD: &str = "3d725109c7e7c0bfb9d709836735B56D943D263F";
const SETTLE: Duration = Duration::from_secs(60);

/// A `dbaas` child process, SIGKILLed on drop.
struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `dbaas <args>` and waits for `ready`; answers the first URL it
/// says it listens on.
fn start(exe: &Path, args: &[&str], log: &Path) -> (Node, String) {
    let err = std::fs::File::create(log).expect("a log file");
    let mut child = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(err)
        .spawn()
        .expect("dbaas starts");
    let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut url = String::new();
    for line in lines {
        let line = line.expect("a line");
        if line.trim() == "ready" {
            break;
        }
        if let Some(rest) = line.trim().strip_prefix("listening: ") {
            if url.is_empty() {
                url = rest.split_once(' ').map_or("", |(_, u)| u).to_owned();
            }
        }
    }
    assert!(
        !url.is_empty(),
        "{args:?} did not start; see {}",
        log.display()
    );
    (Node(child), url)
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    l.local_addr().expect("an address").port()
}

/// When each write was issued and acknowledged, and errors.
#[derive(Default)]
struct Log {
    acks: Mutex<Vec<(Instant, Instant)>>,
    errors: AtomicU64,
}

async fn view(http: &reqwest::Client, orch: &str) -> Json {
    let r = http.get(format!("{orch}/api/v1/cluster")).send().await;
    match r {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(_) => Json::Null,
    }
}

/// Whether `orch` leads a master and `workers` serving workers.
async fn settled(http: &reqwest::Client, orch: &str, workers: usize) -> bool {
    let v = view(http, orch).await;
    let states: Vec<&str> = v["workers"]
        .as_array()
        .map(|w| w.iter().filter_map(|w| w["state"].as_str()).collect())
        .unwrap_or_default();
    v["acting"] == json!(true)
        && states.len() == workers
        && states.iter().filter(|s| **s == "leading").count() == 1
        && states.iter().all(|s| matches!(*s, "leading" | "serving"))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[actix::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (amqp, zk) = (&args[1], &args[2]);
    let rounds: usize = args.get(3).and_then(|r| r.parse().ok()).unwrap_or(10);
    // `docker`: the workers are containers (of `dbaas:latest`, which a
    // static `dbaas` builds of itself), which outlive the orchestrators.
    let docker = args.get(4).is_some_and(|m| m == "docker");
    let exe: PathBuf = std::env::current_exe()
        .expect("own path")
        .parent()
        .and_then(Path::parent)
        .expect("target/release")
        .join("dbaas");
    let dir = tempfile::tempdir().expect("a temp dir");
    let data = dir.path().join("data").display().to_string();
    let root = format!("/bench{}", fastrand::u64(..));
    let ports = [free_port(), free_port()];
    let addr = |i: usize| format!("127.0.0.1:{}", ports[i]);
    let orch_url = |i: usize| format!("http://{}", addr(i));
    let n = AtomicU64::new(0);
    let log_path = |name: &str| {
        let k = n.fetch_add(1, Ordering::Relaxed);
        dir.path().join(format!("{name}-{k}.log"))
    };
    let orchestrator = |i: usize| {
        let a = addr(i);
        let args = [
            "orchestrator",
            "--addr",
            &a,
            "--amqp",
            amqp,
            "--zk",
            zk,
            "--zk-root",
            &root,
            "--session-timeout-ms",
            SESSION_MS,
            "--slaves",
            "2",
            "--data-dir",
            &data,
        ];
        let runtime: &[&str] = if docker {
            &["--runtime", "docker"]
        } else {
            &[]
        };
        let args: Vec<&str> = args.iter().chain(runtime).copied().collect();
        start(&exe, &args, &log_path("orchestrator")).0
    };
    let mut orchs = [Some(orchestrator(0)), Some(orchestrator(1))];
    let both = format!("{},{}", orch_url(0), orch_url(1));
    let service = |kind: &str| {
        let args = [kind, "--addr", "127.0.0.1:0", "--orchestrator", &both];
        start(&exe, &args, &log_path(kind))
    };
    let (_users, users) = service("users");
    let (_rides, rides) = service("rides");
    let gw_args = [
        "gateway",
        "--addr",
        "127.0.0.1:0",
        "--users",
        &users,
        "--rides",
        &rides,
    ];
    let (_gateway, gateway) = start(&exe, &gw_args, &log_path("gateway"));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("a client");

    let log = Arc::new(Log::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (log, stop, http) = (log.clone(), stop.clone(), http.clone());
        let url = format!("{gateway}/api/v1/users");
        writers.push(actix::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let body = json!({"username": format!("w{w}-{i}"), "password": PASSWORD});
                let sent = Instant::now();
                match http.put(&url).json(&body).send().await {
                    Ok(r) if r.status() == 201 => {
                        log.acks.lock().unwrap().push((sent, Instant::now()));
                    }
                    _ => {
                        log.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                i += 1;
            }
        }));
    }

    let (mut pauses, mut longest, mut leads) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        // Settled: one leads every worker serving, the other follows.
        let deadline = Instant::now() + SETTLE;
        let leader = loop {
            let mut found = None;
            for i in 0..2 {
                if settled(&http, &orch_url(i), 3).await {
                    found = Some(i);
                }
            }
            if let Some(i) = found {
                break i;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: no settled leader"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let other = 1 - leader;
        // The follower must list the leader before the kill.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let errors = log.errors.load(Ordering::Relaxed);
        let t0 = Instant::now();
        orchs[leader] = None; // SIGKILL
        let deadline = Instant::now() + SETTLE;
        while !settled(&http, &orch_url(other), 3).await {
            assert!(Instant::now() < deadline, "round {round}: no new leader");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let lead = t0.elapsed();
        // The first write issued after the kill and acknowledged.
        let pause = loop {
            let first = log
                .acks
                .lock()
                .unwrap()
                .iter()
                .filter(|(sent, _)| *sent >= t0)
                .map(|(_, acked)| *acked - t0)
                .min();
            if let Some(p) = first {
                break p;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        // Let writes issued before and around the kill finish.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let worst = log
            .acks
            .lock()
            .unwrap()
            .iter()
            .filter(|(sent, acked)| *acked >= t0 && *sent <= t0 + pause)
            .map(|(sent, acked)| *acked - *sent)
            .max()
            .unwrap_or_default();
        let errs = log.errors.load(Ordering::Relaxed) - errors;
        println!(
            "round {round}: killed the leader; first write after it acknowledged in {:.0} ms, \
             longest write {:.0} ms, the other leads a serving cluster after {:.0} ms, {errs} errors",
            ms(pause),
            ms(worst),
            ms(lead)
        );
        pauses.push(pause);
        longest.push(worst);
        leads.push(lead);
        orchs[leader] = Some(orchestrator(leader));
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let _ = w.await;
    }
    let acked = log.acks.lock().unwrap().len();
    let errors = log.errors.load(Ordering::Relaxed);
    for (name, v) in [
        ("first write after the kill", &mut pauses),
        ("longest write around it", &mut longest),
        ("the other leading a serving cluster", &mut leads),
    ] {
        v.sort();
        println!(
            "{name}: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            ms(percentile(v, 0.5)),
            ms(percentile(v, 0.99)),
            ms(*v.last().unwrap_or(&Duration::ZERO))
        );
    }
    println!("{acked} writes acknowledged, {errors} errors, {rounds} leader kills");
    // Stopped cleanly, one after the other: the last stops the workers
    // (containers outlive the others).
    for o in orchs.into_iter().flatten() {
        let mut o = o;
        // SAFETY: kill(2) on our own child, not reaped yet.
        unsafe {
            libc::kill(o.0.id() as libc::pid_t, libc::SIGTERM);
        }
        let _ = o.0.wait();
    }
}
