//! Decoding a stored event: one log record decoded once into its top-level fields.
//! Sub-objects (`properties`, `traits`, `context`, `integrations`) stay raw JSON text
//! inside the record, so a destination parses only what it maps.

use std::borrow::Cow;
use std::ops::Range;

use ferry_wire::CallType;
use serde::Deserialize;
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

/// One stored event, owning its record.
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: CallType,
    pub message_id: String,
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    /// `track`: the event name.
    pub event: Option<String>,
    /// `page` and `screen`: the page or screen name.
    pub name: Option<String>,
    pub category: Option<String>,
    pub group_id: Option<String>,
    pub previous_id: Option<String>,
    pub channel: Option<String>,
    pub original_timestamp: Option<jiff::Timestamp>,
    pub sent_at: Option<jiff::Timestamp>,
    pub timestamp: jiff::Timestamp,
    pub received_at: jiff::Timestamp,
    pub source_id: String,
    json: Box<str>,
    properties: Option<Range<usize>>,
    traits: Option<Range<usize>>,
    context: Option<Range<usize>>,
    integrations: Option<Range<usize>>,
    ferry: Option<Range<usize>>,
}

/// Why a record is not a stored event.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("record is not valid json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("record is not utf-8")]
    Utf8,
    #[error("record lacks `{0}`")]
    Missing(&'static str),
    #[error("record has an invalid `{0}`")]
    Invalid(&'static str),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(borrow)]
    message_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    user_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    anonymous_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    event: Option<Cow<'a, str>>,
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    category: Option<Cow<'a, str>>,
    #[serde(borrow)]
    group_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    previous_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    channel: Option<Cow<'a, str>>,
    original_timestamp: Option<&'a str>,
    sent_at: Option<&'a str>,
    timestamp: Option<&'a str>,
    received_at: Option<&'a str>,
    #[serde(borrow)]
    source_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    properties: Option<&'a RawValue>,
    #[serde(borrow)]
    traits: Option<&'a RawValue>,
    #[serde(borrow)]
    context: Option<&'a RawValue>,
    #[serde(borrow)]
    integrations: Option<&'a RawValue>,
    #[serde(rename = "_ferry", borrow)]
    ferry: Option<&'a RawValue>,
}

impl Event {
    /// Decode one log record.
    pub fn decode(record: &[u8]) -> Result<Event, DecodeError> {
        let text = std::str::from_utf8(record).map_err(|_| DecodeError::Utf8)?;
        Event::from_json(text.into())
    }

    /// Decode a stored event's JSON text, keeping it.
    pub fn from_json(json: Box<str>) -> Result<Event, DecodeError> {
        let raw: Raw<'_> = serde_json::from_str(&json)?;
        let span = |value: Option<&RawValue>| {
            value.filter(|v| v.get() != "null").map(|v| {
                let start = v.get().as_ptr() as usize - json.as_ptr() as usize;
                start..start + v.get().len()
            })
        };
        let time = |value: Option<&str>, field: &'static str| -> Result<Option<jiff::Timestamp>, DecodeError> {
            value.map(|text| crate::parse_time(text).ok_or(DecodeError::Invalid(field))).transpose()
        };
        let owned = |value: Option<Cow<'_, str>>| value.map(|v| v.into_owned());
        let kind = CallType::parse(raw.kind).ok_or(DecodeError::Invalid("type"))?;
        let received_at = time(raw.received_at, "receivedAt")?.ok_or(DecodeError::Missing("receivedAt"))?;
        let event = Event {
            kind,
            message_id: owned(raw.message_id).ok_or(DecodeError::Missing("messageId"))?,
            user_id: owned(raw.user_id),
            anonymous_id: owned(raw.anonymous_id),
            event: owned(raw.event),
            name: owned(raw.name),
            category: owned(raw.category),
            group_id: owned(raw.group_id),
            previous_id: owned(raw.previous_id),
            channel: owned(raw.channel),
            original_timestamp: time(raw.original_timestamp, "originalTimestamp")?,
            sent_at: time(raw.sent_at, "sentAt")?,
            timestamp: time(raw.timestamp, "timestamp")?.unwrap_or(received_at),
            received_at,
            source_id: owned(raw.source_id).ok_or(DecodeError::Missing("sourceId"))?,
            properties: span(raw.properties),
            traits: span(raw.traits),
            context: span(raw.context),
            integrations: span(raw.integrations),
            ferry: span(raw.ferry),
            json: Box::default(),
        };
        Ok(Event { json, ..event })
    }

    /// The whole record as stored.
    pub fn json(&self) -> &str {
        &self.json
    }

    fn part(&self, range: &Option<Range<usize>>) -> Option<&str> {
        range.as_ref().map(|r| &self.json[r.clone()])
    }

    /// `properties` as raw JSON (an object), when present.
    pub fn properties(&self) -> Option<&str> {
        self.part(&self.properties)
    }

    /// `traits` as raw JSON (an object), when present.
    pub fn traits(&self) -> Option<&str> {
        self.part(&self.traits)
    }

    /// `context` as raw JSON (an object), when present.
    pub fn context(&self) -> Option<&str> {
        self.part(&self.context)
    }

    /// `integrations` as raw JSON (an object), when present.
    pub fn integrations(&self) -> Option<&str> {
        self.part(&self.integrations)
    }

    /// ferry's own notes on the event (`{"warnings": [...]}`), when any.
    pub fn ferry_notes(&self) -> Option<&str> {
        self.part(&self.ferry)
    }

    /// Whether the `integrations` switchboard lets this event go to the destination named
    /// `name` (case-sensitive): its own key when present (`false` blocks; `true` or an
    /// options object allows), else `All`, else allowed.
    pub fn routes_to(&self, name: &str) -> bool {
        self.integrations().is_none_or(|raw| integrations_allow(raw, name))
    }
}

/// The `integrations` rule on a raw object; see [`Event::routes_to`].
pub fn integrations_allow(raw: &str, name: &str) -> bool {
    struct Switch<'n> {
        name: &'n str,
    }

    #[derive(Clone, Copy, PartialEq)]
    enum Setting {
        Unset,
        On,
        Off,
    }

    struct SettingVisitor;

    impl<'de> Visitor<'de> for SettingVisitor {
        type Value = Setting;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a boolean or an options object")
        }
        fn visit_bool<E>(self, v: bool) -> Result<Setting, E> {
            Ok(if v { Setting::On } else { Setting::Off })
        }
        fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Setting, M::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(Setting::On)
        }
        fn visit_unit<E>(self) -> Result<Setting, E> {
            Ok(Setting::Unset)
        }
        fn visit_none<E>(self) -> Result<Setting, E> {
            Ok(Setting::Unset)
        }
        // Anything else (a number, a string, an array) is not a setting: ignored.
        fn visit_i64<E>(self, _: i64) -> Result<Setting, E> {
            Ok(Setting::Unset)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Setting, E> {
            Ok(Setting::Unset)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Setting, E> {
            Ok(Setting::Unset)
        }
        fn visit_str<E>(self, _: &str) -> Result<Setting, E> {
            Ok(Setting::Unset)
        }
        fn visit_seq<S: serde::de::SeqAccess<'de>>(self, mut seq: S) -> Result<Setting, S::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(Setting::Unset)
        }
    }

    impl<'de> serde::de::DeserializeSeed<'de> for SettingVisitor {
        type Value = Setting;
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Setting, D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Switch<'_> {
        type Value = (Setting, Setting);
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an integrations object")
        }
        fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<(Setting, Setting), M::Error> {
            let (mut own, mut all) = (Setting::Unset, Setting::Unset);
            while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                let setting = map.next_value_seed(SettingVisitor)?;
                if key == self.name {
                    own = setting;
                } else if key == "All" {
                    all = setting;
                }
            }
            Ok((own, all))
        }
    }

    let mut de = serde_json::Deserializer::from_str(raw);
    match serde::Deserializer::deserialize_map(&mut de, Switch { name }) {
        Ok((Setting::Unset, Setting::Off)) => false,
        Ok((own, _)) => own != Setting::Off,
        // Not an object: the stored event always has one; treat as no switchboard.
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STORED: &str = r#"{"type":"track","messageId":"m1","userId":"u1","event":"Order Completed","properties":{"revenue": 19.99, "currency": "EUR"},"context":{"ip":"1.2.3.4","library": {"name": "analytics.js"}},"integrations":{"All":false,"Mixpanel":{"x":1},"Webhook":true},"channel":"browser","originalTimestamp":"2026-11-28T10:37:14.724Z","sentAt":"2026-11-28T10:37:14.754Z","timestamp":"2026-11-28T10:37:14.869Z","receivedAt":"2026-11-28T10:37:14.899Z","version":2,"sourceId":"web","_metadata":{"a":1}}"#;

    #[test]
    fn decodes_top_level_fields_and_keeps_sub_objects_raw() {
        let event = Event::decode(STORED.as_bytes()).unwrap();
        assert_eq!(event.kind, CallType::Track);
        assert_eq!(event.message_id, "m1");
        assert_eq!(event.user_id.as_deref(), Some("u1"));
        assert_eq!(event.event.as_deref(), Some("Order Completed"));
        assert_eq!(event.properties(), Some(r#"{"revenue": 19.99, "currency": "EUR"}"#));
        assert_eq!(event.context(), Some(r#"{"ip":"1.2.3.4","library": {"name": "analytics.js"}}"#));
        assert_eq!(event.traits(), None);
        assert_eq!(event.source_id, "web");
        assert_eq!(event.timestamp.to_string(), "2026-11-28T10:37:14.869Z");
        assert_eq!(event.json(), STORED);
    }

    #[test]
    fn records_that_are_not_events_are_refused() {
        assert!(matches!(Event::decode(b"{\"type\":\"track\"}"), Err(DecodeError::Missing(_))));
        assert!(matches!(Event::decode(b"not json"), Err(DecodeError::Json(_))));
        assert!(matches!(Event::decode(&[0xff, 0xfe]), Err(DecodeError::Utf8)));
        let bad_type = STORED.replace("\"track\"", "\"delete\"");
        assert!(matches!(Event::decode(bad_type.as_bytes()), Err(DecodeError::Invalid("type"))));
    }

    #[test]
    fn integrations_route_by_name_then_all() {
        let event = Event::decode(STORED.as_bytes()).unwrap();
        assert!(event.routes_to("Mixpanel"), "an options object enables");
        assert!(event.routes_to("Webhook"));
        assert!(!event.routes_to("Amplitude"), "All: false blocks the rest");
        assert!(!event.routes_to("mixpanel"), "names are case-sensitive");
        assert!(integrations_allow("{}", "Anything"), "the default is on");
        assert!(!integrations_allow(r#"{"X":false}"#, "X"));
        assert!(integrations_allow(r#"{"All":false,"X":true}"#, "X"));
        assert!(!integrations_allow(r#"{"All":true,"X":false}"#, "X"));
        assert!(integrations_allow(r#"{"X":null,"All":true}"#, "X"), "null is unset");
        assert!(integrations_allow(r#"{"X":"yes","Y":[1,{"a":2}]}"#, "X"), "non-settings are ignored");
    }
}
