//! Segment JSON shapes as client libraries send them, decoded leniently and without
//! building a DOM: an object becomes its list of `(key, raw value)` pairs, borrowed from
//! the request body, so sub-objects such as `properties` and `context` stay raw bytes.
//!
//! Nothing here does I/O or reads the clock.

mod scan;

use std::borrow::Cow;

pub use scan::{ScanError, Scanner, needs_escape};

/// The call type a route or an item names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallType {
    Track,
    Identify,
    Page,
    Screen,
    Group,
    Alias,
}

impl CallType {
    /// The `type` value of this call.
    pub fn as_str(self) -> &'static str {
        match self {
            CallType::Track => "track",
            CallType::Identify => "identify",
            CallType::Page => "page",
            CallType::Screen => "screen",
            CallType::Group => "group",
            CallType::Alias => "alias",
        }
    }

    /// The call type a `type` value names, if any.
    pub fn parse(value: &str) -> Option<CallType> {
        match value {
            "track" => Some(CallType::Track),
            "identify" => Some(CallType::Identify),
            "page" => Some(CallType::Page),
            "screen" => Some(CallType::Screen),
            "group" => Some(CallType::Group),
            "alias" => Some(CallType::Alias),
            _ => None,
        }
    }
}

/// What the request path says about the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `/v1/track`, `/v1/t`, ...: the body is one call of this type.
    Single(CallType),
    /// `/v1/batch`, `/v1/import`, `/v1/b`: the body is a batch envelope.
    Batch,
}

/// A JSON value's text as it appeared in the input (without the whitespace around it),
/// checked to be JSON when it was scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raw<'a>(&'a str);

impl<'a> Raw<'a> {
    /// The value's JSON text.
    #[inline]
    pub fn get(self) -> &'a str {
        self.0
    }
}

/// A JSON object as its members, in order, values left raw.
#[derive(Debug, Default)]
pub struct Fields<'a> {
    pub members: Vec<(Cow<'a, str>, Raw<'a>)>,
}

impl<'a> Fields<'a> {
    /// Decode `json`, which must be an object (nested to any depth).
    pub fn parse(json: &'a str) -> Result<Fields<'a>, ScanError> {
        let mut scanner = Scanner::new(json, usize::MAX);
        let fields = Fields::scan(&mut scanner)?;
        scanner.finish()?;
        Ok(fields)
    }

    /// The object at the scanner's position.
    pub fn scan(scanner: &mut Scanner<'a>) -> Result<Fields<'a>, ScanError> {
        let mut members = Vec::with_capacity(16);
        scanner.object(|scanner, key| {
            members.push((key, Raw(scanner.value()?)));
            Ok(())
        })?;
        Ok(Fields { members })
    }

    /// The object at the scanner's position, and its text.
    pub fn scan_raw(scanner: &mut Scanner<'a>) -> Result<(Fields<'a>, Raw<'a>), ScanError> {
        let start = scanner.offset();
        let fields = Fields::scan(scanner)?;
        Ok((fields, Raw(scanner.since(start))))
    }

    /// The raw value of the last member named `key`, with JSON `null` read as absent.
    #[inline]
    pub fn get(&self, key: &str) -> Option<Raw<'a>> {
        let raw = self.members.iter().rev().find(|(k, _)| k == key).map(|(_, v)| *v)?;
        (raw.get() != "null").then_some(raw)
    }
}

/// The value at the scanner's position, checked, as raw text.
#[inline]
pub fn scan_value<'a>(scanner: &mut Scanner<'a>) -> Result<Raw<'a>, ScanError> {
    scanner.value().map(Raw)
}

/// What kind of JSON value a raw value is, from its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Object,
    Array,
    String,
    Number,
    Bool,
    Null,
}

/// The kind of a raw value (serde_json hands raw values over trimmed).
#[inline]
pub fn kind(raw: Raw<'_>) -> Kind {
    match raw.get().as_bytes().first() {
        Some(b'{') => Kind::Object,
        Some(b'[') => Kind::Array,
        Some(b'"') => Kind::String,
        Some(b't' | b'f') => Kind::Bool,
        Some(b'n') => Kind::Null,
        _ => Kind::Number,
    }
}

/// A raw JSON string's value; `None` when the value is not a string.
#[inline]
pub fn as_str(raw: Raw<'_>) -> Option<Cow<'_, str>> {
    if kind(raw) != Kind::String {
        return None;
    }
    let text = raw.get();
    if !text.contains('\\') {
        // Checked when scanned: the quotes are its first and last bytes.
        return text.get(1..text.len() - 1).map(Cow::Borrowed);
    }
    serde_json::from_str::<Cow<'_, str>>(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_keep_order_raw_values_and_null_means_absent() {
        let json = r#"{"type":"track","properties":{"a": [1, 2]},"userId":null,"n":1.50}"#;
        let fields = Fields::parse(json).unwrap();
        assert_eq!(fields.members.len(), 4);
        assert_eq!(fields.get("properties").unwrap().get(), r#"{"a": [1, 2]}"#);
        assert!(fields.get("userId").is_none());
        assert_eq!(fields.get("n").unwrap().get(), "1.50");
        assert_eq!(as_str(fields.get("type").unwrap()).as_deref(), Some("track"));
    }

    #[test]
    fn escaped_keys_are_decoded() {
        let fields = Fields::parse(r#"{"us\u0065rId":"x"}"#).unwrap();
        assert!(fields.get("userId").is_some());
    }

    #[test]
    fn kinds() {
        let fields = Fields::parse(r#"{"a":{},"b":[],"c":"s","d":-1,"e":true,"f":null}"#).unwrap();
        let kinds: Vec<Kind> = fields.members.iter().map(|(_, v)| kind(*v)).collect();
        assert_eq!(kinds, [Kind::Object, Kind::Array, Kind::String, Kind::Number, Kind::Bool, Kind::Null]);
    }
}
