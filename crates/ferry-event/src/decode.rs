//! Decoding a request body: one checked pass over the (already inflated) body for a
//! [`Route`] reads the batch envelope and lists each item's members, far enough to find the
//! write key; nothing is validated beyond the JSON itself and the request's limits.

use std::borrow::Cow;

use ferry_wire::{Fields, Kind, Raw, ScanError, Scanner, as_str, kind};

use crate::{Limits, Route, json};

/// A request that cannot be taken at all; [`RequestError::code`] is its stable code.
///
/// | code | when | HTTP |
/// | --- | --- | --- |
/// | `payload_too_large` | a single-call body over [`Limits::max_event_bytes`] (32 KiB), a batch body over [`Limits::max_batch_bytes`] (500 KiB) | 413 |
/// | `too_many_events` | a batch of more than [`Limits::max_batch_events`] (2,500) items | 413 |
/// | `invalid_utf8` | the body is not UTF-8 (checked before JSON, so never `invalid_json`) | 400 |
/// | `too_deep` | arrays/objects nested deeper than [`Limits::max_depth`] (64); found by a byte scan before any recursive parse, so 10,000-deep input is refused cheaply | 400 |
/// | `invalid_json` | not JSON | 400 |
/// | `not_an_object` | JSON, but not an object | 400 |
/// | `invalid_batch` | a batch body without a `batch` array, or whose envelope `context` / `integrations` is not an object | 400 |
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("the body is over {max} bytes")]
    PayloadTooLarge { max: usize },
    #[error("the batch has {count} events; at most {max} are allowed")]
    TooManyEvents { count: usize, max: usize },
    #[error("the body is not valid utf-8 (at byte {valid_up_to})")]
    InvalidUtf8 { valid_up_to: usize },
    #[error("the body nests deeper than {max_depth} levels")]
    TooDeep { max_depth: usize },
    #[error("the body is not valid JSON: {0}")]
    InvalidJson(ScanError),
    #[error("the body must be a JSON object")]
    NotAnObject,
    #[error("the body must have a `batch` array")]
    NoBatch,
    /// The envelope's `context` or `integrations` (the key) is not an object.
    #[error("the envelope's `{0}` must be an object")]
    EnvelopeNotObject(&'static str),
}

impl RequestError {
    /// The stable snake_case code clients see.
    pub fn code(&self) -> &'static str {
        match self {
            RequestError::PayloadTooLarge { .. } => "payload_too_large",
            RequestError::TooManyEvents { .. } => "too_many_events",
            RequestError::InvalidUtf8 { .. } => "invalid_utf8",
            RequestError::TooDeep { .. } => "too_deep",
            RequestError::InvalidJson(_) => "invalid_json",
            RequestError::NotAnObject => "not_an_object",
            RequestError::NoBatch | RequestError::EnvelopeNotObject(_) => "invalid_batch",
        }
    }
}

/// A request body decoded far enough to authenticate it.
pub struct Parsed<'a> {
    pub(crate) route: Route,
    write_key: Option<Cow<'a, str>>,
    pub(crate) envelope: Envelope<'a>,
    pub(crate) items: Vec<Item<'a>>,
}

#[derive(Default)]
pub(crate) struct Envelope<'a> {
    pub(crate) sent_at: Option<Raw<'a>>,
    pub(crate) context: Option<Raw<'a>>,
    pub(crate) integrations: Option<Raw<'a>>,
}

/// One call of a request. A single call keeps its raw body; a batch item is decoded in
/// the same pass as its envelope, so its raw text is rebuilt only when it is needed (its
/// size from the members, its JSON for quarantine).
pub(crate) struct Item<'a> {
    /// The item as received, when the body was the item itself.
    raw: Option<&'a str>,
    /// `None` when the item is not an object.
    pub(crate) fields: Option<Fields<'a>>,
    /// The JSON of an item that is not an object.
    other: Option<&'a str>,
    /// The members of `context` and of `properties`, when they are objects, scanned in the
    /// item's own pass.
    pub(crate) context: Option<Fields<'a>>,
    pub(crate) properties: Option<Fields<'a>>,
}

impl<'a> Item<'a> {
    /// The object at the scanner's position, `context` and `properties` in the same pass.
    fn scan(scanner: &mut Scanner<'a>, raw: Option<&'a str>) -> Result<Item<'a>, ScanError> {
        let mut members = Vec::with_capacity(16);
        let (mut context, mut properties) = (None, None);
        scanner.object(|scanner, key| {
            let slot = match key.as_ref() {
                "context" => Some(&mut context),
                "properties" => Some(&mut properties),
                _ => None,
            };
            let value = match slot {
                Some(slot) => {
                    // The last member of a name is the one used: forget an earlier one.
                    *slot = None;
                    if scanner.peek() == Some(b'{') {
                        let (inner, raw) = Fields::scan_raw(scanner)?;
                        *slot = Some(inner);
                        raw
                    } else {
                        ferry_wire::scan_value(scanner)?
                    }
                }
                None => ferry_wire::scan_value(scanner)?,
            };
            members.push((key, value));
            Ok(())
        })?;
        Ok(Item { raw, fields: Some(Fields { members }), other: None, context, properties })
    }
}

impl Item<'_> {
    /// Bytes of the item: exact for a single call, the compact size of its members for a
    /// batch item (whitespace between members is not counted).
    pub(crate) fn size(&self) -> usize {
        if let Some(raw) = self.raw {
            return raw.len();
        }
        match &self.fields {
            Some(fields) => 2 + fields.members.iter().map(|(k, v)| k.len() + v.get().len() + 4).sum::<usize>(),
            None => self.other.map_or(0, str::len),
        }
    }

    /// The item's JSON, for quarantine.
    pub(crate) fn json(&self) -> Cow<'_, str> {
        if let Some(raw) = self.raw {
            return Cow::Borrowed(raw);
        }
        match &self.fields {
            Some(fields) => json::object_text(self.size(), |w| {
                for (key, raw) in &fields.members {
                    w.member(key, raw.get());
                }
            }),
            None => Cow::Borrowed(self.other.unwrap_or("null")),
        }
    }
}

impl Parsed<'_> {
    /// The `writeKey` from the body or the batch envelope (else the first item that has
    /// one). Empty counts as absent.
    pub fn write_key(&self) -> Option<&str> {
        self.write_key.as_deref()
    }

    /// The route the body was decoded for.
    pub fn route(&self) -> Route {
        self.route
    }

    /// Item `index` as received (a batch item's members re-joined without the whitespace
    /// between them), for the debugger.
    pub fn item_json(&self, index: usize) -> Option<String> {
        self.items.get(index).map(|item| item.json().into_owned())
    }

    /// How many items the request carries.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// Decode an (already inflated) request body for a route.
pub fn parse<'a>(body: &'a [u8], route: Route, limits: &Limits) -> Result<Parsed<'a>, RequestError> {
    let max = match route {
        Route::Single(_) => limits.max_event_bytes,
        Route::Batch => limits.max_batch_bytes,
    };
    if body.len() > max {
        return Err(RequestError::PayloadTooLarge { max });
    }
    let text =
        std::str::from_utf8(body).map_err(|error| RequestError::InvalidUtf8 { valid_up_to: error.valid_up_to() })?;
    let too_deep = || RequestError::TooDeep { max_depth: limits.max_depth };
    let refused = |error: ScanError| match error {
        ScanError::TooDeep => too_deep(),
        ScanError::Invalid { .. } => {
            // Valid JSON of another shape, or not JSON at all (whatever it nests).
            let mut whole = Scanner::new(text, limits.max_depth);
            match whole.value().and_then(|_| whole.finish()) {
                Ok(()) => RequestError::NotAnObject,
                Err(ScanError::TooDeep) => too_deep(),
                Err(_) => RequestError::InvalidJson(error),
            }
        }
    };
    let mut scanner = Scanner::new(text, limits.max_depth);
    if let Route::Single(_) = route {
        let item = Item::scan(&mut scanner, Some(text)).and_then(|item| scanner.finish().map(|()| item));
        let item = item.map_err(refused)?;
        let write_key = item.fields.as_ref().and_then(|f| f.get("writeKey")).and_then(as_str).filter(|k| !k.is_empty());
        return Ok(Parsed { route, write_key, envelope: Envelope::default(), items: vec![item] });
    }
    // The envelope and its items in one pass; `batch` that is not an array is absent.
    let mut fields = Fields::default();
    let mut batch: Option<Vec<Item<'a>>> = None;
    let mut count = 0;
    let scanned = scanner.object(|scanner, key| {
        if key != "batch" {
            fields.members.push((key, ferry_wire::scan_value(scanner)?));
            return Ok(());
        }
        if scanner.peek() != Some(b'[') {
            scanner.value()?;
            batch = None;
            return Ok(());
        }
        let mut items = Vec::new();
        count = 0;
        scanner.array(|scanner| {
            count += 1;
            // Past the limit items are checked but not kept: the request is refused.
            if count > limits.max_batch_events {
                return scanner.value().map(drop);
            }
            let item = match scanner.peek() {
                Some(b'{') => Item::scan(scanner, None)?,
                _ => Item { raw: None, fields: None, other: Some(scanner.value()?), context: None, properties: None },
            };
            items.push(item);
            Ok(())
        })?;
        batch = Some(items);
        Ok(())
    });
    scanned.and_then(|()| scanner.finish()).map_err(refused)?;
    let items = batch.ok_or(RequestError::NoBatch)?;
    if count > limits.max_batch_events {
        return Err(RequestError::TooManyEvents { count, max: limits.max_batch_events });
    }
    let write_key = fields.get("writeKey").and_then(as_str).filter(|k| !k.is_empty()).or_else(|| {
        items.iter().filter_map(|i| i.fields.as_ref()?.get("writeKey").and_then(as_str)).find(|k| !k.is_empty())
    });
    for key in ["context", "integrations"] {
        if fields.get(key).is_some_and(|raw| kind(raw) != Kind::Object) {
            return Err(RequestError::EnvelopeNotObject(key));
        }
    }
    let envelope = Envelope {
        sent_at: fields.get("sentAt"),
        context: fields.get("context"),
        integrations: fields.get("integrations"),
    };
    Ok(Parsed { route: Route::Batch, write_key, envelope, items })
}
