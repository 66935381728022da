//! Validation and enrichment: a Segment request body becomes canonical stored events, and
//! each item that cannot be one becomes a quarantine record with its reason.
//!
//! Pure: no I/O, no clock; the receive time, the client's address and new message ids
//! arrive in a [`Ctx`]. Bodies are never parsed into a DOM: an item is a list of
//! `(key, raw value)` pairs and only the fields that must be checked are decoded, so
//! `properties`, `traits`, `context` and unknown fields are copied byte for byte.
//!
//! # Entry points
//!
//! [`parse`] decodes an already inflated body for a [`Route`] far enough to read the write
//! key ([`Parsed::write_key`]); [`process`] validates and enriches every item into
//! [`Accepted`] events and [`Rejected`] quarantine records. The pixel API
//! (`GET /v1/pixel/{type}?data=<base64>`) is `parse(decoded, Route::Single(type), ..)`.
//! [`fuzz_one`] runs both on arbitrary bytes.
//!
//! # Request-level errors ([`RequestError::code`])
//!
//! | code | when | HTTP |
//! | --- | --- | --- |
//! | `payload_too_large` | a single-call body over [`Limits::max_event_bytes`] (32 KiB), a batch body over [`Limits::max_batch_bytes`] (500 KiB) | 413 |
//! | `too_many_events` | a batch of more than [`Limits::max_batch_events`] (2,500) items | 413 |
//! | `invalid_utf8` | the body is not UTF-8 (checked before JSON, so never `invalid_json`) | 400 |
//! | `too_deep` | arrays/objects nested deeper than [`Limits::max_depth`] (64); found by a byte scan before any recursive parse, so 10,000-deep input is refused cheaply | 400 |
//! | `invalid_json` | not JSON | 400 |
//! | `not_an_object` | JSON, but not an object | 400 |
//! | `invalid_batch` | a batch body without a `batch` array, or whose envelope `context` / `integrations` is not an object | 400 |
//!
//! # Item-level rejection codes ([`Issue::code`], with the offending `field`)
//!
//! Checked in this order; the first failure rejects the item.
//!
//! | code | field | when |
//! | --- | --- | --- |
//! | `event_too_large` | – | an item is over 32 KiB |
//! | `not_an_object` | – | a batch item is not a JSON object |
//! | `missing_type`, `invalid_type` | `type` | a batch item has no `type`, or not one of the six calls (single routes take the type from the path, whatever the body says) |
//! | `invalid_message_id`, `message_id_too_long` | `messageId` | not a string or a number (numbers are kept as their text); over 100 characters |
//! | `invalid_user_id`, `invalid_anonymous_id` | `userId`, `anonymousId` | not a string or a number |
//! | `missing_user_id` | `userId` | neither `userId` nor `anonymousId` (alias: no `userId`) |
//! | `invalid_previous_id`, `missing_previous_id` | `previousId` | alias: not a string or number; absent |
//! | `missing_event`, `invalid_event` | `event` | track without `event`, or with an empty one; `event` not a string |
//! | `invalid_group_id`, `missing_group_id` | `groupId` | group: not a string or number; absent |
//! | `invalid_properties`, `invalid_traits`, `invalid_context`, `invalid_integrations` | that field | present but not an object |
//! | `invalid_timestamp` | `timestamp`, `originalTimestamp` or `sentAt` | not an RFC 3339 / ISO-8601 date-time string (a time without an offset is read as UTC; epoch numbers are refused) |
//!
//! Empty strings and JSON `null` count as absent everywhere. Numeric ids become strings
//! (`42` → `"42"`). Messages are lowercase with no trailing period.
//!
//! # Warnings (stored on the event, never a rejection)
//!
//! On `properties` of track, page and screen calls: `revenue_not_number` /
//! `value_not_number` (a numeric string such as `"$19.99"` or `"1,299"` was stored as the
//! number), `invalid_revenue` / `invalid_value` (not a number and not numeric; kept as
//! sent), `invalid_currency` (not an active ISO 4217 code in upper case; kept as sent).
//! `revenue` without `currency` is fine: it means [`DEFAULT_CURRENCY`] (USD), which
//! destinations apply; it is not written into `properties`.
//!
//! # The stored event
//!
//! One JSON object, members in this order (absent ones left out):
//! `type`, `messageId`, `userId`, `anonymousId`, `event`, `name`, `category`, `groupId`,
//! `previousId`, `properties`, `traits`, `context`, `integrations` (always; `{}` when none),
//! `channel`, `originalTimestamp`, `sentAt`, `timestamp`, `receivedAt`, `version` (2),
//! `sourceId`, `_ferry` (only with warnings: `{"warnings": [{"code", "message", "field"}]}`),
//! then every other member as sent (`_metadata`, `options`, ...; the last of duplicate
//! keys). `writeKey` is never stored; a caller's `sourceId`, `_ferry`, `receivedAt` and
//! `version` are replaced. `messageId` is the caller's, else one from [`Ctx::new_message_id`].
//! Sub-objects (`properties`, `traits`, `context`, unknown members) are copied byte for byte,
//! except for the edits named here.
//!
//! Times are UTC ISO-8601 with milliseconds (`2026-11-28T10:37:14.724Z`; finer precision is
//! truncated). `originalTimestamp` is the caller's `timestamp` (or, without one, its
//! `originalTimestamp`); `sentAt` is the item's or the envelope's;
//! `timestamp = receivedAt − (sentAt − originalTimestamp)` when both are known, else
//! `originalTimestamp`, else `receivedAt`.
//!
//! Batch-envelope `sentAt`, `context` and `integrations` apply to items lacking their own;
//! objects are merged key by key at their top level, the item's keys winning.
//! `context.ip` is set from [`Ctx::client_ip`] (as the first member of `context`) when
//! `context` has no `ip` and the event is client-side: a browser or mobile library in
//! `context.library.name` (see `channel`), or `context.direct: true`.
//! `channel`, when not sent, is `browser` (analytics.js and other JavaScript browser
//! libraries), `mobile` (analytics-ios, -android, -react-native, -kotlin, -swift, -flutter,
//! -xamarin) or `server` (anything else, or no library).
//!
//! # Quarantine records ([`Rejected::quarantine_json`])
//!
//! `{"receivedAt", "sourceId", "index", "code", "message", "field", "messageId", "item"}`,
//! `field` and `messageId` `null` when unknown, `item` the item's JSON as received (a batch
//! item's members as sent, re-joined without the whitespace between them).

mod currency;
pub mod stored;

use std::borrow::Cow;
use std::collections::HashSet;
use std::net::IpAddr;

pub use ferry_wire::{CallType, Route};
use ferry_wire::{Fields, Kind, Raw, ScanError, Scanner, as_str, kind};

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

/// A request that cannot be taken at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestError {
    pub code: &'static str,
    pub message: String,
}

impl RequestError {
    fn new(code: &'static str, message: impl Into<String>) -> RequestError {
        RequestError { code, message: message.into() }
    }
}

/// A validation problem: a stable snake_case code, a message and the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
}

impl Issue {
    fn new(code: &'static str, field: &str, message: impl Into<String>) -> Issue {
        Issue { code, message: message.into(), field: Some(field.to_owned()) }
    }
}

/// A request body decoded far enough to authenticate it.
pub struct Parsed<'a> {
    route: Route,
    write_key: Option<Cow<'a, str>>,
    envelope: Envelope<'a>,
    items: Vec<Item<'a>>,
}

#[derive(Default)]
struct Envelope<'a> {
    sent_at: Option<Raw<'a>>,
    context: Option<Raw<'a>>,
    integrations: Option<Raw<'a>>,
}

/// One call of a request. A single call keeps its raw body; a batch item is decoded in
/// the same pass as its envelope, so its raw text is rebuilt only when it is needed (its
/// size from the members, its JSON for quarantine).
struct Item<'a> {
    /// The item as received, when the body was the item itself.
    raw: Option<&'a str>,
    /// `None` when the item is not an object.
    fields: Option<Fields<'a>>,
    /// The JSON of an item that is not an object.
    other: Option<&'a str>,
    /// The members of `context` and of `properties`, when they are objects, scanned in the
    /// item's own pass.
    context: Option<Fields<'a>>,
    properties: Option<Fields<'a>>,
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
    fn size(&self) -> usize {
        if let Some(raw) = self.raw {
            return raw.len();
        }
        match &self.fields {
            Some(fields) => 2 + fields.members.iter().map(|(k, v)| k.len() + v.get().len() + 4).sum::<usize>(),
            None => self.other.map_or(0, str::len),
        }
    }

    /// The item's JSON, for quarantine.
    fn json(&self) -> Cow<'_, str> {
        if let Some(raw) = self.raw {
            return Cow::Borrowed(raw);
        }
        match &self.fields {
            Some(fields) => {
                let mut out = Vec::with_capacity(self.size());
                out.push(b'{');
                let mut w = Writer { out: &mut out, first: true };
                for (key, raw) in &fields.members {
                    w.member(key, raw.get());
                }
                out.push(b'}');
                Cow::Owned(String::from_utf8(out).unwrap_or_default())
            }
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
        return Err(RequestError::new("payload_too_large", format!("the body is over {max} bytes")));
    }
    let text = std::str::from_utf8(body).map_err(|error| {
        RequestError::new("invalid_utf8", format!("the body is not valid utf-8 (at byte {})", error.valid_up_to()))
    })?;
    let refused = |error: ScanError| match error {
        ScanError::TooDeep => too_deep(limits),
        ScanError::Invalid { .. } => {
            // Valid JSON of another shape, or not JSON at all (whatever it nests).
            let mut whole = Scanner::new(text, limits.max_depth);
            match whole.value().and_then(|_| whole.finish()) {
                Ok(()) => RequestError::new("not_an_object", "the body must be a JSON object"),
                Err(ScanError::TooDeep) => too_deep(limits),
                Err(_) => RequestError::new("invalid_json", format!("the body is not valid JSON: {error}")),
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
    let items = batch.ok_or_else(|| RequestError::new("invalid_batch", "the body must have a `batch` array"))?;
    if count > limits.max_batch_events {
        return Err(RequestError::new(
            "too_many_events",
            format!("the batch has {count} events; at most {} are allowed", limits.max_batch_events),
        ));
    }
    let write_key = fields.get("writeKey").and_then(as_str).filter(|k| !k.is_empty()).or_else(|| {
        items.iter().filter_map(|i| i.fields.as_ref()?.get("writeKey").and_then(as_str)).find(|k| !k.is_empty())
    });
    for key in ["context", "integrations"] {
        if fields.get(key).is_some_and(|raw| kind(raw) != Kind::Object) {
            return Err(RequestError::new("invalid_batch", format!("the envelope's `{key}` must be an object")));
        }
    }
    let envelope = Envelope {
        sent_at: fields.get("sentAt"),
        context: fields.get("context"),
        integrations: fields.get("integrations"),
    };
    Ok(Parsed { route: Route::Batch, write_key, envelope, items })
}

fn too_deep(limits: &Limits) -> RequestError {
    RequestError::new("too_deep", format!("the body nests deeper than {} levels", limits.max_depth))
}

/// Run arbitrary bytes through [`parse`] and [`process`] as a batch body and as the body of
/// a single call, with a fixed clock; for fuzzing. Panics only if an accepted event or a
/// quarantine record is not valid JSON, which would be a bug.
pub fn fuzz_one(data: &[u8]) {
    let limits = Limits::default();
    let routes = [Route::Batch, Route::Single(CallType::Track), Route::Single(CallType::Alias)];
    // The first byte, when there is one, picks a further single-call route.
    let extra = data.first().map_or(CallType::Page, |b| match b % 4 {
        0 => CallType::Identify,
        1 => CallType::Page,
        2 => CallType::Screen,
        _ => CallType::Group,
    });
    for route in routes.into_iter().chain([Route::Single(extra)]) {
        let Ok(parsed) = parse(data, route, &limits) else { continue };
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
        };
        let processed = process(parsed, &mut ctx);
        for json in
            processed.accepted.iter().map(|a| &a.json).chain(processed.rejected.iter().map(|r| &r.quarantine_json))
        {
            assert!(
                serde_json::from_slice::<serde::de::IgnoredAny>(json).is_ok(),
                "output is not JSON: {}",
                String::from_utf8_lossy(json)
            );
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

/// Every item of a request, accepted or rejected, in request order within each list.
#[derive(Debug, Default)]
pub struct Processed {
    pub accepted: Vec<Accepted>,
    pub rejected: Vec<Rejected>,
}

/// Validate and enrich every item of a parsed request.
pub fn process(parsed: Parsed<'_>, ctx: &mut Ctx<'_>) -> Processed {
    let received_at = format_time(ctx.received_at);
    let ip = ctx.client_ip.map(ip_text);
    let shared =
        Shared { route: parsed.route, envelope: &parsed.envelope, received_at: &received_at, ip: ip.as_deref() };
    let mut processed = Processed { accepted: Vec::with_capacity(parsed.items.len()), rejected: Vec::new() };
    for (index, item) in parsed.items.iter().enumerate() {
        match build(&shared, item, ctx) {
            Ok(built) => processed.accepted.push(Accepted {
                index,
                message_id: built.message_id,
                json: built.json,
                warnings: built.warnings,
            }),
            Err(issue) => {
                // The caller's messageId, when it has a usable one, to report the item by.
                let message_id =
                    item.fields.as_ref().and_then(|f| f.get("messageId")).and_then(|raw| match kind(raw) {
                        Kind::String => as_str(raw).map(Cow::into_owned),
                        Kind::Number => Some(raw.get().to_owned()),
                        _ => None,
                    });
                let quarantine_json =
                    quarantine_record(&received_at, ctx.source_id, index, message_id.as_deref(), &issue, &item.json());
                processed.rejected.push(Rejected { index, message_id, issue, quarantine_json });
            }
        }
    }
    processed
}

struct Built {
    message_id: String,
    json: Vec<u8>,
    warnings: Vec<Issue>,
}

/// The members the canonical event reads or writes itself; every other member passes
/// through as sent.
#[derive(Clone, Copy)]
enum Member {
    Type,
    MessageId,
    UserId,
    AnonymousId,
    Event,
    Name,
    Category,
    GroupId,
    PreviousId,
    Properties,
    Traits,
    Context,
    Integrations,
    Channel,
    Timestamp,
    OriginalTimestamp,
    SentAt,
    /// `receivedAt`, `version`, `sourceId`, `writeKey` and `_ferry`: ferry writes its own
    /// or drops them, and never reads the caller's.
    Replaced,
}

impl Member {
    /// How many there are (`Replaced` is the last).
    const COUNT: usize = Member::Replaced as usize + 1;

    fn of(key: &str) -> Option<Member> {
        Some(match key {
            "type" => Member::Type,
            "messageId" => Member::MessageId,
            "userId" => Member::UserId,
            "anonymousId" => Member::AnonymousId,
            "event" => Member::Event,
            "name" => Member::Name,
            "category" => Member::Category,
            "groupId" => Member::GroupId,
            "previousId" => Member::PreviousId,
            "properties" => Member::Properties,
            "traits" => Member::Traits,
            "context" => Member::Context,
            "integrations" => Member::Integrations,
            "channel" => Member::Channel,
            "timestamp" => Member::Timestamp,
            "originalTimestamp" => Member::OriginalTimestamp,
            "sentAt" => Member::SentAt,
            "receivedAt" | "version" | "sourceId" | "writeKey" | "_ferry" => Member::Replaced,
            _ => return None,
        })
    }
}

/// An item's handled members, found in one pass: the last member of a name wins and JSON
/// `null` is absent, as with [`Fields::get`].
struct Known<'a> {
    values: [Option<Raw<'a>>; Member::COUNT],
}

impl<'a> Known<'a> {
    fn of(fields: &Fields<'a>) -> Known<'a> {
        let mut values = [None; Member::COUNT];
        for (key, raw) in &fields.members {
            if let Some(name) = Member::of(key) {
                values[name as usize] = (raw.get() != "null").then_some(*raw);
            }
        }
        Known { values }
    }

    fn get(&self, name: Member) -> Option<Raw<'a>> {
        self.values[name as usize]
    }
}

/// What every item of one request shares, rendered once.
struct Shared<'r, 'a> {
    route: Route,
    envelope: &'r Envelope<'a>,
    /// `receivedAt` as stored.
    received_at: &'r str,
    /// The client's address as text.
    ip: Option<&'r str>,
}

fn build(shared: &Shared<'_, '_>, item: &Item<'_>, ctx: &mut Ctx<'_>) -> Result<Built, Issue> {
    let Shared { route, envelope, received_at, .. } = *shared;
    let size = item.size();
    if size > ctx.limits.max_event_bytes {
        let message = format!("the event is {size} bytes; at most {} are allowed", ctx.limits.max_event_bytes);
        return Err(Issue { code: "event_too_large", message, field: None });
    }
    let Some(fields) = &item.fields else {
        return Err(Issue {
            code: "not_an_object",
            message: "a batch item must be a JSON object".to_owned(),
            field: None,
        });
    };
    let known = Known::of(fields);
    let call = match route {
        Route::Single(call) => call,
        Route::Batch => {
            let raw =
                known.get(Member::Type).ok_or_else(|| Issue::new("missing_type", "type", "the item has no `type`"))?;
            as_str(raw).and_then(|t| CallType::parse(&t)).ok_or_else(|| {
                Issue::new("invalid_type", "type", "`type` must be track, identify, page, screen, group or alias")
            })?
        }
    };

    let message_id = match known.get(Member::MessageId) {
        None => None,
        Some(raw) => match kind(raw) {
            Kind::String | Kind::Number => {
                let id = as_str(raw).map_or_else(|| raw.get().to_owned(), Cow::into_owned);
                if id.chars().count() > ctx.limits.max_message_id_chars {
                    return Err(Issue::new(
                        "message_id_too_long",
                        "messageId",
                        format!("`messageId` is over {} characters", ctx.limits.max_message_id_chars),
                    ));
                }
                (!id.is_empty()).then_some(id)
            }
            _ => return Err(Issue::new("invalid_message_id", "messageId", "`messageId` must be a string")),
        },
    };

    let user_id = id_field(known.get(Member::UserId), "userId", "invalid_user_id")?;
    let anonymous_id = id_field(known.get(Member::AnonymousId), "anonymousId", "invalid_anonymous_id")?;
    let mut group_id = None;
    let mut previous_id = None;
    let mut event = None;
    match call {
        CallType::Alias => {
            previous_id = id_field(known.get(Member::PreviousId), "previousId", "invalid_previous_id")?;
            if user_id.is_none() {
                return Err(Issue::new("missing_user_id", "userId", "alias needs `userId`"));
            }
            if previous_id.is_none() {
                return Err(Issue::new("missing_previous_id", "previousId", "alias needs `previousId`"));
            }
        }
        _ if user_id.is_none() && anonymous_id.is_none() => {
            return Err(Issue::new("missing_user_id", "userId", "the event needs `userId` or `anonymousId`"));
        }
        CallType::Track => {
            let raw =
                known.get(Member::Event).ok_or_else(|| Issue::new("missing_event", "event", "track needs `event`"))?;
            let name = as_str(raw).ok_or_else(|| Issue::new("invalid_event", "event", "`event` must be a string"))?;
            if name.is_empty() {
                return Err(Issue::new("missing_event", "event", "track needs a non-empty `event`"));
            }
            event = Some(raw);
        }
        CallType::Group => {
            group_id = id_field(known.get(Member::GroupId), "groupId", "invalid_group_id")?;
            if group_id.is_none() {
                return Err(Issue::new("missing_group_id", "groupId", "group needs `groupId`"));
            }
        }
        _ => {}
    }

    let properties = object_field(known.get(Member::Properties), "properties", "invalid_properties")?;
    let traits = object_field(known.get(Member::Traits), "traits", "invalid_traits")?;
    let context = object_field(known.get(Member::Context), "context", "invalid_context")?;
    let integrations = object_field(known.get(Member::Integrations), "integrations", "invalid_integrations")?;

    // The caller's `timestamp`, else its `originalTimestamp` (checked only when used).
    let original = match known.get(Member::Timestamp) {
        Some(raw) => time_field(Some(raw), "timestamp")?,
        None => time_field(known.get(Member::OriginalTimestamp), "originalTimestamp")?,
    };
    let sent_at = match known.get(Member::SentAt) {
        Some(raw) => time_field(Some(raw), "sentAt")?,
        None => time_field(envelope.sent_at, "sentAt")?,
    };
    let timestamp = match (sent_at, original) {
        (Some(sent), Some(original)) => {
            let skew = sent.at.duration_since(original.at);
            ctx.received_at.checked_sub(skew).map_or(original, Time::new)
        }
        (None, Some(original)) => original,
        _ => Time::new(ctx.received_at),
    };

    // Everything is valid: from here on only enrichment.
    let mut warnings = Vec::new();
    let context = merge_objects(context, envelope.context);
    let peek = match (&item.context, envelope.context) {
        // The item's own context, scanned with the item.
        (Some(fields), None) => peek_context(fields),
        _ => context.as_deref().and_then(|text| Fields::parse(text).ok()).map(|f| peek_context(&f)).unwrap_or_default(),
    };
    let channel = library_channel(peek.library.as_deref());
    let client_side = peek.direct || channel != "server";
    // The client's address, to add as the first member of `context`.
    let add_ip = shared.ip.filter(|_| client_side && !peek.has_ip);
    let integrations = merge_objects(integrations, envelope.integrations);
    let properties = match (call, properties) {
        (CallType::Track | CallType::Page | CallType::Screen, Some(raw)) => {
            Some(reserved_properties(raw.get(), item.properties.as_ref(), &mut warnings))
        }
        (_, raw) => raw.map(|r| Cow::Borrowed(r.get())),
    };
    let message_id = message_id.unwrap_or_else(|| (ctx.new_message_id)());

    let mut out = Vec::with_capacity(size + 256);
    out.push(b'{');
    let mut w = Writer { out: &mut out, first: true };
    w.plain("type", call.as_str());
    w.string("messageId", &message_id);
    if let Some(id) = &user_id {
        w.string("userId", id);
    }
    if let Some(id) = &anonymous_id {
        w.string("anonymousId", id);
    }
    // `event`, `groupId` and `previousId` are checked only for the call that needs them;
    // on any other call they pass through as sent.
    if let Some(raw) = event.or_else(|| known.get(Member::Event)) {
        w.raw("event", raw.get());
    }
    for (key, name) in [("name", Member::Name), ("category", Member::Category)] {
        if let Some(raw) = known.get(name) {
            w.raw(key, raw.get());
        }
    }
    match (&group_id, known.get(Member::GroupId)) {
        (Some(id), _) => w.string("groupId", id),
        (None, Some(raw)) => w.raw("groupId", raw.get()),
        (None, None) => {}
    }
    match (&previous_id, known.get(Member::PreviousId)) {
        (Some(id), _) => w.string("previousId", id),
        (None, Some(raw)) => w.raw("previousId", raw.get()),
        (None, None) => {}
    }
    if let Some(raw) = &properties {
        w.raw("properties", raw);
    }
    if let Some(raw) = traits {
        w.raw("traits", raw.get());
    }
    match (&context, add_ip) {
        (Some(raw), Some(ip)) => w.object_with_ip("context", raw, ip),
        (Some(raw), None) => w.raw("context", raw),
        (None, _) => {}
    }
    w.raw("integrations", integrations.as_deref().unwrap_or("{}"));
    match known.get(Member::Channel) {
        Some(raw) => w.raw("channel", raw.get()),
        None => w.plain("channel", channel),
    }
    if let Some(original) = original {
        w.time("originalTimestamp", original);
    }
    if let Some(sent) = sent_at {
        w.time("sentAt", sent);
    }
    w.time("timestamp", timestamp);
    w.plain("receivedAt", received_at);
    w.raw("version", "2");
    w.string("sourceId", ctx.source_id);
    if !warnings.is_empty() {
        w.raw("_ferry", &warnings_json(&warnings));
    }
    write_passthrough(&mut w, &fields.members);
    out.push(b'}');
    Ok(Built { message_id, json: out, warnings })
}

/// The client's address as stored (what `Display` writes). IPv4 by hand: through the
/// formatter it cost about 1.1 K instructions, 1.6 % of a single-event request.
fn ip_text(ip: IpAddr) -> String {
    let IpAddr::V4(v4) = ip else { return ip.to_string() };
    let mut out = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        if octet >= 100 {
            out.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            out.push(char::from(b'0' + octet / 10 % 10));
        }
        out.push(char::from(b'0' + octet % 10));
    }
    out
}

/// Write the members the canonical event does not handle itself, as sent; of duplicate
/// keys only the last, at its place.
fn write_passthrough(w: &mut Writer<'_>, members: &[(Cow<'_, str>, Raw<'_>)]) {
    let unknown = |key: &str| Member::of(key).is_none();
    if members.len() <= 64 {
        // Few members: a scan of the later ones beats hashing.
        for (i, (key, raw)) in members.iter().enumerate() {
            if unknown(key) && !members[i + 1..].iter().any(|(later, _)| later == key) {
                w.member(key, raw.get());
            }
        }
        return;
    }
    let mut seen = HashSet::new();
    let mut last: Vec<_> = members.iter().rev().filter(|(key, _)| unknown(key) && seen.insert(key.as_ref())).collect();
    last.reverse();
    for (key, raw) in last {
        w.member(key, raw.get());
    }
}

/// Writes `"key":value` members, commas between them.
struct Writer<'o> {
    out: &'o mut Vec<u8>,
    first: bool,
}

impl Writer<'_> {
    /// A key that needs no escaping: one of ferry's own names, or a key scanned without
    /// escapes (a JSON string without escapes has no quote, backslash or control character).
    fn key(&mut self, key: &str) {
        self.separate();
        write_quoted(self.out, key);
        self.out.push(b':');
    }

    /// A comma before every member but the first.
    fn separate(&mut self) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
    }

    fn string(&mut self, key: &str, value: &str) {
        self.key(key);
        write_json_string(self.out, value);
    }

    /// A string value that needs no escaping: one of ferry's own (a call type, a channel,
    /// a formatted time).
    fn plain(&mut self, key: &str, value: &str) {
        debug_assert!(!ferry_wire::needs_escape(value));
        self.key(key);
        write_quoted(self.out, value);
    }

    fn raw(&mut self, key: &str, raw_json: &str) {
        self.key(key);
        self.out.extend_from_slice(raw_json.as_bytes());
    }

    /// A member as scanned: a key decoded from escapes is escaped again.
    #[expect(clippy::ptr_arg, reason = "the variant tells whether the key was sent with escapes")]
    fn member(&mut self, key: &Cow<'_, str>, raw_json: &str) {
        match key {
            Cow::Borrowed(key) => self.key(key),
            Cow::Owned(key) => {
                self.separate();
                write_json_string(self.out, key);
                self.out.push(b':');
            }
        }
        self.out.extend_from_slice(raw_json.as_bytes());
    }

    /// The raw object `object` with `"ip": ip` added as its first member.
    fn object_with_ip(&mut self, key: &str, object: &str, ip: &str) {
        self.key(key);
        let rest = object.trim_start().strip_prefix('{').unwrap_or("}");
        self.out.extend_from_slice(b"{\"ip\":");
        write_json_string(self.out, ip);
        if !rest.trim_start().starts_with('}') {
            self.out.push(b',');
        }
        self.out.extend_from_slice(rest.as_bytes());
    }

    fn time(&mut self, key: &str, time: Time<'_>) {
        self.key(key);
        self.out.push(b'"');
        match time.stored {
            Some(text) => self.out.extend_from_slice(text.as_bytes()),
            None => write_time(self.out, time.at),
        }
        self.out.push(b'"');
    }
}

/// `text` between quotes, as it is: only for text that needs no escaping.
fn write_quoted(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    out.extend_from_slice(text.as_bytes());
    out.push(b'"');
}

fn write_json_string(out: &mut Vec<u8>, value: &str) {
    // Most ids need no escaping: copy them between quotes.
    if !ferry_wire::needs_escape(value) {
        return write_quoted(out, value);
    }
    // Serializing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}

/// An id that may arrive as a string or a number; empty strings and `null` are absent.
fn id_field(raw: Option<Raw<'_>>, key: &str, code: &'static str) -> Result<Option<String>, Issue> {
    let Some(raw) = raw else { return Ok(None) };
    match kind(raw) {
        Kind::String => Ok(as_str(raw).map(Cow::into_owned).filter(|s| !s.is_empty())),
        Kind::Number => Ok(Some(raw.get().to_owned())),
        _ => Err(Issue::new(code, key, format!("`{key}` must be a string or a number"))),
    }
}

fn object_field<'a>(raw: Option<Raw<'a>>, key: &str, code: &'static str) -> Result<Option<Raw<'a>>, Issue> {
    match raw {
        Some(raw) if kind(raw) != Kind::Object => Err(Issue::new(code, key, format!("`{key}` must be an object"))),
        other => Ok(other),
    }
}

/// An instant read from an event.
#[derive(Clone, Copy)]
struct Time<'a> {
    at: jiff::Timestamp,
    /// The text as sent, when it is already the stored form (`toISOString`'s): written
    /// back as it is instead of formatted again.
    stored: Option<&'a str>,
}

impl Time<'_> {
    fn new<'a>(at: jiff::Timestamp) -> Time<'a> {
        Time { at, stored: None }
    }
}

fn time_field<'a>(raw: Option<Raw<'a>>, key: &str) -> Result<Option<Time<'a>>, Issue> {
    let Some(raw) = raw else { return Ok(None) };
    let invalid = || Issue::new("invalid_timestamp", key, format!("`{key}` must be an ISO-8601 date-time"));
    let text = as_str(raw).ok_or_else(invalid)?;
    if let Cow::Borrowed(text) = text
        && let Some(at) = parse_canonical_time(text)
    {
        return Ok(Some(Time { at, stored: Some(text) }));
    }
    parse_time(&text).map(|at| Some(Time::new(at))).ok_or_else(invalid)
}

/// ISO-8601 with `Z` or an offset; without an offset the time is taken as UTC.
pub fn parse_time(text: &str) -> Option<jiff::Timestamp> {
    if let Some(ts) = parse_canonical_time(text) {
        return Some(ts);
    }
    if let Ok(ts) = text.parse::<jiff::Timestamp>() {
        return Some(ts);
    }
    let civil: jiff::civil::DateTime = text.parse().ok()?;
    jiff::tz::TimeZone::UTC.to_timestamp(civil).ok()
}

/// UTC ISO-8601 with milliseconds, truncating finer precision: `2026-11-28T10:37:14.724Z`.
pub fn format_time(ts: jiff::Timestamp) -> String {
    let mut out = Vec::with_capacity(24);
    write_time(&mut out, ts);
    String::from_utf8(out).unwrap_or_default()
}

/// [`format_time`] appended to `out` (a reused buffer: no allocation once it has room).
pub fn write_time_into(out: &mut String, ts: jiff::Timestamp) {
    let mut bytes = std::mem::take(out).into_bytes();
    write_time(&mut bytes, ts);
    *out = String::from_utf8(bytes).unwrap_or_default();
}

/// [`format_time`] into a buffer, by arithmetic for years 1970 to 9999 (what clients
/// send), through jiff for the rest.
fn write_time(out: &mut Vec<u8>, ts: jiff::Timestamp) {
    let ms = ts.as_millisecond();
    // 1970-01-01 to 9999-12-31T23:59:59.999Z.
    if !(0..253_402_300_800_000).contains(&ms) {
        return write_time_slow(out, ts);
    }
    let (days, ms_of_day) = (ms / 86_400_000, ms % 86_400_000);
    let (year, month, day) = civil_from_days(days);
    let mut text = *b"0000-00-00T00:00:00.000Z";
    // Every part is non-negative and within its width, so the casts cannot wrap.
    for (at, value, width) in [
        (0, year as u32, 4),
        (5, month, 2),
        (8, day, 2),
        (11, (ms_of_day / 3_600_000) as u32, 2),
        (14, (ms_of_day / 60_000 % 60) as u32, 2),
        (17, (ms_of_day / 1000 % 60) as u32, 2),
        (20, (ms_of_day % 1000) as u32, 3),
    ] {
        let mut rest = value;
        for slot in text[at..at + width].iter_mut().rev() {
            *slot = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
    }
    out.extend_from_slice(&text);
}

/// [`write_time`] through jiff's calendar; negative years keep jiff's signed six-digit
/// spelling.
fn write_time_slow(out: &mut Vec<u8>, ts: jiff::Timestamp) {
    let ts = jiff::Timestamp::from_millisecond(ts.as_millisecond()).unwrap_or(ts);
    let dt = jiff::tz::Offset::UTC.to_datetime(ts);
    if (0..=9999).contains(&dt.year()) {
        out.extend_from_slice(format!("{dt:.3}Z").as_bytes());
    } else {
        out.extend_from_slice(format!("{ts:.3}").as_bytes());
    }
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (days ≥ 0), by Howard
/// Hinnant's `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let month = i64::from(month);
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DDTHH:MM:SS.sssZ` exactly (what JavaScript's `toISOString` and ferry itself
/// write), by arithmetic; anything else is left to jiff.
fn parse_canonical_time(text: &str) -> Option<jiff::Timestamp> {
    let b = text.as_bytes();
    if b.len() != 24 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if b[19] != b'.' || b[23] != b'Z' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| {
        b[range].iter().try_fold(0u32, |n, &d| d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0')))
    };
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second, ms) = (number(11..13)?, number(14..16)?, number(17..19)?, number(20..23)?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let days_in_month = *month_days.get(month.checked_sub(1)? as usize)?;
    if day == 0 || day > days_in_month || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let days = days_from_civil(i64::from(year), month, day);
    let seconds = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second);
    jiff::Timestamp::new(seconds, (ms * 1_000_000) as i32).ok()
}

/// Merge two raw objects key by key (the item's keys win); either may be absent.
fn merge_objects<'a>(item: Option<Raw<'a>>, envelope: Option<Raw<'a>>) -> Option<Cow<'a, str>> {
    let envelope = envelope.filter(|raw| kind(*raw) == Kind::Object);
    match (item, envelope) {
        (None, None) => None,
        (Some(item), None) => Some(Cow::Borrowed(item.get())),
        (None, Some(envelope)) => Some(Cow::Borrowed(envelope.get())),
        (Some(item), Some(envelope)) => {
            let (Ok(item_fields), Ok(envelope_fields)) = (Fields::parse(item.get()), Fields::parse(envelope.get()))
            else {
                return Some(Cow::Borrowed(item.get()));
            };
            let mut out = Vec::with_capacity(item.get().len() + envelope.get().len());
            out.push(b'{');
            let mut w = Writer { out: &mut out, first: true };
            for (key, raw) in &item_fields.members {
                w.member(key, raw.get());
            }
            for (key, raw) in &envelope_fields.members {
                if !item_fields.members.iter().any(|(k, _)| k == key) {
                    w.member(key, raw.get());
                }
            }
            out.push(b'}');
            Some(Cow::Owned(String::from_utf8(out).unwrap_or_default()))
        }
    }
}

#[derive(Default)]
struct ContextPeek {
    library: Option<String>,
    has_ip: bool,
    direct: bool,
}

fn peek_context(fields: &Fields<'_>) -> ContextPeek {
    let library = fields
        .get("library")
        .filter(|raw| kind(*raw) == Kind::Object)
        .and_then(|raw| Fields::parse(raw.get()).ok())
        .and_then(|lib| lib.get("name").and_then(as_str).map(Cow::into_owned));
    ContextPeek {
        library,
        has_ip: fields.get("ip").is_some(),
        direct: fields.get("direct").is_some_and(|raw| raw.get() == "true"),
    }
}

/// `browser`, `mobile` or `server`, from `context.library.name`: analytics.js (and other
/// JavaScript browser SDKs) is `browser`; the iOS, Android, React Native, Kotlin, Swift,
/// Flutter and Xamarin libraries are `mobile`; everything else (and no library) `server`.
fn library_channel(library: Option<&str>) -> &'static str {
    const BROWSER: &[&str] = &["analytics.js", "analytics-next", "analytics-js", "javascript"];
    const MOBILE: &[&str] = &["ios", "android", "react-native", "kotlin", "swift", "flutter", "xamarin"];
    let Some(name) = library else { return "server" };
    let contains = |part: &str| name.as_bytes().windows(part.len()).any(|w| w.eq_ignore_ascii_case(part.as_bytes()));
    if BROWSER.iter().any(|b| contains(b)) {
        "browser"
    } else if MOBILE.iter().any(|m| contains(m)) {
        "mobile"
    } else {
        "server"
    }
}

/// Check `revenue`, `value` and `currency`; numeric strings become numbers (with a warning).
fn reserved_properties<'a>(
    properties: &'a str,
    scanned: Option<&Fields<'_>>,
    warnings: &mut Vec<Issue>,
) -> Cow<'a, str> {
    let parsed;
    let fields = match scanned {
        Some(fields) => fields,
        None => match Fields::parse(properties) {
            Ok(fields) => {
                parsed = fields;
                &parsed
            }
            Err(_) => return Cow::Borrowed(properties),
        },
    };
    let (revenue, value, currency) = (fields.get("revenue"), fields.get("value"), fields.get("currency"));
    if revenue.is_none() && value.is_none() && currency.is_none() {
        return Cow::Borrowed(properties);
    }
    let mut replacements: Vec<(&str, String)> = Vec::new();
    for (key, raw, not_number, invalid) in [
        ("revenue", revenue, "revenue_not_number", "invalid_revenue"),
        ("value", value, "value_not_number", "invalid_value"),
    ] {
        let Some(raw) = raw else { continue };
        if kind(raw) == Kind::Number {
            continue;
        }
        let field = format!("properties.{key}");
        match as_str(raw).as_deref().and_then(numeric_string) {
            Some(number) => {
                warnings.push(Issue::new(
                    not_number,
                    &field,
                    format!("`{key}` should be a number; the string {} was stored as {number}", raw.get()),
                ));
                replacements.push((key, number));
            }
            None => warnings.push(Issue::new(invalid, &field, format!("`{key}` must be a number; kept as sent"))),
        }
    }
    if let Some(raw) = currency {
        let valid = as_str(raw).is_some_and(|c| currency::is_iso4217(&c));
        if !valid {
            warnings.push(Issue::new(
                "invalid_currency",
                "properties.currency",
                format!("`currency` must be an ISO 4217 code such as USD; got {}", raw.get()),
            ));
        }
    }
    if replacements.is_empty() {
        return Cow::Borrowed(properties);
    }
    let mut out = Vec::with_capacity(properties.len());
    out.push(b'{');
    let mut w = Writer { out: &mut out, first: true };
    for (key, raw) in &fields.members {
        match replacements.iter().find(|(k, _)| k == key) {
            Some((_, number)) => w.member(key, number),
            None => w.member(key, raw.get()),
        }
    }
    out.push(b'}');
    Cow::Owned(String::from_utf8(out).unwrap_or_default())
}

/// `"$19.99"`, `"19.99"`, `" 1,299.50 "` → the number as JSON text; `None` if not numeric.
fn numeric_string(text: &str) -> Option<String> {
    let cleaned: String = text.trim().trim_start_matches('$').chars().filter(|c| *c != ',').collect();
    let cleaned = cleaned.trim();
    if let Ok(integer) = cleaned.parse::<i64>() {
        return Some(integer.to_string());
    }
    let number: f64 = cleaned.parse().ok()?;
    if !number.is_finite() {
        return None;
    }
    serde_json::Number::from_f64(number).map(|n| n.to_string())
}

fn warnings_json(warnings: &[Issue]) -> String {
    let list: Vec<serde_json::Value> = warnings
        .iter()
        .map(|w| serde_json::json!({ "code": w.code, "message": w.message, "field": w.field }))
        .collect();
    serde_json::json!({ "warnings": list }).to_string()
}

fn quarantine_record(
    received_at: &str,
    source_id: &str,
    index: usize,
    message_id: Option<&str>,
    issue: &Issue,
    raw_item: &str,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw_item.len() + 256);
    out.push(b'{');
    let mut w = Writer { out: &mut out, first: true };
    w.string("receivedAt", received_at);
    w.string("sourceId", source_id);
    w.raw("index", &index.to_string());
    w.string("code", issue.code);
    w.string("message", &issue.message);
    match &issue.field {
        Some(field) => w.string("field", field),
        None => w.raw("field", "null"),
    }
    match message_id {
        Some(id) => w.string("messageId", id),
        None => w.raw("messageId", "null"),
    }
    w.raw("item", raw_item);
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests;
