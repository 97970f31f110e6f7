//! Each part as a process of its own: `dbaas worker`, `dbaas orchestrator`,
//! `dbaas users`, `dbaas rides` and `dbaas gateway`. Every one prints
//! `listening: <name> <url>` lines and `ready` on stdout, logs to stderr,
//! and stops cleanly on SIGTERM.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use actix::prelude::*;
use actix_web::{web, App, HttpResponse, HttpServer};

use crate::actors::messages::{GetStatus, Shutdown};
use crate::actors::worker::{StoreAt, Worker, WorkerConfig};
use crate::broker::amqp::AmqpBroker;
use crate::error::{Error, Result};
use crate::http::common::{self, DEFAULT_BODY_LIMIT};
use crate::http::{self, orchestrator::OrchestratorState};
use crate::model::Schema;
use crate::runtime::CoordTarget;
use crate::system::{bind, start_cluster, url, ClusterConfig, Coordination, Workers};

/// Where a worker or the orchestrator finds ZooKeeper.
#[derive(clap::Args, Debug, Clone)]
pub struct ZkArgs {
    /// ZooKeeper, `host:port[,host:port...]`.
    #[arg(long, env = "DBAAS_ZK")]
    pub zk: String,
    /// The cluster's root path there.
    #[arg(long, env = "DBAAS_ZK_ROOT", default_value = crate::config::ZK_ROOT)]
    pub zk_root: String,
    /// The session timeout in milliseconds (see `dbaas up --help`; by
    /// default 600 with one server, 1500 with several).
    #[arg(long, env = "DBAAS_SESSION_TIMEOUT_MS")]
    pub session_timeout_ms: Option<u64>,
}

impl ZkArgs {
    fn target(&self) -> Result<CoordTarget> {
        crate::config::check_root(&self.zk_root)?;
        Ok(CoordTarget {
            hosts: self.zk.clone(),
            root: self.zk_root.clone(),
            session_timeout: self.session_timeout_ms.map_or_else(
                || crate::config::default_session_timeout(&self.zk),
                std::time::Duration::from_millis,
            ),
        })
    }
}

/// Flags of `dbaas worker`.
#[derive(clap::Args, Debug)]
pub struct WorkerArgs {
    /// The worker's numeric id (its database is `<data-dir>/worker-<id>`).
    #[arg(long, env = "DBAAS_WORKER_ID")]
    pub id: u64,
    /// The cluster it belongs to (16 hex digits); its store must be of
    /// that cluster, or new.
    #[arg(long, env = "DBAAS_CLUSTER_ID", value_parser = parse_cluster)]
    pub cluster: u64,
    /// Most messages the sync queue of a slave keeps while it is away.
    #[arg(long, env = "DBAAS_SYNC_QUEUE_CAP", default_value_t = crate::actors::SYNC_QUEUE_CAP)]
    pub sync_queue_cap: u32,
    /// The RabbitMQ to use: `URL[,URL...]` (the nodes of one cluster),
    /// perhaps with the queue type as one more element
    /// (`queue-type=classic|quorum`), as its orchestrator gives it.
    #[arg(long, env = "DBAAS_AMQP_URL")]
    pub amqp: String,
    #[command(flatten)]
    pub zk: ZkArgs,
    #[arg(long, env = "DBAAS_DATA_DIR", default_value = "data/workers")]
    pub data_dir: PathBuf,
    /// Where the control listener (status) listens.
    #[arg(long, env = "DBAAS_CONTROL_ADDR", default_value = "127.0.0.1:0")]
    pub control_addr: SocketAddr,
    /// The number the worker is known by (in the coordinator, the cluster
    /// view and the crash APIs) instead of its process id: a worker in a
    /// pid namespace of its own, as a Swarm task is, is process 1 like
    /// every other.
    #[arg(long, env = "DBAAS_WORKER_PID", value_parser = clap::value_parser!(u64).range(1..))]
    pub pid: Option<u64>,
}

/// Flags of `dbaas orchestrator`.
#[derive(clap::Args, Debug)]
pub struct OrchestratorArgs {
    #[arg(
        long,
        env = "DBAAS_ORCHESTRATOR_ADDR",
        default_value = "127.0.0.1:8090"
    )]
    pub addr: SocketAddr,
    /// The RabbitMQ to use: `URL[,URL...]` (the nodes of one cluster).
    #[arg(long, env = "DBAAS_AMQP_URL")]
    pub amqp: String,
    /// The type of the durable queues: `classic` (the default with one
    /// URL) or `quorum` (the default with several).
    #[arg(long, env = "DBAAS_QUEUE_TYPE")]
    pub queue_type: Option<crate::broker::amqp::QueueType>,
    #[command(flatten)]
    pub zk: ZkArgs,
    /// Where the workers (child processes) keep their databases.
    #[arg(long, env = "DBAAS_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    #[arg(long, env = "DBAAS_SLAVES", default_value_t = 1)]
    pub slaves: usize,
    #[arg(long, env = "DBAAS_BODY_LIMIT", default_value_t = DEFAULT_BODY_LIMIT)]
    pub body_limit: usize,
    /// Most messages a slave's sync queue keeps while the slave is away.
    #[arg(long, env = "DBAAS_SYNC_QUEUE_CAP", default_value_t = crate::actors::SYNC_QUEUE_CAP)]
    pub sync_queue_cap: u32,
    /// How long a request is retried (a failover under way) before it is
    /// answered 503, in milliseconds.
    #[arg(long, env = "DBAAS_REQUEST_DEADLINE_MS", default_value_t = crate::actors::REQUEST_DEADLINE.as_millis() as u64)]
    pub request_deadline_ms: u64,
    /// How long a worker whose session ended while its process runs on may
    /// take to come back before it is killed and started again, in
    /// milliseconds.
    #[arg(long, env = "DBAAS_HUNG_AFTER_MS", default_value_t = crate::actors::watcher::HUNG_AFTER.as_millis() as u64)]
    pub hung_after_ms: u64,
    /// What runs the workers: `process` (child processes), `docker` or
    /// `swarm`.
    #[arg(long, env = "DBAAS_RUNTIME", default_value = "process")]
    pub runtime: crate::config::RuntimeKind,
    /// The worker image with `--runtime docker` or `swarm`.
    #[arg(long, env = "DBAAS_IMAGE", default_value = crate::config::IMAGE)]
    pub image: String,
    #[command(flatten)]
    pub scale: crate::config::ScaleArgs,
}

/// A cluster id: 16 hex digits, not all zero.
fn parse_cluster(s: &str) -> std::result::Result<u64, String> {
    match u64::from_str_radix(s, 16) {
        Ok(0) => Err("cluster id 0 is reserved".into()),
        Ok(id) if s.len() <= 16 => Ok(id),
        _ => Err(format!("{s:?} is not a cluster id (hex digits)")),
    }
}

/// Flags of `dbaas users` and `dbaas rides`.
#[derive(clap::Args, Debug)]
pub struct ServiceArgs {
    #[arg(long, env = "DBAAS_SERVICE_ADDR")]
    pub addr: SocketAddr,
    /// The orchestrator's base URL, or several separated by commas: the
    /// service moves to the next when one cannot be reached or fails, and
    /// a write is sent again under the same idempotency key.
    #[arg(
        long,
        env = "DBAAS_ORCHESTRATOR_URL",
        default_value = "http://127.0.0.1:8090"
    )]
    pub orchestrator: String,
    #[arg(long, env = "DBAAS_BODY_LIMIT", default_value_t = DEFAULT_BODY_LIMIT)]
    pub body_limit: usize,
}

/// Flags of `dbaas gateway`.
#[derive(clap::Args, Debug)]
pub struct GatewayArgs {
    #[arg(long, env = "DBAAS_GATEWAY_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// The users service's base URL, or several separated by commas (the
    /// gateway moves to the next when it cannot connect to one or loses
    /// its answer).
    #[arg(long, env = "DBAAS_USERS_URL", default_value = "http://127.0.0.1:8081")]
    pub users: String,
    /// The rides service's base URL, or several separated by commas.
    #[arg(long, env = "DBAAS_RIDES_URL", default_value = "http://127.0.0.1:8082")]
    pub rides: String,
    #[arg(long, env = "DBAAS_BODY_LIMIT", default_value_t = DEFAULT_BODY_LIMIT)]
    pub body_limit: usize,
}

/// Serves until `shutdown`, then drains.
async fn serve(server: actix_web::dev::Server, shutdown: impl Future<Output = ()>) {
    let handle = server.handle();
    actix::spawn(server);
    println!("ready");
    shutdown.await;
    handle.stop(true).await;
}

type WorkerState = web::Data<Addr<Worker>>;

async fn worker_status(state: WorkerState) -> HttpResponse {
    let status = state.send(GetStatus).await;
    common::reply(status.map_err(|e| Error::Unavailable(e.to_string())))
}

/// `dbaas worker`: one worker over RabbitMQ, coordinated by ZooKeeper; it
/// starts as a slave and leads when elected.
pub async fn run_worker(args: WorkerArgs, shutdown: impl Future<Output = ()>) -> Result<()> {
    let broker = Arc::new(AmqpBroker::new(&args.amqp)?);
    let schema = Arc::new(Schema::rideshare());
    let at = StoreAt {
        dir: crate::runtime::worker_dir(&args.data_dir, args.id),
        schema,
        wait: None,
    };
    let target = args.zk.target()?;
    let cfg = WorkerConfig {
        id: args.id,
        pid: args.pid.unwrap_or_else(|| u64::from(std::process::id())),
        cluster: args.cluster,
        sync_cap: args.sync_queue_cap,
        session_timeout: target.session_timeout,
    };
    let connect = Coordination::ZooKeeper(target).connector();
    let worker = Worker::open(cfg, at, broker, connect).await?.start();
    let listener = bind(args.control_addr)?;
    let control = url(&listener)?;
    let state: WorkerState = web::Data::new(worker.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .route("/status", web::get().to(worker_status))
            .route("/healthz", web::get().to(common::healthz))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)?
    .run();
    println!("listening: control {control}");
    serve(server, shutdown).await;
    let _ = worker.send(Shutdown).await;
    Ok(())
}

/// `dbaas orchestrator`: the DB API over RabbitMQ, with its workers as
/// child processes coordinated by ZooKeeper.
pub async fn run_orchestrator(
    args: OrchestratorArgs,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let listener = bind(args.addr)?;
    let addr = url(&listener)?;
    let target = args.zk.target()?;
    let scale = args.scale.resolve(&crate::config::ScaleFile::default())?;
    let cluster = start_cluster(ClusterConfig {
        addr: addr.clone(),
        amqp: crate::config::amqp_target(Some(args.amqp), args.queue_type)?,
        zk: Some(target),
        data_dir: args.data_dir,
        slaves: args.slaves,
        sync_queue_cap: args.sync_queue_cap,
        workers: Workers::of(args.runtime, &args.image),
        request_deadline: std::time::Duration::from_millis(args.request_deadline_ms),
        hung_after: std::time::Duration::from_millis(args.hung_after_ms),
        scale,
    })
    .await?;
    let state = OrchestratorState::of(&cluster);
    println!("listening: orchestrator {addr}");
    let server = http::orchestrator::server(listener, state, args.body_limit, 2)?;
    serve(server, shutdown).await;
    cluster.stop().await;
    Ok(())
}

/// `dbaas users` / `dbaas rides`: one RideShare service.
pub async fn run_service(
    users: bool,
    args: ServiceArgs,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    http::instances::check_urls("--orchestrator", &args.orchestrator)?;
    let listener = bind(args.addr)?;
    let name = if users { "users" } else { "rides" };
    println!("listening: {name} {}", url(&listener)?);
    let server = if users {
        http::users::server(listener, &args.orchestrator, args.body_limit)
    } else {
        http::rides::server(listener, &args.orchestrator, args.body_limit)
    }?;
    serve(server, shutdown).await;
    Ok(())
}

/// `dbaas gateway`: the path-routing front door.
pub async fn run_gateway(args: GatewayArgs, shutdown: impl Future<Output = ()>) -> Result<()> {
    http::instances::check_urls("--users", &args.users)?;
    http::instances::check_urls("--rides", &args.rides)?;
    let listener = bind(args.addr)?;
    println!("listening: gateway {}", url(&listener)?);
    let server = http::gateway::server(listener, &args.users, &args.rides, args.body_limit)?;
    serve(server, shutdown).await;
    Ok(())
}
