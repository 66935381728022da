//! The log's metrics on `/metrics`: records, bytes, group commits, fsync latency, the disk
//! budget and the dedupe index, labelled by log (`events`, `quarantine`).

use ferry_metrics::Writer;

use crate::Log;

pub const LOG_RECORDS: &str = "ferry_log_records_total";
pub const LOG_PAYLOAD_BYTES: &str = "ferry_log_payload_bytes_total";
pub const LOG_WRITTEN_BYTES: &str = "ferry_log_written_bytes_total";
pub const LOG_GROUP_RECORDS: &str = "ferry_log_group_commit_records";
pub const LOG_FSYNC_SECONDS: &str = "ferry_log_fsync_duration_seconds";
pub const LOG_DISK_BYTES: &str = "ferry_log_disk_bytes";
pub const LOG_DISK_BUDGET_BYTES: &str = "ferry_log_disk_budget_bytes";
pub const LOG_WRITABLE: &str = "ferry_log_writable";
pub const DEDUPE_KEYS: &str = "ferry_dedupe_memory_keys";

/// Render the metrics of each named log.
pub fn render(out: &mut Writer, logs: &[(&str, &Log)]) {
    for (name, log) in logs {
        let m = log.metrics();
        let labels = [("log", *name)];
        out.counter(LOG_RECORDS, "Records stored in the log.", &labels, m.records.get());
        out.counter(
            LOG_PAYLOAD_BYTES,
            "Bytes of the records stored, before compression.",
            &labels,
            m.payload_bytes.get(),
        );
        out.counter(
            LOG_WRITTEN_BYTES,
            "Bytes written to chunk files (compressed frames).",
            &labels,
            m.frame_bytes.get(),
        );
        out.histogram(LOG_GROUP_RECORDS, "Records per group commit (one frame, one fsync).", &labels, &m.group_records);
        out.histogram(LOG_FSYNC_SECONDS, "How long each fdatasync of the log took.", &labels, &m.fsync_seconds);
        out.gauge(LOG_DISK_BYTES, "Bytes of the log's chunk files.", &labels, log.disk_bytes() as f64);
        out.gauge(LOG_DISK_BUDGET_BYTES, "The log's disk budget.", &labels, log.max_disk_bytes() as f64);
        out.gauge(
            LOG_WRITABLE,
            "1 when appends can succeed (not poisoned, budget not exhausted).",
            &labels,
            f64::from(u8::from(log.writable())),
        );
        out.gauge(DEDUPE_KEYS, "Message ids in the dedupe index's memory layer.", &labels, log.dedupe_stats().0 as f64);
    }
}
