//! `ferry replay`: send a time range of the log to one destination again.

use std::sync::Arc;

use anyhow::Context;
use ferry_delivery::ReplayRequest;

use crate::backend::Which;
use crate::cmd::{ProgressLine, parse_time};
use crate::config::Config;
use crate::destinations;

#[derive(Debug, clap::Args)]
pub(crate) struct ReplayArgs {
    /// The destination to send to, by its configured name.
    #[arg(long)]
    destination: String,
    /// Events received at or after this time: ISO-8601 (2026-11-28T10:00:00Z) or an age
    /// (30m, 2h, 7d).
    #[arg(long)]
    since: String,
    /// Events received before this time (default: up to the newest).
    #[arg(long)]
    until: Option<String>,
    /// Events per batch (default: the destination's batch size).
    #[arg(long)]
    batch: Option<usize>,
}

pub(crate) fn run(config: &Config, args: ReplayArgs) -> anyhow::Result<()> {
    let since = parse_time(&args.since).context("--since")?;
    let until = args.until.as_deref().map(parse_time).transpose().context("--until")?;
    if until.is_some_and(|u| u <= since) {
        anyhow::bail!("--until must be later than --since");
    }
    let configured = destinations::configured(config);
    let Some(destination) = configured.iter().find(|d| d.name == args.destination) else {
        let names: Vec<&str> = configured.iter().map(|d| d.name.as_str()).collect();
        anyhow::bail!("no destination named {:?}; configured: {}", args.destination, names.join(", "));
    };
    let built = destinations::build(config, destination)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let Some(records) = runtime.block_on(crate::backend::reader(config, Which::Events))? else {
        anyhow::bail!(
            "cannot read the log in {}: there is none; is --data-dir right?",
            config.data_dir.join("log").display()
        );
    };
    let records: Arc<dyn ferry_log_contract::Reader> = Arc::from(records);
    let request = ReplayRequest {
        destination: destination.name.clone(),
        since,
        until,
        batch_events: args.batch.unwrap_or(built.worker.batch_events).max(1),
        retries: 5,
        backoff: built.worker.backoff,
    };
    eprintln!(
        "replaying events received from {since}{} to {} ({})",
        until.map(|u| format!(" until {u}")).unwrap_or_default(),
        destination.name,
        built.target
    );
    let sink = built.destination.clone();
    let report = runtime.block_on(async move {
        tokio::spawn(async move {
            let mut line = ProgressLine::new();
            let report = ferry_delivery::replay(records.as_ref(), sink.as_ref(), &request, &mut |p| {
                line.show(
                    p.scanned,
                    p.total,
                    &format!("records, {} delivered, {} failed", p.delivered, p.failed),
                    false,
                );
                true
            })
            .await?;
            line.show(
                report.scanned,
                report.total,
                &format!("records, {} delivered, {} failed", report.delivered, report.failed),
                true,
            );
            std::io::Result::Ok(report)
        })
        .await
    })??;
    runtime.block_on(built.destination.close());
    println!(
        "delivered {} events, skipped {} (outside the range or switched off by integrations), failed {}",
        report.delivered, report.skipped, report.failed
    );
    if report.failed > 0 {
        anyhow::bail!(
            "{} events were not delivered (last error: {}); fix the destination and run the replay again",
            report.failed,
            report.last_error.unwrap_or_default()
        );
    }
    Ok(())
}
