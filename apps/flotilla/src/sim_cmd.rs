//! `flotilla sim`: the deterministic simulator from the binary.

use anyhow::Result;
use clap::Args;

#[derive(Args, Debug)]
pub struct SimArgs {
    #[arg(long, default_value_t = 1000)]
    pub seeds: u64,
}

pub fn run(a: SimArgs) -> Result<()> {
    let _ = a;
    anyhow::bail!("not wired yet")
}

pub fn run_default() -> Result<()> {
    anyhow::bail!("not wired yet")
}
