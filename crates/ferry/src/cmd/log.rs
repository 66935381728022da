//! `ferry log ...`: inspect and repair the embedded event log. Works while `ferry serve`
//! runs (read-only), except `salvage`, which needs the server stopped.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use ferry_log::inspect;

use crate::backend::Which;
use crate::cmd::Pages;
use crate::config::{Backend, Config};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum LogCommand {
    /// Chunks, offsets, consumers and their lag, disk use.
    ///
    /// Example: ferry log stat --json
    #[command(verbatim_doc_comment)]
    Stat {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print stored records, one JSON object per line: {"offset": N, "record": ...}.
    ///
    /// Examples:
    ///   ferry log cat
    ///   ferry log cat --from 1000 --follow | jq .record.event
    #[command(verbatim_doc_comment)]
    Cat {
        /// Start at this offset.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Keep printing new records as they arrive (Ctrl-C to stop).
        #[arg(long)]
        follow: bool,
        /// Stop after this many records.
        #[arg(long)]
        limit: Option<u64>,
    },
    /// Read every chunk and check every checksum; exit 1 if anything is corrupt.
    ///
    /// Example: ferry log verify
    #[command(verbatim_doc_comment)]
    Verify,
    /// Rewrite damaged chunks keeping every frame whose checksum holds, and cut a torn
    /// tail. Prints what was dropped. Stop ferry first.
    ///
    /// Example: ferry log salvage
    #[command(verbatim_doc_comment)]
    Salvage,
}

/// The event log's directory inside ferry's data directory.
pub(crate) fn log_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("log")
}

pub(crate) fn run(config: &Config, command: LogCommand) -> anyhow::Result<()> {
    let dir = log_dir(&config.data_dir);
    if config.log.backend == Backend::Nats && !matches!(command, LogCommand::Cat { .. }) {
        anyhow::bail!(
            "with log.backend = \"nats\" the log is stream {} on JetStream: `ferry log cat` reads it; for its state use `nats stream info {}`",
            config.nats.stream,
            config.nats.stream
        );
    }
    match command {
        LogCommand::Stat { json } => stat(&dir, json),
        LogCommand::Cat { from, follow, limit } => cat(config, from, follow, limit),
        LogCommand::Verify => verify(&dir),
        LogCommand::Salvage => salvage(&dir),
    }
}

fn open(dir: &Path) -> anyhow::Result<inspect::LogView> {
    inspect::open_view(dir).with_context(|| {
        format!(
            "cannot read the log in {}; is --data-dir right? (`ferry log verify` checks a damaged log)",
            dir.display()
        )
    })
}

fn stat(dir: &Path, json: bool) -> anyhow::Result<()> {
    let stat = open(dir)?.stat()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&stat)?);
        return Ok(());
    }
    println!("log        {}", stat.dir);
    println!(
        "offsets    {} .. {} ({} records kept)",
        stat.first_offset,
        stat.next_offset,
        stat.next_offset - stat.first_offset
    );
    println!("disk       {} bytes in {} chunks", stat.disk_bytes, stat.chunks.len());
    println!();
    println!("{:<28} {:>12} {:>12} {:>8} {:>12}  last append", "chunk", "first", "end", "frames", "bytes");
    for c in &stat.chunks {
        let last =
            jiff::Timestamp::from_millisecond(c.last_append_ms as i64).map(|t| t.to_string()).unwrap_or_default();
        println!("{:<28} {:>12} {:>12} {:>8} {:>12}  {last}", c.file, c.base_offset, c.end_offset, c.frames, c.bytes);
    }
    println!();
    if stat.cursors.is_empty() {
        println!("no consumers");
    }
    for cursor in &stat.cursors {
        println!("consumer {:<20} at {:>12}, lag {} records", cursor.name, cursor.offset, cursor.lag);
    }
    Ok(())
}

fn cat(config: &Config, from: u64, follow: bool, limit: Option<u64>) -> anyhow::Result<()> {
    let Some(view) = Pages::open(config, Which::Events)? else {
        let dir = log_dir(&config.data_dir);
        // The same message as the other commands give for a missing log.
        open(&dir)?;
        return Ok(());
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut next = from;
    let mut printed = 0u64;
    loop {
        // Without --follow, up to the end as it was at the start.
        let end = if follow { u64::MAX } else { view.end()? };
        loop {
            let records = view.read_before(next, end, 1024)?;
            let Some(last) = records.last() else { break };
            next = last.0 + 1;
            for (offset, record) in &records {
                if limit.is_some_and(|l| printed >= l) {
                    return Ok(out.flush()?);
                }
                write_line(&mut out, *offset, record)?;
                printed += 1;
            }
        }
        out.flush()?;
        if !follow {
            return Ok(());
        }
        // The server may be another process: look for new frames a few times a second.
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `{"offset":N,"record":...}`: the record as JSON when it is JSON, else as a string.
fn write_line(out: &mut impl Write, offset: u64, record: &[u8]) -> anyhow::Result<()> {
    let is_json = serde_json::from_slice::<serde::de::IgnoredAny>(record).is_ok();
    write!(out, "{{\"offset\":{offset},\"record\":")?;
    if is_json {
        out.write_all(record)?;
    } else {
        serde_json::to_writer(&mut *out, &String::from_utf8_lossy(record))?;
    }
    writeln!(out, "}}")?;
    Ok(())
}

fn progress(done: usize, total: usize) {
    eprint!("\rchecked {done}/{total} chunks");
    if done == total {
        eprintln!();
    }
}

fn verify(dir: &Path) -> anyhow::Result<()> {
    let report = inspect::verify(dir, &mut progress).with_context(|| format!("cannot verify {}", dir.display()))?;
    println!("{} chunks, {} frames, {} records, {} bytes", report.chunks, report.frames, report.records, report.bytes);
    if let Some((file, bytes)) = &report.torn_tail {
        println!(
            "torn tail: {bytes} bytes at the end of {file} (an interrupted write; cut off when ferry next opens the log)"
        );
    }
    for problem in &report.problems {
        println!(
            "corrupt: {} at byte {}: {} ({} valid frames after it)",
            problem.file, problem.position, problem.reason, problem.frames_after
        );
    }
    if report.is_clean() {
        println!("ok");
        Ok(())
    } else {
        anyhow::bail!("the log is corrupt; stop ferry and run `ferry log salvage` to keep every readable frame")
    }
}

fn salvage(dir: &Path) -> anyhow::Result<()> {
    let salvaged = inspect::salvage(dir, &mut progress).with_context(|| format!("cannot salvage {}", dir.display()))?;
    if salvaged.is_empty() {
        println!("nothing to salvage: every chunk is intact");
    }
    for chunk in &salvaged {
        println!("rewrote {}: dropped {} bytes", chunk.file, chunk.dropped_bytes);
        for (first, end) in &chunk.lost_offsets {
            println!("  lost offsets {first}..{end} ({} records)", end - first);
        }
    }
    Ok(())
}
