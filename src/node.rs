//! Each part as a process of its own: `dbaas worker`, `dbaas orchestrator`,
//! `dbaas users`, `dbaas rides` and `dbaas gateway`. Every one prints
//! `listening: <name> <url>` lines and `ready` on stdout, logs to stderr,
//! and stops cleanly on SIGTERM.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use actix_web::{web, App, HttpResponse, HttpServer};
use serde::Deserialize;

use crate::broker::amqp::AmqpBroker;
use crate::error::Result;
use crate::http::common::{self, DEFAULT_BODY_LIMIT};
use crate::http::{self, orchestrator::OrchestratorState};
use crate::model::Schema;
use crate::runtime::{InProcessRuntime, Role, WorkerRuntime, WorkerSpec};
use crate::system::{backends, bind, url, Cluster};

/// The role a worker starts in.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum RoleArg {
    Master,
    Slave,
}

/// Flags of `dbaas worker`.
#[derive(clap::Args, Debug)]
pub struct WorkerArgs {
    /// The worker's numeric id (its database is `<data-dir>/worker-<id>`).
    #[arg(long, env = "DBAAS_WORKER_ID")]
    pub id: u64,
    /// The role it starts in; a slave may be promoted later in place.
    #[arg(long, value_enum, env = "DBAAS_WORKER_ROLE")]
    pub role: RoleArg,
    /// The epoch a master writes under.
    #[arg(long, default_value_t = 1, env = "DBAAS_EPOCH")]
    pub epoch: u64,
    /// The cluster it belongs to (16 hex digits); its store must be of
    /// that cluster, or new.
    #[arg(long, env = "DBAAS_CLUSTER_ID", value_parser = parse_cluster)]
    pub cluster: u64,
    /// Most messages the sync queue of a slave keeps while it is away.
    #[arg(long, env = "DBAAS_SYNC_QUEUE_CAP", default_value_t = crate::actors::SYNC_QUEUE_CAP)]
    pub sync_queue_cap: u32,
    /// The RabbitMQ to use.
    #[arg(long, env = "DBAAS_AMQP_URL")]
    pub amqp: String,
    #[arg(long, env = "DBAAS_DATA_DIR", default_value = "data/workers")]
    pub data_dir: PathBuf,
    /// Where the control listener (status, promote) listens.
    #[arg(long, env = "DBAAS_CONTROL_ADDR", default_value = "127.0.0.1:0")]
    pub control_addr: SocketAddr,
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
    /// The RabbitMQ to use.
    #[arg(long, env = "DBAAS_AMQP_URL")]
    pub amqp: String,
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
    /// The orchestrator's base URL.
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
    #[arg(long, env = "DBAAS_USERS_URL", default_value = "http://127.0.0.1:8081")]
    pub users: String,
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

type WorkerState = web::Data<(Arc<InProcessRuntime>, u64)>;

#[derive(Deserialize)]
struct PromoteParams {
    epoch: u64,
}

async fn worker_status(state: WorkerState) -> HttpResponse {
    common::reply(state.0.status(state.1).await)
}

async fn worker_promote(state: WorkerState, q: web::Query<PromoteParams>) -> HttpResponse {
    let promoted = state.0.promote(state.1, q.epoch).await;
    common::reply(promoted.map(|()| serde_json::json!({})))
}

/// `dbaas worker`: one master or slave over RabbitMQ.
pub async fn run_worker(args: WorkerArgs, shutdown: impl Future<Output = ()>) -> Result<()> {
    let broker = Arc::new(AmqpBroker::new(&args.amqp));
    let schema = Arc::new(Schema::rideshare());
    let rt = InProcessRuntime::new(broker, schema, &args.data_dir);
    let rt = Arc::new(rt.with_sync_cap(args.sync_queue_cap));
    let role = match args.role {
        RoleArg::Master => Role::Master,
        RoleArg::Slave => Role::Slave,
    };
    let spec = WorkerSpec {
        id: args.id,
        role,
        epoch: args.epoch,
        cluster: args.cluster,
    };
    rt.start(spec).await?;
    let listener = bind(args.control_addr)?;
    let control = url(&listener)?;
    let state: WorkerState = web::Data::new((rt.clone(), args.id));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .route("/status", web::get().to(worker_status))
            .route("/promote", web::post().to(worker_promote))
            .route("/healthz", web::get().to(common::healthz))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)?
    .run();
    println!("listening: control {control}");
    serve(server, shutdown).await;
    rt.stop(args.id).await
}

/// `dbaas orchestrator`: the DB API over RabbitMQ, with its workers as
/// child processes.
pub async fn run_orchestrator(
    args: OrchestratorArgs,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let listener = bind(args.addr)?;
    let (broker, runtime) = backends(Some(&args.amqp), &args.data_dir, args.sync_queue_cap).await?;
    let cluster = Cluster::start_with(&args.data_dir, args.slaves, broker, runtime).await?;
    let state = OrchestratorState {
        handle: cluster.orchestrator.clone(),
        schema: cluster.schema.clone(),
        runtime: cluster.runtime.clone(),
    };
    println!("listening: orchestrator {}", url(&listener)?);
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
    let listener = bind(args.addr)?;
    println!("listening: gateway {}", url(&listener)?);
    let server = http::gateway::server(listener, &args.users, &args.rides, args.body_limit)?;
    serve(server, shutdown).await;
    Ok(())
}
