//! Validation and enrichment: a decoded Segment request becomes canonical events.
//!
//! SKELETON (interface agreed with ferry-api): the helper owning this crate fills it in.

use std::net::IpAddr;

pub use ferry_wire::{CallType, Route};

/// Bounds on untrusted input.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_event_bytes: usize,
    pub max_batch_bytes: usize,
    pub max_batch_events: usize,
    pub max_depth: usize,
    pub max_message_id_chars: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_event_bytes: 32 * 1024,
            max_batch_bytes: 500 * 1024,
            max_batch_events: 2500,
            max_depth: 64,
            max_message_id_chars: 100,
        }
    }
}

/// A request body decoded far enough to authenticate it.
pub struct Parsed<'a> {
    _body: &'a [u8],
}

impl<'a> Parsed<'a> {
    /// The `writeKey` from the body or the batch envelope.
    pub fn write_key(&self) -> Option<&str> {
        todo!()
    }
}

/// A request that cannot be taken at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestError {
    pub code: &'static str,
    pub message: String,
}

/// Decode a (already inflated) request body for a route.
pub fn parse<'a>(_body: &'a [u8], _route: Route, _limits: &Limits) -> Result<Parsed<'a>, RequestError> {
    todo!()
}

/// What the server knows about a request; time arrives as a value.
pub struct Ctx<'a> {
    pub received_at: jiff::Timestamp,
    pub source_id: &'a str,
    pub client_ip: Option<IpAddr>,
    pub limits: &'a Limits,
    pub new_message_id: &'a mut dyn FnMut() -> String,
}

/// A validated, enriched event ready for the log.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub index: usize,
    pub message_id: String,
    /// Canonical stored event JSON: the log record.
    pub json: Vec<u8>,
    pub warnings: Vec<Issue>,
}

/// A rejected item, kept in quarantine with its reason.
#[derive(Debug, Clone)]
pub struct Rejected {
    pub index: usize,
    pub message_id: Option<String>,
    pub issue: Issue,
    /// The quarantine record (JSON): reason, source, receivedAt and the raw item.
    pub quarantine_json: Vec<u8>,
}

/// A validation problem: a stable snake_case code, a message and the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
}

pub struct Processed {
    pub accepted: Vec<Accepted>,
    pub rejected: Vec<Rejected>,
}

/// Validate and enrich every item of a parsed request.
pub fn process(_parsed: Parsed<'_>, _ctx: &mut Ctx<'_>) -> Processed {
    todo!()
}
