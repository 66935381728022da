//! Validation: one decoded item becomes a [`Valid`] event, typed and borrowing from the
//! request, or a [`Rejection`]. Nothing here adds to the event; that is enrichment.

use std::borrow::Cow;

use ferry_wire::{Fields, Kind, Raw, as_str, kind};

use crate::decode::{Envelope, Item};
use crate::time::{Time, parse_canonical_time, parse_time};
use crate::{CallType, Limits, Route};

/// Why an item is not an event: it goes to quarantine with this reason.
///
/// Checked in this order; the first failure rejects the item. [`Rejection::code`] is the
/// stable code, [`Rejection::field`] the offending field.
///
/// | code | field | when |
/// | --- | --- | --- |
/// | `event_too_large` | – | an item is over 32 KiB |
/// | `not_an_object` | – | a batch item is not a JSON object |
/// | `missing_type`, `invalid_type` | `type` | a batch item has no `type`, or not one of the six calls (single routes take the type from the path, whatever the body says) |
/// | `invalid_message_id`, `message_id_too_long` | `messageId` | not a string or a number (numbers are kept as their text); over 100 characters |
/// | `invalid_user_id`, `invalid_anonymous_id` | `userId`, `anonymousId` | not a string or a number |
/// | `missing_user_id` | `userId` | neither `userId` nor `anonymousId` (alias: no `userId`) |
/// | `invalid_previous_id`, `missing_previous_id` | `previousId` | alias: not a string or number; absent |
/// | `missing_event`, `invalid_event` | `event` | track without `event`, or with an empty one; `event` not a string |
/// | `invalid_group_id`, `missing_group_id` | `groupId` | group: not a string or number; absent |
/// | `invalid_properties`, `invalid_traits`, `invalid_context`, `invalid_integrations` | that field | present but not an object |
/// | `invalid_timestamp` | `timestamp`, `originalTimestamp` or `sentAt` | not an RFC 3339 / ISO-8601 date-time string (a time without an offset is read as UTC; epoch numbers are refused) |
///
/// Empty strings and JSON `null` count as absent everywhere. Numeric ids become strings
/// (`42` → `"42"`). Messages are lowercase with no trailing period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("the event is {size} bytes; at most {max} are allowed")]
    EventTooLarge { size: usize, max: usize },
    #[error("a batch item must be a JSON object")]
    NotAnObject,
    #[error("the item has no `type`")]
    MissingType,
    #[error("`type` must be track, identify, page, screen, group or alias")]
    InvalidType,
    #[error("`messageId` must be a string")]
    InvalidMessageId,
    #[error("`messageId` is over {max} characters")]
    MessageIdTooLong { max: usize },
    #[error("`userId` must be a string or a number")]
    InvalidUserId,
    #[error("`anonymousId` must be a string or a number")]
    InvalidAnonymousId,
    #[error("the event needs `userId` or `anonymousId`")]
    MissingUserId,
    #[error("alias needs `userId`")]
    AliasWithoutUserId,
    #[error("`previousId` must be a string or a number")]
    InvalidPreviousId,
    #[error("alias needs `previousId`")]
    MissingPreviousId,
    #[error("track needs `event`")]
    MissingEvent,
    #[error("track needs a non-empty `event`")]
    EmptyEvent,
    #[error("`event` must be a string")]
    InvalidEvent,
    #[error("`groupId` must be a string or a number")]
    InvalidGroupId,
    #[error("group needs `groupId`")]
    MissingGroupId,
    #[error("`properties` must be an object")]
    InvalidProperties,
    #[error("`traits` must be an object")]
    InvalidTraits,
    #[error("`context` must be an object")]
    InvalidContext,
    #[error("`integrations` must be an object")]
    InvalidIntegrations,
    /// `timestamp`, `originalTimestamp` or `sentAt` (the field) is not a date-time.
    #[error("`{field}` must be an ISO-8601 date-time")]
    InvalidTimestamp { field: &'static str },
}

impl Rejection {
    /// The stable snake_case code clients and the quarantine see.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::EventTooLarge { .. } => "event_too_large",
            Rejection::NotAnObject => "not_an_object",
            Rejection::MissingType => "missing_type",
            Rejection::InvalidType => "invalid_type",
            Rejection::InvalidMessageId => "invalid_message_id",
            Rejection::MessageIdTooLong { .. } => "message_id_too_long",
            Rejection::InvalidUserId => "invalid_user_id",
            Rejection::InvalidAnonymousId => "invalid_anonymous_id",
            Rejection::MissingUserId | Rejection::AliasWithoutUserId => "missing_user_id",
            Rejection::InvalidPreviousId => "invalid_previous_id",
            Rejection::MissingPreviousId => "missing_previous_id",
            Rejection::MissingEvent | Rejection::EmptyEvent => "missing_event",
            Rejection::InvalidEvent => "invalid_event",
            Rejection::InvalidGroupId => "invalid_group_id",
            Rejection::MissingGroupId => "missing_group_id",
            Rejection::InvalidProperties => "invalid_properties",
            Rejection::InvalidTraits => "invalid_traits",
            Rejection::InvalidContext => "invalid_context",
            Rejection::InvalidIntegrations => "invalid_integrations",
            Rejection::InvalidTimestamp { .. } => "invalid_timestamp",
        }
    }

    /// The member at fault; `None` when it is the item as a whole.
    pub fn field(&self) -> Option<&'static str> {
        Some(match self {
            Rejection::EventTooLarge { .. } | Rejection::NotAnObject => return None,
            Rejection::MissingType | Rejection::InvalidType => "type",
            Rejection::InvalidMessageId | Rejection::MessageIdTooLong { .. } => "messageId",
            Rejection::InvalidUserId | Rejection::MissingUserId | Rejection::AliasWithoutUserId => "userId",
            Rejection::InvalidAnonymousId => "anonymousId",
            Rejection::InvalidPreviousId | Rejection::MissingPreviousId => "previousId",
            Rejection::MissingEvent | Rejection::EmptyEvent | Rejection::InvalidEvent => "event",
            Rejection::InvalidGroupId | Rejection::MissingGroupId => "groupId",
            Rejection::InvalidProperties => "properties",
            Rejection::InvalidTraits => "traits",
            Rejection::InvalidContext => "context",
            Rejection::InvalidIntegrations => "integrations",
            Rejection::InvalidTimestamp { field } => field,
        })
    }
}

/// An item that passed every check, borrowing from the request: what enrichment and the
/// encoder read.
pub(crate) struct Valid<'r, 'a> {
    pub(crate) call: CallType,
    /// The item's bytes (see `Item::size`).
    pub(crate) size: usize,
    /// The caller's message id; `None` when absent or empty.
    pub(crate) message_id: Option<Cow<'a, str>>,
    pub(crate) user_id: Option<Cow<'a, str>>,
    pub(crate) anonymous_id: Option<Cow<'a, str>>,
    /// `groupId` of a group call and `previousId` of an alias; on other calls these and
    /// `event` are not checked and pass through as sent (in `known`).
    pub(crate) group_id: Option<Cow<'a, str>>,
    pub(crate) previous_id: Option<Cow<'a, str>>,
    /// A track call's event name (a non-empty string), as sent.
    pub(crate) event: Option<Raw<'a>>,
    /// The caller's `timestamp`, else its `originalTimestamp`.
    pub(crate) original: Option<Time<'a>>,
    /// The item's `sentAt`, else the envelope's.
    pub(crate) sent_at: Option<Time<'a>>,
    /// The members the stored event handles itself, as sent (`properties`, `traits`,
    /// `context` and `integrations` checked to be objects).
    pub(crate) known: Known<'a>,
    /// Every member, as sent.
    pub(crate) fields: &'r Fields<'a>,
    /// The item, for its scanned `context` and `properties`.
    pub(crate) item: &'r Item<'a>,
}

impl<'a> Valid<'_, 'a> {
    /// The event name as the stored event has it: the track call's, else an `event`
    /// string passed through.
    pub(crate) fn event_name(&self) -> Option<Cow<'a, str>> {
        self.event.or_else(|| self.known.get(Member::Event)).and_then(as_str)
    }
}

/// The members the stored event reads or writes itself; every other member passes
/// through as sent.
#[derive(Clone, Copy)]
pub(crate) enum Member {
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

    pub(crate) fn of(key: &str) -> Option<Member> {
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
pub(crate) struct Known<'a> {
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

    pub(crate) fn get(&self, name: Member) -> Option<Raw<'a>> {
        self.values[name as usize]
    }
}

/// Check one item of a request decoded for `route`.
pub(crate) fn validate<'r, 'a>(
    item: &'r Item<'a>,
    route: Route,
    envelope: &Envelope<'a>,
    limits: &Limits,
) -> Result<Valid<'r, 'a>, Rejection> {
    let size = item.size();
    if size > limits.max_event_bytes {
        return Err(Rejection::EventTooLarge { size, max: limits.max_event_bytes });
    }
    let Some(fields) = &item.fields else { return Err(Rejection::NotAnObject) };
    let known = Known::of(fields);
    let call = match route {
        Route::Single(call) => call,
        Route::Batch => {
            let raw = known.get(Member::Type).ok_or(Rejection::MissingType)?;
            as_str(raw).and_then(|t| CallType::parse(&t)).ok_or(Rejection::InvalidType)?
        }
    };

    let message_id = match known.get(Member::MessageId) {
        None => None,
        Some(raw) => match kind(raw) {
            Kind::String | Kind::Number => {
                let id = as_str(raw).unwrap_or(Cow::Borrowed(raw.get()));
                if id.chars().count() > limits.max_message_id_chars {
                    return Err(Rejection::MessageIdTooLong { max: limits.max_message_id_chars });
                }
                (!id.is_empty()).then_some(id)
            }
            _ => return Err(Rejection::InvalidMessageId),
        },
    };

    let user_id = id_field(known.get(Member::UserId), Rejection::InvalidUserId)?;
    let anonymous_id = id_field(known.get(Member::AnonymousId), Rejection::InvalidAnonymousId)?;
    let (mut group_id, mut previous_id, mut event) = (None, None, None);
    match call {
        CallType::Alias => {
            previous_id = id_field(known.get(Member::PreviousId), Rejection::InvalidPreviousId)?;
            if user_id.is_none() {
                return Err(Rejection::AliasWithoutUserId);
            }
            if previous_id.is_none() {
                return Err(Rejection::MissingPreviousId);
            }
        }
        _ if user_id.is_none() && anonymous_id.is_none() => return Err(Rejection::MissingUserId),
        CallType::Track => {
            let raw = known.get(Member::Event).ok_or(Rejection::MissingEvent)?;
            let name = as_str(raw).ok_or(Rejection::InvalidEvent)?;
            if name.is_empty() {
                return Err(Rejection::EmptyEvent);
            }
            event = Some(raw);
        }
        CallType::Group => {
            group_id = id_field(known.get(Member::GroupId), Rejection::InvalidGroupId)?;
            if group_id.is_none() {
                return Err(Rejection::MissingGroupId);
            }
        }
        _ => {}
    }

    for (member, invalid) in [
        (Member::Properties, Rejection::InvalidProperties),
        (Member::Traits, Rejection::InvalidTraits),
        (Member::Context, Rejection::InvalidContext),
        (Member::Integrations, Rejection::InvalidIntegrations),
    ] {
        if known.get(member).is_some_and(|raw| kind(raw) != Kind::Object) {
            return Err(invalid);
        }
    }

    // The caller's `timestamp`, else its `originalTimestamp` (checked only when used).
    let original = match known.get(Member::Timestamp) {
        Some(raw) => time_field(Some(raw), "timestamp")?,
        None => time_field(known.get(Member::OriginalTimestamp), "originalTimestamp")?,
    };
    let sent_at = time_field(known.get(Member::SentAt).or(envelope.sent_at), "sentAt")?;
    Ok(Valid {
        call,
        size,
        message_id,
        user_id,
        anonymous_id,
        group_id,
        previous_id,
        event,
        original,
        sent_at,
        known,
        fields,
        item,
    })
}

/// An id that may arrive as a string or a number; empty strings and `null` are absent.
fn id_field(raw: Option<Raw<'_>>, invalid: Rejection) -> Result<Option<Cow<'_, str>>, Rejection> {
    let Some(raw) = raw else { return Ok(None) };
    match kind(raw) {
        Kind::String => Ok(as_str(raw).filter(|s| !s.is_empty())),
        Kind::Number => Ok(Some(Cow::Borrowed(raw.get()))),
        _ => Err(invalid),
    }
}

fn time_field<'a>(raw: Option<Raw<'a>>, field: &'static str) -> Result<Option<Time<'a>>, Rejection> {
    let Some(raw) = raw else { return Ok(None) };
    let invalid = Rejection::InvalidTimestamp { field };
    let text = as_str(raw).ok_or(invalid)?;
    if let Cow::Borrowed(text) = text
        && let Some(at) = parse_canonical_time(text)
    {
        return Ok(Some(Time { at, stored: Some(text) }));
    }
    parse_time(&text).map(|at| Some(Time::new(at))).ok_or(invalid)
}
