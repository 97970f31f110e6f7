//! The `dbaas` binary: one binary, one code path, a subcommand per part.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use dbaas::config::UpArgs;

#[derive(Parser)]
#[command(
    name = "dbaas",
    version,
    about = "A highly available database as a service and the RideShare app on it"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole system in one process: gateway, users, rides,
    /// orchestrator, a master and slaves (in-process broker).
    Up(UpArgs),
    /// Drive load against a running system and report throughput and latency.
    Loadgen(dbaas::loadgen::LoadArgs),
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
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Up(args) => args.resolve().and_then(|cfg| {
            actix::System::new().block_on(dbaas::system::run_up(cfg, shutdown_signal()))
        }),
        Command::Loadgen(args) => dbaas::loadgen::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dbaas: {e}");
            ExitCode::FAILURE
        }
    }
}
