//! The `ferry` binary: command line, configuration, wiring. No business logic lives here.

mod admin;
mod allocator;
mod backend;
mod cmd;
mod config;
mod destinations;
mod serve;
mod telemetry;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// ferry: a self-hosted, Segment-compatible customer event pipeline.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, about, long_about = None)]
struct Cli {
    /// Configuration file (TOML).
    #[arg(long, short = 'c', env = "FERRY_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Data directory; overrides `data_dir` in the file.
    #[arg(long, env = "FERRY_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the collector: the Segment-compatible HTTP API writing to the durable log.
    ///
    /// Examples:
    ///   ferry serve
    ///   ferry serve --listen 0.0.0.0:8088 --sync interval
    #[command(verbatim_doc_comment)]
    Serve(serve::ServeArgs),
    /// Validate the configuration and print every problem at once.
    ///
    /// Example: ferry check --config ferry.toml
    #[command(verbatim_doc_comment)]
    Check,
    /// Inspect and repair the embedded event log.
    ///
    /// Examples:
    ///   ferry log stat
    ///   ferry log cat --from 0 --follow
    #[command(verbatim_doc_comment)]
    #[command(subcommand)]
    Log(cmd::log::LogCommand),
    /// List events that failed validation, with their reasons; show one; send one again.
    ///
    /// Examples:
    ///   ferry quarantine list --limit 20
    ///   ferry quarantine resubmit 12 --item fixed.json
    #[command(verbatim_doc_comment)]
    #[command(subcommand)]
    Quarantine(cmd::quarantine::QuarantineCommand),
    /// Inspect and redrive dead letters: events a destination refused or kept failing.
    ///
    /// Examples:
    ///   ferry dlq list
    ///   ferry dlq show 42
    ///   ferry dlq redrive --destination warehouse --error timeout
    #[command(verbatim_doc_comment)]
    #[command(subcommand)]
    Dlq(cmd::dlq::DlqCommand),
    /// Send a time range of the log to one destination again (idempotent destinations
    /// absorb what they already have). Runs beside a live ferry serve.
    ///
    /// Examples:
    ///   ferry replay --destination warehouse --since 2h
    ///   ferry replay --destination analytics --since 2026-11-28T00:00:00Z --until 2026-11-29T00:00:00Z
    #[command(verbatim_doc_comment)]
    Replay(cmd::replay::ReplayArgs),
    /// Watch the events a running server receives, live (the debugger's feed).
    ///
    /// Examples:
    ///   ferry tail
    ///   ferry tail --event order --json
    #[command(verbatim_doc_comment)]
    Tail(cmd::tail::TailArgs),
    /// Send one test event to a running server, as a Segment library would.
    ///
    /// Examples:
    ///   ferry send track --event 'Signed Up' --user-id u1
    ///   ferry send identify --user-id u1 --traits '{"plan":"pro"}'
    #[command(verbatim_doc_comment)]
    Send(cmd::send::SendArgs),
    /// Backfill events from a JSON Lines file (plain or gzip) through a running server's
    /// batch path, with progress and a summary.
    ///
    /// Example: ferry import events.jsonl.gz --write-key wk_backfill
    #[command(verbatim_doc_comment)]
    Import(cmd::import::ImportArgs),
}

fn main() -> anyhow::Result<()> {
    allocator::tune();
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG").unwrap_or_else(|_| "info".into());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();

    let mut config = config::Config::load(cli.config.as_deref()).or_else(|errors| report(&errors))?;
    if let Some(dir) = cli.data_dir {
        config.data_dir = dir;
    }
    match cli.command {
        Command::Serve(args) => serve::run(config, args),
        Command::Check => check(&config),
        Command::Log(command) => cmd::log::run(&config, command),
        Command::Quarantine(command) => cmd::quarantine::run(&config, command),
        Command::Dlq(command) => cmd::dlq::run(&config, command),
        Command::Replay(args) => cmd::replay::run(&config, args),
        Command::Tail(args) => cmd::tail::run(&config, args),
        Command::Send(args) => cmd::send::run(&config, args),
        Command::Import(args) => cmd::import::run(&config, args),
    }
}

fn check(config: &config::Config) -> anyhow::Result<()> {
    let problems = config.problems();
    if problems.is_empty() {
        println!("configuration is valid");
        return Ok(());
    }
    report(&problems)
}

/// Print every problem of the configuration, and fail.
fn report<T>(problems: &[String]) -> anyhow::Result<T> {
    for problem in problems {
        eprintln!("error: {problem}");
    }
    anyhow::bail!("{} problem(s) in the configuration; fix them and run `ferry check` again", problems.len())
}
