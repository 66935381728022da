//! Validation and enrichment: a Segment request body becomes canonical stored events, and
//! each item that cannot be one becomes a quarantine record with its reason.
//!
//! Pure: no I/O, no clock; the receive time, the client's address and new message ids
//! arrive in a [`Ctx`]. Bodies are never parsed into a DOM: an item is a list of
//! `(key, raw value)` pairs and only the fields that must be checked are decoded, so
//! `properties`, `traits`, `context` and unknown fields are copied byte for byte.
//!
//! # The pipeline: one module per stage
//!
//! - `decode` ([`parse`]): an already inflated body, read for a [`Route`] far enough to
//!   find the write key ([`Parsed::write_key`]), or refused whole with a [`RequestError`].
//!   The pixel API (`GET /v1/pixel/{type}?data=<base64>`) is
//!   `parse(decoded, Route::Single(type), ..)`.
//! - [`process`] takes each item through the rest:
//!   - `validate`: a typed valid event borrowing from the request, or a [`Rejection`];
//!   - `enrich`: times and clock skew, the envelope's `context` and `integrations`, the
//!     client's address, the channel, reserved properties and their [`Warning`]s;
//!   - `stored::encode`: the stored event's JSON (its format is documented in [`stored`],
//!     beside the decoder destinations read it with);
//!   - `quarantine`: the record of a rejected item, with its reason.
//!
//!   Each accepted event leaves as the log [`Record`] it is stored as, each rejected item
//!   as its quarantine record ([`Processed`]).
//!
//! Times are read and written by `time` ([`parse_time`], [`format_time`]); [`fuzz_one`]
//! runs the pipeline on arbitrary bytes. The codes clients see are listed on
//! [`RequestError`], [`Rejection`] and [`Warning`].

mod currency;
mod decode;
mod enrich;
mod json;
mod quarantine;
pub mod stored;
mod time;
mod validate;

use std::borrow::Cow;
use std::net::IpAddr;

use ferry_log_contract::Record;
pub use ferry_wire::{CallType, Route};

pub use decode::{Parsed, RequestError, parse};
pub use enrich::Warning;
pub use time::{format_time, parse_time, write_time_into};
pub use validate::Rejection;

/// The currency of a `revenue` sent without `currency`. It is not written into the stored
/// event: destinations apply it, as Segment's do.
pub const DEFAULT_CURRENCY: &str = "USD";

/// Whether `code` is an ISO 4217 currency code in use (upper case, as the spec wants).
pub fn is_currency(code: &str) -> bool {
    currency::is_iso4217(code)
}

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

/// What the server knows about a request; time arrives as a value.
pub struct Ctx<'a> {
    pub received_at: jiff::Timestamp,
    pub source_id: &'a str,
    pub client_ip: Option<IpAddr>,
    pub limits: &'a Limits,
    pub new_message_id: &'a mut dyn FnMut() -> String,
    /// Describe every accepted event in [`Processed::described`] (for the debugger); when
    /// `false` nothing is built for it.
    pub describe: bool,
}

/// Every item of a request, accepted or rejected, in request order within each list.
#[derive(Debug, Default)]
pub struct Processed {
    /// The accepted events as the log stores them: the message id as the dedupe key, the
    /// stored event as the payload.
    pub events: Vec<Record>,
    /// The rejected items' quarantine records (no key).
    pub quarantine: Vec<Record>,
    /// Why each of `quarantine` was rejected.
    pub rejected: Vec<Rejected>,
    /// With [`Ctx::describe`]: what each of `events` is; else empty.
    pub described: Vec<Described>,
}

/// A rejected item: where it was in the request and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub index: usize,
    /// The caller's `messageId`, when it is a string or a number.
    pub message_id: Option<String>,
    pub rejection: Rejection,
}

/// An accepted event as the debugger shows it, taken from the validated event.
#[derive(Debug, Clone)]
pub struct Described {
    /// Its place in the request.
    pub index: usize,
    pub call: CallType,
    pub event: Option<String>,
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    pub warnings: Vec<Warning>,
}

/// What every item of one request shares, rendered once.
pub(crate) struct Shared<'r, 'a> {
    pub(crate) envelope: &'r decode::Envelope<'a>,
    pub(crate) received_at: jiff::Timestamp,
    /// `receivedAt` as stored.
    pub(crate) received_at_text: &'r str,
    /// The client's address as text.
    pub(crate) ip: Option<&'r str>,
    pub(crate) source_id: &'r str,
}

/// Validate, enrich and encode every item of a parsed request.
pub fn process(parsed: Parsed<'_>, ctx: &mut Ctx<'_>) -> Processed {
    let received_at_text = format_time(ctx.received_at);
    let ip = ctx.client_ip.map(enrich::ip_text);
    let shared = Shared {
        envelope: &parsed.envelope,
        received_at: ctx.received_at,
        received_at_text: &received_at_text,
        ip: ip.as_deref(),
        source_id: ctx.source_id,
    };
    let mut processed = Processed { events: Vec::with_capacity(parsed.items.len()), ..Processed::default() };
    for (index, item) in parsed.items.iter().enumerate() {
        let valid = match validate::validate(item, parsed.route, &parsed.envelope, ctx.limits) {
            Ok(valid) => valid,
            Err(rejection) => {
                let rejected = Rejected { index, message_id: quarantine::message_id(item), rejection };
                processed.quarantine.push(Record { key: None, payload: quarantine::record(item, &rejected, &shared) });
                processed.rejected.push(rejected);
                continue;
            }
        };
        let enriched = enrich::enrich(&valid, &shared);
        let message_id = valid.message_id.as_deref().map_or_else(|| (ctx.new_message_id)(), str::to_owned);
        let payload = stored::encode(&valid, &enriched, &message_id, &shared);
        if ctx.describe {
            processed.described.push(Described {
                index,
                call: valid.call,
                event: valid.event_name().map(Cow::into_owned),
                user_id: valid.user_id.as_deref().map(str::to_owned),
                anonymous_id: valid.anonymous_id.as_deref().map(str::to_owned),
                warnings: enriched.warnings,
            });
        }
        processed.events.push(Record { key: Some(message_id.into_bytes()), payload });
    }
    processed
}

/// Run arbitrary bytes through [`parse`] and [`process`] with a fixed clock; for fuzzing
/// (`fuzz/`). The first byte picks the route (batch, then the six calls, modulo 7, as
/// `fuzz/seed.sh` writes it), the rest is the body. Panics only if ferry-wire's scanner and
/// serde_json disagree on whether the body is JSON, or an event or a quarantine record is
/// not valid JSON, either of which would be a bug.
pub fn fuzz_one(data: &[u8]) {
    use ferry_wire::{ScanError, Scanner};
    use serde::de::IgnoredAny;

    let routes = [
        Route::Batch,
        Route::Single(CallType::Track),
        Route::Single(CallType::Identify),
        Route::Single(CallType::Page),
        Route::Single(CallType::Screen),
        Route::Single(CallType::Group),
        Route::Single(CallType::Alias),
    ];
    let (route, body) = match data.split_first() {
        Some((first, rest)) => (routes[usize::from(*first) % routes.len()], rest),
        None => (Route::Batch, data),
    };
    // The scanner takes exactly what serde_json takes (below serde_json's own recursion
    // limit of 128).
    if let Ok(text) = std::str::from_utf8(body) {
        let mut scanner = Scanner::new(text, 100);
        let scanned = scanner.value().and_then(|_| scanner.finish());
        if scanned != Err(ScanError::TooDeep) {
            let serde = serde_json::from_str::<IgnoredAny>(text).is_ok();
            assert_eq!(scanned.is_ok(), serde, "scanner and serde_json disagree: {scanned:?}");
        }
    }
    let limits = Limits::default();
    let Ok(parsed) = parse(body, route, &limits) else { return };
    let _ = parsed.write_key();
    let mut n = 0u64;
    let mut ids = || {
        n += 1;
        format!("fuzz-{n}")
    };
    let mut ctx = Ctx {
        received_at: jiff::Timestamp::from_second(1_795_862_235).unwrap_or_default(),
        source_id: "fuzz",
        client_ip: Some(IpAddr::from([127, 0, 0, 1])),
        limits: &limits,
        new_message_id: &mut ids,
        describe: true,
    };
    let processed = process(parsed, &mut ctx);
    for record in processed.events.iter().chain(&processed.quarantine) {
        let json = &record.payload;
        let valid = serde_json::from_slice::<IgnoredAny>(json).is_ok();
        assert!(valid, "output is not JSON: {}", String::from_utf8_lossy(json));
    }
}

#[cfg(test)]
mod tests;
