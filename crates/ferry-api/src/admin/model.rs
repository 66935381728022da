//! What the admin API answers, as serde types with one key casing (camelCase, as
//! Segment's APIs). The OpenAPI document (`openapi.json`) describes exactly these; a test
//! holds the two together.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `GET /admin/v1/sources`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceList {
    /// No sources configured: any write key is its own source.
    pub open: bool,
    pub configured: Vec<String>,
    pub sources: Vec<SourceCounts>,
}

/// One source's events since start.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceCounts {
    pub id: String,
    pub accepted: u64,
    pub accepted_bytes: u64,
    pub duplicate: u64,
    pub rejected: u64,
}

/// `GET /admin/v1/destinations`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationList {
    pub destinations: Vec<DestinationState>,
}

/// One destination: where it is, how far behind, what became of its events.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationState {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub target: String,
    pub position: u64,
    pub lag_events: u64,
    pub lag_seconds: f64,
    pub delivered: u64,
    pub filtered: u64,
    pub skipped: u64,
    pub rejected: u64,
    pub dead_lettered: u64,
    pub retried: u64,
    pub retrying: bool,
    pub last_error: Option<TimedError>,
    pub dead_letters: u64,
}

/// An error and when it happened.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TimedError {
    pub at: String,
    pub error: String,
}

/// `GET /admin/v1/dead-letters`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterList {
    pub dead_letters: Vec<DeadLetterView>,
}

/// A dead letter; `payload` (the stored event) only when one is asked for by id.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterView {
    pub id: i64,
    pub destination: String,
    pub position: u64,
    pub message_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub event: Option<String>,
    pub source_id: Option<String>,
    pub received_at: Option<String>,
    pub first_attempt_at: String,
    pub dead_at: String,
    pub reason: String,
    pub attempts: Vec<TimedError>,
    pub redriven_at: Option<String>,
    pub redrive_attempts: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
}

/// `GET /admin/v1/quarantine`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QuarantinePage {
    pub items: Vec<QuarantineItem>,
    /// The offset to ask from for more.
    pub next: u64,
}

/// A quarantined item: its record as stored (the record's own keys are camelCase too).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QuarantineItem {
    pub offset: u64,
    pub record: Value,
}

/// `POST /admin/v1/quarantine/{offset}/resubmit`: stored now (`messageIds`, `duplicate`),
/// or still refused (`code`, `message`, `field`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Resubmitted {
    pub resubmitted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_ids: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicate: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<&'static str>,
}

/// `GET /admin/v1/jobs`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobList {
    pub jobs: Vec<Job>,
}

/// A replay or a redrive running in the background, and how far it got.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    pub id: u64,
    pub kind: JobKind,
    pub state: JobState,
    pub destination: Option<String>,
    pub scanned: u64,
    pub total: u64,
    pub delivered: u64,
    pub skipped: u64,
    pub failed: u64,
    pub last_error: Option<String>,
    pub started_at: String,
    pub finished_at: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    Replay,
    Redrive,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Running,
    Done,
    Failed,
    Cancelled,
}

/// Filters of the dead letter routes (query string or JSON body).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterFilter {
    pub destination: Option<String>,
    /// The reason or an attempt's error contains this text.
    pub error: Option<String>,
    /// The track event name.
    pub event: Option<String>,
    /// The event's `receivedAt` is at or after this (ISO-8601).
    pub since: Option<String>,
    pub until: Option<String>,
    /// Include redriven ones.
    #[serde(default)]
    pub all: bool,
    pub limit: Option<usize>,
}

/// `POST /admin/v1/replays`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayStart {
    pub destination: String,
    /// ISO-8601.
    pub since: String,
    pub until: Option<String>,
}
