//! `ferry quarantine ...`: read the items that failed validation, with their reasons.

use std::path::Path;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum QuarantineCommand {
    /// Print quarantined items, oldest first, one JSON object per line.
    ///
    /// Example: ferry quarantine list --limit 20
    List {
        /// Start at this quarantine offset.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Print at most this many items.
        #[arg(long)]
        limit: Option<usize>,
    },
}

pub(crate) fn run(_data_dir: &Path, _command: QuarantineCommand) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
