//! `vswitch demo`: placeholder until the namespace crate lands.
use anyhow::Result;

use crate::cli::DemoArgs;

pub fn run(_args: &DemoArgs) -> Result<()> {
    anyhow::bail!("demo not yet available")
}
