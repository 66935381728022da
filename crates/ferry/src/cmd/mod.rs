//! One module per subcommand that has subcommands of its own, and what they share.

pub(crate) mod client;
pub(crate) mod dlq;
pub(crate) mod import;
pub(crate) mod log;
pub(crate) mod quarantine;
pub(crate) mod replay;
pub(crate) mod send;
pub(crate) mod tail;

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::backend::Which;
use crate::config::Config;

/// A log as a command reads it, page by page: the embedded log's files, or (cluster mode)
/// one subject of the JetStream stream. Reads that reach the end look for what was
/// appended since.
pub(crate) struct Pages {
    runtime: tokio::runtime::Runtime,
    reader: Box<dyn ferry_log_contract::Reader>,
}

impl Pages {
    /// The events or the quarantine, in `config`'s backend; `None` when an embedded log
    /// was never written.
    pub(crate) fn open(config: &Config, which: Which) -> anyhow::Result<Option<Pages>> {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
        let reader = runtime.block_on(crate::backend::reader(config, which))?;
        Ok(reader.map(|reader| Pages { runtime, reader }))
    }

    /// Up to `max` records at positions `>= from`.
    pub(crate) fn read(&self, from: u64, max: usize) -> anyhow::Result<Vec<(u64, Vec<u8>)>> {
        Ok(self.runtime.block_on(self.reader.read(from, max))?)
    }

    /// Up to `max` records at positions `>= from` and `< end`: a command that pages to the
    /// end as it was when it started stops there, however fast the log grows.
    pub(crate) fn read_before(&self, from: u64, end: u64, max: usize) -> anyhow::Result<Vec<(u64, Vec<u8>)>> {
        let max = max.min(usize::try_from(end.saturating_sub(from)).unwrap_or(usize::MAX));
        if max == 0 {
            return Ok(Vec::new());
        }
        let mut records = self.read(from, max)?;
        records.retain(|(position, _)| *position < end);
        Ok(records)
    }

    /// One past the last position, as of now.
    pub(crate) fn end(&self) -> anyhow::Result<u64> {
        Ok(self.runtime.block_on(self.reader.end())?)
    }
}

/// A time on the command line: ISO-8601 (`2026-11-28T10:00:00Z`, `2026-11-28` for
/// midnight UTC) or an age (`90s`, `30m`, `2h`, `7d`: that long ago).
pub(crate) fn parse_time(text: &str) -> anyhow::Result<jiff::Timestamp> {
    let text = text.trim();
    let units = [("s", 1), ("m", 60), ("h", 3600), ("d", 86_400)];
    for (suffix, seconds) in units {
        if let Some(n) = text.strip_suffix(suffix).and_then(|n| n.parse::<i64>().ok()) {
            let ago = jiff::SignedDuration::from_secs(n.saturating_mul(seconds));
            return jiff::Timestamp::now().checked_sub(ago).context("that is too long ago");
        }
    }
    if let Some(ts) = ferry_event::parse_time(text) {
        return Ok(ts);
    }
    if let Ok(date) = text.parse::<jiff::civil::Date>() {
        return Ok(jiff::tz::TimeZone::UTC.to_timestamp(date.to_datetime(jiff::civil::Time::midnight()))?);
    }
    anyhow::bail!("`{text}` is not a time: use ISO-8601 (2026-11-28T10:00:00Z, 2026-11-28) or an age (30m, 2h, 7d)")
}

/// A progress line on stderr: redrawn in place on a terminal, otherwise printed at most
/// every few seconds (so logs of scripted runs stay short).
pub(crate) struct ProgressLine {
    started: Instant,
    last: Option<Instant>,
    terminal: bool,
}

impl ProgressLine {
    pub(crate) fn new() -> ProgressLine {
        ProgressLine { started: Instant::now(), last: None, terminal: std::io::stderr().is_terminal() }
    }

    /// Show `done` of `total` with a note; `finished` prints the last line for good.
    pub(crate) fn show(&mut self, done: u64, total: u64, note: &str, finished: bool) {
        let fraction = if total == 0 { 1.0 } else { done as f64 / total as f64 };
        self.draw(fraction, &format!("{done}/{total}"), done, note, finished);
    }

    /// Show a fraction of the work (bytes of a file, say) and a count of what it made.
    pub(crate) fn show_fraction(&mut self, fraction: f64, count: u64, note: &str, finished: bool) {
        self.draw(fraction, &count.to_string(), count, note, finished);
    }

    fn draw(&mut self, fraction: f64, amount: &str, count: u64, note: &str, finished: bool) {
        let every = if self.terminal { Duration::from_millis(100) } else { Duration::from_secs(5) };
        if !finished && self.last.is_some_and(|l| l.elapsed() < every) {
            return;
        }
        self.last = Some(Instant::now());
        let elapsed = self.started.elapsed().as_secs_f64().max(0.001);
        let percent = 100.0 * fraction.clamp(0.0, 1.0);
        let width = 24;
        let filled = ((percent / 100.0) * width as f64).round() as usize;
        let bar = format!("{}{}", "#".repeat(filled.min(width)), "-".repeat(width - filled.min(width)));
        let line = format!("[{bar}] {amount} ({percent:.0}%) {note} {:.0}/s", count as f64 / elapsed);
        let mut err = std::io::stderr().lock();
        if self.terminal {
            let _ = write!(err, "\r\x1b[2K{line}");
            if finished {
                let _ = writeln!(err);
            }
        } else {
            let _ = writeln!(err, "{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_iso_dates_or_ages() {
        assert_eq!(parse_time("2026-11-28T10:00:00Z").unwrap().to_string(), "2026-11-28T10:00:00Z");
        assert_eq!(parse_time("2026-11-28").unwrap().to_string(), "2026-11-28T00:00:00Z");
        let two_hours = jiff::Timestamp::now().as_second() - parse_time("2h").unwrap().as_second();
        assert!((7199..=7201).contains(&two_hours));
        assert!(parse_time("yesterday").unwrap_err().to_string().contains("not a time"));
    }
}
