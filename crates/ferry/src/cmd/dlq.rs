//! `ferry dlq ...`: inspect and redrive dead letters. Works while `ferry serve` runs.

use std::io::Write;
use std::sync::Arc;

use anyhow::Context;
use ferry_api::admin::DeadLetterFilter;
use ferry_delivery::{DeadLetters, Filter};
use ferry_destinations::Destination;

use crate::admin::dead_letter_view;
use crate::cmd::{ProgressLine, parse_time};
use crate::config::Config;
use crate::destinations;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum DlqCommand {
    /// List dead letters, oldest first (not those already redriven, unless --all).
    ///
    /// Examples:
    ///   ferry dlq list
    ///   ferry dlq list --destination warehouse --error timeout --json | jq .reason
    #[command(verbatim_doc_comment)]
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// Print at most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one dead letter: every attempt's error and the stored event.
    ///
    /// Example: ferry dlq show 42
    #[command(verbatim_doc_comment)]
    Show {
        /// The id `ferry dlq list` prints.
        id: i64,
    },
    /// Send dead letters to their destination again; delivered ones are marked redriven,
    /// the others keep the new attempt.
    ///
    /// Examples:
    ///   ferry dlq redrive --destination warehouse
    ///   ferry dlq redrive --event "Order Completed" --since 2026-11-28T00:00:00Z
    #[command(verbatim_doc_comment)]
    Redrive {
        #[command(flatten)]
        filter: FilterArgs,
    },
}

#[derive(Debug, clap::Args)]
pub(crate) struct FilterArgs {
    /// Only this destination.
    #[arg(long)]
    destination: Option<String>,
    /// Only those whose reason or an attempt's error contains this text.
    #[arg(long)]
    error: Option<String>,
    /// Only this track event name.
    #[arg(long)]
    event: Option<String>,
    /// Only events received at or after this time (ISO-8601 or an age such as 2h).
    #[arg(long)]
    since: Option<String>,
    /// Only events received before this time.
    #[arg(long)]
    until: Option<String>,
    /// Include dead letters already redriven.
    #[arg(long)]
    all: bool,
}

impl FilterArgs {
    /// The store's filter, as the admin API makes it (after the times, which the command
    /// line also takes as ages, are read).
    fn filter(&self, limit: Option<usize>) -> anyhow::Result<Filter> {
        let time = |t: &Option<String>, flag: &str| -> anyhow::Result<Option<String>> {
            t.as_deref()
                .map(|t| parse_time(t).map(ferry_event::format_time).with_context(|| flag.to_owned()))
                .transpose()
        };
        let filter = DeadLetterFilter {
            destination: self.destination.clone(),
            error: self.error.clone(),
            event: self.event.clone(),
            since: time(&self.since, "--since")?,
            until: time(&self.until, "--until")?,
            all: self.all,
            limit,
        };
        Ok(crate::admin::store_filter(&filter, ferry_event::parse_time)?)
    }
}

fn open(config: &Config) -> anyhow::Result<DeadLetters> {
    let path = config.data_dir.join("dead-letters.db");
    if !path.exists() {
        anyhow::bail!("no dead letters at {} (is --data-dir right? ferry serve creates it)", path.display());
    }
    DeadLetters::open(&path).with_context(|| format!("cannot open {}", path.display()))
}

pub(crate) fn run(config: &Config, command: DlqCommand) -> anyhow::Result<()> {
    let store = open(config)?;
    match command {
        DlqCommand::List { filter, limit, json } => list(&store, &filter.filter(Some(limit))?, json),
        DlqCommand::Show { id } => {
            let letter =
                store.get(id)?.with_context(|| format!("no dead letter {id}; `ferry dlq list` shows the ids"))?;
            println!("{}", serde_json::to_string_pretty(&dead_letter_view(&letter, true))?);
            Ok(())
        }
        DlqCommand::Redrive { filter } => redrive(config, &store, &filter.filter(None)?),
    }
}

fn list(store: &DeadLetters, filter: &Filter, json: bool) -> anyhow::Result<()> {
    let letters = store.list(filter)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if json {
        for letter in &letters {
            writeln!(out, "{}", serde_json::to_string(&dead_letter_view(letter, false))?)?;
        }
        return Ok(out.flush()?);
    }
    if letters.is_empty() {
        writeln!(out, "no dead letters match")?;
        return Ok(out.flush()?);
    }
    writeln!(out, "{:>6}  {:<16} {:<24} {:<24} {:>8}  reason", "id", "destination", "dead at", "event", "attempts")?;
    for l in &letters {
        let event = l.event.clone().unwrap_or_else(|| l.kind.clone());
        let mut reason = l.reason.replace('\n', " ");
        if reason.chars().count() > 80 {
            reason = reason.chars().take(79).collect::<String>() + "…";
        }
        writeln!(
            out,
            "{:>6}  {:<16} {:<24} {:<24} {:>8}  {reason}",
            l.id,
            l.destination,
            l.dead_at,
            event,
            l.attempts.len()
        )?;
    }
    writeln!(out, "\n{} shown; `ferry dlq show ID` for the attempts and the event", letters.len())?;
    Ok(out.flush()?)
}

fn redrive(config: &Config, store: &DeadLetters, filter: &Filter) -> anyhow::Result<()> {
    let mut built = std::collections::HashMap::new();
    for d in destinations::configured(config) {
        let b = destinations::build(config, &d)?;
        built.insert(d.name.clone(), b.destination);
    }
    let lookup = |name: &str| built.get(name).cloned() as Option<Arc<dyn Destination>>;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let mut line = ProgressLine::new();
    let report = runtime.block_on(ferry_delivery::redrive(store, filter, &lookup, 500, &mut |p| {
        line.show(p.scanned, p.total, &format!("dead letters, {} delivered, {} failed", p.delivered, p.failed), false);
        true
    }))?;
    line.show(
        report.scanned,
        report.total,
        &format!("dead letters, {} delivered, {} failed", report.delivered, report.failed),
        true,
    );
    for destination in built.values() {
        runtime.block_on(destination.close());
    }
    println!("redrove {} dead letters: {} delivered, {} still failing", report.total, report.delivered, report.failed);
    if report.failed > 0 {
        anyhow::bail!(
            "{} dead letters are still failing (last error: {}); they stay in `ferry dlq list`",
            report.failed,
            report.last_error.unwrap_or_default()
        );
    }
    Ok(())
}
