//! `ferry log ...`: inspect and repair the embedded log.
//!
//! SKELETON: the helper owning ferry-log fills this in.

use std::path::PathBuf;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum LogCommand {
    /// Chunks, offsets, consumers and their lag, disk use.
    Stat,
}

pub(crate) fn run(_data_dir: PathBuf, _command: LogCommand) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
