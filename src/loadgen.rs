//! The load generator (placeholder until written).

use crate::error::Result;

/// Flags of `dbaas loadgen`.
#[derive(clap::Args, Debug)]
pub struct LoadArgs {}

pub fn run(_args: LoadArgs) -> Result<()> {
    Ok(())
}
