//! `ferry quarantine ...`: read the items that failed validation, with their reasons.

use std::io::Write;
use std::path::Path;

use anyhow::Context;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum QuarantineCommand {
    /// Print quarantined items, oldest first, one JSON object per line:
    /// {"offset", "receivedAt", "sourceId", "code", "message", "field", "messageId", "item"}.
    ///
    /// Examples:
    ///   ferry quarantine list --limit 20
    ///   ferry quarantine list | jq -r .code | sort | uniq -c
    #[command(verbatim_doc_comment)]
    List {
        /// Start at this quarantine offset.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Print at most this many items.
        #[arg(long)]
        limit: Option<usize>,
    },
}

pub(crate) fn run(data_dir: &Path, command: QuarantineCommand) -> anyhow::Result<()> {
    let QuarantineCommand::List { from, limit } = command;
    let dir = data_dir.join("quarantine");
    if !dir.exists() {
        println!("quarantine is empty (no {} yet)", dir.display());
        return Ok(());
    }
    let view = ferry_log::inspect::open_view(&dir)
        .with_context(|| format!("cannot read the quarantine in {}", dir.display()))?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut next = from;
    let mut left = limit.unwrap_or(usize::MAX);
    while left > 0 {
        let records = view.read(next, left.min(1024))?;
        let Some(last) = records.last() else { break };
        next = last.0 + 1;
        for (offset, record) in &records {
            // Records are JSON objects written by ferry-event; add the offset up front.
            let body = std::str::from_utf8(record).unwrap_or("{}").trim();
            let rest = body.strip_prefix('{').unwrap_or("}");
            let separator = if rest.trim_start().starts_with('}') { "" } else { "," };
            writeln!(out, "{{\"offset\":{offset}{separator}{rest}")?;
        }
        left -= records.len();
    }
    out.flush()?;
    Ok(())
}
