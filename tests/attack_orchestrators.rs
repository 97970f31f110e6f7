//! Attacks on several orchestrators serving one cluster (Jepsen-style):
//! the leading orchestrator killed again and again under load, paused
//! around its lease's edge, three started at once on a fresh root, a
//! strong read through one right after a write acknowledged by another
//! while a slave is paused.

#![allow(dead_code)]

mod common;
mod suite;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::api::PASSWORD;
use serde_json::{json, Value as Json};
use suite::{amqp_url, eventually, fresh_vhost, zk_hosts, ZK_SESSION};

const STARTUP: Duration = Duration::from_secs(60);
const DEADLINE: Duration = Duration::from_secs(60);

/// A `dbaas` child process; SIGKILLed on drop.
struct Node {
    child: Child,
    url: String,
    log: std::path::PathBuf,
}

impl Node {
    /// Starts `dbaas <args>` and waits for its `ready` line; its URL is
    /// the first it says it listens on.
    fn start(args: &[String], log: &Path) -> Node {
        let err = std::fs::File::create(log).expect("a log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_dbaas"))
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .expect("dbaas starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + STARTUP;
        let mut url = String::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).unwrap_or_else(|e| {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                panic!("{args:?} not ready ({e}); log:\n{text}")
            });
            let line = line.trim();
            if line == "ready" {
                break;
            }
            if let Some(rest) = line.strip_prefix("listening: ") {
                if url.is_empty() {
                    url = rest.split_once(' ').map_or("", |(_, u)| u).to_owned();
                }
            }
        }
        Node {
            child,
            url,
            log: log.to_owned(),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, sig: i32) {
        suite::signal(u64::from(self.pid()), sig);
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A cluster's shared settings: its RabbitMQ virtual host, its ZooKeeper
/// root, its data directory (shared: the process runtime's workers are
/// started over their stores by whichever orchestrator leads).
struct Cluster {
    amqp: String,
    zk: String,
    root: String,
    dir: tempfile::TempDir,
    n: AtomicU64,
}

impl Cluster {
    fn new() -> Option<Cluster> {
        let (_, amqp) = fresh_vhost(&amqp_url()?);
        Some(Cluster {
            amqp,
            zk: zk_hosts()?,
            root: format!("/t{}", fastrand::u64(..)),
            dir: tempfile::tempdir().expect("a temp dir"),
            n: AtomicU64::new(0),
        })
    }

    fn log(&self, name: &str) -> std::path::PathBuf {
        let n = self.n.fetch_add(1, Ordering::Relaxed);
        self.dir.path().join(format!("{name}-{n}.log"))
    }

    /// One more orchestrator.
    fn orchestrator(&self) -> Node {
        self.orchestrator_with(&[])
    }

    /// One more orchestrator, with more flags.
    fn orchestrator_with(&self, extra: &[&str]) -> Node {
        self.orchestrator_at("127.0.0.1:0", extra)
    }

    /// One more orchestrator listening on `addr` (a fixed port, so that a
    /// restarted one is found where the services look for it).
    fn orchestrator_at(&self, addr: &str, extra: &[&str]) -> Node {
        let data = self.dir.path().join("data");
        let args = [
            "orchestrator",
            "--addr",
            addr,
            "--amqp",
            &self.amqp,
            "--zk",
            &self.zk,
            "--zk-root",
            &self.root,
            "--session-timeout-ms",
            &ZK_SESSION.as_millis().to_string(),
            "--slaves",
            "2",
            "--data-dir",
            &data.display().to_string(),
        ];
        let args: Vec<String> = args.iter().chain(extra).map(|s| s.to_string()).collect();
        Node::start(&args, &self.log("orchestrator"))
    }

    /// The users and rides services over `orchestrators`, and a gateway.
    fn front(&self, orchestrators: &[&Node]) -> [Node; 3] {
        let list: Vec<String> = orchestrators.iter().map(|o| o.url.clone()).collect();
        self.front_over(&list)
    }

    /// The users and rides services over the orchestrators at `urls`, and
    /// a gateway.
    fn front_over(&self, urls: &[String]) -> [Node; 3] {
        let list = urls.join(",");
        let service = |kind: &str| {
            let args = [kind, "--addr", "127.0.0.1:0", "--orchestrator", &list];
            let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            Node::start(&args, &self.log(kind))
        };
        let (users, rides) = (service("users"), service("rides"));
        let args = [
            "gateway",
            "--addr",
            "127.0.0.1:0",
            "--users",
            &users.url,
            "--rides",
            &rides.url,
        ];
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let gateway = Node::start(&args, &self.log("gateway"));
        [users, rides, gateway]
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("an HTTP client")
}

/// `GET /api/v1/cluster` of an orchestrator.
async fn cluster_view(orch: &Node) -> Option<Json> {
    let r = http()
        .get(format!("{}/api/v1/cluster", orch.url))
        .send()
        .await
        .ok()?;
    r.json().await.ok()
}

/// The pid of the orchestrator that leads, as `orch` lists them.
async fn leader_pid(orch: &Node) -> Option<u64> {
    let view = cluster_view(orch).await?;
    view["orchestrators"]
        .as_array()?
        .iter()
        .find(|o| o["leading"] == json!(true))
        .and_then(|o| o["pid"].as_u64())
}

/// Whether `orch` leads with a master leading and every worker serving.
async fn leads_a_settled_cluster(orch: &Node, workers: usize) -> bool {
    let Some(v) = cluster_view(orch).await else {
        return false;
    };
    let states: Vec<&str> = v["workers"]
        .as_array()
        .map(|w| w.iter().filter_map(|w| w["state"].as_str()).collect())
        .unwrap_or_default();
    v["leading"] == json!(true)
        && states.len() == workers
        && states.iter().filter(|s| **s == "leading").count() == 1
        && states.iter().all(|s| matches!(*s, "leading" | "serving"))
}

async fn db_write(orch: &Node, body: Json) -> Json {
    let r = http()
        .post(format!("{}/api/v1/db/write", orch.url))
        .json(&body)
        .send()
        .await
        .expect("the orchestrator answers");
    assert_eq!(r.status(), 200);
    r.json().await.expect("a JSON answer")
}

async fn db_read(orch: &Node, body: Json) -> Json {
    let r = http()
        .post(format!("{}/api/v1/db/read?consistency=strong", orch.url))
        .json(&body)
        .send()
        .await
        .expect("the orchestrator answers");
    assert_eq!(r.status(), 200);
    r.json().await.expect("a JSON answer")
}

async fn count_users(orch: &Node) -> u64 {
    let n = db_read(orch, json!({"op": "count", "table": "users"})).await;
    n["count"].as_u64().expect("a count")
}

/// Steady RideShare writes (new users) and reads through the gateway,
/// counting acknowledged writes and failures.
struct Load {
    acked: Arc<Mutex<Vec<String>>>,
    failed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(gateway: &str, writers: u64, readers: u64) -> Load {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let (failed, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let mut tasks = Vec::new();
        for w in 0..writers {
            let (acked, failed, stop) = (acked.clone(), failed.clone(), stop.clone());
            let url = format!("{gateway}/api/v1/users");
            tasks.push(actix::spawn(async move {
                let http = http();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let name = format!("w{w}-{i}");
                    let body = json!({"username": name, "password": PASSWORD});
                    match http.put(&url).json(&body).send().await {
                        Ok(r) if r.status() == 201 => acked.lock().unwrap().push(name),
                        Ok(r) => {
                            let status = r.status();
                            let text = r.text().await.unwrap_or_default();
                            eprintln!("write {name}: {status} {text}");
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            eprintln!("write {name}: {e}");
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    i += 1;
                }
            }));
        }
        for _ in 0..readers {
            let (failed, stop) = (failed.clone(), stop.clone());
            let url = format!("{gateway}/api/v1/users");
            tasks.push(actix::spawn(async move {
                let http = http();
                while !stop.load(Ordering::Relaxed) {
                    match http.get(&url).send().await {
                        Ok(r) if matches!(r.status().as_u16(), 200 | 204) => {
                            let _ = r.bytes().await;
                        }
                        other => {
                            eprintln!("read: {other:?}");
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }));
        }
        Load {
            acked,
            failed,
            stop,
            tasks,
        }
    }

    fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    async fn more(&self, n: usize) {
        let target = self.acked() + n;
        let acked = self.acked.clone();
        eventually("writes to be acknowledged", DEADLINE, move || {
            let acked = acked.clone();
            async move { acked.lock().unwrap().len() >= target }
        })
        .await;
    }

    /// Stops; answers the acknowledged names and the failures.
    async fn stop(self) -> (Vec<String>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("a load task");
        }
        let acked = std::mem::take(&mut *self.acked.lock().unwrap());
        (acked, self.failed.load(Ordering::Relaxed))
    }
}

/// What a cluster view says of the workers: the epoch, the master's pid
/// and every worker's pid.
fn workers_of(view: &Json) -> (u64, u64, Vec<u64>) {
    let mut pids: Vec<u64> = view["workers"]
        .as_array()
        .map(|w| w.iter().filter_map(|w| w["pid"].as_u64()).collect())
        .unwrap_or_default();
    pids.sort_unstable();
    let epoch = view["epoch"].as_u64().unwrap_or(0);
    (epoch, view["master"].as_u64().unwrap_or(0), pids)
}

fn kinds(view: &Json) -> Vec<String> {
    view["events"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter_map(|e| e["kind"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}


/// A loopback address with a port free right now.
fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    l.local_addr().expect("an address").to_string()
}

/// Lines of `log` that say a task panicked.
fn panics(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("panicked"))
        .map(str::to_owned)
        .collect()
}

/// Which of `orchs` (by index) leads a settled cluster of `workers`.
async fn settled_leader(orchs: &[Option<Node>], workers: usize) -> Option<usize> {
    for (i, o) in orchs.iter().enumerate() {
        if let Some(o) = o {
            if leads_a_settled_cluster(o, workers).await {
                return Some(i);
            }
        }
    }
    None
}

/// Waits for one of `orchs` to lead a settled cluster; its index.
async fn wait_settled(orchs: &[Option<Node>], workers: usize) -> usize {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(i) = settled_leader(orchs, workers).await {
            return i;
        }
        assert!(Instant::now() < deadline, "timed out waiting for a settled cluster");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every acknowledged name listed once through the gateway, every worker
/// caught up, then every orchestrator stopped (followers first) and the
/// stores compared.
async fn check_nothing_lost(
    c: &Cluster,
    gateway: &Node,
    leader: &Node,
    acked: &[String],
) -> Vec<u64> {
    let r = http()
        .get(format!("{}/api/v1/users", gateway.url))
        .send()
        .await
        .expect("the list");
    let listed: Vec<String> = r.json().await.expect("a list of names");
    let set: std::collections::BTreeSet<String> = listed.iter().cloned().collect();
    assert_eq!(set.len(), listed.len(), "a name listed twice");
    let missing: Vec<&String> = acked.iter().filter(|n| !set.contains(*n)).collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    assert_eq!(count_users(leader).await, listed.len() as u64);
    eventually("every worker to apply everything", DEADLINE, || async {
        let v = cluster_view(leader).await.unwrap_or_default();
        let lags: Vec<u64> = v["workers"]
            .as_array()
            .map(|w| w.iter().filter_map(|w| w["lag"].as_u64()).collect())
            .unwrap_or_default();
        lags.len() == 3 && lags.iter().all(|&l| l == 0)
    })
    .await;
    let _ = c;
    let v = cluster_view(leader).await.expect("a view");
    v["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .filter_map(|w| w["id"].as_u64())
        .collect()
}

/// Stops `orchs` (those that do not lead first), each cleanly, and
/// compares the workers' stores.
fn stop_and_compare(c: &Cluster, orchs: Vec<Node>, leader_pid: u32, workers: &[u64]) {
    let (lead, rest): (Vec<Node>, Vec<Node>) =
        orchs.into_iter().partition(|o| o.pid() == leader_pid);
    for o in rest.into_iter().chain(lead) {
        o.signal(libc::SIGTERM);
        let mut o = o;
        let status = o.child.wait().expect("its exit");
        assert!(status.success(), "{}", o.log());
    }
    let all = suite::stores(&c.dir.path().join("data"), workers);
    assert!(all.iter().all(|s| *s == all[0]), "workers differ: {all:?}");
}

/// The leading orchestrator SIGKILLed again and again under steady
/// writes and reads through the gateway (A dies, A comes back as a new
/// process on its address, B dies, ...): every time the other takes the
/// lead and brings the workers back over their stores; no acknowledged
/// write is lost, no request fails, the replicas agree.
#[actix::test]
async fn the_leader_killed_again_and_again_under_load_loses_nothing_and_fails_nothing() {
    let Some(c) = Cluster::new() else {
        return;
    };
    let addrs = [free_addr(), free_addr()];
    let mut orchs: Vec<Option<Node>> = addrs
        .iter()
        .map(|a| Some(c.orchestrator_at(a, &[])))
        .collect();
    let urls: Vec<String> = orchs.iter().map(|o| o.as_ref().unwrap().url.clone()).collect();
    let front = c.front_over(&urls);
    let gateway = &front[2];
    let load = Load::start(&gateway.url, 4, 2);
    load.more(50).await;
    for round in 0..4 {
        let l = wait_settled(&orchs, 3).await;
        let t = Instant::now();
        eprintln!("round {round}: killing orchestrator {l} (acked {})", load.acked());
        orchs[l] = None; // SIGKILL
        let other = orchs[1 - l].as_ref().unwrap();
        eventually("the other to lead a settled cluster", DEADLINE, || {
            leads_a_settled_cluster(other, 3)
        })
        .await;
        eprintln!("round {round}: settled again after {:?}", t.elapsed());
        orchs[l] = Some(c.orchestrator_at(&addrs[l], &[]));
        load.more(30).await;
    }
    let (acked, failed) = load.stop().await;
    let orchs: Vec<Node> = orchs.into_iter().flatten().collect();
    let logs: String = orchs.iter().map(Node::log).collect();
    assert!(panics(&logs).is_empty(), "{:?}", panics(&logs));
    assert_eq!(failed, 0, "requests failed");
    let mut leader = None;
    for o in &orchs {
        if cluster_view(o).await.is_some_and(|v| v["leading"] == json!(true)) {
            leader = Some(o.pid());
        }
    }
    let leader = leader.expect("one leads");
    let lnode = orchs.iter().find(|o| o.pid() == leader).unwrap();
    let workers = check_nothing_lost(&c, gateway, lnode, &acked).await;
    drop(front);
    stop_and_compare(&c, orchs, leader, &workers);
}

/// The leading orchestrator paused (SIGSTOP) around its lease's edge
/// (300-900 ms against a 600 ms session) again and again under load:
/// no request fails, nothing acknowledged is lost, and every pause makes
/// at most one orchestrator act on each death (no worker started twice,
/// no two elections for one death).
#[actix::test]
async fn the_leader_paused_around_its_lease_edge_again_and_again() {
    let Some(c) = Cluster::new() else {
        return;
    };
    let a = c.orchestrator();
    let b = c.orchestrator();
    let front = c.front(&[&a, &b]);
    let gateway = &front[2];
    let load = Load::start(&gateway.url, 4, 2);
    load.more(50).await;
    let orchs = [Some(a), Some(b)];
    for round in 0..8 {
        let l = orchs[wait_settled(&orchs, 3).await].as_ref().unwrap();
        let pause = Duration::from_millis(300 + 75 * round);
        eprintln!("round {round}: pausing {} for {pause:?}", l.pid());
        l.signal(libc::SIGSTOP);
        std::thread::sleep(pause); // the fault's length, not a synchronisation
        l.signal(libc::SIGCONT);
        load.more(20).await;
    }
    let leader = Some(wait_settled(&orchs, 3).await);
    let (acked, failed) = load.stop().await;
    let orchs: Vec<Node> = orchs.into_iter().flatten().collect();
    for o in &orchs {
        let v = cluster_view(o).await.unwrap_or_default();
        eprintln!("orchestrator {}: totals {} events {}", o.pid(), v["totals"], v["events"]);
    }
    let logs: String = orchs.iter().map(Node::log).collect();
    assert!(panics(&logs).is_empty(), "{:?}", panics(&logs));
    assert_eq!(failed, 0, "requests failed");
    let lnode = &orchs[leader.unwrap()];
    let lpid = lnode.pid();
    let workers = check_nothing_lost(&c, gateway, lnode, &acked).await;
    drop(front);
    stop_and_compare(&c, orchs, lpid, &workers);
}

/// Three orchestrators started at the same moment on a fresh root and a
/// fresh data directory agree on one cluster and one leader, and bring
/// up one set of workers.
#[actix::test]
async fn three_orchestrators_started_at_once_agree_on_one_cluster_and_one_leader() {
    let Some(c) = Cluster::new() else {
        return;
    };
    let c = Arc::new(c);
    let starts: Vec<_> = (0..3)
        .map(|_| {
            let c = c.clone();
            std::thread::spawn(move || c.orchestrator())
        })
        .collect();
    let orchs: Vec<Node> = starts.into_iter().map(|t| t.join().expect("started")).collect();
    eventually("every orchestrator to list three", DEADLINE, || async {
        for o in &orchs {
            let v = cluster_view(o).await.unwrap_or_default();
            if v["orchestrators"].as_array().map_or(0, Vec::len) != 3 {
                return false;
            }
        }
        true
    })
    .await;
    let mut ids = Vec::new();
    let mut leading = 0;
    for o in &orchs {
        let v = cluster_view(o).await.expect("a view");
        ids.push(v["cluster"].as_str().unwrap_or_default().to_owned());
        leading += usize::from(v["leading"] == json!(true));
    }
    assert!(ids.iter().all(|i| *i == ids[0]), "cluster ids differ: {ids:?}");
    assert_eq!(leading, 1, "orchestrators leading");
    let opts: Vec<Option<Node>> = orchs.into_iter().map(Some).collect();
    eventually("a settled cluster", DEADLINE, || async {
        settled_leader(&opts, 3).await.is_some()
    })
    .await;
    // Writes through each are read through the others.
    for (i, o) in opts.iter().flatten().enumerate() {
        let user = json!({"op": "insert", "table": "users",
                          "row": {"username": format!("u{i}"), "password": PASSWORD}});
        db_write(o, user).await;
        for r in opts.iter().flatten() {
            assert_eq!(count_users(r).await, i as u64 + 1);
        }
    }
    let logs: String = opts.iter().flatten().map(Node::log).collect();
    assert!(panics(&logs).is_empty(), "{:?}", panics(&logs));
}

/// A strong read through B right after a write acknowledged by A sees
/// it, while one slave is paused (SIGSTOP) and so falls behind.
#[actix::test]
async fn a_strong_read_through_b_sees_a_write_acked_by_a_while_a_slave_is_paused() {
    let Some(c) = Cluster::new() else {
        return;
    };
    let a = c.orchestrator();
    let b = c.orchestrator();
    let opts = [Some(a), Some(b)];
    eventually("a settled cluster", DEADLINE, || async {
        settled_leader(&opts, 3).await.is_some()
    })
    .await;
    let [Some(a), Some(b)] = &opts else {
        unreachable!()
    };
    let v = cluster_view(a).await.expect("a view");
    let master = v["master"].as_u64().expect("a master");
    let slave = v["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .filter_map(|w| w["pid"].as_u64())
        .find(|p| *p != master)
        .expect("a slave");
    suite::signal(slave, libc::SIGSTOP);
    let mut stale = Vec::new();
    for i in 0..60u64 {
        let (w, r) = if i % 2 == 0 { (a, b) } else { (b, a) };
        let user = json!({"op": "insert", "table": "users",
                          "row": {"username": format!("u{i}"), "password": PASSWORD}});
        db_write(w, user).await;
        let n = count_users(r).await;
        if n != i + 1 {
            stale.push((i, n));
        }
    }
    // It may have been taken for hung, killed and started again by now.
    // SAFETY: kill(2) has no memory effects.
    unsafe { libc::kill(slave as libc::pid_t, libc::SIGCONT) };
    assert!(stale.is_empty(), "strong reads missed acknowledged writes: {stale:?}");
}

/// Which of `orchs` says it leads (settled or not), by index.
async fn any_leading(orchs: &[Option<Node>]) -> Option<usize> {
    for (i, o) in orchs.iter().enumerate() {
        if let Some(o) = o {
            if cluster_view(o)
                .await
                .is_some_and(|v| v["leading"] == json!(true))
            {
                return Some(i);
            }
        }
    }
    None
}

/// The leading orchestrator (process runtime: its workers are its
/// children, and run on while it is paused) paused well past its session
/// under load, then resumed: the other takes the lead, the workers end up
/// under one orchestrator, nothing acknowledged is lost and no request
/// fails beyond the request deadline.
#[actix::test]
async fn the_leader_paused_past_its_session_with_its_workers_running_on() {
    let Some(c) = Cluster::new() else {
        return;
    };
    let a = c.orchestrator();
    let b = c.orchestrator();
    let front = c.front(&[&a, &b]);
    let gateway = &front[2];
    let load = Load::start(&gateway.url, 4, 2);
    load.more(50).await;
    let orchs = [Some(a), Some(b)];
    for round in 0..3 {
        let l = wait_settled(&orchs, 3).await;
        let node = orchs[l].as_ref().unwrap();
        let pause = Duration::from_millis(1500 + 1000 * round);
        eprintln!("round {round}: pausing {} for {pause:?} (acked {})", node.pid(), load.acked());
        node.signal(libc::SIGSTOP);
        std::thread::sleep(pause); // the fault's length, not a synchronisation
        node.signal(libc::SIGCONT);
        let t = Instant::now();
        wait_settled(&orchs, 3).await;
        eprintln!("round {round}: settled {:?} after the resume", t.elapsed());
        load.more(20).await;
    }
    let l = wait_settled(&orchs, 3).await;
    let (acked, failed) = load.stop().await;
    let orchs: Vec<Node> = orchs.into_iter().flatten().collect();
    for o in &orchs {
        let v = cluster_view(o).await.unwrap_or_default();
        eprintln!("orchestrator {}: totals {} events {}", o.pid(), v["totals"], v["events"]);
    }
    let logs: String = orchs.iter().map(Node::log).collect();
    assert!(panics(&logs).is_empty(), "{:?}", panics(&logs));
    assert_eq!(failed, 0, "requests failed");
    let lpid = orchs[l].pid();
    let workers = check_nothing_lost(&c, gateway, &orchs[l], &acked).await;
    drop(front);
    stop_and_compare(&c, orchs, lpid, &workers);
}

/// The master and the leading orchestrator SIGKILLed at the same moment
/// under load (the master's store is not closed cleanly; the slaves get
/// SIGTERM as their parent dies): the other orchestrator brings every
/// worker back and elects the most advanced; nothing acknowledged lost.
#[actix::test]
async fn the_master_and_the_leader_killed_at_once_under_load() {
    let Some(c) = Cluster::new() else {
        return;
    };
    let addrs = [free_addr(), free_addr()];
    let mut orchs: Vec<Option<Node>> = addrs
        .iter()
        .map(|a| Some(c.orchestrator_at(a, &[])))
        .collect();
    let urls: Vec<String> = orchs.iter().map(|o| o.as_ref().unwrap().url.clone()).collect();
    let front = c.front_over(&urls);
    let gateway = &front[2];
    let load = Load::start(&gateway.url, 4, 2);
    load.more(50).await;
    for round in 0..3 {
        let l = wait_settled(&orchs, 3).await;
        let v = cluster_view(orchs[l].as_ref().unwrap()).await.expect("a view");
        let master = v["master"].as_u64().expect("a master");
        eprintln!("round {round}: killing master {master} and orchestrator {l}");
        suite::signal(master, libc::SIGKILL);
        orchs[l] = None;
        let other = orchs[1 - l].as_ref().unwrap();
        eventually("the other to lead a settled cluster", DEADLINE, || {
            leads_a_settled_cluster(other, 3)
        })
        .await;
        orchs[l] = Some(c.orchestrator_at(&addrs[l], &[]));
        load.more(30).await;
    }
    let l = wait_settled(&orchs, 3).await;
    let (acked, failed) = load.stop().await;
    let orchs: Vec<Node> = orchs.into_iter().flatten().collect();
    let logs: String = orchs.iter().map(Node::log).collect();
    assert!(panics(&logs).is_empty(), "{:?}", panics(&logs));
    assert_eq!(failed, 0, "requests failed");
    let lpid = orchs[l].pid();
    let workers = check_nothing_lost(&c, gateway, &orchs[l], &acked).await;
    drop(front);
    stop_and_compare(&c, orchs, lpid, &workers);
}

/// The leading orchestrator killed, then the one that takes the lead
/// killed the moment it says it leads (in the middle of starting the
/// workers), under load: the third brings the workers up; nothing
/// acknowledged is lost, nothing fails.
#[actix::test]
async fn the_next_leader_killed_while_it_starts_the_workers() {
    let Some(c) = Cluster::new() else {
        return;
    };
    let addrs = [free_addr(), free_addr(), free_addr()];
    let mut orchs: Vec<Option<Node>> = addrs
        .iter()
        .map(|a| Some(c.orchestrator_at(a, &[])))
        .collect();
    let urls: Vec<String> = orchs.iter().map(|o| o.as_ref().unwrap().url.clone()).collect();
    let front = c.front_over(&urls);
    let gateway = &front[2];
    let load = Load::start(&gateway.url, 4, 2);
    load.more(50).await;
    for round in 0..3 {
        let first = wait_settled(&orchs, 3).await;
        orchs[first] = None;
        let deadline = Instant::now() + DEADLINE;
        let next = loop {
            if let Some(i) = any_leading(&orchs).await {
                break i;
            }
            assert!(Instant::now() < deadline, "nobody took the lead");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let settled = leads_a_settled_cluster(orchs[next].as_ref().unwrap(), 3).await;
        eprintln!("round {round}: killed {first}, killing {next} as it leads (settled: {settled})");
        orchs[next] = None;
        let t = Instant::now();
        wait_settled(&orchs, 3).await;
        eprintln!("round {round}: settled after {:?}", t.elapsed());
        orchs[first] = Some(c.orchestrator_at(&addrs[first], &[]));
        orchs[next] = Some(c.orchestrator_at(&addrs[next], &[]));
        load.more(30).await;
    }
    let l = wait_settled(&orchs, 3).await;
    let (acked, failed) = load.stop().await;
    let lpid = orchs[l].as_ref().unwrap().pid();
    let orchs: Vec<Node> = orchs.into_iter().flatten().collect();
    let logs: String = orchs.iter().map(Node::log).collect();
    assert!(panics(&logs).is_empty(), "{:?}", panics(&logs));
    assert_eq!(failed, 0, "requests failed");
    let ln = orchs.iter().find(|o| o.pid() == lpid).unwrap();
    let workers = check_nothing_lost(&c, gateway, ln, &acked).await;
    drop(front);
    stop_and_compare(&c, orchs, lpid, &workers);
}
