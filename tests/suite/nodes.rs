//! Orchestrators, services and a gateway as `dbaas` child processes over
//! the test RabbitMQ and ZooKeeper, and the steady RideShare load the
//! tests of several orchestrators run through them.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};

use super::{amqp_url, eventually, fresh_vhost, zk_hosts, ZK_SESSION};

/// A valid password: 40 hex digits.
pub const PASSWORD: &str = "3d725109c7e7c0bfb9d709836735B56D943D263F";

/// How long a node may take to say it is ready: longer than the system's
/// own start deadline (60 s), so that a start that fails says why before
/// the test gives up on it.
pub const STARTUP: Duration = Duration::from_secs(75);
pub const DEADLINE: Duration = Duration::from_secs(60);

/// A `dbaas` child process; SIGKILLed on drop.
pub struct Node {
    pub child: Child,
    pub url: String,
    pub log: std::path::PathBuf,
}

impl Node {
    /// Starts `dbaas <args>` and waits for its `ready` line; its URL is
    /// the first it says it listens on.
    pub fn start(args: &[String], log: &Path) -> Node {
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

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: i32) {
        super::signal(u64::from(self.pid()), sig);
    }

    pub fn log(&self) -> String {
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
pub struct Cluster {
    pub amqp: String,
    pub zk: String,
    pub root: String,
    pub dir: tempfile::TempDir,
    pub n: AtomicU64,
    /// The orchestrators' ZooKeeper session timeout.
    pub session: Duration,
}

impl Cluster {
    pub fn new() -> Option<Cluster> {
        let (_, amqp) = fresh_vhost(&amqp_url()?);
        Some(Cluster::over(amqp, zk_hosts()?, ZK_SESSION))
    }

    /// A cluster over the broker(s) at `amqp` (a URL list) and the
    /// ZooKeeper server(s) `zk`, on a fresh root.
    pub fn over(amqp: String, zk: String, session: Duration) -> Cluster {
        Cluster {
            amqp,
            zk,
            root: format!("/t{}", fastrand::u64(..)),
            dir: tempfile::tempdir().expect("a temp dir"),
            n: AtomicU64::new(0),
            session,
        }
    }

    pub fn log(&self, name: &str) -> std::path::PathBuf {
        let n = self.n.fetch_add(1, Ordering::Relaxed);
        self.dir.path().join(format!("{name}-{n}.log"))
    }

    /// One more orchestrator.
    pub fn orchestrator(&self) -> Node {
        self.orchestrator_with(&[])
    }

    /// One more orchestrator, with more flags.
    pub fn orchestrator_with(&self, extra: &[&str]) -> Node {
        self.orchestrator_at("127.0.0.1:0", extra)
    }

    /// One more orchestrator listening on `addr` (a fixed port, so that a
    /// restarted one is found where the services look for it).
    pub fn orchestrator_at(&self, addr: &str, extra: &[&str]) -> Node {
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
            &self.session.as_millis().to_string(),
            "--slaves",
            "2",
            "--data-dir",
            &data.display().to_string(),
        ];
        let args: Vec<String> = args.iter().chain(extra).map(|s| s.to_string()).collect();
        Node::start(&args, &self.log("orchestrator"))
    }

    /// The users and rides services over `orchestrators`, and a gateway.
    pub fn front(&self, orchestrators: &[&Node]) -> [Node; 3] {
        let list: Vec<String> = orchestrators.iter().map(|o| o.url.clone()).collect();
        self.front_over(&list)
    }

    /// The users and rides services over the orchestrators at `urls`, and
    /// a gateway.
    pub fn front_over(&self, urls: &[String]) -> [Node; 3] {
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

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("an HTTP client")
}

/// `GET /api/v1/cluster` of an orchestrator.
pub async fn cluster_view(orch: &Node) -> Option<Json> {
    let r = http()
        .get(format!("{}/api/v1/cluster", orch.url))
        .send()
        .await
        .ok()?;
    r.json().await.ok()
}

/// The pid of the orchestrator that leads, as `orch` lists them.
pub async fn leader_pid(orch: &Node) -> Option<u64> {
    let view = cluster_view(orch).await?;
    view["orchestrators"]
        .as_array()?
        .iter()
        .find(|o| o["leading"] == json!(true))
        .and_then(|o| o["pid"].as_u64())
}

/// Whether `orch` leads with a master leading and every worker serving.
pub async fn leads_a_settled_cluster(orch: &Node, workers: usize) -> bool {
    let Some(v) = cluster_view(orch).await else {
        return false;
    };
    let states: Vec<&str> = v["workers"]
        .as_array()
        .map(|w| w.iter().filter_map(|w| w["state"].as_str()).collect())
        .unwrap_or_default();
    v["acting"] == json!(true)
        && states.len() == workers
        && states.iter().filter(|s| **s == "leading").count() == 1
        && states.iter().all(|s| matches!(*s, "leading" | "serving"))
}

/// `POST <orch><path>` with `body`; its JSON answer, which must be a 200.
async fn db(orch: &Node, path: &str, body: Json) -> Json {
    let r = http()
        .post(format!("{}{path}", orch.url))
        .json(&body)
        .send()
        .await
        .expect("the orchestrator answers");
    assert_eq!(r.status(), 200);
    r.json().await.expect("a JSON answer")
}

pub async fn db_write(orch: &Node, body: Json) -> Json {
    db(orch, "/api/v1/db/write", body).await
}

pub async fn db_read(orch: &Node, body: Json) -> Json {
    db(orch, "/api/v1/db/read?consistency=strong", body).await
}

pub async fn count_users(orch: &Node) -> u64 {
    let n = db_read(orch, json!({"op": "count", "table": "users"})).await;
    n["count"].as_u64().expect("a count")
}

/// Steady RideShare writes (new users) and reads through the gateway,
/// counting acknowledged writes and failures, and keeping the longest
/// request's time.
pub struct Load {
    pub acked: Arc<Mutex<Vec<String>>>,
    pub failed: Arc<AtomicU64>,
    pub stop: Arc<AtomicBool>,
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The longest request since the last `take_slowest`, in ms.
    pub slowest_ms: Arc<AtomicU64>,
}

impl Load {
    pub fn start(gateway: &str, writers: u64, readers: u64) -> Load {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let (failed, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let slowest_ms = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for w in 0..writers {
            let (acked, failed, stop) = (acked.clone(), failed.clone(), stop.clone());
            let slowest = slowest_ms.clone();
            let url = format!("{gateway}/api/v1/users");
            tasks.push(actix::spawn(async move {
                let http = http();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let name = format!("w{w}-{i}");
                    let body = json!({"username": name, "password": PASSWORD});
                    let t = Instant::now();
                    let answer = http.put(&url).json(&body).send().await;
                    slowest.fetch_max(t.elapsed().as_millis() as u64, Ordering::Relaxed);
                    match answer {
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
            let slowest = slowest_ms.clone();
            let url = format!("{gateway}/api/v1/users");
            tasks.push(actix::spawn(async move {
                let http = http();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let answer = http.get(&url).send().await;
                    slowest.fetch_max(t.elapsed().as_millis() as u64, Ordering::Relaxed);
                    match answer {
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
            slowest_ms,
        }
    }

    /// The longest request since the last call (or the start), in ms.
    pub fn take_slowest(&self) -> u64 {
        self.slowest_ms.swap(0, Ordering::Relaxed)
    }

    pub fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    pub async fn more(&self, n: usize) {
        let target = self.acked() + n;
        let acked = self.acked.clone();
        eventually("writes to be acknowledged", DEADLINE, move || {
            let acked = acked.clone();
            async move { acked.lock().unwrap().len() >= target }
        })
        .await;
    }

    /// Stops; answers the acknowledged names and the failures.
    pub async fn stop(self) -> (Vec<String>, u64) {
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
pub fn workers_of(view: &Json) -> (u64, u64, Vec<u64>) {
    let mut pids: Vec<u64> = view["workers"]
        .as_array()
        .map(|w| w.iter().filter_map(|w| w["pid"].as_u64()).collect())
        .unwrap_or_default();
    pids.sort_unstable();
    let epoch = view["epoch"].as_u64().unwrap_or(0);
    (epoch, view["master"].as_u64().unwrap_or(0), pids)
}

pub fn kinds(view: &Json) -> Vec<String> {
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
pub fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    l.local_addr().expect("an address").to_string()
}

/// Lines of `log` that say a task panicked.
pub fn panics(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("panicked"))
        .map(str::to_owned)
        .collect()
}

/// Which of `orchs` (by index) leads a settled cluster of `workers`.
pub async fn settled_leader(orchs: &[Option<Node>], workers: usize) -> Option<usize> {
    for (i, o) in orchs.iter().enumerate() {
        if let Some(o) = o {
            if leads_a_settled_cluster(o, workers).await {
                return Some(i);
            }
        }
    }
    None
}

/// What each of `orchs` says of the cluster, and the end of its log
/// (its workers' too, when they run as its child processes), for a
/// failure's message.
pub async fn views(orchs: &[Option<Node>]) -> String {
    const TAIL: usize = 300;
    let mut out = String::new();
    for o in orchs.iter().flatten() {
        let v = cluster_view(o).await.unwrap_or_default();
        out += &format!("\norchestrator {}: {v}", o.pid());
    }
    for o in orchs.iter().flatten() {
        let log = o.log();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(TAIL)..].join("\n");
        out += &format!(
            "\n--- the last {TAIL} lines of orchestrator {}'s log:\n{tail}",
            o.pid()
        );
    }
    out
}

/// Waits for one of `orchs` to lead a settled cluster; its index.
pub async fn wait_settled(orchs: &[Option<Node>], workers: usize) -> usize {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(i) = settled_leader(orchs, workers).await {
            return i;
        }
        if Instant::now() > deadline {
            panic!(
                "timed out waiting for a settled cluster of {workers}: {}",
                views(orchs).await
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every acknowledged name listed once through the gateway, every worker
/// caught up, then every orchestrator stopped (followers first) and the
/// stores compared.
pub async fn check_nothing_lost(gateway: &Node, leader: &Node, acked: &[String]) -> Vec<u64> {
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
pub fn stop_and_compare(c: &Cluster, orchs: Vec<Node>, leader_pid: u32, workers: &[u64]) {
    let (lead, rest): (Vec<Node>, Vec<Node>) =
        orchs.into_iter().partition(|o| o.pid() == leader_pid);
    for o in rest.into_iter().chain(lead) {
        o.signal(libc::SIGTERM);
        let mut o = o;
        let status = o.child.wait().expect("its exit");
        assert!(status.success(), "{}", o.log());
    }
    let all = super::stores(&c.dir.path().join("data"), workers);
    assert!(all.iter().all(|s| *s == all[0]), "workers differ: {all:?}");
}

/// How a run of several orchestrators ends: no task panicked in their
/// logs and no request failed (each kill cost the clients time only);
/// every acknowledged name is listed once through the gateway and every
/// worker caught up; then the front goes, every orchestrator stops
/// cleanly (the leader last) and the workers' stores are compared.
pub async fn nothing_failed_or_lost(
    c: &Cluster,
    orchs: Vec<Option<Node>>,
    front: [Node; 3],
    acked: &[String],
    failed: u64,
) {
    let orchs: Vec<Node> = orchs.into_iter().flatten().collect();
    let logs: String = orchs.iter().map(Node::log).collect();
    assert!(panics(&logs).is_empty(), "{:?}", panics(&logs));
    assert_eq!(failed, 0, "requests failed");
    let mut leader = None;
    for o in &orchs {
        if cluster_view(o)
            .await
            .is_some_and(|v| v["leading"] == json!(true))
        {
            leader = Some(o.pid());
        }
    }
    let leader = leader.expect("one leads");
    let lnode = orchs.iter().find(|o| o.pid() == leader).expect("listed");
    let workers = check_nothing_lost(&front[2], lnode, acked).await;
    drop(front);
    stop_and_compare(c, orchs, leader, &workers);
}
