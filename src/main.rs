//! The `dbaas` binary: one binary, one code path, a subcommand per part.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use dbaas::config::UpArgs;
use dbaas::node;

/// glibc's malloc showed as about a tenth of the server's CPU, with
/// its arena locks contended between the HTTP, actor and broker threads.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "dbaas",
    version,
    about = "A highly available database as a service and the RideShare app on it"
)]
struct Cli {
    /// Guards the admin endpoints (crash/*, db/clear, db/backup,
    /// db/restore): with a token they need `Authorization: Bearer <token>`
    /// (401 otherwise); without one they are open, as the original was.
    /// `backup` and `restore` send it.
    #[arg(long, global = true, env = "DBAAS_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole system in one process: gateway, users, rides,
    /// orchestrator, a master and slaves (in-process broker).
    Up(UpArgs),
    /// One worker (master or slave) over RabbitMQ.
    Worker(node::WorkerArgs),
    /// The orchestrator's DB API over RabbitMQ, workers as child processes.
    Orchestrator(node::OrchestratorArgs),
    /// The RideShare users service.
    Users(node::ServiceArgs),
    /// The RideShare rides service.
    Rides(node::ServiceArgs),
    /// The gateway in front of the users and rides services.
    Gateway(node::GatewayArgs),
    /// The cluster at a glance: the master, every worker, the traffic and
    /// the recent events, from a running orchestrator.
    Status(dbaas::cli::status::StatusArgs),
    /// Write a backup of the database (one seq, checked whole) to a file.
    Backup(dbaas::cli::backup::BackupArgs),
    /// Replace every table's rows with a backup file's, as one step.
    Restore(dbaas::cli::backup::RestoreArgs),
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    dbaas::init_logs();
    dbaas::http::admin::set_token(cli.admin_token);
    let system = actix::System::new;
    let result = match cli.command {
        Command::Up(args) => args
            .resolve()
            .and_then(|cfg| system().block_on(dbaas::system::run_up(cfg, shutdown_signal()))),
        Command::Worker(args) => system().block_on(node::run_worker(args, shutdown_signal())),
        Command::Orchestrator(args) => {
            system().block_on(node::run_orchestrator(args, shutdown_signal()))
        }
        Command::Users(args) => system().block_on(node::run_service(true, args, shutdown_signal())),
        Command::Rides(args) => {
            system().block_on(node::run_service(false, args, shutdown_signal()))
        }
        Command::Gateway(args) => system().block_on(node::run_gateway(args, shutdown_signal())),
        Command::Status(args) => system().block_on(dbaas::cli::status::run(args)),
        Command::Backup(args) => system().block_on(dbaas::cli::backup::run_backup(&args)),
        Command::Restore(args) => system().block_on(dbaas::cli::backup::run_restore(&args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dbaas: {e}");
            ExitCode::FAILURE
        }
    }
}
