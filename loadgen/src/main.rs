//! The `dbaas-loadgen` binary: the flags of [`dbaas_loadgen::LoadArgs`],
//! one run, the report on stdout, and exit status 1 with the reason on
//! stderr when the run could not be made or every measured request failed.

use std::process::ExitCode;

use clap::Parser;

use dbaas_loadgen::LoadArgs;

#[derive(Parser)]
#[command(
    name = "dbaas-loadgen",
    version,
    about = "Drive load against a running dbaas system and report throughput and latency"
)]
struct Cli {
    #[command(flatten)]
    args: LoadArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    dbaas::init_logs();
    match dbaas_loadgen::run(cli.args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dbaas-loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}
