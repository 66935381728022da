//! Destinations: where stored events go. Each destination turns a batch of
//! [`Event`]s into one [`Outcome`] per event; it knows nothing about the log, offsets,
//! retries or dead letters (that is `ferry-delivery`), nor about HTTP ingestion.
//!
//! - [`warehouse`]: Segment's warehouse schema in SQLite (embedded, the default) and
//!   PostgreSQL.
//! - [`webhook`]: Segment-compatible webhooks (signed, single or batched).
//! - [`files`]: gzip JSON Lines in `source=/type=/date=/hour=` partitions.
//! - [`mixpanel`], [`amplitude`], [`ga4`]: analytics tools, with Segment's conversions
//!   (revenue as a Mixpanel transaction, Amplitude's revenue fields, GA4 e-commerce).
//! - [`http`]: the shared HTTP client and the status → outcome rule.
//! - [`settings`]: a destination's settings in `ferry.toml`, one variant per type, each
//!   type's checks, delivery defaults and construction in its own folder's `config.rs`.
//! - `scripted`, `standins` and `testing` (feature `test-util`): a destination whose
//!   outcomes a test decides, the SaaS APIs' local stand-ins, and the real-client events.

pub mod amplitude;
pub mod files;
pub mod ga4;
pub mod http;
mod mapping;
pub mod mixpanel;
pub mod settings;
pub mod warehouse;
pub mod webhook;

#[cfg(feature = "test-util")]
pub mod scripted;
#[cfg(feature = "test-util")]
pub mod standins;
#[cfg(feature = "test-util")]
pub mod testing;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub use ferry_event::stored::Event;

/// A boxed future, for the object-safe [`Destination`] trait.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What happened to one event sent to a destination.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The destination has it (or had it already: idempotent destinations absorb repeats).
    Delivered,
    /// A transient failure: send it again later, not before `after` when the destination
    /// said so (a `Retry-After`).
    Retry { after: Option<Duration>, error: String },
    /// The destination will never take this event; it goes to the dead letters.
    Reject { reason: String },
    /// Not for this destination (a call it has no counterpart for, such as an alias for
    /// Google Analytics): nothing sent, nothing to retry, counted apart from deliveries.
    Skipped { reason: String },
}

impl Outcome {
    /// A retry without a hint of when.
    pub fn retry(error: impl Into<String>) -> Outcome {
        Outcome::Retry { after: None, error: error.into() }
    }

    /// A rejection.
    pub fn reject(reason: impl Into<String>) -> Outcome {
        Outcome::Reject { reason: reason.into() }
    }

    /// Not for this destination.
    pub fn skipped(reason: impl Into<String>) -> Outcome {
        Outcome::Skipped { reason: reason.into() }
    }
}

/// A place events are delivered to. `send` returns exactly one outcome per event, in the
/// order given; a destination that cannot tell events apart (one failed transaction)
/// returns the same outcome for each.
pub trait Destination: Send + Sync + 'static {
    /// Whether the `integrations` switchboard of an event applies. Warehouses ignore it,
    /// as in Segment.
    fn follows_integrations(&self) -> bool {
        true
    }

    /// Whether a batch sent again after a crash must hold exactly the events it held the
    /// first time (a destination that names what it writes after the batch, such as
    /// files). The delivery engine then writes each batch's end down before sending it.
    fn needs_stable_batches(&self) -> bool {
        false
    }

    /// Deliver a batch.
    fn send<'a>(&'a self, events: &'a [Arc<Event>]) -> BoxFuture<'a, Vec<Outcome>>;

    /// Finish what is buffered and release connections (graceful shutdown).
    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// The event as Segment-shaped JSON for destinations that pass events on (webhooks,
/// files): the stored record without ferry's own `_ferry` notes (borrowed when it has
/// none, which is the common case).
pub fn segment_json(event: &Event) -> std::borrow::Cow<'_, str> {
    if event.ferry_notes().is_none() {
        return std::borrow::Cow::Borrowed(event.json());
    }
    let Ok(fields) = ferry_wire::Fields::parse(event.json()) else { return std::borrow::Cow::Borrowed(event.json()) };
    let mut out = String::with_capacity(event.json().len());
    out.push('{');
    for (key, value) in fields.members.iter().filter(|(k, _)| k != "_ferry") {
        if out.len() > 1 {
            out.push(',');
        }
        out.push_str(&serde_json::to_string(key.as_ref()).unwrap_or_default());
        out.push(':');
        out.push_str(value.get());
    }
    out.push('}');
    std::borrow::Cow::Owned(out)
}
