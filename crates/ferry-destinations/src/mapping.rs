//! What the analytics destinations (Mixpanel, Amplitude, Google Analytics 4) share when
//! they turn a stored event into their API's shape: its sub-objects as JSON maps (a DOM is
//! fine here: these APIs take hundreds of events a request, not hundreds of thousands a
//! second), Segment's reserved properties, and request bodies.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value};

use crate::Event;

/// A JSON object.
pub(crate) type Object = Map<String, Value>;

/// A raw JSON object as a map; empty when absent (or, never for stored events, not an object).
pub(crate) fn object(raw: Option<&str>) -> Object {
    raw.and_then(|raw| serde_json::from_str(raw).ok()).unwrap_or_default()
}

/// `properties` (track, page, screen) or `traits` (identify, group).
pub(crate) fn properties(event: &Event) -> Object {
    object(event.properties())
}

pub(crate) fn traits(event: &Event) -> Object {
    object(event.traits())
}

pub(crate) fn context(event: &Event) -> Object {
    object(event.context())
}

/// A number, as JSON numbers are (ferry's ingest already turned numeric strings such as
/// `"$19.99"` in `revenue` and `value` into numbers).
pub(crate) fn number(value: Option<&Value>) -> Option<f64> {
    value.and_then(Value::as_f64)
}

/// A string, or a number written out, for ids and names.
pub(crate) fn text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A path into nested objects (`["page", "url"]`).
pub(crate) fn at<'v>(object: &'v Object, path: &[&str]) -> Option<&'v Value> {
    let (first, rest) = path.split_first()?;
    let mut value = object.get(*first)?;
    for key in rest {
        value = value.as_object()?.get(*key)?;
    }
    Some(value)
}

/// The currency of a revenue or value: as sent, or USD when `revenue` is there without one
/// (Segment's rule).
pub(crate) fn currency(properties: &Object) -> Option<String> {
    match properties.get("currency").and_then(Value::as_str) {
        Some(code) => Some(code.to_owned()),
        None if properties.contains_key("revenue") => Some(ferry_event::DEFAULT_CURRENCY.to_owned()),
        None => None,
    }
}

/// Milliseconds since the Unix epoch of the event's (skew-corrected) `timestamp`.
pub(crate) fn millis(event: &Event) -> i64 {
    event.timestamp.as_millisecond()
}

/// The body of a JSON request.
pub(crate) fn body(value: &Value) -> bytes::Bytes {
    bytes::Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

/// `Authorization: Basic` for a user name and password.
pub(crate) fn basic_auth(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_is_base64_of_user_colon_password() {
        assert_eq!(basic_auth("Aladdin", "open sesame"), "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        assert_eq!(basic_auth("token", ""), "Basic dG9rZW46");
    }

    #[test]
    fn revenue_without_currency_means_usd() {
        let p: Object = serde_json::from_str(r#"{"revenue": 5}"#).unwrap();
        assert_eq!(currency(&p).as_deref(), Some("USD"));
        let p: Object = serde_json::from_str(r#"{"revenue": 5, "currency": "EUR"}"#).unwrap();
        assert_eq!(currency(&p).as_deref(), Some("EUR"));
        let p: Object = serde_json::from_str(r#"{"value": 5}"#).unwrap();
        assert_eq!(currency(&p), None);
    }

    #[test]
    fn paths_and_texts() {
        let o: Object = serde_json::from_str(r#"{"page": {"url": "https://x"}, "n": 7, "e": ""}"#).unwrap();
        assert_eq!(at(&o, &["page", "url"]).and_then(Value::as_str), Some("https://x"));
        assert_eq!(text(o.get("n")).as_deref(), Some("7"));
        assert_eq!(text(o.get("e")), None);
        assert_eq!(at(&o, &["page", "nope"]), None);
    }
}
