//! Suites shared by the test files that run them against each broker.
#![allow(dead_code)]

pub mod actors;
pub mod attack_early;
pub mod batches;
pub mod catchup;
pub mod clusters;
pub mod failover;
pub mod holes;
pub mod nodes;
pub mod restarts;
pub mod scaler;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dbaas::broker::amqp::AmqpBroker;
use dbaas::broker::Broker;
use dbaas::model::{ReadOp, Row, Value, WriteOp};
use dbaas::runtime::{CoordTarget, ProcessRuntime};
use dbaas::store::Store;
use dbaas::system::{Cluster, Coordination};

/// The service address `scripts/test` passes in `var`, or None when it is
/// not set; `DBAAS_REQUIRE_SERVICES=1` (set by `scripts/test`) makes its
/// absence a failure rather than a skip.
pub fn service_env(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(value) if !value.is_empty() => Some(value),
        _ => {
            assert!(
                std::env::var("DBAAS_REQUIRE_SERVICES").is_err(),
                "{var} is not set but services are required"
            );
            eprintln!("skipped: {var} is not set (scripts/test sets it)");
            None
        }
    }
}

/// The RabbitMQ the tests use (`scripts/services env`); see
/// [`service_env`].
pub fn amqp_url() -> Option<String> {
    service_env("DBAAS_TEST_AMQP_URL")
}

/// The ZooKeeper the tests use (`scripts/services env`); see
/// [`service_env`].
pub fn zk_hosts() -> Option<String> {
    service_env("DBAAS_TEST_ZK")
}

/// A root of its own on the test ZooKeeper, so that tests running at once
/// do not share nodes.
pub fn fresh_zk(session_timeout: Duration) -> Option<CoordTarget> {
    Some(CoordTarget {
        hosts: zk_hosts()?,
        root: format!("/t{}", fastrand::u64(..)),
        session_timeout,
    })
}

/// The session timeout the process tests give ZooKeeper.
pub const ZK_SESSION: Duration = Duration::from_millis(600);

/// Every one of `acked` acknowledged writes of [`Load`] there once (a
/// strong count of users) and applied by every worker; then the cluster
/// stopped, and every worker's store alike.
pub async fn nothing_lost_and_alike(c: Cluster, dir: &Path, acked: u64) {
    let count = c
        .orchestrator
        .read(count_users(), dbaas::model::Consistency::Strong)
        .await
        .unwrap();
    assert_eq!(count.result, dbaas::model::ReadResult::Count(acked));
    all_applied(&c, count.seq, LOAD_DEADLINE).await;
    let ids = running(&c);
    c.stop().await;
    let all = stores(dir, &ids);
    assert!(all.iter().all(|s| *s == all[0]), "workers differ: {all:?}");
}

/// Runs `scripts/services` with `args`; its output.
pub fn services(args: &[&str]) -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = std::process::Command::new(format!("{root}/scripts/services"))
        .args(args)
        .output()
        .expect("scripts/services runs");
    assert!(
        out.status.success(),
        "services {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Runs `rabbitmqctl` on the test node (through `scripts/services ctl`).
pub fn rabbitmqctl(args: &[&str]) -> String {
    services(&[&["ctl"], args].concat())
}

/// [`services`] on a thread of its own: the test's runtime, which runs its
/// load and often the orchestrator itself, goes on meanwhile (a start of
/// a RabbitMQ node or a wait for a ZooKeeper quorum takes seconds, which
/// on the runtime's one thread would freeze the clients and the system
/// under test alike).
pub async fn services_off(args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        services(&args)
    })
    .await
    .expect("scripts/services ran")
}

/// [`rabbitmqctl`] on a thread of its own (see [`services_off`]).
pub async fn rabbitmqctl_off(args: &[&str]) -> String {
    services_off(&[&["ctl"], args].concat()).await
}

/// A virtual host of its own on the test RabbitMQ, so that tests running at
/// once do not share queues; its name and URL.
pub fn fresh_vhost(base_url: &str) -> (String, String) {
    let vhost = format!("t{}", fastrand::u64(..));
    rabbitmqctl(&["add_vhost", &vhost]);
    rabbitmqctl(&["set_permissions", "-p", &vhost, "guest", ".*", ".*", ".*"]);
    let base = base_url.rsplit_once('/').map_or(base_url, |(b, _)| b);
    let url = format!("{base}/{vhost}");
    (vhost, url)
}

/// A broker on a fresh virtual host of the test RabbitMQ.
pub async fn amqp_broker() -> Option<Arc<dyn Broker>> {
    let (_, url) = fresh_vhost(&amqp_url()?);
    Some(Arc::new(
        AmqpBroker::connect(&url)
            .await
            .expect("RabbitMQ is reachable"),
    ))
}

/// Logs to the test's output (shown when it fails), as `RUST_LOG` says
/// (`info` without it).
pub fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_test_writer()
        .try_init();
}

/// A cluster whose workers are real `dbaas worker` processes on a fresh
/// virtual host and a fresh ZooKeeper root; with that host's name.
pub async fn process_cluster(dir: &Path, slaves: usize) -> Option<(Cluster, String)> {
    let (vhost, url) = fresh_vhost(&amqp_url()?);
    let zk = fresh_zk(ZK_SESSION)?;
    let cluster = process_cluster_at(dir, slaves, &url, &zk, None).await;
    Some((cluster, vhost))
}

/// A cluster of `dbaas worker` processes on the broker at `url` (a virtual
/// host an earlier cluster may have used) and ZooKeeper at `zk`, each
/// slave's sync queue capped at `sync_cap` messages if given.
pub async fn process_cluster_at(
    dir: &Path,
    slaves: usize,
    url: &str,
    zk: &CoordTarget,
    sync_cap: Option<u32>,
) -> Cluster {
    let broker: Arc<dyn Broker> = Arc::new(
        AmqpBroker::connect(url)
            .await
            .expect("RabbitMQ is reachable"),
    );
    let workers = dbaas::system::workers_dir(dir).unwrap();
    let exe = Path::new(env!("CARGO_BIN_EXE_dbaas"));
    let mut rt = ProcessRuntime::new(exe, url, &workers, zk.clone());
    if let Some(cap) = sync_cap {
        rt = rt.with_sync_cap(cap);
    }
    logs();
    let coordination = Coordination::ZooKeeper(zk.clone());
    Cluster::start_with(dir, slaves, broker, Arc::new(rt), coordination)
        .await
        .expect("cluster starts")
}

/// The master's id and the slaves' ids, from the workers' own status.
pub async fn roles(c: &Cluster) -> (Option<u64>, Vec<u64>) {
    let (mut master, mut slaves) = (None, Vec::new());
    for w in c.runtime.list() {
        match c.runtime.status(w.id).await {
            Ok(s) if s.master => master = Some(w.id),
            Ok(_) => slaves.push(w.id),
            Err(_) => {}
        }
    }
    slaves.sort_unstable();
    (master, slaves)
}

/// Waits until a master leads (one elected and taking writes).
pub async fn master_id(c: &Cluster) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let (Some(m), _) = roles(c).await {
            return m;
        }
        assert!(Instant::now() < deadline, "no master was elected");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until worker `id` serves (ready) at `seq` or past it.
pub async fn serves_from(c: &Cluster, id: u64, seq: u64, what: &str) {
    let rt = c.runtime.clone();
    eventually(what, actors::DEADLINE, || {
        let rt = rt.clone();
        async move {
            rt.status(id)
                .await
                .is_ok_and(|s| s.ready && s.applied_seq >= seq)
        }
    })
    .await;
}

/// The ids of the workers running now, ascending.
pub fn running(c: &Cluster) -> Vec<u64> {
    let mut ids: Vec<u64> = c.runtime.list().iter().map(|w| w.id).collect();
    ids.sort_unstable();
    ids
}

/// Waits until every running worker has applied at least `seq`.
pub async fn all_applied(c: &Cluster, seq: u64, within: Duration) {
    let rt = c.runtime.clone();
    eventually("every worker to apply it", within, || {
        let rt = rt.clone();
        async move {
            for w in rt.list() {
                if !rt.status(w.id).await.is_ok_and(|s| s.applied_seq >= seq) {
                    return false;
                }
            }
            true
        }
    })
    .await;
}

/// Messages in each queue of a virtual host, by name.
pub fn queue_depths(vhost: &str) -> std::collections::BTreeMap<String, u64> {
    queue_column(vhost, "messages")
}

/// One numeric column of `rabbitmqctl list_queues` (`messages_ready`,
/// `consumers`, ...) for each queue of a virtual host, by name.
pub fn queue_column(vhost: &str, column: &str) -> std::collections::BTreeMap<String, u64> {
    rabbitmqctl(&[
        "list_queues",
        "-p",
        vhost,
        "--no-table-headers",
        "-q",
        "name",
        column,
    ])
    .lines()
    .filter_map(|l| {
        let mut f = l.split_whitespace();
        Some((f.next()?.to_owned(), f.next()?.parse().ok()?))
    })
    .collect()
}

/// Sends `signal` to process `pid` (SIGSTOP pauses it, SIGCONT resumes).
pub fn signal(pid: u64, signal: i32) {
    // SAFETY: kill(2) has no memory effects; a stale pid at worst fails.
    let rc = unsafe { libc::kill(pid as libc::pid_t, signal) };
    assert_eq!(rc, 0, "kill({pid}, {signal})");
}

/// Polls until `f` holds or the deadline passes.
pub async fn eventually<F, Fut>(what: &str, within: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Worker `id`'s store, opened after a stop.
pub fn store(dir: &Path, id: u64) -> Store {
    let schema = Arc::new(dbaas::model::Schema::rideshare());
    let path = dbaas::runtime::worker_dir(&dir.join("workers"), id);
    Store::open(&path, schema).expect("store opens")
}

/// Every worker's (applied seq, checksum), read from its store after a stop.
pub fn stores(dir: &Path, ids: &[u64]) -> Vec<(u64, u64)> {
    ids.iter()
        .map(|&id| {
            let s = store(dir, id);
            (s.applied_seq(), s.checksum().expect("checksum"))
        })
        .collect()
}

/// A new user `name`.
pub fn user(name: &str) -> WriteOp {
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

/// How many users there are.
pub fn count_users() -> ReadOp {
    ReadOp::Count {
        table: "users".into(),
        filter: vec![],
    }
}

/// The worker image the Docker tests use, built from this build's own
/// `dbaas` binary (static under `scripts/test`); None, or a failure under
/// `DBAAS_REQUIRE_SERVICES=1`, when there is no Docker engine or the
/// binary is not static.
pub async fn docker_image() -> Option<(bollard::Docker, String)> {
    const TAG: &str = "dbaas:test";
    static BUILT: tokio::sync::Mutex<bool> = tokio::sync::Mutex::const_new(false);
    let required = std::env::var("DBAAS_REQUIRE_SERVICES").is_ok();
    let skip = |why: String| {
        assert!(!required, "{why}, but Docker tests are required");
        eprintln!("skipped: {why}");
        None
    };
    let exe = Path::new(env!("CARGO_BIN_EXE_dbaas"));
    if !dbaas::runtime::docker::is_static(exe).unwrap_or(false) {
        return skip(format!(
            "{} is not static (scripts/test builds for the static target)",
            exe.display()
        ));
    }
    let docker = match dbaas::runtime::docker::connect().await {
        Ok(d) => d,
        Err(e) => return skip(format!("no Docker engine: {e}")),
    };
    let mut built = BUILT.lock().await;
    if !*built {
        dbaas::runtime::docker::ensure_image(&docker, TAG, exe)
            .await
            .expect("the worker image builds");
        *built = true;
    }
    Some((docker, TAG.to_owned()))
}

/// A cluster whose workers are containers of the test image, on a fresh
/// virtual host and ZooKeeper root; with its broker URL and coordinator.
pub async fn docker_cluster(dir: &Path, slaves: usize) -> Option<(Cluster, String, CoordTarget)> {
    let (docker, image) = docker_image().await?;
    let (_, url) = fresh_vhost(&amqp_url()?);
    let zk = fresh_zk(ZK_SESSION)?;
    let c = docker_cluster_at(dir, slaves, docker, &image, &url, &zk).await;
    Some((c, url, zk))
}

/// A cluster of worker containers on the broker at `url` and ZooKeeper
/// at `zk`, adopting those of its cluster that run already.
pub async fn docker_cluster_at(
    dir: &Path,
    slaves: usize,
    docker: bollard::Docker,
    image: &str,
    url: &str,
    zk: &CoordTarget,
) -> Cluster {
    logs();
    let broker: Arc<dyn Broker> = Arc::new(
        AmqpBroker::connect(url)
            .await
            .expect("RabbitMQ is reachable"),
    );
    let workers = dbaas::system::workers_dir(dir).unwrap();
    let rt = dbaas::runtime::DockerRuntime::new(docker, image, url, &workers, zk.clone())
        .expect("the Docker runtime");
    let coordination = Coordination::ZooKeeper(zk.clone());
    Cluster::start_with(dir, slaves, broker, Arc::new(rt), coordination)
        .await
        .expect("cluster starts")
}

/// The engine and the worker image for the Swarm tests: the engine must
/// manage a swarm (`scripts/test` makes it a single-node one); None, or a
/// failure under `DBAAS_REQUIRE_SERVICES=1`, when it does not.
pub async fn swarm_image() -> Option<(bollard::Docker, String)> {
    let (docker, image) = docker_image().await?;
    let info = docker.info().await.expect("docker info");
    if let Err(e) = dbaas::runtime::swarm::manager_node(&info) {
        assert!(
            std::env::var("DBAAS_REQUIRE_SERVICES").is_err(),
            "{e}, but Swarm tests are required"
        );
        eprintln!("skipped: {e}");
        return None;
    }
    Some((docker, image))
}

/// A cluster whose workers are Swarm services of the test image, on a
/// fresh virtual host and ZooKeeper root; with its broker URL and
/// coordinator.
pub async fn swarm_cluster(dir: &Path, slaves: usize) -> Option<(Cluster, String, CoordTarget)> {
    let (docker, image) = swarm_image().await?;
    let (_, url) = fresh_vhost(&amqp_url()?);
    let zk = fresh_zk(ZK_SESSION)?;
    let c = swarm_cluster_at(dir, slaves, docker, &image, &url, &zk).await;
    Some((c, url, zk))
}

/// A cluster of worker services on the broker at `url` and ZooKeeper at
/// `zk`, adopting those of its cluster that run already.
pub async fn swarm_cluster_at(
    dir: &Path,
    slaves: usize,
    docker: bollard::Docker,
    image: &str,
    url: &str,
    zk: &CoordTarget,
) -> Cluster {
    logs();
    let broker: Arc<dyn Broker> = Arc::new(
        AmqpBroker::connect(url)
            .await
            .expect("RabbitMQ is reachable"),
    );
    let workers = dbaas::system::workers_dir(dir).unwrap();
    let rt = dbaas::runtime::SwarmRuntime::new(docker, image, url, &workers, zk.clone())
        .await
        .expect("the Swarm runtime");
    let coordination = Coordination::ZooKeeper(zk.clone());
    Cluster::start_with(dir, slaves, broker, Arc::new(rt), coordination)
        .await
        .expect("cluster starts")
}

/// The worker services of `cluster` the swarm has.
pub async fn services_of(docker: &bollard::Docker, cluster: u64) -> Vec<bollard::models::Service> {
    let filters = std::collections::HashMap::from([(
        "label".to_owned(),
        vec![format!("dbaas.cluster={cluster:016x}")],
    )]);
    let options = bollard::query_parameters::ListServicesOptionsBuilder::default()
        .filters(&filters)
        .build();
    docker
        .list_services(Some(options))
        .await
        .expect("services listed")
}

/// The running container of worker `id` of `cluster` (a Swarm task's).
pub async fn worker_container(docker: &bollard::Docker, cluster: u64, id: u64) -> String {
    let filters = std::collections::HashMap::from([(
        "label".to_owned(),
        vec![
            format!("dbaas.cluster={cluster:016x}"),
            format!("dbaas.worker={id}"),
        ],
    )]);
    let options = bollard::query_parameters::ListContainersOptionsBuilder::default()
        .filters(&filters)
        .build();
    let running = docker
        .list_containers(Some(options))
        .await
        .expect("containers listed");
    assert_eq!(running.len(), 1, "worker {id}'s containers: {running:?}");
    running[0].id.clone().expect("a container id")
}

/// The names of the containers of `cluster` the engine has, running or not.
pub async fn containers_of(docker: &bollard::Docker, cluster: u64) -> Vec<String> {
    list_containers(docker, cluster, true).await
}

/// The names of the running containers of `cluster`.
pub async fn running_containers_of(docker: &bollard::Docker, cluster: u64) -> Vec<String> {
    list_containers(docker, cluster, false).await
}

async fn list_containers(docker: &bollard::Docker, cluster: u64, all: bool) -> Vec<String> {
    let filters = std::collections::HashMap::from([(
        "label".to_owned(),
        vec![format!("dbaas.cluster={cluster:016x}")],
    )]);
    let options = bollard::query_parameters::ListContainersOptionsBuilder::default()
        .all(all)
        .filters(&filters)
        .build();
    docker
        .list_containers(Some(options))
        .await
        .expect("containers listed")
        .into_iter()
        .flat_map(|c| c.names.unwrap_or_default())
        .collect()
}

/// How long a `Load` waits for more acknowledged writes.
const LOAD_DEADLINE: Duration = Duration::from_secs(60);

/// Writers that keep writing until stopped, every write acknowledged,
/// and readers (eventual counts) if asked for, every read answered.
pub struct Load {
    acked: Arc<AtomicU64>,
    reads: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<u64>>,
}

impl Load {
    pub fn start(c: &Cluster, writers: u64) -> Load {
        let acked = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..writers)
            .map(|w| {
                let (orch, acked, stop) = (c.orchestrator.clone(), acked.clone(), stop.clone());
                actix::spawn(async move {
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        orch.write(user(&format!("w{w}-{i}")))
                            .await
                            .expect("every write acknowledged");
                        acked.fetch_add(1, Ordering::Relaxed);
                        i += 1;
                    }
                    i
                })
            })
            .collect();
        let reads = Arc::default();
        Load {
            acked,
            reads,
            stop,
            tasks,
        }
    }

    /// Adds `readers` that count users (eventually consistent) until
    /// stopped; every read must be answered.
    pub fn with_readers(mut self, c: &Cluster, readers: u64) -> Load {
        for _ in 0..readers {
            let (orch, reads) = (c.orchestrator.clone(), self.reads.clone());
            let stop = self.stop.clone();
            self.tasks.push(actix::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    orch.read(count_users(), dbaas::model::Consistency::Eventual)
                        .await
                        .expect("every read answered");
                    reads.fetch_add(1, Ordering::Relaxed);
                }
                // Writes are what the total counts.
                0
            }));
        }
        self
    }

    /// Waits for `n` more acknowledged writes.
    pub async fn more(&self, n: u64) {
        Self::progress(&self.acked, n, "writes to be acknowledged").await;
    }

    /// How many writes have been acknowledged so far.
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Waits for `n` more answered reads.
    pub async fn more_reads(&self, n: u64) {
        Self::progress(&self.reads, n, "reads to be answered").await;
    }

    async fn progress(counter: &Arc<AtomicU64>, n: u64, what: &str) {
        let target = counter.load(Ordering::Relaxed) + n;
        eventually(what, LOAD_DEADLINE, || {
            let counter = counter.clone();
            async move { counter.load(Ordering::Relaxed) >= target }
        })
        .await;
    }

    pub async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = 0;
        for t in self.tasks {
            total += t.await.expect("a writer failed");
        }
        total
    }
}

/// Removes the worker services of a cluster however a test ends (they
/// outlive the orchestrators, and a failed test would leave them).
pub struct Services(pub u64);

impl Drop for Services {
    fn drop(&mut self) {
        let label = format!("label=dbaas.cluster={:016x}", self.0);
        let Ok(out) = std::process::Command::new("docker")
            .args(["service", "ls", "-q", "--filter", &label])
            .output()
        else {
            return;
        };
        let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        if !ids.is_empty() {
            let _ = std::process::Command::new("docker")
                .args(["service", "rm"])
                .args(&ids)
                .output();
        }
    }
}
